//! Grouped-query attention for batch 1 (causal, or the key range a mask gives), query heads
//! that share a key/value head in one task.

use aihal_core::Result;
use aihal_reference::{self as reference, AttentionMask, AttentionShape};

use super::dot;
use super::softmax::softmax_row;

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
    attention_masked(q, k, v, kv_len, shape, scale, AttentionMask::Causal)
}

/// GQA attention for batch 1 with the key range of each query row given by `mask`, as
/// [`reference::attention_masked`] (same sums in the same order as [`attention`]).
pub fn attention_masked(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    kv_len: usize,
    shape: AttentionShape,
    scale: Option<f32>,
    mask: AttentionMask,
) -> Result<Vec<f32>> {
    let q_len = reference::check_attention(q, k, v, kv_len, shape)?;
    mask.check(kv_len)?;
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
        mask,
    };
    // A task takes the query heads of one row that share a key/value head (each key and value
    // row is then read once for all of them), halved while that would leave fewer than two
    // tasks per thread (a decode step over few key/value heads).
    let threads = crate::pool::threads();
    let mut heads = group;
    while heads % 2 == 0 && q_len * n_heads / heads < 2 * threads {
        heads /= 2;
    }
    // Each chunk is a task of `crate::pool`, taken in turn by whichever thread is free, so
    // causal rows of different cost still spread evenly (ranges of rows fixed per thread
    // measured 10 % to 20 % slower), and the caller works instead of sleeping on a latch.
    crate::pool::run_tasks(out.chunks_mut(heads * d).collect(), |c, o: &mut [f32]| {
        attend_best(o, c * heads, q, k, v, geometry);
    });
    Ok(out)
}

/// The shape of one attention call, as [`attend`] needs it.
#[derive(Clone, Copy)]
pub(super) struct Geometry {
    pub(super) n_heads: usize,
    pub(super) n_kv_heads: usize,
    pub(super) group: usize,
    pub(super) d: usize,
    pub(super) q_len: usize,
    pub(super) kv_len: usize,
    pub(super) scale: f32,
    pub(super) mask: AttentionMask,
}

/// The outputs `o` (`o.len() / d` heads) of query row `t` and heads `h ..` (where
/// `th = t * n_heads + h`), all of the same key/value head. Each head's sums are those of one
/// head alone, in the same order: the heads only share the reads of the key and value rows.
// Inlined into each build (baseline, AVX2 + FMA): that is how it gets compiled for both.
#[allow(clippy::inline_always)]
#[inline(always)]
pub(super) fn attend(o: &mut [f32], th: usize, q: &[f32], k: &[f32], v: &[f32], g: Geometry) {
    let (t, h) = (th / g.n_heads, th % g.n_heads);
    let (d, n_kv_heads) = (g.d, g.n_kv_heads);
    let heads = o.len() / d;
    let kvh = h / g.group;
    debug_assert!(heads >= 1 && (h + heads - 1) / g.group == kvh);
    let range = g.mask.visible(t, g.q_len, g.kv_len);
    let (first, visible) = (range.start, range.len());
    let qs = &q[th * d..(th + heads) * d];
    // scores[e * visible + j]: head h + e against key first + j.
    let mut scores = vec![0.0f32; heads * visible];
    for j in 0..visible {
        let kr = &k[((first + j) * n_kv_heads + kvh) * d..][..d];
        for (e, qv) in qs.chunks_exact(d).enumerate() {
            scores[e * visible + j] = dot(qv, kr) * g.scale;
        }
    }
    let mut probs = vec![0.0f32; heads * visible];
    for (sr, pr) in scores.chunks_exact(visible).zip(probs.chunks_exact_mut(visible)) {
        softmax_row(sr, pr);
    }
    for j in 0..visible {
        let vv = &v[((first + j) * n_kv_heads + kvh) * d..][..d];
        for (e, oe) in o.chunks_exact_mut(d).enumerate() {
            let p = probs[e * visible + j];
            for (od, &vd) in oe.iter_mut().zip(vv) {
                *od += p * vd;
            }
        }
    }
}
with_avx2!(attend, attend_avx2, attend_best, (o: &mut [f32], th: usize, q: &[f32], k: &[f32], v: &[f32], g: Geometry));
