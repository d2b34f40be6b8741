//! The kernel table's own unit tests. The checks of each kernel set (`checks.rs`) run once per
//! set in `tests/isa.rs`, which reports the sets this CPU lacks as ignored.

use super::checks::{every_set, runs_here};
use super::{best, generic, ActQ8, Kernels};

/// Every SIMD kernel set this CPU can run (on an A76: NEON, with dotprod, with fp16, with
/// both), the widest last.
fn simd_sets() -> Vec<&'static Kernels> {
    #[allow(unused_mut)]
    let mut sets: Vec<&'static Kernels> = Vec::new();
    #[cfg(target_arch = "x86_64")]
    sets.extend(super::x86_set::detect());
    #[cfg(target_arch = "aarch64")]
    {
        use std::arch::is_aarch64_feature_detected;
        let (dot, fp16) = (
            is_aarch64_feature_detected!("dotprod"),
            is_aarch64_feature_detected!("fp16"),
        );
        sets.push(&super::arm::NEON);
        if fp16 {
            sets.push(&super::arm::NEON_FP16);
        }
        if dot {
            sets.push(&super::arm::NEON_DOTPROD);
        }
        if dot && fp16 {
            sets.push(&super::arm::NEON_DOTPROD_FP16);
        }
    }
    sets
}

#[test]
fn the_best_set_is_the_widest_this_cpu_runs() {
    let sets = simd_sets();
    assert!(!sets.is_empty(), "x86_64 and aarch64 CI machines have a SIMD set");
    assert_eq!(best().name, sets.last().map_or("generic", |s| s.name));
}

/// The checks run on every set compiled here: those this CPU runs are the generic set and the
/// SIMD sets it detects, in the same order.
#[test]
fn the_checks_cover_every_set_this_cpu_runs() {
    let here: Vec<&str> = every_set()
        .into_iter()
        .filter(|s| runs_here(s))
        .map(|s| s.name)
        .collect();
    let want: Vec<&str> = std::iter::once(generic()).chain(simd_sets()).map(|s| s.name).collect();
    assert_eq!(here, want);
}

#[test]
fn act_quantization_keeps_rows_apart() {
    let x = [1.0f32, -2.0, 0.5, 4.0];
    let a = ActQ8::quantize(&x, 2, 2);
    assert_eq!(a.nb, 1);
    assert_eq!(&a.qs[..2], &[64, -127]);
    assert_eq!(&a.qs[32..34], &[16, 127]);
}

proptest::proptest! {
    /// Q4_K's and Q5_K's 12 bytes of sub-block scales and minimums come back bit for bit from
    /// the 8 `(sc, m)` pairs `q4_k_scale_min` reads out of them (what the packed layouts keep
    /// instead of the bytes), with `d` and `dmin` in front: every one of the 96 bits is one
    /// field's, so any 12 bytes round-trip.
    #[test]
    fn k_quant_header_inverts_q4_k_scale_min(d: u16, dmin: u16, scales: [u8; 12]) {
        let pairs = std::array::from_fn(|g| generic::q4_k_scale_min(&scales, g));
        let h = super::panels::k_quant_header(d, dmin, pairs);
        proptest::prop_assert_eq!(&h[..2], &d.to_le_bytes()[..]);
        proptest::prop_assert_eq!(&h[2..4], &dmin.to_le_bytes()[..]);
        proptest::prop_assert_eq!(&h[4..], &scales[..]);
    }
}
