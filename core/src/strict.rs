//! The process-wide strict setting for op dispatch: whether a CPU fallback in
//! [`GpuDispatchable::dispatch_traced`](crate::GpuDispatchable::dispatch_traced) is an
//! error. Read once from `RUST_AI_STRICT_DEVICE`, overridable with [`set_strict`].

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;

use crate::config::{env, DeviceConfig};
use crate::error::{CoreError, Result};

const FROM_ENV: u8 = 0;
const LENIENT: u8 = 1;
const STRICT: u8 = 2;

/// What [`set_strict`] said, or [`FROM_ENV`] before it was called.
static OVERRIDE: AtomicU8 = AtomicU8::new(FROM_ENV);

/// `RUST_AI_STRICT_DEVICE` as read the first time it was needed, or why it could not be.
static FROM_ENVIRONMENT: OnceLock<Result<bool, String>> = OnceLock::new();

/// Sets strict mode for op dispatch in this whole process, whatever `RUST_AI_STRICT_DEVICE`
/// says: with `true`, an op that would fall back to the CPU returns an error instead; with
/// `false`, it falls back with a warning.
///
/// Device selection is not affected: it follows [`DeviceConfig::strict`]. To choose per call
/// instead, use [`GpuDispatchable::dispatch_traced_with`](crate::GpuDispatchable::dispatch_traced_with).
pub fn set_strict(strict: bool) {
    OVERRIDE.store(if strict { STRICT } else { LENIENT }, Ordering::Relaxed);
}

/// Whether op dispatch is strict in this process: the last [`set_strict`], else
/// `RUST_AI_STRICT_DEVICE`, read once (with [`DeviceConfig`]'s parser) and cached.
///
/// Only that one variable is read, so a malformed value elsewhere (`RUST_AI_DEVICE`, say)
/// does not stop ops from running; a malformed `RUST_AI_STRICT_DEVICE` is an
/// `InvalidConfig` error naming it and the accepted forms, every time strictness is asked.
pub fn strict_mode() -> Result<bool> {
    match OVERRIDE.load(Ordering::Relaxed) {
        STRICT => return Ok(true),
        LENIENT => return Ok(false),
        _ => {}
    }
    FROM_ENVIRONMENT
        .get_or_init(|| {
            DeviceConfig::from_lookup(|name| {
                if name == env::STRICT {
                    std::env::var(name).ok()
                } else {
                    None
                }
            })
            .map(|config| config.is_strict())
            .map_err(|e| match e {
                CoreError::InvalidConfig(message) => message,
                other => other.to_string(),
            })
        })
        .clone()
        .map_err(CoreError::invalid_config)
}
