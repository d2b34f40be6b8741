//! The checks themselves, generic over the runtime.
//!
//! # Panics
//!
//! Every check panics (fails its test) on a mismatch, naming the seed.
#![allow(clippy::missing_panics_doc)]

use std::cmp::Ordering;

use aihal_core::CoreError;
use aihal_quantize::{QuantFormat, QuantizedTensor};
use cubecl::prelude::*;
use half::{bf16, f16};

use super::rng::Rng;
use crate::{dequantize_into, Context, DeviceBuffer, DeviceQuantized};

/// Every format with a shape that straddles the kernels' edges (partial cubes, odd element
/// counts, partial blocks), paired with a value range.
pub fn format_cases() -> Vec<(QuantFormat, Vec<usize>)> {
    vec![
        (QuantFormat::Q8_0, vec![7, 96]),
        (QuantFormat::Q4_0, vec![5, 160]),
        (QuantFormat::Q4_1, vec![5, 96]),
        (QuantFormat::Q5_0, vec![7, 160]),
        (QuantFormat::Q4K, vec![3, 512]),
        (QuantFormat::Q6K, vec![5, 256]),
        (QuantFormat::Q5_1, vec![3, 64]),
        (QuantFormat::Q5K, vec![2, 768]),
        (QuantFormat::Q2K, vec![3, 256]),
        (QuantFormat::Q3K, vec![5, 512]),
        (QuantFormat::Iq4Nl, vec![7, 64]),
        (QuantFormat::Iq4Xs, vec![3, 256]),
        (QuantFormat::Tq2_0, vec![3, 512]),
        (QuantFormat::Ternary, vec![7, 37]),
        (
            QuantFormat::Nf4 {
                block_size: 64,
                double_quant: false,
            },
            vec![5, 77],
        ),
        (
            QuantFormat::Nf4 {
                block_size: 32,
                double_quant: true,
            },
            vec![40, 300],
        ),
        (QuantFormat::Int8PerChannel, vec![6, 45]),
        (QuantFormat::Int8PerBlock { block_size: 16 }, vec![4, 50]),
        (QuantFormat::Fp8E4M3 { block_size: None }, vec![3, 33]),
        (QuantFormat::Fp8E4M3 { block_size: Some(32) }, vec![4, 70]),
        (QuantFormat::Fp8E5M2 { block_size: None }, vec![5, 31]),
        (QuantFormat::Fp8E5M2 { block_size: Some(16) }, vec![3, 40]),
    ]
}

/// Per element, the magnitude of the additive term of its format's definition: `|m|` of
/// the block for Q4_1 and Q5_1 (`q d + m`), `dmin m` of the sub-block for Q4_K, Q5_K and
/// Q2_K (`(d sc) q - dmin m`), zero for every other format (a value is a scaled code
/// there). Read from the blocks as `aihal_quantize::format` lays them out.
///
/// A kernel may contract `q d + m` into a fused multiply-add, or sum `d Σ q x` and
/// `m Σ x` apart: either way its rounding scales with `|q d| + |m| ≤ |w| + 2 |m|`, which can
/// be far above `|w|` where the two terms cancel.
pub fn offsets(q: &QuantizedTensor) -> Vec<f32> {
    let f16_at = |b: &[u8], at: usize| f16::from_le_bytes([b[at], b[at + 1]]).to_f32();
    let twice = |m: f32| [m, m];
    // One entry per 16 values.
    let per_16: Vec<f32> = match q.format() {
        // block_q4_1 (20 bytes), block_q5_1 (24): f16 d, f16 m, then the codes.
        QuantFormat::Q4_1 => q
            .data()
            .chunks_exact(20)
            .flat_map(|b| twice(f16_at(b, 2).abs()))
            .collect(),
        QuantFormat::Q5_1 => q
            .data()
            .chunks_exact(24)
            .flat_map(|b| twice(f16_at(b, 2).abs()))
            .collect(),
        // block_q4_K (144 bytes), block_q5_K (176): f16 d, f16 dmin, 12 bytes of 6-bit
        // scales and minimums (ggml-quants.c `get_scale_min_k4`), then the codes; one
        // minimum per 32-value sub-block.
        QuantFormat::Q4K | QuantFormat::Q5K => {
            let bytes = if q.format() == QuantFormat::Q4K { 144 } else { 176 };
            q.data()
                .chunks_exact(bytes)
                .flat_map(|b| {
                    let dmin = f16_at(b, 2);
                    let sc = &b[4..16];
                    (0..8).flat_map(move |j| {
                        let m = if j < 4 {
                            sc[j + 4] & 63
                        } else {
                            (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4)
                        };
                        twice((dmin * f32::from(m)).abs())
                    })
                })
                .collect()
        }
        // block_q2_K (84 bytes): sixteen bytes of a 4-bit scale (low) and minimum (high) per
        // 16 values, the codes, f16 d at byte 80, f16 dmin at 82.
        QuantFormat::Q2K => q
            .data()
            .chunks_exact(84)
            .flat_map(|b| {
                let dmin = f16_at(b, 82);
                b[..16].iter().map(move |&sm| (dmin * f32::from(sm >> 4)).abs())
            })
            .collect(),
        _ => return vec![0.0; q.numel()],
    };
    per_16.iter().flat_map(|&m| std::iter::repeat_n(m, 16)).collect()
}

