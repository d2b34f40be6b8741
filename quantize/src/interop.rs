//! Candle interop: the [`Quantizer`] scheme implementing aihal-core's `Quantize` and
//! `Dequantize` traits on candle tensors, and conversion to and from candle's GGML
//! `QTensor` (so Q4_0 / Q8_0 tensors read from a GGUF file are used without
//! re-quantization).

use std::borrow::Cow;
use std::io::{Read, Seek, SeekFrom};

use aihal_core::{CoreError, Dequantize, Device, Quantize, Result, TensorBuffer};
use candle_core::quantized::{gguf_file, GgmlDType, QStorage, QTensor};
use candle_core::Tensor;

use crate::format::QuantFormat;
use crate::ops::{dequantize, quantize_with, NonFinitePolicy};
use crate::tensor::QuantizedTensor;

/// A quantization scheme on candle tensors: a [`QuantFormat`] and what to do with
/// non-finite values.
///
/// Quantization runs on the CPU whatever `device` says (a tensor on another device is
/// copied to the CPU first). Dequantization returns an f32 tensor on `device` when candle
/// has such a device (CPU, CUDA), and on the CPU for devices candle does not know (the NPU,
/// Vulkan), which take CPU tensors.
///
/// ```
/// use aihal_core::{Dequantize, Device, Quantize};
/// use aihal_quantize::{QuantFormat, Quantizer};
/// use candle_core::Tensor;
///
/// let w = Tensor::randn(0f32, 1.0, (64, 128), &candle_core::Device::Cpu)?;
/// let q4 = Quantizer::new(QuantFormat::Q4_0);
/// let q = q4.quantize(&w, &Device::Cpu)?;
/// assert_eq!(q.shape(), &[64, 128]);
/// let back = q4.dequantize(&q, &Device::Cpu)?;
/// assert_eq!(back.dims(), &[64, 128]);
/// # Ok::<(), aihal_core::CoreError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Quantizer {
    /// The target format.
    pub format: QuantFormat,
    /// The treatment of NaN and infinities (rejected by default).
    pub nonfinite: NonFinitePolicy,
}

impl Quantizer {
    /// A scheme for `format` that rejects non-finite input.
    pub fn new(format: QuantFormat) -> Self {
        Self {
            format,
            nonfinite: NonFinitePolicy::Reject,
        }
    }

    /// The same scheme with another non-finite policy.
    #[must_use]
    pub fn with_nonfinite(mut self, policy: NonFinitePolicy) -> Self {
        self.nonfinite = policy;
        self
    }

    /// NF4 with bitsandbytes' default block of 64, optionally double-quantized.
    pub fn nf4(double_quant: bool) -> Self {
        Self::new(QuantFormat::Nf4 {
            block_size: 64,
            double_quant,
        })
    }
}

impl Quantize<QuantizedTensor> for Quantizer {
    fn quantize(&self, tensor: &Tensor, _device: &Device) -> Result<QuantizedTensor> {
        let shape = tensor.dims().to_vec();
        let values = tensor
            .to_device(&candle_core::Device::Cpu)?
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        quantize_with(self.format, &values, &shape, self.nonfinite)
    }
}

impl Dequantize<QuantizedTensor> for Quantizer {
    /// Dequantizes `q`, which must be in this scheme's format (`InvalidInput` otherwise).
    fn dequantize(&self, q: &QuantizedTensor, device: &Device) -> Result<Tensor> {
        if q.format() != self.format {
            return Err(CoreError::invalid_input(format!(
                "a {} tensor handed to a {} dequantizer",
                q.format(),
                self.format
            )));
        }
        q.to_tensor(device)
    }
}

impl QuantizedTensor {
    /// Dequantizes into an f32 candle tensor of the logical shape, on `device` where candle
    /// has it (see [`Quantizer`]).
    pub fn to_tensor(&self, device: &Device) -> Result<Tensor> {
        let t = Tensor::from_vec(dequantize(self)?, self.shape(), &candle_core::Device::Cpu)?;
        if let Device::Cuda { .. } = device {
            Ok(t.to_device(&device.to_candle()?)?)
        } else {
            // The CPU, and devices candle has no tensors for (their backends take CPU tensors).
            Ok(t)
        }
    }

