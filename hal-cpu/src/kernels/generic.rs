//! The scalar kernel set. The exact kernels give the same bits as
//! [`reference::matmul`](aihal_reference::matmul); the q8 kernels define the int8-activation
//! arithmetic the SIMD q8 kernels are tested against.

use aihal_quantize::{QuantFormat, QuantizedTensor};

use super::{ActQ8, ExactFn, Kernels, Q8Fn};
use crate::kernels::codes::{
    decode_row_into, f16_at, IQ4_LEVELS, IQ4_NL_BLOCK_BYTES, IQ4_XS_BLOCK_BYTES, NF4_I8, Q2_K_BLOCK_BYTES,
    Q3_K_BLOCK_BYTES, Q4_0_BLOCK_BYTES, Q4_1_BLOCK_BYTES, Q4_K_BLOCK_BYTES, Q5_0_BLOCK_BYTES, Q5_1_BLOCK_BYTES,
    Q5_K_BLOCK_BYTES, Q6_K_BLOCK_BYTES, Q8_0_BLOCK_BYTES, TQ2_0_BLOCK_BYTES,
};

pub(crate) static KERNELS: Kernels = Kernels {
    name: "generic",
    exact: |_| exact as ExactFn,
    q8: q8_for,
    panel: |_| None,
    exact_panel: |_| None,
};

/// Values decoded per step: a stack buffer, never a whole row or matrix.
const CHUNK: usize = 256;

/// The exact kernel for every format: decode `CHUNK` values of the row into a stack buffer,
/// accumulate each activation row in increasing `k` (the reference order, no FMA). Slice
/// lengths are checked by indexing.
pub(crate) fn exact(w: &QuantizedTensor, n: usize, x: &[f32], rows: usize, out: &mut [f32]) {
    let k = w.row_len();
    let mut buf = [0.0f32; CHUNK];
    let mut acc = [0.0f32; super::MAX_ROWS];
    let mut k0 = 0;
    while k0 < k {
        let len = CHUNK.min(k - k0);
        let wv = &mut buf[..len];
        decode_row_into(w, n, k0, wv);
        for (r, a) in acc.iter_mut().enumerate().take(rows) {
            let xr = &x[r * k + k0..r * k + k0 + len];
            for (&p, &q) in xr.iter().zip(wv.iter()) {
                *a += p * q;
            }
        }
        k0 += len;
    }
    out[..rows].copy_from_slice(&acc[..rows]);
}

/// The int8-activation kernel of a format, where [`super::formats::entry`] gives it one.
pub(crate) fn q8_for(format: QuantFormat) -> Option<Q8Fn> {
    super::formats::entry(format).q8.ok()?;
    Some(match format {
        QuantFormat::Nf4 { .. } => q8_nf4 as Q8Fn,
        QuantFormat::Q4_1 | QuantFormat::Q5_1 | QuantFormat::Q4K | QuantFormat::Q5K => q8_affine as Q8Fn,
        QuantFormat::Q6K | QuantFormat::Q3K => q8_sub16 as Q8Fn,
        QuantFormat::Q2K => q8_q2_k as Q8Fn,
        _ => q8 as Q8Fn,
    })
}

/// Whether `format` has an int8-activation path (read from [`super::formats::entry`]).
pub(crate) fn has_q8(format: QuantFormat) -> bool {
    super::formats::entry(format).q8.is_ok()
}

