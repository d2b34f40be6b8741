//! The probe registry: backends make themselves known through [`BackendProbe`] and
//! [`register_backend`]; each probe runs once per process and its answer is cached until
//! [`refresh_probes`]. [`probe_report`] gathers the answers for device selection.
//!
//! `aihal-core` links no vendor library, so it cannot look for a GPU itself. Each backend
//! crate implements [`BackendProbe`]; the `aihal` facade registers the compiled-in ones with
//! [`register_backend`]. With nothing registered, every accelerator is reported as “not
//! compiled in”.
//!
//! The registry also decides the order in which automatic selection tries the backends:
//! higher [`BackendProbe::priority`] first, equal priorities in registration order, and
//! backends that are [`BackendProbe::explicit_only`] not at all. No order is written down
//! anywhere else.

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
///
/// Automatic selection tries the registered backends by [`priority`](Self::priority), then
/// in registration order, and skips those that are [`explicit_only`](Self::explicit_only).
pub trait BackendProbe: Send + Sync {
    /// Which backend this probes.
    fn backend(&self) -> BackendKind;

    /// Looks for devices of this backend.
    fn probe(&self) -> BackendStatus;

    /// Where this backend stands in automatic selection: higher priorities are tried first,
    /// equal ones in the order they were registered. The default, 0, leaves the order to
    /// registration (the `aihal` facade registers CUDA, then the NPU, then Vulkan).
    fn priority(&self) -> i32 {
        0
    }

    /// Whether automatic selection passes this backend over, so that it runs only when asked
    /// for by name (`RUST_AI_DEVICE`). The default is `true` for Vulkan (the native CPU path
    /// beats a software Vulkan driver, and a real GPU behind Vulkan is a choice the user
    /// makes) and `false` for every other backend.
    fn explicit_only(&self) -> bool {
        explicit_only_by_default(self.backend())
    }
}

