//! [`TokenStream`]: incremental detokenization over `tokenizers`' `DecodeStream`.

use aihal_core::{CoreError, Result};
use tokenizers::{
    DecodeStream, DecoderWrapper, ModelWrapper, NormalizerWrapper, PostProcessorWrapper, PreTokenizerWrapper,
};

use super::GgufTokenizer;

type InnerStream<'a> =
    DecodeStream<'a, ModelWrapper, NormalizerWrapper, PreTokenizerWrapper, PostProcessorWrapper, DecoderWrapper>;

/// Incremental detokenizer for streaming, made by [`GgufTokenizer::stream`].
///
/// Feed the ids of a generation one at a time; each [`push`](Self::push) returns the text
/// that the ids so far complete beyond what earlier pushes returned, or `None` while the
/// last token ends inside a character (a multi-byte UTF-8 character split across byte
/// tokens). The concatenation of everything returned equals `decode` of all ids, except
/// that trailing bytes of an unfinished character are held back.
///
/// It wraps `tokenizers`' `DecodeStream`, which decodes a short window of recent ids and
/// returns the new suffix once it no longer ends in U+FFFD (the replacement an incomplete
/// character decodes to).
pub struct TokenStream<'a> {
    tokenizer: &'a GgufTokenizer,
    inner: InnerStream<'a>,
}

impl<'a> TokenStream<'a> {
    pub(super) fn new(tokenizer: &'a GgufTokenizer, skip_special: bool) -> Self {
        Self {
            tokenizer,
            inner: tokenizer.inner().decode_stream(skip_special),
        }
    }
}

impl TokenStream<'_> {
    /// Adds one id; returns the text it completes, if any. An id outside the vocabulary is
    /// an `InvalidInput` error (and is not added).
    pub fn push(&mut self, id: u32) -> Result<Option<String>> {
        self.tokenizer.check_ids(&[id])?;
        self.inner
            .step(id)
            .map_err(|e| CoreError::invalid_input(format!("GGUF tokenizer: streaming token {id}: {e}")))
    }
}
