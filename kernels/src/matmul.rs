//! Fused quantized matmul `y = x · Wᵀ`: the weight is decoded from its packed layout inside
//! the kernel, never materialized in f32.
//!
//! - M = 1 (a decode step): a GEMV with one cube per output feature; its units stride over
//!   K and meet in a cube reduction (plane operations where the device has them). For the
//!   32-value GGML blocks (Q8_0, Q4_0) each unit takes whole blocks and applies the block's
//!   scale once to an integer-weighted sum.
//! - M > 1: a tiled GEMM; each cube stages a tile of x and a decoded tile of W in shared
//!   memory, so each weight is decoded once per tile of rows.
//!
//! Activations and outputs are f32 or f16; products are accumulated in f32.

use aihal_core::{CoreError, Result};
use cubecl::prelude::*;

use crate::decode::{byte_at, decode, f16_at, i8_of, kind};
use crate::launch::{cube_index, Context, DeviceBuffer};
use crate::packed::DeviceQuantized;
use crate::reduce::cube_sum;

/// Side of the output tile of the GEMM (units per cube: `GEMM_TILE²`, reduced on devices
/// that accept fewer).
const GEMM_TILE: u32 = 16;
/// K values staged per step of the GEMM.
const GEMM_TK: usize = 32;

#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn gemv_kernel<F: Float>(
    x: &Array<F>,
    data: &Array<u32>,
    scales: &Array<f32>,
    lut: &Array<f32>,
    nested: &Array<u32>,
    nested_scales: &Array<f32>,
    y: &mut Array<F>,
    n: u32,
    k: u32,
    #[comptime] layout: u32,
    #[comptime] block: usize,
    #[comptime] nested_block: usize,
    #[comptime] units: usize,
    #[comptime] plane: u32,
) {
    let row = cube_index();
    let k = k as usize;
    let mut smem = SharedMemory::<f32>::new(units);
    let mut acc = 0.0f32;
    // `row` is the same for every unit of the cube, so the reduction below stays uniform.
    if row < n as usize {
        let steps = k.div_ceil(units);
        for step in 0..steps {
            let col = step * units + UNIT_POS as usize;
            if col < k {
                let w = decode(
                    data,
                    scales,
                    lut,
                    nested,
                    nested_scales,
                    row * k + col,
                    row,
                    col,
                    k,
                    layout,
                    block,
                    nested_block,
                );
                acc += f32::cast_from(x[col]) * w;
            }
        }
        let total = cube_sum(&mut smem, acc, plane);
        if UNIT_POS == 0 {
            y[row] = F::cast_from(total);
        }
    }
}

/// GEMV for the 32-value GGML blocks (Q8_0, Q4_0): each unit takes whole blocks, decodes the
/// f16 scale once per block and multiplies it into the block's integer-weighted sum.
#[cube(launch)]
fn gemv_ggml_kernel<F: Float>(
    x: &Array<F>,
    data: &Array<u32>,
    y: &mut Array<F>,
    n: u32,
    k: u32,
    #[comptime] layout: u32,
    #[comptime] units: usize,
    #[comptime] plane: u32,
) {
    let row = cube_index();
    let k = k as usize;
    let blocks = k / 32;
    let mut smem = SharedMemory::<f32>::new(units);
    let mut acc = 0.0f32;
    if row < n as usize {
        let steps = blocks.div_ceil(units);
        for step in 0..steps {
            let b = step * units + UNIT_POS as usize;
            if b < blocks {
                let col0 = b * 32;
                let mut block_sum = 0.0f32;
                if layout == kind::Q8_0 {
                    let base = (row * blocks + b) * 34;
                    #[unroll]
                    for j in 0..32usize {
                        block_sum += i8_of(byte_at(data, base + 2 + j)) * f32::cast_from(x[col0 + j]);
                    }
                    acc += f16_at(data, base) * block_sum;
                } else {
                    let base = (row * blocks + b) * 18;
                    #[unroll]
                    for j in 0..16usize {
                        let byte = byte_at(data, base + 2 + j);
                        let lo = f32::cast_from(byte & 0xFu32) - 8.0f32;
                        let hi = f32::cast_from(byte >> 4u32) - 8.0f32;
                        block_sum += lo * f32::cast_from(x[col0 + j]) + hi * f32::cast_from(x[col0 + 16 + j]);
                    }
                    acc += f16_at(data, base) * block_sum;
                }
            }
        }
        let total = cube_sum(&mut smem, acc, plane);
        if UNIT_POS == 0 {
            y[row] = F::cast_from(total);
        }
    }
}

#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn gemm_kernel<F: Float>(
    x: &Array<F>,
    data: &Array<u32>,
    scales: &Array<f32>,
    lut: &Array<f32>,
    nested: &Array<u32>,
    nested_scales: &Array<f32>,
    y: &mut Array<F>,
    m: u32,
    n: u32,
    k: u32,
    #[comptime] layout: u32,
    #[comptime] block: usize,
    #[comptime] nested_block: usize,
    #[comptime] tile: usize,
    #[comptime] tk: usize,
) {
    let (m, n, k) = (m as usize, n as usize, k as usize);
    let tx = UNIT_POS_X as usize;
    let ty = UNIT_POS_Y as usize;
    let n0 = CUBE_POS_X as usize * tile;
    let m0 = CUBE_POS_Y as usize * tile;
    let lin = ty * tile + tx;
    let mut xs = SharedMemory::<f32>::new(tile * tk);
    let mut ws = SharedMemory::<f32>::new(tile * tk);
    let mut acc = 0.0f32;
    let steps = k.div_ceil(tk);
    for step in 0..steps {
        let k0 = step * tk;
        let mut e = lin;
        while e < tile * tk {
            let r = e / tk;
            let c = e % tk;
            let gk = k0 + c;
            let gm = m0 + r;
            let gn = n0 + r;
            let mut xv = 0.0f32;
            if gm < m && gk < k {
                xv = f32::cast_from(x[gm * k + gk]);
            }
            let mut wv = 0.0f32;
            if gn < n && gk < k {
                wv = decode(
                    data,
                    scales,
                    lut,
                    nested,
                    nested_scales,
                    gn * k + gk,
                    gn,
                    gk,
                    k,
                    layout,
                    block,
                    nested_block,
                );
            }
            xs[e] = xv;
            ws[e] = wv;
            e += tile * tile;
        }
        sync_cube();
        for c in 0..tk {
            acc += xs[ty * tk + c] * ws[tx * tk + c];
        }
        sync_cube();
    }
    if m0 + ty < m && n0 + tx < n {
        y[(m0 + ty) * n + n0 + tx] = F::cast_from(acc);
    }
}

