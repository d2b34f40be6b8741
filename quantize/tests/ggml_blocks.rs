//! The GGML block formats against candle-core 0.11 in process: decoding bit for bit
//! against candle's `dequantize` (which follows llama.cpp's `dequantize_row_*`), and
//! quantizing byte for byte against candle's `QTensor::quantize` where candle follows
//! llama.cpp's reference quantizer.
#![allow(clippy::float_cmp)] // exact values are the point

mod common;

use aihal_quantize::decode::decode_row_into;
use aihal_quantize::{dequantize, quantize, QuantFormat, QuantizedTensor};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use common::Rng;

/// The block formats candle has, with their block values and bytes and where the f16
/// fields sit.
const FORMATS: [(QuantFormat, GgmlDType, usize, usize, &[usize]); 10] = [
    (QuantFormat::Q4_0, GgmlDType::Q4_0, 32, 18, &[0]),
    (QuantFormat::Q4_1, GgmlDType::Q4_1, 32, 20, &[0, 2]),
    (QuantFormat::Q5_0, GgmlDType::Q5_0, 32, 22, &[0]),
    (QuantFormat::Q5_1, GgmlDType::Q5_1, 32, 24, &[0, 2]),
    (QuantFormat::Q8_0, GgmlDType::Q8_0, 32, 34, &[0]),
    (QuantFormat::Q2K, GgmlDType::Q2K, 256, 84, &[80, 82]),
    (QuantFormat::Q3K, GgmlDType::Q3K, 256, 110, &[108]),
    (QuantFormat::Q4K, GgmlDType::Q4K, 256, 144, &[0, 2]),
    (QuantFormat::Q5K, GgmlDType::Q5K, 256, 176, &[0, 2]),
    (QuantFormat::Q6K, GgmlDType::Q6K, 256, 210, &[208]),
];

/// Random blocks: random bytes, with every f16 field a random finite value of either sign
/// over many magnitudes (subnormals included).
fn random_blocks(rng: &mut Rng, blocks: usize, bytes: usize, f16_at: &[usize]) -> Vec<u8> {
    let mut data: Vec<u8> = (0..blocks * bytes).map(|_| rng.next_u64() as u8).collect();
    for b in data.chunks_exact_mut(bytes) {
        for &at in f16_at {
            let mut bits = rng.next_u64() as u16;
            if bits & 0x7C00 == 0x7C00 {
                bits &= !0x4000; // not inf or NaN
            }
            b[at..at + 2].copy_from_slice(&bits.to_le_bytes());
        }
    }
    data
}

fn candle_dequantize(q: &QTensor) -> Vec<f32> {
    q.dequantize(&Device::Cpu)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|f| f.to_bits()).collect()
}

#[test]
fn decoding_matches_candle_bit_for_bit() {
    let mut rng = Rng::new(40);
    for (format, dtype, values, bytes, f16_at) in FORMATS {
        for (rows, blocks_per_row) in [(1, 1), (3, 2), (5, 8)] {
            let k = values * blocks_per_row;
            let data = random_blocks(&mut rng, rows * blocks_per_row, bytes, f16_at);
            let ours = QuantizedTensor::from_parts(format, vec![rows, k], data, Vec::new()).unwrap();
            let theirs = ours.to_qtensor().unwrap();
            assert_eq!(theirs.dtype(), dtype);
            let want = candle_dequantize(&theirs);
            let got = dequantize(&ours).unwrap();
            assert_eq!(bits(&got), bits(&want), "{format} [{rows}, {k}]");
            // Row decoding, over ranges that start and end inside blocks.
            for n in 0..rows {
                for (k0, len) in [(0, k), (3, k - 5), (values - 1, 2.min(k - values + 1)), (k - 1, 1)] {
                    let mut out = vec![0.0; len];
                    decode_row_into(&ours, n, k0, &mut out).unwrap();
                    assert_eq!(
                        bits(&out),
                        bits(&want[n * k + k0..n * k + k0 + len]),
                        "{format} row {n} at {k0}"
                    );
                }
            }
            assert_eq!(QuantizedTensor::from_qtensor(&theirs).unwrap(), ours);
        }
    }
}

