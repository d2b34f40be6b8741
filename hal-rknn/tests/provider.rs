//! `RknnProvider` through the op set (`aihal-ops`) on the emulator: linear layers in every
//! format against `aihal-reference` within the op set's one bound for int8 activations (int8
//! weights as they are, other formats converted to int8 per row, whose cost is measured here
//! per format: see `CONVERSION_COST`), the bias, a K past the native layout's 8192-row
//! segments, and what it refuses.

mod common;

use std::sync::Arc;

use aihal_core::{Device, NpuCoreMask};
use aihal_ops::{Executor, Linear, LinearPrecision, OpSpec, Provider, Softmax, Support, Tensor};
use aihal_quantize::{QuantFormat, QuantizedTensor};
use aihal_rknn::RknnProvider;
use common::{Emu, Rng};

const NPU: Device = Device::Rknn {
    core_mask: NpuCoreMask::AUTO,
};

fn npu_executor(emu: &Emu) -> Arc<Executor> {
    Executor::builder()
        .provider(Arc::new(RknnProvider::new(emu.lib.clone(), NpuCoreMask::AUTO)))
        .device(NPU)
        .strict(true)
        .build()
        .unwrap()
}

fn dequantized(w: &QuantizedTensor) -> Vec<f32> {
    let (n, k) = (w.shape()[0], w.shape()[1]);
    let mut out = vec![0.0; n * k];
    for (j, row) in out.chunks_exact_mut(k).enumerate() {
        aihal_quantize::decode::decode_row_into(w, j, 0, row).unwrap();
    }
    out
}

/// Per output: the op set's one rule for int8 activations (`LinearPrecision::bound`), which
/// covers the NPU's path (activations and, for other formats, weights rounded to int8 per row).
fn bound(x: &[f32], w: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(m * n);
    for i in 0..m {
        for j in 0..n {
            out.push(LinearPrecision::Int8Activations.bound(&x[i * k..][..k], &w[j * k..][..k]));
        }
    }
    out
}

/// The largest relative RMS error the conversion to int8 per row may add to a weight (a
/// `[40, 256]` matrix of values uniform in ±1, quantized to the format, then converted).
///
/// Rounding to int8 against the row's absmax moves a value by at most half a step,
/// `max|row| / 254`; each test also checks that worst case, computed from the weights. For
/// values spread evenly over ±max (RMS `max / √3`) the rounding error's RMS is a step over
/// `√12`, so the relative RMS is about `(max / 127) / √12 / (max / √3) = 1 / 254 ≈ 3.9e-3`
/// for every format; `1e-2` leaves room for rows whose RMS is below that of an even spread.
///
/// Measured (seed 5, relative RMS; the half-step worst case of those weights in brackets):
/// Q8_0 3.5e-3 (6.8e-3), Q4_0 3.9e-3 (6.8e-3), Q4_1 3.9e-3 (6.7e-3), Q5_0 3.9e-3 (6.8e-3),
/// Q4_K 4.0e-3 (6.9e-3), Q6_K 3.8e-3 (6.8e-3), Q5_1 3.9e-3 (6.7e-3), Q5_K 3.9e-3 (6.8e-3),
/// Q2_K 3.9e-3 (6.9e-3), Q3_K 4.1e-3 (7.3e-3), IQ4_NL 3.7e-3 (6.9e-3), IQ4_XS 3.6e-3
/// (7.1e-3), NF4 3.8e-3, int8 per block 3.6e-3, FP8 E4M3 3.9e-3, E5M2 4.3e-3. TQ2_0 (one
/// 256-value block per row here) and ternary have three levels per row, which land on int8
/// levels (3e-8 and 0: f32 rounding); int8 per channel is kept as it is.
const CONVERSION_COST: f64 = 1e-2;

