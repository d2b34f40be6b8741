//! Element decoders for the packed layouts of `aihal_quantize::format`, as `#[cube]`
//! functions shared by the dequantize and matmul kernels.
//!
//! Packed bytes reach the device as little-endian `u32` words (WGSL has no byte type), so
//! byte `b` of the layout is bits `8 * (b % 4)..` of word `b / 4`.

use cubecl::prelude::*;

/// How a layout is decoded: a compile-time value, so every format gets its own kernel.
///
/// The values are the `kind` field of `LayoutKey`.
pub(crate) mod kind {
    pub(crate) const Q8_0: u32 = 0;
    pub(crate) const Q4_0: u32 = 1;
    pub(crate) const TQ2_0: u32 = 2;
    pub(crate) const TERNARY: u32 = 3;
    pub(crate) const NF4: u32 = 4;
    pub(crate) const NF4_DOUBLE: u32 = 5;
    pub(crate) const INT8_CHANNEL: u32 = 6;
    pub(crate) const INT8_BLOCK: u32 = 7;
    pub(crate) const FP8_TENSOR: u32 = 8;
    pub(crate) const FP8_BLOCK: u32 = 9;
    /// Not a packed format: dense f32 values, one per word (`DeviceQuantized::dense`).
    pub(crate) const F32: u32 = 10;
    pub(crate) const Q4_1: u32 = 11;
    pub(crate) const Q5_0: u32 = 12;
    pub(crate) const Q4_K: u32 = 13;
    pub(crate) const Q6_K: u32 = 14;
    pub(crate) const Q5_1: u32 = 15;
    pub(crate) const Q5_K: u32 = 16;
    pub(crate) const Q2_K: u32 = 17;
    pub(crate) const Q3_K: u32 = 18;
    pub(crate) const IQ4_NL: u32 = 19;
    pub(crate) const IQ4_XS: u32 = 20;
}

/// Byte `index` of a packed buffer held as little-endian words.
#[cube]
pub(crate) fn byte_at(data: &Array<u32>, index: usize) -> u32 {
    let word = data[index / 4];
    (word >> (((index % 4) * 8) as u32)) & 0xFFu32
}

/// A byte as a signed 8-bit value.
#[cube]
pub(crate) fn i8_of(byte: u32) -> f32 {
    f32::cast_from(byte) - f32::cast_from((byte >> 7u32) * 256u32)
}

/// An IEEE half from its 16 bits (little-endian field at byte `index`), exactly.
#[cube]
pub(crate) fn f16_at(data: &Array<u32>, index: usize) -> f32 {
    let bits = byte_at(data, index) | (byte_at(data, index + 1) << 8u32);
    let sign = (bits & 0x8000u32) << 16u32;
    let exp = (bits >> 10u32) & 0x1Fu32;
    let mant = bits & 0x3FFu32;
    if exp == 0u32 {
        // Zero or subnormal: mant * 2^-24.
        let mag = f32::cast_from(mant) * 5.960_464_5e-8f32;
        if sign != 0u32 {
            -mag
        } else {
            mag
        }
    } else if exp == 31u32 {
        f32::reinterpret(sign | 0x7F80_0000u32 | (mant << 13u32))
    } else {
        f32::reinterpret(sign | ((exp + 112u32) << 23u32) | (mant << 13u32))
    }
}

/// The 6-bit scale (`minimum` false) or minimum (`minimum` true) of sub-block `j` (0..8)
/// of a Q4_K super-block whose 12 packed scale bytes start at byte `at`
/// (ggml-quants.c `get_scale_min_k4`; the layout is `aihal_quantize`'s `formats/q4_k.rs`):
/// for `j < 4` the low 6 bits of byte `j` (scale) or `j + 4` (minimum), else a nibble of
/// byte `j + 4` (low: scale, high: minimum) under the top 2 bits of byte `j - 4` (scale) or
/// `j` (minimum).
#[cube]
pub(crate) fn q4k_scale_min(data: &Array<u32>, at: usize, j: usize, #[comptime] minimum: bool) -> f32 {
    let o = if minimum { 4usize } else { 0usize };
    let shift = if minimum { 4u32 } else { 0u32 };
    let v = if j < 4 {
        byte_at(data, at + j + o) & 63u32
    } else {
        let nibble = (byte_at(data, at + j + 4) >> shift) & 0xFu32;
        nibble | ((byte_at(data, at + j + o - 4) >> 6u32) << 4u32)
    };
    f32::cast_from(v)
}

