//! Automatic selection follows the registered backends: their priorities first, then the
//! order they were registered in. Through the public API and the process-wide registry, so
//! this file holds a single test (each test file is its own process).

use std::sync::Arc;

use aihal_core::{
    probe_report, register_backend, select_device, BackendKind, BackendProbe, BackendStatus, Device, DeviceConfig,
    DeviceInfo, NpuCoreMask, SelectionReason,
};

/// A test backend that always finds one device, with a chosen priority.
struct TestBackend {
    device: Device,
    priority: i32,
}

impl BackendProbe for TestBackend {
    fn backend(&self) -> BackendKind {
        self.device.backend()
    }
    fn probe(&self) -> BackendStatus {
        BackendStatus::Available(vec![DeviceInfo::new(self.device, "test backend")])
    }
    fn priority(&self) -> i32 {
        self.priority
    }
}

#[test]
fn a_registered_backend_with_a_higher_priority_wins() {
    let npu = Device::Rknn {
        core_mask: NpuCoreMask::AUTO,
    };
    // Registered first, default priority: without the NPU's priority, CUDA would win.
    register_backend(Arc::new(TestBackend {
        device: Device::Cuda { ordinal: 0 },
        priority: 0,
    }));
    let selection = select_device(&DeviceConfig::new()).unwrap();
    assert_eq!(selection.device, Device::Cuda { ordinal: 0 });

    register_backend(Arc::new(TestBackend {
        device: npu,
        priority: 10,
    }));
    let selection = select_device(&DeviceConfig::new()).unwrap();
    assert_eq!(selection.device, npu);
    assert!(matches!(selection.reason, SelectionReason::BestAvailable));
    assert!(selection.to_string().ends_with("(order: rknn, cuda)"), "{selection}");

    let report = probe_report();
    let kinds: Vec<BackendKind> = report.backends.iter().map(|(kind, _)| *kind).collect();
    assert_eq!(kinds, [BackendKind::Rknn, BackendKind::Cuda, BackendKind::Wgpu]);
    assert!(
        report.to_string().starts_with(" rknn: found rknn:auto test backend\n"),
        "{report}"
    );

    // An explicit request still reaches the lower-priority backend.
    let cuda = DeviceConfig::new().device("cuda".parse().unwrap());
    assert_eq!(select_device(&cuda).unwrap().device, Device::Cuda { ordinal: 0 });
}
