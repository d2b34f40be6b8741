//! The op set models are written against. Each op is placed once, when it is built, on its
//! executor's providers ([`Executor`]), and each call runs where it was placed.

use std::sync::Arc;

use aihal_core::{CoreError, Device, Dispatched, GpuDispatchable, Result};
use aihal_quantize::QuantizedTensor;
use aihal_reference::{AttentionShape, GateActivation, RopeStyle};

use crate::executor::{Args, Executor, Placed};
use crate::provider::{Activation, AttentionKind, KvLayout, KvStore, LinearPrecision, OpSpec};
use crate::table::{MClass, OpKey};
use crate::tensor::{Shape, Tensor};

fn same_shape(op: &str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.dims() == b.dims() {
        Ok(())
    } else {
        Err(CoreError::shape_mismatch(
            format!("{op}: second input (the first's shape)"),
            a.dims(),
            b.dims(),
        ))
    }
}

fn check_bias(bias: Option<&[f32]>, out_features: usize) -> Result<()> {
    match bias {
        Some(b) if b.len() != out_features => Err(CoreError::shape_mismatch(
            "linear bias [out_features]",
            [out_features],
            [b.len()],
        )),
        _ => Ok(()),
    }
}

/// Checks an embedding call: `ids` fill `lead`, and each id is below `vocab`. The op checks
/// before any provider runs; a provider whose kernel reads memory by id checks again with
/// this, since its prepared op can be called directly.
///
/// Errors: `ShapeMismatch` when `lead` does not hold `ids.len()` values; `InvalidInput`
/// naming the first id not below `vocab` and its index.
pub fn check_token_ids(ids: &[u32], lead: Shape, vocab: usize) -> Result<()> {
    if lead.numel() != ids.len() {
        return Err(CoreError::shape_mismatch(
            "embedding ids for their shape",
            [lead.numel()],
            [ids.len()],
        ));
    }
    if let Some((i, id)) = ids.iter().enumerate().find(|(_, &id)| id as usize >= vocab) {
        return Err(CoreError::invalid_input(format!(
            "embedding: token id {id} at index {i} is not below the vocabulary size {vocab}"
        )));
    }
    Ok(())
}

fn last_dim(op: &str, x: &Tensor, want: usize) -> Result<()> {
    if x.dims().last() == Some(&want) {
        Ok(())
    } else {
        Err(CoreError::shape_mismatch(
            format!("{op}: input's last dimension"),
            [want],
            [x.dims().last().copied().unwrap_or(0)],
        ))
    }
}

/// Implements the common methods of a placed op.
macro_rules! placed_methods {
    () => {
        /// The device this op runs on first (for one-row calls when a dispatch table places
        /// row classes apart).
        pub fn device(&self) -> Device {
            self.placed.device()
        }

        /// The device that runs a call of `rows` activation rows first.
        pub fn device_for(&self, rows: usize) -> Device {
            self.placed.device_for(rows)
        }

        /// The executor it was placed on.
        pub fn executor(&self) -> &Arc<Executor> {
            self.placed.executor()
        }
    };
}

/// An op a plan can place ([`crate::plan::follow_plan`]): its dispatch-table key per row
/// class, the devices it was prepared on, and a way to make one of them run a row class first.
///
/// Every op but [`Attention`] is one (attention runs where its KV cache lives).
pub trait Planned {
    /// The op's dispatch-table key for calls of row class `m`.
    fn op_key(&self, m: MClass) -> OpKey;
    /// The devices the op was prepared on, the first-runner of each row class among them.
    fn prepared_on(&self) -> Vec<Device>;
    /// The device that runs calls of row class `m` first now.
    fn runs_first(&self, m: MClass) -> Device;
    /// Makes `device` (one of [`Planned::prepared_on`]) run calls of row class `m` first; the
    /// others stay fallbacks.
    ///
    /// Errors: `NotImplemented` when the op was not prepared there; `InvalidConfig` when the
    /// executor's device was requested explicitly or strict mode is on and `device` is
    /// another.
    fn pin(&mut self, m: MClass, device: Device) -> Result<()>;
}

