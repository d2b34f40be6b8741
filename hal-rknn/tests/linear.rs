//! `RknnLinear` and `RknnProbe`: the NPU route of the quantized linear layer through
//! `GpuDispatchable`, compared with aihal-reference, and its fallbacks, on every
//! runtime generation.
// Exact float equality on purpose for the int8 route: the NPU's int32 products are exact and
// the host applies the scales in a fixed order. fp16 results are compared with a bound: the
// NPU's fp16 accumulation is not documented.
#![allow(clippy::float_cmp)]

mod common;

use aihal_core::candle_core::{Device as CandleDevice, Tensor};
use aihal_core::{BackendStatus, CoreError, Device, GpuDispatchable, NpuCoreMask, Unavailable};
use aihal_quantize::{QuantFormat, QuantizedTensor};
use aihal_rknn::{MatMulType, RknnLibrary, RknnLinear, RknnProbe};
use common::{Emu, Rng};
use half::f16;

const NPU: Device = Device::Rknn {
    core_mask: NpuCoreMask::AUTO,
};

fn int8_weight(rng: &mut Rng, n: usize, k: usize) -> QuantizedTensor {
    let w = rng.f32s(n * k, 1.0);
    aihal_quantize::quantize(QuantFormat::Int8PerChannel, &w, &[n, k]).unwrap()
}

#[test]
fn the_int8_npu_route_is_exact_on_quantized_activations_and_close_to_the_cpu() {
    let emu = Emu::new("2.3.2");
    let mut rng = Rng::new(11);
    let (m, k, n) = (3, 70, 45);
    let w = int8_weight(&mut rng, n, k);
    let x = rng.f32s(m * k, 3.0);
    let layer = RknnLinear::with_library(w.clone(), Some(emu.lib.clone())).unwrap();
    assert_eq!(layer.npu_type(), Some(MatMulType::Int8ToInt32));
    assert!(layer.npu_available());

    let xt = Tensor::from_vec(x.clone(), (1, m, k), &CandleDevice::Cpu).unwrap();
    let d = layer.dispatch_traced(&xt, &NPU).unwrap();
    assert_eq!(d.ran_on, NPU);
    assert_eq!(d.fallback, None);
    assert_eq!(d.output.dims(), [1, m, n]);
    let got: Vec<f32> = d.output.flatten_all().unwrap().to_vec1().unwrap();

    // Independent computation of the documented algorithm.
    let wq: Vec<i8> = w.data().iter().map(|&b| b as i8).collect();
    let cpu = aihal_reference::matmul(&x, m, &w).unwrap();
    for i in 0..m {
        let row = &x[i * k..(i + 1) * k];
        let sx = row.iter().fold(0f32, |a, v| a.max(v.abs())) / 127.0;
        let q: Vec<i32> = row.iter().map(|v| (v / sx).round() as i32).collect();
        for j in 0..n {
            let acc: i32 = (0..k).map(|kk| q[kk] * i32::from(wq[j * k + kk])).sum();
            let exact = acc as f32 * sx * w.scales()[j];
            assert_eq!(got[i * n + j], exact, "({i}, {j})");
            // Against the f32 CPU result: only the activation rounding differs.
            let bound: f32 = (0..k)
                .map(|kk| f32::from(wq[j * k + kk]).abs() * w.scales()[j])
                .sum::<f32>()
                * sx
                / 2.0;
            let err = (got[i * n + j] - cpu[i * n + j]).abs();
            assert!(
                err <= bound * 1.001 + 1e-5,
                "({i}, {j}): error {err} above bound {bound}"
            );
        }
    }

    // The CPU route is the reference's result exactly.
    let on_cpu = layer.dispatch_traced(&xt, &Device::Cpu).unwrap();
    assert_eq!(on_cpu.ran_on, Device::Cpu);
    assert_eq!(on_cpu.output.flatten_all().unwrap().to_vec1::<f32>().unwrap(), cpu);

    // A second call with the same M reuses the context; another M and a core mask work too.
    let again = layer.dispatch(&xt, &NPU).unwrap();
    assert_eq!(again.flatten_all().unwrap().to_vec1::<f32>().unwrap(), got);
    let x1 = Tensor::from_vec(x[..k].to_vec(), (1, k), &CandleDevice::Cpu).unwrap();
    let one = layer
        .dispatch(
            &x1,
            &Device::Rknn {
                core_mask: NpuCoreMask::CORE_1,
            },
        )
        .unwrap();
    assert_eq!(one.flatten_all().unwrap().to_vec1::<f32>().unwrap(), got[..n]);
    drop(layer);
    assert_eq!(emu.live(), (0, 0));
}