/// `|w| + 2 |offset|` per element ([`offsets`]): the magnitude the rounding of a decoded
/// weight, or of a block-wise sum, scales with.
///
/// # Panics
///
/// When the reference dequantization fails.
pub fn magnitudes(q: &QuantizedTensor) -> Vec<f32> {
    let w = aihal_quantize::dequantize(q).expect("reference dequantize");
    w.iter().zip(offsets(q)).map(|(w, o)| w.abs() + 2.0 * o).collect()
}

/// Random weights of `shape` quantized to `format` with `aihal_quantize::quantize`.
///
/// # Panics
///
/// When quantization fails (a bug in the case table).
pub fn random_weights(rng: &mut Rng, format: QuantFormat, shape: &[usize]) -> QuantizedTensor {
    let n: usize = shape.iter().product();
    let scale = rng.uniform(0.5, 4.0);
    let values = rng.values(n, scale);
    aihal_quantize::quantize(format, &values, shape)
        .unwrap_or_else(|e| panic!("quantize {format} {shape:?} (seed {}): {e}", rng.seed()))
}

/// Asserts `got` matches `want` element by element within `tol(want)`; NaN never matches
/// (outputs are poisoned with NaN, so an unwritten element fails here).
///
/// # Panics
///
/// On a length difference or any element out of tolerance.
pub fn assert_close(what: &str, seed: u64, got: &[f32], want: &[f32], tol: impl Fn(usize, f32) -> f32) {
    assert_eq!(got.len(), want.len(), "{what}: length (seed {seed})");
    let bad: Vec<(usize, f32, f32)> = got
        .iter()
        .zip(want)
        .enumerate()
        .filter(|(i, (g, w))| {
            !matches!(
                (*g - *w).abs().partial_cmp(&tol(*i, **w)),
                Some(Ordering::Less | Ordering::Equal)
            )
        })
        .map(|(i, (g, w))| (i, *g, *w))
        .collect();
    let first: Vec<String> = bad
        .iter()
        .take(5)
        .map(|(i, g, w)| format!("[{i}] got {g} want {w} (tolerance {})", tol(*i, *w)))
        .collect();
    assert!(
        bad.is_empty(),
        "{what}: {} of {} elements out of tolerance (seed {seed}; replay with AIHAL_TEST_SEED={seed}): {}",
        bad.len(),
        got.len(),
        first.join("; ")
    );
}

/// A device output buffer of `len` elements of `E`, filled with `poison`.
///
/// # Panics
///
/// When the upload fails.
pub fn poisoned<R: Runtime, E: CubeElement>(ctx: &Context<R>, len: usize, poison: E) -> DeviceBuffer<R, E> {
    ctx.upload(&vec![poison; len])
        .expect("upload of a poisoned output buffer")
}

