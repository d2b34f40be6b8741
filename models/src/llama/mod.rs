//! Decoder-only language models from GGUF files, written against the aihal op set, with
//! generation.
//!
//! - [`LlamaModel`]: the llama architecture (Llama 2/3, SmolLM2, ...) from a GGUF file
//!   ([`LlamaConfig`] from its `llama.*` metadata). Per layer: RMSNorm, Q/K/V projections,
//!   interleaved RoPE (the GGUF llama convention), grouped-query causal
//!   [`Attention`](aihal_ops::Attention) over a preallocated [`KvCache`](aihal_ops::KvCache),
//!   the output projection and the residual; RMSNorm, the SwiGLU MLP and the residual. Then
//!   a final RMSNorm and the output projection (tied to the embedding table when the file has
//!   no `output.weight`), for the last position only. Weights stay in their stored format.
//! - [`Generator`] / [`generate`]: prefill, then token-by-token decoding over any
//!   [`CausalLm`], greedy or sampled ([`SamplingOptions`], [`SplitMix64`]), stopping at a
//!   stop id or a token budget, with prefill and decode rates ([`Generation`]).
//!
//! ```no_run
//! use std::sync::Arc;
//! use aihal_models::llama::{generate, GenerateOptions, LlamaModel, LlamaOptions};
//! # fn run(exec: Arc<aihal_ops::Executor>) -> aihal_core::Result<()> {
//! let model = LlamaModel::load(&exec, ".testdata/gguf/SmolLM2-135M-Instruct.Q4_1.gguf", LlamaOptions::default())?;
//! let options = GenerateOptions { max_tokens: 16, stop: vec![2], ..GenerateOptions::default() };
//! let out = generate(&model, &[1, 9690, 198], &options, |id| {
//!     println!("token {id}");
//!     Ok(())
//! })?;
//! println!("{:.1} tokens/s decoding", out.decode_tokens_per_s());
//! println!("{}", exec.report());
//! # Ok(()) }
//! ```
//!
//! The module is laid out for more architectures: [`Architecture`] names what a file
//! declares, [`CausalLm`] is what generation needs from a model.

mod config;
mod generate;
mod model;
mod projections;

pub use config::{Architecture, LlamaConfig};
pub use generate::{
    generate, CausalLm, GenerateOptions, Generation, Generator, Sampler, SamplingOptions, SplitMix64, StopReason,
};
pub use model::{LlamaModel, LlamaOptions, LlamaState};
