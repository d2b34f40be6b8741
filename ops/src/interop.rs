//! aihal's [`Linear`] in candle code: built from a candle `QTensor`, or from one tensor of a
//! GGUF or safetensors file, without adopting aihal's model layer. [`Linear`] is a
//! [`candle_nn::Module`], so the result drops into a candle model where a `QMatMul` or a
//! `candle_nn::Linear` was.
//!
//! Every GGML block type candle and aihal share (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K .. Q6_K)
//! is taken byte for byte: aihal keeps llama.cpp's blocks as they are, so nothing is decoded
//! or re-quantized. Plain F32, F16 and BF16 weights become dense layers.
//!
//! Shapes follow candle and PyTorch: a weight is `[out_features, in_features]`, row-major.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;

use aihal_core::{CoreError, Result};
use aihal_quantize::{GgufFile, GgufTensorData, QuantFormat, QuantizedTensor};
use candle_core::quantized::{GgmlDType, QTensor};
use safetensors::tensor::{Metadata, TensorInfo, TensorView};
use safetensors::Dtype;

use crate::executor::Executor;
use crate::layers::Linear;
use crate::provider::LinearPrecision;

/// The safetensors metadata keys of aihal's quantized layout (`aihal_quantize::io`'s
/// documented file layout, version 1).
const AIHAL_VERSION_KEY: &str = "aihal.quantize.version";
const AIHAL_TENSOR_KEY: &str = "aihal.quantize.tensor.";
/// The companion entries of a tensor `name` in aihal's quantized layout.
const AIHAL_ENTRIES: [&str; 5] = ["", ".scales", ".nested_codes", ".nested_scales", ".nested_code"];
/// The largest safetensors header read (the safetensors crate's own limit).
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// A linear layer's weight `[out_features, in_features]` as read from candle or from a file,
/// before it is placed on an executor ([`Linear::from_weight`]): quantized as stored, or
/// dense f32.
///
/// The `Linear::from_*` constructors are this type's readers followed by
/// [`Linear::from_weight`]; use it directly to inspect a weight (its format, its bytes)
/// or to place one weight on several executors.
#[derive(Clone, Debug, PartialEq)]
pub enum LinearWeight {
    /// A weight in an aihal format, bytes as stored.
    Quantized(QuantizedTensor),
    /// A dense weight, row-major.
    Dense {
        /// `out_features * in_features` values.
        values: Vec<f32>,
        /// `[out_features, in_features]`.
        shape: [usize; 2],
    },
}

impl LinearWeight {
    /// The weight of a candle `QTensor` of shape `(out_features, in_features)`: a GGML block
    /// type aihal has is taken byte for byte (`QTensor::data`, never re-quantized), F32, F16
    /// and BF16 become dense f32 values (widened exactly).
    ///
    /// Errors: `Unsupported` naming the type for GGML types without an aihal format (Q8_1,
    /// Q8_K); `InvalidInput` for a tensor that is not rank 2 or whose scales are not finite;
    /// `ShapeMismatch` / `InvalidInput` when a row does not divide into blocks; `Candle` when
    /// candle cannot read the tensor's storage.
    pub fn from_qtensor(w: &QTensor) -> Result<Self> {
        let dims = w.shape().dims().to_vec();
        let shape = rank2(&dims, || format!("candle QTensor ({:?})", w.dtype()))?;
        match w.dtype() {
            GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16 => {
                let values = w
                    .dequantize(&candle_core::Device::Cpu)?
                    .to_dtype(candle_core::DType::F32)?
                    .flatten_all()?
                    .to_vec1::<f32>()?;
                Ok(Self::Dense { values, shape })
            }
            dtype => {
                let q = QuantizedTensor::from_qtensor(w).map_err(|e| match e {
                    CoreError::Unsupported { dtype: what, .. } => CoreError::Unsupported {
                        op: "Linear::from_qtensor".into(),
                        dtype: format!("{what}; F32, F16 and BF16 become dense layers"),
                    },
                    e => e,
                })?;
                q.validate_values()
                    .map_err(|e| prefixed(&format!("candle QTensor ({dtype:?})"), e))?;
                Ok(Self::Quantized(q))
            }
        }
    }

