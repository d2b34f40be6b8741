//! The kernel table: a generic (scalar) set every CPU runs, and the best set for this CPU,
//! chosen once per process from run-time feature detection.
//!
//! A kernel computes the dot products of one weight row `n` with up to [`MAX_ROWS`]
//! consecutive activation rows, so each decoded weight is used for several rows while it is
//! in registers. Two families:
//! - **exact**: f32 activations, weights decoded to f32, f32 accumulation (no activation
//!   quantization). Every format has one.
//! - **q8**: activations quantized to int8 per block of 32 (one f32 scale per block, see
//!   [`ActQ8`]), integer dot products per block, scaled and summed in f32. Formats with
//!   integer codes (Q8_0, Q4_0, TQ2_0, int8 per channel, int8 per block of a multiple of 32)
//!   have one.
//! - **panel**: the int8-activation arithmetic for M > 1, shaped as a small GEMM: 8 weight
//!   rows are repacked so that one vector holds 4 consecutive codes of each of the 8 rows
//!   (stored unsigned, with a per-format offset), each 4 activation codes are broadcast and
//!   multiplied against all 8 rows at once, and each output lane is one output feature, so
//!   no horizontal sums are needed and the repacked panel is reused by every activation row.

pub(crate) mod act;
#[cfg(target_arch = "aarch64")]
pub(crate) mod arm;
#[cfg(target_arch = "aarch64")]
pub(crate) mod arm_packed;
pub(crate) mod codes;
pub(crate) mod formats;
pub(crate) mod generic;
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub(crate) mod panel_dispatch;
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub(crate) mod panels;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_fpanel;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_packed256;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_packed512;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_panel;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_set;

use std::sync::OnceLock;

use aihal_quantize::{QuantFormat, QuantizedTensor};

pub(crate) use act::ActQ8;

/// Activation rows one kernel call handles at most.
pub(crate) const MAX_ROWS: usize = 4;

/// `out[r] = Σ_k x[r*K + k] * W[n][k]` for `r < rows` (`rows <= MAX_ROWS`, `x` holds
/// `rows * K` values).
///
/// # Safety
/// The caller upholds the table's contract: the CPU has the features the kernel set was
/// chosen for (guaranteed for kernels taken from [`best`] or [`generic`]), `w` passed
/// `check_matmul`, `n < N`, `x.len() >= rows * K`, `out.len() >= rows`.
pub(crate) type ExactFn = unsafe fn(w: &QuantizedTensor, n: usize, x: &[f32], rows: usize, out: &mut [f32]);

/// `out[r] = Σ_b scale(W, n, b) * d[r][b] * Σ_{j<32} Wq[n][32b + j] * q[r][32b + j]` for the
/// activation rows `row0 .. row0 + rows` of `a`.
///
/// # Safety
/// As [`ExactFn`], and `row0 + rows <= a.rows`.
pub(crate) type Q8Fn = unsafe fn(w: &QuantizedTensor, n: usize, a: &ActQ8, row0: usize, rows: usize, out: &mut [f32]);

/// Weight rows a panel kernel handles at once (one per f32 lane of a 256-bit vector).
pub(crate) const PANEL: usize = 8;

/// Weight rows an exact panel kernel handles at once (two 256-bit vectors of f32).
pub(crate) const EXACT_PANEL: usize = 16;

/// A repacked panel of [`PANEL`] weight rows, reused between calls to avoid allocations.
#[derive(Default)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // only the x86 sets have panels yet
pub(crate) struct Panel {
    /// Per block of 32 values: 8 groups of 4 codes × [`PANEL`] rows, unsigned.
    pub(crate) codes: Vec<u8>,
    /// Per block: the [`PANEL`] weight rows' scales (zero for rows past the matrix).
    pub(crate) scales: Vec<f32>,
    /// The exact panels: `K` × [`EXACT_PANEL`] decoded weights, k-major.
    pub(crate) values: Vec<f32>,
}

/// `yt[j * a.rows + i] = Σ_b scale(W, n0 + j, b) * d[i][b] * Σ_{l<32} Wq[n0 + j][32b + l] * q[i][32b + l]`
/// for `j < cols` and every activation row `i` of `a` (the same sums as [`Q8Fn`], rounded
/// in f32 with one FMA per block).
///
/// # Safety
/// The CPU has the features of the kernel set, `w` passed `check_matmul` and has the format
/// the kernel was chosen for, `n0 + cols <= N`, `1 <= cols <= PANEL`,
/// `yt.len() >= cols * a.rows`, `a` was quantized from rows of `w.row_len()` values.
pub(crate) type PanelFn =
    unsafe fn(w: &QuantizedTensor, n0: usize, cols: usize, a: &ActQ8, buf: &mut Panel, yt: &mut [f32]);

