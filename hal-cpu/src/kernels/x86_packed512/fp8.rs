//! FP8 (E4M3, E5M2) on the exact path over 16-row panels: the codes decoded to f32 in
//! registers, f32 activations, FMA.

use std::arch::x86_64::{
    __m512, __m512i, _mm512_add_ps, _mm512_and_si512, _mm512_loadu_ps, _mm512_loadu_si512, _mm512_mul_ps,
    _mm512_set1_epi32, _mm512_set1_ps, _mm512_storeu_ps, _mm_prefetch, _MM_HINT_T0,
};

use super::super::panels::{row_groups, Isa, Kind, Packed};
use super::{block_ranges, ScaleWalk, K_BLOCKS, PREFETCH, ROWS};

/// Byte `T` of every 32-bit lane of `v` (FP8 codes) as f32 values times the lanes' scales.
///
/// The code's magnitude bits are placed under the f32 exponent and rebiased by a multiply
/// (`2^120` for E4M3, `2^112` for E5M2), which is exact for normal and subnormal codes alike;
/// with `SPECIAL`, NaN codes (and E5M2's infinities) are decoded too. The value is then
/// multiplied by the scale: the decode of the layout contract, `value(code) · scale`, rounded
/// once.
#[target_feature(enable = "avx512f")]
#[inline]
fn fp8_values<const T: u32, const E5M2: bool, const SPECIAL: bool>(v: __m512i, scale: __m512) -> __m512 {
    use std::arch::x86_64::{
        _mm512_castps_si512, _mm512_castsi512_ps, _mm512_cmpeq_epi32_mask, _mm512_cmpgt_epi32_mask,
        _mm512_mask_blend_ps, _mm512_or_si512, _mm512_slli_epi32, _mm512_srli_epi32,
    };
    // The code in bits 24..32: the sign where f32 keeps it.
    let top = match T {
        0 => _mm512_slli_epi32::<24>(v),
        1 => _mm512_slli_epi32::<16>(v),
        2 => _mm512_slli_epi32::<8>(v),
        _ => v,
    };
    let sign = _mm512_and_si512(top, _mm512_set1_epi32(i32::MIN));
    let mag = _mm512_srli_epi32::<24>(_mm512_and_si512(top, _mm512_set1_epi32(0x7F00_0000)));
    let f = if E5M2 {
        _mm512_mul_ps(
            _mm512_castsi512_ps(_mm512_slli_epi32::<21>(mag)),
            _mm512_set1_ps(f32::from_bits((127 + 112) << 23)),
        )
    } else {
        _mm512_mul_ps(
            _mm512_castsi512_ps(_mm512_slli_epi32::<20>(mag)),
            _mm512_set1_ps(f32::from_bits((127 + 120) << 23)),
        )
    };
    let f = if SPECIAL {
        if E5M2 {
            // 0x7C: infinity; 0x7D..=0x7F: NaN (the mantissa kept, quiet).
            let special = _mm512_cmpgt_epi32_mask(mag, _mm512_set1_epi32(0x7B));
            let bits = _mm512_or_si512(
                _mm512_set1_epi32(0x7F80_0000),
                _mm512_slli_epi32::<21>(_mm512_and_si512(mag, _mm512_set1_epi32(3))),
            );
            _mm512_mask_blend_ps(special, f, _mm512_castsi512_ps(bits))
        } else {
            // 0x7F: NaN (E4M3 has no infinities).
            let special = _mm512_cmpeq_epi32_mask(mag, _mm512_set1_epi32(0x7F));
            _mm512_mask_blend_ps(special, f, _mm512_castsi512_ps(_mm512_set1_epi32(0x7FC0_0000)))
        }
    } else {
        f
    };
    let f = _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(f), sign));
    _mm512_mul_ps(f, scale)
}

