//! `e^x` in SIMD lanes, without branches or libm: what softmax, SiLU and GELU exponentiate with.

/// `e^x` clamps its argument to `[EXP_LO, EXP_HI]`: below, `e^x` rounds to 0 (it is under
/// half the smallest subnormal, `e^-103.972`); above, it overflows (`e^88.723` is `f32::MAX`).
/// Both ends keep `n` (below) in `-150..=128`, so `2^n` splits into two normal factors.
const EXP_LO: f32 = -104.0;
const EXP_HI: f32 = 89.0;
/// `1.5 * 2^23`: adding it to a float of magnitude under `2^22` rounds that float to an
/// integer (to nearest), which then sits in the low bits of the sum's representation.
const ROUND_SHIFT: f32 = 12_582_912.0;
/// `ln 2` split in two: the high part keeps 15 significant bits (`0x3F31_7200`), so
/// `n * LN2_HI` is exact for `|n| ≤ 2^9`; the low part is `ln 2 - LN2_HI` rounded to f32.
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;
/// `q(r) ≈ (e^r - 1 - r) / r²` on `[-0.35, 0.35]` (which holds `|r| ≤ ln2/2`), highest degree
/// first: a degree-5 Chebyshev fit computed in 40-digit arithmetic (mpmath's `chebyfit`),
/// rounded to f32. `1 + r + r² q(r)` is then within 0.014 * 2^-24 of `e^r`, relatively (a
/// degree-4 fit, at 0.19 * 2^-24, left results up to 1.03 ulp from the exact value).
const EXP_Q: [f32; 6] = [
    1.989_197e-4,
    1.393_453_2e-3,
    8.333_310_5e-3,
    4.166_645_6e-2,
    0.166_666_67,
    0.5,
];

/// `e^x` in eight lanes, without branches or libm, so that it vectorizes (it is inlined into
/// each build of its callers). Within 1 ulp of libm's `expf` over all f32 (see the tests);
/// NaN gives NaN, `-inf` gives 0, `+inf` and `x > 88.723` give `+inf`, and results under
/// `f32::MIN_POSITIVE` are subnormal, rounded once, down to 0.
///
/// `x = n ln2 + r` with `n = round(x / ln2)`, `|r| ≤ ln2/2`; `e^x = 2^n e^r`, with `e^r` a
/// polynomial and `2^n` built from exponent bits as `2^(n/2) * 2^(n - n/2)`, so that overflow
/// and underflow happen in that last multiplication as IEEE rounds them.
// Inlined into each build (baseline, AVX2 + FMA): that is how it gets compiled for both.
#[allow(clippy::inline_always)]
#[inline(always)]
pub(super) fn exp8(x: [f32; 8]) -> [f32; 8] {
    exp_lanes(x)
}

/// [`exp8`] in `N` lanes: each lane computed alone, so any `N` gives the same bits.
// Inlined into each build (baseline, AVX2 + FMA, AVX-512): that is how it gets compiled for
// each.
#[allow(clippy::inline_always)]
#[inline(always)]
pub(super) fn exp_lanes<const N: usize>(x: [f32; N]) -> [f32; N] {
    let mut y = [0.0f32; N];
    for l in 0..N {
        // Comparisons with NaN are false: a NaN passes both clamps unchanged.
        let v = if x[l] < EXP_LO { EXP_LO } else { x[l] };
        let v = if v > EXP_HI { EXP_HI } else { v };
        let t = v * std::f32::consts::LOG2_E + ROUND_SHIFT;
        let n = t - ROUND_SHIFT;
        let r = (v - n * LN2_HI) - n * LN2_LO;
        let q = ((((EXP_Q[0] * r + EXP_Q[1]) * r + EXP_Q[2]) * r + EXP_Q[3]) * r + EXP_Q[4]) * r + EXP_Q[5];
        let p = 1.0 + (r + r * r * q);
        // `n` as an integer: the low bits of `t` (for NaN, garbage that NaN * anything hides).
        let k = (t.to_bits() as i32).wrapping_sub(ROUND_SHIFT.to_bits() as i32);
        let k1 = k >> 1;
        let k2 = k.wrapping_sub(k1);
        let s1 = f32::from_bits((k1.wrapping_add(127) << 23) as u32);
        let s2 = f32::from_bits((k2.wrapping_add(127) << 23) as u32);
        y[l] = p * s1 * s2;
    }
    y
}
