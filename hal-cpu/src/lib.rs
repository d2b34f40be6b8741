//! The CPU backend of aihal: quantized matmul `y = x · Wᵀ` fused with weight decoding for
//! every aihal-quantize format, and the small ops between the matmuls of a transformer layer.
//!
//! Every result here is tested against the scalar reference ops of `aihal-reference`, which
//! define correct for every backend.
//! - The fast API ([`matmul`], [`matmul_with`], [`QuantLinear`], [`ops`]): SIMD kernels
//!   chosen once per process from what the CPU reports at run time (AVX2/FMA/F16C on x86_64,
//!   NEON with dotprod on aarch64), threads over the output features with rayon. Results do
//!   not depend on the number of threads.
//! - [`PackedWeights`] and [`matmul_packed`]: a weight repacked once for this CPU's
//!   int8-activation kernels (panels of 16 rows for AVX-512 VNNI, of 8 for AVX-VNNI and AVX2,
//!   at the format's own bit width; FP8 with an exact AVX-512 kernel), so that no call decodes
//!   or repacks it again; [`QuantLinear`] holds its weight this way. This is the fastest path:
//!   [`kernel_set_name`] names the set of the per-call kernels, and
//!   [`PackedWeights::layout_name`] the packed layout a matrix got.
// Tests compare floats exactly on purpose: the fixed-order reference is deterministic.
#![cfg_attr(test, allow(clippy::float_cmp))]
#![deny(
    unsafe_op_in_unsafe_fn,
    clippy::undocumented_unsafe_blocks,
    clippy::missing_safety_doc
)]

mod kernels;
mod linear;
mod matmul;
pub mod ops;
mod packed;
mod pages;
mod pool;
mod provider;
#[cfg(feature = "test-internals")]
#[doc(hidden)]
pub mod test_support;

pub use linear::QuantLinear;
pub use packed::{matmul_packed, matmul_packed_into, PackOptions, PackedWeights};
pub use provider::CpuProvider;

pub use kernels::kernel_set_name;
pub use matmul::{
    has_int8_activation_path, matmul, matmul_into, matmul_tensor, matmul_with, ActivationPrecision, Activations,
    MatmulOptions,
};
