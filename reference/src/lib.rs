//! Scalar reference ops of aihal: the definition every fast kernel (the CPU backend's SIMD
//! kernels, the CubeCL kernels, the NPU route) is tested against.
//!
//! No backend depends on another backend: each one's tests compare with this crate, which
//! depends only on `aihal-core` and `aihal-quantize` (whose [`decode`](aihal_quantize::decode)
//! module reads the layout contract).
//!
//! These functions are written for clarity and fixed evaluation order, not speed: each one
//! states its exact arithmetic so a device kernel can say how far it may differ. All take
//! row-major `f32` slices and answer a [`CoreError`](aihal_core::CoreError) for shapes that
//! do not fit; none panics on bad input.
//!
//! | op | shape | computes |
//! | --- | --- | --- |
//! | [`matmul`] | x `[M, K]`, W `[N, K]` quantized | `y = x · Wᵀ`, `[M, N]` |
//! | [`rms_norm`] | rows of `dim` | `x / sqrt(mean(x²) + eps) * weight` |
//! | [`layer_norm`] | rows of `dim` | `(x - mean) / sqrt(var + eps) * weight + bias` |
//! | [`softmax`] | rows of `dim` | `exp(x - max) / sum` |
//! | [`silu`], [`gelu`], [`gelu_erf`] | elementwise | `x * sigmoid(x)`, GELU (tanh form, erf form) |
//! | [`gated`] | gate, up | `act(gate) * up` (SwiGLU, GeGLU) |
//! | [`embedding`] | token ids, table `[vocab, dim]` quantized | the ids' rows, dequantized |
//! | [`rope`] | `[seq, heads, head_dim]` | rotary position embedding |
//! | [`attention`], [`attention_masked`] | q `[q_len, heads, d]`, k/v `[kv_len, kv_heads, d]` | GQA attention: causal, sliding-window, or padded (encoder) |

#![forbid(unsafe_code)]
// Tests compare floats exactly on purpose: the fixed-order reference is deterministic.
#![cfg_attr(test, allow(clippy::float_cmp))]

mod ops;

use aihal_core::{CoreError, Result};
use aihal_quantize::decode::decode_row_into;
use aihal_quantize::QuantizedTensor;

pub use ops::{
    attention, attention_masked, check_attention, erf, gated, gelu, gelu_erf, layer_norm, rms_norm, rope, rope_angle,
    rows_of, silu, softmax, AttentionMask, AttentionShape, GateActivation, RopeStyle,
};

/// The `(N, K)` of a weight matrix, after checking that it is rank 2 and that `x_len` is `m`
/// rows of `K` values.
///
/// Every matmul entry point (here and in the backends) checks its arguments with this, so the
/// kernels behind it may trust the lengths.
///
/// Errors: `InvalidInput` for a rank other than 2 or an `m * K` that overflows,
/// `ShapeMismatch` when `x_len != m * K`.
pub fn check_matmul(x_len: usize, m: usize, w: &QuantizedTensor) -> Result<(usize, usize)> {
    let [n, k] = *w.shape() else {
        return Err(CoreError::invalid_input(format!(
            "matmul weight must have rank 2 ([N, K]), got shape {:?}",
            w.shape()
        )));
    };
    let want = m
        .checked_mul(k)
        .ok_or_else(|| CoreError::invalid_input(format!("matmul activations: {m} rows of {k} values overflow")))?;
    if x_len != want {
        return Err(CoreError::shape_mismatch(
            format!("matmul activations x ([M = {m}, K = {k}] row-major)"),
            [want],
            [x_len],
        ));
    }
    Ok((n, k))
}

/// `y = x · Wᵀ` with the weight decoded exactly as the layout contract says.
///
/// `x` is `[m, K]` row-major f32, `w` is `[N, K]` in any [`QuantFormat`](aihal_quantize::QuantFormat);
/// the result is `[m, N]` row-major with
/// `y[i][n] = Σ_k x[i][k] * dequant(W)[n][k]`, where `dequant` is the contract's
/// `scale * code` rounded to f32, each product rounded to f32 and added to an f32 accumulator
/// that starts at `0.0`, in increasing `k` (no fused multiply-add). NaN and infinities in `x`
/// or in decoded weights (FP8 NaN, E5M2 infinities) propagate as IEEE arithmetic says.
///
/// Errors: `InvalidInput` when `w` is not rank 2, `ShapeMismatch` when `x.len() != m * K`
/// (every format decodes).
///
/// ```
/// use aihal_quantize::{QuantFormat, QuantizedTensor};
/// // One Q8_0 row of 32 values: d = 1.0 (f16 0x3C00), codes 0, 1, 2, ...
/// let mut block = vec![0x00, 0x3C];
/// block.extend(0u8..32);
/// let w = QuantizedTensor::from_parts(QuantFormat::Q8_0, vec![1, 32], block, vec![])?;
/// let x = vec![1.0f32; 32];
/// assert_eq!(aihal_reference::matmul(&x, 1, &w)?, [496.0]);
/// # Ok::<(), aihal_core::CoreError>(())
/// ```
pub fn matmul(x: &[f32], m: usize, w: &QuantizedTensor) -> Result<Vec<f32>> {
    let (n, k) = check_matmul(x.len(), m, w)?;
    let mut y = vec![0.0f32; m * n];
    let mut row = vec![0.0f32; k];
    for j in 0..n {
        decode_row_into(w, j, 0, &mut row)?;
        for i in 0..m {
            y[i * n + j] = dot_in_order(&x[i * k..(i + 1) * k], &row);
        }
    }
    Ok(y)
}

/// `Σ a[k] * b[k]` with an f32 accumulator in increasing `k`, no FMA.
pub(crate) fn dot_in_order(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = 0.0f32;
    for (&p, &q) in a.iter().zip(b) {
        acc += p * q;
    }
    acc
}

/// The rows `ids` of an embedding table `[vocab, dim]` in any format, dequantized exactly
/// as [`aihal_quantize::decode`] defines them: `[ids.len(), dim]` row-major f32.
///
/// Errors: `InvalidInput` when `table` is not rank 2 or an id is not below `vocab` (naming
/// the id and its index).
pub fn embedding(ids: &[u32], table: &QuantizedTensor) -> Result<Vec<f32>> {
    let (vocab, dim) = check_matmul(0, 0, table)?;
    let mut out = vec![0.0f32; ids.len() * dim];
    for (i, (&id, row)) in ids.iter().zip(out.chunks_exact_mut(dim.max(1))).enumerate() {
        if id as usize >= vocab {
            return Err(CoreError::invalid_input(format!(
                "embedding: token id {id} at index {i} is not below the vocabulary size {vocab}"
            )));
        }
        decode_row_into(table, id as usize, 0, row)?;
    }
    Ok(out)
}

/// The fully dequantized `[N, K]` weight as f32 (for tests and tools, never on a hot path).
///
/// Errors as [`matmul`].
pub fn dequantize_weight(w: &QuantizedTensor) -> Result<Vec<f32>> {
    let (n, k) = check_matmul(0, 0, w)?;
    let mut out = vec![0.0f32; n * k];
    for (j, row) in out.chunks_exact_mut(k.max(1)).enumerate().take(n) {
        decode_row_into(w, j, 0, row)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
