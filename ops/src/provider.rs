//! The execution-provider contract: what a backend implements once to run the op set.
//!
//! A provider answers a capability query ([`Provider::supports`]), prepares an op once into
//! its own resident form ([`Provider::prepare`]: packed weights on the CPU, device buffers on
//! a GPU, a matmul context on the NPU), moves activations in ([`Provider::upload`]; out is
//! [`DeviceData::read`](crate::DeviceData::read)) and runs prepared ops ([`Prepared::run`]).
//! Placement, fallbacks, strict mode and the record are the [`Executor`](crate::Executor)'s
//! job, never a provider's: a provider that cannot run something says so
//! (`NotImplemented`, or `No` from `supports`) and never runs another backend instead.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use aihal_core::{CoreError, Device, Result};
use aihal_quantize::{QuantFormat, QuantizedTensor};
use aihal_reference::{AttentionShape, GateActivation, RopeStyle};

use crate::tensor::{Shape, Tensor};

/// How a [`Linear`](crate::Linear) meets its activations: one rule on every provider.
///
/// Every output must lie within [`bound`](Self::bound) of the reference
/// (`aihal_reference::matmul`: the weight decoded as the layout contract says, f32
/// activations, f32 sums). Calibration's parity check and the conformance tests hold every
/// provider to it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum LinearPrecision {
    /// The fast path: a provider may quantize the activations to int8 with one scale per row
    /// (or finer: the CPU's packed kernels use one per block of 32) and the weight to int8
    /// with one scale per row (the NPU does, for formats it does not multiply as they are),
    /// or compute in f32.
    #[default]
    Int8Activations,
    /// Activations and products in f32: within f32 rounding of the reference.
    F32,
}

impl LinearPrecision {
    /// The largest error allowed for one output `x_row · w_row` (`w_row` decoded as the layout
    /// contract says), with `k` the row length, `s_x = max|x| / 127`, `s_w = max|w| / 127`:
    ///
    /// - both: `4 k ε Σ|x w| + 1e-6` (f32 sums in another order, fused or not);
    /// - `Int8Activations`, in addition: `Σ (|x| + s_x/2) s_w/2 + s_x/2 Σ|w|`, the worst case of
    ///   rounding the activations to int8 per row (half a step each) and the weight to int8 per
    ///   row (half a step each), times 1.0001 for the rounding of the bound itself.
    pub fn bound(self, x_row: &[f32], w_row: &[f32]) -> f32 {
        let k = x_row.len();
        let xw: f32 = x_row.iter().zip(w_row).map(|(a, b)| (a * b).abs()).sum();
        let float = 4.0 * k as f32 * f32::EPSILON * xw + 1e-6;
        match self {
            Self::F32 => float,
            Self::Int8Activations => {
                let sx = x_row.iter().fold(0f32, |a, v| a.max(v.abs())) / 127.0;
                let sw = w_row.iter().fold(0f32, |a, v| a.max(v.abs())) / 127.0;
                let from_w: f32 = x_row.iter().map(|v| (v.abs() + sx / 2.0) * sw / 2.0).sum();
                let from_x: f32 = w_row.iter().map(|v| v.abs() * sx / 2.0).sum();
                float + 1.0001 * (from_w + from_x)
            }
        }
    }
}

/// An elementwise activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Activation {
    /// `x / (1 + exp(-x))`.
    Silu,
    /// GELU, tanh form (GPT-2, Gemma, llama.cpp's `gelu`).
    GeluTanh,
    /// GELU, erf form (BERT, PyTorch's default).
    GeluErf,
}

/// How an [`Attention`](crate::Attention) op masks keys.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AttentionKind {
    /// A decoder: each query sees every earlier position and its own.
    #[default]
    Causal,
    /// A decoder with a local window of this many positions (its own included).
    SlidingWindow(usize),
    /// An encoder: each query sees every real key of its sequence; padding is given per call.
    Bidirectional,
}

