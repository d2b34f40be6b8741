//! Byte equality with fixtures written by the numpy port of llama.cpp's reference
//! quantizers (PyPI `gguf` 0.19.0, `gguf.quants`); `tests/fixtures/gen_ggml_fixtures.py`
//! regenerates them. TQ2_0 has no Rust peer to compare with, so this is its reference.
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
