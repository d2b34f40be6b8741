//! candle ↔ CubeCL: moving tensors between candle (host memory) and CubeCL device buffers,
//! with the dtype, shape and size checked on both sides.
//!
//! candle here has no GPU storage of its own (it is built without its `cuda` feature), so a
//! candle tensor is read from host memory and uploaded, and a device buffer is downloaded
//! into a CPU tensor. Non-contiguous tensors (a transpose, a narrow) are made contiguous on
//! the way.

use aihal_core::{CoreError, DType, Result, TensorBuffer};
use aihal_kernels::cubecl::prelude::{CubeElement, Runtime};
use aihal_kernels::{Context, DeviceBuffer};
use candle_core::Tensor;
use half::{bf16, f16};

/// A device buffer with a shape and a dtype (f32, f16 or bf16): the CubeCL side of a candle
/// tensor.
pub struct CubeTensor<R: Runtime> {
    storage: Storage<R>,
    shape: Vec<usize>,
}

enum Storage<R: Runtime> {
    F32(DeviceBuffer<R, f32>),
    F16(DeviceBuffer<R, f16>),
    Bf16(DeviceBuffer<R, bf16>),
}

impl<R: Runtime> std::fmt::Debug for CubeTensor<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CubeTensor")
            .field("shape", &self.shape)
            .field("dtype", &self.dtype())
            .finish_non_exhaustive()
    }
}

fn numel(shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| CoreError::invalid_input(format!("shape {shape:?} overflows")))
}

fn unsupported(dtype: impl std::fmt::Display) -> CoreError {
    CoreError::unsupported("candle ↔ CubeCL interop (f32, f16 and bf16 only)", dtype)
}

impl<R: Runtime> CubeTensor<R> {
    /// The logical shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        match self.storage {
            Storage::F32(_) => DType::F32,
            Storage::F16(_) => DType::F16,
            Storage::Bf16(_) => DType::BF16,
        }
    }

    /// The number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Wraps an f32 device buffer with a shape whose element count must equal its length.
    pub fn from_f32(buffer: DeviceBuffer<R, f32>, shape: &[usize]) -> Result<Self> {
        Self::checked(Storage::F32(buffer), shape)
    }

    /// Wraps an f16 device buffer (see [`CubeTensor::from_f32`]).
    pub fn from_f16(buffer: DeviceBuffer<R, f16>, shape: &[usize]) -> Result<Self> {
        Self::checked(Storage::F16(buffer), shape)
    }

    /// Wraps a bf16 device buffer (see [`CubeTensor::from_f32`]).
    pub fn from_bf16(buffer: DeviceBuffer<R, bf16>, shape: &[usize]) -> Result<Self> {
        Self::checked(Storage::Bf16(buffer), shape)
    }

    fn checked(storage: Storage<R>, shape: &[usize]) -> Result<Self> {
        let len = match &storage {
            Storage::F32(b) => b.len(),
            Storage::F16(b) => b.len(),
            Storage::Bf16(b) => b.len(),
        };
        let want = numel(shape)?;
        if want != len {
            return Err(CoreError::shape_mismatch(
                format!("CubeTensor of shape {shape:?} (elements)"),
                [want],
                [len],
            ));
        }
        Ok(Self {
            storage,
            shape: shape.to_vec(),
        })
    }

    /// The f32 buffer, or `Unsupported` when the tensor holds another dtype.
    pub fn as_f32(&self) -> Result<&DeviceBuffer<R, f32>> {
        match &self.storage {
            Storage::F32(b) => Ok(b),
            _ => Err(CoreError::unsupported("CubeTensor::as_f32", self.dtype())),
        }
    }

    /// The f16 buffer, or `Unsupported` when the tensor holds another dtype.
    pub fn as_f16(&self) -> Result<&DeviceBuffer<R, f16>> {
        match &self.storage {
            Storage::F16(b) => Ok(b),
            _ => Err(CoreError::unsupported("CubeTensor::as_f16", self.dtype())),
        }
    }

    /// The bf16 buffer, or `Unsupported` when the tensor holds another dtype.
    pub fn as_bf16(&self) -> Result<&DeviceBuffer<R, bf16>> {
        match &self.storage {
            Storage::Bf16(b) => Ok(b),
            _ => Err(CoreError::unsupported("CubeTensor::as_bf16", self.dtype())),
        }
    }
}

fn upload_as<R: Runtime, E: CubeElement + aihal_core::Element>(
    ctx: &Context<R>,
    buffer: &TensorBuffer,
) -> Result<DeviceBuffer<R, E>> {
    ctx.upload(buffer.as_slice::<E>()?)
}

/// Uploads a candle tensor (f32, f16 or bf16, any layout) to `ctx`'s device.
///
/// A non-contiguous tensor is made contiguous first; a tensor on a candle device other than
/// the CPU is copied to the host first.
pub fn candle_to_cubecl_handle<R: Runtime>(ctx: &Context<R>, tensor: &Tensor) -> Result<CubeTensor<R>> {
    let dtype = DType::from_candle(tensor.dtype()).map_err(|_| unsupported(format!("{:?}", tensor.dtype())))?;
    if !matches!(dtype, DType::F32 | DType::F16 | DType::BF16) {
        return Err(unsupported(dtype));
    }
    let host = if tensor.device().is_cpu() {
        tensor.clone()
    } else {
        tensor.to_device(&candle_core::Device::Cpu)?
    };
    let buffer = TensorBuffer::from_tensor(&host)?;
    let shape = buffer.shape().to_vec();
    let storage = match dtype {
        DType::F32 => Storage::F32(upload_as(ctx, &buffer)?),
        DType::F16 => Storage::F16(upload_as(ctx, &buffer)?),
        _ => Storage::Bf16(upload_as(ctx, &buffer)?),
    };
    CubeTensor::checked(storage, &shape)
}

/// Downloads a device tensor into a candle tensor on `device` (the CPU, or a candle CUDA
/// device when candle has one), with the same shape and dtype.
pub fn cubecl_to_candle_tensor<R: Runtime>(
    ctx: &Context<R>,
    tensor: &CubeTensor<R>,
    device: &candle_core::Device,
) -> Result<Tensor> {
    let shape = tensor.shape();
    let host = match &tensor.storage {
        Storage::F32(b) => TensorBuffer::from_slice(&ctx.download(b)?, shape)?,
        Storage::F16(b) => TensorBuffer::from_slice(&ctx.download(b)?, shape)?,
        Storage::Bf16(b) => TensorBuffer::from_slice(&ctx.download(b)?, shape)?,
    };
    host.to_tensor(device)
}

/// A device tensor of `shape` and `dtype` (f32, f16 or bf16) to write results into, allocated
/// once and reused across calls in a hot loop (its contents start undefined).
pub fn allocate_output_buffer<R: Runtime>(ctx: &Context<R>, shape: &[usize], dtype: DType) -> Result<CubeTensor<R>> {
    let n = numel(shape)?;
    let storage = match dtype {
        DType::F32 => Storage::F32(ctx.alloc(n)?),
        DType::F16 => Storage::F16(ctx.alloc(n)?),
        DType::BF16 => Storage::Bf16(ctx.alloc(n)?),
        other => return Err(unsupported(other)),
    };
    CubeTensor::checked(storage, shape)
}