/// The integer codes of block `b` (32 values, zero past the end of the row) of row `n`, and
/// the block's weight scale.
pub(crate) fn weight_block(w: &QuantizedTensor, n: usize, b: usize) -> ([i8; 32], f32) {
    let k = w.row_len();
    let data = w.data();
    let mut codes = [0i8; 32];
    let scale = match w.format() {
        QuantFormat::Q8_0 => {
            let blk = &data[(n * (k / 32) + b) * Q8_0_BLOCK_BYTES..][..Q8_0_BLOCK_BYTES];
            for (c, &q) in codes.iter_mut().zip(&blk[2..]) {
                *c = q as i8;
            }
            f16_at(blk)
        }
        QuantFormat::Q4_0 => {
            let blk = &data[(n * (k / 32) + b) * Q4_0_BLOCK_BYTES..][..Q4_0_BLOCK_BYTES];
            for j in 0..16 {
                codes[j] = (blk[2 + j] & 0xF) as i8 - 8;
                codes[j + 16] = (blk[2 + j] >> 4) as i8 - 8;
            }
            f16_at(blk)
        }
        QuantFormat::Tq2_0 => {
            let blk = &data[(n * (k / 256) + b / 8) * TQ2_0_BLOCK_BYTES..][..TQ2_0_BLOCK_BYTES];
            let g = b % 8;
            for (j, c) in codes.iter_mut().enumerate() {
                *c = ((blk[32 * (g / 4) + j] >> (2 * (g % 4))) & 3) as i8 - 1;
            }
            f16_at(&blk[64..])
        }
        QuantFormat::Int8PerChannel | QuantFormat::Int8PerBlock { .. } => {
            let start = b * 32;
            let end = (start + 32).min(k);
            for (c, &q) in codes.iter_mut().zip(&data[n * k + start..n * k + end]) {
                *c = q as i8;
            }
            match w.format() {
                QuantFormat::Int8PerBlock { block_size } => w.scales()[n * k.div_ceil(block_size) + start / block_size],
                _ => w.scales()[n],
            }
        }
        QuantFormat::Q5_0 => {
            // d (f16), the 32 fifth bits (u32, value j's in bit j), then low nibbles as Q4_0's:
            // value = d * (q - 16) (ggml-common.h `block_q5_0`, ggml-quants.c
            // `dequantize_row_q5_0`).
            let blk = &data[(n * (k / 32) + b) * Q5_0_BLOCK_BYTES..][..Q5_0_BLOCK_BYTES];
            let qh = u32::from_le_bytes([blk[2], blk[3], blk[4], blk[5]]);
            for j in 0..16 {
                let hi = |bit: usize| (((qh >> bit) & 1) << 4) as u8;
                codes[j] = ((blk[6 + j] & 0xF) | hi(j)) as i8 - 16;
                codes[j + 16] = ((blk[6 + j] >> 4) | hi(j + 16)) as i8 - 16;
            }
            f16_at(blk)
        }
        QuantFormat::Iq4Nl => {
            // d (f16), then 16 bytes of 4-bit indices in Q4_0's nibble order into the code
            // book: value = d * IQ4_LEVELS[index] (ggml-quants.c `dequantize_row_iq4_nl`).
            let blk = &data[(n * (k / 32) + b) * IQ4_NL_BLOCK_BYTES..][..IQ4_NL_BLOCK_BYTES];
            iq4_codes(&blk[2..18], &mut codes);
            f16_at(blk)
        }
        QuantFormat::Iq4Xs => {
            // f16 d, u16 `scales_h`, 4 bytes `scales_l`, then 16 bytes of indices per block of
            // 32 (Q4_0's nibble order): block `g`'s 6-bit scale `ls` is nibble `g` of
            // `scales_l` with bits `2g ..` of `scales_h` above it, and value = `(d * (ls - 32))
            // * IQ4_LEVELS[index]` (`dequantize_row_iq4_xs`).
            let blk = &data[(n * (k / 256) + b / 8) * IQ4_XS_BLOCK_BYTES..][..IQ4_XS_BLOCK_BYTES];
            let g = b % 8;
            let high = u16::from_le_bytes([blk[2], blk[3]]);
            let ls = ((blk[4 + g / 2] >> (4 * (g % 2))) & 0xF) | ((((high >> (2 * g)) & 3) as u8) << 4);
            iq4_codes(&blk[8 + 16 * g..][..16], &mut codes);
            f16_at(blk) * (i32::from(ls) - 32) as f32
        }
        _ => f32::NAN,
    };
    (codes, scale)
}

/// IQ4's 32 code-book levels from 16 bytes of indices (value `j` in the low nibble of byte
/// `j`, value `j + 16` in its high nibble).
fn iq4_codes(qs: &[u8], codes: &mut [i8; 32]) {
    for (j, &q) in qs.iter().enumerate().take(16) {
        codes[j] = IQ4_LEVELS[usize::from(q & 0xF)];
        codes[j + 16] = IQ4_LEVELS[usize::from(q >> 4)];
    }
}

