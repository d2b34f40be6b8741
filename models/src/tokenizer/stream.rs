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
/// When the generation ends, [`finish`](Self::finish) returns what is still held back (an
/// unfinished character comes out as U+FFFD, as `decode` gives it), so that nothing the ids
/// spell is lost.
///
/// It wraps `tokenizers`' `DecodeStream`, which decodes a short window of recent ids and
/// returns the new suffix once it no longer ends in U+FFFD (the replacement an incomplete
/// character decodes to).
pub struct TokenStream<'a> {
    tokenizer: &'a GgufTokenizer,
    inner: InnerStream<'a>,
    skip_special: bool,
    /// The ids pushed since the last text returned.
    pending: Vec<u32>,
    /// The ids that last text completed (context for decoding `pending`).
    last: Vec<u32>,
}

impl<'a> TokenStream<'a> {
    pub(super) fn new(tokenizer: &'a GgufTokenizer, skip_special: bool) -> Self {
        Self {
            tokenizer,
            inner: tokenizer.inner().decode_stream(skip_special),
            skip_special,
            pending: Vec::new(),
            last: Vec::new(),
        }
    }
}

impl TokenStream<'_> {
    /// Adds one id; returns the text it completes, if any. An id outside the vocabulary is
    /// an `InvalidInput` error (and is not added).
    pub fn push(&mut self, id: u32) -> Result<Option<String>> {
        self.tokenizer.check_ids(&[id])?;
        let text = self
            .inner
            .step(id)
            .map_err(|e| CoreError::invalid_input(format!("GGUF tokenizer: streaming token {id}: {e}")))?;
        self.pending.push(id);
        if text.is_some() {
            self.last = std::mem::take(&mut self.pending);
        }
        Ok(text)
    }

    /// Ends the stream: the text of the ids pushed after the last text [`push`](Self::push)
    /// returned (an unfinished character as U+FFFD), or `None` when nothing is held back.
    pub fn finish(self) -> Result<Option<String>> {
        if self.pending.is_empty() {
            return Ok(None);
        }
        // Decoded after the ids of the last text, as the stream decodes (a leading space or
        // a byte token reads differently at the start of a text than after other ids).
        let before = self.tokenizer.decode(&self.last, self.skip_special)?;
        let all: Vec<u32> = self.last.iter().chain(&self.pending).copied().collect();
        let text = self.tokenizer.decode(&all, self.skip_special)?;
        let tail = text.strip_prefix(before.as_str()).unwrap_or(&text);
        Ok((!tail.is_empty()).then(|| tail.to_owned()))
    }
}
