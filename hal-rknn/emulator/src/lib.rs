//! A CPU emulator of the RKNN runtime's C ABI (`librknnrt.so`), built as a `cdylib` so that
//! `aihal-rknn` can be tested end to end on machines without an RK3588.
//!
//! It is a model of the **documented** runtime, written from Rockchip's published headers,
//! API reference, official matmul demos and users' reports, not from `aihal-rknn`'s own
//! assumptions: each behaviour names the document it follows next to its code
//! ([`matmul`] lists the short names), and what no document describes answers an error
//! rather than a guess. In particular:
//!
//! - the matmul API reads the `rknn_matmul_info` generation of each version (24 bytes for
//!   1.5.x and 1.6.x, 64 bytes from 2.0.0, `group_size` from 2.1.0) and numbers
//!   `B_quant_type` as that version does (2.0.0: 1 per channel; 2.1.0 on: 2), by its own
//!   rules in [`version`], not `aihal-rknn-sys`'s;
//! - it enforces the RK3588's K/N alignment and K limit, computes int8 (→ int32, → f32 from
//!   2.1.0) and fp16 (→ f32) products from normal, transposed (2.1.0) and native B (in
//!   8192-row segments from 2.0.0) and from normal or perf A/C, by its own layout walks in
//!   [`layout`];
//! - quantization parameters are accepted only where documented, and results no document
//!   describes (per-channel int8 → int32, per-group int8 → f32 with unequal scales) are
//!   errors;
//! - each version exports only what that version's library exports: the library cargo builds
//!   exports 2.3.2's set, and [`versioned_library`] writes a copy that exports another
//!   version's set and behaves as that version ([`exports`]);
//! - `rknn_query` rejects buffers smaller than the struct with `RKNN_ERR_PARAM_INVALID` (-5)
//!   and unknown handles with `RKNN_ERR_CTX_INVALID` (-7);
//! - `rknn_init` runs a tiny model format of its own ([`model::EmuModel`]), enough for the
//!   whole model path: queries, typed inputs, run, outputs, zero-copy memory, perf counters.
//!
//! Three environment variables steer it: [`state::VERSION_ENV`] overrides the version it
//! reports and behaves as, [`state::FAIL_ENV`] makes chosen calls fail (fault injection), and
//! [`state::REPORTED_ENV`] switches to what users report real hardware doing where that
//! differs from the documents (all-zero results, failing multi-core masks; each names its
//! report).
//!
//! Simplifications: native layouts of model tensors are the normal ones (no NC1HWC2), the
//! core mask is recorded but changes nothing, the declared functions that nothing here uses
//! (dynamic shapes, `rknn_create_mem2`, `rknn_matmul_get_quant_params`, …) answer
//! `RKNN_ERR_FAIL`, and `rknn_B_normal_layout_to_native_layout` is not exported at all. The
//! C structs other than `rknn_matmul_info` are `aihal-rknn-sys`'s, whose sizes and offsets are
//! asserted at compile time against the headers.
//!
//! The Rust side of the crate ([`model::EmuModel`], [`live_objects`], [`library_path`],
//! [`versioned_library`]) is for tests and examples.
#![deny(
    unsafe_op_in_unsafe_fn,
    clippy::undocumented_unsafe_blocks,
    clippy::missing_safety_doc
)]

pub mod api;
pub mod exports;
pub mod layout;
pub mod matmul;
pub mod matmul_api;
pub mod model;
pub mod state;
pub mod version;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

/// The file name of the emulator's shared library on this platform.
pub const LIBRARY_FILE: &str = "libaihal_rknn_emulator.so";

/// Looks for the emulator's shared library next to the running executable (cargo puts test
/// binaries in `target/<profile>/deps` and the library in `deps` and `<profile>`). Answers
/// `None` when it was not built.
pub fn library_path() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let mut dir = exe.parent();
    while let Some(d) = dir {
        for candidate in [d.join(LIBRARY_FILE), d.join("deps").join(LIBRARY_FILE)] {
            if candidate.is_file() {
                return Some(candidate);
            }
        }
        if d.file_name()
            .is_some_and(|n| n == "target" || n.to_string_lossy().starts_with("target-"))
        {
            break;
        }
        dir = d.parent();
    }
    None
}

/// A copy of the emulator's library that exports only what runtime `version`'s library
/// exports and reports and behaves as `version` (unless [`state::VERSION_ENV`] overrides
/// it), written as `librknnrt.so` into `aihal-rknn-emu/<version>/` beside the library cargo
/// built ([`library_path`]). `version` is `1.3.0` to `2.3.x`.
///
/// The file is written once per process and version, atomically (a temporary file renamed
/// over the old one), so concurrent test binaries never load a half-written copy.
pub fn versioned_library(version: &str) -> Result<PathBuf, String> {
    static MADE: Mutex<Vec<(version::Version, PathBuf)>> = Mutex::new(Vec::new());
    let parsed = version::Version::parse(version)
        .filter(|v| v.is_emulated())
        .ok_or_else(|| format!("{version:?} is not a runtime version the emulator models (1.3.0 to 2.3.x)"))?;
    let mut made = MADE.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((_, path)) = made.iter().find(|(v, _)| *v == parsed) {
        return Ok(path.clone());
    }
    let original = library_path().ok_or_else(|| format!("{LIBRARY_FILE} was not found next to this executable"))?;
    let mut image = std::fs::read(&original).map_err(|e| format!("{}: {e}", original.display()))?;
    exports::patch_library(&mut image, parsed).map_err(|e| format!("{}: {e}", original.display()))?;
    let dir = original
        .parent()
        .unwrap_or(Path::new("."))
        .join("aihal-rknn-emu")
        .join(parsed.to_string());
    let path = dir.join("librknnrt.so");
    if std::fs::read(&path).ok().as_deref() != Some(image.as_slice()) {
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let tmp = dir.join(format!("librknnrt.so.{}.tmp", std::process::id()));
        std::fs::write(&tmp, &image).map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, &path).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    made.push((parsed, path.clone()));
    Ok(path)
}

/// The number of live contexts and memory blocks in the emulator loaded from `path` (through
/// its diagnostic export), or `None` if it cannot be loaded.
pub fn live_objects(path: &Path) -> Option<(u64, u64)> {
    // SAFETY: `path` is this crate's own cdylib or a copy of it (the caller's responsibility
    // for this test helper); its initialisers are Rust's and have no side effects.
    let lib = unsafe { libloading::Library::new(path) }.ok()?;
    // SAFETY: the symbol is `aihal_rknn_emu_live_objects` with exactly this signature.
    let f =
        unsafe { lib.get::<unsafe extern "C" fn(*mut u64) -> std::ffi::c_int>("aihal_rknn_emu_live_objects") }.ok()?;
    let mut out = [0u64; 2];
    // SAFETY: `out` holds the two u64 the function writes.
    let code = unsafe { f(out.as_mut_ptr()) };
    (code == 0).then_some((out[0], out[1]))
}
