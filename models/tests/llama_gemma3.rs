//! The decoder on Gemma 3 270M Q4_K_M (`.testdata/gguf`, architecture `gemma3`) against two
//! implementations in candle-transformers 0.11 on the same file, first-step logits and 32
//! greedy tokens for fixed prompts given as token ids (no tokenizer involved; the ids are
//! llama.cpp's for these texts, see `fixtures/tokenizer/gemma-3-270m.json`):
//!
//! - `quantized_gemma3::ModelWeights`, the peer that runs GGUF files. It gates the MLP with
//!   SiLU where Gemma 3 uses tanh GELU (candle issue #3745; llama.cpp and Hugging Face use
//!   GELU), so ours is compared with it with `LlamaOptions::gate_activation` set to SiLU: the
//!   rest of the architecture (embedding scale, QK norms, post norms, half-split RoPE with
//!   the local and global bases, grouped-query attention, tied output) is checked this way,
//!   at both precisions, against its quantized and its f32 runs.
//! - `gemma3::Model`, candle's Hugging Face implementation (GELU from its config, the
//!   sliding-window layers, RMSNorm as `1 + weight`), built here from the file's tensors
//!   dequantized to f32 and renamed to Hugging Face's names (norm weights less the 1 that
//!   llama.cpp's converter adds): ours as it runs by default is compared with it.
//!
//! Skipped loudly without the file; an error then with `AIHAL_REQUIRE_TESTDATA=1`.

mod common;

use std::path::Path;

use aihal_models::llama::{generate, Architecture, GenerateOptions, LlamaModel, LlamaOptions, StopReason};
use aihal_ops::{GateActivation, LinearPrecision};
use candle_core::{Device, Tensor};
use common::{argmax, cpu_executor};

fn main() {
    common::run(vec![
        common::trial(
            "gemma3_first_steps_and_greedy_tokens_match_candle",
            &[common::Data::Gguf(GEMMA3)],
            gemma3_first_steps_and_greedy_tokens_match_candle,
        )
        .with_ignored_flag(cfg!(debug_assertions)),
        common::trial(
            "gemma3_decoding_past_the_sliding_window_matches_candle",
            &[common::Data::Gguf(GEMMA3)],
            gemma3_decoding_past_the_sliding_window_matches_candle,
        )
        .with_ignored_flag(cfg!(debug_assertions)),
    ]);
}

const GEMMA3: &str = "gemma-3-270m-q4_k_m.gguf";

/// `<bos>The quick brown fox` and `<bos>Hello world` as Gemma 3 token ids.
const PROMPTS: [&[u32]; 2] = [&[2, 818, 3823, 8864, 37423], &[2, 9259, 1902]];

/// Greedy tokens compared per prompt.
const TOKENS: usize = 32;

/// candle-transformers' quantized Gemma 3 over a GGUF file (SiLU-gated MLP, see the module
/// docs).
struct QuantizedPeer(candle_transformers::models::quantized_gemma3::ModelWeights);

impl QuantizedPeer {
    /// candle's model as it runs quantized files (activations rounded to 8 bits per block),
    /// or with every weight dequantized to f32 at load (`exact`).
    fn load(path: &Path, exact: bool) -> Self {
        Self(common::candle_gguf_load(path, exact, |content, f| {
            candle_transformers::models::quantized_gemma3::ModelWeights::from_gguf(content, f, &Device::Cpu)
        }))
    }
}

/// candle-transformers' Hugging Face Gemma 3 (`gemma3::Model`) over the file's weights in f32.
struct HfPeer(candle_transformers::models::gemma3::Model);

