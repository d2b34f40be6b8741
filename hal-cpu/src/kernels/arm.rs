//! aarch64 kernels: NEON (every aarch64 CPU), with the int8 dot product (`sdot`, FEAT_DotProd:
//! Cortex-A55/A76 and later) where the CPU reports it.
//!
//! Q8_0, Q4_0, TQ2_0 and int8 weights are decoded in registers on both paths, NF4 on the
//! int8-activation path (`tbl` on its int8 levels), FP8 (per tensor or per block of a
//! multiple of 32), Q5_0, Q4_1, Q4_K and Q6_K on the f32 path (each value rounded as the
//! format's decoder rounds it); the other formats, and NF4 on the f32 path, use the scalar
//! decode (256 values per call, handed on 32 at a time) with NEON dot products.

use std::arch::aarch64::{
    float32x4_t, int32x4_t, int8x16_t, uint16x8_t, uint32x4_t, uint8x16_t, vaddq_f32, vaddq_s32, vaddvq_f32, vandq_u16,
    vandq_u32, vandq_u8, vbslq_u16, vbslq_u32, vceqq_u16, vceqq_u32, vcvtq_f32_s32, vdupq_n_f32, vdupq_n_s32,
    vdupq_n_s8, vdupq_n_u16, vdupq_n_u32, vdupq_n_u8, vfmaq_f32, vfmaq_n_f32, vget_high_s16, vget_high_s8,
    vget_low_s16, vget_low_s8, vget_low_u16, vget_low_u8, vld1q_f32, vld1q_s8, vld1q_u8, vmovl_high_u16, vmovl_high_u8,
    vmovl_s16, vmovl_s8, vmovl_u16, vmovl_u8, vmull_s8, vmulq_f32, vmulq_n_f32, vorrq_u16, vorrq_u32, vorrq_u8,
    vpaddlq_s16, vqtbl1q_s8, vqtbl1q_u8, vreinterpretq_f32_u32, vreinterpretq_s8_u8, vreinterpretq_u32_f32,
    vreinterpretq_u8_u32, vshlq_n_u16, vshlq_n_u32, vshlq_n_u8, vshlq_u8, vshrq_n_u8, vsubq_s8, vtstq_u8, vzip1q_u8,
    vzip2q_u8,
};
use std::arch::asm;

use aihal_quantize::{QuantFormat, QuantizedTensor};

use super::{ActQ8, ExactFn, Kernels, Q8Fn};
use crate::kernels::codes::{
    block_row, decode_row_into, f16_at, q4_1_term, q4_k_term, ChunkedRow, NF4_I8, Q4_0_BLOCK_BYTES, Q4_1_BLOCK_BYTES,
    Q4_K_BLOCK_BYTES, Q5_0_BLOCK_BYTES, Q6_K_BLOCK_BYTES, Q8_0_BLOCK_BYTES, TQ2_0_BLOCK_BYTES,
};
use crate::kernels::generic::q4_k_scale_min;

/// `neon+dotprod` when the CPU has the int8 dot product, else `neon`; `+fp16` when it also has
/// FEAT_FP16 (half-precision arithmetic: E4M3 weights are decoded through f16).
pub(crate) fn detect() -> Option<&'static Kernels> {
    let cpu = super::cpu();
    if !cpu.neon {
        return None;
    }
    Some(match (cpu.dotprod, cpu.fp16) {
        (true, true) => &NEON_DOTPROD_FP16,
        (true, false) => &NEON_DOTPROD,
        (false, true) => &NEON_FP16,
        (false, false) => &NEON,
    })
}

pub(crate) static NEON: Kernels = Kernels {
    name: "neon",
    exact: exact_for,
    q8: q8_for::<false>,
    panel: |_| None,
    exact_panel: |_| None,
};

pub(crate) static NEON_DOTPROD: Kernels = Kernels {
    name: "neon+dotprod",
    exact: exact_for,
    q8: q8_for::<true>,
    panel: |_| None,
    exact_panel: |_| None,
};

pub(crate) static NEON_FP16: Kernels = Kernels {
    name: "neon+fp16",
    exact: exact_for_fp16,
    q8: q8_for::<false>,
    panel: |_| None,
    exact_panel: |_| None,
};

pub(crate) static NEON_DOTPROD_FP16: Kernels = Kernels {
    name: "neon+dotprod+fp16",
    exact: exact_for_fp16,
    q8: q8_for::<true>,
    panel: |_| None,
    exact_panel: |_| None,
};

/// The exact kernels of the sets with FEAT_FP16: E4M3 decoded through f16.
fn exact_for_fp16(format: QuantFormat) -> ExactFn {
    match format {
        QuantFormat::Fp8E4M3 { block_size } if block_size.is_none_or(|b| b.is_multiple_of(32)) => exact_e4m3_fp16,
        _ => exact_for(format),
    }
}

fn exact_for(format: QuantFormat) -> ExactFn {
    match format {
        QuantFormat::Q8_0 => exact_q8_0,
        QuantFormat::Q4_0 => exact_q4_0,
        QuantFormat::Q5_0 => exact_q5_0,
        QuantFormat::Q4_1 => exact_q4_1,
        QuantFormat::Q4K => exact_q4_k,
        QuantFormat::Q6K => exact_q6_k,
        QuantFormat::Tq2_0 => exact_tq2_0,
        QuantFormat::Int8PerChannel => exact_int8,
        QuantFormat::Int8PerBlock { block_size } if block_size.is_multiple_of(32) => exact_int8,
        QuantFormat::Fp8E4M3 { block_size } if block_size.is_none_or(|b| b.is_multiple_of(32)) => exact_e4m3,
        QuantFormat::Fp8E5M2 { block_size } if block_size.is_none_or(|b| b.is_multiple_of(32)) => exact_e5m2,
        _ => exact_chunked,
    }
}

fn q8_for<const DOT: bool>(format: QuantFormat) -> Option<Q8Fn> {
    match format {
        QuantFormat::Q8_0 => Some(q8_q8_0::<DOT>),
        QuantFormat::Q4_0 => Some(q8_q4_0::<DOT>),
        QuantFormat::Tq2_0 => Some(q8_tq2_0::<DOT>),
        QuantFormat::Int8PerChannel => Some(q8_int8::<DOT>),
        QuantFormat::Int8PerBlock { block_size } if block_size.is_multiple_of(32) => Some(q8_int8::<DOT>),
        QuantFormat::Nf4 { block_size, .. } if block_size.is_multiple_of(32) => Some(q8_nf4::<DOT>),
        _ => None,
    }
}

