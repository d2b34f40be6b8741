//! IQ4_XS: llama.cpp `block_iq4_xs` (ggml-common.h): 136 bytes per super-block of 256
//! values = f16 `d` (byte 0), u16 `scales_h` (byte 2), 4 bytes `scales_l` (byte 4), 128
//! bytes `qs` (byte 8). Sub-block `ib` (0..8, values `32ib ..`) has the 6-bit scale
//! `ls = (scales_l[ib / 2] >> 4 * (ib % 2)) & 0xF | ((scales_h >> 2 * ib) & 3) << 4`; its
//! bytes `qs[16ib ..]` hold 4-bit code-book indices as IQ4_NL's (value `j` low nibble,
//! value `j + 16` high nibble); value = `(d * (ls - 32)) * kvalues_iq4nl[index]`
//! (ggml-quants.c `dequantize_row_iq4_xs`).
//!
//! Quantizer (ggml-quants.c `quantize_row_iq4_xs_ref`, which is `quantize_iq4_xs` without
//! importance weights: `quantize_row_iq4_nl_impl` over 256 values with a search of 15
//! trial scales per sub-block, weights `x²`): the sub-block scales fitted, quantized to 6
//! bits against `d = -max_scale / 32`, and every value re-indexed against its stored scale.

use super::iq4_nl::{best_index, KVALUES};
use super::{f16_at, nearest_int, put_f16, BlockFormat, QK_K};
use crate::format::QuantFormat;

/// Bytes per block.
pub(crate) const BYTES: usize = 136;

/// llama.cpp's `GROUP_MAX_EPS` (ggml-quants.c).
const GROUP_MAX_EPS: f32 = 1e-15;

/// The trial scales of the search: `-NTRY ..= NTRY` (llama.cpp's `ntry` 7).
const NTRY: i32 = 7;

pub(crate) static FORMAT: BlockFormat = BlockFormat {
    format: QuantFormat::Iq4Xs,
    ggml_type: 23,
    candle: None,
    values: QK_K,
    bytes: BYTES,
    f16_fields: &[0],
    quantize,
    dequantize,
    check_codes: None,
};

/// `(Σ w q x, Σ w q²)` with weights `x²` and `q` the code-book entry nearest `id * x`.
fn sums(xb: &[f32], id: f32) -> (f32, f32) {
    let (mut sumqx, mut sumq2) = (0.0f32, 0.0f32);
    for &v in xb {
        let q = f32::from(KVALUES[best_index(id * v)]);
        let w = v * v;
        sumqx += w * q * v;
        sumq2 += w * q * q;
    }
    (sumqx, sumq2)
}

/// The fitted scale of one 32-value sub-block.
fn fit(xb: &[f32]) -> f32 {
    let mut amax = 0.0f32;
    let mut max = 0.0f32;
    for &v in xb {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        return 0.0;
    }
    let v0 = i32::from(KVALUES[0]);
    let (sumqx, sumq2) = sums(xb, 1.0 / (-max / v0 as f32));
    let mut d = if sumq2 > 0.0 { sumqx / sumq2 } else { 0.0 };
    let mut best = d * sumqx;
    for itry in -NTRY..=NTRY {
        let (sumqx, sumq2) = sums(xb, (itry + v0) as f32 / max);
        if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
            d = sumqx / sumq2;
            best = d * sumqx;
        }
    }
    d
}

fn quantize(x: &[f32], out: &mut [u8]) {
    out[..BYTES].fill(0);
    let mut scales = [0.0f32; 8];
    let mut max_scale = 0.0f32;
    let mut amax_scale = 0.0f32;
    for (ib, s) in scales.iter_mut().enumerate() {
        *s = fit(&x[32 * ib..32 * ib + 32]);
        if s.abs() > amax_scale {
            amax_scale = s.abs();
            max_scale = *s;
        }
    }
    let d = -max_scale / 32.0;
    put_f16(out, 0, d);
    let id = if d == 0.0 { 0.0 } else { 1.0 / d };
    let mut scales_h = 0u16;
    for (ib, &s) in scales.iter().enumerate() {
        let l = nearest_int(id * s).clamp(-32, 31);
        let dl = d * l as f32;
        let idl = if dl == 0.0 { 0.0 } else { 1.0 / dl };
        let xb = &x[32 * ib..32 * ib + 32];
        let qs = &mut out[8 + 16 * ib..8 + 16 * ib + 16];
        for j in 0..16 {
            let lo = best_index(idl * xb[j]) as u8;
            let hi = best_index(idl * xb[j + 16]) as u8;
            qs[j] = lo | (hi << 4);
        }
        let l = (l + 32) as u8;
        out[4 + ib / 2] |= (l & 0xF) << (4 * (ib % 2));
        scales_h |= u16::from(l >> 4) << (2 * ib);
    }
    out[2..4].copy_from_slice(&scales_h.to_le_bytes());
}

fn dequantize(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 0);
    let scales_h = u16::from_le_bytes([b[2], b[3]]);
    for ib in 0..8 {
        let ls = ((b[4 + ib / 2] >> (4 * (ib % 2))) & 0xF) | ((((scales_h >> (2 * ib)) & 3) as u8) << 4);
        let dl = d * (i32::from(ls) - 32) as f32;
        let qs = &b[8 + 16 * ib..8 + 16 * ib + 16];
        let o = &mut out[32 * ib..32 * ib + 32];
        for (j, &q) in qs.iter().enumerate() {
            o[j] = dl * f32::from(KVALUES[usize::from(q & 0xF)]);
            o[j + 16] = dl * f32::from(KVALUES[usize::from(q >> 4)]);
        }
    }
}
