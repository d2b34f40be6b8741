//! Activation quantization to int8 per block of 32 (the scheme of ggml's `q8_0`
//! activations, with the block scale kept in f32 instead of f16).

/// The number of rows is padded with zero rows to a multiple of this.
pub(crate) const ROW_PAD: usize = 4;

/// `rows` activation rows quantized per block of 32: `q = round(x / d)` with
/// `d = max|x| / 127` (ties away from zero), a row of `K` values padded with zeros to
/// `nb = ceil(K / 32)` blocks. The rows are padded with zero rows to a multiple of
/// [`ROW_PAD`], so the panel kernels can always take activation rows in groups of that size.
pub(crate) struct ActQ8 {
    /// `padded_rows * nb * 32` codes in -127..=127.
    pub(crate) qs: Vec<i8>,
    /// `padded_rows * nb` block scales.
    pub(crate) d: Vec<f32>,
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // read by the x86 panel kernels
    /// `padded_rows * nb` sums of the 32 codes of each block (the offset correction of the
    /// panel kernels, whose weight codes are stored unsigned).
    pub(crate) sums: Vec<i32>,
    /// Blocks per row.
    pub(crate) nb: usize,
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // read by the x86 panel kernels
    /// Rows holding activations (the rest up to a multiple of [`ROW_PAD`] are zero).
    pub(crate) rows: usize,
    /// Rows with a NaN or infinity, which int8 cannot carry: these rows take the exact path
    /// so that non-finite values propagate as IEEE says.
    pub(crate) non_finite: Vec<bool>,
}

impl ActQ8 {
    /// Quantizes `x` (`rows` rows of `k` values).
    pub(crate) fn quantize(x: &[f32], rows: usize, k: usize) -> Self {
        let nb = k.div_ceil(32);
        let padded = rows.next_multiple_of(ROW_PAD);
        let mut qs = vec![0i8; padded * nb * 32];
        let mut d = vec![0.0f32; padded * nb];
        let mut sums = vec![0i32; padded * nb];
        let mut non_finite = vec![false; rows];
        if nb > 0 && rows > 0 {
            // A few rows per task, on the calling thread and the pool (`crate::pool`: a
            // parallel iterator from outside the pool would put the caller to sleep).
            let per_task = rows.div_ceil(2 * crate::pool::threads()).max(1);
            let tasks: Vec<_> = qs[..rows * nb * 32]
                .chunks_mut(per_task * nb * 32)
                .zip(d.chunks_mut(per_task * nb))
                .zip(sums.chunks_mut(per_task * nb))
                .zip(non_finite.chunks_mut(per_task))
                .collect();
            crate::pool::run_tasks(tasks, |t, (((q, d), s), bad)| {
                for (i, bad) in bad.iter_mut().enumerate() {
                    let r = t * per_task + i;
                    let row = &x[r * k..(r + 1) * k];
                    *bad = !row_is_finite(row);
                    if !*bad {
                        let (q, d, s) = (
                            &mut q[i * nb * 32..][..nb * 32],
                            &mut d[i * nb..][..nb],
                            &mut s[i * nb..][..nb],
                        );
                        quantize_row(row, q, d, s);
                    }
                }
            });
        }
        Self {
            qs,
            d,
            sums,
            nb,
            rows,
            non_finite,
        }
    }
}

/// Whether every value of `row` is finite.
fn row_is_finite(row: &[f32]) -> bool {
    #[cfg(target_arch = "x86_64")]
    if super::x86_set::detect().is_some() {
        // SAFETY: AVX2 was detected.
        return unsafe { x86::is_finite(row) };
    }
    // Not `all`: without the early exit the check vectorizes.
    row.iter().fold(true, |ok, v| ok & v.is_finite())
}

