//! Devices: what a computation runs on, and how a user names one.
//!
//! [`Device`] has the same variants whatever features are compiled in: a backend that is not
//! compiled in answers with an error when asked for, it never disappears from the API.

use std::fmt;
use std::str::FromStr;

use crate::error::{CoreError, Result};

/// The kinds of backend aihal knows.
///
/// The order of the variants is not a preference: automatic selection tries the registered
/// backends in the order the probe registry gives them (see `BackendProbe::priority`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum BackendKind {
    /// The CPU: always present.
    Cpu,
    /// NVIDIA GPUs through CUDA.
    Cuda,
    /// The Rockchip RK3588 NPU through librknnrt.
    Rknn,
    /// Vulkan GPUs through wgpu.
    Wgpu,
}

impl BackendKind {
    /// Every accelerator backend aihal knows, in declaration order. This is not the order of
    /// automatic selection, which comes from the registered probes (`BackendProbe::priority`,
    /// then registration order); a probe report lists the ones not registered as not
    /// compiled in.
    pub const ACCELERATORS: [BackendKind; 3] = [Self::Cuda, Self::Rknn, Self::Wgpu];

    /// The lower-case name used in messages and in `RUST_AI_DEVICE`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Cuda => "cuda",
            Self::Rknn => "rknn",
            Self::Wgpu => "wgpu",
        }
    }

    /// The Cargo feature of the `aihal` facade that compiles this backend in.
    pub const fn feature(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Cuda => "cuda",
            Self::Rknn => "rknn",
            Self::Wgpu => "kernels",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which of the RK3588 NPU's three cores a model or matmul may use.
///
/// The bit values are those of the runtime's core-mask enum: bit `i` is core `i`, `0` lets
/// the runtime pick an idle core, and [`NpuCoreMask::ALL`] (runtime 2.0 and later) means every
/// core of the platform.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct NpuCoreMask(u32);

impl NpuCoreMask {
    /// The runtime chooses an idle core.
    pub const AUTO: Self = Self(0);
    /// Core 0 only.
    pub const CORE_0: Self = Self(0b001);
    /// Core 1 only.
    pub const CORE_1: Self = Self(0b010);
    /// Core 2 only.
    pub const CORE_2: Self = Self(0b100);
    /// Cores 0 and 1 together.
    pub const CORES_0_1: Self = Self(0b011);
    /// All three cores together.
    pub const CORES_0_1_2: Self = Self(0b111);
    /// Every core of the platform (runtime 2.0 and later).
    pub const ALL: Self = Self(0xffff);

    /// A mask from its bits: `0`, any combination of the three core bits, or `0xffff`.
    pub fn new(bits: u32) -> Result<Self> {
        if bits <= 0b111 || bits == Self::ALL.0 {
            Ok(Self(bits))
        } else {
            Err(CoreError::invalid_config(format!(
                "NPU core mask {bits:#b} names a core the RK3588 does not have; \
                 use bits of 0b111 (cores 0 to 2), 0 for automatic, or 0xffff for all"
            )))
        }
    }

    /// The raw bits, as the runtime takes them.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// The number of cores the mask names (3 for [`NpuCoreMask::ALL`], 0 for automatic).
    pub const fn core_count(self) -> u32 {
        if self.0 == Self::ALL.0 {
            3
        } else {
            self.0.count_ones()
        }
    }
}

impl fmt::Display for NpuCoreMask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Self::ALL {
            write!(f, "0xffff")
        } else if *self == Self::AUTO {
            write!(f, "auto")
        } else {
            write!(f, "{:#05b}", self.0)
        }
    }
}

impl FromStr for NpuCoreMask {
    type Err = CoreError;

    /// Parses `0b111`, `0x7`, `7`, or `auto` (the runtime chooses).
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("auto") {
            return Ok(Self::AUTO);
        }
        let parsed = if let Some(bin) = s.strip_prefix("0b").or_else(|| s.strip_prefix("0B")) {
            u32::from_str_radix(bin, 2)
        } else if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
            u32::from_str_radix(hex, 16)
        } else {
            s.parse()
        };
        let bits = parsed.map_err(|_| {
            CoreError::invalid_config(format!(
                "`{s}` is not an NPU core mask; write it as 0b111, 0x7, 7 or auto"
            ))
        })?;
        Self::new(bits)
    }
}

