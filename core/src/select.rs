//! Device selection: backends make themselves known through [`BackendProbe`], and
//! [`select_device`] decides, returning the decision and its reasons as a value.
//!
//! `aihal-core` links no vendor library, so it cannot look for a GPU itself. Each backend
//! crate implements [`BackendProbe`]; the `aihal` facade registers the compiled-in ones with
//! [`register_backend`]. With nothing registered, selection answers the CPU and says why
//! (“not compiled in”).
//!
//! Order of automatic selection: CUDA (the preferred ordinal, else 0), then the RK3588 NPU,
//! then the CPU with a warning printed once per process. Vulkan is used only when asked for
//! (`RUST_AI_DEVICE=wgpu`): the native CPU path beats a software Vulkan driver, and a real
//! GPU behind Vulkan is a choice the user makes.

use std::collections::HashSet;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Once, OnceLock, PoisonError, RwLock};

use crate::config::DeviceConfig;
use crate::device::{BackendKind, Device, DeviceRequest};
use crate::error::{CoreError, Result};

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

impl fmt::Display for ProbeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (kind, status) in &self.backends {
            match status {
                BackendStatus::Available(devices) if devices.is_empty() => {
                    writeln!(f, "{kind:>5}: available, no devices listed")?;
                }
                BackendStatus::Available(devices) => {
                    for (i, d) in devices.iter().enumerate() {
                        let label = if i == 0 { kind.name() } else { "" };
                        writeln!(f, "{label:>5}: found {d}")?;
                    }
                }
                BackendStatus::Unavailable(Unavailable::NotCompiled) => writeln!(
                    f,
                    "{kind:>5}: not compiled in (enable the `{}` feature of aihal)",
                    kind.feature()
                )?,
                BackendStatus::Unavailable(why) => writeln!(f, "{kind:>5}: {why}")?,
            }
        }
        write!(f, "{:>5}: always available", "cpu")
    }
}

/// Why the selected device was selected.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum SelectionReason {
    /// The user forced or asked for the CPU.
    CpuIntended,
    /// The explicitly requested device is present.
    Requested,
    /// Automatic selection found an accelerator.
    BestAvailable,
    /// Automatic selection found no accelerator and fell back to the CPU; why each was
    /// passed over.
    Fallback {
        /// Each accelerator tried, with the reason it was passed over.
        skipped: Vec<(BackendKind, Unavailable)>,
    },
}

impl fmt::Display for SelectionReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CpuIntended => f.write_str("the CPU was chosen by the user"),
            Self::Requested => f.write_str("the requested device is present"),
            Self::BestAvailable => f.write_str("the first accelerator found (order: cuda, rknn)"),
            Self::Fallback { skipped } => {
                f.write_str("no accelerator found: ")?;
                for (i, (kind, why)) in skipped.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    match why {
                        Unavailable::NotCompiled => {
                            write!(f, "{kind}: not compiled in (enable the `{}` feature)", kind.feature())?;
                        }
                        other => write!(f, "{kind}: {other}")?,
                    }
                }
                Ok(())
            }
        }
    }
}

/// The outcome of device selection: what was asked, what was chosen, why, and what the
/// probes saw.
#[derive(Clone, Debug)]
pub struct DeviceSelection {
    /// The explicit request, or `None` for automatic selection.
    pub requested: Option<DeviceRequest>,
    /// The chosen device.
    pub device: Device,
    /// Why it was chosen.
    pub reason: SelectionReason,
    /// What each backend's probe found.
    pub report: ProbeReport,
}

impl DeviceSelection {
    /// Whether the CPU was chosen without the user asking for it.
    pub fn is_fallback(&self) -> bool {
        matches!(self.reason, SelectionReason::Fallback { .. })
    }

