//! Checks of the transformer glue and attention against `aihal_reference`.
#![allow(clippy::missing_panics_doc)]

use aihal_core::CoreError;
use aihal_reference as reference;
use cubecl::prelude::*;

use super::checks::{assert_close, poisoned};
use super::rng::Rng;
use crate::{AttentionDims, Context, RopeStyle};

/// Row lengths around the cube sizes the row kernels pick (32 to 256 units).
const DIMS: [usize; 4] = [7, 64, 200, 513];

/// Transcendentals on a device (exp, tanh, sqrt) are not correctly rounded; a few units in
/// the last place of f32 are allowed for them.
const TRANSCENDENTAL: f32 = 4.0e-6;

/// RMSNorm, rows of several lengths, poisoned output.
/// Tolerance: `(dim + 8) u` relative (a reordered sum of squares, then sqrt and products).
pub fn rms_norm_matches_reference<R: Runtime>(ctx: &Context<R>) {
    let mut rng = Rng::fresh();
    for dim in DIMS {
        let rows = 1 + rng.below(5);
        let x = rng.values(rows * dim, 3.0);
        let w = rng.values(dim, 1.5);
        let eps = 1e-5;
        let want = reference::rms_norm(&x, dim, &w, eps).expect("reference");
        let (xd, wd) = (ctx.upload(&x).expect("upload"), ctx.upload(&w).expect("upload"));
        let y = poisoned(ctx, x.len(), f32::NAN);
        crate::rms_norm(ctx, &xd, dim, &wd, eps, &y).expect("rms_norm");
        let got = ctx.download(&y).expect("download");
        let rel = (dim as f32 + 8.0) * 2f32.powi(-24) + TRANSCENDENTAL;
        assert_close(
            &format!("rms_norm rows={rows} dim={dim}"),
            rng.seed(),
            &got,
            &want,
            |_, w| rel * w.abs() + 1e-30,
        );
    }
    let x = ctx.upload(&[1.0f32; 10]).expect("upload");
    let w = ctx.upload(&[1.0f32; 4]).expect("upload");
    let y = poisoned(ctx, 10, 0.0f32);
    let err = crate::rms_norm(ctx, &x, 5, &w, 1e-5, &y).unwrap_err();
    assert!(matches!(err, CoreError::ShapeMismatch { .. }), "{err}");
    let err = crate::rms_norm(ctx, &x, 3, &w, 1e-5, &y).unwrap_err();
    assert!(matches!(err, CoreError::InvalidInput(_)), "{err}");
}

/// Softmax, rows of several lengths plus one fully masked row (all `-inf`, zeros expected).
/// Tolerance: `(dim + 8) u` relative to each probability, plus `TRANSCENDENTAL`.
pub fn softmax_matches_reference<R: Runtime>(ctx: &Context<R>) {
    let mut rng = Rng::fresh();
    for dim in DIMS {
        let rows = 2 + rng.below(4);
        let mut x = rng.values(rows * dim, 6.0);
        x[..dim].fill(f32::NEG_INFINITY);
        let want = reference::softmax(&x, dim).expect("reference");
        let xd = ctx.upload(&x).expect("upload");
        let y = poisoned(ctx, x.len(), f32::NAN);
        crate::softmax(ctx, &xd, dim, &y).expect("softmax");
        let got = ctx.download(&y).expect("download");
        let rel = (dim as f32 + 8.0) * 2f32.powi(-24) + TRANSCENDENTAL;
        assert_close(
            &format!("softmax rows={rows} dim={dim}"),
            rng.seed(),
            &got,
            &want,
            |_, w| rel * w.abs() + 1e-30,
        );
    }
}

/// SiLU and GELU on values across the interesting range (|x| up to 8).
/// Tolerance: `TRANSCENDENTAL` relative, plus `|x| 2⁻²¹` absolute: for negative x, GELU's
/// `1 + tanh(..)` cancels, so one unit in the last place of tanh (near -1) becomes a large
/// relative error of a tiny result in any f32 implementation.
pub fn activations_match_reference<R: Runtime>(ctx: &Context<R>) {
    let mut rng = Rng::fresh();
    let n = 1000 + rng.below(300);
    let x = rng.values(n, 8.0);
    let xd = ctx.upload(&x).expect("upload");
    for (name, want) in [("silu", reference::silu(&x)), ("gelu", reference::gelu(&x))] {
        let y = poisoned(ctx, x.len(), f32::NAN);
        if name == "silu" {
            crate::silu(ctx, &xd, &y).expect("silu");
        } else {
            crate::gelu(ctx, &xd, &y).expect("gelu");
        }
        let got = ctx.download(&y).expect("download");
        assert_close(name, rng.seed(), &got, &want, |i, w| {
            TRANSCENDENTAL * w.abs() + x[i].abs() * 2f32.powi(-21)
        });
    }
}

