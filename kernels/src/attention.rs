//! Attention forward, flash-style: keys are visited in tiles with an online softmax, so the
//! score row is never materialized and memory stays O(head_dim) per query head. Grouped-query
//! heads, a batch of sequences over a preallocated key/value cache, and the masks of
//! `aihal_reference::AttentionMask` (causal, sliding window, padded).
//!
//! The cache layout is `[batch, max_len, n_kv_heads, head_dim]` for keys and for values
//! ([`KvLayout`]); [`kv_append`] writes new positions into it on the device.

use std::ops::Range;

use aihal_core::{CoreError, Result};
use aihal_ops::KvLayout;
use aihal_reference::{AttentionMask, AttentionShape};
use cubecl::prelude::*;

use crate::launch::{cube_index, Context, DeviceBuffer};
use crate::ops::{elementwise_launch, u32_of};
use crate::reduce::{cube_max, cube_sum};

/// The masks, as compile-time values of the kernel.
mod mask {
    pub(super) const CAUSAL: u32 = 0;
    pub(super) const WINDOW: u32 = 1;
    pub(super) const PADDED: u32 = 2;
}

#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn attention_kernel<F: Float>(
    q: &Array<F>,
    k: &Array<F>,
    v: &Array<F>,
    out: &mut Array<F>,
    cubes: u32,
    seq0: u32,
    q_len: u32,
    kv_len: u32,
    max_len: u32,
    n_heads: u32,
    group: u32,
    n_kv_heads: u32,
    head_dim: u32,
    scale: f32,
    bound: u32,
    #[comptime] mask_kind: u32,
    #[comptime] units: usize,
    #[comptime] plane: u32,
) {
    // One cube per (sequence b, query row t, head h); the tile of keys is one key per unit.
    let idx = cube_index();
    let heads = n_heads as usize;
    let d = head_dim as usize;
    let kvh_count = n_kv_heads as usize;
    let rows = q_len as usize;
    let u = UNIT_POS as usize;
    let mut qs = SharedMemory::<f32>::new(units);
    let mut ps = SharedMemory::<f32>::new(units);
    let mut red = SharedMemory::<f32>::new(units);
    // `idx` is the same for every unit of a cube: the reductions below stay uniform.
    if idx < cubes as usize {
        let h = idx % heads;
        let t = (idx / heads) % rows;
        let b = seq0 as usize + idx / (heads * rows);
        let kvh = h / group as usize;
        let qrow = (b * rows + t) * heads + h;
        if u < d {
            qs[u] = f32::cast_from(q[qrow * d + u]);
        }
        sync_cube();
        // Query row t sits at position p; it sees keys lo..hi.
        let p = (kv_len - q_len) as usize + t;
        let mut lo = 0usize;
        let mut hi = p + 1;
        if mask_kind == mask::WINDOW {
            let w = bound as usize;
            if p + 1 > w {
                lo = p + 1 - w;
            }
        } else if mask_kind == mask::PADDED {
            hi = bound as usize;
        }
        let cache = b * max_len as usize;
        // WGSL has no infinity literal; the lowest finite value makes the first rescale
        // factor exp(MIN - max) exactly 0 all the same.
        let mut m_run = f32::new(f32::MIN);
        let mut l_run = 0.0f32;
        let mut acc = 0.0f32;
        let tiles = (hi - lo).div_ceil(units);
        for tile in 0..tiles {
            let j0 = lo + tile * units;
            let j = j0 + u;
            let mut s = f32::new(f32::MIN);
            if j < hi {
                let kb = ((cache + j) * kvh_count + kvh) * d;
                let mut dot = 0.0f32;
                for c in 0..d {
                    dot += qs[c] * f32::cast_from(k[kb + c]);
                }
                s = dot * scale;
            }
            let tile_max = cube_max(&mut red, s, plane);
            let m_new = f32::max(m_run, tile_max);
            let mut pr = 0.0f32;
            if j < hi {
                pr = f32::exp(s - m_new);
            }
            ps[u] = pr;
            // The reduction's barrier also publishes `ps` to the whole cube.
            let tile_sum = cube_sum(&mut red, pr, plane);
            let correction = f32::exp(m_run - m_new);
            l_run = l_run * correction + tile_sum;
            if u < d {
                let mut in_tile = hi - j0;
                if in_tile > units {
                    in_tile = units;
                }
                let mut a = 0.0f32;
                for jj in 0..in_tile {
                    a += ps[jj] * f32::cast_from(v[((cache + j0 + jj) * kvh_count + kvh) * d + u]);
                }
                acc = acc * correction + a;
            }
            m_run = m_new;
            sync_cube();
        }
        if u < d {
            out[qrow * d + u] = F::cast_from(acc / l_run);
        }
    }
}

