//! Vulkan devices through wgpu: the adapter probe and the mapping from aihal's
//! `Device::Wgpu { adapter }` to CubeCL's `WgpuDevice`.

use aihal_core::{BackendKind, BackendProbe, BackendStatus, CoreError, Device, DeviceInfo, Result, Unavailable};
use cubecl::wgpu::{AutoGraphicsApi, GraphicsApi, WgpuDevice, WgpuRuntime};

use crate::launch::Context;
use crate::provider::CubeProvider;

/// One adapter as wgpu enumerates it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WgpuAdapter {
    /// Its index in the enumeration: the `adapter` of `Device::Wgpu { adapter }`.
    pub index: usize,
    /// The driver's name for it (`llvmpipe (LLVM 15.0.6, 256 bits)`, `AMD Radeon …`).
    pub name: String,
    /// Whether it is a software implementation on the CPU (lavapipe / llvmpipe).
    pub software: bool,
    /// The CubeCL device that opens this adapter.
    pub device: WgpuDevice,
}

/// Lists the adapters of the graphics API CubeCL uses here (Vulkan on Linux), in wgpu's
/// order. An empty list means no driver or no device; this never panics.
pub fn wgpu_adapters() -> Vec<WgpuAdapter> {
    let backend = AutoGraphicsApi::backend();
    let listed = std::panic::catch_unwind(|| {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
            backends: backend.into(),
            ..wgpu::InstanceDescriptor::new_without_display_handle()
        });
        cubecl::future::block_on(instance.enumerate_adapters(backend.into()))
            .into_iter()
            .map(|a| a.get_info())
            .collect::<Vec<_>>()
    });
    let Ok(infos) = listed else {
        return Vec::new();
    };
    let mut per_type = [0usize; 5];
    infos
        .into_iter()
        .enumerate()
        .filter_map(|(index, info)| {
            let slot = match info.device_type {
                wgpu::DeviceType::DiscreteGpu => 0,
                wgpu::DeviceType::IntegratedGpu => 1,
                wgpu::DeviceType::VirtualGpu => 2,
                wgpu::DeviceType::Cpu => 3,
                wgpu::DeviceType::Other => 4,
            };
            let rank = per_type[slot];
            per_type[slot] += 1;
            // CubeCL opens a CPU adapter only as the first of its type, and cannot name an
            // adapter of type "other" by index.
            let device = match slot {
                0 => WgpuDevice::DiscreteGpu(rank),
                1 => WgpuDevice::IntegratedGpu(rank),
                2 => WgpuDevice::VirtualGpu(rank),
                3 if rank == 0 => WgpuDevice::Cpu,
                _ => return None,
            };
            Some(WgpuAdapter {
                index,
                name: info.name,
                software: slot == 3,
                device,
            })
        })
        .collect()
}

/// The CubeCL device for `Device::Wgpu { adapter }`, or `DeviceNotAvailable` naming the
/// adapters that exist.
pub fn wgpu_device(adapter: usize) -> Result<WgpuAdapter> {
    let adapters = wgpu_adapters();
    let count = adapters.len();
    adapters.into_iter().find(|a| a.index == adapter).ok_or_else(|| {
        CoreError::device_not_available(
            Device::Wgpu { adapter },
            if count == 0 {
                "no Vulkan adapter found (install a Vulkan driver, e.g. mesa-vulkan-drivers)".to_owned()
            } else {
                format!("no usable adapter with index {adapter} ({count} found; see WgpuProbe)")
            },
        )
    })
}

/// Opens a kernel context on `Device::Wgpu { adapter }`.
pub fn wgpu_context(adapter: usize) -> Result<Context<WgpuRuntime>> {
    let found = wgpu_device(adapter)?;
    Context::new(&found.device)
}

/// The execution provider on `Device::Wgpu { adapter }` (software, hence never placed on
/// unless named, when the adapter is a CPU implementation such as lavapipe).
///
/// Errors: `DeviceNotAvailable` when the adapter does not exist or fails to open.
pub fn wgpu_provider(adapter: usize) -> Result<CubeProvider<WgpuRuntime>> {
    provider_of(&wgpu_device(adapter)?)
}

fn provider_of(a: &WgpuAdapter) -> Result<CubeProvider<WgpuRuntime>> {
    let device = Device::Wgpu { adapter: a.index };
    Ok(CubeProvider::new(
        Context::new(&a.device)?,
        device,
        format!("{device} {}", a.name),
        a.software,
    ))
}

/// One execution provider per Vulkan adapter that opens, in wgpu's order, software adapters
/// (lavapipe) included and marked as such. An adapter that fails to open is left out with a
/// warning; no adapter is an empty list. Never panics.
pub fn wgpu_providers() -> Vec<CubeProvider<WgpuRuntime>> {
    wgpu_adapters()
        .iter()
        .filter_map(|a| match provider_of(a) {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::warn!("aihal: Vulkan adapter {} ({}) left out: {e}", a.index, a.name);
                None
            }
        })
        .collect()
}

/// The Vulkan probe for device selection: lists wgpu adapters, marking CPU-type ones
/// (lavapipe) as software so automatic selection never picks them.
#[derive(Clone, Copy, Debug, Default)]
pub struct WgpuProbe;

impl BackendProbe for WgpuProbe {
    fn backend(&self) -> BackendKind {
        BackendKind::Wgpu
    }

    fn probe(&self) -> BackendStatus {
        let adapters = wgpu_adapters();
        if adapters.is_empty() {
            return BackendStatus::Unavailable(Unavailable::LibraryMissing {
                detail: "no Vulkan adapter found; install a Vulkan driver (Debian: mesa-vulkan-drivers for lavapipe, or the GPU vendor's driver)".into(),
            });
        }
        BackendStatus::Available(
            adapters
                .into_iter()
                .map(|a| DeviceInfo {
                    software: a.software,
                    detail: Some(format!("cubecl {:?}", a.device)),
                    ..DeviceInfo::new(Device::Wgpu { adapter: a.index }, a.name)
                })
                .collect(),
        )
    }
}