impl HfPeer {
    /// The model built from the GGUF file's tensors, dequantized to f32, under Hugging
    /// Face's names; the hyperparameters are Gemma 3 270M's (`config.json` of
    /// google/gemma-3-270m), checked against the file's metadata where it has them.
    fn load(path: &Path) -> Self {
        use candle_transformers::models::gemma3::{Config, Model};
        let mut f = std::fs::File::open(path).unwrap();
        let content = candle_core::quantized::gguf_file::Content::read(&mut f).unwrap();
        let md = |k: &str| content.metadata[&format!("gemma3.{k}")].to_u32().unwrap() as usize;
        let cfg = Config {
            attention_bias: false,
            head_dim: md("attention.key_length"),
            hidden_activation: candle_nn::Activation::GeluPytorchTanh,
            hidden_size: md("embedding_length"),
            intermediate_size: md("feed_forward_length"),
            num_attention_heads: md("attention.head_count"),
            num_hidden_layers: md("block_count"),
            num_key_value_heads: md("attention.head_count_kv"),
            rms_norm_eps: 1e-6,
            rope_theta: 1_000_000.0,
            rope_local_base_freq: 10_000.0,
            vocab_size: 262_144,
            final_logit_softcapping: None,
            attn_logit_softcapping: None,
            query_pre_attn_scalar: 256,
            sliding_window: md("attention.sliding_window"),
            sliding_window_pattern: 6,
            max_position_embeddings: md("context_length"),
        };
        assert_eq!(cfg.hidden_size, 640, "the 270M model's configuration");
        let names: Vec<String> = content.tensor_infos.keys().cloned().collect();
        let mut tensors = std::collections::HashMap::new();
        for name in names {
            let t = content
                .tensor(&mut f, &name, &Device::Cpu)
                .unwrap()
                .dequantize(&Device::Cpu)
                .unwrap();
            let (hf, norm) = hf_name(&name);
            let t = if norm { (t - 1.0).unwrap() } else { t };
            tensors.insert(hf, t);
        }
        let vb = candle_nn::VarBuilder::from_tensors(tensors, candle_core::DType::F32, &Device::Cpu);
        Self(Model::new(false, &cfg, vb).unwrap())
    }
}

/// Hugging Face's name for a GGUF tensor of Gemma 3, and whether it is an RMSNorm weight
/// (stored by llama.cpp's converter as `1 + weight`).
fn hf_name(gguf: &str) -> (String, bool) {
    let map = |what: &str| -> (&'static str, bool) {
        match what {
            "attn_q" => ("self_attn.q_proj", false),
            "attn_k" => ("self_attn.k_proj", false),
            "attn_v" => ("self_attn.v_proj", false),
            "attn_output" => ("self_attn.o_proj", false),
            "attn_q_norm" => ("self_attn.q_norm", true),
            "attn_k_norm" => ("self_attn.k_norm", true),
            "attn_norm" => ("input_layernorm", true),
            "post_attention_norm" => ("post_attention_layernorm", true),
            "ffn_norm" => ("pre_feedforward_layernorm", true),
            "post_ffw_norm" => ("post_feedforward_layernorm", true),
            "ffn_gate" => ("mlp.gate_proj", false),
            "ffn_up" => ("mlp.up_proj", false),
            "ffn_down" => ("mlp.down_proj", false),
            other => panic!("unexpected Gemma 3 tensor {other}"),
        }
    };
    match gguf {
        "token_embd.weight" => ("model.embed_tokens.weight".to_owned(), false),
        "output_norm.weight" => ("model.norm.weight".to_owned(), true),
        _ => {
            let rest = gguf.strip_prefix("blk.").unwrap().strip_suffix(".weight").unwrap();
            let (layer, what) = rest.split_once('.').unwrap();
            let (hf, norm) = map(what);
            (format!("model.layers.{layer}.{hf}.weight"), norm)
        }
    }
}

/// What both peers run.
trait Peer {
    /// The last position's logits for `ids` at `pos` (the caches restart at `pos` 0).
    fn forward(&mut self, ids: &[u32], pos: usize) -> Vec<f32>;

