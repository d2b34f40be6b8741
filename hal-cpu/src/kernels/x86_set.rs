//! The `avx2+fma+f16c` kernel set: the row kernels of [`super::x86`], the int8 panel kernels
//! of [`super::x86_panel`] and the exact panels of [`super::x86_fpanel`]. It lives apart from
//! them so that the three kernel files form a chain (the panels read `x86`'s row decoders)
//! instead of a circle.

use super::Kernels;

/// The AVX2 set, when the CPU has AVX2, FMA and F16C.
pub(crate) fn detect() -> Option<&'static Kernels> {
    super::cpu().avx2_set.then_some(&AVX2)
}

/// The set (see the module documentation).
pub(crate) static AVX2: Kernels = Kernels {
    name: "avx2+fma+f16c",
    exact: super::x86::exact_for,
    q8: super::x86::q8_for,
    panel: super::x86_panel::panel_avx2,
    exact_panel: super::x86_fpanel::exact_panel_avx2,
};
