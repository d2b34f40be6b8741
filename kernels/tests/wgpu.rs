//! The conformance suite on Vulkan (wgpu), lavapipe in CI. Without an adapter its checks are
//! reported as ignored, with the reason (`AIHAL_REQUIRE_VULKAN=1` makes that a failure); the
//! probe tests run everywhere.

#[path = "support/mod.rs"]
mod support;

use aihal_core::{BackendKind, BackendProbe, BackendStatus, CoreError, Device};
use aihal_kernels::conformance::{checks, wgpu_test_context};
use aihal_kernels::cubecl::wgpu::WgpuRuntime;
use aihal_kernels::{wgpu_adapters, wgpu_device, WgpuProbe};

fn main() {
    let tests = checks::<WgpuRuntime>()
        .into_iter()
        .map(|(name, check)| support::test(name, check))
        .collect();
    let always = vec![
        support::always(
            "probe::probe_lists_the_same_adapters_and_marks_cpu_ones_software",
            probe_lists_the_same_adapters_and_marks_cpu_ones_software,
        ),
        support::always(
            "probe::an_adapter_index_past_the_end_is_device_not_available",
            an_adapter_index_past_the_end_is_device_not_available,
        ),
    ];
    support::run(wgpu_test_context, "AIHAL_REQUIRE_VULKAN", tests, always)
}

fn probe_lists_the_same_adapters_and_marks_cpu_ones_software() {
    assert_eq!(WgpuProbe.backend(), BackendKind::Wgpu);
    let adapters = wgpu_adapters();
    match WgpuProbe.probe() {
        BackendStatus::Available(devices) => {
            assert_eq!(devices.len(), adapters.len());
            for (info, adapter) in devices.iter().zip(&adapters) {
                assert_eq!(info.device, Device::Wgpu { adapter: adapter.index });
                assert_eq!(info.software, adapter.software);
                let lavapipe = info.name.contains("llvmpipe") || info.name.contains("lavapipe");
                assert!(!lavapipe || info.software, "{info}");
            }
        }
        BackendStatus::Unavailable(why) => {
            assert!(
                adapters.is_empty(),
                "the probe says unavailable ({why}) but adapters were listed"
            );
        }
    }
}

fn an_adapter_index_past_the_end_is_device_not_available() {
    let past = wgpu_adapters().len() + 3;
    let err = wgpu_device(past).unwrap_err();
    assert!(matches!(err, CoreError::DeviceNotAvailable { .. }), "{err}");
    assert!(err.to_string().contains(&format!("wgpu:{past}")), "{err}");
}
