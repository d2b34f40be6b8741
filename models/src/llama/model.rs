//! [`LlamaModel`]: a llama-architecture decoder's ops, loaded from GGUF, and its forward pass
//! over a [`LlamaState`] (the per-layer KV caches).

use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::path::Path;
use std::sync::Arc;

use aihal_core::Device;
use aihal_core::{CoreError, DType, Result};
use aihal_ops::plan::{follow_plan, ChainOp, Plan};
use aihal_ops::table::MClass;
use aihal_ops::{
    Add, Attention, AttentionKind, AttentionShape, Embedding, Executor, GateActivation, Gated, KvCache, Linear,
    LinearPrecision, Planned, RmsNorm, Rope, RopeStyle, Tensor,
};
use aihal_quantize::{GgufFile, QuantizedTensor};

use super::config::{Architecture, LlamaConfig};
use super::projections::Projections;

/// How a [`LlamaModel`] is built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LlamaOptions {
    /// How the linear layers over quantized weights meet their activations (int8 by
    /// default, as llama.cpp's and candle's CPU paths do; F32 for the closest agreement with
    /// an f32 computation). Layers stored as F32/F16/BF16 are dense f32 layers either way.
    pub precision: LinearPrecision,
    /// The MLP's gate activation instead of the architecture's (SiLU for llama, tanh GELU
    /// for Gemma 3), for comparisons with implementations that use another: `None` (the
    /// default) keeps the architecture's. candle-transformers 0.11's `quantized_gemma3`, for
    /// one, gates Gemma 3's MLP with SiLU (its issue #3745).
    pub gate_activation: Option<GateActivation>,
    /// The most positions one pass runs through a model with local (sliding-window) layers
    /// (Gemma 3); 512 by default. A longer input runs in passes of this many, and each local
    /// layer's KV cache then holds its window plus this many positions less one, however
    /// long the sequence, where the cache's device can drop positions (the CPU; elsewhere it
    /// holds the whole sequence). Models without local layers run any input in one pass.
    pub local_chunk: usize,
    /// The most bytes of a quantized embedding table or output projection read from the file
    /// and made into one op; 32 MiB by default. A larger one (Gemma 3's 170 MiB table) is read
    /// a part of its rows at a time, each part its own op (parts of a multiple of 64 rows), so
    /// that loading holds one part as read beside the ops made so far instead of the whole
    /// table twice, and so that each part fits in one buffer of a device that limits buffers
    /// (wgpu's 128 MiB). The results do not depend on it.
    pub vocab_part_bytes: usize,
    /// Whether a layer's Q, K and V projections, and its gate and up projections, each run
    /// as one linear op over their weights' rows stacked, where they are quantized in one
    /// format and the executor's device is the CPU (on by default). One call then reads the
    /// shared input once and streams all three (or both) weights on one set of threads; each
    /// output is the same sum as the separate ops give. The record then counts one linear
    /// call where there were three (or two).
    pub stack_projections: bool,
}

impl Default for LlamaOptions {
    /// 8-bit activations, the architecture's gate, passes of 512 positions, vocabulary tables
    /// in parts of at most 32 MiB, stacked projections.
    fn default() -> Self {
        Self {
            precision: LinearPrecision::default(),
            gate_activation: None,
            local_chunk: 512,
            vocab_part_bytes: 32 << 20,
            stack_projections: true,
        }
    }
}

/// A weight as stored: quantized (kept so, never re-quantized) or plain numbers widened to
/// f32.
pub(super) enum Stored {
    Quantized(QuantizedTensor),
    Dense(Vec<f32>),
}

impl Stored {
    /// The linear op over this weight, `shape` `[out, in]` (what a dense weight's values are
    /// read as), with `precision` for a quantized one.
    pub(super) fn into_linear(
        self,
        exec: &Arc<Executor>,
        shape: [usize; 2],
        precision: LinearPrecision,
    ) -> Result<Linear> {
        match self {
            Self::Quantized(w) => Linear::with_precision(exec, &w, None, precision),
            Self::Dense(w) => Linear::dense(exec, &w, shape, None),
        }
    }
}

/// Reads the tensors of one GGUF file, checking names and shapes, and shows the bytes read
/// so far on a progress bar (hidden unless stderr is a terminal).
struct Reader<'a, R> {
    file: &'a GgufFile,
    stream: R,
    progress: indicatif::ProgressBar,
}

