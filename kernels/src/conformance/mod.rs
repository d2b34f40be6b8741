//! The conformance suite: every kernel against `aihal_reference` on fresh random
//! inputs, with outputs poisoned beforehand so an element a kernel forgets to write fails.
//!
//! Each check is a generic function over the runtime;
//! [`testgen_conformance!`](crate::testgen_conformance) turns them into `#[test]`s for one
//! runtime, the way CubeCL's own `runtime_tests` do:
//!
//! ```text
//! fn context() -> Option<aihal_kernels::Context<MyRuntime>> { /* None skips loudly */ }
//! aihal_kernels::testgen_conformance!(MyRuntime, context());
//! ```
//!
//! Inputs are drawn from a generator seeded from the clock (printed on failure; set
//! `AIHAL_TEST_SEED` to replay). Shapes straddle the kernels' tile edges. Tolerances are
//! stated per check and per dtype next to each comparison.

mod checks;
mod ops_checks;
mod rng;

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
    /// software one (lavapipe, which CI installs).
    ///
    /// Without any adapter the tests skip with a loud message, unless `AIHAL_REQUIRE_VULKAN=1`,
    /// under which a missing adapter fails the run (CI sets it).
    ///
    /// # Panics
    ///
    /// When `AIHAL_REQUIRE_VULKAN=1` and no adapter can be opened.
    pub fn wgpu_test_context() -> Option<Context<WgpuRuntime>> {
        let required = std::env::var("AIHAL_REQUIRE_VULKAN").is_ok_and(|v| v == "1");
        let adapters = wgpu_adapters();
        let pick: Option<WgpuAdapter> = adapters
            .iter()
            .find(|a| !a.software)
            .or_else(|| adapters.first())
            .cloned();
        let opened = pick.map(|a| (Context::new(&a.device), a));
        match opened {
            Some((Ok(ctx), _)) => Some(ctx),
            Some((Err(e), a)) => fail_or_skip(
                required,
                &format!("adapter {} ({}) failed to open: {e}", a.index, a.name),
            ),
            None => fail_or_skip(required, "no Vulkan adapter found"),
        }
    }

    fn fail_or_skip<T>(required: bool, why: &str) -> Option<T> {
        assert!(
            !required,
            "AIHAL_REQUIRE_VULKAN=1 but {why}; install mesa-vulkan-drivers (lavapipe)"
        );
        eprintln!(
            "\n*** SKIPPED: aihal-kernels Vulkan conformance test: {why}. \
             Install mesa-vulkan-drivers, or set AIHAL_REQUIRE_VULKAN=1 to make this an error. ***\n"
        );
        None
    }
}

/// Generates one `#[test]` per conformance check for a runtime.
///
/// `$runtime` is the CubeCL runtime type; `$context` an expression giving
/// `Option<aihal_kernels::Context<$runtime>>`, `None` meaning "skip" (the expression should
/// say why on stderr).
#[macro_export]
macro_rules! testgen_conformance {
    ($runtime:ty, $context:expr) => {
        $crate::testgen_conformance!(@tests $runtime, $context,
            dequantize_every_format_f32,
            dequantize_every_format_half,
            dequantize_rejects_bad_output,
            oversized_buffers_are_out_of_memory,
            matmul_every_format_f32,
            matmul_f16_activations,
            matmul_rejects_bad_shapes,
            rms_norm_matches_reference,
            softmax_matches_reference,
            activations_match_reference,
            layer_norm_matches_reference,
            binary_ops_match_reference,
            embedding_matches_reference,
            rope_matches_reference,
            attention_matches_reference,
            cached_attention_matches_reference,
        );
    };
    (@tests $runtime:ty, $context:expr, $($check:ident),* $(,)?) => {
        $(
            #[test]
            fn $check() {
                let context: Option<$crate::Context<$runtime>> = $context;
                if let Some(ctx) = context {
                    $crate::conformance::$check::<$runtime>(&ctx);
                }
            }
        )*
    };
}
