//! The small transformer ops, fast: rows (or heads) in parallel with rayon, inner loops in
//! 8 independent lanes so that the compiler vectorizes them. The norms, softmax, SiLU, GELU
//! and the attention are compiled twice, for the build target and for AVX2 + FMA, and the
//! second runs where the CPU has them (chosen once per process): the same code and the same
//! order of operations (no contraction into FMA), so the results are the same bits either
//! way. Where it runs, x86 gets the 8 lanes as one AVX2 register; without it, two SSE2
//! registers; aarch64 two NEON registers (checked in the disassembly of a release build:
//! no libm call in those loops).
//!
//! Softmax (also inside [`attention`]), SiLU and GELU take `e^x` from `exp8`, a branch-free
//! f32 `exp` in 8 lanes rather than libm's `expf` per value (which kept them scalar): within
//! 1 ulp of libm's `expf` and 0.951 ulp of the exact value over every f32 (tested
//! exhaustively; NaN, the infinities, overflow and underflow through the subnormals as IEEE
//! `exp` gives them). GELU (tanh form) is computed as `x / (1 + exp(-2u))`, equal to the
//! reference's `0.5 x (1 + tanh u)`, `u = √(2/π) (x + 0.044715 x³)`, without its cancellation
//! where `tanh u` is near -1.
//!
//! Same signatures and semantics as the [`aihal_reference`] ops (softmax's
//! masked, NaN and `+inf` rows included), up to the order of f32 additions and the last bits
//! of `exp`. The tests state and check the bound per op (`U = 2^-24`): SiLU `6U` relatively,
//! GELU `8U` relatively plus `2U |x|` (the reference's own error near -1), softmax
//! `(2 dim + 6) U` relatively; for each, 1e-36 absolutely (SiLU, GELU) or `f32::MIN_POSITIVE`
//! (softmax) where results are near or under the smallest normal.
//!
//! Results do not depend on the number of threads: each row (or chunk of an elementwise op)
//! is computed by one task in a fixed order. How these ops compare with candle's is in the
//! crate README's performance section (`cargo bench --bench ops`).

#[cfg(target_arch = "x86_64")]
use std::sync::OnceLock;

use aihal_core::Result;
use rayon::prelude::*;

use crate::pool::for_chunks;
use aihal_reference::{self as reference, AttentionMask, AttentionShape, RopeStyle};

/// Whether the AVX2 + FMA builds of the ops' loops run here (detected once).
#[cfg(target_arch = "x86_64")]
fn wide() -> bool {
    static WIDE: OnceLock<bool> = OnceLock::new();
    *WIDE.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
}

/// `$wide`: `$f` compiled with AVX2 and FMA; `$best`: that where the CPU has them, else `$f`.
macro_rules! with_avx2 {
    ($f:ident, $wide:ident, $best:ident, ($($a:ident: $t:ty),* $(,)?)) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        fn $wide($($a: $t),*) {
            $f($($a),*)
        }

        fn $best($($a: $t),*) {
            #[cfg(target_arch = "x86_64")]
            if wide() {
                // SAFETY: AVX2 and FMA were detected (`wide`).
                return unsafe { $wide($($a),*) };
            }
            $f($($a),*)
        }
    };
}

/// Rows per rayon task: enough work to amortise a task.
fn rows_per_task(dim: usize) -> usize {
    (16 * 1024 / dim.max(1)).max(1)
}

/// `Σ a[i] * b[i]` in 8 lanes, then the lanes summed in order.
// Inlined into each build (baseline, AVX2 + FMA): that is how it gets compiled for both.
#[allow(clippy::inline_always)]
#[inline(always)]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ac, ar) = a.split_at(a.len() / 8 * 8);
    let (bc, br) = b.split_at(ac.len());
    for (x, y) in ac.chunks_exact(8).zip(bc.chunks_exact(8)) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s = acc.iter().sum::<f32>();
    for (x, y) in ar.iter().zip(br) {
        s += x * y;
    }
    s
}

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
pub(crate) fn exp8(x: [f32; 8]) -> [f32; 8] {
    exp_lanes(x)
}

