//! `TensorBuffer`: bytes with a shape and a dtype, the currency between candle tensors,
//! quantized formats and device kernels.

use std::fmt;

use candle_core::{CpuStorage, Storage, Tensor};

use crate::error::{CoreError, Result};

/// An element type a [`TensorBuffer`] can hold.
///
/// It includes `I8` (int8 weights and activations), which candle has no dtype for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DType {
    /// 32-bit IEEE float.
    F32,
    /// 16-bit IEEE float.
    F16,
    /// bfloat16.
    BF16,
    /// 64-bit IEEE float.
    F64,
    /// Unsigned bytes (packed quantized data).
    U8,
    /// Signed bytes (int8 quantized data).
    I8,
    /// 16-bit signed integers.
    I16,
    /// 32-bit unsigned integers.
    U32,
    /// 32-bit signed integers (int8 matmul accumulators).
    I32,
    /// 64-bit signed integers.
    I64,
}

impl DType {
    /// Bytes per element.
    pub const fn size_in_bytes(self) -> usize {
        match self {
            Self::U8 | Self::I8 => 1,
            Self::F16 | Self::BF16 | Self::I16 => 2,
            Self::F32 | Self::U32 | Self::I32 => 4,
            Self::F64 | Self::I64 => 8,
        }
    }

    /// The lower-case name (`f32`, `bf16`, `i8`).
    pub const fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::BF16 => "bf16",
            Self::F64 => "f64",
            Self::U8 => "u8",
            Self::I8 => "i8",
            Self::I16 => "i16",
            Self::U32 => "u32",
            Self::I32 => "i32",
            Self::I64 => "i64",
        }
    }

    /// The candle dtype, where candle has one (not for `I8`).
    pub fn to_candle(self) -> Result<candle_core::DType> {
        Ok(match self {
            Self::F32 => candle_core::DType::F32,
            Self::F16 => candle_core::DType::F16,
            Self::BF16 => candle_core::DType::BF16,
            Self::F64 => candle_core::DType::F64,
            Self::U8 => candle_core::DType::U8,
            Self::I16 => candle_core::DType::I16,
            Self::U32 => candle_core::DType::U32,
            Self::I32 => candle_core::DType::I32,
            Self::I64 => candle_core::DType::I64,
            Self::I8 => {
                return Err(CoreError::unsupported(
                    "conversion to a candle tensor (candle has no i8 dtype; widen to i16/i32 or keep the buffer)",
                    self,
                ))
            }
        })
    }

    /// The dtype for a candle dtype (the sub-byte and fp8 candle dtypes have none).
    pub fn from_candle(dtype: candle_core::DType) -> Result<Self> {
        Ok(match dtype {
            candle_core::DType::F32 => Self::F32,
            candle_core::DType::F16 => Self::F16,
            candle_core::DType::BF16 => Self::BF16,
            candle_core::DType::F64 => Self::F64,
            candle_core::DType::U8 => Self::U8,
            candle_core::DType::I16 => Self::I16,
            candle_core::DType::U32 => Self::U32,
            candle_core::DType::I32 => Self::I32,
            candle_core::DType::I64 => Self::I64,
            other => return Err(CoreError::unsupported("TensorBuffer", format!("{other:?}"))),
        })
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

mod sealed {
    pub trait Sealed {}
}

/// A Rust type that is the element of a [`DType`]. Sealed: implemented for `f32`, `f64`,
/// `half::f16`, `half::bf16`, `u8`, `i8`, `i16`, `u32`, `i32`, `i64`.
pub trait Element: bytemuck::Pod + sealed::Sealed + Send + Sync {
    /// The dtype this type is.
    const DTYPE: DType;
}

macro_rules! element {
    ($($t:ty => $d:ident),*) => {$(
        impl sealed::Sealed for $t {}
        impl Element for $t { const DTYPE: DType = DType::$d; }
    )*};
}
element!(f32 => F32, half::f16 => F16, half::bf16 => BF16, f64 => F64, u8 => U8, i8 => I8, i16 => I16, u32 => U32, i32 => I32, i64 => I64);

/// Contiguous, row-major tensor data as bytes, with its shape and dtype.
///
/// The invariant `bytes().len() == numel * dtype.size_in_bytes()` holds for every value:
/// constructors check it and answer `ShapeMismatch` otherwise. The bytes are stored 8-byte
/// aligned, so [`as_slice`](Self::as_slice) can view them as any element type without a copy.
///
/// ```
/// use aihal_core::{DType, TensorBuffer};
/// use candle_core::{Device, Tensor};
///
/// let t = Tensor::arange(0f32, 6., &Device::Cpu)?.reshape((2, 3))?;
/// let buf = TensorBuffer::from_tensor(&t.t()?)?; // transposed: made contiguous
/// assert_eq!(buf.shape(), &[3, 2]);
/// assert_eq!(buf.as_slice::<f32>()?, &[0., 3., 1., 4., 2., 5.]);
/// let back = buf.to_tensor(&Device::Cpu)?;
/// assert_eq!(back.to_vec2::<f32>()?, t.t()?.to_vec2::<f32>()?);
///
/// let out = aihal_core::allocate_output_buffer(&[4, 4], DType::F16)?;
/// assert_eq!(out.bytes().len(), 32);
/// # Ok::<(), aihal_core::CoreError>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct TensorBuffer {
    words: Vec<u64>,
    len: usize,
    shape: Vec<usize>,
    dtype: DType,
}

