//! NF4 (NormalFloat4, QLoRA) as bitsandbytes stores it, with optional double quantization.
//!
//! Quantization follows bitsandbytes 0.50.2's CPU quantizer bit for bit (tested against
//! files it wrote, `tests/bnb_compat.rs`). Per block of `block_size` values of the flattened
//! tensor: `absmax = max |x|`; each value of a full block is normalized as
//! `x * (1 / max(absmax, 1e-38))` in f32, and each value of a partial last block as
//! `x / max(absmax, 1e-38)`, whose stored absmax is that clamped value. A normalized value
//! takes the code whose value is nearest: it gets the number of the 15 midpoints between
//! neighbouring code values (rounded once to f32) it lies strictly above, so a value equal to
//! a midpoint takes the lower code. Two codes share a byte, the first in the high nibble; an
//! odd tail is padded with the code of 0.0 (7). An all-zero block stores code 7 throughout.
//! Dequantization is `NF4_CODE[code] * absmax` in f32.
//!
//! bitsandbytes' CUDA kernel decides with a tree of decimal thresholds that agree with these
//! midpoints to within 1e-7 (not checked bit for bit: no GPU here), and stores code 0 for an
//! all-zero block (`0 * (1/0)` is NaN there). Files from either load to the same values: the
//! loader decodes the stored codes.
//!
//! Double quantization (QLoRA): the absmax values minus their mean are quantized blockwise
//! (256 per block) to 8 bits with bitsandbytes' signed dynamic map, nearest code.

use std::sync::LazyLock;

use crate::par::{units_per_task, zip_chunks2, PAR_MIN_ELEMS};
use crate::tensor::NestedAbsmax;

/// The 16 NormalFloat4 values (QLoRA, appendix E; bitsandbytes' `NF4` table), indexed by
/// the 4-bit code.
pub const NF4_CODE: [f32; 16] = [
    -1.0,
    -0.696_192_8,
    -0.525_073_05,
    -0.394_917_5,
    -0.284_441_38,
    -0.184_773_43,
    -0.091_050_036,
    0.0,
    0.079_580_3,
    0.160_930_2,
    0.246_112_3,
    0.337_915_24,
    0.440_709_83,
    0.562_617,
    0.722_956_84,
    1.0,
];

/// Midpoints between neighbouring code values, computed exactly and rounded once to f32:
/// the thresholds of bitsandbytes' NF4 decision tree.
pub(crate) const NF4_THRESHOLDS: [f32; 15] = {
    let mut t = [0.0f32; 15];
    let mut i = 0;
    while i < 15 {
        t[i] = ((NF4_CODE[i] as f64 + NF4_CODE[i + 1] as f64) * 0.5) as f32;
        i += 1;
    }
    t
};

/// The code of the value 0.0.
pub(crate) const ZERO_CODE: u8 = 7;

/// Codes per nested (double-quantization) block, as in QLoRA.
pub const NESTED_BLOCK: usize = 256;

/// The code of a normalized value: the number of thresholds it lies strictly above. A NaN
/// lies above none and gets code 0, as in bitsandbytes' CUDA decision tree.
#[inline]
pub(crate) fn nf4_index(x: f32) -> u8 {
    let mut c = 0u8;
    for t in NF4_THRESHOLDS {
        c += u8::from(x > t);
    }
    c
}

/// The smallest absmax bitsandbytes divides by (`absmax.clamp(min=1e-38)`), as f32.
const MIN_ABSMAX: f32 = 1e-38f64 as f32;

/// Quantizes one block (`full`: the block has `block_size` values; the last block of a
/// tensor may not) and returns the absmax bitsandbytes stores for it.
fn quantize_block(x: &[f32], full: bool, out: &mut [u8]) -> f32 {
    let absmax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let clamped = absmax.max(MIN_ABSMAX);
    // bitsandbytes multiplies full blocks by the reciprocal and divides the last, partial one.
    let inv = 1.0 / clamped;
    let enc = |v: f32| -> u8 {
        if full {
            nf4_index(v * inv)
        } else {
            nf4_index(v / clamped)
        }
    };
    for (o, pair) in out.iter_mut().zip(x.chunks(2)) {
        let hi = enc(pair[0]);
        // An odd tail is padded with the value 0 before packing: code 7.
        let lo = pair.get(1).map_or(ZERO_CODE, |&v| enc(v));
        *o = (hi << 4) | lo;
    }
    if full {
        absmax
    } else {
        clamped
    }
}

