//! `CubeProvider` on Vulkan (lavapipe in CI), through `aihal-ops`: every op against
//! `aihal-reference`, a chain of ops that moves data once each way, and many threads sharing
//! prepared ops.
//!
//! Each test builds an executor with only the wgpu provider, the device named and strict
//! mode on, so an op the provider does not run is an error here, never a silent fallback.
//! Without a Vulkan adapter the device tests are reported as ignored, with the reason
//! (`AIHAL_REQUIRE_VULKAN=1`, set in CI, makes that a failure).
//!
//! Tolerances (f32 on a GPU: sums in another order than the reference's, the device's own
//! `exp`/`tanh`/`sqrt`), with `u = 2⁻²⁴`:
//! - linear, quantized or dense: `2 K u Σ|x w|` per output (a reordered sum), plus `2 u |y|`
//!   for the bias; for Q4_1, Q5_1, Q4_K, Q5_K and Q2_K, `|w| + 2 |m|` in place of `|w|` (`m` the block's
//!   minimum: the kernels sum `d Σ q x` and `m Σ x` apart, or contract `q d + m`);
//! - RMSNorm, LayerNorm, softmax: `(dim + 8) u + 4e-6` relative (LayerNorm: relative to
//!   `|y| + |weight| + |bias|`);
//! - SiLU, GELU (both forms), gated: `4e-6 |y| + 2⁻²¹ |x|` (GELU's `1 + tanh` or `1 + erf`
//!   cancels for negative x; the erf form is within `7.5e-8 |x|` of exact);
//! - add: exact; embedding: exact for Q8_0, Q4_0 and int8 (one product, as the reference)
//!   and for a dense table;
//! - rope: `2⁻²¹ max |x|` (the reference's own angle tables, a possible fused multiply-add);
//! - attention: `((kv_len + head_dim + 16) u + 4e-6) max |v|` (online softmax).

#[path = "support/mod.rs"]
mod support;

use std::sync::Arc;

use aihal_core::{CoreError, Device};
use aihal_kernels::conformance::{assert_close, magnitudes, Rng};
use aihal_kernels::cubecl::wgpu::WgpuRuntime;
use aihal_kernels::{wgpu_adapters, wgpu_providers, CubeProvider, Transfers};
use aihal_ops::{
    Act, Activation, Add, Attention, AttentionKind, AttentionShape, Embedding, Executor, GateActivation, Gated,
    LayerNorm, Linear, LinearPrecision, OpSpec, Provider, RmsNorm, Rope, RopeStyle, Softmax, Support, Tensor,
};
use aihal_quantize::{quantize, QuantFormat};
use aihal_reference::{self as reference, AttentionMask};

const U: f32 = 1.0 / (1u32 << 24) as f32;
const TRANSCENDENTAL: f32 = 4.0e-6;

/// The wgpu provider the tests run on (the first hardware adapter, else the first one), or
/// why there is none (the harness reports the tests as ignored, or failed under
/// `AIHAL_REQUIRE_VULKAN=1`).
fn provider() -> Result<Arc<CubeProvider<WgpuRuntime>>, String> {
    let mut all = wgpu_providers();
    let pick = all.iter().position(|p| !p.is_software()).unwrap_or(0);
    if all.is_empty() {
        return Err("no Vulkan adapter found (install mesa-vulkan-drivers for lavapipe)".into());
    }
    Ok(Arc::new(all.swap_remove(pick)))
}