impl fmt::Debug for TensorBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TensorBuffer")
            .field("shape", &self.shape)
            .field("dtype", &self.dtype)
            .field("bytes", &self.len)
            .finish_non_exhaustive()
    }
}

fn byte_len(shape: &[usize], dtype: DType) -> Result<usize> {
    shape
        .iter()
        .try_fold(dtype.size_in_bytes(), |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| CoreError::invalid_input(format!("shape {shape:?} of {dtype} overflows the address space")))
}

impl TensorBuffer {
    /// A buffer of zeros.
    pub fn zeros(shape: &[usize], dtype: DType) -> Result<Self> {
        let len = byte_len(shape, dtype)?;
        Ok(Self {
            words: vec![0; len.div_ceil(8)],
            len,
            shape: shape.to_vec(),
            dtype,
        })
    }

    /// A buffer holding a copy of `bytes`, which must be exactly `numel * dtype size` long.
    pub fn from_bytes(bytes: &[u8], shape: &[usize], dtype: DType) -> Result<Self> {
        let expected = byte_len(shape, dtype)?;
        if bytes.len() != expected {
            return Err(CoreError::shape_mismatch(
                format!("TensorBuffer bytes for shape {shape:?} of {dtype}"),
                [expected],
                [bytes.len()],
            ));
        }
        let mut buf = Self::zeros(shape, dtype)?;
        buf.bytes_mut().copy_from_slice(bytes);
        Ok(buf)
    }

    /// A buffer holding a copy of typed data, whose length must match the shape.
    pub fn from_slice<T: Element>(data: &[T], shape: &[usize]) -> Result<Self> {
        let numel: usize = shape.iter().product();
        if data.len() != numel {
            return Err(CoreError::shape_mismatch("TensorBuffer elements", shape, [data.len()]));
        }
        Self::from_bytes(bytemuck::cast_slice(data), shape, T::DTYPE)
    }

    /// Copies a candle tensor (any device; made contiguous when it is not) into a buffer.
    ///
    /// A contiguous CPU tensor is copied once, straight from its storage; others are first
    /// moved to the CPU or made contiguous by candle.
    pub fn from_tensor(tensor: &Tensor) -> Result<Self> {
        let dtype = DType::from_candle(tensor.dtype())?;
        let on_cpu = if tensor.device().is_cpu() {
            tensor.contiguous()?
        } else {
            tensor.to_device(&candle_core::Device::Cpu)?.contiguous()?
        };
        let (storage, layout) = on_cpu.storage_and_layout();
        let (start, end) = layout
            .contiguous_offsets()
            .ok_or_else(|| CoreError::invalid_input("candle returned a non-contiguous tensor from contiguous()"))?;
        let Storage::Cpu(cpu) = &*storage else {
            return Err(CoreError::invalid_input(
                "candle returned a non-CPU tensor from to_device(Cpu)",
            ));
        };
        let bytes: &[u8] = match cpu {
            CpuStorage::F32(v) => bytemuck::cast_slice(&v[start..end]),
            CpuStorage::F16(v) => bytemuck::cast_slice(&v[start..end]),
            CpuStorage::BF16(v) => bytemuck::cast_slice(&v[start..end]),
            CpuStorage::F64(v) => bytemuck::cast_slice(&v[start..end]),
            CpuStorage::U8(v) => &v[start..end],
            CpuStorage::I16(v) => bytemuck::cast_slice(&v[start..end]),
            CpuStorage::U32(v) => bytemuck::cast_slice(&v[start..end]),
            CpuStorage::I32(v) => bytemuck::cast_slice(&v[start..end]),
            CpuStorage::I64(v) => bytemuck::cast_slice(&v[start..end]),
            _ => return Err(CoreError::unsupported("TensorBuffer", format!("{:?}", tensor.dtype()))),
        };
        Self::from_bytes(bytes, on_cpu.dims(), dtype)
    }

