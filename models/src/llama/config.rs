//! The hyperparameters of a llama-family decoder (llama, gemma3), read from a GGUF file's
//! metadata.

use aihal_core::{CoreError, Result};
use aihal_quantize::{GgufFile, GgufValue};

/// The decoder architectures this module reads, as GGUF's `general.architecture` names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Architecture {
    /// `llama`: Llama 2/3, SmolLM2, TinyLlama, Mistral-style files written as `llama`.
    Llama,
    /// `gemma3`: Gemma 3 text decoders (270M, 1B, ...): the llama layout plus RMSNorm on
    /// each query and key head, RMSNorm after the attention and after the MLP (before each
    /// residual add), GeGLU (tanh GELU) in the MLP, half-split RoPE, the embedding scaled by
    /// `sqrt(hidden)`, and local sliding-window layers between global ones.
    Gemma3,
}

impl Architecture {
    /// The architectures read, by their GGUF name.
    pub const ALL: [Self; 2] = [Self::Llama, Self::Gemma3];

    /// The GGUF name (`general.architecture`), also the prefix of its metadata keys.
    pub fn name(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Gemma3 => "gemma3",
        }
    }

    /// The architecture a GGUF file declares.
    ///
    /// Errors: `InvalidInput` when `general.architecture` is missing or not a string;
    /// `Unsupported` naming an architecture this module does not read.
    pub fn of(file: &GgufFile) -> Result<Self> {
        let name = file
            .get("general.architecture")
            .ok_or_else(|| CoreError::invalid_input("GGUF file: no general.architecture in the metadata"))?
            .as_str()
            .ok_or_else(|| CoreError::invalid_input("GGUF file: general.architecture is not a string"))?;
        Self::ALL.into_iter().find(|a| a.name() == name).ok_or_else(|| {
            let known: Vec<&str> = Self::ALL.iter().map(|a| a.name()).collect();
            CoreError::unsupported(
                "decoder loading",
                format!("GGUF architecture {name:?} (read: {})", known.join(", ")),
            )
        })
    }
}

/// The hyperparameters of a llama-architecture decoder.
///
/// Read from the `<arch>.*` metadata keys llama.cpp writes (`llama.block_count`, ...);
/// see [`from_gguf`](Self::from_gguf).
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    /// The architecture.
    pub architecture: Architecture,
    /// Positions the model was trained for (`context_length`): the KV cache's upper bound.
    pub context_length: usize,
    /// The hidden size (`embedding_length`).
    pub embedding_length: usize,
    /// Decoder layers (`block_count`).
    pub block_count: usize,
    /// The MLP's inner size (`feed_forward_length`).
    pub feed_forward_length: usize,
    /// Query heads (`attention.head_count`).
    pub head_count: usize,
    /// Key/value heads (`attention.head_count_kv`; equal to `head_count` when absent).
    pub head_count_kv: usize,
    /// Values per head (`attention.key_length`, else `embedding_length / head_count`).
    pub head_dim: usize,
    /// RMSNorm's epsilon (`attention.layer_norm_rms_epsilon`).
    pub rms_norm_eps: f32,
    /// RoPE's base (`rope.freq_base`, 10000 when absent).
    pub rope_freq_base: f32,
    /// Values of a head that RoPE rotates (`rope.dimension_count`, `head_dim` when absent).
    pub rope_dimension_count: usize,
    /// Tokens in the vocabulary (`vocab_size`, else the tokenizer's token list, else the
    /// rows of `token_embd.weight`).
    pub vocab_size: usize,
    /// Local (sliding-window) attention layers, where the architecture has them (Gemma 3);
    /// `None`: every layer attends to every earlier position.
    pub local_attention: Option<LocalAttention>,
}

