//! Q5_K: llama.cpp `block_q5_K` (ggml-common.h): 176 bytes per super-block of 256 values =
//! f16 `d` (byte 0), f16 `dmin` (byte 2), 12 bytes `scales` (byte 4: eight 6-bit scales and
//! minimums, packed as in Q4_K), 32 bytes `qh` (byte 16), 128 bytes `qs` (byte 48). In
//! quarter `p` (0..4, values `64p ..`), byte `l` (0..32) of `qs[32p..]` holds the low 4 bits
//! of value `64p + l` (low nibble) and `64p + 32 + l` (high nibble); their fifth bits are
//! bits `2p` and `2p + 1` of `qh[l]`. Value = `(d * sc) * q - dmin * m` for the value's
//! 32-value sub-block (ggml-quants.c `dequantize_row_q5_K`).
//!
//! Quantizer (ggml-quants.c `quantize_row_q5_K_ref`): as Q4_K with 5-bit codes, fitted by
//! `make_qkx2_quants(nmax 31, rmin -0.5, rdelta 0.1, 16 trial scales)`.

use candle_core::quantized::GgmlDType;

use super::q4_k::{fit_scale_min_blocks, scale_min_k4};
use super::{f16_at, BlockFormat, QK_K};
use crate::format::QuantFormat;

/// Bytes per block.
pub(crate) const BYTES: usize = 176;

pub(crate) static FORMAT: BlockFormat = BlockFormat {
    format: QuantFormat::Q5K,
    ggml_type: 13,
    candle: Some(GgmlDType::Q5K),
    values: QK_K,
    bytes: BYTES,
    f16_fields: &[0, 2],
    quantize,
    dequantize,
    check_codes: None,
};

fn quantize(x: &[f32], out: &mut [u8]) {
    let l = fit_scale_min_blocks(x, out, 31, -0.5, 15);
    let (head, qs) = out.split_at_mut(48);
    let qh = &mut head[16..48];
    qh.fill(0);
    for p in 0..4 {
        let (m1, m2) = (1u8 << (2 * p), 2u8 << (2 * p));
        for j in 0..32 {
            let (mut l1, mut l2) = (l[64 * p + j], l[64 * p + 32 + j]);
            if l1 > 15 {
                l1 -= 16;
                qh[j] |= m1;
            }
            if l2 > 15 {
                l2 -= 16;
                qh[j] |= m2;
            }
            qs[32 * p + j] = l1 | (l2 << 4);
        }
    }
}

fn dequantize(b: &[u8], out: &mut [f32]) {
    let (d, min) = (f16_at(b, 0), f16_at(b, 2));
    let scales = &b[4..16];
    let qh = &b[16..48];
    for p in 0..4 {
        let ql = &b[48 + 32 * p..48 + 32 * p + 32];
        let (sc, m) = scale_min_k4(2 * p, scales);
        let (d1, m1) = (d * f32::from(sc), min * f32::from(m));
        let (sc, m) = scale_min_k4(2 * p + 1, scales);
        let (d2, m2) = (d * f32::from(sc), min * f32::from(m));
        let (u1, u2) = (1u8 << (2 * p), 2u8 << (2 * p));
        let o = &mut out[64 * p..64 * p + 64];
        for (i, (&q, &h)) in ql.iter().zip(qh).enumerate() {
            let hi1 = if h & u1 != 0 { 16 } else { 0 };
            let hi2 = if h & u2 != 0 { 16 } else { 0 };
            o[i] = d1 * f32::from((q & 0xF) + hi1) - m1;
            o[32 + i] = d2 * f32::from((q >> 4) + hi2) - m2;
        }
    }
}