#[test]
fn linear_in_every_format_runs_on_the_npu_within_the_stated_bound() {
    let emu = Emu::new("2.3.2");
    let exec = npu_executor(&emu);
    let mut rng = Rng::new(5);
    let (m, n, k) = (3, 40, 256);
    let x = rng.f32s(m * k, 2.0);
    let bias = rng.f32s(n, 0.5);
    println!("format: relative RMS error of the weight after conversion to int8 per row");
    for format in [
        QuantFormat::Int8PerChannel,
        QuantFormat::Q8_0,
        QuantFormat::Q4_0,
        QuantFormat::Q4_1,
        QuantFormat::Q5_0,
        QuantFormat::Q4K,
        QuantFormat::Q6K,
        QuantFormat::Q5_1,
        QuantFormat::Q5K,
        QuantFormat::Q2K,
        QuantFormat::Q3K,
        QuantFormat::Iq4Nl,
        QuantFormat::Iq4Xs,
        QuantFormat::Tq2_0,
        QuantFormat::Nf4 {
            block_size: 64,
            double_quant: false,
        },
        QuantFormat::Int8PerBlock { block_size: 32 },
        QuantFormat::Ternary,
        QuantFormat::Fp8E4M3 { block_size: Some(32) },
        QuantFormat::Fp8E5M2 { block_size: None },
    ] {
        let w = aihal_quantize::quantize(format, &rng.f32s(n * k, 1.0), &[n, k]).unwrap();
        let wd = dequantized(&w);
        let layer = Linear::new(&exec, &w, Some(&bias)).unwrap();
        let d = layer
            .forward_traced(&Tensor::from_vec(x.clone(), &[m, k]).unwrap())
            .unwrap();
        assert_eq!((d.ran_on, d.fallback.as_deref()), (NPU, None));
        let got = d.output.to_vec().unwrap();
        let mut want = aihal_reference::matmul(&x, m, &w).unwrap();
        for row in want.chunks_mut(n) {
            row.iter_mut().zip(&bias).for_each(|(y, b)| *y += b);
        }
        for (i, ((g, w), b)) in got.iter().zip(&want).zip(bound(&x, &wd, m, n, k)).enumerate() {
            assert!((g - w).abs() <= b, "{format} [{i}]: {g} vs {w} (bound {b})");
        }
        // The conversion's own cost, stated in the README and in `CONVERSION_COST`.
        let converted = dequantized(&aihal_quantize::quantize(QuantFormat::Int8PerChannel, &wd, &[n, k]).unwrap());
        let err: f64 = converted
            .iter()
            .zip(&wd)
            .map(|(a, b)| f64::from(a - b).powi(2))
            .sum::<f64>();
        let norm: f64 = wd.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>();
        let rel = (err / norm.max(f64::MIN_POSITIVE)).sqrt();
        // Rounding to the nearest of 255 levels spaced `max|row| / 127` moves a value by at
        // most half a step, plus the f32 rounding of the scale, the quotient and the product
        // (a few units of 2⁻²⁴ of `max|row|`; 2⁻²² covers them).
        let worst: f64 = wd
            .chunks_exact(k)
            .map(|row| {
                let max = f64::from(row.iter().fold(0.0f32, |a, v| a.max(v.abs())));
                k as f64 * (max / 254.0 + max * 2f64.powi(-22)).powi(2)
            })
            .sum::<f64>();
        let worst = (worst / norm.max(f64::MIN_POSITIVE)).sqrt();
        println!("{format}: {rel:.2e} (half-step bound {worst:.2e})");
        assert!(
            rel <= worst,
            "{format}: the conversion costs {rel}, past half a step ({worst})"
        );
        assert!(rel < CONVERSION_COST, "{format}: the conversion costs {rel}");
    }
    assert_eq!(exec.moves(), 0, "host tensors go to the NPU as they are");
}

#[test]
fn a_k_past_one_native_segment_runs_on_the_npu() {
    let emu = Emu::new("2.1.0");
    let exec = npu_executor(&emu);
    let mut rng = Rng::new(6);
    let (m, n, k) = (2, 45, 11008);
    let w = aihal_quantize::quantize(QuantFormat::Q8_0, &rng.f32s(n * k, 1.0), &[n, k]).unwrap();
    let wd = dequantized(&w);
    let x = rng.f32s(m * k, 1.0);
    let layer = Linear::new(&exec, &w, None).unwrap();
    let got = layer
        .forward(&Tensor::from_vec(x.clone(), &[m, k]).unwrap())
        .unwrap()
        .to_vec()
        .unwrap();
    let want = aihal_reference::matmul(&x, m, &w).unwrap();
    for (i, ((g, w), b)) in got.iter().zip(&want).zip(bound(&x, &wd, m, n, k)).enumerate() {
        assert!((g - w).abs() <= b, "[{i}]: {g} vs {w} (bound {b})");
    }
}

#[test]
fn other_ops_are_refused_with_a_reason() {
    let emu = Emu::new("2.3.2");
    let p = RknnProvider::new(emu.lib.clone(), NpuCoreMask::AUTO);
    assert!(matches!(p.supports(&OpSpec::Softmax), Support::No(why) if why.contains("linear layers only")));
    assert!(p.reads_host_memory());
    assert!(p.name().contains("2.3.2"), "{}", p.name());
    let exec = npu_executor(&emu);
    let err = Softmax::new(&exec).unwrap_err().to_string();
    assert!(err.contains("softmax"), "{err}");
    // Layers held to f32 rounding: the NPU multiplies int8.
    assert!(Linear::dense(&exec, &[1.0; 64], [2, 32], None).is_err());
    let w = aihal_quantize::quantize(QuantFormat::Q8_0, &[0.5; 64], &[2, 32]).unwrap();
    assert!(Linear::with_precision(&exec, &w, None, LinearPrecision::F32).is_err());
}
