//! all-MiniLM-L6-v2 from its sentence-transformers files (`.testdata/all-MiniLM-L6-v2`; the
//! tests skip loudly without them, and fail with `AIHAL_REQUIRE_TESTDATA=1`), against
//! candle-transformers' BERT on the same files in the same process.
//!
//! Bounds:
//! - f32 embeddings: max absolute difference per value ≤ 1e-4 against candle-transformers
//!   (unit vectors of 384 values, each of order 0.05; seen: about 1e-7);
//! - Q8_0 linear weights with int8 activations: cosine to the f32 embedding ≥ 0.995 for
//!   every sentence (seen: above 0.999);
//! - similar sentences: each anchor's paraphrase scores at least 0.3 above its unrelated
//!   sentence.

mod common;

use std::sync::{Arc, OnceLock};

use aihal_models::pooling::cosine;
use aihal_models::{EmbedderOptions, LinearWeights, SentenceEmbedder};
use aihal_ops::Executor;
use aihal_quantize::QuantFormat;
use common::{cpu_executor, max_abs_diff, minilm_dir, Data, Peer};

fn main() {
    common::run(vec![
        common::trial(
            "minilm_tokenizer_gives_bert_uncased_ids",
            &[Data::MiniLm],
            minilm_tokenizer_gives_bert_uncased_ids,
        ),
        common::trial(
            "minilm_f32_embeddings_match_candle_transformers",
            &[Data::MiniLm],
            minilm_f32_embeddings_match_candle_transformers,
        ),
        common::trial(
            "minilm_similar_sentences_score_higher_than_unrelated_ones",
            &[Data::MiniLm],
            minilm_similar_sentences_score_higher_than_unrelated_ones,
        ),
        common::trial(
            "minilm_q8_0_embeddings_stay_close_to_f32",
            &[Data::MiniLm],
            minilm_q8_0_embeddings_stay_close_to_f32,
        ),
    ]);
}

/// Sentences of different lengths (so the batch pads), punctuation, case and a word the
/// vocabulary splits into pieces.
const SENTENCES: [&str; 5] = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The new movie is awesome",
    "Quantization keeps transformer inference fast on small devices, even without a GPU.",
    "cats",
];

/// The executor every test here shares, so the dispatch record covers them all.
fn exec() -> &'static Arc<Executor> {
    static EXEC: OnceLock<Arc<Executor>> = OnceLock::new();
    EXEC.get_or_init(cpu_executor)
}

/// MiniLM with f32 linear weights, loaded once (a debug-build load takes seconds).
fn f32_model() -> &'static SentenceEmbedder {
    static MODEL: OnceLock<SentenceEmbedder> = OnceLock::new();
    MODEL.get_or_init(|| load(LinearWeights::F32))
}

fn load(weights: LinearWeights) -> SentenceEmbedder {
    SentenceEmbedder::load(exec(), minilm_dir(), EmbedderOptions::default().weights(weights)).unwrap()
}

fn minilm_tokenizer_gives_bert_uncased_ids() {
    let embedder = f32_model();
    // bert-base-uncased's vocabulary: [CLS] 101, hello 7592, world 2088, [SEP] 102, [PAD] 0.
    let batch = embedder.tokenize(&["Hello WORLD", "hello"]).unwrap();
    assert_eq!(batch.ids(), &[101, 7592, 2088, 102, 101, 7592, 102, 0]);
    assert_eq!(batch.valid(), &[4, 3]);
    // sentence_bert_config.json's max_seq_length, where sentence-transformers truncates.
    assert_eq!(embedder.max_tokens(), 256);
    assert_eq!(embedder.dim(), 384);
    // Truncation at max_tokens, [SEP] kept last.
    let long = "word ".repeat(600);
    let batch = embedder.tokenize(&[long.as_str()]).unwrap();
    assert_eq!(batch.seq_len(), 256);
    assert_eq!(batch.ids()[255], 102);
}

fn minilm_f32_embeddings_match_candle_transformers() {
    let embedder = f32_model();
    let ours = embedder.embed(&SENTENCES).unwrap();
    let peer = Peer::load(&minilm_dir());
    let theirs = peer.embeddings(&embedder.tokenize(&SENTENCES).unwrap());
    let diff = max_abs_diff(&ours, &theirs);
    let worst_cos = ours
        .iter()
        .zip(&theirs)
        .map(|(a, b)| cosine(a, b))
        .fold(1.0f32, f32::min);
    println!("MiniLM f32: max |ours - candle-transformers| = {diff:e}, lowest cosine {worst_cos}");
    assert!(diff <= 1e-4, "max abs difference {diff}");
    assert!(ours.iter().all(|e| e.len() == 384));
    println!("{}", exec().report());
}

fn minilm_similar_sentences_score_higher_than_unrelated_ones() {
    let embedder = f32_model();
    // (anchor, paraphrase, unrelated)
    let triples = [
        (
            "A man is eating food.",
            "A man is eating a piece of bread.",
            "The new movie is awesome.",
        ),
        (
            "The cat sits outside.",
            "A cat is sitting outdoors.",
            "The stock market fell sharply today.",
        ),
        (
            "How do I bake bread?",
            "What is a good recipe for baking bread?",
            "A man is playing the guitar.",
        ),
        (
            "The weather is lovely today.",
            "It's so sunny outside!",
            "He drove to the stadium.",
        ),
    ];
    let flat: Vec<&str> = triples.iter().flat_map(|&(a, p, u)| [a, p, u]).collect();
    let e = embedder.embed(&flat).unwrap();
    for (i, (a, p, u)) in triples.iter().enumerate() {
        let (ea, ep, eu) = (&e[3 * i], &e[3 * i + 1], &e[3 * i + 2]);
        let (similar, unrelated) = (cosine(ea, ep), cosine(ea, eu));
        println!("{a:?}: paraphrase {similar:.4} ({p:?}), unrelated {unrelated:.4} ({u:?})");
        assert!(
            similar >= unrelated + 0.3,
            "{a:?}: paraphrase {similar} is not well above unrelated {unrelated}"
        );
    }
}

fn minilm_q8_0_embeddings_stay_close_to_f32() {
    let f32s = f32_model();
    let q8 = load(LinearWeights::quantized(QuantFormat::Q8_0));
    let a = f32s.embed(&SENTENCES).unwrap();
    let b = q8.embed(&SENTENCES).unwrap();
    for ((s, x), y) in SENTENCES.iter().zip(&a).zip(&b) {
        let c = cosine(x, y);
        println!("Q8_0 vs f32 cosine {c:.6}: {s:?}");
        assert!(c >= 0.995, "{s:?}: Q8_0 vs f32 cosine {c}");
    }
}
