//! One module per format, and this module, the one registry: every fact of a format
//! (lengths for a shape, quantizer, dequantizer, decoding of a range of a row, value checks,
//! and for the GGML block formats the block layout, GGUF type id, candle type and f16
//! fields) lives in that format's module, and the functions below dispatch to them with
//! exhaustive matches on [`QuantFormat`] (inside this crate the compiler checks them).
//! Lengths (`tensor.rs`), `quantize` / `dequantize` (`ops.rs`), row decoding (`decode.rs`),
//! value checks (`validate.rs`), GGUF (`gguf/types.rs`), candle (`interop.rs`) and
//! safetensors names (`io.rs`) go through here.
//!
//! The GGML block formats share one description, [`BlockFormat`]: a new block format is a
//! module here plus one line in each of [`BLOCK_FORMATS`] and [`block_format`] (and its
//! variant in [`crate::format`]). Every block format stores llama.cpp's block byte for byte
//! (ggml-common.h), and each quantizer follows llama.cpp's reference quantizer
//! (`quantize_row_*_ref` in ggml-quants.c) operation by operation, so that our bytes are
//! the bytes llama.cpp writes.

pub(crate) mod fp8;
pub(crate) mod int8;
pub(crate) mod iq4_nl;
pub(crate) mod iq4_xs;
pub(crate) mod nf4;
pub(crate) mod q2_k;
pub(crate) mod q3_k;
pub(crate) mod q4_0;
pub(crate) mod q4_1;
pub(crate) mod q4_k;
pub(crate) mod q5_0;
pub(crate) mod q5_1;
pub(crate) mod q5_k;
pub(crate) mod q6_k;
pub(crate) mod q8_0;
pub(crate) mod ternary;
pub(crate) mod tq2_0;

use aihal_core::{CoreError, Result};
use candle_core::quantized::GgmlDType;
use half::f16;

use crate::format::QuantFormat;
use crate::linear::Fp8;
use crate::par::{units_per_task, zip_chunks, PAR_MIN_ELEMS};
use crate::tensor::{NestedAbsmax, QuantizedTensor};

/// Values per super-block of the K formats (llama.cpp's `QK_K`).
pub(crate) const QK_K: usize = 256;

/// A check of one block's codes: the first bad byte's index in the block and what is wrong.
pub(crate) type CheckCodes = fn(&[u8]) -> Option<(usize, String)>;

/// The facts of one GGML block format.
pub(crate) struct BlockFormat {
    /// The format.
    pub format: QuantFormat,
    /// The GGML type id GGUF stores (ggml.h `ggml_type`).
    pub ggml_type: u32,
    /// candle's type for the same blocks, if candle has it.
    pub candle: Option<GgmlDType>,
    /// Values per block.
    pub values: usize,
    /// Bytes per block.
    pub bytes: usize,
    /// Byte offsets of the block's f16 fields (scales and minimums), each of which must be
    /// finite.
    pub f16_fields: &'static [usize],
    /// Quantizes one block of `values` f32 into `bytes` bytes (llama.cpp's reference).
    pub quantize: fn(&[f32], &mut [u8]),
    /// Decodes one block of `bytes` bytes into `values` f32 (llama.cpp's
    /// `dequantize_row_*`, bit for bit).
    pub dequantize: fn(&[u8], &mut [f32]),
    /// Checks a block's codes beyond its scales (codes a format never writes): a
    /// description of the first bad byte, as `(byte index in the block, what)`.
    pub check_codes: Option<CheckCodes>,
}

/// Every block format, in GGML type id order.
pub(crate) static BLOCK_FORMATS: [&BlockFormat; 13] = [
    &q4_0::FORMAT,
    &q4_1::FORMAT,
    &q5_0::FORMAT,
    &q5_1::FORMAT,
    &q8_0::FORMAT,
    &q2_k::FORMAT,
    &q3_k::FORMAT,
    &q4_k::FORMAT,
    &q5_k::FORMAT,
    &q6_k::FORMAT,
    &iq4_nl::FORMAT,
    &iq4_xs::FORMAT,
    &tq2_0::FORMAT,
];

