//! TQ2_0: llama.cpp `block_tq2_0` (ggml-common.h): 66 bytes per 256 values, 64 bytes `qs`
//! then f16 `d`; in half `h` (0..2) byte `j` (0..32) of `qs[32h..]`, bits `2l..2l+2` (l in
//! 0..4) hold value `128h + 32l + j` as `q` in 0..=2; value = `d * (q - 1)`.
//!
//! Quantizer (ggml-quants.c `quantize_row_tq2_0_ref`): `d = amax`,
//! `q = lroundf(x * (1/d)) + 1`.

use super::{f16_at, put_f16, BlockFormat};
use crate::format::QuantFormat;
use crate::par::round_half_away;

/// Values per block.
pub(crate) const VALUES: usize = 256;
/// Bytes per block.
pub(crate) const BYTES: usize = 66;

pub(crate) static FORMAT: BlockFormat = BlockFormat {
    format: QuantFormat::Tq2_0,
    ggml_type: 35,
    candle: None,
    values: VALUES,
    bytes: BYTES,
    f16_fields: &[64],
    quantize,
    dequantize,
    check_codes: Some(check_codes),
};

fn quantize(x: &[f32], out: &mut [u8]) {
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
    put_f16(out, 64, d);
}

fn dequantize(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 64);
    for (h, oh) in out.chunks_exact_mut(128).enumerate() {
        let qs = &b[32 * h..32 * h + 32];
        for (l, ol) in oh.chunks_exact_mut(32).enumerate() {
            for (o, &q) in ol.iter_mut().zip(qs) {
                *o = f32::from(i16::from((q >> (2 * l)) & 3) - 1) * d;
            }
        }
    }
}

/// A 2-bit code of 3 (both bits set) is never written.
pub(crate) fn has_code_3(b: u8) -> bool {
    (b & (b >> 1) & 0x55) != 0
}

fn check_codes(b: &[u8]) -> Option<(usize, String)> {
    b[..64]
        .iter()
        .position(|&q| has_code_3(q))
        .map(|j| (j, "code 3 (codes are 0..=2)".to_owned()))
}
