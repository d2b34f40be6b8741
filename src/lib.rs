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
//! | [`models`] | `aihal-models`: models on the op set (BERT, sentence embeddings) | always |
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
pub use aihal_models as models;
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
    use std::sync::Arc;
    // An executor holds at most 8 providers (aihal-ops): the CPU's place is kept.
    const MAX_ACCELERATORS: usize = 7;
    let accelerators = std::iter::empty::<Arc<dyn aihal_ops::Provider>>();
    // Accelerators first, in order of preference, then the CPU. Probing never panics: no
    // driver or no device is an empty list.
    // CUDA: one provider per device the driver reports.
    #[cfg(feature = "cuda")]
    let accelerators = accelerators.chain(
        aihal_cuda::cuda_providers()
            .into_iter()
            .map(|p| Arc::new(p) as Arc<dyn aihal_ops::Provider>),
    );
    // The RK3588 NPU, when its runtime loads (`RUST_AI_RKNN_LIB`, then the usual paths): linear
    // layers, with the runtime's automatic core choice.
    #[cfg(feature = "rknn")]
    let accelerators = accelerators.chain(
        aihal_rknn::RknnProvider::global()
            .ok()
            .map(|p| Arc::new(p) as Arc<dyn aihal_ops::Provider>),
    );
    // Vulkan: one provider per adapter, software ones (lavapipe) included and marked, so the
    // executor places ops on them only when their device is named.
    #[cfg(feature = "kernels")]
    let accelerators = accelerators.chain(
        aihal_kernels::wgpu_providers()
            .into_iter()
            .map(|p| Arc::new(p) as Arc<dyn aihal_ops::Provider>),
    );
    let mut providers: Vec<Arc<dyn aihal_ops::Provider>> = accelerators.collect();
    if providers.len() > MAX_ACCELERATORS {
        let left: Vec<String> = providers.drain(MAX_ACCELERATORS..).map(|p| p.name()).collect();
        aihal_core::warn_once(
            "aihal-too-many-providers",
            &format!(
                "aihal: an executor holds at most 8 providers; left out: {}",
                left.join(", ")
            ),
        );
    }
    #[cfg(feature = "cpu")]
    providers.push(Arc::new(aihal_cpu::CpuProvider));
    providers
}

/// An executor over [`builtin_providers`] for `config`, following this machine's dispatch
/// table when there is one ([`dispatch_table_path`], [`load_dispatch_table`]).
///
/// An explicitly requested device (`RUST_AI_DEVICE`) wins over the table: ops run there, and
/// an op it cannot run is a fallback (an error in strict mode). Otherwise the table decides
/// per op and row class, and ops it has no entry for run on the device [`select_device`]
/// chose when a provider runs there. A device that was selected but has no provider of the
/// op set yet is a fallback to the next provider: warned once, and an error in strict mode.
///
/// With `RUST_AI_CALIBRATE_MISSING=<ms>`, a key the table lacks is measured the first time an
/// op needs it, taking about that many milliseconds of timing per key
/// (`ExecutorBuilder::calibrate_missing`).
///
/// Errors: those of [`select_device`] and [`load_dispatch_table`]; `InvalidConfig` for a
/// malformed `RUST_AI_CALIBRATE_MISSING`; `DeviceNotAvailable` in strict mode as above, or
/// when no provider is compiled in.
pub fn build_executor(config: &DeviceConfig) -> Result<std::sync::Arc<Executor>> {
    let selection = select_device(config)?;
    #[allow(unused_mut)]
    let mut providers = builtin_providers();
    // The built-in NPU provider leaves the choice of cores to the runtime; a request that
    // names cores (`rknn:0b111`) gets a provider on exactly those instead.
    #[cfg(feature = "rknn")]
    if let Device::Rknn { core_mask } = selection.device {
        for p in &mut providers {
            if p.device().backend() == aihal_core::BackendKind::Rknn && p.device() != selection.device {
                let lib = aihal_rknn::RknnLibrary::global()?;
                *p = std::sync::Arc::new(aihal_rknn::RknnProvider::new(lib, core_mask));
            }
        }
    }
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
    match (device, config.requested_device().is_some()) {
        (Some(d), true) => builder = builder.device(d),
        (Some(d), false) => builder = builder.prefer(d),
        (None, _) => {}
    }
    if let Some(table) = load_dispatch_table(&providers)? {
        builder = builder.table(table);
    }
    if let Some(ms) = std::env::var_os("RUST_AI_CALIBRATE_MISSING").filter(|v| !v.is_empty()) {
        let ms: u64 = ms.to_str().and_then(|v| v.trim().parse().ok()).ok_or_else(|| {
            CoreError::invalid_config(format!(
                "RUST_AI_CALIBRATE_MISSING is `{}`: a whole number of milliseconds per missing key",
                ms.display()
            ))
        })?;
        builder = builder.calibrate_missing(std::time::Duration::from_millis(ms));
    }
    for p in providers {
        builder = builder.provider(p);
    }
    builder.build()
}

