//! The probe registry: backends make themselves known through [`BackendProbe`] and
//! [`register_backend`]; each probe runs once per process and its answer is cached until
//! [`refresh_probes`]. [`probe_report`] gathers the answers for device selection.
//!
//! `aihal-core` links no vendor library, so it cannot look for a GPU itself. Each backend
//! crate implements [`BackendProbe`]; the `aihal` facade registers the compiled-in ones with
//! [`register_backend`]. With nothing registered, every accelerator is reported as “not
//! compiled in”.

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use crate::device::{BackendKind, Device};
use crate::error::CoreError;

/// A backend's answer to “are you here?”. Implemented by `aihal-cuda`, `aihal-rknn` and the
/// Vulkan side of `aihal-kernels`; registered with [`register_backend`].
///
/// `probe` must not panic (a panic is caught and reported as a failed probe, but the panic
/// hook still prints it) and should be cheap enough to run once per process: its answer is
/// cached until [`refresh_probes`].
pub trait BackendProbe: Send + Sync {
    /// Which backend this probes.
    fn backend(&self) -> BackendKind;
    /// Looks for devices of this backend.
    fn probe(&self) -> BackendStatus;
}

/// One device a probe found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    /// The device, ready to pass to dispatch.
    pub device: Device,
    /// Its name as the driver reports it (`NVIDIA GeForce RTX 4090`, `llvmpipe (LLVM 15)`).
    pub name: String,
    /// Whether it is a software implementation running on the CPU (lavapipe, llvmpipe):
    /// such a device is never chosen unless named explicitly.
    pub software: bool,
    /// Total device memory in bytes, when known.
    pub memory_bytes: Option<u64>,
    /// Anything else worth printing (compute capability, runtime version, free memory).
    pub detail: Option<String>,
}

impl DeviceInfo {
    /// A hardware device with a name and nothing else known.
    pub fn new(device: Device, name: impl Into<String>) -> Self {
        Self {
            device,
            name: name.into(),
            software: false,
            memory_bytes: None,
            detail: None,
        }
    }
}

impl fmt::Display for DeviceInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.device, self.name)?;
        if self.software {
            f.write_str(" (software, runs on the CPU)")?;
        }
        if let Some(bytes) = self.memory_bytes {
            write!(f, ", {:.1} GiB", bytes as f64 / f64::from(1u32 << 30))?;
        }
        if let Some(detail) = &self.detail {
            write!(f, ", {detail}")?;
        }
        Ok(())
    }
}

/// Why a backend cannot be used.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Unavailable {
    /// The backend is not compiled into this binary.
    NotCompiled,
    /// The driver or runtime library is missing (`libcuda.so`, `librknnrt.so`, a Vulkan
    /// driver); `detail` says what was searched and how to point at it.
    LibraryMissing {
        /// What was searched, and the variable that overrides it.
        detail: String,
    },
    /// The library is there but reports no device.
    NoDevice {
        /// What the library said.
        detail: String,
    },
    /// The configured ordinal is past the devices found.
    OrdinalOutOfRange {
        /// The ordinal asked for.
        requested: usize,
        /// How many devices exist.
        count: usize,
    },
    /// Every device found is a software implementation on the CPU.
    SoftwareOnly,
    /// The probe itself failed; the error is kept.
    ProbeFailed {
        /// The error the probe met.
        source: Arc<CoreError>,
    },
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotCompiled => f.write_str("not compiled in"),
            Self::LibraryMissing { detail } => write!(f, "driver or runtime library missing: {detail}"),
            Self::NoDevice { detail } => write!(f, "no device found: {detail}"),
            Self::OrdinalOutOfRange { requested, count } => write!(
                f,
                "ordinal {requested} out of range ({count} device{} found)",
                if *count == 1 { "" } else { "s" }
            ),
            Self::SoftwareOnly => {
                f.write_str("only software (CPU-type) adapters found; name one explicitly (e.g. wgpu:0) to use it")
            }
            Self::ProbeFailed { source } => write!(f, "probe failed: {source}"),
        }
    }
}

/// A backend's probe result.
#[derive(Clone, Debug)]
pub enum BackendStatus {
    /// Devices were found.
    Available(Vec<DeviceInfo>),
    /// None can be used, and why.
    Unavailable(Unavailable),
}

impl BackendStatus {
    /// The devices found (empty when unavailable).
    pub fn devices(&self) -> &[DeviceInfo] {
        match self {
            Self::Available(d) => d,
            Self::Unavailable(_) => &[],
        }
    }
}

/// What was probed and found: one line per backend, CPU last.
#[derive(Clone, Debug)]
pub struct ProbeReport {
    /// Each accelerator backend with its status, in [`BackendKind::ACCELERATORS`] order.
    pub backends: Vec<(BackendKind, BackendStatus)>,
}