macro_rules! planned {
    ($($name:ident),*) => {$(
        impl Planned for $name {
            fn op_key(&self, m: MClass) -> OpKey {
                self.placed.key(m)
            }
            fn prepared_on(&self) -> Vec<Device> {
                self.placed.devices().collect()
            }
            fn runs_first(&self, m: MClass) -> Device {
                self.placed.device_for(m.representative())
            }
            fn pin(&mut self, m: MClass, device: Device) -> Result<()> {
                self.placed.pin(m, device)
            }
        }
    )*};
}

planned!(Linear, RmsNorm, LayerNorm, Softmax, Act, Gated, Add, Rope, Embedding);

/// A linear layer `y = x · Wᵀ + b` over a quantized weight `[out_features, in_features]`.
///
/// The input is `[..., in_features]`, the output `[..., out_features]`, f32, on the provider
/// that ran. Activations follow one [`LinearPrecision`] rule on every provider. Also a
/// [`candle_nn::Module`] (input in any float dtype, output in the input's dtype) and a
/// [`GpuDispatchable`] over the devices it was placed on.
#[derive(Debug)]
pub struct Linear {
    placed: Placed,
    in_features: usize,
    out_features: usize,
}

impl Linear {
    /// A layer over `weight` and an optional bias of `out_features` values, with int8
    /// activations where a provider has that path ([`LinearPrecision::Int8Activations`]).
    ///
    /// Errors: `InvalidInput` when `weight` is not rank 2, `ShapeMismatch` for a bias of the
    /// wrong length, `NotImplemented` when no provider runs the weight's format, and a
    /// fallback in strict mode.
    pub fn new(exec: &Arc<Executor>, weight: &QuantizedTensor, bias: Option<&[f32]>) -> Result<Self> {
        Self::with_precision(exec, weight, bias, LinearPrecision::default())
    }

    /// As [`new`](Self::new), with an explicit activation precision.
    pub fn with_precision(
        exec: &Arc<Executor>,
        weight: &QuantizedTensor,
        bias: Option<&[f32]>,
        precision: LinearPrecision,
    ) -> Result<Self> {
        let (out_features, in_features) = aihal_reference::check_matmul(0, 0, weight)?;
        check_bias(bias, out_features)?;
        let placed = exec.place(&OpSpec::Linear {
            weight,
            bias,
            precision,
        })?;
        Ok(Self {
            placed,
            in_features,
            out_features,
        })
    }

    /// A layer over a dense f32 weight `[out_features, in_features]` (row-major) and an
    /// optional bias: results within f32 rounding of `x · Wᵀ + b` on every provider.
    ///
    /// Errors: `ShapeMismatch` when `weight` does not hold `out_features * in_features`
    /// values or the bias is not `out_features` long; `InvalidInput` for a zero dimension;
    /// `NotImplemented` when no provider runs dense layers.
    pub fn dense(
        exec: &Arc<Executor>,
        weight: &[f32],
        [out_features, in_features]: [usize; 2],
        bias: Option<&[f32]>,
    ) -> Result<Self> {
        if out_features == 0 || in_features == 0 {
            return Err(CoreError::invalid_input(format!(
                "linear: a weight [{out_features}, {in_features}] has no values"
            )));
        }
        let want = out_features
            .checked_mul(in_features)
            .ok_or_else(|| CoreError::invalid_input("linear: the weight's size overflows usize"))?;
        if weight.len() != want {
            return Err(CoreError::shape_mismatch(
                "linear weight [out, in]",
                [out_features, in_features],
                [weight.len()],
            ));
        }
        check_bias(bias, out_features)?;
        let placed = exec.place(&OpSpec::DenseLinear {
            weight,
            out_features,
            in_features,
            bias,
        })?;
        Ok(Self {
            placed,
            in_features,
            out_features,
        })
    }

    /// Input features (the weight's K).
    pub fn in_features(&self) -> usize {
        self.in_features
    }