/// [`exp8`] in `N` lanes: each lane computed alone, so any `N` gives the same bits.
// Inlined into each build (baseline, AVX2 + FMA, AVX-512): that is how it gets compiled for
// each.
#[allow(clippy::inline_always)]
#[inline(always)]
fn exp_lanes<const N: usize>(x: [f32; N]) -> [f32; N] {
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

/// `$y[i] = $f($x[i])` eight lanes at a time (`$f` takes and gives `[f32; 8]`); the last
/// partial chunk is padded with `$pad`. A macro, so that `$f` (`#[inline(always)]`) is
/// called directly and inlined into each build: passed as a function value, it stayed an
/// out-of-line call in the aarch64 build, and could in the AVX2 one (compiled for the
/// baseline target there).
macro_rules! map8 {
    ($y:expr, $x:expr, $pad:expr, $f:ident) => {
        map_lanes!($y, $x, $pad, $f, 8)
    };
}

/// [`map8!`] `$n` lanes at a time, `$f` taking and giving `[f32; $n]`.
macro_rules! map_lanes {
    ($y:expr, $x:expr, $pad:expr, $f:ident, $n:expr) => {{
        let (y, x): (&mut [f32], &[f32]) = ($y, $x);
        let whole = x.len() / $n * $n;
        let (xc, xr) = x.split_at(whole);
        let (yc, yr) = y[..x.len()].split_at_mut(whole);
        for (o, i) in yc.chunks_exact_mut($n).zip(xc.chunks_exact($n)) {
            let mut a = [0.0f32; $n];
            a.copy_from_slice(i);
            o.copy_from_slice(&$f(a));
        }
        if !xr.is_empty() {
            let mut a = [$pad; $n];
            a[..xr.len()].copy_from_slice(xr);
            yr.copy_from_slice(&$f(a)[..xr.len()]);
        }
    }};
}

/// Whether the AVX-512 builds of the elementwise ops run here (detected once).
#[cfg(target_arch = "x86_64")]
fn wide512() -> bool {
    static WIDE: OnceLock<bool> = OnceLock::new();
    *WIDE.get_or_init(|| wide() && is_x86_feature_detected!("avx512f"))
}

/// For an elementwise op given in lanes (`$lanes`, any `N`): `$base`, the op over a slice in
/// 8 lanes (the baseline build), `$wide` and `$wide512`, its AVX2 + FMA (8 lanes) and AVX-512
/// (16 lanes) builds, and `$best`, the widest the CPU runs. Each element is computed alone, so
/// the three give the same bits (tested).
macro_rules! elementwise {
    ($lanes:ident => $base:ident, $wide:ident, $wide512:ident, $best:ident) => {
        #[allow(clippy::inline_always)]
        #[inline(always)]
        fn $base(y: &mut [f32], x: &[f32]) {
            map8!(y, x, 0.0, $lanes);
        }

        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        fn $wide(y: &mut [f32], x: &[f32]) {
            $base(y, x)
        }

        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx512f,avx2,fma")]
        fn $wide512(y: &mut [f32], x: &[f32]) {
            map_lanes!(y, x, 0.0, $lanes, 16);
        }

        fn $best(y: &mut [f32], x: &[f32]) {
            #[cfg(target_arch = "x86_64")]
            if wide512() {
                // SAFETY: AVX-512 F, AVX2 and FMA were detected (`wide512`).
                return unsafe { $wide512(y, x) };
            }
            #[cfg(target_arch = "x86_64")]
            if wide() {
                // SAFETY: AVX2 and FMA were detected (`wide`).
                return unsafe { $wide(y, x) };
            }
            $base(y, x)
        }
    };
}

/// RMSNorm, as [`reference::rms_norm`].
pub fn rms_norm(x: &[f32], dim: usize, weight: &[f32], eps: f32) -> Result<Vec<f32>> {
    // Validation (and the error messages) are the reference's; an empty input costs nothing.
    reference::rms_norm(&[], dim, weight, eps)?;
    reference::rows_of("rms_norm", x.len(), dim)?;
    let mut y = vec![0.0f32; x.len()];
    for_chunks(&mut y, x, dim * rows_per_task(dim), |yc, xc| {
        rms_rows_best(yc, xc, dim, weight, eps);
    });
    Ok(y)
}

/// RMSNorm of the rows of `xc` into `yc`.
// Inlined into each build (baseline, AVX2 + FMA): that is how it gets compiled for both.
#[allow(clippy::inline_always)]
#[inline(always)]
fn rms_rows(yc: &mut [f32], xc: &[f32], dim: usize, weight: &[f32], eps: f32) {
    for (yr, xr) in yc.chunks_exact_mut(dim).zip(xc.chunks_exact(dim)) {
        let inv = 1.0 / (dot(xr, xr) / dim as f32 + eps).sqrt();
        for ((o, &v), &g) in yr.iter_mut().zip(xr).zip(weight) {
            *o = v * inv * g;
        }
    }
}
with_avx2!(rms_rows, rms_rows_avx2, rms_rows_best, (yc: &mut [f32], xc: &[f32], dim: usize, weight: &[f32], eps: f32));

/// LayerNorm, as [`reference::layer_norm`].
pub fn layer_norm(x: &[f32], dim: usize, weight: &[f32], bias: Option<&[f32]>, eps: f32) -> Result<Vec<f32>> {
    reference::layer_norm(&[], dim, weight, bias, eps)?;
    reference::rows_of("layer_norm", x.len(), dim)?;
    let mut y = vec![0.0f32; x.len()];
    for_chunks(&mut y, x, dim * rows_per_task(dim), |yc, xc| {
        layer_rows_best(yc, xc, dim, weight, bias, eps);
    });
    Ok(y)
}

/// LayerNorm of the rows of `xc` into `yc`.
// Inlined into each build (baseline, AVX2 + FMA): that is how it gets compiled for both.
#[allow(clippy::inline_always)]
#[inline(always)]
fn layer_rows(yc: &mut [f32], xc: &[f32], dim: usize, weight: &[f32], bias: Option<&[f32]>, eps: f32) {
    for (yr, xr) in yc.chunks_exact_mut(dim).zip(xc.chunks_exact(dim)) {
        let ones = [1.0f32; 8];
        let sum: f32 = xr.chunks(8).map(|c| dot(c, &ones[..c.len()])).sum();
        let mean = sum / dim as f32;
        for (o, &v) in yr.iter_mut().zip(xr) {
            *o = v - mean;
        }
        let inv = 1.0 / (dot(yr, yr) / dim as f32 + eps).sqrt();
        for (i, o) in yr.iter_mut().enumerate() {
            *o = *o * inv * weight[i] + bias.map_or(0.0, |b| b[i]);
        }
    }
}
with_avx2!(layer_rows, layer_rows_avx2, layer_rows_best, (
    yc: &mut [f32], xc: &[f32], dim: usize, weight: &[f32], bias: Option<&[f32]>, eps: f32
));

/// Softmax over rows, as [`reference::softmax`] (rows in parallel, `exp8` for `exp`).
pub fn softmax(x: &[f32], dim: usize) -> Result<Vec<f32>> {
    reference::rows_of("softmax", x.len(), dim)?;
    let mut y = vec![0.0f32; x.len()];
    for_chunks(&mut y, x, dim * rows_per_task(dim), |yc, xc| {
        softmax_rows_best(yc, xc, dim);
    });
    Ok(y)
}

/// Softmax of the rows of `xc` into `yc`.
// Inlined into each build (baseline, AVX2 + FMA): that is how it gets compiled for both.
#[allow(clippy::inline_always)]
#[inline(always)]
fn softmax_rows(yc: &mut [f32], xc: &[f32], dim: usize) {
    for (yr, xr) in yc.chunks_exact_mut(dim).zip(xc.chunks_exact(dim)) {
        softmax_row(xr, yr);
    }
}

/// [`softmax_rows`] built for AVX2 + FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn softmax_rows_avx2(yc: &mut [f32], xc: &[f32], dim: usize) {
    softmax_rows(yc, xc, dim);
}