impl<R: Read + Seek> Reader<'_, R> {
    fn info(&self, name: &str, shape: &[usize]) -> Result<()> {
        let info = self
            .file
            .tensor(name)
            .ok_or_else(|| CoreError::invalid_input(format!("llama GGUF: tensor {name} is missing")))?;
        if info.shape() != shape {
            return Err(CoreError::shape_mismatch(
                format!("llama GGUF tensor {name} (row-major)"),
                shape,
                info.shape(),
            ));
        }
        Ok(())
    }

    /// Tensor `name` of `shape` as stored.
    fn stored(&mut self, name: &str, shape: &[usize]) -> Result<Stored> {
        self.info(name, shape)?;
        let ty = self.file.tensor(name).map(aihal_quantize::GgufTensorInfo::ggml_type);
        if ty.and_then(aihal_quantize::GgmlType::quant_format).is_some() {
            let t = self
                .file
                .read_tensor(&mut self.stream, name)
                .map_err(|e| crate::context(e, &format!("llama GGUF tensor {name}")))?;
            self.read(name);
            return Ok(Stored::Quantized(t));
        }
        self.dense(name, shape).map(Stored::Dense)
    }

    /// Rows `rows` of quantized tensor `name` of `shape` (`[rows, K]`), as stored.
    fn quantized_rows(&mut self, name: &str, shape: &[usize], rows: std::ops::Range<usize>) -> Result<QuantizedTensor> {
        self.info(name, shape)?;
        let t = self
            .file
            .read_tensor_rows(&mut self.stream, name, rows)
            .map_err(|e| crate::context(e, &format!("llama GGUF tensor {name}")))?;
        self.progress.inc(t.data().len() as u64);
        Ok(t)
    }

    /// Whether tensor `name` is stored in a quantized block type (read as [`QuantizedTensor`]).
    fn quantized(&self, name: &str) -> bool {
        self.file
            .tensor(name)
            .is_some_and(|t| t.ggml_type().quant_format().is_some())
    }

    /// The rows per part in which quantized tensor `name` (`[rows, K]`) is read and placed:
    /// all of them, unless its bytes exceed `part_bytes`
    /// ([`LlamaOptions::vocab_part_bytes`]): then as many as that many bytes hold, at least
    /// one, a multiple of 64 from 64 on (whole panels of rows for every packed layout).
    fn part_rows(&self, name: &str, rows: usize, part_bytes: usize) -> usize {
        let Some(info) = self.file.tensor(name) else {
            return rows;
        };
        match info.byte_len() {
            Some(bytes) if self.quantized(name) && bytes > part_bytes as u64 && rows > 0 => {
                let row = bytes.div_ceil(rows as u64).max(1);
                let fit = usize::try_from(part_bytes as u64 / row).unwrap_or(rows).max(1);
                (if fit >= 64 { fit / 64 * 64 } else { fit }).min(rows)
            }
            _ => rows,
        }
    }

    /// Tensor `name` of `shape` in f32 (stored as F32, F16 or BF16).
    fn dense(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        self.info(name, shape)?;
        let ty = self.file.tensor(name).map(aihal_quantize::GgufTensorInfo::ggml_type);
        let not_read = || {
            CoreError::unsupported(
                format!("llama GGUF tensor {name}"),
                format!(
                    "{} (read: F32, F16, BF16 and the quantized types aihal-quantize reads)",
                    ty.map_or_else(|| "?".to_owned(), |t| t.to_string())
                ),
            )
        };
        if ty.and_then(aihal_quantize::GgmlType::dense_dtype).is_none() {
            return Err(not_read());
        }
        let buf = self
            .file
            .read_dense(&mut self.stream, name)
            .map_err(|e| crate::context(e, &format!("llama GGUF tensor {name}")))?;
        let values: Vec<f32> = match buf.dtype() {
            DType::F32 => buf.as_slice::<f32>()?.to_vec(),
            DType::F16 => buf.as_slice::<half::f16>()?.iter().map(|v| v.to_f32()).collect(),
            DType::BF16 => buf.as_slice::<half::bf16>()?.iter().map(|v| v.to_f32()).collect(),
            _ => return Err(not_read()),
        };
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(CoreError::invalid_input(format!(
                "llama GGUF tensor {name}: value {i} is {}",
                values[i]
            )));
        }
        self.read(name);
        Ok(values)
    }

    /// Moves the progress bar past tensor `name`.
    fn read(&self, name: &str) {
        let len = self
            .file
            .tensor(name)
            .and_then(aihal_quantize::GgufTensorInfo::byte_len);
        self.progress.inc(len.unwrap_or(0));
    }
}

/// One decoder layer's ops with weights.
#[derive(Debug)]
struct Layer {
    attn_norm: RmsNorm,
    /// Q, K and V.
    qkv: Projections,
    o: Linear,
    ffn_norm: RmsNorm,
    /// The MLP's gate and up projections.
    gate_up: Projections,
    down: Linear,
    /// Gemma 3's extra norms.
    gemma: Option<GemmaNorms>,
    /// Whether the layer attends within the local window (Gemma 3's sliding-window layers).
    local: bool,
}

/// The norms a Gemma 3 layer adds to the llama layout: RMSNorm over each query and key head
/// (before RoPE), and over the attention's and the MLP's outputs (before each residual add).
#[derive(Debug)]
struct GemmaNorms {
    q: RmsNorm,
    k: RmsNorm,
    post_attn: RmsNorm,
    post_ffn: RmsNorm,
}

/// RoPE and attention for one kind of layer (global, or local with its window and base).
#[derive(Debug)]
struct AttentionOps {
    rope_q: Rope,
    rope_k: Rope,
    attention: Attention,
}