/// The codes `q`, scales `d` and block sums `s` of one row of finite values (`q` holds
/// `ceil(len / 32)` blocks, `d` and `s` one value per block).
fn quantize_row(row: &[f32], q_all: &mut [i8], d_all: &mut [f32], s_all: &mut [i32]) {
    #[cfg(target_arch = "x86_64")]
    if super::x86_set::detect().is_some() {
        let full = row.len() / 32;
        let (r, q, d, s) = (
            &row[..32 * full],
            &mut q_all[..32 * full],
            &mut d_all[..full],
            &mut s_all[..full],
        );
        if crate::kernels::cpu().avx512_vnni {
            // SAFETY: AVX-512 F was detected; the full blocks of `row` have their 32 codes in
            // `q`, a scale in `d` and a sum in `s`.
            unsafe { x86::quantize_blocks_512(r, q, d, s) };
        } else {
            // SAFETY: AVX2 was detected; as above.
            unsafe { x86::quantize_blocks(r, q, d, s) };
        }
        let (q, d, s) = (&mut q_all[32 * full..], &mut d_all[full..], &mut s_all[full..]);
        quantize_row_scalar(&row[32 * full..], q, d, s);
        return;
    }
    quantize_row_scalar(row, q_all, d_all, s_all);
}

/// [`quantize_row`] one value at a time: the definition the vector version matches.
fn quantize_row_scalar(row: &[f32], q: &mut [i8], d: &mut [f32], s: &mut [i32]) {
    for (((xb, qb), db), sb) in row
        .chunks(32)
        .zip(q.chunks_exact_mut(32))
        .zip(d.iter_mut())
        .zip(s.iter_mut())
    {
        let amax = xb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let scale = amax / 127.0;
        // Dividing by the scale (not multiplying by 127 / amax) keeps blocks of subnormal
        // values right: 127 / amax overflows to infinity there, v / scale never exceeds 127.
        if scale == 0.0 {
            qb.fill(0);
        } else {
            for (qv, &v) in qb.iter_mut().zip(xb) {
                *qv = round_away(v / scale);
            }
        }
        *db = scale;
        *sb = qb.iter().map(|&v| i32::from(v)).sum();
    }
}

/// `t` rounded to the nearest integer, ties away from zero (`f32::round`), for
/// `|t| <= 127`; written without a libm call so the loop vectorizes.
#[inline]
fn round_away(t: f32) -> i8 {
    // Exact: |t| < 2^23, so the truncation and the fraction are exact.
    let i = t as i32;
    let frac = t - i as f32;
    let r = if frac >= 0.5 {
        i + 1
    } else if frac <= -0.5 {
        i - 1
    } else {
        i
    };
    r as i8
}

