//! `RknnProvider` through the op set (`aihal-ops`) on the emulator: linear layers in every
//! format against `aihal-reference` within the op set's one bound for int8 activations (int8
//! weights as they are, other formats converted to int8 per row, whose cost is measured here
//! per format), the bias, a K past the native layout's 8192-row segments, and what it refuses.

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
        // The conversion's own cost, stated in the README.
        let converted = dequantized(&aihal_quantize::quantize(QuantFormat::Int8PerChannel, &wd, &[n, k]).unwrap());
        let err: f64 = converted
            .iter()
            .zip(&wd)
            .map(|(a, b)| f64::from(a - b).powi(2))
            .sum::<f64>();
        let norm: f64 = wd.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>();
        let rel = (err / norm.max(f64::MIN_POSITIVE)).sqrt();
        println!("{format}: {rel:.2e}");
        assert!(rel < 0.01, "{format}: the conversion costs {rel}");
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
