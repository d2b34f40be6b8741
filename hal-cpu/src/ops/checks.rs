//! The checks of the ops' x86 builds against the baseline build, run once per build by
//! `tests/isa.rs` (the builds this CPU lacks reported as ignored), and the test inputs the unit
//! tests share with them.

use aihal_reference::AttentionMask;

use super::attention::Geometry;
use super::exp::exp_lanes;
#[cfg(target_arch = "x86_64")]
use super::{
    act::{gelu_into, gelu_into_avx2, gelu_into_avx512, silu_into, silu_into_avx2, silu_into_avx512},
    attention::{attend, attend_avx2},
    norm::{layer_rows, layer_rows_avx2, rms_rows, rms_rows_avx2},
    softmax::{softmax_rows, softmax_rows_avx2, softmax_rows_avx512},
    wide, wide512,
};

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
