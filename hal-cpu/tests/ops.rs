//! The fast transformer ops against the scalar reference over generated shapes.
#![allow(clippy::float_cmp)]

use aihal_cpu::reference::{AttentionShape, RopeStyle};
use aihal_cpu::{ops, reference};
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
    fn attention_matches(kv_heads in 1usize..4, group in 1usize..4, d in 1usize..40, kv_len in 1usize..30, q_len in 1usize..4, seed in any::<u64>()) {
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

