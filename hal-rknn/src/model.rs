//! [`RknnModel`]: a compiled `.rknn` model loaded into a runtime context.

use std::ffi::c_void;
use std::path::Path;
use std::time::Duration;

use aihal_core::candle_core::{self, Tensor};
use aihal_core::{CoreError, NpuCoreMask};
use aihal_rknn_sys as sys;
use half::f16;
use sys::RuntimeVersion;

use crate::error::{Result, RknnError, RknnStatus};
use crate::library::{RknnLibrary, RuntimeInfo, VersionSource};
use crate::mem::NpuMem;
use crate::tensor::{Input, RawOutput, TensorAttr, TensorType};

/// Options of [`RknnModel::load_with`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ModelOptions {
    /// Collect per-layer timings for [`RknnModel::perf_detail`] (slows inference).
    pub collect_perf_detail: bool,
    /// Scheduling priority of the context.
    pub priority: Priority,
}

/// Scheduling priority of a context.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Priority {
    /// High (the runtime's default).
    #[default]
    High,
    /// Medium.
    Medium,
    /// Low.
    Low,
}

impl ModelOptions {
    fn flags(self) -> u32 {
        let prio = match self.priority {
            Priority::High => sys::RKNN_FLAG_PRIOR_HIGH,
            Priority::Medium => sys::RKNN_FLAG_PRIOR_MEDIUM,
            Priority::Low => sys::RKNN_FLAG_PRIOR_LOW,
        };
        prio | if self.collect_perf_detail {
            sys::RKNN_FLAG_COLLECT_PERF_MASK
        } else {
            0
        }
    }
}

/// Zero-copy buffers: NPU memory bound to every input and output in the native layout.
struct ZeroCopy {
    inputs: Vec<(TensorAttr, NpuMem)>,
    outputs: Vec<(TensorAttr, NpuMem)>,
}

/// A compiled model in a runtime context.
///
/// Load it ([`RknnModel::load`] from a file, [`RknnModel::from_bytes`] from memory), read
/// its [`inputs`](Self::inputs) and [`outputs`](Self::outputs), [`run`](Self::run) it with
/// typed inputs and read results as candle tensors ([`output_tensors`](Self::output_tensors))
/// or raw bytes ([`outputs_raw`](Self::outputs_raw)). The zero-copy path
/// ([`enable_zero_copy`](Self::enable_zero_copy)) binds NPU memory to every tensor instead;
/// the two paths are not mixed on one context.
///
/// `Send`, not `Sync`: every call that reaches the runtime takes `&mut self`; for inference on
/// several threads, give each its own context with [`duplicate`](Self::duplicate).
pub struct RknnModel {
    lib: RknnLibrary,
    ctx: sys::rknn_context,
    inputs: Vec<TensorAttr>,
    outputs: Vec<TensorAttr>,
    options: ModelOptions,
    zero_copy: Option<ZeroCopy>,
    has_run: bool,
    released: bool,
}

// SAFETY: the context and the zero-copy memory are owned exclusively by this value; a context
// may be used from any thread as long as calls do not overlap, which `&mut self` on every
// runtime call guarantees. (Not `Sync`: see the type's docs.)
unsafe impl Send for RknnModel {}

impl std::fmt::Debug for RknnModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RknnModel")
            .field("inputs", &self.inputs)
            .field("outputs", &self.outputs)
            .field("zero_copy", &self.zero_copy.is_some())
            .finish_non_exhaustive()
    }
}

fn query<T>(lib: &RknnLibrary, ctx: sys::rknn_context, cmd: u32, value: &mut T) -> Result<()> {
    // SAFETY: `ctx` is live (every caller holds it inside an RknnModel) and `value` is a
    // writable struct of the size passed, the one this command fills.
    let code = unsafe { (lib.api().rknn_query)(ctx, cmd, std::ptr::from_mut(value).cast(), size_of::<T>() as u32) };
    RknnStatus(code).result("rknn_query")
}

impl RknnModel {
    /// Loads a model file with default options.
    pub fn load(lib: &RknnLibrary, path: impl AsRef<Path>) -> Result<Self> {
        Self::load_with(lib, path, ModelOptions::default())
    }

