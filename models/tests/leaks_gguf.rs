//! Loading a decoder from its GGUF file, generating with it and dropping it, repeatedly, leaks
//! nothing: SmolLM2-135M-Instruct Q4_1 (`.testdata/gguf`) is loaded with
//! [`LlamaModel::load`] on a fresh executor, generates 4 greedy tokens (a prefill and three
//! single-token passes, so both row classes of every op and the KV caches are used), and
//! everything is dropped. A counting allocator (`common::counting`, registered here) tracks the
//! bytes live in this binary, which holds this one test so that no other test's allocations
//! mix in (a second measurement would be a second binary, as `leaks.rs` is for MiniLM).
//!
//! Bound: after one warm-up round, the live bytes after the last of three measured rounds
//! exceed those after the first by at most 64 KiB. One round allocates about a hundred
//! megabytes (the packed Q4_1 weights, the embedding table, the KV caches of 8 positions, the
//! executor's records), so leaking any weight, cache, prepared op or the executor would exceed
//! the bound by three orders of magnitude or more; what may legitimately stay after the
//! warm-up is what the process creates once and reuses (the rayon pool's threads and their
//! lazily grown per-thread buffers, warn-once state), which the warm-up round has already
//! created and which does not grow from round to round. The counter is first shown to see a
//! leak of 100 KiB per round.

mod common;

use aihal_models::llama::{generate, GenerateOptions, LlamaModel, LlamaOptions, StopReason};
use common::counting::{assert_counts_leaks, live_after_rounds, peak, Counting};

fn main() {
    common::run(vec![common::trial(
        "loading_generating_and_dropping_smollm2_leaks_nothing",
        &[common::Data::Gguf(SMOLLM2)],
        loading_generating_and_dropping_smollm2_leaks_nothing,
    )]);
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const SMOLLM2: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

const SLACK: isize = 64 * 1024;

/// `The quick brown fox` as SmolLM2 token ids.
const PROMPT: &[u32] = &[504, 2365, 6354, 16438];

fn loading_generating_and_dropping_smollm2_leaks_nothing() {
    assert_counts_leaks(100 * 1024, SLACK);

    let path = common::gguf_path(SMOLLM2);
    let options = GenerateOptions {
        max_tokens: 4,
        ..GenerateOptions::default()
    };
    let peak_before = peak();
    let t = std::time::Instant::now();
    let live = live_after_rounds(3, || {
        // A fresh executor each round: its providers, prepared ops and records must go too.
        let exec = common::cpu_executor();
        let model = LlamaModel::load(&exec, &path, LlamaOptions::default()).expect("load");
        let out = generate(&model, PROMPT, &options, |_| Ok(())).expect("generate");
        assert_eq!(out.tokens.len(), 4);
        assert_eq!(out.stop, StopReason::MaxTokens);
    });
    let grew = live[live.len() - 1] - live[0];
    let peak = peak().max(peak_before);
    eprintln!(
        "SmolLM2: live bytes after each round {live:?}; peak {peak} bytes; 4 rounds in {:.2?}",
        t.elapsed()
    );
    assert!(
        grew <= SLACK,
        "live bytes grew by {grew} over {} load/generate/drop rounds (each {:?}); peak {peak} bytes",
        live.len() - 1,
        live
    );
}