/// The 6-bit code (0..64) of value `t` (0..256) of the Q6_K super-block at byte `base`
/// (ggml-quants.c `dequantize_row_q6_K`; the layout is `aihal_quantize`'s
/// `formats/q6_k.rs`): in half `h`, the `quarter`-th run of 32 values takes its low 4 bits
/// from `ql[64h + 32 (quarter % 2) + l]` (the low nibble for quarters 0 and 1, the high for
/// 2 and 3) and its top 2 bits from bits `2 quarter` of `qh[32h + l]`.
#[cube]
pub(crate) fn q6k_code(data: &Array<u32>, base: usize, t: usize) -> u32 {
    let h = t / 128;
    let quarter = (t % 128) / 32;
    let l = t % 32;
    let low = (byte_at(data, base + 64 * h + 32 * (quarter % 2) + l) >> ((4 * (quarter / 2)) as u32)) & 0xFu32;
    let high = (byte_at(data, base + 128 + 32 * h + l) >> ((2 * quarter) as u32)) & 3u32;
    low | (high << 4u32)
}

/// The index (0..16) of the 16-value sub-block scale of value `t` of a Q6_K super-block:
/// `8h + l / 16 + 2 quarter` in the terms of [`q6k_code`].
#[cube]
pub(crate) fn q6k_scale_index(t: usize) -> usize {
    8 * (t / 128) + (t % 32) / 16 + 2 * ((t % 128) / 32)
}

