//! The dispatch record: per op kind and provider, calls, time and fallbacks.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use aihal_core::Device;

use crate::provider::OpKind;

/// Providers one executor can hold (a machine's CPU, a few GPUs, an NPU).
pub(crate) const MAX_PROVIDERS: usize = 8;

/// The first this-many calls of each op and provider are timed, then about one call in this
/// many: reading the clock costs more than the routing itself, so past the first calls the
/// record's total time is the timed calls' time scaled to all calls. Which calls are timed
/// follows a Weyl sequence over the call count ([`timed_call`]), not every this-many-th call:
/// a model calls each op kind the same number of times per step, and a fixed stride that
/// divides that number would time the same few call sites in every step.
pub(crate) const TIME_ONE_IN: u64 = 16;

#[derive(Default)]
struct Counter {
    calls: AtomicU64,
    timed: AtomicU64,
    nanos: AtomicU64,
}

/// One fallback: an op that ran on another provider than the one placement wanted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fallback {
    /// The op.
    pub op: OpKind,
    /// Where placement wanted it.
    pub wanted: Device,
    /// Where it ran.
    pub ran_on: Device,
    /// Why.
    pub reason: String,
    /// How many calls took this fallback.
    pub count: u64,
}

/// Counters kept by an [`Executor`](crate::Executor), cheap to update from many threads (atomics;
/// a lock only when a fallback happens).
pub(crate) struct Record {
    counters: Vec<Counter>,
    fallbacks: Mutex<Vec<Fallback>>,
}

/// Whether call number `n` (from 0) of an op and provider is timed: the first
/// [`TIME_ONE_IN`] calls, then those whose `n` times the golden ratio (modulo 1) falls in the
/// first 1/`TIME_ONE_IN` of the unit interval. That sequence is equidistributed over every
/// arithmetic progression of `n`, so every call site of a loop is sampled at the same rate.
#[inline]
fn timed_call(n: u64) -> bool {
    const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;
    n < TIME_ONE_IN || n.wrapping_mul(GOLDEN) < u64::MAX / TIME_ONE_IN
}

impl Record {
    pub(crate) fn new() -> Self {
        Self {
            counters: (0..OpKind::ALL.len() * MAX_PROVIDERS)
                .map(|_| Counter::default())
                .collect(),
            fallbacks: Mutex::new(Vec::new()),
        }
    }

    /// Counts a call; `true` when this call is one to time.
    #[inline]
    pub(crate) fn start(&self, op: OpKind, provider: usize) -> bool {
        let c = &self.counters[op as usize * MAX_PROVIDERS + provider];
        let n = c.calls.fetch_add(1, Ordering::Relaxed);
        timed_call(n)
    }

    /// Adds a timed call's duration.
    #[inline]
    pub(crate) fn timed(&self, op: OpKind, provider: usize, elapsed: Duration) {
        let c = &self.counters[op as usize * MAX_PROVIDERS + provider];
        c.timed.fetch_add(1, Ordering::Relaxed);
        c.nanos
            .fetch_add(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    pub(crate) fn fell_back(&self, op: OpKind, wanted: Device, ran_on: Device, reason: &str) {
        let mut list = self.fallbacks.lock().unwrap_or_else(PoisonError::into_inner);
        match list
            .iter_mut()
            .find(|f| f.op == op && f.wanted == wanted && f.ran_on == ran_on && f.reason == reason)
        {
            Some(f) => f.count += 1,
            None => list.push(Fallback {
                op,
                wanted,
                ran_on,
                reason: reason.to_owned(),
                count: 1,
            }),
        }
    }

    pub(crate) fn snapshot(&self, providers: &[(Device, String)]) -> Report {
        let mut rows = Vec::new();
        for op in OpKind::ALL {
            for (i, (device, name)) in providers.iter().enumerate() {
                let c = &self.counters[op as usize * MAX_PROVIDERS + i];
                let calls = c.calls.load(Ordering::Relaxed);
                let timed = c.timed.load(Ordering::Relaxed);
                if calls > 0 {
                    let nanos = u128::from(c.nanos.load(Ordering::Relaxed));
                    let total = nanos * u128::from(calls) / u128::from(timed.max(1));
                    rows.push(ReportRow {
                        op,
                        device: *device,
                        provider: name.clone(),
                        calls,
                        total: Duration::from_nanos(u64::try_from(total).unwrap_or(u64::MAX)),
                    });
                }
            }
        }
        Report {
            rows,
            fallbacks: self.fallbacks.lock().unwrap_or_else(PoisonError::into_inner).clone(),
        }
    }
}

/// One row of a [`Report`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportRow {
    /// The op.
    pub op: OpKind,
    /// The provider's device.
    pub device: Device,
    /// The provider's name.
    pub provider: String,
    /// Calls that ran there.
    pub calls: u64,
    /// Their total time (the provider's run, transfers excluded): measured for the first 16
    /// calls, then estimated from one call in 16.
    pub total: Duration,
}

/// What an executor ran where: per op kind and provider, calls and total time, and every
/// fallback with its reason. `Display` prints it as a table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// One row per op kind and provider that ran at least once.
    pub rows: Vec<ReportRow>,
    /// Every distinct fallback.
    pub fallbacks: Vec<Fallback>,
}

impl Report {
    /// Calls of `op` that ran on `device`.
    pub fn calls(&self, op: OpKind, device: Device) -> u64 {
        self.rows
            .iter()
            .filter(|r| r.op == op && r.device == device)
            .map(|r| r.calls)
            .sum()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<12} {:<28} {:>9} {:>12} {:>12}",
            "op", "provider", "calls", "total", "per call"
        )?;
        for r in &self.rows {
            let per = r.total / u32::try_from(r.calls.max(1)).unwrap_or(u32::MAX);
            writeln!(
                f,
                "{:<12} {:<28} {:>9} {:>12} {:>12}",
                r.op.name(),
                r.provider,
                r.calls,
                format!("{:.3?}", r.total),
                format!("{per:.3?}")
            )?;
        }
        if self.fallbacks.is_empty() {
            write!(f, "no fallbacks")
        } else {
            write!(f, "fallbacks:")?;
            for fb in &self.fallbacks {
                write!(
                    f,
                    "\n  {} wanted {} ran on {} ({} call{}): {}",
                    fb.op,
                    fb.wanted,
                    fb.ran_on,
                    fb.count,
                    if fb.count == 1 { "" } else { "s" },
                    fb.reason
                )?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{timed_call, TIME_ONE_IN};

    /// A loop that calls an op at 96 sites per step (a model's linear layers) has every site
    /// timed at about one call in `TIME_ONE_IN`, where a stride of 16 would time 6 of them.
    #[test]
    fn every_call_site_of_a_loop_is_sampled() {
        for sites in [1u64, 2, 7, 16, 96, 288] {
            let steps = 16 * 400;
            let mut per_site = vec![0u64; sites as usize];
            for n in TIME_ONE_IN..TIME_ONE_IN + sites * steps {
                if timed_call(n) {
                    per_site[(n % sites) as usize] += 1;
                }
            }
            let want = steps as f64 / TIME_ONE_IN as f64;
            for (site, &got) in per_site.iter().enumerate() {
                assert!(
                    (got as f64 - want).abs() <= 0.1 * want,
                    "{sites} sites: site {site} timed {got} times, want about {want}"
                );
            }
        }
        assert!((0..TIME_ONE_IN).all(timed_call), "the first calls are all timed");
    }
}
