//! Causal attention forward, flash-style: keys are visited in tiles with an online softmax,
//! so the score row is never materialized and memory stays O(head_dim) per query head.

use aihal_core::{CoreError, Result};
use cubecl::prelude::*;

use crate::launch::{cube_index, Context, DeviceBuffer};
use crate::reduce::{cube_max, cube_sum};

/// The head layout of an attention call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AttentionDims {
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads, dividing `n_heads` (grouped-query attention when fewer): query head
    /// `h` reads key/value head `h / (n_heads / n_kv_heads)`.
    pub n_kv_heads: usize,
    /// Values per head.
    pub head_dim: usize,
}

#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn attention_kernel<F: Float>(
    q: &Array<F>,
    k: &Array<F>,
    v: &Array<F>,
    out: &mut Array<F>,
    q_len: u32,
    kv_len: u32,
    n_heads: u32,
    group: u32,
    n_kv_heads: u32,
    head_dim: u32,
    scale: f32,
    #[comptime] units: usize,
    #[comptime] plane: u32,
) {
    // One cube per (query row t, head h); the tile of keys is one key per unit.
    let idx = cube_index();
    let heads = n_heads as usize;
    let d = head_dim as usize;
    let kvh_count = n_kv_heads as usize;
    let u = UNIT_POS as usize;
    let mut qs = SharedMemory::<f32>::new(units);
    let mut ps = SharedMemory::<f32>::new(units);
    let mut red = SharedMemory::<f32>::new(units);
    if idx < (q_len * n_heads) as usize {
        let t = idx / heads;
        let h = idx % heads;
        let kvh = h / group as usize;
        if u < d {
            qs[u] = f32::cast_from(q[idx * d + u]);
        }
        sync_cube();
        let visible = (kv_len - q_len) as usize + t + 1;
        // WGSL has no infinity literal; the lowest finite value makes the first rescale
        // factor exp(MIN - max) exactly 0 all the same.
        let mut m_run = f32::new(f32::MIN);
        let mut l_run = 0.0f32;
        let mut acc = 0.0f32;
        let tiles = visible.div_ceil(units);
        for tile in 0..tiles {
            let j0 = tile * units;
            let j = j0 + u;
            let mut s = f32::new(f32::MIN);
            if j < visible {
                let kb = (j * kvh_count + kvh) * d;
                let mut dot = 0.0f32;
                for c in 0..d {
                    dot += qs[c] * f32::cast_from(k[kb + c]);
                }
                s = dot * scale;
            }
            let tile_max = cube_max(&mut red, s, plane);
            let m_new = f32::max(m_run, tile_max);
            let mut p = 0.0f32;
            if j < visible {
                p = f32::exp(s - m_new);
            }
            ps[u] = p;
            // The reduction's barrier also publishes `ps` to the whole cube.
            let tile_sum = cube_sum(&mut red, p, plane);
            let correction = f32::exp(m_run - m_new);
            l_run = l_run * correction + tile_sum;
            if u < d {
                let mut in_tile = visible - j0;
                if in_tile > units {
                    in_tile = units;
                }
                let mut a = 0.0f32;
                for jj in 0..in_tile {
                    a += ps[jj] * f32::cast_from(v[((j0 + jj) * kvh_count + kvh) * d + u]);
                }
                acc = acc * correction + a;
            }
            m_run = m_new;
            sync_cube();
        }
        if u < d {
            out[idx * d + u] = F::cast_from(acc / l_run);
        }
    }
}

/// Causal scaled-dot-product attention for one sequence, multi-head or grouped-query.
///
/// `q` is `[q_len, n_heads, head_dim]` (the newest tokens), `k` and `v` the caches
/// `[kv_len, n_kv_heads, head_dim]` that already hold those tokens, so query row `t` sees
/// keys `0..=kv_len - q_len + t`. `scale` defaults to `1 / sqrt(head_dim)`. Writes `out`,
/// `[q_len, n_heads, head_dim]`. `head_dim` may be at most the device's cube size (256 on
/// most devices).
#[allow(clippy::too_many_arguments)]
pub fn attention<R: Runtime, F: Float + CubeElement>(
    ctx: &Context<R>,
    q: &DeviceBuffer<R, F>,
    k: &DeviceBuffer<R, F>,
    v: &DeviceBuffer<R, F>,
    kv_len: usize,
    dims: AttentionDims,
    scale: Option<f32>,
    out: &DeviceBuffer<R, F>,
) -> Result<()> {
    ctx.require::<F>("attention")?;
    let AttentionDims {
        n_heads,
        n_kv_heads,
        head_dim,
    } = dims;
    if n_heads == 0 || n_kv_heads == 0 || head_dim == 0 || !n_heads.is_multiple_of(n_kv_heads) {
        return Err(CoreError::invalid_input(format!(
            "attention: heads and head_dim must be positive and n_kv_heads must divide n_heads, got {dims:?}"
        )));
    }
    let row = n_heads * head_dim;
    if !q.len().is_multiple_of(row) || q.is_empty() {
        return Err(CoreError::invalid_input(format!(
            "attention: q holds {} values, not a whole number of rows of n_heads * head_dim = {row}",
            q.len()
        )));
    }
    let q_len = q.len() / row;
    let kv = kv_len * n_kv_heads * head_dim;
    k.expect_len("attention k cache [kv_len, n_kv_heads, head_dim]", kv)?;
    v.expect_len("attention v cache [kv_len, n_kv_heads, head_dim]", kv)?;
    out.expect_len("attention output", q.len())?;
    if q_len > kv_len {
        return Err(CoreError::invalid_input(format!(
            "attention: {q_len} query rows but only {kv_len} cached keys; the caches must include the queried tokens"
        )));
    }
    let units = ctx
        .limits()
        .units_1d(head_dim.next_power_of_two().clamp(32, 256) as u32);
    if (units as usize) < head_dim {
        return Err(CoreError::unsupported(
            format!("attention on {} (at most {units} values per head)", ctx.backend()),
            format!("head_dim {head_dim}"),
        ));
    }
    let scale = scale.unwrap_or(1.0 / (head_dim as f32).sqrt());
    let count = ctx.limits().cube_count_1d((q_len * n_heads) as u64)?;
    let plane = ctx.limits().plane_for(units);
    let as_u32 = |x: usize| {
        u32::try_from(x).map_err(|_| CoreError::invalid_input(format!("attention: {x} exceeds 32-bit indexing")))
    };
    let (ql, kl, nh, g, nkv, hd) = (
        as_u32(q_len)?,
        as_u32(kv_len)?,
        as_u32(n_heads)?,
        as_u32(n_heads / n_kv_heads)?,
        as_u32(n_kv_heads)?,
        as_u32(head_dim)?,
    );
    as_u32(kv.max(q.len()))?;
    ctx.launch("attention", || {
        attention_kernel::launch::<F, R>(
            ctx.client(),
            count,
            CubeDim::new_1d(units),
            q.arg(),
            k.arg(),
            v.arg(),
            out.arg(),
            ql,
            kl,
            nh,
            g,
            nkv,
            hd,
            scale,
            units as usize,
            plane,
        );
    })
}