    /// Tensor `tensor_name` of the GGUF file at `path`: the header and that tensor's bytes
    /// are read, nothing else (the file is streamed, never held whole). A GGML block type of
    /// [`QuantFormat`] stays quantized as stored (values checked as
    /// [`GgufFile::read_tensor`] does); F32, F16 and BF16 become dense f32 values. Shapes are
    /// row-major (the GGUF dimensions reversed), so a weight is `[out_features,
    /// in_features]`.
    ///
    /// Errors, each naming the file and the tensor: `Io` when the file cannot be read;
    /// `InvalidInput` for a malformed header, a missing tensor, a tensor that is not rank 2 or
    /// whose data leaves the file; `Unsupported` for other types (integers, F64, GGML types
    /// without an aihal format).
    pub fn from_gguf(path: impl AsRef<Path>, tensor_name: &str) -> Result<Self> {
        let path = path.as_ref();
        let at = |e| in_file(path, Some(tensor_name), e);
        let mut reader = BufReader::new(File::open(path).map_err(|e| at(e.into()))?);
        let file = GgufFile::read(&mut reader).map_err(|e| in_file(path, None, e))?;
        let data = file.read_any(&mut reader, tensor_name).map_err(at)?;
        let what = || format!("{}: GGUF tensor {tensor_name:?}", path.display());
        match data {
            GgufTensorData::Quantized(q) => {
                rank2(q.shape(), what)?;
                Ok(Self::Quantized(q))
            }
            dense @ GgufTensorData::Dense(_) => {
                let shape = rank2(dense.shape(), what)?;
                let values = dense.to_f32().map_err(|e| match e {
                    CoreError::Unsupported { dtype, .. } => CoreError::Unsupported {
                        op: format!("Linear::from_gguf of {}", what()),
                        dtype: format!("{dtype} (F32, F16, BF16 and the GGML block types are read)"),
                    },
                    e => e,
                })?;
                Ok(Self::Dense { values, shape })
            }
        }
    }

    /// Tensor `tensor_name` of the safetensors file at `path`: the header and that tensor's
    /// bytes are read, nothing else. An F32, F16 or BF16 tensor `[out_features,
    /// in_features]` is quantized here to `format` (`aihal_quantize::quantize`, which
    /// rejects non-finite values), or kept dense when `format` is `None`. A tensor saved in
    /// aihal's quantized layout (`aihal_quantize::io`) is read as stored, through that
    /// module's reader; `format` must then be `None` or the stored format.
    ///
    /// The file is read with positioned reads rather than memory-mapped: only the one tensor
    /// is copied into memory, and this crate stays free of `unsafe`.
    ///
    /// Errors, each naming the file and the tensor: `Io` when the file cannot be read;
    /// `InvalidInput` for a malformed header, a missing tensor, a tensor that is not rank 2,
    /// data that leaves the file, values `format` cannot quantize, or an aihal-layout tensor
    /// stored in another format than `format`; `Unsupported` for other element types
    /// (integers, F64, FP8, ...).
    pub fn from_safetensors(path: impl AsRef<Path>, tensor_name: &str, format: Option<QuantFormat>) -> Result<Self> {
        let path = path.as_ref();
        read_safetensors(path, tensor_name, format).map_err(|e| in_file(path, Some(tensor_name), e))
    }

    /// `[out_features, in_features]` (the readers give rank 2 weights only; a quantized
    /// tensor of another rank built by hand answers its rows and row length).
    pub fn shape(&self) -> [usize; 2] {
        match self {
            Self::Quantized(q) => [q.rows(), q.row_len()],
            Self::Dense { shape, .. } => *shape,
        }
    }

    /// The quantized weight, if this is one.
    pub fn as_quantized(&self) -> Option<&QuantizedTensor> {
        match self {
            Self::Quantized(q) => Some(q),
            Self::Dense { .. } => None,
        }
    }
}