fn main() {
    let tests = vec![
        support::test(
            "linear_matches_the_reference_in_every_format_with_and_without_bias",
            linear_matches_the_reference_in_every_format_with_and_without_bias,
        ),
        support::test(
            "dense_linear_and_dense_embedding_match_f32_arithmetic",
            dense_linear_and_dense_embedding_match_f32_arithmetic,
        ),
        support::test(
            "norms_softmax_activations_gated_and_add_match_the_reference",
            norms_softmax_activations_gated_and_add_match_the_reference,
        ),
        support::test(
            "rope_matches_the_reference_with_and_without_a_batch_and_past_its_first_tables",
            rope_matches_the_reference_with_and_without_a_batch_and_past_its_first_tables,
        ),
        support::test(
            "embedding_gathers_and_decodes_rows_on_the_device",
            embedding_gathers_and_decodes_rows_on_the_device,
        ),
        support::test(
            "attention_with_a_device_cache_matches_the_reference_for_every_mask_and_batch",
            attention_with_a_device_cache_matches_the_reference_for_every_mask_and_batch,
        ),
        support::test(
            "a_chain_of_eleven_ops_uploads_once_and_downloads_once",
            a_chain_of_eleven_ops_uploads_once_and_downloads_once,
        ),
        support::test(
            "supports_answers_from_the_device_limits_and_bad_input_is_an_error",
            supports_answers_from_the_device_limits_and_bad_input_is_an_error,
        ),
    ];
    let always = vec![support::always(
        "providers_follow_the_adapters_and_software_ones_say_so",
        providers_follow_the_adapters_and_software_ones_say_so,
    )];
    support::run(provider, "AIHAL_REQUIRE_VULKAN", tests, always)
}

/// A strict executor with only `p`, its device named.
fn executor(p: &Arc<CubeProvider<WgpuRuntime>>) -> Arc<Executor> {
    let provider: Arc<dyn Provider> = p.clone();
    Executor::builder()
        .provider(provider)
        .device(p.device())
        .strict(true)
        .build()
        .expect("an executor over the wgpu provider")
}

fn host(v: Vec<f32>, dims: &[usize]) -> Tensor {
    Tensor::from_vec(v, dims).expect("tensor")
}

/// `t`'s values, after checking that they live on `device`.
fn read(t: &Tensor, device: Device) -> Vec<f32> {
    assert_eq!(t.device(), device, "an op's output stays on its device");
    t.to_vec().expect("download")
}

fn linear_bound(x: &[f32], w: &[f32], want: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
    let mut out = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            let s: f32 = (0..k).map(|c| (x[i * k + c] * w[j * k + c]).abs()).sum();
            out[i * n + j] = 2.0 * k as f32 * U * s + 2.0 * U * want[i * n + j].abs() + 1e-30;
        }
    }
    out
}

fn linear_matches_the_reference_in_every_format_with_and_without_bias(p: &Arc<CubeProvider<WgpuRuntime>>) {
    let exec = executor(p);
    let mut rng = Rng::fresh();
    let formats = [
        QuantFormat::Q8_0,
        QuantFormat::Q4_0,
        QuantFormat::Q4_1,
        QuantFormat::Q5_0,
        QuantFormat::Q4K,
        QuantFormat::Q6K,
        QuantFormat::Q5_1,
        QuantFormat::Q5K,
        QuantFormat::Q2K,
        QuantFormat::Q3K,
        QuantFormat::Iq4Nl,
        QuantFormat::Iq4Xs,
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
    let (n, k) = (24, 256);
    for format in formats {
        let w = quantize(format, &rng.values(n * k, 0.5), &[n, k]).expect("quantize");
        // |w|, or |w| + 2 |m| for the formats with a block minimum (the conformance suite's
        // `magnitudes`): what the rounding of a decoded weight or a block-wise sum scales with.
        let wd = magnitudes(&w);
        let bias = rng.values(n, 0.1);
        for (m, lead, with_bias, precision) in [
            (1, vec![1], true, LinearPrecision::F32),
            (5, vec![5], false, LinearPrecision::Int8Activations),
            (6, vec![2, 3], true, LinearPrecision::Int8Activations),
        ] {
            let x = rng.values(m * k, 2.0);
            let mut want = reference::matmul(&x, m, &w).expect("reference");
            if with_bias {
                for row in want.chunks_mut(n) {
                    row.iter_mut().zip(&bias).for_each(|(y, b)| *y += b);
                }
            }
            let layer = Linear::with_precision(&exec, &w, with_bias.then_some(bias.as_slice()), precision)
                .expect("a linear layer on the wgpu provider");
            let mut dims = lead.clone();
            dims.push(k);
            let y = layer.forward_traced(&host(x.clone(), &dims)).expect("linear");
            assert_eq!(y.ran_on, p.device());
            let mut out_dims = lead;
            out_dims.push(n);
            assert_eq!(y.output.dims(), out_dims.as_slice());
            let bound = linear_bound(&x, &wd, &want, m, n, k);
            assert_close(
                &format!("linear {format} m={m} bias={with_bias}"),
                rng.seed(),
                &read(&y.output, p.device()),
                &want,
                |i, _| bound[i],
            );
        }
    }
}

fn dense_linear_and_dense_embedding_match_f32_arithmetic(p: &Arc<CubeProvider<WgpuRuntime>>) {
    let exec = executor(p);
    let mut rng = Rng::fresh();
    let (n, k) = (40, 96);
    let w = rng.values(n * k, 0.5);
    let bias = rng.values(n, 0.1);
    for m in [1, 3] {
        let x = rng.values(m * k, 2.0);
        let layer = Linear::dense(&exec, &w, [n, k], Some(&bias)).expect("dense linear");
        let y = layer.forward(&host(x.clone(), &[m, k])).expect("run");
        let mut want = vec![0.0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                want[i * n + j] = (0..k).map(|c| x[i * k + c] * w[j * k + c]).sum::<f32>() + bias[j];
            }
        }
        let bound = linear_bound(&x, &w, &want, m, n, k);
        assert_close(
            &format!("dense linear m={m}"),
            rng.seed(),
            &read(&y, p.device()),
            &want,
            |i, _| bound[i],
        );
    }
    let (vocab, dim) = (30, 48);
    let table = rng.values(vocab * dim, 1.0);
    let e = Embedding::dense(&exec, &table, dim).expect("dense embedding");
    let ids = [29u32, 0, 7, 7];
    let y = read(&e.forward(&ids, None).expect("run"), p.device());
    for (i, &id) in ids.iter().enumerate() {
        assert_eq!(
            &y[i * dim..][..dim],
            &table[id as usize * dim..][..dim],
            "row {i}: exact"
        );
    }
}