/// Rows of `blocks` blocks of `values`, with the cases that decide rounding mixed in:
/// all-zero blocks, constant blocks, tiny and huge magnitudes, one outlier.
fn tricky(rng: &mut Rng, blocks: usize, values: usize) -> Vec<f32> {
    let mut x = rng.normals(blocks * values);
    for (b, block) in x.chunks_mut(values).enumerate() {
        match b % 8 {
            0 => block.fill(0.0),
            1 => block.fill(0.75),
            2 => block.iter_mut().for_each(|v| *v *= 1e-6),
            3 => block.iter_mut().for_each(|v| *v *= 1e3),
            4 => block[values / 3] = 40.0,
            5 => block.iter_mut().for_each(|v| *v = v.abs() + 1.0), // all positive
            _ => {}
        }
    }
    x
}

fn candle_quantize(x: &[f32], shape: &[usize], dtype: GgmlDType) -> Vec<u8> {
    let t = Tensor::from_vec(x.to_vec(), shape, &Device::Cpu).unwrap();
    QTensor::quantize(&t, dtype).unwrap().data().unwrap().into_owned()
}

fn first_diff(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| x != y)
}

#[test]
fn quantizing_q4_1_and_q5_0_matches_candle_byte_for_byte() {
    // candle's Q4_1 and Q5_0 quantizers are ports of llama.cpp's quantize_row_q4_1_ref and
    // quantize_row_q5_0_ref (truncation after + 0.5 / + 16.5, as ours).
    for (format, dtype) in [
        (QuantFormat::Q4_1, GgmlDType::Q4_1),
        (QuantFormat::Q5_0, GgmlDType::Q5_0),
    ] {
        for seed in 0..4 {
            let mut rng = Rng::new(50 + seed);
            for cols in [32, 256] {
                let rows = 16;
                let x = tricky(&mut rng, rows * cols / 32, 32);
                let ours = quantize(format, &x, &[rows, cols]).unwrap();
                let theirs = candle_quantize(&x, &[rows, cols], dtype);
                assert_eq!(
                    first_diff(ours.data(), &theirs),
                    None,
                    "{format} seed {seed} cols {cols}"
                );
                assert_eq!(ours.data().len(), theirs.len());
            }
        }
    }
}

#[test]
fn k_quantizers_are_llama_cpp_s_not_candle_s() {
    // candle 0.11's Q3K quantizer is today's reference (same bytes on data without ties,
    // below); its other K quantizers port an older llama.cpp: Q2K, Q4K and Q5K fit with
    // make_qkx1_quants (today's quantize_row_q*_K_ref use the weighted make_qkx2_quants),
    // Q6K's make_qx_quants refines by three rounds of re-fitting (today's tries 18 fixed
    // scales), all round ties away from zero (llama.cpp's nearest_int: to even), and none
    // zeroes a Q6_K super-block of near-zero values. So their bytes differ from llama.cpp's;
    // ours are llama.cpp's (checked byte for byte against llama.cpp's output in
    // `ggml_fixtures.rs`). Both decode through the same layout (bit for bit, above); here
    // the two fits are compared in total squared error on normal data. For Q4_K, Q5_K and
    // Q6_K llama.cpp's newer fits are the better ones (by 9%, 5% and 6% on this data): ours
    // must not be worse. Q2_K's reference fit minimizes the |x|-weighted absolute error,
    // not the squared one, and lands 3% above candle's squared error here: ours may be at
    // most 5% worse (it stays far inside llama.cpp's own bound, above).
    for (format, dtype, slack) in [
        (QuantFormat::Q2K, GgmlDType::Q2K, 1.05),
        (QuantFormat::Q3K, GgmlDType::Q3K, 1.0),
        (QuantFormat::Q4K, GgmlDType::Q4K, 1.0),
        (QuantFormat::Q5K, GgmlDType::Q5K, 1.0),
        (QuantFormat::Q6K, GgmlDType::Q6K, 1.0),
    ] {
        let mut rng = Rng::new(70);
        let (rows, cols) = (16, 1024);
        let x = rng.normals(rows * cols);
        let ours = dequantize(&quantize(format, &x, &[rows, cols]).unwrap()).unwrap();
        let t = Tensor::from_vec(x.clone(), (rows, cols), &Device::Cpu).unwrap();
        let theirs = candle_dequantize(&QTensor::quantize(&t, dtype).unwrap());
        let sq = |y: &[f32]| x.iter().zip(y).map(|(a, b)| f64::from(a - b).powi(2)).sum::<f64>();
        eprintln!(
            "{format}: squared error ours {:.4}, candle {:.4}",
            sq(&ours),
            sq(&theirs)
        );
        assert!(
            sq(&ours) <= slack * sq(&theirs),
            "{format}: ours {} candle {}",
            sq(&ours),
            sq(&theirs)
        );
    }
    // An all-zero super-block: llama.cpp (and we) store zero bytes only.
    for format in [
        QuantFormat::Q2K,
        QuantFormat::Q3K,
        QuantFormat::Q4K,
        QuantFormat::Q5K,
        QuantFormat::Q6K,
    ] {
        let q = quantize(format, &[0.0; 256], &[1, 256]).unwrap();
        assert!(q.data().iter().all(|&b| b == 0), "{format}");
    }
}