/// Quantizes the flattened `x` into packed codes and one absmax per block.
pub(crate) fn quantize(x: &[f32], block: usize) -> (Vec<u8>, Vec<f32>) {
    let mut data = vec![0u8; x.len().div_ceil(2)];
    let mut absmax = vec![0.0f32; x.len().div_ceil(block)];
    let per = units_per_task(block);
    zip_chunks2(
        (&mut data, per * block / 2),
        (&mut absmax, per),
        (x, per * block),
        x.len() >= PAR_MIN_ELEMS,
        |d, a, x| {
            for ((d, a), x) in d.chunks_mut(block / 2).zip(a.iter_mut()).zip(x.chunks(block)) {
                *a = quantize_block(x, x.len() == block, d);
            }
        },
    );
    (data, absmax)
}

/// Pairs of decoded values per byte: `[NF4_CODE[b >> 4], NF4_CODE[b & 15]]`.
static PAIRS: LazyLock<[[f32; 2]; 256]> =
    LazyLock::new(|| std::array::from_fn(|b| [NF4_CODE[b >> 4], NF4_CODE[b & 15]]));

/// Dequantizes `data` (codes) with one `absmax` per block into `out` (`numel` values).
pub(crate) fn dequantize(data: &[u8], absmax: &[f32], block: usize, out: &mut [f32]) {
    let pairs = &*PAIRS;
    let per = units_per_task(block);
    crate::par::zip_chunks(
        out,
        per * block,
        data,
        per * block / 2,
        out.len() >= PAR_MIN_ELEMS,
        |i, out, data| {
            let a0 = i * per;
            for (j, (o, d)) in out.chunks_mut(block).zip(data.chunks(block / 2)).enumerate() {
                let a = absmax[a0 + j];
                let (even, tail) = o.split_at_mut(o.len() & !1);
                for (o2, &b) in even.chunks_exact_mut(2).zip(d) {
                    let p = pairs[usize::from(b)];
                    o2[0] = p[0] * a;
                    o2[1] = p[1] * a;
                }
                if let Some(t) = tail.first_mut() {
                    *t = NF4_CODE[usize::from(d[d.len() - 1] >> 4)] * a;
                }
            }
        },
    );
}

/// bitsandbytes' signed 8-bit dynamic map (`create_dynamic_map(signed=True)`), the code book
/// of double quantization: for `i` in 0..7, the `2^i` midpoints of `linspace(0.1, 1, 2^i + 1)`
/// scaled by `10^(i-6)`, with both signs, plus 0 and 1, sorted.
///
/// The map is computed in f32 with bitsandbytes' order of roundings, so that it is bit for
/// bit the map bitsandbytes 0.50.2 builds (`tests/bnb_compat.rs`); files written by
/// bitsandbytes carry their own map (`nested_quant_map`), which the loader uses as it is.
pub static DYNAMIC_MAP: LazyLock<[f32; 256]> = LazyLock::new(|| {
    let mut v = Vec::with_capacity(256);
    for i in 0..7i32 {
        let n = (1usize << i) + 1;
        let step = (1.0f32 - 0.1) / (n - 1) as f32;
        // torch.linspace fills the first half from the start and the second from the end,
        // each point rounded once (a fused multiply-add).
        let b: Vec<f32> = (0..n)
            .map(|k| {
                if k < n / 2 {
                    step.mul_add(k as f32, 0.1)
                } else {
                    (-step).mul_add((n - 1 - k) as f32, 1.0)
                }
            })
            .collect();
        // The power of ten rounded to f32 first, then an f32 product: bitsandbytes multiplies
        // an f32 tensor by a Python float, which torch computes in f32.
        let scale = [1e-6f64, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0][i as usize] as f32;
        for w in b.windows(2) {
            let mean = f32::midpoint(w[0], w[1]);
            v.push(scale * mean);
            v.push(-scale * mean);
        }
    }
    v.push(0.0);
    v.push(1.0);
    v.sort_by(f32::total_cmp);
    let mut out = [0.0f32; 256];
    out.copy_from_slice(&v);
    out
});

/// The index of the code-book entry nearest to `x` (`code` sorted ascending); ties take the
/// larger entry.
pub(crate) fn nearest_code(code: &[f32], x: f32) -> u8 {
    let hi = code.partition_point(|&c| c < x).min(code.len() - 1);
    if hi == 0 {
        return 0;
    }
    let lo = hi - 1;
    if (x - code[lo]).abs() < (code[hi] - x).abs() {
        lo as u8
    } else {
        hi as u8
    }
}

/// Decodes the nested absmax: `code[q] * scale[block] + offset` in f32, as bitsandbytes'
/// `dequantize_blockwise(...) + offset` does.
pub(crate) fn decode_nested(n: &NestedAbsmax) -> Vec<f32> {
    n.codes
        .iter()
        .enumerate()
        .map(|(i, &q)| n.code[usize::from(q)] * n.scales[i / n.block_size] + n.offset)
        .collect()
}

