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

pub(crate) mod act;
#[cfg(target_arch = "aarch64")]
pub(crate) mod arm;
pub(crate) mod generic;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86;

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

/// One set of kernels.
pub(crate) struct Kernels {
    /// Shown in logs and bench output (`generic`, `avx2`, `neon+dotprod`).
    pub(crate) name: &'static str,
    /// The exact kernel for a format.
    pub(crate) exact: fn(QuantFormat) -> ExactFn,
    /// The int8-activation kernel for a format, where the format has integer codes.
    pub(crate) q8: fn(QuantFormat) -> Option<Q8Fn>,
}

/// The scalar kernels: the reference arithmetic, and what runs when no SIMD set fits.
pub(crate) fn generic() -> &'static Kernels {
    &generic::KERNELS
}

/// The best kernel set for this CPU, detected once.
pub(crate) fn best() -> &'static Kernels {
    static BEST: OnceLock<&'static Kernels> = OnceLock::new();
    BEST.get_or_init(detect)
}

fn detect() -> &'static Kernels {
    #[cfg(target_arch = "x86_64")]
    {
        if let Some(k) = x86::detect() {
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

/// The name of the kernel set chosen for this CPU at run time (`avx2+fma+f16c`, `neon+dotprod`,
/// `neon` or `generic`).
pub fn kernel_set_name() -> &'static str {
    best().name
}

#[cfg(test)]
pub(crate) mod tests;