fn dims<R: Runtime>(w: &DeviceQuantized<R>) -> Result<(usize, usize)> {
    match *w.shape() {
        [n, k] => Ok((n, k)),
        ref other => Err(CoreError::invalid_input(format!(
            "matmul weight must be [N, K], got shape {other:?}"
        ))),
    }
}

fn u32_of(what: &str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| CoreError::invalid_input(format!("{what} = {v} exceeds the kernels' 32-bit indexing")))
}

/// `y = x · Wᵀ` into a new buffer: `x` is `[m, K]` row-major `F` (f32 or f16) on the device,
/// `w` is `[N, K]`; the result is `[m, N]` of `F`.
///
/// Sums run in f32 in an order that differs from the scalar reference (units split K), so
/// results agree with `aihal_reference::matmul` to f32 rounding, not bit for bit.
pub fn quant_matmul<R: Runtime, F: Float + CubeElement>(
    ctx: &Context<R>,
    x: &DeviceBuffer<R, F>,
    m: usize,
    w: &DeviceQuantized<R>,
) -> Result<DeviceBuffer<R, F>> {
    let (n, _) = dims(w)?;
    let out = ctx.alloc::<F>(m * n)?;
    quant_matmul_into::<R, F>(ctx, x, m, w, &out)?;
    Ok(out)
}

/// [`quant_matmul`] into an existing `[m, N]` buffer (reuse it across calls in a hot loop).
pub fn quant_matmul_into<R: Runtime, F: Float + CubeElement>(
    ctx: &Context<R>,
    x: &DeviceBuffer<R, F>,
    m: usize,
    w: &DeviceQuantized<R>,
    out: &DeviceBuffer<R, F>,
) -> Result<()> {
    ctx.require::<F>("quantized matmul")?;
    let (n, k) = dims(w)?;
    if m == 0 {
        return Err(CoreError::invalid_input("matmul with m = 0 rows"));
    }
    let x_len = m
        .checked_mul(k)
        .ok_or_else(|| CoreError::invalid_input("matmul m * K overflows"))?;
    x.expect_len("matmul x [m, K]", x_len)?;
    out.expect_len("matmul output [m, N]", m * n)?;
    let (m32, n32, k32) = (u32_of("m", m)?, u32_of("N", n)?, u32_of("K", k)?);
    u32_of("m * K", x_len)?;
    u32_of("m * N", m * n)?;
    let [data, scales, lut, nested, nested_scales] = w.args();
    let key = w.key;
    let (x_arg, y_arg) = (x.arg(), out.arg());
    let limits = ctx.limits();
    if m == 1 && matches!(key.kind, kind::Q8_0 | kind::Q4_0) {
        // One block per unit: as many units as a row has blocks, 32 to 256.
        let units = limits.units_1d(((k / 32).next_power_of_two()).clamp(32, 256) as u32);
        let count = limits.cube_count_1d(n as u64)?;
        let plane = limits.plane_for(units);
        ctx.launch("gemv", || {
            gemv_ggml_kernel::launch::<F, R>(
                ctx.client(),
                count,
                CubeDim::new_1d(units),
                x_arg,
                data,
                y_arg,
                n32,
                k32,
                key.kind,
                units as usize,
                plane,
            );
        })
    } else if m == 1 {
        let units = limits.units_1d(256);
        let count = limits.cube_count_1d(n as u64)?;
        let plane = limits.plane_for(units);
        ctx.launch("gemv", || {
            gemv_kernel::launch::<F, R>(
                ctx.client(),
                count,
                CubeDim::new_1d(units),
                x_arg,
                data,
                scales,
                lut,
                nested,
                nested_scales,
                y_arg,
                n32,
                k32,
                key.kind,
                key.block,
                key.nested_block,
                units as usize,
                plane,
            );
        })
    } else {
        let mut tile = GEMM_TILE;
        while tile * tile > limits.max_units_per_cube || tile > limits.max_cube_dim_x {
            tile /= 2;
        }
        let (cx, cy) = (n32.div_ceil(tile), m32.div_ceil(tile));
        if cx > limits.max_cube_count.0 || cy > limits.max_cube_count.1 {
            return Err(CoreError::invalid_input(format!(
                "matmul of {m} x {n} needs {cx} x {cy} workgroups, over the device limit {:?}; split the batch",
                limits.max_cube_count
            )));
        }
        ctx.launch("gemm", || {
            gemm_kernel::launch::<F, R>(
                ctx.client(),
                CubeCount::Static(cx, cy, 1),
                CubeDim::new_2d(tile, tile),
                x_arg,
                data,
                scales,
                lut,
                nested,
                nested_scales,
                y_arg,
                m32,
                n32,
                k32,
                key.kind,
                key.block,
                key.nested_block,
                tile as usize,
                GEMM_TK,
            );
        })
    }
}
