//! The registry of GGML block formats: one module per format holds that format's facts
//! (block values and bytes, GGUF type id, candle type, where its f16 scales sit, the
//! quantizer of one block and the decoder of one block), and this module is the one place
//! that maps a [`QuantFormat`] to them. Everything else that handles GGML blocks (lengths,
//! quantize, dequantize, row decoding, value checks, GGUF and candle mapping, safetensors
//! names) goes through [`block_format`], [`by_ggml_type`] or [`BLOCK_FORMATS`], so a new
//! block format is a module here plus one line in each of the two tables below (and its
//! variant in [`crate::format`]).
//!
//! Every block format stores llama.cpp's block byte for byte (ggml-common.h), and each
//! quantizer follows llama.cpp's reference quantizer (`quantize_row_*_ref` in
//! ggml-quants.c) operation by operation, so that our bytes are the bytes llama.cpp writes.

pub(crate) mod q4_0;
pub(crate) mod q4_1;
pub(crate) mod q4_k;
pub(crate) mod q5_0;
pub(crate) mod q6_k;
pub(crate) mod q8_0;
pub(crate) mod tq2_0;

use candle_core::quantized::GgmlDType;
use half::f16;

use crate::format::QuantFormat;
use crate::par::{units_per_task, zip_chunks, PAR_MIN_ELEMS};

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
pub(crate) static BLOCK_FORMATS: [&BlockFormat; 7] = [
    &q4_0::FORMAT,
    &q4_1::FORMAT,
    &q5_0::FORMAT,
    &q8_0::FORMAT,
    &q4_k::FORMAT,
    &q6_k::FORMAT,
    &tq2_0::FORMAT,
];

/// The block facts of `format`, `None` for the formats that are not GGML blocks.
pub(crate) fn block_format(format: QuantFormat) -> Option<&'static BlockFormat> {
    match format {
        QuantFormat::Q4_0 => Some(&q4_0::FORMAT),
        QuantFormat::Q4_1 => Some(&q4_1::FORMAT),
        QuantFormat::Q5_0 => Some(&q5_0::FORMAT),
        QuantFormat::Q8_0 => Some(&q8_0::FORMAT),
        QuantFormat::Q4K => Some(&q4_k::FORMAT),
        QuantFormat::Q6K => Some(&q6_k::FORMAT),
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
