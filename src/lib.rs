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
//! | [`ops`] | `aihal-ops`: the op set, the execution-provider trait, the executor | always |
//! | `cpu` | `aihal-cpu`: CPU kernels, SIMD chosen at run time | `cpu` (default) |
//! | `kernels` | `aihal-kernels`: CubeCL kernels, the Vulkan runtime | `kernels` |
//! | `cuda` | `aihal-cuda`: CUDA probing, runtime and candle interop | `cuda` |
//! | `rknn` | `aihal-rknn`: the RK3588 NPU | `rknn` |
//!
//! Models are written against the op set of [`ops`] (re-exported here: [`Linear`],
//! [`RmsNorm`], [`Attention`], ...), placed on the process's [`executor`], which holds every
//! compiled-in execution provider in order of preference and follows the `RUST_AI_*`
//! variables:
//!
//! ```
//! use aihal::quantize::{quantize, QuantFormat};
//! use aihal::{Linear, Tensor};
//!
//! let exec = aihal::executor()?;
//! let w = quantize(QuantFormat::Q8_0, &vec![0.5f32; 64 * 128], &[64, 128])?;
//! let layer = Linear::new(&exec, &w, None)?;
//! let y = layer.forward_traced(&Tensor::from_vec(vec![1.0; 2 * 128], &[2, 128])?)?;
//! assert_eq!(y.output.dims(), &[2, 64]);
//! println!("ran on {}\n{}", y.ran_on, exec.report());
//! # Ok::<(), aihal::CoreError>(())
//! ```
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
pub use aihal_ops as ops;
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

pub use aihal_ops::{
    Act, Activation, Add, Attention, AttentionKind, AttentionShape, Embedding, Executor, GateActivation, Gated,
    KvCache, LayerNorm, Linear, LinearPrecision, RmsNorm, Rope, RopeStyle, Softmax, Tensor,
};

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

/// The execution providers compiled into this build, in order of preference (the CPU last).
/// A new backend adds its provider here: one line.
pub fn builtin_providers() -> Vec<std::sync::Arc<dyn aihal_ops::Provider>> {
    vec![
        // Accelerators first, in order of preference, then the CPU.
        #[cfg(feature = "cpu")]
        std::sync::Arc::new(aihal_cpu::CpuProvider),
    ]
}

/// An executor over [`builtin_providers`] for `config`: ops are placed on the device
/// [`select_device`] chooses when a provider runs there, in strict mode when the config says
/// so.
///
/// A device that was selected but has no provider of the op set yet (CUDA, the NPU and
/// Vulkan get theirs in turn) is a fallback to the CPU provider: warned once, and an error in
/// strict mode.
///
/// Errors: those of [`select_device`]; `DeviceNotAvailable` in strict mode as above, or when
/// no provider is compiled in.
pub fn build_executor(config: &DeviceConfig) -> Result<std::sync::Arc<Executor>> {
    let selection = select_device(config)?;
    let providers = builtin_providers();
    let has = |d: Device| providers.iter().any(|p| p.device() == d);
    let device = if has(selection.device) {
        Some(selection.device)
    } else if config.is_strict() {
        return Err(CoreError::device_not_available(
            selection.device,
            "no execution provider of the op set runs there yet; strict mode forbids running on the CPU instead",
        ));
    } else {
        aihal_core::warn_once(
            &format!("aihal-executor-no-provider:{}", selection.device),
            &format!(
                "aihal: {} was selected, but no execution provider of the op set runs there yet; ops run on the CPU",
                selection.device
            ),
        );
        None
    };
    let mut builder = Executor::builder().strict(config.is_strict());
    if let Some(d) = device {
        builder = builder.device(d);
    }
    for p in providers {
        builder = builder.provider(p);
    }
    builder.build()
}

/// The process's executor: [`build_executor`] over [`DeviceConfig::from_env`], built on the
/// first successful call and shared after.
///
/// Errors: those of [`build_executor`] (a malformed `RUST_AI_*` variable among them); a
/// failed call builds again next time.
pub fn executor() -> Result<std::sync::Arc<Executor>> {
    static EXECUTOR: std::sync::OnceLock<std::sync::Arc<Executor>> = std::sync::OnceLock::new();
    if let Some(e) = EXECUTOR.get() {
        return Ok(std::sync::Arc::clone(e));
    }
    let built = build_executor(&DeviceConfig::from_env()?)?;
    Ok(std::sync::Arc::clone(EXECUTOR.get_or_init(|| built)))
}
