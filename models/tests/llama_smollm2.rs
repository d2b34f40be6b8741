//! The llama decoder on SmolLM2-135M-Instruct Q4_1 (`.testdata/gguf`) against
//! candle-transformers' `quantized_llama::ModelWeights` on the same file: first-step logits
//! and 32 greedy tokens for two fixed prompts given as token ids (no tokenizer involved).
//! Skipped loudly without the file; an error then with `AIHAL_REQUIRE_TESTDATA=1`.

mod common;

use aihal_models::llama::{generate, GenerateOptions, LlamaModel, LlamaOptions, StopReason};
use aihal_ops::LinearPrecision;
use common::{argmax, cpu_executor, LlamaPeer};

fn main() {
    common::run(vec![
        common::trial(
            "smollm2_q4_1_first_step_matches_candle",
            &[common::Data::Gguf(SMOLLM2)],
            smollm2_q4_1_first_step_matches_candle,
        ),
        common::trial(
            "smollm2_q4_1_greedy_tokens_match_candle",
            &[common::Data::Gguf(SMOLLM2)],
            smollm2_q4_1_greedy_tokens_match_candle,
        )
        .with_ignored_flag(cfg!(debug_assertions)),
    ]);
}

/// The chat turn `<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n`
/// as SmolLM2 token ids (`<|im_start|>`, `user`, `Ċ`, `What`, `Ġis`, `Ġthe`, `Ġcapital`, `Ġof`,
/// `ĠFrance`, `?`, `<|im_end|>`, `Ċ`, `<|im_start|>`, `ass`, `istant`, `Ċ` of the file's
/// `tokenizer.ggml.tokens`): its first step only, since greedy decoding runs on past the
/// answer's `<|im_end|>` into an invented next turn, where near-ties fall either way under
/// the two implementations' different rounding (observed: tokens 31 and 32 differ).
const CHAT: &[u32] = &[
    1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47, 2, 198, 1, 520, 9531, 198,
];

/// Two plain-text prompts for the greedy comparison: `The quick brown fox` (`The`, `Ġquick`,
/// `Ġbrown`, `Ġfox`) and `Once upon a time, there was` (`Once`, `Ġupon`, `Ġa`, `Ġtime`, `,`,
/// `Ġthere`, `Ġwas`).
const PROMPTS: [&[u32]; 2] = [&[504, 2365, 6354, 16438], &[6403, 1980, 253, 655, 28, 665, 436]];

/// Greedy tokens compared per prompt.
const TOKENS: usize = 32;

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Checks our first-step logits for `prompt` against candle's.
///
/// Both implementations multiply the Q4_1 weights by activations rounded to 8 bits in
/// blocks of 32 (candle as ggml does, Q8_1 blocks with f16 scales; the CPU provider here
/// int8 blocks with f32 scales), so each differs from the exact product of the stored
/// weights by its own rounding, which over 30 layers reaches a few percent of the logits'
/// range. The exact reference is candle with every weight dequantized to f32. The bound: our
/// distance to candle is at most 3x candle's own distance to the exact result (our rounding
/// at most about twice candle's), plus 1e-3 for f32 order. Observed on the chat prompt
/// (release build): ours 0.30 from exact, candle 0.58, ours to candle 0.68, with logits up
/// to 28.
fn check_first_step(model: &LlamaModel, path: &std::path::Path, prompt: &[u32]) {
    let t = std::time::Instant::now();
    let mut state = model.new_state(Some(64)).unwrap();
    let ours = model.forward(prompt, &mut state).unwrap();
    eprintln!("SmolLM2: a forward of {} tokens in {:.2?}", prompt.len(), t.elapsed());
    let theirs = LlamaPeer::load(path).forward(prompt, 0);
    let exact = LlamaPeer::load_exact(path).forward(prompt, 0);
    let (d, own) = (max_abs_diff(&ours, &theirs), max_abs_diff(&theirs, &exact));
    eprintln!(
        "SmolLM2, {} tokens: max |ours - candle| {d}; candle's own rounding {own}; ours {}",
        prompt.len(),
        max_abs_diff(&ours, &exact)
    );
    assert!(d <= 3.0 * own + 1e-3, "{d} > 3 * {own} + 1e-3");
    assert_eq!(argmax(&ours), argmax(&exact));
}

const SMOLLM2: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

fn smollm2() -> (LlamaModel, std::path::PathBuf) {
    let path = common::gguf_path(SMOLLM2);
    let t = std::time::Instant::now();
    let model = LlamaModel::load(&cpu_executor(), &path, LlamaOptions::default()).unwrap();
    eprintln!("SmolLM2: loaded in {:.2?}", t.elapsed());
    (model, path)
}

/// The short prompt's first step: cheap enough for debug builds (a forward of SmolLM2 over
/// 16 tokens takes about 20 s in a debug build here, candle's about 35 s).
fn smollm2_q4_1_first_step_matches_candle() {
    let (model, path) = smollm2();
    check_first_step(&model, &path, PROMPTS[0]);
}

/// The chat turn's first step and both prompts' first steps, then 32 greedy tokens:
///
/// - with f32 activations against candle with f32 weights (both the exact product of the
///   stored weights, logits within 1e-4 of each other): identical for both prompts;
/// - ours as it runs by default (activations rounded to 8 bits): the f32 tokens, or, from the
///   first token where they part, a step where that rounding may choose either
///   (`common::check_near_tie_only`). Observed: the first prompt parts at token 17, where
///   the top two f32 logits are 0.05 apart against 0.88 of rounding (about 1 logit over 30
///   layers, see `check_first_step`); the second keeps the f32 tokens throughout. candle's own 8-bit run, which rounds otherwise,
///   is printed, not asserted.
///
/// Ignored in debug builds, where it takes minutes: `cargo test --release -p aihal-models
/// --test llama_smollm2` runs it (or `-- --ignored` in debug).
fn smollm2_q4_1_greedy_tokens_match_candle() {
    let (model, path) = smollm2();
    check_first_step(&model, &path, CHAT);
    for prompt in PROMPTS {
        check_first_step(&model, &path, prompt);
    }
    let options = GenerateOptions {
        max_tokens: TOKENS,
        ..GenerateOptions::default()
    };
    let greedy = |model: &LlamaModel, prompt: &[u32]| {
        let t = std::time::Instant::now();
        let out = generate(model, prompt, &options, |_| Ok(())).unwrap();
        eprintln!(
            "SmolLM2: {TOKENS} greedy tokens in {:.2?}: {:?}",
            t.elapsed(),
            out.tokens
        );
        assert_eq!(out.stop, StopReason::MaxTokens);
        out.tokens
    };

    let exact_model = LlamaModel::load(
        &cpu_executor(),
        &path,
        LlamaOptions {
            precision: LinearPrecision::F32,
            ..LlamaOptions::default()
        },
    )
    .unwrap();
    let mut exact_peer = LlamaPeer::load_exact(&path);
    for prompt in PROMPTS {
        let want = exact_peer.greedy(prompt, TOKENS);
        assert_eq!(greedy(&exact_model, prompt), want, "f32, prompt {prompt:?}");
        let got = greedy(&model, prompt);
        common::check_near_tie_only("SmolLM2", &exact_model, &model, prompt, &got, &want);
        eprintln!(
            "candle quantized_llama (8-bit): {:?}",
            LlamaPeer::load(&path).greedy(prompt, TOKENS)
        );
    }
}
