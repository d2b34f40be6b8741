//! Every op of the op set, through the facade, on every execution provider compiled into this
//! build, against `aihal-reference` on fresh pseudo-random data. Each provider runs alone and
//! in strict mode, so a missing route is an error, never a silent fallback; an op a provider
//! says it does not run is listed, and the CPU provider must run them all.
//!
//! Tolerances (relative to `1 + |reference|` unless said):
//! - linear: `LinearPrecision::bound`, the one rule every provider is held to (f32 rounding of
//!   reordered sums; for int8 activations also the rounding of activations and weights to
//!   int8 with one scale per row);
//! - norms, softmax, SiLU, GELU (tanh), rope, attention: 1e-5 (a few ulps: each kernel's
//!   exact bound is proved in aihal-cpu's own tests);
//! - GELU (erf), gated activations, add, embedding: exact or that same 1e-5.

use std::sync::Arc;

use aihal::quantize::{quantize, QuantFormat, QuantizedTensor};
use aihal::reference::{self, AttentionMask};
use aihal::{
    Act, Activation, Add, Attention, AttentionKind, AttentionShape, CoreError, Device, Embedding, Executor,
    GateActivation, Gated, LayerNorm, Linear, LinearPrecision, RmsNorm, Rope, RopeStyle, Softmax, Tensor,
};

fn values(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

fn close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * (1.0 + w.abs()),
            "{what}[{i}]: {g} vs reference {w}"
        );
    }
}

/// One strict executor per compiled-in provider, with only that provider.
fn executors() -> Vec<Arc<Executor>> {
    aihal::builtin_providers()
        .into_iter()
        .map(|p| {
            let d = p.device();
            Executor::builder().provider(p).device(d).strict(true).build().unwrap()
        })
        .collect()
}

fn tensor(v: Vec<f32>, shape: &[usize]) -> Tensor {
    Tensor::from_vec(v, shape).unwrap()
}

/// Runs `check` on each executor; an op a provider does not run must be a clear
/// `NotImplemented`, and the CPU provider must run everything.
fn on_every_provider(what: &str, mut check: impl FnMut(&Arc<Executor>) -> aihal::Result<()>) {
    let execs = executors();
    assert!(!execs.is_empty(), "no provider compiled in");
    for exec in &execs {
        match check(exec) {
            Ok(()) => {}
            Err(e) if e.is_not_implemented() && exec.device() != Device::Cpu => {
                println!("{what}: not on {} ({e})", exec.device());
            }
            Err(e) => panic!("{what} on {}: {e}", exec.device()),
        }
    }
}

fn linear_bound(x: &[f32], w: &[f32], m: usize, n: usize, k: usize, int8: bool) -> Vec<f32> {
    let p = if int8 {
        LinearPrecision::Int8Activations
    } else {
        LinearPrecision::F32
    };
    let mut out = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            out[i * n + j] = p.bound(&x[i * k..][..k], &w[j * k..][..k]);
        }
    }
    out
}

#[test]
fn linear_matches_the_reference_in_every_format_and_precision() {
    let (m, n, k) = (5, 24, 256);
    let formats = [
        QuantFormat::Q8_0,
        QuantFormat::Q4_0,
        QuantFormat::Tq2_0,
        QuantFormat::Nf4 {
            block_size: 64,
            double_quant: false,
        },
        QuantFormat::Int8PerChannel,
        QuantFormat::Int8PerBlock { block_size: 32 },
        QuantFormat::Ternary,
        QuantFormat::Fp8E4M3 { block_size: Some(32) },
        QuantFormat::Fp8E5M2 { block_size: None },
    ];
    on_every_provider("linear", |exec| {
        for (fi, &format) in formats.iter().enumerate() {
            let w = quantize(format, &values(fi as u64 + 1, n * k, 0.5), &[n, k])?;
            let wd = reference::dequantize_weight(&w)?;
            let bias = values(99, n, 0.1);
            let x = values(fi as u64 + 50, m * k, 2.0);
            let mut want = reference::matmul(&x, m, &w)?;
            for row in want.chunks_mut(n) {
                row.iter_mut().zip(&bias).for_each(|(y, b)| *y += b);
            }
            for precision in [LinearPrecision::F32, LinearPrecision::Int8Activations] {
                let layer = Linear::with_precision(exec, &w, Some(&bias), precision)?;
                let got = layer.forward(&tensor(x.clone(), &[m, k]))?;
                assert_eq!(got.dims(), &[m, n]);
                let got = got.to_vec()?;
                let bound = linear_bound(&x, &wd, m, n, k, precision == LinearPrecision::Int8Activations);
                for (i, ((g, w), b)) in got.iter().zip(&want).zip(&bound).enumerate() {
                    assert!(
                        (g - w).abs() <= *b,
                        "{format} {precision:?} [{i}]: {g} vs {w} (bound {b})"
                    );
                }
            }
        }
        Ok(())
    });
}

