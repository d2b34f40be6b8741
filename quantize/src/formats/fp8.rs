//! FP8 E4M3 (the finite-only "fn" variant) and E5M2: one FP8 byte per value, row-major; one
//! f32 scale per tensor (`block_size: None`) or per block of a row (`rows * ceil(K / b)`,
//! row-major); value = `decode(byte) * scale`. Quantizer: `scale = absmax / max_finite`,
//! bytes rounded to nearest even and saturating. The codecs and decode tables are in
//! [`crate::fp8`].

use aihal_core::Result;

use super::{check_block, first_overflow, overflow_message, Dims, Quantized};
use crate::format::QuantFormat;
use crate::fp8::{E4M3_MAX, E4M3_TABLE, E5M2_MAX, E5M2_TABLE};
use crate::linear::Fp8;

/// `(data bytes, scale count)`.
pub(crate) fn lens(format: QuantFormat, block: Option<usize>, d: Dims) -> Result<(usize, usize)> {
    match block {
        None => Ok((d.numel, 1)),
        Some(b) => {
            check_block(format, b, None)?;
            Ok((d.numel, d.rows * d.k.div_ceil(b)))
        }
    }
}

pub(crate) fn quantize(x: &[f32], k: usize, block: Option<usize>, kind: Fp8) -> Quantized {
    let (bytes, scales) = crate::linear::quantize_fp8(x, k, block, kind);
    (bytes, scales, None)
}

pub(crate) fn dequantize(data: &[u8], scales: &[f32], k: usize, block: Option<usize>, kind: Fp8, out: &mut [f32]) {
    crate::linear::dequantize_fp8(data, scales, k, block, kind, out);
}

fn lut(kind: Fp8) -> &'static [f32; 256] {
    match kind {
        Fp8::E4M3 => &E4M3_TABLE,
        Fp8::E5M2 => &E5M2_TABLE,
    }
}

/// Values `k0 ..` of row `n` of a `[N, k]` tensor.
#[allow(clippy::too_many_arguments)] // one call site, the registry
pub(crate) fn decode_range(
    data: &[u8],
    scales: &[f32],
    k: usize,
    block: Option<usize>,
    kind: Fp8,
    n: usize,
    k0: usize,
    out: &mut [f32],
) {
    let lut = lut(kind);
    let row = &data[n * k..];
    match block {
        None => {
            let scale = scales[0];
            for (i, o) in out.iter_mut().enumerate() {
                *o = lut[row[k0 + i] as usize] * scale;
            }
        }
        Some(b) => {
            let row_scales = &scales[n * k.div_ceil(b)..];
            for (i, o) in out.iter_mut().enumerate() {
                let kk = k0 + i;
                *o = lut[row[kk] as usize] * row_scales[kk / b];
            }
        }
    }
}

/// A NaN byte (or an infinity, E5M2), or a finite scale that overflows f32 times one of
/// its codes.
pub(crate) fn first_bad_value(
    data: &[u8],
    scales: &[f32],
    k: usize,
    block: Option<usize>,
    kind: Fp8,
) -> Option<String> {
    let (bad_byte, what, max_code): (fn(u8) -> bool, &str, f32) = match kind {
        Fp8::E4M3 => (|b| b & 0x7F == 0x7F, "an E4M3 NaN", E4M3_MAX),
        Fp8::E5M2 => (|b| b & 0x7F >= 0x7C, "an E5M2 infinity or NaN", E5M2_MAX),
    };
    if let Some(j) = data.iter().position(|&b| bad_byte(b)) {
        return Some(format!("value {j} is {what}"));
    }
    let decode: fn(u8) -> f32 = match kind {
        Fp8::E4M3 => |b| E4M3_TABLE[usize::from(b)],
        Fp8::E5M2 => |b| E5M2_TABLE[usize::from(b)],
    };
    first_overflow(data, scales, k, block, max_code, decode)
        .map(|(s, v)| overflow_message(scales[s], s, v, decode(data[v]), max_code))
}
