//! NF4 (QLoRA / bitsandbytes): 4-bit codes into the NormalFloat code book, two per byte,
//! **first element in the high nibble**, over the flattened tensor; one f32 absmax per
//! block of `block_size` values (a power of two from 32 to 4096), the last block possibly
//! partial; value = `NF4_CODE[code] * absmax`. With double quantization the absmax values
//! are themselves kept in 8 bits ([`NestedAbsmax`]) and the f32 scales are their decoded
//! values. The code book, quantizer and double quantization are in [`crate::nf4`].

use aihal_core::Result;

use super::{check_block, Dims, Quantized};
use crate::format::QuantFormat;
use crate::nf4::NF4_CODE;

/// `(data bytes, scale count)`.
pub(crate) fn lens(format: QuantFormat, block_size: usize, d: Dims) -> Result<(usize, usize)> {
    check_block(format, block_size, Some(32))?;
    Ok((d.numel.div_ceil(2), d.numel.div_ceil(block_size)))
}

pub(crate) fn quantize(x: &[f32], block_size: usize, double_quant: bool) -> Quantized {
    let (bytes, absmax) = crate::nf4::quantize(x, block_size);
    if double_quant {
        let n = crate::nf4::double_quantize(&absmax);
        let decoded = crate::nf4::decode_nested(&n);
        (bytes, decoded, Some(n))
    } else {
        (bytes, absmax, None)
    }
}

pub(crate) fn dequantize(data: &[u8], scales: &[f32], block_size: usize, out: &mut [f32]) {
    crate::nf4::dequantize(data, scales, block_size, out);
}

/// Values `k0 ..` of row `n` of a `[N, k]` tensor.
pub(crate) fn decode_range(
    data: &[u8],
    scales: &[f32],
    block_size: usize,
    k: usize,
    n: usize,
    k0: usize,
    out: &mut [f32],
) {
    for (i, o) in out.iter_mut().enumerate() {
        let flat = n * k + k0 + i;
        let byte = data[flat / 2];
        let code = if flat.is_multiple_of(2) { byte >> 4 } else { byte & 0xF };
        *o = NF4_CODE[code as usize] * scales[flat / block_size];
    }
}
