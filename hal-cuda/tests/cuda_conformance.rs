//! The kernels' conformance suite on CubeCL's CUDA runtime. It runs where an NVIDIA driver
//! and GPU exist; elsewhere every check is reported as ignored with the reason
//! (`AIHAL_REQUIRE_CUDA=1` makes a missing GPU a failure instead).

#[path = "../../kernels/tests/support/mod.rs"]
mod support;

use aihal_cuda::{cuda_context, CudaRuntime};
use aihal_kernels::conformance::checks;

fn main() {
    let tests = checks::<CudaRuntime>()
        .into_iter()
        .map(|(name, check)| support::test(name, check))
        .collect();
    support::run(
        || cuda_context(0).map_err(|e| e.to_string()),
        "AIHAL_REQUIRE_CUDA",
        tests,
        Vec::new(),
    )
}
