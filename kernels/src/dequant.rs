//! Dequantize kernels: every format of `aihal_quantize` into f32, f16 or bf16.

use aihal_core::{CoreError, Result};
use cubecl::prelude::*;

use crate::decode::decode;
use crate::launch::{cube_index, Context, DeviceBuffer};
use crate::packed::DeviceQuantized;

#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn dequantize_kernel<F: Float>(
    data: &Array<u32>,
    scales: &Array<f32>,
    lut: &Array<f32>,
    nested: &Array<u32>,
    nested_scales: &Array<f32>,
    out: &mut Array<F>,
    k: u32,
    #[comptime] layout: u32,
    #[comptime] block: usize,
    #[comptime] nested_block: usize,
) {
    let index = cube_index() * CUBE_DIM as usize + UNIT_POS as usize;
    if index < out.len() {
        let k = k as usize;
        let value = decode(
            data,
            scales,
            lut,
            nested,
            nested_scales,
            index,
            index / k,
            index % k,
            k,
            layout,
            block,
            nested_block,
        );
        out[index] = F::cast_from(value);
    }
}

/// Dequantizes `q` on its device into a new buffer of `q.numel()` elements of `F`
/// (`f32`, `half::f16` or `half::bf16`; the device must support the type).
///
/// Elements are the layout contract's `decode(byte) * scale` computed in f32, then rounded
/// once to `F`.
pub fn dequantize<R: Runtime, F: Float + CubeElement>(
    ctx: &Context<R>,
    q: &DeviceQuantized<R>,
) -> Result<DeviceBuffer<R, F>> {
    let out = ctx.alloc::<F>(q.numel())?;
    dequantize_into::<R, F>(ctx, q, &out)?;
    Ok(out)
}

/// Dequantizes `q` into `out`, which must hold `q.numel()` elements (reuse it across calls
/// in a hot loop).
pub fn dequantize_into<R: Runtime, F: Float + CubeElement>(
    ctx: &Context<R>,
    q: &DeviceQuantized<R>,
    out: &DeviceBuffer<R, F>,
) -> Result<()> {
    ctx.require::<F>("dequantize")?;
    let numel = q.numel();
    out.expect_len(
        &format!("dequantize output for {} of shape {:?}", q.format(), q.shape()),
        numel,
    )?;
    let k = u32::try_from(q.row_len())
        .map_err(|_| CoreError::invalid_input(format!("row length {} exceeds u32", q.row_len())))?;
    let units = ctx.limits().units_1d(256);
    let count = ctx.limits().cube_count_1d((numel as u64).div_ceil(u64::from(units)))?;
    let [data, scales, lut, nested, nested_scales] = q.args();
    let key = q.key;
    let out_arg = out.arg();
    ctx.launch("dequantize", || {
        dequantize_kernel::launch::<F, R>(
            ctx.client(),
            count,
            CubeDim::new_1d(units),
            data,
            scales,
            lut,
            nested,
            nested_scales,
            out_arg,
            k,
            key.kind,
            key.block,
            key.nested_block,
        );
    })
}