#[test]
fn dense_linear_matches_f32_arithmetic() {
    let (m, n, k) = (3, 40, 96);
    let w = values(31, n * k, 0.5);
    let bias = values(32, n, 0.1);
    let x = values(33, m * k, 2.0);
    let bound = linear_bound(&x, &w, m, n, k, false);
    on_every_provider("dense linear", |exec| {
        let layer = Linear::dense(exec, &w, [n, k], Some(&bias))?;
        let got = layer.forward(&tensor(x.clone(), &[m, k]))?.to_vec()?;
        for i in 0..m {
            for j in 0..n {
                let want: f32 = (0..k).map(|c| x[i * k + c] * w[j * k + c]).sum::<f32>() + bias[j];
                let g = got[i * n + j];
                assert!((g - want).abs() <= bound[i * n + j], "[{i}, {j}]: {g} vs {want}");
            }
        }
        Ok(())
    });
    let exec = &executors()[0];
    assert!(Linear::dense(exec, &w[1..], [n, k], None).is_err());
    assert!(Linear::dense(exec, &[], [0, k], None).is_err());
}

#[test]
fn row_ops_and_activations_match_the_reference() {
    let (rows, dim) = (6, 96);
    let x = values(7, rows * dim, 3.0);
    let g = values(8, dim, 1.0);
    let b = values(9, dim, 0.5);
    on_every_provider("row ops", |exec| {
        let t = tensor(x.clone(), &[2, 3, dim]);
        let y = RmsNorm::new(exec, &g, 1e-6)?.forward(&t)?;
        assert_eq!(y.dims(), &[2, 3, dim]);
        close("rms_norm", &y.to_vec()?, &reference::rms_norm(&x, dim, &g, 1e-6)?, 1e-5);
        let y = LayerNorm::new(exec, &g, Some(&b), 1e-5)?.forward(&t)?;
        close(
            "layer_norm",
            &y.to_vec()?,
            &reference::layer_norm(&x, dim, &g, Some(&b), 1e-5)?,
            1e-5,
        );
        close(
            "softmax",
            &Softmax::new(exec)?.forward(&t)?.to_vec()?,
            &reference::softmax(&x, dim)?,
            1e-5,
        );
        let silu = Act::new(exec, Activation::Silu)?.forward(&t)?.to_vec()?;
        close("silu", &silu, &reference::silu(&x), 1e-5);
        let gelu = Act::new(exec, Activation::GeluTanh)?.forward(&t)?.to_vec()?;
        close("gelu", &gelu, &reference::gelu(&x), 1e-5);
        let erf = Act::new(exec, Activation::GeluErf)?.forward(&t)?.to_vec()?;
        close("gelu (erf)", &erf, &reference::gelu_erf(&x), 1e-5);

        let up = values(10, rows * dim, 1.0);
        for act in [GateActivation::Silu, GateActivation::GeluTanh, GateActivation::GeluErf] {
            let y = Gated::new(exec, act)?.forward(&t, &tensor(up.clone(), &[2, 3, dim]))?;
            close(
                &format!("{act:?}"),
                &y.to_vec()?,
                &reference::gated(&x, &up, act)?,
                1e-5,
            );
        }
        let y = Add::new(exec)?.forward(&t, &tensor(up.clone(), &[2, 3, dim]))?;
        let want: Vec<f32> = x.iter().zip(&up).map(|(a, b)| a + b).collect();
        assert_eq!(y.to_vec()?, want);
        Ok(())
    });
}