/// What [`BackendProbe::explicit_only`] answers unless a probe says otherwise; also applied
/// to backends that are not registered, whose probe cannot say.
fn explicit_only_by_default(kind: BackendKind) -> bool {
    kind == BackendKind::Wgpu
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

// Its `Display` (one line per backend, CPU last) is presentation of the selection, and
// lives with the selection policy in select.rs.
/// What was probed and found, in the order automatic selection tries it.
///
/// [`probe_report`] lists the registered backends by [`BackendProbe::priority`] and
/// registration order, then every other accelerator as not compiled in. A report built by
/// hand (for [`DeviceSelection::decide`](crate::DeviceSelection::decide)) is tried in the
/// order it lists its backends.
#[derive(Clone, Debug, Default)]
pub struct ProbeReport {
    /// Each accelerator backend with its status, in the order automatic selection tries
    /// them.
    pub backends: Vec<(BackendKind, BackendStatus)>,
    /// The backends automatic selection passes over: they are used only when asked for by
    /// name ([`BackendProbe::explicit_only`]).
    pub explicit_only: Vec<BackendKind>,
}

impl ProbeReport {
    /// The status of one backend.
    pub fn status(&self, kind: BackendKind) -> Option<&BackendStatus> {
        self.backends.iter().find(|(k, _)| *k == kind).map(|(_, s)| s)
    }

    /// Whether automatic selection passes `kind` over.
    pub fn is_explicit_only(&self, kind: BackendKind) -> bool {
        self.explicit_only.contains(&kind)
    }

    /// The backends automatic selection tries, in order, with their statuses.
    pub fn automatic_order(&self) -> impl Iterator<Item = (BackendKind, &BackendStatus)> {
        self.backends
            .iter()
            .filter(|(kind, _)| !self.is_explicit_only(*kind))
            .map(|(kind, status)| (*kind, status))
    }
}

struct Entry {
    probe: Arc<dyn BackendProbe>,
    status: OnceLock<BackendStatus>,
}

impl Entry {
    fn new(probe: Arc<dyn BackendProbe>) -> Arc<Self> {
        Arc::new(Self {
            probe,
            status: OnceLock::new(),
        })
    }
}

/// Registered probes, in registration order, each with its cached answer. The process has
/// one ([`REGISTRY`]); tests make their own.
pub(crate) struct Registry {
    entries: RwLock<Vec<Arc<Entry>>>,
}

impl Registry {
    pub(crate) const fn new() -> Self {
        Self {
            entries: RwLock::new(Vec::new()),
        }
    }

    fn entries(&self) -> Vec<Arc<Entry>> {
        self.entries.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Adds `probe`; a probe for a backend already registered takes its place (and its
    /// position in the registration order). A CPU probe is ignored: the CPU is always
    /// available, and always last.
    pub(crate) fn register(&self, probe: Arc<dyn BackendProbe>) {
        let kind = probe.backend();
        if kind == BackendKind::Cpu {
            return;
        }
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        match entries.iter_mut().find(|e| e.probe.backend() == kind) {
            Some(slot) => *slot = Entry::new(probe),
            None => entries.push(Entry::new(probe)),
        }
    }

    pub(crate) fn kinds(&self) -> Vec<BackendKind> {
        self.entries().iter().map(|e| e.probe.backend()).collect()
    }

    pub(crate) fn refresh(&self) {
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        for entry in entries.iter_mut() {
            *entry = Entry::new(Arc::clone(&entry.probe));
        }
    }

    /// Runs each probe not yet run, and reports every accelerator: the registered ones by
    /// priority (stable, so equal priorities keep the registration order), then the others
    /// as not compiled in.
    pub(crate) fn report(&self) -> ProbeReport {
        let mut entries = self.entries();
        entries.sort_by_key(|e| std::cmp::Reverse(e.probe.priority()));
        let mut report = ProbeReport::default();
        for entry in &entries {
            let kind = entry.probe.backend();
            let status = entry.status.get_or_init(|| run_probe(&*entry.probe)).clone();
            report.backends.push((kind, status));
            if entry.probe.explicit_only() {
                report.explicit_only.push(kind);
            }
        }
        for kind in BackendKind::ACCELERATORS {
            if report.status(kind).is_none() {
                report
                    .backends
                    .push((kind, BackendStatus::Unavailable(Unavailable::NotCompiled)));
                if explicit_only_by_default(kind) {
                    report.explicit_only.push(kind);
                }
            }
        }
        report
    }
}

/// The process's registry, which the functions below and [`select_device`](crate::select_device) use.
static REGISTRY: Registry = Registry::new();

/// Makes a backend known to device selection. Registering a second probe for the same
/// backend replaces the first and keeps its place in the registration order (so calling
/// this repeatedly is harmless). A probe for [`BackendKind::Cpu`] is ignored: the CPU is
/// always available, and always tried last.
pub fn register_backend(probe: Arc<dyn BackendProbe>) {
    REGISTRY.register(probe);
}

/// The backends registered so far, in registration order.
pub fn registered_backends() -> Vec<BackendKind> {
    REGISTRY.kinds()
}

/// Forgets cached probe results, so the next selection probes again (after a driver
/// was installed, say).
pub fn refresh_probes() {
    REGISTRY.refresh();
}

/// Probes every registered backend (once per process; cached) and reports all accelerators
/// in the order automatic selection tries them, the unregistered ones as not compiled in.
pub fn probe_report() -> ProbeReport {
    REGISTRY.report()
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
    use crate::{DeviceConfig, DeviceSelection, NpuCoreMask, SelectionReason};
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Counting(AtomicUsize, BackendKind, bool);
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

    /// A backend that finds one device of its kind, with a chosen priority.
    struct Found {
        kind: BackendKind,
        priority: i32,
    }
    impl BackendProbe for Found {
        fn backend(&self) -> BackendKind {
            self.kind
        }
        fn probe(&self) -> BackendStatus {
            let device = match self.kind {
                BackendKind::Cuda => Device::Cuda { ordinal: 0 },
                BackendKind::Rknn => Device::Rknn {
                    core_mask: NpuCoreMask::AUTO,
                },
                _ => Device::Wgpu { adapter: 0 },
            };
            BackendStatus::Available(vec![DeviceInfo::new(device, "found")])
        }
        fn priority(&self) -> i32 {
            self.priority
        }
    }

    fn found(kind: BackendKind, priority: i32) -> Arc<Found> {
        Arc::new(Found { kind, priority })
    }

    fn order(report: &ProbeReport) -> Vec<BackendKind> {
        report.backends.iter().map(|(kind, _)| *kind).collect()
    }

    #[test]
    fn registered_probes_run_once_and_panics_become_probe_failures() {
        let registry = Registry::new();
        let probe = Arc::new(Counting(0.into(), BackendKind::Wgpu, false));
        registry.register(probe.clone());
        assert_eq!(registry.kinds(), [BackendKind::Wgpu]);
        for _ in 0..3 {
            let r = registry.report();
            assert_eq!(r.status(BackendKind::Wgpu).unwrap().devices()[0].name, "counted");
        }
        assert_eq!(probe.0.load(Ordering::SeqCst), 1, "probe results are cached");
        registry.refresh();
        registry.report();
        assert_eq!(probe.0.load(Ordering::SeqCst), 2, "refresh probes again");

        registry.register(Arc::new(Counting(0.into(), BackendKind::Wgpu, true)));
        let r = registry.report();
        let Some(BackendStatus::Unavailable(Unavailable::ProbeFailed { source })) = r.status(BackendKind::Wgpu) else {
            panic!("a panicking probe must be reported as failed")
        };
        assert!(source.to_string().contains("driver exploded"), "{source}");
        assert_eq!(registry.kinds(), [BackendKind::Wgpu]);
    }

    #[test]
    fn the_report_follows_registration_order_and_lists_the_rest_as_not_compiled() {
        let registry = Registry::new();
        let r = registry.report();
        assert_eq!(order(&r), BackendKind::ACCELERATORS);
        assert!(r
            .backends
            .iter()
            .all(|(_, s)| matches!(s, BackendStatus::Unavailable(Unavailable::NotCompiled))));
        assert_eq!(
            r.explicit_only,
            [BackendKind::Wgpu],
            "Vulkan is explicit-only by default"
        );

        registry.register(found(BackendKind::Rknn, 0));
        registry.register(found(BackendKind::Cuda, 0));
        let r = registry.report();
        assert_eq!(order(&r), [BackendKind::Rknn, BackendKind::Cuda, BackendKind::Wgpu]);
        let s = DeviceSelection::decide(&DeviceConfig::new(), r).unwrap();
        assert!(s.device.is_npu(), "equal priorities: the first registered wins ({s})");

        // Registering a backend again replaces its probe in place.
        registry.register(found(BackendKind::Rknn, 0));
        assert_eq!(registry.kinds(), [BackendKind::Rknn, BackendKind::Cuda]);
        // The CPU is not a registrable backend.
        registry.register(found(BackendKind::Cpu, 100));
        assert_eq!(registry.kinds(), [BackendKind::Rknn, BackendKind::Cuda]);
    }

    #[test]
    fn a_registered_backend_with_a_higher_priority_wins() {
        let registry = Registry::new();
        registry.register(found(BackendKind::Cuda, 0));
        registry.register(found(BackendKind::Rknn, 10));
        let r = registry.report();
        assert_eq!(order(&r), [BackendKind::Rknn, BackendKind::Cuda, BackendKind::Wgpu]);
        let s = DeviceSelection::decide(&DeviceConfig::new(), r).unwrap();
        assert_eq!(
            s.device,
            Device::Rknn {
                core_mask: NpuCoreMask::AUTO
            }
        );
        assert!(matches!(s.reason, SelectionReason::BestAvailable));
        assert!(s.to_string().ends_with("(order: rknn, cuda)"), "{s}");

        // A priority also lifts an explicit-only backend in the report, but never into
        // automatic selection.
        registry.register(found(BackendKind::Wgpu, 100));
        let r = registry.report();
        assert_eq!(order(&r)[0], BackendKind::Wgpu);
        assert!(DeviceSelection::decide(&DeviceConfig::new(), r)
            .unwrap()
            .device
            .is_npu());
    }
}
