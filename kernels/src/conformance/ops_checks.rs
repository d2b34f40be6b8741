//! Checks of the transformer glue and attention against `aihal_reference`.
#![allow(clippy::missing_panics_doc)]

use aihal_core::CoreError;
use aihal_reference as reference;
use cubecl::prelude::*;

use super::checks::{assert_close, format_cases, poisoned, random_weights};
use super::rng::Rng;
use crate::{Context, RopeTables};
use aihal_ops::KvLayout;
use aihal_quantize::QuantFormat;
use reference::{AttentionMask, AttentionShape, GateActivation, RopeStyle};

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

/// SiLU and both GELUs on values across the interesting range (|x| up to 8).
/// Tolerance: `TRANSCENDENTAL` relative, plus `|x| 2⁻²¹` absolute: for negative x, GELU's
/// `1 + tanh(..)` cancels, so one unit in the last place of tanh (near -1) becomes a large
/// relative error of a tiny result in any f32 implementation. The erf form's own error
/// (`7.5e-8 |x|`, see `gelu_erf`) is within that absolute term.
pub fn activations_match_reference<R: Runtime>(ctx: &Context<R>) {
    let mut rng = Rng::fresh();
    let n = 1000 + rng.below(300);
    let mut x = rng.values(n, 8.0);
    // The erf form switches from its series to its rational form at |x| = 0.5 √2.
    x.extend([0.707, 0.7072, -0.707, -0.7072, 1e-3, -1e-3, 5.9, -5.9]);
    let xd = ctx.upload(&x).expect("upload");
    for (name, want) in [
        ("silu", reference::silu(&x)),
        ("gelu", reference::gelu(&x)),
        ("gelu_erf", reference::gelu_erf(&x)),
    ] {
        let y = poisoned(ctx, x.len(), f32::NAN);
        match name {
            "silu" => crate::silu(ctx, &xd, &y).expect("silu"),
            "gelu" => crate::gelu(ctx, &xd, &y).expect("gelu"),
            _ => crate::gelu_erf(ctx, &xd, &y).expect("gelu_erf"),
        }
        let got = ctx.download(&y).expect("download");
        assert_close(name, rng.seed(), &got, &want, |i, w| {
            TRANSCENDENTAL * w.abs() + x[i].abs() * 2f32.powi(-21)
        });
    }
}

/// LayerNorm with and without a bias, rows of several lengths.
/// Tolerance: `(dim + 8) u` relative to `|w| + |weight| + |bias|` (two reordered sums, then
/// sqrt and products), plus `TRANSCENDENTAL`.
pub fn layer_norm_matches_reference<R: Runtime>(ctx: &Context<R>) {
    let mut rng = Rng::fresh();
    for dim in DIMS {
        let rows = 1 + rng.below(5);
        // An offset, so that the mean matters.
        let x: Vec<f32> = rng.values(rows * dim, 3.0).iter().map(|v| v + 1.5).collect();
        let w = rng.values(dim, 1.5);
        let b = rng.values(dim, 0.5);
        let (xd, wd, bd) = (
            ctx.upload(&x).expect("upload"),
            ctx.upload(&w).expect("upload"),
            ctx.upload(&b).expect("upload"),
        );
        for bias in [None, Some(&bd)] {
            let want = reference::layer_norm(&x, dim, &w, bias.map(|_| b.as_slice()), 1e-5).expect("reference");
            let y = poisoned(ctx, x.len(), f32::NAN);
            crate::layer_norm(ctx, &xd, dim, &wd, bias, 1e-5, &y).expect("layer_norm");
            let got = ctx.download(&y).expect("download");
            let rel = (dim as f32 + 8.0) * 2f32.powi(-24) + TRANSCENDENTAL;
            assert_close(
                &format!("layer_norm rows={rows} dim={dim} bias={}", bias.is_some()),
                rng.seed(),
                &got,
                &want,
                |i, v| rel * (v.abs() + w[i % dim].abs() + b[i % dim].abs()) + 1e-30,
            );
        }
    }
    let x = ctx.upload(&[1.0f32; 10]).expect("upload");
    let w = ctx.upload(&[1.0f32; 5]).expect("upload");
    let y = poisoned(ctx, 10, 0.0f32);
    let err = crate::layer_norm(ctx, &x, 5, &w, Some(&x), 1e-5, &y).unwrap_err();
    assert!(matches!(err, CoreError::ShapeMismatch { .. }), "{err}");
    let err = crate::layer_norm(ctx, &x, 5, &w, None, f32::NAN, &y).unwrap_err();
    assert!(matches!(err, CoreError::InvalidInput(_)), "{err}");
}

