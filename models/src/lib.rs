//! Models written against the aihal op set (`aihal-ops`): every op of a forward pass goes
//! through an [`Executor`](aihal_ops::Executor), so `exec.report()` says where each ran.
//!
//! - [`bert`]: a BERT encoder loaded from a safetensors file and its `config.json`
//!   ([`BertModel`]), with linear weights kept in f32 or quantized at load
//!   ([`LinearWeights`]).
//! - [`SentenceEmbedder`]: sentence embeddings from a sentence-transformers directory
//!   (all-MiniLM-L6-v2 and other BERT checkpoints): the `tokenizer.json` tokenizer, the
//!   encoder, the pooling of `1_Pooling/config.json`, L2 normalisation.
//! - [`pooling`]: mean and CLS pooling over each sequence's real tokens, L2 normalisation and
//!   cosine similarity, in host code.
//!
//! ```no_run
//! use std::sync::Arc;
//! use aihal_models::{EmbedderOptions, SentenceEmbedder};
//! # fn run(exec: Arc<aihal_ops::Executor>) -> aihal_core::Result<()> {
//! let embedder = SentenceEmbedder::load(&exec, ".testdata/all-MiniLM-L6-v2", EmbedderOptions::default())?;
//! let e = embedder.embed(&["A man is eating food.", "A man is eating a meal."])?;
//! println!("cosine {}", aihal_models::pooling::cosine(&e[0], &e[1]));
//! println!("{}", exec.report());
//! # Ok(()) }
//! ```
//!
//! # Files and memory
//!
//! Weights are read through a read-only memory map of the safetensors file (no second full
//! copy in memory): each tensor is handed to its op, which keeps its own resident form (a
//! packed or quantized copy on its provider), and the map is dropped when loading ends.
//! **The file must not be modified or truncated while a model loads from it**; this is the
//! one `unsafe` block of the crate, in the private `weights` module.
#![deny(unsafe_code)]

pub mod bert;
mod embed;
pub mod llama;
pub mod pooling;
mod progress;
pub mod tokenizer;
mod weights;

pub use bert::{BertBatch, BertConfig, BertModel, HiddenAct, LinearWeights};
pub use embed::{EmbedderOptions, SentenceEmbedder};
pub use llama::{
    generate, GenerateOptions, Generation, Generator, LlamaConfig, LlamaModel, LlamaOptions, SamplingOptions,
};
pub use pooling::Pooling;

/// Prefixes a message-carrying error with `what`, keeping its kind.
pub(crate) fn context(e: aihal_core::CoreError, what: &str) -> aihal_core::CoreError {
    use aihal_core::CoreError;

    match e {
        CoreError::InvalidInput(m) => CoreError::invalid_input(format!("{what}: {m}")),
        CoreError::InvalidConfig(m) => CoreError::invalid_config(format!("{what}: {m}")),
        CoreError::NotImplemented(m) => CoreError::not_implemented(format!("{what}: {m}")),
        CoreError::ShapeMismatch {
            context,
            expected,
            actual,
        } => CoreError::shape_mismatch(format!("{what}: {context}"), expected, actual),
        CoreError::Unsupported { op, dtype } => CoreError::unsupported(format!("{what}: {op}"), dtype),
        CoreError::Io(e) => CoreError::Io(std::io::Error::new(e.kind(), format!("{what}: {e}"))),
        other => other,
    }
}
