//! Shared test support: the emulator's library path and a lock around the environment
//! variables that steer it (tests in one binary run in parallel threads; the emulator reads
//! its configuration from the environment, so every test that uses it holds the lock).
#![allow(dead_code, unreachable_pub, clippy::unused_self)] // `fail`/`heal` take `&self` to show they need the lock held

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, PoisonError};

use aihal_rknn::RknnLibrary;
use aihal_rknn_emulator::state::{FAIL_ENV, REPORTED_ENV, VERSION_ENV};

static LOCK: Mutex<()> = Mutex::new(());

/// The emulator's shared library, built by cargo because aihal-rknn dev-depends on it.
pub fn emulator_path() -> PathBuf {
    aihal_rknn_emulator::library_path().expect(
        "libaihal_rknn_emulator.so not found next to the test binary; build it with \
         `cargo build -p aihal-rknn-emulator` for the same target and profile",
    )
}

/// The emulator as one runtime version, with the lock held until drop.
pub struct Emu {
    pub lib: RknnLibrary,
    pub path: PathBuf,
    _guard: MutexGuard<'static, ()>,
}

impl Emu {
    /// The emulator as runtime `version` (e.g. `"1.5.2"`): a copy of its library that exports
    /// what that version's library exports and reports that version, behaving as documented.
    pub fn new(version: &str) -> Self {
        Self::start(version, false)
    }

    /// As [`Emu::new`], but behaving as users report real hardware does where that differs
    /// from the documents.
    pub fn reported(version: &str) -> Self {
        Self::start(version, true)
    }

    fn start(version: &str, reported: bool) -> Self {
        let guard = LOCK.lock().unwrap_or_else(PoisonError::into_inner);
        // The lock serialises every environment access of this test binary.
        std::env::remove_var(VERSION_ENV);
        std::env::remove_var(FAIL_ENV);
        if reported {
            std::env::set_var(REPORTED_ENV, "1");
        } else {
            std::env::remove_var(REPORTED_ENV);
        }
        let path = aihal_rknn_emulator::versioned_library(version).expect("a copy of the emulator for the version");
        let lib = RknnLibrary::load_from(&path).expect("the emulator loads");
        Self {
            lib,
            path,
            _guard: guard,
        }
    }

    /// Makes the library report and behave as `version` while exporting what it was made
    /// with (a runtime whose version and exports disagree).
    pub fn pretend_version(&self, version: &str) {
        std::env::set_var(VERSION_ENV, version);
    }

    /// Makes the named calls fail (see the emulator's fault-injection variable).
    pub fn fail(&self, spec: &str) {
        std::env::set_var(FAIL_ENV, spec);
    }

    /// Stops injecting faults.
    pub fn heal(&self) {
        std::env::remove_var(FAIL_ENV);
    }

    /// Live contexts and memory blocks inside the emulator.
    pub fn live(&self) -> (u64, u64) {
        aihal_rknn_emulator::live_objects(&self.path).expect("the emulator's diagnostic export")
    }
}

impl Drop for Emu {
    fn drop(&mut self) {
        std::env::remove_var(FAIL_ENV);
        std::env::remove_var(VERSION_ENV);
        std::env::remove_var(REPORTED_ENV);
    }
}

/// A small deterministic generator (xorshift), so failures reproduce.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn i8s(&mut self, n: usize) -> Vec<i8> {
        (0..n).map(|_| self.next_u64() as i8).collect()
    }
    pub fn f32s(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|_| ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale)
            .collect()
    }
}
