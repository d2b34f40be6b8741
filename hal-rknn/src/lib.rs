//! Safe Rust for the RK3588 NPU: run compiled `.rknn` models and offload int8/f16 matrix
//! products, on any RKNN runtime from 1.5.0 to 2.3.x, loaded at run time.
//!
//! Three levels, as in cudarc: `aihal-rknn-sys` declares the C API and loads the library;
//! [`RknnStatus`]/[`RknnError`] turn every status code into a `Result` naming the call
//! (`rknn_run failed: RKNN_ERR_TIMEOUT (-2)`); [`RknnModel`], [`RknnMatMul`] and
//! [`RknnLinear`] own their handles and release them on drop.
//!
//! ```no_run
//! use aihal_rknn::{BOrder, MatMulType, RknnLibrary, RknnMatMul};
//!
//! let lib = RknnLibrary::load()?; // RUST_AI_RKNN_LIB, else librknnrt.so
//! let mut mm = RknnMatMul::new(&lib, 4, 64, 32, MatMulType::Int8ToInt32)?;
//! mm.set_b_i8(&vec![1i8; 64 * 32], BOrder::KxN)?;
//! let c = mm.run_i8(&vec![2i8; 4 * 64])?;
//! assert_eq!(c[0], 128);
//! # Ok::<(), aihal_rknn::RknnError>(())
//! ```
//!
//! # Threads
//!
//! [`RknnLibrary`] is `Send + Sync`. [`RknnModel`] and [`RknnMatMul`] are `Send` but not
//! `Sync`: the runtime does not document concurrent calls on one context, so each call that
//! reaches the runtime takes `&mut self`; for parallel inference give each thread its own
//! context with [`RknnModel::duplicate`]. [`RknnLinear`] is `Send + Sync` and serialises
//! its NPU calls internally.
//!
//! # Verification
//!
//! The structs are checked against the published headers; the behaviour is verified only
//! against `aihal-rknn-emulator`, our model of what Rockchip's headers, API reference and
//! demos document (and, behind a switch, of what users report), at every runtime generation
//! from 1.5.0 to 2.3.2, on x86_64 and on emulated aarch64. Not yet run on RK3588 silicon. The
//! crate's README lists what is checked against documentation, against user reports, and
//! only against the emulator.
#![deny(
    unsafe_op_in_unsafe_fn,
    clippy::undocumented_unsafe_blocks,
    clippy::missing_safety_doc
)]

mod error;
mod library;
mod linear;
mod matmul;
mod mem;
mod model;
mod probe;
mod provider;
mod tensor;

pub use aihal_rknn_sys::{MatmulInfoLayout, MatmulQuantKind, RuntimeVersion};
pub use error::{Result, RknnError, RknnStatus};
pub use library::{RknnLibrary, RuntimeInfo, VersionSource};
pub use linear::RknnLinear;
pub use matmul::{BLayout, BOrder, BQuant, MatMulOptions, MatMulType, QuantMatrix, RknnMatMul};
pub use model::{ModelOptions, Priority, RknnModel};
pub use probe::RknnProbe;
pub use provider::RknnProvider;
pub use tensor::{Input, InputData, Quantization, RawOutput, TensorAttr, TensorFormat, TensorType};

// The thread-safety documented above, checked at compile time.
const _: fn() = || {
    fn send<T: Send>() {}
    fn send_sync<T: Send + Sync>() {}
    send_sync::<RknnLibrary>();
    send_sync::<RknnLinear>();
    send_sync::<RknnError>();
    send::<RknnModel>();
    send::<RknnMatMul>();
};
