//! [`CubeProvider`]: these kernels as an `aihal-ops` execution provider, once for every CubeCL
//! runtime (CUDA through `aihal-cuda`, Vulkan through this crate's `wgpu` feature).
//!
//! Weights become device buffers once, in [`Provider::prepare`]; activations live on the
//! device as [`CubeData`] and every op takes and returns them there, so a chain of ops moves
//! data only when the executor uploads its input and the caller reads its output. Both are
//! counted ([`CubeProvider::transfers`]).

use std::any::Any;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use aihal_core::{CoreError, Device, Result};
use aihal_ops::{
    Activation, AttentionKind, Call, DeviceData, KvLayout, KvStore, OpSpec, Prepared, Provider, Shape, Support, Tensor,
};
use aihal_quantize::QuantizedTensor;
use aihal_reference::{AttentionMask, AttentionShape, GateActivation, RopeStyle};
use cubecl::prelude::Runtime;

use crate::attention::{attention_cached, attention_units, fill, kv_append};
use crate::launch::{Context, DeviceBuffer};
use crate::packed::{device_support, DeviceQuantized};
use crate::rope::RopeTables;

/// Positions the rotary tables of a prepared [`Rope`](aihal_ops::Rope) cover at first; a
/// call past them extends the tables (doubling), which is an upload.
pub const ROPE_TABLE_POSITIONS: usize = 4096;

#[derive(Debug, Default)]
struct Counters {
    uploads: AtomicU64,
    downloads: AtomicU64,
}

/// Copies between host memory and a [`CubeProvider`]'s device since the provider was made.
///
/// Counted: every [`Provider::upload`] (an executor moving an activation in), every read of a
/// [`CubeData`] (a download: [`Tensor::to_vec`] and the executor moving an activation out),
/// and the uploads an op makes because its call carries host data (the token ids of an
/// embedding; the rotary tables when a position passes them). Weights uploaded once by
/// [`Provider::prepare`] are not counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Transfers {
    /// Host to device copies.
    pub uploads: u64,
    /// Device to host copies.
    pub downloads: u64,
}

/// The context, identity and counters every prepared op and every tensor of one provider
/// shares.
struct Shared<R: Runtime> {
    ctx: Context<R>,
    device: Device,
    counters: Counters,
    /// Held while an op runs or a tensor moves, on a software device only (see
    /// [`CubeProvider`]).
    one_at_a_time: Option<Mutex<()>>,
}

impl<R: Runtime> Shared<R> {
    /// On a software device, the right to use it until the guard drops.
    fn turn(&self) -> Option<MutexGuard<'_, ()>> {
        self.one_at_a_time
            .as_ref()
            .map(|m| m.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// The device buffer of an input of `op`, which must live on this provider's device.
    fn input<'t>(&self, t: &'t Tensor, op: &str) -> Result<&'t DeviceBuffer<R, f32>> {
        let data = t
            .device_data()
            .and_then(|d| d.as_any().downcast_ref::<CubeData<R>>())
            .filter(|d| d.shared.device == self.device)
            .ok_or_else(|| {
                CoreError::invalid_input(format!(
                    "{op}: the {} provider was given a tensor on {}",
                    self.device,
                    t.device()
                ))
            })?;
        Ok(&data.buffer)
    }

    /// A device tensor over `buffer`.
    fn output(self: &Arc<Self>, buffer: DeviceBuffer<R, f32>, dims: &[usize]) -> Result<Tensor> {
        Tensor::on_device(
            Arc::new(CubeData {
                buffer,
                shared: Arc::clone(self),
            }),
            dims,
        )
    }

    fn counted_upload<E: cubecl::prelude::CubeElement>(&self, data: &[E]) -> Result<DeviceBuffer<R, E>> {
        let b = self.ctx.upload(data)?;
        self.counters.uploads.fetch_add(1, Ordering::Relaxed);
        Ok(b)
    }
}