#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn kv_append_kernel<F: Float>(
    k_new: &Array<F>,
    v_new: &Array<F>,
    k_cache: &mut Array<F>,
    v_cache: &mut Array<F>,
    count: u32,
    seq0: u32,
    q_len: u32,
    row: u32,
    max_len: u32,
    past: u32,
) {
    // One unit per value of the new rows of sequences seq0 ..
    let i = cube_index() * CUBE_DIM as usize + UNIT_POS as usize;
    if i < count as usize {
        let row = row as usize;
        let rows = q_len as usize;
        let r = i % row;
        let t = (i / row) % rows;
        let b = seq0 as usize + i / (row * rows);
        let src = (b * rows + t) * row + r;
        let dst = (b * max_len as usize + past as usize + t) * row + r;
        k_cache[dst] = k_new[src];
        v_cache[dst] = v_new[src];
    }
}

#[cube(launch)]
fn fill_kernel<F: Float>(out: &mut Array<F>, n: u32, value: f32) {
    let i = cube_index() * CUBE_DIM as usize + UNIT_POS as usize;
    if i < n as usize {
        out[i] = F::cast_from(value);
    }
}

/// Sets every element of `out` to `value`.
pub fn fill<R: Runtime, F: Float + CubeElement>(ctx: &Context<R>, out: &DeviceBuffer<R, F>, value: f32) -> Result<()> {
    ctx.require::<F>("fill")?;
    let (count, units) = elementwise_launch(ctx, out.len())?;
    let n = u32_of("fill", out.len())?;
    ctx.launch("fill", || {
        fill_kernel::launch::<F, R>(ctx.client(), count, CubeDim::new_1d(units), out.arg(), n, value);
    })
}

fn check_shape(shape: AttentionShape) -> Result<()> {
    let AttentionShape {
        n_heads,
        n_kv_heads,
        head_dim,
    } = shape;
    if n_heads == 0 || n_kv_heads == 0 || head_dim == 0 || !n_heads.is_multiple_of(n_kv_heads) {
        return Err(CoreError::invalid_input(format!(
            "attention: heads and head_dim must be positive and n_kv_heads must divide n_heads, got {shape:?}"
        )));
    }
    Ok(())
}

/// The values of a whole cache buffer, `batch * max_len * n_kv_heads * head_dim`.
fn cache_len(layout: KvLayout) -> Result<usize> {
    [layout.batch, layout.max_len, layout.n_kv_heads, layout.head_dim]
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| CoreError::invalid_input(format!("KV cache {layout:?} overflows")))
}

fn check_seqs(seqs: &Range<usize>, batch: usize) -> Result<()> {
    if seqs.start >= seqs.end || seqs.end > batch {
        return Err(CoreError::invalid_input(format!(
            "attention: sequences {seqs:?} are not a non-empty range within the batch of {batch}"
        )));
    }
    Ok(())
}

/// The cube size attention uses for `head_dim` on this device: one unit per value of a head,
/// at least 32, at most 256; `None` when the device's cubes cannot hold a head.
pub fn attention_units<R: Runtime>(ctx: &Context<R>, head_dim: usize) -> Option<u32> {
    let units = ctx
        .limits()
        .units_1d(head_dim.next_power_of_two().clamp(32, 256) as u32);
    let shared = 3 * units as usize * 4;
    (units as usize >= head_dim && shared <= ctx.limits().max_shared_memory).then_some(units)
}

