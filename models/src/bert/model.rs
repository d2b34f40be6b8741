//! [`BertModel`]: the encoder's ops and its forward pass; [`BertBatch`]: right-padded input.

use crate::context;
use std::path::Path;
use std::sync::Arc;

use aihal_core::{CoreError, Result};
use aihal_ops::{
    Act, Add, Attention, AttentionKind, AttentionShape, Embedding, Executor, LayerNorm, Linear, LinearPrecision, Tensor,
};
use aihal_quantize::{quantize, QuantFormat};

use super::config::BertConfig;
use crate::weights::{MappedFile, Tensors};

/// How a model's linear layers keep their weights.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum LinearWeights {
    /// As stored, in f32 ([`Linear::dense`]): results within f32 rounding of the checkpoint's
    /// own arithmetic.
    #[default]
    F32,
    /// Quantized when loaded ([`Linear::with_precision`]).
    Quantized {
        /// The weight format.
        format: QuantFormat,
        /// How the layers meet their activations.
        precision: LinearPrecision,
    },
}

impl LinearWeights {
    /// Quantized to `format`, with the op set's default activation precision (int8
    /// activations where the provider has that path).
    pub fn quantized(format: QuantFormat) -> Self {
        Self::Quantized {
            format,
            precision: LinearPrecision::default(),
        }
    }
}

/// A batch of token sequences, right-padded to the longest: `batch × seq_len` ids and type
/// ids, and each sequence's real length.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BertBatch {
    ids: Vec<u32>,
    type_ids: Vec<u32>,
    valid: Vec<usize>,
    seq_len: usize,
}

impl BertBatch {
    /// The sequences `ids` (token type 0 throughout), padded on the right with `pad_id`.
    ///
    /// Errors: `InvalidInput` for an empty batch or an empty sequence.
    pub fn new<S: AsRef<[u32]>>(ids: &[S], pad_id: u32) -> Result<Self> {
        let zeros: Vec<Vec<u32>> = ids.iter().map(|s| vec![0; s.as_ref().len()]).collect();
        Self::with_type_ids(ids, &zeros, pad_id)
    }

    /// The sequences `ids` with their token type ids, padded on the right with `pad_id`
    /// (type 0 on padding).
    ///
    /// Errors: `InvalidInput` for an empty batch or an empty sequence, `ShapeMismatch` when
    /// the type ids do not match the sequences one for one.
    pub fn with_type_ids<S: AsRef<[u32]>, T: AsRef<[u32]>>(ids: &[S], type_ids: &[T], pad_id: u32) -> Result<Self> {
        if ids.is_empty() {
            return Err(CoreError::invalid_input("BERT batch: the batch is empty"));
        }
        if type_ids.len() != ids.len() {
            return Err(CoreError::shape_mismatch(
                "BERT batch: type id sequences",
                [ids.len()],
                [type_ids.len()],
            ));
        }
        let valid: Vec<usize> = ids.iter().map(|s| s.as_ref().len()).collect();
        if let Some(b) = valid.iter().position(|&n| n == 0) {
            return Err(CoreError::invalid_input(format!("BERT batch: sequence {b} is empty")));
        }
        let seq_len = valid.iter().copied().max().unwrap_or(0);
        let mut all_ids = Vec::with_capacity(ids.len() * seq_len);
        let mut all_types = Vec::with_capacity(ids.len() * seq_len);
        for (b, (s, t)) in ids.iter().zip(type_ids).enumerate() {
            let (s, t) = (s.as_ref(), t.as_ref());
            if s.len() != t.len() {
                return Err(CoreError::shape_mismatch(
                    format!("BERT batch: type ids of sequence {b}"),
                    [s.len()],
                    [t.len()],
                ));
            }
            all_ids.extend_from_slice(s);
            all_ids.resize(all_ids.len() + seq_len - s.len(), pad_id);
            all_types.extend_from_slice(t);
            all_types.resize(all_types.len() + seq_len - t.len(), 0);
        }
        Ok(Self {
            ids: all_ids,
            type_ids: all_types,
            valid,
            seq_len,
        })
    }

    /// Sequences in the batch.
    pub fn batch_size(&self) -> usize {
        self.valid.len()
    }

    /// The padded length.
    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    /// Each sequence's real (unpadded) length.
    pub fn valid(&self) -> &[usize] {
        &self.valid
    }