/// A device a computation runs on. Cheap to copy and compare.
///
/// `Display` spells it the way `RUST_AI_DEVICE` accepts it (`cpu`, `cuda:0`, `rknn:0b111`,
/// `wgpu:0`).
///
/// ```
/// use aihal_core::{Device, NpuCoreMask};
/// assert_eq!(Device::Cuda { ordinal: 1 }.to_string(), "cuda:1");
/// assert_eq!(Device::Rknn { core_mask: NpuCoreMask::CORES_0_1_2 }.to_string(), "rknn:0b111");
/// assert!(Device::Cpu.to_candle().unwrap().is_cpu());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Device {
    /// The CPU.
    #[default]
    Cpu,
    /// An NVIDIA GPU, by CUDA ordinal.
    Cuda {
        /// The CUDA device ordinal (0 for the first GPU).
        ordinal: usize,
    },
    /// The RK3588 NPU, with the cores it may use.
    Rknn {
        /// The NPU cores to run on.
        core_mask: NpuCoreMask,
    },
    /// A Vulkan GPU through wgpu, by adapter index.
    Wgpu {
        /// The index of the adapter in wgpu's enumeration.
        adapter: usize,
    },
}

impl Device {
    /// The backend this device belongs to.
    pub const fn backend(&self) -> BackendKind {
        match self {
            Self::Cpu => BackendKind::Cpu,
            Self::Cuda { .. } => BackendKind::Cuda,
            Self::Rknn { .. } => BackendKind::Rknn,
            Self::Wgpu { .. } => BackendKind::Wgpu,
        }
    }

    /// Whether this is the CPU.
    pub const fn is_cpu(&self) -> bool {
        matches!(self, Self::Cpu)
    }

    /// Whether this is a GPU (CUDA or Vulkan).
    pub const fn is_gpu(&self) -> bool {
        matches!(self, Self::Cuda { .. } | Self::Wgpu { .. })
    }

    /// Whether this is the NPU.
    pub const fn is_npu(&self) -> bool {
        matches!(self, Self::Rknn { .. })
    }

    /// The candle device for this device, where candle has one.
    ///
    /// CPU always converts. CUDA converts when candle itself was built with its `cuda`
    /// feature and the device exists; otherwise this is `DeviceNotAvailable`. The NPU and
    /// Vulkan have no candle device: keep tensors on the CPU and hand them to the backend.
    pub fn to_candle(&self) -> Result<candle_core::Device> {
        match *self {
            Self::Cpu => Ok(candle_core::Device::Cpu),
            Self::Cuda { ordinal } => candle_core::Device::new_cuda(ordinal).map_err(|e| {
                CoreError::device_not_available(
                    self,
                    format!("candle cannot open this CUDA device ({e}); candle must be built with its `cuda` feature for CUDA tensors"),
                )
            }),
            Self::Rknn { .. } | Self::Wgpu { .. } => Err(CoreError::device_not_available(
                self,
                "candle has no device of this kind; keep candle tensors on the CPU and pass them to the backend",
            )),
        }
    }

    /// The aihal device for a candle device (CPU, or CUDA by ordinal).
    pub fn from_candle(device: &candle_core::Device) -> Result<Self> {
        match device.location() {
            candle_core::DeviceLocation::Cpu => Ok(Self::Cpu),
            candle_core::DeviceLocation::Cuda { gpu_id } => Ok(Self::Cuda { ordinal: gpu_id }),
            candle_core::DeviceLocation::Metal { gpu_id } => Err(CoreError::unsupported(
                "conversion from a candle device",
                format!("Metal device {gpu_id}"),
            )),
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda { ordinal } => write!(f, "cuda:{ordinal}"),
            Self::Rknn { core_mask } => write!(f, "rknn:{core_mask}"),
            Self::Wgpu { adapter } => write!(f, "wgpu:{adapter}"),
        }
    }
}