    /// Output features (the weight's N).
    pub fn out_features(&self) -> usize {
        self.out_features
    }

    placed_methods!();

    /// `x · Wᵀ + b`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_traced(x).map(|d| d.output)
    }

    /// As [`forward`](Self::forward), and says where it ran and why it fell back.
    pub fn forward_traced(&self, x: &Tensor) -> Result<Dispatched<Tensor>> {
        last_dim("linear", x, self.in_features)?;
        self.placed.run([x], Args::Unary)
    }
}

impl candle_nn::Module for Linear {
    fn forward(&self, xs: &candle_core::Tensor) -> candle_core::Result<candle_core::Tensor> {
        let run = || -> Result<candle_core::Tensor> {
            let y = Linear::forward(self, &Tensor::from_candle(xs)?)?.to_candle()?;
            Ok(y.to_dtype(xs.dtype())?.to_device(xs.device())?)
        };
        run().map_err(candle_core::Error::wrap)
    }
}

/// Implements `GpuDispatchable` for an op over the routes it was placed on: each device's
/// route runs there and nowhere else (`NotImplemented` where the op was not placed, which
/// `dispatch_traced` turns into its own CPU route, itself `NotImplemented` when the op was not
/// placed on the CPU either).
macro_rules! dispatchable {
    ($ty:ty, $name:literal, $input:ty, |$op:ident, $x:ident, $dev:ident| $run:expr) => {
        impl GpuDispatchable for $ty {
            type Input = $input;
            type Output = Tensor;

            fn name(&self) -> &'static str {
                $name
            }

            fn dispatch_gpu(&self, input: &$input, device: &Device) -> Result<Tensor> {
                let ($op, $x, $dev) = (self, input, *device);
                $run.map(|d| d.output)
            }

            fn dispatch_cpu(&self, input: &$input) -> Result<Tensor> {
                let ($op, $x, $dev) = (self, input, Device::Cpu);
                $run.map(|d| d.output)
            }

            fn dispatch_npu(&self, input: &$input, device: &Device) -> Result<Tensor> {
                let ($op, $x, $dev) = (self, input, *device);
                $run.map(|d| d.output)
            }

            fn gpu_available(&self) -> bool {
                self.placed.devices().any(|d| d.is_gpu())
            }

            fn npu_available(&self) -> bool {
                self.placed.devices().any(|d| matches!(d, Device::Rknn { .. }))
            }
        }
    };
}

dispatchable!(Linear, "linear", Tensor, |op, x, dev| {
    last_dim("linear", x, op.in_features)?;
    op.placed.run_at(dev, [x], Args::Unary)
});

/// Declares a one-input op without weights of its own beyond slices.
macro_rules! unary_op {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Debug)]
        pub struct $name {
            placed: Placed,
            dim: usize,
        }

        impl $name {
            placed_methods!();

            /// Runs the op on `x`.
            pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
                self.forward_traced(x).map(|d| d.output)
            }

            /// As `forward`, and says where it ran.
            pub fn forward_traced(&self, x: &Tensor) -> Result<Dispatched<Tensor>> {
                if self.dim != 0 {
                    last_dim(stringify!($name), x, self.dim)?;
                }
                self.placed.run([x], Args::Unary)
            }
        }
    };
}

unary_op!(
    /// RMSNorm over the last dimension: `x / sqrt(mean(x²) + eps) * weight`.
    RmsNorm
);
unary_op!(
    /// LayerNorm over the last dimension: `(x - mean) / sqrt(var + eps) * weight + bias`.
    LayerNorm
);
unary_op!(
    /// Softmax over the last dimension.
    Softmax
);
unary_op!(
    /// An elementwise activation ([`Activation`]).
    Act
);

