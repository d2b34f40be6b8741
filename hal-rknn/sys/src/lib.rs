//! Hand-written declarations of the Rockchip RKNN runtime's C API (`librknnrt.so`, runtime
//! 1.5.0 to 2.3.x on the RK3588) and a loader that resolves them at run time.
//!
//! This is the raw level: `#[repr(C)]` structs with compile-time size and offset checks
//! ([`types`]), the API's integer constants ([`consts`]), and function-pointer types with
//! [`RknnLib`], which opens the library with `libloading` ([`loader`]). Nothing here checks
//! return codes or owns a handle; `aihal-rknn` builds the safe API on top.
//!
//! Every declaration was written from the facts of the API (names, values, field orders),
//! not from the vendor's header, which is not redistributable.
//!
//! Layouts differ between versions in one place that matters: `rknn_matmul_info` is 24 bytes
//! before 2.0 and 64 bytes from 2.0 ([`MatmulInfoLayout`]). `rknn_tensor_attr` is 376 bytes
//! in every supported version.
//!
//! Only 64-bit targets (aarch64 boards, x86_64 hosts running the emulator) are supported:
//! on 32-bit ARM the context handle and several structs have other sizes.
#![deny(
    unsafe_op_in_unsafe_fn,
    clippy::undocumented_unsafe_blocks,
    clippy::missing_safety_doc
)]

#[cfg(not(target_pointer_width = "64"))]
compile_error!("aihal-rknn-sys declares the LP64 layouts of the RKNN runtime; 32-bit targets are not supported");

pub mod consts;
pub mod loader;
pub mod types;

pub use consts::*;
pub use loader::{
    version_from_symbols, LoadError, MatmulInfoLayout, MatmulQuantKind, RknnApi, RknnLib, RuntimeVersion,
    DEFAULT_LIBRARY_CANDIDATES, LIBRARY_ENV,
};
pub use types::*;
