//! Q8_0: llama.cpp `block_q8_0` (ggml-common.h): 34 bytes per 32 values, f16 `d` then 32
//! × i8; value = `d * q`.
//!
//! Quantizer (ggml-quants.c `quantize_row_q8_0_ref`): `d = amax / 127`,
//! `q = roundf(x * (1/d))` (half away from zero).

use candle_core::quantized::GgmlDType;

use super::{f16_at, put_f16, BlockFormat};
use crate::format::QuantFormat;
use crate::par::round_half_away;

/// Values per block.
pub(crate) const VALUES: usize = 32;
/// Bytes per block.
pub(crate) const BYTES: usize = 34;

pub(crate) static FORMAT: BlockFormat = BlockFormat {
    format: QuantFormat::Q8_0,
    ggml_type: 8,
    candle: Some(GgmlDType::Q8_0),
    values: VALUES,
    bytes: BYTES,
    f16_fields: &[0],
    quantize,
    dequantize,
    check_codes: None,
};

fn quantize(x: &[f32], out: &mut [u8]) {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d == 0.0 { 0.0 } else { 1.0 / d };
    put_f16(out, 0, d);
    for (o, &v) in out[2..].iter_mut().zip(x) {
        *o = round_half_away(v * id) as i8 as u8;
    }
}

fn dequantize(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 0);
    for (o, &q) in out.iter_mut().zip(&b[2..BYTES]) {
        *o = f32::from(q as i8) * d;
    }
}