/// The block facts of `format`, `None` for the formats that are not GGML blocks.
pub(crate) fn block_format(format: QuantFormat) -> Option<&'static BlockFormat> {
    match format {
        QuantFormat::Q4_0 => Some(&q4_0::FORMAT),
        QuantFormat::Q4_1 => Some(&q4_1::FORMAT),
        QuantFormat::Q5_0 => Some(&q5_0::FORMAT),
        QuantFormat::Q5_1 => Some(&q5_1::FORMAT),
        QuantFormat::Q5K => Some(&q5_k::FORMAT),
        QuantFormat::Q8_0 => Some(&q8_0::FORMAT),
        QuantFormat::Q2K => Some(&q2_k::FORMAT),
        QuantFormat::Q3K => Some(&q3_k::FORMAT),
        QuantFormat::Q4K => Some(&q4_k::FORMAT),
        QuantFormat::Q6K => Some(&q6_k::FORMAT),
        QuantFormat::Iq4Nl => Some(&iq4_nl::FORMAT),
        QuantFormat::Iq4Xs => Some(&iq4_xs::FORMAT),
        QuantFormat::Tq2_0 => Some(&tq2_0::FORMAT),
        QuantFormat::Nf4 { .. }
        | QuantFormat::Ternary
        | QuantFormat::Int8PerChannel
        | QuantFormat::Int8PerBlock { .. }
        | QuantFormat::Fp8E4M3 { .. }
        | QuantFormat::Fp8E5M2 { .. } => None,
    }
}

/// The block format GGUF type id `id` is read into, if any.
pub(crate) fn by_ggml_type(id: u32) -> Option<&'static BlockFormat> {
    BLOCK_FORMATS.iter().copied().find(|b| b.ggml_type == id)
}

/// The block format candle's `dtype` is, if any.
pub(crate) fn by_candle(dtype: GgmlDType) -> Option<&'static BlockFormat> {
    BLOCK_FORMATS.iter().copied().find(|b| b.candle == Some(dtype))
}

/// The block format whose [`QuantFormat::name`] is `name`.
pub(crate) fn by_name(name: &str) -> Option<&'static BlockFormat> {
    BLOCK_FORMATS.iter().copied().find(|b| b.format.name() == name)
}

