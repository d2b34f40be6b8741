//! Grouped-query attention for batch 1 (causal, or the key range a mask gives), query heads
//! that share a key/value head in one task.

use aihal_core::Result;
use aihal_reference::{self as reference, AttentionMask, AttentionShape};

use super::softmax::{shifted_exp_lanes, softmax_row};
use super::{dot, dot8};

/// Keys per task when one query row (a decode step) is split over its keys. A constant, so
/// that the sums, and the bits, depend on the inputs alone and never on the thread count.
const SPLIT_KEYS: usize = 32;

/// The bytes of a task's value rows up to which its sums are taken head by head over all its
/// keys (the rows then stay in L1), and beyond which key by key over all heads.
const SMALL_VALUES: usize = 32 << 10;

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
    if q_len == 1 && mask.visible(0, 1, kv_len).len() > SPLIT_KEYS {
        decode_split(&mut out, q, k, v, geometry);
        return Ok(out);
    }
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

/// One query row over more than [`SPLIT_KEYS`] visible keys (a decode step): a task per
/// [`SPLIT_KEYS`] consecutive keys, covering every head, so that the threads share the keys
/// evenly whatever the head count and each reads whole key and value rows (all key/value
/// heads of a position are adjacent), one contiguous stream; then the tasks' partial results
/// are merged in key order. A task gives, per head, the maximum `m` of its scores, the sum
/// `l` of `exp(s - m)` and the sum of `exp(s - m) v`; the merge rescales each by
/// `exp(m - M)` (`M` the largest `m`) and divides by the rescaled sum of the `l`.
fn decode_split(out: &mut [f32], q: &[f32], k: &[f32], v: &[f32], g: Geometry) {
    let range = g.mask.visible(0, 1, g.kv_len);
    let per = g.n_heads * (g.d + 2);
    let starts: Vec<usize> = range.clone().step_by(SPLIT_KEYS).collect();
    let mut parts = vec![0.0f32; starts.len() * per];
    crate::pool::run_tasks(parts.chunks_mut(per).zip(&starts).collect(), |_, (part, &first)| {
        let end = (first + SPLIT_KEYS).min(range.end);
        attend_keys_best(part, first, end, q, k, v, g);
    });
    let d = g.d;
    for (h, o) in out.chunks_exact_mut(d).enumerate() {
        let head = |c: usize| &parts[c * per + h * (d + 2)..][..d + 2];
        // A NaN sum: a NaN or `+inf` score, which makes the reference's softmax row NaN.
        if (0..starts.len()).any(|c| head(c)[1].is_nan()) {
            o.fill(f32::NAN);
            continue;
        }
        let top = (0..starts.len()).fold(f32::NEG_INFINITY, |m, c| m.max(head(c)[0]));
        if top == f32::NEG_INFINITY {
            // Every score `-inf`: the reference's softmax row is all zeros, and so is this.
            o.fill(0.0);
            continue;
        }
        let mut total = 0.0f32;
        for c in 0..starts.len() {
            let part = head(c);
            if part[0] == f32::NEG_INFINITY {
                continue;
            }
            let w = (part[0] - top).exp();
            total += w * part[1];
            for (od, &pd) in o.iter_mut().zip(&part[2..]) {
                *od += w * pd;
            }
        }
        let inv = 1.0 / total;
        for od in o.iter_mut() {
            *od *= inv;
        }
    }
}