impl ProbeReport {
    /// The status of one backend.
    pub fn status(&self, kind: BackendKind) -> Option<&BackendStatus> {
        self.backends.iter().find(|(k, _)| *k == kind).map(|(_, s)| s)
    }
}

struct Entry {
    probe: Arc<dyn BackendProbe>,
    status: OnceLock<BackendStatus>,
}

static REGISTRY: RwLock<Vec<Arc<Entry>>> = RwLock::new(Vec::new());

/// Makes a backend known to device selection. Registering a second probe for the same
/// backend replaces the first (so calling this repeatedly is harmless).
pub fn register_backend(probe: Arc<dyn BackendProbe>) {
    let mut registry = REGISTRY.write().unwrap_or_else(PoisonError::into_inner);
    let kind = probe.backend();
    registry.retain(|e| e.probe.backend() != kind);
    registry.push(Arc::new(Entry {
        probe,
        status: OnceLock::new(),
    }));
}

/// The backends registered so far.
pub fn registered_backends() -> Vec<BackendKind> {
    let registry = REGISTRY.read().unwrap_or_else(PoisonError::into_inner);
    registry.iter().map(|e| e.probe.backend()).collect()
}

/// Forgets cached probe results, so the next selection probes again (after a driver
/// was installed, say).
pub fn refresh_probes() {
    let mut registry = REGISTRY.write().unwrap_or_else(PoisonError::into_inner);
    for entry in registry.iter_mut() {
        *entry = Arc::new(Entry {
            probe: Arc::clone(&entry.probe),
            status: OnceLock::new(),
        });
    }
}

/// Probes every registered backend (once per process; cached) and reports all accelerators,
/// the unregistered ones as not compiled in.
pub fn probe_report() -> ProbeReport {
    let entries: Vec<Arc<Entry>> = REGISTRY.read().unwrap_or_else(PoisonError::into_inner).clone();
    let backends = BackendKind::ACCELERATORS
        .iter()
        .map(|&kind| {
            let status = entries
                .iter()
                .find(|e| e.probe.backend() == kind)
                .map_or(BackendStatus::Unavailable(Unavailable::NotCompiled), |e| {
                    e.status.get_or_init(|| run_probe(&*e.probe)).clone()
                });
            (kind, status)
        })
        .collect();
    ProbeReport { backends }
}

fn run_probe(probe: &dyn BackendProbe) -> BackendStatus {
    catch_unwind(AssertUnwindSafe(|| probe.probe())).unwrap_or_else(|payload| {
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        BackendStatus::Unavailable(Unavailable::ProbeFailed {
            source: Arc::new(CoreError::kernel(
                probe.backend().name(),
                "probe",
                format!("the probe panicked: {what}"),
            )),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    struct Counting(std::sync::atomic::AtomicUsize, BackendKind, bool);
    impl BackendProbe for Counting {
        fn backend(&self) -> BackendKind {
            self.1
        }
        fn probe(&self) -> BackendStatus {
            self.0.fetch_add(1, Ordering::SeqCst);
            assert!(!self.2, "driver exploded");
            BackendStatus::Available(vec![DeviceInfo::new(Device::Wgpu { adapter: 0 }, "counted")])
        }
    }

    #[test]
    fn registered_probes_run_once_and_panics_become_probe_failures() {
        // The registry is global; this is the only unit test that registers, and it uses
        // the wgpu slot, which automatic selection never picks.
        let probe = Arc::new(Counting(0.into(), BackendKind::Wgpu, false));
        register_backend(probe.clone());
        assert!(registered_backends().contains(&BackendKind::Wgpu));
        for _ in 0..3 {
            let r = probe_report();
            assert_eq!(r.status(BackendKind::Wgpu).unwrap().devices()[0].name, "counted");
        }
        assert_eq!(probe.0.load(Ordering::SeqCst), 1, "probe results are cached");
        refresh_probes();
        probe_report();
        assert_eq!(probe.0.load(Ordering::SeqCst), 2, "refresh probes again");

        register_backend(Arc::new(Counting(0.into(), BackendKind::Wgpu, true)));
        let r = probe_report();
        let Some(BackendStatus::Unavailable(Unavailable::ProbeFailed { source })) = r.status(BackendKind::Wgpu) else {
            panic!("a panicking probe must be reported as failed")
        };
        assert!(source.to_string().contains("driver exploded"), "{source}");
        assert_eq!(
            registered_backends()
                .iter()
                .filter(|k| **k == BackendKind::Wgpu)
                .count(),
            1
        );
    }
}