    /// Loads a model file.
    pub fn load_with(lib: &RknnLibrary, path: impl AsRef<Path>, options: ModelOptions) -> Result<Self> {
        // Read here so a missing file is an I/O error naming the path, not a runtime status.
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| {
            RknnError::Core(CoreError::Io(std::io::Error::new(
                e.kind(),
                format!("reading RKNN model {}: {e}", path.display()),
            )))
        })?;
        Self::from_bytes_with(lib, &bytes, options)
    }

    /// Loads a model from memory with default options.
    pub fn from_bytes(lib: &RknnLibrary, model: &[u8]) -> Result<Self> {
        Self::from_bytes_with(lib, model, ModelOptions::default())
    }

    /// Loads a model from memory. The runtime copies what it needs; `model` is not kept.
    pub fn from_bytes_with(lib: &RknnLibrary, model: &[u8], options: ModelOptions) -> Result<Self> {
        if model.is_empty() {
            return Err(RknnError::invalid_input("an empty buffer is not an RKNN model"));
        }
        let size = u32::try_from(model.len())
            .map_err(|_| RknnError::invalid_input(format!("a {} byte model exceeds 4 GiB", model.len())))?;
        let mut ctx: sys::rknn_context = 0;
        // SAFETY: `model` is readable for `size` bytes (the runtime only reads it, the
        // pointer is mutable in the C signature only), `ctx` is writable, no extension.
        let code = unsafe {
            (lib.api().rknn_init)(
                &raw mut ctx,
                model.as_ptr().cast_mut().cast::<c_void>(),
                size,
                options.flags(),
                std::ptr::null_mut(),
            )
        };
        RknnStatus(code).result("rknn_init")?;
        Self::from_context(lib, ctx, options)
    }

    /// Wraps a fresh context: from here on `Drop` releases it, whatever fails next.
    fn from_context(lib: &RknnLibrary, ctx: sys::rknn_context, options: ModelOptions) -> Result<Self> {
        let mut this = Self {
            lib: lib.clone(),
            ctx,
            inputs: Vec::new(),
            outputs: Vec::new(),
            options,
            zero_copy: None,
            has_run: false,
            released: false,
        };
        let mut num = sys::rknn_input_output_num {
            n_input: 0,
            n_output: 0,
        };
        query(lib, ctx, sys::RKNN_QUERY_IN_OUT_NUM, &mut num)?;
        this.inputs = this.query_attrs(sys::RKNN_QUERY_INPUT_ATTR, num.n_input)?;
        this.outputs = this.query_attrs(sys::RKNN_QUERY_OUTPUT_ATTR, num.n_output)?;
        Ok(this)
    }

    fn query_attrs(&self, cmd: u32, count: u32) -> Result<Vec<TensorAttr>> {
        (0..count)
            .map(|index| {
                let mut attr = sys::rknn_tensor_attr::zeroed();
                attr.index = index;
                query(&self.lib, self.ctx, cmd, &mut attr)?;
                Ok(TensorAttr::from_raw(&attr))
            })
            .collect()
    }

    /// The model's inputs.
    pub fn inputs(&self) -> &[TensorAttr] {
        &self.inputs
    }

    /// The model's outputs.
    pub fn outputs(&self) -> &[TensorAttr] {
        &self.outputs
    }

    /// The inputs in the NPU's native layout (what the zero-copy path binds).
    pub fn native_inputs(&self) -> Result<Vec<TensorAttr>> {
        self.query_attrs(sys::RKNN_QUERY_NATIVE_INPUT_ATTR, self.inputs.len() as u32)
    }

    /// The outputs in the NPU's native layout.
    pub fn native_outputs(&self) -> Result<Vec<TensorAttr>> {
        self.query_attrs(sys::RKNN_QUERY_NATIVE_OUTPUT_ATTR, self.outputs.len() as u32)
    }

    /// The runtime and driver versions this context reports.
    pub fn sdk_version(&self) -> Result<RuntimeInfo> {
        let mut sdk = sys::rknn_sdk_version::zeroed();
        query(&self.lib, self.ctx, sys::RKNN_QUERY_SDK_VERSION, &mut sdk)?;
        let api_version = sys::read_c_name(&sdk.api_version);
        let version = RuntimeVersion::parse(&api_version).ok_or_else(|| {
            RknnError::Core(CoreError::kernel(
                "rknn",
                "rknn_query",
                format!("unreadable runtime version {api_version:?}"),
            ))
        })?;
        Ok(RuntimeInfo {
            version,
            source: VersionSource::SdkQuery,
            api_version: Some(api_version),
            driver_version: Some(sys::read_c_name(&sdk.drv_version)),
        })
    }

    /// The string stored in the model at conversion time.
    pub fn custom_string(&self) -> Result<String> {
        let mut s = sys::rknn_custom_string::zeroed();
        query(&self.lib, self.ctx, sys::RKNN_QUERY_CUSTOM_STRING, &mut s)?;
        Ok(sys::read_c_name(&s.string))
    }

    /// `(weight bytes, internal bytes)` the model uses on the NPU.
    pub fn memory_size(&self) -> Result<(u64, u64)> {
        let mut m = sys::rknn_mem_size::zeroed();
        query(&self.lib, self.ctx, sys::RKNN_QUERY_MEM_SIZE, &mut m)?;
        Ok((u64::from(m.total_weight_size), u64::from(m.total_internal_size)))
    }

    /// Which NPU cores run this context.
    pub fn set_core_mask(&mut self, mask: NpuCoreMask) -> Result<()> {
        let f = self
            .lib
            .api()
            .rknn_set_core_mask
            .ok_or_else(|| self.lib.missing("rknn_set_core_mask", "an RK3588 runtime exports it"))?;
        // SAFETY: live context.
        RknnStatus(unsafe { f(self.ctx, mask.bits()) }).result("rknn_set_core_mask")
    }

    /// A second context on the same model (weights shared), for another thread.
    pub fn duplicate(&self) -> Result<Self> {
        let f = self
            .lib
            .api()
            .rknn_dup_context
            .ok_or_else(|| self.lib.missing("rknn_dup_context", "an RK3588 runtime exports it"))?;
        let mut src = self.ctx;
        let mut dst: sys::rknn_context = 0;
        // SAFETY: `src` holds a live context; `dst` is writable.
        RknnStatus(unsafe { f(&raw mut src, &raw mut dst) }).result("rknn_dup_context")?;
        Self::from_context(&self.lib, dst, self.options)
    }

    fn check_general_path(&self) -> Result<()> {
        if self.zero_copy.is_some() {
            return Err(RknnError::invalid_input(
                "this model uses zero-copy buffers: write input_buffer_mut and call run_zero_copy",
            ));
        }
        Ok(())
    }

    /// Sets the inputs (one per model input, in order) and runs the model.
    pub fn run(&mut self, inputs: &[Input<'_>]) -> Result<()> {
        self.check_general_path()?;
        if inputs.len() != self.inputs.len() {
            return Err(RknnError::Core(CoreError::dimension_mismatch(
                "RKNN model inputs",
                self.inputs.len(),
                inputs.len(),
            )));
        }
        let mut buffers = Vec::with_capacity(inputs.len());
        let mut raw = Vec::with_capacity(inputs.len());
        for (i, (input, attr)) in inputs.iter().zip(&self.inputs).enumerate() {
            if input.data.len() != attr.n_elems {
                return Err(RknnError::Core(CoreError::shape_mismatch(
                    format!("RKNN input {i} ({:?}, dims {:?})", attr.name, attr.dims),
                    [attr.n_elems],
                    [input.data.len()],
                )));
            }
            let mut bytes = input.data.to_bytes();
            let mut r = sys::rknn_input::zeroed();
            r.index = i as u32;
            r.buf = bytes.as_mut_ptr().cast();
            r.size = u32::try_from(bytes.len()).map_err(|_| RknnError::invalid_input("input exceeds 4 GiB"))?;
            r.pass_through = u8::from(input.pass_through);
            r.type_ = input.data.raw_type();
            r.fmt = input.format.raw();
            raw.push(r);
            buffers.push(bytes);
        }
        // SAFETY: live context; `raw` holds one descriptor per input whose buffers (in
        // `buffers`) live until after the call.
        let code = unsafe { (self.lib.api().rknn_inputs_set)(self.ctx, raw.len() as u32, raw.as_mut_ptr()) };
        drop(buffers);
        RknnStatus(code).result("rknn_inputs_set")?;
        self.run_inner()
    }

    fn run_inner(&mut self) -> Result<()> {
        // SAFETY: live context, no extension.
        let code = unsafe { (self.lib.api().rknn_run)(self.ctx, std::ptr::null_mut()) };
        RknnStatus(code).result("rknn_run")?;
        self.has_run = true;
        Ok(())
    }

    /// Every output of the last run as bytes: f32 when `dequantize`, else the type the
    /// model produces ([`TensorAttr::dtype`]).
    pub fn outputs_raw(&mut self, dequantize: bool) -> Result<Vec<RawOutput>> {
        self.check_general_path()?;
        if !self.has_run {
            return Err(RknnError::invalid_input("no outputs yet: call run first"));
        }
        let mut raw: Vec<sys::rknn_output> = (0..self.outputs.len())
            .map(|i| {
                let mut o = sys::rknn_output::zeroed();
                o.index = i as u32;
                o.want_float = u8::from(dequantize);
                o
            })
            .collect();
        let n = raw.len() as u32;
        // SAFETY: live context; `raw` holds `n` zeroed descriptors the runtime fills with
        // buffers it owns until `rknn_outputs_release`.
        let code = unsafe { (self.lib.api().rknn_outputs_get)(self.ctx, n, raw.as_mut_ptr(), std::ptr::null_mut()) };
        RknnStatus(code).result("rknn_outputs_get")?;
        let mut result = Vec::with_capacity(raw.len());
        for (o, attr) in raw.iter().zip(&self.outputs) {
            let dtype = if dequantize { TensorType::F32 } else { attr.dtype };
            let bytes = if o.buf.is_null() {
                Vec::new()
            } else {
                // SAFETY: the runtime filled `buf` with `size` readable bytes, valid until
                // the release below.
                unsafe { std::slice::from_raw_parts(o.buf.cast::<u8>(), o.size as usize) }.to_vec()
            };
            result.push(RawOutput {
                attr: attr.clone(),
                dtype,
                bytes,
            });
        }
        // SAFETY: releases exactly the buffers `rknn_outputs_get` handed out.
        let code = unsafe { (self.lib.api().rknn_outputs_release)(self.ctx, n, raw.as_mut_ptr()) };
        RknnStatus(code).result("rknn_outputs_release")?;
        if let Some(bad) = result.iter().find(|r| {
            let want = r.dtype.size_in_bytes().map(|b| b * r.attr.n_elems);
            want.is_some_and(|w| r.bytes.len() < w)
        }) {
            return Err(RknnError::Core(CoreError::kernel(
                "rknn",
                "rknn_outputs_get",
                format!(
                    "output {:?} has {} bytes, fewer than its shape needs",
                    bad.attr.name,
                    bad.bytes.len()
                ),
            )));
        }
        Ok(result)
    }

    /// Every output of the last run as a CPU candle tensor with the output's dims:
    /// dequantized to f32 when `dequantize`, else in the model's type (i8 widened to i16,
    /// which candle has; u8, i16, i32, f16 and f32 as they are; other types are an error —
    /// read them with [`outputs_raw`](Self::outputs_raw)).
    pub fn output_tensors(&mut self, dequantize: bool) -> Result<Vec<Tensor>> {
        self.outputs_raw(dequantize)?
            .into_iter()
            .map(|raw| raw_to_tensor(&raw))
            .collect()
    }

    /// NPU time of the last run (from `RKNN_QUERY_PERF_RUN`).
    pub fn perf_run(&self) -> Result<Duration> {
        let mut p = sys::rknn_perf_run { run_duration: 0 };
        query(&self.lib, self.ctx, sys::RKNN_QUERY_PERF_RUN, &mut p)?;
        Ok(Duration::from_micros(p.run_duration.max(0) as u64))
    }

    /// Per-layer timings of the last run as the runtime formats them; needs
    /// [`ModelOptions::collect_perf_detail`].
    pub fn perf_detail(&self) -> Result<String> {
        if !self.options.collect_perf_detail {
            return Err(RknnError::invalid_input(
                "per-layer timings need ModelOptions { collect_perf_detail: true, .. } at load",
            ));
        }
        let mut p = sys::rknn_perf_detail {
            perf_data: std::ptr::null_mut(),
            data_len: 0,
        };
        query(&self.lib, self.ctx, sys::RKNN_QUERY_PERF_DETAIL, &mut p)?;
        if p.perf_data.is_null() {
            return Ok(String::new());
        }
        // SAFETY: the runtime owns `perf_data`, a NUL-terminated string valid until the next
        // run; it is copied at once.
        let text = unsafe { std::ffi::CStr::from_ptr(p.perf_data) };
        Ok(text.to_string_lossy().into_owned())
    }

    /// Switches to the zero-copy path: creates NPU memory for every input and output in the
    /// native layout ([`native_inputs`](Self::native_inputs)) and binds it. Afterwards write
    /// inputs with [`input_buffer_mut`](Self::input_buffer_mut), call
    /// [`run_zero_copy`](Self::run_zero_copy), read [`output_buffer`](Self::output_buffer).
    pub fn enable_zero_copy(&mut self) -> Result<()> {
        if self.zero_copy.is_some() {
            return Ok(());
        }
        let native_in = self.native_inputs()?;
        let native_out = self.native_outputs()?;
        let mut zc = ZeroCopy {
            inputs: Vec::new(),
            outputs: Vec::new(),
        };
        match self.bind_all(&mut zc, native_in, native_out) {
            Ok(()) => {
                self.zero_copy = Some(zc);
                Ok(())
            }
            Err(e) => {
                // Release what was created; the context keeps no use of it.
                for (_, mem) in zc.inputs.into_iter().chain(zc.outputs) {
                    // SAFETY: memory of this live context, released once.
                    if let Err(release) = unsafe { mem.destroy(&self.lib, self.ctx) } {
                        tracing::warn!("aihal-rknn: releasing zero-copy memory after a failure: {release}");
                    }
                }
                Err(e)
            }
        }
    }

    fn bind_all(&self, zc: &mut ZeroCopy, native_in: Vec<TensorAttr>, native_out: Vec<TensorAttr>) -> Result<()> {
        for (is_input, attrs) in [(true, native_in), (false, native_out)] {
            for attr in attrs {
                let len = attr.size_with_stride.max(attr.size);
                // SAFETY: live context.
                let mem = unsafe { NpuMem::create(&self.lib, self.ctx, len) }?;
                let desc = mem.as_ptr();
                let mut raw = attr.raw;
                let list = if is_input { &mut zc.inputs } else { &mut zc.outputs };
                list.push((attr, mem));
                // SAFETY: live context, memory it created, and the native attribute it
                // reported for this tensor.
                let code = unsafe { (self.lib.api().rknn_set_io_mem)(self.ctx, desc, &raw mut raw) };
                RknnStatus(code).result("rknn_set_io_mem")?;
            }
        }
        Ok(())
    }

    fn zero_copy_mut(&mut self) -> Result<&mut ZeroCopy> {
        self.zero_copy
            .as_mut()
            .ok_or_else(|| RknnError::invalid_input("zero-copy buffers are not enabled: call enable_zero_copy"))
    }

    /// The NPU memory of input `index` (native layout and type, see
    /// [`native_inputs`](Self::native_inputs)).
    pub fn input_buffer_mut(&mut self, index: usize) -> Result<&mut [u8]> {
        let zc = self.zero_copy_mut()?;
        let count = zc.inputs.len();
        let (_, mem) = zc
            .inputs
            .get_mut(index)
            .ok_or_else(|| RknnError::Core(CoreError::dimension_mismatch("zero-copy input index", count, index)))?;
        Ok(mem.bytes_mut())
    }

    /// Runs on the bound buffers (after syncing caches where the runtime has `rknn_mem_sync`).
    pub fn run_zero_copy(&mut self) -> Result<()> {
        self.zero_copy_mut()?;
        self.sync_zero_copy(true)?;
        self.run_inner()?;
        self.sync_zero_copy(false)
    }

    fn sync_zero_copy(&mut self, inputs: bool) -> Result<()> {
        let Some(f) = self.lib.api().rknn_mem_sync else {
            return Ok(());
        };
        if self.lib.version()? < RuntimeVersion::new(1, 6, 0) {
            return Ok(());
        }
        let (ctx, mode) = (
            self.ctx,
            if inputs {
                sys::RKNN_MEMORY_SYNC_TO_DEVICE
            } else {
                sys::RKNN_MEMORY_SYNC_FROM_DEVICE
            },
        );
        let zc = self.zero_copy_mut()?;
        let list = if inputs { &zc.inputs } else { &zc.outputs };
        for (_, mem) in list {
            // SAFETY: live context and memory it created.
            RknnStatus(unsafe { f(ctx, mem.as_ptr(), mode) }).result("rknn_mem_sync")?;
        }
        Ok(())
    }

    /// The NPU memory of output `index` after [`run_zero_copy`](Self::run_zero_copy).
    pub fn output_buffer(&self, index: usize) -> Result<&[u8]> {
        let zc = self
            .zero_copy
            .as_ref()
            .ok_or_else(|| RknnError::invalid_input("zero-copy buffers are not enabled: call enable_zero_copy"))?;
        let (_, mem) = zc.outputs.get(index).ok_or_else(|| {
            RknnError::Core(CoreError::dimension_mismatch(
                "zero-copy output index",
                zc.outputs.len(),
                index,
            ))
        })?;
        Ok(mem.bytes())
    }

    fn release(&mut self) -> Result<()> {
        if self.released {
            return Ok(());
        }
        self.released = true;
        let mems = self
            .zero_copy
            .take()
            .into_iter()
            .flat_map(|zc| zc.inputs.into_iter().chain(zc.outputs))
            .map(|(_, mem)| mem);
        // SAFETY: the context is live (not yet released) and owns exactly these blocks.
        unsafe { crate::mem::release_context(&self.lib, self.ctx, mems, self.lib.api().rknn_destroy, "rknn_destroy") }
    }

    /// Releases the context and its memory, reporting any failure (drop does the same and
    /// logs failures through `tracing`).
    pub fn close(mut self) -> Result<()> {
        self.release()
    }
}

