//! The foundation every aihal crate builds on: errors, devices and device selection, the
//! dispatch and quantization traits, and [`TensorBuffer`] for moving data between candle
//! tensors, quantized formats and device kernels.
//!
//! This crate links no vendor library and contains no `unsafe` code. Backends (CUDA, the
//! RK3588 NPU, Vulkan) live in their own crates and make themselves known to device
//! selection through [`BackendProbe`].
//!
//! ```
//! use aihal_core::{select_device, DeviceConfig};
//!
//! // Reads RUST_AI_FORCE_CPU, RUST_AI_CUDA_DEVICE, RUST_AI_DEVICE, RUST_AI_STRICT_DEVICE
//! // (and the legacy AXOLOTL_* / VSA_OPTIM_* names).
//! let config = DeviceConfig::from_env()?;
//! let selection = select_device(&config)?;
//! println!("{selection}");
//! # Ok::<(), aihal_core::CoreError>(())
//! ```
#![forbid(unsafe_code)]

mod buffer;
mod config;
mod device;
mod dispatch;
mod error;
mod registry;
mod select;
mod strict;
mod traits;
mod warn;

pub use buffer::{allocate_output_buffer, DType, Element, TensorBuffer};
pub use config::{env, DeviceConfig};
pub use device::{BackendKind, Device, DeviceRequest, NpuCoreMask};
pub use dispatch::{Dispatched, GpuDispatchable};
pub use error::{CoreError, Result};
pub use registry::{
    probe_report, refresh_probes, register_backend, registered_backends, BackendProbe, BackendStatus, DeviceInfo,
    ProbeReport, Unavailable,
};
pub use select::{get_device, select_device, DeviceSelection, SelectionReason};
pub use strict::{set_strict, strict_mode};
pub use traits::{Dequantize, Quantize, ValidatableConfig};
pub use warn::{warn_if_cpu, warn_once};

/// Re-exported so that users name one candle version: the one aihal was built with.
pub use candle_core;

#[cfg(test)]
mod test_support {
    /// Held by every unit test that reads or writes the process environment.
    pub(crate) static ENV_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
}