    /// Dequantizes into an f32 [`TensorBuffer`] of the logical shape.
    pub fn to_buffer(&self) -> Result<TensorBuffer> {
        TensorBuffer::from_slice(&dequantize(self)?, self.shape())
    }

    /// Takes a candle GGML tensor of a block type this crate has (every GGML block format of
    /// [`QuantFormat`] but TQ2_0, which candle lacks) as it is (bytes copied, never
    /// re-quantized). Other GGML types are `Unsupported`.
    pub fn from_qtensor(q: &QTensor) -> Result<Self> {
        let format = candle_format(q.dtype(), "aihal-quantize import of a GGML tensor")?;
        Self::from_parts(format, q.shape().dims().to_vec(), q.data()?.into_owned(), Vec::new())
    }

    /// A candle GGML tensor (on the CPU) with the same bytes, for every GGML block format but
    /// TQ2_0 (which candle lacks).
    pub fn to_qtensor(&self) -> Result<QTensor> {
        let dtype = crate::formats::block_format(self.format())
            .and_then(|b| b.candle)
            .ok_or_else(|| CoreError::unsupported("conversion to a candle QTensor", self.format()))?;
        let storage = QStorage::from_data(Cow::Borrowed(self.data()), &candle_core::Device::Cpu, dtype)?;
        Ok(QTensor::new(storage, self.shape())?)
    }
}

/// Reads tensor `name` of a GGUF file whose header candle parsed, without re-quantization.
///
/// Prefer [`GgufFile`](crate::GgufFile), this crate's own reader: candle's
/// `gguf_file::Content::read` rejects a whole file when one tensor has a type candle does
/// not know (TQ2_0 among them), and `GgufFile` also reads TQ2_0. This function remains for
/// callers who already hold candle's parsed header.
///
/// `content` is the file's header (`gguf_file::Content::read`). The GGML block types
/// candle has are supported; a missing tensor, a shape whose size overflows or does not divide into
/// blocks, data past the end of the file, or another type is an error. The bytes are read
/// here rather than through candle's `Content::tensor`, which panics on some malformed
/// shapes. Shapes are candle's (row-major, the GGUF dimension order reversed), so a weight
/// is `[N, K]`.
pub fn read_gguf_tensor<R: Read + Seek>(
    content: &gguf_file::Content,
    reader: &mut R,
    name: &str,
) -> Result<QuantizedTensor> {
    let info = content
        .tensor_infos
        .get(name)
        .ok_or_else(|| CoreError::invalid_input(format!("GGUF file has no tensor named {name:?}")))?;
    let format = candle_format(
        info.ggml_dtype,
        &format!("aihal-quantize import of GGUF tensor {name:?}"),
    )?;
    let shape = info.shape.dims().to_vec();
    let bad = |what: String| CoreError::invalid_input(format!("GGUF tensor {name:?}: {what}"));
    // Checks the shape (overflow, row multiple of 32) and gives the byte count.
    let (size, _) = crate::tensor::expected_lens(format, &shape)?;
    let start = content
        .tensor_data_offset
        .checked_add(info.offset)
        .ok_or_else(|| bad("offset overflows".into()))?;
    let file_len = reader.seek(SeekFrom::End(0))?;
    if start.checked_add(size as u64).is_none_or(|end| end > file_len) {
        return Err(bad(format!(
            "{size} bytes at offset {start} run past the end of the file ({file_len} bytes)"
        )));
    }
    let mut data = vec![0u8; size];
    reader.seek(SeekFrom::Start(start))?;
    reader.read_exact(&mut data)?;
    QuantizedTensor::from_parts(format, shape, data, Vec::new())
}

/// The format of candle's GGML type `dtype` (`Unsupported`, naming `what`, otherwise).
fn candle_format(dtype: GgmlDType, what: &str) -> Result<QuantFormat> {
    crate::formats::by_candle(dtype).map(|b| b.format).ok_or_else(|| {
        CoreError::unsupported(
            what,
            format!("{dtype:?} ({} are supported)", crate::formats::block_format_names(true)),
        )
    })
}