fn norms_softmax_activations_gated_and_add_match_the_reference(p: &Arc<CubeProvider<WgpuRuntime>>) {
    let exec = executor(p);
    let d = p.device();
    let mut rng = Rng::fresh();
    for dim in [7, 96, 300] {
        let rows = 6;
        let x = rng.values(rows * dim, 3.0);
        let g = rng.values(dim, 1.0);
        let b = rng.values(dim, 0.5);
        let t = host(x.clone(), &[2, 3, dim]);
        let rel = (dim as f32 + 8.0) * U + TRANSCENDENTAL;

        let y = RmsNorm::new(&exec, &g, 1e-6)
            .expect("rms_norm")
            .forward(&t)
            .expect("run");
        assert_eq!(y.dims(), &[2, 3, dim]);
        let want = reference::rms_norm(&x, dim, &g, 1e-6).expect("reference");
        assert_close("rms_norm", rng.seed(), &read(&y, d), &want, |_, w| {
            rel * w.abs() + 1e-30
        });

        for bias in [None, Some(b.as_slice())] {
            let y = LayerNorm::new(&exec, &g, bias, 1e-5)
                .expect("layer_norm")
                .forward(&t)
                .expect("run");
            let want = reference::layer_norm(&x, dim, &g, bias, 1e-5).expect("reference");
            assert_close("layer_norm", rng.seed(), &read(&y, d), &want, |i, w| {
                rel * (w.abs() + g[i % dim].abs() + b[i % dim].abs())
            });
        }

        let y = Softmax::new(&exec).expect("softmax").forward(&t).expect("run");
        let want = reference::softmax(&x, dim).expect("reference");
        assert_close("softmax", rng.seed(), &read(&y, d), &want, |_, w| rel * w.abs() + 1e-30);

        let act_tol = |i: usize, w: f32| TRANSCENDENTAL * w.abs() + x[i].abs() * 2f32.powi(-21);
        for (act, want) in [
            (Activation::Silu, reference::silu(&x)),
            (Activation::GeluTanh, reference::gelu(&x)),
            (Activation::GeluErf, reference::gelu_erf(&x)),
        ] {
            let y = Act::new(&exec, act).expect("activation").forward(&t).expect("run");
            assert_close(&format!("{act:?}"), rng.seed(), &read(&y, d), &want, act_tol);
        }

        let up = rng.values(rows * dim, 1.0);
        let u = host(up.clone(), &[2, 3, dim]);
        for act in [GateActivation::Silu, GateActivation::GeluTanh, GateActivation::GeluErf] {
            let y = Gated::new(&exec, act).expect("gated").forward(&t, &u).expect("run");
            let want = reference::gated(&x, &up, act).expect("reference");
            assert_close(&format!("gated {act:?}"), rng.seed(), &read(&y, d), &want, |i, w| {
                TRANSCENDENTAL * w.abs() + (x[i] * up[i]).abs() * 2f32.powi(-21)
            });
        }
        let y = Add::new(&exec).expect("add").forward(&t, &u).expect("run");
        let want: Vec<f32> = x.iter().zip(&up).map(|(a, b)| a + b).collect();
        assert_eq!(read(&y, d), want, "add (seed {})", rng.seed());
    }
}

