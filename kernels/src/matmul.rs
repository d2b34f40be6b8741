//! Fused quantized matmul `y = x · Wᵀ`: the weight is decoded from its packed layout inside
//! the kernel, never materialized in f32.
//!
//! - M = 1 (a decode step): a GEMV with one cube per output feature; its units stride over
//!   K and meet in a cube reduction (plane operations where the device has them). For the
//!   GGML blocks (Q8_0, Q4_0, Q4_1, Q5_0, and the 32-value groups of Q4_K and Q6_K) each
//!   unit takes whole groups and applies each scale (and minimum) once to a sum.
//! - M > 1: a tiled GEMM; each cube stages a tile of x and a decoded tile of W in shared
//!   memory, so each weight is decoded once per tile of rows.
//!
//! Activations and outputs are f32 or f16; products are accumulated in f32.

use aihal_core::{CoreError, Result};
use cubecl::prelude::*;

use crate::decode::{byte_at, decode, f16_at, i8_of, kind, q4k_scale_min, q6k_code, q6k_scale_index};
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

/// `Σ (q - offset) x[col0 + j]` over the 32 values of a block whose nibbles start at byte
/// `at` (Q4_0 order: byte `j` holds value `j` low and `j + 16` high); `qh`, when not zero,
/// holds a fifth bit per value (Q5_0: bit `j` for value `j`).
#[cube]
fn nibble_dot<F: Float>(data: &Array<u32>, at: usize, qh: u32, x: &Array<F>, col0: usize, offset: f32) -> f32 {
    let mut sum = 0.0f32;
    #[unroll]
    for j in 0..16usize {
        let byte = byte_at(data, at + j);
        let lo = (byte & 0xFu32) | (((qh >> (j as u32)) & 1u32) << 4u32);
        let hi = (byte >> 4u32) | (((qh >> ((j + 16) as u32)) & 1u32) << 4u32);
        sum += (f32::cast_from(lo) - offset) * f32::cast_from(x[col0 + j])
            + (f32::cast_from(hi) - offset) * f32::cast_from(x[col0 + 16 + j]);
    }
    sum
}

/// One 32-value group `g` (0..K/32) of row `row` of a GGML-block weight against x: the
/// block's (or sub-block's) scale, and minimum where the format has one, applied once to
/// integer-weighted sums of x. `blocks` is the row's blocks (32 values for Q8_0, Q4_0,
/// Q4_1, Q5_0; 256-value super-blocks of eight groups for Q4_K and Q6_K).
#[cube]
fn group_dot<F: Float>(
    x: &Array<F>,
    data: &Array<u32>,
    row: usize,
    g: usize,
    blocks: usize,
    #[comptime] layout: u32,
) -> f32 {
    let col0 = g * 32;
    if layout == kind::Q8_0 {
        let base = (row * blocks + g) * 34;
        let mut sum = 0.0f32;
        #[unroll]
        for j in 0..32usize {
            sum += i8_of(byte_at(data, base + 2 + j)) * f32::cast_from(x[col0 + j]);
        }
        f16_at(data, base) * sum
    } else if layout == kind::Q4_0 {
        let base = (row * blocks + g) * 18;
        f16_at(data, base) * nibble_dot::<F>(data, base + 2, 0u32, x, col0, 8.0f32)
    } else if layout == kind::Q4_1 {
        // value = q d + m: d Σ q x + m Σ x.
        let base = (row * blocks + g) * 20;
        let mut sum_x = 0.0f32;
        #[unroll]
        for j in 0..32usize {
            sum_x += f32::cast_from(x[col0 + j]);
        }
        f16_at(data, base) * nibble_dot::<F>(data, base + 4, 0u32, x, col0, 0.0f32) + f16_at(data, base + 2) * sum_x
    } else if layout == kind::Q5_0 {
        let base = (row * blocks + g) * 22;
        let qh = byte_at(data, base + 2)
            | (byte_at(data, base + 3) << 8u32)
            | (byte_at(data, base + 4) << 16u32)
            | (byte_at(data, base + 5) << 24u32);
        f16_at(data, base) * nibble_dot::<F>(data, base + 6, qh, x, col0, 16.0f32)
    } else if layout == kind::Q4_K {
        // Sub-block j of the super-block: value = (d sc) q - dmin m, so
        // (d sc) Σ q x - (dmin m) Σ x.
        let base = (row * blocks + g / 8) * 144;
        let j = g % 8;
        let at = base + 16 + 32 * (j / 2);
        let shift = (4 * (j % 2)) as u32;
        let mut sum_qx = 0.0f32;
        let mut sum_x = 0.0f32;
        #[unroll]
        for l in 0..32usize {
            let xv = f32::cast_from(x[col0 + l]);
            sum_qx += f32::cast_from((byte_at(data, at + l) >> shift) & 0xFu32) * xv;
            sum_x += xv;
        }
        let sc = q4k_scale_min(data, base + 4, j, false);
        let m = q4k_scale_min(data, base + 4, j, true);
        (f16_at(data, base) * sc) * sum_qx - (f16_at(data, base + 2) * m) * sum_x
    } else {
        // Q6_K: the group is a run of 32 values with one scale per 16.
        let base = (row * blocks + g / 8) * 210;
        let t0 = (g % 8) * 32;
        let mut first = 0.0f32;
        let mut second = 0.0f32;
        #[unroll]
        for l in 0..16usize {
            first += (f32::cast_from(q6k_code(data, base, t0 + l)) - 32.0f32) * f32::cast_from(x[col0 + l]);
            second += (f32::cast_from(q6k_code(data, base, t0 + 16 + l)) - 32.0f32) * f32::cast_from(x[col0 + 16 + l]);
        }
        let d = f16_at(data, base + 208);
        let s = q6k_scale_index(t0);
        (d * i8_of(byte_at(data, base + 192 + s))) * first + (d * i8_of(byte_at(data, base + 192 + s + 1))) * second
    }
}

/// GEMV for the GGML block formats (Q8_0, Q4_0, Q4_1, Q5_0, Q4_K, Q6_K): each unit takes
/// whole 32-value groups and applies each group's scale once to an integer-weighted sum.
#[cube(launch)]
fn gemv_ggml_kernel<F: Float>(
    x: &Array<F>,
    data: &Array<u32>,
    y: &mut Array<F>,
    n: u32,
    k: u32,
    #[comptime] layout: u32,
    #[comptime] block: usize,
    #[comptime] units: usize,
    #[comptime] plane: u32,
) {
    let row = cube_index();
    let k = k as usize;
    let groups = k / 32;
    let blocks = k / block;
    let mut smem = SharedMemory::<f32>::new(units);
    let mut acc = 0.0f32;
    if row < n as usize {
        let steps = groups.div_ceil(units);
        for step in 0..steps {
            let g = step * units + UNIT_POS as usize;
            if g < groups {
                acc += group_dot::<F>(x, data, row, g, blocks, layout);
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

/// Whether [`gemv_ggml_kernel`] takes the layout: the GGML blocks, whose rows are whole
/// blocks of 32 or 256 values (`aihal_quantize` checks `K` at construction).
fn is_ggml_block(layout: u32) -> bool {
    matches!(
        layout,
        kind::Q8_0 | kind::Q4_0 | kind::Q4_1 | kind::Q5_0 | kind::Q4_K | kind::Q6_K
    )
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
    if m == 1 && is_ggml_block(key.kind) {
        // One 32-value group per unit: as many units as a row has groups, 32 to 256.
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
                key.block,
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
