//! Q4_0: llama.cpp `block_q4_0` (ggml-common.h): 18 bytes per 32 values, f16 `d` then 16
//! bytes `qs`; byte `j` holds value `j` in its low nibble and value `j + 16` in its high
//! nibble; value = `d * (q - 8)`.
//!
//! Quantizer (ggml-quants.c `quantize_row_q4_0_ref`): `d = max / -8` where `max` is the
//! signed value of largest magnitude (the first one on ties), `q = min(15, trunc(x/d + 8.5))`.

use candle_core::quantized::GgmlDType;

use super::{f16_at, put_f16, BlockFormat};
use crate::format::QuantFormat;

/// Values per block.
pub(crate) const VALUES: usize = 32;
/// Bytes per block.
pub(crate) const BYTES: usize = 18;

pub(crate) static FORMAT: BlockFormat = BlockFormat {
    format: QuantFormat::Q4_0,
    ggml_type: 2,
    candle: Some(GgmlDType::Q4_0),
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
    let d = max / -8.0;
    let id = if d == 0.0 { 0.0 } else { 1.0 / d };
    put_f16(out, 0, d);
    for j in 0..VALUES / 2 {
        let q0 = ((x[j] * id + 8.5) as u8).min(15);
        let q1 = ((x[j + VALUES / 2] * id + 8.5) as u8).min(15);
        out[2 + j] = q0 | (q1 << 4);
    }
}

fn dequantize(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 0);
    let (lo, hi) = out.split_at_mut(VALUES / 2);
    for ((l, h), &q) in lo.iter_mut().zip(hi.iter_mut()).zip(&b[2..BYTES]) {
        *l = f32::from(i16::from(q & 0x0F) - 8) * d;
        *h = f32::from(i16::from(q >> 4) - 8) * d;
    }
}