/// Addition (exact) and the gated activations (as the activations), and a row bias (exact).
pub fn binary_ops_match_reference<R: Runtime>(ctx: &Context<R>) {
    let mut rng = Rng::fresh();
    let (rows, cols) = (3 + rng.below(5), 1 + rng.below(300));
    let n = rows * cols;
    let (a, b) = (rng.values(n, 6.0), rng.values(n, 2.0));
    let (ad, bd) = (ctx.upload(&a).expect("upload"), ctx.upload(&b).expect("upload"));
    let y = poisoned(ctx, n, f32::NAN);
    crate::add(ctx, &ad, &bd, &y).expect("add");
    let want: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
    assert_eq!(ctx.download(&y).expect("download"), want, "add (seed {})", rng.seed());
    for act in [GateActivation::Silu, GateActivation::GeluTanh, GateActivation::GeluErf] {
        let y = poisoned(ctx, n, f32::NAN);
        crate::gated(ctx, &ad, &bd, act, &y).expect("gated");
        let want = reference::gated(&a, &b, act).expect("reference");
        assert_close(
            &format!("gated {act:?}"),
            rng.seed(),
            &ctx.download(&y).expect("download"),
            &want,
            |i, w| TRANSCENDENTAL * w.abs() + (a[i] * b[i]).abs() * 2f32.powi(-21),
        );
    }
    let bias = rng.values(cols, 1.0);
    let y = ctx.upload(&a).expect("upload");
    crate::add_bias(ctx, &y, &ctx.upload(&bias).expect("upload")).expect("bias");
    let want: Vec<f32> = a.iter().enumerate().map(|(i, v)| v + bias[i % cols]).collect();
    assert_eq!(ctx.download(&y).expect("download"), want, "bias (seed {})", rng.seed());
    let short = poisoned(ctx, n - 1, 0.0f32);
    let err = crate::add(ctx, &ad, &short, &y).unwrap_err();
    assert!(matches!(err, CoreError::ShapeMismatch { .. }), "{err}");
}

/// Embedding rows of every format, ids repeated and out of order, against
/// `aihal_reference::embedding`; tolerance as `dequantize_every_format_f32`.
pub fn embedding_matches_reference<R: Runtime>(ctx: &Context<R>) {
    let mut rng = Rng::fresh();
    for (format, shape) in format_cases() {
        let q = random_weights(&mut rng, format, &shape);
        let vocab = shape[0] as u32;
        let ids: Vec<u32> = (0..9)
            .map(|_| rng.below(vocab as usize) as u32)
            .chain([vocab - 1, 0])
            .collect();
        let want = reference::embedding(&ids, &q).expect("reference");
        let dq = crate::DeviceQuantized::upload(ctx, &q).expect("upload");
        let out = poisoned(ctx, want.len(), f32::NAN);
        crate::embedding(ctx, &dq, &ctx.upload(&ids).expect("upload"), &out).expect("embedding");
        let max = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let nested = matches!(format, QuantFormat::Nf4 { double_quant: true, .. });
        let off = super::offsets(&q);
        let k = shape[1];
        let off: Vec<f32> = ids
            .iter()
            .flat_map(|&id| off[id as usize * k..][..k].to_vec())
            .collect();
        assert_close(
            &format!("embedding {format} {shape:?}"),
            rng.seed(),
            &ctx.download(&out).expect("download"),
            &want,
            |i, w| {
                if nested {
                    max * 2f32.powi(-20)
                } else {
                    (w.abs() + off[i]) * 2f32.powi(-22)
                }
            },
        );
    }
}