fn rope_matches_the_reference_with_and_without_a_batch_and_past_its_first_tables(p: &Arc<CubeProvider<WgpuRuntime>>) {
    let exec = executor(p);
    let d = p.device();
    let mut rng = Rng::fresh();
    let (tokens, heads, hd) = (5, 3, 16);
    let x = rng.values(2 * tokens * heads * hd, 1.0);
    let one = &x[..tokens * heads * hd];
    let xmax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let tol = |_: usize, _: f32| 2f32.powi(-21) * xmax;
    for style in [RopeStyle::Half, RopeStyle::Interleaved] {
        let rope = Rope::new(&exec, heads, hd, 10_000.0, style).expect("rope");
        // Positions well inside the prepared tables, then past them (the tables grow).
        for pos0 in [7, aihal_kernels::ROPE_TABLE_POSITIONS + 3] {
            let before = p.transfers();
            let y = rope
                .forward(&host(one.to_vec(), &[tokens, heads, hd]), pos0)
                .expect("rope");
            let want = reference::rope(one, heads, hd, pos0, 10_000.0, style).expect("reference");
            assert_close("rope", rng.seed(), &read(&y, d), &want, tol);
            let grew = pos0 > aihal_kernels::ROPE_TABLE_POSITIONS;
            assert_eq!(
                p.transfers().uploads - before.uploads,
                1 + u64::from(grew),
                "the input, and the tables when they grow"
            );
            let y = rope
                .forward(&host(x.clone(), &[2, tokens, heads, hd]), pos0)
                .expect("rope (batch)");
            let got = read(&y, d);
            for (b, seq) in x.chunks(tokens * heads * hd).enumerate() {
                let want = reference::rope(seq, heads, hd, pos0, 10_000.0, style).expect("reference");
                assert_close(
                    "rope (batch)",
                    rng.seed(),
                    &got[b * seq.len()..][..seq.len()],
                    &want,
                    tol,
                );
            }
        }
    }
}

fn embedding_gathers_and_decodes_rows_on_the_device(p: &Arc<CubeProvider<WgpuRuntime>>) {
    let exec = executor(p);
    let mut rng = Rng::fresh();
    let (vocab, dim) = (50, 64);
    for format in [QuantFormat::Q4_0, QuantFormat::Q8_0, QuantFormat::Int8PerChannel] {
        let table = quantize(format, &rng.values(vocab * dim, 1.0), &[vocab, dim]).expect("quantize");
        let ids = [3u32, 0, 49, 3, 17, 8];
        let e = Embedding::new(&exec, &table).expect("embedding");
        let before = p.transfers();
        let y = e.forward(&ids, Some(&[2, 3])).expect("embedding");
        assert_eq!(y.dims(), &[2, 3, dim]);
        assert_eq!(p.transfers().uploads - before.uploads, 1, "the ids");
        assert_eq!(
            read(&y, p.device()),
            reference::embedding(&ids, &table).expect("reference")
        );
        let err = e.forward(&[1, 50], None).unwrap_err().to_string();
        assert!(err.contains("token id 50 at index 1"), "{err}");
    }
}

