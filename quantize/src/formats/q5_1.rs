//! Q5_1: llama.cpp `block_q5_1` (ggml-common.h): 24 bytes per 32 values, f16 `d`, f16 `m`,
//! 4 bytes `qh` (a little-endian u32 of fifth bits: bit `j` for value `j`), then 16 bytes
//! `qs` (byte `j`: value `j` in the low nibble, value `j + 16` in the high nibble); value =
//! `q * d + m` with `q` the 5-bit code (ggml-quants.c `dequantize_row_q5_1`).
//!
//! Quantizer (ggml-quants.c `quantize_row_q5_1_ref`): `min`/`max` of the block,
//! `d = (max - min) / 31`, `q = trunc((x - min) * (1/d) + 0.5)` (no clamp: the values are
//! at most 31.5); `m = min`.

use candle_core::quantized::GgmlDType;

use super::{f16_at, put_f16, BlockFormat};
use crate::format::QuantFormat;

/// Values per block.
pub(crate) const VALUES: usize = 32;
/// Bytes per block.
pub(crate) const BYTES: usize = 24;

pub(crate) static FORMAT: BlockFormat = BlockFormat {
    format: QuantFormat::Q5_1,
    ggml_type: 7,
    candle: Some(GgmlDType::Q5_1),
    values: VALUES,
    bytes: BYTES,
    f16_fields: &[0, 2],
    quantize,
    dequantize,
    check_codes: None,
};

fn quantize(x: &[f32], out: &mut [u8]) {
    let mut min = f32::MAX;
    let mut max = -f32::MAX;
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    let d = (max - min) / 31.0;
    let id = if d == 0.0 { 0.0 } else { 1.0 / d };
    put_f16(out, 0, d);
    put_f16(out, 2, min);
    let mut qh = 0u32;
    for j in 0..VALUES / 2 {
        // (uint8_t)(v + 0.5f): truncation of a value in 0..=31.5.
        let q0 = ((x[j] - min) * id + 0.5) as u8;
        let q1 = ((x[j + VALUES / 2] - min) * id + 0.5) as u8;
        out[8 + j] = (q0 & 0x0F) | ((q1 & 0x0F) << 4);
        qh |= u32::from((q0 & 0x10) >> 4) << j;
        qh |= u32::from((q1 & 0x10) >> 4) << (j + VALUES / 2);
    }
    out[4..8].copy_from_slice(&qh.to_le_bytes());
}

fn dequantize(b: &[u8], out: &mut [f32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    let (lo, hi) = out.split_at_mut(VALUES / 2);
    for (j, ((l, h), &q)) in lo.iter_mut().zip(hi.iter_mut()).zip(&b[8..BYTES]).enumerate() {
        let h0 = ((qh >> j) << 4) & 0x10;
        let h1 = (qh >> (j + 12)) & 0x10;
        *l = (u32::from(q & 0x0F) | h0) as f32 * d + m;
        *h = (u32::from(q >> 4) | h1) as f32 * d + m;
    }
}
