//! Loading and dropping a model repeatedly leaks nothing: a counting allocator tracks the
//! bytes live in this test binary (it has one test, so no other test's allocations mix in), and
//! after warm-up loads the live bytes return to the same level after every load, use and drop.
//!
//! Bound: the live bytes after the last of three measured rounds exceed those after the first
//! by at most 64 KiB, against a load that allocates tens of megabytes (MiniLM's f32 weights,
//! 90 MB): leaking any weight, cache or the executor's prepared ops would exceed it by
//! orders of magnitude, while lazily grown per-thread buffers of the thread pools (created
//! once, reused after) stay below it.

mod common;

use aihal_models::{EmbedderOptions, LinearWeights, SentenceEmbedder};
use aihal_ops::LinearPrecision;
use aihal_quantize::QuantFormat;
use common::counting::{assert_counts_leaks, live_after_rounds, peak, Counting};

fn main() {
    common::run(vec![common::trial(
        "loading_using_and_dropping_minilm_leaks_nothing",
        &[common::Data::MiniLm],
        loading_using_and_dropping_minilm_leaks_nothing,
    )]);
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const SLACK: isize = 64 * 1024;

fn loading_using_and_dropping_minilm_leaks_nothing() {
    // The counter itself first: a round that leaks 100 KiB shows as growth past the bound.
    assert_counts_leaks(100 * 1024, SLACK);

    let dir = common::minilm_dir();
    for (what, weights) in [
        ("f32", LinearWeights::F32),
        (
            "Q8_0",
            LinearWeights::Quantized {
                format: QuantFormat::Q8_0,
                precision: LinearPrecision::Int8Activations,
            },
        ),
    ] {
        let peak_before = peak();
        let live = live_after_rounds(3, || {
            // A fresh executor each round too: its providers and records must go with it.
            let exec = common::cpu_executor();
            let options = EmbedderOptions {
                weights,
                ..EmbedderOptions::default()
            };
            let model = SentenceEmbedder::load(&exec, &dir, options).expect("load");
            let e = model.embed(&["A man is eating food.", "cats"]).expect("embed");
            assert_eq!(e.len(), 2);
        });
        let grew = live[live.len() - 1] - live[0];
        eprintln!("{what}: live bytes after each round {live:?}");
        let peak = peak().max(peak_before);
        assert!(
            grew <= SLACK,
            "{what}: live bytes grew by {grew} over {} load/drop rounds (each {:?}); peak {peak} bytes",
            live.len() - 1,
            live
        );
    }
}
