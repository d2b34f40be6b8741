//! Tokenizers built from a GGUF file's metadata (GPT-2 byte-level BPE and SentencePiece
//! vocabularies) and the chat template it stores, rendered with minijinja.
//!
//! - [`GgufTokenizer`]: a [`tokenizers::Tokenizer`] assembled from the `tokenizer.ggml.*`
//!   keys, with the BOS/EOS rules and the end-of-generation ids of the file.
//! - [`TokenStream`]: incremental detokenization for streaming output, so a character whose
//!   bytes span several tokens comes out whole.
//! - [`ChatTemplate`]: the `tokenizer.chat_template` Jinja template, rendered for a list of
//!   [`ChatMessage`]s.
//!
//! The behaviour follows llama.cpp (`src/llama-vocab.cpp`), the reference implementation of
//! GGUF tokenization: the tests compare token ids with its `llama-tokenize`.
//!
//! ```no_run
//! use std::{fs::File, io::BufReader};
//! use aihal_models::tokenizer::{ChatMessage, ChatTemplate, GgufTokenizer};
//! # fn run() -> aihal_core::Result<()> {
//! let file = aihal_quantize::GgufFile::read(&mut BufReader::new(File::open("model.gguf")?))?;
//! let tokenizer = GgufTokenizer::from_gguf(&file)?;
//! let template = ChatTemplate::from_gguf(&file)?.expect("the file has a chat template");
//! let prompt = template.render(&[ChatMessage::new("user", "Hello!")], true)?;
//! let ids = tokenizer.encode(&prompt, true)?;
//! let mut stream = tokenizer.stream();
//! for &id in &ids {
//!     if let Some(text) = stream.push(id)? {
//!         print!("{text}");
//!     }
//! }
//! # Ok(()) }
//! ```

mod build;
mod chat;
mod stream;

pub use build::GgufTokenizer;
pub use chat::{ChatMessage, ChatTemplate};
pub use stream::TokenStream;