fn upload<R: Runtime>(ctx: &Context<R>, q: &QuantizedTensor) -> DeviceQuantized<R> {
    DeviceQuantized::upload(ctx, q).unwrap_or_else(|e| panic!("upload {}: {e}", q.format()))
}

/// Dequantize every format to f32 and compare with `aihal_quantize::dequantize`.
///
/// Tolerance: the kernel computes the contract's `decode(code) * scale` in f32, so results
/// equal the reference up to the compiler contracting a multiply-add (NF4 double
/// quantization: `code * scale + offset`; Q4_1, Q5_1, Q4_K, Q5_K and Q2_K: `q d + m`): 2⁻²⁰ of the tensor's
/// largest magnitude for NF4 double quantization, else 2⁻²² of `|w| + |m|` (the minimum
/// `m` of the value's block, [`offsets`]; zero for the formats without one), since a
/// contraction skips one rounding of a product of magnitude at most `|w| + |m|`.
pub fn dequantize_every_format_f32<R: Runtime>(ctx: &Context<R>) {
    let mut rng = Rng::fresh();
    for (format, shape) in format_cases() {
        let q = random_weights(&mut rng, format, &shape);
        let want = aihal_quantize::dequantize(&q).expect("reference dequantize");
        let off = offsets(&q);
        let dq = upload(ctx, &q);
        let out = poisoned(ctx, q.numel(), f32::NAN);
        dequantize_into::<R, f32>(ctx, &dq, &out).unwrap_or_else(|e| panic!("{format}: {e}"));
        let got: Vec<f32> = ctx.download(&out).expect("download");
        let max = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let nested = matches!(format, QuantFormat::Nf4 { double_quant: true, .. });
        assert_close(
            &format!("dequantize {format} {shape:?} to f32"),
            rng.seed(),
            &got,
            &want,
            |i, w| {
                if nested {
                    max * 2f32.powi(-20)
                } else {
                    (w.abs() + off[i]) * 2f32.powi(-22)
                }
            },
        );
    }
}

/// Dequantize every format to f16 and bf16 where the device supports them, compared with the
/// reference rounded once to that type: within one unit in the last place of the half type
/// (2⁻¹⁰ relative for f16, 2⁻⁷ for bf16, plus f16's smallest subnormal), plus the f32
/// tolerance of [`dequantize_every_format_f32`] for a contracted `q d + m` (2⁻²² of the
/// block's minimum, [`offsets`]), which may round to the neighbouring half value.
pub fn dequantize_every_format_half<R: Runtime>(ctx: &Context<R>) {
    let mut rng = Rng::fresh();
    let mut ran = false;
    for (format, shape) in format_cases() {
        let q = random_weights(&mut rng, format, &shape);
        let want = aihal_quantize::dequantize(&q).expect("reference dequantize");
        let off = offsets(&q);
        let dq = upload(ctx, &q);
        let n = q.numel();
        if ctx.supports::<f16>() {
            let out = poisoned(ctx, n, f16::NAN);
            dequantize_into::<R, f16>(ctx, &dq, &out).unwrap_or_else(|e| panic!("{format} f16: {e}"));
            let got: Vec<f32> = ctx
                .download(&out)
                .expect("download")
                .iter()
                .map(|v| v.to_f32())
                .collect();
            let want16: Vec<f32> = want.iter().map(|&v| f16::from_f32(v).to_f32()).collect();
            assert_close(
                &format!("dequantize {format} to f16"),
                rng.seed(),
                &got,
                &want16,
                |i, w| w.abs() * 2f32.powi(-10) + 2f32.powi(-24) + off[i] * 2f32.powi(-22),
            );
            ran = true;
        }
        if ctx.supports::<bf16>() {
            let out = poisoned(ctx, n, bf16::NAN);
            dequantize_into::<R, bf16>(ctx, &dq, &out).unwrap_or_else(|e| panic!("{format} bf16: {e}"));
            let got: Vec<f32> = ctx
                .download(&out)
                .expect("download")
                .iter()
                .map(|v| v.to_f32())
                .collect();
            let want16: Vec<f32> = want.iter().map(|&v| bf16::from_f32(v).to_f32()).collect();
            assert_close(
                &format!("dequantize {format} to bf16"),
                rng.seed(),
                &got,
                &want16,
                |i, w| w.abs() * 2f32.powi(-7) + off[i] * 2f32.powi(-22),
            );
            ran = true;
        } else {
            let err = dequantize_into::<R, bf16>(ctx, &dq, &poisoned(ctx, n, bf16::ZERO)).unwrap_err();
            assert!(matches!(err, CoreError::Unsupported { .. }), "{err}");
        }
    }
    if !ran {
        eprintln!(
            "note: {} supports neither f16 nor bf16; only the Unsupported answer was checked",
            ctx.backend()
        );
    }
}

