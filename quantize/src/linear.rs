//! The row-blocked linear formats (int8 symmetric, FP8 with a scale) and BitNet ternary.
//!
//! - int8: `scale = absmax / 127` per row or per block of a row, `q = round(x / scale)`
//!   (half away from zero), clamped to ±127; value = `q * scale`. An all-zero block has
//!   scale 0 and codes 0.
//! - FP8: `scale = absmax / FP8_MAX` per tensor or per block of a row (448 for E4M3, 57344
//!   for E5M2), byte = `encode(x / scale)` rounding to nearest even; value =
//!   `decode(byte) * scale`. An all-zero tensor or block has scale 0 and codes 0.
//! - Ternary (BitNet b1.58): `scale = max(mean |x|, 1e-5)` over the whole tensor (the mean
//!   accumulated in f64), `q = clamp(round_half_even(x * (1 / scale)), -1, 1)`, as BitNet's
//!   `weight_quant` does; value = `q * scale`.

use crate::fp8;
use crate::par::{round_half_away, units_per_task, zip_chunks, zip_chunks2, PAR_MIN_ELEMS};

/// Quantizes each row of `x` (rows of `k`) in blocks of `block`, one scale per block, using
/// `enc` (which fills the block's bytes and returns its scale).
fn row_blocks(
    x: &[f32],
    k: usize,
    block: usize,
    enc: impl Fn(&[f32], &mut [u8]) -> f32 + Sync + Send,
) -> (Vec<u8>, Vec<f32>) {
    let mut data = vec![0u8; x.len()];
    if x.is_empty() || k == 0 {
        return (data, Vec::new());
    }
    let bpr = k.div_ceil(block);
    let mut scales = vec![0.0f32; x.len() / k * bpr];
    let rows_per = units_per_task(k);
    zip_chunks2(
        (&mut data, rows_per * k),
        (&mut scales, rows_per * bpr),
        (x, rows_per * k),
        x.len() >= PAR_MIN_ELEMS,
        |d, s, x| {
            for ((d, s), x) in d.chunks_mut(k).zip(s.chunks_mut(bpr)).zip(x.chunks(k)) {
                for ((d, s), x) in d.chunks_mut(block).zip(s.iter_mut()).zip(x.chunks(block)) {
                    *s = enc(x, d);
                }
            }
        },
    );
    (data, scales)
}

fn absmax(x: &[f32]) -> f32 {
    x.iter().fold(0.0f32, |m, v| m.max(v.abs()))
}

fn int8_block(x: &[f32], out: &mut [u8]) -> f32 {
    let scale = absmax(x) / 127.0;
    if scale == 0.0 {
        out.fill(0);
        return 0.0;
    }
    for (o, &v) in out.iter_mut().zip(x) {
        *o = round_half_away(v / scale).clamp(-127, 127) as i8 as u8;
    }
    scale
}

/// Symmetric int8 over blocks of `block` along rows of `k`.
pub(crate) fn quantize_int8(x: &[f32], k: usize, block: usize) -> (Vec<u8>, Vec<f32>) {
    row_blocks(x, k, block, int8_block)
}

/// The FP8 flavours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fp8 {
    E4M3,
    E5M2,
}

impl Fp8 {
    fn max(self) -> f32 {
        match self {
            Self::E4M3 => fp8::E4M3_MAX,
            Self::E5M2 => fp8::E5M2_MAX,
        }
    }

    fn encoder(self) -> fn(f32) -> u8 {
        match self {
            Self::E4M3 => fp8::f32_to_e4m3,
            Self::E5M2 => fp8::f32_to_e5m2,
        }
    }

    fn table(self) -> &'static [f32; 256] {
        match self {
            Self::E4M3 => &fp8::E4M3_TABLE,
            Self::E5M2 => &fp8::E5M2_TABLE,
        }
    }
}

fn fp8_fill(x: &[f32], out: &mut [u8], scale: f32, enc: fn(f32) -> u8) {
    if scale == 0.0 {
        out.fill(0);
    } else {
        for (o, &v) in out.iter_mut().zip(x) {
            *o = enc(v / scale);
        }
    }
}

/// FP8 with one scale per tensor (`block` `None`) or per block of a row.
pub(crate) fn quantize_fp8(x: &[f32], k: usize, block: Option<usize>, kind: Fp8) -> (Vec<u8>, Vec<f32>) {
    let enc = kind.encoder();
    let max = kind.max();
    if let Some(b) = block {
        return row_blocks(x, k, b, |x, d| {
            let s = absmax(x) / max;
            fp8_fill(x, d, s, enc);
            s
        });
    }
    let parallel = x.len() >= PAR_MIN_ELEMS;
    let s = if parallel {
        use rayon::prelude::*;
        x.par_iter().map(|v| v.abs()).reduce(|| 0.0, f32::max)
    } else {
        absmax(x)
    } / max;
    let mut data = vec![0u8; x.len()];
    zip_chunks(&mut data, 8192, x, 8192, parallel, |_, d, x| fp8_fill(x, d, s, enc));
    (data, vec![s])
}

