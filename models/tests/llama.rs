//! The llama decoder against candle-transformers' `quantized_llama::ModelWeights` on the same
//! GGUF files: a tiny random model written on the fly (Q8_0 and F32 weights, 2 layers,
//! grouped-query attention with 4 query and 2 key/value heads), and SmolLM2-135M-Instruct
//! Q4_1 when the test data is there. Plus generation, the KV cache, and bad input.

mod common;

use std::path::Path;
use std::sync::{Arc, OnceLock};

use aihal_core::CoreError;
use aihal_models::llama::{
    generate, GenerateOptions, Generator, LlamaModel, LlamaOptions, Sampler, SamplingOptions, StopReason,
};
use aihal_ops::{Executor, LinearPrecision, OpKind};
use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use common::{cpu_executor, LlamaPeer, Rng};

fn exec() -> Arc<Executor> {
    static EXEC: OnceLock<Arc<Executor>> = OnceLock::new();
    Arc::clone(EXEC.get_or_init(cpu_executor))
}

/// The tiny model's shape.
const VOCAB: usize = 64;
const HIDDEN: usize = 64;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const HEAD_DIM: usize = HIDDEN / HEADS;
const FFN: usize = 128;
const LAYERS: usize = 2;
const CONTEXT: usize = 64;

/// How a tiny file is written.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Weights {
    /// Linear weights and the embedding table Q8_0, norms F32, the output tied to the table.
    Q8,
    /// The same values as `Q8` dequantized, all F32, with an explicit `output.weight`.
    F32,
}

/// The tiny model's tensors as candle row-major f32 tensors: weights with the spread of a
/// trained model, RMSNorm gains near 1.
fn tiny_tensors(seed: u64) -> Vec<(String, Tensor)> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::new();
    let mut put = |name: String, shape: &[usize], scale: f32, offset: f32| {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| offset + scale * rng.normal()).collect();
        out.push((name, Tensor::from_vec(v, shape, &Device::Cpu).unwrap()));
    };
    // A small table beside strong layers, so that the residual stream is not dominated by
    // the input token's own row (which, with the output tied to the table, would make every
    // greedy continuation repeat the last token).
    put("token_embd.weight".into(), &[VOCAB, HIDDEN], 0.3, 0.0);
    let (q, kv) = (HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM);
    for l in 0..LAYERS {
        let p = format!("blk.{l}");
        put(format!("{p}.attn_norm.weight"), &[HIDDEN], 0.1, 1.0);
        put(format!("{p}.ffn_norm.weight"), &[HIDDEN], 0.1, 1.0);
        for (name, o, i) in [
            ("attn_q", q, HIDDEN),
            ("attn_k", kv, HIDDEN),
            ("attn_v", kv, HIDDEN),
            ("attn_output", HIDDEN, q),
            ("ffn_gate", FFN, HIDDEN),
            ("ffn_up", FFN, HIDDEN),
            ("ffn_down", HIDDEN, FFN),
        ] {
            // Q and K larger, so attention is not uniform; the outputs into the residual
            // stream larger, so the layers shape the prediction.
            let gain = match name {
                "attn_q" | "attn_k" => 2.0,
                "attn_output" | "ffn_down" => 3.0,
                _ => 1.0,
            };
            put(format!("{p}.{name}.weight"), &[o, i], gain / (i as f32).sqrt(), 0.0);
        }
    }
    put("output_norm.weight".into(), &[HIDDEN], 0.1, 1.0);
    out
}

fn tiny_metadata(arch: &str) -> Vec<(String, gguf_file::Value)> {
    use gguf_file::Value::{String as S, F32, U32};
    let k = |s: &str| format!("{arch}.{s}");
    vec![
        ("general.architecture".into(), S(arch.into())),
        (k("context_length"), U32(CONTEXT as u32)),
        (k("embedding_length"), U32(HIDDEN as u32)),
        (k("block_count"), U32(LAYERS as u32)),
        (k("feed_forward_length"), U32(FFN as u32)),
        (k("attention.head_count"), U32(HEADS as u32)),
        (k("attention.head_count_kv"), U32(KV_HEADS as u32)),
        (k("attention.layer_norm_rms_epsilon"), F32(1e-5)),
        (k("rope.freq_base"), F32(10_000.0)),
        (k("rope.dimension_count"), U32(HEAD_DIM as u32)),
        (k("vocab_size"), U32(VOCAB as u32)),
    ]
}