/// Blocks `b0 .. b1` of FP8 panel `p` against the f32 activation rows `row0 .. row0 + R` of
/// `x` (rows of `stride >= 32 * b1` values), added to `acc[16 r + j]`. Each row keeps two
/// accumulators (the even and the odd codes of a lane), so that one row is not held up by
/// the latency of a single FMA chain, and sums them into its total every [`K_BLOCKS`] blocks:
/// a row's result does not depend on how many rows share its pass, nor on the ranges
/// `b0 .. b1` the blocks are passed in, as long as they start at multiples of [`K_BLOCKS`].
///
/// # Safety
/// AVX-512 F is available; `p` is a panel of `w`, an FP8 layout for [`Isa::Avx512Vnni`] of
/// the format `E5M2` names; `x` holds rows `row0 .. row0 + R` of `stride` values with
/// `stride >= 32 * b1`; `b0 <= b1 <= w.nb`; `acc.len() >= 16 R`.
#[target_feature(enable = "avx512f,fma")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn fp8_rows<const E5M2: bool, const SPECIAL: bool, const R: usize>(
    w: &Packed,
    p: usize,
    x: &[f32],
    stride: usize,
    row0: usize,
    (b0, b1): (usize, usize),
    acc: &mut [f32],
) {
    use std::arch::x86_64::{_mm512_fmadd_ps, _mm512_setzero_ps};
    let nb = w.nb;
    assert!(b0 <= b1 && b1 <= nb && acc.len() >= R * ROWS && x.len() >= (row0 + R) * stride && stride >= 32 * b1);
    let codes = w.panel_codes(p);
    assert!(codes.len() >= 64 * 8 * b1);
    let scales = w.panel_scales(p);
    let bps = w.kind.blocks_per_scale(nb);
    let xs: [*const f32; R] = std::array::from_fn(|r| x[(row0 + r) * stride..].as_ptr());
    if b0 == b1 {
        return;
    }
    let mut sum = [_mm512_setzero_ps(); R];
    for (r, s) in sum.iter_mut().enumerate() {
        // SAFETY: acc holds R rows of 16 f32 (asserted above).
        *s = unsafe { _mm512_loadu_ps(acc.as_ptr().add(ROWS * r)) };
    }
    let mut a = [[_mm512_setzero_ps(); R]; 2];
    let cp = codes.as_ptr();
    // SAFETY: b0 < b1 <= nb, so every group the walk reads is below `groups`.
    let mut walk = unsafe { ScaleWalk::new([scales], bps, b0, b1) };
    for b in b0..b1 {
        // SAFETY: the blocks are visited in order, from b0, below b1.
        let [sw] = unsafe { walk.at(b) };
        for c in 0..8 {
            // SAFETY: chunk 8b + c of the panel lies inside `codes` (b < b1, asserted).
            let v = unsafe { _mm512_loadu_si512(cp.add(64 * (8 * b + c)).cast()) };
            _mm_prefetch::<_MM_HINT_T0>(cp.wrapping_add(64 * (8 * (b + PREFETCH) + c)).cast());
            let wv = [
                fp8_values::<0, E5M2, SPECIAL>(v, sw),
                fp8_values::<1, E5M2, SPECIAL>(v, sw),
                fp8_values::<2, E5M2, SPECIAL>(v, sw),
                fp8_values::<3, E5M2, SPECIAL>(v, sw),
            ];
            for (t, wt) in wv.into_iter().enumerate() {
                for r in 0..R {
                    // SAFETY: value 32b + 4c + t < 32 b1 <= stride lies in row row0 + r.
                    let xv = unsafe { xs[r].add(32 * b + 4 * c + t).read() };
                    a[t % 2][r] = _mm512_fmadd_ps(wt, _mm512_set1_ps(xv), a[t % 2][r]);
                }
            }
        }
        // Each run of K_BLOCKS blocks is summed on its own and added: the same additions
        // whether the caller passes over the blocks at once or K_BLOCKS at a time.
        let end = b + 1;
        if end.is_multiple_of(K_BLOCKS) || end == b1 {
            for r in 0..R {
                sum[r] = _mm512_add_ps(sum[r], _mm512_add_ps(a[0][r], a[1][r]));
                a[0][r] = _mm512_setzero_ps();
                a[1][r] = _mm512_setzero_ps();
            }
        }
    }
    for (r, o) in acc.chunks_exact_mut(ROWS).take(R).enumerate() {
        // SAFETY: `o` holds 16 f32.
        unsafe { _mm512_storeu_ps(o.as_mut_ptr(), sum[r]) };
    }
}

/// FP8 panel `p` against every f32 activation row of `x` (`m` rows of `stride` values, zero
/// past `K` up to `32 nb`), written to `y[16 i + j]`: 6 rows at a time, then 4, then the last
/// 1 to 3, in passes of [`K_BLOCKS`] blocks when there are more than 6 rows.
///
/// # Safety
/// AVX-512 F and FMA are available; as [`fp8_rows`] for every row; `y.len() >= 16 m`.
#[target_feature(enable = "avx512f,fma")]
unsafe fn fp8_all<const E5M2: bool, const SPECIAL: bool>(
    w: &Packed,
    p: usize,
    x: &[f32],
    stride: usize,
    m: usize,
    y: &mut [f32],
) {
    let acc = &mut y[..m * ROWS];
    acc.fill(0.0);
    for range in block_ranges::<1>(m, w.nb) {
        for (i0, rows) in row_groups(m) {
            let a = &mut acc[i0 * ROWS..];
            // SAFETY: forwarded from the caller; rows i0 .. i0 + rows exist and `a` holds
            // as many accumulators.
            unsafe {
                match rows {
                    6 => fp8_rows::<E5M2, SPECIAL, 6>(w, p, x, stride, i0, range, a),
                    4 => fp8_rows::<E5M2, SPECIAL, 4>(w, p, x, stride, i0, range, a),
                    3 => fp8_rows::<E5M2, SPECIAL, 3>(w, p, x, stride, i0, range, a),
                    2 => fp8_rows::<E5M2, SPECIAL, 2>(w, p, x, stride, i0, range, a),
                    _ => fp8_rows::<E5M2, SPECIAL, 1>(w, p, x, stride, i0, range, a),
                }
            }
        }
    }
}

/// FP8 panel `p` of `w` against the `m` f32 activation rows of `x` (rows of `stride >= 32 nb`
/// values, zero past `K`), written to `y[16 i + j]`.
///
/// # Panics
/// If `w` is not an FP8 layout for AVX-512 on a CPU that runs it, `p` is not one of its
/// panels, or `x` / `y` are shorter than said.
pub(crate) fn fp8_panel(w: &Packed, p: usize, x: &[f32], stride: usize, m: usize, y: &mut [f32]) {
    let Kind::Fp8 { e5m2, .. } = w.kind else {
        panic!("fp8_panel on a {:?} layout", w.kind);
    };
    assert!(w.isa == Isa::Avx512Vnni && crate::kernels::cpu().avx512_vnni);
    assert!(p < w.n.div_ceil(ROWS) && stride >= 32 * w.nb && x.len() >= m * stride && y.len() >= ROWS * m);
    // SAFETY: AVX-512 F and FMA were detected, and the shapes asserted, above.
    unsafe {
        match (e5m2, w.fp8_special) {
            (false, false) => fp8_all::<false, false>(w, p, x, stride, m, y),
            (false, true) => fp8_all::<false, true>(w, p, x, stride, m, y),
            (true, false) => fp8_all::<true, false>(w, p, x, stride, m, y),
            (true, true) => fp8_all::<true, true>(w, p, x, stride, m, y),
        }
    }
}