#[test]
fn the_f16_route_matches_f16_rounded_inputs() {
    let emu = Emu::new("1.6.0");
    let mut rng = Rng::new(12);
    let (m, k, n) = (2, 48, 20);
    let w: Vec<f16> = rng.f32s(n * k, 1.0).into_iter().map(f16::from_f32).collect();
    let x = rng.f32s(m * k, 2.0);
    let layer = RknnLinear::from_f16(w.clone(), n, k, Some(emu.lib.clone())).unwrap();
    let xt = Tensor::from_vec(x.clone(), (m, k), &CandleDevice::Cpu).unwrap();
    let got: Vec<f32> = layer
        .dispatch(&xt, &NPU)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_f16_linear(&got, &x, &w, m, k, n, "1.6.0");
    assert!(RknnLinear::from_f16(w, n, k + 1, None).is_err());
}

#[test]
fn formats_without_an_npu_route_and_missing_runtimes_fall_back_with_a_reason() {
    let emu = Emu::new("2.3.2");
    let mut rng = Rng::new(13);
    let (m, k, n) = (2, 64, 8);
    let x = rng.f32s(m * k, 1.0);
    let xt = Tensor::from_vec(x.clone(), (m, k), &CandleDevice::Cpu).unwrap();

    let q4 = aihal_quantize::quantize(QuantFormat::Q4_0, &rng.f32s(n * k, 1.0), &[n, k]).unwrap();
    let layer = RknnLinear::with_library(q4.clone(), Some(emu.lib.clone())).unwrap();
    assert_eq!(layer.npu_type(), None);
    let d = layer.dispatch_traced(&xt, &NPU).unwrap();
    assert_eq!(d.ran_on, Device::Cpu);
    assert!(d.fallback.unwrap().contains("q4_0"));
    assert_eq!(
        d.output.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        aihal_reference::matmul(&x, m, &q4).unwrap()
    );

    let w = int8_weight(&mut rng, n, k);
    let no_runtime = RknnLinear::with_library(w, None).unwrap();
    assert!(!no_runtime.npu_available());
    let d = no_runtime.dispatch_traced(&xt, &NPU).unwrap();
    assert_eq!(d.ran_on, Device::Cpu);
    assert!(d.fallback.unwrap().contains("no route available"));
}

#[test]
fn bad_inputs_and_npu_failures_are_errors_not_fallbacks() {
    let emu = Emu::new("2.3.2");
    let mut rng = Rng::new(14);
    let (k, n) = (32, 32);
    let layer = RknnLinear::with_library(int8_weight(&mut rng, n, k), Some(emu.lib.clone())).unwrap();
    let mut x = rng.f32s(k, 1.0);
    x[5] = f32::NAN;
    let xt = Tensor::from_vec(x, (1, k), &CandleDevice::Cpu).unwrap();
    assert!(matches!(layer.dispatch(&xt, &NPU), Err(CoreError::InvalidInput(_))));
    let wrong_k = Tensor::zeros((1, k + 1), aihal_core::candle_core::DType::F32, &CandleDevice::Cpu).unwrap();
    assert!(matches!(
        layer.dispatch(&wrong_k, &NPU),
        Err(CoreError::ShapeMismatch { .. })
    ));

    let xt = Tensor::from_vec(rng.f32s(k, 1.0), (1, k), &CandleDevice::Cpu).unwrap();
    emu.fail("rknn_matmul_run:-2");
    let err = layer.dispatch(&xt, &NPU).unwrap_err();
    assert!(
        err.to_string()
            .contains("rknn_matmul_run failed: RKNN_ERR_TIMEOUT (-2)"),
        "{err}"
    );
    emu.heal();
    assert!(
        layer.dispatch(&xt, &NPU).is_ok(),
        "the layer recovers once the NPU does"
    );

    let bad_shape = aihal_quantize::quantize(QuantFormat::Int8PerChannel, &[1.0; 8], &[2, 2, 2]).unwrap();
    assert!(RknnLinear::with_library(bad_shape, None).is_err());
}