/// A sequence through attention with a cache in steps (a prompt, then one token at a time),
/// every output against the reference over everything cached so far.
fn attention_case(
    p: &Arc<CubeProvider<WgpuRuntime>>,
    rng: &mut Rng,
    kind: AttentionKind,
    batch: usize,
    prompt: usize,
    steps: usize,
) {
    let exec = executor(p);
    let shape = AttentionShape {
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 16,
    };
    let (qw, kw) = (shape.n_heads * shape.head_dim, shape.n_kv_heads * shape.head_dim);
    let total = prompt + steps;
    let q = rng.values(batch * total * qw, 1.0);
    let k = rng.values(batch * total * kw, 1.0);
    let v = rng.values(batch * total * kw, 1.0);
    let att = Attention::new(&exec, shape, kind, None).expect("attention");
    let mut cache = att.new_cache(batch, total).expect("cache");
    assert_eq!(cache.device(), p.device());
    let mut pos = 0;
    for len in std::iter::once(prompt).chain(std::iter::repeat_n(1, steps)) {
        let slice = |src: &[f32], w: usize| -> Tensor {
            let mut out = Vec::new();
            for b in 0..batch {
                out.extend_from_slice(&src[(b * total + pos) * w..][..len * w]);
            }
            host(out, &[batch, len, w / shape.head_dim, shape.head_dim])
        };
        // Sequences of different real lengths: one launch per sequence.
        let valid: Vec<usize> = (0..batch).map(|b| (pos + len).saturating_sub(b).max(1)).collect();
        let valid_arg = (kind == AttentionKind::Bidirectional).then_some(valid.as_slice());
        let y = att
            .forward_traced(&slice(&q, qw), &slice(&k, kw), &slice(&v, kw), &mut cache, valid_arg)
            .expect("attention");
        assert_eq!(y.ran_on, p.device());
        let got = read(&y.output, p.device());
        let kv_len = pos + len;
        for b in 0..batch {
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
            )
            .expect("reference");
            let tol = ((kv_len + shape.head_dim + 16) as f32 * U + TRANSCENDENTAL) * 1.0;
            assert_close(
                &format!("{kind:?} batch {batch} b{b} at {pos}"),
                rng.seed(),
                &got[b * len * qw..][..len * qw],
                &want,
                |_, _| tol,
            );
        }
        pos += len;
        assert_eq!(cache.lens(), vec![pos; batch].as_slice());
    }
}

fn attention_with_a_device_cache_matches_the_reference_for_every_mask_and_batch(p: &Arc<CubeProvider<WgpuRuntime>>) {
    let mut rng = Rng::fresh();
    for batch in [1, 3] {
        attention_case(p, &mut rng, AttentionKind::Causal, batch, 7, 5);
        attention_case(p, &mut rng, AttentionKind::SlidingWindow(4), batch, 6, 6);
        attention_case(p, &mut rng, AttentionKind::Bidirectional, batch, 9, 0);
    }
}

