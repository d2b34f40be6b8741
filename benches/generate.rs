//! Generation speed of SmolLM2-135M-Instruct Q4_1 on the process's executor: the prefill of a
//! 16-token prompt, and one decode step (a single-token forward pass and a greedy choice)
//! after it, with the KV cache preallocated. Criterion reports the time per pass; tokens per
//! second are `16 / prefill` and `1 / decode`. Before timing, the greedy continuation is
//! checked to be the one the tests assert.
//!
//! ```sh
//! cargo bench --bench generate
//! RAYON_NUM_THREADS=2 cargo bench --bench generate   # the two-thread comparison
//! ```
//!
//! Needs `.testdata/gguf/SmolLM2-135M-Instruct.Q4_1.gguf` (or `AIHAL_GGUF_DIR`); without it
//! the bench says so and does nothing.
#![allow(missing_docs)] // criterion_group!/criterion_main! generate undocumented items

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

use aihal::models::llama::{generate, GenerateOptions, LlamaModel, LlamaOptions, Sampler, SamplingOptions};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// `<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n`.
const PROMPT: [u32; 16] = [
    1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47, 2, 198, 1, 520, 9531, 198,
];

fn model_path() -> Option<PathBuf> {
    let dir = std::env::var_os("AIHAL_GGUF_DIR").map_or_else(|| PathBuf::from(".testdata/gguf"), PathBuf::from);
    let path = dir.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    path.exists().then_some(path)
}

fn bench(c: &mut Criterion) {
    let Some(path) = model_path() else {
        eprintln!(
            "generate bench: SmolLM2-135M-Instruct.Q4_1.gguf not found in .testdata/gguf \
             (bash .ci/run fetches it); nothing to do"
        );
        return;
    };
    let exec = aihal::executor().unwrap();
    let model = LlamaModel::load(&exec, &path, LlamaOptions::default()).unwrap();
    // "The capital of France is Paris." then <|im_end|>.
    let options = GenerateOptions {
        max_tokens: 8,
        stop: vec![2],
        ..GenerateOptions::default()
    };
    let out = generate(&model, &PROMPT, &options, |_| Ok(())).unwrap();
    assert_eq!(
        out.tokens,
        [504, 3575, 282, 4649, 314, 7042, 30],
        "the greedy answer changed"
    );

    let mut g = c.benchmark_group("smollm2_q4_1");
    g.measurement_time(Duration::from_secs(10));
    g.throughput(Throughput::Elements(PROMPT.len() as u64));
    let mut state = model.new_state(Some(256)).unwrap();
    g.bench_function("prefill_16_tokens", |b| {
        b.iter(|| {
            state.clear();
            black_box(model.forward(black_box(&PROMPT), &mut state).unwrap())
        });
    });
    g.throughput(Throughput::Elements(1));
    let mut sampler = Sampler::new(SamplingOptions::greedy()).unwrap();
    state.clear();
    let logits = model.forward(&PROMPT, &mut state).unwrap();
    let mut next = sampler.sample(&logits).unwrap();
    g.bench_function("decode_1_token", |b| {
        b.iter(|| {
            // Decode up to 128 positions, then roll back to the prompt and go on.
            if state.position() >= 128 {
                state.truncate(PROMPT.len()).unwrap();
            }
            let logits = model.forward(&[next], &mut state).unwrap();
            next = sampler.sample(black_box(&logits)).unwrap();
        });
    });
    g.finish();
    println!("where each op ran:\n{}", exec.report());
}

criterion_group!(benches, bench);
criterion_main!(benches);