/// One weight row, 32 integer codes at a time.
trait Row {
    /// Blocks of 32 inside the row (an int8 row's partial tail is handled by `tail`).
    fn full_blocks(&self) -> usize;
    /// Codes `32b .. 32b + 32` as two vectors, and the block's scale.
    ///
    /// # Safety
    /// NEON is available and `b < full_blocks()`.
    unsafe fn codes(&self, b: usize) -> (int8x16_t, int8x16_t, f32);
    /// The zero-padded partial last block and its scale.
    fn tail(&self) -> Option<([i8; 32], f32)> {
        None
    }
}

struct Q8_0Row<'a>(&'a [u8]);
impl Row for Q8_0Row<'_> {
    fn full_blocks(&self) -> usize {
        self.0.len() / Q8_0_BLOCK_BYTES
    }
    #[target_feature(enable = "neon")]
    #[inline]
    unsafe fn codes(&self, b: usize) -> (int8x16_t, int8x16_t, f32) {
        let blk = &self.0[b * Q8_0_BLOCK_BYTES..][..Q8_0_BLOCK_BYTES];
        let p = blk[2..].as_ptr().cast::<i8>();
        // SAFETY: `blk[2..]` has 32 bytes.
        unsafe { (vld1q_s8(p), vld1q_s8(p.add(16)), f16_at(blk)) }
    }
}

struct Q4_0Row<'a>(&'a [u8]);
impl Row for Q4_0Row<'_> {
    fn full_blocks(&self) -> usize {
        self.0.len() / Q4_0_BLOCK_BYTES
    }
    #[target_feature(enable = "neon")]
    #[inline]
    unsafe fn codes(&self, b: usize) -> (int8x16_t, int8x16_t, f32) {
        let blk = &self.0[b * Q4_0_BLOCK_BYTES..][..Q4_0_BLOCK_BYTES];
        // SAFETY: `blk[2..]` has 16 bytes.
        let v = unsafe { vld1q_u8(blk[2..].as_ptr()) };
        let eight = vdupq_n_s8(8);
        let lo = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(v, vdupq_n_u8(0x0F))), eight);
        let hi = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(v, 4)), eight);
        (lo, hi, f16_at(blk))
    }
}

/// A Q5_0 row: codes `q - 16` (-16..=15) with the block's `d`. Block: f16 d, the 32 fifth
/// bits as a little-endian u32 (value `j`'s in bit `j`), 16 bytes of low nibbles in Q4_0's
/// order (ggml-common.h `block_q5_0`).
struct Q5_0Row<'a>(&'a [u8]);
impl Row for Q5_0Row<'_> {
    fn full_blocks(&self) -> usize {
        self.0.len() / Q5_0_BLOCK_BYTES
    }
    #[target_feature(enable = "neon")]
    #[inline]
    unsafe fn codes(&self, b: usize) -> (int8x16_t, int8x16_t, f32) {
        const BITS: [u8; 16] = [1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128];
        const LO_AT: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1];
        const HI_AT: [u8; 16] = [2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3];
        let blk = &self.0[b * Q5_0_BLOCK_BYTES..][..Q5_0_BLOCK_BYTES];
        // SAFETY: `blk[6..]` has 16 bytes.
        let v = unsafe { vld1q_u8(blk[6..].as_ptr()) };
        let qh = vreinterpretq_u8_u32(vdupq_n_u32(u32::from_le_bytes([blk[2], blk[3], blk[4], blk[5]])));
        // Lane `j` of the low half tests bit `j` of the u32, of the high half bit `16 + j`:
        // byte `j / 8` (or `2 + j / 8`) against `1 << (j % 8)`.
        // SAFETY: each array has 16 bytes.
        let (bits, lo_at, hi_at) = unsafe {
            (
                vld1q_u8(BITS.as_ptr()),
                vld1q_u8(LO_AT.as_ptr()),
                vld1q_u8(HI_AT.as_ptr()),
            )
        };
        let fifth = |at| vandq_u8(vtstq_u8(vqtbl1q_u8(qh, at), bits), vdupq_n_u8(0x10));
        let sixteen = vdupq_n_s8(16);
        let lo = vorrq_u8(vandq_u8(v, vdupq_n_u8(0x0F)), fifth(lo_at));
        let hi = vorrq_u8(vshrq_n_u8(v, 4), fifth(hi_at));
        (
            vsubq_s8(vreinterpretq_s8_u8(lo), sixteen),
            vsubq_s8(vreinterpretq_s8_u8(hi), sixteen),
            f16_at(blk),
        )
    }
}

/// A Q4_1 row: the codes as stored (0..=15) with the block's `d` (`m` added apart). Block:
/// f16 d, f16 m, 16 bytes of nibbles (ggml-common.h `block_q4_1`).
struct Q4_1Row<'a>(&'a [u8]);
impl Row for Q4_1Row<'_> {
    fn full_blocks(&self) -> usize {
        self.0.len() / Q4_1_BLOCK_BYTES
    }
    #[target_feature(enable = "neon")]
    #[inline]
    unsafe fn codes(&self, b: usize) -> (int8x16_t, int8x16_t, f32) {
        let blk = &self.0[b * Q4_1_BLOCK_BYTES..][..Q4_1_BLOCK_BYTES];
        // SAFETY: `blk[4..]` has 16 bytes.
        let v = unsafe { vld1q_u8(blk[4..].as_ptr()) };
        let lo = vreinterpretq_s8_u8(vandq_u8(v, vdupq_n_u8(0x0F)));
        (lo, vreinterpretq_s8_u8(vshrq_n_u8(v, 4)), f16_at(blk))
    }
}