/// Where the dispatch table is read from and `cargo run --example calibrate` writes it:
/// `RUST_AI_DISPATCH_TABLE` when set, else `aihal/dispatch.toml` in the user's cache
/// directory (`XDG_CACHE_HOME`, else `~/.cache`); `None` when neither is known.
pub fn dispatch_table_path() -> Option<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("RUST_AI_DISPATCH_TABLE").filter(|p| !p.is_empty()) {
        return Some(p.into());
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|p| !p.is_empty())
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cache")))?;
    Some(cache.join("aihal").join("dispatch.toml"))
}

/// This machine's dispatch table for `providers`, if one is there and was measured here.
///
/// No file: `None`, and a note printed once saying the default order is used and how to
/// calibrate. A file measured on another machine (CPU, its features, the providers or the
/// aihal version differ): `None`, with one warning saying how to recalibrate. A malformed
/// file: an error naming the file and line when `RUST_AI_DISPATCH_TABLE` points at it, else
/// `None` with one warning.
pub fn load_dispatch_table(
    providers: &[std::sync::Arc<dyn aihal_ops::Provider>],
) -> Result<Option<aihal_ops::table::DispatchTable>> {
    const HOW: &str = "run `cargo run --release --example calibrate` to measure this machine";
    let Some(path) = dispatch_table_path() else {
        return Ok(None);
    };
    if !path.exists() {
        static NOTE: std::sync::Once = std::sync::Once::new();
        NOTE.call_once(|| {
            let msg = format!(
                "aihal: no dispatch table at {}; ops are placed in the default order ({HOW})",
                path.display()
            );
            tracing::info!("{msg}");
            eprintln!("note: {msg}");
        });
        return Ok(None);
    }
    let table = match aihal_ops::table::DispatchTable::load(&path) {
        Ok(t) => t,
        Err(e) if std::env::var_os("RUST_AI_DISPATCH_TABLE").is_some() => return Err(e),
        Err(e) => {
            aihal_core::warn_once(
                "aihal-dispatch-table-bad",
                &format!("aihal: ignoring the dispatch table: {e}; {HOW}"),
            );
            return Ok(None);
        }
    };
    let hardware: Vec<&dyn aihal_ops::Provider> = providers.iter().filter(|p| !p.is_software()).map(|p| &**p).collect();
    let here = aihal_ops::table::Fingerprint::of_this_machine(aihal_ops::calibrate::fingerprint_providers(
        hardware.iter().copied(),
    ));
    let theirs = &table.machine;
    let same = theirs.cpu == here.cpu
        && theirs.cpu_features == here.cpu_features
        && theirs.aihal == here.aihal
        && here.providers.iter().all(|p| theirs.providers.contains(p));
    if !same {
        aihal_core::warn_once(
            "aihal-dispatch-table-other-machine",
            &format!(
                "aihal: ignoring the dispatch table at {}: it was measured on another machine or build ({}; providers {:?}); {HOW}",
                path.display(),
                theirs.cpu,
                theirs.providers
            ),
        );
        return Ok(None);
    }
    Ok(Some(table))
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
