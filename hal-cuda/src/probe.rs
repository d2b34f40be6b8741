//! Finding CUDA devices with cudarc's driver API, loaded at run time, without panicking.
//!
//! cudarc resolves `libcuda` lazily and panics when it is missing, and so does CubeCL's CUDA
//! client; every entry point here first asks whether the library can be loaded at all.

use std::os::raw::c_int;
use std::sync::OnceLock;

use aihal_core::{BackendKind, BackendProbe, BackendStatus, CoreError, Device, DeviceInfo, Result, Unavailable};
use cudarc::driver::{result, sys};

/// What the driver reports about one CUDA device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CudaDeviceInfo {
    /// The CUDA ordinal.
    pub ordinal: usize,
    /// The device name (`NVIDIA GeForce RTX 4090`).
    pub name: String,
    /// Compute capability `(major, minor)`.
    pub compute_capability: (u32, u32),
    /// Total memory in bytes.
    pub total_memory: u64,
    /// Free memory in bytes at probe time, when a context could be opened to ask.
    pub free_memory: Option<u64>,
}

const MISSING: &str = "libcuda (the NVIDIA driver library) could not be loaded; install the NVIDIA driver, \
     or put the directory holding libcuda.so on LD_LIBRARY_PATH";

/// Whether the CUDA driver library can be loaded in this process (answered once).
pub fn driver_present() -> bool {
    static PRESENT: OnceLock<bool> = OnceLock::new();
    // SAFETY: `is_culib_present` only tries to open the library by its candidate names and
    // drops the handles; it calls no CUDA function.
    *PRESENT.get_or_init(|| unsafe { sys::is_culib_present() })
}

fn driver_error(device: &str, what: &str, e: result::DriverError) -> CoreError {
    CoreError::device_not_available(device, format!("{what} failed: {e:?}"))
}

/// Lists the CUDA devices, or says why there are none: `DeviceNotAvailable` when the driver
/// is missing, fails to initialize, or reports no device.
pub fn cuda_devices() -> Result<Vec<CudaDeviceInfo>> {
    if !driver_present() {
        return Err(CoreError::device_not_available("cuda", MISSING));
    }
    result::init().map_err(|e| driver_error("cuda", "cuInit", e))?;
    let count = result::device::get_count().map_err(|e| driver_error("cuda", "cuDeviceGetCount", e))?;
    if count <= 0 {
        return Err(CoreError::device_not_available(
            "cuda",
            "the driver is loaded but reports no CUDA device",
        ));
    }
    (0..count).map(device_info).collect()
}

/// The device at `ordinal`, or `DeviceNotAvailable` with the reason (driver missing, no
/// device, ordinal out of range).
pub fn cuda_device_info(ordinal: usize) -> Result<CudaDeviceInfo> {
    let mut devices = cuda_devices()?;
    let count = devices.len();
    if ordinal >= count {
        return Err(CoreError::device_not_available(
            Device::Cuda { ordinal },
            format!(
                "ordinal {ordinal} is out of range: {count} CUDA device{} found",
                if count == 1 { "" } else { "s" }
            ),
        ));
    }
    Ok(devices.swap_remove(ordinal))
}

fn device_info(ordinal: c_int) -> Result<CudaDeviceInfo> {
    let label = format!("cuda:{ordinal}");
    let dev = result::device::get(ordinal).map_err(|e| driver_error(&label, "cuDeviceGet", e))?;
    let name = result::device::get_name(dev).map_err(|e| driver_error(&label, "cuDeviceGetName", e))?;
    // SAFETY: `dev` was just returned by `cuDeviceGet` for a valid ordinal.
    let total = unsafe { result::device::total_mem(dev) }.map_err(|e| driver_error(&label, "cuDeviceTotalMem", e))?;
    let attribute = |a| {
        // SAFETY: as above, `dev` is a device handle from `cuDeviceGet`.
        unsafe { result::device::get_attribute(dev, a) }.map_err(|e| driver_error(&label, "cuDeviceGetAttribute", e))
    };
    let major = attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?;
    let minor = attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?;
    Ok(CudaDeviceInfo {
        ordinal: ordinal as usize,
        name,
        compute_capability: (major.max(0) as u32, minor.max(0) as u32),
        total_memory: total as u64,
        free_memory: free_memory(dev),
    })
}

/// Free memory, read through the device's primary context (retained and released here).
fn free_memory(dev: sys::CUdevice) -> Option<u64> {
    // SAFETY: `dev` comes from `cuDeviceGet`. The primary context is retained, made current
    // only for the query, and released; the previous current context is restored.
    unsafe {
        let previous = result::ctx::get_current().ok().flatten();
        let ctx = result::primary_ctx::retain(dev).ok()?;
        let free = result::ctx::set_current(ctx)
            .ok()
            .and_then(|()| result::mem_get_info().ok())
            .map(|(free, _)| free as u64);
        if let Some(p) = previous {
            let _ = result::ctx::set_current(p);
        }
        let _ = result::primary_ctx::release(dev);
        free
    }
}

/// The CUDA probe for device selection (`aihal_core::register_backend`).
#[derive(Clone, Copy, Debug, Default)]
pub struct CudaProbe;

impl BackendProbe for CudaProbe {
    fn backend(&self) -> BackendKind {
        BackendKind::Cuda
    }

    fn probe(&self) -> BackendStatus {
        if !driver_present() {
            return BackendStatus::Unavailable(Unavailable::LibraryMissing { detail: MISSING.into() });
        }
        match cuda_devices() {
            Ok(devices) => BackendStatus::Available(
                devices
                    .into_iter()
                    .map(|d| DeviceInfo {
                        memory_bytes: Some(d.total_memory),
                        detail: Some(format!(
                            "compute capability {}.{}{}",
                            d.compute_capability.0,
                            d.compute_capability.1,
                            d.free_memory
                                .map(|f| format!(", {:.1} GiB free", f as f64 / f64::from(1u32 << 30)))
                                .unwrap_or_default()
                        )),
                        ..DeviceInfo::new(Device::Cuda { ordinal: d.ordinal }, d.name)
                    })
                    .collect(),
            ),
            Err(CoreError::DeviceNotAvailable { reason, .. }) => {
                BackendStatus::Unavailable(Unavailable::NoDevice { detail: reason })
            }
            Err(e) => BackendStatus::Unavailable(Unavailable::ProbeFailed {
                source: std::sync::Arc::new(e),
            }),
        }
    }
}
