//! The selection policy: [`DeviceSelection::decide`] turns a configuration and a probe
//! report into a device and the reasons for it, and [`select_device`] runs it on the
//! registered backends' probes and announces the outcome.
//!
//! Order of automatic selection: the accelerators in the order the probe report lists them
//! (the registry's: [`BackendProbe::priority`](crate::BackendProbe::priority), then
//! registration order; the `aihal` facade registers CUDA before the NPU), CUDA at the
//! preferred ordinal (else 0); then the CPU with a warning printed once per process.
//! Backends that are explicit-only (Vulkan by default) are used only when asked for
//! (`RUST_AI_DEVICE=wgpu`).

use std::fmt;

use crate::config::DeviceConfig;
use crate::device::{BackendKind, Device, DeviceRequest};
use crate::error::{CoreError, Result};
use crate::registry::{probe_report, BackendStatus, ProbeReport, Unavailable};
use crate::warn;

impl fmt::Display for ProbeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (kind, status) in &self.backends {
            let on_request = if self.is_explicit_only(*kind) {
                " [used only when asked for]"
            } else {
                ""
            };
            match status {
                BackendStatus::Available(devices) if devices.is_empty() => {
                    writeln!(f, "{kind:>5}: available, no devices listed{on_request}")?;
                }
                BackendStatus::Available(devices) => {
                    for (i, d) in devices.iter().enumerate() {
                        let (label, note) = if i == 0 { (kind.name(), on_request) } else { ("", "") };
                        writeln!(f, "{label:>5}: found {d}{note}")?;
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
    /// Automatic selection found an accelerator: the first usable one in the order of the
    /// probe report (which [`DeviceSelection`]'s `Display` prints).
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
            Self::BestAvailable => f.write_str("the first accelerator found among the registered backends"),
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
        let mut found = None;
        for (kind, status) in report.automatic_order() {
            let wanted = match kind {
                BackendKind::Cuda => Some(Device::Cuda {
                    ordinal: config.preferred_cuda_device().unwrap_or(0),
                }),
                _ => None,
            };
            match pick(status, wanted) {
                Ok(device) => {
                    found = Some(device);
                    break;
                }
                Err(why) => skipped.push((kind, why)),
            }
        }
        if let Some(device) = found {
            return done(device, SelectionReason::BestAvailable, report);
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
        write!(f, "selected {}: {}", self.device, self.reason)?;
        if matches!(self.reason, SelectionReason::BestAvailable) {
            f.write_str(" (order: ")?;
            for (i, (kind, _)) in self.report.automatic_order().enumerate() {
                write!(f, "{}{kind}", if i == 0 { "" } else { ", " })?;
            }
            f.write_str(")")?;
        }
        Ok(())
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

/// Chooses a device for `config` from the registered backends' probes, announces a CPU
/// fallback once per process, and returns the decision with its reasons.
///
/// - CPU forced or requested: the CPU, with one info-level trace and no warning.
/// - A device requested explicitly: that device, or `DeviceNotAvailable` (never a fallback).
/// - Otherwise the first usable accelerator in the registry's order (highest
///   [`BackendProbe::priority`](crate::BackendProbe::priority) first, then registration
///   order; explicit-only backends such as Vulkan skipped), then the CPU with a warning
///   printed once per process to `tracing` and stderr (an error instead in strict mode).
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
        SelectionReason::CpuIntended => warn::announce_cpu_intended(),
        SelectionReason::Fallback { .. } => warn::announce_cpu_fallback(&selection.reason),
        SelectionReason::Requested | SelectionReason::BestAvailable => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::DeviceInfo;
    use crate::NpuCoreMask;
    use std::sync::Arc;

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
    /// A report as the registry makes it when the facade has registered every backend:
    /// CUDA, then the NPU, then Vulkan, which is explicit-only.
    fn report(cuda: BackendStatus, rknn: BackendStatus, wgpu: BackendStatus) -> ProbeReport {
        ProbeReport {
            backends: vec![
                (BackendKind::Cuda, cuda),
                (BackendKind::Rknn, rknn),
                (BackendKind::Wgpu, wgpu),
            ],
            explicit_only: vec![BackendKind::Wgpu],
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
    fn the_reports_order_decides_then_the_cpu() {
        let all = report(cuda(2), rknn(), lavapipe());
        let s = DeviceSelection::decide(&DeviceConfig::new(), all.clone()).unwrap();
        assert_eq!(s.device, Device::Cuda { ordinal: 0 });
        assert!(matches!(s.reason, SelectionReason::BestAvailable));
        assert!(s.to_string().ends_with("(order: cuda, rknn)"), "{s}");

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

        // The order is the report's, not a list written in the policy.
        let mut npu_first = report(cuda(1), rknn(), lavapipe());
        npu_first.backends.swap(0, 1);
        let s = DeviceSelection::decide(&DeviceConfig::new(), npu_first).unwrap();
        assert!(s.device.is_npu(), "{s}");
        assert!(s.to_string().ends_with("(order: rknn, cuda)"), "{s}");
    }

    #[test]
    fn explicit_only_is_what_keeps_a_backend_out_of_automatic_selection() {
        let hardware_vulkan =
            BackendStatus::Available(vec![DeviceInfo::new(Device::Wgpu { adapter: 0 }, "a real GPU")]);
        let r = report(missing(), missing(), hardware_vulkan);
        let s = DeviceSelection::decide(&DeviceConfig::new(), r.clone()).unwrap();
        assert_eq!(
            s.device,
            Device::Cpu,
            "explicit-only: even a hardware adapter waits to be asked for"
        );
        let SelectionReason::Fallback { skipped } = &s.reason else {
            panic!("expected a fallback, got {:?}", s.reason)
        };
        assert!(
            skipped.iter().all(|(kind, _)| *kind != BackendKind::Wgpu),
            "{skipped:?}"
        );
        assert!(
            r.to_string()
                .contains("found wgpu:0 a real GPU [used only when asked for]"),
            "{r}"
        );

        let r = ProbeReport {
            explicit_only: Vec::new(),
            ..r
        };
        let s = DeviceSelection::decide(&DeviceConfig::new(), r).unwrap();
        assert_eq!(s.device, Device::Wgpu { adapter: 0 });
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
}
