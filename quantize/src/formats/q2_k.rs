//! Q2_K: llama.cpp `block_q2_K` (ggml-common.h): 84 bytes per super-block of 256 values =
//! 16 bytes `scales` (byte 0: per 16-value sub-block, the 4-bit scale in the low nibble and
//! the 4-bit minimum in the high nibble), 64 bytes `qs` (byte 16), f16 `d` (byte 80), f16
//! `dmin` (byte 82). In half `h` (values `128h ..`) and shift `s` (0..4), value
//! `128h + 32s + l` (l in 0..32) is bits `2s..2s+2` of `qs[32h + l]`; sub-block `i` (values
//! `16i ..`) has value = `(d * (scales[i] & 0xF)) * q - dmin * (scales[i] >> 4)`
//! (ggml-quants.c `dequantize_row_q2_K`).
//!
//! Quantizer (ggml-quants.c `quantize_row_q2_K_ref`): per sub-block a min/scale fit
//! (`make_qkx2_quants` with weights `|x|`, absolute error, 16 trial scales), scales and
//! minimums quantized to 4 bits against the largest of each, then every value re-quantized
//! against the stored scales.

use candle_core::quantized::GgmlDType;

use super::q4_k::make_qkx2_quants;
use super::{f16_at, nearest_int, put_f16, BlockFormat, QK_K};
use crate::format::QuantFormat;

/// Bytes per block.
pub(crate) const BYTES: usize = 84;

pub(crate) static FORMAT: BlockFormat = BlockFormat {
    format: QuantFormat::Q2K,
    ggml_type: 10,
    candle: Some(GgmlDType::Q2K),
    values: QK_K,
    bytes: BYTES,
    f16_fields: &[80, 82],
    quantize,
    dequantize,
    check_codes: None,
};

fn quantize(x: &[f32], out: &mut [u8]) {
    const Q4SCALE: f32 = 15.0;
    let mut l = [0u8; QK_K];
    let mut laux = [0u8; 16];
    let mut weights = [0.0f32; 16];
    let mut mins = [0.0f32; 16];
    let mut scales = [0.0f32; 16];
    let mut max_scale = 0.0f32;
    let mut max_min = 0.0f32;
    for j in 0..16 {
        let xs = &x[16 * j..16 * j + 16];
        for (w, v) in weights.iter_mut().zip(xs) {
            *w = v.abs();
        }
        (scales[j], mins[j]) = make_qkx2_quants(3, xs, &weights, &mut l[16 * j..], &mut laux, -0.5, 0.1, 15, true);
        if scales[j] > max_scale {
            max_scale = scales[j];
        }
        if mins[j] > max_min {
            max_min = mins[j];
        }
    }
    if max_scale > 0.0 {
        let iscale = Q4SCALE / max_scale;
        for j in 0..16 {
            out[j] = nearest_int(iscale * scales[j]) as u8;
        }
        put_f16(out, 80, max_scale / Q4SCALE);
    } else {
        out[..16].fill(0);
        put_f16(out, 80, 0.0);
    }
    if max_min > 0.0 {
        let iscale = Q4SCALE / max_min;
        for j in 0..16 {
            out[j] |= (nearest_int(iscale * mins[j]) as u8) << 4;
        }
        put_f16(out, 82, max_min / Q4SCALE);
    } else {
        put_f16(out, 82, 0.0);
    }
    let (d_all, dmin_all) = (f16_at(out, 80), f16_at(out, 82));
    for j in 0..16 {
        let d = d_all * f32::from(out[j] & 0xF);
        if d == 0.0 {
            continue;
        }
        let dm = dmin_all * f32::from(out[j] >> 4);
        for ii in 0..16 {
            l[16 * j + ii] = nearest_int((x[16 * j + ii] + dm) / d).clamp(0, 3) as u8;
        }
    }
    let qs = &mut out[16..80];
    for h in 0..2 {
        for i in 0..32 {
            let b = 128 * h + i;
            qs[32 * h + i] = l[b] | (l[b + 32] << 2) | (l[b + 64] << 4) | (l[b + 96] << 6);
        }
    }
}

fn dequantize(b: &[u8], out: &mut [f32]) {
    let (d, min) = (f16_at(b, 80), f16_at(b, 82));
    let mut sub = 0;
    for h in 0..2 {
        let q = &b[16 + 32 * h..16 + 32 * h + 32];
        for s in 0..4 {
            let shift = 2 * s;
            for half in 0..2 {
                let sc = b[sub];
                let (dl, ml) = (d * f32::from(sc & 0xF), min * f32::from(sc >> 4));
                let o = &mut out[16 * sub..16 * sub + 16];
                for (o, &qb) in o.iter_mut().zip(&q[16 * half..16 * half + 16]) {
                    *o = dl * f32::from((qb >> shift) & 3) - ml;
                }
                sub += 1;
            }
        }
    }
}