dispatchable!(RmsNorm, "rms_norm", Tensor, |op, x, dev| {
    last_dim("rms_norm", x, op.dim)?;
    op.placed.run_at(dev, [x], Args::Unary)
});
dispatchable!(LayerNorm, "layer_norm", Tensor, |op, x, dev| {
    last_dim("layer_norm", x, op.dim)?;
    op.placed.run_at(dev, [x], Args::Unary)
});
dispatchable!(Softmax, "softmax", Tensor, |op, x, dev| op.placed.run_at(
    dev,
    [x],
    Args::Unary
));
dispatchable!(Act, "activation", Tensor, |op, x, dev| op.placed.run_at(
    dev,
    [x],
    Args::Unary
));

fn check_eps(op: &str, eps: f32) -> Result<()> {
    if eps.is_finite() && eps >= 0.0 {
        Ok(())
    } else {
        Err(CoreError::invalid_input(format!(
            "{op}: eps must be finite and >= 0, got {eps}"
        )))
    }
}

impl RmsNorm {
    /// RMSNorm with `weight` (one gain per value of a row).
    ///
    /// Errors: `InvalidInput` for an empty weight or a bad `eps`.
    pub fn new(exec: &Arc<Executor>, weight: &[f32], eps: f32) -> Result<Self> {
        check_eps("rms_norm", eps)?;
        if weight.is_empty() {
            return Err(CoreError::invalid_input("rms_norm: empty weight"));
        }
        Ok(Self {
            placed: exec.place(&OpSpec::RmsNorm { weight, eps })?,
            dim: weight.len(),
        })
    }
}

impl LayerNorm {
    /// LayerNorm with `weight` and an optional `bias` of the same length.
    ///
    /// Errors: `InvalidInput` for an empty weight or a bad `eps`, `ShapeMismatch` for a bias
    /// of another length.
    pub fn new(exec: &Arc<Executor>, weight: &[f32], bias: Option<&[f32]>, eps: f32) -> Result<Self> {
        check_eps("layer_norm", eps)?;
        if weight.is_empty() {
            return Err(CoreError::invalid_input("layer_norm: empty weight"));
        }
        if let Some(b) = bias {
            if b.len() != weight.len() {
                return Err(CoreError::shape_mismatch("layer_norm bias", [weight.len()], [b.len()]));
            }
        }
        Ok(Self {
            placed: exec.place(&OpSpec::LayerNorm { weight, bias, eps })?,
            dim: weight.len(),
        })
    }
}

impl Softmax {
    /// Softmax over the last dimension.
    pub fn new(exec: &Arc<Executor>) -> Result<Self> {
        Ok(Self {
            placed: exec.place(&OpSpec::Softmax)?,
            dim: 0,
        })
    }
}

impl Act {
    /// The activation `act`, elementwise.
    pub fn new(exec: &Arc<Executor>, act: Activation) -> Result<Self> {
        Ok(Self {
            placed: exec.place(&OpSpec::Activation(act))?,
            dim: 0,
        })
    }
}

/// Declares a two-input elementwise op.
macro_rules! binary_op {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Debug)]
        pub struct $name {
            placed: Placed,
        }

        impl $name {
            placed_methods!();

            /// Runs the op on two inputs of one shape.
            pub fn forward(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
                self.forward_traced(a, b).map(|d| d.output)
            }

            /// As `forward`, and says where it ran.
            pub fn forward_traced(&self, a: &Tensor, b: &Tensor) -> Result<Dispatched<Tensor>> {
                same_shape(stringify!($name), a, b)?;
                self.placed.run([a, b], Args::Binary)
            }
        }
    };
}

binary_op!(
    /// A gated MLP's middle, `act(gate) * up` (SwiGLU, GeGLU); inputs `(gate, up)`.
    Gated
);
binary_op!(
    /// `a + b` (residual connections).
    Add
);

dispatchable!(Gated, "gated", (Tensor, Tensor), |op, x, dev| {
    same_shape("gated", &x.0, &x.1)?;
    op.placed.run_at(dev, [&x.0, &x.1], Args::Binary)
});
dispatchable!(Add, "add", (Tensor, Tensor), |op, x, dev| {
    same_shape("add", &x.0, &x.1)?;
    op.placed.run_at(dev, [&x.0, &x.1], Args::Binary)
});