    /// Decides from a configuration and a probe report, without logging: the pure core of
    /// [`select_device`], usable with a report made by hand.
    pub fn decide(config: &DeviceConfig, report: ProbeReport) -> Result<Self> {
        use crate::traits::ValidatableConfig;
        config.validate()?;
        let done = |device, reason, report| {
            Ok(Self {
                requested: config.requested_device(),
                device,
                reason,
                report,
            })
        };

        if config.is_cpu_intended() {
            return done(Device::Cpu, SelectionReason::CpuIntended, report);
        }
        if let Some(request) = config.requested_device() {
            let device = resolve_request(request, config, &report)?;
            return done(device, SelectionReason::Requested, report);
        }

        let mut skipped = Vec::new();
        for kind in [BackendKind::Cuda, BackendKind::Rknn] {
            let status = report
                .status(kind)
                .cloned()
                .unwrap_or(BackendStatus::Unavailable(Unavailable::NotCompiled));
            let wanted = match kind {
                BackendKind::Cuda => Some(Device::Cuda {
                    ordinal: config.preferred_cuda_device().unwrap_or(0),
                }),
                _ => None,
            };
            match pick(&status, wanted) {
                Ok(device) => return done(device, SelectionReason::BestAvailable, report),
                Err(why) => skipped.push((kind, why)),
            }
        }
        let reason = SelectionReason::Fallback { skipped };
        if config.is_strict() {
            return Err(CoreError::device_not_available(
                "accelerator",
                format!("{reason}; strict mode (RUST_AI_STRICT_DEVICE) forbids falling back to the CPU"),
            ));
        }
        done(Device::Cpu, reason, report)
    }
}

impl fmt::Display for DeviceSelection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.requested {
            Some(r) => write!(f, "requested {r}, ")?,
            None => f.write_str("automatic selection, ")?,
        }
        write!(f, "selected {}: {}", self.device, self.reason)
    }
}

/// Picks a usable device from a status: `wanted` exactly, or the first hardware device.
fn pick(status: &BackendStatus, wanted: Option<Device>) -> Result<Device, Unavailable> {
    let devices = match status {
        BackendStatus::Unavailable(why) => return Err(why.clone()),
        BackendStatus::Available(d) => d,
    };
    if let Some(w) = wanted {
        return match devices.iter().find(|d| d.device == w) {
            Some(d) => Ok(d.device),
            None => Err(Unavailable::OrdinalOutOfRange {
                requested: match w {
                    Device::Cuda { ordinal } => ordinal,
                    Device::Wgpu { adapter } => adapter,
                    _ => 0,
                },
                count: devices.len(),
            }),
        };
    }
    match devices.iter().find(|d| !d.software) {
        Some(d) => Ok(d.device),
        None if devices.is_empty() => Err(Unavailable::NoDevice {
            detail: "the probe listed no devices".into(),
        }),
        None => Err(Unavailable::SoftwareOnly),
    }
}

