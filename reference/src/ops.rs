//! The small transformer ops, scalar.

use aihal_core::{CoreError, Result};

/// Checks that `len` is a whole number of rows of `dim` (`dim > 0`) and returns the row count.
///
/// Errors: `InvalidInput` naming `op` when `dim` is 0 or does not divide `len`.
pub fn rows_of(op: &str, len: usize, dim: usize) -> Result<usize> {
    if dim == 0 {
        return Err(CoreError::invalid_input(format!(
            "{op}: row length (dim) must be positive"
        )));
    }
    if !len.is_multiple_of(dim) {
        return Err(CoreError::invalid_input(format!(
            "{op}: input of {len} values is not a whole number of rows of {dim}"
        )));
    }
    Ok(len / dim)
}

fn check_len(op: &str, what: &str, want: usize, got: usize) -> Result<()> {
    if want == got {
        Ok(())
    } else {
        Err(CoreError::shape_mismatch(format!("{op} {what}"), [want], [got]))
    }
}

fn check_eps(op: &str, eps: f32) -> Result<()> {
    if eps.is_finite() && eps >= 0.0 {
        Ok(())
    } else {
        Err(CoreError::invalid_input(format!(
            "{op}: eps must be finite and ≥ 0, got {eps}"
        )))
    }
}

/// RMSNorm over rows of `dim`: `y = x / sqrt(mean(x²) + eps) * weight`.
///
/// `mean(x²)` is an f32 sum of squares in increasing index divided by `dim`; the result is
/// `x * (1 / sqrt(ms + eps)) * weight`, multiplied in that order. `weight` has `dim` values.
pub fn rms_norm(x: &[f32], dim: usize, weight: &[f32], eps: f32) -> Result<Vec<f32>> {
    rows_of("rms_norm", x.len(), dim)?;
    check_len("rms_norm", "weight", dim, weight.len())?;
    check_eps("rms_norm", eps)?;
    let mut y = Vec::with_capacity(x.len());
    for row in x.chunks_exact(dim) {
        let mut ss = 0.0f32;
        for &v in row {
            ss += v * v;
        }
        let inv = 1.0 / (ss / dim as f32 + eps).sqrt();
        y.extend(row.iter().zip(weight).map(|(&v, &g)| v * inv * g));
    }
    Ok(y)
}

/// LayerNorm over rows of `dim`: `y = (x - mean) / sqrt(var + eps) * weight + bias`.
///
/// Two passes in f32: `mean = Σx / dim`, `var = Σ(x - mean)² / dim` (biased, as PyTorch), then
/// `(x - mean) * (1 / sqrt(var + eps)) * weight + bias`. `bias` is optional (zero).
pub fn layer_norm(x: &[f32], dim: usize, weight: &[f32], bias: Option<&[f32]>, eps: f32) -> Result<Vec<f32>> {
    rows_of("layer_norm", x.len(), dim)?;
    check_len("layer_norm", "weight", dim, weight.len())?;
    if let Some(b) = bias {
        check_len("layer_norm", "bias", dim, b.len())?;
    }
    check_eps("layer_norm", eps)?;
    let mut y = Vec::with_capacity(x.len());
    for row in x.chunks_exact(dim) {
        let mut sum = 0.0f32;
        for &v in row {
            sum += v;
        }
        let mean = sum / dim as f32;
        let mut var = 0.0f32;
        for &v in row {
            var += (v - mean) * (v - mean);
        }
        let inv = 1.0 / (var / dim as f32 + eps).sqrt();
        for (i, &v) in row.iter().enumerate() {
            let b = bias.map_or(0.0, |b| b[i]);
            y.push((v - mean) * inv * weight[i] + b);
        }
    }
    Ok(y)
}

/// Softmax over rows of `dim`, numerically safe: `exp(x - max) / Σ exp(x - max)`.
///
/// The maximum is subtracted first so no finite input overflows. A row whose maximum is
/// `-inf` (every position masked) gives all zeros rather than NaN; a NaN anywhere in a row
/// makes the whole row NaN; a `+inf` gives NaN for that row (`inf - inf`), as IEEE says.
pub fn softmax(x: &[f32], dim: usize) -> Result<Vec<f32>> {
    rows_of("softmax", x.len(), dim)?;
    let mut y = Vec::with_capacity(x.len());
    for row in x.chunks_exact(dim) {
        softmax_row_into(row, &mut y);
    }
    Ok(y)
}

fn softmax_row_into(row: &[f32], y: &mut Vec<f32>) {
    let start = y.len();
    y.resize(start + row.len(), 0.0);
    softmax_row_into_slice(row, &mut y[start..]);
}

