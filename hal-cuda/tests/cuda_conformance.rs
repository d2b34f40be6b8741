//! The kernels' conformance suite on CubeCL's CUDA runtime. It runs where an NVIDIA driver
//! and GPU exist; elsewhere every test skips with a message (set `AIHAL_REQUIRE_CUDA=1` to
//! make a missing GPU an error instead).

use aihal_cuda::{cuda_context, CudaRuntime};
use aihal_kernels::Context;

fn cuda_test_context() -> Option<Context<CudaRuntime>> {
    match cuda_context(0) {
        Ok(ctx) => Some(ctx),
        Err(e) => {
            assert!(
                std::env::var("AIHAL_REQUIRE_CUDA").map_or(true, |v| v != "1"),
                "AIHAL_REQUIRE_CUDA=1 but {e}"
            );
            eprintln!("\n*** SKIPPED: aihal-cuda conformance test on CUDA: {e} ***\n");
            None
        }
    }
}

aihal_kernels::testgen_conformance!(CudaRuntime, cuda_test_context());
