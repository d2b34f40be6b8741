//! [`RknnProbe`]: makes the NPU known to aihal-core's device selection.

use aihal_core::{BackendKind, BackendProbe, BackendStatus, Device, DeviceInfo, NpuCoreMask, Unavailable};

use crate::error::Result;
use crate::library::RknnLibrary;

/// The NPU's answer to device selection: loads the runtime ([`RknnLibrary::global`]) and
/// creates a throw-away matmul context to confirm the NPU answers. Never panics; a missing
/// runtime is [`Unavailable::LibraryMissing`] with every path searched, a runtime that cannot
/// reach the NPU is [`Unavailable::NoDevice`] with the runtime's status.
///
/// ```
/// use aihal_core::{register_backend, BackendProbe};
/// use aihal_rknn::RknnProbe;
/// register_backend(std::sync::Arc::new(RknnProbe));
/// // Without librknnrt.so (and without RUST_AI_RKNN_LIB) the probe reports why.
/// println!("{:?}", RknnProbe.probe());
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct RknnProbe;

impl RknnProbe {
    /// The status for a library load result (what [`BackendProbe::probe`] reports for
    /// [`RknnLibrary::global`]).
    pub fn status_of(library: Result<RknnLibrary>) -> BackendStatus {
        let lib = match library {
            Ok(lib) => lib,
            Err(e) => {
                // The reason alone: the report already says which backend and that it is missing.
                let detail = match e {
                    crate::error::RknnError::Core(aihal_core::CoreError::DeviceNotAvailable { reason, .. }) => reason,
                    other => other.to_string(),
                };
                return BackendStatus::Unavailable(Unavailable::LibraryMissing { detail });
            }
        };
        match lib.runtime_info() {
            Ok(info) => {
                let mut device = DeviceInfo::new(
                    Device::Rknn {
                        core_mask: NpuCoreMask::AUTO,
                    },
                    "Rockchip NPU (RKNN runtime)",
                );
                device.detail = Some(format!("{info}, loaded from {}", lib.path().display()));
                BackendStatus::Available(vec![device])
            }
            Err(e) => BackendStatus::Unavailable(Unavailable::NoDevice { detail: e.to_string() }),
        }
    }
}

impl BackendProbe for RknnProbe {
    fn backend(&self) -> BackendKind {
        BackendKind::Rknn
    }

    fn probe(&self) -> BackendStatus {
        Self::status_of(RknnLibrary::global())
    }
}