/// A llama-architecture decoder placed on an [`Executor`]: token ids in, the logits of the
/// last position out.
///
/// Built from a GGUF file ([`load`](Self::load)); the linear weights and the embedding table
/// stay in the format they are stored in. Every op of [`forward`](Self::forward) runs
/// through the executor, so its [`report`](Executor::report) says where each ran. The model
/// is read-only once built: the positions a generation has seen live in a [`LlamaState`].
#[derive(Debug)]
pub struct LlamaModel {
    config: LlamaConfig,
    /// The embedding table's parts ([`LlamaOptions::vocab_part_bytes`]), `embed_rows` ids
    /// each.
    embed: Vec<Embedding>,
    embed_rows: usize,
    /// What the embedding rows are multiplied by (Gemma 3: `sqrt(hidden)`).
    embed_scale: Option<f32>,
    layers: Vec<Layer>,
    output_norm: RmsNorm,
    /// The output projection's parts, consecutive ranges of the vocabulary.
    output: Vec<Linear>,
    /// The global layers' RoPE and attention (every layer's, without local layers).
    global: AttentionOps,
    /// The local layers' (Gemma 3), with their window and RoPE base.
    local: Option<AttentionOps>,
    gated: Gated,
    add: Add,
    /// [`LlamaOptions::local_chunk`].
    local_chunk: usize,
}

/// The positions a [`LlamaModel`] has seen in one sequence: a preallocated KV cache per
/// layer. Made by [`LlamaModel::new_state`].
#[derive(Debug)]
pub struct LlamaState {
    caches: Vec<KvCache>,
    /// Per layer: positions dropped from the front of its cache (local layers' bounded
    /// caches), and the window it needs behind a position (`None`: every position).
    dropped: Vec<usize>,
    windows: Vec<Option<usize>>,
    max_len: usize,
    pos: usize,
}

impl LlamaState {
    /// Positions seen so far (the position of the next token).
    pub fn position(&self) -> usize {
        self.pos
    }

    /// The most positions it holds.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Forgets every position (the memory stays allocated).
    pub fn clear(&mut self) {
        for c in &mut self.caches {
            c.clear();
        }
        self.dropped.fill(0);
        self.pos = 0;
    }

    /// Keeps the first `len` positions at most (rolls a sequence back).
    ///
    /// Errors: `InvalidInput` when a local layer's bounded cache has already dropped
    /// positions that the window behind `len` needs (a roll-back by more than about the
    /// window, once the sequence has passed the cache's size); nothing changes then.
    /// Rolling back to 0 ([`clear`](Self::clear)) always works.
    pub fn truncate(&mut self, len: usize) -> Result<()> {
        if len == 0 {
            self.clear();
            return Ok(());
        }
        let len = len.min(self.pos);
        for (l, (&d, w)) in self.dropped.iter().zip(&self.windows).enumerate() {
            if let Some(w) = *w {
                if d > 0 && len + 1 < d + w {
                    return Err(CoreError::invalid_input(format!(
                        "llama state: rolling back to position {len} needs positions from {} in layer {l}'s \
                         {w}-position window, but its cache has dropped the first {d}",
                        (len + 1).saturating_sub(w)
                    )));
                }
            }
        }
        for (c, &d) in self.caches.iter_mut().zip(&self.dropped) {
            c.truncate(len - d.min(len));
        }
        self.pos = len;
        Ok(())
    }
}

impl LlamaModel {
    /// Loads the GGUF file at `path` (see [`from_gguf`](Self::from_gguf)).
    ///
    /// Errors: `Io` naming an unreadable file, then those of [`GgufFile::read`] and
    /// [`from_gguf`](Self::from_gguf).
    pub fn load(exec: &Arc<Executor>, path: impl AsRef<Path>, options: LlamaOptions) -> Result<Self> {
        let path = path.as_ref();
        let open = || -> Result<_> {
            let mut reader = BufReader::new(File::open(path)?);
            let file = GgufFile::read(&mut reader)?;
            Ok((file, reader))
        };
        let (file, reader) = open().map_err(|e| crate::context(e, &path.display().to_string()))?;
        Self::from_gguf(exec, &file, reader, options).map_err(|e| crate::context(e, &path.display().to_string()))
    }