/// One op as a provider sees it when asked whether it can run it and to prepare it. Borrowed:
/// a provider copies what it keeps into its own resident form.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub enum OpSpec<'a> {
    /// `y = x · Wᵀ + b`, `W` `[out, in]` quantized.
    Linear {
        /// The weight `[out_features, in_features]`.
        weight: &'a QuantizedTensor,
        /// The bias, `out_features` values.
        bias: Option<&'a [f32]>,
        /// The activation precision rule.
        precision: LinearPrecision,
    },
    /// `y = x · Wᵀ + b` with a dense f32 weight `[out, in]` (weights kept as stored, for
    /// models whose f32 results must match a peer's, and for small layers).
    DenseLinear {
        /// The weight, `out_features * in_features` values, row-major.
        weight: &'a [f32],
        /// Output features.
        out_features: usize,
        /// Input features.
        in_features: usize,
        /// The bias, `out_features` values.
        bias: Option<&'a [f32]>,
    },
    /// RMSNorm over the last dimension: `x / sqrt(mean(x²) + eps) * weight`.
    RmsNorm {
        /// The gain, one per value of a row.
        weight: &'a [f32],
        /// Added to the mean square.
        eps: f32,
    },
    /// LayerNorm over the last dimension.
    LayerNorm {
        /// The gain.
        weight: &'a [f32],
        /// The shift.
        bias: Option<&'a [f32]>,
        /// Added to the variance.
        eps: f32,
    },
    /// Softmax over the last dimension.
    Softmax,
    /// An elementwise activation.
    Activation(Activation),
    /// `act(gate) * up`, two inputs of one shape.
    Gated(GateActivation),
    /// `a + b`, two inputs of one shape (residual connections).
    Add,
    /// Rotary embedding of `[tokens, n_heads, head_dim]` (or with a leading batch dimension)
    /// at positions `pos0 ..` given per call.
    Rope {
        /// Heads per token.
        n_heads: usize,
        /// Values per head (even).
        head_dim: usize,
        /// The frequency base (10000 for Llama 2, 100000 for SmolLM2, 1e6 for Gemma 3's
        /// global layers).
        theta: f32,
        /// Which pairs rotate together: `Half` is GGUF's NEOX type (Gemma, Qwen), `Interleaved`
        /// its NORM type (llama-architecture GGUF files, whose Q and K llama.cpp's converter
        /// permuted for it).
        style: RopeStyle,
    },
    /// Rows of a quantized table `[vocab, dim]` by token id, dequantized.
    Embedding {
        /// The table, shared: a provider that keeps it as it is (the CPU) keeps a clone of
        /// the `Arc`, not a copy of the table, so that a model that hands over its only
        /// handle holds the table once.
        table: &'a Arc<QuantizedTensor>,
    },
    /// Rows of a dense f32 table `[vocab, dim]` by token id.
    DenseEmbedding {
        /// The table, `vocab * dim` values, row-major.
        table: &'a [f32],
        /// Values per row.
        dim: usize,
    },
    /// Grouped-query attention over a [`KvCache`](crate::KvCache).
    Attention {
        /// Heads and head size.
        shape: AttentionShape,
        /// The mask.
        kind: AttentionKind,
        /// The score scale (`1 / sqrt(head_dim)` when `None`).
        scale: Option<f32>,
    },
}

