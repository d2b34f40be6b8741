//! The fast matmul API: `y = x · Wᵀ` with the kernel set chosen for this CPU.

use std::borrow::Cow;

use aihal_core::{CoreError, Result};
use aihal_quantize::{QuantFormat, QuantizedTensor};
use candle_core::{DType, Tensor};
use half::{bf16, f16, slice::HalfFloatSliceExt};

use crate::kernels::{self, ActQ8, Kernels, Panel, EXACT_PANEL, EXACT_PANEL_MIN_ROWS, MAX_ROWS, PANEL, PANEL_MIN_ROWS};
use aihal_reference::check_matmul;

/// Activations `x` (`[M, K]` row-major) in one of the float types models run in.
#[derive(Clone, Copy, Debug)]
pub enum Activations<'a> {
    /// f32 values.
    F32(&'a [f32]),
    /// IEEE half values, widened to f32 before the kernel runs.
    F16(&'a [f16]),
    /// bfloat16 values, widened to f32 before the kernel runs.
    Bf16(&'a [bf16]),
}

impl<'a> Activations<'a> {
    pub(crate) fn len(&self) -> usize {
        match self {
            Self::F32(x) => x.len(),
            Self::F16(x) => x.len(),
            Self::Bf16(x) => x.len(),
        }
    }

    pub(crate) fn to_f32(self) -> Cow<'a, [f32]> {
        match self {
            Self::F32(x) => Cow::Borrowed(x),
            Self::F16(x) => {
                let mut v = vec![0.0; x.len()];
                x.convert_to_f32_slice(&mut v);
                Cow::Owned(v)
            }
            Self::Bf16(x) => {
                let mut v = vec![0.0; x.len()];
                x.convert_to_f32_slice(&mut v);
                Cow::Owned(v)
            }
        }
    }
}

impl<'a> From<&'a [f32]> for Activations<'a> {
    fn from(x: &'a [f32]) -> Self {
        Self::F32(x)
    }
}
impl<'a> From<&'a [f16]> for Activations<'a> {
    fn from(x: &'a [f16]) -> Self {
        Self::F16(x)
    }
}
impl<'a> From<&'a [bf16]> for Activations<'a> {
    fn from(x: &'a [bf16]) -> Self {
        Self::Bf16(x)
    }
}

/// How activations meet the weights.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ActivationPrecision {
    /// Activations quantized to int8 per block of 32 (one f32 scale per block, as llama.cpp
    /// quantizes activations for its Q8_0/Q4_0 dot products), integer dot products per
    /// block. Used for Q8_0, Q4_0, TQ2_0, int8 per channel, int8 per block (block size a
    /// multiple of 32) and NF4; other formats, and activation rows holding NaN or infinities,
    /// take the [`F32`](Self::F32) path. The measured error is in the crate README.
    ///
    /// NF4 weights enter as int8 levels, `round(127 * level)` times `absmax / 127`: an
    /// approximation of the code book by at most 0.47 / 127 of the block absmax per weight
    /// (0.0037 `absmax`, against up to 0.152 `absmax` for the NF4 rounding itself), of the same
    /// order as the activation rounding. Double-quantized NF4 uses its decoded absmax.
    ///
    /// FP8 has no integer codes. [`PackedWeights`](crate::PackedWeights) of FP8 on a CPU with
    /// AVX-512 BF16 round the activations to bf16 instead (to nearest, 8 significant bits:
    /// finer than int8 blocks), multiply with `vdpbf16ps` (exact products, f32 sums) and
    /// leave rows bf16 cannot carry to the f32 path; elsewhere FP8 takes the f32 path.
    /// [`PackedWeights::activation_path`](crate::PackedWeights::activation_path) says which.
    #[default]
    Int8,
    /// Activations stay f32, weights are decoded to f32, f32 accumulation (with FMA, in an
    /// order other than the reference's). Every format.
    F32,
}