impl Linear {
    /// A layer over `weight` (from [`LinearWeight`]'s readers) and an optional bias of
    /// `out_features` values: [`Linear::with_precision`] for a quantized weight,
    /// [`Linear::dense`] for a dense one (dense layers compute in f32 whatever `precision`
    /// says).
    ///
    /// Errors: those of [`Linear::with_precision`] and [`Linear::dense`].
    pub fn from_weight(
        exec: &Arc<Executor>,
        weight: &LinearWeight,
        bias: Option<&[f32]>,
        precision: LinearPrecision,
    ) -> Result<Self> {
        match weight {
            LinearWeight::Quantized(q) => Self::with_precision(exec, q, bias, precision),
            LinearWeight::Dense { values, shape } => Self::dense(exec, values, *shape, bias),
        }
    }

    /// A layer over a candle `QTensor` of shape `(out_features, in_features)` (candle's
    /// `QMatMul` and `candle_nn::Linear` convention): the GGML block types aihal has (Q4_0,
    /// Q4_1, Q5_0, Q5_1, Q8_0, Q2_K .. Q6_K) keep their bytes (never decoded or
    /// re-quantized); F32, F16 and BF16 become a dense layer ([`Linear::dense`], f32).
    ///
    /// Errors: `Unsupported` naming the type for GGML types aihal has no format for (Q8_1,
    /// Q8_K); those of [`LinearWeight::from_qtensor`] and [`Linear::from_weight`].
    ///
    /// ```
    /// use std::sync::Arc;
    ///
    /// use aihal_ops::{Executor, Linear, LinearPrecision};
    /// use candle_core::quantized::{GgmlDType, QTensor};
    /// use candle_core::{Device, Module, Tensor};
    ///
    /// let exec = Executor::builder().provider(Arc::new(aihal_cpu::CpuProvider)).build()?;
    /// // A weight (out_features = 4, in_features = 64), quantized by candle.
    /// let w = Tensor::arange(0f32, 256.0, &Device::Cpu)?.affine(1.0 / 256.0, -0.5)?.reshape((4, 64))?;
    /// let qw = QTensor::quantize(&w, GgmlDType::Q8_0)?;
    /// let linear = Linear::from_qtensor(&exec, &qw, None, LinearPrecision::F32)?;
    ///
    /// let x = Tensor::ones((2, 64), candle_core::DType::F32, &Device::Cpu)?;
    /// let y = Module::forward(&linear, &x)?; // as any candle layer
    /// assert_eq!(y.dims(), &[2, 4]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_qtensor(
        exec: &Arc<Executor>,
        w: &QTensor,
        bias: Option<&[f32]>,
        precision: LinearPrecision,
    ) -> Result<Self> {
        Self::from_weight(exec, &LinearWeight::from_qtensor(w)?, bias, precision)
    }

    /// A layer over tensor `tensor_name` of the GGUF file at `path` ([`LinearWeight::from_gguf`]:
    /// only the header and that tensor are read; quantized as stored, or dense).
    ///
    /// Errors: those of [`LinearWeight::from_gguf`] (naming the file and the tensor; a missing
    /// tensor is `InvalidInput`) and of [`Linear::from_weight`].
    pub fn from_gguf(
        exec: &Arc<Executor>,
        path: impl AsRef<Path>,
        tensor_name: &str,
        bias: Option<&[f32]>,
        precision: LinearPrecision,
    ) -> Result<Self> {
        Self::from_weight(exec, &LinearWeight::from_gguf(path, tensor_name)?, bias, precision)
    }

    /// A layer over tensor `tensor_name` of the safetensors file at `path`
    /// ([`LinearWeight::from_safetensors`]): an F32, F16 or BF16 tensor quantized at load to
    /// `format`, or dense when `format` is `None`; a tensor in aihal's quantized layout as
    /// stored.
    ///
    /// Errors: those of [`LinearWeight::from_safetensors`] (naming the file and the tensor)
    /// and of [`Linear::from_weight`].
    pub fn from_safetensors(
        exec: &Arc<Executor>,
        path: impl AsRef<Path>,
        tensor_name: &str,
        format: Option<QuantFormat>,
        bias: Option<&[f32]>,
        precision: LinearPrecision,
    ) -> Result<Self> {
        let weight = LinearWeight::from_safetensors(path, tensor_name, format)?;
        Self::from_weight(exec, &weight, bias, precision)
    }
}

