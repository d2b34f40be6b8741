//! The GPU route of the kernel ops for `aihal_core::GpuDispatchable`: CUDA devices run on
//! CubeCL's CUDA runtime, `Device::Wgpu { adapter }` on its wgpu (Vulkan) runtime.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use aihal_core::{CoreError, Device, GpuDispatchable, Result};
use aihal_kernels::cubecl::prelude::Runtime;
use aihal_kernels::cubecl::wgpu::WgpuRuntime;
use aihal_kernels::{wgpu_adapters, wgpu_context, Context, DeviceQuantized};
use aihal_quantize::QuantizedTensor;
use candle_core::Tensor;

use crate::interop::{candle_to_cubecl_handle, cubecl_to_candle_tensor, CubeTensor};
use crate::{cuda_context, driver_present, CudaRuntime};

/// Contexts opened so far, one per device, shared by every op in the process.
fn contexts<R: Runtime>(
    cache: &'static OnceLock<Mutex<HashMap<usize, Context<R>>>>,
    index: usize,
    open: impl FnOnce(usize) -> Result<Context<R>>,
) -> Result<Context<R>> {
    let map = cache.get_or_init(|| Mutex::new(HashMap::new()));
    let mut map = map.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(ctx) = map.get(&index) {
        return Ok(ctx.clone());
    }
    let ctx = open(index)?;
    map.insert(index, ctx.clone());
    Ok(ctx)
}

/// The kernel context for a CUDA ordinal (opened once per process).
pub fn cuda_device_context(ordinal: usize) -> Result<Context<CudaRuntime>> {
    static CACHE: OnceLock<Mutex<HashMap<usize, Context<CudaRuntime>>>> = OnceLock::new();
    contexts(&CACHE, ordinal, cuda_context)
}

/// The kernel context for a wgpu adapter index (opened once per process).
pub fn wgpu_device_context(adapter: usize) -> Result<Context<WgpuRuntime>> {
    static CACHE: OnceLock<Mutex<HashMap<usize, Context<WgpuRuntime>>>> = OnceLock::new();
    contexts(&CACHE, adapter, wgpu_context)
}

/// Whether any GPU route can run in this process: the CUDA driver loads, or a Vulkan
/// adapter exists (answered once).
pub fn gpu_present() -> bool {
    static PRESENT: OnceLock<bool> = OnceLock::new();
    *PRESENT.get_or_init(|| driver_present() || !wgpu_adapters().is_empty())
}

/// A quantized linear map `y = x · Wᵀ` routed by device: CUDA or Vulkan through the
/// `aihal-kernels` fused matmul, else the CPU (`aihal_cpu::matmul_tensor`).
///
/// The weight is uploaded to a device the first time it runs there and kept for later
/// calls. Input: a candle tensor `[..., K]` (f32, f16 or bf16, on the CPU); output:
/// `[..., N]` f32.
pub struct QuantMatmul {
    weight: Arc<QuantizedTensor>,
    on_cuda: Mutex<HashMap<usize, Arc<DeviceQuantized<CudaRuntime>>>>,
    on_wgpu: Mutex<HashMap<usize, Arc<DeviceQuantized<WgpuRuntime>>>>,
    name: String,
}

impl std::fmt::Debug for QuantMatmul {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuantMatmul")
            .field("format", &self.weight.format())
            .field("shape", &self.weight.shape())
            .finish_non_exhaustive()
    }
}

impl QuantMatmul {
    /// A matmul over `weight` (`[N, K]`; `InvalidInput` for another rank).
    pub fn new(weight: impl Into<Arc<QuantizedTensor>>) -> Result<Self> {
        let weight = weight.into();
        if weight.shape().len() != 2 {
            return Err(CoreError::invalid_input(format!(
                "QuantMatmul weight must be [N, K], got shape {:?}",
                weight.shape()
            )));
        }
        let name = format!("{} matmul", weight.format());
        Ok(Self {
            weight,
            on_cuda: Mutex::new(HashMap::new()),
            on_wgpu: Mutex::new(HashMap::new()),
            name,
        })
    }

    /// The weight.
    pub fn weight(&self) -> &QuantizedTensor {
        &self.weight
    }

    fn run<R: Runtime>(
        &self,
        ctx: &Context<R>,
        cache: &Mutex<HashMap<usize, Arc<DeviceQuantized<R>>>>,
        index: usize,
        x: &Tensor,
    ) -> Result<Tensor> {
        let w = {
            let mut cache = cache.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(w) = cache.get(&index) {
                Arc::clone(w)
            } else {
                let w = Arc::new(DeviceQuantized::upload(ctx, &self.weight)?);
                cache.insert(index, Arc::clone(&w));
                w
            }
        };
        let (n, k) = (self.weight.shape()[0], self.weight.shape()[1]);
        let dims = x.dims();
        if dims.last() != Some(&k) {
            return Err(CoreError::shape_mismatch(
                "QuantMatmul input [..., K]",
                [k],
                dims.to_vec(),
            ));
        }
        let m = x.elem_count() / k.max(1);
        let x = candle_to_cubecl_handle(ctx, &x.to_dtype(candle_core::DType::F32)?)?;
        let y = aihal_kernels::quant_matmul::<R, f32>(ctx, x.as_f32()?, m, &w)?;
        let mut out_shape = dims.to_vec();
        if let Some(last) = out_shape.last_mut() {
            *last = n;
        }
        cubecl_to_candle_tensor(ctx, &CubeTensor::from_f32(y, &out_shape)?, &candle_core::Device::Cpu)
    }
}

impl GpuDispatchable for QuantMatmul {
    type Input = Tensor;
    type Output = Tensor;

    fn name(&self) -> &str {
        &self.name
    }

    fn dispatch_gpu(&self, x: &Tensor, device: &Device) -> Result<Tensor> {
        match *device {
            Device::Cuda { ordinal } => self.run(&cuda_device_context(ordinal)?, &self.on_cuda, ordinal, x),
            Device::Wgpu { adapter } => self.run(&wgpu_device_context(adapter)?, &self.on_wgpu, adapter, x),
            other => Err(CoreError::device_mismatch("a GPU (cuda or wgpu)", other)),
        }
    }

    fn dispatch_cpu(&self, x: &Tensor) -> Result<Tensor> {
        aihal_cpu::matmul_tensor(x, &self.weight, aihal_cpu::MatmulOptions::exact())
    }

    fn gpu_available(&self) -> bool {
        gpu_present()
    }
}