/// A buffer larger than the device's largest single buffer is `OutOfMemory`, before
/// anything is allocated.
pub fn oversized_buffers_are_out_of_memory<R: Runtime>(ctx: &Context<R>) {
    let max = ctx.limits().max_buffer_bytes;
    let too_many = usize::try_from(max / 4 + 1).unwrap_or(usize::MAX);
    let err = ctx.alloc::<f32>(too_many).unwrap_err();
    assert!(matches!(err, CoreError::OutOfMemory { .. }), "{err}");
    assert!(err.to_string().contains("split"), "{err}");
}

/// A wrong output length is a `ShapeMismatch`, and NF4 with double
/// quantization but no nested absmax is refused at upload.
pub fn dequantize_rejects_bad_output<R: Runtime>(ctx: &Context<R>) {
    let mut rng = Rng::fresh();
    let q = random_weights(&mut rng, QuantFormat::Q8_0, &[2, 64]);
    let dq = upload(ctx, &q);
    for len in [100, 129] {
        let err = dequantize_into::<R, f32>(ctx, &dq, &poisoned(ctx, len, 0.0f32)).unwrap_err();
        assert!(matches!(err, CoreError::ShapeMismatch { .. }), "{err}");
    }
    let q = random_weights(
        &mut rng,
        QuantFormat::Nf4 {
            block_size: 64,
            double_quant: true,
        },
        &[2, 64],
    );
    let (format, shape, data, scales) = q.into_parts();
    let bare = QuantizedTensor::from_parts(format, shape, data, scales).expect("parts");
    let err = DeviceQuantized::upload(ctx, &bare).unwrap_err();
    assert!(matches!(err, CoreError::InvalidInput(_)), "{err}");
}

/// `Σ_k |x[i][k] * w[n][k]|` for every output: the scale of the rounding error of a sum.
fn abs_products(x: &[f32], m: usize, w: &[f32], n: usize, k: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            out[i * n + j] = (0..k).map(|c| (x[i * k + c] * w[j * k + c]).abs()).sum();
        }
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn matmul_case<R: Runtime, F: Float + CubeElement>(
    ctx: &Context<R>,
    rng: &mut Rng,
    format: QuantFormat,
    shape: &[usize],
    m: usize,
    to_f: impl Fn(f32) -> F,
    from_f: impl Fn(F) -> f32,
    out_ulp: f32,
    poison: F,
) {
    let q = random_weights(rng, format, shape);
    let (n, k) = (shape[0], shape[1]);
    // Activations as the device sees them (rounded to F), so only the matmul is compared.
    let x: Vec<F> = rng.values(m * k, 2.0).into_iter().map(&to_f).collect();
    let x32: Vec<f32> = x.iter().map(|&v| from_f(v)).collect();
    let want = aihal_reference::matmul(&x32, m, &q).expect("reference matmul");
    let scale = abs_products(&x32, m, &magnitudes(&q), n, k);
    let dq = upload(ctx, &q);
    let xh = ctx.upload(&x).expect("upload x");
    let out = poisoned(ctx, m * n, poison);
    crate::quant_matmul_into::<R, F>(ctx, &xh, m, &dq, &out).unwrap_or_else(|e| panic!("{format} m={m}: {e}"));
    let got: Vec<f32> = ctx.download(&out).expect("download").into_iter().map(&from_f).collect();
    let gamma = 2.0 * k as f32 * 2f32.powi(-24);
    assert_close(
        &format!(
            "matmul {format} x[{m}, {k}] · W[{n}, {k}]ᵀ as {}",
            std::any::type_name::<F>()
        ),
        rng.seed(),
        &got,
        &want,
        |i, w| gamma * scale[i] + out_ulp * w.abs() + 1e-30,
    );
}