/// [`softmax_rows`] built for AVX-512, its exponentials 16 at a time (the same bits).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
fn softmax_rows_avx512(yc: &mut [f32], xc: &[f32], dim: usize) {
    for (yr, xr) in yc.chunks_exact_mut(dim).zip(xc.chunks_exact(dim)) {
        softmax_row_lanes::<16>(xr, yr);
    }
}

/// The widest build of [`softmax_rows`] the CPU runs.
fn softmax_rows_best(yc: &mut [f32], xc: &[f32], dim: usize) {
    #[cfg(target_arch = "x86_64")]
    if wide512() {
        // SAFETY: AVX-512 F, AVX2 and FMA were detected (`wide512`).
        return unsafe { softmax_rows_avx512(yc, xc, dim) };
    }
    #[cfg(target_arch = "x86_64")]
    if wide() {
        // SAFETY: AVX2 and FMA were detected (`wide`).
        return unsafe { softmax_rows_avx2(yc, xc, dim) };
    }
    softmax_rows(yc, xc, dim);
}

/// One softmax row into `y` (as long as `row`), with the reference's semantics: the row's
/// maximum subtracted, a row of `-inf` (all masked) all zeros, a NaN or `+inf` in the row a
/// row of NaN. The sum is taken in 8 lanes, then the lanes in order.
// Inlined into each build (baseline, AVX2 + FMA): that is how it gets compiled for both.
#[allow(clippy::inline_always)]
#[inline(always)]
fn softmax_row(row: &[f32], y: &mut [f32]) {
    softmax_row_lanes::<8>(row, y);
}

/// [`softmax_row`] with its exponentials taken `E` (8 or 16) at a time. The sum stays in 8
/// lanes, each lane adding its values in the order of the row whatever `E` is (a chunk of 16
/// adds its first 8 values, then its last 8), so every `E` gives the same bits.
// Inlined into each build: that is how it gets compiled for each.
#[allow(clippy::inline_always)]
#[inline(always)]
fn softmax_row_lanes<const E: usize>(row: &[f32], y: &mut [f32]) {
    // The maximum ignoring NaN (a comparison with NaN is false); NaN is caught below.
    let mut lanes = [f32::NEG_INFINITY; 8];
    let (rc, rr) = row.split_at(row.len() / 8 * 8);
    for c in rc.chunks_exact(8) {
        for l in 0..8 {
            lanes[l] = if c[l] > lanes[l] { c[l] } else { lanes[l] };
        }
    }
    let max = lanes
        .iter()
        .chain(rr)
        .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
    if max == f32::NEG_INFINITY {
        let fill = if row.iter().any(|v| v.is_nan()) { f32::NAN } else { 0.0 };
        y.fill(fill);
        return;
    }
    // `exp(v - max)` and its sum in 8 lanes; the padding `-inf` of a partial chunk gives 0.
    let mut acc = [0.0f32; 8];
    let (yc, yr) = y.split_at_mut(rc.len());
    let wide = if E == 16 { rc.len() / 16 * 16 } else { 0 };
    let (yw, yc) = yc.split_at_mut(wide);
    let (rw, rc) = rc.split_at(wide);
    for (o, c) in yw.chunks_exact_mut(16).zip(rw.chunks_exact(16)) {
        let mut d = [0.0f32; 16];
        for l in 0..16 {
            d[l] = c[l] - max;
        }
        let e = exp_lanes(d);
        for l in 0..8 {
            acc[l] += e[l];
        }
        for l in 0..8 {
            acc[l] += e[8 + l];
        }
        o.copy_from_slice(&e);
    }
    for (o, c) in yc.chunks_exact_mut(8).zip(rc.chunks_exact(8)) {
        let mut d = [0.0f32; 8];
        for l in 0..8 {
            d[l] = c[l] - max;
        }
        let e = exp8(d);
        for l in 0..8 {
            acc[l] += e[l];
        }
        o.copy_from_slice(&e);
    }
    if !rr.is_empty() {
        let mut d = [f32::NEG_INFINITY; 8];
        for (d, &v) in d.iter_mut().zip(rr) {
            *d = v - max;
        }
        let e = exp8(d);
        for l in 0..8 {
            acc[l] += e[l];
        }
        yr.copy_from_slice(&e[..rr.len()]);
    }
    let sum = acc.iter().sum::<f32>();
    // A NaN in the row, or a `+inf` (`inf - inf`), made the sum NaN: the row is NaN.
    if sum.is_nan() {
        y.fill(f32::NAN);
        return;
    }
    let inv = 1.0 / sum;
    for v in y.iter_mut() {
        *v *= inv;
    }
}

/// Values per task of the elementwise ops.
const ELEMENTS_PER_TASK: usize = 16 * 1024;

/// `op` over `x` into a new vector, [`ELEMENTS_PER_TASK`] values per task.
fn map_parallel(x: &[f32], op: fn(&mut [f32], &[f32])) -> Vec<f32> {
    let mut y = vec![0.0f32; x.len()];
    for_chunks(&mut y, x, ELEMENTS_PER_TASK, op);
    y
}

