//! Sentences per second of all-MiniLM-L6-v2 at batch 1 and batch 32: aihal-models'
//! `SentenceEmbedder` with f32 and Q8_0 linear weights on the process's executor, beside
//! candle-transformers' BERT (f32, candle's CPU matmuls) with the same mean pooling and
//! normalisation, in the same run. Every path tokenizes with the same tokenizer; each is
//! checked against candle-transformers before it is timed (f32: 1e-4 max abs; Q8_0: cosine
//! ≥ 0.995).
//!
//! ```sh
//! cargo bench --bench embed
//! ```
//!
//! Needs `.testdata/all-MiniLM-L6-v2` (or `AIHAL_MINILM_DIR`); without it the bench says so
//! and does nothing.
#![allow(missing_docs)] // criterion_group!/criterion_main! generate undocumented items

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

use aihal::models::pooling::cosine;
use aihal::models::{BertBatch, EmbedderOptions, LinearWeights, SentenceEmbedder};
use aihal::quantize::QuantFormat;
use candle_core::{DType, Device, Tensor, D};
use candle_transformers::models::bert::{BertModel, Config};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

/// Sentences of 6 to 20 tokens; batch 32 cycles through them.
const SENTENCES: [&str; 8] = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The new movie is awesome and everyone in town wants to see it.",
    "A cat is sitting on the windowsill.",
    "Stock markets fell sharply on Monday after the announcement.",
    "How do I bake bread at home without a bread machine?",
    "The weather is lovely today.",
    "Quantization keeps transformer inference fast on small devices.",
];

fn model_dir() -> Option<PathBuf> {
    let dir =
        std::env::var_os("AIHAL_MINILM_DIR").map_or_else(|| PathBuf::from(".testdata/all-MiniLM-L6-v2"), PathBuf::from);
    dir.join("model.safetensors").exists().then_some(dir)
}

/// candle-transformers' BERT with sentence-transformers' pooling in candle ops.
fn candle_embed(model: &BertModel, batch: &BertBatch) -> Vec<Vec<f32>> {
    let (b, s) = (batch.batch_size(), batch.seq_len());
    let cpu = Device::Cpu;
    let ids = Tensor::from_slice(batch.ids(), (b, s), &cpu).unwrap();
    let types = Tensor::from_slice(batch.type_ids(), (b, s), &cpu).unwrap();
    let mask: Vec<u32> = batch
        .valid()
        .iter()
        .flat_map(|&n| (0..s).map(move |i| u32::from(i < n)))
        .collect();
    let mask = Tensor::from_vec(mask, (b, s), &cpu).unwrap();
    let hidden = model.forward(&ids, &types, Some(&mask)).unwrap();
    let mask = mask.to_dtype(DType::F32).unwrap().unsqueeze(2).unwrap();
    let mean = hidden
        .broadcast_mul(&mask)
        .unwrap()
        .sum(1)
        .unwrap()
        .broadcast_div(&mask.sum(1).unwrap())
        .unwrap();
    let norm = mean.sqr().unwrap().sum_keepdim(D::Minus1).unwrap().sqrt().unwrap();
    mean.broadcast_div(&norm).unwrap().to_vec2().unwrap()
}

fn bench(c: &mut Criterion) {
    let Some(dir) = model_dir() else {
        eprintln!("embed bench: no .testdata/all-MiniLM-L6-v2 (run `bash .ci/run` or set AIHAL_MINILM_DIR); skipped");
        return;
    };
    let exec = aihal::executor().unwrap();
    let ours = SentenceEmbedder::load(&exec, &dir, EmbedderOptions::default()).unwrap();
    let q8 = SentenceEmbedder::load(
        &exec,
        &dir,
        EmbedderOptions::default().weights(LinearWeights::quantized(QuantFormat::Q8_0)),
    )
    .unwrap();
    // candle-transformers' config from the same config.json, as our loader read it.
    let cfg = ours.model().config();
    assert_eq!(cfg.hidden_act, aihal::models::HiddenAct::Gelu);
    let config = Config {
        vocab_size: cfg.vocab_size,
        hidden_size: cfg.hidden_size,
        num_hidden_layers: cfg.num_hidden_layers,
        num_attention_heads: cfg.num_attention_heads,
        intermediate_size: cfg.intermediate_size,
        max_position_embeddings: cfg.max_position_embeddings,
        type_vocab_size: cfg.type_vocab_size,
        layer_norm_eps: f64::from(cfg.layer_norm_eps),
        pad_token_id: cfg.pad_token_id as usize,
        ..Config::default()
    };
    let tensors = candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap();
    let vb = candle_nn::VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
    let peer = BertModel::load(vb, &config).unwrap();

    let mut g = c.benchmark_group("minilm_embed");
    g.sample_size(10).measurement_time(Duration::from_secs(4));
    for batch in [1usize, 32] {
        let sentences: Vec<&str> = SENTENCES.iter().copied().cycle().take(batch).collect();
        // Check each path's output before timing it.
        let want = candle_embed(&peer, &ours.tokenize(&sentences).unwrap());
        let got = ours.embed(&sentences).unwrap();
        let diff = got
            .iter()
            .zip(&want)
            .flat_map(|(a, b)| a.iter().zip(b).map(|(x, y)| (x - y).abs()))
            .fold(0.0f32, f32::max);
        assert!(diff <= 1e-4, "f32 embeddings differ from candle-transformers by {diff}");
        let worst = q8
            .embed(&sentences)
            .unwrap()
            .iter()
            .zip(&want)
            .map(|(a, b)| cosine(a, b))
            .fold(1.0f32, f32::min);
        assert!(worst >= 0.995, "Q8_0 cosine to f32 {worst}");

        g.throughput(Throughput::Elements(batch as u64));
        g.bench_with_input(BenchmarkId::new("aihal_f32", batch), &sentences, |b, s| {
            b.iter(|| black_box(ours.embed(black_box(s)).unwrap()));
        });
        g.bench_with_input(BenchmarkId::new("aihal_q8_0", batch), &sentences, |b, s| {
            b.iter(|| black_box(q8.embed(black_box(s)).unwrap()));
        });
        g.bench_with_input(
            BenchmarkId::new("candle_transformers_f32", batch),
            &sentences,
            |b, s| {
                b.iter(|| black_box(candle_embed(&peer, &ours.tokenize(black_box(s)).unwrap())));
            },
        );
    }
    g.finish();
    println!("{}", exec.report());
}

criterion_group!(benches, bench);
criterion_main!(benches);
