//! FP8 (E4M3, E5M2) on bf16 activations over 16-row panels (AVX-512 BF16): the codes looked
//! up as bf16, `vdpbf16ps`.
//!
//! Every FP8 value (E4M3 and E5M2, subnormals, infinities and NaN included) is a bf16 value
//! exactly, and the product of two bf16 values is an f32 exactly, so `vdpbf16ps` computes the
//! products of the codes' values and bf16 activations without rounding and adds them in f32;
//! the scale multiplies each group's sum. The only rounding besides the f32 additions is the
//! activations' own, to bf16. `vdpbf16ps` flushes subnormal inputs and results to zero, so
//! activation rows with a value it would mistreat (subnormal or tiny, or so large that a
//! product could overflow before the scale brings it back, or not finite) take the f32 kernel
//! ([`Bf16Act::exact_rows`]).

use std::arch::x86_64::{
    __m512i, _mm512_add_ps, _mm512_and_si512, _mm512_loadu_ps, _mm512_loadu_si512, _mm512_set1_epi32,
    _mm512_srli_epi16, _mm512_storeu_ps, _mm_prefetch, _MM_HINT_T0,
};

use super::super::panels::{row_groups, Isa, Kind, Packed};
use super::{block_ranges, ScaleWalk, K_BLOCKS, PREFETCH, ROWS};

/// The bf16 bits of the value of FP8 codes `0 .. 128` (the magnitudes; bit 7 is the sign), as
/// four vectors of 32 words (codes `32 t ..`).
fn fp8_bf16_table(e5m2: bool) -> &'static [[u16; 32]; 4] {
    use std::sync::OnceLock;
    fn build(values: &[f32; 256]) -> [[u16; 32]; 4] {
        std::array::from_fn(|t| {
            std::array::from_fn(|i| {
                let bits = values[32 * t + i].to_bits();
                // FP8 values have at most 3 significand bits: their low 16 bits are zero.
                debug_assert_eq!(bits & 0xFFFF, 0, "code {}", 32 * t + i);
                (bits >> 16) as u16
            })
        })
    }
    static E4M3: OnceLock<[[u16; 32]; 4]> = OnceLock::new();
    static E5M2: OnceLock<[[u16; 32]; 4]> = OnceLock::new();
    if e5m2 {
        E5M2.get_or_init(|| build(&aihal_quantize::fp8::E5M2_TABLE))
    } else {
        E4M3.get_or_init(|| build(&aihal_quantize::fp8::E4M3_TABLE))
    }
}

/// The bf16 value of each 16-bit lane's FP8 code (bits 0..8, the bits above zero), looked up
/// in `t` ([`fp8_bf16_table`]): two 64-entry permutes for the 128 magnitudes, the sign put
/// back from bit 7.
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
fn bf16_of_codes(idx: __m512i, t: &[__m512i; 4]) -> __m512i {
    use std::arch::x86_64::{
        _mm512_mask_blend_epi16, _mm512_permutex2var_epi16, _mm512_set1_epi16, _mm512_slli_epi16,
        _mm512_ternarylogic_epi32, _mm512_test_epi16_mask,
    };
    let low = _mm512_permutex2var_epi16(t[0], idx, t[1]);
    let high = _mm512_permutex2var_epi16(t[2], idx, t[3]);
    let v = _mm512_mask_blend_epi16(_mm512_test_epi16_mask(idx, _mm512_set1_epi16(0x40)), low, high);
    // v | (idx << 8) & 0x8000: the code's bit 7 is the sign bit of the bf16 word.
    _mm512_ternarylogic_epi32::<0xF8>(v, _mm512_slli_epi16::<8>(idx), _mm512_set1_epi16(i16::MIN))
}