/// A device a user asked for by name, possibly without the index (`cuda` means "a CUDA
/// device", `cuda:1` that one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeviceRequest {
    /// The CPU.
    Cpu,
    /// A CUDA device; `None` takes the configured or first one.
    Cuda {
        /// The ordinal asked for, if any.
        ordinal: Option<usize>,
    },
    /// The NPU; `None` lets the runtime choose the cores.
    Rknn {
        /// The core mask asked for, if any.
        core_mask: Option<NpuCoreMask>,
    },
    /// A Vulkan adapter; `None` takes the first non-CPU one.
    Wgpu {
        /// The adapter index asked for, if any.
        adapter: Option<usize>,
    },
}

impl DeviceRequest {
    /// The forms `RUST_AI_DEVICE` accepts, for error messages.
    pub const ACCEPTED_FORMS: &'static str =
        "cpu, cuda, cuda:N, rknn, rknn:MASK (e.g. rknn:0b111, rknn:auto), wgpu, wgpu:N";

    /// The backend asked for.
    pub const fn backend(&self) -> BackendKind {
        match self {
            Self::Cpu => BackendKind::Cpu,
            Self::Cuda { .. } => BackendKind::Cuda,
            Self::Rknn { .. } => BackendKind::Rknn,
            Self::Wgpu { .. } => BackendKind::Wgpu,
        }
    }
}

impl From<Device> for DeviceRequest {
    fn from(device: Device) -> Self {
        match device {
            Device::Cpu => Self::Cpu,
            Device::Cuda { ordinal } => Self::Cuda { ordinal: Some(ordinal) },
            Device::Rknn { core_mask } => Self::Rknn {
                core_mask: Some(core_mask),
            },
            Device::Wgpu { adapter } => Self::Wgpu { adapter: Some(adapter) },
        }
    }
}

impl fmt::Display for DeviceRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda { ordinal: None } => f.write_str("cuda"),
            Self::Cuda { ordinal: Some(n) } => write!(f, "cuda:{n}"),
            Self::Rknn { core_mask: None } => f.write_str("rknn"),
            Self::Rknn { core_mask: Some(m) } => write!(f, "rknn:{m}"),
            Self::Wgpu { adapter: None } => f.write_str("wgpu"),
            Self::Wgpu { adapter: Some(n) } => write!(f, "wgpu:{n}"),
        }
    }
}

impl FromStr for DeviceRequest {
    type Err = CoreError;

