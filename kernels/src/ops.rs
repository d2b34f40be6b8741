//! The transformer glue: RMSNorm, softmax, SiLU, GELU and rotary embedding.
//!
//! Values are read as `F` (f32 or f16), computed in f32 and written as `F`. Row ops run one
//! cube per row with a cube reduction.

use aihal_core::{CoreError, Result};
use cubecl::prelude::*;

use crate::launch::{cube_index, Context, DeviceBuffer};
use crate::reduce::{cube_max, cube_sum};

#[cube(launch)]
fn rms_norm_kernel<F: Float>(
    x: &Array<F>,
    weight: &Array<F>,
    y: &mut Array<F>,
    rows: u32,
    dim: u32,
    eps: f32,
    #[comptime] units: usize,
    #[comptime] plane: u32,
) {
    let row = cube_index();
    let dim = dim as usize;
    let mut smem = SharedMemory::<f32>::new(units);
    if row < rows as usize {
        let base = row * dim;
        let steps = dim.div_ceil(units);
        let mut sq = 0.0f32;
        for s in 0..steps {
            let c = s * units + UNIT_POS as usize;
            if c < dim {
                let v = f32::cast_from(x[base + c]);
                sq += v * v;
            }
        }
        let total = cube_sum(&mut smem, sq, plane);
        let inv = 1.0f32 / f32::sqrt(total / f32::cast_from(dim) + eps);
        for s in 0..steps {
            let c = s * units + UNIT_POS as usize;
            if c < dim {
                y[base + c] = F::cast_from(f32::cast_from(x[base + c]) * inv * f32::cast_from(weight[c]));
            }
        }
    }
}

#[cube(launch)]
fn softmax_kernel<F: Float>(
    x: &Array<F>,
    y: &mut Array<F>,
    rows: u32,
    dim: u32,
    #[comptime] units: usize,
    #[comptime] plane: u32,
) {
    let row = cube_index();
    let dim = dim as usize;
    let mut smem = SharedMemory::<f32>::new(units);
    if row < rows as usize {
        let base = row * dim;
        let steps = dim.div_ceil(units);
        // WGSL has no infinity literal: start from the lowest finite value. A row whose
        // values are all -inf then sums to exactly 0, which marks it as masked.
        let mut local_max = f32::new(f32::MIN);
        for s in 0..steps {
            let c = s * units + UNIT_POS as usize;
            if c < dim {
                local_max = f32::max(local_max, f32::cast_from(x[base + c]));
            }
        }
        let max = cube_max(&mut smem, local_max, plane);
        let mut local_sum = 0.0f32;
        for s in 0..steps {
            let c = s * units + UNIT_POS as usize;
            if c < dim {
                local_sum += f32::exp(f32::cast_from(x[base + c]) - max);
            }
        }
        let sum = cube_sum(&mut smem, local_sum, plane);
        let inv = 1.0f32 / sum;
        // A row masked entirely (every value -inf) is all zeros, as in the reference.
        let masked = sum == 0.0f32;
        for s in 0..steps {
            let c = s * units + UNIT_POS as usize;
            if c < dim {
                let mut p = 0.0f32;
                if !masked {
                    p = f32::exp(f32::cast_from(x[base + c]) - max) * inv;
                }
                y[base + c] = F::cast_from(p);
            }
        }
    }
}

#[cube(launch)]
fn activation_kernel<F: Float>(x: &Array<F>, y: &mut Array<F>, #[comptime] gelu: bool) {
    let i = cube_index() * CUBE_DIM as usize + UNIT_POS as usize;
    if i < x.len() {
        let v = f32::cast_from(x[i]);
        if gelu {
            let inner = 0.797_884_6f32 * (v + 0.044_715f32 * v * v * v);
            y[i] = F::cast_from(0.5f32 * v * (1.0f32 + f32::tanh(inner)));
        } else {
            y[i] = F::cast_from(v / (1.0f32 + f32::exp(-v)));
        }
    }
}