    /// Builds the decoder of a parsed GGUF header, reading its tensors from `reader` (the
    /// stream the header was read from).
    ///
    /// Tensors, as llama.cpp names them: `token_embd.weight` `[vocab, hidden]`;
    /// per layer `blk.N.{attn_norm, ffn_norm}.weight` `[hidden]`, `blk.N.attn_q.weight`
    /// `[heads·head_dim, hidden]`, `attn_k`/`attn_v` `[kv_heads·head_dim, hidden]`,
    /// `attn_output` `[hidden, heads·head_dim]`, `ffn_gate`/`ffn_up` `[ffn, hidden]`,
    /// `ffn_down` `[hidden, ffn]`; `output_norm.weight` `[hidden]`; `output.weight`
    /// `[vocab, hidden]`, or, when absent, the embedding table again (tied embeddings).
    /// Shapes are row-major (GGUF's dimensions reversed). Quantized tensors are used as
    /// stored; F32, F16 and BF16 ones become dense f32 ops.
    ///
    /// Errors: those of [`LlamaConfig::from_gguf`] (`Unsupported` for an unknown
    /// architecture); `InvalidInput` naming a missing tensor, `ShapeMismatch` naming a
    /// misshapen one, `Unsupported` naming one of a type that is not read; `InvalidConfig`
    /// when the file holds more layers than `block_count`; read errors; the ops' placement
    /// errors.
    pub fn from_gguf<R: Read + Seek>(
        exec: &Arc<Executor>,
        file: &GgufFile,
        reader: R,
        options: LlamaOptions,
    ) -> Result<Self> {
        let config = LlamaConfig::from_gguf(file)?;
        if options.local_chunk == 0 {
            return Err(CoreError::invalid_config(
                "llama: LlamaOptions::local_chunk is 0; a pass needs at least one position",
            ));
        }
        if options.vocab_part_bytes == 0 {
            return Err(CoreError::invalid_config(
                "llama: LlamaOptions::vocab_part_bytes is 0; a part holds at least one row",
            ));
        }
        let total = file
            .tensors()
            .iter()
            .filter_map(aihal_quantize::GgufTensorInfo::byte_len)
            .sum();
        let mut r = Reader {
            file,
            stream: reader,
            progress: crate::progress::bar(total, &format!("loading {}", config.architecture.name()), true),
        };
        let c = &config;
        let (h, vocab, ffn) = (c.embedding_length, c.vocab_size, c.feed_forward_length);
        let (q_dim, kv_dim) = (c.q_dim(), c.kv_dim());
        let eps = c.rms_norm_eps;

        let linear = |r: &mut Reader<'_, R>, name: &str, out: usize, inp: usize| -> Result<Linear> {
            r.stored(name, &[out, inp])?
                .into_linear(exec, [out, inp], options.precision)
                .map_err(|e| crate::context(e, name))
        };
        // Projections of one input `[.., h]`, each `(name, out_features)`.
        let projections = |r: &mut Reader<'_, R>, members: &[(String, usize)]| -> Result<Projections> {
            let mut read = Vec::with_capacity(members.len());
            for (name, out) in members {
                read.push((r.stored(name, &[*out, h])?, [*out, h]));
            }
            let names: Vec<String> = members.iter().map(|(name, _)| name.clone()).collect();
            Projections::new(exec, read, &names, options.precision, options.stack_projections)
        };
        let norm = |r: &mut Reader<'_, R>, name: &str| -> Result<RmsNorm> {
            let w = r.dense(name, &[h])?;
            RmsNorm::new(exec, &w, eps).map_err(|e| crate::context(e, name))
        };

        // The embedding table, and the output projection when it is tied to the table (no
        // `output.weight`), both built now, so that the table read from the file is dropped
        // before the layers are read (`quantized_table` says how a tied table is held once).
        let embd_name = "token_embd.weight";
        let tied = file.tensor("output.weight").is_none();
        // A table larger than `vocab_part_bytes` is read and made into ops a part of its rows
        // at a time (each part's bytes dropped once its ops hold them).
        let embed_rows = r.part_rows(embd_name, vocab, options.vocab_part_bytes);
        let mut embed = Vec::new();
        let mut tied_output = Vec::new();
        if r.quantized(embd_name) {
            for start in (0..vocab).step_by(embed_rows) {
                let t = Arc::new(r.quantized_rows(embd_name, &[vocab, h], start..(start + embed_rows).min(vocab))?);
                let (e, o) = quantized_table(exec, &t, tied, options.precision)?;
                embed.push(e);
                tied_output.extend(o);
            }
        } else {
            let t = r.dense(embd_name, &[vocab, h])?;
            embed.push(Embedding::dense(exec, &t, h).map_err(|e| crate::context(e, embd_name))?);
            if tied {
                tied_output
                    .push(Linear::dense(exec, &t, [vocab, h], None).map_err(|e| crate::context(e, TIED_CONTEXT))?);
            }
        }

        let gemma = c.architecture == Architecture::Gemma3;
        let head_norm = |r: &mut Reader<'_, R>, name: &str| -> Result<RmsNorm> {
            let w = r.dense(name, &[c.head_dim])?;
            RmsNorm::new(exec, &w, eps).map_err(|e| crate::context(e, name))
        };
        let mut layers = Vec::with_capacity(c.block_count);
        for l in 0..c.block_count {
            let n = |what: &str| format!("blk.{l}.{what}.weight");
            let attn_norm = norm(&mut r, &n("attn_norm"))?;
            let qkv = projections(
                &mut r,
                &[(n("attn_q"), q_dim), (n("attn_k"), kv_dim), (n("attn_v"), kv_dim)],
            )?;
            let q_norm = if gemma {
                Some(head_norm(&mut r, &n("attn_q_norm"))?)
            } else {
                None
            };
            let k_norm = if gemma {
                Some(head_norm(&mut r, &n("attn_k_norm"))?)
            } else {
                None
            };
            let o = linear(&mut r, &n("attn_output"), h, q_dim)?;
            let post_attn = if gemma {
                Some(norm(&mut r, &n("post_attention_norm"))?)
            } else {
                None
            };
            let ffn_norm = norm(&mut r, &n("ffn_norm"))?;
            let gate_up = projections(&mut r, &[(n("ffn_gate"), ffn), (n("ffn_up"), ffn)])?;
            let down = linear(&mut r, &n("ffn_down"), h, ffn)?;
            let post_ffn = if gemma {
                Some(norm(&mut r, &n("post_ffw_norm"))?)
            } else {
                None
            };
            let gemma = match (q_norm, k_norm, post_attn, post_ffn) {
                (Some(q), Some(k), Some(post_attn), Some(post_ffn)) => Some(GemmaNorms {
                    q,
                    k,
                    post_attn,
                    post_ffn,
                }),
                _ => None,
            };
            layers.push(Layer {
                attn_norm,
                qkv,
                o,
                ffn_norm,
                gate_up,
                down,
                gemma,
                local: c.is_local(l),
            });
        }
        let extra = format!("blk.{}.attn_q.weight", c.block_count);
        if file.tensor(&extra).is_some() {
            return Err(CoreError::invalid_config(format!(
                "llama GGUF: tensor {extra} exists but block_count is {}",
                c.block_count
            )));
        }
        let output_norm = norm(&mut r, "output_norm.weight")?;
        let output = if tied {
            // Tied embeddings: the output projection made from the embedding table above.
            tied_output
        } else {
            let rows = r.part_rows("output.weight", vocab, options.vocab_part_bytes);
            if r.quantized("output.weight") {
                (0..vocab)
                    .step_by(rows)
                    .map(|start| {
                        let t = r.quantized_rows("output.weight", &[vocab, h], start..(start + rows).min(vocab))?;
                        Linear::with_precision(exec, &t, None, options.precision)
                            .map_err(|e| crate::context(e, "output.weight"))
                    })
                    .collect::<Result<Vec<_>>>()?
            } else {
                vec![linear(&mut r, "output.weight", vocab, h)?]
            }
        };

        // GGUF llama files store Q and K with the rows of each head permuted so that RoPE
        // rotates adjacent pairs (2i, 2i + 1): llama.cpp's converter undoes Hugging Face's
        // half-split layout (`LlamaModel.permute` in convert_hf_to_gguf.py) and llama.cpp
        // applies its "normal" rope to LLM_ARCH_LLAMA (`llama_model_rope_type`);
        // candle-transformers' quantized_llama uses `rope_i` (interleaved) for the same reason.
        // Gemma 3 files keep Hugging Face's layout, and llama.cpp rotates them half-split
        // ("neox"), as candle-transformers' quantized_gemma3 does (`rope`).
        let style = if gemma { RopeStyle::Half } else { RopeStyle::Interleaved };
        let shape = AttentionShape {
            n_heads: c.head_count,
            n_kv_heads: c.head_count_kv,
            head_dim: c.head_dim,
        };
        let scale = Some(c.attention_scale());
        let ops = |base: f32, kind: AttentionKind| -> Result<AttentionOps> {
            Ok(AttentionOps {
                rope_q: Rope::new(exec, c.head_count, c.head_dim, base, style)?,
                rope_k: Rope::new(exec, c.head_count_kv, c.head_dim, base, style)?,
                attention: Attention::new(exec, shape, kind, scale)?,
            })
        };
        let global = ops(c.rope_freq_base, AttentionKind::Causal)?;
        let local = match c.local_attention {
            Some(a) => Some(ops(a.rope_freq_base, AttentionKind::SlidingWindow(a.window))?),
            None => None,
        };
        let gate = options.gate_activation.unwrap_or(if gemma {
            GateActivation::GeluTanh
        } else {
            GateActivation::Silu
        });
        Ok(Self {
            global,
            local,
            gated: Gated::new(exec, gate)?,
            add: Add::new(exec)?,
            embed_scale: gemma.then(|| (h as f32).sqrt()),
            local_chunk: options.local_chunk,
            config,
            embed,
            embed_rows,
            layers,
            output_norm,
            output,
        })
    }

    /// The RoPE and attention ops of layer `layer`.
    fn attention_ops(&self, layer: &Layer) -> &AttentionOps {
        match (&self.local, layer.local) {
            (Some(local), true) => local,
            _ => &self.global,
        }
    }

    /// The hyperparameters.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// The executor its ops were placed on.
    pub fn executor(&self) -> &Arc<Executor> {
        self.add.executor()
    }

    /// Makes the model follow a plan for calls of row class `m` (decode: `MClass::One`; a
    /// prompt: `MClass::Many`), computed from the executor's dispatch table over one layer's
    /// chain of ops (with the embedding before it and the output after it), measured op times
    /// plus measured moves: every layer then runs its ops where layer 0's plan says. Attention
    /// stays where its KV cache lives. Plan each phase once, after loading; calls then cost
    /// what they did before.
    ///
    /// Errors: those of [`aihal_ops::plan::follow_plan`] (no dispatch table, a key the table
    /// cannot place, an explicit device or strict mode that the plan would leave); on an
    /// error no op is changed.
    pub fn follow_plan(&mut self, m: MClass) -> Result<Plan> {
        let c = &self.config;
        let rows = m.representative();
        let f32s = |n: usize| rows * n * 4;
        let (d, ff) = (c.embedding_length, c.feed_forward_length);
        let (q_dim, kv_dim) = (c.head_count * c.head_dim, c.head_count_kv * c.head_dim);
        let exec = Arc::clone(self.add.executor());
        let Some((first, rest)) = self.layers.split_first_mut() else {
            return Err(CoreError::invalid_input("a plan needs at least one layer"));
        };
        // Layer 0's ops in order, with where each sits in the chain (after the embedding).
        let (n_qkv, n_gate_up) = (first.qkv.ops().len(), first.gate_up.ops().len());
        let mut chain: Vec<ChainOp<'_>> = vec![
            ChainOp {
                op: &mut self.embed[0],
                input_bytes: rows * 4,
            },
            ChainOp {
                op: &mut first.attn_norm,
                input_bytes: f32s(d),
            },
        ];
        for op in first.qkv.ops_mut() {
            chain.push(ChainOp {
                op,
                input_bytes: f32s(d),
            });
        }
        chain.extend([
            ChainOp {
                op: &mut self.global.rope_q,
                input_bytes: f32s(q_dim),
            },
            ChainOp {
                op: &mut self.global.rope_k,
                input_bytes: f32s(kv_dim),
            },
            ChainOp {
                op: &mut first.o,
                input_bytes: f32s(q_dim),
            },
            ChainOp {
                op: &mut self.add,
                input_bytes: f32s(d),
            },
            ChainOp {
                op: &mut first.ffn_norm,
                input_bytes: f32s(d),
            },
        ]);
        for op in first.gate_up.ops_mut() {
            chain.push(ChainOp {
                op,
                input_bytes: f32s(d),
            });
        }
        chain.extend([
            ChainOp {
                op: &mut self.gated,
                input_bytes: f32s(ff),
            },
            ChainOp {
                op: &mut first.down,
                input_bytes: f32s(ff),
            },
            ChainOp {
                op: &mut self.output_norm,
                input_bytes: f32s(d),
            },
            ChainOp {
                op: &mut self.output[0],
                input_bytes: f32s(d),
            },
        ]);
        let at_qkv = 2;
        let at_rope = at_qkv + n_qkv;
        let at_o = at_rope + 2;
        let at_ffn_norm = at_o + 2;
        let at_gate_up = at_ffn_norm + 1;
        let at_down = at_gate_up + n_gate_up + 1;
        let at_output = at_down + 2;
        let plan = follow_plan(&exec, &mut chain, m)?;
        drop(chain);
        // The other parts of the vocabulary's ops follow the first.
        let embed = device_named(&self.embed[0], &plan.devices[0])?;
        let output = device_named(&self.output[0], &plan.devices[at_output])?;
        for part in &mut self.embed[1..] {
            part.pin(m, embed)?;
        }
        for part in &mut self.output[1..] {
            part.pin(m, output)?;
        }
        // Layer 0's devices, at its ops' positions in the chain above.
        let [norm, o, ffn_norm, down] = [
            (&first.attn_norm as &dyn Planned, 1),
            (&first.o, at_o),
            (&first.ffn_norm, at_ffn_norm),
            (&first.down, at_down),
        ]
        .map(|(op, i)| device_named(op, &plan.devices[i]));
        let (norm, o, ffn_norm, down) = (norm?, o?, ffn_norm?, down?);
        // Each group's ops, at their positions from `at` on.
        let devices = |group: &Projections, at: usize| -> Result<Vec<Device>> {
            group
                .ops()
                .into_iter()
                .enumerate()
                .map(|(j, op)| device_named(op, &plan.devices[at + j]))
                .collect()
        };
        let (qkv, gate_up) = (devices(&first.qkv, at_qkv)?, devices(&first.gate_up, at_gate_up)?);
        // The ops outside the chain follow their counterparts in it: the local layers' RoPE
        // the global one's, Gemma 3's extra norms the layer's first norm.
        let rope_q = device_named(&self.global.rope_q, &plan.devices[at_rope])?;
        let rope_k = device_named(&self.global.rope_k, &plan.devices[at_rope + 1])?;
        if let Some(local) = &mut self.local {
            local.rope_q.pin(m, rope_q)?;
            local.rope_k.pin(m, rope_k)?;
        }
        if let Some(g) = &mut first.gemma {
            g.pin(m, norm)?;
        }
        // A layer whose projections are laid out as layer 0's follows them one by one; one
        // laid out otherwise (stacked where layer 0's are not, as when the members' formats
        // differ between layers) follows layer 0's first projection.
        let pin_group = |group: &mut Projections, devices: &[Device]| -> Result<()> {
            let mut ops = group.ops_mut();
            let same = ops.len() == devices.len();
            for (j, op) in ops.iter_mut().enumerate() {
                op.pin(m, if same { devices[j] } else { devices[0] })?;
            }
            Ok(())
        };
        for l in rest {
            l.attn_norm.pin(m, norm)?;
            pin_group(&mut l.qkv, &qkv)?;
            l.o.pin(m, o)?;
            l.ffn_norm.pin(m, ffn_norm)?;
            pin_group(&mut l.gate_up, &gate_up)?;
            l.down.pin(m, down)?;
            if let Some(g) = &mut l.gemma {
                g.pin(m, norm)?;
            }
        }
        Ok(plan)
    }

    /// A state for one sequence of up to `max_len` positions (the context length when
    /// `None`), its KV caches allocated now, on the attention op's device.
    ///
    /// Errors: `InvalidInput` for a `max_len` of 0 or above the context length; allocation
    /// errors of the provider.
    pub fn new_state(&self, max_len: Option<usize>) -> Result<LlamaState> {
        let ctx = self.config.context_length;
        let max_len = max_len.unwrap_or(ctx);
        if max_len == 0 || max_len > ctx {
            return Err(CoreError::invalid_input(format!(
                "llama: a state of {max_len} positions; it must be between 1 and the context length {ctx}"
            )));
        }
        // Local layers' caches hold their window plus one pass less one position, where the
        // device can drop positions from the front; every other cache holds `max_len`.
        let mut caches = Vec::with_capacity(self.layers.len());
        let mut windows = Vec::with_capacity(self.layers.len());
        for l in &self.layers {
            let attention = &self.attention_ops(l).attention;
            let window = self.config.local_attention.filter(|_| l.local).map(|a| a.window);
            let bounded = window.map(|w| w - 1 + self.local_chunk).filter(|&cap| cap < max_len);
            let cache = match bounded {
                Some(cap) => {
                    let c = attention.new_cache(1, cap)?;
                    if c.can_drop_front() {
                        c
                    } else {
                        attention.new_cache(1, max_len)?
                    }
                }
                None => attention.new_cache(1, max_len)?,
            };
            caches.push(cache);
            windows.push(window);
        }
        Ok(LlamaState {
            dropped: vec![0; caches.len()],
            caches,
            windows,
            max_len,
            pos: 0,
        })
    }

    /// Checks that `ids` can follow what `state` holds: not empty, each below the vocabulary
    /// size, all within the state's positions.
    ///
    /// Errors: `InvalidInput` naming the problem.
    pub fn check_input(&self, ids: &[u32], state: &LlamaState) -> Result<()> {
        if ids.is_empty() {
            return Err(CoreError::invalid_input("llama: no token ids to run"));
        }
        let vocab = self.config.vocab_size;
        if let Some((i, id)) = ids.iter().enumerate().find(|(_, &id)| id as usize >= vocab) {
            return Err(CoreError::invalid_input(format!(
                "llama: token id {id} at index {i} is not below the vocabulary size {vocab}"
            )));
        }
        if state.caches.len() != self.layers.len() {
            return Err(CoreError::invalid_input(format!(
                "llama: the state has {} layers' caches, the model {} layers",
                state.caches.len(),
                self.layers.len()
            )));
        }
        let end = state.pos + ids.len();
        if end > state.max_len {
            let what = if state.max_len == self.config.context_length {
                "the context length"
            } else {
                "the state's max_len"
            };
            return Err(CoreError::invalid_input(format!(
                "llama: {} tokens after {} positions make {end}, more than {what} {}",
                ids.len(),
                state.pos,
                state.max_len
            )));
        }
        Ok(())
    }

    /// Runs `ids` (positions `state.position() ..`) through the decoder, appending them to
    /// `state`, and returns the logits of the last one (`vocab_size` values). Nothing is
    /// appended when the input is refused.
    ///
    /// Errors: those of [`check_input`](Self::check_input) (an empty input, an id outside the
    /// vocabulary, more positions than the state holds); provider errors.
    pub fn forward(&self, ids: &[u32], state: &mut LlamaState) -> Result<Vec<f32>> {
        self.check_input(ids, state)?;
        let pos0 = state.pos;
        // Models with local layers run long inputs in passes (their caches are sized for one).
        let pass = if self.local.is_some() {
            self.local_chunk
        } else {
            ids.len()
        };
        let mut logits = Vec::new();
        for part in ids.chunks(pass.max(1)) {
            match self.forward_pass(part, state) {
                Ok(l) => logits = l,
                Err(e) => {
                    // Keep the caches consistent: drop what the failed call appended (or, if
                    // its earlier passes made a local cache drop what that needs, everything).
                    if state.truncate(pos0).is_err() {
                        state.clear();
                    }
                    return Err(e);
                }
            }
        }
        Ok(logits)
    }

    /// One pass of [`forward`](Self::forward) over `ids` (checked), making room in the
    /// bounded caches first.
    fn forward_pass(&self, ids: &[u32], state: &mut LlamaState) -> Result<Vec<f32>> {
        for (cache, dropped) in state.caches.iter_mut().zip(&mut state.dropped) {
            let (held, cap) = (cache.lens()[0], cache.layout().max_len);
            if held + ids.len() > cap {
                let n = held + ids.len() - cap;
                cache.drop_front(n)?;
                *dropped += n;
            }
        }
        let c = &self.config;
        let (s, h, hd) = (ids.len(), c.embedding_length, c.head_dim);
        let pos0 = state.pos;
        let mut x = self.embed_rows(ids)?;
        if let Some(scale) = self.embed_scale {
            // The rows as f32, scaled (Gemma 3's `sqrt(hidden)`, in f32 as llama.cpp and
            // candle scale them), on the host: one small pass per call.
            let mut rows = if x.host_slice().is_some() {
                x.into_host().unwrap_or_default()
            } else {
                x.to_vec()?
            };
            for v in &mut rows {
                *v *= scale;
            }
            x = Tensor::from_vec(rows, &[1, s, h])?;
        }
        let run = |x: &mut Tensor, layer: &Layer, cache: &mut KvCache| -> Result<()> {
            let ops = self.attention_ops(layer);
            let n = layer.attn_norm.forward(x)?;
            let [q, k, v] = outputs(layer.qkv.forward(&n)?, "Q, K and V")?;
            let mut q = q.reshape(&[1, s, c.head_count, hd])?;
            let mut k = k.reshape(&[1, s, c.head_count_kv, hd])?;
            let v = v.reshape(&[1, s, c.head_count_kv, hd])?;
            if let Some(g) = &layer.gemma {
                q = g.q.forward(&q)?;
                k = g.k.forward(&k)?;
            }
            let q = ops.rope_q.forward(&q, pos0)?;
            let k = ops.rope_k.forward(&k, pos0)?;
            let ctx = ops
                .attention
                .forward(&q, &k, &v, cache, None)?
                .reshape(&[1, s, c.q_dim()])?;
            let mut a = layer.o.forward(&ctx)?;
            if let Some(g) = &layer.gemma {
                a = g.post_attn.forward(&a)?;
            }
            *x = self.add.forward(&a, x)?;
            let n = layer.ffn_norm.forward(x)?;
            let [gate, up] = outputs(layer.gate_up.forward(&n)?, "the gate and up projections")?;
            let m = self.gated.forward(&gate, &up)?;
            let mut f = layer.down.forward(&m)?;
            if let Some(g) = &layer.gemma {
                f = g.post_ffn.forward(&f)?;
            }
            *x = self.add.forward(&f, x)?;
            Ok(())
        };
        self.layers
            .iter()
            .zip(&mut state.caches)
            .try_for_each(|(layer, cache)| run(&mut x, layer, cache))?;
        state.pos += s;
        // Only the last position's logits are needed.
        let last = if s == 1 {
            x.reshape(&[1, h])?
        } else {
            let all = x.to_vec()?;
            Tensor::from_vec(all[(s - 1) * h..].to_vec(), &[1, h])?
        };
        let last = self.output_norm.forward(&last)?;
        let host = |t: Tensor| {
            if t.host_slice().is_some() {
                Ok(t.into_host().unwrap_or_default())
            } else {
                t.to_vec()
            }
        };
        // The parts' logits, in vocabulary order (the first part's vector taken as it is).
        let mut logits = Vec::new();
        for part in &self.output {
            let v = host(part.forward(&last)?)?;
            if logits.is_empty() {
                logits = v;
            } else {
                logits.extend(v);
            }
        }
        Ok(logits)
    }

    /// The embedding rows of `ids` (checked: below the vocabulary size), `[1, ids.len(), h]`:
    /// each part of the table looks up the ids in its range.
    fn embed_rows(&self, ids: &[u32]) -> Result<Tensor> {
        let (s, h) = (ids.len(), self.config.embedding_length);
        if let [table] = &self.embed[..] {
            return table.forward(ids, Some(&[1, s]));
        }
        let mut rows = vec![0.0f32; s * h];
        for (p, table) in self.embed.iter().enumerate() {
            let range = p * self.embed_rows..(p + 1) * self.embed_rows;
            let (at, local): (Vec<usize>, Vec<u32>) = ids
                .iter()
                .enumerate()
                .filter(|(_, &id)| range.contains(&(id as usize)))
                .map(|(i, &id)| (i, id - range.start as u32))
                .unzip();
            if at.is_empty() {
                continue;
            }
            let t = table.forward(&local, Some(&[1, local.len()]))?;
            let part = match t.host_slice() {
                Some(v) => std::borrow::Cow::Borrowed(v),
                None => std::borrow::Cow::Owned(t.to_vec()?),
            };
            for (j, &i) in at.iter().enumerate() {
                rows[i * h..(i + 1) * h].copy_from_slice(&part[j * h..(j + 1) * h]);
            }
        }
        Tensor::from_vec(rows, &[1, s, h])
    }
}

