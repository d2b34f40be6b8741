//! Symmetric int8: one i8 per value (stored as its byte), row-major; one f32 scale per row
//! (`Int8PerChannel`, `absmax / 127`) or per block of a row (`Int8PerBlock`, the last block
//! of a row possibly partial, `rows * ceil(K / block_size)` scales, row-major); value =
//! `scale * q`. Quantizer: `q = round(x / scale)`, half away from zero ([`crate::linear`]).

use aihal_core::Result;

use super::{check_block, first_overflow, overflow_message, Dims, Quantized};
use crate::format::QuantFormat;

/// The largest code magnitude.
const MAX_CODE: f32 = 128.0;

/// `(data bytes, scale count)`; `block` is `None` for one scale per row.
pub(crate) fn lens(format: QuantFormat, block: Option<usize>, d: Dims) -> Result<(usize, usize)> {
    match block {
        None => Ok((d.numel, d.rows)),
        Some(b) => {
            check_block(format, b, None)?;
            Ok((d.numel, d.rows * d.k.div_ceil(b)))
        }
    }
}

/// Values per scale: `block`, or the row.
fn per_scale(block: Option<usize>, k: usize) -> usize {
    block.unwrap_or(k.max(1))
}

pub(crate) fn quantize(x: &[f32], k: usize, block: Option<usize>) -> Quantized {
    let (bytes, scales) = crate::linear::quantize_int8(x, k, per_scale(block, k));
    (bytes, scales, None)
}

pub(crate) fn dequantize(data: &[u8], scales: &[f32], k: usize, block: Option<usize>, out: &mut [f32]) {
    crate::linear::dequantize_row_blocks(data, scales, k, per_scale(block, k), crate::linear::i8_value, out);
}

/// Values `k0 ..` of row `n` of a `[N, k]` tensor.
pub(crate) fn decode_range(
    data: &[u8],
    scales: &[f32],
    k: usize,
    block: Option<usize>,
    n: usize,
    k0: usize,
    out: &mut [f32],
) {
    let b = per_scale(block, k);
    let row_scales = &scales[n * k.div_ceil(b)..];
    let row = &data[n * k..];
    for (i, o) in out.iter_mut().enumerate() {
        let kk = k0 + i;
        *o = row_scales[kk / b] * f32::from(row[kk] as i8);
    }
}

fn code(b: u8) -> f32 {
    f32::from(b as i8)
}

/// A finite scale that overflows f32 times one of its codes.
pub(crate) fn first_bad_value(data: &[u8], scales: &[f32], k: usize, block: Option<usize>) -> Option<String> {
    let b = per_scale(block, k);
    first_overflow(data, scales, k, Some(b), MAX_CODE, code)
        .map(|(s, v)| overflow_message(scales[s], s, v, code(data[v]), MAX_CODE))
}