impl Gated {
    /// `act(gate) * up`.
    pub fn new(exec: &Arc<Executor>, act: GateActivation) -> Result<Self> {
        Ok(Self {
            placed: exec.place(&OpSpec::Gated(act))?,
        })
    }
}

impl Add {
    /// `a + b`.
    pub fn new(exec: &Arc<Executor>) -> Result<Self> {
        Ok(Self {
            placed: exec.place(&OpSpec::Add)?,
        })
    }
}

/// Rotary position embedding of `[tokens, n_heads, head_dim]` or
/// `[batch, tokens, n_heads, head_dim]`, the token at row `s` at position `pos0 + s`
/// (as `aihal_reference::rope` defines it).
#[derive(Debug)]
pub struct Rope {
    placed: Placed,
    n_heads: usize,
    head_dim: usize,
}

impl Rope {
    /// Rotary embedding for `n_heads` heads of `head_dim` (even) values.
    ///
    /// Errors: `InvalidInput` for an odd or zero `head_dim`, zero heads, or a `theta` that is
    /// not finite and positive.
    pub fn new(exec: &Arc<Executor>, n_heads: usize, head_dim: usize, theta: f32, style: RopeStyle) -> Result<Self> {
        if n_heads == 0 || head_dim == 0 || !head_dim.is_multiple_of(2) || !(theta.is_finite() && theta > 0.0) {
            return Err(CoreError::invalid_input(format!(
                "rope: needs heads > 0, an even head_dim > 0 and a finite theta > 0; got {n_heads}, {head_dim}, {theta}"
            )));
        }
        let spec = OpSpec::Rope {
            n_heads,
            head_dim,
            theta,
            style,
        };
        Ok(Self {
            placed: exec.place(&spec)?,
            n_heads,
            head_dim,
        })
    }

    placed_methods!();

    /// Rotates `x` for positions `pos0 ..`.
    pub fn forward(&self, x: &Tensor, pos0: usize) -> Result<Tensor> {
        self.forward_traced(x, pos0).map(|d| d.output)
    }

    /// As `forward`, and says where it ran.
    pub fn forward_traced(&self, x: &Tensor, pos0: usize) -> Result<Dispatched<Tensor>> {
        self.check(x)?;
        self.placed.run([x], Args::Rope { pos0 })
    }

    fn check(&self, x: &Tensor) -> Result<()> {
        let d = x.dims();
        if !(d.len() == 3 || d.len() == 4) || d[d.len() - 2..] != [self.n_heads, self.head_dim] {
            return Err(CoreError::invalid_input(format!(
                "rope: input must be [tokens, {h}, {hd}] or [batch, tokens, {h}, {hd}], got {d:?}",
                h = self.n_heads,
                hd = self.head_dim
            )));
        }
        Ok(())
    }
}

dispatchable!(Rope, "rope", (Tensor, usize), |op, x, dev| {
    op.check(&x.0)?;
    op.placed.run_at(dev, [&x.0], Args::Rope { pos0: x.1 })
});

/// Embedding lookup in a quantized table `[vocab, dim]`: token ids to `[..., dim]` f32.
#[derive(Debug)]
pub struct Embedding {
    placed: Placed,
    vocab: usize,
    dim: usize,
}

impl Embedding {
    /// A lookup in `table` (any format; it stays quantized on the provider), which the
    /// providers copy: [`shared`](Self::shared) takes a table without a copy.
    ///
    /// Errors: `InvalidInput` when `table` is not rank 2; `NotImplemented` when no provider
    /// reads its format.
    pub fn new(exec: &Arc<Executor>, table: &QuantizedTensor) -> Result<Self> {
        aihal_reference::check_matmul(0, 0, table)?;
        Self::shared(exec, &Arc::new(table.clone()))
    }