/// The codes of block `b` of row `n` of a Q4_1, Q5_1, Q4_K or Q5_K weight (0..=15, or 0..=31
/// for the 5-bit ones), with its scale and its additive term: value = `scale * code + add`.
///
/// Q4_1 (ggml-common.h `block_q4_1`: f16 d, f16 m, 16 bytes of nibbles as Q4_0's): `d`, `m`.
/// Q4_K (`block_q4_K`: f16 d, f16 dmin, 12 bytes of 6-bit sub-block scales and minimums, 128
/// bytes of nibbles; ggml-quants.c `dequantize_row_q4_K`): sub-block `g = b % 8` of 32 values
/// has scale `d * sc_g` and term `-(dmin * m_g)`, its codes in the low nibbles of bytes
/// `32 (g / 2) ..` for even `g`, the high ones for odd `g`.
pub(crate) fn affine_block(w: &QuantizedTensor, n: usize, b: usize) -> ([u8; 32], f32, f32) {
    let k = w.row_len();
    let data = w.data();
    let mut codes = [0u8; 32];
    match w.format() {
        QuantFormat::Q4_1 => {
            let blk = &data[(n * (k / 32) + b) * Q4_1_BLOCK_BYTES..][..Q4_1_BLOCK_BYTES];
            for j in 0..16 {
                codes[j] = blk[4 + j] & 0xF;
                codes[j + 16] = blk[4 + j] >> 4;
            }
            (codes, f16_at(blk), f16_at(&blk[2..]))
        }
        QuantFormat::Q4K => {
            let blk = &data[(n * (k / 256) + b / 8) * Q4_K_BLOCK_BYTES..][..Q4_K_BLOCK_BYTES];
            let g = b % 8;
            let (sc, m) = q4_k_scale_min(&blk[4..16], g);
            let q = &blk[16 + 32 * (g / 2)..][..32];
            for (c, &byte) in codes.iter_mut().zip(q) {
                *c = if g.is_multiple_of(2) { byte & 0xF } else { byte >> 4 };
            }
            (codes, f16_at(blk) * f32::from(sc), -(f16_at(&blk[2..]) * f32::from(m)))
        }
        QuantFormat::Q5_1 => {
            // f16 d, f16 m, the 32 fifth bits (u32, value j's in bit j), then nibbles as
            // Q4_1's: value = d * q + m (`dequantize_row_q5_1`).
            let blk = &data[(n * (k / 32) + b) * Q5_1_BLOCK_BYTES..][..Q5_1_BLOCK_BYTES];
            let qh = u32::from_le_bytes([blk[4], blk[5], blk[6], blk[7]]);
            let hi = |bit: usize| (((qh >> bit) & 1) << 4) as u8;
            for j in 0..16 {
                codes[j] = (blk[8 + j] & 0xF) | hi(j);
                codes[j + 16] = (blk[8 + j] >> 4) | hi(j + 16);
            }
            (codes, f16_at(blk), f16_at(&blk[2..]))
        }
        QuantFormat::Q5K => {
            // As Q4_K, with 32 bytes `qh` (byte 16) before the nibbles (byte 48): value `i` of
            // sub-block `g` takes bit `g` of `qh[i]` as its fifth bit (`dequantize_row_q5_K`).
            let blk = &data[(n * (k / 256) + b / 8) * Q5_K_BLOCK_BYTES..][..Q5_K_BLOCK_BYTES];
            let g = b % 8;
            let (sc, m) = q4_k_scale_min(&blk[4..16], g);
            let (qh, q) = (&blk[16..48], &blk[48 + 32 * (g / 2)..][..32]);
            for ((c, &byte), &h) in codes.iter_mut().zip(q).zip(qh) {
                let low = if g.is_multiple_of(2) { byte & 0xF } else { byte >> 4 };
                *c = low | (((h >> g) & 1) << 4);
            }
            (codes, f16_at(blk) * f32::from(sc), -(f16_at(&blk[2..]) * f32::from(m)))
        }
        _ => (codes, f32::NAN, f32::NAN),
    }
}

/// Q4_K's 6-bit scale and minimum of sub-block `g` (0..8) from the 12 packed bytes: for
/// `g < 4` the low 6 bits of bytes `g` and `g + 4`; else the nibbles of byte `g + 4` with the
/// top 2 bits of bytes `g - 4` and `g` above them (ggml-quants.c `get_scale_min_k4`).
pub(crate) fn q4_k_scale_min(s: &[u8], g: usize) -> (u8, u8) {
    if g < 4 {
        (s[g] & 63, s[g + 4] & 63)
    } else {
        (
            (s[g + 4] & 0xF) | ((s[g - 4] >> 6) << 4),
            (s[g + 4] >> 4) | ((s[g] >> 6) << 4),
        )
    }
}