/// Activation rows for [`fp8_bf16_panel`]: rounded to bf16 (to nearest, ties to even), zero
/// padded to whole blocks, and reordered within each group of 4 values as `x0 x2 x1 x3`, so
/// that the 32-bit pairs `(x0, x2)` and `(x1, x3)` meet the even and odd code bytes of a lane.
pub(crate) struct Bf16Act {
    /// `m` rows of `stride` bf16 values, two per word (the first in the low half).
    xb: Vec<u32>,
    stride: usize,
    m: usize,
    /// Rows the bf16 kernel must not take: a value not finite, above `2^64` or below `2^-64`
    /// in magnitude (and not zero). The caller runs the f32 kernel on them.
    pub(crate) exact_rows: Vec<bool>,
}

impl Bf16Act {
    /// The rows as stored (`m` rows of `stride` words).
    #[cfg(any(test, feature = "test-internals"))]
    pub(crate) fn bits(&self) -> Vec<u16> {
        self.xb.iter().flat_map(|&p| [p as u16, (p >> 16) as u16]).collect()
    }

    /// `x`: `m` rows of `k` values; `stride`: `32 nb >= k`.
    ///
    /// # Panics
    /// If the CPU has no AVX-512 BF16, `x` is shorter than `m k`, or `stride < k` or is not a
    /// multiple of 32.
    pub(crate) fn new(x: &[f32], m: usize, k: usize, stride: usize) -> Self {
        assert!(crate::kernels::cpu().avx512_bf16 && x.len() >= m * k && stride >= k && stride.is_multiple_of(32));
        let (big, tiny) = (2.0f32.powi(64), 2.0f32.powi(-64));
        let exact_rows: Vec<bool> = (0..m)
            .map(|i| {
                !x[i * k..(i + 1) * k].iter().all(|v| {
                    let a = v.abs();
                    a <= big && (a >= tiny || a == 0.0)
                })
            })
            .collect();
        let mut xb = vec![0u32; m * stride / 2];
        for (i, row) in xb.chunks_exact_mut(stride / 2).enumerate() {
            if !exact_rows[i] {
                // SAFETY: AVX-512 F/BW and BF16 were asserted above; `row` holds `stride >= k`
                // values, in pairs.
                unsafe { bf16_row(&x[i * k..(i + 1) * k], row) };
            }
        }
        Self {
            xb,
            stride,
            m,
            exact_rows,
        }
    }
}

/// `x` rounded to bf16 into the pairs of `out` (`2 out.len() >= x.len()`, a multiple of 32;
/// the rest left as it is), each group of 4 reordered `x0 x2 x1 x3`.
///
/// # Safety
/// AVX-512 F/BW and BF16 are available.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn bf16_row(x: &[f32], out: &mut [u32]) {
    use std::arch::x86_64::{
        _mm512_cvtne2ps_pbh, _mm512_maskz_loadu_ps, _mm512_permutexvar_epi16, _mm512_storeu_si512,
    };
    assert!(2 * out.len() >= x.len().next_multiple_of(32) && out.len().is_multiple_of(16));
    let order: [i16; 32] = std::array::from_fn(|i| (i - i % 4 + [0, 2, 1, 3][i % 4]) as i16);
    // SAFETY: `[i16; 32]` and `__m512i` have the same size, any bits are valid.
    let order: __m512i = unsafe { std::mem::transmute(order) };
    for (c, o) in x.chunks(32).zip(out.chunks_exact_mut(16)) {
        let lanes = |from: usize| -> u16 {
            let n = c.len().saturating_sub(from).min(16);
            ((1u32 << n) - 1) as u16
        };
        // SAFETY: the masked loads read only the `c.len()` values of the chunk (the mask
        // covers the values present); the store writes the 16 pairs of `o`.
        unsafe {
            let lo = _mm512_maskz_loadu_ps(lanes(0), c.as_ptr());
            let hi = _mm512_maskz_loadu_ps(lanes(16), c.as_ptr().wrapping_add(16));
            // Words 0..16 from `lo`, 16..32 from `hi`.
            let b: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
            _mm512_storeu_si512(o.as_mut_ptr().cast(), _mm512_permutexvar_epi16(order, b));
        }
    }
}

