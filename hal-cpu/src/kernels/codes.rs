//! The layout facts the kernels read directly: block sizes in bytes, the f16 block scale, and
//! NF4's levels on the int8 grid of the int8-activation path.

pub(crate) use aihal_quantize::ggml::{
    IQ4_LEVELS, IQ4_NL_BYTES as IQ4_NL_BLOCK_BYTES, IQ4_XS_BYTES as IQ4_XS_BLOCK_BYTES, Q2_K_BYTES as Q2_K_BLOCK_BYTES,
    Q3_K_BYTES as Q3_K_BLOCK_BYTES, Q4_0_BYTES as Q4_0_BLOCK_BYTES, Q4_1_BYTES as Q4_1_BLOCK_BYTES,
    Q4_K_BYTES as Q4_K_BLOCK_BYTES, Q5_0_BYTES as Q5_0_BLOCK_BYTES, Q5_1_BYTES as Q5_1_BLOCK_BYTES,
    Q5_K_BYTES as Q5_K_BLOCK_BYTES, Q6_K_BYTES as Q6_K_BLOCK_BYTES, Q8_0_BYTES as Q8_0_BLOCK_BYTES,
    TQ2_0_BYTES as TQ2_0_BLOCK_BYTES,
};
/// The 16 NormalFloat4 levels, indexed by the 4-bit code: aihal-quantize's code book, so the
/// kernels and the quantizer can never disagree.
pub(crate) use aihal_quantize::nf4::NF4_CODE as NF4_LEVELS;

/// The NF4 levels on the int8 grid of the int8-activation path: `round(127 * level)`, so a
/// weight of code `c` in a block with absmax `a` counts as `NF4_I8[c] * (a / 127)`. Each
/// entry is within 0.47 of `127 * level`: each weight moves by at most 0.0037 of its block's
/// absmax, against up to 0.152 for the NF4 rounding itself.
pub(crate) const NF4_I8: [i8; 16] = {
    let mut t = [0i8; 16];
    let mut i = 0;
    while i < 16 {
        // In range: every level is in [-1, 1].
        t[i] = (127.0 * NF4_LEVELS[i]).round() as i8;
        i += 1;
    }
    t
};

/// Reads the little-endian f16 at `bytes[0..2]` as f32.
#[inline]
pub(crate) fn f16_at(bytes: &[u8]) -> f32 {
    half::f16::from_le_bytes([bytes[0], bytes[1]]).to_f32()
}

/// Decodes values `k0 .. k0 + out.len()` of row `n` of `w` as the layout contract defines
/// them: [`aihal_quantize::decode::decode_row_into`] for arguments the matmul entry points
/// have already checked (`aihal_reference::check_matmul`), so it cannot fail here.
#[inline]
pub(crate) fn decode_row_into(w: &aihal_quantize::QuantizedTensor, n: usize, k0: usize, out: &mut [f32]) {
    aihal_quantize::decode::decode_row_into(w, n, k0, out)
        .expect("the matmul entry point checked the weight and the row range (check_matmul)");
}

/// The bytes of row `n` of `w`, a GGML block format (whole blocks per row, as the matmul entry
/// points have checked).
pub(crate) fn block_row(w: &aihal_quantize::QuantizedTensor, n: usize) -> &[u8] {
    let (values, bytes) =
        aihal_quantize::ggml::block_layout(w.format()).expect("the row kernels of a GGML block format");
    let len = w.row_len() / values * bytes;
    &w.data()[n * len..(n + 1) * len]
}

/// Block `b`'s additive term in a Q4_1 row: its f16 `m` (value `d · q + m`).
pub(crate) fn q4_1_term(row: &[u8], b: usize) -> f32 {
    f16_at(&row[b * Q4_1_BLOCK_BYTES + 2..])
}

/// Block `b`'s additive term in a Q4_K row (`b / 8` its super-block, `b % 8` the sub-block):
/// `-(dmin · m)`, `m` the sub-block's minimum (value `(d · sc) · q - dmin · m`; adding the
/// negated product rounds as the subtraction).
pub(crate) fn q4_k_term(row: &[u8], b: usize) -> f32 {
    let blk = &row[b / 8 * Q4_K_BLOCK_BYTES..][..Q4_K_BLOCK_BYTES];
    let (_, m) = super::generic::q4_k_scale_min(&blk[4..16], b % 8);
    -(f16_at(&blk[2..]) * f32::from(m))
}

/// Values decoded per call of the format's scalar decoder by [`ChunkedRow`]: a K-quant's
/// super-block, or 8 blocks of 32.
const CHUNKED: usize = 256;

/// One weight row handed to a kernel 32 values at a time, decoded [`CHUNKED`] at a time by the
/// format's scalar decoder ([`decode_row_into`]): the decoder's fixed cost is paid once per 256
/// values, and a K-quant's super-block is decoded once, not once for each 32 of its values.
/// For the exact kernels of formats without a decoder in registers.
pub(crate) struct ChunkedRow<'a> {
    w: &'a aihal_quantize::QuantizedTensor,
    n: usize,
    /// The values of the row in `buf`: `start .. start + CHUNKED` (`usize::MAX` before the
    /// first decode).
    start: std::cell::Cell<usize>,
    buf: std::cell::RefCell<[f32; CHUNKED]>,
}

impl<'a> ChunkedRow<'a> {
    /// Row `n` of `w` (checked by the matmul entry point, as for [`decode_row_into`]).
    pub(crate) fn new(w: &'a aihal_quantize::QuantizedTensor, n: usize) -> Self {
        Self {
            w,
            n,
            start: std::cell::Cell::new(usize::MAX),
            buf: std::cell::RefCell::new([0.0; CHUNKED]),
        }
    }

    /// Blocks of 32 that lie entirely inside the row.
    pub(crate) fn full_blocks(&self) -> usize {
        self.w.row_len() / 32
    }

    /// Values `32 b .. 32 b + 32` of the row, `b < full_blocks()`: what [`decode_row_into`]
    /// gives for them (fastest when `b` goes up one at a time).
    pub(crate) fn block(&self, b: usize) -> [f32; 32] {
        let k0 = 32 * b;
        let start = k0 / CHUNKED * CHUNKED;
        let mut buf = self.buf.borrow_mut();
        if self.start.get() != start {
            // Whole blocks of 32 only: a K-quant's rows are whole super-blocks, and the
            // other formats decode any multiple of 32 values.
            let len = CHUNKED.min(32 * self.full_blocks() - start);
            decode_row_into(self.w, self.n, start, &mut buf[..len]);
            self.start.set(start);
        }
        let mut out = [0.0f32; 32];
        out.copy_from_slice(&buf[k0 - start..][..32]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nf4_int8_levels_round_the_code_book() {
        assert_eq!(
            NF4_I8,
            [-127, -88, -67, -50, -36, -23, -12, 0, 10, 20, 31, 43, 56, 71, 92, 127]
        );
        for (&q, &l) in NF4_I8.iter().zip(&NF4_LEVELS) {
            assert!((f32::from(q) - 127.0 * l).abs() <= 0.47, "{q} vs {l}");
        }
    }
}
