//! The BERT encoder and the sentence embedder on small random checkpoints written on the fly
//! (no test data needed), against candle-transformers' BERT on the same files.
//!
//! Tolerance: 1e-4 absolute per value of the hidden states and embeddings (values of order
//! 1 after each LayerNorm). Both sides compute in f32 with different summation orders
//! (candle's gemm vs our provider's kernels, our attention's online softmax vs candle's
//! masked softmax); what is seen is a few 1e-6.

mod common;

use aihal_models::pooling::cosine;
use aihal_models::{BertBatch, BertModel, EmbedderOptions, LinearWeights, SentenceEmbedder};
use aihal_ops::OpKind;
use aihal_quantize::QuantFormat;
use common::{cpu_executor, max_abs_diff, tiny_model_dir, Peer, Rng, TINY};

/// A batch of `lens` random sequences with token types 0 then 1 (as a sentence pair has).
fn random_batch(lens: &[usize], seed: u64) -> BertBatch {
    let mut rng = Rng::new(seed);
    let ids: Vec<Vec<u32>> = lens
        .iter()
        .map(|&n| (0..n).map(|_| rng.below(TINY.vocab as u32)).collect())
        .collect();
    let types: Vec<Vec<u32>> = lens
        .iter()
        .map(|&n| (0..n).map(|i| u32::from(i >= n / 2)).collect())
        .collect();
    BertBatch::with_type_ids(&ids, &types, 0).unwrap()
}

#[test]
fn hidden_states_match_candle_transformers_with_padding_and_token_types() {
    let dir = tiny_model_dir(1);
    let exec = cpu_executor();
    let ours = BertModel::load(&exec, dir.path(), LinearWeights::F32).unwrap();
    let peer = Peer::load(dir.path());
    for (lens, seed) in [
        (&[7usize][..], 10),
        (&[5, 12, 1, 9][..], 11),
        (&[TINY.max_pos, 3][..], 12),
    ] {
        let batch = random_batch(lens, seed);
        let got = ours.forward(&batch).unwrap();
        let (b, s) = (batch.batch_size(), batch.seq_len());
        assert_eq!(got.dims(), &[b, s, TINY.hidden]);
        let got = got.to_vec().unwrap();
        let want = peer.hidden(&batch).flatten_all().unwrap().to_vec1::<f32>().unwrap();
        // Every row, padding rows included: both mask padding as keys only.
        let diff = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        println!("lengths {lens:?}: max |ours - candle-transformers| = {diff:e}");
        assert!(diff <= 1e-4, "lengths {lens:?}: max abs difference {diff}");
    }
}

#[test]
fn sentence_embeddings_match_candle_transformers_and_ignore_padding() {
    let dir = tiny_model_dir(2);
    let exec = cpu_executor();
    let embedder = SentenceEmbedder::load(&exec, dir.path(), EmbedderOptions::default()).unwrap();
    let peer = Peer::load(dir.path());
    let sentences = [
        "The cat sat on the mat.",
        "A dog",
        "the red dogs ran in the big park, and the cat is small",
        "blue",
    ];
    let got = embedder.embed(&sentences).unwrap();
    let want = peer.embeddings(&embedder.tokenize(&sentences).unwrap());
    let diff = max_abs_diff(&got, &want);
    println!("max |ours - candle-transformers| over the embeddings = {diff:e}");
    assert!(diff <= 1e-4, "max abs difference {diff}");
    for e in &got {
        let norm = e.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");
    }
    // Each sentence alone (no padding) gives what it gave in the padded batch.
    for (s, e) in sentences.iter().zip(&got) {
        let alone = embedder.embed(&[s]).unwrap();
        let d = max_abs_diff(&alone, std::slice::from_ref(e));
        assert!(d <= 1e-5, "{s:?}: alone vs batched differ by {d}");
    }
    // Batches of 2 chunk the input and give the same vectors.
    let chunked = SentenceEmbedder::load(&exec, dir.path(), EmbedderOptions::default().batch_size(2))
        .unwrap()
        .embed(&sentences)
        .unwrap();
    assert!(max_abs_diff(&chunked, &got) <= 1e-5);
}

#[test]
fn checkpoints_under_a_bert_prefix_load_the_same_encoder() {
    let dir = tiny_model_dir(3);
    let prefixed = tempfile::tempdir().unwrap();
    let tensors = common::tiny_tensors(TINY, 3)
        .into_iter()
        .map(|(n, v)| (format!("bert.{n}"), v))
        .collect();
    common::write_safetensors(&prefixed.path().join("model.safetensors"), &tensors);
    std::fs::copy(dir.path().join("config.json"), prefixed.path().join("config.json")).unwrap();
    let exec = cpu_executor();
    let batch = random_batch(&[6, 4], 30);
    let a = BertModel::load(&exec, dir.path(), LinearWeights::F32)
        .unwrap()
        .forward(&batch)
        .unwrap();
    let b = BertModel::load(&exec, prefixed.path(), LinearWeights::F32)
        .unwrap()
        .forward(&batch)
        .unwrap();
    assert_eq!(a.to_vec().unwrap(), b.to_vec().unwrap());
}