/// The tiny file's tensors as GGUF stores them.
fn tiny_qtensors(weights: Weights, seed: u64) -> Vec<(String, QTensor)> {
    let mut out: Vec<(String, QTensor)> = tiny_tensors(seed)
        .into_iter()
        .map(|(name, t)| {
            let q = if t.rank() == 2 {
                let q8 = QTensor::quantize(&t, GgmlDType::Q8_0).unwrap();
                match weights {
                    Weights::Q8 => q8,
                    Weights::F32 => QTensor::quantize(&q8.dequantize(&Device::Cpu).unwrap(), GgmlDType::F32).unwrap(),
                }
            } else {
                QTensor::quantize(&t, GgmlDType::F32).unwrap()
            };
            (name, q)
        })
        .collect();
    if weights == Weights::F32 {
        let table = out
            .iter()
            .find(|(n, _)| n == "token_embd.weight")
            .unwrap()
            .1
            .dequantize(&Device::Cpu)
            .unwrap();
        out.push((
            "output.weight".into(),
            QTensor::quantize(&table, GgmlDType::F32).unwrap(),
        ));
    }
    out
}

fn write_gguf(path: &Path, metadata: &[(String, gguf_file::Value)], tensors: &[(String, QTensor)]) {
    let md: Vec<(&str, &gguf_file::Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let ts: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut f = std::fs::File::create(path).unwrap();
    gguf_file::write(&mut f, &md, &ts).unwrap();
}

/// A temporary tiny llama GGUF file.
fn tiny_file(weights: Weights) -> tempfile::NamedTempFile {
    let f = tempfile::NamedTempFile::new().unwrap();
    write_gguf(f.path(), &tiny_metadata("llama"), &tiny_qtensors(weights, 7));
    f
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn max_abs(a: &[f32]) -> f32 {
    a.iter().fold(0.0, |m, x| m.max(x.abs()))
}

fn load(path: &Path, precision: LinearPrecision) -> LlamaModel {
    LlamaModel::load(
        &exec(),
        path,
        LlamaOptions {
            precision,
            ..LlamaOptions::default()
        },
    )
    .unwrap()
}

fn logits(model: &LlamaModel, ids: &[u32]) -> Vec<f32> {
    let mut state = model.new_state(None).unwrap();
    model.forward(ids, &mut state).unwrap()
}

fn greedy(model: &LlamaModel, prompt: &[u32], n: usize) -> Vec<u32> {
    let options = GenerateOptions {
        max_tokens: n,
        ..GenerateOptions::default()
    };
    let out = generate(model, prompt, &options, |_| Ok(())).unwrap();
    assert_eq!(out.stop, StopReason::MaxTokens);
    out.tokens
}

const TINY_PROMPT: [u32; 7] = [1, 17, 42, 5, 63, 30, 8];

#[test]
fn tiny_config_is_read_from_the_metadata() {
    let f = tiny_file(Weights::Q8);
    let model = load(f.path(), LinearPrecision::default());
    let c = model.config();
    assert_eq!(
        (
            c.vocab_size,
            c.embedding_length,
            c.block_count,
            c.head_count,
            c.head_count_kv,
            c.head_dim
        ),
        (VOCAB, HIDDEN, LAYERS, HEADS, KV_HEADS, HEAD_DIM)
    );
    assert_eq!(
        (c.feed_forward_length, c.context_length, c.rope_freq_base),
        (FFN, CONTEXT, 10_000.0)
    );
}

/// With every weight in F32 both implementations compute in f32 throughout (candle
/// dequantizes F32 GGUF tensors into plain matmuls), so the logits differ only by f32
/// rounding in another order (sums of 64-128 products, softmax, RoPE angles computed in f64
/// here and f32 there): a few ulps of values of order 1-10 per layer. Observed: 1.6e-6 of
/// the largest logit; the tolerance, 1e-4 of it, leaves a wide margin for other instruction
/// sets' summation orders.
#[test]
fn tiny_f32_first_step_logits_match_candle() {
    let f = tiny_file(Weights::F32);
    let ours = logits(&load(f.path(), LinearPrecision::F32), &TINY_PROMPT);
    let theirs = LlamaPeer::load(f.path()).forward(&TINY_PROMPT, 0);
    let (d, scale) = (max_abs_diff(&ours, &theirs), max_abs(&theirs));
    eprintln!("tiny F32: max |logit diff| {d:e}, max |logit| {scale}");
    assert!(d <= 1e-4 * scale.max(1.0), "{d} > 1e-4 * {scale}");
}

/// With Q8_0 weights both implementations round the activations of every linear layer to
/// int8 in blocks of 32 (candle as ggml does, with f16 scales; the CPU provider here with f32
/// ones), so each differs from the exact f32 computation over the same weights by its own
/// rounding. The bound: our distance to candle is at most 3x candle's own distance to the
/// exact f32 result (`Weights::F32`, computed by candle in f32), plus 1e-4 for f32 order:
/// i.e. our rounding error is at most about twice candle's.
#[test]
fn tiny_q8_first_step_logits_match_candle() {
    let q8 = tiny_file(Weights::Q8);
    let f32s = tiny_file(Weights::F32);
    let ours = logits(&load(q8.path(), LinearPrecision::default()), &TINY_PROMPT);
    let theirs = LlamaPeer::load(q8.path()).forward(&TINY_PROMPT, 0);
    let exact = LlamaPeer::load(f32s.path()).forward(&TINY_PROMPT, 0);
    let (d, own) = (max_abs_diff(&ours, &theirs), max_abs_diff(&theirs, &exact));
    eprintln!(
        "tiny Q8_0: max |ours - candle| {d:e}; candle's own rounding {own:e}; ours {:e}",
        max_abs_diff(&ours, &exact)
    );
    assert!(d <= 3.0 * own + 1e-4, "{d} > 3 * {own} + 1e-4");
    // The same weights with f32 activations: as close to the exact result as f32 allows.
    let ours_f32 = logits(&load(q8.path(), LinearPrecision::F32), &TINY_PROMPT);
    let d = max_abs_diff(&ours_f32, &exact);
    assert!(d <= 1e-4 * max_abs(&exact).max(1.0), "f32 activations: {d}");
}

#[test]
fn tiny_greedy_continuations_match_candle_for_32_tokens() {
    for weights in [Weights::Q8, Weights::F32] {
        let f = tiny_file(weights);
        let ours = greedy(&load(f.path(), LinearPrecision::default()), &TINY_PROMPT, 32);
        let theirs = LlamaPeer::load(f.path()).greedy(&TINY_PROMPT, 32);
        eprintln!("greedy: {ours:?}");
        assert_eq!(ours, theirs, "{}", if weights == Weights::Q8 { "Q8_0" } else { "F32" });
    }
}

/// Prefill then one token at a time gives the logits a full recompute of the whole prefix
/// gives: the cache holds exactly what recomputing would produce. Rows are computed
/// independently in both paths; only the summation order of kernels chosen by row count may
/// differ, hence 1e-4 relative.
#[test]
fn tiny_kv_cache_path_equals_full_recompute() {
    let f = tiny_file(Weights::Q8);
    let model = load(f.path(), LinearPrecision::default());
    let seq: Vec<u32> = (0..20).map(|i| (i * 37 + 11) % VOCAB as u32).collect();
    let mut state = model.new_state(Some(32)).unwrap();
    let mut cached = model.forward(&seq[..6], &mut state).unwrap();
    for end in 6..=seq.len() {
        let full = logits(&model, &seq[..end]);
        let d = max_abs_diff(&cached, &full);
        assert!(d <= 1e-4 * max_abs(&full).max(1.0), "after {end} tokens: {d}");
        if end < seq.len() {
            cached = model.forward(&seq[end..=end], &mut state).unwrap();
        }
    }
    assert_eq!(state.position(), seq.len());
    // A rolled-back state repeats itself.
    state.truncate(10).unwrap();
    let again = model.forward(&seq[10..11], &mut state).unwrap();
    let d = max_abs_diff(&again, &logits(&model, &seq[..11]));
    assert!(d <= 1e-4 * max_abs(&again).max(1.0), "after truncate: {d}");
}

#[test]
fn sampling_is_reproducible_and_top_k_1_is_greedy() {
    let f = tiny_file(Weights::Q8);
    let model = load(f.path(), LinearPrecision::default());
    let sampled = |temperature, top_k, top_p, seed| {
        let options = GenerateOptions {
            max_tokens: 16,
            sampling: SamplingOptions {
                temperature,
                top_k,
                top_p,
                seed,
            },
            ..GenerateOptions::default()
        };
        generate(&model, &TINY_PROMPT, &options, |_| Ok(())).unwrap().tokens
    };
    let a = sampled(1.0, 0, 1.0, 42);
    assert_eq!(a, sampled(1.0, 0, 1.0, 42), "same seed, same tokens");
    assert_ne!(
        a,
        sampled(1.0, 0, 1.0, 43),
        "another seed, other tokens (16 draws over 64 ids)"
    );
    let g = greedy(&model, &TINY_PROMPT, 16);
    assert_eq!(sampled(0.8, 1, 1.0, 5), g, "top_k 1 is greedy");
    assert_eq!(sampled(0.8, 0, 1e-6, 5), g, "a tiny top_p is greedy");
    assert_eq!(sampled(0.0, 5, 0.5, 5), g, "temperature 0 is greedy");
}

#[test]
fn sampler_follows_the_distribution() {
    // Logits ln(1), ln(2), ln(3), ln(4) -> probabilities 0.1 .. 0.4; 20000 draws each within
    // 5 standard deviations (at most 0.017).
    let logits: Vec<f32> = (1..=4).map(|i| (i as f32).ln()).collect();
    let mut s = Sampler::new(SamplingOptions {
        temperature: 1.0,
        top_k: 0,
        top_p: 1.0,
        seed: 9,
    })
    .unwrap();
    let mut counts = [0usize; 4];
    let n = 20_000;
    for _ in 0..n {
        counts[s.sample(&logits).unwrap() as usize] += 1;
    }
    for (i, &c) in counts.iter().enumerate() {
        let p = (i + 1) as f64 / 10.0;
        let sd = (p * (1.0 - p) / n as f64).sqrt();
        assert!((c as f64 / n as f64 - p).abs() < 5.0 * sd, "{counts:?}");
    }
    // top_k 2 keeps ids 3 and 2 only; top_p 0.35 keeps id 3 only (0.4 >= 0.35).
    let mut s = Sampler::new(SamplingOptions {
        temperature: 1.0,
        top_k: 2,
        top_p: 1.0,
        seed: 1,
    })
    .unwrap();
    assert!((0..200).all(|_| s.sample(&logits).unwrap() >= 2));
    let mut s = Sampler::new(SamplingOptions {
        temperature: 1.0,
        top_k: 0,
        top_p: 0.35,
        seed: 1,
    })
    .unwrap();
    assert!((0..200).all(|_| s.sample(&logits).unwrap() == 3));
    assert!(s.sample(&[0.0, f32::NAN]).is_err());
    assert!(Sampler::new(SamplingOptions {
        temperature: -1.0,
        ..SamplingOptions::greedy()
    })
    .is_err());
}

#[test]
fn generation_stops_at_a_stop_id_and_streams_tokens() {
    let f = tiny_file(Weights::Q8);
    let model = load(f.path(), LinearPrecision::default());
    let g = greedy(&model, &TINY_PROMPT, 8);
    let stop = g[3];
    let first = g.iter().position(|&t| t == stop).unwrap();
    let mut streamed = Vec::new();
    let options = GenerateOptions {
        max_tokens: 8,
        stop: vec![stop],
        ..GenerateOptions::default()
    };
    let out = generate(&model, &TINY_PROMPT, &options, |id| {
        streamed.push(id);
        Ok(())
    })
    .unwrap();
    assert_eq!(out.stop, StopReason::Stop(stop));
    assert_eq!(out.tokens, g[..first]);
    assert_eq!(streamed, out.tokens);
    assert_eq!(out.prompt_tokens, TINY_PROMPT.len());

    // A generator continues its sequence: two calls equal one call over both prompts.
    let mut gen = Generator::new(
        &model,
        GenerateOptions {
            max_tokens: 4,
            ..GenerateOptions::default()
        },
    )
    .unwrap();
    let a = gen.generate(&TINY_PROMPT, |_| Ok(())).unwrap().tokens;
    let b = gen.generate(&[9, 10], |_| Ok(())).unwrap().tokens;
    let mut whole = TINY_PROMPT.to_vec();
    whole.extend(&a);
    whole.extend([9, 10]);
    assert_eq!(b, greedy(&model, &whole, 4));
    assert_eq!(gen.position(), whole.len() + 3);

    // The state fills up: generation ends there.
    let options = GenerateOptions {
        max_tokens: 100,
        ..GenerateOptions::default()
    };
    let out = generate(&model, &TINY_PROMPT, &options, |_| Ok(())).unwrap();
    assert_eq!(out.stop, StopReason::ContextFull);
    assert_eq!(out.tokens.len(), CONTEXT - TINY_PROMPT.len() + 1);
}

fn message(e: &CoreError) -> String {
    e.to_string()
}

fn load_err(path: &Path) -> CoreError {
    LlamaModel::load(&exec(), path, LlamaOptions::default()).unwrap_err()
}

#[test]
fn bad_files_are_errors_naming_what() {
    // Truncated: the header says more than the file holds.
    let f = tiny_file(Weights::Q8);
    let bytes = std::fs::read(f.path()).unwrap();
    let cut = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(cut.path(), &bytes[..bytes.len() * 2 / 3]).unwrap();
    let e = load_err(cut.path());
    assert!(
        matches!(e, CoreError::InvalidInput(_)) && message(&e).contains("past the end"),
        "{e}"
    );

    // Another architecture.
    let other = tempfile::NamedTempFile::new().unwrap();
    write_gguf(other.path(), &tiny_metadata("mamba"), &tiny_qtensors(Weights::Q8, 7));
    let e = load_err(other.path());
    assert!(
        matches!(e, CoreError::Unsupported { .. }) && message(&e).contains("\"mamba\""),
        "{e}"
    );

    // A missing tensor.
    let mut tensors = tiny_qtensors(Weights::Q8, 7);
    tensors.retain(|(n, _)| n != "blk.1.ffn_up.weight");
    let missing = tempfile::NamedTempFile::new().unwrap();
    write_gguf(missing.path(), &tiny_metadata("llama"), &tensors);
    let e = load_err(missing.path());
    assert!(
        matches!(e, CoreError::InvalidInput(_)) && message(&e).contains("blk.1.ffn_up.weight"),
        "{e}"
    );

    // A misshapen one: attn_k with the query's rows.
    let mut tensors = tiny_qtensors(Weights::Q8, 7);
    let q = tensors
        .iter()
        .find(|(n, _)| n == "blk.0.attn_q.weight")
        .unwrap()
        .1
        .dequantize(&Device::Cpu)
        .unwrap();
    for (n, t) in &mut tensors {
        if n == "blk.0.attn_k.weight" {
            *t = QTensor::quantize(&q, GgmlDType::Q8_0).unwrap();
        }
    }
    let bad = tempfile::NamedTempFile::new().unwrap();
    write_gguf(bad.path(), &tiny_metadata("llama"), &tensors);
    let e = load_err(bad.path());
    assert!(
        matches!(e, CoreError::ShapeMismatch { .. }) && message(&e).contains("blk.0.attn_k.weight"),
        "{e}"
    );

    // No such file.
    let e = load_err(Path::new("/nonexistent/model.gguf"));
    assert!(
        matches!(e, CoreError::Io(_)) && message(&e).contains("/nonexistent/model.gguf"),
        "{e}"
    );
}

#[test]
fn bad_input_is_an_error_naming_what() {
    let f = tiny_file(Weights::Q8);
    let model = load(f.path(), LinearPrecision::default());
    let mut state = model.new_state(None).unwrap();

    let long: Vec<u32> = (0..=CONTEXT as u32).map(|i| i % VOCAB as u32).collect();
    let e = model.forward(&long, &mut state).unwrap_err();
    assert!(
        matches!(e, CoreError::InvalidInput(_)) && message(&e).contains("context length 64"),
        "{e}"
    );
    let e = generate(&model, &long, &GenerateOptions::default(), |_| Ok(())).unwrap_err();
    assert!(message(&e).contains("context length 64"), "{e}");

    let e = model.forward(&[1, 2, VOCAB as u32], &mut state).unwrap_err();
    assert!(
        matches!(e, CoreError::InvalidInput(_)) && message(&e).contains("token id 64 at index 2"),
        "{e}"
    );
    assert!(model.forward(&[], &mut state).is_err());
    assert_eq!(state.position(), 0, "refused input appends nothing");
    assert!(model.new_state(Some(CONTEXT + 1)).is_err());
    assert!(model.new_state(Some(0)).is_err());

    // Past the state's end after some tokens.
    let mut small = model.new_state(Some(8)).unwrap();
    model.forward(&TINY_PROMPT, &mut small).unwrap();
    let e = model.forward(&[1, 2], &mut small).unwrap_err();
    assert!(message(&e).contains("max_len 8"), "{e}");
    assert_eq!(small.position(), TINY_PROMPT.len());
}

/// A plan from a dispatch table: without a table there is none (an error naming the fix);
/// with one, every op of the chain has a device, and the model computes what it did before
/// (here the table lists the CPU alone, so the plan keeps everything there, the embedding and
/// rotary steps the table never measured included).
#[test]
fn the_model_follows_a_plan_from_the_dispatch_table() {
    use aihal_ops::table::{DispatchTable, Entry, Fingerprint, MClass, Measured, OpKey, Parity, SizeClass};
    use aihal_ops::OpKind;

    let file = tiny_file(Weights::Q8);
    let mut model = load(file.path(), LinearPrecision::F32);
    let err = model.follow_plan(MClass::One).unwrap_err();
    assert!(
        err.is_not_implemented() && err.to_string().contains("calibrate"),
        "{err}"
    );

    let entry = |op, format: Option<&str>, size| Entry {
        key: OpKey {
            op,
            format: format.map(str::to_owned),
            m: MClass::One,
            size,
        },
        date: "2026-12-06".into(),
        providers: vec![Measured {
            device: "cpu".into(),
            median_ns: Some(1000),
            parity: Parity::Pass { max_error: 0.1 },
        }],
    };
    let table = DispatchTable {
        machine: Fingerprint::of_this_machine(vec![]),
        entries: vec![
            entry(OpKind::RmsNorm, None, SizeClass::of(0)),
            entry(OpKind::Linear, Some("q8_0"), SizeClass::of(0)),
        ],
        transfers: vec![],
    };
    let provider: Arc<dyn aihal_ops::Provider> = Arc::new(aihal_cpu::CpuProvider);
    let exec = Executor::builder().provider(provider).table(table).build().unwrap();
    let mut planned = LlamaModel::load(&exec, file.path(), LlamaOptions::default()).unwrap();
    let before = logits(&planned, &[1, 5, 9]);
    let plan = planned.follow_plan(MClass::One).unwrap();
    assert_eq!(
        plan.devices.len(),
        13,
        "embedding, one layer's 10 ops (Q, K and V one op, gate and up one op), output norm and output"
    );
    assert!(plan.devices.iter().all(|d| d == "cpu"), "{plan:?}");
    assert_eq!(plan.transfers, 0);
    assert_eq!(logits(&planned, &[1, 5, 9]), before);
}

/// Q, K and V, and the gate and up projections, stacked into one op each give the bits of
/// the separate ops: logits and greedy tokens, with int8 and f32 activations, one linear call
/// per group instead of one per projection; F32 weights never stack.
#[test]
fn stacked_projections_give_the_bits_of_separate_ones() {
    let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
    for (weights, stacks) in [(Weights::Q8, true), (Weights::F32, false)] {
        let f = tiny_file(weights);
        for precision in [LinearPrecision::Int8Activations, LinearPrecision::F32] {
            let run = |stack_projections: bool| {
                let exec = cpu_executor();
                let options = LlamaOptions {
                    precision,
                    stack_projections,
                    ..LlamaOptions::default()
                };
                let model = LlamaModel::load(&exec, f.path(), options).unwrap();
                let out = (bits(logits(&model, &TINY_PROMPT)), greedy(&model, &TINY_PROMPT, 8));
                let report = exec.report();
                let forwards = report.calls(OpKind::RmsNorm, aihal_core::Device::Cpu) / (2 * LAYERS as u64 + 1);
                (out, report.calls(OpKind::Linear, aihal_core::Device::Cpu) / forwards)
            };
            let (stacked, stacked_calls) = run(true);
            let (separate, separate_calls) = run(false);
            assert_eq!(stacked, separate, "{precision:?}");
            // Per forward: the layers' linear calls and the output projection's one.
            assert_eq!(separate_calls, 7 * LAYERS as u64 + 1, "{precision:?}");
            let want = if stacks { 4 * LAYERS as u64 + 1 } else { separate_calls };
            assert_eq!(stacked_calls, want, "{precision:?}");
        }
    }
}

/// A quantized embedding table (tied to the output projection) read in parts of rows, each its
/// own embedding and output op, gives the bits of the table read whole: prompt rows looked up
/// across every part, the logits of every part in vocabulary order, the same greedy tokens,
/// with parts that divide the vocabulary and a shorter last one. A part size of 0 is refused.
#[test]
fn a_table_read_in_parts_gives_the_bits_of_the_whole_table() {
    let f = tiny_file(Weights::Q8);
    let whole = load(f.path(), LinearPrecision::default());
    let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
    // Q8_0 rows of HIDDEN values: 34 bytes per 32.
    let row_bytes = HIDDEN / 32 * 34;
    for rows in [16, 24, 1] {
        // An executor of its own, so that its report counts this model's calls alone.
        let exec = cpu_executor();
        let options = LlamaOptions {
            vocab_part_bytes: rows * row_bytes,
            ..LlamaOptions::default()
        };
        let parts = LlamaModel::load(&exec, f.path(), options).unwrap();
        assert_eq!(
            bits(logits(&parts, &TINY_PROMPT)),
            bits(logits(&whole, &TINY_PROMPT)),
            "parts of {rows} rows"
        );
        assert_eq!(
            greedy(&parts, &TINY_PROMPT, 8),
            greedy(&whole, &TINY_PROMPT, 8),
            "parts of {rows} rows"
        );
        // One output op per part: as many linear calls per forward as the layers' (Q, K and V
        // one call, gate and up one call) and the parts.
        let report = exec.report();
        let forwards = report.calls(OpKind::RmsNorm, aihal_core::Device::Cpu) / (2 * LAYERS as u64 + 1);
        let per_forward = report.calls(OpKind::Linear, aihal_core::Device::Cpu) / forwards;
        assert_eq!(per_forward, 4 * LAYERS as u64 + VOCAB.div_ceil(rows) as u64, "{report}");
    }
    let options = LlamaOptions {
        vocab_part_bytes: 0,
        ..LlamaOptions::default()
    };
    let err = LlamaModel::load(&exec(), f.path(), options).unwrap_err();
    assert!(matches!(err, CoreError::InvalidConfig(_)), "{err}");
}