/// An f32 activation on a CubeCL device: its buffer and the context it lives in. Reading it
/// ([`DeviceData::read`]) downloads it and is counted by its provider.
pub struct CubeData<R: Runtime> {
    buffer: DeviceBuffer<R, f32>,
    shared: Arc<Shared<R>>,
}

impl<R: Runtime> CubeData<R> {
    /// The device buffer (for kernels of one's own on the same context).
    pub fn buffer(&self) -> &DeviceBuffer<R, f32> {
        &self.buffer
    }

    /// The context the buffer lives in.
    pub fn context(&self) -> &Context<R> {
        &self.shared.ctx
    }
}

impl<R: Runtime> std::fmt::Debug for CubeData<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CubeData")
            .field("device", &self.shared.device)
            .field("len", &self.buffer.len())
            .finish_non_exhaustive()
    }
}

impl<R: Runtime> DeviceData for CubeData<R> {
    fn device(&self) -> Device {
        self.shared.device
    }

    fn read(&self) -> Result<Vec<f32>> {
        let s = &self.shared;
        let _turn = s.turn();
        let v = s.ctx.download(&self.buffer)?;
        s.counters.downloads.fetch_add(1, Ordering::Relaxed);
        Ok(v)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The CubeCL kernels of this crate as an execution provider on one device of runtime `R`.
///
/// It runs every op of `aihal-ops` ([`supports`](Provider::supports) answers from the
/// device's limits): linear layers over quantized weights in every format the kernels decode
/// and over dense f32 weights (f32 activations, which meet both
/// [`LinearPrecision`](aihal_ops::LinearPrecision) bounds),
/// RMSNorm, LayerNorm, softmax, SiLU and both GELUs, gated activations, addition, rotary
/// embedding, embedding lookup from a quantized or dense table, and attention (causal, sliding
/// window, padded bidirectional; batches) over a key/value cache preallocated on the device.
///
/// Many threads may share one provider and its prepared ops (each call allocates its own
/// output). On a software device (lavapipe) the provider runs one op or transfer at a time:
/// there the device's own worker threads compete with the callers' for the same CPU cores,
/// and CubeCL's per-thread streams waiting on each other made 8 threads sharing a linear
/// layer and an attention op more than 6 times slower than running their calls one after
/// another (measured on a 2-core machine). Hardware devices take calls from many threads at
/// once.
///
/// Build one from an opened [`Context`]: `aihal-cuda` does for CUDA devices (after probing
/// the driver), [`wgpu_providers`](crate::wgpu_providers) for Vulkan adapters.
pub struct CubeProvider<R: Runtime> {
    shared: Arc<Shared<R>>,
    name: String,
    software: bool,
}

impl<R: Runtime> std::fmt::Debug for CubeProvider<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CubeProvider")
            .field("device", &self.shared.device)
            .field("name", &self.name)
            .field("software", &self.software)
            .finish_non_exhaustive()
    }
}

impl<R: Runtime> CubeProvider<R> {
    /// A provider on `ctx`'s device, known to aihal as `device` and named `name` in reports;
    /// `software` for a CPU implementation of the API (lavapipe), which the executor places
    /// ops on only when its device is named.
    pub fn new(ctx: Context<R>, device: Device, name: impl Into<String>, software: bool) -> Self {
        Self {
            shared: Arc::new(Shared {
                ctx,
                device,
                counters: Counters::default(),
                one_at_a_time: software.then(|| Mutex::new(())),
            }),
            name: name.into(),
            software,
        }
    }

    /// The kernel context (for kernels of one's own, and to wait for the device:
    /// [`Context::sync`]).
    pub fn context(&self) -> &Context<R> {
        &self.shared.ctx
    }

    /// Uploads and downloads so far ([`Transfers`] says what counts).
    pub fn transfers(&self) -> Transfers {
        let c = &self.shared.counters;
        Transfers {
            uploads: c.uploads.load(Ordering::Relaxed),
            downloads: c.downloads.load(Ordering::Relaxed),
        }
    }

