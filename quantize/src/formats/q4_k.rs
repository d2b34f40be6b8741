//! Q4_K: llama.cpp `block_q4_K` (ggml-common.h): 144 bytes per super-block of 256 values =
//! f16 `d` (byte 0), f16 `dmin` (byte 2), 12 bytes `scales` (byte 4) holding eight 6-bit
//! scales and eight 6-bit minimums, then 128 bytes `qs` (byte 16). Sub-block `j` (0..8)
//! covers values `32j .. 32j + 32`; its scale `sc` and minimum `m` are, for `j < 4`,
//! `scales[j] & 63` and `scales[j + 4] & 63`, else
//! `(scales[j + 4] & 0xF) | ((scales[j - 4] >> 6) << 4)` and
//! `(scales[j + 4] >> 4) | ((scales[j] >> 6) << 4)` (ggml-quants.c `get_scale_min_k4`).
//! Byte `l` (0..32) of `qs[32p..]` holds value `64p + l` in its low nibble and value
//! `64p + 32 + l` in its high nibble. Value = `(d * sc) * q - dmin * m`
//! (ggml-quants.c `dequantize_row_q4_K`).
//!
//! Quantizer (ggml-quants.c `quantize_row_q4_K_ref`): per sub-block a weighted min/scale
//! fit (`make_qkx2_quants` with weights `sqrt(mean x²) + |x|`, 21 trial scales), the
//! scales and minimums quantized to 6 bits against the largest of each, then every value
//! re-quantized against the stored scales.

use candle_core::quantized::GgmlDType;

use super::{f16_at, nearest_int, put_f16, BlockFormat, QK_K};
use crate::format::QuantFormat;

/// Bytes per block.
pub(crate) const BYTES: usize = 144;

pub(crate) static FORMAT: BlockFormat = BlockFormat {
    format: QuantFormat::Q4K,
    ggml_type: 12,
    candle: Some(GgmlDType::Q4K),
    values: QK_K,
    bytes: BYTES,
    f16_fields: &[0, 2],
    quantize,
    dequantize,
    check_codes: None,
};

/// The 6-bit scale and minimum of sub-block `j` from the 12 packed bytes `q`.
pub(crate) fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Packs eight 6-bit scales and minimums into 12 bytes (the inverse of [`scale_min_k4`]).
pub(crate) fn pack_scale_min_k4(ls: [u8; 8], lm: [u8; 8], q: &mut [u8]) {
    for j in 0..8 {
        if j < 4 {
            q[j] = ls[j];
            q[j + 4] = lm[j];
        } else {
            q[j + 4] = (ls[j] & 0xF) | ((lm[j] & 0xF) << 4);
            q[j - 4] |= (ls[j] >> 4) << 6;
            q[j] |= (lm[j] >> 4) << 6;
        }
    }
}