    /// A lookup in `table`, shared rather than copied: a provider that keeps the table as it
    /// is (the CPU provider) keeps a clone of this `Arc`, so a caller that drops its own
    /// handle holds the table once (a model loader, for one, holds the file's table once instead of
    /// twice). Providers that keep another form (device memory) make it from the table as
    /// [`new`](Self::new) does.
    ///
    /// Errors: those of [`new`](Self::new).
    pub fn shared(exec: &Arc<Executor>, table: &Arc<QuantizedTensor>) -> Result<Self> {
        let (vocab, dim) = aihal_reference::check_matmul(0, 0, table)?;
        Ok(Self {
            placed: exec.place(&OpSpec::Embedding { table })?,
            vocab,
            dim,
        })
    }

    /// A lookup in a dense f32 table `[vocab, dim]` (row-major), kept as stored.
    ///
    /// Errors: `InvalidInput` for a zero `dim` or a table that is not whole rows of `dim`.
    pub fn dense(exec: &Arc<Executor>, table: &[f32], dim: usize) -> Result<Self> {
        if dim == 0 || table.is_empty() || !table.len().is_multiple_of(dim) {
            return Err(CoreError::invalid_input(format!(
                "embedding: a table of {} values is not whole rows of {dim}",
                table.len()
            )));
        }
        Ok(Self {
            placed: exec.place(&OpSpec::DenseEmbedding { table, dim })?,
            vocab: table.len() / dim,
            dim,
        })
    }

    /// A lookup in the weight of `linear` (`[vocab, dim]`), for a model whose embedding table
    /// is its output projection's weight (tied embeddings): rows are read from the layer's
    /// prepared weight on each provider that gives them ([`Prepared::weight_rows`]), so the
    /// table is held once. Each row class runs first where the layer runs it; the rows are
    /// those [`shared`](Self::shared) would give over the weight.
    ///
    /// Errors: `NotImplemented` when a provider that runs the layer first does not give its
    /// weight's rows (the CPU provider gives them, kept as stored or packed; the CubeCL and
    /// NPU providers do not): build the lookup with [`shared`](Self::shared) then.
    ///
    /// [`Prepared::weight_rows`]: crate::Prepared::weight_rows
    pub fn tied(linear: &Linear) -> Result<Self> {
        Ok(Self {
            placed: linear.placed.tied_rows()?,
            vocab: linear.out_features,
            dim: linear.in_features,
        })
    }

    /// Rows in the table.
    pub fn vocab(&self) -> usize {
        self.vocab
    }

    /// Values per row.
    pub fn dim(&self) -> usize {
        self.dim
    }

    placed_methods!();

    /// The rows of `ids`, shaped `lead + [dim]` (`lead` is `[ids.len()]` when `None`).
    ///
    /// Errors: `InvalidInput` for an id not below the vocabulary size (naming it), or a
    /// `lead` whose element count is not `ids.len()`.
    pub fn forward(&self, ids: &[u32], lead: Option<&[usize]>) -> Result<Tensor> {
        let lead = Shape::new(lead.unwrap_or(&[ids.len()]))?;
        check_token_ids(ids, lead, self.vocab)?;
        self.placed.run([], Args::Embedding { ids, lead }).map(|d| d.output)
    }
}

/// A key/value cache: preallocated for `batch` sequences of up to `max_len` positions, on one
/// provider's device. Each [`Attention`] call appends its new keys and values, then attends
/// over everything cached for that sequence.
#[derive(Debug)]
pub struct KvCache {
    store: Box<dyn KvStore>,
    layout: KvLayout,
    lens: Vec<usize>,
}

impl KvCache {
    /// Positions cached per sequence.
    pub fn lens(&self) -> &[usize] {
        &self.lens
    }

    /// The cache's shape.
    pub fn layout(&self) -> KvLayout {
        self.layout
    }

    /// The device it lives on.
    pub fn device(&self) -> Device {
        self.store.device()
    }

    /// Forgets every cached position (the memory stays allocated).
    pub fn clear(&mut self) {
        self.lens.fill(0);
    }