/// Decodes logical element `index` (row `row`, column `col` of rows of `k` values).
///
/// `scales` are the layout's f32 scales, `lut` a 16- or 256-entry code book (NF4, FP8),
/// `nested` the double-quantization codes of NF4 as words and `nested_scales` their scales
/// followed by the offset. Unused inputs are one-element placeholders.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn decode(
    data: &Array<u32>,
    scales: &Array<f32>,
    lut: &Array<f32>,
    nested: &Array<u32>,
    nested_scales: &Array<f32>,
    index: usize,
    row: usize,
    col: usize,
    k: usize,
    #[comptime] layout: u32,
    #[comptime] block: usize,
    #[comptime] nested_block: usize,
) -> f32 {
    if layout == kind::Q8_0 {
        let base = (index / 32) * 34;
        f16_at(data, base) * i8_of(byte_at(data, base + 2 + index % 32))
    } else if layout == kind::Q4_0 {
        let base = (index / 32) * 18;
        let j = index % 32;
        // Value j sits in the low nibble of byte j, value j + 16 in its high nibble.
        let byte = byte_at(data, base + 2 + j % 16);
        let q = (byte >> (((j / 16) * 4) as u32)) & 0xFu32;
        f16_at(data, base) * (f32::cast_from(q) - 8.0f32)
    } else if layout == kind::Q4_1 {
        // f16 d, f16 m, then nibbles as in Q4_0; value = q * d + m.
        let base = (index / 32) * 20;
        let j = index % 32;
        let q = (byte_at(data, base + 4 + j % 16) >> (((j / 16) * 4) as u32)) & 0xFu32;
        f32::cast_from(q) * f16_at(data, base) + f16_at(data, base + 2)
    } else if layout == kind::Q5_0 {
        // f16 d, 4 bytes qh (bit j is the fifth bit of value j), nibbles as in Q4_0;
        // value = d * (q - 16).
        let base = (index / 32) * 22;
        let j = index % 32;
        let low = (byte_at(data, base + 6 + j % 16) >> (((j / 16) * 4) as u32)) & 0xFu32;
        let high = (byte_at(data, base + 2 + j / 8) >> ((j % 8) as u32)) & 1u32;
        f16_at(data, base) * (f32::cast_from(low | (high << 4u32)) - 16.0f32)
    } else if layout == kind::Q5_1 {
        // f16 d, f16 m, 4 bytes qh (as Q5_0), nibbles as in Q4_0; value = q * d + m.
        let base = (index / 32) * 24;
        let j = index % 32;
        let low = (byte_at(data, base + 8 + j % 16) >> (((j / 16) * 4) as u32)) & 0xFu32;
        let high = (byte_at(data, base + 4 + j / 8) >> ((j % 8) as u32)) & 1u32;
        f32::cast_from(low | (high << 4u32)) * f16_at(data, base) + f16_at(data, base + 2)
    } else if layout == kind::Q5_K {
        // As Q4_K with 32 bytes qh after the scales (bit `sub` of qh[l] is the fifth bit of
        // value 32 sub + l) and the nibbles after them (ggml-quants.c
        // `dequantize_row_q5_K`; `aihal_quantize`'s `formats/q5_k.rs`).
        let base = (index / 256) * 176;
        let t = index % 256;
        let sub = t / 32;
        let low = (byte_at(data, base + 48 + 32 * (t / 64) + t % 32) >> ((4 * (sub % 2)) as u32)) & 0xFu32;
        let high = (byte_at(data, base + 16 + t % 32) >> (sub as u32)) & 1u32;
        let sc = q4k_scale_min(data, base + 4, sub, false);
        let m = q4k_scale_min(data, base + 4, sub, true);
        (f16_at(data, base) * sc) * f32::cast_from(low | (high << 4u32)) - f16_at(data, base + 2) * m
    } else if layout == kind::Q4_K {
        // f16 d, f16 dmin, 12 scale bytes, 128 bytes of nibbles: byte l of qs[32p..] holds
        // value 64p + l (low nibble) and 64p + 32 + l (high); value = (d * sc) * q - dmin * m.
        let base = (index / 256) * 144;
        let t = index % 256;
        let sub = t / 32;
        let q = (byte_at(data, base + 16 + 32 * (t / 64) + t % 32) >> ((4 * (sub % 2)) as u32)) & 0xFu32;
        let sc = q4k_scale_min(data, base + 4, sub, false);
        let m = q4k_scale_min(data, base + 4, sub, true);
        (f16_at(data, base) * sc) * f32::cast_from(q) - f16_at(data, base + 2) * m
    } else if layout == kind::Q6_K {
        // 128 bytes ql, 64 bytes qh, 16 i8 scales, f16 d; value = (d * scale) * (q - 32).
        let base = (index / 256) * 210;
        let t = index % 256;
        let scale = f16_at(data, base + 208) * i8_of(byte_at(data, base + 192 + q6k_scale_index(t)));
        scale * (f32::cast_from(q6k_code(data, base, t)) - 32.0f32)
    } else if layout == kind::Q2_K {
        // 16 bytes of scales (low nibble) and minimums (high) per 16 values, 64 bytes of
        // 2-bit codes, f16 d, f16 dmin: value t (half h = t / 128, run s = t % 128 / 32) is
        // bits 2s of qs[32h + t % 32]; value = (d * sc) * q - dmin * m (ggml-quants.c
        // `dequantize_row_q2_K`; `aihal_quantize`'s `formats/q2_k.rs`).
        let base = (index / 256) * 84;
        let t = index % 256;
        let q = (byte_at(data, base + 16 + 32 * (t / 128) + t % 32) >> ((2 * ((t % 128) / 32)) as u32)) & 3u32;
        let sm = byte_at(data, base + t / 16);
        (f16_at(data, base + 80) * f32::cast_from(sm & 0xFu32)) * f32::cast_from(q)
            - f16_at(data, base + 82) * f32::cast_from(sm >> 4u32)
    } else if layout == kind::Q3_K {
        // 32 bytes hmask, 64 bytes of 2-bit codes, 12 bytes of sixteen 6-bit scales, f16 d:
        // value t (n = t / 128, run r = t % 128 / 32) has bits 2r of qs[32n + t % 32] and the
        // high bit 4n + r of hmask[t % 32] (clear: minus 4); sub-block j = t / 16 has the
        // scale s (low 4 bits in scales[j % 8], nibble j / 8; high 2 bits at 2 (j / 4) of
        // scales[8 + j % 4]); value = (d * (s - 32)) * q (ggml-quants.c
        // `dequantize_row_q3_K`; `aihal_quantize`'s `formats/q3_k.rs`).
        let base = (index / 256) * 110;
        let t = index % 256;
        let n = t / 128;
        let r = (t % 128) / 32;
        let low = (byte_at(data, base + 32 + 32 * n + t % 32) >> ((2 * r) as u32)) & 3u32;
        let high = (byte_at(data, base + t % 32) >> ((4 * n + r) as u32)) & 1u32;
        let j = t / 16;
        let s_low = (byte_at(data, base + 96 + j % 8) >> ((4 * (j / 8)) as u32)) & 0xFu32;
        let s_high = (byte_at(data, base + 104 + j % 4) >> ((2 * (j / 4)) as u32)) & 3u32;
        let scale = f16_at(data, base + 108) * (f32::cast_from(s_low | (s_high << 4u32)) - 32.0f32);
        scale * (f32::cast_from(low | (high << 2u32)) - 4.0f32)
    } else if layout == kind::IQ4_NL {
        // f16 d, then 4-bit indices into the 16-value code book packed as in Q4_0;
        // value = d * kvalues[index] (`lut` holds the code book).
        let base = (index / 32) * 18;
        let j = index % 32;
        let i = (byte_at(data, base + 2 + j % 16) >> (((j / 16) * 4) as u32)) & 0xFu32;
        f16_at(data, base) * lut[i as usize]
    } else if layout == kind::IQ4_XS {
        // f16 d, u16 scales_h, 4 bytes scales_l, 128 bytes of indices (IQ4_NL's order per
        // 32 values): sub-block ib = t / 32 has ls = nibble ib % 2 of scales_l[ib / 2] under
        // bits 2 ib of scales_h; value = (d * (ls - 32)) * kvalues[index] (ggml-quants.c
        // `dequantize_row_iq4_xs`; `aihal_quantize`'s `formats/iq4_xs.rs`).
        let base = (index / 256) * 136;
        let t = index % 256;
        let ib = t / 32;
        let j = t % 32;
        let i = (byte_at(data, base + 8 + 16 * ib + j % 16) >> (((j / 16) * 4) as u32)) & 0xFu32;
        let ls_low = (byte_at(data, base + 4 + ib / 2) >> ((4 * (ib % 2)) as u32)) & 0xFu32;
        let ls_high = (byte_at(data, base + 2 + ib / 4) >> ((2 * (ib % 4)) as u32)) & 3u32;
        (f16_at(data, base) * (f32::cast_from(ls_low | (ls_high << 4u32)) - 32.0f32)) * lut[i as usize]
    } else if layout == kind::TQ2_0 {
        let base = (index / 256) * 66;
        let t = index % 256;
        let half = t / 128;
        let rem = t % 128;
        let l = rem / 32;
        let j = rem % 32;
        let q = (byte_at(data, base + 32 * half + j) >> ((2 * l) as u32)) & 3u32;
        f16_at(data, base + 64) * (f32::cast_from(q) - 1.0f32)
    } else if layout == kind::TERNARY {
        let q = (byte_at(data, index / 4) >> ((2 * (index % 4)) as u32)) & 3u32;
        scales[0] * (f32::cast_from(q) - 1.0f32)
    } else if layout == kind::NF4 || layout == kind::NF4_DOUBLE {
        // The first element of a byte is in its high nibble.
        let byte = byte_at(data, index / 2);
        let code = (byte >> ((4 - (index % 2) * 4) as u32)) & 0xFu32;
        let b = index / block;
        let absmax = if layout == kind::NF4 {
            scales[b]
        } else {
            // lut holds the 16 NF4 values then the 256-entry nested code book; the offset
            // follows the nested scales.
            let nested_count = nested_scales.len() - 1;
            lut[16 + byte_at(nested, b) as usize] * nested_scales[b / nested_block] + nested_scales[nested_count]
        };
        lut[code as usize] * absmax
    } else if layout == kind::INT8_CHANNEL {
        i8_of(byte_at(data, index)) * scales[row]
    } else if layout == kind::INT8_BLOCK {
        let per_row = k.div_ceil(block);
        i8_of(byte_at(data, index)) * scales[row * per_row + col / block]
    } else if layout == kind::FP8_TENSOR {
        lut[byte_at(data, index) as usize] * scales[0]
    } else if layout == kind::F32 {
        f32::reinterpret(data[index])
    } else {
        let per_row = k.div_ceil(block);
        lut[byte_at(data, index) as usize] * scales[row * per_row + col / block]
    }
}
