//! A few greedy tokens of SmolLM2-135M-Instruct Q4_1 (`.testdata/gguf`) on the CPU provider as
//! it runs by default (activations rounded to 8 bits), checked against tokens written here.
//! Written for the RK3588's Arm cores: `.ci/run` runs it with `cargo test --target
//! aarch64-unknown-linux-gnu -p aihal-models --test llama_aarch64`, under `qemu-aarch64 -cpu
//! cortex-a76`, where the NEON and dotprod kernels compute what the x86 kernels compute
//! natively; it runs natively too. Only 4 tokens, to keep the emulated run short.
//!
//! Skipped loudly without the file; an error then with `AIHAL_REQUIRE_TESTDATA=1`.

mod common;

use aihal_models::llama::{generate, GenerateOptions, LlamaModel, LlamaOptions, StopReason};
use common::cpu_executor;

fn main() {
    common::run(vec![common::trial(
        "smollm2_q4_1_first_greedy_tokens_are_candles",
        &[common::Data::Gguf(SMOLLM2)],
        smollm2_q4_1_first_greedy_tokens_are_candles,
    )]);
}

const SMOLLM2: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// `The quick brown fox` (`The`, `Ġquick`, `Ġbrown`, `Ġfox`): the first prompt of
/// `llama_smollm2.rs`.
const PROMPT: &[u32] = &[504, 2365, 6354, 16438];

/// The first 4 greedy tokens candle-transformers' `quantized_llama` (8-bit activations, as
/// ggml runs them) generates after [`PROMPT`] on x86_64: `llama_smollm2.rs`'s greedy comparison
/// asserts that ours give the same 32 tokens there (release build, `.ci/run`), the first of
/// them ` with a quick brown`. The f32 computations (ours and candle's with dequantized weights)
/// give the same first 4.
const CANDLE: [u32; 4] = [351, 253, 2365, 6354];

fn smollm2_q4_1_first_greedy_tokens_are_candles() {
    let path = common::gguf_path(SMOLLM2);
    let model = LlamaModel::load(&cpu_executor(), &path, LlamaOptions::default()).unwrap();
    let options = GenerateOptions {
        max_tokens: CANDLE.len(),
        ..GenerateOptions::default()
    };
    let t = std::time::Instant::now();
    let out = generate(&model, PROMPT, &options, |_| Ok(())).unwrap();
    eprintln!(
        "SmolLM2 on {}: {} greedy tokens in {:.2?}: {:?}",
        std::env::consts::ARCH,
        CANDLE.len(),
        t.elapsed(),
        out.tokens
    );
    assert_eq!(out.stop, StopReason::MaxTokens);
    assert_eq!(out.tokens, CANDLE);
}