    /// A candle tensor on `device` holding a copy of this buffer (one copy).
    pub fn to_tensor(&self, device: &candle_core::Device) -> Result<Tensor> {
        let dtype = self.dtype.to_candle()?;
        Ok(Tensor::from_raw_buffer(self.bytes(), dtype, &self.shape, device)?)
    }

    /// The bytes, row-major.
    pub fn bytes(&self) -> &[u8] {
        &bytemuck::cast_slice(&self.words)[..self.len]
    }

    /// The bytes, writable (the length is fixed by the shape).
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut bytemuck::cast_slice_mut(&mut self.words)[..self.len]
    }

    /// The elements as `T`, which must be this buffer's dtype.
    pub fn as_slice<T: Element>(&self) -> Result<&[T]> {
        self.check_dtype::<T>()?;
        Ok(bytemuck::cast_slice(self.bytes()))
    }

    /// The elements as writable `T`, which must be this buffer's dtype.
    pub fn as_mut_slice<T: Element>(&mut self) -> Result<&mut [T]> {
        self.check_dtype::<T>()?;
        Ok(bytemuck::cast_slice_mut(self.bytes_mut()))
    }

    fn check_dtype<T: Element>(&self) -> Result<()> {
        if T::DTYPE == self.dtype {
            Ok(())
        } else {
            Err(CoreError::unsupported(
                format!("viewing a {} buffer", self.dtype),
                format!("{} elements", T::DTYPE),
            ))
        }
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Gives the buffer a new shape with the same number of elements.
    pub fn reshape(mut self, shape: &[usize]) -> Result<Self> {
        let numel: usize = shape.iter().product();
        if numel != self.numel() {
            return Err(CoreError::shape_mismatch("TensorBuffer reshape", self.shape, shape));
        }
        self.shape = shape.to_vec();
        Ok(self)
    }
}