    /// Keeps at most `len` positions of each sequence (rolling back a generation).
    pub fn truncate(&mut self, len: usize) {
        for l in &mut self.lens {
            *l = (*l).min(len);
        }
    }

    /// Whether [`drop_front`](Self::drop_front) works on this cache's device (the CPU
    /// provider's caches; not yet the GPU providers').
    pub fn can_drop_front(&self) -> bool {
        self.store.can_drop_front()
    }

    /// Forgets the oldest `n` positions of every sequence (all of them where fewer are
    /// cached), moving the others to the front, so that a cache of a few more positions than
    /// a sliding window can serve a sequence of any length: a sliding-window mask depends
    /// only on how far apart a query and a key are, and the keys keep the rotary encoding of
    /// the positions they were computed at. (Causal attention over such a cache sees only the
    /// positions kept.)
    ///
    /// Errors: `NotImplemented` where [`can_drop_front`](Self::can_drop_front) is false;
    /// nothing is changed then.
    pub fn drop_front(&mut self, n: usize) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        if !self.store.can_drop_front() {
            return Err(CoreError::not_implemented(format!(
                "dropping cached positions on {}",
                self.store.device()
            )));
        }
        for (b, len) in self.lens.iter_mut().enumerate() {
            let drop = n.min(*len);
            self.store.drop_front(b, *len, drop)?;
            *len -= drop;
        }
        Ok(())
    }
}

/// Grouped-query attention over a [`KvCache`], causal, sliding-window or bidirectional.
#[derive(Debug)]
pub struct Attention {
    placed: Placed,
    shape: AttentionShape,
    kind: AttentionKind,
}

impl Attention {
    /// Attention with `shape`'s heads, masked by `kind`, scores scaled by `scale`
    /// (`1 / sqrt(head_dim)` when `None`).
    ///
    /// Errors: `InvalidInput` for zero heads or head size, `n_kv_heads` not dividing
    /// `n_heads`, a zero sliding window, or a scale that is not finite.
    pub fn new(exec: &Arc<Executor>, shape: AttentionShape, kind: AttentionKind, scale: Option<f32>) -> Result<Self> {
        if shape.n_heads == 0
            || shape.n_kv_heads == 0
            || shape.head_dim == 0
            || !shape.n_heads.is_multiple_of(shape.n_kv_heads)
        {
            return Err(CoreError::invalid_input(format!(
                "attention: heads and head_dim must be positive and n_kv_heads must divide n_heads, got {shape:?}"
            )));
        }
        if kind == AttentionKind::SlidingWindow(0) || scale.is_some_and(|s| !s.is_finite()) {
            return Err(CoreError::invalid_input(format!(
                "attention: a sliding window must be positive and the scale finite, got {kind:?}, {scale:?}"
            )));
        }
        Ok(Self {
            placed: exec.place(&OpSpec::Attention { shape, kind, scale })?,
            shape,
            kind,
        })
    }

    placed_methods!();

    /// A zeroed cache for `batch` sequences of up to `max_len` positions, on this op's
    /// device.
    ///
    /// Errors: `InvalidInput` for a zero batch or length, `OutOfMemory`-class errors from
    /// the provider.
    pub fn new_cache(&self, batch: usize, max_len: usize) -> Result<KvCache> {
        if batch == 0 || max_len == 0 {
            return Err(CoreError::invalid_input(format!(
                "a KV cache needs batch > 0 and max_len > 0, got {batch} and {max_len}"
            )));
        }
        let layout = KvLayout {
            batch,
            max_len,
            n_kv_heads: self.shape.n_kv_heads,
            head_dim: self.shape.head_dim,
        };
        let device = self.device();
        let provider = self
            .executor()
            .providers()
            .iter()
            .find(|p| p.device() == device)
            .ok_or_else(|| CoreError::device_not_available(device, "its provider left the executor"))?;
        Ok(KvCache {
            store: provider.new_kv_store(layout)?,
            layout,
            lens: vec![0; batch],
        })
    }

