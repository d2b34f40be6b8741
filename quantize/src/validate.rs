//! Checks on the values inside a packed tensor that came from outside (a file), so that a
//! corrupt file is an error instead of NaNs or wild values in a model.

use aihal_core::{CoreError, Result};
use half::f16;

use crate::format::QuantFormat;
use crate::ggml;
use crate::tensor::QuantizedTensor;

impl QuantizedTensor {
    /// Checks the stored values, not just the lengths: every scale (f32, or the f16 scale
    /// inside GGML blocks) is finite, ternary codes are in 0..=2, and FP8 bytes are not NaN
    /// (or infinity for E5M2). Loaders call this; tensors made by [`crate::quantize`] always
    /// pass. `InvalidInput` names the first offending position.
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
        let f16_at = |block: &[u8], at: usize| f16::from_le_bytes([block[at], block[at + 1]]);
        match self.format() {
            QuantFormat::Q4_0 | QuantFormat::Q8_0 | QuantFormat::Tq2_0 => {
                let (bytes, at) = match self.format() {
                    QuantFormat::Q4_0 => (ggml::Q4_0_BYTES, 0),
                    QuantFormat::Q8_0 => (ggml::Q8_0_BYTES, 0),
                    _ => (ggml::TQ2_0_BYTES, 64),
                };
                for (i, b) in data.chunks_exact(bytes).enumerate() {
                    let d = f16_at(b, at);
                    if !d.is_finite() {
                        return bad(format!("block {i} has scale {d}"));
                    }
                    if self.format() == QuantFormat::Tq2_0 {
                        if let Some(j) = b[..64].iter().position(|&q| has_code_3(q)) {
                            return bad(format!("block {i} byte {j} holds code 3 (codes are 0..=2)"));
                        }
                    }
                }
            }
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
        Ok(())
    }
}

fn has_code_3(b: u8) -> bool {
    // A 2-bit field equal to 3 has both bits set.
    (b & (b >> 1) & 0x55) != 0
}
