//! [`SentenceEmbedder`]: text in, one normalised vector per sentence out.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use aihal_core::{CoreError, Result};
use aihal_ops::Executor;
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::bert::{BertBatch, BertConfig, BertModel, LinearWeights};
use crate::pooling::{l2_normalize, Pooling};
use crate::weights::io_error;

/// How a [`SentenceEmbedder`] is loaded and runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EmbedderOptions {
    /// f32 or quantized linear weights.
    pub weights: LinearWeights,
    /// Tokens per sentence, special tokens included, beyond which a sentence is truncated;
    /// `None` for the directory's `sentence_bert_config.json` `max_seq_length` when it has one
    /// (256 for all-MiniLM-L6-v2, as sentence-transformers truncates), else the model's
    /// `max_position_embeddings` (512 for MiniLM).
    pub max_tokens: Option<usize>,
    /// Sentences per forward pass (longer inputs run in chunks of this many).
    pub batch_size: usize,
    /// Whether embeddings are scaled to unit length (sentence-transformers' `Normalize`).
    pub normalize: bool,
}

impl Default for EmbedderOptions {
    /// f32 weights, truncation at the model's positions, batches of 32, normalised.
    fn default() -> Self {
        Self {
            weights: LinearWeights::F32,
            max_tokens: None,
            batch_size: 32,
            normalize: true,
        }
    }
}

impl EmbedderOptions {
    /// With these linear weights.
    #[must_use]
    pub fn weights(mut self, weights: LinearWeights) -> Self {
        self.weights = weights;
        self
    }

    /// Truncating sentences at `max_tokens` tokens.
    #[must_use]
    pub fn max_tokens(mut self, max_tokens: usize) -> Self {
        self.max_tokens = Some(max_tokens);
        self
    }

    /// Running `batch_size` sentences per forward pass.
    #[must_use]
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size;
        self
    }

    /// Normalising embeddings or not.
    #[must_use]
    pub fn normalize(mut self, normalize: bool) -> Self {
        self.normalize = normalize;
        self
    }
}

/// A sentence-transformers BERT model: tokenizer, encoder, pooling, normalisation.
///
/// Loaded from a directory holding `config.json`, `model.safetensors`, `tokenizer.json` and
/// optionally `1_Pooling/config.json` (mean pooling when it is absent), as the
/// sentence-transformers checkpoints of all-MiniLM-L6-v2 lay them out.
#[derive(Debug)]
pub struct SentenceEmbedder {
    model: BertModel,
    tokenizer: Tokenizer,
    pooling: Pooling,
    options: EmbedderOptions,
    max_tokens: usize,
}

/// A tokenizer error, naming what it was doing.
fn tokenizer_error(what: impl std::fmt::Display, e: &(dyn std::error::Error + Send + Sync)) -> CoreError {
    CoreError::invalid_input(format!("tokenizer: {what}: {e}"))
}

impl SentenceEmbedder {
    /// Loads the model in `dir` on `exec`.
    ///
    /// Errors: `Io` naming a missing or unreadable file; `InvalidInput` for a
    /// `tokenizer.json` the tokenizer cannot read (naming it); `InvalidConfig` for a zero
    /// `batch_size` or `max_tokens`, a `max_tokens` above `max_position_embeddings`, a
    /// pooling config [`Pooling::from_file`] refuses or whose dimension is not the model's;
    /// and those of [`BertModel::load`].
    pub fn load(exec: &Arc<Executor>, dir: impl AsRef<Path>, options: EmbedderOptions) -> Result<Self> {
        let dir = dir.as_ref();
        let config = BertConfig::from_file(dir.join("config.json"))?;
        let max_positions = config.max_position_embeddings;
        let st_config = dir.join("sentence_bert_config.json");
        let (max_tokens, from) = match options.max_tokens {
            Some(n) => (n, "EmbedderOptions::max_tokens".to_owned()),
            None => match max_seq_length(&st_config)? {
                Some(n) => (n, format!("the max_seq_length of {}", st_config.display())),
                None => (max_positions, "max_position_embeddings".to_owned()),
            },
        };
        if max_tokens == 0 || max_tokens > max_positions || options.batch_size == 0 {
            return Err(CoreError::invalid_config(format!(
                "sentence embedder: max_tokens must be in 1..={max_positions} (the model's positions) and \
                 batch_size positive, got {max_tokens} ({from}) and {}",
                options.batch_size
            )));
        }
        let tokenizer = load_tokenizer(&dir.join("tokenizer.json"), max_tokens)?;
        let pooling_path: PathBuf = dir.join("1_Pooling").join("config.json");
        let pooling = if pooling_path.exists() {
            let (pooling, dim) = Pooling::from_file(&pooling_path)?;
            if let Some(d) = dim.filter(|&d| d != config.hidden_size) {
                return Err(CoreError::invalid_config(format!(
                    "{}: word_embedding_dimension {d} is not the model's hidden_size {}",
                    pooling_path.display(),
                    config.hidden_size
                )));
            }
            pooling
        } else {
            Pooling::Mean
        };
        let model = BertModel::from_file(exec, config, dir.join("model.safetensors"), options.weights)?;
        Ok(Self {
            model,
            tokenizer,
            pooling,
            options,
            max_tokens,
        })
    }