/// Rotary embedding in both pair styles, `[sequences, tokens, heads, head_dim]` with a
/// position offset, against the reference per sequence.
/// Tolerance: 2⁻²² relative to the largest value (a possible fused multiply-add).
pub fn rope_matches_reference<R: Runtime>(ctx: &Context<R>) {
    let mut rng = Rng::fresh();
    for style in [RopeStyle::Half, RopeStyle::Interleaved] {
        let (seqs, tokens, heads, hd, pos0) = (
            1 + rng.below(3),
            5 + rng.below(6),
            3,
            2 * (4 + rng.below(30)),
            rng.below(4000),
        );
        let x = rng.values(seqs * tokens * heads * hd, 2.0);
        let per_seq = tokens * heads * hd;
        let mut want = Vec::with_capacity(x.len());
        for seq in x.chunks(per_seq) {
            want.extend(reference::rope(seq, heads, hd, pos0, 10_000.0, style).expect("reference"));
        }
        let tables = RopeTables::new(ctx, pos0 + tokens, hd, 10_000.0).expect("tables");
        let xd = ctx.upload(&x).expect("upload");
        let y = poisoned(ctx, x.len(), f32::NAN);
        crate::rope(ctx, &xd, heads, hd, tokens, pos0, &tables, style, &y).expect("rope");
        let got = ctx.download(&y).expect("download");
        let xmax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert_close(
            &format!("rope {style:?} seqs={seqs} tokens={tokens} hd={hd} pos0={pos0}"),
            rng.seed(),
            &got,
            &want,
            |_, _| 2.0 * xmax * 2f32.powi(-22),
        );
        // A position past the tables is an error, not a read past them.
        let err = crate::rope(ctx, &xd, heads, hd, tokens, pos0 + 1, &tables, style, &y).unwrap_err();
        assert!(matches!(err, CoreError::InvalidInput(_)), "{err}");
    }
}

fn attention_tol(kv_len: usize, head_dim: usize, v: &[f32]) -> f32 {
    let vmax = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    ((kv_len + head_dim + 16) as f32 * 2f32.powi(-24) + TRANSCENDENTAL) * vmax
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
        let shape = AttentionShape {
            n_heads,
            n_kv_heads,
            head_dim,
        };
        let want = reference::attention(&q, &k, &v, kv_len, shape, None).expect("reference");
        let (qd, kd, vd) = (
            ctx.upload(&q).expect("upload"),
            ctx.upload(&k).expect("upload"),
            ctx.upload(&v).expect("upload"),
        );
        let out = poisoned(ctx, q.len(), f32::NAN);
        crate::attention(ctx, &qd, &kd, &vd, kv_len, shape, None, &out).expect("attention");
        let got = ctx.download(&out).expect("download");
        let tol = attention_tol(kv_len, head_dim, &v);
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
    let shape = AttentionShape {
        n_heads: 2,
        n_kv_heads: 1,
        head_dim: 4,
    };
    let err = crate::attention(ctx, &q, &q, &q, 1, shape, None, &out).unwrap_err();
    assert!(matches!(err, CoreError::ShapeMismatch { .. }), "{err}");
    let bad = AttentionShape { n_kv_heads: 3, ..shape };
    let err = crate::attention(ctx, &q, &q, &q, 2, bad, None, &out).unwrap_err();
    assert!(matches!(err, CoreError::InvalidInput(_)), "{err}");
}