/// One task of [`decode_split`]: keys `first..end` of the single query row, every head. Writes
/// `part` (zeroed), per head `h`, at `h * (d + 2)`: the maximum score, the sum of
/// `exp(score - max)`, then the `d` sums of `exp(score - max) * v`.
// Inlined into each build (baseline, AVX2 + FMA): that is how it gets compiled for both.
#[allow(clippy::inline_always)]
#[inline(always)]
fn attend_keys(part: &mut [f32], first: usize, end: usize, q: &[f32], k: &[f32], v: &[f32], g: Geometry) {
    let (d, kv_heads, group) = (g.d, g.n_kv_heads, g.group);
    let n = end - first;
    let row = kv_heads * d;
    // scores[h * n + j]: head h against key first + j.
    let mut scores = vec![0.0f32; g.n_heads * n];
    for (h, sh) in scores.chunks_exact_mut(n).enumerate() {
        let at = (h / group) * d;
        scale_dots(sh, &q[h * d..][..d], |j| &k[(first + j) * row + at..][..d], g.scale);
    }
    // The unnormalized probabilities of every head, then their sums over the values: the same
    // sums in the same order (from 0, key by key) whichever loop runs them.
    let mut probs = vec![0.0f32; g.n_heads * n];
    for (h, ph) in part.chunks_exact_mut(d + 2).enumerate() {
        let (m, l) = shifted_exp_lanes::<8>(&scores[h * n..(h + 1) * n], &mut probs[h * n..(h + 1) * n]);
        ph[0] = m;
        ph[1] = l;
    }
    let live = |ph: &[f32]| ph[0] != f32::NEG_INFINITY && !ph[1].is_nan();
    let values = &v[first * row..end * row];
    if n * row * 4 <= SMALL_VALUES {
        // The task's value rows stay in L1: per head, 32 sums at a time held in registers
        // over every key (no load and store of the sums per key; four independent vectors
        // of additions in flight).
        for (h, ph) in part.chunks_exact_mut(d + 2).enumerate().filter(|(_, ph)| live(ph)) {
            let (p, at) = (&probs[h * n..(h + 1) * n], (h / group) * d);
            let mut lanes = ph[2..].chunks_exact_mut(32);
            let mut c0 = 0;
            for o in &mut lanes {
                let mut acc = [0.0f32; 32];
                for (j, &pj) in p.iter().enumerate() {
                    let vv = &values[j * row + at + c0..][..32];
                    for l in 0..32 {
                        acc[l] += pj * vv[l];
                    }
                }
                o.copy_from_slice(&acc);
                c0 += 32;
            }
            let rest = lanes.into_remainder();
            for (j, &pj) in p.iter().enumerate() {
                for (od, &vd) in rest.iter_mut().zip(&values[j * row + at + c0..]) {
                    *od += pj * vd;
                }
            }
        }
    } else {
        // Long rows (many key/value heads): each value row read once, into every head's sums
        // (a few KiB, in L1), key by key.
        for (j, values) in values.chunks_exact(row).enumerate() {
            for (h, ph) in part.chunks_exact_mut(d + 2).enumerate().filter(|(_, ph)| live(ph)) {
                let p = probs[h * n + j];
                for (od, &vd) in ph[2..].iter_mut().zip(&values[(h / group) * d..][..d]) {
                    *od += p * vd;
                }
            }
        }
    }
}
with_avx2!(attend_keys, attend_keys_avx2, attend_keys_best, (part: &mut [f32], first: usize, end: usize, q: &[f32], k: &[f32], v: &[f32], g: Geometry));

/// `s[j] = dot(q, key(j)) * scale` for every `j` of `s`, 8 keys side by side ([`dot8`]):
/// the bits of one [`dot`] per key.
// Inlined into each build (baseline, AVX2 + FMA): that is how it gets compiled for both.
#[allow(clippy::inline_always)]
#[inline(always)]
fn scale_dots<'k>(s: &mut [f32], q: &[f32], key: impl Fn(usize) -> &'k [f32], scale: f32) {
    let done = s.len() / 8 * 8;
    let mut eights = s.chunks_exact_mut(8);
    for (c, s8) in (&mut eights).enumerate() {
        let r = dot8(q, std::array::from_fn(|e| key(8 * c + e)));
        for (o, v) in s8.iter_mut().zip(r) {
            *o = v * scale;
        }
    }
    for (j, o) in eights.into_remainder().iter_mut().enumerate() {
        *o = dot(q, key(done + j)) * scale;
    }
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
    for (qv, se) in qs.chunks_exact(d).zip(scores.chunks_exact_mut(visible)) {
        scale_dots(se, qv, |j| &k[((first + j) * n_kv_heads + kvh) * d..][..d], g.scale);
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