    /// Why the kernels cannot hold `q` on this device, if they cannot.
    fn weight_support(&self, q: &QuantizedTensor, what: &str) -> Support {
        match device_support(&self.shared.ctx, q) {
            Ok(()) => Support::Yes,
            Err(why) => Support::No(format!("{what}: {why}")),
        }
    }
}

fn wrong_call(op: &str, call: &Call<'_>) -> CoreError {
    CoreError::invalid_input(format!("{op}: unexpected call {call:?}"))
}

/// `[rows, last]` of a tensor for an op over rows of `last`.
fn rows(op: &str, x: &Tensor, last: usize) -> Result<usize> {
    if last == 0 || !x.numel().is_multiple_of(last) {
        return Err(CoreError::invalid_input(format!(
            "{op}: input {:?} is not a whole number of rows of {last}",
            x.dims()
        )));
    }
    Ok(x.numel() / last)
}

struct Linear<R: Runtime> {
    shared: Arc<Shared<R>>,
    weight: DeviceQuantized<R>,
    bias: Option<DeviceBuffer<R, f32>>,
    n: usize,
    k: usize,
}

impl<R: Runtime> Prepared for Linear<R> {
    fn run(&self, call: Call<'_>) -> Result<Tensor> {
        let Call::Unary(x) = call else {
            return Err(wrong_call("linear", &call));
        };
        let s = &self.shared;
        let _turn = s.turn();
        let xb = s.input(x, "linear")?;
        let m = rows("linear", x, self.k)?;
        let out_dims = x.shape().with_last(self.n);
        let y = s.ctx.alloc::<f32>(m * self.n)?;
        if m > 0 {
            if u32::try_from(m * self.k.max(self.n)).is_err() {
                return Err(CoreError::not_implemented(format!(
                    "linear of {m} rows on {}: past the kernels' 32-bit indexing",
                    s.device
                )));
            }
            crate::quant_matmul_into::<R, f32>(&s.ctx, xb, m, &self.weight, &y)?;
            if let Some(b) = &self.bias {
                crate::add_bias(&s.ctx, &y, b)?;
            }
        }
        s.output(y, out_dims.dims())
    }
}

enum RowOp<R: Runtime> {
    RmsNorm {
        weight: DeviceBuffer<R, f32>,
        eps: f32,
    },
    LayerNorm {
        weight: DeviceBuffer<R, f32>,
        bias: Option<DeviceBuffer<R, f32>>,
        eps: f32,
    },
    Softmax,
    Activation(Activation),
}

struct Rowwise<R: Runtime> {
    shared: Arc<Shared<R>>,
    op: RowOp<R>,
}

impl<R: Runtime> Prepared for Rowwise<R> {
    fn run(&self, call: Call<'_>) -> Result<Tensor> {
        let Call::Unary(x) = call else {
            return Err(wrong_call("row-wise op", &call));
        };
        let s = &self.shared;
        let _turn = s.turn();
        let xb = s.input(x, "row-wise op")?;
        let y = s.ctx.alloc::<f32>(x.numel())?;
        if x.numel() > 0 {
            let ctx = &s.ctx;
            match &self.op {
                RowOp::RmsNorm { weight, eps } => crate::rms_norm(ctx, xb, weight.len(), weight, *eps, &y)?,
                RowOp::LayerNorm { weight, bias, eps } => {
                    crate::layer_norm(ctx, xb, weight.len(), weight, bias.as_ref(), *eps, &y)?;
                }
                RowOp::Softmax => crate::softmax(ctx, xb, x.shape().last(), &y)?,
                RowOp::Activation(Activation::Silu) => crate::silu(ctx, xb, &y)?,
                RowOp::Activation(Activation::GeluTanh) => crate::gelu(ctx, xb, &y)?,
                RowOp::Activation(Activation::GeluErf) => crate::gelu_erf(ctx, xb, &y)?,
            }
        }
        s.output(y, x.dims())
    }
}

enum BinaryOp {
    Gated(GateActivation),
    Add,
}