/// Dequantizes the byte-per-value row-blocked formats: `decode(byte) * scale`.
pub(crate) fn dequantize_row_blocks<D>(data: &[u8], scales: &[f32], k: usize, block: usize, decode: D, out: &mut [f32])
where
    D: Fn(u8) -> f32 + Sync + Send,
{
    if out.is_empty() || k == 0 {
        return;
    }
    let bpr = k.div_ceil(block);
    let rows_per = units_per_task(k);
    zip_chunks(
        out,
        rows_per * k,
        data,
        rows_per * k,
        out.len() >= PAR_MIN_ELEMS,
        |i, out, data| {
            let s0 = i * rows_per * bpr;
            for (r, (o, d)) in out.chunks_mut(k).zip(data.chunks(k)).enumerate() {
                let s = &scales[s0 + r * bpr..s0 + (r + 1) * bpr];
                for ((o, d), &s) in o.chunks_mut(block).zip(d.chunks(block)).zip(s) {
                    for (o, &b) in o.iter_mut().zip(d) {
                        *o = decode(b) * s;
                    }
                }
            }
        },
    );
}

/// The int8 decoder: byte `b` is the value `b as i8` (a conversion that vectorizes).
pub(crate) fn i8_value(b: u8) -> f32 {
    f32::from(b as i8)
}

/// FP8 dequantization for either scale granularity.
pub(crate) fn dequantize_fp8(data: &[u8], scales: &[f32], k: usize, block: Option<usize>, kind: Fp8, out: &mut [f32]) {
    let table = kind.table();
    if let Some(b) = block {
        dequantize_row_blocks(data, scales, k, b, |v| table[usize::from(v)], out);
    } else {
        let s = scales[0];
        zip_chunks(out, 8192, data, 8192, out.len() >= PAR_MIN_ELEMS, |_, o, d| {
            for (o, &b) in o.iter_mut().zip(d) {
                *o = table[usize::from(b)] * s;
            }
        });
    }
}

/// The smallest ternary scale (BitNet's clamp of the absmean).
pub const TERNARY_EPS: f32 = 1e-5;

/// BitNet b1.58 ternary: codes `q + 1` in 2 bits, four per byte, and the absmean scale.
pub(crate) fn quantize_ternary(x: &[f32]) -> (Vec<u8>, f32) {
    let parallel = x.len() >= PAR_MIN_ELEMS;
    let sum: f64 = if parallel {
        use rayon::prelude::*;
        x.par_iter().map(|v| f64::from(v.abs())).sum()
    } else {
        x.iter().map(|v| f64::from(v.abs())).sum()
    };
    let mean = if x.is_empty() {
        0.0
    } else {
        (sum / x.len() as f64) as f32
    };
    let scale = mean.max(TERNARY_EPS);
    let inv = 1.0 / scale;
    let mut data = vec![0u8; x.len().div_ceil(4)];
    zip_chunks(&mut data, 2048, x, 8192, parallel, |_, d, x| {
        for (o, q4) in d.iter_mut().zip(x.chunks(4)) {
            let mut b = 0u8;
            for (i, &v) in q4.iter().enumerate() {
                // round half to even, clamped to [-1, 1]: ±0.5 round to 0.
                let y = v * inv;
                let q = 1 + i8::from(y > 0.5) - i8::from(y < -0.5);
                b |= (q as u8) << (2 * i);
            }
            *o = b;
        }
    });
    (data, scale)
}

/// Dequantizes ternary codes: `scale * (q - 1)` (a code of 3, which the quantizer never
/// writes, reads as `2 * scale`, the same formula).
pub(crate) fn dequantize_ternary(data: &[u8], scale: f32, out: &mut [f32]) {
    let level = [-scale, 0.0, scale, 2.0 * scale];
    // The four values of every byte, so that each byte is one 16-byte copy.
    let quads: Vec<[f32; 4]> = (0..=255u8)
        .map(|b| std::array::from_fn(|i| level[usize::from((b >> (2 * i)) & 3)]))
        .collect();
    zip_chunks(out, 8192, data, 2048, out.len() >= PAR_MIN_ELEMS, |_, o, d| {
        let full = o.len() / 4;
        let mut whole = o.chunks_exact_mut(4);
        for (o4, &b) in (&mut whole).zip(d) {
            o4.copy_from_slice(&quads[usize::from(b)]);
        }
        let tail = whole.into_remainder();
        if let Some(&b) = d.get(full) {
            for (o, v) in tail.iter_mut().zip(quads[usize::from(b)]) {
                *o = v;
            }
        }
    });
}