/// llama.cpp's `make_qkx2_quants` (ggml-quants.c): fits `x ≈ scale * L - min` with `L` in
/// `0..=nmax`, minimizing the weighted squared (or absolute, `use_mad`) error over the
/// initial guess and `nstep + 1` trial inverse scales `(rmin + rdelta * is + nmax) / (max - min)`.
/// Returns `(scale, min)` with `min >= 0` (the offset subtracted) and fills `l`.
#[allow(clippy::too_many_arguments)] // mirrors the reference's parameters one for one
pub(crate) fn make_qkx2_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    l: &mut [u8],
    laux: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    use_mad: bool,
) -> (f32, f32) {
    let n = x.len();
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    #[allow(clippy::float_cmp)] // the reference's exact test: every value equal (or all >= 0 and max 0)
    if max == min {
        l[..n].fill(0);
        return (0.0, -min);
    }
    let nmax_f = nmax as f32;
    let mut iscale = nmax_f / (max - min);
    let mut scale = 1.0 / iscale;
    let err = |d: f32| if use_mad { d.abs() } else { d * d };
    let mut best_error = 0.0f32;
    for i in 0..n {
        let q = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        l[i] = q as u8;
        let diff = scale * f32::from(l[i]) + min - x[i];
        best_error += weights[i] * err(diff);
    }
    if nstep < 1 {
        return (scale, -min);
    }
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmax_f) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for i in 0..n {
            let q = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            laux[i] = q as u8;
            let (w, lf) = (weights[i], q as f32);
            sum_l += w * lf;
            sum_l2 += w * lf * lf;
            sum_xl += w * lf * x[i];
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0.0f32;
            for i in 0..n {
                let diff = this_scale * f32::from(laux[i]) + this_min - x[i];
                cur_error += weights[i] * err(diff);
            }
            if cur_error < best_error {
                l[..n].copy_from_slice(&laux[..n]);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

fn quantize(x: &[f32], out: &mut [u8]) {
    let l = fit_scale_min_blocks(x, out, 15, -1.0, 20);
    let qs = &mut out[16..BYTES];
    for p in 0..4 {
        for i in 0..32 {
            qs[32 * p + i] = l[64 * p + i] | (l[64 * p + 32 + i] << 4);
        }
    }
}

fn dequantize(b: &[u8], out: &mut [f32]) {
    let (d, min) = (f16_at(b, 0), f16_at(b, 2));
    let scales = &b[4..16];
    for p in 0..4 {
        let q = &b[16 + 32 * p..16 + 32 * p + 32];
        let (sc, m) = scale_min_k4(2 * p, scales);
        let (d1, m1) = (d * f32::from(sc), min * f32::from(m));
        let (sc, m) = scale_min_k4(2 * p + 1, scales);
        let (d2, m2) = (d * f32::from(sc), min * f32::from(m));
        let o = &mut out[64 * p..64 * p + 64];
        for (i, &q) in q.iter().enumerate() {
            o[i] = d1 * f32::from(q & 0xF) - m1;
            o[32 + i] = d2 * f32::from(q >> 4) - m2;
        }
    }
}

/// The fit Q4_K and Q5_K share (ggml-quants.c `quantize_row_q4_K_ref` / `_q5_K_ref`): per
/// 32-value sub-block a scale and a minimum by `make_qkx2_quants(nmax, rmin, 0.1, nstep)`,
/// those packed as 6-bit codes into `out[4..16]` under the f16 `d` and `dmin` of `out[0..4]`,
/// then every value's code in `0..=nmax` against the rounded scales. Returns the codes.
pub(super) fn fit_scale_min_blocks(x: &[f32], out: &mut [u8], nmax: i32, rmin: f32, nstep: i32) -> [u8; QK_K] {
    let mut l = [0u8; QK_K];
    let mut laux = [0u8; 32];
    let mut weights = [0.0f32; 32];
    let mut mins = [0.0f32; 8];
    let mut scales = [0.0f32; 8];
    let mut max_scale = 0.0f32;
    let mut max_min = 0.0f32;
    for j in 0..8 {
        let xs = &x[32 * j..32 * j + 32];
        let sum_x2 = xs.iter().fold(0.0f32, |s, v| s + v * v);
        let av_x = (sum_x2 / 32.0).sqrt();
        for (w, v) in weights.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
        (scales[j], mins[j]) =
            make_qkx2_quants(nmax, xs, &weights, &mut l[32 * j..], &mut laux, rmin, 0.1, nstep, false);
        if scales[j] > max_scale {
            max_scale = scales[j];
        }
        if mins[j] > max_min {
            max_min = mins[j];
        }
    }
    let inv_scale = if max_scale > 0.0 { 63.0 / max_scale } else { 0.0 };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    // (uint8_t)nearest_int(...) wraps modulo 256 in C; `as u8` does the same.
    let ls = scales.map(|s| (nearest_int(inv_scale * s) as u8).min(63));
    let lm = mins.map(|m| (nearest_int(inv_min * m) as u8).min(63));
    pack_scale_min_k4(ls, lm, &mut out[4..16]);
    put_f16(out, 0, max_scale / 63.0);
    put_f16(out, 2, max_min / 63.0);
    let (d_all, dmin_all) = (f16_at(out, 0), f16_at(out, 2));
    for j in 0..8 {
        let (sc, m) = scale_min_k4(j, &out[4..16]);
        let d = d_all * f32::from(sc);
        if d == 0.0 {
            continue;
        }
        let dm = dmin_all * f32::from(m);
        for ii in 0..32 {
            l[32 * j + ii] = nearest_int((x[32 * j + ii] + dm) / d).clamp(0, nmax) as u8;
        }
    }
    l
}
