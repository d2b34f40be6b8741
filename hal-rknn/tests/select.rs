//! Device selection finds the NPU through `RknnProbe` and `RUST_AI_RKNN_LIB` (its own test
//! binary: the process-wide library is loaded once, from the environment).

mod common;

use std::sync::Arc;

use aihal_core::{get_device, register_backend, Device, DeviceConfig, NpuCoreMask};
use aihal_rknn::{RknnLibrary, RknnProbe};

#[test]
fn get_device_selects_the_npu_named_by_rust_ai_rknn_lib() {
    let path = common::emulator_path();
    std::env::set_var("RUST_AI_RKNN_LIB", &path);
    let lib = RknnLibrary::global().unwrap();
    assert_eq!(lib.path(), path);
    register_backend(Arc::new(RknnProbe));
    let device = get_device(&DeviceConfig::new()).unwrap();
    assert_eq!(
        device,
        Device::Rknn {
            core_mask: NpuCoreMask::AUTO
        }
    );

    // A bad path is an error naming the variable, never a panic.
    std::env::set_var("RUST_AI_RKNN_LIB", "/nonexistent/librknnrt.so");
    let err = RknnLibrary::load().unwrap_err().to_string();
    assert!(err.contains("RUST_AI_RKNN_LIB names this path"), "{err}");
    std::env::remove_var("RUST_AI_RKNN_LIB");
}