/// The local attention layers of an architecture that interleaves them with global ones
/// (Gemma 3: five local layers, then one global, repeated).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LocalAttention {
    /// Positions a local layer's query sees, its own included (`attention.sliding_window`).
    pub window: usize,
    /// Every this many layers, one is global: layer `l` is global when `(l + 1) % global_every
    /// == 0` (`attention.sliding_window_type` where a file has it; 6 for Gemma 3, as
    /// llama.cpp's `set_swa_pattern(6)` and Hugging Face's `sliding_window_pattern`).
    pub global_every: usize,
    /// RoPE's base in the local layers (`rope.local_freq_base` where a file has it; 10000
    /// for Gemma 3, Hugging Face's `rope_local_base_freq`). The global layers use
    /// [`LlamaConfig::rope_freq_base`].
    pub rope_freq_base: f32,
}

fn key(arch: Architecture, k: &str) -> String {
    format!("{}.{k}", arch.name())
}

fn get<'a>(file: &'a GgufFile, k: &str) -> Option<&'a GgufValue> {
    file.get(k)
}

fn usize_of(file: &GgufFile, k: &str) -> Result<Option<usize>> {
    match get(file, k) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| CoreError::invalid_input(format!("GGUF metadata {k} is {v:?}, not a non-negative integer"))),
    }
}

fn required_usize(file: &GgufFile, k: &str) -> Result<usize> {
    usize_of(file, k)?.ok_or_else(|| CoreError::invalid_input(format!("GGUF metadata has no {k}")))
}

fn f32_of(file: &GgufFile, k: &str) -> Result<Option<f32>> {
    match get(file, k) {
        None => Ok(None),
        Some(v) => v
            .as_f64()
            .map(|x| Some(x as f32))
            .ok_or_else(|| CoreError::invalid_input(format!("GGUF metadata {k} is {v:?}, not a float"))),
    }
}