/// One softmax row into `y` (same length as `row`).
fn softmax_row_into_slice(row: &[f32], y: &mut [f32]) {
    let mut max = f32::NEG_INFINITY;
    let mut nan = false;
    for &v in row {
        nan |= v.is_nan();
        max = max.max(v);
    }
    if nan {
        y.fill(f32::NAN);
        return;
    }
    if max == f32::NEG_INFINITY {
        y.fill(0.0);
        return;
    }
    let mut sum = 0.0f32;
    for (o, &v) in y.iter_mut().zip(row) {
        let e = (v - max).exp();
        sum += e;
        *o = e;
    }
    let inv = 1.0 / sum;
    for v in y.iter_mut() {
        *v *= inv;
    }
}

/// SiLU (swish): `x / (1 + exp(-x))`, elementwise.
pub fn silu(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| v / (1.0 + (-v).exp())).collect()
}

/// GELU, tanh approximation (as GPT-2, llama.cpp's `gelu` and candle's `gelu`):
/// `0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³)))`, elementwise.
pub fn gelu(x: &[f32]) -> Vec<f32> {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    x.iter()
        .map(|&v| 0.5 * v * (1.0 + (SQRT_2_OVER_PI * (v + 0.044_715 * v * v * v)).tanh()))
        .collect()
}

/// The error function, computed in f64 (Abramowitz and Stegun 7.1.26 is too coarse for a
/// reference; this is the series `erf x = 2/√π Σ (-1)^n x^(2n+1) / (n! (2n+1))` for
/// `|x| < 3`, and the continued fraction of `erfc` beyond), rounded to f32 by the caller.
/// Within 1e-15 of the true value over the f32 range, so the f32 results are correctly
/// rounded but for ties.
#[must_use]
pub fn erf(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let a = x.abs();
    let r = if a < 3.0 {
        let (mut term, mut sum, mut n) = (a, a, 0.0f64);
        while term.abs() > 1e-17 * sum.abs() {
            n += 1.0;
            term *= -a * a / n;
            sum += term / (2.0 * n + 1.0);
        }
        sum * std::f64::consts::FRAC_2_SQRT_PI
    } else if a < 6.0 {
        // erfc a = exp(-a²)/√π · 1/(a + 1/2/(a + 1/(a + 3/2/(a + ...)))), evaluated bottom-up.
        let mut f = a;
        for k in (1..60).rev() {
            f = a + f64::from(k) / 2.0 / f;
        }
        1.0 - (-a * a).exp() / (f * std::f64::consts::PI.sqrt())
    } else {
        1.0
    };
    r.copysign(x)
}

/// GELU in its exact form (BERT, PyTorch's default `gelu`): `0.5 x (1 + erf(x / √2))`,
/// elementwise, computed in f64 and rounded to f32.
pub fn gelu_erf(x: &[f32]) -> Vec<f32> {
    x.iter()
        .map(|&v| {
            let v = f64::from(v);
            (0.5 * v * (1.0 + erf(v * std::f64::consts::FRAC_1_SQRT_2))) as f32
        })
        .collect()
}

/// The activation of a gated MLP's gate branch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum GateActivation {
    /// SiLU: SwiGLU (Llama, SmolLM2, Mistral).
    #[default]
    Silu,
    /// GELU, tanh form: GeGLU as Gemma uses it.
    GeluTanh,
    /// GELU, erf form.
    GeluErf,
}

/// A gated MLP's middle: `act(gate) * up`, elementwise, with `act` one of
/// [`GateActivation`] as [`silu`], [`gelu`] or [`gelu_erf`] define it.
///
/// Errors: `ShapeMismatch` when `gate` and `up` differ in length.
pub fn gated(gate: &[f32], up: &[f32], act: GateActivation) -> Result<Vec<f32>> {
    check_len("gated activation", "up (same length as gate)", gate.len(), up.len())?;
    let a = match act {
        GateActivation::Silu => silu(gate),
        GateActivation::GeluTanh => gelu(gate),
        GateActivation::GeluErf => gelu_erf(gate),
    };
    Ok(a.iter().zip(up).map(|(&g, &u)| g * u).collect())
}

/// Which pairs of a head's values a rotary embedding rotates together.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum RopeStyle {
    /// Pairs `(i, i + head_dim/2)`: GPT-NeoX and Hugging Face Llama (the common case).
    #[default]
    Half,
    /// Pairs `(2i, 2i + 1)`: GPT-J and the original Llama checkpoints (llama.cpp "normal").
    Interleaved,
}

