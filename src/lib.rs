//! aihal: quantized AI workloads on whatever hardware the machine has.
//!
//! This facade re-exports the aihal crates behind Cargo features and wires the compiled-in
//! backends into device selection:
//!
//! | module | crate | feature |
//! | --- | --- | --- |
//! | [`core`] | `aihal-core`: errors, devices, selection, dispatch traits, `TensorBuffer` | always |
//! | [`quantize`] | `aihal-quantize`: NF4, GGML Q4_0/Q8_0/TQ2_0, int8, ternary, FP8 | always |
//! | [`reference`] | `aihal-reference`: the scalar reference every backend is tested against | always |
//! | `cpu` | `aihal-cpu`: CPU kernels, SIMD chosen at run time | `cpu` (default) |
//! | `kernels` | `aihal-kernels`: CubeCL kernels, the Vulkan runtime | `kernels` |
//! | `cuda` | `aihal-cuda`: CUDA probing, runtime and candle interop | `cuda` |
//! | `rknn` | `aihal-rknn`: the RK3588 NPU | `rknn` |
//!
//! Use [`select_device`] / [`get_device`] from here rather than from `aihal::core`: these
//! register the compiled-in backends' probes first, so CUDA and the NPU can be found.
//!
//! ```
//! let config = aihal::DeviceConfig::from_env()?;
//! let selection = aihal::select_device(&config)?;
//! println!("{}", selection.report);
//! println!("{selection}");
//! # Ok::<(), aihal::CoreError>(())
//! ```
#![forbid(unsafe_code)]

pub use aihal_core as core;
pub use aihal_quantize as quantize;
pub use aihal_reference as reference;

#[cfg(feature = "cpu")]
pub use aihal_cpu as cpu;
#[cfg(feature = "cuda")]
pub use aihal_cuda as cuda;
#[cfg(feature = "kernels")]
pub use aihal_kernels as kernels;
#[cfg(feature = "rknn")]
pub use aihal_rknn as rknn;

pub use aihal_core::{
    BackendKind, CoreError, Device, DeviceConfig, DeviceRequest, DeviceSelection, Dispatched, GpuDispatchable,
    ProbeReport, Result,
};

/// Registers the probes of every backend compiled into this build with device selection.
/// Idempotent and cheap after the first call; [`select_device`] calls it for you.
pub fn register_builtin_backends() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        #[cfg(feature = "cuda")]
        aihal_core::register_backend(std::sync::Arc::new(aihal_cuda::CudaProbe));
        #[cfg(feature = "rknn")]
        aihal_core::register_backend(std::sync::Arc::new(aihal_rknn::RknnProbe));
        #[cfg(feature = "kernels")]
        aihal_core::register_backend(std::sync::Arc::new(aihal_kernels::WgpuProbe));
    });
}

/// Chooses a device for `config` among the compiled-in backends, with the reasons; see
/// [`aihal_core::select_device`] for the rules.
pub fn select_device(config: &DeviceConfig) -> Result<DeviceSelection> {
    register_builtin_backends();
    aihal_core::select_device(config)
}

/// The device [`select_device`] chooses, without the reasons.
pub fn get_device(config: &DeviceConfig) -> Result<Device> {
    select_device(config).map(|s| s.device)
}

/// What each compiled-in backend's probe found (probed once per process).
pub fn probe_report() -> ProbeReport {
    register_builtin_backends();
    aihal_core::probe_report()
}