/// The AVX2 version of the block quantization: the same divisions and the same rounding, 8
/// values at a time, so the codes are identical.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::{
        _mm256_add_epi32, _mm256_add_ps, _mm256_and_ps, _mm256_castps256_ps128, _mm256_castsi256_si128, _mm256_cmp_ps,
        _mm256_cvttps_epi32, _mm256_div_ps, _mm256_extractf128_ps, _mm256_extracti128_si256, _mm256_loadu_ps,
        _mm256_max_ps, _mm256_movemask_ps, _mm256_or_ps, _mm256_round_ps, _mm256_set1_ps, _mm256_setzero_ps,
        _mm256_setzero_si256, _mm256_sub_ps, _mm512_abs_ps, _mm512_add_epi32, _mm512_cmp_ps_mask,
        _mm512_cvtsepi32_epi8, _mm512_cvttps_epi32, _mm512_div_ps, _mm512_loadu_ps, _mm512_mask_add_ps,
        _mm512_mask_sub_ps, _mm512_max_ps, _mm512_reduce_add_epi32, _mm512_reduce_max_ps, _mm512_roundscale_ps,
        _mm512_set1_ps, _mm512_setzero_si512, _mm512_sub_ps, _mm_add_epi32, _mm_cvtsi128_si32, _mm_cvtss_f32,
        _mm_max_ps, _mm_movehl_ps, _mm_packs_epi16, _mm_packs_epi32, _mm_shuffle_epi32, _mm_shuffle_ps,
        _mm_storel_epi64, _mm_storeu_si128, _CMP_GE_OQ, _CMP_LE_OQ, _CMP_NLT_UQ, _MM_FROUND_NO_EXC, _MM_FROUND_TO_ZERO,
    };

    /// Whether every value of `row` is finite: `|x| < inf` (false for NaN), 8 at a time.
    ///
    /// # Safety
    /// AVX2 is available.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn is_finite(row: &[f32]) -> bool {
        let abs_mask = _mm256_set1_ps(f32::from_bits(0x7FFF_FFFF));
        let inf = _mm256_set1_ps(f32::INFINITY);
        let mut bad = _mm256_setzero_ps();
        let chunks = row.chunks_exact(8);
        let tail = chunks.remainder();
        for c in chunks {
            // SAFETY: `c` has 8 f32.
            let v = _mm256_and_ps(unsafe { _mm256_loadu_ps(c.as_ptr()) }, abs_mask);
            // Not less than infinity, or unordered (NaN).
            bad = _mm256_or_ps(bad, _mm256_cmp_ps::<_CMP_NLT_UQ>(v, inf));
        }
        _mm256_movemask_ps(bad) == 0 && tail.iter().all(|v| v.is_finite())
    }

    /// Quantizes whole blocks of 32, with their code sums:
    /// `row.len() == q.len() == 32 * d.len() == 32 * s.len()`.
    ///
    /// # Safety
    /// AVX2 is available.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn quantize_blocks(row: &[f32], q: &mut [i8], d: &mut [f32], s: &mut [i32]) {
        assert!(row.len() == q.len() && row.len() == 32 * d.len() && d.len() == s.len());
        let abs_mask = _mm256_set1_ps(f32::from_bits(0x7FFF_FFFF));
        let (half, neg_half, one) = (_mm256_set1_ps(0.5), _mm256_set1_ps(-0.5), _mm256_set1_ps(1.0));
        for (((xb, qb), db), sb) in row
            .chunks_exact(32)
            .zip(q.chunks_exact_mut(32))
            .zip(d.iter_mut())
            .zip(s.iter_mut())
        {
            // SAFETY: each chunk has 32 f32: four loads of 8.
            let v: [_; 4] = std::array::from_fn(|i| unsafe { _mm256_loadu_ps(xb.as_ptr().add(8 * i)) });
            let m = v.iter().fold(_mm256_set1_ps(0.0), |m, &x| {
                _mm256_max_ps(m, _mm256_and_ps(x, abs_mask))
            });
            let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
            let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
            let amax = _mm_cvtss_f32(_mm_max_ps(m, _mm_shuffle_ps::<1>(m, m)));
            let scale = amax / 127.0;
            *db = scale;
            if scale == 0.0 {
                qb.fill(0);
                *sb = 0;
                continue;
            }
            let sv = _mm256_set1_ps(scale);
            let mut sum = _mm256_setzero_si256();
            for (i, &x) in v.iter().enumerate() {
                // t = x / scale in -127..=127; r = trunc(t) ± 1 where the fraction reaches a
                // half: the scalar `round_away`, exactly (every step is exact in f32).
                let t = _mm256_div_ps(x, sv);
                let r = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(t);
                let frac = _mm256_sub_ps(t, r);
                let up = _mm256_and_ps(_mm256_cmp_ps::<_CMP_GE_OQ>(frac, half), one);
                let down = _mm256_and_ps(_mm256_cmp_ps::<_CMP_LE_OQ>(frac, neg_half), one);
                let r = _mm256_sub_ps(_mm256_add_ps(r, up), down);
                let i32s = _mm256_cvttps_epi32(r);
                sum = _mm256_add_epi32(sum, i32s);
                let w16 = _mm_packs_epi32(_mm256_castsi256_si128(i32s), _mm256_extracti128_si256::<1>(i32s));
                let b8 = _mm_packs_epi16(w16, w16);
                // SAFETY: qb has 32 bytes; 8 are written at 8 i.
                unsafe { _mm_storel_epi64(qb.as_mut_ptr().add(8 * i).cast(), b8) };
            }
            let sum = _mm_add_epi32(_mm256_castsi256_si128(sum), _mm256_extracti128_si256::<1>(sum));
            let sum = _mm_add_epi32(sum, _mm_shuffle_epi32::<0b0100_1110>(sum));
            let sum = _mm_add_epi32(sum, _mm_shuffle_epi32::<0b1011_0001>(sum));
            *sb = _mm_cvtsi128_si32(sum);
        }
    }

    /// [`quantize_blocks`] 16 values at a time: the same divisions, truncation and
    /// corrections (masked instead of adding 0 or 1), so the same codes.
    ///
    /// # Safety
    /// AVX-512 F is available.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn quantize_blocks_512(row: &[f32], q: &mut [i8], d: &mut [f32], s: &mut [i32]) {
        assert!(row.len() == q.len() && row.len() == 32 * d.len() && d.len() == s.len());
        let (half, neg_half, one) = (_mm512_set1_ps(0.5), _mm512_set1_ps(-0.5), _mm512_set1_ps(1.0));
        for (((xb, qb), db), sb) in row
            .chunks_exact(32)
            .zip(q.chunks_exact_mut(32))
            .zip(d.iter_mut())
            .zip(s.iter_mut())
        {
            // SAFETY: each chunk has 32 f32: two loads of 16.
            let v: [_; 2] = std::array::from_fn(|i| unsafe { _mm512_loadu_ps(xb.as_ptr().add(16 * i)) });
            let amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v[0]), _mm512_abs_ps(v[1])));
            let scale = amax / 127.0;
            *db = scale;
            if scale == 0.0 {
                qb.fill(0);
                *sb = 0;
                continue;
            }
            let sv = _mm512_set1_ps(scale);
            let mut sum = _mm512_setzero_si512();
            for (i, &x) in v.iter().enumerate() {
                let t = _mm512_div_ps(x, sv);
                let r = _mm512_roundscale_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(t);
                let frac = _mm512_sub_ps(t, r);
                let r = _mm512_mask_add_ps(r, _mm512_cmp_ps_mask::<_CMP_GE_OQ>(frac, half), r, one);
                let r = _mm512_mask_sub_ps(r, _mm512_cmp_ps_mask::<_CMP_LE_OQ>(frac, neg_half), r, one);
                let i32s = _mm512_cvttps_epi32(r);
                sum = _mm512_add_epi32(sum, i32s);
                // SAFETY: qb has 32 bytes; 16 are written at 16 i.
                unsafe { _mm_storeu_si128(qb.as_mut_ptr().add(16 * i).cast(), _mm512_cvtsepi32_epi8(i32s)) };
            }
            *sb = _mm512_reduce_add_epi32(sum);
        }
    }
}