#[test]
fn rope_matches_the_reference_with_and_without_a_batch() {
    let (tokens, heads, d) = (5, 3, 16);
    let x = values(11, 2 * tokens * heads * d, 1.0);
    on_every_provider("rope", |exec| {
        for style in [RopeStyle::Half, RopeStyle::Interleaved] {
            let rope = Rope::new(exec, heads, d, 10_000.0, style)?;
            let one = &x[..tokens * heads * d];
            let y = rope.forward(&tensor(one.to_vec(), &[tokens, heads, d]), 7)?;
            close(
                "rope",
                &y.to_vec()?,
                &reference::rope(one, heads, d, 7, 10_000.0, style)?,
                1e-5,
            );
            let y = rope.forward(&tensor(x.clone(), &[2, tokens, heads, d]), 3)?.to_vec()?;
            for (b, seq) in x.chunks(tokens * heads * d).enumerate() {
                let want = reference::rope(seq, heads, d, 3, 10_000.0, style)?;
                close("rope (batch)", &y[b * seq.len()..][..seq.len()], &want, 1e-5);
            }
        }
        Ok(())
    });
}

#[test]
fn embedding_reads_rows_of_the_quantized_table() {
    let (vocab, dim) = (50, 64);
    let table = quantize(QuantFormat::Q4_0, &values(12, vocab * dim, 1.0), &[vocab, dim]).unwrap();
    let ids = [3u32, 0, 49, 3, 17, 8];
    on_every_provider("embedding", |exec| {
        let e = Embedding::new(exec, &table)?;
        let y = e.forward(&ids, Some(&[2, 3]))?;
        assert_eq!(y.dims(), &[2, 3, dim]);
        assert_eq!(y.to_vec()?, reference::embedding(&ids, &table)?);
        let err = e.forward(&[1, 50], None).unwrap_err().to_string();
        assert!(err.contains("token id 50 at index 1"), "{err}");

        let dense = values(13, vocab * dim, 1.0);
        let e = Embedding::dense(exec, &dense, dim)?;
        let y = e.forward(&ids, None)?.to_vec()?;
        for (i, &id) in ids.iter().enumerate() {
            assert_eq!(&y[i * dim..][..dim], &dense[id as usize * dim..][..dim]);
        }
        assert!(e.forward(&[50], None).is_err());
        Ok(())
    });
}

/// Feeds a sequence through attention with a cache in steps (a prompt of `prompt` tokens,
/// then one token at a time) and compares every output with the reference over everything
/// cached so far.
fn attention_case(
    exec: &Arc<Executor>,
    kind: AttentionKind,
    batch: usize,
    prompt: usize,
    steps: usize,
) -> aihal::Result<()> {
    let shape = AttentionShape {
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 16,
    };
    let (qw, kw) = (shape.n_heads * shape.head_dim, shape.n_kv_heads * shape.head_dim);
    let total = prompt + steps;
    let q = values(20, batch * total * qw, 1.0);
    let k = values(21, batch * total * kw, 1.0);
    let v = values(22, batch * total * kw, 1.0);
    let att = Attention::new(exec, shape, kind, None)?;
    let mut cache = att.new_cache(batch, total)?;
    let mut pos = 0;
    for len in std::iter::once(prompt).chain(std::iter::repeat_n(1, steps)) {
        let slice = |src: &[f32], w: usize| -> Tensor {
            let mut out = Vec::new();
            for b in 0..batch {
                out.extend_from_slice(&src[(b * total + pos) * w..][..len * w]);
            }
            let heads = w / shape.head_dim;
            tensor(out, &[batch, len, heads, shape.head_dim])
        };
        let valid: Vec<usize> = (0..batch).map(|b| (pos + len).saturating_sub(b).max(1)).collect();
        let valid_arg = (kind == AttentionKind::Bidirectional).then_some(valid.as_slice());
        let y = att.forward(&slice(&q, qw), &slice(&k, kw), &slice(&v, kw), &mut cache, valid_arg)?;
        let y = y.to_vec()?;
        for b in 0..batch {
            let kv_len = pos + len;
            let mask = match kind {
                AttentionKind::Causal => AttentionMask::Causal,
                AttentionKind::SlidingWindow(w) => AttentionMask::SlidingWindow(w),
                AttentionKind::Bidirectional => AttentionMask::Padded { valid: valid[b] },
            };
            let want = reference::attention_masked(
                &q[(b * total + pos) * qw..][..len * qw],
                &k[b * total * kw..][..kv_len * kw],
                &v[b * total * kw..][..kv_len * kw],
                kv_len,
                shape,
                None,
                mask,
            )?;
            close(
                &format!("{kind:?} b{b} at {pos}"),
                &y[b * len * qw..][..len * qw],
                &want,
                1e-5,
            );
        }
        pos += len;
        assert_eq!(cache.lens(), vec![pos; batch].as_slice());
    }
    Ok(())
}