/// rms_norm → linear (q, k, v) → rope (q, k) → attention → linear → SiLU → linear → softmax,
/// eleven ops, the input given on the host: exactly one upload (the executor moving the
/// input in) and one download (the caller reading the output), whatever the ops in between.
fn a_chain_of_eleven_ops_uploads_once_and_downloads_once(p: &Arc<CubeProvider<WgpuRuntime>>) {
    let exec = executor(p);
    let mut rng = Rng::fresh();
    let (tokens, dim, heads, kv_heads, hd, hidden) = (6, 64, 4, 2, 16, 96);
    let shape = AttentionShape {
        n_heads: heads,
        n_kv_heads: kv_heads,
        head_dim: hd,
    };
    let weight = |rng: &mut Rng, n: usize, k: usize| {
        quantize(QuantFormat::Q8_0, &rng.values(n * k, 0.3), &[n, k]).expect("quantize")
    };
    let (wq, wk, wv) = (
        weight(&mut rng, heads * hd, dim),
        weight(&mut rng, kv_heads * hd, dim),
        weight(&mut rng, kv_heads * hd, dim),
    );
    let (wo, wu, wd) = (
        weight(&mut rng, dim, heads * hd),
        weight(&mut rng, hidden, dim),
        weight(&mut rng, dim, hidden),
    );
    let gain = rng.values(dim, 1.0);
    let norm = RmsNorm::new(&exec, &gain, 1e-6).expect("op");
    let (lq, lk, lv) = (
        Linear::new(&exec, &wq, None).expect("op"),
        Linear::new(&exec, &wk, None).expect("op"),
        Linear::new(&exec, &wv, None).expect("op"),
    );
    let (lo, lu, ld) = (
        Linear::new(&exec, &wo, None).expect("op"),
        Linear::new(&exec, &wu, None).expect("op"),
        Linear::new(&exec, &wd, None).expect("op"),
    );
    let rope = Rope::new(&exec, heads, hd, 10_000.0, RopeStyle::Half).expect("op");
    let rope_k = Rope::new(&exec, kv_heads, hd, 10_000.0, RopeStyle::Half).expect("op");
    let att = Attention::new(&exec, shape, AttentionKind::Causal, None).expect("op");
    let act = Act::new(&exec, Activation::Silu).expect("op");
    let softmax = Softmax::new(&exec).expect("op");
    let mut cache = att.new_cache(1, tokens).expect("cache");

    let x = rng.values(tokens * dim, 2.0);
    let before: Transfers = p.transfers();
    let moves_before = exec.moves();
    let h = norm.forward(&host(x.clone(), &[tokens, dim])).expect("rms_norm");
    let q = lq
        .forward(&h)
        .expect("linear q")
        .reshape(&[tokens, heads, hd])
        .expect("reshape");
    let k = lk
        .forward(&h)
        .expect("linear k")
        .reshape(&[tokens, kv_heads, hd])
        .expect("reshape");
    let v = lv.forward(&h).expect("linear v");
    let q = rope
        .forward(&q, 0)
        .expect("rope q")
        .reshape(&[1, tokens, heads, hd])
        .expect("reshape");
    let k = rope_k
        .forward(&k, 0)
        .expect("rope k")
        .reshape(&[1, tokens, kv_heads, hd])
        .expect("reshape");
    let v = v.reshape(&[1, tokens, kv_heads, hd]).expect("reshape");
    let a = att.forward(&q, &k, &v, &mut cache, None).expect("attention");
    let o = lo
        .forward(&a.reshape(&[tokens, heads * hd]).expect("reshape"))
        .expect("linear o");
    let u = act.forward(&lu.forward(&o).expect("linear up")).expect("silu");
    let y = softmax.forward(&ld.forward(&u).expect("linear down")).expect("softmax");
    assert_eq!(y.device(), p.device());
    let got = y.to_vec().expect("download");
    let after = p.transfers();
    println!(
        "chain of 11 ops: {} upload(s), {} download(s), {} executor move(s)",
        after.uploads - before.uploads,
        after.downloads - before.downloads,
        exec.moves() - moves_before
    );
    assert_eq!(after.uploads - before.uploads, 1, "one upload: the input");
    assert_eq!(after.downloads - before.downloads, 1, "one download: the output");
    assert_eq!(exec.moves() - moves_before, 1, "the executor moved the input only");

    // The same chain on the host with aihal-reference.
    let h = reference::rms_norm(&x, dim, &gain, 1e-6).expect("reference");
    let q = reference::matmul(&h, tokens, &wq).expect("reference");
    let k = reference::matmul(&h, tokens, &wk).expect("reference");
    let v = reference::matmul(&h, tokens, &wv).expect("reference");
    let q = reference::rope(&q, heads, hd, 0, 10_000.0, RopeStyle::Half).expect("reference");
    let k = reference::rope(&k, kv_heads, hd, 0, 10_000.0, RopeStyle::Half).expect("reference");
    let a = reference::attention(&q, &k, &v, tokens, shape, None).expect("reference");
    let o = reference::matmul(&a, tokens, &wo).expect("reference");
    let u = reference::silu(&reference::matmul(&o, tokens, &wu).expect("reference"));
    let want = reference::softmax(&reference::matmul(&u, tokens, &wd).expect("reference"), dim).expect("reference");
    // Eleven ops of f32 rounding in another order: 1e-4 relative to each probability.
    assert_close("chain", rng.seed(), &got, &want, |_, w| 1e-4 * w.abs() + 1e-7);
}