#[test]
fn total_error_is_within_llama_cpp_s_bounds() {
    // llama.cpp tests/test-quantize-fns.cpp: data `0.1 + 2 * cosf(i)` for 32 * 128 values,
    // error `sqrt(sum (x - y)²) / n`, at most MAX_QUANTIZATION_TOTAL_ERROR (0.002) for the
    // 4- to 8-bit types, MAX_QUANTIZATION_TOTAL_ERROR_2BITS (0.0075) for Q2_K, _3BITS
    // (0.0040) for Q3_K and
    // MAX_QUANTIZATION_TOTAL_ERROR_TERNARY (0.01) for TQ2_0.
    const MAX_QUANTIZATION_TOTAL_ERROR: f64 = 0.002;
    const MAX_QUANTIZATION_TOTAL_ERROR_TERNARY: f64 = 0.01;
    const MAX_QUANTIZATION_TOTAL_ERROR_2BITS: f64 = 0.0075;
    const MAX_QUANTIZATION_TOTAL_ERROR_3BITS: f64 = 0.0040;
    let n = 32 * 128;
    let x: Vec<f32> = (0..n)
        .map(|i| (0.1 + 2.0 * f64::from((i as f32).cos())) as f32)
        .collect();
    for (format, bound) in [
        (QuantFormat::Q4_0, MAX_QUANTIZATION_TOTAL_ERROR),
        (QuantFormat::Q4_1, MAX_QUANTIZATION_TOTAL_ERROR),
        (QuantFormat::Q5_0, MAX_QUANTIZATION_TOTAL_ERROR),
        (QuantFormat::Q5_1, MAX_QUANTIZATION_TOTAL_ERROR),
        (QuantFormat::Q8_0, MAX_QUANTIZATION_TOTAL_ERROR),
        (QuantFormat::Q2K, MAX_QUANTIZATION_TOTAL_ERROR_2BITS),
        (QuantFormat::Q3K, MAX_QUANTIZATION_TOTAL_ERROR_3BITS),
        (QuantFormat::Q4K, MAX_QUANTIZATION_TOTAL_ERROR),
        (QuantFormat::Q5K, MAX_QUANTIZATION_TOTAL_ERROR),
        (QuantFormat::Q6K, MAX_QUANTIZATION_TOTAL_ERROR),
        (QuantFormat::Iq4Nl, MAX_QUANTIZATION_TOTAL_ERROR),
        (QuantFormat::Iq4Xs, MAX_QUANTIZATION_TOTAL_ERROR),
        (QuantFormat::Tq2_0, MAX_QUANTIZATION_TOTAL_ERROR_TERNARY),
    ] {
        let y = dequantize(&quantize(format, &x, &[1, n]).unwrap()).unwrap();
        let err = x
            .iter()
            .zip(&y)
            .map(|(a, b)| f64::from(a - b).powi(2))
            .sum::<f64>()
            .sqrt()
            / n as f64;
        eprintln!("{format}: total error {err:.6} (bound {bound})");
        assert!(err < bound, "{format}: {err} >= {bound}");
    }
}

#[test]
fn quantizing_q3_k_matches_candle_on_data_without_ties() {
    // candle's Q3K quantizer follows today's quantize_row_q3_K_ref (make_q3_quants), but
    // rounds ties away from zero where llama.cpp's nearest_int rounds them to even: on
    // normal data (no exact ties) the bytes agree. llama.cpp's own bytes, ties included,
    // are checked in `ggml_fixtures.rs`.
    for seed in 0..4 {
        let mut rng = Rng::new(80 + seed);
        let (rows, cols) = (8, 512);
        let mut x = rng.normals(rows * cols);
        x[..256].iter_mut().for_each(|v| *v *= 1e-3);
        x[300] = 25.0;
        let ours = quantize(QuantFormat::Q3K, &x, &[rows, cols]).unwrap();
        let theirs = candle_quantize(&x, &[rows, cols], GgmlDType::Q3K);
        assert_eq!(first_diff(ours.data(), &theirs), None, "seed {seed}");
    }
}

