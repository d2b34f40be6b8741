//! IQ4_NL: llama.cpp `block_iq4_nl` (ggml-common.h): 18 bytes per 32 values, f16 `d` then
//! 16 bytes `qs`; byte `j` holds the 4-bit index of value `j` in its low nibble and of value
//! `j + 16` in its high nibble; value = `d * KVALUES[index]`, with the non-linear code book
//! `kvalues_iq4nl` (ggml-common.h) below (ggml-quants.c `dequantize_row_iq4_nl`).
//!
//! Quantizer (ggml-quants.c `quantize_row_iq4_nl_ref`, i.e. `quantize_row_iq4_nl_impl` with
//! no importance weights and no scale search): `d0 = max / KVALUES[0]` with `max` the
//! signed value of largest magnitude, each value to the nearest code-book entry of
//! `x / d0` (`best_index_int8`), then `d = Σ w q x / Σ w q²` with weights `x²`.
//!
//! One difference: for a block whose values are all below 1e-15 in magnitude llama.cpp
//! stores `d = 0` and leaves the codes as its buffer held them (the previous block's, or
//! uninitialized memory for a row's first block); we store `d = 0` and code 0 everywhere.
//! Both decode to zeros.

use super::{f16_at, put_f16, BlockFormat};
use crate::format::QuantFormat;

/// Values per block.
pub(crate) const VALUES: usize = 32;
/// Bytes per block.
pub(crate) const BYTES: usize = 18;

/// llama.cpp's `kvalues_iq4nl` (ggml-common.h).
pub(crate) const KVALUES: [i8; 16] = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];

/// llama.cpp's `GROUP_MAX_EPS` (ggml-quants.c).
const GROUP_MAX_EPS: f32 = 1e-15;

pub(crate) static FORMAT: BlockFormat = BlockFormat {
    format: QuantFormat::Iq4Nl,
    ggml_type: 20,
    candle: None,
    values: VALUES,
    bytes: BYTES,
    f16_fields: &[0],
    quantize,
    dequantize,
    check_codes: None,
};

/// llama.cpp's `best_index_int8` over [`KVALUES`]: the index of the nearest entry (the
/// upper one of two on a tie, as its final comparison is strict).
pub(crate) fn best_index(x: f32) -> usize {
    let v = |i: usize| f32::from(KVALUES[i]);
    if x <= v(0) {
        return 0;
    }
    if x >= v(15) {
        return 15;
    }
    let (mut ml, mut mu) = (0, 15);
    while mu - ml > 1 {
        let mav = usize::midpoint(ml, mu);
        if x < v(mav) {
            mu = mav;
        } else {
            ml = mav;
        }
    }
    if x - v(mu - 1) < v(mu) - x {
        mu - 1
    } else {
        mu
    }
}

fn quantize(x: &[f32], out: &mut [u8]) {
    out[..BYTES].fill(0);
    let mut amax = 0.0f32;
    let mut max = 0.0f32;
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        return; // d = 0, codes 0 (see the module documentation)
    }
    let id = 1.0 / (max / f32::from(KVALUES[0]));
    let mut l = [0u8; VALUES];
    let (mut sumqx, mut sumq2) = (0.0f32, 0.0f32);
    for (li, &v) in l.iter_mut().zip(x) {
        let i = best_index(id * v);
        *li = i as u8;
        let (q, w) = (f32::from(KVALUES[i]), v * v);
        sumqx += w * q * v;
        sumq2 += w * q * q;
    }
    let d = if sumq2 > 0.0 { sumqx / sumq2 } else { 0.0 };
    put_f16(out, 0, d);
    for j in 0..VALUES / 2 {
        out[2 + j] = l[j] | (l[j + VALUES / 2] << 4);
    }
}

fn dequantize(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 0);
    let (lo, hi) = out.split_at_mut(VALUES / 2);
    for ((l, h), &q) in lo.iter_mut().zip(hi.iter_mut()).zip(&b[2..BYTES]) {
        *l = d * f32::from(KVALUES[usize::from(q & 0xF)]);
        *h = d * f32::from(KVALUES[usize::from(q >> 4)]);
    }
}