/// The checks of each x86 build of the activation quantization, run once per build by
/// `tests/isa.rs` (the builds this CPU lacks reported as ignored).
#[cfg(any(test, feature = "test-internals"))]
pub(crate) mod checks {
    #[cfg(target_arch = "x86_64")]
    use super::{quantize_row_scalar, x86};

    /// Ties, values near ties, zero and subnormal blocks, outliers, odd lengths: 40 whole
    /// blocks and a tail of 7.
    #[cfg_attr(not(any(test, target_arch = "x86_64")), allow(dead_code))] // the x86 builds' check
    pub(crate) fn test_row() -> Vec<f32> {
        let mut x: Vec<f32> = (0..32 * 40 + 7)
            .map(|i| ((i * 37 % 255) as f32 - 127.0) / 2.0)
            .collect();
        for (i, v) in x.iter_mut().enumerate().skip(32 * 3).take(32) {
            *v = (i as f32 - 100.0) * 1e-40;
        }
        x[32 * 5..32 * 6].fill(0.0);
        x[32 * 7] = 3e38;
        for v in &mut x[32 * 8..32 * 9] {
            *v = v.next_up();
        }
        x
    }

    /// The AVX2 build (`avx512`: the AVX-512 one) on the whole blocks of [`test_row`] gives the
    /// scalar definition's codes, scales and sums. Panics where the CPU lacks the build's set
    /// (AVX2; AVX-512 F/BW and VNNI, as `quantize_row` picks it).
    #[cfg(target_arch = "x86_64")]
    pub(crate) fn x86_build_matches_the_scalar_definition(avx512: bool) {
        type Blocks = unsafe fn(&[f32], &mut [i8], &mut [f32], &mut [i32]);
        let x = test_row();
        let full = x.len() / 32;
        let (mut q2, mut d2, mut s2) = (vec![0i8; 32 * full], vec![0.0f32; full], vec![0i32; full]);
        quantize_row_scalar(&x[..32 * full], &mut q2, &mut d2, &mut s2);
        let (name, build, here): (&str, Blocks, bool) = if avx512 {
            ("avx512", x86::quantize_blocks_512, crate::kernels::cpu().avx512_vnni)
        } else {
            ("avx2", x86::quantize_blocks, super::super::x86_set::detect().is_some())
        };
        assert!(here, "this CPU does not run the {name} build");
        let (mut q, mut d, mut s) = (vec![0i8; 32 * full], vec![0.0f32; full], vec![0i32; full]);
        // SAFETY: the CPU has what the build needs (asserted above).
        unsafe { build(&x[..32 * full], &mut q, &mut d, &mut s) };
        assert_eq!(q, q2, "{name}");
        assert_eq!(
            d.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            d2.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            "{name}"
        );
        assert_eq!(s, s2, "{name}");
        for (s, q) in s.iter().zip(q.chunks_exact(32)) {
            assert_eq!(*s, q.iter().map(|&v| i32::from(v)).sum::<i32>(), "{name}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vector_quantization_matches_the_scalar_definition() {
        // The best build (each x86 build alone: `checks`, once per build in `tests/isa.rs`).
        let x = checks::test_row();
        let nb = x.len().div_ceil(32);
        let (mut q1, mut d1, mut s1) = (vec![0i8; nb * 32], vec![0.0f32; nb], vec![0i32; nb]);
        let (mut q2, mut d2, mut s2) = (vec![0i8; nb * 32], vec![0.0f32; nb], vec![0i32; nb]);
        quantize_row(&x, &mut q1, &mut d1, &mut s1);
        quantize_row_scalar(&x, &mut q2, &mut d2, &mut s2);
        assert_eq!(q1, q2);
        assert_eq!(s1, s2);
        for (s, q) in s1.iter().zip(q1.chunks_exact(32)) {
            assert_eq!(*s, q.iter().map(|&v| i32::from(v)).sum::<i32>());
        }
        assert_eq!(
            d1.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            d2.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
        assert!(q1.iter().any(|&v| v != 0));
    }

    #[test]
    fn the_finiteness_check_finds_every_nan_and_infinity() {
        for len in [0, 1, 7, 8, 9, 31, 64, 77] {
            let x: Vec<f32> = (0..len).map(|i| (i as f32 - 30.0) * 1e36).collect();
            assert!(row_is_finite(&x), "{len}");
            assert!(x.iter().all(|v| v.is_finite()));
            for at in 0..len {
                for bad in [f32::NAN, -f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                    let mut y = x.clone();
                    y[at] = bad;
                    assert!(!row_is_finite(&y), "{len} {at} {bad}");
                }
                let mut y = x.clone();
                y[at] = f32::MAX;
                assert!(row_is_finite(&y));
            }
        }
    }

    #[test]
    fn rounding_matches_f32_round() {
        let mut t = -127.0f32;
        while t <= 127.0 {
            for v in [
                t,
                t.next_up(),
                t.next_down(),
                t + 0.5,
                (t + 0.5).next_up(),
                (t + 0.5).next_down(),
            ] {
                if v.abs() <= 127.0 {
                    assert_eq!(i32::from(round_away(v)), v.round() as i32, "{v}");
                }
            }
            t += 0.25;
        }
    }

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
        // Block sums, and zero rows up to the padding.
        let x: Vec<f32> = (0..3 * 40).map(|i| ((i * 7) % 13) as f32 - 6.0).collect();
        let a = ActQ8::quantize(&x, 3, 40);
        assert_eq!((a.rows, a.qs.len(), a.d.len(), a.sums.len()), (3, 4 * 64, 8, 8));
        for (s, q) in a.sums.iter().zip(a.qs.chunks_exact(32)) {
            assert_eq!(*s, q.iter().map(|&v| i32::from(v)).sum::<i32>());
        }
        assert!(a.sums[..6].iter().any(|&s| s != 0));
        assert!(a.qs[3 * 64..].iter().all(|&q| q == 0) && a.d[6..].iter().all(|&d| d == 0.0));
    }
}