#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn rope_kernel<F: Float>(
    x: &Array<F>,
    sin: &Array<f32>,
    cos: &Array<f32>,
    y: &mut Array<F>,
    pairs: u32,
    n_heads: u32,
    head_dim: u32,
    #[comptime] interleaved: bool,
) {
    // One unit per rotated pair: pair p is (token s, head h, index i).
    let p = cube_index() * CUBE_DIM as usize + UNIT_POS as usize;
    if p < pairs as usize {
        let d = head_dim as usize;
        let half = d / 2;
        let heads = n_heads as usize;
        let i = p % half;
        let h = (p / half) % heads;
        let s = p / (half * heads);
        let base = (s * heads + h) * d;
        let mut ia = base + i;
        let mut ib = base + i + half;
        if interleaved {
            ia = base + 2 * i;
            ib = base + 2 * i + 1;
        }
        let a = f32::cast_from(x[ia]);
        let b = f32::cast_from(x[ib]);
        let sn = sin[s * half + i];
        let cs = cos[s * half + i];
        y[ia] = F::cast_from(a * cs - b * sn);
        y[ib] = F::cast_from(a * sn + b * cs);
    }
}

/// Which pairs of a head's values rotary embedding rotates together.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum RopeStyle {
    /// Pairs `(i, i + head_dim/2)`: GPT-NeoX and Hugging Face Llama.
    #[default]
    Half,
    /// Pairs `(2i, 2i + 1)`: GPT-J and the original Llama checkpoints.
    Interleaved,
}

fn rows_of(op: &str, len: usize, dim: usize) -> Result<usize> {
    if dim == 0 || !len.is_multiple_of(dim) {
        return Err(CoreError::invalid_input(format!(
            "{op}: {len} values are not a whole number of rows of {dim}"
        )));
    }
    Ok(len / dim)
}

fn u32_of(op: &str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| CoreError::invalid_input(format!("{op}: {v} exceeds the kernels' 32-bit indexing")))
}

fn row_launch<R: Runtime>(ctx: &Context<R>, rows: usize, dim: usize) -> Result<(CubeCount, u32, u32)> {
    let units = ctx.limits().units_1d(dim.next_power_of_two().clamp(32, 256) as u32);
    Ok((
        ctx.limits().cube_count_1d(rows as u64)?,
        units,
        ctx.limits().plane_for(units),
    ))
}

/// RMSNorm over rows of `dim`: `y = x / sqrt(mean(x²) + eps) * weight` (`weight` has `dim`
/// values; `y` has the length of `x`).
pub fn rms_norm<R: Runtime, F: Float + CubeElement>(
    ctx: &Context<R>,
    x: &DeviceBuffer<R, F>,
    dim: usize,
    weight: &DeviceBuffer<R, F>,
    eps: f32,
    y: &DeviceBuffer<R, F>,
) -> Result<()> {
    ctx.require::<F>("rms_norm")?;
    let rows = rows_of("rms_norm", x.len(), dim)?;
    weight.expect_len("rms_norm weight", dim)?;
    y.expect_len("rms_norm output", x.len())?;
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(CoreError::invalid_input(format!(
            "rms_norm: eps must be finite and ≥ 0, got {eps}"
        )));
    }
    let (count, units, plane) = row_launch(ctx, rows, dim)?;
    let (rows, dim) = (u32_of("rms_norm", rows)?, u32_of("rms_norm", dim)?);
    ctx.launch("rms_norm", || {
        rms_norm_kernel::launch::<F, R>(
            ctx.client(),
            count,
            CubeDim::new_1d(units),
            x.arg(),
            weight.arg(),
            y.arg(),
            rows,
            dim,
            eps,
            units as usize,
            plane,
        );
    })
}

/// Softmax over rows of `dim`: `exp(x - max) / Σ exp(x - max)`; a row that is all `-inf`
/// gives zeros.
pub fn softmax<R: Runtime, F: Float + CubeElement>(
    ctx: &Context<R>,
    x: &DeviceBuffer<R, F>,
    dim: usize,
    y: &DeviceBuffer<R, F>,
) -> Result<()> {
    ctx.require::<F>("softmax")?;
    let rows = rows_of("softmax", x.len(), dim)?;
    y.expect_len("softmax output", x.len())?;
    let (count, units, plane) = row_launch(ctx, rows, dim)?;
    let (rows, dim) = (u32_of("softmax", rows)?, u32_of("softmax", dim)?);
    ctx.launch("softmax", || {
        softmax_kernel::launch::<F, R>(
            ctx.client(),
            count,
            CubeDim::new_1d(units),
            x.arg(),
            y.arg(),
            rows,
            dim,
            units as usize,
            plane,
        );
    })
}

