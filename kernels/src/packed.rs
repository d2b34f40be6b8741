//! A [`QuantizedTensor`] uploaded to a device, exactly as packed.

use aihal_core::{CoreError, Result};
use aihal_quantize::{QuantFormat, QuantizedTensor};
use cubecl::prelude::*;

use crate::decode::kind;
use crate::launch::{Context, DeviceBuffer};

/// The compile-time description of a layout that selects a kernel variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct LayoutKey {
    pub(crate) kind: u32,
    pub(crate) block: usize,
    pub(crate) nested_block: usize,
}

/// A quantized tensor on a device: its packed bytes (as little-endian words, the last one
/// zero-padded), its scales and the code book its format indexes, uploaded once and reused.
/// Or a dense f32 matrix in the same shape of buffers ([`DeviceQuantized::dense`]), so that
/// the matmul and embedding kernels take dense weights too.
///
/// Built with [`DeviceQuantized::upload`]; the tensor's own validation guarantees the
/// lengths the kernels trust.
pub struct DeviceQuantized<R: Runtime> {
    pub(crate) format: Option<QuantFormat>,
    pub(crate) shape: Vec<usize>,
    pub(crate) key: LayoutKey,
    data: DeviceBuffer<R, u32>,
    scales: DeviceBuffer<R, f32>,
    lut: DeviceBuffer<R, f32>,
    nested: DeviceBuffer<R, u32>,
    nested_scales: DeviceBuffer<R, f32>,
    bytes: usize,
    _runtime: std::marker::PhantomData<R>,
}