struct Binary<R: Runtime> {
    shared: Arc<Shared<R>>,
    op: BinaryOp,
}

impl<R: Runtime> Prepared for Binary<R> {
    fn run(&self, call: Call<'_>) -> Result<Tensor> {
        let Call::Binary(a, b) = call else {
            return Err(wrong_call("binary op", &call));
        };
        let s = &self.shared;
        let _turn = s.turn();
        let (ab, bb) = (s.input(a, "binary op")?, s.input(b, "binary op")?);
        if a.dims() != b.dims() {
            return Err(CoreError::shape_mismatch("binary op: second input", a.dims(), b.dims()));
        }
        let y = s.ctx.alloc::<f32>(a.numel())?;
        if a.numel() > 0 {
            match self.op {
                BinaryOp::Gated(act) => crate::gated(&s.ctx, ab, bb, act, &y)?,
                BinaryOp::Add => crate::add(&s.ctx, ab, bb, &y)?,
            }
        }
        s.output(y, a.dims())
    }
}

struct Rope<R: Runtime> {
    shared: Arc<Shared<R>>,
    n_heads: usize,
    head_dim: usize,
    theta: f32,
    style: RopeStyle,
    tables: Mutex<Arc<RopeTables<R>>>,
}

impl<R: Runtime> Rope<R> {
    /// Tables that reach position `end - 1`, extended (doubling) when these do not.
    fn tables(&self, end: usize) -> Result<Arc<RopeTables<R>>> {
        let mut t = self.tables.lock().unwrap_or_else(PoisonError::into_inner);
        if t.positions() < end {
            let positions = end.max(2 * t.positions());
            *t = Arc::new(RopeTables::new(&self.shared.ctx, positions, self.head_dim, self.theta)?);
            self.shared.counters.uploads.fetch_add(1, Ordering::Relaxed);
        }
        Ok(Arc::clone(&t))
    }
}

impl<R: Runtime> Prepared for Rope<R> {
    fn run(&self, call: Call<'_>) -> Result<Tensor> {
        let Call::Rope { x, pos0 } = call else {
            return Err(wrong_call("rope", &call));
        };
        let s = &self.shared;
        let _turn = s.turn();
        let xb = s.input(x, "rope")?;
        let d = x.dims();
        if !(d.len() == 3 || d.len() == 4) || d[d.len() - 2..] != [self.n_heads, self.head_dim] {
            return Err(CoreError::invalid_input(format!(
                "rope: input must be [tokens, {h}, {hd}] or [batch, tokens, {h}, {hd}], got {d:?}",
                h = self.n_heads,
                hd = self.head_dim
            )));
        }
        let tokens = d[d.len() - 3];
        let y = s.ctx.alloc::<f32>(x.numel())?;
        if x.numel() > 0 {
            let end = pos0
                .checked_add(tokens)
                .ok_or_else(|| CoreError::invalid_input(format!("rope: position {pos0} overflows")))?;
            let tables = self.tables(end)?;
            crate::rope(
                &s.ctx,
                xb,
                self.n_heads,
                self.head_dim,
                tokens,
                pos0,
                &tables,
                self.style,
                &y,
            )?;
        }
        s.output(y, d)
    }
}

struct Embedding<R: Runtime> {
    shared: Arc<Shared<R>>,
    table: DeviceQuantized<R>,
    vocab: usize,
    dim: usize,
}

impl<R: Runtime> Prepared for Embedding<R> {
    fn run(&self, call: Call<'_>) -> Result<Tensor> {
        let Call::Embedding { ids, lead } = call else {
            return Err(wrong_call("embedding", &call));
        };
        aihal_ops::check_token_ids(ids, lead, self.vocab)?;
        let s = &self.shared;
        let _turn = s.turn();
        let mut dims = lead.dims().to_vec();
        dims.push(self.dim);
        let y = s.ctx.alloc::<f32>(ids.len() * self.dim)?;
        if !ids.is_empty() {
            let ids = s.counted_upload(ids)?;
            crate::embedding(&s.ctx, &self.table, &ids, &y)?;
        }
        s.output(y, &dims)
    }
}