    /// The token ids, `batch_size × seq_len`, row-major.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    /// The token type ids, `batch_size × seq_len`, row-major.
    pub fn type_ids(&self) -> &[u32] {
        &self.type_ids
    }
}

/// One encoder layer's ops with weights.
#[derive(Debug)]
struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attention_out: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
}

/// A BERT encoder placed on an [`Executor`]: token ids in, one hidden state per token out.
///
/// Every op of [`forward`](Self::forward) runs through the executor, so its
/// [`report`](Executor::report) says where each ran.
#[derive(Debug)]
pub struct BertModel {
    config: BertConfig,
    weights: LinearWeights,
    word: Embedding,
    position: Embedding,
    token_type: Embedding,
    embedding_norm: LayerNorm,
    layers: Vec<Layer>,
    add: Add,
    act: Act,
    attention: Attention,
}

impl BertModel {
    /// Loads `dir/config.json` and `dir/model.safetensors`.
    ///
    /// Errors: those of [`BertConfig::from_file`] and [`from_file`](Self::from_file).
    pub fn load(exec: &Arc<Executor>, dir: impl AsRef<Path>, weights: LinearWeights) -> Result<Self> {
        let dir = dir.as_ref();
        let config = BertConfig::from_file(dir.join("config.json"))?;
        Self::from_file(exec, config, dir.join("model.safetensors"), weights)
    }

    /// Builds the encoder of `config` from the safetensors file at `path`, memory-mapped
    /// while loading (it must not be modified meanwhile). Tensor names are Hugging Face's
    /// (`embeddings.word_embeddings.weight`, `encoder.layer.0.attention.self.query.weight`,
    /// ...), optionally under `bert.` as in checkpoints saved from a task model; F32, F16 and
    /// BF16 tensors are read. A pooler, if present, is not used.
    ///
    /// Errors: `Io` naming an unreadable file; `InvalidInput` naming a malformed file or a
    /// missing tensor; `ShapeMismatch` naming a tensor whose shape the config contradicts;
    /// `Unsupported` naming a tensor of another dtype; `InvalidConfig` when the file holds
    /// more layers than `num_hidden_layers`; quantization errors naming the tensor (a
    /// format whose block does not divide a row); and the ops' placement errors.
    pub fn from_file(
        exec: &Arc<Executor>,
        config: BertConfig,
        path: impl AsRef<Path>,
        weights: LinearWeights,
    ) -> Result<Self> {
        config.validate()?;
        let file = MappedFile::open(path.as_ref())?;
        let mut t = file.tensors()?;
        if !t.has("embeddings.word_embeddings.weight") && t.has("bert.embeddings.word_embeddings.weight") {
            t.set_prefix("bert.");
        }
        Self::build(exec, config, &t, weights)
    }

