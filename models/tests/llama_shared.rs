//! One [`LlamaModel`] shared by several callers at once: SmolLM2-135M-Instruct Q4_1
//! (`.testdata/gguf`) is loaded once and borrowed by every caller, each with its own
//! [`Generator`] (and so its own `LlamaState`), each generating greedy tokens from a different
//! prompt. The tokens must equal those of the same prompts run one at a time on one thread:
//!
//! - from std threads, one per prompt, all running at once (each forward pass then also
//!   hands its ops' tasks to the global rayon pool, from several threads at once);
//! - from the tasks of a 2-thread rayon pool (`install` + `par_iter`), so that the model's
//!   own parallel ops run nested inside pool tasks that are themselves waiting on each
//!   other; this must finish (a deadlock fails the test after [`DEADLINE`] instead of hanging
//!   it) with the same tokens.
//!
//! Greedy decoding over this executor is deterministic for any thread count (the CPU
//! provider's results do not depend on how its tasks are split), so the comparison is exact.
//! Token counts are small because these run in debug builds: with 8 tokens per prompt the
//! binary takes about 10 s in a debug build on the 2-CPU development VM (measured at
//! `7959555`; at `4dca420` a debug forward pass took about half a second and the same binary
//! a minute or more on a loaded machine).

mod common;

use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use aihal_models::llama::{GenerateOptions, Generator, LlamaModel, LlamaOptions, StopReason};
use rayon::prelude::*;

fn main() {
    common::run(vec![
        common::trial(
            "smollm2_shared_by_std_threads_matches_one_thread",
            &[common::Data::Gguf(SMOLLM2)],
            smollm2_shared_by_std_threads_matches_one_thread,
        ),
        common::trial(
            "smollm2_shared_inside_a_rayon_pool_finishes_and_matches_one_thread",
            &[common::Data::Gguf(SMOLLM2)],
            smollm2_shared_inside_a_rayon_pool_finishes_and_matches_one_thread,
        ),
    ]);
}

const SMOLLM2: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// Four prompts as SmolLM2 token ids: `The quick brown fox`, `Once upon a time, there was`,
/// `What is the capital of France?` and `The capital of France is`.
const PROMPTS: [&[u32]; 4] = [
    &[504, 2365, 6354, 16438],
    &[6403, 1980, 253, 655, 28, 665, 436],
    &[1780, 314, 260, 3575, 282, 4649, 47],
    &[504, 3575, 282, 4649, 314],
];

/// Greedy tokens per prompt.
const TOKENS: usize = 8;

/// How long a trial's concurrent part may take before it counts as a deadlock (a debug
/// build runs it in well under this).
const DEADLINE: Duration = Duration::from_mins(10);

fn options() -> GenerateOptions {
    GenerateOptions {
        max_tokens: TOKENS,
        max_len: Some(16),
        ..GenerateOptions::default()
    }
}

/// `TOKENS` greedy tokens after `prompt`, with a generator (and state) of its own.
fn greedy(model: &LlamaModel, prompt: &[u32]) -> Vec<u32> {
    let mut generator = Generator::new(model, options()).unwrap();
    let out = generator.generate(prompt, |_| Ok(())).unwrap();
    assert_eq!(out.stop, StopReason::MaxTokens);
    out.tokens
}

/// The model, loaded once for both trials, and every prompt's tokens run one at a time on
/// the thread that loaded it.
fn shared() -> &'static (LlamaModel, Vec<Vec<u32>>) {
    static SHARED: OnceLock<(LlamaModel, Vec<Vec<u32>>)> = OnceLock::new();
    SHARED.get_or_init(|| {
        let t = Instant::now();
        let model = LlamaModel::load(
            &common::cpu_executor(),
            common::gguf_path(SMOLLM2),
            LlamaOptions::default(),
        )
        .unwrap();
        let loaded = t.elapsed();
        let t = Instant::now();
        let one_at_a_time: Vec<Vec<u32>> = PROMPTS.iter().map(|p| greedy(&model, p)).collect();
        eprintln!(
            "SmolLM2: loaded in {loaded:.2?}; {} prompts x {TOKENS} tokens one at a time in {:.2?}: {one_at_a_time:?}",
            PROMPTS.len(),
            t.elapsed()
        );
        (model, one_at_a_time)
    })
}

/// Runs `body` on a thread of its own and waits at most [`DEADLINE`] for its result: a
/// deadlock fails the trial with a message instead of hanging the run (the stuck thread is
/// left behind; the process exits when the harness does).
fn within_deadline<T: Send + 'static>(what: &str, body: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // A panic drops `tx`, which the receiver sees as a disconnect.
        let _ = tx.send(body());
    });
    match rx.recv_timeout(DEADLINE) {
        Ok(v) => v,
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what}: not finished after {DEADLINE:?} (deadlock?)"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{what}: panicked (see above)"),
    }
}

fn smollm2_shared_by_std_threads_matches_one_thread() {
    let (_, expected) = shared();
    let t = Instant::now();
    let got = within_deadline("std threads", || {
        let (model, _) = shared();
        std::thread::scope(|s| {
            let handles: Vec<_> = PROMPTS.iter().map(|p| s.spawn(move || greedy(model, p))).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect::<Vec<_>>()
        })
    });
    eprintln!(
        "SmolLM2: {} std threads x {TOKENS} tokens at once in {:.2?}",
        PROMPTS.len(),
        t.elapsed()
    );
    assert_eq!(&got, expected);
}

fn smollm2_shared_inside_a_rayon_pool_finishes_and_matches_one_thread() {
    let (_, expected) = shared();
    let t = Instant::now();
    let got = within_deadline("rayon pool", || {
        let (model, _) = shared();
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        pool.install(|| PROMPTS.par_iter().map(|p| greedy(model, p)).collect::<Vec<_>>())
    });
    eprintln!(
        "SmolLM2: {} prompts x {TOKENS} tokens in a 2-thread rayon pool in {:.2?}",
        PROMPTS.len(),
        t.elapsed()
    );
    assert_eq!(&got, expected);
}