/// SiLU, as [`reference::silu`]: `x / (1 + exp(-x))` with `exp8`, in parallel.
pub fn silu(x: &[f32]) -> Vec<f32> {
    map_parallel(x, silu_into_best)
}

/// `x / (1 + exp(-x))` in `N` lanes.
// Inlined into each build: that is how it gets compiled for each.
#[allow(clippy::inline_always)]
#[inline(always)]
fn silu_lanes<const N: usize>(x: [f32; N]) -> [f32; N] {
    let mut m = [0.0f32; N];
    for l in 0..N {
        m[l] = -x[l];
    }
    over_one_plus_exp(x, m)
}

/// `x / (1 + exp(m))` lane by lane: SiLU and GELU's last step.
// Inlined into each build: that is how it gets compiled for each.
#[allow(clippy::inline_always)]
#[inline(always)]
fn over_one_plus_exp<const N: usize>(x: [f32; N], m: [f32; N]) -> [f32; N] {
    let e = exp_lanes(m);
    let mut y = [0.0f32; N];
    for l in 0..N {
        y[l] = x[l] / (1.0 + e[l]);
    }
    y
}

// SiLU over a slice: `silu_into` (baseline), its AVX2 and AVX-512 builds, and the widest.
elementwise!(silu_lanes => silu_into, silu_into_avx2, silu_into_avx512, silu_into_best);

/// GELU (tanh approximation), as [`reference::gelu`], in parallel: computed as
/// `x / (1 + exp(-2u))` with `u = √(2/π) (x + 0.044715 x³)` and `exp8`, which equals
/// `0.5 x (1 + tanh u)` and has no cancellation where `tanh u` is near -1.
pub fn gelu(x: &[f32]) -> Vec<f32> {
    map_parallel(x, gelu_into_best)
}

/// `x / (1 + exp(-2u))`, `u = √(2/π) (x + 0.044715 x³)`, in `N` lanes.
// Inlined into each build: that is how it gets compiled for each.
#[allow(clippy::inline_always)]
#[inline(always)]
fn gelu_lanes<const N: usize>(x: [f32; N]) -> [f32; N] {
    // `-2 √(2/π)`: the reference's f32 constant doubled (exact), so `-2u` rounds as `u` does.
    const MINUS_2_SQRT_2_OVER_PI: f32 = -2.0 * 0.797_884_6;
    let mut m = [0.0f32; N];
    for l in 0..N {
        m[l] = MINUS_2_SQRT_2_OVER_PI * (x[l] + 0.044_715 * x[l] * x[l] * x[l]);
    }
    over_one_plus_exp(x, m)
}

// GELU over a slice, in the same builds.
elementwise!(gelu_lanes => gelu_into, gelu_into_avx2, gelu_into_avx512, gelu_into_best);

/// GELU in its erf form, as [`reference::gelu_erf`], in parallel and in SIMD lanes: `erf` by
/// Abramowitz and Stegun's rational approximation 7.1.26 (absolute error at most 1.5e-7) with
/// the vectorized `exp`, so each value is within `7.5e-8 |x|` (plus f32 rounding) of exact
/// GELU. Computed without cancellation for negative `x`: there GELU is
/// `0.5 x · p(t) · exp(-x²/2)`, the tail that `1 + erf` would lose.
pub fn gelu_erf(x: &[f32]) -> Vec<f32> {
    map_parallel(x, gelu_erf_into_best)
}

/// GELU (erf form) in `N` lanes: `t = 1 / (1 + 0.3275911 |z|)`, `z = x / √2`,
/// `c = 0.5 · p(t) · e^(-z²)` with A&S 7.1.26's polynomial `p`, so that
/// `0.5 (1 + erf z)` is `1 - c` for `x ≥ 0` and `c` for `x < 0`.
// Inlined into each build: that is how it gets compiled for each.
#[allow(clippy::inline_always)]
#[inline(always)]
fn gelu_erf_lanes<const N: usize>(x: [f32; N]) -> [f32; N] {
    const A: [f32; 5] = [0.254_829_6, -0.284_496_74, 1.421_413_8, -1.453_152_1, 1.061_405_4];
    let mut m = [0.0f32; N];
    let mut t = [0.0f32; N];
    for l in 0..N {
        let z = x[l] * std::f32::consts::FRAC_1_SQRT_2;
        m[l] = -(z * z);
        t[l] = 1.0 / (1.0 + 0.327_591_1 * z.abs());
    }
    let e = exp_lanes(m);
    let mut y = [0.0f32; N];
    for l in 0..N {
        let tl = t[l];
        let p = tl * (A[0] + tl * (A[1] + tl * (A[2] + tl * (A[3] + tl * A[4]))));
        let c = 0.5 * p * e[l];
        // NaN fails the comparison and takes the second arm, where NaN * anything is NaN.
        y[l] = if x[l] >= 0.0 { x[l] * (1.0 - c) } else { x[l] * c };
    }
    y
}

// GELU (erf form) over a slice, in the same builds.
elementwise!(gelu_erf_lanes => gelu_erf_into, gelu_erf_into_avx2, gelu_erf_into_avx512, gelu_erf_into_best);