    fn build(exec: &Arc<Executor>, config: BertConfig, t: &Tensors<'_>, weights: LinearWeights) -> Result<Self> {
        let h = config.hidden_size;
        let eps = config.layer_norm_eps;
        let embedding = |name: &str, rows: usize| -> Result<Embedding> {
            let table = t.f32s(name, &[rows, h])?;
            Embedding::dense(exec, &table, h).map_err(|e| context(e, name))
        };
        let norm = |prefix: &str| -> Result<LayerNorm> {
            let w = t.f32s(&format!("{prefix}.weight"), &[h])?;
            let b = t.f32s(&format!("{prefix}.bias"), &[h])?;
            LayerNorm::new(exec, &w, Some(&b), eps).map_err(|e| context(e, prefix))
        };
        let linear = |prefix: &str, out: usize, inp: usize| -> Result<Linear> {
            let name = format!("{prefix}.weight");
            let w = t.f32s(&name, &[out, inp])?;
            let b = t.f32s(&format!("{prefix}.bias"), &[out])?;
            match weights {
                LinearWeights::F32 => Linear::dense(exec, &w, [out, inp], Some(&b)),
                LinearWeights::Quantized { format, precision } => {
                    let q = quantize(format, &w, &[out, inp])
                        .map_err(|e| context(e, &format!("quantizing {name} to {format}")))?;
                    Linear::with_precision(exec, &q, Some(&b), precision)
                }
            }
            .map_err(|e| context(e, prefix))
        };

        let word = embedding("embeddings.word_embeddings.weight", config.vocab_size)?;
        let position = embedding("embeddings.position_embeddings.weight", config.max_position_embeddings)?;
        let token_type = embedding("embeddings.token_type_embeddings.weight", config.type_vocab_size)?;
        let embedding_norm = norm("embeddings.LayerNorm")?;
        let (i, n) = (config.intermediate_size, config.num_hidden_layers);
        let progress = crate::progress::bar(n as u64, "loading BERT layers", false);
        let layers = (0..n)
            .map(|l| {
                progress.inc(1);
                let p = format!("encoder.layer.{l}");
                Ok(Layer {
                    query: linear(&format!("{p}.attention.self.query"), h, h)?,
                    key: linear(&format!("{p}.attention.self.key"), h, h)?,
                    value: linear(&format!("{p}.attention.self.value"), h, h)?,
                    attention_out: linear(&format!("{p}.attention.output.dense"), h, h)?,
                    attention_norm: norm(&format!("{p}.attention.output.LayerNorm"))?,
                    intermediate: linear(&format!("{p}.intermediate.dense"), i, h)?,
                    output: linear(&format!("{p}.output.dense"), h, i)?,
                    output_norm: norm(&format!("{p}.output.LayerNorm"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if t.has(&format!("{}encoder.layer.{n}.attention.self.query.weight", t.prefix())) {
            return Err(CoreError::invalid_config(format!(
                "{}: the file has more encoder layers than the config's num_hidden_layers {n}",
                t.path().display()
            )));
        }
        let shape = AttentionShape {
            n_heads: config.num_attention_heads,
            n_kv_heads: config.num_attention_heads,
            head_dim: config.head_dim(),
        };
        Ok(Self {
            add: Add::new(exec)?,
            act: Act::new(exec, config.hidden_act.activation())?,
            attention: Attention::new(exec, shape, AttentionKind::Bidirectional, None)?,
            config,
            weights,
            word,
            position,
            token_type,
            embedding_norm,
            layers,
        })
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// How its linear layers keep their weights.
    pub fn linear_weights(&self) -> LinearWeights {
        self.weights
    }

    /// The executor its ops were placed on.
    pub fn executor(&self) -> &Arc<Executor> {
        self.add.executor()
    }

    /// The last layer's hidden states, `[batch, seq_len, hidden_size]`, where the last op
    /// ran. Rows of padding positions hold values too (padding is masked out of attention
    /// as keys only); poolers read the real rows ([`BertBatch::valid`]).
    ///
    /// Errors: `InvalidInput` for a batch longer than `max_position_embeddings`, or a token
    /// or type id outside its table (naming it); provider errors.
    pub fn forward(&self, batch: &BertBatch) -> Result<Tensor> {
        let c = &self.config;
        let (b, s) = (batch.batch_size(), batch.seq_len());
        if s > c.max_position_embeddings {
            return Err(CoreError::invalid_input(format!(
                "BERT: a sequence of {s} tokens is longer than max_position_embeddings {}",
                c.max_position_embeddings
            )));
        }
        let (h, heads, hd) = (c.hidden_size, c.num_attention_heads, c.head_dim());
        let lead = [b, s];
        let positions: Vec<u32> = (0..b).flat_map(|_| 0..s as u32).collect();
        let word = self.word.forward(batch.ids(), Some(&lead))?;
        let types = self
            .token_type
            .forward(batch.type_ids(), Some(&lead))
            .map_err(|e| context(e, "token type ids"))?;
        let pos = self.position.forward(&positions, Some(&lead))?;
        let x = self.add.forward(&self.add.forward(&word, &types)?, &pos)?;
        let mut x = self.embedding_norm.forward(&x)?;

        let mut cache = self.attention.new_cache(b, s)?;
        for layer in &self.layers {
            cache.clear();
            let heads_of = |y: Tensor| y.reshape(&[b, s, heads, hd]);
            let q = heads_of(layer.query.forward(&x)?)?;
            let k = heads_of(layer.key.forward(&x)?)?;
            let v = heads_of(layer.value.forward(&x)?)?;
            let ctx = self
                .attention
                .forward(&q, &k, &v, &mut cache, Some(batch.valid()))?
                .reshape(&[b, s, h])?;
            let attended = layer.attention_out.forward(&ctx)?;
            let a = layer.attention_norm.forward(&self.add.forward(&attended, &x)?)?;
            let inner = self.act.forward(&layer.intermediate.forward(&a)?)?;
            let out = layer.output.forward(&inner)?;
            x = layer.output_norm.forward(&self.add.forward(&out, &a)?)?;
        }
        Ok(x)
    }
}
