//! Q4_1: llama.cpp `block_q4_1` (ggml-common.h): 20 bytes per 32 values, f16 `d`, f16
//! `m`, then 16 bytes `qs`; byte `j` holds value `j` in its low nibble and value `j + 16`
//! in its high nibble; value = `q * d + m` (ggml-quants.c `dequantize_row_q4_1`).
//!
//! Quantizer (ggml-quants.c `quantize_row_q4_1_ref`): `min`/`max` of the block,
//! `d = (max - min) / 15`, `q = min(15, trunc((x - min) * (1/d) + 0.5))`; `m = min`.

use candle_core::quantized::GgmlDType;

use super::{f16_at, put_f16, BlockFormat};
use crate::format::QuantFormat;

/// Values per block.
pub(crate) const VALUES: usize = 32;
/// Bytes per block.
pub(crate) const BYTES: usize = 20;

pub(crate) static FORMAT: BlockFormat = BlockFormat {
    format: QuantFormat::Q4_1,
    ggml_type: 3,
    candle: Some(GgmlDType::Q4_1),
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
    let d = (max - min) / 15.0;
    let id = if d == 0.0 { 0.0 } else { 1.0 / d };
    put_f16(out, 0, d);
    put_f16(out, 2, min);
    for j in 0..VALUES / 2 {
        // (int8_t)(v + 0.5f) truncates toward zero; the values are in 0..=15.5.
        let q0 = (((x[j] - min) * id + 0.5) as i8).min(15) as u8;
        let q1 = (((x[j + VALUES / 2] - min) * id + 0.5) as i8).min(15) as u8;
        out[4 + j] = q0 | (q1 << 4);
    }
}

fn dequantize(b: &[u8], out: &mut [f32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    let (lo, hi) = out.split_at_mut(VALUES / 2);
    for ((l, h), &q) in lo.iter_mut().zip(hi.iter_mut()).zip(&b[4..BYTES]) {
        *l = f32::from(q & 0x0F) * d + m;
        *h = f32::from(q >> 4) * d + m;
    }
}
