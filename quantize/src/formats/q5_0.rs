//! Q5_0: llama.cpp `block_q5_0` (ggml-common.h): 22 bytes per 32 values, f16 `d`, 4 bytes
//! `qh` (a little-endian u32 of fifth bits: bit `j` for value `j`), then 16 bytes `qs`
//! (byte `j`: value `j` in the low nibble, value `j + 16` in the high nibble); value =
//! `(q - 16) * d` with `q` the 5-bit code (ggml-quants.c `dequantize_row_q5_0`).
//!
//! Quantizer (ggml-quants.c `quantize_row_q5_0_ref`): `d = max / -16` where `max` is the
//! signed value of largest magnitude (the first one on ties),
//! `q = min(31, trunc(x * (1/d) + 16.5))`.

use candle_core::quantized::GgmlDType;

use super::{f16_at, put_f16, BlockFormat};
use crate::format::QuantFormat;

/// Values per block.
pub(crate) const VALUES: usize = 32;
/// Bytes per block.
pub(crate) const BYTES: usize = 22;

pub(crate) static FORMAT: BlockFormat = BlockFormat {
    format: QuantFormat::Q5_0,
    ggml_type: 6,
    candle: Some(GgmlDType::Q5_0),
    values: VALUES,
    bytes: BYTES,
    f16_fields: &[0],
    quantize,
    dequantize,
    check_codes: None,
};

fn quantize(x: &[f32], out: &mut [u8]) {
    let mut amax = 0.0f32;
    let mut max = 0.0f32;
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    let d = max / -16.0;
    let id = if d == 0.0 { 0.0 } else { 1.0 / d };
    put_f16(out, 0, d);
    let mut qh = 0u32;
    for j in 0..VALUES / 2 {
        let q0 = ((x[j] * id + 16.5) as i8).min(31) as u8;
        let q1 = ((x[j + VALUES / 2] * id + 16.5) as i8).min(31) as u8;
        out[6 + j] = (q0 & 0x0F) | ((q1 & 0x0F) << 4);
        qh |= u32::from(q0 >> 4) << j;
        qh |= u32::from(q1 >> 4) << (j + VALUES / 2);
    }
    out[2..6].copy_from_slice(&qh.to_le_bytes());
}

fn dequantize(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 0);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    let (lo, hi) = out.split_at_mut(VALUES / 2);
    for (j, ((l, h), &q)) in lo.iter_mut().zip(hi.iter_mut()).zip(&b[6..BYTES]).enumerate() {
        let h0 = ((qh >> j) << 4) & 0x10;
        let h1 = (qh >> (j + 12)) & 0x10;
        *l = ((u32::from(q & 0x0F) | h0) as i32 - 16) as f32 * d;
        *h = ((u32::from(q >> 4) | h1) as i32 - 16) as f32 * d;
    }
}
