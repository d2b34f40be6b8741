//! The small transformer ops, fast: rows (or heads) in parallel with rayon, inner loops in
//! 8 independent lanes so that the compiler vectorizes them. The norms and the attention are
//! compiled twice, for the build target and for AVX2 + FMA, and the second runs where the CPU
//! has them (chosen once per process): the same code and the same order of operations (no
//! contraction into FMA), so the results are the same bits either way.
//!
//! Same signatures and semantics as the [`reference`](mod@crate::reference) ops, up to the order
//! of f32 additions (the tests bound the difference). Results do not depend on the number
//! of threads: each row is computed by one task in a fixed order.

#[cfg(target_arch = "x86_64")]
use std::sync::OnceLock;

use aihal_core::Result;
use rayon::prelude::*;

use crate::reference::{self, AttentionShape, RopeStyle};

/// Whether the AVX2 + FMA builds of the ops' loops run here (detected once).
#[cfg(target_arch = "x86_64")]
fn wide() -> bool {
    static WIDE: OnceLock<bool> = OnceLock::new();
    *WIDE.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
}

/// `$wide`: `$f` compiled with AVX2 and FMA; `$best`: that where the CPU has them, else `$f`.
macro_rules! with_avx2 {
    ($f:ident, $wide:ident, $best:ident, ($($a:ident: $t:ty),* $(,)?)) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        fn $wide($($a: $t),*) {
            $f($($a),*)
        }

        fn $best($($a: $t),*) {
            #[cfg(target_arch = "x86_64")]
            if wide() {
                // SAFETY: AVX2 and FMA were detected (`wide`).
                return unsafe { $wide($($a),*) };
            }
            $f($($a),*)
        }
    };
}

/// Rows per rayon task: enough work to amortise a task.
fn rows_per_task(dim: usize) -> usize {
    (16 * 1024 / dim.max(1)).max(1)
}

/// `Σ a[i] * b[i]` in 8 lanes, then the lanes summed in order.
// Inlined into each build (baseline, AVX2 + FMA): that is how it gets compiled for both.
#[allow(clippy::inline_always)]
#[inline(always)]
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
        .for_each(|(yc, xc)| rms_rows_best(yc, xc, dim, weight, eps));
    Ok(y)
}

/// RMSNorm of the rows of `xc` into `yc`.
// Inlined into each build (baseline, AVX2 + FMA): that is how it gets compiled for both.
#[allow(clippy::inline_always)]
#[inline(always)]
fn rms_rows(yc: &mut [f32], xc: &[f32], dim: usize, weight: &[f32], eps: f32) {
    for (yr, xr) in yc.chunks_exact_mut(dim).zip(xc.chunks_exact(dim)) {
        let inv = 1.0 / (dot(xr, xr) / dim as f32 + eps).sqrt();
        for ((o, &v), &g) in yr.iter_mut().zip(xr).zip(weight) {
            *o = v * inv * g;
        }
    }
}
with_avx2!(rms_rows, rms_rows_avx2, rms_rows_best, (yc: &mut [f32], xc: &[f32], dim: usize, weight: &[f32], eps: f32));

/// LayerNorm, as [`reference::layer_norm`].
pub fn layer_norm(x: &[f32], dim: usize, weight: &[f32], bias: Option<&[f32]>, eps: f32) -> Result<Vec<f32>> {
    reference::layer_norm(&[], dim, weight, bias, eps)?;
    reference::ops_rows_of("layer_norm", x.len(), dim)?;
    let mut y = vec![0.0f32; x.len()];
    y.par_chunks_mut(dim * rows_per_task(dim))
        .zip(x.par_chunks(dim * rows_per_task(dim)))
        .for_each(|(yc, xc)| layer_rows_best(yc, xc, dim, weight, bias, eps));
    Ok(y)
}

/// LayerNorm of the rows of `xc` into `yc`.
// Inlined into each build (baseline, AVX2 + FMA): that is how it gets compiled for both.
#[allow(clippy::inline_always)]
#[inline(always)]
fn layer_rows(yc: &mut [f32], xc: &[f32], dim: usize, weight: &[f32], bias: Option<&[f32]>, eps: f32) {
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
}
with_avx2!(layer_rows, layer_rows_avx2, layer_rows_best, (
    yc: &mut [f32], xc: &[f32], dim: usize, weight: &[f32], bias: Option<&[f32]>, eps: f32
));

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
    let geometry = Geometry {
        n_heads,
        n_kv_heads,
        group,
        d,
        q_len,
        kv_len,
        scale,
    };
    out.par_chunks_mut(d)
        .enumerate()
        .for_each(|(th, o)| attend_best(o, th, q, k, v, geometry));
    Ok(out)
}

