//! The packed layouts' kernels, one call at a time: which kernel file runs a layout of
//! [`super::panels`]. Apart from the layouts so that the kernel files, which read the layouts,
//! and the layouts do not import each other.

use super::panels::{Isa, Packed, PackedAct};

/// Weight rows one call of [`panel`] covers for `m` activation rows: the panel's rows, or
/// (the AVX-512 8-bit kernels past 6 rows) two panels'.
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
pub(crate) fn call_rows(w: &Packed, m: usize) -> usize {
    match w.isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => w.isa.rows() * super::x86_packed512::panels_per_call(w.kind, m),
        _ => w.isa.rows(),
    }
}

/// Call `u` of `w` (the [`call_rows`] weight rows from `u` times as many) against every row
/// `i` of `a`, written to `y[rows * i + j]` for those `rows` weight rows `j` (zero for rows
/// past the matrix). The same sums and roundings as the generic q8 kernel.
///
/// # Panics
/// If `a` was not quantized from rows of `w.k` values or prepared for another layout, `u` is
/// not a call over `w`, or `y` is shorter than `rows * a.rows`.
pub(crate) fn panel(w: &Packed, u: usize, act: &PackedAct<'_>, y: &mut [f32]) {
    let a = act.a;
    let rows = call_rows(w, a.rows);
    assert!(
        a.nb == w.nb
            && u < w.n.div_ceil(rows)
            && y.len() >= rows * a.rows
            && a.sums.len() >= a.rows * a.nb
            && act.offset == w.kind.offset(w.isa)
    );
    assert!(
        Isa::available().contains(&w.isa),
        "packed weights exist only where their instruction set runs"
    );
    match w.isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::AvxVnni => super::x86_packed256::panel(w, u, act, y),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => super::x86_packed512::panel(w, u, act, y),
        #[cfg(target_arch = "aarch64")]
        Isa::NeonDot => super::arm_packed::panel(w, u, act, y),
        // `available` lists only the sets of this architecture (asserted above).
        #[allow(unreachable_patterns)]
        _ => unreachable!("{:?} packed weights on this architecture", w.isa),
    }
}
