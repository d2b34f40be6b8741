//! aarch64 kernels: NEON (every aarch64 CPU), with the int8 dot product (`sdot`, FEAT_DotProd:
//! Cortex-A55/A76 and later) where the CPU reports it.
//!
//! Q8_0, Q4_0, TQ2_0 and int8 weights are decoded in registers on both paths, NF4 on the
//! int8-activation path (`tbl` on its int8 levels); the other formats, and NF4 on the f32
//! path, use the scalar decode of 32 values at a time with NEON dot products.

use std::arch::aarch64::{
    float32x4_t, int32x4_t, int8x16_t, vaddq_f32, vaddq_s32, vaddvq_f32, vandq_u8, vcvtq_f32_s32, vdupq_n_f32,
    vdupq_n_s32, vdupq_n_s8, vdupq_n_u8, vfmaq_f32, vfmaq_n_f32, vget_high_s16, vget_high_s8, vget_low_s16,
    vget_low_s8, vld1q_f32, vld1q_s8, vld1q_u8, vmovl_s16, vmovl_s8, vmull_s8, vmulq_n_f32, vpaddlq_s16, vqtbl1q_s8,
    vreinterpretq_s8_u8, vshlq_u8, vshrq_n_u8, vsubq_s8, vzip1q_u8, vzip2q_u8,
};
use std::arch::asm;

use aihal_quantize::{QuantFormat, QuantizedTensor};

use super::{ActQ8, ExactFn, Kernels, Q8Fn};
use crate::decode::{decode_row_into, f16_at, NF4_I8, Q4_0_BLOCK_BYTES, Q8_0_BLOCK_BYTES, TQ2_0_BLOCK_BYTES};

/// `neon+dotprod` when the CPU has the int8 dot product, else `neon`.
pub(crate) fn detect() -> Option<&'static Kernels> {
    if !std::arch::is_aarch64_feature_detected!("neon") {
        return None;
    }
    Some(if std::arch::is_aarch64_feature_detected!("dotprod") {
        &NEON_DOTPROD
    } else {
        &NEON
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

fn exact_for(format: QuantFormat) -> ExactFn {
    match format {
        QuantFormat::Q8_0 => exact_q8_0,
        QuantFormat::Q4_0 => exact_q4_0,
        QuantFormat::Tq2_0 => exact_tq2_0,
        QuantFormat::Int8PerChannel => exact_int8,
        QuantFormat::Int8PerBlock { block_size } if block_size.is_multiple_of(32) => exact_int8,
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
    let bytes = w.row_len() / 256 * TQ2_0_BLOCK_BYTES;
    Tq2Row(&w.data()[n * bytes..(n + 1) * bytes])
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
    let bytes = w.row_len() / 32 * Q8_0_BLOCK_BYTES;
    Q8_0Row(&w.data()[n * bytes..(n + 1) * bytes])
}

fn q4_0_row(w: &QuantizedTensor, n: usize) -> Q4_0Row<'_> {
    let bytes = w.row_len() / 32 * Q4_0_BLOCK_BYTES;
    Q4_0Row(&w.data()[n * bytes..(n + 1) * bytes])
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
    let mut acc = [vdupq_n_f32(0.0); R];
    let mut block = |w0: int8x16_t, w1: int8x16_t, dw: f32, b: usize| {
        for (r, acc) in acc.iter_mut().enumerate() {
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
    for (o, acc) in out.iter_mut().zip(acc) {
        *o = vaddvq_f32(acc);
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
    let mut acc = [[vdupq_n_f32(0.0); 2]; R];
    let mut buf = [0.0f32; 32];
    for b in 0..full {
        let v = row(b);
        for (r, acc) in acc.iter_mut().enumerate() {
            let xs = &x[r * k + 32 * b..][..32];
            for (i, &vi) in v.iter().enumerate() {
                // SAFETY: 4 values at 4i are inside `xs` (i < 8).
                let xv = unsafe { vld1q_f32(xs.as_ptr().add(4 * i)) };
                acc[i % 2] = vfmaq_f32(acc[i % 2], xv, vi);
            }
        }
    }
    let tail = k - full * 32;
    if tail > 0 {
        decode_row_into(w, n, full * 32, &mut buf[..tail]);
    }
    for (r, (o, acc)) in out.iter_mut().zip(acc).enumerate() {
        let mut s = vaddvq_f32(vaddq_f32(acc[0], acc[1]));
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

/// # Safety
/// See [`ExactFn`].
#[target_feature(enable = "neon")]
unsafe fn exact_chunked(w: &QuantizedTensor, n: usize, x: &[f32], rows: usize, out: &mut [f32]) {
    let f = |b: usize| {
        let mut buf = [0.0f32; 32];
        decode_row_into(w, n, 32 * b, &mut buf);
        // SAFETY: `buf` has 32 values; NEON is enabled here.
        std::array::from_fn(|i| unsafe { vld1q_f32(buf.as_ptr().add(4 * i)) })
    };
    // SAFETY: forwarded from the caller (the ExactFn contract).
    unsafe { exact_any(&f, w.row_len() / 32, w, n, x, rows, out) }
}
