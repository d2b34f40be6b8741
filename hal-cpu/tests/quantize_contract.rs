//! aihal-cpu against aihal-quantize: the same layout contract, decoded the same way, and the
//! fused matmul against dequantize-then-f32-matmul on the original weights, with an error
//! budget per format.
#![allow(clippy::float_cmp)]

use aihal_cpu::{matmul, matmul_with, ActivationPrecision, MatmulOptions};
use aihal_quantize::{dequantize, quantize, QuantFormat};
use aihal_reference as reference;

struct Rng(u64);
impl Rng {
    fn f32(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
    fn vec(&mut self, len: usize) -> Vec<f32> {
        (0..len).map(|_| self.f32()).collect()
    }
}

/// Formats, the K each test uses, and the per-weight error budget as a fraction of the
/// weight's block absmax: int8 and Q8_0 1/254 (half a step of absmax/127); Q4_0 1/8 (the
/// scale is the signed max over −8, so a value of the opposite sign near absmax can only reach
/// 7/8 of it); NF4 0.152 (half the widest gap between levels, −1 to −0.6962); FP8 by relative
/// precision (E4M3 3 mantissa bits: 1/16 of |w|, E5M2 2 bits: 1/8, bounded here by absmax).
fn cases() -> Vec<(QuantFormat, usize, f32)> {
    vec![
        (QuantFormat::Q8_0, 96, 1.0 / 254.0),
        (QuantFormat::Q4_0, 96, 1.0 / 8.0),
        (QuantFormat::Int8PerChannel, 77, 1.0 / 254.0),
        (QuantFormat::Int8PerBlock { block_size: 32 }, 77, 1.0 / 254.0),
        (
            QuantFormat::Nf4 {
                block_size: 64,
                double_quant: false,
            },
            96,
            0.152,
        ),
        (QuantFormat::Fp8E4M3 { block_size: None }, 77, 1.0 / 16.0),
        (QuantFormat::Fp8E5M2 { block_size: Some(32) }, 77, 1.0 / 8.0),
    ]
}

#[test]
fn decoding_agrees_with_aihal_quantize_bit_for_bit() {
    let mut rng = Rng(1);
    let mut all = cases();
    all.push((QuantFormat::Tq2_0, 256, 0.0));
    all.push((QuantFormat::Ternary, 77, 0.0));
    all.push((
        QuantFormat::Nf4 {
            block_size: 32,
            double_quant: true,
        },
        96,
        0.0,
    ));
    for (format, k, _) in all {
        let n = 5;
        let w = rng.vec(n * k);
        let q = quantize(format, &w, &[n, k]).unwrap();
        let ours = reference::dequantize_weight(&q).unwrap();
        let theirs = dequantize(&q).unwrap();
        for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
            assert!(a == b || (a.is_nan() && b.is_nan()), "{format} value {i}: {a} vs {b}");
        }
    }
}

#[test]
fn nf4_levels_and_fp8_codecs_agree() {
    for b in 0..=255u8 {
        let (a, e) = (aihal_quantize::fp8::e4m3_to_f32(b), aihal_quantize::fp8::e5m2_to_f32(b));
        let w = aihal_quantize::QuantizedTensor::from_parts(
            QuantFormat::Fp8E4M3 { block_size: None },
            vec![1, 1],
            vec![b],
            vec![1.0],
        )
        .unwrap();
        let ours = reference::dequantize_weight(&w).unwrap()[0];
        assert!(ours == a || (ours.is_nan() && a.is_nan()), "e4m3 {b:#04x}");
        let w = aihal_quantize::QuantizedTensor::from_parts(
            QuantFormat::Fp8E5M2 { block_size: None },
            vec![1, 1],
            vec![b],
            vec![1.0],
        )
        .unwrap();
        let ours = reference::dequantize_weight(&w).unwrap()[0];
        assert!(ours == e || (ours.is_nan() && e.is_nan()), "e5m2 {b:#04x}");
    }
    let f = QuantFormat::Nf4 {
        block_size: 32,
        double_quant: false,
    };
    for (code, &level) in aihal_quantize::nf4::NF4_CODE.iter().enumerate() {
        let mut data = vec![0u8; 16];
        data[0] = (code as u8) << 4;
        let w = aihal_quantize::QuantizedTensor::from_parts(f, vec![1, 32], data, vec![1.0]).unwrap();
        assert_eq!(reference::dequantize_weight(&w).unwrap()[0], level, "nf4 code {code}");
    }
}

#[test]
fn fused_matmul_stays_within_each_formats_budget_of_the_f32_product() {
    let mut rng = Rng(2);
    for (format, k, budget) in cases() {
        let (m, n) = (3, 19);
        let w = rng.vec(n * k);
        let x = rng.vec(m * k);
        let q = quantize(format, &w, &[n, k]).unwrap();
        // Block absmax of the original weights, per weight (blocks of 32 along a row cover
        // every format's block here: 32, 64 and per-row blocks are all at least that wide
        // or per tensor, so the 32-block absmax is a lower bound; use the row absmax).
        let row_amax: Vec<f32> = w
            .chunks(k)
            .map(|r| r.iter().fold(0.0f32, |a, v| a.max(v.abs())))
            .collect();
        for options in [MatmulOptions::exact(), MatmulOptions::default()] {
            let y = matmul_with(x.as_slice().into(), m, &q, options).unwrap();
            for i in 0..m {
                for j in 0..n {
                    let xr = &x[i * k..(i + 1) * k];
                    let exact: f32 = xr.iter().zip(&w[j * k..(j + 1) * k]).map(|(a, b)| a * b).sum();
                    let sum_abs_x: f32 = xr.iter().map(|v| v.abs()).sum();
                    // Weight error, plus (int8 path) activation error: half a step of the
                    // activation block absmax (≤ 1) times |w| (≤ row absmax).
                    let mut tol = budget * row_amax[j] * sum_abs_x + 1e-4;
                    if options.activations == ActivationPrecision::Int8 {
                        tol += k as f32 / 254.0 * row_amax[j] * (1.0 + budget);
                    }
                    let got = y[i * n + j];
                    assert!(
                        (got - exact).abs() <= tol,
                        "{format} {:?} y[{i}][{j}] = {got}, f32 product {exact}, budget {tol}",
                        options.activations
                    );
                }
            }
        }
        // And the exact fast path is the reference up to summation order.
        let fast = matmul(&x, m, &q).unwrap();
        let refy = reference::matmul(&x, m, &q).unwrap();
        for (a, b) in fast.iter().zip(&refy) {
            assert!((a - b).abs() <= 1e-4, "{format}: {a} vs {b}");
        }
    }
}
