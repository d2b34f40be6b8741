//! Q6_K: llama.cpp `block_q6_K` (ggml-common.h): 210 bytes per super-block of 256 values =
//! 128 bytes `ql` (low 4 bits), 64 bytes `qh` (high 2 bits), 16 × i8 `scales` (byte 192),
//! f16 `d` (byte 208). In half `h` (0..2, values `128h ..`), with `ql = ql[64h..]`,
//! `qh = qh[32h..]`, `sc = scales[8h..]` and `l` in 0..32: value `128h + l` is
//! `ql[l] & 0xF | (qh[l] & 3) << 4`, value `+32` is `ql[l + 32] & 0xF | (qh[l] >> 2 & 3) << 4`,
//! value `+64` is `ql[l] >> 4 | (qh[l] >> 4 & 3) << 4`, value `+96` is
//! `ql[l + 32] >> 4 | (qh[l] >> 6 & 3) << 4`, each a 6-bit `q`; value = `(d * sc[s]) * (q - 32)`
//! with `s = l / 16 + 2t` for the `t`-th of those four (ggml-quants.c `dequantize_row_q6_K`).
//!
//! Quantizer (ggml-quants.c `quantize_row_q6_K_ref`): per 16 values a scale fit
//! (`make_qx_quants` with weights `x²`, 19 trial scales), the sixteen scales quantized to
//! i8 against the one of largest magnitude, then every value re-quantized against the
//! stored scales. A super-block whose scales are all below `1e-15` is stored as zeros.

use candle_core::quantized::GgmlDType;

use super::{f16_at, nearest_int, put_f16, BlockFormat, QK_K};
use crate::format::QuantFormat;

/// Bytes per block.
pub(crate) const BYTES: usize = 210;

/// llama.cpp's `GROUP_MAX_EPS` (ggml-quants.c).
const GROUP_MAX_EPS: f32 = 1e-15;

pub(crate) static FORMAT: BlockFormat = BlockFormat {
    format: QuantFormat::Q6K,
    ggml_type: 14,
    candle: Some(GgmlDType::Q6K),
    values: QK_K,
    bytes: BYTES,
    f16_fields: &[208],
    quantize,
    dequantize,
    check_codes: None,
};

/// llama.cpp's `make_qx_quants` (ggml-quants.c) with `rmse_type` 1 and no importance
/// weights: fits `x ≈ scale * (L - nmax)` with `L` in `0..2 * nmax`, weights `x²`, trying
/// the inverse scales `-(nmax + 0.1 * is) / max` for `is` in -9..=9. Fills `l`, returns
/// the scale.
pub(crate) fn make_qx_quants(nmax: i32, x: &[f32], l: &mut [i8]) -> f32 {
    let n = x.len();
    let mut max = 0.0f32;
    let mut amax = 0.0f32;
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l[..n].fill(0);
        return 0.0;
    }
    let nmax_f = nmax as f32;
    let code = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-nmax, nmax - 1);
    let mut iscale = -nmax_f / max;
    let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
    for i in 0..n {
        let q = code(iscale, x[i]);
        l[i] = (q + nmax) as i8;
        let (w, qf) = (x[i] * x[i], q as f32);
        sumlx += w * x[i] * qf;
        suml2 += w * qf * qf;
    }
    let mut scale = if suml2 == 0.0 { 0.0 } else { sumlx / suml2 };
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nmax_f + 0.1 * is as f32) / max;
        sumlx = 0.0;
        suml2 = 0.0;
        for &v in x {
            let (w, qf) = (v * v, code(iscale, v) as f32);
            sumlx += w * v * qf;
            suml2 += w * qf * qf;
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for i in 0..n {
                l[i] = (code(iscale, x[i]) + nmax) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

fn quantize(x: &[f32], out: &mut [u8]) {
    let mut l = [0i8; QK_K];
    let mut scales = [0.0f32; 16];
    let mut max_scale = 0.0f32;
    let mut max_abs_scale = 0.0f32;
    for ib in 0..16 {
        let s = make_qx_quants(32, &x[16 * ib..16 * ib + 16], &mut l[16 * ib..]);
        scales[ib] = s;
        if s.abs() > max_abs_scale {
            max_abs_scale = s.abs();
            max_scale = s;
        }
    }
    if max_abs_scale < GROUP_MAX_EPS {
        out[..BYTES].fill(0);
        return;
    }
    let iscale = -128.0 / max_scale;
    put_f16(out, 208, 1.0 / iscale);
    for ib in 0..16 {
        // MIN(127, nearest_int(...)) stored as int8_t.
        out[192 + ib] = nearest_int(iscale * scales[ib]).min(127) as i8 as u8;
    }
    let d_all = f16_at(out, 208);
    for j in 0..16 {
        let d = d_all * f32::from(out[192 + j] as i8);
        if d == 0.0 {
            continue;
        }
        for ii in 0..16 {
            l[16 * j + ii] = (nearest_int(x[16 * j + ii] / d).clamp(-32, 31) + 32) as i8;
        }
    }
    let (ql, rest) = out.split_at_mut(128);
    let qh = &mut rest[..64];
    for h in 0..2 {
        let (l, ql, qh) = (&l[128 * h..], &mut ql[64 * h..], &mut qh[32 * h..]);
        for i in 0..32 {
            let q = [l[i], l[i + 32], l[i + 64], l[i + 96]].map(|v| v as u8);
            ql[i] = (q[0] & 0xF) | ((q[2] & 0xF) << 4);
            ql[i + 32] = (q[1] & 0xF) | ((q[3] & 0xF) << 4);
            qh[i] = (q[0] >> 4) | ((q[1] >> 4) << 2) | ((q[2] >> 4) << 4) | ((q[3] >> 4) << 6);
        }
    }
}

fn dequantize(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 208);
    for h in 0..2 {
        let ql = &b[64 * h..64 * h + 64];
        let qh = &b[128 + 32 * h..128 + 32 * h + 32];
        let sc = &b[192 + 8 * h..192 + 8 * h + 8];
        let o = &mut out[128 * h..128 * h + 128];
        for i in 0..32 {
            let s = i / 16;
            let q1 = i32::from((ql[i] & 0xF) | ((qh[i] & 3) << 4)) - 32;
            let q2 = i32::from((ql[i + 32] & 0xF) | (((qh[i] >> 2) & 3) << 4)) - 32;
            let q3 = i32::from((ql[i] >> 4) | (((qh[i] >> 4) & 3) << 4)) - 32;
            let q4 = i32::from((ql[i + 32] >> 4) | (((qh[i] >> 6) & 3) << 4)) - 32;
            let scale = |t: usize| d * f32::from(sc[s + 2 * t] as i8);
            o[i] = scale(0) * q1 as f32;
            o[i + 32] = scale(1) * q2 as f32;
            o[i + 64] = scale(2) * q3 as f32;
            o[i + 96] = scale(3) * q4 as f32;
        }
    }
}