/// Rotary position embedding of `x` laid out `[seq, n_heads, head_dim]`, the token at row
/// `s` having position `pos0 + s`.
///
/// Pair `i` (in `0..head_dim/2`) of every head turns by the angle
/// `(pos0 + s) * theta^(-2i/head_dim)`: `(a, b) -> (a cos - b sin, a sin + b cos)`. The angle,
/// sine and cosine are computed in f64 and rounded to f32; the rotation is f32.
/// `head_dim` must be even and `theta` finite and > 0.
pub fn rope(x: &[f32], n_heads: usize, head_dim: usize, pos0: usize, theta: f32, style: RopeStyle) -> Result<Vec<f32>> {
    if head_dim == 0 || !head_dim.is_multiple_of(2) {
        return Err(CoreError::invalid_input(format!(
            "rope: head_dim must be even and positive, got {head_dim}"
        )));
    }
    if !(theta.is_finite() && theta > 0.0) {
        return Err(CoreError::invalid_input(format!(
            "rope: theta must be finite and > 0, got {theta}"
        )));
    }
    let row = n_heads
        .checked_mul(head_dim)
        .ok_or_else(|| CoreError::invalid_input("rope: n_heads * head_dim overflows"))?;
    let seq = rows_of("rope", x.len(), row.max(1))?;
    let half = head_dim / 2;
    let mut y = x.to_vec();
    for s in 0..seq {
        let pos = (pos0 + s) as f64;
        for i in 0..half {
            let (sin, cos) = rope_angle(pos, i, head_dim, theta);
            for h in 0..n_heads {
                let base = s * row + h * head_dim;
                let (ia, ib) = match style {
                    RopeStyle::Half => (base + i, base + i + half),
                    RopeStyle::Interleaved => (base + 2 * i, base + 2 * i + 1),
                };
                let (a, b) = (x[ia], x[ib]);
                y[ia] = a * cos - b * sin;
                y[ib] = a * sin + b * cos;
            }
        }
    }
    Ok(y)
}

/// `(sin, cos)` of the angle of pair `i` at position `pos`, `pos * theta^(-2i / head_dim)`,
/// computed in f64 and rounded to f32: the table every [`rope`] implementation uses.
pub fn rope_angle(pos: f64, i: usize, head_dim: usize, theta: f32) -> (f32, f32) {
    let freq = f64::from(theta).powf(-2.0 * i as f64 / head_dim as f64);
    let (s, c) = (pos * freq).sin_cos();
    (s as f32, c as f32)
}

/// The head layout of an [`attention`] call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AttentionShape {
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads; divides `n_heads` (equal for multi-head, fewer for grouped-query,
    /// 1 for multi-query attention). Query head `h` reads key/value head
    /// `h / (n_heads / n_kv_heads)`.
    pub n_kv_heads: usize,
    /// Values per head.
    pub head_dim: usize,
}

impl AttentionShape {
    pub(crate) fn check(&self) -> Result<()> {
        if self.n_heads == 0 || self.n_kv_heads == 0 || self.head_dim == 0 {
            return Err(CoreError::invalid_input(format!(
                "attention: heads and head_dim must be positive, got {self:?}"
            )));
        }
        if !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return Err(CoreError::invalid_input(format!(
                "attention: n_kv_heads ({}) must divide n_heads ({})",
                self.n_kv_heads, self.n_heads
            )));
        }
        Ok(())
    }
}

/// Which key positions a query row of [`attention_masked`] sees.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AttentionMask {
    /// A decoder: query row `t` (at position `p = kv_len - q_len + t`) sees keys `0..=p`.
    #[default]
    Causal,
    /// A decoder with a local window (Gemma's sliding-window layers): keys
    /// `p + 1 - window ..= p` (clamped at 0); `window` must be positive.
    SlidingWindow(usize),
    /// An encoder over a right-padded sequence: every query sees keys `0..valid`, the rest
    /// are padding; `valid` must be in `1..=kv_len`.
    Padded {
        /// How many leading key positions are real tokens.
        valid: usize,
    },
}

impl AttentionMask {
    /// The key range `lo..hi` query row `t` sees, for `q_len` queries over `kv_len` keys.
    #[must_use]
    pub fn visible(self, t: usize, q_len: usize, kv_len: usize) -> std::ops::Range<usize> {
        let p = kv_len - q_len + t;
        match self {
            Self::Causal => 0..p + 1,
            Self::SlidingWindow(w) => (p + 1).saturating_sub(w)..p + 1,
            Self::Padded { valid } => 0..valid,
        }
    }