/// Options of [`matmul_with`] and [`matmul_tensor`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MatmulOptions {
    /// How activations meet the weights.
    pub activations: ActivationPrecision,
    /// The output dtype of [`matmul_tensor`] (f32, f16 or bf16; `None` is f32). The slice
    /// functions always answer f32.
    pub output: Option<DType>,
}

impl MatmulOptions {
    /// The exact path ([`ActivationPrecision::F32`]).
    pub fn exact() -> Self {
        Self {
            activations: ActivationPrecision::F32,
            output: None,
        }
    }
}

/// [`check_matmul`], and that this crate's table of formats has kernels for the weight's format
/// (a format the table says it cannot run is `NotImplemented`, which an executor places
/// elsewhere).
pub(crate) fn check_weight(x_len: usize, m: usize, w: &QuantizedTensor) -> Result<(usize, usize)> {
    let shape = check_matmul(x_len, m, w)?;
    kernels::formats::entry(w.format())
        .exact
        .map_err(|why| CoreError::not_implemented(format!("aihal-cpu matmul over {} weights: {why}", w.format())))?;
    Ok(shape)
}

/// Whether `format` has an int8-activation path ([`ActivationPrecision::Int8`] uses it);
/// formats without one always take the f32 path.
pub fn has_int8_activation_path(format: QuantFormat) -> bool {
    kernels::generic::has_q8(format)
}

/// `y = x · Wᵀ` on the exact path: `x` `[m, K]` f32, `w` `[N, K]` in any format, `y`
/// `[m, N]` f32. Same semantics as [`reference::matmul`](aihal_reference::matmul) up to the
/// order of f32 additions.
///
/// ```
/// use aihal_quantize::{QuantFormat, QuantizedTensor};
/// let w = QuantizedTensor::from_parts(QuantFormat::Int8PerChannel, vec![2, 3], vec![1, 2, 3, 0xFF, 0, 1], vec![0.5, 2.0])?;
/// let y = aihal_cpu::matmul(&[1.0, 1.0, 1.0], 1, &w)?;
/// assert_eq!(y, [3.0, 0.0]);
/// # Ok::<(), aihal_core::CoreError>(())
/// ```
pub fn matmul(x: &[f32], m: usize, w: &QuantizedTensor) -> Result<Vec<f32>> {
    matmul_with(x.into(), m, w, MatmulOptions::exact())
}

/// `y = x · Wᵀ` with `x` in f32, f16 or bf16 and a choice of [`ActivationPrecision`].
///
/// The weights are read in their own layout, so every call decodes them (and, at M >= 4,
/// regroups them for the panel kernels). A weight used more than once (a model's layers) is
/// faster as [`PackedWeights`](crate::PackedWeights) with
/// [`matmul_packed`](crate::matmul_packed), with the same results on the int8 path: the
/// packed kernels neither decode nor regroup, which counts most for the 4-bit and 2-bit
/// formats and for M > 1 (at M = 1 the 8-bit formats run at the memory's speed either way).
/// The crate README's performance section points to the measured comparison.
pub fn matmul_with(x: Activations<'_>, m: usize, w: &QuantizedTensor, options: MatmulOptions) -> Result<Vec<f32>> {
    let (n, _) = check_weight(x.len(), m, w)?;
    let mut y = vec![0.0f32; output_len(m, n)?];
    matmul_into(x, m, w, options, &mut y)?;
    Ok(y)
}

/// Like [`matmul_with`], writing `[m, N]` into `out` (no allocation for f32 `x`, M = 1).
pub fn matmul_into(
    x: Activations<'_>,
    m: usize,
    w: &QuantizedTensor,
    options: MatmulOptions,
    out: &mut [f32],
) -> Result<()> {
    let (n, _) = check_weight(x.len(), m, w)?;
    let want = output_len(m, n)?;
    if out.len() != want {
        return Err(CoreError::shape_mismatch("matmul output [M, N]", [want], [out.len()]));
    }
    let x = x.to_f32();
    run(kernels::best(), &x, m, w, options.activations, out);
    Ok(())
}

pub(crate) fn output_len(m: usize, n: usize) -> Result<usize> {
    m.checked_mul(n)
        .ok_or_else(|| CoreError::invalid_input(format!("matmul output of {m} x {n} values overflows")))
}