/// A Q4_K row: sub-block `b % 8` of super-block `b / 8` (0..=15, the low nibbles of 32 bytes
/// for even sub-blocks, the high ones for odd) with the scale `d · sc` (`-(dmin · m)` added
/// apart).
struct Q4KRow<'a>(&'a [u8]);
impl Row for Q4KRow<'_> {
    fn full_blocks(&self) -> usize {
        self.0.len() / Q4_K_BLOCK_BYTES * 8
    }
    #[target_feature(enable = "neon")]
    #[inline]
    unsafe fn codes(&self, b: usize) -> (int8x16_t, int8x16_t, f32) {
        let blk = &self.0[b / 8 * Q4_K_BLOCK_BYTES..][..Q4_K_BLOCK_BYTES];
        let g = b % 8;
        let (sc, _) = q4_k_scale_min(&blk[4..16], g);
        let q = &blk[16 + 32 * (g / 2)..][..32];
        // SAFETY: `q` has 32 bytes.
        let (v0, v1) = unsafe { (vld1q_u8(q.as_ptr()), vld1q_u8(q.as_ptr().add(16))) };
        let c = |v| {
            vreinterpretq_s8_u8(if g.is_multiple_of(2) {
                vandq_u8(v, vdupq_n_u8(0x0F))
            } else {
                vshrq_n_u8(v, 4)
            })
        };
        (c(v0), c(v1), f16_at(blk) * f32::from(sc))
    }
}

/// The exact path over an affine row: `scale · q` widened, then the block's additive term
/// `term(row, b)` added: the decoder's two roundings.
///
/// # Safety
/// See [`ExactFn`]; `codes` and `row` are the same weight row.
#[allow(clippy::too_many_arguments)] // the ExactFn arguments, and the row's three views
#[target_feature(enable = "neon")]
unsafe fn exact_affine(
    codes: &impl Row,
    row: &[u8],
    term: fn(&[u8], usize) -> f32,
    w: &QuantizedTensor,
    n: usize,
    x: &[f32],
    rows: usize,
    out: &mut [f32],
) {
    let f = |b| {
        // SAFETY: NEON is enabled here; b < full_blocks() in exact_rows.
        let v = unsafe { widen_block(codes, b) };
        let t = vdupq_n_f32(term(row, b));
        v.map(|v| vaddq_f32(v, t))
    };
    // SAFETY: forwarded from the caller (the ExactFn contract).
    unsafe { exact_any(&f, codes.full_blocks(), w, n, x, rows, out) }
}

/// # Safety
/// See [`ExactFn`].
#[target_feature(enable = "neon")]
unsafe fn exact_q5_0(w: &QuantizedTensor, n: usize, x: &[f32], rows: usize, out: &mut [f32]) {
    let row = Q5_0Row(block_row(w, n));
    // SAFETY: NEON is enabled here; b < full_blocks() in exact_rows.
    let f = |b| unsafe { widen_block(&row, b) };
    // SAFETY: forwarded from the caller (the ExactFn contract).
    unsafe { exact_any(&f, row.full_blocks(), w, n, x, rows, out) }
}

/// # Safety
/// See [`ExactFn`].
#[target_feature(enable = "neon")]
unsafe fn exact_q4_1(w: &QuantizedTensor, n: usize, x: &[f32], rows: usize, out: &mut [f32]) {
    let row = block_row(w, n);
    // SAFETY: forwarded from the caller (the ExactFn contract).
    unsafe { exact_affine(&Q4_1Row(row), row, q4_1_term, w, n, x, rows, out) }
}

/// # Safety
/// See [`ExactFn`].
#[target_feature(enable = "neon")]
unsafe fn exact_q4_k(w: &QuantizedTensor, n: usize, x: &[f32], rows: usize, out: &mut [f32]) {
    let row = block_row(w, n);
    // SAFETY: forwarded from the caller (the ExactFn contract).
    unsafe { exact_affine(&Q4KRow(row), row, q4_k_term, w, n, x, rows, out) }
}

/// Q6_K block `b` (sub-blocks `2 (b % 8)` and `2 (b % 8) + 1` of 16 values) as f32, each
/// value `(d · sc) · (q - 32)` as the decoder rounds it. Super-block: `ql` (128 bytes of low
/// nibbles), `qh` (64 bytes of high pairs), 16 i8 scales, f16 `d` (ggml-common.h
/// `block_q6_K`).
///
/// # Safety
/// NEON is available; `row` holds whole super-blocks and `b / 8` is one of them.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn q6_k_values(row: &[u8], b: usize) -> [float32x4_t; 8] {
    let blk = &row[b / 8 * Q6_K_BLOCK_BYTES..][..Q6_K_BLOCK_BYTES];
    // Half `h` (128 values), its 32-value part `t`: the low nibbles (t < 2) or high ones of
    // `ql[64 h + 32 (t % 2)..]`, bits `2 t` of `qh[32 h..]`.
    let (h, t) = (b % 8 / 4, b % 4);
    let ql = &blk[64 * h + 32 * (t % 2)..][..32];
    let qh = &blk[128 + 32 * h..][..32];
    let shift = vdupq_n_s8(-2 * t as i8);
    let code = |i: usize| {
        // SAFETY: `ql` and `qh` have 32 bytes: 16 at 16i (i < 2).
        let (l, hb) = unsafe { (vld1q_u8(ql.as_ptr().add(16 * i)), vld1q_u8(qh.as_ptr().add(16 * i))) };
        let lo = if t < 2 {
            vandq_u8(l, vdupq_n_u8(0x0F))
        } else {
            vshrq_n_u8(l, 4)
        };
        let pair = vandq_u8(vshlq_u8(hb, shift), vdupq_n_u8(3));
        vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(lo, vshlq_n_u8(pair, 4))), vdupq_n_s8(32))
    };
    let d = f16_at(&blk[208..]);
    let sc = |i: usize| d * f32::from(blk[192 + 8 * h + 2 * t + i] as i8);
    let (a, c) = (widen(code(0), sc(0)), widen(code(1), sc(1)));
    [a[0], a[1], a[2], a[3], c[0], c[1], c[2], c[3]]
}

/// # Safety
/// See [`ExactFn`].
#[target_feature(enable = "neon")]
unsafe fn exact_q6_k(w: &QuantizedTensor, n: usize, x: &[f32], rows: usize, out: &mut [f32]) {
    let row = block_row(w, n);
    // SAFETY: NEON is enabled here; b < full blocks in exact_rows, inside the row's
    // super-blocks.
    let f = |b| unsafe { q6_k_values(row, b) };
    // SAFETY: forwarded from the caller (the ExactFn contract).
    unsafe { exact_any(&f, row.len() / Q6_K_BLOCK_BYTES * 8, w, n, x, rows, out) }
}

