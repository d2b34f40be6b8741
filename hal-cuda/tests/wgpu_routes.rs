//! candle ↔ CubeCL interop and the GPU dispatch route, run on Vulkan (lavapipe in CI).

use aihal_core::{BackendKind, CoreError, DType, Device, GpuDispatchable};
use aihal_cuda::{
    allocate_output_buffer, candle_to_cubecl_handle, cubecl_to_candle_tensor, driver_present, wgpu_device_context,
    CubeTensor, QuantMatmul,
};
use aihal_kernels::conformance::{assert_close, Rng};
use aihal_kernels::cubecl::wgpu::WgpuRuntime;
use aihal_kernels::{wgpu_adapters, Context};
use aihal_quantize::QuantFormat;
use candle_core::Tensor;

/// The first Vulkan adapter, or a loud skip (an error under `AIHAL_REQUIRE_VULKAN=1`).
fn adapter() -> Option<(usize, Context<WgpuRuntime>)> {
    let first = wgpu_adapters().into_iter().next();
    let required = std::env::var("AIHAL_REQUIRE_VULKAN").is_ok_and(|v| v == "1");
    match first.map(|a| (a.index, wgpu_device_context(a.index))) {
        Some((index, Ok(ctx))) => Some((index, ctx)),
        other => {
            let why = match other {
                Some((_, Err(e))) => e.to_string(),
                _ => "no Vulkan adapter found".to_owned(),
            };
            assert!(!required, "AIHAL_REQUIRE_VULKAN=1 but {why}");
            eprintln!("\n*** SKIPPED: aihal-cuda Vulkan route test: {why} ***\n");
            None
        }
    }
}

#[test]
fn tensors_round_trip_in_every_float_dtype_and_any_layout() {
    let Some((_, ctx)) = adapter() else { return };
    let mut rng = Rng::fresh();
    let values = rng.values(6 * 35, 10.0);
    let base = Tensor::from_vec(values, (6, 35), &candle_core::Device::Cpu).unwrap();
    for dtype in [
        candle_core::DType::F32,
        candle_core::DType::F16,
        candle_core::DType::BF16,
    ] {
        let t = base.to_dtype(dtype).unwrap();
        // A transposed view is not contiguous: it must arrive in logical (row-major) order.
        for view in [t.clone(), t.t().unwrap(), t.narrow(1, 3, 17).unwrap()] {
            let dev = candle_to_cubecl_handle(&ctx, &view).unwrap();
            assert_eq!(dev.shape(), view.dims());
            assert_eq!(dev.dtype(), DType::from_candle(dtype).unwrap());
            let back = cubecl_to_candle_tensor(&ctx, &dev, &candle_core::Device::Cpu).unwrap();
            assert_eq!(back.dtype(), dtype);
            let want = view
                .to_dtype(candle_core::DType::F32)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let got = back
                .to_dtype(candle_core::DType::F32)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            assert_eq!(got, want, "{dtype:?} {:?}", view.dims());
        }
    }
}

#[test]
fn sizes_and_dtypes_are_validated() {
    let Some((_, ctx)) = adapter() else { return };
    let buf = ctx.upload(&[1.0f32; 12]).unwrap();
    let err = CubeTensor::from_f32(buf.clone(), &[5, 2]).unwrap_err();
    assert!(matches!(err, CoreError::ShapeMismatch { .. }), "{err}");
    let t = CubeTensor::from_f32(buf, &[3, 4]).unwrap();
    assert!(matches!(t.as_f16().unwrap_err(), CoreError::Unsupported { .. }));
    let ints = Tensor::new(&[1u32, 2, 3], &candle_core::Device::Cpu).unwrap();
    let err = candle_to_cubecl_handle(&ctx, &ints).unwrap_err();
    assert!(matches!(err, CoreError::Unsupported { .. }), "{err}");
    let out = allocate_output_buffer(&ctx, &[4, 8], DType::F16).unwrap();
    assert_eq!(
        (out.shape(), out.dtype(), out.as_f16().unwrap().len()),
        (&[4, 8][..], DType::F16, 32)
    );
    assert!(matches!(
        allocate_output_buffer(&ctx, &[2], DType::I32).unwrap_err(),
        CoreError::Unsupported { .. }
    ));
}