/// `yt[j * m + i] = Σ_k x[i][k] * W[n0 + j][k]` for `j < cols`, `i < m`: the exact path
/// with the weights decoded to f32 once per panel (f32 FMA accumulation, in an order other
/// than the reference's).
///
/// # Safety
/// The CPU has the features of the kernel set, `w` passed `check_matmul` and has the format
/// the kernel was chosen for, `n0 + cols <= N`, `1 <= cols <= EXACT_PANEL`, `x.len() >= m * K`,
/// `yt.len() >= cols * m`.
pub(crate) type ExactPanelFn =
    unsafe fn(w: &QuantizedTensor, n0: usize, cols: usize, x: &[f32], m: usize, buf: &mut Panel, yt: &mut [f32]);

/// One set of kernels.
pub(crate) struct Kernels {
    /// Shown in logs and bench output (`generic`, `avx2`, `neon+dotprod`).
    pub(crate) name: &'static str,
    /// The exact kernel for a format.
    pub(crate) exact: fn(QuantFormat) -> ExactFn,
    /// The int8-activation kernel for a format, where the format has integer codes.
    pub(crate) q8: fn(QuantFormat) -> Option<Q8Fn>,
    /// The panel kernel for a format, where the set has one (used for M >= [`PANEL_MIN_ROWS`]
    /// on the int8-activation path).
    pub(crate) panel: fn(QuantFormat) -> Option<PanelFn>,
    /// The exact panel kernel for a format, where the set has one (used for
    /// M >= [`EXACT_PANEL_MIN_ROWS`] on the f32 path).
    pub(crate) exact_panel: fn(QuantFormat) -> Option<ExactPanelFn>,
}

impl Kernels {
    /// The int8-activation row kernel of this set for `format`, where the table of formats
    /// ([`formats::entry`]) gives the format that path: the set's own, else the generic one.
    pub(crate) fn q8_kernel(&self, format: QuantFormat) -> Option<Q8Fn> {
        formats::entry(format).q8.ok()?;
        (self.q8)(format).or_else(|| generic::q8_for(format))
    }

    /// The int8 panel kernel of this set for `format`, where the table of formats gives it
    /// panels and the set has one.
    pub(crate) fn panel_kernel(&self, format: QuantFormat) -> Option<PanelFn> {
        let e = formats::entry(format);
        (e.panels && e.q8.is_ok()).then(|| (self.panel)(format)).flatten()
    }

    /// The exact panel kernel of this set for `format`, where the table of formats gives it
    /// panels and the set has one.
    pub(crate) fn exact_panel_kernel(&self, format: QuantFormat) -> Option<ExactPanelFn> {
        let e = formats::entry(format);
        (e.panels && e.exact.is_ok())
            .then(|| (self.exact_panel)(format))
            .flatten()
    }
}

/// The smallest M for which the exact panel kernels run: their f32 panel is 16 × K × 4
/// bytes, written once and read once per 6 activation rows, so it pays off later than the
/// int8 panels.
pub(crate) const EXACT_PANEL_MIN_ROWS: usize = 16;

/// The smallest M for which the int8-activation panel kernels run (below it, repacking costs more than the
/// reuse gains).
pub(crate) const PANEL_MIN_ROWS: usize = 4;

/// The scalar kernels: the reference arithmetic, and what runs when no SIMD set fits.
pub(crate) fn generic() -> &'static Kernels {
    &generic::KERNELS
}

