//! The CUDA backend: finding NVIDIA GPUs with cudarc (the driver is loaded at run time, so
//! this crate builds and runs on machines without CUDA), running the `aihal-kernels`
//! CubeCL kernels on them, and moving candle tensors to and from CubeCL buffers.
//!
//! [`cuda_provider`] / [`cuda_providers`] give the op set's execution provider on a CUDA
//! device: `aihal_kernels::CubeProvider` on [`CudaRuntime`], built only after probing.
//!
//! The same kernels run on Vulkan through `aihal-kernels`' own wgpu providers, which need
//! nothing from this crate.
//!
//! Nothing here panics when the driver is missing: [`CudaProbe`] answers "unavailable" and
//! [`cuda_context`] answers `DeviceNotAvailable` with the reason.
#![deny(
    unsafe_op_in_unsafe_fn,
    clippy::undocumented_unsafe_blocks,
    clippy::missing_safety_doc
)]

mod interop;
mod probe;
mod provider;

use aihal_core::Result;
use aihal_kernels::Context;
pub use cubecl::cuda::{CudaDevice, CudaRuntime};

pub use interop::{allocate_output_buffer, candle_to_cubecl_handle, cubecl_to_candle_tensor, CubeTensor};
pub use probe::{cuda_device_info, cuda_devices, driver_present, CudaDeviceInfo, CudaProbe};
pub use provider::{cuda_provider, cuda_providers, CudaProvider};

/// Opens a kernel context on CUDA device `ordinal`, after checking that the driver and the
/// device exist (`DeviceNotAvailable` otherwise; CubeCL's own client would panic).
pub fn cuda_context(ordinal: usize) -> Result<Context<CudaRuntime>> {
    cuda_device_info(ordinal)?;
    Context::new(&CudaDevice { index: ordinal })
}