/// A TQ2_0 row: group `g` of 32 values in 2-bit field `g % 4` of bytes `32 * (g / 4) ..` of
/// its 256-value block, code `q - 1`.
struct Tq2Row<'a>(&'a [u8]);
impl Row for Tq2Row<'_> {
    fn full_blocks(&self) -> usize {
        self.0.len() / TQ2_0_BLOCK_BYTES * 8
    }
    #[target_feature(enable = "neon")]
    #[inline]
    unsafe fn codes(&self, b: usize) -> (int8x16_t, int8x16_t, f32) {
        let blk = &self.0[(b / 8) * TQ2_0_BLOCK_BYTES..][..TQ2_0_BLOCK_BYTES];
        let g = b % 8;
        let src = &blk[32 * (g / 4)..][..32];
        // SAFETY: `src` has 32 bytes.
        let (v0, v1) = unsafe { (vld1q_u8(src.as_ptr()), vld1q_u8(src.as_ptr().add(16))) };
        let shift = vdupq_n_s8(-2 * (g % 4) as i8);
        let three = vdupq_n_u8(3);
        let one = vdupq_n_s8(1);
        let c = |v| vsubq_s8(vreinterpretq_s8_u8(vandq_u8(vshlq_u8(v, shift), three)), one);
        (c(v0), c(v1), f16_at(&blk[64..]))
    }
}

fn tq2_row(w: &QuantizedTensor, n: usize) -> Tq2Row<'_> {
    Tq2Row(block_row(w, n))
}

/// # Safety
/// See [`Q8Fn`]; FEAT_DotProd when `DOT`.
#[target_feature(enable = "neon")]
unsafe fn q8_tq2_0<const DOT: bool>(
    w: &QuantizedTensor,
    n: usize,
    a: &ActQ8,
    row0: usize,
    rows: usize,
    out: &mut [f32],
) {
    // SAFETY: forwarded from the caller (the Q8Fn contract).
    unsafe { q8_any::<DOT>(&tq2_row(w, n), a, row0, rows, out) }
}

struct Int8Row<'a> {
    codes: &'a [u8],
    scales: &'a [f32],
    blocks_per_scale: usize,
}
impl Row for Int8Row<'_> {
    fn full_blocks(&self) -> usize {
        self.codes.len() / 32
    }
    #[target_feature(enable = "neon")]
    #[inline]
    unsafe fn codes(&self, b: usize) -> (int8x16_t, int8x16_t, f32) {
        let c = &self.codes[b * 32..][..32];
        let s = self.scales[b.checked_div(self.blocks_per_scale).unwrap_or(0)];
        let p = c.as_ptr().cast::<i8>();
        // SAFETY: `c` has 32 bytes.
        unsafe { (vld1q_s8(p), vld1q_s8(p.add(16)), s) }
    }
    fn tail(&self) -> Option<([i8; 32], f32)> {
        let full = self.full_blocks();
        let rest = &self.codes[full * 32..];
        if rest.is_empty() {
            return None;
        }
        let mut pad = [0i8; 32];
        for (p, &c) in pad.iter_mut().zip(rest) {
            *p = c as i8;
        }
        Some((pad, self.scales[full.checked_div(self.blocks_per_scale).unwrap_or(0)]))
    }
}

fn int8_row(w: &QuantizedTensor, n: usize) -> Int8Row<'_> {
    let k = w.row_len();
    let codes = &w.data()[n * k..(n + 1) * k];
    match w.format() {
        QuantFormat::Int8PerBlock { block_size } => {
            let nbs = k.div_ceil(block_size);
            Int8Row {
                codes,
                scales: &w.scales()[n * nbs..(n + 1) * nbs],
                blocks_per_scale: block_size / 32,
            }
        }
        _ => Int8Row {
            codes,
            // Empty when K = 0 (no scales are stored then, and none is read).
            scales: w.scales().get(n..=n).unwrap_or_default(),
            blocks_per_scale: 0,
        },
    }
}

/// An NF4 row whose start is 32-aligned in the flattened tensor (`K % 32 == 0`), so each block
/// of 32 lies inside one absmax block (block sizes are powers of two >= 32): codes as their
/// [`NF4_I8`] levels (`tbl`), the scale `absmax` (the caller divides each output by 127 once,
/// as [`generic::q8_nf4`](super::generic::q8_nf4) does).
struct Nf4Row<'a> {
    bytes: &'a [u8],
    scales: &'a [f32],
    first: usize,
    /// log2 of the block size (a power of two).
    block_shift: u32,
}
impl Row for Nf4Row<'_> {
    fn full_blocks(&self) -> usize {
        self.bytes.len() / 16
    }
    #[target_feature(enable = "neon")]
    #[inline]
    unsafe fn codes(&self, b: usize) -> (int8x16_t, int8x16_t, f32) {
        let src = &self.bytes[16 * b..][..16];
        // SAFETY: `src` has 16 bytes, NF4_I8 16 codes.
        let (v, table) = unsafe { (vld1q_u8(src.as_ptr()), vld1q_s8(NF4_I8.as_ptr())) };
        // Value 2i is the high nibble of byte i, value 2i + 1 its low nibble.
        let hi = vshrq_n_u8(v, 4);
        let lo = vandq_u8(v, vdupq_n_u8(0x0F));
        let s = self.scales[(self.first + 32 * b) >> self.block_shift];
        (
            vqtbl1q_s8(table, vzip1q_u8(hi, lo)),
            vqtbl1q_s8(table, vzip2q_u8(hi, lo)),
            s,
        )
    }
}

/// Row `n` of an NF4 tensor whose rows are 32-aligned (`K % 32 == 0`), else `None`.
fn nf4_row(w: &QuantizedTensor, n: usize) -> Option<Nf4Row<'_>> {
    let k = w.row_len();
    let QuantFormat::Nf4 { block_size, .. } = w.format() else {
        return None;
    };
    k.is_multiple_of(32).then(|| Nf4Row {
        bytes: &w.data()[n * k / 2..(n + 1) * k / 2],
        scales: w.scales(),
        first: n * k,
        block_shift: block_size.trailing_zeros(),
    })
}