/// Rotary embedding, as [`reference::rope`]: the sine/cosine table is computed once per
/// position, tokens in parallel.
pub fn rope(x: &[f32], n_heads: usize, head_dim: usize, pos0: usize, theta: f32, style: RopeStyle) -> Result<Vec<f32>> {
    reference::rope(&[], n_heads, head_dim, pos0, theta, style)?;
    let row = n_heads * head_dim;
    reference::rows_of("rope", x.len(), row.max(1))?;
    let half = head_dim / 2;
    let mut y = x.to_vec();
    y.par_chunks_mut(row.max(1)).enumerate().for_each(|(s, yr)| {
        let pos = (pos0 + s) as f64;
        let table: Vec<(f32, f32)> = (0..half)
            .map(|i| reference::rope_angle(pos, i, head_dim, theta))
            .collect();
        for head in yr.chunks_exact_mut(head_dim) {
            for (i, &(sin, cos)) in table.iter().enumerate() {
                let (ia, ib) = match style {
                    RopeStyle::Half => (i, i + half),
                    RopeStyle::Interleaved => (2 * i, 2 * i + 1),
                };
                let (a, b) = (head[ia], head[ib]);
                head[ia] = a * cos - b * sin;
                head[ib] = a * sin + b * cos;
            }
        }
    });
    Ok(y)
}

/// Causal GQA attention for batch 1, as [`reference::attention`]: one task per (query row,
/// head), dot products in 8 lanes.
pub fn attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    kv_len: usize,
    shape: AttentionShape,
    scale: Option<f32>,
) -> Result<Vec<f32>> {
    attention_masked(q, k, v, kv_len, shape, scale, AttentionMask::Causal)
}

/// GQA attention for batch 1 with the key range of each query row given by `mask`, as
/// [`reference::attention_masked`] (same sums in the same order as [`attention`]).
pub fn attention_masked(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    kv_len: usize,
    shape: AttentionShape,
    scale: Option<f32>,
    mask: AttentionMask,
) -> Result<Vec<f32>> {
    let q_len = reference::check_attention(q, k, v, kv_len, shape)?;
    mask.check(kv_len)?;
    let AttentionShape {
        n_heads,
        n_kv_heads,
        head_dim: d,
    } = shape;
    let scale = scale.unwrap_or(1.0 / (d as f32).sqrt());
    let group = n_heads / n_kv_heads;
    let mut out = vec![0.0f32; q_len * n_heads * d];
    let geometry = Geometry {
        n_heads,
        n_kv_heads,
        group,
        d,
        q_len,
        kv_len,
        scale,
        mask,
    };
    // A task takes the query heads of one row that share a key/value head (each key and value
    // row is then read once for all of them), halved while that would leave fewer than two
    // tasks per thread (a decode step over few key/value heads).
    let threads = rayon::current_num_threads().max(1);
    let mut heads = group;
    while heads % 2 == 0 && q_len * n_heads / heads < 2 * threads {
        heads /= 2;
    }
    // (Rayon's adaptive splitting here, not `crate::pool`: causal rows differ in cost, and
    // whole-range tasks measured 10 % to 20 % slower.)
    out.par_chunks_mut(heads * d)
        .enumerate()
        .for_each(|(c, o)| attend_best(o, c * heads, q, k, v, geometry));
    Ok(out)
}

/// The shape of one attention call, as [`attend`] needs it.
#[derive(Clone, Copy)]
struct Geometry {
    n_heads: usize,
    n_kv_heads: usize,
    group: usize,
    d: usize,
    q_len: usize,
    kv_len: usize,
    scale: f32,
    mask: AttentionMask,
}

/// The outputs `o` (`o.len() / d` heads) of query row `t` and heads `h ..` (where
/// `th = t * n_heads + h`), all of the same key/value head. Each head's sums are those of one
/// head alone, in the same order: the heads only share the reads of the key and value rows.
// Inlined into each build (baseline, AVX2 + FMA): that is how it gets compiled for both.
#[allow(clippy::inline_always)]
#[inline(always)]
fn attend(o: &mut [f32], th: usize, q: &[f32], k: &[f32], v: &[f32], g: Geometry) {
    let (t, h) = (th / g.n_heads, th % g.n_heads);
    let (d, n_kv_heads) = (g.d, g.n_kv_heads);
    let heads = o.len() / d;
    let kvh = h / g.group;
    debug_assert!(heads >= 1 && (h + heads - 1) / g.group == kvh);
    let range = g.mask.visible(t, g.q_len, g.kv_len);
    let (first, visible) = (range.start, range.len());
    let qs = &q[th * d..(th + heads) * d];
    // scores[e * visible + j]: head h + e against key first + j.
    let mut scores = vec![0.0f32; heads * visible];
    for j in 0..visible {
        let kr = &k[((first + j) * n_kv_heads + kvh) * d..][..d];
        for (e, qv) in qs.chunks_exact(d).enumerate() {
            scores[e * visible + j] = dot(qv, kr) * g.scale;
        }
    }
    let mut probs = vec![0.0f32; heads * visible];
    for (sr, pr) in scores.chunks_exact(visible).zip(probs.chunks_exact_mut(visible)) {
        softmax_row(sr, pr);
    }
    for j in 0..visible {
        let vv = &v[((first + j) * n_kv_heads + kvh) * d..][..d];
        for (e, oe) in o.chunks_exact_mut(d).enumerate() {
            let p = probs[e * visible + j];
            for (od, &vd) in oe.iter_mut().zip(vv) {
                *od += p * vd;
            }
        }
    }
}
with_avx2!(attend, attend_avx2, attend_best, (o: &mut [f32], th: usize, q: &[f32], k: &[f32], v: &[f32], g: Geometry));

/// The checks of the ops' x86 builds against the baseline build, run once per build by
/// `tests/isa.rs` (the builds this CPU lacks reported as ignored), and the test inputs the unit
/// tests share with them.
#[cfg(any(test, feature = "test-internals"))]
pub(crate) mod checks {
    #[allow(clippy::wildcard_imports)] // the builds under test, as the unit tests take them
    use super::*;

    // `exp8` over a slice, in every build.
    elementwise!(exp_lanes => exp_into, exp_into_avx2, exp_into_avx512, exp_into_best);