#[test]
fn quant_matmul_runs_on_an_explicit_wgpu_device_and_matches_the_cpu_route() {
    let Some((index, _)) = adapter() else { return };
    let mut rng = Rng::fresh();
    for (format, n, k) in [(QuantFormat::Q4_0, 24, 96), (QuantFormat::Int8PerChannel, 9, 50)] {
        let w = aihal_quantize::quantize(format, &rng.values(n * k, 1.0), &[n, k]).unwrap();
        let op = QuantMatmul::new(w).unwrap();
        for m in [1, 5] {
            let x = Tensor::from_vec(rng.values(m * k, 1.0), (m, k), &candle_core::Device::Cpu).unwrap();
            let gpu = op.dispatch_traced(&x, &Device::Wgpu { adapter: index }).unwrap();
            assert_eq!(gpu.backend(), BackendKind::Wgpu, "{:?}", gpu.fallback);
            assert_eq!(gpu.output.dims(), &[m, n]);
            let cpu = op.dispatch(&x, &Device::Cpu).unwrap();
            let got = gpu.output.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let want = cpu.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let scale = want.iter().fold(0.0f32, |a, v| a.max(v.abs())) + 1.0;
            assert_close(&format!("{format} m={m}"), rng.seed(), &got, &want, |_, _| {
                k as f32 * 2f32.powi(-22) * scale
            });
        }
        let bad = Tensor::zeros((2, k + 1), candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
        let err = op.dispatch(&bad, &Device::Wgpu { adapter: index }).unwrap_err();
        assert!(matches!(err, CoreError::ShapeMismatch { .. }), "{err}");
    }
}

#[test]
fn a_missing_cuda_device_is_an_error_not_a_silent_fallback() {
    if driver_present() {
        return;
    }
    let w = aihal_quantize::quantize(QuantFormat::Q8_0, &[0.5f32; 64], &[2, 32]).unwrap();
    let op = QuantMatmul::new(w).unwrap();
    let x = Tensor::ones((1, 32), candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
    match op.dispatch_traced(&x, &Device::Cuda { ordinal: 0 }) {
        // With a Vulkan adapter the GPU route is tried and the missing driver is reported.
        Err(e) => assert!(matches!(e, CoreError::DeviceNotAvailable { .. }), "{e}"),
        // Without any GPU the route is unavailable: a CPU fallback that says why.
        Ok(d) => {
            assert_eq!(d.ran_on, Device::Cpu);
            assert!(d.fallback.unwrap().contains("cuda:0"));
        }
    }
}

#[test]
fn glue_and_attention_ops_run_on_an_explicit_wgpu_device_and_match_the_cpu_route() {
    use aihal_cuda::{AttentionInput, AttentionOp, Glue, GlueOp};
    use aihal_reference::AttentionShape;
    let Some((index, _)) = adapter() else { return };
    let gpu = Device::Wgpu { adapter: index };
    let mut rng = Rng::fresh();
    let x = Tensor::from_vec(rng.values(4 * 96, 3.0), (4, 96), &candle_core::Device::Cpu).unwrap();
    for glue in [
        Glue::RmsNorm {
            weight: rng.values(96, 1.0),
            eps: 1e-6,
        },
        Glue::Softmax,
        Glue::Silu,
        Glue::Gelu,
    ] {
        let op = GlueOp::new(glue);
        let d = op.dispatch_traced(&x, &gpu).unwrap();
        assert_eq!(d.ran_on, gpu, "{:?}", d.fallback);
        let got = d.output.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let want = op
            .dispatch(&x, &Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let xs = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_close(op.name(), rng.seed(), &got, &want, |i, w| {
            1e-5 * w.abs() + 1e-6 * xs[i].abs().max(1.0)
        });
    }
    let dims = AttentionShape {
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 32,
    };
    let t =
        |n: usize, h: usize| Tensor::from_vec(rng_values(n * h * 32), (n, h, 32), &candle_core::Device::Cpu).unwrap();
    let input = AttentionInput {
        q: t(3, 4),
        k: t(20, 2),
        v: t(20, 2),
    };
    let op = AttentionOp { dims, scale: None };
    let d = op.dispatch_traced(&input, &gpu).unwrap();
    assert_eq!(d.ran_on, gpu);
    let got = d.output.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let want = op
        .dispatch(&input, &Device::Cpu)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_close("attention op", rng.seed(), &got, &want, |_, _| 1e-5);
}

/// Values in [-1, 1) from a fresh generator, never zero.
fn rng_values(n: usize) -> Vec<f32> {
    Rng::fresh().values(n, 1.0)
}
