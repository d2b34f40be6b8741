//! Dequantize kernels: every format of `aihal_quantize` into f32, f16 or bf16.

use aihal_core::{CoreError, Result};
use cubecl::prelude::*;

use crate::decode::{decode, i8_of, kind};
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

/// Dequantize for the formats whose codes are whole bytes or nibbles at their element's own
/// offset (int8, FP8, NF4 without double quantization): each unit loads one packed word
/// once and writes the 4 (bytes) or 8 (nibbles) values it holds.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn dequantize_words_kernel<F: Float>(
    data: &Array<u32>,
    scales: &Array<f32>,
    lut: &Array<f32>,
    out: &mut Array<F>,
    k: u32,
    #[comptime] layout: u32,
    #[comptime] block: usize,
    #[comptime] per_word: usize,
) {
    let w = cube_index() * CUBE_DIM as usize + UNIT_POS as usize;
    let first = w * per_word;
    let numel = out.len();
    if first < numel {
        let word = data[w];
        let k = k as usize;
        let bits = 32 / per_word;
        #[unroll]
        for j in 0..per_word {
            let i = first + j;
            if i < numel {
                let value = if layout == kind::NF4 {
                    // Two codes per byte, the first in the high nibble.
                    let shift = 8 * (j / 2) + 4 - 4 * (j % 2);
                    let code = (word >> shift as u32) & 0xFu32;
                    lut[code as usize] * scales[i / block]
                } else {
                    let byte = (word >> (bits * j) as u32) & 0xFFu32;
                    let row = i / k;
                    let col = i % k;
                    if layout == kind::INT8_CHANNEL {
                        i8_of(byte) * scales[row]
                    } else if layout == kind::INT8_BLOCK {
                        i8_of(byte) * scales[row * k.div_ceil(block) + col / block]
                    } else if layout == kind::FP8_TENSOR {
                        lut[byte as usize] * scales[0]
                    } else {
                        lut[byte as usize] * scales[row * k.div_ceil(block) + col / block]
                    }
                };
                out[i] = F::cast_from(value);
            }
        }
    }
}

/// Values per packed word for the layouts [`dequantize_words_kernel`] handles.
fn values_per_word(layout: u32) -> Option<usize> {
    match layout {
        kind::NF4 => Some(8),
        kind::INT8_CHANNEL | kind::INT8_BLOCK | kind::FP8_TENSOR | kind::FP8_BLOCK => Some(4),
        _ => None,
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
        &format!(
            "dequantize output for {} of shape {:?}",
            q.format().map_or("f32", |f| f.name()),
            q.shape()
        ),
        numel,
    )?;
    let k = u32::try_from(q.row_len())
        .map_err(|_| CoreError::invalid_input(format!("row length {} exceeds u32", q.row_len())))?;
    let units = ctx.limits().units_1d(256);
    let [data, scales, lut, nested, nested_scales] = q.args();
    let key = q.key;
    let out_arg = out.arg();
    if let Some(per_word) = values_per_word(key.kind) {
        let words = (numel as u64).div_ceil(per_word as u64);
        let count = ctx.limits().cube_count_1d(words.div_ceil(u64::from(units)))?;
        return ctx.launch("dequantize", || {
            dequantize_words_kernel::launch::<F, R>(
                ctx.client(),
                count,
                CubeDim::new_1d(units),
                data,
                scales,
                lut,
                out_arg,
                k,
                key.kind,
                key.block,
                per_word,
            );
        });
    }
    let count = ctx.limits().cube_count_1d((numel as u64).div_ceil(u64::from(units)))?;
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

#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn embedding_kernel<F: Float>(
    ids: &Array<u32>,
    data: &Array<u32>,
    scales: &Array<f32>,
    lut: &Array<f32>,
    nested: &Array<u32>,
    nested_scales: &Array<f32>,
    out: &mut Array<F>,
    n: u32,
    dim: u32,
    #[comptime] layout: u32,
    #[comptime] block: usize,
    #[comptime] nested_block: usize,
) {
    let i = cube_index() * CUBE_DIM as usize + UNIT_POS as usize;
    if i < n as usize {
        let dim = dim as usize;
        let row = ids[i / dim] as usize;
        let col = i % dim;
        let value = decode(
            data,
            scales,
            lut,
            nested,
            nested_scales,
            row * dim + col,
            row,
            col,
            dim,
            layout,
            block,
            nested_block,
        );
        out[i] = F::cast_from(value);
    }
}

/// Gathers rows `ids` of the table `q` (`[vocab, dim]`) into `out` (`[ids.len(), dim]`),
/// dequantized on the device as [`dequantize`] does (the rows are decoded where they lie;
/// the table stays quantized). `ids` is on the device already.
///
/// Errors: `InvalidInput` when `q` is not rank 2; `ShapeMismatch` for an output of another
/// length. The ids must be below the vocabulary size: the caller checks them on the host
/// (a larger id reads another row's bytes or past the buffer, which Vulkan and CUDA clamp
/// or ignore, never a memory error).
pub fn embedding<R: Runtime, F: Float + CubeElement>(
    ctx: &Context<R>,
    q: &DeviceQuantized<R>,
    ids: &DeviceBuffer<R, u32>,
    out: &DeviceBuffer<R, F>,
) -> Result<()> {
    ctx.require::<F>("embedding")?;
    let [_, dim] = *q.shape() else {
        return Err(CoreError::invalid_input(format!(
            "embedding table must be [vocab, dim], got shape {:?}",
            q.shape()
        )));
    };
    let n = ids
        .len()
        .checked_mul(dim)
        .ok_or_else(|| CoreError::invalid_input("embedding: ids x dim overflows"))?;
    out.expect_len("embedding output [ids, dim]", n)?;
    let as_u32 = |v: usize| {
        u32::try_from(v).map_err(|_| CoreError::invalid_input(format!("embedding: {v} exceeds 32-bit indexing")))
    };
    as_u32(q.numel())?;
    let (n32, dim32) = (as_u32(n)?, as_u32(dim)?);
    let units = ctx.limits().units_1d(256);
    let count = ctx.limits().cube_count_1d((n as u64).div_ceil(u64::from(units)))?;
    let [data, scales, lut, nested, nested_scales] = q.args();
    let key = q.key;
    ctx.launch("embedding", || {
        embedding_kernel::launch::<F, R>(
            ctx.client(),
            count,
            CubeDim::new_1d(units),
            ids.arg(),
            data,
            scales,
            lut,
            nested,
            nested_scales,
            out.arg(),
            n32,
            dim32,
            key.kind,
            key.block,
            key.nested_block,
        );
    })
}
