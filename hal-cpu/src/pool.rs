//! A handful of independent tasks on a thread pool, with the calling thread taking part.
//!
//! A batch-1 matmul is short enough that the cost of handing it to a pool counts. Handing a
//! parallel iterator to rayon from a thread outside its pool (an application's main thread,
//! the usual caller) puts that thread to sleep on a latch until the pool has finished, and
//! waking it again costs a context switch on every call. Here the calling thread runs tasks
//! itself and the pool's jobs help it, every thread taking the next task not yet taken, so the
//! caller only waits, spinning briefly, for the tasks still running elsewhere when none are
//! left.
//!
//! Which pool: a caller that is itself a thread of a rayon pool (an application's
//! `par_iter`, a pool it `install`ed) uses that pool, whose size counts the caller already.
//! A caller outside every pool uses this crate's own pool of one thread fewer than rayon's
//! global pool would have (`RAYON_NUM_THREADS`, else one per core), so that the caller and
//! its helpers are exactly that many threads. Helping from the global pool instead would put
//! one thread more than that on the cores: the global pool's idle worker yields the core
//! back and forth with the two that work, tens of thousands of context switches a second in
//! a decode loop.
//!
//! The tasks are independent and each writes only what it owns, so the results do not depend
//! on which thread ran which task.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// How long the caller spins for the last tasks before it leaves the waiting to rayon's latch.
const SPIN: Duration = Duration::from_micros(200);

/// This crate's helpers for callers outside every rayon pool: rayon's global size minus one
/// (the caller), `None` when that is none, or when the pool could not be built (the caller
/// then runs its tasks alone, as with one thread).
fn helpers_pool() -> Option<&'static rayon::ThreadPool> {
    static POOL: OnceLock<Option<rayon::ThreadPool>> = OnceLock::new();
    POOL.get_or_init(|| {
        let helpers = rayon::current_num_threads().saturating_sub(1);
        if helpers == 0 {
            return None;
        }
        rayon::ThreadPoolBuilder::new()
            .num_threads(helpers)
            .thread_name(|i| format!("aihal-cpu-{i}"))
            .build()
            .ok()
    })
    .as_ref()
}

/// How many threads a call of [`run_tasks`] from this thread runs on: the caller and its
/// helpers (what the kernels size their tasks by).
pub(crate) fn threads() -> usize {
    if rayon::current_thread_index().is_some() {
        rayon::current_num_threads().max(1)
    } else {
        helpers_pool().map_or(1, |p| p.current_num_threads() + 1)
    }
}

/// Runs `work(i, task)` for every task `i`, on the calling thread and on up to
/// [`threads`]` - 1` helper jobs (see the module docs for which pool); returns when all have
/// run. A panic in a task is passed on to the caller once the other jobs have stopped.
pub(crate) fn run_tasks<T: Send>(tasks: Vec<T>, work: impl Fn(usize, T) + Sync) {
    let total = tasks.len();
    let helpers = threads().min(total).saturating_sub(1);
    if helpers == 0 {
        for (i, t) in tasks.into_iter().enumerate() {
            work(i, t);
        }
        return;
    }
    let queue = Mutex::new(tasks.into_iter().enumerate());
    let done = AtomicUsize::new(0);
    let take = || loop {
        // The lock is held only to take a task (a panic in `work` cannot poison it).
        let next = queue.lock().unwrap_or_else(PoisonError::into_inner).next();
        let Some((i, t)) = next else { break };
        work(i, t);
        done.fetch_add(1, Ordering::Release);
    };
    match helpers_pool().filter(|_| rayon::current_thread_index().is_none()) {
        Some(pool) => pool.in_place_scope(|s| help(s, helpers, &take, &done, total)),
        None => rayon::in_place_scope(|s| help(s, helpers, &take, &done, total)),
    }
}