    /// Parses the forms listed in [`DeviceRequest::ACCEPTED_FORMS`], case-insensitively.
    fn from_str(s: &str) -> Result<Self> {
        let lower = s.trim().to_ascii_lowercase();
        let (kind, index) = match lower.split_once(':') {
            Some((k, i)) => (k, Some(i)),
            None => (lower.as_str(), None),
        };
        let bad = || {
            CoreError::invalid_config(format!(
                "`{s}` is not a device; accepted forms: {}",
                Self::ACCEPTED_FORMS
            ))
        };
        let ordinal = |i: &str| i.parse::<usize>().map_err(|_| bad());
        Ok(match (kind, index) {
            ("cpu", None) => Self::Cpu,
            ("cuda", None) => Self::Cuda { ordinal: None },
            ("cuda", Some(i)) => Self::Cuda {
                ordinal: Some(ordinal(i)?),
            },
            ("rknn", None) => Self::Rknn { core_mask: None },
            ("rknn", Some(m)) => Self::Rknn {
                core_mask: Some(
                    m.parse()
                        .map_err(|e: CoreError| CoreError::invalid_config(format!("`{s}`: {e}")))?,
                ),
            },
            ("wgpu", None) => Self::Wgpu { adapter: None },
            ("wgpu", Some(i)) => Self::Wgpu {
                adapter: Some(ordinal(i)?),
            },
            _ => return Err(bad()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_requests_parse_every_documented_form() {
        let cases = [
            ("cpu", DeviceRequest::Cpu),
            ("CPU", DeviceRequest::Cpu),
            ("cuda", DeviceRequest::Cuda { ordinal: None }),
            ("cuda:1", DeviceRequest::Cuda { ordinal: Some(1) }),
            ("rknn", DeviceRequest::Rknn { core_mask: None }),
            (
                "rknn:0b111",
                DeviceRequest::Rknn {
                    core_mask: Some(NpuCoreMask::CORES_0_1_2),
                },
            ),
            (
                "rknn:0x2",
                DeviceRequest::Rknn {
                    core_mask: Some(NpuCoreMask::CORE_1),
                },
            ),
            (
                "rknn:4",
                DeviceRequest::Rknn {
                    core_mask: Some(NpuCoreMask::CORE_2),
                },
            ),
            ("wgpu", DeviceRequest::Wgpu { adapter: None }),
            (" wgpu:0 ", DeviceRequest::Wgpu { adapter: Some(0) }),
        ];
        for (text, want) in cases {
            assert_eq!(text.parse::<DeviceRequest>().unwrap(), want, "{text}");
        }
    }

    #[test]
    fn malformed_device_requests_name_the_accepted_forms() {
        for bad in [
            "",
            "gpu",
            "cuda:",
            "cuda:x",
            "cuda:-1",
            "cpu:0",
            "rknn:0b1000",
            "rknn:zz",
            "wgpu:a",
        ] {
            let err = bad.parse::<DeviceRequest>().unwrap_err();
            assert!(matches!(err, CoreError::InvalidConfig(_)), "{bad}");
            let msg = err.to_string();
            assert!(
                msg.contains(bad.trim()) && (msg.contains("accepted forms") || msg.contains("mask")),
                "{bad}: {msg}"
            );
        }
    }

    #[test]
    fn display_round_trips_through_parse() {
        let devices = [
            Device::Cpu,
            Device::Cuda { ordinal: 3 },
            Device::Rknn {
                core_mask: NpuCoreMask::CORES_0_1,
            },
            Device::Rknn {
                core_mask: NpuCoreMask::ALL,
            },
            Device::Rknn {
                core_mask: NpuCoreMask::AUTO,
            },
            Device::Wgpu { adapter: 2 },
        ];
        for d in devices {
            let parsed: DeviceRequest = d.to_string().parse().unwrap();
            assert_eq!(parsed, DeviceRequest::from(d), "{d}");
            assert_eq!(parsed.to_string(), d.to_string());
            assert_eq!(parsed.backend(), d.backend());
        }
    }

    #[test]
    fn core_masks_validate_bits() {
        assert_eq!(NpuCoreMask::new(0b101).unwrap().core_count(), 2);
        assert_eq!(NpuCoreMask::ALL.core_count(), 3);
        assert_eq!(NpuCoreMask::AUTO.core_count(), 0);
        assert!(NpuCoreMask::new(8).is_err());
        assert!(NpuCoreMask::new(0x10000).is_err());
        assert_eq!(NpuCoreMask::CORE_0.to_string(), "0b001");
        assert_eq!("0xffff".parse::<NpuCoreMask>().unwrap(), NpuCoreMask::ALL);
        assert_eq!(NpuCoreMask::AUTO.to_string(), "auto");
        assert_eq!("AUTO".parse::<NpuCoreMask>().unwrap(), NpuCoreMask::AUTO);
    }

    #[test]
    fn candle_conversion_exists_only_where_candle_has_the_device() {
        assert!(Device::Cpu.to_candle().unwrap().is_cpu());
        assert_eq!(Device::from_candle(&candle_core::Device::Cpu).unwrap(), Device::Cpu);
        for d in [
            Device::Rknn {
                core_mask: NpuCoreMask::AUTO,
            },
            Device::Wgpu { adapter: 0 },
        ] {
            let err = d.to_candle().unwrap_err();
            assert!(matches!(err, CoreError::DeviceNotAvailable { .. }), "{d}");
        }
        // candle is built here without its `cuda` feature, so CUDA cannot convert.
        let err = Device::Cuda { ordinal: 0 }.to_candle().unwrap_err();
        assert!(matches!(err, CoreError::DeviceNotAvailable { .. }));
    }

    #[test]
    fn classification_helpers() {
        assert!(Device::Cpu.is_cpu());
        assert!(Device::Cuda { ordinal: 0 }.is_gpu());
        assert!(Device::Wgpu { adapter: 0 }.is_gpu());
        assert!(Device::Rknn {
            core_mask: NpuCoreMask::AUTO
        }
        .is_npu());
        assert_eq!(Device::default(), Device::Cpu);
        assert_eq!(BackendKind::Wgpu.feature(), "kernels");
    }
}