/// Fused matmul for every format, M = 1 (GEMV) and M = 3, 17 (GEMM, straddling the 16-row
/// tile), f32 activations, against `aihal_reference::matmul`.
///
/// Tolerance: the standard bound for a reordered f32 sum, `2 K u Σ|x w|` with `u = 2⁻²⁴`,
/// where for Q4_1, Q5_1, Q4_K, Q5_K and Q2_K `|w|` is replaced by `|w| + 2 |m|` ([`magnitudes`]): the GEMV
/// sums `d Σ q x` and `m Σ x` apart, and a decoded `q d + m` may be contracted, so the
/// rounding scales with `|q d| + |m|` rather than with `|w|`.
pub fn matmul_every_format_f32<R: Runtime>(ctx: &Context<R>) {
    let mut rng = Rng::fresh();
    for (format, shape) in format_cases() {
        for m in [1, 3, 17] {
            matmul_case::<R, f32>(ctx, &mut rng, format, &shape, m, |v| v, |v| v, 0.0, f32::NAN);
        }
    }
}

/// Fused matmul with f16 activations and output (where the device has f16): the reference
/// gets the same f16-rounded activations; the output adds one f16 rounding (2⁻¹⁰ relative).
pub fn matmul_f16_activations<R: Runtime>(ctx: &Context<R>) {
    if !ctx.supports::<f16>() {
        eprintln!("note: {} has no f16; f16 matmul not checked", ctx.backend());
        return;
    }
    let mut rng = Rng::fresh();
    for (format, shape) in format_cases().into_iter().step_by(2) {
        for m in [1, 18] {
            matmul_case::<R, f16>(
                ctx,
                &mut rng,
                format,
                &shape,
                m,
                f16::from_f32,
                f16::to_f32,
                2f32.powi(-10),
                f16::NAN,
            );
        }
    }
}

/// Wrong shapes are errors: a weight that is not 2-D, an x or output buffer too small, m = 0.
pub fn matmul_rejects_bad_shapes<R: Runtime>(ctx: &Context<R>) {
    let mut rng = Rng::fresh();
    let q = random_weights(&mut rng, QuantFormat::Q8_0, &[8, 64]);
    let dq = upload(ctx, &q);
    let x = ctx.upload(&rng.values(2 * 64, 1.0)).expect("upload");
    let out = poisoned(ctx, 16, 0.0f32);
    let err = crate::quant_matmul_into::<R, f32>(ctx, &x, 3, &dq, &out).unwrap_err();
    assert!(matches!(err, CoreError::ShapeMismatch { .. }), "{err}");
    let small = poisoned(ctx, 15, 0.0f32);
    let err = crate::quant_matmul_into::<R, f32>(ctx, &x, 2, &dq, &small).unwrap_err();
    assert!(matches!(err, CoreError::ShapeMismatch { .. }), "{err}");
    let err = crate::quant_matmul_into::<R, f32>(ctx, &x, 0, &dq, &out).unwrap_err();
    assert!(matches!(err, CoreError::InvalidInput(_)), "{err}");
    let q3 = random_weights(&mut rng, QuantFormat::Int8PerChannel, &[2, 2, 32]);
    let err = crate::quant_matmul::<R, f32>(ctx, &x, 1, &upload(ctx, &q3)).unwrap_err();
    assert!(matches!(err, CoreError::InvalidInput(_)), "{err}");
}
