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

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};

use aihal_models::{EmbedderOptions, LinearWeights, SentenceEmbedder};
use aihal_ops::LinearPrecision;
use aihal_quantize::QuantFormat;

fn main() {
    common::run(vec![common::trial(
        "loading_using_and_dropping_minilm_leaks_nothing",
        &[common::Data::MiniLm],
        loading_using_and_dropping_minilm_leaks_nothing,
    )]);
}

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts bytes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed) + layout.size() as isize;
        PEAK.fetch_max(live.max(0) as usize, Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc` is passed on as it is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed) + layout.size() as isize;
        PEAK.fetch_max(live.max(0) as usize, Ordering::Relaxed);
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: `ptr` came from this allocator (the system's) with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let live = LIVE.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed) + new_size as isize
            - layout.size() as isize;
        PEAK.fetch_max(live.max(0) as usize, Ordering::Relaxed);
        // SAFETY: `ptr` came from this allocator with `layout`; the caller's contract holds.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const SLACK: isize = 64 * 1024;

/// Live bytes after each of `rounds` calls of `round`, once a warm-up round has run.
fn live_after_rounds(rounds: usize, round: impl Fn()) -> Vec<isize> {
    round();
    (0..rounds)
        .map(|_| {
            round();
            LIVE.load(Ordering::Relaxed)
        })
        .collect()
}

fn loading_using_and_dropping_minilm_leaks_nothing() {
    // The counter itself first: a round that leaks 100 KiB shows as growth past the bound.
    let leaky = live_after_rounds(3, || std::mem::forget(vec![1u8; 100 * 1024]));
    assert!(leaky[2] - leaky[0] > SLACK, "a leak went unseen: {leaky:?}");

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
        let peak_before = PEAK.load(Ordering::Relaxed);
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
        let peak = PEAK.load(Ordering::Relaxed).max(peak_before);
        assert!(
            grew <= SLACK,
            "{what}: live bytes grew by {grew} over {} load/drop rounds (each {:?}); peak {peak} bytes",
            live.len() - 1,
            live
        );
    }
}