/// # Safety
/// See [`Q8Fn`]; FEAT_DotProd when `DOT`.
#[target_feature(enable = "neon")]
unsafe fn q8_nf4<const DOT: bool>(w: &QuantizedTensor, n: usize, a: &ActQ8, row0: usize, rows: usize, out: &mut [f32]) {
    match nf4_row(w, n) {
        Some(row) => {
            // SAFETY: forwarded from the caller (the Q8Fn contract).
            unsafe { q8_any::<DOT>(&row, a, row0, rows, out) };
            for o in &mut out[..rows] {
                *o /= 127.0;
            }
        }
        // Rows that start inside a block of 32 (K % 32 != 0): the scalar definition.
        None => super::generic::q8_nf4(w, n, a, row0, rows, out),
    }
}

fn q8_0_row(w: &QuantizedTensor, n: usize) -> Q8_0Row<'_> {
    Q8_0Row(block_row(w, n))
}

fn q4_0_row(w: &QuantizedTensor, n: usize) -> Q4_0Row<'_> {
    Q4_0Row(block_row(w, n))
}

/// `acc + Σ` of 4-byte groups of `a * b` per i32 lane, with `sdot` (FEAT_DotProd).
///
/// # Safety
/// The CPU has FEAT_DotProd.
#[target_feature(enable = "neon,dotprod")]
#[inline]
unsafe fn sdot(mut acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    // SAFETY: `sdot` reads and writes registers only; the caller guarantees the feature.
    unsafe {
        asm!(
            "sdot {0:v}.4s, {1:v}.16b, {2:v}.16b",
            inout(vreg) acc,
            in(vreg) a,
            in(vreg) b,
            options(pure, nomem, nostack)
        );
    }
    acc
}

/// The integer dot product of 32 codes as 4 i32 lanes.
///
/// # Safety
/// NEON is available, and FEAT_DotProd when `DOT`.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn idot<const DOT: bool>(w0: int8x16_t, w1: int8x16_t, x0: int8x16_t, x1: int8x16_t) -> int32x4_t {
    if DOT {
        // SAFETY: the caller guarantees FEAT_DotProd when DOT.
        unsafe { sdot(sdot(vdupq_n_s32(0), w0, x0), w1, x1) }
    } else {
        // |w|, |x| <= 128: each product and each pairwise sum of two fits in i16/i32.
        let p0 = vaddq_s32(
            vpaddlq_s16(vmull_s8(vget_low_s8(w0), vget_low_s8(x0))),
            vpaddlq_s16(vmull_s8(vget_high_s8(w0), vget_high_s8(x0))),
        );
        let p1 = vaddq_s32(
            vpaddlq_s16(vmull_s8(vget_low_s8(w1), vget_low_s8(x1))),
            vpaddlq_s16(vmull_s8(vget_high_s8(w1), vget_high_s8(x1))),
        );
        vaddq_s32(p0, p1)
    }
}

/// # Safety
/// NEON (and FEAT_DotProd when `DOT`) is available; `a` holds rows `row0 .. row0 + R`.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn q8_rows<const R: usize, const DOT: bool>(row: &impl Row, a: &ActQ8, row0: usize, out: &mut [f32]) {
    let nb = a.nb;
    let qs = &a.qs[row0 * nb * 32..(row0 + R) * nb * 32];
    let ds = &a.d[row0 * nb..(row0 + R) * nb];
    let full = row.full_blocks();
    let tail = row.tail();
    assert!(full + usize::from(tail.is_some()) <= nb);
    // Two chains of FMAs per row (even and odd blocks), so that one row (M = 1) is not held
    // up by the latency of a single chain; the same for every R, so a row's sums do not
    // depend on how many rows share the kernel call.
    let mut acc = [[vdupq_n_f32(0.0); R]; 2];
    let mut block = |w0: int8x16_t, w1: int8x16_t, dw: f32, b: usize| {
        for (r, acc) in acc[b % 2].iter_mut().enumerate() {
            let x = &qs[(r * nb + b) * 32..][..32];
            // SAFETY: `x` has 32 codes; the features are enabled by the caller.
            let p = unsafe { idot::<DOT>(w0, w1, vld1q_s8(x.as_ptr()), vld1q_s8(x.as_ptr().add(16))) };
            // `dx · isum` first: it stays normal for tiny (subnormal) activations, where
            // `dw · dx` could underflow.
            *acc = vfmaq_n_f32(*acc, vmulq_n_f32(vcvtq_f32_s32(p), ds[r * nb + b]), dw);
        }
    };
    for b in 0..full {
        // SAFETY: b < full_blocks().
        let (w0, w1, dw) = unsafe { row.codes(b) };
        block(w0, w1, dw, b);
    }
    if let Some((pad, dw)) = tail {
        // SAFETY: `pad` has 32 codes.
        let (w0, w1) = unsafe { (vld1q_s8(pad.as_ptr()), vld1q_s8(pad.as_ptr().add(16))) };
        block(w0, w1, dw, full);
    }
    for (o, (even, odd)) in out.iter_mut().zip(acc[0].into_iter().zip(acc[1])) {
        *o = vaddvq_f32(vaddq_f32(even, odd));
    }
}

/// # Safety
/// As [`q8_rows`] with `R = rows`, `1 <= rows <= MAX_ROWS`.
#[target_feature(enable = "neon")]
unsafe fn q8_any<const DOT: bool>(row: &impl Row, a: &ActQ8, row0: usize, rows: usize, out: &mut [f32]) {
    // SAFETY: forwarded from the caller.
    unsafe {
        match rows {
            4 => q8_rows::<4, DOT>(row, a, row0, out),
            3 => q8_rows::<3, DOT>(row, a, row0, out),
            2 => q8_rows::<2, DOT>(row, a, row0, out),
            _ => q8_rows::<1, DOT>(row, a, row0, out),
        }
    }
}

/// # Safety
/// See [`Q8Fn`]; FEAT_DotProd when `DOT` (the table only offers `DOT` after detecting it).
#[target_feature(enable = "neon")]
unsafe fn q8_q8_0<const DOT: bool>(
    w: &QuantizedTensor,
    n: usize,
    a: &ActQ8,
    row0: usize,
    rows: usize,
    out: &mut [f32],
) {
    // SAFETY: forwarded from the caller (the Q8Fn contract).
    unsafe { q8_any::<DOT>(&q8_0_row(w, n), a, row0, rows, out) }
}

/// # Safety
/// See [`Q8Fn`]; FEAT_DotProd when `DOT`.
#[target_feature(enable = "neon")]
unsafe fn q8_q4_0<const DOT: bool>(
    w: &QuantizedTensor,
    n: usize,
    a: &ActQ8,
    row0: usize,
    rows: usize,
    out: &mut [f32],
) {
    // SAFETY: forwarded from the caller (the Q8Fn contract).
    unsafe { q8_any::<DOT>(&q4_0_row(w, n), a, row0, rows, out) }
}

