//! The executor adds no allocation to a call: an op through it allocates exactly what the
//! provider's prepared op allocates when called directly (its output).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use aihal_ops::{Add, Call, Executor, OpSpec, Provider, Tensor};
use common::Host;

/// Counts allocations (of this test binary's one test thread while it measures).
struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: the caller's contract for `alloc` is passed on as it is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout (above).
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations(f: impl Fn()) -> usize {
    f(); // warm: first-call caches (warn-once sets, tracing's callsite registry)
    let before = ALLOCS.load(Ordering::SeqCst);
    for _ in 0..100 {
        f();
    }
    ALLOCS.load(Ordering::SeqCst) - before
}

#[test]
fn an_op_through_the_executor_allocates_what_the_provider_does() {
    let exec = Executor::builder().provider(Arc::new(Host)).build().unwrap();
    let add = Add::new(&exec).unwrap();
    let direct = Host.prepare(&OpSpec::Add).unwrap();
    let a = Tensor::from_vec((0..16).map(|i| i as f32).collect(), &[16]).unwrap();
    let provider = allocations(|| drop(direct.run(Call::Binary(&a, &a)).unwrap()));
    let executor = allocations(|| drop(add.forward(&a, &a).unwrap()));
    assert!(provider > 0, "the provider's output is an allocation");
    assert_eq!(executor, provider, "the executor added allocations to 100 calls");
}
