//! A [`QuantizedTensor`] uploaded to a device, exactly as packed.

use aihal_core::{CoreError, Result};
use aihal_quantize::{QuantFormat, QuantizedTensor};
use cubecl::prelude::*;

use crate::decode::kind;
use crate::formats::{facts, table_values};
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

/// Whether [`DeviceQuantized::upload`] takes `q` on `ctx`'s device, and why not: NF4 double
/// quantization without its nested absmax, a packed
/// buffer larger than the device's largest buffer, or more elements than 32-bit indexing
/// reaches.
pub fn device_support<R: Runtime>(ctx: &Context<R>, q: &QuantizedTensor) -> std::result::Result<(), String> {
    let format = q.format();
    let facts = facts(format, q.row_len());
    if facts.kind == kind::NF4_DOUBLE && q.nested().is_none() {
        return Err("NF4 with double quantization needs its nested absmax (QuantizedTensor::with_nested)".into());
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
        let facts = facts(format, k);
        let mut lut = table_values(facts.table)?;
        let mut nested_words = vec![0u32];
        let mut nested_scales = vec![0.0f32];
        let mut nested_block = 1;
        if facts.kind == kind::NF4_DOUBLE {
            let n = q.nested().ok_or_else(|| {
                CoreError::invalid_input(
                    "NF4 with double quantization needs its nested absmax (QuantizedTensor::with_nested)",
                )
            })?;
            lut.extend_from_slice(&n.code);
            nested_words = words_of(&n.codes);
            nested_scales.clone_from(&n.scales);
            nested_scales.push(n.offset);
            nested_block = n.block_size;
        }
        let words = words_of(q.data());
        let scales = non_empty(q.scales());
        let lut = non_empty(&lut);
        let bytes = 4 * (words.len() + scales.len() + lut.len() + nested_words.len() + nested_scales.len());
        Ok(Self {
            format: Some(format),
            shape: q.shape().to_vec(),
            key: LayoutKey {
                kind: facts.kind,
                block: facts.block,
                nested_block: nested_block.max(1),
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
