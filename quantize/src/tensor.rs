//! `QuantizedTensor`: what every format produces and every kernel consumes.

use aihal_core::{CoreError, DType, Result, TensorBuffer};

use crate::format::QuantFormat;

/// The 8-bit form of NF4 absmax values under double quantization (QLoRA): blocks of 256
/// absmax values, each stored as an index into `code` (bitsandbytes' dynamic 8-bit map),
/// scaled by its block's `scales` entry, plus `offset` (the mean subtracted before
/// quantizing).
#[derive(Clone, Debug, PartialEq)]
pub struct NestedAbsmax {
    /// One byte per first-level block.
    pub codes: Vec<u8>,
    /// One scale per 256 codes (`ceil(codes.len() / 256)`).
    pub scales: Vec<f32>,
    /// The 256-entry code book the bytes index.
    pub code: Vec<f32>,
    /// The mean that was subtracted from the absmax values.
    pub offset: f32,
    /// Codes per nested block (256 in QLoRA).
    pub block_size: usize,
}

/// A quantized tensor: format, logical shape, packed bytes and f32 scales, laid out as the
/// [layout contract](mod@crate::format) says.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizedTensor {
    format: QuantFormat,
    shape: Vec<usize>,
    data: Vec<u8>,
    scales: Vec<f32>,
    nested: Option<NestedAbsmax>,
}

impl QuantizedTensor {
    /// Assembles a tensor from its parts, checking every length against the shape and format
    /// (`ShapeMismatch` on disagreement, `InvalidConfig` on a bad block size).
    pub fn from_parts(format: QuantFormat, shape: Vec<usize>, data: Vec<u8>, scales: Vec<f32>) -> Result<Self> {
        let (want_data, want_scales) = expected_lens(format, &shape)?;
        if data.len() != want_data {
            return Err(CoreError::shape_mismatch(
                format!("{format} packed bytes for shape {shape:?}"),
                [want_data],
                [data.len()],
            ));
        }
        if scales.len() != want_scales {
            return Err(CoreError::shape_mismatch(
                format!("{format} scales for shape {shape:?}"),
                [want_scales],
                [scales.len()],
            ));
        }
        Ok(Self {
            format,
            shape,
            data,
            scales,
            nested: None,
        })
    }

    /// Attaches the 8-bit form of the absmax values (NF4 double quantization only).
    pub fn with_nested(mut self, nested: NestedAbsmax) -> Result<Self> {
        check_nested(self.format, self.scales.len(), &nested)?;
        self.nested = Some(nested);
        Ok(self)
    }

    /// Assembles a double-quantized NF4 tensor from its packed codes and its 8-bit absmax;
    /// the f32 scales are decoded from `nested` (`code[q] * scale + offset`). Lengths are
    /// checked as in [`from_parts`](Self::from_parts) and [`with_nested`](Self::with_nested),
    /// all of them before anything is allocated, so a shape that disagrees with the buffers
    /// (however large) is a `ShapeMismatch`, never an allocation of its size.
    pub fn from_nested(format: QuantFormat, shape: Vec<usize>, data: Vec<u8>, nested: NestedAbsmax) -> Result<Self> {
        let (want_data, want_scales) = expected_lens(format, &shape)?;
        if data.len() != want_data {
            return Err(CoreError::shape_mismatch(
                format!("{format} packed bytes for shape {shape:?}"),
                [want_data],
                [data.len()],
            ));
        }
        check_nested(format, want_scales, &nested)?;
        // Every length now agrees with the buffers handed in: the decoded scales are as
        // many as `nested.codes`, which the caller already holds.
        let scales = crate::nf4::decode_nested(&nested);
        let mut t = Self::from_parts(format, shape, data, scales)?;
        t.nested = Some(nested);
        Ok(t)
    }

    /// The format.
    pub fn format(&self) -> QuantFormat {
        self.format
    }

    /// The logical shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The packed bytes.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// The f32 scales (empty for the GGML formats, whose scales are inline).
    pub fn scales(&self) -> &[f32] {
        &self.scales
    }