/// A zeroed buffer to write results into, allocated once and reused across calls in a hot
/// loop. Same as [`TensorBuffer::zeros`].
pub fn allocate_output_buffer(shape: &[usize], dtype: DType) -> Result<TensorBuffer> {
    TensorBuffer::zeros(shape, dtype)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use proptest::prelude::*;

    #[test]
    fn sizes_are_validated() {
        let err = TensorBuffer::from_bytes(&[0; 7], &[2], DType::F32).unwrap_err();
        assert!(
            matches!(&err, CoreError::ShapeMismatch { expected, actual, .. } if expected == &[8] && actual == &[7]),
            "{err}"
        );
        let err = TensorBuffer::from_slice(&[1.0f32; 5], &[2, 3]).unwrap_err();
        assert!(matches!(err, CoreError::ShapeMismatch { .. }));
        let err = TensorBuffer::zeros(&[usize::MAX, 2], DType::F32).unwrap_err();
        assert!(matches!(err, CoreError::InvalidInput(_)));
        let buf = TensorBuffer::zeros(&[], DType::I64).unwrap();
        assert_eq!((buf.numel(), buf.bytes().len()), (1, 8));
        let buf = TensorBuffer::zeros(&[0, 3], DType::F32).unwrap();
        assert_eq!(buf.bytes().len(), 0);
    }

    #[test]
    fn typed_views_check_the_dtype() {
        let mut buf = TensorBuffer::from_slice(&[1i8, -2, 3], &[3]).unwrap();
        assert_eq!(buf.as_slice::<i8>().unwrap(), &[1, -2, 3]);
        assert!(buf.as_slice::<u8>().is_err());
        buf.as_mut_slice::<i8>().unwrap()[1] = 7;
        assert_eq!(buf.bytes(), &[1, 7, 3]);
        let buf = buf.reshape(&[1, 3]).unwrap();
        assert_eq!(buf.shape(), &[1, 3]);
        assert!(buf.reshape(&[2, 2]).is_err());
    }

    #[test]
    fn i8_and_fp8_have_no_candle_counterpart() {
        let buf = TensorBuffer::from_slice(&[1i8], &[1]).unwrap();
        assert!(matches!(
            buf.to_tensor(&Device::Cpu).unwrap_err(),
            CoreError::Unsupported { .. }
        ));
        let t = Tensor::zeros(4, candle_core::DType::F8E4M3, &Device::Cpu).unwrap();
        assert!(matches!(
            TensorBuffer::from_tensor(&t).unwrap_err(),
            CoreError::Unsupported { .. }
        ));
    }

    #[test]
    fn narrowed_and_transposed_tensors_are_made_contiguous() {
        let t = Tensor::arange(0i64, 24, &Device::Cpu)
            .unwrap()
            .reshape((2, 3, 4))
            .unwrap();
        let view = t.narrow(2, 1, 2).unwrap().transpose(0, 1).unwrap();
        let buf = TensorBuffer::from_tensor(&view).unwrap();
        assert_eq!(buf.shape(), &[3, 2, 2]);
        let want: Vec<i64> = view.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(buf.as_slice::<i64>().unwrap(), want.as_slice());
        // A contiguous narrow (non-zero start offset) reads from the right offset.
        let rows = t.narrow(0, 1, 1).unwrap();
        let buf = TensorBuffer::from_tensor(&rows).unwrap();
        assert_eq!(buf.as_slice::<i64>().unwrap()[0], 12);
    }

    fn dtype_strategy() -> impl Strategy<Value = DType> {
        prop::sample::select(vec![
            DType::F32,
            DType::F16,
            DType::BF16,
            DType::F64,
            DType::U8,
            DType::I16,
            DType::U32,
            DType::I32,
            DType::I64,
        ])
    }

    proptest! {
        #[test]
        fn tensor_round_trips_preserve_bytes(
            shape in prop::collection::vec(1usize..6, 0..4),
            dtype in dtype_strategy(),
            seed in any::<u64>(),
        ) {
            let numel: usize = shape.iter().product();
            let n = numel * dtype.size_in_bytes();
            // Random bytes, with float dtypes kept finite by clearing exponent bits so that
            // NaN payloads (which candle may canonicalise) do not occur.
            let mut state = seed | 1;
            let mut bytes: Vec<u8> = (0..n).map(|_| { state ^= state << 13; state ^= state >> 7; state ^= state << 17; state as u8 }).collect();
            let width = dtype.size_in_bytes();
            if matches!(dtype, DType::F32 | DType::F16 | DType::BF16 | DType::F64) {
                for chunk in bytes.chunks_mut(width) { chunk[width - 1] &= 0b1011_1111; }
            }
            let buf = TensorBuffer::from_bytes(&bytes, &shape, dtype).unwrap();
            let t = buf.to_tensor(&Device::Cpu).unwrap();
            prop_assert_eq!(t.dims(), shape.as_slice());
            prop_assert_eq!(DType::from_candle(t.dtype()).unwrap(), dtype);
            let back = TensorBuffer::from_tensor(&t).unwrap();
            prop_assert_eq!(back.bytes(), bytes.as_slice());
            prop_assert_eq!(&back, &buf);
        }

        #[test]
        fn transposed_f32_round_trips_match_candle(rows in 1usize..9, cols in 1usize..9) {
            let t = Tensor::rand(0f32, 1., (rows, cols), &Device::Cpu).unwrap().t().unwrap();
            let buf = TensorBuffer::from_tensor(&t).unwrap();
            let want: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
            prop_assert_eq!(buf.as_slice::<f32>().unwrap(), want.as_slice());
            prop_assert_eq!(buf.to_tensor(&Device::Cpu).unwrap().to_vec2::<f32>().unwrap(), t.to_vec2::<f32>().unwrap());
        }
    }
}