    /// One embedding per sentence, in order, each `hidden_size` long (unit length when
    /// normalising).
    ///
    /// Sentences are tokenized together, then run longest first in batches of
    /// [`EmbedderOptions::batch_size`], so each batch pads to a similar length (as
    /// sentence-transformers does); padding does not change a sentence's embedding.
    ///
    /// Errors: `InvalidInput` for an empty batch or a sentence the tokenizer refuses;
    /// those of [`BertModel::forward`].
    pub fn embed(&self, sentences: &[&str]) -> Result<Vec<Vec<f32>>> {
        let encodings = self.encode(sentences)?;
        let mut order: Vec<usize> = (0..encodings.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(encodings[i].len()));
        let mut out = vec![Vec::new(); encodings.len()];
        for chunk in order.chunks(self.options.batch_size) {
            let batch = self.batch(chunk.iter().map(|&i| &encodings[i]))?;
            let hidden = self.model.forward(&batch)?.to_vec()?;
            let pooled = self.pooling.pool(&hidden, batch.seq_len(), self.dim(), batch.valid())?;
            for (&i, mut e) in chunk.iter().zip(pooled) {
                if self.options.normalize {
                    l2_normalize(&mut e);
                }
                out[i] = e;
            }
        }
        Ok(out)
    }

    /// The sentences as a right-padded batch of token ids in their order, truncated at
    /// [`max_tokens`](Self::max_tokens).
    ///
    /// Errors: `InvalidInput` for an empty batch or a sentence the tokenizer refuses.
    pub fn tokenize(&self, sentences: &[&str]) -> Result<BertBatch> {
        self.batch(self.encode(sentences)?.iter())
    }

    fn encode(&self, sentences: &[&str]) -> Result<Vec<tokenizers::Encoding>> {
        if sentences.is_empty() {
            return Err(CoreError::invalid_input(
                "sentence embedder: the batch of sentences is empty",
            ));
        }
        self.tokenizer
            .encode_batch(sentences.to_vec(), true)
            .map_err(|e| tokenizer_error("encoding", &*e))
    }

    fn batch<'e>(&self, encodings: impl Iterator<Item = &'e tokenizers::Encoding> + Clone) -> Result<BertBatch> {
        let ids: Vec<&[u32]> = encodings.clone().map(tokenizers::Encoding::get_ids).collect();
        let types: Vec<&[u32]> = encodings.map(tokenizers::Encoding::get_type_ids).collect();
        BertBatch::with_type_ids(&ids, &types, self.model.config().pad_token_id)
    }

    /// Values per embedding (the model's `hidden_size`).
    pub fn dim(&self) -> usize {
        self.model.config().hidden_size
    }

    /// Tokens per sentence beyond which sentences are truncated.
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// The pooling in use.
    pub fn pooling(&self) -> Pooling {
        self.pooling
    }

    /// The encoder.
    pub fn model(&self) -> &BertModel {
        &self.model
    }

    /// The tokenizer, as configured here (no padding; truncation at `max_tokens`).
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }
}

/// The `max_seq_length` of a sentence-transformers `sentence_bert_config.json`, `None` when the
/// file does not exist or does not state one.
///
/// Errors: `Io` naming the file; `InvalidConfig` for malformed JSON or a length that is not a
/// positive integer.
fn max_seq_length(path: &Path) -> Result<Option<usize>> {
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|e| io_error(path, &e))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| CoreError::invalid_config(format!("{}: {e}", path.display())))?;
    match value.get("max_seq_length") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if n > 0 => Ok(Some(usize::try_from(n).unwrap_or(usize::MAX))),
            _ => Err(CoreError::invalid_config(format!(
                "{}: max_seq_length {v} is not a positive integer",
                path.display()
            ))),
        },
    }
}

/// Reads `tokenizer.json` and replaces the padding and truncation it may carry (the
/// all-MiniLM file pads every sentence to a fixed 128 and truncates there): no padding (the
/// batch pads itself to its longest sentence), truncation at `max_tokens` tokens with the
/// special tokens counted.
fn load_tokenizer(path: &Path, max_tokens: usize) -> Result<Tokenizer> {
    if let Err(e) = std::fs::metadata(path) {
        return Err(io_error(path, &e));
    }
    let mut tokenizer = Tokenizer::from_file(path).map_err(|e| tokenizer_error(path.display(), &*e))?;
    tokenizer.with_padding(None);
    tokenizer
        .with_truncation(Some(TruncationParams {
            direction: TruncationDirection::Right,
            max_length: max_tokens,
            strategy: TruncationStrategy::LongestFirst,
            stride: 0,
        }))
        .map_err(|e| tokenizer_error(path.display(), &*e))?;
    Ok(tokenizer)
}
