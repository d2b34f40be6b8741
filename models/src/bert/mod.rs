//! A BERT encoder on the aihal op set.
//!
//! [`BertModel`] loads a Hugging Face BERT checkpoint (a `model.safetensors` and its
//! `config.json`, [`BertConfig`]) and runs it on an [`Executor`](aihal_ops::Executor):
//!
//! - embeddings: word, position and token-type rows ([`Embedding::dense`](aihal_ops::Embedding::dense)),
//!   summed with [`Add`](aihal_ops::Add), then a [`LayerNorm`](aihal_ops::LayerNorm);
//! - each layer: Q, K and V [`Linear`](aihal_ops::Linear)s with bias, bidirectional
//!   [`Attention`](aihal_ops::Attention) over a cache filled afresh by each forward, masked to
//!   each sequence's real tokens; the output projection, the residual and a LayerNorm; the
//!   intermediate projection, the activation of `hidden_act` ([`Act`](aihal_ops::Act)), the
//!   output projection, the residual and a LayerNorm.
//!
//! Linear weights are kept in f32 or quantized when loaded ([`LinearWeights`]); the embedding
//! tables and norms stay f32. Sequences of a batch are right-padded ([`BertBatch`]).

mod config;
mod model;

pub use config::{BertConfig, HiddenAct};
pub use model::{BertBatch, BertModel, LinearWeights};