/// `dims` as `[out_features, in_features]` (`InvalidInput` naming `what` otherwise).
fn rank2(dims: &[usize], what: impl FnOnce() -> String) -> Result<[usize; 2]> {
    match dims {
        &[out, inp] => Ok([out, inp]),
        _ => Err(CoreError::invalid_input(format!(
            "{}: a linear weight is rank 2 [out_features, in_features], got shape {dims:?}",
            what()
        ))),
    }
}

/// Prefixes the message of an `InvalidInput`, `ShapeMismatch` or `Unsupported` error with
/// `at`; other errors pass through.
fn prefixed(at: &str, err: CoreError) -> CoreError {
    match err {
        CoreError::InvalidInput(msg) if !msg.starts_with(at) => CoreError::InvalidInput(format!("{at}: {msg}")),
        CoreError::ShapeMismatch {
            context,
            expected,
            actual,
        } if !context.starts_with(at) => CoreError::ShapeMismatch {
            context: format!("{at}: {context}"),
            expected,
            actual,
        },
        CoreError::Unsupported { op, dtype } if !op.contains(at) => CoreError::Unsupported {
            op: format!("{op} ({at})"),
            dtype,
        },
        other => other,
    }
}

/// Names the file (and the tensor) in an error about reading it; `Io` errors too.
fn in_file(path: &Path, tensor: Option<&str>, err: CoreError) -> CoreError {
    let at = match tensor {
        Some(t) => format!("{} (tensor {t:?})", path.display()),
        None => path.display().to_string(),
    };
    match err {
        CoreError::Io(e) => CoreError::Io(std::io::Error::new(e.kind(), format!("{at}: {e}"))),
        other => prefixed(&at, other),
    }
}

/// The parsed header of a safetensors file: its tensors, and where their data starts.
struct SafetensorsHeader {
    meta: Metadata,
    data_start: u64,
}

fn read_header(file: &mut File) -> Result<SafetensorsHeader> {
    let file_len = file.metadata()?.len();
    let mut len = [0u8; 8];
    file.read_exact(&mut len)
        .map_err(|_| CoreError::invalid_input("not a safetensors file: shorter than its 8-byte header length"))?;
    let n = u64::from_le_bytes(len);
    if n > MAX_HEADER_BYTES || n > file_len.saturating_sub(8) {
        return Err(CoreError::invalid_input(format!(
            "safetensors header of {n} bytes does not fit the file ({file_len} bytes) or the {MAX_HEADER_BYTES}-byte limit"
        )));
    }
    let mut header = vec![0u8; n as usize];
    file.read_exact(&mut header)?;
    let meta: Metadata = serde_json::from_slice(&header)
        .map_err(|e| CoreError::invalid_input(format!("malformed safetensors header: {e}")))?;
    let data_start = 8 + n;
    let data_end = data_start.checked_add(meta.data_len() as u64);
    if data_end.is_none_or(|end| end > file_len) {
        return Err(CoreError::invalid_input(format!(
            "the header's {} data bytes after byte {data_start} run past the end of the file ({file_len} bytes)",
            meta.data_len()
        )));
    }
    Ok(SafetensorsHeader { meta, data_start })
}

impl SafetensorsHeader {
    fn info(&self, name: &str) -> Result<&TensorInfo> {
        self.meta
            .info(name)
            .ok_or_else(|| CoreError::invalid_input(format!("safetensors file has no tensor named {name:?}")))
    }

    /// The bytes of entry `info` (the header checked that they lie within the file).
    fn read(&self, file: &mut File, info: &TensorInfo) -> Result<Vec<u8>> {
        let (start, end) = info.data_offsets;
        let mut bytes = vec![0u8; end - start];
        file.seek(SeekFrom::Start(self.data_start + start as u64))?;
        file.read_exact(&mut bytes)?;
        Ok(bytes)
    }