/// Double quantization of `absmax`: subtract the mean, quantize blocks of 256 to 8 bits.
pub(crate) fn double_quantize(absmax: &[f32]) -> NestedAbsmax {
    let offset = if absmax.is_empty() {
        0.0
    } else {
        (absmax.iter().map(|&a| f64::from(a)).sum::<f64>() / absmax.len() as f64) as f32
    };
    let code = &*DYNAMIC_MAP;
    let mut codes = Vec::with_capacity(absmax.len());
    let mut scales = Vec::with_capacity(absmax.len().div_ceil(NESTED_BLOCK));
    for block in absmax.chunks(NESTED_BLOCK) {
        let amax = block.iter().fold(0.0f32, |m, &a| m.max((a - offset).abs()));
        scales.push(amax);
        for &a in block {
            let c = a - offset;
            let norm = if amax == 0.0 { 0.0 } else { c / amax };
            codes.push(nearest_code(code, norm));
        }
    }
    NestedAbsmax {
        codes,
        scales,
        code: code.to_vec(),
        offset,
        block_size: NESTED_BLOCK,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::float_cmp)] // exact values are the point
    use super::*;

    #[test]
    fn thresholds_are_midpoints_near_bitsandbytes_tree() {
        // The decision tree in bitsandbytes' `dQuantizeNF4`, to the digits printed there
        // (truncated here to 9 significant digits; compared within 1e-7).
        let bnb: [f64; 15] = [
            -0.848_096_400,
            -0.610_632_926,
            -0.459_995_270,
            -0.339_679_435,
            -0.234_607_406,
            -0.137_911_733,
            -0.045_525_018,
            0.039_790_150,
            0.120_255_250,
            0.203_521_252,
            0.292_013_772,
            0.389_312_536,
            0.501_663_417,
            0.642_786_920,
            0.861_478_418,
        ];
        for i in 0..15 {
            let exact = f64::midpoint(f64::from(NF4_CODE[i]), f64::from(NF4_CODE[i + 1]));
            assert_eq!(NF4_THRESHOLDS[i], exact as f32, "rounded once from the exact midpoint");
            assert!((f64::from(NF4_THRESHOLDS[i]) - bnb[i]).abs() < 1e-7, "{i}");
            assert!(NF4_CODE[i] < NF4_THRESHOLDS[i] && NF4_THRESHOLDS[i] < NF4_CODE[i + 1]);
        }
    }

    #[test]
    fn index_rounds_to_nearest_with_ties_down() {
        for (i, &c) in NF4_CODE.iter().enumerate() {
            assert_eq!(usize::from(nf4_index(c)), i);
        }
        for (i, &t) in NF4_THRESHOLDS.iter().enumerate() {
            assert_eq!(usize::from(nf4_index(t)), i, "tie at threshold {i} goes down");
            assert_eq!(usize::from(nf4_index(t.next_up())), i + 1);
        }
        assert_eq!(nf4_index(-5.0), 0);
        assert_eq!(nf4_index(5.0), 15);
        assert_eq!(nf4_index(f32::NAN), 0);
    }

    #[test]
    fn dynamic_map_has_bitsandbytes_shape() {
        let m = &*DYNAMIC_MAP;
        assert!(m.windows(2).all(|w| w[0] < w[1]), "strictly ascending");
        assert_eq!(m[255], 1.0);
        assert!(m.contains(&0.0));
        assert_eq!(m.iter().filter(|&&v| v < 0.0).count(), 127);
        // Largest negative magnitude: the mean of the last two points of linspace(0.1, 1, 65).
        assert!((m[0] + 0.992_968_75).abs() < 1e-6, "{}", m[0]);
        // Smallest positive magnitude: 1e-6 * 0.55.
        let smallest = m.iter().copied().filter(|&v| v > 0.0).fold(f32::INFINITY, f32::min);
        assert!((smallest - 0.55e-6).abs() < 1e-12, "{smallest}");
    }

    #[test]
    fn nearest_code_picks_nearest() {
        let code = [-1.0, -0.5, 0.0, 0.5, 1.0];
        assert_eq!(nearest_code(&code, -2.0), 0);
        assert_eq!(nearest_code(&code, 0.2), 2);
        assert_eq!(nearest_code(&code, 0.3), 3);
        assert_eq!(nearest_code(&code, 0.25), 3);
        assert_eq!(nearest_code(&code, 3.0), 4);
    }
}
