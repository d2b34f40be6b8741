//! Warnings printed once per process: [`warn_once`] for any notice, [`warn_if_cpu`] for
//! backend crates handed the CPU, and device selection's announcements (the CPU fallback
//! warning, the CPU-intended notice).

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, Once, PoisonError};

use crate::config::DeviceConfig;
use crate::device::Device;

/// Set once device selection has seen the user declare the CPU intended.
static CPU_INTENDED: AtomicBool = AtomicBool::new(false);
static FALLBACK_WARNING: Once = Once::new();
static CPU_INTENDED_INFO: Once = Once::new();

/// Device selection chose the CPU because the user asked for it: one info-level trace per
/// process, and [`warn_if_cpu`] stays quiet from now on.
pub(crate) fn announce_cpu_intended() {
    CPU_INTENDED.store(true, Ordering::Relaxed);
    CPU_INTENDED_INFO.call_once(|| tracing::info!("aihal: running on the CPU as configured"));
}

/// Device selection fell back to the CPU because of `reason`: warns once per process, to
/// `tracing` and stderr.
pub(crate) fn announce_cpu_fallback(reason: &dyn fmt::Display) {
    FALLBACK_WARNING.call_once(|| {
        let message = format!(
            "aihal: running on the CPU because {reason}. Set RUST_AI_FORCE_CPU=1 to declare the CPU intended and silence this warning."
        );
        tracing::warn!("{message}");
        eprintln!("warning: {message}");
    });
}

static WARNED: Mutex<Option<HashSet<String>>> = Mutex::new(None);

/// Prints `message` as a warning (to `tracing` and stderr) the first time `key` is seen in
/// this process, and returns whether it printed. Backends use it for their own
/// once-per-process notices.
pub fn warn_once(key: &str, message: &str) -> bool {
    let mut warned = WARNED.lock().unwrap_or_else(PoisonError::into_inner);
    if !warned.get_or_insert_with(HashSet::new).insert(key.to_owned()) {
        return false;
    }
    drop(warned);
    tracing::warn!("{message}");
    eprintln!("warning: {message}");
    true
}

/// For backend crates handed a device: warns once per process per crate when `device` is
/// the CPU and the user did not declare the CPU intended (by forcing it, in code or through
/// `RUST_AI_FORCE_CPU`, or by asking for `cpu`). Returns whether it warned.
pub fn warn_if_cpu(device: &Device, crate_name: &str) -> bool {
    if !device.is_cpu() || CPU_INTENDED.load(Ordering::Relaxed) {
        return false;
    }
    if DeviceConfig::from_env().is_ok_and(|c| c.is_cpu_intended()) {
        return false;
    }
    warn_once(
        &format!("warn_if_cpu:{crate_name}"),
        &format!(
            "{crate_name}: running on the CPU, not an accelerator. Set RUST_AI_FORCE_CPU=1 to declare the CPU intended and silence this warning."
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warn_once_prints_a_key_once() {
        assert!(warn_once("unit-test-key", "first"));
        assert!(!warn_once("unit-test-key", "second"));
        assert!(warn_once("unit-test-key-2", "other key"));
    }
}