/// Blocks `b0 .. b1` of FP8 panel `p` against the bf16 activation rows `row0 .. row0 + R` of
/// `a`, added to `acc[16 r + j]`. Each row keeps two bf16 accumulators (even and odd code
/// bytes), added and scaled into `acc` at the end of each scale group and at each multiple of
/// [`K_BLOCKS`], so the result of a row does not depend on how many rows share its pass.
///
/// # Safety
/// AVX-512 F/BW, BF16 and FMA are available; `p` is a panel of `w`, an FP8 layout for
/// [`Isa::Avx512Vnni`]; `a` has rows `row0 .. row0 + R` of `a.stride >= 32 b1` values;
/// `b0 <= b1 <= w.nb`, `b0` a multiple of [`K_BLOCKS`] and `b1` one too or `w.nb`;
/// `acc.len() >= 16 R`.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16,fma")]
#[inline]
unsafe fn fp8_bf16_rows<const R: usize>(
    w: &Packed,
    p: usize,
    t: &[__m512i; 4],
    a: &Bf16Act,
    row0: usize,
    (b0, b1): (usize, usize),
    acc: &mut [f32],
) {
    use std::arch::x86_64::{__m512bh, _mm512_dpbf16_ps, _mm512_fmadd_ps, _mm512_set1_epi16, _mm512_setzero_ps};
    let nb = w.nb;
    let stride = a.stride;
    assert!(b0 <= b1 && b1 <= nb && acc.len() >= R * ROWS && row0 + R <= a.m && stride >= 32 * b1);
    if b0 == b1 {
        return;
    }
    let codes = w.panel_codes(p);
    assert!(codes.len() >= 64 * 8 * b1);
    let bps = w.kind.blocks_per_scale(nb);
    let xs: [*const u32; R] = std::array::from_fn(|r| a.xb[(row0 + r) * stride / 2..].as_ptr());
    let mut sum = [_mm512_setzero_ps(); R];
    for (r, s) in sum.iter_mut().enumerate() {
        // SAFETY: acc holds R rows of 16 f32 (asserted above).
        *s = unsafe { _mm512_loadu_ps(acc.as_ptr().add(ROWS * r)) };
    }
    let mut even = [_mm512_setzero_ps(); R];
    let mut odd = [_mm512_setzero_ps(); R];
    let cp = codes.as_ptr();
    let low_byte = _mm512_set1_epi16(0xFF);
    // SAFETY: b0 < b1 <= nb, so every group the walk reads is below `groups`.
    let mut walk = unsafe { ScaleWalk::new([w.panel_scales(p)], bps, b0, b1) };
    for b in b0..b1 {
        // SAFETY: the blocks are visited in order, from b0, below b1.
        let [sw] = unsafe { walk.at(b) };
        for c in 0..8 {
            // SAFETY: chunk 8b + c of the panel lies inside `codes` (b < b1, asserted).
            let v = unsafe { _mm512_loadu_si512(cp.add(64 * (8 * b + c)).cast()) };
            _mm_prefetch::<_MM_HINT_T0>(cp.wrapping_add(64 * (8 * (b + PREFETCH) + c)).cast());
            // SAFETY: `__m512i` and `__m512bh` are 64-byte vectors, any bits valid.
            let we: __m512bh = unsafe { std::mem::transmute(bf16_of_codes(_mm512_and_si512(v, low_byte), t)) };
            // SAFETY: as above.
            let wo: __m512bh = unsafe { std::mem::transmute(bf16_of_codes(_mm512_srli_epi16::<8>(v), t)) };
            for r in 0..R {
                // SAFETY: values 32b + 4c .. + 4 < 32 b1 <= stride (pairs 16b + 2c and the
                // next) lie in row row0 + r; the vector types are as above.
                let (xe, xo) = unsafe {
                    let q = xs[r].add(16 * b + 2 * c);
                    (
                        std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(q.read() as i32)),
                        std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(q.add(1).read() as i32)),
                    )
                };
                even[r] = _mm512_dpbf16_ps(even[r], we, xe);
                odd[r] = _mm512_dpbf16_ps(odd[r], wo, xo);
            }
        }
        let end = b + 1;
        if end.is_multiple_of(bps) || end.is_multiple_of(K_BLOCKS) || end == nb {
            for r in 0..R {
                sum[r] = _mm512_fmadd_ps(_mm512_add_ps(even[r], odd[r]), sw, sum[r]);
                even[r] = _mm512_setzero_ps();
                odd[r] = _mm512_setzero_ps();
            }
        }
    }
    for (r, o) in acc.chunks_exact_mut(ROWS).take(R).enumerate() {
        // SAFETY: `o` holds 16 f32.
        unsafe { _mm512_storeu_ps(o.as_mut_ptr(), sum[r]) };
    }
}