impl OpSpec<'_> {
    /// The kind of op, the key of the record.
    pub fn kind(&self) -> OpKind {
        match self {
            Self::Linear { .. } | Self::DenseLinear { .. } => OpKind::Linear,
            Self::RmsNorm { .. } => OpKind::RmsNorm,
            Self::LayerNorm { .. } => OpKind::LayerNorm,
            Self::Softmax => OpKind::Softmax,
            Self::Activation(_) => OpKind::Activation,
            Self::Gated(_) => OpKind::Gated,
            Self::Add => OpKind::Add,
            Self::Rope { .. } => OpKind::Rope,
            Self::Embedding { .. } | Self::DenseEmbedding { .. } => OpKind::Embedding,
            Self::Attention { .. } => OpKind::Attention,
        }
    }

    /// The bytes of the op's quantized weight (0 for ops without one): a dispatch-table key.
    pub fn weight_bytes(&self) -> usize {
        match self {
            Self::Linear { weight, .. } => weight.data().len() + 4 * weight.scales().len(),
            Self::Embedding { table } => table.data().len() + 4 * table.scales().len(),
            Self::DenseLinear { weight, .. } | Self::DenseEmbedding { table: weight, .. } => 4 * weight.len(),
            _ => 0,
        }
    }

    /// The weight format, for ops that have a quantized weight.
    pub fn format(&self) -> Option<QuantFormat> {
        match self {
            Self::Linear { weight, .. } => Some(weight.format()),
            Self::Embedding { table } => Some(table.format()),
            _ => None,
        }
    }
}

/// The kinds of op, in a fixed order (the record's rows).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[allow(missing_docs)] // the names say it
pub enum OpKind {
    Linear,
    RmsNorm,
    LayerNorm,
    Softmax,
    Activation,
    Gated,
    Add,
    Rope,
    Embedding,
    Attention,
}

impl OpKind {
    /// Every kind, in order.
    pub const ALL: [OpKind; 10] = [
        Self::Linear,
        Self::RmsNorm,
        Self::LayerNorm,
        Self::Softmax,
        Self::Activation,
        Self::Gated,
        Self::Add,
        Self::Rope,
        Self::Embedding,
        Self::Attention,
    ];

    /// A short name (`"linear"`).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Linear => "linear",
            Self::RmsNorm => "rms_norm",
            Self::LayerNorm => "layer_norm",
            Self::Softmax => "softmax",
            Self::Activation => "activation",
            Self::Gated => "gated",
            Self::Add => "add",
            Self::Rope => "rope",
            Self::Embedding => "embedding",
            Self::Attention => "attention",
        }
    }
}

impl fmt::Display for OpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The inputs of one call of a prepared op, already on the provider that runs it.
#[derive(Debug)]
#[non_exhaustive]
pub enum Call<'a> {
    /// One tensor: linear, the norms, softmax, activations.
    Unary(&'a Tensor),
    /// Two tensors of one shape: gated activations, add.
    Binary(&'a Tensor, &'a Tensor),
    /// Rotary embedding at positions `pos0 ..`.
    Rope {
        /// `[tokens, n_heads, head_dim]` or `[batch, tokens, n_heads, head_dim]`.
        x: &'a Tensor,
        /// The position of the first token.
        pos0: usize,
    },
    /// Embedding lookup.
    Embedding {
        /// Token ids.
        ids: &'a [u32],
        /// The output shape's leading dimensions (`[ids.len()]` or `[batch, tokens]`).
        lead: Shape,
    },
    /// Attention: append `k`, `v` to the cache, then attend with `q`.
    Attention {
        /// `[batch, q_len, n_heads, head_dim]`.
        q: &'a Tensor,
        /// `[batch, q_len, n_kv_heads, head_dim]`, the new keys.
        k: &'a Tensor,
        /// As `k`, the new values.
        v: &'a Tensor,
        /// The cache, already checked to have room, on this provider.
        cache: &'a mut dyn KvStore,
        /// Positions cached per sequence before this call.
        past: &'a [usize],
        /// For [`AttentionKind::Bidirectional`]: real tokens per sequence (the rest padding).
        valid: Option<&'a [usize]>,
    },
}

/// A provider's answer to [`Provider::supports`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Support {
    /// The provider runs this op (shape limits still checked per call).
    Yes,
    /// It does not, and why (`"Q4_K has no kernel here"`).
    No(String),
}

