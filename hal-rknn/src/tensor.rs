//! Tensor descriptions of a model's inputs and outputs, and typed input data.

use std::fmt;

use aihal_rknn_sys as sys;
use half::f16;

/// The memory layout of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TensorFormat {
    /// Batch, channel, height, width.
    Nchw,
    /// Batch, height, width, channel.
    Nhwc,
    /// The NPU's blocked layout (channels split in groups of C2, innermost).
    Nc1hwc2,
    /// No spatial layout (vectors, matrices).
    Undefined,
    /// A value this crate does not know.
    Other(u32),
}

impl TensorFormat {
    pub(crate) fn from_raw(raw: u32) -> Self {
        match raw {
            sys::RKNN_TENSOR_NCHW => Self::Nchw,
            sys::RKNN_TENSOR_NHWC => Self::Nhwc,
            sys::RKNN_TENSOR_NC1HWC2 => Self::Nc1hwc2,
            sys::RKNN_TENSOR_UNDEFINED => Self::Undefined,
            other => Self::Other(other),
        }
    }

    pub(crate) fn raw(self) -> u32 {
        match self {
            Self::Nchw => sys::RKNN_TENSOR_NCHW,
            Self::Nhwc => sys::RKNN_TENSOR_NHWC,
            Self::Nc1hwc2 => sys::RKNN_TENSOR_NC1HWC2,
            Self::Undefined => sys::RKNN_TENSOR_UNDEFINED,
            Self::Other(raw) => raw,
        }
    }
}

/// The element type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TensorType {
    /// f32.
    F32,
    /// f16.
    F16,
    /// i8.
    I8,
    /// u8.
    U8,
    /// i16.
    I16,
    /// u16.
    U16,
    /// i32.
    I32,
    /// u32.
    U32,
    /// i64.
    I64,
    /// bool (one byte).
    Bool,
    /// i4, two per byte (runtime 1.6+).
    I4,
    /// bf16 (runtime 2.3+).
    Bf16,
    /// A value this crate does not know.
    Other(u32),
}

impl TensorType {
    pub(crate) fn from_raw(raw: u32) -> Self {
        match raw {
            sys::RKNN_TENSOR_FLOAT32 => Self::F32,
            sys::RKNN_TENSOR_FLOAT16 => Self::F16,
            sys::RKNN_TENSOR_INT8 => Self::I8,
            sys::RKNN_TENSOR_UINT8 => Self::U8,
            sys::RKNN_TENSOR_INT16 => Self::I16,
            sys::RKNN_TENSOR_UINT16 => Self::U16,
            sys::RKNN_TENSOR_INT32 => Self::I32,
            sys::RKNN_TENSOR_UINT32 => Self::U32,
            sys::RKNN_TENSOR_INT64 => Self::I64,
            sys::RKNN_TENSOR_BOOL => Self::Bool,
            sys::RKNN_TENSOR_INT4 => Self::I4,
            sys::RKNN_TENSOR_BFLOAT16 => Self::Bf16,
            other => Self::Other(other),
        }
    }

    /// Bytes per element (`None` for i4 and unknown types).
    pub fn size_in_bytes(self) -> Option<usize> {
        match self {
            Self::I8 | Self::U8 | Self::Bool => Some(1),
            Self::F16 | Self::Bf16 | Self::I16 | Self::U16 => Some(2),
            Self::F32 | Self::I32 | Self::U32 => Some(4),
            Self::I64 => Some(8),
            Self::I4 | Self::Other(_) => None,
        }
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Other(raw) => write!(f, "tensor type {raw}"),
            other => write!(f, "{}", format!("{other:?}").to_lowercase()),
        }
    }
}

/// How a tensor's integers map to real values.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Quantization {
    /// Not quantized.
    None,
    /// Dynamic fixed point: `real = q / 2^fl`.
    DynamicFixedPoint {
        /// Fractional bits.
        fl: i8,
    },
    /// Affine: `real = (q - zero_point) * scale`.
    Affine {
        /// The scale.
        scale: f32,
        /// The zero point.
        zero_point: i32,
    },
}

/// A model input or output as the runtime describes it.
#[derive(Clone, Debug)]
pub struct TensorAttr {
    /// Its index among the inputs or outputs.
    pub index: u32,
    /// Its name in the model.
    pub name: String,
    /// Its dimensions, in `format`'s order.
    pub dims: Vec<usize>,
    /// Element count.
    pub n_elems: usize,
    /// Size in bytes.
    pub size: usize,
    /// Layout.
    pub format: TensorFormat,
    /// Element type.
    pub dtype: TensorType,
    /// Quantization.
    pub quantization: Quantization,
    /// Row stride in pixels (0: the width).
    pub w_stride: u32,
    /// Size in bytes including row padding.
    pub size_with_stride: usize,
    /// Whether it is passed through without conversion.
    pub pass_through: bool,
    pub(crate) raw: sys::rknn_tensor_attr,
}

