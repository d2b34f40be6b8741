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
//!
//! One file per family: [`norm`](self::rms_norm) (RMSNorm, LayerNorm), softmax, the
//! activations (SiLU, GELU in both forms), rope and attention; `exp.rs` holds the vectorized
//! `exp` they share. Which builds run is read from the crate's one record of the CPU's
//! extensions (`kernels::cpu`).

/// `$wide`: `$f` compiled with AVX2 and FMA; `$best`: that where the CPU has them, else `$f`.
macro_rules! with_avx2 {
    ($f:ident, $wide:ident, $best:ident, ($($a:ident: $t:ty),* $(,)?)) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        pub(super) fn $wide($($a: $t),*) {
            $f($($a),*)
        }

        pub(super) fn $best($($a: $t),*) {
            #[cfg(target_arch = "x86_64")]
            if $crate::ops::wide() {
                // SAFETY: AVX2 and FMA were detected (`wide`).
                return unsafe { $wide($($a),*) };
            }
            $f($($a),*)
        }
    };
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

/// For an elementwise op given in lanes (`$lanes`, any `N`): `$base`, the op over a slice in
/// 8 lanes (the baseline build), `$wide` and `$wide512`, its AVX2 + FMA (8 lanes) and AVX-512
/// (16 lanes) builds, and `$best`, the widest the CPU runs. Each element is computed alone, so
/// the three give the same bits (tested).
macro_rules! elementwise {
    ($lanes:ident => $base:ident, $wide:ident, $wide512:ident, $best:ident) => {
        #[allow(clippy::inline_always)]
        #[inline(always)]
        pub(super) fn $base(y: &mut [f32], x: &[f32]) {
            map8!(y, x, 0.0, $lanes);
        }

        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        pub(super) fn $wide(y: &mut [f32], x: &[f32]) {
            $base(y, x)
        }

        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx512f,avx2,fma")]
        pub(super) fn $wide512(y: &mut [f32], x: &[f32]) {
            map_lanes!(y, x, 0.0, $lanes, 16);
        }

        pub(super) fn $best(y: &mut [f32], x: &[f32]) {
            #[cfg(target_arch = "x86_64")]
            if $crate::ops::wide512() {
                // SAFETY: AVX-512 F, AVX2 and FMA were detected (`wide512`).
                return unsafe { $wide512(y, x) };
            }
            #[cfg(target_arch = "x86_64")]
            if $crate::ops::wide() {
                // SAFETY: AVX2 and FMA were detected (`wide`).
                return unsafe { $wide(y, x) };
            }
            $base(y, x)
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

/// [`dot`]`(q, k)` for each of the 8 rows `k` (each as long as `q`): the same sums in the same
/// order, so the same bits, computed side by side, which keeps 8 independent sums in flight
/// where one [`dot`] waits on its own additions.
// Inlined into each build (baseline, AVX2 + FMA): that is how it gets compiled for both.
#[allow(clippy::inline_always)]
#[inline(always)]
pub(crate) fn dot8(q: &[f32], k: [&[f32]; 8]) -> [f32; 8] {
    let d = q.len();
    let body = d / 8 * 8;
    let k = k.map(|r| &r[..d]);
    let mut acc = [[0.0f32; 8]; 8];
    for c in (0..body).step_by(8) {
        let x = &q[c..c + 8];
        for (a, r) in acc.iter_mut().zip(&k) {
            let y = &r[c..c + 8];
            for l in 0..8 {
                a[l] += x[l] * y[l];
            }
        }
    }
    let mut out = [0.0f32; 8];
    for (o, (a, r)) in out.iter_mut().zip(acc.iter().zip(&k)) {
        let mut s = a.iter().sum::<f32>();
        for (x, y) in q[body..].iter().zip(&r[body..]) {
            s += x * y;
        }
        *o = s;
    }
    out
}

mod act;
mod attention;
mod exp;
mod norm;
mod rope;
mod softmax;

#[cfg(any(test, feature = "test-internals"))]
pub(crate) mod checks;
#[cfg(test)]
mod tests;

pub use act::{gelu, gelu_erf, silu};
pub use attention::{attention, attention_masked};
pub use norm::{layer_norm, rms_norm};
pub use rope::rope;
pub(crate) use rope::Rotary;
pub use softmax::softmax;

/// Whether the AVX2 + FMA builds of the ops' loops run here.
#[cfg(target_arch = "x86_64")]
fn wide() -> bool {
    crate::kernels::cpu().avx2_fma
}

/// Whether the AVX-512 builds of the elementwise ops and softmax run here.
#[cfg(target_arch = "x86_64")]
fn wide512() -> bool {
    crate::kernels::cpu().avx512f
}