/// The codes of block `b` of row `n` of a Q6_K or Q3_K weight (the K-quants whose values are
/// a signed code times a scale per 16 values), the i8 scales of its two halves of 16, and the
/// super-block's `d`: value = `d * sc_half * code`.
///
/// Q6_K, codes `q - 32` (-32..=31): `block_q6_K` (ggml-common.h) is 128 bytes of low
/// nibbles, 64 bytes of high 2-bit pairs, 16 i8 sub-block scales, f16 d. Block `g = b % 8`
/// of the super-block is quarter `t = g % 4` of half `h = g / 4` (ggml-quants.c
/// `dequantize_row_q6_K`): value `i` takes the low or high nibble (`t` < 2 or not) of byte
/// `64 h + 32 (t % 2) + i` and bits `2 t ..` of byte `128 + 32 h + i`; its scales are bytes
/// `192 + 2 g` (values 0..16) and `193 + 2 g` (16..32).
///
/// Q3_K, codes `q - 4` (-4..=3): `block_q3_K` is 32 bytes `hmask`, 64 bytes of 2-bit codes,
/// 12 bytes of 6-bit scales, f16 d. Block `g` is shift `t = g % 4` of half `h = g / 4`
/// (`dequantize_row_q3_K`): value `i` takes bits `2 t ..` of byte `32 + 32 h + i` and, as its
/// high bit, bit `g` of `hmask[i]`: the code is the 2-bit value where that bit is set and the
/// 2-bit value minus 4 where it is clear; its scales are the 6-bit scales `2 g` and `2 g + 1`
/// minus 32 ([`q3_k_scale`]).
pub(crate) fn sub16_block(w: &QuantizedTensor, n: usize, b: usize) -> ([i8; 32], [i8; 2], f32) {
    let k = w.row_len();
    let g = b % 8;
    let (h, t) = (g / 4, g % 4);
    let mut codes = [0i8; 32];
    if w.format() == QuantFormat::Q3K {
        let blk = &w.data()[(n * (k / 256) + b / 8) * Q3_K_BLOCK_BYTES..][..Q3_K_BLOCK_BYTES];
        let (hmask, q) = (&blk[..32], &blk[32 + 32 * h..][..32]);
        for ((c, &byte), &m) in codes.iter_mut().zip(q).zip(hmask) {
            let low = ((byte >> (2 * t)) & 3) as i8;
            *c = if (m >> g) & 1 != 0 { low } else { low - 4 };
        }
        let sc = &blk[96..108];
        let scales = [q3_k_scale(sc, 2 * g) - 32, q3_k_scale(sc, 2 * g + 1) - 32];
        return (codes, scales, f16_at(&blk[108..]));
    }
    let blk = &w.data()[(n * (k / 256) + b / 8) * Q6_K_BLOCK_BYTES..][..Q6_K_BLOCK_BYTES];
    let ql = &blk[64 * h + 32 * (t % 2)..][..32];
    let qh = &blk[128 + 32 * h..][..32];
    for (i, c) in codes.iter_mut().enumerate() {
        let lo = if t < 2 { ql[i] & 0xF } else { ql[i] >> 4 };
        let hi = (qh[i] >> (2 * t)) & 3;
        *c = (lo | (hi << 4)) as i8 - 32;
    }
    let scales = [blk[192 + 2 * g] as i8, blk[193 + 2 * g] as i8];
    (codes, scales, f16_at(&blk[208..]))
}

/// Q3_K's 6-bit scale of sub-block `j` (0..16, 16 values each) from its 12 packed bytes: the
/// low 4 bits from the low (`j < 8`) or high nibble of byte `j % 8`, the high 2 bits from bits
/// `2 (j / 4) ..` of byte `8 + j % 4` (the unpacking in ggml-quants.c `dequantize_row_q3_K`).
pub(crate) fn q3_k_scale(s: &[u8], j: usize) -> i8 {
    let low = if j < 8 { s[j] & 0xF } else { s[j - 8] >> 4 };
    let high = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
    (low | (high << 4)) as i8
}

