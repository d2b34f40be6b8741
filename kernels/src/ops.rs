//! The transformer glue: RMSNorm, LayerNorm, softmax, the activations (SiLU, GELU in its
//! tanh and erf forms), gated activations, elementwise addition and a row-broadcast bias.
//!
//! Values are read as `F` (f32 or f16), computed in f32 and written as `F`. Row ops run one
//! cube per row with a cube reduction; elementwise ops one unit per value.

use aihal_core::{CoreError, Result};
use aihal_reference::GateActivation;
use cubecl::prelude::*;

use crate::launch::{cube_index, Context, DeviceBuffer};
use crate::reduce::{cube_max, cube_sum};

/// The elementwise functions, as compile-time values of the kernels.
mod func {
    pub(super) const SILU: u32 = 0;
    pub(super) const GELU_TANH: u32 = 1;
    pub(super) const GELU_ERF: u32 = 2;
    /// `a + b` (binary kernel only).
    pub(super) const ADD: u32 = 3;
}

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
#[allow(clippy::too_many_arguments)]
fn layer_norm_kernel<F: Float>(
    x: &Array<F>,
    weight: &Array<F>,
    bias: &Array<F>,
    y: &mut Array<F>,
    rows: u32,
    dim: u32,
    eps: f32,
    #[comptime] has_bias: bool,
    #[comptime] units: usize,
    #[comptime] plane: u32,
) {
    let row = cube_index();
    let dim = dim as usize;
    let mut smem = SharedMemory::<f32>::new(units);
    if row < rows as usize {
        let base = row * dim;
        let steps = dim.div_ceil(units);
        let n = f32::cast_from(dim);
        let mut sum = 0.0f32;
        for s in 0..steps {
            let c = s * units + UNIT_POS as usize;
            if c < dim {
                sum += f32::cast_from(x[base + c]);
            }
        }
        let mean = cube_sum(&mut smem, sum, plane) / n;
        // The second pass over (x - mean)², as the reference: no cancellation of E[x²] - mean².
        let mut sq = 0.0f32;
        for s in 0..steps {
            let c = s * units + UNIT_POS as usize;
            if c < dim {
                let d = f32::cast_from(x[base + c]) - mean;
                sq += d * d;
            }
        }
        let var = cube_sum(&mut smem, sq, plane) / n;
        let inv = 1.0f32 / f32::sqrt(var + eps);
        for s in 0..steps {
            let c = s * units + UNIT_POS as usize;
            if c < dim {
                let mut v = (f32::cast_from(x[base + c]) - mean) * inv * f32::cast_from(weight[c]);
                if has_bias {
                    v += f32::cast_from(bias[c]);
                }
                y[base + c] = F::cast_from(v);
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

/// `1 + erf(z)` in f32, without cancellation for negative `z`.
///
/// For `|z| < 0.5`, the Maclaurin series of erf to the `z¹³` term (truncation below 1e-9
/// relative). Beyond, the rational form of Abramowitz and Stegun 7.1.26,
/// `erfc |z| ≈ t (a₁ + t (a₂ + t (a₃ + t (a₄ + t a₅)))) e^{-z²}` with `t = 1 / (1 + p |z|)`,
/// whose absolute error is at most 1.5e-7; `1 + erf z` is `2 - erfc |z|` for positive `z` and
/// `erfc |z|` itself for negative `z`. Overall: within 1.5e-7 absolute plus f32 rounding of a
/// few units in the last place.
#[cube]
#[allow(clippy::approx_constant)] // 2/√π and 1/√2 as f32 literals: std's constants do not expand in cube code
fn one_plus_erf(z: f32) -> f32 {
    let a = f32::abs(z);
    if a < 0.5f32 {
        let z2 = z * z;
        // Σ (-1)ⁿ z^(2n+1) / (n! (2n+1)), n = 0..=6 (1/9360, 1/1320, 1/216, 1/42, 1/10,
        // 1/3, 1), times 2/√π.
        let mut s = z2 * 1.068_376_1e-4f32 - 7.575_757_6e-4f32;
        s = s * z2 + 4.629_629_6e-3f32;
        s = s * z2 - 2.380_952_4e-2f32;
        s = s * z2 + 0.1f32;
        s = s * z2 - 0.333_333_34f32;
        s = s * z2 + 1.0f32;
        1.0f32 + 1.128_379_2f32 * z * s
    } else {
        let t = 1.0f32 / (1.0f32 + 0.327_591_1f32 * a);
        let mut p = t * 1.061_405_4f32 - 1.453_152f32;
        p = p * t + 1.421_413_7f32;
        p = p * t - 0.284_496_74f32;
        p = p * t + 0.254_829_6f32;
        let erfc = p * t * f32::exp(f32::new(0.0) - a * a);
        if z > 0.0f32 {
            2.0f32 - erfc
        } else {
            erfc
        }
    }
}

/// One elementwise function of `v` in f32 (`op` one of `func`, not `ADD`).
#[cube]
fn apply(v: f32, #[comptime] op: u32) -> f32 {
    if op == func::GELU_TANH {
        let inner = 0.797_884_6f32 * (v + 0.044_715f32 * v * v * v);
        0.5f32 * v * (1.0f32 + f32::tanh(inner))
    } else if op == func::GELU_ERF {
        0.5f32 * v * one_plus_erf(v * 0.707_106_77f32)
    } else {
        v / (1.0f32 + f32::exp(-v))
    }
}

#[cube(launch)]
fn unary_kernel<F: Float>(x: &Array<F>, y: &mut Array<F>, n: u32, #[comptime] op: u32) {
    let i = cube_index() * CUBE_DIM as usize + UNIT_POS as usize;
    if i < n as usize {
        y[i] = F::cast_from(apply(f32::cast_from(x[i]), op));
    }
}

#[cube(launch)]
fn binary_kernel<F: Float>(a: &Array<F>, b: &Array<F>, y: &mut Array<F>, n: u32, #[comptime] op: u32) {
    let i = cube_index() * CUBE_DIM as usize + UNIT_POS as usize;
    if i < n as usize {
        let u = f32::cast_from(b[i]);
        if op == func::ADD {
            y[i] = F::cast_from(f32::cast_from(a[i]) + u);
        } else {
            y[i] = F::cast_from(apply(f32::cast_from(a[i]), op) * u);
        }
    }
}

#[cube(launch)]
fn bias_kernel<F: Float>(y: &mut Array<F>, bias: &Array<F>, n: u32, cols: u32) {
    let i = cube_index() * CUBE_DIM as usize + UNIT_POS as usize;
    if i < n as usize {
        y[i] = F::cast_from(f32::cast_from(y[i]) + f32::cast_from(bias[i % cols as usize]));
    }
}

pub(crate) fn rows_of(op: &str, len: usize, dim: usize) -> Result<usize> {
    if dim == 0 || !len.is_multiple_of(dim) {
        return Err(CoreError::invalid_input(format!(
            "{op}: {len} values are not a whole number of rows of {dim}"
        )));
    }
    Ok(len / dim)
}

pub(crate) fn u32_of(op: &str, v: usize) -> Result<u32> {
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

/// One unit per element: the cube size and count for `n` elements.
pub(crate) fn elementwise_launch<R: Runtime>(ctx: &Context<R>, n: usize) -> Result<(CubeCount, u32)> {
    let units = ctx.limits().units_1d(256);
    Ok((
        ctx.limits().cube_count_1d((n as u64).div_ceil(u64::from(units)))?,
        units,
    ))
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
    check_eps("rms_norm", eps)?;
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

/// LayerNorm over rows of `dim`: `y = (x - mean) / sqrt(var + eps) * weight + bias`, the
/// variance biased (divided by `dim`) and computed in a second pass over `(x - mean)²`, as
/// `aihal_reference::layer_norm`. `bias` (optional) and `weight` have `dim` values.
#[allow(clippy::too_many_arguments)]
pub fn layer_norm<R: Runtime, F: Float + CubeElement>(
    ctx: &Context<R>,
    x: &DeviceBuffer<R, F>,
    dim: usize,
    weight: &DeviceBuffer<R, F>,
    bias: Option<&DeviceBuffer<R, F>>,
    eps: f32,
    y: &DeviceBuffer<R, F>,
) -> Result<()> {
    ctx.require::<F>("layer_norm")?;
    let rows = rows_of("layer_norm", x.len(), dim)?;
    weight.expect_len("layer_norm weight", dim)?;
    if let Some(b) = bias {
        b.expect_len("layer_norm bias", dim)?;
    }
    y.expect_len("layer_norm output", x.len())?;
    check_eps("layer_norm", eps)?;
    let (count, units, plane) = row_launch(ctx, rows, dim)?;
    let (rows, dim) = (u32_of("layer_norm", rows)?, u32_of("layer_norm", dim)?);
    // Without a bias the kernel never reads its bias argument: the weight stands in.
    let bias_arg = bias.unwrap_or(weight).arg();
    ctx.launch("layer_norm", || {
        layer_norm_kernel::launch::<F, R>(
            ctx.client(),
            count,
            CubeDim::new_1d(units),
            x.arg(),
            weight.arg(),
            bias_arg,
            y.arg(),
            rows,
            dim,
            eps,
            bias.is_some(),
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

fn unary<R: Runtime, F: Float + CubeElement>(
    ctx: &Context<R>,
    x: &DeviceBuffer<R, F>,
    y: &DeviceBuffer<R, F>,
    op: u32,
    name: &str,
) -> Result<()> {
    ctx.require::<F>(name)?;
    y.expect_len(&format!("{name} output"), x.len())?;
    let (count, units) = elementwise_launch(ctx, x.len())?;
    let n = u32_of(name, x.len())?;
    ctx.launch(name, || {
        unary_kernel::launch::<F, R>(ctx.client(), count, CubeDim::new_1d(units), x.arg(), y.arg(), n, op);
    })
}

/// SiLU: `x / (1 + exp(-x))`, elementwise into `y`.
pub fn silu<R: Runtime, F: Float + CubeElement>(
    ctx: &Context<R>,
    x: &DeviceBuffer<R, F>,
    y: &DeviceBuffer<R, F>,
) -> Result<()> {
    unary(ctx, x, y, func::SILU, "silu")
}

/// GELU, tanh approximation: `0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³)))`, elementwise.
pub fn gelu<R: Runtime, F: Float + CubeElement>(
    ctx: &Context<R>,
    x: &DeviceBuffer<R, F>,
    y: &DeviceBuffer<R, F>,
) -> Result<()> {
    unary(ctx, x, y, func::GELU_TANH, "gelu")
}

/// GELU, erf form: `0.5 x (1 + erf(x / √2))`, elementwise.
///
/// Accuracy: erf is a series near 0 and Abramowitz and Stegun 7.1.26 beyond (absolute error
/// at most 1.5e-7), so the result is within `7.5e-8 |x|` of the exact GELU plus f32 rounding
/// (a few units in the last place, and the device's `exp`).
pub fn gelu_erf<R: Runtime, F: Float + CubeElement>(
    ctx: &Context<R>,
    x: &DeviceBuffer<R, F>,
    y: &DeviceBuffer<R, F>,
) -> Result<()> {
    unary(ctx, x, y, func::GELU_ERF, "gelu_erf")
}

fn binary<R: Runtime, F: Float + CubeElement>(
    ctx: &Context<R>,
    a: &DeviceBuffer<R, F>,
    b: &DeviceBuffer<R, F>,
    y: &DeviceBuffer<R, F>,
    op: u32,
    name: &str,
) -> Result<()> {
    ctx.require::<F>(name)?;
    b.expect_len(&format!("{name} second input"), a.len())?;
    y.expect_len(&format!("{name} output"), a.len())?;
    let (count, units) = elementwise_launch(ctx, a.len())?;
    let n = u32_of(name, a.len())?;
    ctx.launch(name, || {
        binary_kernel::launch::<F, R>(
            ctx.client(),
            count,
            CubeDim::new_1d(units),
            a.arg(),
            b.arg(),
            y.arg(),
            n,
            op,
        );
    })
}

/// `y = a + b`, elementwise (exact: one rounding, as on the host).
pub fn add<R: Runtime, F: Float + CubeElement>(
    ctx: &Context<R>,
    a: &DeviceBuffer<R, F>,
    b: &DeviceBuffer<R, F>,
    y: &DeviceBuffer<R, F>,
) -> Result<()> {
    binary(ctx, a, b, y, func::ADD, "add")
}

/// A gated MLP's middle, `y = act(gate) * up`, elementwise, with `act` as [`silu`],
/// [`gelu`] or [`gelu_erf`] compute it.
pub fn gated<R: Runtime, F: Float + CubeElement>(
    ctx: &Context<R>,
    gate: &DeviceBuffer<R, F>,
    up: &DeviceBuffer<R, F>,
    act: GateActivation,
    y: &DeviceBuffer<R, F>,
) -> Result<()> {
    let op = match act {
        GateActivation::Silu => func::SILU,
        GateActivation::GeluTanh => func::GELU_TANH,
        GateActivation::GeluErf => func::GELU_ERF,
    };
    binary(ctx, gate, up, y, op, "gated activation")
}

/// Adds `bias` (`cols` values) to every row of `y` (`[rows, cols]`), in place.
pub fn add_bias<R: Runtime, F: Float + CubeElement>(
    ctx: &Context<R>,
    y: &DeviceBuffer<R, F>,
    bias: &DeviceBuffer<R, F>,
) -> Result<()> {
    ctx.require::<F>("bias")?;
    rows_of("bias (rows of the bias length)", y.len(), bias.len())?;
    let (count, units) = elementwise_launch(ctx, y.len())?;
    let (n, cols) = (u32_of("bias", y.len())?, u32_of("bias", bias.len())?);
    ctx.launch("bias", || {
        bias_kernel::launch::<F, R>(
            ctx.client(),
            count,
            CubeDim::new_1d(units),
            y.arg(),
            bias.arg(),
            n,
            cols,
        );
    })
}
