//! The slice-level entry points every kernel is tested against.

use std::borrow::Cow;

use aihal_core::{CoreError, Result};

use crate::format::QuantFormat;
use crate::formats;
use crate::tensor::{expected_lens, QuantizedTensor};

/// What to do with NaN and ±infinity in the input of a quantizer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NonFinitePolicy {
    /// Answer `InvalidInput` naming the first non-finite value's index (the default).
    #[default]
    Reject,
    /// Replace NaN with 0 and ±infinity with ± the largest finite magnitude in the tensor
    /// (0 if there is none), then quantize.
    Sanitize,
}

/// Quantizes `data` (a row-major tensor of `shape`) to `format`, rejecting non-finite
/// values.
///
/// The result is laid out as the [layout contract](mod@crate::format) says. Errors:
/// `ShapeMismatch` when `data.len()` is not the product of `shape`; `InvalidConfig` for a
/// disallowed block size; `InvalidInput` for a row length the format cannot block (GGML
/// formats need rows that are multiples of their block: 32 or 256 values), for a NaN or infinity (naming its
/// index), and for magnitudes whose GGML f16 block scale would overflow.
///
/// ```
/// use aihal_quantize::{dequantize, quantize, QuantFormat};
///
/// let w: Vec<f32> = (0..64).map(|i| (i as f32 - 32.0) / 8.0).collect();
/// let q = quantize(QuantFormat::Q8_0, &w, &[2, 32])?;
/// assert_eq!(q.data().len(), 2 * 34);
/// let back = dequantize(&q)?;
/// assert!(w.iter().zip(&back).all(|(a, b)| (a - b).abs() <= 4.0 / 127.0));
/// # Ok::<(), aihal_core::CoreError>(())
/// ```
pub fn quantize(format: QuantFormat, data: &[f32], shape: &[usize]) -> Result<QuantizedTensor> {
    quantize_with(format, data, shape, NonFinitePolicy::Reject)
}

/// [`quantize`] with an explicit [`NonFinitePolicy`].
pub fn quantize_with(
    format: QuantFormat,
    data: &[f32],
    shape: &[usize],
    policy: NonFinitePolicy,
) -> Result<QuantizedTensor> {
    let (want_data, want_scales) = expected_lens(format, shape)?;
    let numel: usize = shape.iter().product();
    if data.len() != numel {
        return Err(CoreError::shape_mismatch(
            format!("{format} input values for shape {shape:?}"),
            [numel],
            [data.len()],
        ));
    }
    let x = apply_policy(data, policy)?;
    let x: &[f32] = &x;
    let k = shape.last().copied().unwrap_or(1);
    let (bytes, scales, nested) = formats::quantize(format, x, k)?;
    debug_assert_eq!(
        (bytes.len(), scales.len()),
        (want_data, want_scales),
        "{format} {shape:?}"
    );
    let t = QuantizedTensor::from_parts(format, shape.to_vec(), bytes, scales)?;
    match nested {
        Some(n) => t.with_nested(n),
        None => Ok(t),
    }
}

fn apply_policy(data: &[f32], policy: NonFinitePolicy) -> Result<Cow<'_, [f32]>> {
    let first_bad = first_non_finite(data);
    let Some(i) = first_bad else {
        return Ok(Cow::Borrowed(data));
    };
    match policy {
        NonFinitePolicy::Reject => Err(CoreError::invalid_input(format!(
            "non-finite value {} at index {i} (of {}); clean the input or quantize with NonFinitePolicy::Sanitize",
            data[i],
            data.len()
        ))),
        NonFinitePolicy::Sanitize => {
            let big = data
                .iter()
                .filter(|v| v.is_finite())
                .fold(0.0f32, |m, v| m.max(v.abs()));
            Ok(Cow::Owned(
                data.iter()
                    .map(|&v| {
                        if v.is_nan() {
                            0.0
                        } else if v.is_infinite() {
                            big.copysign(v)
                        } else {
                            v
                        }
                    })
                    .collect(),
            ))
        }
    }
}

fn first_non_finite(data: &[f32]) -> Option<usize> {
    const CHUNK: usize = 1 << 14;
    // A branch-free test per chunk (vectorizes), then the exact index in the first bad chunk.
    let bad = |c: &[f32]| c.iter().fold(false, |acc, v| acc | !v.is_finite());
    let chunk = if data.len() >= crate::par::PAR_MIN_ELEMS {
        use rayon::prelude::*;
        data.par_chunks(CHUNK).position_first(bad)
    } else {
        data.chunks(CHUNK).position(bad)
    }?;
    let start = chunk * CHUNK;
    data[start..].iter().position(|v| !v.is_finite()).map(|i| start + i)
}

/// Dequantizes `q` into a new `Vec` of `q.numel()` f32 values (row-major, logical shape).
pub fn dequantize(q: &QuantizedTensor) -> Result<Vec<f32>> {
    let mut out = vec![0.0f32; q.numel()];
    dequantize_into(q, &mut out)?;
    Ok(out)
}

/// Dequantizes `q` into `out`, which must hold exactly `q.numel()` values
/// (`ShapeMismatch` otherwise; `out` is then left untouched).
///
/// Large tensors are dequantized in parallel on rayon's pool.
pub fn dequantize_into(q: &QuantizedTensor, out: &mut [f32]) -> Result<()> {
    if out.len() != q.numel() {
        return Err(CoreError::shape_mismatch(
            format!("{} dequantize output for shape {:?}", q.format(), q.shape()),
            [q.numel()],
            [out.len()],
        ));
    }
    formats::dequantize(q, out)
}
