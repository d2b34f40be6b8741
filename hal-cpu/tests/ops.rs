//! The fast transformer ops against the scalar reference over generated shapes.
#![allow(clippy::float_cmp)]

use aihal_cpu::ops;
use aihal_reference::{self as reference, AttentionShape, RopeStyle};
use proptest::prelude::*;

fn close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let ok = (g - w).abs() <= tol * (1.0 + w.abs()) || (g.is_nan() && w.is_nan()) || g == w;
        assert!(ok, "{what}[{i}]: {g} vs reference {w}");
    }
}

/// The unit roundoff of f32, `2^-24`: one rounding moves a value by at most this, relatively.
const U: f32 = f32::EPSILON / 2.0;

/// `|got - want| ≤ rel |want| + per_x |x| + abs` elementwise, NaN exactly where the
/// reference has NaN, and the same sign (zeros included).
fn within(what: &str, x: &[f32], got: &[f32], want: &[f32], (rel, per_x, abs): (f32, f32, f32)) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let xi = x.get(i).map_or(0.0, |v| v.abs());
        let ok = if w.is_nan() || g.is_nan() {
            w.is_nan() && g.is_nan()
        } else {
            g.is_sign_negative() == w.is_sign_negative()
                && (g == w || (g - w).abs() <= rel * w.abs() + per_x * xi + abs)
        };
        assert!(ok, "{what}[{i}] (x = {xi:e}): {g:e} vs reference {w:e}");
    }
}

/// SiLU, `x / (1 + e)` with `e = exp(-x)`: our `e` is within 1 ulp (≤ 2U relatively) of
/// libm's (measured over every f32 in the crate's tests), so the two `1 + e` differ by at
/// most 2U before and U for each one's rounding, and the divisions round once each: 6U
/// relatively. Where one `exp(-x)` overflows (x ≈ -88.72) and the other is near `f32::MAX`,
/// both results are below 88.8 / f32::MAX ≈ 2.6e-37: the absolute 1e-36.
const SILU_TOL: (f32, f32, f32) = (6.0 * U, 0.0, 1e-36);

/// GELU: ours is `x / (1 + exp(-2u))` (within 6U relatively of the exact value of that
/// formula at the same f32 `u`, as SiLU); the reference's `0.5 x (1 + tanh u)` adds the error
/// of `1 + tanh u`, at most 3 * 2^-24 absolutely (libm's `tanhf` within 2 ulp, the addition one
/// rounding), times `0.5 |x|`: 1.5 * 2^-24 |x|, which is no small relative error where `tanh u`
/// is near -1 (x < -2). So 8U relatively plus 2^-23 |x| (some margin), and the SiLU absolute.
const GELU_TOL: (f32, f32, f32) = (8.0 * U, 2.0 * U, 1e-36);

/// Softmax of a row of `dim`: each `exp` within 1 ulp of libm's (2U), the two sums of `dim`
/// positive terms in different orders each within `(dim - 1) U` of the exact sum, then a
/// division and a multiplication on each side: `(2 dim + 6) U` relatively. Results under
/// `f32::MIN_POSITIVE` are subnormal (fewer digits): that much absolutely.
fn softmax_tol(dim: usize) -> (f32, f32, f32) {
    ((2 * dim + 6) as f32 * U, 0.0, f32::MIN_POSITIVE)
}