/// # Safety
/// See [`Q8Fn`]; FEAT_DotProd when `DOT`; per-block scales cover multiples of 32 values.
#[target_feature(enable = "neon")]
unsafe fn q8_int8<const DOT: bool>(
    w: &QuantizedTensor,
    n: usize,
    a: &ActQ8,
    row0: usize,
    rows: usize,
    out: &mut [f32],
) {
    // SAFETY: forwarded from the caller (the Q8Fn contract).
    unsafe { q8_any::<DOT>(&int8_row(w, n), a, row0, rows, out) }
}

/// 16 codes times `s` as 4 f32 vectors.
#[target_feature(enable = "neon")]
#[inline]
fn widen(q: int8x16_t, s: f32) -> [float32x4_t; 4] {
    let lo = vmovl_s8(vget_low_s8(q));
    let hi = vmovl_s8(vget_high_s8(q));
    let f = |v| vmulq_n_f32(vcvtq_f32_s32(vmovl_s16(v)), s);
    [
        f(vget_low_s16(lo)),
        f(vget_high_s16(lo)),
        f(vget_low_s16(hi)),
        f(vget_high_s16(hi)),
    ]
}

/// The exact path over a code row: full blocks widened in registers, the tail (and any
/// partial block) by the scalar decode.
///
/// # Safety
/// NEON is available; `x` holds `R` rows of `K`; `n < N`.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn exact_rows<const R: usize, F: Fn(usize) -> [float32x4_t; 8]>(
    row: &F,
    full: usize,
    w: &QuantizedTensor,
    n: usize,
    x: &[f32],
    out: &mut [f32],
) {
    let k = w.row_len();
    let x = &x[..R * k];
    assert!(full * 32 <= k);
    // Four chains of FMAs per row, two FMAs each per block: the latency of one chain does not
    // hold up a single row (M = 1).
    let mut acc = [[vdupq_n_f32(0.0); 4]; R];
    let mut buf = [0.0f32; 32];
    for b in 0..full {
        let v = row(b);
        for (r, acc) in acc.iter_mut().enumerate() {
            let xs = &x[r * k + 32 * b..][..32];
            for (i, &vi) in v.iter().enumerate() {
                // SAFETY: 4 values at 4i are inside `xs` (i < 8).
                let xv = unsafe { vld1q_f32(xs.as_ptr().add(4 * i)) };
                acc[i % 4] = vfmaq_f32(acc[i % 4], xv, vi);
            }
        }
    }
    let tail = k - full * 32;
    if tail > 0 {
        decode_row_into(w, n, full * 32, &mut buf[..tail]);
    }
    for (r, (o, acc)) in out.iter_mut().zip(acc).enumerate() {
        let mut s = vaddvq_f32(vaddq_f32(vaddq_f32(acc[0], acc[1]), vaddq_f32(acc[2], acc[3])));
        for (&p, &q) in x[r * k + full * 32..(r + 1) * k].iter().zip(&buf[..tail]) {
            s += p * q;
        }
        *o = s;
    }
}

/// # Safety
/// As [`exact_rows`] with `R = rows`, `1 <= rows <= MAX_ROWS`.
#[target_feature(enable = "neon")]
unsafe fn exact_any<F: Fn(usize) -> [float32x4_t; 8]>(
    row: &F,
    full: usize,
    w: &QuantizedTensor,
    n: usize,
    x: &[f32],
    rows: usize,
    out: &mut [f32],
) {
    // SAFETY: forwarded from the caller.
    unsafe {
        match rows {
            4 => exact_rows::<4, F>(row, full, w, n, x, out),
            3 => exact_rows::<3, F>(row, full, w, n, x, out),
            2 => exact_rows::<2, F>(row, full, w, n, x, out),
            _ => exact_rows::<1, F>(row, full, w, n, x, out),
        }
    }
}

/// # Safety
/// NEON is available and `b < row.full_blocks()`.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn widen_block(row: &impl Row, b: usize) -> [float32x4_t; 8] {
    // SAFETY: forwarded from the caller.
    let (w0, w1, s) = unsafe { row.codes(b) };
    let (a, c) = (widen(w0, s), widen(w1, s));
    [a[0], a[1], a[2], a[3], c[0], c[1], c[2], c[3]]
}

/// # Safety
/// See [`ExactFn`].
#[target_feature(enable = "neon")]
unsafe fn exact_q8_0(w: &QuantizedTensor, n: usize, x: &[f32], rows: usize, out: &mut [f32]) {
    let row = q8_0_row(w, n);
    // SAFETY: NEON is enabled here; b < full_blocks() in exact_rows.
    let f = |b| unsafe { widen_block(&row, b) };
    // SAFETY: forwarded from the caller (the ExactFn contract).
    unsafe { exact_any(&f, row.full_blocks(), w, n, x, rows, out) }
}

/// # Safety
/// See [`ExactFn`].
#[target_feature(enable = "neon")]
unsafe fn exact_q4_0(w: &QuantizedTensor, n: usize, x: &[f32], rows: usize, out: &mut [f32]) {
    let row = q4_0_row(w, n);
    // SAFETY: NEON is enabled here; b < full_blocks() in exact_rows.
    let f = |b| unsafe { widen_block(&row, b) };
    // SAFETY: forwarded from the caller (the ExactFn contract).
    unsafe { exact_any(&f, row.full_blocks(), w, n, x, rows, out) }
}

/// # Safety
/// See [`ExactFn`].
#[target_feature(enable = "neon")]
unsafe fn exact_tq2_0(w: &QuantizedTensor, n: usize, x: &[f32], rows: usize, out: &mut [f32]) {
    let row = tq2_row(w, n);
    // SAFETY: NEON is enabled here; b < full_blocks() in exact_rows.
    let f = |b| unsafe { widen_block(&row, b) };
    // SAFETY: forwarded from the caller (the ExactFn contract).
    unsafe { exact_any(&f, row.full_blocks(), w, n, x, rows, out) }
}