/// The GGML names of the block formats, for messages: `"Q4_0, Q4_1, ..., TQ2_0"`
/// (`candle_only`: those candle has).
pub(crate) fn block_format_names(candle_only: bool) -> String {
    BLOCK_FORMATS
        .iter()
        .filter(|b| !candle_only || b.candle.is_some())
        .map(|b| b.format.name().to_uppercase())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The f16 at `b[at..at + 2]` (little-endian) as f32.
#[inline]
pub(crate) fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// Writes `v` as the little-endian f16 (rounded to nearest even) at `b[at..at + 2]`.
#[inline]
pub(crate) fn put_f16(b: &mut [u8], at: usize, v: f32) {
    b[at..at + 2].copy_from_slice(&f16::from_f32(v).to_le_bytes());
}

/// llama.cpp's `nearest_int` (ggml-quants.c): round to nearest, ties to even, as the
/// `1.5 * 2^23` trick does for `|v| <= 4194303` (llama.cpp asserts that range). Outside it
/// the value saturates instead of wrapping; NaN gives 0.
#[inline]
pub(crate) fn nearest_int(v: f32) -> i32 {
    v.round_ties_even() as i32
}

impl BlockFormat {
    /// Quantizes `x` (a whole number of blocks) block by block, on rayon's pool when large.
    pub(crate) fn quantize_all(&self, x: &[f32]) -> Vec<u8> {
        let mut data = vec![0u8; x.len() / self.values * self.bytes];
        let per = units_per_task(self.values);
        let (values, bytes, f) = (self.values, self.bytes, self.quantize);
        zip_chunks(
            &mut data,
            per * bytes,
            x,
            per * values,
            x.len() >= PAR_MIN_ELEMS,
            |_, d, x| {
                for (d, x) in d.chunks_exact_mut(bytes).zip(x.chunks_exact(values)) {
                    f(x, d);
                }
            },
        );
        data
    }

    /// Decodes whole blocks `data` into `out` (as many values), on rayon's pool when large.
    pub(crate) fn dequantize_all(&self, data: &[u8], out: &mut [f32]) {
        let per = units_per_task(self.values);
        let (values, bytes, f) = (self.values, self.bytes, self.dequantize);
        zip_chunks(
            out,
            per * values,
            data,
            per * bytes,
            out.len() >= PAR_MIN_ELEMS,
            |_, out, data| {
                for (o, b) in out.chunks_exact_mut(values).zip(data.chunks_exact(bytes)) {
                    f(b, o);
                }
            },
        );
    }

    /// Decodes values `k0 .. k0 + out.len()` of the row whose blocks are `row`.
    pub(crate) fn decode_range(&self, row: &[u8], k0: usize, out: &mut [f32]) {
        let mut buf = [0.0f32; QK_K];
        let buf = &mut buf[..self.values];
        let mut done = 0;
        while done < out.len() {
            let k = k0 + done;
            let (blk, at) = (k / self.values, k % self.values);
            (self.dequantize)(&row[blk * self.bytes..(blk + 1) * self.bytes], buf);
            let n = (self.values - at).min(out.len() - done);
            out[done..done + n].copy_from_slice(&buf[at..at + n]);
            done += n;
        }
    }

    /// The first block of `data` with a non-finite f16 field:
    /// `(block index, byte offset in data, value)`.
    pub(crate) fn first_non_finite(&self, data: &[u8]) -> Option<(usize, usize, f16)> {
        data.chunks_exact(self.bytes).enumerate().find_map(|(i, b)| {
            self.f16_fields.iter().find_map(|&at| {
                let v = f16::from_le_bytes([b[at], b[at + 1]]);
                (!v.is_finite()).then_some((i, i * self.bytes + at, v))
            })
        })
    }

    /// The first problem in the blocks of `data`: a non-finite f16 field, or a code the
    /// format never writes. Names the block and the byte offset in `data`.
    pub(crate) fn first_bad_value(&self, data: &[u8]) -> Option<String> {
        if let Some((i, at, v)) = self.first_non_finite(data) {
            return Some(format!("block {i} (byte {at}) has the non-finite scale {v}"));
        }
        let check = self.check_codes?;
        data.chunks_exact(self.bytes).enumerate().find_map(|(i, b)| {
            check(b).map(|(j, what)| format!("block {i}, byte {} ({j} of the block): {what}", i * self.bytes + j))
        })
    }
}

// ---------------------------------------------------------------------------------------
// The dispatch over every format

/// A shape's element count, row length (the last dimension, 1 for a scalar) and rows.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Dims {
    pub numel: usize,
    pub k: usize,
    pub rows: usize,
}

/// What a quantizer produces: packed bytes, f32 scales, and NF4's 8-bit absmax.
pub(crate) type Quantized = (Vec<u8>, Vec<f32>, Option<NestedAbsmax>);

/// `(data bytes, scale count)` a tensor of `shape` must have in `format`: `InvalidConfig`
/// for a block size the format does not allow, `InvalidInput` for a row that is not a
/// whole number of GGML blocks or a shape whose size overflows.
pub(crate) fn lens(format: QuantFormat, shape: &[usize]) -> Result<(usize, usize)> {
    let numel: usize = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| CoreError::invalid_input(format!("shape {shape:?} overflows")))?;
    let k = shape.last().copied().unwrap_or(1);
    let d = Dims {
        numel,
        k,
        rows: numel.checked_div(k).unwrap_or(0),
    };
    if let Some(b) = block_format(format) {
        check_row_multiple(format, k, b.values)?;
        // Blocks times bytes per block can exceed usize for absurd shapes (Q8_0 stores more
        // bytes than values).
        let bytes = (numel / b.values)
            .checked_mul(b.bytes)
            .ok_or_else(|| CoreError::invalid_input(format!("{format} tensor of shape {shape:?} overflows memory")))?;
        return Ok((bytes, 0));
    }
    match format {
        QuantFormat::Nf4 { block_size, .. } => nf4::lens(format, block_size, d),
        QuantFormat::Ternary => Ok(ternary::lens(d)),
        QuantFormat::Int8PerChannel => int8::lens(format, None, d),
        QuantFormat::Int8PerBlock { block_size } => int8::lens(format, Some(block_size), d),
        QuantFormat::Fp8E4M3 { block_size } | QuantFormat::Fp8E5M2 { block_size } => fp8::lens(format, block_size, d),
        QuantFormat::Q4_0
        | QuantFormat::Q4_1
        | QuantFormat::Q5_0
        | QuantFormat::Q5_1
        | QuantFormat::Q5K
        | QuantFormat::Q8_0
        | QuantFormat::Q2K
        | QuantFormat::Q3K
        | QuantFormat::Q4K
        | QuantFormat::Q6K
        | QuantFormat::Iq4Nl
        | QuantFormat::Iq4Xs
        | QuantFormat::Tq2_0 => unreachable_block(format),
    }
}

