//! Byte equality with fixtures written by the numpy port of llama.cpp's reference
//! quantizers (PyPI `gguf` 0.19.0, `gguf.quants`); `tests/fixtures/gen_ggml_fixtures.py`
//! regenerates them. TQ2_0 has no Rust peer to compare with, so this is its reference.
//!
//! Q4_K and Q6_K: the `gguf` package has no quantizer for them, and candle's differs from
//! llama.cpp's (its Q4_K uses the older `make_qkx1_quants`, its rounding is half away from
//! zero where llama.cpp's `nearest_int` rounds ties to even, and it does not zero a Q6_K
//! super-block of near-zero values). `q2_k.ggml`, `q3_k.ggml`, `q4_k.ggml`, `q5_k.ggml`
//! and `q6_k.ggml` were written by llama.cpp's `quantize_row_q2_K_ref` /
//! `quantize_row_q3_K_ref` / `quantize_row_q4_K_ref` / `quantize_row_q5_K_ref` /
//! `quantize_row_q6_K_ref` (ggml-quants.c, with `make_qkx2_quants`, `make_q3_quants`,
//! `make_qx_quants` and `nearest_int`) built with gcc -O2 on x86-64 (no FMA contraction),
//! from the inputs `q2_k.input.f32` / `q3_k.input.f32` / `q4_k.input.f32` /
//! `q5_k.input.f32` / `q6_k.input.f32`: [8, 1024] normals (Python `random.gauss`, seeds 4,
//! 5, 1, 3 and 2). `iq4_nl.ggml` likewise from llama.cpp's `quantize_row_iq4_nl_ref`
//! (`quantize_row_iq4_nl_impl` without weights or search, `best_index_int8`) on
//! `iq4_nl.input.f32` ([8, 256], seed 6, the same special blocks but no all-zero block:
//! there llama.cpp leaves its code buffer as it was, see `formats/iq4_nl.rs`), and
//! `iq4_xs.ggml` from `quantize_row_iq4_xs_ref` (`quantize_iq4_xs` without importance
//! weights) on `iq4_xs.input.f32` ([8, 1024], seed 7, with the zero blocks). with an all-zero 32-value block, an
//! all-zero and a constant (0.75) super-block, a block scaled by 1e-6, one by 1e3, an
//! outlier of 1e4, an all-positive block, a block of halves and a super-block scaled by
//! 1e-9.
#![allow(clippy::float_cmp)] // exact values are the point

use aihal_quantize::{dequantize, quantize, QuantFormat, QuantizedTensor};

fn fixture(name: &str) -> (Vec<f32>, Vec<u8>) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/");
    let input = std::fs::read(format!("{dir}{name}.input.f32")).unwrap();
    let x = input
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    (x, std::fs::read(format!("{dir}{name}.ggml")).unwrap())
}

#[test]
fn our_bytes_are_llama_cpp_reference_bytes() {
    for (name, format, cols) in [
        ("tq2_0", QuantFormat::Tq2_0, 512),
        ("q4_0", QuantFormat::Q4_0, 128),
        ("q8_0", QuantFormat::Q8_0, 128),
        ("iq4_nl", QuantFormat::Iq4Nl, 256),
        ("iq4_xs", QuantFormat::Iq4Xs, 1024),
        ("q2_k", QuantFormat::Q2K, 1024),
        ("q3_k", QuantFormat::Q3K, 1024),
        ("q4_k", QuantFormat::Q4K, 1024),
        ("q5_k", QuantFormat::Q5K, 1024),
        ("q6_k", QuantFormat::Q6K, 1024),
    ] {
        let (x, expected) = fixture(name);
        let shape = [x.len() / cols, cols];
        let q = quantize(format, &x, &shape).unwrap();
        assert_eq!(q.data().len(), expected.len(), "{name}");
        if let Some(i) = q.data().iter().zip(&expected).position(|(a, b)| a != b) {
            panic!(
                "{name}: first differing byte {i}: ours {:#04x}, reference {:#04x}",
                q.data()[i],
                expected[i]
            );
        }
        // Loading the reference bytes gives the same values as our own tensor.
        let loaded = QuantizedTensor::from_parts(format, shape.to_vec(), expected, Vec::new()).unwrap();
        assert_eq!(dequantize(&loaded).unwrap(), dequantize(&q).unwrap(), "{name}");
    }
}