impl Drop for RknnModel {
    fn drop(&mut self) {
        if let Err(e) = self.release() {
            tracing::warn!("aihal-rknn: dropping an RKNN model: {e}");
        }
    }
}

/// A raw output as a CPU candle tensor (see [`RknnModel::output_tensors`]).
fn raw_to_tensor(raw: &RawOutput) -> Result<Tensor> {
    let dims = raw.attr.dims.clone();
    let n = raw.attr.n_elems;
    let cpu = &candle_core::Device::Cpu;
    let b = &raw.bytes;
    let tensor = match raw.dtype {
        TensorType::F32 => Tensor::from_vec(
            b.chunks_exact(4)
                .take(n)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect::<Vec<_>>(),
            dims,
            cpu,
        ),
        TensorType::F16 => Tensor::from_vec(
            b.chunks_exact(2)
                .take(n)
                .map(|c| f16::from_le_bytes([c[0], c[1]]))
                .collect::<Vec<_>>(),
            dims,
            cpu,
        ),
        TensorType::I8 => Tensor::from_vec(
            b.iter().take(n).map(|&v| i16::from(v as i8)).collect::<Vec<_>>(),
            dims,
            cpu,
        ),
        TensorType::U8 => Tensor::from_vec(b[..n.min(b.len())].to_vec(), dims, cpu),
        TensorType::I16 => Tensor::from_vec(
            b.chunks_exact(2)
                .take(n)
                .map(|c| i16::from_le_bytes([c[0], c[1]]))
                .collect::<Vec<_>>(),
            dims,
            cpu,
        ),
        TensorType::I32 => Tensor::from_vec(
            b.chunks_exact(4)
                .take(n)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect::<Vec<_>>(),
            dims,
            cpu,
        ),
        other => {
            return Err(RknnError::Core(CoreError::unsupported(
                "RknnModel::output_tensors",
                format!("{other} outputs (use outputs_raw)"),
            )))
        }
    };
    Ok(tensor.map_err(CoreError::from)?)
}