#[test]
fn attention_with_a_cache_matches_the_reference_for_every_mask_and_batch() {
    on_every_provider("attention", |exec| {
        for batch in [1, 2] {
            attention_case(exec, AttentionKind::Causal, batch, 7, 5)?;
            attention_case(exec, AttentionKind::SlidingWindow(4), batch, 6, 6)?;
            attention_case(exec, AttentionKind::Bidirectional, batch, 9, 0)?;
        }
        Ok(())
    });
}

#[test]
fn bad_input_is_an_error_that_names_it() {
    let exec = &executors()[0];
    let w = quantize(QuantFormat::Q8_0, &values(1, 8 * 64, 1.0), &[8, 64]).unwrap();
    let layer = Linear::new(exec, &w, None).unwrap();
    // Shapes that do not chain.
    let err = layer.forward(&tensor(vec![0.0; 2 * 32], &[2, 32])).unwrap_err();
    assert!(err.to_string().contains("linear"), "{err}");
    assert!(Linear::new(exec, &w, Some(&[0.0; 7])).is_err());
    // A KV cache past its bound: nothing is appended.
    let shape = AttentionShape {
        n_heads: 2,
        n_kv_heads: 1,
        head_dim: 8,
    };
    let att = Attention::new(exec, shape, AttentionKind::Causal, None).unwrap();
    let mut cache = att.new_cache(1, 4).unwrap();
    let q = tensor(vec![0.1; 3 * 16], &[1, 3, 2, 8]);
    let kv = tensor(vec![0.1; 3 * 8], &[1, 3, 1, 8]);
    att.forward(&q, &kv, &kv, &mut cache, None).unwrap();
    let err = att.forward(&q, &kv, &kv, &mut cache, None).unwrap_err();
    assert!(err.to_string().contains("max_len 4"), "{err}");
    assert_eq!(cache.lens(), &[3]);
    // A cache of another shape, valid lengths on a causal op, a bad window.
    let other = Attention::new(
        exec,
        AttentionShape { n_kv_heads: 2, ..shape },
        AttentionKind::Causal,
        None,
    )
    .unwrap();
    let mut wrong = other.new_cache(1, 8).unwrap();
    assert!(att.forward(&q, &kv, &kv, &mut wrong, None).is_err());
    let mut c2 = att.new_cache(1, 8).unwrap();
    assert!(att.forward(&q, &kv, &kv, &mut c2, Some(&[3])).is_err());
    assert!(Attention::new(exec, shape, AttentionKind::SlidingWindow(0), None).is_err());
    assert!(Attention::new(
        exec,
        AttentionShape { n_kv_heads: 3, ..shape },
        AttentionKind::Causal,
        None
    )
    .is_err());
    // Rope on the wrong layout, an empty norm, a weight that is not a matrix.
    let rope = Rope::new(exec, 2, 8, 10_000.0, RopeStyle::Half).unwrap();
    assert!(rope.forward(&tensor(vec![0.0; 16], &[16]), 0).is_err());
    assert!(Rope::new(exec, 2, 7, 10_000.0, RopeStyle::Half).is_err());
    assert!(RmsNorm::new(exec, &[], 1e-6).is_err());
    let bad = QuantizedTensor::from_parts(QuantFormat::Q8_0, vec![2, 2, 32], vec![0; 4 * 34], vec![]).unwrap();
    assert!(matches!(
        Linear::new(exec, &bad, None),
        Err(CoreError::InvalidInput { .. })
    ));
}