    /// Checks the mask against the call: a positive window, a valid length in `1..=kv_len`.
    ///
    /// Errors: `InvalidInput` naming the mask.
    pub fn check(self, kv_len: usize) -> Result<()> {
        match self {
            Self::SlidingWindow(0) => Err(CoreError::invalid_input("attention: a sliding window must be positive")),
            Self::Padded { valid } if valid == 0 || valid > kv_len => Err(CoreError::invalid_input(format!(
                "attention: padded mask with {valid} valid keys over {kv_len} cached positions (need 1..={kv_len})"
            ))),
            _ => Ok(()),
        }
    }
}

/// Causal scaled-dot-product attention for one sequence (batch 1), multi-head or
/// grouped-query: [`attention_masked`] with [`AttentionMask::Causal`].
///
/// `q` is `[q_len, n_heads, head_dim]` (the newest `q_len` tokens, 1 for a decode step), `k`
/// and `v` are the caches `[kv_len, n_kv_heads, head_dim]` that already include those tokens,
/// so query row `t` sits at position `kv_len - q_len + t` and attends to key positions
/// `0..=kv_len - q_len + t`. `scale` defaults to `1 / sqrt(head_dim)`.
///
/// Per query head: scores `s_j = (Σ_d q[d] * k_j[d]) * scale` (f32, increasing `d`), then
/// [`softmax`] over the visible `j`, then `out[d] = Σ_j p_j * v_j[d]` in increasing `j`.
/// Returns `[q_len, n_heads, head_dim]`.
pub fn attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    kv_len: usize,
    shape: AttentionShape,
    scale: Option<f32>,
) -> Result<Vec<f32>> {
    attention_masked(q, k, v, kv_len, shape, scale, AttentionMask::Causal)
}

/// Scaled-dot-product attention for one sequence, as [`attention`] but with the key range of
/// each query row given by `mask` ([`AttentionMask::visible`]).
///
/// Errors: as [`check_attention`], and `InvalidInput` for a mask that does not fit
/// ([`AttentionMask::check`]).
pub fn attention_masked(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    kv_len: usize,
    shape: AttentionShape,
    scale: Option<f32>,
    mask: AttentionMask,
) -> Result<Vec<f32>> {
    let q_len = check_attention(q, k, v, kv_len, shape)?;
    mask.check(kv_len)?;
    let AttentionShape {
        n_heads,
        n_kv_heads,
        head_dim: d,
    } = shape;
    let scale = scale.unwrap_or(1.0 / (d as f32).sqrt());
    let group = n_heads / n_kv_heads;
    let mut out = vec![0.0f32; q_len * n_heads * d];
    let mut scores = Vec::with_capacity(kv_len);
    let mut probs = Vec::with_capacity(kv_len);
    for t in 0..q_len {
        let visible = mask.visible(t, q_len, kv_len);
        for h in 0..n_heads {
            let kvh = h / group;
            let qv = &q[(t * n_heads + h) * d..][..d];
            scores.clear();
            for j in visible.clone() {
                let kv = &k[(j * n_kv_heads + kvh) * d..][..d];
                scores.push(super::dot_in_order(qv, kv) * scale);
            }
            probs.clear();
            softmax_row_into(&scores, &mut probs);
            let o = &mut out[(t * n_heads + h) * d..][..d];
            for (j, &p) in visible.clone().zip(&probs) {
                let vv = &v[(j * n_kv_heads + kvh) * d..][..d];
                for (od, &vd) in o.iter_mut().zip(vv) {
                    *od += p * vd;
                }
            }
        }
    }
    Ok(out)
}

/// Validates an [`attention`] call (head layout, and the lengths of `q`, `k` and `v` for
/// `kv_len` cached positions) and returns `q_len`.
///
/// Errors: `InvalidInput` or `ShapeMismatch` naming the argument that does not fit.
pub fn check_attention(q: &[f32], k: &[f32], v: &[f32], kv_len: usize, shape: AttentionShape) -> Result<usize> {
    shape.check()?;
    let q_len = rows_of("attention q", q.len(), shape.n_heads * shape.head_dim)?;
    let kv = kv_len * shape.n_kv_heads * shape.head_dim;
    check_len("attention", "k cache [kv_len, n_kv_heads, head_dim]", kv, k.len())?;
    check_len("attention", "v cache [kv_len, n_kv_heads, head_dim]", kv, v.len())?;
    if q_len > kv_len {
        return Err(CoreError::invalid_input(format!(
            "attention: {q_len} query rows but only {kv_len} cached keys; the caches must include the queried tokens"
        )));
    }
    Ok(q_len)
}
