use aihal_reference::AttentionShape;
use rayon::prelude::*;

use super::attention::attend;
use super::checks::{attention_case, bits, exp_best};
use super::exp::exp8;
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

/// A decode step over more keys than one task takes runs split over the keys, a task per
/// chunk and every head in each, then merged: the reference's result within 1e-5 (relative,
/// plus 1e-5 absolute: the merge rescales partial sums, a few roundings more than the
/// reference's one pass) under every mask, NaN exactly where the reference has it, and the
/// same bits on any number of threads.
#[test]
fn a_decode_step_split_over_its_keys_matches_the_reference() {
    use aihal_reference::{self as reference, AttentionMask};
    // (head_dim, heads, kv_heads, kv_len): SmolLM2's and Gemma 3's decode shapes, rows too long
    // for a task's values to stay in L1 (the key-by-key loop), and odd sizes (a head_dim no
    // lane count divides, a last chunk of 1 key).
    for (seed, (d, heads, kv_heads, kv_len)) in [
        (64, 9, 3, 160),
        (256, 4, 1, 97),
        (128, 16, 8, 70),
        (24, 8, 2, 65),
        (5, 2, 1, 33),
    ]
    .into_iter()
    .enumerate()
    {
        let (mut q, mut k, v, _) = attention_case(seed as u64 + 40, (d, heads, kv_heads, 1, kv_len), 0.0);
        let shape = AttentionShape {
            n_heads: heads,
            n_kv_heads: kv_heads,
            head_dim: d,
        };
        let masks = [
            AttentionMask::Causal,
            AttentionMask::SlidingWindow(kv_len - 20),
            AttentionMask::Padded { valid: kv_len - 1 },
        ];
        for poison in [false, true] {
            if poison {
                // One key of the first key/value head NaN: its query heads' rows are NaN.
                k[(kv_len - 3) * kv_heads * d] = f32::NAN;
                // One query head's query scaled far up: large scores, still finite.
                for x in &mut q[(heads - 1) * d..heads * d] {
                    *x *= 300.0;
                }
            }
            for mask in masks {
                let want = reference::attention_masked(&q, &k, &v, kv_len, shape, None, mask).unwrap();
                let got = attention_masked(&q, &k, &v, kv_len, shape, None, mask).unwrap();
                assert_eq!(got.len(), want.len());
                assert_eq!(want.iter().filter(|x| x.is_nan()).count() > 0, poison);
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    let ok = (g.is_nan() && w.is_nan()) || (g - w).abs() <= 1e-5 * w.abs() + 1e-5;
                    assert!(
                        ok,
                        "{d}x{heads}x{kv_heads} over {kv_len}, {mask:?}, poison {poison}: [{i}] {g} vs {w}"
                    );
                }
                for threads in [1, 2, 3, 8] {
                    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                    let again = pool.install(|| attention_masked(&q, &k, &v, kv_len, shape, None, mask).unwrap());
                    assert_eq!(bits(&again), bits(&got), "{threads} threads");
                }
            }
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

/// One prepared rotary embedding, applied again and again as a provider's op is (single tokens
/// at repeated, new and earlier positions, a few tokens at once, two head counts as the query
/// and key calls of a layer), gives the reference's bits every time: the table kept from the
/// last single position is only reused at that position.
#[test]
fn a_prepared_rope_reused_across_positions_gives_the_reference_bits() {
    use aihal_reference::{self as reference, RopeStyle};
    for style in [RopeStyle::Half, RopeStyle::Interleaved] {
        let (d, theta) = (24, 10_000.0);
        let rotary = rope::Rotary::new(d, theta, style);
        let (q, _, _, _) = attention_case(5, (d, 4, 1, 3, 3), 0.0);
        for (heads, rows, pos) in [
            (4, 1, 7),
            (1, 1, 7),
            (4, 1, 7),
            (4, 1, 8),
            (4, 3, 8),
            (1, 1, 3),
            (4, 1, 8),
            (4, 1, 0),
        ] {
            let x = &q[..rows * heads * d];
            let got = rotary.apply(x, heads, pos).unwrap();
            let want = reference::rope(x, heads, d, pos, theta, style).unwrap();
            assert_eq!(
                bits(&got),
                bits(&want),
                "{style:?}, {heads} heads, {rows} rows at {pos}"
            );
        }
    }
}

/// `dot8` gives each row the bits of one `dot`, at lengths with and without a tail, NaN and
/// signed zeros among the values.
#[test]
fn dot8_gives_the_bits_of_eight_dots() {
    let mut state = 3u64;
    let mut next = || {
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 6.0
    };
    for d in [1, 5, 8, 24, 64, 77] {
        let q: Vec<f32> = (0..d).map(|_| next()).collect();
        let mut rows: Vec<Vec<f32>> = (0..8).map(|_| (0..d).map(|_| next()).collect()).collect();
        rows[2][0] = f32::NAN;
        rows[5].fill(-0.0);
        let got = dot8(&q, std::array::from_fn(|e| &rows[e][..]));
        for (e, row) in rows.iter().enumerate() {
            assert_eq!(got[e].to_bits(), dot(&q, row).to_bits(), "d {d}, row {e}");
        }
    }
}