    /// The 8-bit absmax of an NF4 tensor with double quantization.
    pub fn nested(&self) -> Option<&NestedAbsmax> {
        self.nested.as_ref()
    }

    /// The number of logical elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The length of a row (the last dimension; 1 for a scalar).
    pub fn row_len(&self) -> usize {
        self.shape.last().copied().unwrap_or(1)
    }

    /// The number of rows (`numel / row_len`).
    pub fn rows(&self) -> usize {
        self.numel().checked_div(self.row_len()).unwrap_or(0)
    }

    /// Bytes of storage as it would be kept: packed data plus scales (for double-quantized
    /// NF4, the 8-bit absmax and its nested scales instead of the f32 absmax).
    pub fn storage_bytes(&self) -> usize {
        let scales = match &self.nested {
            Some(n) => n.codes.len() + 4 * n.scales.len() + 4,
            None => 4 * self.scales.len(),
        };
        self.data.len() + scales
    }

    /// Storage bits per logical weight.
    pub fn bits_per_weight(&self) -> f64 {
        if self.numel() == 0 {
            return 0.0;
        }
        8.0 * self.storage_bytes() as f64 / self.numel() as f64
    }

    /// The packed bytes as a `u8` [`TensorBuffer`] (shape `[data.len()]`), for device kernels.
    pub fn data_buffer(&self) -> Result<TensorBuffer> {
        TensorBuffer::from_bytes(&self.data, &[self.data.len()], DType::U8)
    }

    /// The scales as an `f32` [`TensorBuffer`] (shape `[scales.len()]`).
    pub fn scales_buffer(&self) -> Result<TensorBuffer> {
        TensorBuffer::from_slice(&self.scales, &[self.scales.len()])
    }

    /// The rows of `parts` stacked in order into one `[Σ rows, K]` tensor: the same weights
    /// as the parts, so that one matrix product over it gives the parts' products side by
    /// side (projections that share an input run as one call).
    ///
    /// Errors: `InvalidInput` when `parts` is empty, a part is not rank 2, or the parts
    /// differ in format or row length; `Unsupported` for a format whose bytes or scales are
    /// not whole rows (packed across rows, or one scale for the whole tensor, as `Ternary`
    /// and NF4 over rows that are not whole blocks), and for double-quantized NF4.
    pub fn stack_rows(parts: &[&QuantizedTensor]) -> Result<Self> {
        let first = parts
            .first()
            .ok_or_else(|| CoreError::invalid_input("stack_rows: no tensors to stack"))?;
        let (format, k) = (first.format, first.row_len());
        let mut rows = 0usize;
        for (i, p) in parts.iter().enumerate() {
            if p.shape.len() != 2 || p.format != format || p.row_len() != k {
                return Err(CoreError::invalid_input(format!(
                    "stack_rows: tensor {i} is {} {:?}, where tensor 0 is {format} [.., {k}] (rank 2 each, one format and row length)",
                    p.format, p.shape
                )));
            }
            if p.nested.is_some() {
                return Err(CoreError::unsupported(
                    "stack_rows",
                    format!("{format} with double quantization (its nested absmax spans rows)"),
                ));
            }
            rows = rows
                .checked_add(p.rows())
                .ok_or_else(|| CoreError::invalid_input("stack_rows: the row count overflows usize"))?;
        }
        // Whole rows: the lengths of every part and of the whole are their rows times one
        // row's.
        let (row_data, row_scales) = expected_lens(format, &[1, k])?;
        let whole = |r: usize| -> Result<bool> {
            let (d, s) = expected_lens(format, &[r, k])?;
            Ok(r.checked_mul(row_data) == Some(d) && r.checked_mul(row_scales) == Some(s))
        };
        let mut all_whole = whole(rows)?;
        for p in parts {
            all_whole &= whole(p.rows())?;
        }
        if !all_whole {
            return Err(CoreError::unsupported(
                "stack_rows",
                format!("{format} over rows of {k} (its bytes or scales are not whole rows)"),
            ));
        }
        let mut data = Vec::with_capacity(rows * row_data);
        let mut scales = Vec::with_capacity(rows * row_scales);
        for p in parts {
            data.extend_from_slice(&p.data);
            scales.extend_from_slice(&p.scales);
        }
        Self::from_parts(format, vec![rows, k], data, scales)
    }

