//! The CUDA execution provider: `aihal_kernels::CubeProvider` on `CudaRuntime`, built only
//! after probing, since CubeCL's CUDA client panics when the driver is missing.

use aihal_core::{Device, Result};
use aihal_kernels::CubeProvider;

use crate::{cuda_context, cuda_devices, CudaRuntime};

/// The kernels as an execution provider on a CUDA device.
pub type CudaProvider = CubeProvider<CudaRuntime>;

/// The execution provider on CUDA device `ordinal`.
///
/// Errors: `DeviceNotAvailable` (never a panic) when the driver library is missing, reports
/// no device, the ordinal is out of range, or CubeCL fails to open the device.
pub fn cuda_provider(ordinal: usize) -> Result<CudaProvider> {
    let info = crate::cuda_device_info(ordinal)?;
    let device = Device::Cuda { ordinal };
    Ok(CubeProvider::new(
        cuda_context(ordinal)?,
        device,
        format!("{device} {}", info.name),
        false,
    ))
}

/// One execution provider per CUDA device, in ordinal order; empty without a driver or a
/// device. A device that fails to open is left out with a warning. Never panics.
pub fn cuda_providers() -> Vec<CudaProvider> {
    let Ok(devices) = cuda_devices() else {
        return Vec::new();
    };
    devices
        .iter()
        .filter_map(|d| match cuda_provider(d.ordinal) {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::warn!("aihal: CUDA device {} ({}) left out: {e}", d.ordinal, d.name);
                None
            }
        })
        .collect()
}