    /// Appends `k` and `v` (`[batch, q_len, n_kv_heads, head_dim]`) to `cache` and attends
    /// with `q` (`[batch, q_len, n_heads, head_dim]`); returns `[batch, q_len, n_heads,
    /// head_dim]`. `valid` (bidirectional attention only) gives each sequence's real tokens
    /// among the cached ones; the rest are padding.
    ///
    /// Errors: `ShapeMismatch`/`InvalidInput` for inputs that do not fit the heads, the batch
    /// or each other; `InvalidInput` when the cache would pass its `max_len` (nothing is
    /// appended then), when it lives on another device, or for a `valid` that is missing,
    /// unexpected, or outside `1..=cached`.
    pub fn forward(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        cache: &mut KvCache,
        valid: Option<&[usize]>,
    ) -> Result<Tensor> {
        self.forward_traced(q, k, v, cache, valid).map(|d| d.output)
    }

    /// As `forward`, and says where it ran.
    pub fn forward_traced(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        cache: &mut KvCache,
        valid: Option<&[usize]>,
    ) -> Result<Dispatched<Tensor>> {
        let s = self.shape;
        let l = cache.layout;
        let (qd, kd) = (q.dims(), k.dims());
        if qd.len() != 4 || qd[2..] != [s.n_heads, s.head_dim] {
            return Err(CoreError::invalid_input(format!(
                "attention q must be [batch, q_len, {}, {}], got {qd:?}",
                s.n_heads, s.head_dim
            )));
        }
        let want_kv = [qd[0], qd[1], s.n_kv_heads, s.head_dim];
        if kd != want_kv {
            return Err(CoreError::shape_mismatch(
                "attention k [batch, q_len, n_kv_heads, head_dim]",
                want_kv,
                kd,
            ));
        }
        same_shape("attention v", k, v)?;
        if l.n_kv_heads != s.n_kv_heads || l.head_dim != s.head_dim || qd[0] != l.batch {
            return Err(CoreError::invalid_input(format!(
                "attention: the cache holds batch {} of {} heads x {}, the call batch {} of {} x {}",
                l.batch, l.n_kv_heads, l.head_dim, qd[0], s.n_kv_heads, s.head_dim
            )));
        }
        if cache.device() != self.device() {
            return Err(CoreError::invalid_input(format!(
                "attention runs on {} but the cache lives on {}",
                self.device(),
                cache.device()
            )));
        }
        let q_len = qd[1];
        if let Some((b, &len)) = cache.lens.iter().enumerate().find(|(_, &len)| len + q_len > l.max_len) {
            return Err(CoreError::invalid_input(format!(
                "attention: sequence {b} has {len} cached positions; {q_len} more would pass the cache's max_len {}",
                l.max_len
            )));
        }
        match (self.kind, valid) {
            (AttentionKind::Bidirectional, Some(valid)) => {
                if valid.len() != l.batch {
                    return Err(CoreError::shape_mismatch(
                        "attention valid lengths [batch]",
                        [l.batch],
                        [valid.len()],
                    ));
                }
                if let Some((b, &n)) = valid
                    .iter()
                    .enumerate()
                    .find(|(b, &n)| n == 0 || n > cache.lens[*b] + q_len)
                {
                    return Err(CoreError::invalid_input(format!(
                        "attention: sequence {b} has {n} valid tokens of {} cached",
                        cache.lens[b] + q_len
                    )));
                }
            }
            (AttentionKind::Bidirectional, None) => {
                return Err(CoreError::invalid_input(
                    "bidirectional attention needs the valid (unpadded) length of each sequence",
                ))
            }
            (_, Some(_)) => {
                return Err(CoreError::invalid_input(
                    "valid lengths apply to bidirectional attention only",
                ));
            }
            (_, None) => {}
        }
        let KvCache { store, lens, .. } = cache;
        let out = self.placed.run(
            [q, k, v],
            Args::Attention {
                cache: &mut **store,
                past: lens,
                valid,
            },
        )?;
        for len in lens.iter_mut() {
            *len += q_len;
        }
        Ok(out)
    }
}
