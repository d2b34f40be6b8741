//! [`Tensor`]: an activation, where it lives, and its shape.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use aihal_core::{CoreError, Device, Result};

/// The most dimensions a [`Tensor`] has.
pub const MAX_RANK: usize = 6;

/// Dimensions of a tensor, stored inline (no allocation).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shape {
    dims: [usize; MAX_RANK],
    rank: u8,
}

impl Shape {
    /// A shape of at most [`MAX_RANK`] dimensions whose element count fits in `usize`.
    ///
    /// Errors: `InvalidInput` for a larger rank or an overflowing element count.
    pub fn new(dims: &[usize]) -> Result<Self> {
        if dims.len() > MAX_RANK {
            return Err(CoreError::invalid_input(format!(
                "a tensor has at most {MAX_RANK} dimensions, got {dims:?}"
            )));
        }
        if dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).is_none() {
            return Err(CoreError::invalid_input(format!(
                "tensor shape {dims:?} has more elements than fit in usize"
            )));
        }
        let mut s = Self {
            dims: [0; MAX_RANK],
            rank: dims.len() as u8,
        };
        s.dims[..dims.len()].copy_from_slice(dims);
        Ok(s)
    }

    /// The dimensions.
    pub fn dims(&self) -> &[usize] {
        &self.dims[..usize::from(self.rank)]
    }

    /// The number of elements.
    pub fn numel(&self) -> usize {
        self.dims().iter().product()
    }

    /// The last dimension (1 for a scalar).
    pub fn last(&self) -> usize {
        self.dims().last().copied().unwrap_or(1)
    }

    /// The same dimensions with the last one replaced.
    #[must_use]
    pub fn with_last(mut self, last: usize) -> Self {
        if self.rank == 0 {
            self.rank = 1;
        }
        self.dims[usize::from(self.rank) - 1] = last;
        self
    }
}

impl fmt::Debug for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.dims())
    }
}

/// Data a provider keeps on its device (a CubeCL buffer, an NPU tensor). Implemented by the
/// providers; users see it only through [`Tensor`].
pub trait DeviceData: Send + Sync + fmt::Debug {
    /// The device the data lives on.
    fn device(&self) -> Device;
    /// Copies the data to host memory (a download, counted by the provider).
    fn read(&self) -> Result<Vec<f32>>;
    /// For the owning provider to reach its own type.
    fn as_any(&self) -> &dyn Any;
}

#[derive(Clone, Debug)]
enum Storage {
    Host(Vec<f32>),
    Device(Arc<dyn DeviceData>),
}

/// An f32 activation: its shape and where its values live, host memory or one provider's
/// device.
///
/// An op returns its output where it ran, and the next op takes it as it is: values move only
/// when the next op runs on another provider or when the caller reads them
/// ([`to_vec`](Self::to_vec), [`to_candle`](Self::to_candle)). Cloning a host tensor copies
/// its values; cloning a device tensor shares the device buffer (buffers are never written
/// after an op returns them).
#[derive(Clone, Debug)]
pub struct Tensor {
    shape: Shape,
    storage: Storage,
}

impl Tensor {
    /// A host tensor over `data` with `shape`.
    ///
    /// Errors: `ShapeMismatch` when `data.len()` is not the shape's element count.
    pub fn from_vec(data: Vec<f32>, shape: &[usize]) -> Result<Self> {
        Self::with_shape(data, Shape::new(shape)?)
    }

    /// A host tensor over `data` with a [`Shape`] already built (what providers return).
    ///
    /// Errors: `ShapeMismatch` when `data.len()` is not the shape's element count.
    pub fn with_shape(data: Vec<f32>, shape: Shape) -> Result<Self> {
        if data.len() != shape.numel() {
            return Err(CoreError::shape_mismatch(
                "tensor data for its shape",
                [shape.numel()],
                [data.len()],
            ));
        }
        Ok(Self {
            shape,
            storage: Storage::Host(data),
        })
    }

    /// A tensor on a provider's device (for providers).
    ///
    /// Errors: `InvalidInput` for a bad shape.
    pub fn on_device(data: Arc<dyn DeviceData>, shape: &[usize]) -> Result<Self> {
        Ok(Self {
            shape: Shape::new(shape)?,
            storage: Storage::Device(data),
        })
    }

    /// A candle tensor's values as an f32 host tensor (any float dtype, any candle device).
    pub fn from_candle(t: &candle_core::Tensor) -> Result<Self> {
        let data = t.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        Self::from_vec(data, t.dims())
    }

    /// The shape.
    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// The dimensions.
    pub fn dims(&self) -> &[usize] {
        self.shape.dims()
    }

    /// The number of values.
    pub fn numel(&self) -> usize {
        self.shape.numel()
    }

    /// Where the values live: [`Device::Cpu`] for host memory.
    pub fn device(&self) -> Device {
        match &self.storage {
            Storage::Host(_) => Device::Cpu,
            Storage::Device(d) => d.device(),
        }
    }

    /// The values when they are in host memory.
    pub fn host_slice(&self) -> Option<&[f32]> {
        match &self.storage {
            Storage::Host(v) => Some(v),
            Storage::Device(_) => None,
        }
    }

    /// The device data when the values live on a device (for providers).
    pub fn device_data(&self) -> Option<&Arc<dyn DeviceData>> {
        match &self.storage {
            Storage::Host(_) => None,
            Storage::Device(d) => Some(d),
        }
    }

    /// The values in host memory (a download when they live on a device).
    pub fn to_vec(&self) -> Result<Vec<f32>> {
        match &self.storage {
            Storage::Host(v) => Ok(v.clone()),
            Storage::Device(d) => d.read(),
        }
    }

    /// The values as an f32 candle tensor on the CPU.
    pub fn to_candle(&self) -> Result<candle_core::Tensor> {
        Ok(candle_core::Tensor::from_vec(
            self.to_vec()?,
            self.dims(),
            &candle_core::Device::Cpu,
        )?)
    }

    /// The same values with another shape of the same element count (no copy).
    ///
    /// Errors: `ShapeMismatch` when the counts differ.
    pub fn reshape(mut self, shape: &[usize]) -> Result<Self> {
        let new = Shape::new(shape)?;
        if new.numel() != self.shape.numel() {
            return Err(CoreError::shape_mismatch(
                "reshape (element count)",
                [self.shape.numel()],
                [new.numel()],
            ));
        }
        self.shape = new;
        Ok(self)
    }

    /// Takes the host values out (for the CPU provider, which then needs no copy).
    pub fn into_host(self) -> Option<Vec<f32>> {
        match self.storage {
            Storage::Host(v) => Some(v),
            Storage::Device(_) => None,
        }
    }
}