/// Inside the scope `s`: `helpers` jobs run `take`, the caller too; then the caller spins a
/// while for the jobs still running (the scope waits for the rest).
fn help<'s, F: Fn() + Sync>(s: &rayon::Scope<'s>, helpers: usize, take: &'s F, done: &AtomicUsize, total: usize) {
    for _ in 0..helpers {
        s.spawn(move |_| take());
    }
    take();
    let start = Instant::now();
    while done.load(Ordering::Acquire) < total && start.elapsed() < SPIN {
        std::hint::spin_loop();
    }
}

/// `work(yc, xc)` over the chunks of `chunk` values of `y` and the same chunks of `x` (as
/// long as `y`), as tasks of [`run_tasks`].
pub(crate) fn for_chunks<Y: Send, X: Sync>(y: &mut [Y], x: &[X], chunk: usize, work: impl Fn(&mut [Y], &[X]) + Sync) {
    debug_assert_eq!(y.len(), x.len());
    let chunk = chunk.max(1);
    run_tasks(y.chunks_mut(chunk).zip(x.chunks(chunk)).collect(), |_, (yc, xc)| {
        work(yc, xc);
    });
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::run_tasks;

    #[test]
    fn every_task_runs_once_whatever_the_pool() {
        for threads in [1, 2, 3, 8] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            for total in [0, 1, 2, 7, 64] {
                let mut out = vec![0usize; total];
                let calls = AtomicUsize::new(0);
                // From inside a pool, then from this thread, outside the global pool.
                let tasks: Vec<(usize, &mut usize)> = out.iter_mut().enumerate().collect();
                pool.install(|| {
                    run_tasks(tasks, |i, (j, slot)| {
                        assert_eq!(i, j);
                        *slot += 10 * i + 1;
                        calls.fetch_add(1, Ordering::Relaxed);
                    });
                });
                let mut again = vec![0usize; total];
                let tasks: Vec<(usize, &mut usize)> = again.iter_mut().enumerate().collect();
                run_tasks(tasks, |_, (j, slot)| *slot += 10 * j + 1);
                assert_eq!(calls.load(Ordering::Relaxed), total);
                let want: Vec<usize> = (0..total).map(|i| 10 * i + 1).collect();
                assert_eq!((out, again), (want.clone(), want), "{threads} threads, {total} tasks");
            }
        }
    }

    #[test]
    fn outside_every_pool_the_caller_and_this_crate_s_helpers_are_the_global_count() {
        use std::collections::HashSet;
        use std::sync::Mutex;
        let global = rayon::current_num_threads();
        assert_eq!(super::threads(), global);
        let me = std::thread::current().name().map(str::to_owned);
        let seen = Mutex::new(HashSet::new());
        run_tasks((0..64).collect(), |_, _: usize| {
            seen.lock()
                .unwrap()
                .insert(std::thread::current().name().map(str::to_owned));
            std::thread::sleep(std::time::Duration::from_micros(200));
        });
        let seen = seen.into_inner().unwrap();
        assert!(seen.contains(&me), "the caller takes part");
        assert!(seen.len() <= global, "{seen:?} on {global} threads");
        for name in &seen {
            assert!(
                *name == me || name.as_deref().is_some_and(|n| n.starts_with("aihal-cpu-")),
                "a task ran on {name:?}, neither the caller nor one of this crate's helpers"
            );
        }
        // Inside a pool, that pool's size (the caller is one of its threads).
        let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
        assert_eq!(pool.install(super::threads), 3);
    }

    #[test]
    fn a_panicking_task_reaches_the_caller() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.install(|| run_tasks((0..8).collect(), |i, _: i32| assert!(i != 5, "task five")));
        }));
        assert!(got.is_err());
        // The pool still works afterwards.
        let sum = AtomicUsize::new(0);
        pool.install(|| {
            run_tasks((0..8).collect(), |_, t: usize| {
                sum.fetch_add(t, Ordering::Relaxed);
            });
        });
        assert_eq!(sum.load(Ordering::Relaxed), 28);
    }
}