impl LlamaConfig {
    /// The hyperparameters in `file`'s metadata, checked ([`validate`](Self::validate)).
    ///
    /// Errors: `Unsupported` for an architecture other than those of [`Architecture`];
    /// `InvalidInput` naming a required key that is missing or of the wrong type;
    /// `InvalidConfig` for values that contradict each other.
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        let arch = Architecture::of(file)?;
        let k = |name: &str| key(arch, name);
        let embedding_length = required_usize(file, &k("embedding_length"))?;
        let head_count = required_usize(file, &k("attention.head_count"))?;
        let head_count_kv = usize_of(file, &k("attention.head_count_kv"))?.unwrap_or(head_count);
        let head_dim = match usize_of(file, &k("attention.key_length"))? {
            Some(d) => d,
            None if head_count > 0 => embedding_length / head_count,
            None => 0,
        };
        let vocab_size = match usize_of(file, &k("vocab_size"))? {
            Some(v) => v,
            None => match get(file, "tokenizer.ggml.tokens").and_then(GgufValue::as_array) {
                Some(tokens) => tokens.len(),
                None => file
                    .tensor("token_embd.weight")
                    .and_then(|t| t.shape().first().copied())
                    .unwrap_or(0),
            },
        };
        let config = Self {
            architecture: arch,
            context_length: required_usize(file, &k("context_length"))?,
            embedding_length,
            block_count: required_usize(file, &k("block_count"))?,
            feed_forward_length: required_usize(file, &k("feed_forward_length"))?,
            head_count,
            head_count_kv,
            head_dim,
            rms_norm_eps: f32_of(file, &k("attention.layer_norm_rms_epsilon"))?.ok_or_else(|| {
                CoreError::invalid_input(format!(
                    "GGUF metadata has no {}",
                    k("attention.layer_norm_rms_epsilon")
                ))
            })?,
            rope_freq_base: f32_of(file, &k("rope.freq_base"))?.unwrap_or(10_000.0),
            rope_dimension_count: usize_of(file, &k("rope.dimension_count"))?.unwrap_or(head_dim),
            vocab_size,
            local_attention: match arch {
                Architecture::Llama => None,
                Architecture::Gemma3 => Some(LocalAttention {
                    window: required_usize(file, &k("attention.sliding_window"))?,
                    global_every: usize_of(file, &k("attention.sliding_window_type"))?.unwrap_or(6),
                    rope_freq_base: f32_of(file, &k("rope.local_freq_base"))?.unwrap_or(10_000.0),
                }),
            },
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks that the values are usable together.
    ///
    /// Errors: `InvalidConfig` naming the first of: a zero size or count, `head_count_kv`
    /// not dividing `head_count`, an odd `head_dim`, a `rope_dimension_count` other than
    /// `head_dim` (partial rotary embeddings are not implemented), an epsilon or RoPE base
    /// that is not finite and positive (epsilon may be 0).
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| {
            Err(CoreError::invalid_config(format!(
                "{} GGUF: {m}",
                self.architecture.name()
            )))
        };
        for (name, v) in [
            ("context_length", self.context_length),
            ("embedding_length", self.embedding_length),
            ("block_count", self.block_count),
            ("feed_forward_length", self.feed_forward_length),
            ("attention.head_count", self.head_count),
            ("attention.head_count_kv", self.head_count_kv),
            ("head size", self.head_dim),
            ("vocab_size", self.vocab_size),
        ] {
            if v == 0 {
                return bad(format!("{name} is 0"));
            }
        }
        if !self.head_count.is_multiple_of(self.head_count_kv) {
            return bad(format!(
                "attention.head_count_kv {} does not divide attention.head_count {}",
                self.head_count_kv, self.head_count
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return bad(format!("the head size {} is odd; RoPE needs pairs", self.head_dim));
        }
        if self.rope_dimension_count != self.head_dim {
            return bad(format!(
                "rope.dimension_count {} differs from the head size {}: partial rotary embeddings are not implemented",
                self.rope_dimension_count, self.head_dim
            ));
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps >= 0.0) {
            return bad(format!(
                "layer_norm_rms_epsilon {} is not finite and >= 0",
                self.rms_norm_eps
            ));
        }
        if !(self.rope_freq_base.is_finite() && self.rope_freq_base > 0.0) {
            return bad(format!("rope.freq_base {} is not finite and > 0", self.rope_freq_base));
        }
        if let Some(local) = self.local_attention {
            if local.window == 0 || local.global_every == 0 {
                return bad(format!(
                    "a sliding window of {} positions with one global layer every {} layers; both must be positive",
                    local.window, local.global_every
                ));
            }
            if !(local.rope_freq_base.is_finite() && local.rope_freq_base > 0.0) {
                return bad(format!(
                    "rope.local_freq_base {} is not finite and > 0",
                    local.rope_freq_base
                ));
            }
        }
        Ok(())
    }

    /// Whether layer `l` attends within the local window ([`LocalAttention`]).
    pub fn is_local(&self, l: usize) -> bool {
        self.local_attention
            .is_some_and(|a| !(l + 1).is_multiple_of(a.global_every))
    }

    /// The attention scores' scale: `1 / sqrt(head_dim)`, except for the 62-layer Gemma 3
    /// (27B), whose queries are scaled by `1 / sqrt(hidden / heads)` (its
    /// `query_pre_attn_scalar`; llama.cpp tells it by its layer count, as here, since the
    /// GGUF metadata does not carry it).
    pub fn attention_scale(&self) -> f32 {
        match self.architecture {
            Architecture::Gemma3 if self.block_count == 62 => {
                1.0 / ((self.embedding_length / self.head_count) as f32).sqrt()
            }
            _ => 1.0 / (self.head_dim as f32).sqrt(),
        }
    }

    /// Values of all query heads together (`head_count * head_dim`).
    pub fn q_dim(&self) -> usize {
        self.head_count * self.head_dim
    }

    /// Values of all key (or value) heads together (`head_count_kv * head_dim`).
    pub fn kv_dim(&self) -> usize {
        self.head_count_kv * self.head_dim
    }
}
