//! The small transformer ops, fast: rows (or heads) in parallel with rayon, inner loops in
//! 8 independent lanes so the compiler vectorizes them for the build target.
//!
//! Same signatures and semantics as the [`reference`](mod@crate::reference) ops, up to the order
//! of f32 additions (the tests bound the difference). Results do not depend on the number
//! of threads: each row is computed by one task in a fixed order.

use aihal_core::Result;
use rayon::prelude::*;

use crate::reference::{self, AttentionShape, RopeStyle};

/// Rows per rayon task: enough work to amortise a task.
fn rows_per_task(dim: usize) -> usize {
    (16 * 1024 / dim.max(1)).max(1)
}

/// `Σ a[i] * b[i]` in 8 lanes, then the lanes summed in order.
#[inline]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ac, ar) = a.split_at(a.len() / 8 * 8);
    let (bc, br) = b.split_at(ac.len());
    for (x, y) in ac.chunks_exact(8).zip(bc.chunks_exact(8)) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s = acc.iter().sum::<f32>();
    for (x, y) in ar.iter().zip(br) {
        s += x * y;
    }
    s
}

/// RMSNorm, as [`reference::rms_norm`].
pub fn rms_norm(x: &[f32], dim: usize, weight: &[f32], eps: f32) -> Result<Vec<f32>> {
    // Validation (and the error messages) are the reference's; an empty input costs nothing.
    reference::rms_norm(&[], dim, weight, eps)?;
    reference::ops_rows_of("rms_norm", x.len(), dim)?;
    let mut y = vec![0.0f32; x.len()];
    y.par_chunks_mut(dim * rows_per_task(dim))
        .zip(x.par_chunks(dim * rows_per_task(dim)))
        .for_each(|(yc, xc)| {
            for (yr, xr) in yc.chunks_exact_mut(dim).zip(xc.chunks_exact(dim)) {
                let inv = 1.0 / (dot(xr, xr) / dim as f32 + eps).sqrt();
                for ((o, &v), &g) in yr.iter_mut().zip(xr).zip(weight) {
                    *o = v * inv * g;
                }
            }
        });
    Ok(y)
}

/// LayerNorm, as [`reference::layer_norm`].
pub fn layer_norm(x: &[f32], dim: usize, weight: &[f32], bias: Option<&[f32]>, eps: f32) -> Result<Vec<f32>> {
    reference::layer_norm(&[], dim, weight, bias, eps)?;
    reference::ops_rows_of("layer_norm", x.len(), dim)?;
    let mut y = vec![0.0f32; x.len()];
    y.par_chunks_mut(dim * rows_per_task(dim))
        .zip(x.par_chunks(dim * rows_per_task(dim)))
        .for_each(|(yc, xc)| {
            for (yr, xr) in yc.chunks_exact_mut(dim).zip(xc.chunks_exact(dim)) {
                let ones = [1.0f32; 8];
                let sum: f32 = xr.chunks(8).map(|c| dot(c, &ones[..c.len()])).sum();
                let mean = sum / dim as f32;
                for (o, &v) in yr.iter_mut().zip(xr) {
                    *o = v - mean;
                }
                let inv = 1.0 / (dot(yr, yr) / dim as f32 + eps).sqrt();
                for (i, o) in yr.iter_mut().enumerate() {
                    *o = *o * inv * weight[i] + bias.map_or(0.0, |b| b[i]);
                }
            }
        });
    Ok(y)
}

/// Softmax over rows, as [`reference::softmax`] (rows in parallel).
pub fn softmax(x: &[f32], dim: usize) -> Result<Vec<f32>> {
    reference::ops_rows_of("softmax", x.len(), dim)?;
    let mut y = vec![0.0f32; x.len()];
    y.par_chunks_mut(dim * rows_per_task(dim))
        .zip(x.par_chunks(dim * rows_per_task(dim)))
        .for_each(|(yc, xc)| {
            for (yr, xr) in yc.chunks_exact_mut(dim).zip(xc.chunks_exact(dim)) {
                reference::softmax_row_into_slice(xr, yr);
            }
        });
    Ok(y)
}

/// SiLU, as [`reference::silu`], in parallel.
pub fn silu(x: &[f32]) -> Vec<f32> {
    x.par_chunks(16 * 1024).flat_map_iter(reference::silu).collect()
}

/// GELU (tanh approximation), as [`reference::gelu`], in parallel.
pub fn gelu(x: &[f32]) -> Vec<f32> {
    x.par_chunks(16 * 1024).flat_map_iter(reference::gelu).collect()
}

/// Rotary embedding, as [`reference::rope`]: the sine/cosine table is computed once per
/// position, tokens in parallel.
pub fn rope(x: &[f32], n_heads: usize, head_dim: usize, pos0: usize, theta: f32, style: RopeStyle) -> Result<Vec<f32>> {
    reference::rope(&[], n_heads, head_dim, pos0, theta, style)?;
    let row = n_heads * head_dim;
    reference::ops_rows_of("rope", x.len(), row.max(1))?;
    let half = head_dim / 2;
    let mut y = x.to_vec();
    y.par_chunks_mut(row.max(1)).enumerate().for_each(|(s, yr)| {
        let pos = (pos0 + s) as f64;
        let table: Vec<(f32, f32)> = (0..half)
            .map(|i| reference::ops_rope_angle(pos, i, head_dim, theta))
            .collect();
        for head in yr.chunks_exact_mut(head_dim) {
            for (i, &(sin, cos)) in table.iter().enumerate() {
                let (ia, ib) = match style {
                    RopeStyle::Half => (i, i + half),
                    RopeStyle::Interleaved => (2 * i, 2 * i + 1),
                };
                let (a, b) = (head[ia], head[ib]);
                head[ia] = a * cos - b * sin;
                head[ib] = a * sin + b * cos;
            }
        }
    });
    Ok(y)
}

/// Causal GQA attention for batch 1, as [`reference::attention`]: one task per (query row,
/// head), dot products in 8 lanes.
pub fn attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    kv_len: usize,
    shape: AttentionShape,
    scale: Option<f32>,
) -> Result<Vec<f32>> {
    let q_len = reference::ops_check_attention(q, k, v, kv_len, shape)?;
    let AttentionShape {
        n_heads,
        n_kv_heads,
        head_dim: d,
    } = shape;
    let scale = scale.unwrap_or(1.0 / (d as f32).sqrt());
    let group = n_heads / n_kv_heads;
    let mut out = vec![0.0f32; q_len * n_heads * d];
    out.par_chunks_mut(d).enumerate().for_each(|(th, o)| {
        let (t, h) = (th / n_heads, th % n_heads);
        let kvh = h / group;
        let visible = kv_len - q_len + t + 1;
        let qv = &q[th * d..(th + 1) * d];
        let scores: Vec<f32> = (0..visible)
            .map(|j| dot(qv, &k[(j * n_kv_heads + kvh) * d..][..d]) * scale)
            .collect();
        let mut probs = vec![0.0f32; visible];
        reference::softmax_row_into_slice(&scores, &mut probs);
        for (j, &p) in probs.iter().enumerate() {
            let vv = &v[(j * n_kv_heads + kvh) * d..][..d];
            for (od, &vd) in o.iter_mut().zip(vv) {
                *od += p * vd;
            }
        }
    });
    Ok(out)
}
