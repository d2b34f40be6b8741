//! BitNet b1.58 ternary: 2 bits per value, four per byte, value `i` in bits `2 * (i % 4)`
//! of byte `i / 4`, code `q` in 0..=2 over the flattened tensor; one absmean scale per
//! tensor; value = `scale * (q - 1)`. Quantizer: `scale = max(mean |x|, 1e-5)`,
//! `q = clamp(round_half_even(x / scale), -1, 1) + 1` ([`crate::linear`]).

use super::{tq2_0::has_code_3, Dims, Quantized};

/// `(data bytes, scale count)`.
pub(crate) fn lens(d: Dims) -> (usize, usize) {
    (d.numel.div_ceil(4), 1)
}

pub(crate) fn quantize(x: &[f32]) -> Quantized {
    let (bytes, scale) = crate::linear::quantize_ternary(x);
    (bytes, vec![scale], None)
}

pub(crate) fn dequantize(data: &[u8], scales: &[f32], out: &mut [f32]) {
    crate::linear::dequantize_ternary(data, scales[0], out);
}

/// Values `k0 ..` of row `n` of a `[N, k]` tensor.
pub(crate) fn decode_range(data: &[u8], scales: &[f32], k: usize, n: usize, k0: usize, out: &mut [f32]) {
    let scale = scales[0];
    for (i, o) in out.iter_mut().enumerate() {
        let flat = n * k + k0 + i;
        let q = (data[flat / 4] >> (2 * (flat % 4))) & 3;
        *o = scale * (f32::from(q) - 1.0);
    }
}

/// The first byte holding code 3, which is never written.
pub(crate) fn first_bad_value(data: &[u8]) -> Option<String> {
    data.iter()
        .position(|&q| has_code_3(q))
        .map(|j| format!("byte {j} holds code 3 (codes are 0..=2)"))
}