fn activation<R: Runtime, F: Float + CubeElement>(
    ctx: &Context<R>,
    x: &DeviceBuffer<R, F>,
    y: &DeviceBuffer<R, F>,
    gelu: bool,
) -> Result<()> {
    let op = if gelu { "gelu" } else { "silu" };
    ctx.require::<F>(op)?;
    y.expect_len(&format!("{op} output"), x.len())?;
    let units = ctx.limits().units_1d(256);
    let count = ctx
        .limits()
        .cube_count_1d((x.len() as u64).div_ceil(u64::from(units)))?;
    ctx.launch(op, || {
        activation_kernel::launch::<F, R>(ctx.client(), count, CubeDim::new_1d(units), x.arg(), y.arg(), gelu);
    })
}

/// SiLU: `x / (1 + exp(-x))`, elementwise into `y`.
pub fn silu<R: Runtime, F: Float + CubeElement>(
    ctx: &Context<R>,
    x: &DeviceBuffer<R, F>,
    y: &DeviceBuffer<R, F>,
) -> Result<()> {
    activation(ctx, x, y, false)
}

/// GELU, tanh approximation: `0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³)))`, elementwise.
pub fn gelu<R: Runtime, F: Float + CubeElement>(
    ctx: &Context<R>,
    x: &DeviceBuffer<R, F>,
    y: &DeviceBuffer<R, F>,
) -> Result<()> {
    activation(ctx, x, y, true)
}

/// The `(sin, cos)` tables of rotary embedding for `seq` tokens from position `pos0`, each
/// `[seq, head_dim / 2]`: angle `(pos0 + s) * theta^(-2i/head_dim)`, computed in f64 and
/// rounded to f32. Upload them once per sequence and reuse them for every layer.
pub fn rope_tables(seq: usize, head_dim: usize, pos0: usize, theta: f32) -> Result<(Vec<f32>, Vec<f32>)> {
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
    let half = head_dim / 2;
    let mut sin = Vec::with_capacity(seq * half);
    let mut cos = Vec::with_capacity(seq * half);
    for s in 0..seq {
        let pos = (pos0 + s) as f64;
        for i in 0..half {
            let freq = f64::from(theta).powf(-2.0 * i as f64 / head_dim as f64);
            let (sn, cs) = (pos * freq).sin_cos();
            sin.push(sn as f32);
            cos.push(cs as f32);
        }
    }
    Ok((sin, cos))
}

/// Rotary position embedding of `x` laid out `[seq, n_heads, head_dim]` with tables from
/// [`rope_tables`] for the same `seq` and `head_dim`; writes `y` (same length as `x`).
#[allow(clippy::too_many_arguments)]
pub fn rope<R: Runtime, F: Float + CubeElement>(
    ctx: &Context<R>,
    x: &DeviceBuffer<R, F>,
    n_heads: usize,
    head_dim: usize,
    sin: &DeviceBuffer<R, f32>,
    cos: &DeviceBuffer<R, f32>,
    style: RopeStyle,
    y: &DeviceBuffer<R, F>,
) -> Result<()> {
    ctx.require::<F>("rope")?;
    if head_dim == 0 || !head_dim.is_multiple_of(2) {
        return Err(CoreError::invalid_input(format!(
            "rope: head_dim must be even and positive, got {head_dim}"
        )));
    }
    let seq = rows_of("rope", x.len(), n_heads * head_dim)?;
    let half = head_dim / 2;
    sin.expect_len("rope sin table [seq, head_dim/2]", seq * half)?;
    cos.expect_len("rope cos table [seq, head_dim/2]", seq * half)?;
    y.expect_len("rope output", x.len())?;
    let pairs = x.len() / 2;
    let units = ctx.limits().units_1d(256);
    let count = ctx.limits().cube_count_1d((pairs as u64).div_ceil(u64::from(units)))?;
    let (pairs, heads, hd) = (
        u32_of("rope", pairs)?,
        u32_of("rope", n_heads)?,
        u32_of("rope", head_dim)?,
    );
    ctx.launch("rope", || {
        rope_kernel::launch::<F, R>(
            ctx.client(),
            count,
            CubeDim::new_1d(units),
            x.arg(),
            sin.arg(),
            cos.arg(),
            y.arg(),
            pairs,
            heads,
            hd,
            style == RopeStyle::Interleaved,
        );
    })
}