#[test]
fn tokenizer_ignores_the_files_padding_and_truncates_at_max_tokens() {
    let dir = tiny_model_dir(4);
    let exec = cpu_executor();
    let embedder = SentenceEmbedder::load(&exec, dir.path(), EmbedderOptions::default()).unwrap();
    assert_eq!(embedder.max_tokens(), TINY.max_pos);
    // The file pads to a fixed 8; the embedder pads a batch to its longest sentence only.
    let batch = embedder.tokenize(&["The cat", "cats"]).unwrap();
    assert_eq!(batch.seq_len(), 4);
    assert_eq!(batch.valid(), &[4, 4]);
    // [CLS] the cat [SEP]; [CLS] cat ##s [SEP] (ids: 5 specials, then the words in order).
    assert_eq!(batch.ids(), &[2, 5, 6, 3, 2, 6, 15, 3]);
    let batch = embedder.tokenize(&["the", "the cat sat"]).unwrap();
    assert_eq!(batch.valid(), &[3, 5]);
    assert_eq!(&batch.ids()[..5], &[2, 5, 3, 0, 0], "right padding with [PAD]");
    // The file truncates at 8; ours at max_tokens, [SEP] kept last.
    let long = "the cat sat on the mat and the dog ran in the park";
    assert_eq!(embedder.tokenize(&[long]).unwrap().seq_len(), 15);
    let short = SentenceEmbedder::load(&exec, dir.path(), EmbedderOptions::default().max_tokens(5)).unwrap();
    let batch = short.tokenize(&[long]).unwrap();
    assert_eq!(batch.ids(), &[2, 5, 6, 7, 3]);
    assert_eq!(short.embed(&[long]).unwrap()[0].len(), TINY.hidden);
}

#[test]
fn every_op_of_a_forward_goes_through_the_executor() {
    let dir = tiny_model_dir(5);
    let exec = cpu_executor();
    let model = BertModel::load(&exec, dir.path(), LinearWeights::F32).unwrap();
    let before = exec.report();
    model.forward(&random_batch(&[5, 3], 50)).unwrap();
    let after = exec.report();
    let calls = |op| after.calls(op, aihal_core::Device::Cpu) - before.calls(op, aihal_core::Device::Cpu);
    let l = TINY.layers as u64;
    assert_eq!(calls(OpKind::Embedding), 3);
    assert_eq!(calls(OpKind::Add), 2 + 2 * l);
    assert_eq!(calls(OpKind::LayerNorm), 1 + 2 * l);
    assert_eq!(calls(OpKind::Linear), 6 * l);
    assert_eq!(calls(OpKind::Attention), l);
    assert_eq!(calls(OpKind::Activation), l);
    assert!(after.fallbacks.is_empty(), "{after}");
}

#[test]
fn quantized_linear_weights_stay_close_to_f32() {
    let dir = tiny_model_dir(6);
    let exec = cpu_executor();
    let sentences = ["the cat sat on the mat", "a big dog ran in the park", "blue and red"];
    let f32s = SentenceEmbedder::load(&exec, dir.path(), EmbedderOptions::default())
        .unwrap()
        .embed(&sentences)
        .unwrap();
    let q = SentenceEmbedder::load(
        &exec,
        dir.path(),
        EmbedderOptions::default().weights(LinearWeights::quantized(QuantFormat::Q8_0)),
    )
    .unwrap();
    assert_eq!(q.model().linear_weights(), LinearWeights::quantized(QuantFormat::Q8_0));
    for (a, b) in q.embed(&sentences).unwrap().iter().zip(&f32s) {
        let c = cosine(a, b);
        assert!(c >= 0.999, "Q8_0 vs f32 cosine {c}");
    }
}

#[test]
fn f16_and_bf16_checkpoints_load_as_their_f32_values() {
    let exec = cpu_executor();
    let batch = random_batch(&[6, 2], 70);
    for dtype in [safetensors::Dtype::F16, safetensors::Dtype::BF16] {
        let round = |x: f32| match dtype {
            safetensors::Dtype::F16 => half::f16::from_f32(x).to_f32(),
            _ => half::bf16::from_f32(x).to_f32(),
        };
        let bytes = |x: f32| match dtype {
            safetensors::Dtype::F16 => half::f16::from_f32(x).to_le_bytes(),
            _ => half::bf16::from_f32(x).to_le_bytes(),
        };
        let tensors = common::tiny_tensors(TINY, 7);
        let (narrow, wide) = (tiny_model_dir(7), tiny_model_dir(7));
        let raw: Vec<_> = tensors
            .iter()
            .map(|(n, (s, v))| (n.clone(), dtype, s.clone(), v.iter().flat_map(|&x| bytes(x)).collect()))
            .collect();
        common::write_raw_safetensors(&narrow.path().join("model.safetensors"), &raw);
        let rounded = tensors
            .into_iter()
            .map(|(n, (s, v))| (n, (s, v.into_iter().map(round).collect())))
            .collect();
        common::write_safetensors(&wide.path().join("model.safetensors"), &rounded);
        let a = BertModel::load(&exec, narrow.path(), LinearWeights::F32)
            .unwrap()
            .forward(&batch)
            .unwrap();
        let b = BertModel::load(&exec, wide.path(), LinearWeights::F32)
            .unwrap()
            .forward(&batch)
            .unwrap();
        assert_eq!(a.to_vec().unwrap(), b.to_vec().unwrap(), "{dtype:?}");
    }
}
