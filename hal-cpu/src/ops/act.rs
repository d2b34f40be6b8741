//! The elementwise activations: SiLU and GELU in its tanh and erf forms, chunks in parallel.

#[allow(unused_imports)] // named in the docs
use aihal_reference as reference;

use super::exp::exp_lanes;
use crate::pool::for_chunks;

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
