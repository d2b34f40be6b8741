//! [`BertConfig`]: the fields of a Hugging Face BERT `config.json` the encoder needs.

use std::path::Path;

use aihal_core::{CoreError, Result};
use aihal_ops::Activation;
use serde::Deserialize;

use crate::weights::io_error;

/// The activation of the feed-forward block (`hidden_act`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HiddenAct {
    /// `"gelu"`: GELU in its exact erf form (BERT, all-MiniLM).
    Gelu,
    /// `"gelu_new"`, `"gelu_pytorch_tanh"`: GELU in its tanh form.
    GeluTanh,
    /// `"silu"`, `"swish"`.
    Silu,
}

impl HiddenAct {
    /// The names accepted in `config.json`.
    pub const NAMES: &'static [&'static str] = &["gelu", "gelu_new", "gelu_pytorch_tanh", "silu", "swish"];

    /// The activation a `config.json` names.
    ///
    /// Errors: `InvalidConfig` naming the value and the accepted names.
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "gelu" => Ok(Self::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" => Ok(Self::GeluTanh),
            "silu" | "swish" => Ok(Self::Silu),
            other => Err(CoreError::invalid_config(format!(
                "hidden_act {other:?} is not supported (supported: {})",
                Self::NAMES.join(", ")
            ))),
        }
    }

    /// The op-set activation that computes it.
    pub fn activation(self) -> Activation {
        match self {
            Self::Gelu => Activation::GeluErf,
            Self::GeluTanh => Activation::GeluTanh,
            Self::Silu => Activation::Silu,
        }
    }
}

/// The shape and constants of a BERT encoder, as its `config.json` gives them.
///
/// Required fields: `vocab_size`, `hidden_size`, `num_hidden_layers`, `num_attention_heads`,
/// `intermediate_size`, `max_position_embeddings`. The others default as Hugging Face's
/// `BertConfig` does (`hidden_act` `"gelu"`, `type_vocab_size` 2, `layer_norm_eps` 1e-12,
/// `pad_token_id` 0). Fields the encoder does not use (dropout, initializer range) are
/// ignored.
#[derive(Clone, Debug, PartialEq)]
pub struct BertConfig {
    /// Rows of the word embedding table.
    pub vocab_size: usize,
    /// Values per token between layers.
    pub hidden_size: usize,
    /// Encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer (they divide `hidden_size`).
    pub num_attention_heads: usize,
    /// Width of the feed-forward block.
    pub intermediate_size: usize,
    /// The feed-forward activation.
    pub hidden_act: HiddenAct,
    /// Rows of the position embedding table: the longest sequence the model reads.
    pub max_position_embeddings: usize,
    /// Rows of the token-type (segment) embedding table.
    pub type_vocab_size: usize,
    /// The epsilon of every LayerNorm.
    pub layer_norm_eps: f32,
    /// The token id that pads a batch.
    pub pad_token_id: u32,
}

/// `config.json` as written, before checking.
#[derive(Deserialize)]
struct RawConfig {
    vocab_size: usize,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    max_position_embeddings: usize,
    #[serde(default = "default_act")]
    hidden_act: String,
    #[serde(default = "default_type_vocab")]
    type_vocab_size: usize,
    #[serde(default = "default_eps")]
    layer_norm_eps: f64,
    #[serde(default)]
    pad_token_id: Option<u32>,
    #[serde(default)]
    position_embedding_type: Option<String>,
    #[serde(default)]
    model_type: Option<String>,
}

fn default_act() -> String {
    "gelu".to_owned()
}

fn default_type_vocab() -> usize {
    2
}

fn default_eps() -> f64 {
    1e-12
}

impl BertConfig {
    /// Reads and checks a `config.json`.
    ///
    /// Errors: `Io` naming the file; `InvalidConfig` naming the file and the field for
    /// malformed JSON, a missing field, or a value [`from_json`](Self::from_json) refuses.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| io_error(path, &e))?;
        Self::from_json(&text).map_err(|e| match e {
            CoreError::InvalidConfig(m) => CoreError::invalid_config(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Parses and checks the text of a `config.json`.
    ///
    /// Errors: `InvalidConfig` for malformed JSON or a missing field (serde's message names
    /// it), an unknown `hidden_act`, a `position_embedding_type` other than `"absolute"`, a
    /// `model_type` other than `"bert"`, and the shape rules of [`validate`](Self::validate).
    pub fn from_json(text: &str) -> Result<Self> {
        let raw: RawConfig =
            serde_json::from_str(text).map_err(|e| CoreError::invalid_config(format!("BERT config.json: {e}")))?;
        if let Some(t) = raw.position_embedding_type.as_deref().filter(|t| *t != "absolute") {
            return Err(CoreError::invalid_config(format!(
                "position_embedding_type {t:?} is not supported (only \"absolute\")"
            )));
        }
        if let Some(t) = raw.model_type.as_deref().filter(|t| *t != "bert") {
            return Err(CoreError::invalid_config(format!(
                "model_type {t:?} is not a BERT encoder (\"bert\")"
            )));
        }
        let config = Self {
            vocab_size: raw.vocab_size,
            hidden_size: raw.hidden_size,
            num_hidden_layers: raw.num_hidden_layers,
            num_attention_heads: raw.num_attention_heads,
            intermediate_size: raw.intermediate_size,
            hidden_act: HiddenAct::from_name(&raw.hidden_act)?,
            max_position_embeddings: raw.max_position_embeddings,
            type_vocab_size: raw.type_vocab_size,
            layer_norm_eps: raw.layer_norm_eps as f32,
            pad_token_id: raw.pad_token_id.unwrap_or(0),
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks the shape rules: every size positive, the heads dividing `hidden_size`, a
    /// finite non-negative epsilon, the pad token inside the vocabulary.
    ///
    /// Errors: `InvalidConfig` naming the field.
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
            ("type_vocab_size", self.type_vocab_size),
        ] {
            if v == 0 {
                return Err(CoreError::invalid_config(format!("{name} must be positive")));
            }
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(CoreError::invalid_config(format!(
                "num_attention_heads {} does not divide hidden_size {}",
                self.num_attention_heads, self.hidden_size
            )));
        }
        if !(self.layer_norm_eps.is_finite() && self.layer_norm_eps >= 0.0) {
            return Err(CoreError::invalid_config(format!(
                "layer_norm_eps must be finite and >= 0, got {}",
                self.layer_norm_eps
            )));
        }
        if self.pad_token_id as usize >= self.vocab_size {
            return Err(CoreError::invalid_config(format!(
                "pad_token_id {} is not below vocab_size {}",
                self.pad_token_id, self.vocab_size
            )));
        }
        Ok(())
    }

    /// Values per attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}