fn supports_answers_from_the_device_limits_and_bad_input_is_an_error(p: &Arc<CubeProvider<WgpuRuntime>>) {
    let exec = executor(p);
    let units = p.context().limits().units_1d(256) as usize;
    let too_wide = AttentionShape {
        n_heads: 1,
        n_kv_heads: 1,
        head_dim: 2 * units,
    };
    let spec = OpSpec::Attention {
        shape: too_wide,
        kind: AttentionKind::Causal,
        scale: None,
    };
    assert!(
        matches!(p.supports(&spec), Support::No(ref why) if why.contains("head_dim")),
        "{:?}",
        p.supports(&spec)
    );
    // Strict, with no other provider: placing it is an error that says why.
    let err = Attention::new(&exec, too_wide, AttentionKind::Causal, None).unwrap_err();
    assert!(
        err.is_not_implemented() && err.to_string().contains("head_dim"),
        "{err}"
    );
    let nf4 = quantize(
        QuantFormat::Nf4 {
            block_size: 64,
            double_quant: true,
        },
        &[0.5f32; 2 * 64],
        &[2, 64],
    )
    .expect("quantize");
    let (format, shape, data, scales) = nf4.into_parts();
    let bare = aihal_quantize::QuantizedTensor::from_parts(format, shape, data, scales).expect("parts");
    let spec = OpSpec::Linear {
        weight: &bare,
        bias: None,
        precision: LinearPrecision::F32,
    };
    assert!(matches!(p.supports(&spec), Support::No(ref why) if why.contains("nested")));

    // A shape that does not chain is an error naming the op; a host tensor handed straight
    // to a prepared op (bypassing the executor, which would move it) is refused.
    let w = quantize(QuantFormat::Q8_0, &[0.25f32; 8 * 64], &[8, 64]).expect("quantize");
    let layer = Linear::new(&exec, &w, None).expect("linear");
    let err = layer.forward(&host(vec![0.0; 2 * 32], &[2, 32])).unwrap_err();
    assert!(err.to_string().contains("linear"), "{err}");
    let prepared = p
        .prepare(&OpSpec::Linear {
            weight: &w,
            bias: None,
            precision: LinearPrecision::F32,
        })
        .expect("prepare");
    let x = host(vec![1.0; 64], &[1, 64]);
    let err = prepared.run(aihal_ops::Call::Unary(&x)).unwrap_err();
    assert!(matches!(err, CoreError::InvalidInput(_)), "{err}");

    // A cache past its bound: nothing appended.
    let shape = AttentionShape {
        n_heads: 2,
        n_kv_heads: 1,
        head_dim: 8,
    };
    let att = Attention::new(&exec, shape, AttentionKind::Causal, None).expect("attention");
    let mut cache = att.new_cache(1, 4).expect("cache");
    let q = host(vec![0.1; 3 * 16], &[1, 3, 2, 8]);
    let kv = host(vec![0.1; 3 * 8], &[1, 3, 1, 8]);
    att.forward(&q, &kv, &kv, &mut cache, None).expect("attention");
    let err = att.forward(&q, &kv, &kv, &mut cache, None).unwrap_err();
    assert!(err.to_string().contains("max_len 4"), "{err}");
    assert_eq!(cache.lens(), &[3]);
}

fn providers_follow_the_adapters_and_software_ones_say_so() {
    let adapters = wgpu_adapters();
    let providers = wgpu_providers();
    assert!(providers.len() <= adapters.len());
    for p in &providers {
        let a = adapters
            .iter()
            .find(|a| Device::Wgpu { adapter: a.index } == p.device())
            .expect("each provider is an adapter");
        assert_eq!(p.is_software(), a.software);
        assert!(p.name().contains(&a.name), "{}", p.name());
        // A software device alone is never placed on unless named.
        if p.is_software() {
            let provider: Arc<dyn Provider> = Arc::new(aihal_kernels::wgpu_provider(a.index).expect("open"));
            let err = Executor::builder().provider(provider).build().unwrap_err();
            assert!(matches!(err, CoreError::DeviceNotAvailable { .. }), "{err}");
        }
    }
    let past = adapters.len() + 2;
    let err = aihal_kernels::wgpu_provider(past).unwrap_err();
    assert!(matches!(err, CoreError::DeviceNotAvailable { .. }), "{err}");
}