/// The block formats are answered from [`block_format`] before each match below; their arm
/// is never reached, and answers an error rather than a panic.
fn unreachable_block<T>(format: QuantFormat) -> Result<T> {
    Err(CoreError::invalid_config(format!(
        "{format}: block format outside the registry"
    )))
}

/// Quantizes `x` (finite values, as many as the shape holds; rows of `k`). A GGML block
/// whose f16 scale overflows is `InvalidInput` naming the block.
pub(crate) fn quantize(format: QuantFormat, x: &[f32], k: usize) -> Result<Quantized> {
    if let Some(b) = block_format(format) {
        let data = b.quantize_all(x);
        if let Some((blk, _, _)) = b.first_non_finite(&data) {
            let vals = &x[blk * b.values..(blk + 1) * b.values];
            let amax = vals.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            return Err(CoreError::invalid_input(format!(
                "{format}: block {blk} (values {}..{}) has magnitude {amax:e}, whose scale overflows f16; \
                 scale the tensor down or use a format with f32 scales",
                blk * b.values,
                (blk + 1) * b.values
            )));
        }
        return Ok((data, Vec::new(), None));
    }
    Ok(match format {
        QuantFormat::Nf4 {
            block_size,
            double_quant,
        } => nf4::quantize(x, block_size, double_quant),
        QuantFormat::Ternary => ternary::quantize(x),
        QuantFormat::Int8PerChannel => int8::quantize(x, k, None),
        QuantFormat::Int8PerBlock { block_size } => int8::quantize(x, k, Some(block_size)),
        QuantFormat::Fp8E4M3 { block_size } => fp8::quantize(x, k, block_size, Fp8::E4M3),
        QuantFormat::Fp8E5M2 { block_size } => fp8::quantize(x, k, block_size, Fp8::E5M2),
        QuantFormat::Q4_0
        | QuantFormat::Q4_1
        | QuantFormat::Q5_0
        | QuantFormat::Q5_1
        | QuantFormat::Q5K
        | QuantFormat::Q8_0
        | QuantFormat::Q2K
        | QuantFormat::Q3K
        | QuantFormat::Q4K
        | QuantFormat::Q6K
        | QuantFormat::Iq4Nl
        | QuantFormat::Iq4Xs
        | QuantFormat::Tq2_0 => return unreachable_block(format),
    })
}

/// Dequantizes the whole of `q` into `out` (exactly `q.numel()` values).
pub(crate) fn dequantize(q: &QuantizedTensor, out: &mut [f32]) -> Result<()> {
    let (data, scales, k) = (q.data(), q.scales(), q.row_len());
    if let Some(b) = block_format(q.format()) {
        b.dequantize_all(data, out);
        return Ok(());
    }
    match q.format() {
        QuantFormat::Nf4 { block_size, .. } => nf4::dequantize(data, scales, block_size, out),
        QuantFormat::Ternary => ternary::dequantize(data, scales, out),
        QuantFormat::Int8PerChannel => int8::dequantize(data, scales, k, None, out),
        QuantFormat::Int8PerBlock { block_size } => int8::dequantize(data, scales, k, Some(block_size), out),
        QuantFormat::Fp8E4M3 { block_size } => fp8::dequantize(data, scales, k, block_size, Fp8::E4M3, out),
        QuantFormat::Fp8E5M2 { block_size } => fp8::dequantize(data, scales, k, block_size, Fp8::E5M2, out),
        f @ (QuantFormat::Q4_0
        | QuantFormat::Q4_1
        | QuantFormat::Q5_0
        | QuantFormat::Q5_1
        | QuantFormat::Q5K
        | QuantFormat::Q8_0
        | QuantFormat::Q2K
        | QuantFormat::Q3K
        | QuantFormat::Q4K
        | QuantFormat::Q6K
        | QuantFormat::Iq4Nl
        | QuantFormat::Iq4Xs
        | QuantFormat::Tq2_0) => return unreachable_block(f),
    }
    Ok(())
}