/// Writes the new keys and values of sequences `seqs` at positions `past .. past + q_len`
/// of a cache laid out by `layout` (`k_cache`, `v_cache`: `[batch, max_len, n_kv_heads,
/// head_dim]`). `k_new` and `v_new` are `[batch, q_len, n_kv_heads, head_dim]` (every
/// sequence of the batch; only `seqs` are written).
///
/// Errors: `ShapeMismatch`/`InvalidInput` for buffers that do not fit the layout, an empty
/// or out-of-batch range, or positions past `max_len`.
#[allow(clippy::too_many_arguments)]
pub fn kv_append<R: Runtime, F: Float + CubeElement>(
    ctx: &Context<R>,
    k_new: &DeviceBuffer<R, F>,
    v_new: &DeviceBuffer<R, F>,
    k_cache: &DeviceBuffer<R, F>,
    v_cache: &DeviceBuffer<R, F>,
    layout: KvLayout,
    seqs: Range<usize>,
    past: usize,
) -> Result<()> {
    ctx.require::<F>("kv_append")?;
    let total = cache_len(layout)?;
    k_cache.expect_len("KV cache keys [batch, max_len, n_kv_heads, head_dim]", total)?;
    v_cache.expect_len("KV cache values [batch, max_len, n_kv_heads, head_dim]", total)?;
    check_seqs(&seqs, layout.batch)?;
    let row = layout.n_kv_heads * layout.head_dim;
    let per_pos = layout.batch * row;
    if row == 0 || !k_new.len().is_multiple_of(per_pos) {
        return Err(CoreError::invalid_input(format!(
            "kv_append: {} new values are not [batch {}, q_len, {} x {}]",
            k_new.len(),
            layout.batch,
            layout.n_kv_heads,
            layout.head_dim
        )));
    }
    v_new.expect_len("kv_append values (as the keys)", k_new.len())?;
    let q_len = k_new.len() / per_pos;
    if past + q_len > layout.max_len {
        return Err(CoreError::invalid_input(format!(
            "kv_append: positions {past}..{} pass the cache's max_len {}",
            past + q_len,
            layout.max_len
        )));
    }
    if q_len == 0 {
        return Ok(());
    }
    u32_of("kv_append", total)?;
    let count = seqs.len() * q_len * row;
    let (cubes, units) = elementwise_launch(ctx, count)?;
    let args = (
        u32_of("kv_append", count)?,
        u32_of("kv_append", seqs.start)?,
        u32_of("kv_append", q_len)?,
        u32_of("kv_append", row)?,
        u32_of("kv_append", layout.max_len)?,
        u32_of("kv_append", past)?,
    );
    ctx.launch("kv_append", || {
        kv_append_kernel::launch::<F, R>(
            ctx.client(),
            cubes,
            CubeDim::new_1d(units),
            k_new.arg(),
            v_new.arg(),
            k_cache.arg(),
            v_cache.arg(),
            args.0,
            args.1,
            args.2,
            args.3,
            args.4,
            args.5,
        );
    })
}