    /// Splits the tensor into its parts.
    pub fn into_parts(self) -> (QuantFormat, Vec<usize>, Vec<u8>, Vec<f32>) {
        (self.format, self.shape, self.data, self.scales)
    }
}

/// Checks that `nested` fits a `format` tensor with `scales` first-level blocks.
fn check_nested(format: QuantFormat, scales: usize, nested: &NestedAbsmax) -> Result<()> {
    if !matches!(format, QuantFormat::Nf4 { double_quant: true, .. }) {
        return Err(CoreError::invalid_input(format!(
            "nested absmax given for {format}, which is not NF4 with double quantization"
        )));
    }
    if nested.codes.len() != scales
        || nested.block_size == 0
        || nested.scales.len() != nested.codes.len().div_ceil(nested.block_size)
        || nested.code.len() != 256
    {
        return Err(CoreError::shape_mismatch(
            "NF4 nested absmax (codes, scales, code book)",
            [scales, scales.div_ceil(nested.block_size.max(1)), 256],
            [nested.codes.len(), nested.scales.len(), nested.code.len()],
        ));
    }
    Ok(())
}

/// `(data bytes, scale count)` a tensor of `shape` must have in `format` (the registry in
/// `formats/` answers).
pub(crate) fn expected_lens(format: QuantFormat, shape: &[usize]) -> Result<(usize, usize)> {
    crate::formats::lens(format, shape)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_follow_the_layout_contract() {
        let cases = [
            (QuantFormat::Q4_0, vec![4, 64], 4 * 2 * 18, 0),
            (QuantFormat::Q8_0, vec![2, 32], 2 * 34, 0),
            (QuantFormat::Tq2_0, vec![1, 512], 2 * 66, 0),
            (
                QuantFormat::Nf4 {
                    block_size: 64,
                    double_quant: false,
                },
                vec![3, 43],
                65,
                3,
            ),
            (QuantFormat::Ternary, vec![5, 3], 4, 1),
            (QuantFormat::Int8PerChannel, vec![3, 7], 21, 3),
            (QuantFormat::Int8PerBlock { block_size: 4 }, vec![3, 7], 21, 6),
            (QuantFormat::Fp8E4M3 { block_size: None }, vec![3, 7], 21, 1),
            (QuantFormat::Fp8E5M2 { block_size: Some(3) }, vec![2, 7], 14, 6),
        ];
        for (format, shape, data, scales) in cases {
            assert_eq!(
                expected_lens(format, &shape).unwrap(),
                (data, scales),
                "{format} {shape:?}"
            );
            let t = QuantizedTensor::from_parts(format, shape.clone(), vec![0; data], vec![1.0; scales]).unwrap();
            assert_eq!(t.numel(), shape.iter().product::<usize>());
            let err =
                QuantizedTensor::from_parts(format, shape.clone(), vec![0; data + 1], vec![1.0; scales]).unwrap_err();
            assert!(matches!(err, CoreError::ShapeMismatch { .. }), "{format}");
            let err = QuantizedTensor::from_parts(format, shape, vec![0; data], vec![1.0; scales + 1]).unwrap_err();
            assert!(matches!(err, CoreError::ShapeMismatch { .. }), "{format}");
        }
    }

    #[test]
    fn stacked_rows_hold_the_parts_rows_in_order() {
        let values = |n: usize, k: usize, seed: f32| -> Vec<f32> {
            (0..n * k).map(|i| (i as f32 * 0.37 + seed).sin() * 3.0).collect()
        };
        for format in [
            QuantFormat::Q4_1,
            QuantFormat::Q8_0,
            QuantFormat::Q4K,
            QuantFormat::Int8PerChannel,
            QuantFormat::Int8PerBlock { block_size: 32 },
        ] {
            let k = 256;
            let parts: Vec<QuantizedTensor> = [(16, 0.0), (8, 1.0), (24, 2.0)]
                .iter()
                .map(|&(n, seed)| crate::quantize(format, &values(n, k, seed), &[n, k]).unwrap())
                .collect();
            let refs: Vec<&QuantizedTensor> = parts.iter().collect();
            let stacked = QuantizedTensor::stack_rows(&refs).unwrap();
            assert_eq!((stacked.format(), stacked.shape()), (format, &[48, k][..]), "{format}");
            let want: Vec<f32> = parts.iter().flat_map(|p| crate::dequantize(p).unwrap()).collect();
            assert_eq!(crate::dequantize(&stacked).unwrap(), want, "{format}");
        }
    }

    #[test]
    fn rows_that_cannot_stack_are_errors() {
        let t = |format, shape: Vec<usize>| {
            let (d, s) = expected_lens(format, &shape).unwrap();
            QuantizedTensor::from_parts(format, shape, vec![0; d], vec![1.0; s]).unwrap()
        };
        assert!(matches!(
            QuantizedTensor::stack_rows(&[]),
            Err(CoreError::InvalidInput { .. })
        ));
        let (a, b) = (t(QuantFormat::Q4_0, vec![2, 64]), t(QuantFormat::Q8_0, vec![2, 64]));
        assert!(matches!(
            QuantizedTensor::stack_rows(&[&a, &b]),
            Err(CoreError::InvalidInput { .. })
        ));
        let c = t(QuantFormat::Q4_0, vec![2, 32]);
        assert!(matches!(
            QuantizedTensor::stack_rows(&[&a, &c]),
            Err(CoreError::InvalidInput { .. })
        ));
        let flat = t(QuantFormat::Q4_0, vec![128]);
        assert!(matches!(
            QuantizedTensor::stack_rows(&[&flat]),
            Err(CoreError::InvalidInput { .. })
        ));
        // One scale for the whole tensor, and NF4 blocks across rows.
        let (x, y) = (t(QuantFormat::Ternary, vec![3, 3]), t(QuantFormat::Ternary, vec![2, 3]));
        assert!(matches!(
            QuantizedTensor::stack_rows(&[&x, &y]),
            Err(CoreError::Unsupported { .. })
        ));
        let nf4 = QuantFormat::Nf4 {
            block_size: 64,
            double_quant: false,
        };
        let (x, y) = (t(nf4, vec![3, 43]), t(nf4, vec![1, 43]));
        assert!(matches!(
            QuantizedTensor::stack_rows(&[&x, &y]),
            Err(CoreError::Unsupported { .. })
        ));
    }

    #[test]
    fn bad_blocks_and_rows_are_errors() {
        assert!(expected_lens(QuantFormat::Q4_0, &[2, 33]).is_err());
        assert!(expected_lens(QuantFormat::Tq2_0, &[2, 128]).is_err());
        for bad in [0, 16, 48, 8192] {
            let f = QuantFormat::Nf4 {
                block_size: bad,
                double_quant: false,
            };
            assert!(
                matches!(expected_lens(f, &[64]).unwrap_err(), CoreError::InvalidConfig(_)),
                "{bad}"
            );
        }
        assert!(expected_lens(QuantFormat::Int8PerBlock { block_size: 0 }, &[4]).is_err());
        assert!(expected_lens(QuantFormat::Q8_0, &[usize::MAX, 64]).is_err());
        // Fits in usize as a value count, not as Q8_0 bytes (34 per 32 values).
        assert!(expected_lens(QuantFormat::Q8_0, &[usize::MAX / 64 * 2, 32]).is_err());
    }

    #[test]
    fn bits_per_weight_counts_scales() {
        let t = QuantizedTensor::from_parts(QuantFormat::Q4_0, vec![1, 32], vec![0; 18], vec![]).unwrap();
        assert!((t.bits_per_weight() - 4.5).abs() < 1e-12);
        let t = QuantizedTensor::from_parts(QuantFormat::Q8_0, vec![1, 32], vec![0; 34], vec![]).unwrap();
        assert!((t.bits_per_weight() - 8.5).abs() < 1e-12);
    }
}