/// # Safety
/// See [`ExactFn`]; per-block scales cover multiples of 32 values.
#[target_feature(enable = "neon")]
unsafe fn exact_int8(w: &QuantizedTensor, n: usize, x: &[f32], rows: usize, out: &mut [f32]) {
    let row = int8_row(w, n);
    // SAFETY: NEON is enabled here; b < full_blocks() in exact_rows.
    let f = |b| unsafe { widen_block(&row, b) };
    // SAFETY: forwarded from the caller (the ExactFn contract).
    unsafe { exact_any(&f, row.full_blocks(), w, n, x, rows, out) }
}

/// 16 E4M3 codes as their values times `s`, in 4 f32 vectors (CPUs without FEAT_FP16).
///
/// The magnitude bits are placed under the f32 exponent and rebiased by a multiply by `2^120`,
/// exact for normal and subnormal codes alike (the default floating-point mode, no flush to
/// zero, as on Linux); the NaN code is selected, the sign put back, and the value multiplied
/// by the scale: the value and the one rounding of [`decode_row_into`].
#[target_feature(enable = "neon")]
#[inline]
fn e4m3_widen_f32(q: uint8x16_t, s: f32) -> [float32x4_t; 4] {
    let f = |v: uint32x4_t| {
        let sign = vshlq_n_u32::<24>(vandq_u32(v, vdupq_n_u32(0x80)));
        let mag = vandq_u32(v, vdupq_n_u32(0x7F));
        let value = vmulq_f32(
            vreinterpretq_f32_u32(vshlq_n_u32::<20>(mag)),
            vdupq_n_f32(f32::from_bits((127 + 120) << 23)),
        );
        // 0x7F: NaN (E4M3 has no infinities).
        let bits = vbslq_u32(
            vceqq_u32(mag, vdupq_n_u32(0x7F)),
            vdupq_n_u32(0x7FC0_0000),
            vreinterpretq_u32_f32(value),
        );
        vmulq_n_f32(vreinterpretq_f32_u32(vorrq_u32(bits, sign)), s)
    };
    let lo = vmovl_u8(vget_low_u8(q));
    let hi = vmovl_high_u8(q);
    [
        f(vmovl_u16(vget_low_u16(lo))),
        f(vmovl_high_u16(lo)),
        f(vmovl_u16(vget_low_u16(hi))),
        f(vmovl_high_u16(hi)),
    ]
}

/// Two vectors of 8 f16 values (as bits) widened to 4 f32 vectors times `s` (`fcvtl`,
/// `fcvtl2`: base NEON, exact).
#[target_feature(enable = "neon")]
#[inline]
fn widen_f16(h: [uint16x8_t; 2], s: f32) -> [float32x4_t; 4] {
    let cvt = |v: uint16x8_t| {
        let (lo, hi): (float32x4_t, float32x4_t);
        // SAFETY: `fcvtl`/`fcvtl2` read and write registers only; NEON is enabled here.
        unsafe {
            asm!(
                "fcvtl {0:v}.4s, {2:v}.4h",
                "fcvtl2 {1:v}.4s, {2:v}.8h",
                out(vreg) lo,
                out(vreg) hi,
                in(vreg) v,
                options(pure, nomem, nostack)
            );
        }
        (lo, hi)
    };
    let (a, b) = cvt(h[0]);
    let (c, d) = cvt(h[1]);
    [
        vmulq_n_f32(a, s),
        vmulq_n_f32(b, s),
        vmulq_n_f32(c, s),
        vmulq_n_f32(d, s),
    ]
}

/// 16 E5M2 codes as their values times `s`: an E5M2 code is the top byte of the f16 of its
/// value (infinities and NaN included), so a shift and the f16 to f32 conversion decode it
/// exactly; then one multiply by the scale, as [`decode_row_into`].
#[target_feature(enable = "neon")]
#[inline]
fn e5m2_widen(q: uint8x16_t, s: f32) -> [float32x4_t; 4] {
    widen_f16(
        [
            vshlq_n_u16::<8>(vmovl_u8(vget_low_u8(q))),
            vshlq_n_u16::<8>(vmovl_high_u8(q)),
        ],
        s,
    )
}

/// 16 E4M3 codes as their values times `s`, through f16 with FEAT_FP16: the magnitude bits
/// placed under the f16 exponent and rebiased by one f16 multiply by `2^8` (8 lanes at a time;
/// exact for subnormal codes too, with the default FPCR: no flush to zero), the NaN code
/// selected, the sign put back, widened to f32 and multiplied by the scale.
///
/// # Safety
/// The CPU has FEAT_FP16.
#[target_feature(enable = "neon,fp16")]
#[inline]
unsafe fn e4m3_widen_f16(q: uint8x16_t, s: f32) -> [float32x4_t; 4] {
    let half = |v: uint16x8_t| {
        let mag = vandq_u16(v, vdupq_n_u16(0x7F));
        let sign = vshlq_n_u16::<8>(vandq_u16(v, vdupq_n_u16(0x80)));
        let mut value = vshlq_n_u16::<7>(mag);
        // SAFETY: `fmul` on f16 lanes reads and writes registers only; the caller guarantees
        // FEAT_FP16. 0x5C00 is 2^8 in f16.
        unsafe {
            asm!(
                "fmul {0:v}.8h, {0:v}.8h, {1:v}.8h",
                inout(vreg) value,
                in(vreg) vdupq_n_u16(0x5C00),
                options(pure, nomem, nostack)
            );
        }
        // 0x7F: NaN (E4M3 has no infinities).
        let value = vbslq_u16(vceqq_u16(mag, vdupq_n_u16(0x7F)), vdupq_n_u16(0x7E00), value);
        vorrq_u16(value, sign)
    };
    widen_f16([half(vmovl_u8(vget_low_u8(q))), half(vmovl_high_u8(q))], s)
}