/// Keys and values of `batch` sequences on the device, `[batch, max_len, n_kv_heads,
/// head_dim]` each.
struct CubeKv<R: Runtime> {
    layout: KvLayout,
    device: Device,
    k: DeviceBuffer<R, f32>,
    v: DeviceBuffer<R, f32>,
}

impl<R: Runtime> std::fmt::Debug for CubeKv<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CubeKv")
            .field("device", &self.device)
            .field("layout", &self.layout)
            .finish_non_exhaustive()
    }
}

impl<R: Runtime> KvStore for CubeKv<R> {
    fn device(&self) -> Device {
        self.device
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

struct Attention<R: Runtime> {
    shared: Arc<Shared<R>>,
    shape: AttentionShape,
    kind: AttentionKind,
    scale: Option<f32>,
}

impl<R: Runtime> Attention<R> {
    fn mask(&self, valid: Option<&[usize]>, b: usize) -> Result<AttentionMask> {
        Ok(match (self.kind, valid) {
            (AttentionKind::Causal, _) => AttentionMask::Causal,
            (AttentionKind::SlidingWindow(w), _) => AttentionMask::SlidingWindow(w),
            (AttentionKind::Bidirectional, Some(valid)) => AttentionMask::Padded { valid: valid[b] },
            (AttentionKind::Bidirectional, None) => {
                return Err(CoreError::invalid_input(
                    "bidirectional attention without valid lengths",
                ))
            }
        })
    }
}

impl<R: Runtime> Prepared for Attention<R> {
    fn run(&self, call: Call<'_>) -> Result<Tensor> {
        let Call::Attention {
            q,
            k,
            v,
            cache,
            past,
            valid,
        } = call
        else {
            return Err(wrong_call("attention", &call));
        };
        let s = &self.shared;
        let _turn = s.turn();
        let kv = cache
            .as_any_mut()
            .downcast_mut::<CubeKv<R>>()
            .filter(|kv| kv.device == s.device)
            .ok_or_else(|| {
                CoreError::invalid_input(format!(
                    "attention: the KV cache was not made by the {} provider",
                    s.device
                ))
            })?;
        let (qb, kb, vb) = (
            s.input(q, "attention")?,
            s.input(k, "attention")?,
            s.input(v, "attention")?,
        );
        let l = kv.layout;
        let qd = q.dims();
        if qd.len() != 4 || qd[0] != l.batch || qd[2..] != [self.shape.n_heads, self.shape.head_dim] {
            return Err(CoreError::invalid_input(format!(
                "attention: q must be [{}, q_len, {}, {}], got {qd:?}",
                l.batch, self.shape.n_heads, self.shape.head_dim
            )));
        }
        if past.len() != l.batch || valid.is_some_and(|v| v.len() != l.batch) {
            return Err(CoreError::invalid_input(format!(
                "attention: {} past lengths and {:?} valid lengths for a batch of {}",
                past.len(),
                valid.map(<[usize]>::len),
                l.batch
            )));
        }
        let q_len = qd[1];
        let out = s.ctx.alloc::<f32>(q.numel())?;
        if q_len == 0 {
            return s.output(out, qd);
        }
        let ctx = &s.ctx;
        // One launch for the whole batch when every sequence is at the same position (and,
        // padded, of the same length); one per sequence otherwise.
        let same_past = past.iter().all(|&p| p == past[0]);
        if same_past {
            kv_append(ctx, kb, vb, &kv.k, &kv.v, l, 0..l.batch, past[0])?;
        } else {
            for (b, &p) in past.iter().enumerate() {
                kv_append(ctx, kb, vb, &kv.k, &kv.v, l, b..b + 1, p)?;
            }
        }
        let same_valid = valid.is_none_or(|v| v.iter().all(|&n| n == v[0]));
        if same_past && same_valid {
            let mask = self.mask(valid, 0)?;
            attention_cached(
                ctx,
                qb,
                &kv.k,
                &kv.v,
                l,
                self.shape,
                0..l.batch,
                past[0] + q_len,
                mask,
                self.scale,
                &out,
            )?;
        } else {
            for (b, &p) in past.iter().enumerate() {
                let mask = self.mask(valid, b)?;
                attention_cached(
                    ctx,
                    qb,
                    &kv.k,
                    &kv.v,
                    l,
                    self.shape,
                    b..b + 1,
                    p + q_len,
                    mask,
                    self.scale,
                    &out,
                )?;
            }
        }
        s.output(out, qd)
    }
}

impl<R: Runtime> Provider for CubeProvider<R> {
    fn device(&self) -> Device {
        self.shared.device
    }

    fn name(&self) -> String {
        self.name.clone()
    }

    fn is_software(&self) -> bool {
        self.software
    }

    fn supports(&self, spec: &OpSpec<'_>) -> Support {
        let ctx = &self.shared.ctx;
        if !ctx.supports::<f32>() {
            return Support::No(format!("{} holds no f32 buffers", ctx.backend()));
        }
        match *spec {
            OpSpec::Linear { weight, .. } => self.weight_support(weight, "linear weight"),
            OpSpec::Embedding { table } => self.weight_support(table, "embedding table"),
            OpSpec::DenseLinear { weight, .. } | OpSpec::DenseEmbedding { table: weight, .. } => {
                let bytes = 4 * weight.len() as u64;
                if u32::try_from(weight.len()).is_err() {
                    Support::No(format!(
                        "a dense weight of {} values passes 32-bit indexing",
                        weight.len()
                    ))
                } else if bytes > ctx.limits().max_buffer_bytes {
                    Support::No(format!(
                        "a dense weight of {bytes} bytes; one buffer of {} holds at most {}",
                        ctx.backend(),
                        ctx.limits().max_buffer_bytes
                    ))
                } else {
                    Support::Yes
                }
            }
            OpSpec::RmsNorm { weight, .. } | OpSpec::LayerNorm { weight, .. } => {
                if u32::try_from(weight.len()).is_ok() {
                    Support::Yes
                } else {
                    Support::No(format!("rows of {} values pass 32-bit indexing", weight.len()))
                }
            }
            OpSpec::Softmax | OpSpec::Activation(_) | OpSpec::Gated(_) | OpSpec::Add | OpSpec::Rope { .. } => {
                Support::Yes
            }
            OpSpec::Attention { shape, .. } => {
                if attention_units(ctx, shape.head_dim).is_some() {
                    Support::Yes
                } else {
                    Support::No(format!(
                        "head_dim {} passes the attention kernel's cube of at most {} units on {}",
                        shape.head_dim,
                        ctx.limits().units_1d(256),
                        ctx.backend()
                    ))
                }
            }
            _ => Support::No(format!("{} has no kernel here", spec.kind())),
        }
    }

    fn prepare(&self, spec: &OpSpec<'_>) -> Result<Box<dyn Prepared>> {
        if let Support::No(why) = self.supports(spec) {
            return Err(CoreError::not_implemented(format!(
                "{} on {}: {why}",
                spec.kind(),
                self.shared.device
            )));
        }
        let shared = Arc::clone(&self.shared);
        let ctx = &self.shared.ctx;
        Ok(match *spec {
            OpSpec::Linear { weight, bias, .. } => {
                let (n, k) = aihal_reference::check_matmul(0, 0, weight)?;
                if let Some(b) = bias {
                    if b.len() != n {
                        return Err(CoreError::shape_mismatch("linear bias [out_features]", [n], [b.len()]));
                    }
                }
                Box::new(Linear {
                    weight: DeviceQuantized::upload(ctx, weight)?,
                    bias: bias.map(|b| ctx.upload(b)).transpose()?,
                    n,
                    k,
                    shared,
                })
            }
            OpSpec::DenseLinear {
                weight,
                out_features,
                in_features,
                bias,
            } => {
                if let Some(b) = bias {
                    if b.len() != out_features {
                        return Err(CoreError::shape_mismatch(
                            "linear bias [out_features]",
                            [out_features],
                            [b.len()],
                        ));
                    }
                }
                Box::new(Linear {
                    shared,
                    weight: DeviceQuantized::dense(ctx, weight, [out_features, in_features])?,
                    bias: bias.map(|b| ctx.upload(b)).transpose()?,
                    n: out_features,
                    k: in_features,
                })
            }
            OpSpec::DenseEmbedding { table, dim } => {
                if dim == 0 || !table.len().is_multiple_of(dim) {
                    return Err(CoreError::invalid_input(format!(
                        "embedding: a dense table of {} values is not rows of {dim}",
                        table.len()
                    )));
                }
                let vocab = table.len() / dim;
                Box::new(Embedding {
                    shared,
                    table: DeviceQuantized::dense(ctx, table, [vocab, dim])?,
                    vocab,
                    dim,
                })
            }
            OpSpec::RmsNorm { weight, eps } => Box::new(Rowwise {
                op: RowOp::RmsNorm {
                    weight: ctx.upload(weight)?,
                    eps,
                },
                shared,
            }),
            OpSpec::LayerNorm { weight, bias, eps } => Box::new(Rowwise {
                op: RowOp::LayerNorm {
                    weight: ctx.upload(weight)?,
                    bias: bias.map(|b| ctx.upload(b)).transpose()?,
                    eps,
                },
                shared,
            }),
            OpSpec::Softmax => Box::new(Rowwise {
                op: RowOp::Softmax,
                shared,
            }),
            OpSpec::Activation(a) => Box::new(Rowwise {
                op: RowOp::Activation(a),
                shared,
            }),
            OpSpec::Gated(a) => Box::new(Binary {
                op: BinaryOp::Gated(a),
                shared,
            }),
            OpSpec::Add => Box::new(Binary {
                op: BinaryOp::Add,
                shared,
            }),
            OpSpec::Rope {
                n_heads,
                head_dim,
                theta,
                style,
            } => Box::new(Rope {
                tables: Mutex::new(Arc::new(RopeTables::new(ctx, ROPE_TABLE_POSITIONS, head_dim, theta)?)),
                n_heads,
                head_dim,
                theta,
                style,
                shared,
            }),
            OpSpec::Embedding { table } => {
                let (vocab, dim) = aihal_reference::check_matmul(0, 0, table)?;
                Box::new(Embedding {
                    table: DeviceQuantized::upload(ctx, table)?,
                    vocab,
                    dim,
                    shared,
                })
            }
            OpSpec::Attention { shape, kind, scale } => Box::new(Attention {
                shared,
                shape,
                kind,
                scale,
            }),
            _ => {
                return Err(CoreError::not_implemented(format!(
                    "{} on {}",
                    spec.kind(),
                    self.shared.device
                )))
            }
        })
    }

    fn upload(&self, data: &[f32], shape: Shape) -> Result<Tensor> {
        if data.len() != shape.numel() {
            return Err(CoreError::shape_mismatch(
                "upload: values for their shape",
                [shape.numel()],
                [data.len()],
            ));
        }
        let _turn = self.shared.turn();
        let b = self.shared.counted_upload(data)?;
        self.shared.output(b, shape.dims())
    }

    fn new_kv_store(&self, layout: KvLayout) -> Result<Box<dyn KvStore>> {
        let n = [layout.batch, layout.max_len, layout.n_kv_heads, layout.head_dim]
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| CoreError::invalid_input(format!("KV cache {layout:?} overflows usize")))?;
        let ctx = &self.shared.ctx;
        let _turn = self.shared.turn();
        let (k, v) = (ctx.alloc::<f32>(n)?, ctx.alloc::<f32>(n)?);
        fill(ctx, &k, 0.0)?;
        fill(ctx, &v, 0.0)?;
        Ok(Box::new(CubeKv {
            layout,
            device: self.shared.device,
            k,
            v,
        }))
    }
}