/// Decodes values `k0 .. k0 + out.len()` of row `n` of the rank-2 `w` (range checked by
/// the caller).
pub(crate) fn decode_range(w: &QuantizedTensor, n: usize, k0: usize, out: &mut [f32]) -> Result<()> {
    let (data, scales, k) = (w.data(), w.scales(), w.row_len());
    if let Some(b) = block_format(w.format()) {
        let row_bytes = k / b.values * b.bytes;
        b.decode_range(&data[n * row_bytes..(n + 1) * row_bytes], k0, out);
        return Ok(());
    }
    match w.format() {
        QuantFormat::Nf4 { block_size, .. } => nf4::decode_range(data, scales, block_size, k, n, k0, out),
        QuantFormat::Ternary => ternary::decode_range(data, scales, k, n, k0, out),
        QuantFormat::Int8PerChannel => int8::decode_range(data, scales, k, None, n, k0, out),
        QuantFormat::Int8PerBlock { block_size } => int8::decode_range(data, scales, k, Some(block_size), n, k0, out),
        QuantFormat::Fp8E4M3 { block_size } => fp8::decode_range(data, scales, k, block_size, Fp8::E4M3, n, k0, out),
        QuantFormat::Fp8E5M2 { block_size } => fp8::decode_range(data, scales, k, block_size, Fp8::E5M2, n, k0, out),
        f @ (QuantFormat::Q4_0
        | QuantFormat::Q4_1
        | QuantFormat::Q5_0
        | QuantFormat::Q5_1
        | QuantFormat::Q5K
        | QuantFormat::Q8_0
        | QuantFormat::Q2K
        | QuantFormat::Q3K
        | QuantFormat::Q4K
        | QuantFormat::Q6K
        | QuantFormat::Iq4Nl
        | QuantFormat::Iq4Xs
        | QuantFormat::Tq2_0) => return unreachable_block(f),
    }
    Ok(())
}

/// The first stored value of `t` that would not decode to a finite number as the format
/// defines it (beyond non-finite f32 scales, which the caller checks for every format).
pub(crate) fn first_bad_value(t: &QuantizedTensor) -> Option<String> {
    let (data, scales, k) = (t.data(), t.scales(), t.row_len());
    if let Some(b) = block_format(t.format()) {
        return b.first_bad_value(data);
    }
    match t.format() {
        // NF4 codes are at most 1 in magnitude: a finite absmax decodes finite.
        QuantFormat::Nf4 { .. } => None,
        QuantFormat::Ternary => ternary::first_bad_value(data),
        QuantFormat::Int8PerChannel => int8::first_bad_value(data, scales, k, None),
        QuantFormat::Int8PerBlock { block_size } => int8::first_bad_value(data, scales, k, Some(block_size)),
        QuantFormat::Fp8E4M3 { block_size } => fp8::first_bad_value(data, scales, k, block_size, Fp8::E4M3),
        QuantFormat::Fp8E5M2 { block_size } => fp8::first_bad_value(data, scales, k, block_size, Fp8::E5M2),
        f @ (QuantFormat::Q4_0
        | QuantFormat::Q4_1
        | QuantFormat::Q5_0
        | QuantFormat::Q5_1
        | QuantFormat::Q5K
        | QuantFormat::Q8_0
        | QuantFormat::Q2K
        | QuantFormat::Q3K
        | QuantFormat::Q4K
        | QuantFormat::Q6K
        | QuantFormat::Iq4Nl
        | QuantFormat::Iq4Xs
        | QuantFormat::Tq2_0) => Some(format!("{f}: block format outside the registry")),
    }
}