/// The `N` outputs of a group of projections (`what`, for the error).
fn outputs<const N: usize>(v: Vec<Tensor>, what: &str) -> Result<[Tensor; N]> {
    let n = v.len();
    v.try_into()
        .map_err(|_| CoreError::invalid_input(format!("llama: {what} gave {n} outputs, not {N}")))
}

/// What the embedding reads `token_embd.weight` as where it is also the output projection.
const TIED_CONTEXT: &str = "token_embd.weight as the output projection";

/// The embedding op over (a part of) a quantized table `t`, and with `tied` the output
/// projection made from the same rows. A tied table is looked up in the output projection's
/// weight where its providers give rows (`Embedding::tied`: the CPU provider, from the
/// weight as stored or packed), so the rows are held once, in the projection's form; where
/// they do not (the CubeCL and NPU providers), the table is shared with the embedding op,
/// which keeps it as its provider does, and it is never copied.
fn quantized_table(
    exec: &Arc<Executor>,
    t: &Arc<QuantizedTensor>,
    tied: bool,
    precision: LinearPrecision,
) -> Result<(Embedding, Option<Linear>)> {
    const NAME: &str = "token_embd.weight";
    let output = tied
        .then(|| Linear::with_precision(exec, t, None, precision))
        .transpose()
        .map_err(|e| crate::context(e, TIED_CONTEXT))?;
    let embed = match output.as_ref().map(Embedding::tied) {
        Some(Ok(embed)) => embed,
        Some(Err(e)) if !e.is_not_implemented() => return Err(crate::context(e, NAME)),
        _ => Embedding::shared(exec, t).map_err(|e| crate::context(e, NAME))?,
    };
    Ok((embed, output))
}

/// The device named `name` among those `op` was prepared on.
fn device_named(op: &dyn Planned, name: &str) -> Result<Device> {
    op.prepared_on()
        .into_iter()
        .find(|d| d.to_string() == name)
        .ok_or_else(|| CoreError::not_implemented(format!("the plan names {name}, where the op was not prepared")))
}

impl GemmaNorms {
    /// Makes all four norms run calls of row class `m` on `device` first.
    fn pin(&mut self, m: MClass, device: Device) -> Result<()> {
        self.q.pin(m, device)?;
        self.k.pin(m, device)?;
        self.post_attn.pin(m, device)?;
        self.post_ffn.pin(m, device)
    }
}