/// The instruction-set extensions of this CPU that the crate's code may use, detected once per
/// process. This is the crate's one place that asks the CPU: the kernel sets ([`best`]), the
/// packed layouts ([`panels::Isa::available`]) and the ops' builds read it.
#[derive(Clone, Copy, Debug, Default)]
#[allow(clippy::struct_excessive_bools)] // one flag per extension, read one at a time
pub(crate) struct Cpu {
    /// x86_64: AVX2 and FMA (the ops' wide builds).
    #[cfg(target_arch = "x86_64")]
    pub(crate) avx2_fma: bool,
    /// x86_64: AVX2, FMA and F16C (the `avx2+fma+f16c` kernel set, the AVX2 packed layouts).
    #[cfg(target_arch = "x86_64")]
    pub(crate) avx2_set: bool,
    /// x86_64: AVX-VNNI (`vpdpbusd` on 256-bit vectors) on top of `avx2_set`.
    #[cfg(target_arch = "x86_64")]
    pub(crate) avx_vnni: bool,
    /// x86_64: AVX-512 F on top of `avx2_fma` (the ops' 16-lane builds).
    #[cfg(target_arch = "x86_64")]
    pub(crate) avx512f: bool,
    /// x86_64: AVX-512 F, BW and VNNI on top of `avx2_set` (the 16-row packed layouts).
    #[cfg(target_arch = "x86_64")]
    pub(crate) avx512_vnni: bool,
    /// x86_64: AVX-512 VBMI (`vpermb`) on top of `avx512_vnni`.
    #[cfg(target_arch = "x86_64")]
    pub(crate) avx512_vbmi: bool,
    /// x86_64: AVX-512 BF16 (`vdpbf16ps`) on top of `avx512_vnni`.
    #[cfg(target_arch = "x86_64")]
    pub(crate) avx512_bf16: bool,
    /// aarch64: NEON (Advanced SIMD).
    #[cfg(target_arch = "aarch64")]
    pub(crate) neon: bool,
    /// aarch64: FEAT_DotProd (`sdot`).
    #[cfg(target_arch = "aarch64")]
    pub(crate) dotprod: bool,
    /// aarch64: FEAT_FP16 (half-precision arithmetic).
    #[cfg(target_arch = "aarch64")]
    pub(crate) fp16: bool,
}

/// What this CPU runs, detected once (see [`Cpu`]).
pub(crate) fn cpu() -> &'static Cpu {
    static CPU: OnceLock<Cpu> = OnceLock::new();
    CPU.get_or_init(|| {
        #[allow(unused_mut)] // nothing to set on other architectures
        let mut c = Cpu::default();
        #[cfg(target_arch = "x86_64")]
        {
            c.avx2_fma = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
            c.avx2_set = c.avx2_fma && is_x86_feature_detected!("f16c");
            c.avx_vnni = c.avx2_set && is_x86_feature_detected!("avxvnni");
            c.avx512f = c.avx2_fma && is_x86_feature_detected!("avx512f");
            c.avx512_vnni = c.avx2_set
                && c.avx512f
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vnni");
            c.avx512_vbmi = c.avx512_vnni && is_x86_feature_detected!("avx512vbmi");
            c.avx512_bf16 = c.avx512_vnni && is_x86_feature_detected!("avx512bf16");
        }
        #[cfg(target_arch = "aarch64")]
        {
            use std::arch::is_aarch64_feature_detected;
            c.neon = is_aarch64_feature_detected!("neon");
            c.dotprod = c.neon && is_aarch64_feature_detected!("dotprod");
            c.fp16 = c.neon && is_aarch64_feature_detected!("fp16");
        }
        c
    })
}

/// The best kernel set for this CPU, detected once.
pub(crate) fn best() -> &'static Kernels {
    static BEST: OnceLock<&'static Kernels> = OnceLock::new();
    BEST.get_or_init(detect)
}

fn detect() -> &'static Kernels {
    #[cfg(target_arch = "x86_64")]
    {
        if let Some(k) = x86_set::detect() {
            return k;
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        if let Some(k) = arm::detect() {
            return k;
        }
    }
    aihal_core::warn_once(
        "aihal-cpu:no-simd",
        "aihal-cpu: no SIMD kernel set fits this CPU; running the scalar kernels",
    );
    generic()
}

/// Whether packed FP8 takes bf16 activations on the reduced-precision path here (AVX-512 BF16).
#[cfg_attr(not(any(target_arch = "x86_64", target_arch = "aarch64")), allow(dead_code))]
pub(crate) fn fp8_bf16_here() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        crate::kernels::cpu().avx512_bf16
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The name of the kernel set chosen for this CPU at run time (`avx2+fma+f16c`, `neon`,
/// `neon+dotprod`, `neon+fp16`, `neon+dotprod+fp16` or `generic`): the kernels of
/// [`matmul_with`](crate::matmul_with) and the ops. Packed weights have their own layout per
/// instruction set (AVX-512 VNNI where the CPU has it), which
/// [`PackedWeights::layout_name`](crate::PackedWeights::layout_name) names.
pub fn kernel_set_name() -> &'static str {
    best().name
}

// Results are compared bit for bit on purpose: the fixed-order kernels are deterministic.
#[cfg(any(test, feature = "test-internals"))]
#[allow(clippy::float_cmp)]
pub(crate) mod checks;
#[cfg(test)]
mod tests;
