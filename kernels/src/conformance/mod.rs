//! The conformance suite: every kernel against `aihal_reference` on fresh random
//! inputs, with outputs poisoned beforehand so an element a kernel forgets to write fails.
//!
//! Each check is a generic function over the runtime; [`checks`] lists them by name for one
//! runtime, and a test binary runs them as trials on a context it opened, reporting them as
//! ignored (with the reason) where no device opens:
//!
//! ```text
//! for (name, check) in aihal_kernels::conformance::checks::<MyRuntime>() { /* a trial */ }
//! ```
//!
//! Inputs are drawn from a generator seeded from the clock (printed on failure; set
//! `AIHAL_TEST_SEED` to replay). Shapes straddle the kernels' tile edges. Tolerances are
//! stated per check and per dtype next to each comparison.

mod checks;
mod ops_checks;
mod rng;

use cubecl::Runtime;

use crate::launch::Context;

pub use checks::*;
pub use ops_checks::*;
pub use rng::Rng;

#[cfg(feature = "wgpu")]
pub use wgpu_env::wgpu_test_context;

#[cfg(feature = "wgpu")]
mod wgpu_env {
    use cubecl::wgpu::WgpuRuntime;

    use crate::launch::Context;
    use crate::wgpu_device::{wgpu_adapters, WgpuAdapter};

    /// The Vulkan context the suite runs on: the first hardware adapter, else the first
    /// software one (lavapipe, which CI installs); `Err` says why none opens (the test
    /// harness reports its trials as ignored with that reason, or fails them under
    /// `AIHAL_REQUIRE_VULKAN=1`).
    pub fn wgpu_test_context() -> Result<Context<WgpuRuntime>, String> {
        let adapters = wgpu_adapters();
        let pick: Option<WgpuAdapter> = adapters
            .iter()
            .find(|a| !a.software)
            .or_else(|| adapters.first())
            .cloned();
        let Some(a) = pick else {
            return Err("no Vulkan adapter found (install mesa-vulkan-drivers for lavapipe)".into());
        };
        Context::new(&a.device).map_err(|e| format!("adapter {} ({}) failed to open: {e}", a.index, a.name))
    }
}

/// One conformance check for runtime `R`: it panics on a mismatch.
pub type Check<R> = fn(&Context<R>);

/// Every conformance check for a runtime, by name, in a stable order.
///
/// A test binary turns these into its trials; since whether a device exists is known only at
/// run time, it uses a harness that can report a trial as ignored then (libtest-mimic, see
/// `kernels/tests/support`), so a machine without the device never counts them as passed.
pub fn checks<R: Runtime>() -> Vec<(&'static str, Check<R>)> {
    vec![
        ("dequantize_every_format_f32", dequantize_every_format_f32::<R>),
        ("dequantize_every_format_half", dequantize_every_format_half::<R>),
        ("dequantize_rejects_bad_output", dequantize_rejects_bad_output::<R>),
        (
            "oversized_buffers_are_out_of_memory",
            oversized_buffers_are_out_of_memory::<R>,
        ),
        ("matmul_every_format_f32", matmul_every_format_f32::<R>),
        ("matmul_f16_activations", matmul_f16_activations::<R>),
        ("matmul_rejects_bad_shapes", matmul_rejects_bad_shapes::<R>),
        ("rms_norm_matches_reference", rms_norm_matches_reference::<R>),
        ("softmax_matches_reference", softmax_matches_reference::<R>),
        ("activations_match_reference", activations_match_reference::<R>),
        ("layer_norm_matches_reference", layer_norm_matches_reference::<R>),
        ("binary_ops_match_reference", binary_ops_match_reference::<R>),
        ("embedding_matches_reference", embedding_matches_reference::<R>),
        ("rope_matches_reference", rope_matches_reference::<R>),
        ("attention_matches_reference", attention_matches_reference::<R>),
        (
            "cached_attention_matches_reference",
            cached_attention_matches_reference::<R>,
        ),
    ]
}