fn values(seed: u64, len: usize, scale: f32) -> Vec<f32> {
    let mut s = seed;
    (0..len)
        .map(|_| {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn norms_softmax_and_activations_match(rows in 1usize..6, dim in 1usize..70, seed in any::<u64>()) {
        let x = values(seed, rows * dim, 4.0);
        let g = values(seed ^ 1, dim, 1.5);
        let b = values(seed ^ 2, dim, 0.5);
        close("rms_norm", &ops::rms_norm(&x, dim, &g, 1e-5).unwrap(), &reference::rms_norm(&x, dim, &g, 1e-5).unwrap(), 1e-5);
        close(
            "layer_norm",
            &ops::layer_norm(&x, dim, &g, Some(&b), 1e-5).unwrap(),
            &reference::layer_norm(&x, dim, &g, Some(&b), 1e-5).unwrap(),
            1e-4,
        );
        within("softmax", &[], &ops::softmax(&x, dim).unwrap(), &reference::softmax(&x, dim).unwrap(), softmax_tol(dim));
        within("silu", &x, &ops::silu(&x), &reference::silu(&x), SILU_TOL);
        within("gelu", &x, &ops::gelu(&x), &reference::gelu(&x), GELU_TOL);
        // Wider arguments: exp near its overflow and underflow edges, and GELU's cancellation.
        let w = values(seed ^ 5, rows * dim, 110.0);
        within("silu (wide)", &w, &ops::silu(&w), &reference::silu(&w), SILU_TOL);
        within("gelu (wide)", &w, &ops::gelu(&w), &reference::gelu(&w), GELU_TOL);
        within("softmax (wide)", &[], &ops::softmax(&w, dim).unwrap(), &reference::softmax(&w, dim).unwrap(), softmax_tol(dim));
    }

    #[test]
    fn rope_matches(seq in 1usize..5, heads in 1usize..4, half in 1usize..20, pos0 in 0usize..5000, seed in any::<u64>()) {
        let d = 2 * half;
        let x = values(seed, seq * heads * d, 2.0);
        for style in [RopeStyle::Half, RopeStyle::Interleaved] {
            close(
                "rope",
                &ops::rope(&x, heads, d, pos0, 10_000.0, style).unwrap(),
                &reference::rope(&x, heads, d, pos0, 10_000.0, style).unwrap(),
                0.0,
            );
        }
    }

    #[test]
    fn attention_matches(kv_heads in 1usize..4, group in 1usize..4, d in 1usize..40, kv_len in 1usize..80, q_len in 1usize..4, seed in any::<u64>()) {
        let q_len = q_len.min(kv_len);
        let shape = AttentionShape { n_heads: kv_heads * group, n_kv_heads: kv_heads, head_dim: d };
        let q = values(seed, q_len * shape.n_heads * d, 1.0);
        let k = values(seed ^ 3, kv_len * kv_heads * d, 1.0);
        let v = values(seed ^ 4, kv_len * kv_heads * d, 1.0);
        close(
            "attention",
            &ops::attention(&q, &k, &v, kv_len, shape, None).unwrap(),
            &reference::attention(&q, &k, &v, kv_len, shape, None).unwrap(),
            1e-5,
        );
    }
}

#[test]
fn fast_ops_reject_what_the_reference_rejects() {
    assert!(ops::rms_norm(&[1.0; 5], 2, &[1.0; 2], 1e-5).is_err());
    assert!(ops::rms_norm(&[1.0; 4], 2, &[1.0; 3], 1e-5).is_err());
    assert!(ops::layer_norm(&[1.0; 4], 2, &[1.0; 2], Some(&[0.0]), 1e-5).is_err());
    assert!(ops::softmax(&[1.0; 4], 0).is_err());
    assert!(ops::rope(&[1.0; 6], 1, 3, 0, 1e4, RopeStyle::Half).is_err());
    let shape = AttentionShape {
        n_heads: 3,
        n_kv_heads: 2,
        head_dim: 1,
    };
    assert!(ops::attention(&[0.0; 3], &[0.0; 2], &[0.0; 2], 1, shape, None).is_err());
}

#[test]
fn softmax_masked_and_huge_rows() {
    let y = ops::softmax(&[f32::NEG_INFINITY, f32::NEG_INFINITY, 1e30, 1e30], 2).unwrap();
    assert_eq!(y, [0.0, 0.0, 0.5, 0.5]);
}

/// The specials and edges of the exp-based activations, against the reference's values.
#[test]
fn activations_at_the_edges() {
    let x = [
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        0.0,
        -0.0,
        1e-30,
        -1e-30,
        1e-40,
        -1e-40,
        88.0,
        -88.0,
        -88.72,
        -88.73,
        89.0,
        -89.0,
        -87.5,
        -100.0,
        100.0,
        -10.0,
        -5.0,
        1e20,
        -1e20,
        f32::MAX,
        f32::MIN,
    ];
    let (s, g) = (ops::silu(&x), ops::gelu(&x));
    within("silu", &x, &s, &reference::silu(&x), SILU_TOL);
    within("gelu", &x, &g, &reference::gelu(&x), GELU_TOL);
    assert_eq!((s[0], g[0]), (f32::INFINITY, f32::INFINITY));
    assert!(s[1].is_nan() && g[1].is_nan() && s[2].is_nan() && g[2].is_nan()); // -inf / inf
    assert_eq!((s[3].to_bits(), g[3].to_bits()), (0, 0));
    assert_eq!((s[4].to_bits(), g[4].to_bits()), ((-0f32).to_bits(), (-0f32).to_bits()));
    assert_eq!((s[5], s[6]), (0.5e-30, -0.5e-30));
    assert_eq!((s[16].to_bits(), s[17]), ((-0f32).to_bits(), 100.0));
    assert_eq!((g[20], g[21].to_bits(), g[22]), (1e20, (-0f32).to_bits(), f32::MAX));
    // Long inputs: more than one rayon task and a partial last chunk of 8.
    let x = values(9, 3 * 16 * 1024 + 5, 12.0);
    within("silu (long)", &x, &ops::silu(&x), &reference::silu(&x), SILU_TOL);
    within("gelu (long)", &x, &ops::gelu(&x), &reference::gelu(&x), GELU_TOL);
}

/// GELU as `x / (1 + exp(-2u))` keeps its relative accuracy for negative `x`, where the
/// reference's `1 + tanh u` cancels: against the same formula in f64 (from the same f32 `u`).
#[test]
fn gelu_keeps_its_digits_where_tanh_cancels() {
    let x: Vec<f32> = (0..=4000).map(|i| -9.0 + i as f32 * 0.0045).collect();
    let exact = |v: f32| {
        let u = 0.797_884_6f32 * (v + 0.044_715 * v * v * v);
        f64::from(v) / (1.0 + (-2.0 * f64::from(u)).exp())
    };
    let (ours, theirs) = (ops::gelu(&x), reference::gelu(&x));
    let rel = |got: f32, v: f32| ((f64::from(got) - exact(v)) / exact(v)).abs();
    let worst_ours = x.iter().zip(&ours).map(|(&v, &g)| rel(g, v)).fold(0.0, f64::max);
    let worst_theirs = x.iter().zip(&theirs).map(|(&v, &g)| rel(g, v)).fold(0.0, f64::max);
    assert!(worst_ours <= 6.0 * f64::from(U), "ours: {worst_ours:e}");
    // The reference loses everything once `tanh u` rounds to -1 (x < -5.6 or so).
    assert!(worst_theirs > 0.5, "reference: {worst_theirs:e}");
}

/// Softmax rows that exercise the special cases in each position of a chunk of 8 and the
/// tail: NaN, `+inf`, all `-inf` (alone and with a NaN), huge, and underflowing terms.
#[test]
fn softmax_special_rows() {
    for dim in [1, 7, 8, 9, 17, 33] {
        for at in [0, dim / 2, dim - 1] {
            let base = values(dim as u64, dim, 3.0);
            let mut rows = Vec::new();
            for special in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1e30, -1e30, -200.0, 100.0] {
                let mut r = base.clone();
                r[at] = special;
                rows.extend(r);
            }
            let mut masked = vec![f32::NEG_INFINITY; dim];
            rows.extend(&masked);
            masked[at] = f32::NAN;
            rows.extend(&masked);
            let mut tiny = vec![-1e30; dim];
            tiny[at] = 0.0;
            rows.extend(&tiny);
            let (got, want) = (
                ops::softmax(&rows, dim).unwrap(),
                reference::softmax(&rows, dim).unwrap(),
            );
            within(
                &format!("softmax dim {dim} at {at}"),
                &[],
                &got,
                &want,
                softmax_tol(dim),
            );
            let row = |i: usize| &got[i * dim..(i + 1) * dim];
            assert!(row(0).iter().all(|v| v.is_nan()) && row(1).iter().all(|v| v.is_nan()));
            assert!(row(7).iter().all(|&v| v == 0.0) && row(8).iter().all(|v| v.is_nan()));
            assert_eq!(row(9)[at], 1.0);
        }
    }
}

/// GELU's erf form: Abramowitz and Stegun 7.1.26 (|error| ≤ 1.5e-7 in erf) gives at most
/// `7.5e-8 |x|` absolutely, plus a few f32 roundings (8U relatively); the edges as the
/// reference has them.
#[test]
fn gelu_erf_within_its_stated_bound_and_at_the_edges() {
    let mut x: Vec<f32> = (-4000..=4000).map(|i| i as f32 * 0.0025).collect();
    x.extend(values(41, 10_000, 30.0));
    let got = ops::gelu_erf(&x);
    within("gelu_erf", &x, &got, &reference::gelu_erf(&x), (8.0 * U, 7.5e-8, 1e-37));
    let edges = [
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        0.0,
        -0.0,
        60.0,
        -60.0,
        f32::MAX,
        -f32::MAX,
    ];
    let got = ops::gelu_erf(&edges);
    let want = reference::gelu_erf(&edges);
    // +inf stays inf; -inf is NaN (-inf times a zero tail), as in the reference; large
    // negative inputs give a zero.
    assert_eq!(got[0], f32::INFINITY);
    assert!(got[1].is_nan() && want[1].is_nan());
    assert!(got[2].is_nan());
    assert_eq!(
        (got[3], got[4], got[5], got[6], got[7], got[8]),
        (0.0, 0.0, 60.0, 0.0, f32::MAX, 0.0)
    );
    assert_eq!((want[5], want[6], want[7], want[8]), (60.0, 0.0, f32::MAX, 0.0));
}
