//! Q3_K: llama.cpp `block_q3_K` (ggml-common.h): 110 bytes per super-block of 256 values =
//! 32 bytes `hmask` (byte 0), 64 bytes `qs` (byte 32), 12 bytes `scales` (byte 96), f16 `d`
//! (byte 108). Sub-block `j` (0..16, values `16j ..`) has the 6-bit scale `s` whose low 4
//! bits are `scales[j] & 0xF` (j < 8) or `scales[j - 8] >> 4`, and whose high 2 bits are
//! bits `2 * (j / 4)` of `scales[8 + j % 4]`. Value `128n + 32t + 16h + l` (n in 0..2, t in
//! 0..4, h in 0..2, l in 0..16) has the 2-bit code of bits `2t` of `qs[32n + 16h + l]` and
//! the high bit `4n + t` of `hmask[16h + l]`; value = `(d * (s - 32)) * (q - 4)` with `q` the
//! 3-bit code (ggml-quants.c `dequantize_row_q3_K`).
//!
//! Quantizer (ggml-quants.c `quantize_row_q3_K_ref`): per sub-block a scale fit
//! (`make_q3_quants`: weights `x²`, up to 5 rounds of moving single codes), the sixteen
//! scales quantized to 6 bits against the one of largest magnitude, then every value
//! re-quantized against the stored scales.

use candle_core::quantized::GgmlDType;

use super::{f16_at, nearest_int, put_f16, BlockFormat, QK_K};
use crate::format::QuantFormat;

/// Bytes per block.
pub(crate) const BYTES: usize = 110;

/// llama.cpp's `GROUP_MAX_EPS` (ggml-quants.c).
const GROUP_MAX_EPS: f32 = 1e-15;

pub(crate) static FORMAT: BlockFormat = BlockFormat {
    format: QuantFormat::Q3K,
    ggml_type: 11,
    candle: Some(GgmlDType::Q3K),
    values: QK_K,
    bytes: BYTES,
    f16_fields: &[108],
    quantize,
    dequantize,
    check_codes: None,
};

/// The 6-bit scale of sub-block `j` from the 12 packed bytes `s`.
fn scale(j: usize, s: &[u8]) -> i32 {
    let low = if j < 8 { s[j] & 0xF } else { s[j - 8] >> 4 };
    let high = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
    i32::from(low | (high << 4))
}

/// llama.cpp's `make_q3_quants` (ggml-quants.c) with `do_rmse`: fits `x ≈ scale * (L - nmax)`
/// with weights `x²`, starting from the scale of the largest magnitude and moving single
/// codes while that lowers the weighted error (at most 5 rounds). Fills `l` (0..2 * nmax),
/// returns the scale.
fn make_q3_quants(nmax: i32, x: &[f32], l: &mut [i8]) -> f32 {
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
    let iscale = -(nmax as f32) / max;
    let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
    for i in 0..n {
        let q = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1);
        l[i] = q as i8;
        let w = x[i] * x[i];
        sumlx += w * x[i] * q as f32;
        suml2 += w * q as f32 * q as f32;
    }
    for _ in 0..5 {
        let mut changed = 0;
        for i in 0..n {
            let w = x[i] * x[i];
            let li = f32::from(l[i]);
            let mut slx = sumlx - w * x[i] * li;
            if slx > 0.0 {
                let mut sl2 = suml2 - w * li * li;
                let new_l = nearest_int(x[i] * sl2 / slx).clamp(-nmax, nmax - 1);
                if new_l != i32::from(l[i]) {
                    let nl = new_l as f32;
                    slx += w * x[i] * nl;
                    sl2 += w * nl * nl;
                    if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                        l[i] = new_l as i8;
                        sumlx = slx;
                        suml2 = sl2;
                        changed += 1;
                    }
                }
            }
        }
        if changed == 0 {
            break;
        }
    }
    for v in &mut l[..n] {
        *v += nmax as i8;
    }
    sumlx / suml2
}

fn quantize(x: &[f32], out: &mut [u8]) {
    let mut l = [0i8; QK_K];
    let mut scales = [0.0f32; 16];
    let mut max_scale = 0.0f32;
    let mut amax = 0.0f32;
    for j in 0..16 {
        scales[j] = make_q3_quants(4, &x[16 * j..16 * j + 16], &mut l[16 * j..]);
        if scales[j].abs() > amax {
            amax = scales[j].abs();
            max_scale = scales[j];
        }
    }
    out[96..108].fill(0);
    if max_scale == 0.0 {
        put_f16(out, 108, 0.0);
    } else {
        let iscale = -32.0 / max_scale;
        for j in 0..16 {
            // int8_t l = nearest_int(...): |iscale * scale| <= 32, so the value fits.
            let v = (i32::from(nearest_int(iscale * scales[j]) as i8).clamp(-32, 31) + 32) as u8;
            if j < 8 {
                out[96 + j] = v & 0xF;
            } else {
                out[96 + j - 8] |= (v & 0xF) << 4;
            }
            out[96 + 8 + j % 4] |= (v >> 4) << (2 * (j / 4));
        }
        put_f16(out, 108, 1.0 / iscale);
    }
    let d_all = f16_at(out, 108);
    for j in 0..16 {
        let d = d_all * (scale(j, &out[96..108]) - 32) as f32;
        if d == 0.0 {
            continue;
        }
        for ii in 0..16 {
            l[16 * j + ii] = (nearest_int(x[16 * j + ii] / d).clamp(-4, 3) + 4) as i8;
        }
    }
    let (hmask, rest) = out.split_at_mut(32);
    hmask.fill(0);
    for (j, v) in l.iter_mut().enumerate() {
        if *v > 3 {
            hmask[j % 32] |= 1 << (j / 32);
            *v -= 4;
        }
    }
    let qs = &mut rest[..64];
    for h in 0..2 {
        for i in 0..32 {
            let b = 128 * h + i;
            let c = |o: usize| l[b + o] as u8; // codes 0..=3 here
            qs[32 * h + i] = c(0) | (c(32) << 2) | (c(64) << 4) | (c(96) << 6);
        }
    }
}

fn dequantize(b: &[u8], out: &mut [f32]) {
    let d_all = f16_at(b, 108);
    let (hmask, qs, sc) = (&b[..32], &b[32..96], &b[96..108]);
    for n in 0..2 {
        for t in 0..4 {
            for h in 0..2 {
                let j = 8 * n + 2 * t + h;
                let dl = d_all * (scale(j, sc) - 32) as f32;
                let bit = 1u8 << (4 * n + t);
                for i in 0..16 {
                    let q = i32::from((qs[32 * n + 16 * h + i] >> (2 * t)) & 3);
                    let hi = if hmask[16 * h + i] & bit != 0 { 0 } else { 4 };
                    out[16 * j + i] = dl * (q - hi) as f32;
                }
            }
        }
    }
}