/// The codes (0..=3) of block `b` of row `n` of a Q2_K weight, the 4-bit scales and minimums
/// of its two halves of 16, and the super-block's `d` and `dmin`: value = `(d * sc_half) *
/// code - dmin * m_half`.
///
/// `block_q2_K` (ggml-common.h): 16 bytes of scales (per 16 values, the scale in the low
/// nibble, the minimum in the high one), 64 bytes of 2-bit codes, f16 d, f16 dmin. Block
/// `g = b % 8` is shift `t = g % 4` of half `h = g / 4` (ggml-quants.c
/// `dequantize_row_q2_K`): value `i` is bits `2 t ..` of byte `16 + 32 h + i`; its scale
/// bytes are `2 g` and `2 g + 1`.
pub(crate) fn q2_k_block(w: &QuantizedTensor, n: usize, b: usize) -> ([u8; 32], [u8; 2], [u8; 2], f32, f32) {
    let k = w.row_len();
    let blk = &w.data()[(n * (k / 256) + b / 8) * Q2_K_BLOCK_BYTES..][..Q2_K_BLOCK_BYTES];
    let g = b % 8;
    let (h, t) = (g / 4, g % 4);
    let codes = std::array::from_fn(|i| (blk[16 + 32 * h + i] >> (2 * t)) & 3);
    let (s0, s1) = (blk[2 * g], blk[2 * g + 1]);
    (
        codes,
        [s0 & 0xF, s1 & 0xF],
        [s0 >> 4, s1 >> 4],
        f16_at(&blk[80..]),
        f16_at(&blk[82..]),
    )
}

/// `out[r] = Σ_b (ws_b * dx_b) * isum_b` in increasing `b`, `isum_b` the exact integer dot
/// product of block `b`. Slice lengths are checked by indexing.
fn q8(w: &QuantizedTensor, n: usize, a: &ActQ8, row0: usize, rows: usize, out: &mut [f32]) {
    let nb = a.nb;
    let mut acc = [0.0f32; super::MAX_ROWS];
    for b in 0..nb {
        let (codes, ws) = weight_block(w, n, b);
        for (r, acc) in acc.iter_mut().enumerate().take(rows) {
            let i = row0 + r;
            let q = &a.qs[(i * nb + b) * 32..][..32];
            let isum: i32 = codes.iter().zip(q).map(|(&c, &v)| i32::from(c) * i32::from(v)).sum();
            *acc += ws * a.d[i * nb + b] * isum as f32;
        }
    }
    out[..rows].copy_from_slice(&acc[..rows]);
}

/// The int8-activation kernel of Q4_1 and Q4_K (values `scale * code + add`, codes 0..=15):
/// per block, `(ws * dx) * isum` and then `add * (dx * sx)` are added to the sum, `isum` the
/// exact integer dot product and `sx` the exact sum of the block's activation codes
/// ([`ActQ8::sums`]). The rows' values past `K` are zero. Slice lengths are checked by
/// indexing.
pub(crate) fn q8_affine(w: &QuantizedTensor, n: usize, a: &ActQ8, row0: usize, rows: usize, out: &mut [f32]) {
    let nb = a.nb;
    let mut acc = [0.0f32; super::MAX_ROWS];
    for b in 0..nb {
        let (codes, ws, add) = affine_block(w, n, b);
        for (r, acc) in acc.iter_mut().enumerate().take(rows) {
            let i = row0 + r;
            let q = &a.qs[(i * nb + b) * 32..][..32];
            let isum: i32 = codes.iter().zip(q).map(|(&c, &v)| i32::from(c) * i32::from(v)).sum();
            let dx = a.d[i * nb + b];
            *acc += ws * dx * isum as f32;
            *acc += add * (dx * a.sums[i * nb + b] as f32);
        }
    }
    out[..rows].copy_from_slice(&acc[..rows]);
}

/// The int8-activation kernel of Q6_K and Q3_K: per block of 32, `isum = sc_0 · Σ_{j<16} c_j q_j +
/// sc_1 · Σ_{j≥16} c_j q_j` exactly in i32 (at most 16 · 32 · 127 · 128 per half), and
/// `(d * dx) * isum` added to the sum. Slice lengths are checked by indexing.
pub(crate) fn q8_sub16(w: &QuantizedTensor, n: usize, a: &ActQ8, row0: usize, rows: usize, out: &mut [f32]) {
    let nb = a.nb;
    let mut acc = [0.0f32; super::MAX_ROWS];
    for b in 0..nb {
        let (codes, [s0, s1], d) = sub16_block(w, n, b);
        for (r, acc) in acc.iter_mut().enumerate().take(rows) {
            let i = row0 + r;
            let q = &a.qs[(i * nb + b) * 32..][..32];
            let half = |h: usize| -> i32 {
                codes[16 * h..16 * h + 16]
                    .iter()
                    .zip(&q[16 * h..16 * h + 16])
                    .map(|(&c, &v)| i32::from(c) * i32::from(v))
                    .sum()
            };
            let isum = i32::from(s0) * half(0) + i32::from(s1) * half(1);
            *acc += d * a.d[i * nb + b] * isum as f32;
        }
    }
    out[..rows].copy_from_slice(&acc[..rows]);
}