/// `y = x · Wᵀ` for a candle tensor `x` of shape `[..., K]` (f32, f16 or bf16, on the CPU),
/// answering `[..., N]` in `options.output` (f32 by default).
pub fn matmul_tensor(x: &Tensor, w: &QuantizedTensor, options: MatmulOptions) -> Result<Tensor> {
    if !x.device().is_cpu() {
        return Err(CoreError::device_mismatch(
            "cpu",
            format!("{:?}", x.device().location()),
        ));
    }
    let dims = x.dims();
    let Some((_, lead)) = dims.split_last() else {
        return Err(CoreError::invalid_input(
            "matmul_tensor: x must have at least one dimension [..., K]",
        ));
    };
    let m: usize = lead.iter().product();
    let flat = x.flatten_all()?;
    let y = match x.dtype() {
        DType::F32 => matmul_with(Activations::F32(&flat.to_vec1::<f32>()?), m, w, options)?,
        DType::F16 => matmul_with(Activations::F16(&flat.to_vec1::<f16>()?), m, w, options)?,
        DType::BF16 => matmul_with(Activations::Bf16(&flat.to_vec1::<bf16>()?), m, w, options)?,
        other => {
            return Err(CoreError::unsupported(
                "aihal-cpu matmul activations",
                format!("{other:?}"),
            ))
        }
    };
    let mut shape = lead.to_vec();
    shape.push(w.shape()[0]);
    let t = Tensor::from_vec(y, shape, &candle_core::Device::Cpu)?;
    match options.output {
        None | Some(DType::F32) => Ok(t),
        Some(d @ (DType::F16 | DType::BF16)) => Ok(t.to_dtype(d)?),
        Some(other) => Err(CoreError::unsupported("aihal-cpu matmul output", format!("{other:?}"))),
    }
}

/// Weight rows per tile: the tile's packed rows stay in L2 while every activation group
/// passes over them.
const TILE_N: usize = 16;

/// Runs `kernels` over validated inputs.
pub(crate) fn run(
    kernels: &Kernels,
    x: &[f32],
    m: usize,
    w: &QuantizedTensor,
    precision: ActivationPrecision,
    out: &mut [f32],
) {
    let n = w.shape()[0];
    let k = w.row_len();
    if m == 0 || n == 0 {
        return;
    }
    let exact = (kernels.exact)(w.format());
    let q8 = match precision {
        ActivationPrecision::Int8 => kernels.q8_kernel(w.format()),
        ActivationPrecision::F32 => None,
    };
    let panel = q8
        .and_then(|_| kernels.panel_kernel(w.format()))
        .filter(|_| m >= PANEL_MIN_ROWS);
    let exact_panel = match q8 {
        None if m >= EXACT_PANEL_MIN_ROWS => kernels.exact_panel_kernel(w.format()),
        _ => None,
    };
    let act = q8.map(|_| ActQ8::quantize(x, m, k));

    // One output row per weight row (`yt` is [N, m]), so that threads own disjoint slices.
    let mut transposed = if m == 1 { Vec::new() } else { vec![0.0f32; n * m] };
    let yt: &mut [f32] = if m == 1 { &mut *out } else { &mut transposed };
    let threads = crate::pool::threads();
    if let (Some(p), Some(a)) = (panel, &act) {
        let per_task = n.div_ceil(threads * 4).next_multiple_of(PANEL).max(PANEL);
        crate::pool::run_tasks(yt.chunks_mut(per_task * m).collect(), |c, ych: &mut [f32]| {
            let mut buf = Panel::default();
            for (t, ytile) in ych.chunks_mut(PANEL * m).enumerate() {
                let n0 = c * per_task + t * PANEL;
                let cols = ytile.len() / m;
                // SAFETY: the kernel comes from the table detected for this CPU for w's
                // format; `w` passed check_matmul, n0 + cols <= N, cols <= PANEL, `ytile`
                // holds cols * m values, `a` was quantized from rows of K values.
                unsafe { p(w, n0, cols, a, &mut buf, ytile) };
                // Rows with NaN or infinities take the exact path, as everywhere.
                for i in (0..m).filter(|&i| a.non_finite[i]) {
                    for jj in 0..cols {
                        let one = std::slice::from_mut(&mut ytile[jj * m + i]);
                        // SAFETY: as above, for the single row i of `x`.
                        unsafe { exact(w, n0 + jj, &x[i * k..(i + 1) * k], 1, one) }
                    }
                }
            }
        });
    } else if let Some(p) = exact_panel {
        let per_task = n.div_ceil(threads * 4).next_multiple_of(EXACT_PANEL).max(EXACT_PANEL);
        crate::pool::run_tasks(yt.chunks_mut(per_task * m).collect(), |c, ych: &mut [f32]| {
            let mut buf = Panel::default();
            for (t, ytile) in ych.chunks_mut(EXACT_PANEL * m).enumerate() {
                let n0 = c * per_task + t * EXACT_PANEL;
                // SAFETY: the kernel comes from the table detected for this CPU for w's
                // format; `w` passed check_matmul, n0 + cols <= N, cols <= EXACT_PANEL, `x` holds
                // m rows of K, `ytile` holds cols * m values.
                unsafe { p(w, n0, ytile.len() / m, x, m, &mut buf, ytile) };
            }
        });
    } else {
        run_rows(exact, q8, act.as_ref(), w, x, m, yt, threads);
    }
    if m > 1 {
        for (j, col) in transposed.chunks_exact(m).enumerate() {
            for (i, &v) in col.iter().enumerate() {
                out[i * n + j] = v;
            }
        }
    }
}