#[test]
fn the_probe_reports_the_npu_or_why_it_is_missing() {
    let emu = Emu::new("2.1.0");
    match RknnProbe::status_of(Ok(emu.lib.clone())) {
        BackendStatus::Available(devices) => {
            assert_eq!(devices.len(), 1);
            assert_eq!(devices[0].device, NPU);
            let detail = devices[0].detail.as_deref().unwrap();
            assert!(detail.contains("2.1.0"), "{detail}");
        }
        other @ BackendStatus::Unavailable(_) => panic!("expected the NPU, got {other:?}"),
    }
    match RknnProbe::status_of(RknnLibrary::load_from("/nonexistent/librknnrt.so")) {
        BackendStatus::Unavailable(Unavailable::LibraryMissing { detail }) => {
            assert!(detail.contains("/nonexistent/librknnrt.so"), "{detail}");
            assert!(detail.contains("RUST_AI_RKNN_LIB"), "{detail}");
        }
        other => panic!("expected a missing library, got {other:?}"),
    }
    // A runtime that cannot reach the NPU is "no device", with the runtime's status.
    let emu2 = emu; // keep the lock
    let fresh = RknnLibrary::load_from(&emu2.path).unwrap();
    emu2.fail("rknn_matmul_create:-3");
    match RknnProbe::status_of(Ok(fresh)) {
        BackendStatus::Unavailable(Unavailable::NoDevice { detail }) => {
            assert!(detail.contains("RKNN_ERR_DEVICE_UNAVAILABLE (-3)"), "{detail}");
        }
        other => panic!("expected no device, got {other:?}"),
    }
}

#[test]
fn k_beyond_the_runtime_limit_is_split_and_summed() {
    // Runtime 1.5.2 takes K up to 4096 (int8) and 2048 (f16) per product.
    let emu = Emu::new("1.5.2");
    let mut rng = Rng::new(15);
    let (m, k, n) = (2, 5000, 40);
    let w = int8_weight(&mut rng, n, k);
    let x = rng.f32s(m * k, 1.0);
    let layer = RknnLinear::with_library(w.clone(), Some(emu.lib.clone())).unwrap();
    let xt = Tensor::from_vec(x.clone(), (m, k), &CandleDevice::Cpu).unwrap();
    let got: Vec<f32> = layer
        .dispatch(&xt, &NPU)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let wq: Vec<i8> = w.data().iter().map(|&b| b as i8).collect();
    for i in 0..m {
        let row = &x[i * k..(i + 1) * k];
        let sx = row.iter().fold(0f32, |a, v| a.max(v.abs())) / 127.0;
        for j in 0..n {
            let acc: i32 = (0..k)
                .map(|kk| (row[kk] / sx).round() as i32 * i32::from(wq[j * k + kk]))
                .sum();
            assert_eq!(got[i * n + j], acc as f32 * sx * w.scales()[j], "({i}, {j})");
        }
    }

    let (m, k, n) = (1, 2100, 16);
    let wh: Vec<f16> = rng.f32s(n * k, 1.0).into_iter().map(f16::from_f32).collect();
    let x = rng.f32s(m * k, 1.0);
    let layer = RknnLinear::from_f16(wh.clone(), n, k, Some(emu.lib.clone())).unwrap();
    let xt = Tensor::from_vec(x.clone(), (m, k), &CandleDevice::Cpu).unwrap();
    let got: Vec<f32> = layer
        .dispatch(&xt, &NPU)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    // Two products (K 0..2048 and 2048..2100) added on the host.
    assert_f16_linear(&got, &x, &wh, m, k, n, "1.5.2");
}