    /// The metadata string `key` of the header, if any.
    fn metadata(&self, key: &str) -> Option<&String> {
        self.meta.metadata().as_ref().and_then(|m| m.get(key))
    }
}

fn read_safetensors(path: &Path, name: &str, format: Option<QuantFormat>) -> Result<LinearWeight> {
    let mut file = File::open(path)?;
    let header = read_header(&mut file)?;
    if let Some(described) = header.metadata(&format!("{AIHAL_TENSOR_KEY}{name}")) {
        return read_aihal_layout(&mut file, &header, name, described, format);
    }
    let info = header.info(name)?;
    let shape = rank2(&info.shape, || "safetensors tensor".into())?;
    let decode: fn(&[u8]) -> f32 = match info.dtype {
        Dtype::F32 => |b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        Dtype::F16 => |b| f16_to_f32(u16::from_le_bytes([b[0], b[1]])),
        Dtype::BF16 => |b| f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16),
        other => {
            return Err(CoreError::unsupported(
                "Linear::from_safetensors",
                format!("{other:?} tensors (F32, F16 and BF16 are read, and aihal's quantized layout)"),
            ))
        }
    };
    let bytes = header.read(&mut file, info)?;
    let values: Vec<f32> = bytes.chunks_exact(info.dtype.bitsize() / 8).map(decode).collect();
    drop(bytes);
    match format {
        None => Ok(LinearWeight::Dense { values, shape }),
        Some(f) => Ok(LinearWeight::Quantized(aihal_quantize::quantize(f, &values, &shape)?)),
    }
}

/// A tensor in aihal's quantized safetensors layout: its entries are copied into a file of
/// their own in memory, which `aihal_quantize::io::from_safetensors_bytes` reads (and
/// checks) as it reads any such file.
fn read_aihal_layout(
    file: &mut File,
    header: &SafetensorsHeader,
    name: &str,
    described: &str,
    format: Option<QuantFormat>,
) -> Result<LinearWeight> {
    let mut entries = Vec::new();
    for suffix in AIHAL_ENTRIES {
        let entry = format!("{name}{suffix}");
        if let Some(info) = header.meta.info(&entry) {
            entries.push((entry, info.clone(), header.read(file, info)?));
        }
    }
    let views = entries
        .iter()
        .map(|(entry, info, bytes)| TensorView::new(info.dtype, info.shape.clone(), bytes).map(|v| (entry.as_str(), v)))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| CoreError::invalid_input(format!("aihal quantized tensor: {e}")))?;
    let mut meta = HashMap::from([(format!("{AIHAL_TENSOR_KEY}{name}"), described.to_owned())]);
    if let Some(version) = header.metadata(AIHAL_VERSION_KEY) {
        meta.insert(AIHAL_VERSION_KEY.to_owned(), version.clone());
    }
    let one = safetensors::serialize(views, Some(meta))
        .map_err(|e| CoreError::invalid_input(format!("aihal quantized tensor: {e}")))?;
    drop(entries);
    let q = aihal_quantize::io::from_safetensors_bytes(&one)?
        .remove(name)
        .ok_or_else(|| CoreError::invalid_input("aihal quantized tensor: the reader did not return it"))?;
    rank2(q.shape(), || "aihal quantized tensor".into())?;
    match format {
        Some(f) if f != q.format() => Err(CoreError::invalid_input(format!(
            "stored quantized as {}, asked for {f} (a quantized tensor is not re-quantized: pass None or {})",
            q.format(),
            q.format()
        ))),
        _ => Ok(LinearWeight::Quantized(q)),
    }
}

/// IEEE half precision to f32, exactly.
fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = u32::from((h >> 10) & 0x1f);
    let man = u32::from(h & 0x3ff);
    match exp {
        // Zero and subnormals: man * 2^-24 (exact in f32).
        0 => {
            let v = man as f32 * f32::from_bits(103 << 23);
            f32::from_bits(sign | v.to_bits())
        }
        // Infinities and NaNs.
        0x1f => f32::from_bits(sign | 0x7f80_0000 | (man << 13)),
        _ => f32::from_bits(sign | ((exp + 112) << 23) | (man << 13)),
    }
}