/// The row kernels: each call one weight row against up to [`MAX_ROWS`] activation rows.
#[allow(clippy::too_many_arguments)]
fn run_rows(
    exact: kernels::ExactFn,
    q8: Option<kernels::Q8Fn>,
    act: Option<&ActQ8>,
    w: &QuantizedTensor,
    x: &[f32],
    m: usize,
    yt: &mut [f32],
    threads: usize,
) {
    let n = w.shape()[0];
    let k = w.row_len();
    let per_task = n.div_ceil(threads * 4).next_multiple_of(TILE_N).max(TILE_N);
    crate::pool::run_tasks(yt.chunks_mut(per_task * m).collect(), |c, ych: &mut [f32]| {
        let n0 = c * per_task;
        for (t, ytile) in ych.chunks_mut(TILE_N * m).enumerate() {
            let nt0 = n0 + t * TILE_N;
            let mut i0 = 0;
            while i0 < m {
                let rows = MAX_ROWS.min(m - i0);
                for (jj, yrow) in ytile.chunks_exact_mut(m).enumerate() {
                    let j = nt0 + jj;
                    let dst = &mut yrow[i0..i0 + rows];
                    match (q8, act) {
                        (Some(f), Some(a)) if !a.non_finite[i0..i0 + rows].contains(&true) => {
                            // SAFETY: the kernels come from the table detected for this CPU;
                            // `w` passed check_matmul, j < N, rows i0..i0 + rows exist in `a`,
                            // `dst` has `rows` values.
                            unsafe { f(w, j, a, i0, rows, dst) }
                        }
                        (Some(f), Some(a)) => {
                            for (r, d) in dst.iter_mut().enumerate() {
                                let i = i0 + r;
                                let one = std::slice::from_mut(d);
                                if a.non_finite[i] {
                                    // SAFETY: as above, for the single row i of `x`.
                                    unsafe { exact(w, j, &x[i * k..(i + 1) * k], 1, one) }
                                } else {
                                    // SAFETY: as above, for the single row i of `a`.
                                    unsafe { f(w, j, a, i, 1, one) }
                                }
                            }
                        }
                        _ => {
                            // SAFETY: as above; `x` holds rows i0..i0 + rows of K values.
                            unsafe { exact(w, j, &x[i0 * k..(i0 + rows) * k], rows, dst) }
                        }
                    }
                }
                i0 += rows;
            }
        }
    });
}
