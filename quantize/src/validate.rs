//! Checks on the values inside a packed tensor that came from outside (a file), so that a
//! corrupt file is an error instead of NaNs, infinities or wild values in a model.

use aihal_core::{CoreError, Result};

use crate::format::QuantFormat;
use crate::fp8::{E4M3_MAX, E4M3_TABLE, E5M2_MAX, E5M2_TABLE};
use crate::tensor::QuantizedTensor;

impl QuantizedTensor {
    /// Checks the stored values, not just the lengths: every scale (f32, or the f16 scale
    /// inside GGML blocks) is finite, ternary codes are in 0..=2, FP8 bytes are not NaN (or
    /// infinity for E5M2), and no int8 or FP8 code times its scale overflows f32 (a finite
    /// scale such as 3e38 would make [`crate::dequantize`] return ±inf). A tensor that passes
    /// dequantizes to finite values only. Loaders call this; tensors made by
    /// [`crate::quantize`] from finite input pass, except int8 blocks whose absmax is within
    /// a rounding of `f32::MAX` (`absmax / 127 * 127` is then infinite, and so is their
    /// dequantized maximum, which this reports). `InvalidInput` names the first offending
    /// position (scale index, block, byte or value index) and what was found there.
    pub fn validate_values(&self) -> Result<()> {
        let bad = |what: String| Err(CoreError::invalid_input(format!("{} tensor: {what}", self.format())));
        if let Some(i) = self.scales().iter().position(|s| !s.is_finite()) {
            return bad(format!("scale {i} is {}", self.scales()[i]));
        }
        if let Some(n) = self.nested() {
            if !n.offset.is_finite() || n.scales.iter().chain(&n.code).any(|v| !v.is_finite()) {
                return bad("non-finite value in the nested absmax".into());
            }
        }
        let data = self.data();
        if let Some(b) = crate::formats::block_format(self.format()) {
            return match b.first_bad_value(data) {
                Some(what) => bad(what),
                None => Ok(()),
            };
        }
        match self.format() {
            QuantFormat::Ternary => {
                if let Some(j) = data.iter().position(|&q| has_code_3(q)) {
                    return bad(format!("byte {j} holds code 3 (codes are 0..=2)"));
                }
            }
            QuantFormat::Fp8E4M3 { .. } => {
                if let Some(j) = data.iter().position(|&b| b & 0x7F == 0x7F) {
                    return bad(format!("value {j} is an E4M3 NaN"));
                }
            }
            QuantFormat::Fp8E5M2 { .. } => {
                if let Some(j) = data.iter().position(|&b| b & 0x7F >= 0x7C) {
                    return bad(format!("value {j} is an E5M2 infinity or NaN"));
                }
            }
            _ => {}
        }
        // The formats whose value is `code * scale` with codes larger than 1 in magnitude
        // (NF4 codes and ternary levels are at most 1, GGML scales are f16).
        let (max_code, decode, block): (f32, fn(u8) -> f32, Option<usize>) = match self.format() {
            QuantFormat::Int8PerChannel => (128.0, i8_code, Some(self.row_len().max(1))),
            QuantFormat::Int8PerBlock { block_size } => (128.0, i8_code, Some(block_size)),
            QuantFormat::Fp8E4M3 { block_size } => (E4M3_MAX, |b| E4M3_TABLE[usize::from(b)], block_size),
            QuantFormat::Fp8E5M2 { block_size } => (E5M2_MAX, |b| E5M2_TABLE[usize::from(b)], block_size),
            _ => return Ok(()),
        };
        if let Some((scale, value)) = first_overflow(data, self.scales(), self.row_len(), block, max_code, decode) {
            let s = self.scales()[scale];
            return bad(format!(
                "scale {scale} is {s:e}: times the code {} of value {value} it overflows f32 \
                 (a scale must keep code × scale finite; for the largest code magnitude {max_code} \
                 that is |scale| <= {:e})",
                decode(data[value]),
                f32::MAX / max_code
            ));
        }
        Ok(())
    }
}

fn i8_code(b: u8) -> f32 {
    f32::from(b as i8)
}

/// The first `(scale index, value index)` whose product `decode(byte) * scale` is not
/// finite, for one scale per tensor (`block` `None`) or one per block of a row of `k`.
/// Scales small enough that even the largest code magnitude stays finite are skipped
/// without looking at their values.
fn first_overflow(
    data: &[u8],
    scales: &[f32],
    k: usize,
    block: Option<usize>,
    max_code: f32,
    decode: fn(u8) -> f32,
) -> Option<(usize, usize)> {
    let safe = |s: f32| (s.abs() * max_code).is_finite();
    let in_range = |s: f32, range: std::ops::Range<usize>| {
        let start = range.start;
        data[range]
            .iter()
            .position(|&b| !(decode(b) * s).is_finite())
            .map(|i| start + i)
    };
    let Some(block) = block else {
        let s = *scales.first()?;
        return if safe(s) {
            None
        } else {
            in_range(s, 0..data.len()).map(|i| (0, i))
        };
    };
    if k == 0 || block == 0 {
        return None;
    }
    let per_row = k.div_ceil(block);
    scales.iter().enumerate().find_map(|(i, &s)| {
        if safe(s) {
            return None;
        }
        let (row, j) = (i / per_row, i % per_row);
        let start = row * k + j * block;
        let end = (start + block).min((row + 1) * k).min(data.len());
        in_range(s, start.min(end)..end).map(|v| (i, v))
    })
}

use crate::formats::tq2_0::has_code_3;