fn resolve_request(request: DeviceRequest, config: &DeviceConfig, report: &ProbeReport) -> Result<Device> {
    let kind = request.backend();
    let status = report
        .status(kind)
        .cloned()
        .unwrap_or(BackendStatus::Unavailable(Unavailable::NotCompiled));
    let wanted = match request {
        DeviceRequest::Cpu => return Ok(Device::Cpu),
        DeviceRequest::Cuda { ordinal } => Some(Device::Cuda {
            ordinal: ordinal.or(config.preferred_cuda_device()).unwrap_or(0),
        }),
        DeviceRequest::Wgpu { adapter } => adapter.map(|adapter| Device::Wgpu { adapter }),
        DeviceRequest::Rknn { .. } => None,
    };
    let device = pick(&status, wanted).map_err(|why| {
        let hint = match why {
            Unavailable::NotCompiled => format!(" (enable the `{}` feature of aihal)", kind.feature()),
            _ => String::new(),
        };
        CoreError::device_not_available(request, format!("{why}{hint}"))
    })?;
    Ok(match (request, device) {
        (
            DeviceRequest::Rknn {
                core_mask: Some(core_mask),
            },
            Device::Rknn { .. },
        ) => Device::Rknn { core_mask },
        (_, d) => d,
    })
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

static CPU_INTENDED: AtomicBool = AtomicBool::new(false);
static FALLBACK_WARNING: Once = Once::new();
static CPU_INTENDED_INFO: Once = Once::new();

/// Chooses a device for `config` from the registered backends' probes, announces a CPU
/// fallback once per process, and returns the decision with its reasons.
///
/// - CPU forced or requested: the CPU, with one info-level trace and no warning.
/// - A device requested explicitly: that device, or `DeviceNotAvailable` (never a fallback).
/// - Otherwise CUDA, then the NPU, then the CPU with a warning printed once per process to
///   `tracing` and stderr (an error instead in strict mode).
///
/// ```
/// use aihal_core::{select_device, Device, DeviceConfig};
/// let selection = select_device(&DeviceConfig::new().force_cpu(true)).unwrap();
/// assert_eq!(selection.device, Device::Cpu);
/// assert!(!selection.is_fallback());
/// ```
pub fn select_device(config: &DeviceConfig) -> Result<DeviceSelection> {
    let selection = DeviceSelection::decide(config, probe_report())?;
    announce(&selection);
    Ok(selection)
}

/// The device [`select_device`] chooses, without the reasons.
pub fn get_device(config: &DeviceConfig) -> Result<Device> {
    select_device(config).map(|s| s.device)
}

fn announce(selection: &DeviceSelection) {
    match &selection.reason {
        SelectionReason::CpuIntended => {
            CPU_INTENDED.store(true, Ordering::Relaxed);
            CPU_INTENDED_INFO.call_once(|| tracing::info!("aihal: running on the CPU as configured"));
        }
        SelectionReason::Fallback { .. } => FALLBACK_WARNING.call_once(|| {
            let message = format!(
                "aihal: running on the CPU because {}. Set RUST_AI_FORCE_CPU=1 to declare the CPU intended and silence this warning.",
                selection.reason
            );
            tracing::warn!("{message}");
            eprintln!("warning: {message}");
        }),
        SelectionReason::Requested | SelectionReason::BestAvailable => {}
    }
}

static WARNED: Mutex<Option<HashSet<String>>> = Mutex::new(None);

/// Prints `message` as a warning (to `tracing` and stderr) the first time `key` is seen in
/// this process, and returns whether it printed. Backends use it for their own
/// once-per-process notices.
pub fn warn_once(key: &str, message: &str) -> bool {
    let mut warned = WARNED.lock().unwrap_or_else(PoisonError::into_inner);
    if !warned.get_or_insert_with(HashSet::new).insert(key.to_owned()) {
        return false;
    }
    drop(warned);
    tracing::warn!("{message}");
    eprintln!("warning: {message}");
    true
}

/// For backend crates handed a device: warns once per process per crate when `device` is
/// the CPU and the user did not declare the CPU intended (by forcing it, in code or through
/// `RUST_AI_FORCE_CPU`, or by asking for `cpu`). Returns whether it warned.
pub fn warn_if_cpu(device: &Device, crate_name: &str) -> bool {
    if !device.is_cpu() || CPU_INTENDED.load(Ordering::Relaxed) {
        return false;
    }
    if DeviceConfig::from_env().is_ok_and(|c| c.is_cpu_intended()) {
        return false;
    }
    warn_once(
        &format!("warn_if_cpu:{crate_name}"),
        &format!(
            "{crate_name}: running on the CPU, not an accelerator. Set RUST_AI_FORCE_CPU=1 to declare the CPU intended and silence this warning."
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NpuCoreMask;

    fn cuda(n: usize) -> BackendStatus {
        BackendStatus::Available(
            (0..n)
                .map(|i| DeviceInfo::new(Device::Cuda { ordinal: i }, "test gpu"))
                .collect(),
        )
    }
    fn rknn() -> BackendStatus {
        BackendStatus::Available(vec![DeviceInfo::new(
            Device::Rknn {
                core_mask: NpuCoreMask::AUTO,
            },
            "RK3588 NPU",
        )])
    }
    fn lavapipe() -> BackendStatus {
        BackendStatus::Available(vec![DeviceInfo {
            software: true,
            ..DeviceInfo::new(Device::Wgpu { adapter: 0 }, "llvmpipe")
        }])
    }
    fn missing() -> BackendStatus {
        BackendStatus::Unavailable(Unavailable::LibraryMissing {
            detail: "libfoo.so not found".into(),
        })
    }
    fn report(cuda: BackendStatus, rknn: BackendStatus, wgpu: BackendStatus) -> ProbeReport {
        ProbeReport {
            backends: vec![
                (BackendKind::Cuda, cuda),
                (BackendKind::Rknn, rknn),
                (BackendKind::Wgpu, wgpu),
            ],
        }
    }
    fn none() -> ProbeReport {
        report(
            BackendStatus::Unavailable(Unavailable::NotCompiled),
            BackendStatus::Unavailable(Unavailable::NotCompiled),
            BackendStatus::Unavailable(Unavailable::NotCompiled),
        )
    }

    #[test]
    fn cuda_comes_first_then_the_npu_then_the_cpu() {
        let all = report(cuda(2), rknn(), lavapipe());
        let s = DeviceSelection::decide(&DeviceConfig::new(), all.clone()).unwrap();
        assert_eq!(s.device, Device::Cuda { ordinal: 0 });
        assert!(matches!(s.reason, SelectionReason::BestAvailable));

        let s = DeviceSelection::decide(&DeviceConfig::new(), report(missing(), rknn(), lavapipe())).unwrap();
        assert_eq!(
            s.device,
            Device::Rknn {
                core_mask: NpuCoreMask::AUTO
            }
        );

        // Vulkan is never chosen automatically, and a software adapter least of all.
        let s = DeviceSelection::decide(&DeviceConfig::new(), report(missing(), missing(), lavapipe())).unwrap();
        assert_eq!(s.device, Device::Cpu);
        assert!(s.is_fallback());
    }

    #[test]
    fn forced_cpu_wins_over_present_accelerators() {
        let s = DeviceSelection::decide(
            &DeviceConfig::new().force_cpu(true),
            report(cuda(1), rknn(), lavapipe()),
        )
        .unwrap();
        assert_eq!(s.device, Device::Cpu);
        assert!(matches!(s.reason, SelectionReason::CpuIntended));
        assert!(!s.is_fallback());
    }

    #[test]
    fn fallback_records_why_each_accelerator_was_skipped() {
        let probe_error = Arc::new(CoreError::kernel("cuda", "probe", "cuInit returned 999"));
        let r = report(
            BackendStatus::Unavailable(Unavailable::ProbeFailed { source: probe_error }),
            BackendStatus::Unavailable(Unavailable::NotCompiled),
            lavapipe(),
        );
        let s = DeviceSelection::decide(&DeviceConfig::new(), r).unwrap();
        let SelectionReason::Fallback { skipped } = &s.reason else {
            panic!("expected a fallback, got {:?}", s.reason)
        };
        assert_eq!(skipped.len(), 2);
        assert!(
            matches!(&skipped[0], (BackendKind::Cuda, Unavailable::ProbeFailed { source }) if source.to_string().contains("cuInit"))
        );
        assert!(matches!(&skipped[1], (BackendKind::Rknn, Unavailable::NotCompiled)));
        let text = s.reason.to_string();
        assert!(
            text.contains("cuInit returned 999") && text.contains("enable the `rknn` feature"),
            "{text}"
        );
    }

    #[test]
    fn an_out_of_range_preferred_ordinal_is_a_recorded_fallback() {
        let s = DeviceSelection::decide(
            &DeviceConfig::new().cuda_device(3),
            report(cuda(1), missing(), missing()),
        )
        .unwrap();
        assert_eq!(s.device, Device::Cpu);
        let SelectionReason::Fallback { skipped } = &s.reason else {
            panic!()
        };
        assert!(matches!(
            skipped[0].1,
            Unavailable::OrdinalOutOfRange { requested: 3, count: 1 }
        ));
        let s = DeviceSelection::decide(
            &DeviceConfig::new().cuda_device(1),
            report(cuda(2), missing(), missing()),
        )
        .unwrap();
        assert_eq!(s.device, Device::Cuda { ordinal: 1 });
    }

    #[test]
    fn strict_mode_turns_a_fallback_into_an_error() {
        let err = DeviceSelection::decide(&DeviceConfig::new().strict(true), none()).unwrap_err();
        assert!(matches!(err, CoreError::DeviceNotAvailable { .. }));
        assert!(err.to_string().contains("strict"), "{err}");
        // Strict with an accelerator present is fine; strict with a forced CPU is intended.
        DeviceSelection::decide(&DeviceConfig::new().strict(true), report(cuda(1), missing(), missing())).unwrap();
        DeviceSelection::decide(&DeviceConfig::new().strict(true).force_cpu(true), none()).unwrap();
    }

    #[test]
    fn an_explicit_request_for_a_missing_device_is_an_error_not_a_fallback() {
        let cases = [
            (
                DeviceRequest::Cuda { ordinal: None },
                none(),
                "enable the `cuda` feature",
            ),
            (
                DeviceRequest::Cuda { ordinal: Some(2) },
                report(cuda(2), missing(), missing()),
                "ordinal 2 out of range (2 devices found)",
            ),
            (
                DeviceRequest::Rknn { core_mask: None },
                report(missing(), missing(), missing()),
                "libfoo.so",
            ),
            (
                DeviceRequest::Wgpu { adapter: None },
                report(missing(), missing(), lavapipe()),
                "software",
            ),
            (
                DeviceRequest::Wgpu { adapter: Some(1) },
                report(missing(), missing(), lavapipe()),
                "out of range",
            ),
        ];
        for (request, r, needle) in cases {
            let err = DeviceSelection::decide(&DeviceConfig::new().device(request), r).unwrap_err();
            assert!(matches!(err, CoreError::DeviceNotAvailable { .. }), "{request}");
            assert!(err.to_string().contains(needle), "{request}: {err}");
        }
    }

    #[test]
    fn explicit_requests_that_exist_are_honoured() {
        let r = report(cuda(2), rknn(), lavapipe());
        let pick = |req| {
            DeviceSelection::decide(&DeviceConfig::new().device(req), r.clone())
                .unwrap()
                .device
        };
        assert_eq!(
            pick(DeviceRequest::Cuda { ordinal: Some(1) }),
            Device::Cuda { ordinal: 1 }
        );
        assert_eq!(
            pick(DeviceRequest::Rknn {
                core_mask: Some(NpuCoreMask::CORES_0_1_2)
            }),
            Device::Rknn {
                core_mask: NpuCoreMask::CORES_0_1_2
            }
        );
        // Naming the software adapter explicitly is allowed (that is how tests use lavapipe).
        assert_eq!(
            pick(DeviceRequest::Wgpu { adapter: Some(0) }),
            Device::Wgpu { adapter: 0 }
        );
        assert_eq!(pick(DeviceRequest::Cpu), Device::Cpu);
        // The preferred CUDA ordinal applies to a bare `cuda` request.
        let s = DeviceSelection::decide(
            &DeviceConfig::new()
                .cuda_device(1)
                .device(DeviceRequest::Cuda { ordinal: None }),
            r,
        )
        .unwrap();
        assert_eq!(s.device, Device::Cuda { ordinal: 1 });
    }

    #[test]
    fn the_report_prints_each_backend() {
        let text = report(cuda(1), missing(), lavapipe()).to_string();
        assert!(text.contains("cuda: found cuda:0 test gpu"), "{text}");
        assert!(
            text.contains("rknn: driver or runtime library missing: libfoo.so not found"),
            "{text}"
        );
        assert!(text.contains("wgpu: found wgpu:0 llvmpipe (software"), "{text}");
        assert!(text.ends_with("cpu: always available"), "{text}");
        let text = none().to_string();
        assert!(text.contains("enable the `kernels` feature"), "{text}");
    }

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

    #[test]
    fn warn_once_prints_a_key_once() {
        assert!(warn_once("unit-test-key", "first"));
        assert!(!warn_once("unit-test-key", "second"));
        assert!(warn_once("unit-test-key-2", "other key"));
    }
}