#[test]
fn iq4_nl_decodes_through_its_code_book() {
    // kvalues_iq4nl of ggml-common.h; value j of a block is d * KVALUES[low nibble of byte
    // j], value j + 16 the high nibble (dequantize_row_iq4_nl). candle has no IQ4_NL.
    const KVALUES: [f32; 16] = [
        -127.0, -104.0, -83.0, -65.0, -49.0, -35.0, -22.0, -10.0, 1.0, 13.0, 25.0, 38.0, 53.0, 69.0, 89.0, 113.0,
    ];
    let mut rng = Rng::new(90);
    let mut data = random_blocks(&mut rng, 6, 18, &[0]);
    data[0..2].copy_from_slice(&half::f16::from_f32(0.5).to_le_bytes());
    let w = QuantizedTensor::from_parts(QuantFormat::Iq4Nl, vec![2, 96], data.clone(), vec![]).unwrap();
    let got = dequantize(&w).unwrap();
    for (b, block) in data.chunks_exact(18).enumerate() {
        let d = half::f16::from_le_bytes([block[0], block[1]]).to_f32();
        for j in 0..16 {
            let q = block[2 + j];
            assert_eq!(got[32 * b + j].to_bits(), (d * KVALUES[usize::from(q & 0xF)]).to_bits());
            assert_eq!(
                got[32 * b + 16 + j].to_bits(),
                (d * KVALUES[usize::from(q >> 4)]).to_bits()
            );
        }
    }
    assert_eq!(got[0], 0.5 * KVALUES[usize::from(data[2] & 0xF)]);
    let mut row = vec![0.0; 50];
    decode_row_into(&w, 1, 7, &mut row).unwrap();
    assert_eq!(bits(&row), bits(&got[96 + 7..96 + 57]));
    // An all-zero block: d = 0 and code 0 (llama.cpp leaves its codes as they were).
    let q = quantize(QuantFormat::Iq4Nl, &[0.0; 32], &[1, 32]).unwrap();
    assert!(q.data().iter().all(|&b| b == 0));
}

#[test]
fn iq4_xs_decodes_through_its_scales_and_code_book() {
    // dequantize_row_iq4_xs: sub-block ib's 6-bit scale is the nibble ib % 2 of
    // scales_l[ib / 2] and bits 2ib of scales_h; value = d * (ls - 32) * kvalues_iq4nl[index].
    const KVALUES: [f32; 16] = [
        -127.0, -104.0, -83.0, -65.0, -49.0, -35.0, -22.0, -10.0, 1.0, 13.0, 25.0, 38.0, 53.0, 69.0, 89.0, 113.0,
    ];
    let mut rng = Rng::new(91);
    let data = random_blocks(&mut rng, 4, 136, &[0]);
    let w = QuantizedTensor::from_parts(QuantFormat::Iq4Xs, vec![2, 512], data.clone(), vec![]).unwrap();
    let got = dequantize(&w).unwrap();
    for (b, block) in data.chunks_exact(136).enumerate() {
        let d = half::f16::from_le_bytes([block[0], block[1]]).to_f32();
        let scales_h = u16::from_le_bytes([block[2], block[3]]);
        for ib in 0..8 {
            let ls =
                i32::from((block[4 + ib / 2] >> (4 * (ib % 2))) & 0xF) | (i32::from((scales_h >> (2 * ib)) & 3) << 4);
            let dl = d * (ls - 32) as f32;
            for j in 0..16 {
                let q = block[8 + 16 * ib + j];
                let at = 256 * b + 32 * ib;
                assert_eq!(got[at + j].to_bits(), (dl * KVALUES[usize::from(q & 0xF)]).to_bits());
                assert_eq!(
                    got[at + 16 + j].to_bits(),
                    (dl * KVALUES[usize::from(q >> 4)]).to_bits()
                );
            }
        }
    }
    let mut row = vec![0.0; 300];
    decode_row_into(&w, 1, 100, &mut row).unwrap();
    assert_eq!(bits(&row), bits(&got[512 + 100..512 + 400]));
}