    /// `n` greedy tokens after `prompt`.
    fn greedy(&mut self, prompt: &[u32], n: usize) -> Vec<u32> {
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

fn input(ids: &[u32]) -> Tensor {
    Tensor::new(ids, &Device::Cpu).unwrap().unsqueeze(0).unwrap()
}

impl Peer for QuantizedPeer {
    fn forward(&mut self, ids: &[u32], pos: usize) -> Vec<f32> {
        self.0
            .forward(&input(ids), pos)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec1()
            .unwrap()
    }
}

impl Peer for HfPeer {
    fn forward(&mut self, ids: &[u32], pos: usize) -> Vec<f32> {
        if pos == 0 {
            self.0.clear_kv_cache();
        }
        // [1, 1, vocab]: the last position's logits.
        self.0
            .forward(&input(ids), pos)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn gemma3(precision: LinearPrecision, gate_activation: Option<GateActivation>) -> (LlamaModel, std::path::PathBuf) {
    let path = common::gguf_path(GEMMA3);
    let t = std::time::Instant::now();
    let options = LlamaOptions {
        precision,
        gate_activation,
        ..LlamaOptions::default()
    };
    let model = LlamaModel::load(&cpu_executor(), &path, options).unwrap();
    eprintln!("Gemma 3: loaded in {:.2?}", t.elapsed());
    assert_eq!(model.config().architecture, Architecture::Gemma3);
    (model, path)
}

/// Our last-position logits for `prompt`.
fn ours(model: &LlamaModel, prompt: &[u32]) -> Vec<f32> {
    let t = std::time::Instant::now();
    let mut state = model.new_state(Some(64)).unwrap();
    let logits = model.forward(prompt, &mut state).unwrap();
    eprintln!("Gemma 3: a forward of {} tokens in {:.2?}", prompt.len(), t.elapsed());
    logits
}

/// Bound for two f32 computations of the same logits in different orders: `2e-3 (1 + max
/// |logit|)` (observed: about 5e-5 with logits up to 28).
fn f32_bound(exact: &[f32]) -> f32 {
    2e-3 * (1.0 + exact.iter().fold(0.0f32, |m, v| m.max(v.abs())))
}

/// Our first-step logits for `prompt` against the peers':
///
/// - as it runs by default (tanh GELU) with f32 activations, against candle's Hugging Face
///   model in f32: within [`f32_bound`], same top token;
/// - with the SiLU gate and f32 activations, against candle's quantized_gemma3 with every
///   weight dequantized to f32: within [`f32_bound`];
/// - with the SiLU gate and activations rounded to 8 bits (the default precision), against
///   candle's quantized run: each rounds activations its own way (candle as ggml, in Q8_K
///   blocks; the CPU provider in int8 blocks of 32 with f32 scales), so each differs from
///   the exact result by its own rounding; ours to candle is bounded by 3x candle's own
///   distance to the exact result plus 1e-3, and the top token is the exact one's.
fn check_first_step(path: &Path, prompt: &[u32], models: &Models) {
    let hf = HfPeer::load(path).forward(prompt, 0);
    let d = max_abs_diff(&ours(&models.gelu_f32, prompt), &hf);
    eprintln!(
        "Gemma 3, {} tokens, GELU, f32: max |ours - candle gemma3| {d}",
        prompt.len()
    );
    assert!(d <= f32_bound(&hf), "{d} > {}", f32_bound(&hf));
    assert_eq!(argmax(&ours(&models.gelu_f32, prompt)), argmax(&hf));

    let exact = QuantizedPeer::load(path, true).forward(prompt, 0);
    let d = max_abs_diff(&ours(&models.silu_f32, prompt), &exact);
    eprintln!(
        "Gemma 3, {} tokens, SiLU, f32: max |ours - candle quantized_gemma3 f32| {d}",
        prompt.len()
    );
    assert!(d <= f32_bound(&exact), "{d} > {}", f32_bound(&exact));

    let int8 = ours(&models.silu_int8, prompt);
    let theirs = QuantizedPeer::load(path, false).forward(prompt, 0);
    let (d, own) = (max_abs_diff(&int8, &theirs), max_abs_diff(&theirs, &exact));
    eprintln!(
        "Gemma 3, {} tokens, SiLU, 8-bit activations: max |ours - candle| {d}; candle's own rounding {own}; ours {}",
        prompt.len(),
        max_abs_diff(&int8, &exact)
    );
    assert!(d <= 3.0 * own + 1e-3, "{d} > 3 * {own} + 1e-3");
    assert_eq!(argmax(&int8), argmax(&exact));
}

/// The three builds [`check_first_step`] compares.
struct Models {
    gelu_f32: LlamaModel,
    silu_f32: LlamaModel,
    silu_int8: LlamaModel,
}

fn models() -> (Models, std::path::PathBuf) {
    let (gelu_f32, path) = gemma3(LinearPrecision::F32, None);
    let (silu_f32, _) = gemma3(LinearPrecision::F32, Some(GateActivation::Silu));
    let (silu_int8, _) = gemma3(LinearPrecision::default(), Some(GateActivation::Silu));
    (
        Models {
            gelu_f32,
            silu_f32,
            silu_int8,
        },
        path,
    )
}

/// Both prompts' first steps, then 32 greedy tokens per prompt:
///
/// - ours with f32 activations: the tokens of candle's Hugging Face model in f32;
/// - ours by default (tanh GELU, 8-bit activations): the same tokens, or, from the first
///   token where they part, a step where rounding the activations may choose either: see
///   `common::check_near_tie_only` (observed: the first prompt all 32 the same, the second parts
///   at token 10, a digit);
/// - ours with the SiLU gate in f32: the tokens of candle's quantized_gemma3 in f32.
///
/// candle's quantized_gemma3 as it runs by default (8-bit activations) leaves the f32 path
/// at token 6 of the first prompt, where its rounding tips a near-tie; ours does not, so
/// that run is printed, not asserted.
///
/// Ignored in debug builds, where candle's f32 model alone takes minutes: `cargo test
/// --release -p aihal-models --test llama_gemma3 -- --include-ignored` runs it (about 2.5
/// minutes on 2 cores).
fn gemma3_first_steps_and_greedy_tokens_match_candle() {
    let (models, path) = models();
    for prompt in PROMPTS {
        check_first_step(&path, prompt, &models);
    }
    let (gelu_int8, _) = gemma3(LinearPrecision::default(), None);
    let options = GenerateOptions {
        max_tokens: TOKENS,
        ..GenerateOptions::default()
    };
    let greedy = |model: &LlamaModel, prompt: &[u32]| {
        let t = std::time::Instant::now();
        let out = generate(model, prompt, &options, |_| Ok(())).unwrap();
        eprintln!(
            "Gemma 3: {TOKENS} greedy tokens in {:.2?}: {:?}",
            t.elapsed(),
            out.tokens
        );
        assert_eq!(out.stop, StopReason::MaxTokens);
        out.tokens
    };
    let mut hf = HfPeer::load(&path);
    // candle's quantized model restarts its caches at position 0, so one load serves both
    // prompts.
    let (mut exact_peer, mut rounded_peer) = (QuantizedPeer::load(&path, true), QuantizedPeer::load(&path, false));
    for prompt in PROMPTS {
        let want = hf.greedy(prompt, TOKENS);
        eprintln!("candle gemma3 (f32): {want:?}");
        assert_eq!(greedy(&models.gelu_f32, prompt), want, "GELU, f32, prompt {prompt:?}");
        let got = greedy(&gelu_int8, prompt);
        common::check_near_tie_only("Gemma 3", &models.gelu_f32, &gelu_int8, prompt, &got, &want);
        assert_eq!(
            greedy(&models.silu_f32, prompt),
            exact_peer.greedy(prompt, TOKENS),
            "SiLU, f32, prompt {prompt:?}"
        );
        eprintln!(
            "candle quantized_gemma3 (8-bit): {:?}",
            rounded_peer.greedy(prompt, TOKENS)
        );
    }
}

/// Decoding across the local layers' window (512 positions): a 500-token prompt, then 40
/// greedy tokens one at a time (positions 500 to 539), with f32 activations, against
/// candle's Hugging Face model in f32, whose local layers decode over a rotating cache of the
/// last 512 positions (the query's own included, as ours and llama.cpp's window). The
/// prompt stays below the window because candle's prefill mask lets a query see 513
/// positions where its decode (and ours, and llama.cpp's) sees 512. Every step's logits
/// within [`f32_bound`], the same tokens.
///
/// Ours runs with passes of 16 positions (`LlamaOptions::local_chunk`), so the prompt runs
/// in 32 passes and each local layer's cache holds 527 positions: from position 528 on, it
/// drops its oldest ones. A roll-back within the window then works, and one past what the
/// caches still hold is refused.
///
/// Ignored in debug builds (minutes); CI runs it in release.
fn gemma3_decoding_past_the_sliding_window_matches_candle() {
    const PROMPT_LEN: usize = 500;
    const STEPS: usize = 40;
    let path = common::gguf_path(GEMMA3);
    let options = LlamaOptions {
        precision: LinearPrecision::F32,
        local_chunk: 16,
        ..LlamaOptions::default()
    };
    let model = LlamaModel::load(&cpu_executor(), &path, options).unwrap();
    let window = model.config().local_attention.expect("Gemma 3 has local layers").window;
    assert!(PROMPT_LEN < window && PROMPT_LEN + STEPS > window + 16 + 8);
    // `<bos>`, then the ids of the two prompts' texts over and over (a text that is not
    // natural language, but whose every position is attended to).
    let text: Vec<u32> = PROMPTS.iter().flat_map(|p| p[1..].iter().copied()).collect();
    let prompt: Vec<u32> = std::iter::once(2)
        .chain(text.iter().copied().cycle())
        .take(PROMPT_LEN)
        .collect();
    let mut peer = HfPeer::load(&path);
    let mut state = model.new_state(Some(PROMPT_LEN + STEPS + 64)).unwrap();
    let mut ours = model.forward(&prompt, &mut state).unwrap();
    let mut theirs = peer.forward(&prompt, 0);
    let mut worst = 0.0f32;
    let mut ids = Vec::new();
    for step in 0..STEPS {
        let d = max_abs_diff(&ours, &theirs);
        worst = worst.max(d);
        assert!(
            d <= f32_bound(&theirs),
            "position {}: {d} > {}",
            PROMPT_LEN + step,
            f32_bound(&theirs)
        );
        let id = argmax(&theirs);
        assert_eq!(argmax(&ours), id, "position {}", PROMPT_LEN + step);
        ids.push(id);
        ours = model.forward(&[id], &mut state).unwrap();
        theirs = peer.forward(&[id], PROMPT_LEN + step);
    }
    eprintln!("Gemma 3: {STEPS} steps from position {PROMPT_LEN} across the {window}-position window: max |ours - candle gemma3| {worst}");

    // Roll back 4 positions and run them again: the same logits.
    let end = PROMPT_LEN + STEPS;
    state.truncate(end - 4).unwrap();
    let again = model.forward(&ids[STEPS - 4..], &mut state).unwrap();
    assert!(
        max_abs_diff(&again, &ours) <= 1e-4 * (1.0 + f32_bound(&ours)),
        "after a roll-back"
    );
    // The local caches hold 527 positions, so the window behind position 100 is gone.
    let err = state.truncate(100).unwrap_err();
    assert!(matches!(err, aihal_core::CoreError::InvalidInput(_)), "{err}");
    assert_eq!(state.position(), end, "a refused roll-back changes nothing");
    state.clear();
    assert_eq!(state.position(), 0);
}
