//! A device request that names NPU cores (`rknn:0b111`) gets an executor on exactly those
//! cores, and a linear layer placed there runs there: on the emulator of the NPU runtime
//! (`RUST_AI_RKNN_LIB` points the process at it, as a user would at `librknnrt.so`).
#![cfg(feature = "rknn")]

use aihal::core::{Device, DeviceConfig, DeviceRequest, NpuCoreMask};
use aihal::quantize::{quantize, QuantFormat};
use aihal::{Linear, LinearPrecision, Tensor};

#[test]
fn a_request_naming_npu_cores_runs_on_those_cores() {
    let emulator = aihal_rknn_emulator::library_path().expect("cargo builds the emulator's library for this test");
    // Before anything loads the runtime: this test binary has this one test.
    std::env::set_var("RUST_AI_RKNN_LIB", &emulator);
    for mask in [NpuCoreMask::CORES_0_1_2, NpuCoreMask::CORE_1] {
        let config = DeviceConfig::new()
            .device(DeviceRequest::Rknn { core_mask: Some(mask) })
            .strict(true);
        let exec = aihal::build_executor(&config).expect("an executor on the named cores");
        let want = Device::Rknn { core_mask: mask };
        assert_eq!(exec.device(), want);
        let (n, k) = (16, 64);
        let w: Vec<f32> = (0..n * k).map(|i| ((i * 37) % 23) as f32 / 11.0 - 1.0).collect();
        let w = quantize(QuantFormat::Int8PerChannel, &w, &[n, k]).unwrap();
        let linear = Linear::with_precision(&exec, &w, None, LinearPrecision::Int8Activations).expect("linear");
        let x = Tensor::from_vec((0..2 * k).map(|i| (i % 7) as f32 / 7.0).collect(), &[2, k]).unwrap();
        let d = linear.forward_traced(&x).expect("a call on the NPU");
        assert_eq!(d.ran_on, want, "placed on {want}, ran on {}", d.ran_on);
        assert_eq!(d.output.dims(), &[2, n]);
    }
}
