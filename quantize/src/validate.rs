//! Checks on the values inside a packed tensor that came from outside (a file), so that a
//! corrupt file is an error instead of NaNs, infinities or wild values in a model.

use aihal_core::{CoreError, Result};

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
        match crate::formats::first_bad_value(self) {
            Some(what) => bad(what),
            None => Ok(()),
        }
    }
}
