//! candle ↔ CubeCL interop, run on Vulkan (lavapipe in CI): the buffers are the same on any
//! CubeCL runtime. (The ops themselves are tested through `aihal_kernels::CubeProvider` in
//! aihal-kernels' own tests.)

#[path = "../../kernels/tests/support/mod.rs"]
mod support;

use aihal_core::{CoreError, DType};
use aihal_cuda::{allocate_output_buffer, candle_to_cubecl_handle, cubecl_to_candle_tensor, CubeTensor};
use aihal_kernels::conformance::Rng;
use aihal_kernels::cubecl::wgpu::WgpuRuntime;
use aihal_kernels::{wgpu_adapters, wgpu_context, Context};
use candle_core::Tensor;

/// The first Vulkan adapter's context, or why none opens (the harness reports the tests as
/// ignored, or failed under `AIHAL_REQUIRE_VULKAN=1`).
fn adapter() -> Result<Context<WgpuRuntime>, String> {
    let first = wgpu_adapters()
        .into_iter()
        .next()
        .ok_or("no Vulkan adapter found (install mesa-vulkan-drivers for lavapipe)")?;
    wgpu_context(first.index).map_err(|e| e.to_string())
}

fn main() {
    let tests = vec![
        support::test(
            "tensors_round_trip_in_every_float_dtype_and_any_layout",
            tensors_round_trip_in_every_float_dtype_and_any_layout,
        ),
        support::test("sizes_and_dtypes_are_validated", sizes_and_dtypes_are_validated),
    ];
    support::run(adapter, "AIHAL_REQUIRE_VULKAN", tests, Vec::new())
}

fn tensors_round_trip_in_every_float_dtype_and_any_layout(ctx: &Context<WgpuRuntime>) {
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
            let dev = candle_to_cubecl_handle(ctx, &view).unwrap();
            assert_eq!(dev.shape(), view.dims());
            assert_eq!(dev.dtype(), DType::from_candle(dtype).unwrap());
            let back = cubecl_to_candle_tensor(ctx, &dev, &candle_core::Device::Cpu).unwrap();
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

fn sizes_and_dtypes_are_validated(ctx: &Context<WgpuRuntime>) {
    let buf = ctx.upload(&[1.0f32; 12]).unwrap();
    let err = CubeTensor::from_f32(buf.clone(), &[5, 2]).unwrap_err();
    assert!(matches!(err, CoreError::ShapeMismatch { .. }), "{err}");
    let t = CubeTensor::from_f32(buf, &[3, 4]).unwrap();
    assert!(matches!(t.as_f16().unwrap_err(), CoreError::Unsupported { .. }));
    let ints = Tensor::new(&[1u32, 2, 3], &candle_core::Device::Cpu).unwrap();
    let err = candle_to_cubecl_handle(ctx, &ints).unwrap_err();
    assert!(matches!(err, CoreError::Unsupported { .. }), "{err}");
    let out = allocate_output_buffer(ctx, &[4, 8], DType::F16).unwrap();
    assert_eq!(
        (out.shape(), out.dtype(), out.as_f16().unwrap().len()),
        (&[4, 8][..], DType::F16, 32)
    );
    assert!(matches!(
        allocate_output_buffer(ctx, &[2], DType::I32).unwrap_err(),
        CoreError::Unsupported { .. }
    ));
}