/// FP8 panel `p` of `w` against every bf16 activation row of `a`, written to `y[16 i + j]`
/// (rows of [`Bf16Act::exact_rows`] included, with meaningless values the caller replaces):
/// 6 rows at a time, then 4, then the last 1 to 3, in passes of [`K_BLOCKS`] blocks when there
/// are more than 6 rows.
///
/// # Panics
/// If `w` is not an FP8 layout for AVX-512 on a CPU with AVX-512 BF16 and FMA, `p` is not one
/// of its panels, `a` was not made for `w` (`stride = 32 nb`), or `y` is shorter than `16 m`.
pub(crate) fn fp8_bf16_panel(w: &Packed, p: usize, a: &Bf16Act, y: &mut [f32]) {
    assert!(
        matches!(w.kind, Kind::Fp8 { .. }),
        "fp8_bf16_panel on a {:?} layout",
        w.kind
    );
    let Kind::Fp8 { e5m2, .. } = w.kind else { unreachable!() };
    assert!(w.isa == Isa::Avx512Vnni && crate::kernels::cpu().avx512_bf16);
    let m = a.m;
    assert!(p < w.n.div_ceil(ROWS) && a.stride == 32 * w.nb && y.len() >= ROWS * m);
    // SAFETY: AVX-512 F/BW, BF16 and FMA were detected, and the shapes asserted, above.
    unsafe { fp8_bf16_all(w, p, fp8_bf16_table(e5m2), a, &mut y[..m * ROWS]) }
}

/// # Safety
/// As [`fp8_bf16_panel`] after its checks; `acc.len() == 16 a.m`.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16,fma")]
unsafe fn fp8_bf16_all(w: &Packed, p: usize, table: &[[u16; 32]; 4], a: &Bf16Act, acc: &mut [f32]) {
    // SAFETY: `[u16; 32]` and `__m512i` have the same size, any bits are valid.
    let t: [__m512i; 4] = unsafe { std::mem::transmute(*table) };
    acc.fill(0.0);
    let m = a.m;
    for range in block_ranges::<1>(m, w.nb) {
        for (i0, rows) in row_groups(m) {
            let part = &mut acc[i0 * ROWS..];
            // SAFETY: forwarded from the caller; rows i0 .. i0 + rows exist and `part` holds
            // as many accumulators; `range` starts at a multiple of K_BLOCKS and ends at one or
            // at nb.
            unsafe {
                match rows {
                    6 => fp8_bf16_rows::<6>(w, p, &t, a, i0, range, part),
                    4 => fp8_bf16_rows::<4>(w, p, &t, a, i0, range, part),
                    3 => fp8_bf16_rows::<3>(w, p, &t, a, i0, range, part),
                    2 => fp8_bf16_rows::<2>(w, p, &t, a, i0, range, part),
                    _ => fp8_bf16_rows::<1>(w, p, &t, a, i0, range, part),
                }
            }
        }
    }
}