/// Fails unless `block` is allowed: a power of two from `power_of_two_from` to 4096, or
/// (`None`) positive.
pub(crate) fn check_block(format: QuantFormat, block: usize, power_of_two_from: Option<usize>) -> Result<()> {
    let ok = match power_of_two_from {
        Some(min) => block.is_power_of_two() && (min..=4096).contains(&block),
        None => block > 0,
    };
    if ok {
        Ok(())
    } else {
        Err(CoreError::invalid_config(format!(
            "{format}: block size {block} is not allowed{}",
            power_of_two_from.map_or(" (must be positive)".to_owned(), |m| format!(
                " (must be a power of two from {m} to 4096)"
            ))
        )))
    }
}

fn check_row_multiple(format: QuantFormat, row: usize, block: usize) -> Result<()> {
    if row.is_multiple_of(block) {
        Ok(())
    } else {
        Err(CoreError::invalid_input(format!(
            "{format} needs rows that are a multiple of {block} values, got a row of {row}"
        )))
    }
}

/// The first `(scale index, value index)` whose product `decode(byte) * scale` is not
/// finite, for one scale per tensor (`block` `None`) or one per block of a row of `k`.
/// Scales small enough that even the largest code magnitude stays finite are skipped
/// without looking at their values.
pub(crate) fn first_overflow(
    data: &[u8],
    scales: &[f32],
    k: usize,
    block: Option<usize>,
    max_code: f32,
    decode: fn(u8) -> f32,
) -> Option<(usize, usize)> {
    let safe = |s: f32| (s.abs() * max_code).is_finite();
    let in_range = |s: f32, range: std::ops::Range<usize>| {
        let start = range.start;
        data[range]
            .iter()
            .position(|&b| !(decode(b) * s).is_finite())
            .map(|i| start + i)
    };
    let Some(block) = block else {
        let s = *scales.first()?;
        return if safe(s) {
            None
        } else {
            in_range(s, 0..data.len()).map(|i| (0, i))
        };
    };
    if k == 0 || block == 0 {
        return None;
    }
    let per_row = k.div_ceil(block);
    scales.iter().enumerate().find_map(|(i, &s)| {
        if safe(s) {
            return None;
        }
        let (row, j) = (i / per_row, i % per_row);
        let start = row * k + j * block;
        let end = (start + block).min((row + 1) * k).min(data.len());
        in_range(s, start.min(end)..end).map(|v| (i, v))
    })
}

/// The message for a scale `s` (index `scale`) that overflows times `code` at `value`.
pub(crate) fn overflow_message(s: f32, scale: usize, value: usize, code: f32, max_code: f32) -> String {
    format!(
        "scale {scale} is {s:e}: times the code {code} of value {value} it overflows f32 \
         (a scale must keep code × scale finite; for the largest code magnitude {max_code} \
         that is |scale| <= {:e})",
        f32::MAX / max_code
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_is_consistent() {
        for (i, b) in BLOCK_FORMATS.iter().enumerate() {
            assert!(std::ptr::eq(block_format(b.format).unwrap(), *b), "{}", b.format);
            assert!(std::ptr::eq(by_ggml_type(b.ggml_type).unwrap(), *b));
            assert!(std::ptr::eq(by_name(b.format.name()).unwrap(), *b));
            assert!(b.values <= QK_K && b.f16_fields.iter().all(|&at| at + 2 <= b.bytes));
            assert!(BLOCK_FORMATS[i + 1..].iter().all(|o| o.ggml_type > b.ggml_type));
        }
    }

    #[test]
    fn nearest_int_rounds_ties_to_even() {
        assert_eq!(
            [0.5, 1.5, 2.5, -0.5, -1.5, 2.499_999_8, 7.0].map(nearest_int),
            [0, 2, 2, 0, -2, 2, 7]
        );
    }
}