impl PartialEq for TensorAttr {
    /// Compares the described fields (not the runtime's raw struct they were read from).
    fn eq(&self, other: &Self) -> bool {
        (
            self.index,
            &self.name,
            &self.dims,
            self.n_elems,
            self.size,
            self.format,
            self.dtype,
            self.quantization,
            self.w_stride,
            self.size_with_stride,
            self.pass_through,
        ) == (
            other.index,
            &other.name,
            &other.dims,
            other.n_elems,
            other.size,
            other.format,
            other.dtype,
            other.quantization,
            other.w_stride,
            other.size_with_stride,
            other.pass_through,
        )
    }
}

impl TensorAttr {
    pub(crate) fn from_raw(raw: &sys::rknn_tensor_attr) -> Self {
        let n_dims = (raw.n_dims as usize).min(sys::RKNN_MAX_DIMS);
        Self {
            index: raw.index,
            name: sys::read_c_name(&raw.name),
            dims: raw.dims[..n_dims].iter().map(|&d| d as usize).collect(),
            n_elems: raw.n_elems as usize,
            size: raw.size as usize,
            format: TensorFormat::from_raw(raw.fmt),
            dtype: TensorType::from_raw(raw.type_),
            quantization: match raw.qnt_type {
                sys::RKNN_TENSOR_QNT_DFP => Quantization::DynamicFixedPoint { fl: raw.fl },
                sys::RKNN_TENSOR_QNT_AFFINE_ASYMMETRIC => Quantization::Affine {
                    scale: raw.scale,
                    zero_point: raw.zp,
                },
                _ => Quantization::None,
            },
            w_stride: raw.w_stride,
            size_with_stride: raw.size_with_stride as usize,
            pass_through: raw.pass_through != 0,
            raw: *raw,
        }
    }
}

/// Input data of one of the element types the runtime converts from.
#[derive(Clone, Copy, Debug)]
pub enum InputData<'a> {
    /// f32 values.
    F32(&'a [f32]),
    /// f16 values.
    F16(&'a [f16]),
    /// i8 values.
    I8(&'a [i8]),
    /// u8 values (pixels, typically).
    U8(&'a [u8]),
}

impl InputData<'_> {
    pub(crate) fn len(&self) -> usize {
        match self {
            Self::F32(v) => v.len(),
            Self::F16(v) => v.len(),
            Self::I8(v) => v.len(),
            Self::U8(v) => v.len(),
        }
    }

    pub(crate) fn raw_type(&self) -> u32 {
        match self {
            Self::F32(_) => sys::RKNN_TENSOR_FLOAT32,
            Self::F16(_) => sys::RKNN_TENSOR_FLOAT16,
            Self::I8(_) => sys::RKNN_TENSOR_INT8,
            Self::U8(_) => sys::RKNN_TENSOR_UINT8,
        }
    }

    /// The bytes, little-endian (the runtime's byte order on every supported target).
    pub(crate) fn to_bytes(self) -> Vec<u8> {
        match self {
            Self::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Self::F16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Self::I8(v) => v.iter().map(|&x| x as u8).collect(),
            Self::U8(v) => v.to_vec(),
        }
    }
}

/// One model input: data, its layout, and whether the runtime should convert it.
#[derive(Clone, Copy, Debug)]
pub struct Input<'a> {
    /// The data.
    pub data: InputData<'a>,
    /// Its layout (`Nchw` or `Nhwc` for images).
    pub format: TensorFormat,
    /// `true` hands the bytes to the NPU as they are: they must already have the model's
    /// type, layout and quantization.
    pub pass_through: bool,
}

impl<'a> Input<'a> {
    /// Data the runtime converts (type, layout, quantization) to what the model needs.
    pub fn new(data: InputData<'a>, format: TensorFormat) -> Self {
        Self {
            data,
            format,
            pass_through: false,
        }
    }

    /// Data already in the model's native type and layout.
    pub fn pass_through(data: InputData<'a>, format: TensorFormat) -> Self {
        Self {
            data,
            format,
            pass_through: true,
        }
    }
}

/// One output as raw bytes, in the type the runtime produced.
#[derive(Clone, Debug, PartialEq)]
pub struct RawOutput {
    /// The output's description.
    pub attr: TensorAttr,
    /// The element type of `bytes` (f32 when dequantized).
    pub dtype: TensorType,
    /// The data.
    pub bytes: Vec<u8>,
}