/// FP8 per tensor or per block of a multiple of 32: whole blocks of 32 decoded in registers by
/// `widen` (16 codes and the block's scale), the same sums as [`exact_chunked`] bit for bit.
///
/// # Safety
/// See [`ExactFn`]; `w` is FP8, per tensor or per block of a multiple of 32; `widen` decodes
/// its codes as [`decode_row_into`] does.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn exact_fp8_by<F: Fn(uint8x16_t, f32) -> [float32x4_t; 4]>(
    widen: F,
    w: &QuantizedTensor,
    n: usize,
    x: &[f32],
    rows: usize,
    out: &mut [f32],
) {
    let k = w.row_len();
    let codes = &w.data()[n * k..(n + 1) * k];
    let (scales, blocks_per_scale) = match w.format() {
        QuantFormat::Fp8E4M3 { block_size: Some(b) } | QuantFormat::Fp8E5M2 { block_size: Some(b) } => {
            let per_row = k.div_ceil(b);
            (&w.scales()[n * per_row..(n + 1) * per_row], b / 32)
        }
        _ => (w.scales().get(..1).unwrap_or_default(), 0),
    };
    let f = |b: usize| {
        let s = scales[b.checked_div(blocks_per_scale).unwrap_or(0)];
        let c = &codes[32 * b..][..32];
        // SAFETY: `c` has 32 bytes; NEON is enabled here.
        let (lo, hi) = unsafe { (vld1q_u8(c.as_ptr()), vld1q_u8(c.as_ptr().add(16))) };
        let (a, d) = (widen(lo, s), widen(hi, s));
        [a[0], a[1], a[2], a[3], d[0], d[1], d[2], d[3]]
    };
    // SAFETY: forwarded from the caller (the ExactFn contract); exact_rows asks for blocks
    // below K / 32 only.
    unsafe { exact_any(&f, k / 32, w, n, x, rows, out) }
}

/// # Safety
/// See [`ExactFn`]; `w` is E4M3, per tensor or per block of a multiple of 32.
#[target_feature(enable = "neon")]
unsafe fn exact_e4m3(w: &QuantizedTensor, n: usize, x: &[f32], rows: usize, out: &mut [f32]) {
    // SAFETY: forwarded from the caller; e4m3_widen_f32 decodes as decode_row_into.
    unsafe { exact_fp8_by(|q, s| e4m3_widen_f32(q, s), w, n, x, rows, out) }
}

/// # Safety
/// See [`ExactFn`]; `w` is E4M3, per tensor or per block of a multiple of 32; the CPU has
/// FEAT_FP16.
#[target_feature(enable = "neon,fp16")]
unsafe fn exact_e4m3_fp16(w: &QuantizedTensor, n: usize, x: &[f32], rows: usize, out: &mut [f32]) {
    // SAFETY: the caller guarantees FEAT_FP16.
    let widen = |q, s| unsafe { e4m3_widen_f16(q, s) };
    // SAFETY: forwarded from the caller; e4m3_widen_f16 decodes as decode_row_into.
    unsafe { exact_fp8_by(widen, w, n, x, rows, out) }
}

/// # Safety
/// See [`ExactFn`]; `w` is E5M2, per tensor or per block of a multiple of 32.
#[target_feature(enable = "neon")]
unsafe fn exact_e5m2(w: &QuantizedTensor, n: usize, x: &[f32], rows: usize, out: &mut [f32]) {
    // SAFETY: forwarded from the caller; e5m2_widen decodes as decode_row_into.
    unsafe { exact_fp8_by(|q, s| e5m2_widen(q, s), w, n, x, rows, out) }
}

/// # Safety
/// See [`ExactFn`].
#[target_feature(enable = "neon")]
unsafe fn exact_chunked(w: &QuantizedTensor, n: usize, x: &[f32], rows: usize, out: &mut [f32]) {
    let row = ChunkedRow::new(w, n);
    let f = |b: usize| {
        let buf = row.block(b);
        // SAFETY: `buf` has 32 values; NEON is enabled here.
        std::array::from_fn(|i| unsafe { vld1q_f32(buf.as_ptr().add(4 * i)) })
    };
    // SAFETY: forwarded from the caller (the ExactFn contract).
    unsafe { exact_any(&f, w.row_len() / 32, w, n, x, rows, out) }
}

/// The checks of the FP8 decode in registers, run once per decode by `tests/isa.rs` (the f16
/// one reported as ignored where the CPU lacks FEAT_FP16).
#[cfg(any(test, feature = "test-internals"))]
pub(crate) mod checks {
    use aihal_quantize::{QuantFormat, QuantizedTensor};

    use super::{exact_chunked, exact_for, exact_for_fp16, ExactFn};
    use crate::kernels::checks::{random_weight, Rng};

    /// The FP8 decode in registers (through f32, or through f16 where `f16`: the CPU must have
    /// FEAT_FP16) gives the scalar decode's sums bit for bit, every byte value included (one
    /// row of each tensor cycles through all 256), with and without a tail.
    pub(crate) fn fp8_in_registers_gives_the_chunked_decode_bits(f16: bool) {
        assert!(!f16 || crate::kernels::cpu().fp16, "this CPU has no FEAT_FP16");
        let mut rng = Rng::new(9);
        for format in [
            QuantFormat::Fp8E4M3 { block_size: None },
            QuantFormat::Fp8E4M3 { block_size: Some(32) },
            QuantFormat::Fp8E5M2 { block_size: None },
            QuantFormat::Fp8E5M2 { block_size: Some(64) },
        ] {
            for k in [0, 64, 100, 288] {
                let n = 3;
                let (f, shape, mut data, scales) = random_weight(format, n, k, &mut rng).into_parts();
                for (i, b) in data[..k].iter_mut().enumerate() {
                    *b = (i * 7 + 3) as u8;
                }
                let w = QuantizedTensor::from_parts(f, shape, data, scales).unwrap();
                let fast: ExactFn = if f16 { exact_for_fp16(format) } else { exact_for(format) };
                for rows in 1..=4 {
                    let x = rng.vec(rows * k, -2.0, 2.0);
                    for j in 0..n {
                        let (mut got, mut want) = ([0.0f32; 4], [0.0f32; 4]);
                        // SAFETY: NEON is part of every aarch64 CPU, FEAT_FP16 was asserted
                        // above where the f16 decode runs; `w` is a valid tensor, j < N, `x`
                        // holds `rows` rows of K, the outputs `rows` values.
                        unsafe {
                            fast(&w, j, &x, rows, &mut got);
                            exact_chunked(&w, j, &x, rows, &mut want);
                        }
                        for (g, r) in got.iter().zip(&want).take(rows) {
                            assert!(
                                g.to_bits() == r.to_bits() || (g.is_nan() && r.is_nan()),
                                "{format} k={k} rows={rows} row {j}: {g} vs {r}"
                            );
                        }
                        if j > 0 && k > 0 {
                            assert!(
                                got[..rows].iter().all(|v| v.is_finite() && *v != 0.0),
                                "{format}: finite rows"
                            );
                        }
                    }
                }
            }
        }
    }
}