/// Masked scaled-dot-product attention of sequences `seqs` of a batch over a key/value
/// cache, grouped-query when `shape.n_kv_heads < shape.n_heads`.
///
/// `q` is `[batch, q_len, n_heads, head_dim]` (the newest `q_len` tokens of every sequence),
/// `k_cache` and `v_cache` are laid out by `layout` and hold `kv_len` positions of each
/// sequence in `seqs`, the queried tokens included, so query row `t` sits at position
/// `kv_len - q_len + t` and sees the keys `mask` gives it ([`AttentionMask::visible`]).
/// `scale` defaults to `1 / sqrt(head_dim)`. Writes the rows of `seqs` in `out` (`[batch,
/// q_len, n_heads, head_dim]`); other rows are left as they are.
///
/// Errors: `InvalidInput`/`ShapeMismatch` for shapes that do not fit each other, an empty or
/// out-of-batch range, `kv_len` past `max_len` or below `q_len`, or a mask that does not fit
/// `kv_len`; `Unsupported` when `head_dim` passes the device's cube size
/// ([`attention_units`]).
#[allow(clippy::too_many_arguments)]
pub fn attention_cached<R: Runtime, F: Float + CubeElement>(
    ctx: &Context<R>,
    q: &DeviceBuffer<R, F>,
    k_cache: &DeviceBuffer<R, F>,
    v_cache: &DeviceBuffer<R, F>,
    layout: KvLayout,
    shape: AttentionShape,
    seqs: Range<usize>,
    kv_len: usize,
    mask: AttentionMask,
    scale: Option<f32>,
    out: &DeviceBuffer<R, F>,
) -> Result<()> {
    ctx.require::<F>("attention")?;
    check_shape(shape)?;
    let AttentionShape {
        n_heads,
        n_kv_heads,
        head_dim,
    } = shape;
    if layout.n_kv_heads != n_kv_heads || layout.head_dim != head_dim {
        return Err(CoreError::invalid_input(format!(
            "attention: the cache holds {} heads of {}, the call {n_kv_heads} of {head_dim}",
            layout.n_kv_heads, layout.head_dim
        )));
    }
    check_seqs(&seqs, layout.batch)?;
    let total = cache_len(layout)?;
    k_cache.expect_len("attention k cache [batch, max_len, n_kv_heads, head_dim]", total)?;
    v_cache.expect_len("attention v cache [batch, max_len, n_kv_heads, head_dim]", total)?;
    let row = layout.batch * n_heads * head_dim;
    if q.is_empty() || !q.len().is_multiple_of(row) {
        return Err(CoreError::invalid_input(format!(
            "attention: q holds {} values, not [batch {}, q_len, {n_heads}, {head_dim}]",
            q.len(),
            layout.batch
        )));
    }
    out.expect_len("attention output", q.len())?;
    let q_len = q.len() / row;
    if q_len > kv_len || kv_len > layout.max_len {
        return Err(CoreError::invalid_input(format!(
            "attention: {q_len} query rows over {kv_len} cached positions (at most max_len {}); the cache must include the queried tokens",
            layout.max_len
        )));
    }
    mask.check(kv_len)?;
    let Some(units) = attention_units(ctx, head_dim) else {
        return Err(CoreError::unsupported(
            format!(
                "attention on {} (cubes of at most {} units)",
                ctx.backend(),
                ctx.limits().units_1d(256)
            ),
            format!("head_dim {head_dim}"),
        ));
    };
    let (kind, bound) = match mask {
        AttentionMask::Causal => (mask::CAUSAL, 0),
        AttentionMask::SlidingWindow(w) => (mask::WINDOW, w.min(kv_len)),
        AttentionMask::Padded { valid } => (mask::PADDED, valid),
    };
    let scale = scale.unwrap_or(1.0 / (head_dim as f32).sqrt());
    let cubes = seqs.len() * q_len * n_heads;
    let count = ctx.limits().cube_count_1d(cubes as u64)?;
    let plane = ctx.limits().plane_for(units);
    u32_of("attention", total.max(q.len()))?;
    let args = [
        u32_of("attention", cubes)?,
        u32_of("attention", seqs.start)?,
        u32_of("attention", q_len)?,
        u32_of("attention", kv_len)?,
        u32_of("attention", layout.max_len)?,
        u32_of("attention", n_heads)?,
        u32_of("attention", n_heads / n_kv_heads)?,
        u32_of("attention", n_kv_heads)?,
        u32_of("attention", head_dim)?,
        u32_of("attention", bound)?,
    ];
    ctx.launch("attention", || {
        attention_kernel::launch::<F, R>(
            ctx.client(),
            count,
            CubeDim::new_1d(units),
            q.arg(),
            k_cache.arg(),
            v_cache.arg(),
            out.arg(),
            args[0],
            args[1],
            args[2],
            args[3],
            args[4],
            args[5],
            args[6],
            args[7],
            args[8],
            scale,
            args[9],
            kind,
            units as usize,
            plane,
        );
    })
}

/// Causal scaled-dot-product attention for one sequence, multi-head or grouped-query.
///
/// `q` is `[q_len, n_heads, head_dim]` (the newest tokens), `k` and `v` the caches
/// `[kv_len, n_kv_heads, head_dim]` that already hold those tokens, so query row `t` sees
/// keys `0..=kv_len - q_len + t`. `scale` defaults to `1 / sqrt(head_dim)`. Writes `out`,
/// `[q_len, n_heads, head_dim]`. `head_dim` may be at most the device's cube size (256 on
/// most devices). [`attention_cached`] with a batch of one and a cache of exactly `kv_len`.
#[allow(clippy::too_many_arguments)]
pub fn attention<R: Runtime, F: Float + CubeElement>(
    ctx: &Context<R>,
    q: &DeviceBuffer<R, F>,
    k: &DeviceBuffer<R, F>,
    v: &DeviceBuffer<R, F>,
    kv_len: usize,
    shape: AttentionShape,
    scale: Option<f32>,
    out: &DeviceBuffer<R, F>,
) -> Result<()> {
    check_shape(shape)?;
    let layout = KvLayout {
        batch: 1,
        max_len: kv_len,
        n_kv_heads: shape.n_kv_heads,
        head_dim: shape.head_dim,
    };
    attention_cached(
        ctx,
        q,
        k,
        v,
        layout,
        shape,
        0..1,
        kv_len,
        AttentionMask::Causal,
        scale,
        out,
    )
}