    /// `exp8` over `x` in the widest build this CPU runs (what the ops run), for the unit tests.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(super) fn exp_best(y: &mut [f32], x: &[f32]) {
        exp_into_best(y, x);
    }

    /// An elementwise op: its name, its baseline build, its AVX2 and its AVX-512 builds.
    #[cfg(target_arch = "x86_64")]
    type Builds = (
        &'static str,
        fn(&mut [f32], &[f32]),
        unsafe fn(&mut [f32], &[f32]),
        unsafe fn(&mut [f32], &[f32]),
    );

    /// The exp-based ops in every build.
    #[cfg(target_arch = "x86_64")]
    const OPS: [Builds; 3] = [
        ("exp", exp_into, exp_into_avx2, exp_into_avx512),
        ("silu", silu_into, silu_into_avx2, silu_into_avx512),
        ("gelu", gelu_into, gelu_into_avx2, gelu_into_avx512),
    ];

    /// Whether the AVX-512 builds run here (what the ops detect for them).
    #[cfg(target_arch = "x86_64")]
    pub(crate) fn avx512_builds_run_here() -> bool {
        wide512()
    }

    /// The checks' values: a linear congruential sequence, uniform in -3..3.
    #[cfg(target_arch = "x86_64")]
    struct Draws(u64);

    #[cfg(target_arch = "x86_64")]
    impl Draws {
        fn next(&mut self) -> f32 {
            self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            ((self.0 >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * 3.0
        }
    }

    /// The AVX2 + FMA builds give the bits of the baseline build: the norms, attention, the
    /// exp-based ops (over the specials and all exponents, and partial chunks) and softmax.
    /// Panics where the CPU lacks AVX2 or FMA.
    #[cfg(target_arch = "x86_64")]
    pub(crate) fn avx2_builds_give_the_baseline_bits() {
        assert!(wide(), "this CPU has no AVX2 + FMA");
        let mut draws = Draws(7);
        let mut next = || draws.next();
        let dim = 77;
        let x: Vec<f32> = (0..5 * dim).map(|_| next()).collect();
        let w: Vec<f32> = (0..dim).map(|_| next()).collect();
        let b: Vec<f32> = (0..dim).map(|_| next()).collect();
        let (mut y1, mut y2) = (vec![0.0; x.len()], vec![0.0; x.len()]);
        rms_rows(&mut y1, &x, dim, &w, 1e-5);
        // SAFETY: `wide()` said AVX2 and FMA run here (asserted above).
        unsafe { rms_rows_avx2(&mut y2, &x, dim, &w, 1e-5) };
        assert_eq!(bits(&y1), bits(&y2));
        layer_rows(&mut y1, &x, dim, &w, Some(&b), 1e-5);
        // SAFETY: as above.
        unsafe { layer_rows_avx2(&mut y2, &x, dim, &w, Some(&b), 1e-5) };
        assert_eq!(bits(&y1), bits(&y2));
        let (q, k, v, g) = attention_case(7, (40, 4, 2, 3, 29), 0.2);
        let (d, heads, q_len) = (g.d, g.n_heads, g.q_len);
        for th in 0..q_len * heads {
            let (mut o1, mut o2) = (vec![0.0; d], vec![0.0; d]);
            attend(&mut o1, th, &q, &k, &v, g);
            // SAFETY: as above.
            unsafe { attend_avx2(&mut o2, th, &q, &k, &v, g) };
            assert_eq!(bits(&o1), bits(&o2), "head row {th}");
            assert!(o1.iter().any(|&x| x != 0.0));
        }
        // The exp-based ops, over the specials and all exponents (and partial chunks).
        let all = exp_inputs();
        for x in [&all[..], &all[..13], &all[..29]] {
            for (name, base, avx2, _) in OPS {
                let (mut y1, mut y2) = (vec![0.0; x.len()], vec![0.0; x.len()]);
                base(&mut y1, x);
                // SAFETY: as above.
                unsafe { avx2(&mut y2, x) };
                assert_eq!(bits(&y1), bits(&y2), "{name}, AVX2");
            }
        }
        // Softmax rows of 19 (two chunks and a tail) with the specials among the values.
        let mut x: Vec<f32> = (0..19 * 40).map(|_| next() * 30.0).collect();
        x[3] = f32::NAN;
        x[19 + 18] = f32::INFINITY;
        x[2 * 19..3 * 19].fill(f32::NEG_INFINITY);
        x[3 * 19 + 5] = -1e30;
        x[4 * 19 + 7] = 1e30;
        let (mut y1, mut y2) = (vec![0.0; x.len()], vec![0.0; x.len()]);
        softmax_rows(&mut y1, &x, 19);
        // SAFETY: as above.
        unsafe { softmax_rows_avx2(&mut y2, &x, 19) };
        assert_eq!(bits(&y1), bits(&y2));
        assert!(y1[..19].iter().all(|v| v.is_nan()) && y1[2 * 19..3 * 19].iter().all(|&v| v == 0.0));
    }

    /// The AVX-512 builds (16 lanes) give the bits of the baseline build: the exp-based ops
    /// (lengths 13 and 29 too: a partial chunk of 16 lanes, and one past a whole one) and
    /// softmax. Panics where the CPU lacks AVX-512 F, AVX2 or FMA.
    #[cfg(target_arch = "x86_64")]
    pub(crate) fn avx512_builds_give_the_baseline_bits() {
        assert!(wide512(), "this CPU has no AVX-512 F (with AVX2 + FMA)");
        let all = exp_inputs();
        for x in [&all[..], &all[..13], &all[..29]] {
            for (name, base, _, avx512) in OPS {
                let (mut y1, mut y2) = (vec![0.0; x.len()], vec![0.0; x.len()]);
                base(&mut y1, x);
                // SAFETY: `wide512()` said AVX-512 F, AVX2 and FMA run here (asserted above).
                unsafe { avx512(&mut y2, x) };
                assert_eq!(bits(&y1), bits(&y2), "{name}, AVX-512");
            }
        }
        // The 16-lane softmax, on rows of 19, 40 (two chunks of 16 and one of 8) and 51, with
        // values of comparable exponentials (every addition of the sum counts) and spread ones;
        // the values follow those the AVX2 check draws.
        let mut draws = Draws(7);
        for _ in 0..5 * 77 + 2 * 77 + 19 * 40 {
            draws.next();
        }
        for (dim, spread) in [(19, 0.3), (40, 0.3), (51, 0.3), (40, 30.0)] {
            let x: Vec<f32> = (0..dim * 7).map(|_| draws.next() * spread).collect();
            let (mut y1, mut y2) = (vec![0.0; x.len()], vec![0.0; x.len()]);
            softmax_rows(&mut y1, &x, dim);
            // SAFETY: as above.
            unsafe { softmax_rows_avx512(&mut y2, &x, dim) };
            assert_eq!(bits(&y1), bits(&y2), "softmax rows of {dim}, AVX-512");
        }
    }

    /// Inputs for the exp-based ops: the specials, tiny and huge values, the overflow and
    /// underflow edges, and every 65537th bit pattern (all exponents, both signs).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // the AVX2 comparison only
    fn exp_inputs() -> Vec<f32> {
        let mut x = vec![
            f32::NAN,
            -f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            0.0,
            -0.0,
            f32::MAX,
            f32::MIN,
            f32::MIN_POSITIVE,
            f32::from_bits(1),
            -f32::from_bits(1),
            88.722_83,
            88.722_84,
            -88.722_84,
            -103.278_93,
            -103.972_08,
            -104.0,
            89.0,
        ];
        x.extend((0..=u32::MAX).step_by(65_537).map(f32::from_bits));
        x
    }

    /// Queries, keys and values uniform in -1..1 (from `seed`) for the geometry
    /// `(head_dim, heads, kv_heads, q_len, kv_len)` with `scale`.
    #[cfg_attr(not(any(test, target_arch = "x86_64")), allow(dead_code))] // the x86 builds' check
    pub(super) fn attention_case(
        seed: u64,
        (d, n_heads, n_kv_heads, q_len, kv_len): (usize, usize, usize, usize, usize),
        scale: f32,
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>, Geometry) {
        let mut s = seed;
        let mut next = || {
            s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        };
        let q: Vec<f32> = (0..q_len * n_heads * d).map(|_| next()).collect();
        let k: Vec<f32> = (0..kv_len * n_kv_heads * d).map(|_| next()).collect();
        let v: Vec<f32> = (0..kv_len * n_kv_heads * d).map(|_| next()).collect();
        let g = Geometry {
            n_heads,
            n_kv_heads,
            group: n_heads / n_kv_heads,
            d,
            q_len,
            kv_len,
            scale,
            mask: AttentionMask::Causal,
        };
        (q, k, v, g)
    }

    /// The bits of each value.
    #[cfg_attr(not(any(test, target_arch = "x86_64")), allow(dead_code))] // the x86 builds' check
    pub(super) fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::checks::{attention_case, bits, exp_best};
    use super::*;

    /// Query heads that share a key/value head give, attended together, the bits each gives
    /// alone; and `attention` gives the same bits whatever the thread count, which sets how
    /// many heads a task takes.
    #[test]
    fn grouped_heads_give_the_bits_of_one_head() {
        let (q, k, v, g) = attention_case(11, (24, 8, 2, 3, 17), 0.3);
        let (d, heads, kv_heads, q_len, kv_len) = (g.d, g.n_heads, g.n_kv_heads, g.q_len, g.kv_len);
        for t in 0..q_len {
            for width in [2, 4] {
                for h0 in (0..heads).step_by(width) {
                    let th = t * heads + h0;
                    let mut together = vec![0.0; width * d];
                    attend(&mut together, th, &q, &k, &v, g);
                    for e in 0..width {
                        let mut alone = vec![0.0; d];
                        attend(&mut alone, th + e, &q, &k, &v, g);
                        assert_eq!(
                            bits(&alone),
                            bits(&together[e * d..(e + 1) * d]),
                            "row {t} head {}",
                            h0 + e
                        );
                    }
                }
            }
        }
        let shape = AttentionShape {
            n_heads: heads,
            n_kv_heads: kv_heads,
            head_dim: d,
        };
        let run = |threads: usize, q_len: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| attention(&q[..q_len * heads * d], &k, &v, kv_len, shape, None).unwrap())
        };
        for q_len in [1, 3] {
            let want = run(1, q_len);
            assert!(want.iter().all(|x| x.is_finite()) && want.iter().any(|&x| x != 0.0));
            for threads in [2, 3, 8] {
                assert_eq!(
                    bits(&run(threads, q_len)),
                    bits(&want),
                    "{threads} threads, {q_len} queries"
                );
            }
        }
    }

    /// How many representable f32 lie between `a` and `b` (1 from `f32::MAX` to `inf`, from
    /// 0 to the smallest subnormal); 0 for two NaN, `u32::MAX` for NaN against a number.
    fn ulps(a: f32, b: f32) -> u32 {
        if a.is_nan() || b.is_nan() {
            return if a.is_nan() && b.is_nan() { 0 } else { u32::MAX };
        }
        let key = |v: f32| {
            let m = i64::from(v.to_bits() & 0x7FFF_FFFF);
            if v.is_sign_negative() {
                -m
            } else {
                m
            }
        };
        (key(a) - key(b)).unsigned_abs() as u32
    }

    /// The error of `got` against the exact `e^x` (f64 `exp`, far more precise), in ulps of
    /// the f32 result: of `2^-149` where that is subnormal.
    fn ulps_exact(got: f32, x: f32) -> f64 {
        let exact = f64::from(x).exp();
        let ulp = |v: f64| 2f64.powi((v.log2().floor() as i32).max(-126) - 23);
        if exact > f64::from(f32::MAX) {
            return if got == f32::INFINITY { 0.0 } else { f64::INFINITY };
        }
        (f64::from(got) - exact).abs() / ulp(exact.max(f64::from(f32::MIN_POSITIVE)))
    }

    /// The largest error of `exp8` (in the build that runs here) over `xs`: (ulps from
    /// libm's `expf`, ulps from the exact value, the x where the first is largest).
    fn worst_exp8(xs: impl Iterator<Item = f32>) -> (u32, f64, f32) {
        let mut worst = (0, 0.0f64, 0.0f32);
        let xs: Vec<f32> = xs.collect();
        let mut ys = vec![0.0f32; xs.len()];
        exp_best(&mut ys, &xs);
        for (&x, &e) in xs.iter().zip(&ys) {
            let u = ulps(e, x.exp());
            if u > worst.0 {
                worst.0 = u;
                worst.2 = x;
            }
            if !x.is_nan() {
                worst.1 = worst.1.max(ulps_exact(e, x));
            }
        }
        worst
    }

    /// The stated accuracy of `exp8`: at most this many ulps from libm's `expf`, and this far
    /// from the exact value (under 1: always one of the two f32 around it). Measured over
    /// every f32 by `exp8_over_every_f32`: 1 ulp from libm, 0.951 ulp from exact.
    const EXP_ULPS_FROM_LIBM: u32 = 1;
    const EXP_ULPS_FROM_EXACT: f64 = 0.96;

    #[test]
    fn exp8_specials() {
        let x = [
            f32::NAN,
            f32::NEG_INFINITY,
            f32::INFINITY,
            0.0,
            -0.0,
            f32::MAX,
            f32::MIN,
            89.0,
        ];
        let y = exp8(x);
        assert!(y[0].is_nan());
        assert_eq!(
            bits(&y[1..]),
            bits(&[0.0, f32::INFINITY, 1.0, 1.0, f32::INFINITY, 0.0, f32::INFINITY])
        );
        // The edges: the last finite result, the first subnormal ones, the last non-zero one
        // and the first zero (e^-103.972 is half the smallest subnormal).
        let x = [
            88.722_83,
            88.722_84,
            -87.336_5,
            -87.5,
            -100.0,
            -103.278_93,
            -103.0,
            -104.0,
        ];
        let y = exp8(x);
        assert!(y[0].is_finite() && y[0] > 3.4e38, "{}", y[0]);
        assert_eq!(y[1], f32::INFINITY);
        assert!(y[2] >= f32::MIN_POSITIVE && y[3] < f32::MIN_POSITIVE && y[3] > 0.0);
        assert!(
            y[4] > 0.0 && y[6] > 0.0 && y[5] == f32::from_bits(1) && y[7] == 0.0,
            "{y:?}"
        );
        for (&x, &e) in x.iter().zip(&y) {
            assert!(
                ulps(e, x.exp()) <= EXP_ULPS_FROM_LIBM,
                "exp({x}) = {e}, libm {}",
                x.exp()
            );
        }
        // Tiny arguments, normal and subnormal, of either sign: 1 or its neighbour below.
        let x = [1e-8, -1e-8, 1e-30, -1e-30, 1e-40, -1e-40, 6e-8, -3e-8];
        for (&x, &e) in x.iter().zip(&exp8(x)) {
            assert!(ulps(e, x.exp()) <= EXP_ULPS_FROM_LIBM, "exp({x}) = {e}");
        }
    }

    /// A dense sweep: every 1021st bit pattern of `[0, 89]` and `[-104, -0]` with its 7
    /// neighbours above (so every exponent and many mantissas), and a uniform grid.
    #[test]
    fn exp8_is_within_the_stated_ulps_over_a_dense_sweep() {
        let (hi, lo) = (89f32.to_bits(), (-104f32).to_bits());
        let around = |b: u32| (b..b + 8).map(f32::from_bits);
        let pos = (0..hi).step_by(1021).flat_map(around);
        let neg = ((-0f32).to_bits()..lo).step_by(1021).flat_map(around);
        let grid = (0..=1 << 21).map(|i| -104.0 + 193.0 * i as f32 / (1 << 21) as f32);
        let (libm, exact, at) = worst_exp8(pos.chain(neg).chain(grid));
        eprintln!("exp8: at most {libm} ulp from libm (at {at}), {exact:.3} ulp from exact");
        assert!(libm <= EXP_ULPS_FROM_LIBM, "{libm} ulp from libm at {at}");
        assert!(exact <= EXP_ULPS_FROM_EXACT, "{exact} ulp from exact");
    }

    /// Every f32 (4.3e9 values, about a minute in a release build on 2 cores):
    /// `cargo test --release -p aihal-cpu --lib exp8_over_every_f32 -- --ignored --nocapture`.
    #[test]
    #[ignore = "exhaustive: run in a release build"]
    fn exp8_over_every_f32() {
        let (libm, exact) = (0u32..1 << 16)
            .into_par_iter()
            .map(|hi| {
                let (u, e, _) = worst_exp8((0..1 << 16).map(|lo| f32::from_bits(hi << 16 | lo)));
                (u, e)
            })
            .reduce(|| (0, 0.0), |a, b| (a.0.max(b.0), a.1.max(b.1)));
        eprintln!("exp8 over every f32: at most {libm} ulp from libm, {exact:.3} ulp from exact");
        assert!(libm <= EXP_ULPS_FROM_LIBM && exact <= EXP_ULPS_FROM_EXACT);
    }
}
