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
//! core mask is recorded but changes nothing, and every symbol is exported whatever version is
//! reported (functions a version lacks answer `RKNN_ERR_FAIL`). The C structs other than
//! `rknn_matmul_info` are `aihal-rknn-sys`'s, whose sizes and offsets are asserted at compile
//! time against the headers.
//!
//! The Rust side of the crate ([`model::EmuModel`], [`live_objects`], [`library_path`]) is for
//! tests and examples.
#![deny(
    unsafe_op_in_unsafe_fn,
    clippy::undocumented_unsafe_blocks,
    clippy::missing_safety_doc
)]

pub mod api;
pub mod layout;
pub mod matmul;
pub mod matmul_api;
pub mod model;
pub mod state;
pub mod version;

use std::path::{Path, PathBuf};

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

/// The number of live contexts and memory blocks in the emulator loaded from `path` (through
/// its diagnostic export), or `None` if it cannot be loaded.
pub fn live_objects(path: &Path) -> Option<(u64, u64)> {
    // SAFETY: `path` is this crate's own cdylib (the caller's responsibility for this test
    // helper); its initialisers are Rust's and have no side effects.
    let lib = unsafe { libloading::Library::new(path) }.ok()?;
    // SAFETY: the symbol is `aihal_rknn_emu_live_objects` with exactly this signature.
    let f =
        unsafe { lib.get::<unsafe extern "C" fn(*mut u64) -> std::ffi::c_int>("aihal_rknn_emu_live_objects") }.ok()?;
    let mut out = [0u64; 2];
    // SAFETY: `out` holds the two u64 the function writes.
    let code = unsafe { f(out.as_mut_ptr()) };
    (code == 0).then_some((out[0], out[1]))
}