/// An op prepared by one provider, ready to run.
pub trait Prepared: Send + Sync {
    /// Runs the op on `call`'s inputs (already on this provider) and returns the output on
    /// this provider. `NotImplemented` (for a shape this provider cannot take) lets the
    /// executor try the next provider; any other error is the caller's.
    fn run(&self, call: Call<'_>) -> Result<Tensor>;

    /// For a prepared linear layer over a quantized weight `[out, in]`: rows `ids` of the
    /// weight, dequantized to f32 as [`aihal_reference::embedding`] dequantizes a table's,
    /// shaped `lead + [in]`, on this provider: what an embedding tied to the layer reads
    /// ([`Embedding::tied`](crate::Embedding::tied)), so that a model whose output projection
    /// is its embedding table holds the table once. The caller has checked `ids` against
    /// `out` ([`check_token_ids`](crate::check_token_ids)).
    ///
    /// `NotImplemented` (the default) where this prepared form does not give its weight's
    /// rows: another op, or weights held in a layout rows are not read back from. The model
    /// then keeps the embedding table beside the layer.
    fn weight_rows(&self, ids: &[u32], lead: Shape) -> Result<Tensor> {
        let _ = (ids, lead);
        Err(CoreError::not_implemented("rows of this prepared op's weight"))
    }
}

/// A key/value cache's storage on one provider (for providers; users hold a
/// [`KvCache`](crate::KvCache)).
pub trait KvStore: Send + Sync + fmt::Debug {
    /// The device the cache lives on.
    fn device(&self) -> Device;
    /// For the owning provider to reach its own type.
    fn as_any_mut(&mut self) -> &mut dyn Any;
    /// Whether [`drop_front`](Self::drop_front) works here (false by default).
    fn can_drop_front(&self) -> bool {
        false
    }
    /// Forgets the first `n` of the `len` positions sequence `b` holds (`n <= len`), moving
    /// the other `len - n` to the front, keys and values alike.
    ///
    /// Errors: `NotImplemented` where [`can_drop_front`](Self::can_drop_front) is false (the
    /// default).
    fn drop_front(&mut self, b: usize, len: usize, n: usize) -> Result<()> {
        let _ = (b, len, n);
        Err(CoreError::not_implemented(format!(
            "dropping cached positions on {}",
            self.device()
        )))
    }
}

/// The shape of a key/value cache: `batch` sequences of up to `max_len` positions of
/// `n_kv_heads * head_dim` values, for keys and for values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KvLayout {
    /// Sequences.
    pub batch: usize,
    /// Positions per sequence.
    pub max_len: usize,
    /// Key/value heads.
    pub n_kv_heads: usize,
    /// Values per head.
    pub head_dim: usize,
}

/// An execution provider: one backend on one device.
pub trait Provider: Send + Sync {
    /// The device it runs on ([`Device::Cpu`] for the CPU provider, whose tensors are host
    /// tensors).
    fn device(&self) -> Device;

    /// What it is, for reports (`"cpu (avx512-vnni)"`, `"wgpu:0 llvmpipe"`).
    fn name(&self) -> String;

    /// Whether it is a software implementation on the CPU (lavapipe): never placed
    /// automatically, only when its device is named.
    fn is_software(&self) -> bool {
        false
    }

    /// Whether its ops take host tensors as they are (a device that reads host memory, such
    /// as the RK3588 NPU through its runtime): then a host tensor needs no move to it, and its
    /// outputs may be host tensors.
    fn reads_host_memory(&self) -> bool {
        false
    }

    /// Whether it runs `spec` (format, dtype and device limits; per-call shapes are checked
    /// when called).
    fn supports(&self, spec: &OpSpec<'_>) -> Support;

    /// Prepares `spec` once: weights into this provider's resident form.
    fn prepare(&self, spec: &OpSpec<'_>) -> Result<Box<dyn Prepared>>;

    /// Copies host values onto this provider's device (the CPU provider returns a host
    /// tensor).
    fn upload(&self, data: &[f32], shape: Shape) -> Result<Tensor>;

    /// A zeroed key/value cache of `layout` on this device.
    fn new_kv_store(&self, layout: KvLayout) -> Result<Box<dyn KvStore>>;
}
