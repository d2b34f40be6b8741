//! Activation quantization to int8 per block of 32 (the scheme of ggml's `q8_0`
//! activations, with the block scale kept in f32 instead of f16).

use rayon::prelude::*;

/// `rows` activation rows quantized per block of 32: `q = round(x / d)` with
/// `d = max|x| / 127` (ties away from zero), a row of `K` values padded with zeros to
/// `nb = ceil(K / 32)` blocks.
pub(crate) struct ActQ8 {
    /// `rows * nb * 32` codes in -127..=127.
    pub(crate) qs: Vec<i8>,
    /// `rows * nb` block scales.
    pub(crate) d: Vec<f32>,
    /// Blocks per row.
    pub(crate) nb: usize,
    /// Rows with a NaN or infinity, which int8 cannot carry: these rows take the exact path
    /// so that non-finite values propagate as IEEE says.
    pub(crate) non_finite: Vec<bool>,
}

impl ActQ8 {
    /// Quantizes `x` (`rows` rows of `k` values).
    pub(crate) fn quantize(x: &[f32], rows: usize, k: usize) -> Self {
        let nb = k.div_ceil(32);
        let mut qs = vec![0i8; rows * nb * 32];
        let mut d = vec![0.0f32; rows * nb];
        let mut non_finite = vec![false; rows];
        if nb > 0 {
            qs.par_chunks_mut(nb * 32)
                .zip(d.par_chunks_mut(nb))
                .zip(non_finite.par_iter_mut())
                .enumerate()
                .for_each(|(r, ((q, d), bad))| {
                    let row = &x[r * k..(r + 1) * k];
                    *bad = !row.iter().all(|v| v.is_finite());
                    if !*bad {
                        quantize_row(row, q, d);
                    }
                });
        }
        Self { qs, d, nb, non_finite }
    }
}

fn quantize_row(row: &[f32], q: &mut [i8], d: &mut [f32]) {
    for ((xb, qb), db) in row.chunks(32).zip(q.chunks_exact_mut(32)).zip(d.iter_mut()) {
        let amax = xb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let scale = amax / 127.0;
        // Dividing by the scale (not multiplying by 127 / amax) keeps blocks of subnormal
        // values right: 127 / amax overflows to infinity there, v / scale never exceeds 127.
        for (qv, &v) in qb.iter_mut().zip(xb) {
            *qv = if scale == 0.0 { 0 } else { (v / scale).round() as i8 };
        }
        *db = scale;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantizes_per_block_and_pads_the_tail() {
        let mut x: Vec<f32> = (0..40).map(|i| i as f32 - 20.0).collect();
        x[3] = 127.0;
        let a = ActQ8::quantize(&x, 1, 40);
        assert_eq!(a.nb, 2);
        assert_eq!(a.d[0], 1.0);
        assert_eq!(a.qs[3], 127);
        assert_eq!(a.qs[0], -20);
        // block 1 holds 12..=19, amax 19, padded with zeros
        assert_eq!(a.d[1], 19.0 / 127.0);
        assert_eq!(a.qs[32 + 7], 127);
        assert!(a.qs[32 + 8..].iter().all(|&q| q == 0));
        // Subnormal blocks quantize like any other, within the precision subnormals have.
        let tiny: Vec<f32> = [1.0f32, 0.5, -0.25, 0.0].iter().map(|v| v * 1e-40).collect();
        let a = ActQ8::quantize(&tiny, 1, 4);
        assert_eq!((a.qs[0], a.qs[3]), (127, 0));
        assert!(
            (i32::from(a.qs[1]) - 64).abs() <= 1 && (i32::from(a.qs[2]) + 32).abs() <= 1,
            "{:?}",
            &a.qs[..4]
        );
        let a = ActQ8::quantize(&[0.0, f32::NAN, 1.0, 1.0], 2, 2);
        assert_eq!(a.non_finite, [true, false]);
    }
}