/// Rotary embedding in both pair styles, `[seq, heads, head_dim]` with a position offset.
/// Tolerance: 2⁻²² relative to `|a cos| + |b sin|` (a possible fused multiply-add).
pub fn rope_matches_reference<R: Runtime>(ctx: &Context<R>) {
    let mut rng = Rng::fresh();
    for (style, cpu_style) in [
        (RopeStyle::Half, reference::RopeStyle::Half),
        (RopeStyle::Interleaved, reference::RopeStyle::Interleaved),
    ] {
        let (seq, heads, hd, pos0) = (5 + rng.below(6), 3, 2 * (4 + rng.below(30)), rng.below(4000));
        let x = rng.values(seq * heads * hd, 2.0);
        let want = reference::rope(&x, heads, hd, pos0, 10_000.0, cpu_style).expect("reference");
        let (sin, cos) = crate::rope_tables(seq, hd, pos0, 10_000.0).expect("tables");
        let (xd, sd, cd) = (
            ctx.upload(&x).expect("upload"),
            ctx.upload(&sin).expect("upload"),
            ctx.upload(&cos).expect("upload"),
        );
        let y = poisoned(ctx, x.len(), f32::NAN);
        crate::rope(ctx, &xd, heads, hd, &sd, &cd, style, &y).expect("rope");
        let got = ctx.download(&y).expect("download");
        let bound = |i: usize| {
            let pair_max = x[i - i % 2..(i - i % 2 + 2).min(x.len())]
                .iter()
                .fold(0.0f32, |m, v| m.max(v.abs()));
            2.0 * pair_max.max(x[i].abs()) * 2f32.powi(-22)
        };
        // The pair partner of i may be far away (Half style): bound with the largest value.
        let xmax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert_close(
            &format!("rope {style:?} seq={seq} hd={hd} pos0={pos0}"),
            rng.seed(),
            &got,
            &want,
            |i, _| bound(i).max(2.0 * xmax * 2f32.powi(-22)),
        );
    }
}

/// Attention: decode (one query row), prefill (as many query rows as keys), grouped-query
/// heads, key counts straddling the key tile, head sizes below and at the cube size.
///
/// Tolerance: `(kv_len + head_dim + 16) u` times `max |v|`, plus `TRANSCENDENTAL` times
/// `max |v|` (the online softmax rescales with exp, summing in another order).
pub fn attention_matches_reference<R: Runtime>(ctx: &Context<R>) {
    let mut rng = Rng::fresh();
    let cases = [
        (1, 45, 4, 2, 64),
        (7, 70, 2, 1, 40),
        (33, 33, 2, 2, 16),
        (3, 130, 4, 4, 128),
    ];
    for (q_len, kv_len, n_heads, n_kv_heads, head_dim) in cases {
        let q = rng.values(q_len * n_heads * head_dim, 1.0);
        let k = rng.values(kv_len * n_kv_heads * head_dim, 1.0);
        let v = rng.values(kv_len * n_kv_heads * head_dim, 2.0);
        let shape = reference::AttentionShape {
            n_heads,
            n_kv_heads,
            head_dim,
        };
        let want = reference::attention(&q, &k, &v, kv_len, shape, None).expect("reference");
        let dims = AttentionDims {
            n_heads,
            n_kv_heads,
            head_dim,
        };
        let (qd, kd, vd) = (
            ctx.upload(&q).expect("upload"),
            ctx.upload(&k).expect("upload"),
            ctx.upload(&v).expect("upload"),
        );
        let out = poisoned(ctx, q.len(), f32::NAN);
        crate::attention(ctx, &qd, &kd, &vd, kv_len, dims, None, &out).expect("attention");
        let got = ctx.download(&out).expect("download");
        let vmax = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        let tol = ((kv_len + head_dim + 16) as f32 * 2f32.powi(-24) + TRANSCENDENTAL) * vmax;
        assert_close(
            &format!("attention q_len={q_len} kv_len={kv_len} heads={n_heads}/{n_kv_heads} d={head_dim}"),
            rng.seed(),
            &got,
            &want,
            |_, _| tol,
        );
    }
    let q = ctx.upload(&[0.5f32; 8]).expect("upload");
    let out = poisoned(ctx, 8, 0.0f32);
    let dims = AttentionDims {
        n_heads: 2,
        n_kv_heads: 1,
        head_dim: 4,
    };
    let err = crate::attention(ctx, &q, &q, &q, 1, dims, None, &out).unwrap_err();
    assert!(matches!(err, CoreError::ShapeMismatch { .. }), "{err}");
    let bad = AttentionDims { n_kv_heads: 3, ..dims };
    let err = crate::attention(ctx, &q, &q, &q, 2, bad, None, &out).unwrap_err();
    assert!(matches!(err, CoreError::InvalidInput(_)), "{err}");
}