/// A key/value cache of a batch filled in steps by `kv_append` (a prompt, then single
/// tokens), attended with every mask after each step, one launch for the whole batch and one
/// per sequence, against `aihal_reference::attention_masked` per sequence. Tolerance as
/// `attention_matches_reference`.
pub fn cached_attention_matches_reference<R: Runtime>(ctx: &Context<R>) {
    let mut rng = Rng::fresh();
    let shape = AttentionShape {
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 24,
    };
    let (batch, max_len, prompt, steps) = (3, 80, 37 + rng.below(30), 3);
    let layout = KvLayout {
        batch,
        max_len,
        n_kv_heads: shape.n_kv_heads,
        head_dim: shape.head_dim,
    };
    let (qw, kw) = (shape.n_heads * shape.head_dim, shape.n_kv_heads * shape.head_dim);
    let total = prompt + steps;
    let (q, k, v) = (
        rng.values(batch * total * qw, 1.0),
        rng.values(batch * total * kw, 1.0),
        rng.values(batch * total * kw, 2.0),
    );
    let cache_len = batch * max_len * kw;
    let (kc, vc) = (poisoned(ctx, cache_len, f32::NAN), poisoned(ctx, cache_len, f32::NAN));
    // Rows `pos .. pos + len` of every sequence, `[batch, len, heads, head_dim]`.
    let rows = |src: &[f32], w: usize, pos: usize, len: usize| -> Vec<f32> {
        (0..batch)
            .flat_map(|b| src[(b * total + pos) * w..][..len * w].to_vec())
            .collect()
    };
    let mut pos = 0;
    for len in std::iter::once(prompt).chain(std::iter::repeat_n(1, steps)) {
        let (kn, vn) = (rows(&k, kw, pos, len), rows(&v, kw, pos, len));
        crate::kv_append(
            ctx,
            &ctx.upload(&kn).expect("upload"),
            &ctx.upload(&vn).expect("upload"),
            &kc,
            &vc,
            layout,
            0..batch,
            pos,
        )
        .expect("kv_append");
        let kv_len = pos + len;
        let qn = rows(&q, qw, pos, len);
        let qd = ctx.upload(&qn).expect("upload");
        for mask in [
            AttentionMask::Causal,
            AttentionMask::SlidingWindow(1 + rng.below(kv_len)),
            AttentionMask::Padded {
                valid: 1 + rng.below(kv_len),
            },
        ] {
            for per_sequence in [false, true] {
                let out = poisoned(ctx, qn.len(), f32::NAN);
                if per_sequence {
                    for b in 0..batch {
                        crate::attention_cached(ctx, &qd, &kc, &vc, layout, shape, b..b + 1, kv_len, mask, None, &out)
                            .expect("attention");
                    }
                } else {
                    crate::attention_cached(ctx, &qd, &kc, &vc, layout, shape, 0..batch, kv_len, mask, None, &out)
                        .expect("attention");
                }
                let got = ctx.download(&out).expect("download");
                for b in 0..batch {
                    let want = reference::attention_masked(
                        &qn[b * len * qw..][..len * qw],
                        &k[b * total * kw..][..kv_len * kw],
                        &v[b * total * kw..][..kv_len * kw],
                        kv_len,
                        shape,
                        None,
                        mask,
                    )
                    .expect("reference");
                    let tol = attention_tol(kv_len, shape.head_dim, &v);
                    assert_close(
                        &format!("cached attention {mask:?} b{b} at {pos}+{len} (per sequence: {per_sequence})"),
                        rng.seed(),
                        &got[b * len * qw..][..len * qw],
                        &want,
                        |_, _| tol,
                    );
                }
            }
        }
        pos += len;
    }
    // Past the cache, a mask that does not fit, a range outside the batch: errors.
    let one = ctx.upload(&vec![0.5f32; batch * kw]).expect("upload");
    let err = crate::kv_append(ctx, &one, &one, &kc, &vc, layout, 0..batch, max_len).unwrap_err();
    assert!(matches!(err, CoreError::InvalidInput(_)), "{err}");
    let q1 = ctx.upload(&vec![0.5f32; batch * qw]).expect("upload");
    let out = poisoned(ctx, batch * qw, 0.0f32);
    let padded = AttentionMask::Padded { valid: pos + 1 };
    let err =
        crate::attention_cached(ctx, &q1, &kc, &vc, layout, shape, 0..batch, pos, padded, None, &out).unwrap_err();
    assert!(matches!(err, CoreError::InvalidInput(_)), "{err}");
    let err = crate::attention_cached(
        ctx,
        &q1,
        &kc,
        &vc,
        layout,
        shape,
        batch..batch + 1,
        pos,
        AttentionMask::Causal,
        None,
        &out,
    )
    .unwrap_err();
    assert!(matches!(err, CoreError::InvalidInput(_)), "{err}");
}
