//! The llama.cpp block formats with minimums, sub-block scales or a code book (Q4_1, Q5_0,
//! Q5_1, Q2_K to Q6_K, IQ4_NL, IQ4_XS) through every public entry point: quantized by
//! aihal-quantize from bell-shaped weights, run at the shapes of SmolLM2 and Gemma 3 (scaled
//! down), compared with the scalar reference.

use aihal_cpu::{
    has_int8_activation_path, matmul_packed, matmul_with, ActivationPrecision, CpuProvider, MatmulOptions,
    PackedWeights, QuantLinear,
};
use aihal_ops::{OpSpec, Provider, Support};
use aihal_quantize::{quantize, QuantFormat, QuantizedTensor};
use aihal_reference as reference;
use candle_core::{Module, Tensor};

const FORMATS: [QuantFormat; 10] = [
    QuantFormat::Q4_1,
    QuantFormat::Q5_0,
    QuantFormat::Q4K,
    QuantFormat::Q6K,
    QuantFormat::Q5_1,
    QuantFormat::Q2K,
    QuantFormat::Q3K,
    QuantFormat::Q5K,
    QuantFormat::Iq4Nl,
    QuantFormat::Iq4Xs,
];

/// Whether `format`'s blocks hold 256 values (the K-quants and IQ4_XS), else 32.
fn super_blocks(format: QuantFormat) -> bool {
    aihal_quantize::ggml::block_layout(format).is_some_and(|(values, _)| values == 256)
}

/// A reproducible draw in -1..1.
fn draws(seed: u64, len: usize) -> Vec<f32> {
    let mut s = seed;
    (0..len)
        .map(|_| {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        })
        .collect()
}

/// A bell-shaped `[n, k]` weight (sums of three draws) with an offset per row, so that Q4_1's
/// and Q4_K's minimums matter.
fn weight(format: QuantFormat, n: usize, k: usize, seed: u64) -> QuantizedTensor {
    let (a, b, c) = (draws(seed, n * k), draws(seed + 1, n * k), draws(seed + 2, n * k));
    let w: Vec<f32> = (0..n * k)
        .map(|i| (a[i] + b[i] + c[i]) * 0.1 + 0.02 * ((i / k) % 5) as f32)
        .collect();
    quantize(format, &w, &[n, k]).unwrap()
}

/// `Σ_k |x_k| |w_k|` per output, and the int8 budget `Σ_k (block amax of x / 254) |w_k|`.
fn scales(x: &[f32], m: usize, w: &QuantizedTensor) -> (Vec<f32>, Vec<f32>) {
    let k = w.shape()[1];
    let abs_x: Vec<f32> = x.iter().map(|v| v.abs()).collect();
    let mut amax = abs_x.clone();
    for blk in amax.chunks_mut(k).flat_map(|row| row.chunks_mut(32)) {
        let a = blk.iter().fold(0.0f32, |m, &v| m.max(v));
        blk.fill(a / 254.0);
    }
    let abs_w: Vec<f32> = reference::dequantize_weight(w)
        .unwrap()
        .iter()
        .map(|v| v.abs())
        .collect();
    let dense = |xs: &[f32]| {
        let n = w.shape()[0];
        let mut y = vec![0.0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                y[i * n + j] = xs[i * k..(i + 1) * k]
                    .iter()
                    .zip(&abs_w[j * k..(j + 1) * k])
                    .map(|(a, b)| a * b)
                    .sum();
            }
        }
        y
    };
    (dense(&abs_x), dense(&amax))
}

/// The exact path within `1e-5 Σ|x||w|` of the reference (the order of f32 sums differs; the
/// generic kernel's is the reference's), and the int8 path within the activation rounding
/// budget (each activation moves by at most its block's amax / 254) plus the same `1e-5`.
fn check(what: &str, got_exact: &[f32], got_int8: &[f32], want: &[f32], (scale, budget): &(Vec<f32>, Vec<f32>)) {
    for i in 0..want.len() {
        let tol = 1e-5 * scale[i];
        assert!(
            (got_exact[i] - want[i]).abs() <= tol,
            "{what} exact at {i}: {} vs {}",
            got_exact[i],
            want[i]
        );
        let tol = budget[i] * 1.001 + tol;
        assert!(
            (got_int8[i] - want[i]).abs() <= tol,
            "{what} int8 at {i}: {} vs {} (budget {tol})",
            got_int8[i],
            want[i]
        );
    }
}

#[test]
fn every_entry_point_takes_the_new_formats_on_both_paths() {
    // SmolLM2's 576 and Gemma 3's 640 as K (both multiples of 32; 640 of 256 too); N cut
    // down so the test stays short; M = 1 (decode), 5 (row kernels) and 18 (panels).
    for (s, format) in FORMATS.into_iter().enumerate() {
        assert!(has_int8_activation_path(format), "{format}");
        let k = if super_blocks(format) { 512 } else { 576 };
        let w = weight(format, 40, k, 10 * s as u64);
        let packed = PackedWeights::new(&w).unwrap();
        assert_eq!(packed.activation_path(ActivationPrecision::Int8), "int8", "{format}");
        for m in [1, 5, 18] {
            let x = draws(100 + m as u64, m * k);
            let want = reference::matmul(&x, m, &w).unwrap();
            let bounds = scales(&x, m, &w);
            let exact = matmul_with(x.as_slice().into(), m, &w, MatmulOptions::exact()).unwrap();
            let int8 = matmul_with(x.as_slice().into(), m, &w, MatmulOptions::default()).unwrap();
            check(&format!("{format} matmul_with m={m}"), &exact, &int8, &want, &bounds);
            let packed_int8 = matmul_packed(x.as_slice().into(), m, &packed, MatmulOptions::default()).unwrap();
            if packed.is_packed() {
                // Packed (where this CPU has a layout for the format): the generic int8
                // kernel's bits (checked per layout by `tests/isa.rs`), the same block sums as
                // matmul_with's rounded in another order: within the same budget.
                check(&format!("{format} packed m={m}"), &exact, &packed_int8, &want, &bounds);
            } else {
                assert_eq!(packed_int8, int8, "{format} packed m={m}: the int8 kernels' bits");
            }
        }
    }
}

#[test]
fn quant_linear_and_the_provider_take_the_new_formats() {
    let cpu = candle_core::Device::Cpu;
    let x = Tensor::new(draws(7, 3 * 256), &cpu).unwrap().reshape((3, 256)).unwrap();
    let xs = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    for (s, format) in FORMATS.into_iter().enumerate() {
        let w = weight(format, 24, 256, 50 + s as u64);
        let layer = QuantLinear::new(w.clone(), None)
            .unwrap()
            .with_activations(ActivationPrecision::F32);
        let got = layer
            .forward(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let want = reference::matmul(&xs, 3, &w).unwrap();
        let (scale, _) = scales(&xs, 3, &w);
        for i in 0..want.len() {
            assert!(
                (got[i] - want[i]).abs() <= 1e-5 * scale[i],
                "{format} QuantLinear at {i}"
            );
        }
        let spec = OpSpec::Linear {
            weight: &w,
            bias: None,
            precision: aihal_ops::LinearPrecision::Int8Activations,
        };
        assert!(matches!(CpuProvider.supports(&spec), Support::Yes), "{format}");
    }
}