impl<R: Runtime> std::fmt::Debug for DeviceQuantized<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceQuantized")
            .field("format", &self.format)
            .field("shape", &self.shape)
            .field("device_bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

/// Packs bytes into little-endian words, zero-padding the last one.
pub(crate) fn words_of(bytes: &[u8]) -> Vec<u32> {
    bytes
        .chunks(4)
        .map(|c| {
            let mut w = [0u8; 4];
            w[..c.len()].copy_from_slice(c);
            u32::from_le_bytes(w)
        })
        .collect()
}

fn non_empty(v: &[f32]) -> &[f32] {
    if v.is_empty() {
        &[0.0]
    } else {
        v
    }
}

/// Whether [`DeviceQuantized::upload`] takes `q` on `ctx`'s device, and why not: a format
/// the kernels do not decode, NF4 double quantization without its nested absmax, a packed
/// buffer larger than the device's largest buffer, or more elements than 32-bit indexing
/// reaches.
pub fn device_support<R: Runtime>(ctx: &Context<R>, q: &QuantizedTensor) -> std::result::Result<(), String> {
    match q.format() {
        QuantFormat::Q8_0
        | QuantFormat::Q4_0
        | QuantFormat::Tq2_0
        | QuantFormat::Ternary
        | QuantFormat::Int8PerChannel
        | QuantFormat::Int8PerBlock { .. }
        | QuantFormat::Fp8E4M3 { .. }
        | QuantFormat::Fp8E5M2 { .. }
        | QuantFormat::Nf4 {
            double_quant: false, ..
        } => {}
        QuantFormat::Nf4 { double_quant: true, .. } if q.nested().is_some() => {}
        QuantFormat::Nf4 { .. } => {
            return Err("NF4 with double quantization needs its nested absmax (QuantizedTensor::with_nested)".into())
        }
        other => return Err(format!("{other} has no CubeCL decoder")),
    }
    if u32::try_from(q.numel()).is_err() {
        return Err(format!("{} elements pass the kernels' 32-bit indexing", q.numel()));
    }
    let limit = ctx.limits().max_buffer_bytes;
    let largest = q.data().len().max(4 * q.scales().len()) as u64;
    if largest > limit {
        return Err(format!(
            "{largest} bytes in one buffer; {} holds at most {limit}",
            ctx.backend()
        ));
    }
    Ok(())
}

impl<R: Runtime> DeviceQuantized<R> {
    /// Uploads `q` to `ctx`'s device.
    ///
    /// NF4 with double quantization needs its nested absmax ([`QuantizedTensor::nested`]):
    /// the kernels decode the 8-bit absmax on the device, as QLoRA stores it.
    pub fn upload(ctx: &Context<R>, q: &QuantizedTensor) -> Result<Self> {
        let format = q.format();
        let k = q.row_len();
        if q.numel() == 0 {
            return Err(CoreError::invalid_input(format!(
                "{format} tensor of shape {:?} is empty",
                q.shape()
            )));
        }
        let mut lut: Vec<f32> = Vec::new();
        let mut nested_words = vec![0u32];
        let mut nested_scales = vec![0.0f32];
        let key = match format {
            QuantFormat::Q8_0 => (kind::Q8_0, 32, 1),
            QuantFormat::Q4_0 => (kind::Q4_0, 32, 1),
            QuantFormat::Tq2_0 => (kind::TQ2_0, 256, 1),
            QuantFormat::Ternary => (kind::TERNARY, 1, 1),
            QuantFormat::Nf4 {
                block_size,
                double_quant,
            } => {
                lut.extend_from_slice(&aihal_quantize::nf4::NF4_CODE);
                match (double_quant, q.nested()) {
                    (true, Some(n)) => {
                        lut.extend_from_slice(&n.code);
                        nested_words = words_of(&n.codes);
                        nested_scales.clone_from(&n.scales);
                        nested_scales.push(n.offset);
                        (kind::NF4_DOUBLE, block_size, n.block_size)
                    }
                    (true, None) => {
                        return Err(CoreError::invalid_input(
                            "NF4 with double quantization needs its nested absmax (QuantizedTensor::with_nested)",
                        ))
                    }
                    (false, _) => (kind::NF4, block_size, 1),
                }
            }
            QuantFormat::Int8PerChannel => (kind::INT8_CHANNEL, k, 1),
            QuantFormat::Int8PerBlock { block_size } => (kind::INT8_BLOCK, block_size, 1),
            QuantFormat::Fp8E4M3 { block_size } | QuantFormat::Fp8E5M2 { block_size } => {
                let decode = if matches!(format, QuantFormat::Fp8E4M3 { .. }) {
                    aihal_quantize::fp8::e4m3_to_f32
                } else {
                    aihal_quantize::fp8::e5m2_to_f32
                };
                lut = (0..=255u8).map(decode).collect();
                match block_size {
                    None => (kind::FP8_TENSOR, 1, 1),
                    Some(b) => (kind::FP8_BLOCK, b, 1),
                }
            }
            other => return Err(CoreError::unsupported("device upload", other)),
        };
        let words = words_of(q.data());
        let scales = non_empty(q.scales());
        let lut = non_empty(&lut);
        let bytes = 4 * (words.len() + scales.len() + lut.len() + nested_words.len() + nested_scales.len());
        Ok(Self {
            format: Some(format),
            shape: q.shape().to_vec(),
            key: LayoutKey {
                kind: key.0,
                block: key.1.max(1),
                nested_block: key.2.max(1),
            },
            data: ctx.upload(&words)?,
            scales: ctx.upload(scales)?,
            lut: ctx.upload(lut)?,
            nested: ctx.upload(&nested_words)?,
            nested_scales: ctx.upload(&nested_scales)?,
            bytes,
            _runtime: std::marker::PhantomData,
        })
    }

    /// Uploads a dense f32 matrix `[rows, cols]` (`values` row-major) for the same kernels:
    /// each value is decoded as itself, exactly.
    ///
    /// Errors: `ShapeMismatch` when `values` is not `rows * cols` long; `InvalidInput` for an
    /// empty matrix or one past 32-bit indexing; `OutOfMemory` past the largest buffer.
    pub fn dense(ctx: &Context<R>, values: &[f32], [rows, cols]: [usize; 2]) -> Result<Self> {
        let n = rows
            .checked_mul(cols)
            .ok_or_else(|| CoreError::invalid_input(format!("dense matrix [{rows}, {cols}] overflows")))?;
        if values.len() != n {
            return Err(CoreError::shape_mismatch("dense matrix values", [n], [values.len()]));
        }
        if n == 0 || u32::try_from(n).is_err() {
            return Err(CoreError::invalid_input(format!(
                "dense matrix [{rows}, {cols}] is empty or passes the kernels' 32-bit indexing"
            )));
        }
        let words: Vec<u32> = values.iter().map(|v| v.to_bits()).collect();
        Ok(Self {
            format: None,
            shape: vec![rows, cols],
            key: LayoutKey {
                kind: kind::F32,
                block: 1,
                nested_block: 1,
            },
            data: ctx.upload(&words)?,
            scales: ctx.upload(&[0.0f32])?,
            lut: ctx.upload(&[0.0f32])?,
            nested: ctx.upload(&[0u32])?,
            nested_scales: ctx.upload(&[0.0f32])?,
            bytes: 4 * (n + 4),
            _runtime: std::marker::PhantomData,
        })
    }

    /// The format; `None` for a dense f32 matrix ([`DeviceQuantized::dense`]).
    pub fn format(&self) -> Option<QuantFormat> {
        self.format
    }

    /// The logical shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The number of logical elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The row length (the last dimension).
    pub fn row_len(&self) -> usize {
        self.shape.last().copied().unwrap_or(1)
    }

    /// Bytes held on the device.
    pub fn device_bytes(&self) -> usize {
        self.bytes
    }

    /// The five arrays every decoding kernel takes, with the lengths that were uploaded.
    pub(crate) fn args(&self) -> [ArrayArg<R>; 5] {
        [
            self.data.arg(),
            self.scales.arg(),
            self.lut.arg(),
            self.nested.arg(),
            self.nested_scales.arg(),
        ]
    }
}