/// The int8-activation kernel of Q2_K: per block of 32, `isum = sc_0 · Σ_{j<16} c_j q_j +
/// sc_1 · Σ_{j≥16} c_j q_j` and `msum = m_0 · Σ_{j<16} q_j + m_1 · Σ_{j≥16} q_j` exactly in
/// i32, then `(d * dx) * isum` added to the sum and `dmin * (dx * msum)` taken from it (the
/// integer sums of llama.cpp's `ggml_vec_dot_q2_K_q8_K`, per block of 32 activations). Slice
/// lengths are checked by indexing.
pub(crate) fn q8_q2_k(w: &QuantizedTensor, n: usize, a: &ActQ8, row0: usize, rows: usize, out: &mut [f32]) {
    let nb = a.nb;
    let mut acc = [0.0f32; super::MAX_ROWS];
    for b in 0..nb {
        let (codes, sc, m, d, dmin) = q2_k_block(w, n, b);
        for (r, acc) in acc.iter_mut().enumerate().take(rows) {
            let i = row0 + r;
            let q = &a.qs[(i * nb + b) * 32..][..32];
            let (mut isum, mut msum) = (0i32, 0i32);
            for h in 0..2 {
                let (c, v) = (&codes[16 * h..16 * h + 16], &q[16 * h..16 * h + 16]);
                let dot: i32 = c.iter().zip(v).map(|(&c, &v)| i32::from(c) * i32::from(v)).sum();
                let sum: i32 = v.iter().map(|&v| i32::from(v)).sum();
                isum += i32::from(sc[h]) * dot;
                msum += i32::from(m[h]) * sum;
            }
            let dx = a.d[i * nb + b];
            *acc += d * dx * isum as f32;
            *acc -= dmin * (dx * msum as f32);
        }
    }
    out[..rows].copy_from_slice(&acc[..rows]);
}

/// The int8-activation kernel of NF4, the definition the SIMD kernels follow: each code `c`
/// counts as the integer level [`NF4_I8`]`[c]` (`round(127 * level)`), each run of values that
/// shares an absmax block and a block of 32 activations gives an exact integer dot product
/// `isum`, and `out[r] = (Σ absmax * (d_x * isum)) / 127`, summed in increasing `k`. `d_x *
/// isum` comes first because `absmax * d_x` can underflow for subnormal activations where
/// `d_x * isum` stays normal; the division by 127 comes last, once per output (the sum is 127
/// times the result, so it overflows only for results beyond `f32::MAX / 127`).
///
/// NF4 blocks run over the flattened tensor and hold at least 32 values (a power of two), so
/// when `K % 32 == 0` each block of 32 lies in one absmax block; otherwise a block of 32 may
/// straddle two, and is summed in two runs. Values past `K` count as zero. Slice lengths are
/// checked by indexing.
pub(crate) fn q8_nf4(w: &QuantizedTensor, n: usize, a: &ActQ8, row0: usize, rows: usize, out: &mut [f32]) {
    let QuantFormat::Nf4 { block_size, .. } = w.format() else {
        out[..rows].fill(f32::NAN);
        return;
    };
    let k = w.row_len();
    let (data, scales, nb) = (w.data(), w.scales(), a.nb);
    let mut acc = [0.0f32; super::MAX_ROWS];
    for b in 0..nb {
        let start = n * k + 32 * b;
        let end = n * k + (32 * b + 32).min(k);
        let mut s = start;
        while s < end {
            let blk = s / block_size;
            let e = end.min((blk + 1) * block_size);
            let ws = scales[blk];
            for (r, acc) in acc.iter_mut().enumerate().take(rows) {
                let i = row0 + r;
                let q = &a.qs[(i * nb + b) * 32..][..32];
                let isum: i32 = (s..e)
                    .map(|flat| {
                        let byte = data[flat / 2];
                        let code = if flat.is_multiple_of(2) { byte >> 4 } else { byte & 0xF };
                        i32::from(NF4_I8[usize::from(code)]) * i32::from(q[flat - start])
                    })
                    .sum();
                *acc += ws * (a.d[i * nb + b] * isum as f32);
            }
            s = e;
        }
    }
    for (o, acc) in out.iter_mut().zip(&acc).take(rows) {
        *o = acc / 127.0;
    }
}