/// The shape of one attention call, as [`attend`] needs it.
#[derive(Clone, Copy)]
struct Geometry {
    n_heads: usize,
    n_kv_heads: usize,
    group: usize,
    d: usize,
    q_len: usize,
    kv_len: usize,
    scale: f32,
}

/// The output `o` of query row and head `th` (`t * n_heads + h`).
// Inlined into each build (baseline, AVX2 + FMA): that is how it gets compiled for both.
#[allow(clippy::inline_always)]
#[inline(always)]
fn attend(o: &mut [f32], th: usize, q: &[f32], k: &[f32], v: &[f32], g: Geometry) {
    let (t, h) = (th / g.n_heads, th % g.n_heads);
    let (d, n_kv_heads) = (g.d, g.n_kv_heads);
    let kvh = h / g.group;
    let visible = g.kv_len - g.q_len + t + 1;
    let qv = &q[th * d..(th + 1) * d];
    let scores: Vec<f32> = (0..visible)
        .map(|j| dot(qv, &k[(j * n_kv_heads + kvh) * d..][..d]) * g.scale)
        .collect();
    let mut probs = vec![0.0f32; visible];
    reference::softmax_row_into_slice(&scores, &mut probs);
    for (j, &p) in probs.iter().enumerate() {
        let vv = &v[(j * n_kv_heads + kvh) * d..][..d];
        for (od, &vd) in o.iter_mut().zip(vv) {
            *od += p * vd;
        }
    }
}
with_avx2!(attend, attend_avx2, attend_best, (o: &mut [f32], th: usize, q: &[f32], k: &[f32], v: &[f32], g: Geometry));

#[cfg(test)]
mod tests {
    use super::*;

    /// The AVX2 builds give the bits of the baseline build (where the CPU runs them).
    #[test]
    fn wide_builds_give_the_same_bits() {
        #[cfg(target_arch = "x86_64")]
        {
            if !wide() {
                eprintln!("aihal-cpu: no AVX2 + FMA here: the wide builds of the ops were not tested");
                return;
            }
            let mut s = 7u64;
            let mut next = || {
                s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * 3.0
            };
            let dim = 77;
            let x: Vec<f32> = (0..5 * dim).map(|_| next()).collect();
            let w: Vec<f32> = (0..dim).map(|_| next()).collect();
            let b: Vec<f32> = (0..dim).map(|_| next()).collect();
            let (mut y1, mut y2) = (vec![0.0; x.len()], vec![0.0; x.len()]);
            rms_rows(&mut y1, &x, dim, &w, 1e-5);
            // SAFETY: `wide()` said AVX2 and FMA run here.
            unsafe { rms_rows_avx2(&mut y2, &x, dim, &w, 1e-5) };
            assert_eq!(bits(&y1), bits(&y2));
            layer_rows(&mut y1, &x, dim, &w, Some(&b), 1e-5);
            // SAFETY: as above.
            unsafe { layer_rows_avx2(&mut y2, &x, dim, &w, Some(&b), 1e-5) };
            assert_eq!(bits(&y1), bits(&y2));
            let (d, heads, kv_heads, q_len, kv_len) = (40, 4, 2, 3, 29);
            let q: Vec<f32> = (0..q_len * heads * d).map(|_| next()).collect();
            let k: Vec<f32> = (0..kv_len * kv_heads * d).map(|_| next()).collect();
            let v: Vec<f32> = (0..kv_len * kv_heads * d).map(|_| next()).collect();
            let g = Geometry {
                n_heads: heads,
                n_kv_heads: kv_heads,
                group: heads / kv_heads,
                d,
                q_len,
                kv_len,
                scale: 0.2,
            };
            for th in 0..q_len * heads {
                let (mut o1, mut o2) = (vec![0.0; d], vec![0.0; d]);
                attend(&mut o1, th, &q, &k, &v, g);
                // SAFETY: as above.
                unsafe { attend_avx2(&mut o2, th, &q, &k, &v, g) };
                assert_eq!(bits(&o1), bits(&o2), "head row {th}");
                assert!(o1.iter().any(|&x| x != 0.0));
            }
        }
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }
}
