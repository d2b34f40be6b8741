//! llama.cpp's Q4_0, Q8_0 and TQ2_0 blocks, quantized exactly as llama.cpp's reference
//! quantizers (`quantize_row_q4_0_ref`, `quantize_row_q8_0_ref`, `quantize_row_tq2_0_ref`
//! in `ggml-quants.c`) do, so our bytes are the bytes llama.cpp writes.
//!
//! - Q8_0: `d = amax / 127`, `q = roundf(x * (1/d))` (half away from zero).
//! - Q4_0: `d = max / -8` where `max` is the signed value of largest magnitude (the first
//!   one on ties), `q = min(15, trunc(x * (1/d) + 8.5))`.
//! - TQ2_0: `d = amax`, `q = lroundf(x * (1/d)) + 1`.
//!
//! `d` is stored as IEEE f16 rounded to nearest even. Dequantization multiplies by that
//! f16 scale (widened to f32).

use half::f16;

use crate::par::{round_half_away, units_per_task, zip_chunks, PAR_MIN_ELEMS};

/// Values per Q4_0 / Q8_0 block.
pub const QK: usize = 32;
/// Values per TQ2_0 block.
pub const QK_K: usize = 256;
/// Bytes per Q4_0 block.
pub const Q4_0_BYTES: usize = 18;
/// Bytes per Q8_0 block.
pub const Q8_0_BYTES: usize = 34;
/// Bytes per TQ2_0 block.
pub const TQ2_0_BYTES: usize = 66;

/// The first block whose stored f16 scale overflowed to infinity, if any (`at` is the
/// scale's byte offset inside a block of `bytes`).
pub(crate) fn first_infinite_scale(data: &[u8], bytes: usize, at: usize) -> Option<usize> {
    data.chunks_exact(bytes)
        .position(|b| f16::from_le_bytes([b[at], b[at + 1]]).is_infinite())
}

fn q8_0_block(x: &[f32], out: &mut [u8]) {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d == 0.0 { 0.0 } else { 1.0 / d };
    out[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
    for (o, &v) in out[2..].iter_mut().zip(x) {
        *o = round_half_away(v * id) as i8 as u8;
    }
}

fn q4_0_block(x: &[f32], out: &mut [u8]) {
    let mut amax = 0.0f32;
    let mut max = 0.0f32;
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    let d = max / -8.0;
    let id = if d == 0.0 { 0.0 } else { 1.0 / d };
    out[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
    for j in 0..QK / 2 {
        let q0 = ((x[j] * id + 8.5) as u8).min(15);
        let q1 = ((x[j + QK / 2] * id + 8.5) as u8).min(15);
        out[2 + j] = q0 | (q1 << 4);
    }
}

fn tq2_0_block(x: &[f32], out: &mut [u8]) {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax;
    let id = if d == 0.0 { 0.0 } else { 1.0 / d };
    for h in 0..2 {
        for j in 0..32 {
            let mut q = 0u8;
            for l in 0..4 {
                let xi = (round_half_away(x[128 * h + 32 * l + j] * id) + 1) & 3;
                q |= (xi as u8) << (2 * l);
            }
            out[32 * h + j] = q;
        }
    }
    out[64..66].copy_from_slice(&f16::from_f32(d).to_le_bytes());
}

fn quantize_blocks(x: &[f32], qk: usize, bytes: usize, f: fn(&[f32], &mut [u8])) -> Vec<u8> {
    let mut data = vec![0u8; x.len() / qk * bytes];
    let per = units_per_task(qk);
    zip_chunks(
        &mut data,
        per * bytes,
        x,
        per * qk,
        x.len() >= PAR_MIN_ELEMS,
        |_, d, x| {
            for (d, x) in d.chunks_exact_mut(bytes).zip(x.chunks_exact(qk)) {
                f(x, d);
            }
        },
    );
    data
}

/// Quantizes `x` (a multiple of 32 values) to Q8_0 blocks.
pub(crate) fn quantize_q8_0(x: &[f32]) -> Vec<u8> {
    quantize_blocks(x, QK, Q8_0_BYTES, q8_0_block)
}

/// Quantizes `x` (a multiple of 32 values) to Q4_0 blocks.
pub(crate) fn quantize_q4_0(x: &[f32]) -> Vec<u8> {
    quantize_blocks(x, QK, Q4_0_BYTES, q4_0_block)
}

/// Quantizes `x` (a multiple of 256 values) to TQ2_0 blocks.
pub(crate) fn quantize_tq2_0(x: &[f32]) -> Vec<u8> {
    quantize_blocks(x, QK_K, TQ2_0_BYTES, tq2_0_block)
}

fn scale(b: &[u8]) -> f32 {
    f16::from_le_bytes([b[0], b[1]]).to_f32()
}

/// Dequantizes Q8_0 blocks into `out`.
pub(crate) fn dequantize_q8_0(data: &[u8], out: &mut [f32]) {
    let per = units_per_task(QK);
    zip_chunks(
        out,
        per * QK,
        data,
        per * Q8_0_BYTES,
        out.len() >= PAR_MIN_ELEMS,
        |_, out, data| {
            for (o, b) in out.chunks_exact_mut(QK).zip(data.chunks_exact(Q8_0_BYTES)) {
                let d = scale(b);
                for (o, &q) in o.iter_mut().zip(&b[2..]) {
                    *o = f32::from(q as i8) * d;
                }
            }
        },
    );
}

/// Dequantizes Q4_0 blocks into `out`.
pub(crate) fn dequantize_q4_0(data: &[u8], out: &mut [f32]) {
    let per = units_per_task(QK);
    zip_chunks(
        out,
        per * QK,
        data,
        per * Q4_0_BYTES,
        out.len() >= PAR_MIN_ELEMS,
        |_, out, data| {
            for (o, b) in out.chunks_exact_mut(QK).zip(data.chunks_exact(Q4_0_BYTES)) {
                let d = scale(b);
                let (lo, hi) = o.split_at_mut(QK / 2);
                for ((l, h), &q) in lo.iter_mut().zip(hi.iter_mut()).zip(&b[2..]) {
                    *l = f32::from(i16::from(q & 0x0F) - 8) * d;
                    *h = f32::from(i16::from(q >> 4) - 8) * d;
                }
            }
        },
    );
}

/// Dequantizes TQ2_0 blocks into `out`.
pub(crate) fn dequantize_tq2_0(data: &[u8], out: &mut [f32]) {
    let per = units_per_task(QK_K);
    zip_chunks(
        out,
        per * QK_K,
        data,
        per * TQ2_0_BYTES,
        out.len() >= PAR_MIN_ELEMS,
        |_, out, data| {
            for (o, b) in out.chunks_exact_mut(QK_K).zip(data.chunks_exact(TQ2_0_BYTES)) {
                let d = scale(&b[64..]);
                for (h, oh) in o.chunks_exact_mut(128).enumerate() {
                    let qs = &b[32 * h..32 * h + 32];
                    for (l, ol) in oh.chunks_exact_mut(32).enumerate() {
                        for (o, &q) in ol.iter_mut().zip(qs) {
                            *o = f32::from(i16::from((q >> (2 * l)) & 3) - 1) * d;
                        }
                    }
                }
            }
        },
    );
}