/// `y = x · Wᵀ` for f16-rounded `x` and f16 `W` (`[N, K]`), within a bound that allows an
/// f16-sized rounding per product (the NPU's fp16 accumulation is not documented).
fn assert_f16_linear(got: &[f32], x: &[f32], w: &[f16], m: usize, k: usize, n: usize, what: &str) {
    for i in 0..m {
        for j in 0..n {
            let products =
                (0..k).map(|kk| f64::from(f16::from_f32(x[i * k + kk]).to_f32()) * f64::from(w[j * k + kk].to_f32()));
            let (sum, size) = products.fold((0f64, 0f64), |(s, z), p| (s + p, z + p.abs()));
            let err = (f64::from(got[i * n + j]) - sum).abs();
            assert!(
                err <= size * 1e-3 + 1e-6,
                "{what} ({i}, {j}): {} vs {sum}",
                got[i * n + j]
            );
        }
    }
}

/// The int8 route's result, written from its specification: per-row symmetric int8
/// activations, exact int32 products, then `acc * scale_x[i] * scale_w[j]`.
fn int8_linear(x: &[f32], w: &QuantizedTensor, m: usize, k: usize, n: usize) -> Vec<f32> {
    let wq: Vec<i8> = w.data().iter().map(|&b| b as i8).collect();
    let mut y = Vec::with_capacity(m * n);
    for i in 0..m {
        let row = &x[i * k..(i + 1) * k];
        let amax = row.iter().fold(0f32, |a, v| a.max(v.abs()));
        let sx = if amax > 0.0 { amax / 127.0 } else { 1.0 };
        let q: Vec<i32> = row
            .iter()
            .map(|v| (v / sx).round().clamp(-127.0, 127.0) as i32)
            .collect();
        for j in 0..n {
            let acc: i32 = (0..k).map(|kk| q[kk] * i32::from(wq[j * k + kk])).sum();
            y.push(acc as f32 * sx * w.scales()[j]);
        }
    }
    y
}

#[test]
fn a_layer_with_k_11008_runs_on_every_runtime_generation() {
    // K = 11008 exceeds every runtime's K limit (4096 on 1.5.x, 10240 from 1.6.0), so the
    // layer splits K; from 2.0.0 a part with K above 8192 is also stored as 8192-row native
    // segments. N = 45 is not a multiple of a block.
    let (m, k, n) = (2, 11008, 45);
    let mut rng = Rng::new(16);
    let w = int8_weight(&mut rng, n, k);
    let wh: Vec<f16> = rng.f32s(n * k, 1.0).into_iter().map(f16::from_f32).collect();
    let x = rng.f32s(m * k, 1.0);
    let want = int8_linear(&x, &w, m, k, n);
    let xt = Tensor::from_vec(x.clone(), (m, k), &CandleDevice::Cpu).unwrap();
    for v in ["1.5.0", "1.5.2", "1.6.0", "2.0.0", "2.1.0", "2.2.0", "2.3.0", "2.3.2"] {
        let emu = Emu::new(v);
        let layer = RknnLinear::with_library(w.clone(), Some(emu.lib.clone())).unwrap();
        let d = layer.dispatch_traced(&xt, &NPU).unwrap();
        assert_eq!(d.ran_on, NPU, "{v}");
        let got: Vec<f32> = d.output.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(got, want, "{v}");
        let half = RknnLinear::from_f16(wh.clone(), n, k, Some(emu.lib.clone())).unwrap();
        let got: Vec<f32> = half
            .dispatch(&xt, &NPU)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_f16_linear(&got, &x, &wh, m, k, n, v);
        drop((layer, half));
        assert_eq!(emu.live(), (0, 0), "{v}");
    }
}
