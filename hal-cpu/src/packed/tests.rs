//! The packed weights' own unit tests: bad input, `QuantLinear`, the layouts that do not fit.
//! The checks of each layout (`checks.rs`) run once per layout in `tests/isa.rs`, which reports
//! the layouts this CPU lacks as ignored.

use aihal_core::CoreError;
use aihal_quantize::{QuantFormat, QuantizedTensor};

use super::checks::{assert_close, assert_same, bf16_rounded, int8, order_bound, packed_formats};
use super::{matmul_packed, matmul_packed_into, PackOptions, PackedWeights};
use crate::kernels::checks::{fit_k, random_weight, Rng};
use crate::kernels::generic;
use crate::matmul::{matmul_with, run, ActivationPrecision, MatmulOptions};

/// Whether this CPU packs `w` (a set with a packed layout for its format and shape).
fn packs_here(w: &QuantizedTensor) -> bool {
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    {
        use crate::kernels::panels::{Isa, Kind};
        Isa::available().iter().any(|&isa| Kind::for_tensor(w, isa).is_some())
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        let _ = w;
        false
    }
}

#[test]
fn bad_input_is_an_error() {
    let mut rng = Rng::new(5);
    let w = random_weight(QuantFormat::Q4_0, 9, 64, &mut rng);
    let p = PackedWeights::new(&w).unwrap();
    let x = rng.vec(2 * 64, -1.0, 1.0);
    let e = matmul_packed(x[..127].into(), 2, &p, int8()).unwrap_err();
    assert!(matches!(e, CoreError::ShapeMismatch { .. }), "{e}");
    let e = matmul_packed(x.as_slice().into(), usize::MAX, &p, int8()).unwrap_err();
    assert!(matches!(e, CoreError::InvalidInput(_)), "{e}");
    let mut out = vec![0.0; 17];
    let e = matmul_packed_into(x.as_slice().into(), 2, &p, int8(), &mut out).unwrap_err();
    assert!(matches!(e, CoreError::ShapeMismatch { .. }), "{e}");
    assert!(out.iter().all(|&v| v == 0.0), "a failed call leaves the output alone");
    // Rank 3 weights are refused when packing.
    let (format, _, data, scales) = w.into_parts();
    let w3 = QuantizedTensor::from_parts(format, vec![3, 3, 64], data, scales).unwrap();
    assert!(matches!(PackedWeights::new(&w3), Err(CoreError::InvalidInput(_))));
    assert!(PackedWeights::unpacked(w3).is_err());
    // Empty matrices: K = 0 answers zeros, N = 0 nothing.
    let empty_k = QuantizedTensor::from_parts(QuantFormat::Int8PerChannel, vec![3, 0], vec![], vec![]).unwrap();
    let p0 = PackedWeights::new(&empty_k).unwrap();
    assert_eq!(
        matmul_packed(crate::Activations::F32(&[]), 2, &p0, int8()).unwrap(),
        [0.0; 6]
    );
    assert_eq!(p0.to_quantized().shape(), [3, 0]);
    let empty_n = QuantizedTensor::from_parts(QuantFormat::Q4_0, vec![0, 32], vec![], vec![]).unwrap();
    let p0 = PackedWeights::new(&empty_n).unwrap();
    assert!(matmul_packed(x[..64].into(), 2, &p0, int8()).unwrap().is_empty());
    // M = 0 and f16 / bf16 activations.
    assert!(matmul_packed(crate::Activations::F32(&[]), 0, &p, int8())
        .unwrap()
        .is_empty());
    let xh: Vec<half::f16> = x.iter().map(|&v| half::f16::from_f32(v)).collect();
    let xw: Vec<f32> = xh.iter().map(|v| v.to_f32()).collect();
    assert_same(
        "f16 activations",
        &matmul_packed(xh.as_slice().into(), 2, &p, int8()).unwrap(),
        &matmul_packed(xw.as_slice().into(), 2, &p, int8()).unwrap(),
    );
}

#[test]
fn quant_linear_packs_once_and_answers_the_same() {
    use crate::QuantLinear;
    let mut rng = Rng::new(21);
    for format in packed_formats() {
        let (n, k, m) = (19, fit_k(format, 300), 5);
        let w = random_weight(format, n, k, &mut rng);
        let bias = rng.vec(n, -1.0, 1.0);
        let x = rng.vec(m * k, -1.0, 1.0);
        let layer = QuantLinear::new(w.clone(), Some(bias.clone())).unwrap();
        assert_eq!(layer.packed_weight().is_packed(), packs_here(&w), "{format}");
        let add_bias = |mut y: Vec<f32>| {
            for row in y.chunks_exact_mut(n) {
                for (v, b) in row.iter_mut().zip(&bias) {
                    *v += b;
                }
            }
            y
        };
        // Packed: the generic kernels' bits; unpacked: matmul_with's.
        let mut generic_y = vec![0.0; m * n];
        run(generic(), &x, m, &w, ActivationPrecision::Int8, &mut generic_y);
        let plain_y = matmul_with(x.as_slice().into(), m, &w, int8()).unwrap();
        let (want_packed, want) = (add_bias(generic_y), add_bias(plain_y));
        let want_packed = if packs_here(&w) { want_packed } else { want.clone() };
        let fp8 = packs_here(&w) && matches!(format, QuantFormat::Fp8E4M3 { .. } | QuantFormat::Fp8E5M2 { .. });
        // FP8's packed kernels: within a reordered sum of the f32 activations (the f32 path),
        // or of their bf16 roundings (the reduced path, where the CPU has one).
        let xr = bf16_rounded(&x, k);
        let want_bf16 = add_bias(matmul_with(xr.as_slice().into(), m, &w, MatmulOptions::exact()).unwrap());
        let check_packed = |what: &str, got: &[f32], path: &str| {
            if fp8 {
                let (xs, want) = if path == "bf16" { (&xr, &want_bf16) } else { (&x, &want) };
                let bound: Vec<f32> = order_bound(&w, xs, m).iter().map(|b| 2.0 * b).collect();
                assert_close(what, got, want, &bound);
            } else {
                assert_same(what, got, &want_packed);
            }
        };
        let got = layer.forward_slice(x.as_slice().into(), m).unwrap();
        let path = layer.packed_weight().activation_path(ActivationPrecision::Int8);
        check_packed(&format!("{format} QuantLinear packed"), &got, path);
        // The original tensor comes back bit for bit.
        assert_eq!((layer.weight().data(), layer.weight().scales()), (w.data(), w.scales()));
        let plain = layer.clone().with_packing(false);
        assert_eq!(plain.packed_weight().layout_name(), "original");
        assert_same(
            &format!("{format} QuantLinear unpacked"),
            &plain.forward_slice(x.as_slice().into(), m).unwrap(),
            &want,
        );
        let exact = layer.with_activations(ActivationPrecision::F32);
        // FP8 stays packed on the f32 path (its packed kernel is an f32 one).
        assert_eq!(exact.packed_weight().is_packed(), fp8, "{format}");
        if fp8 {
            check_packed(
                &format!("{format} QuantLinear f32 path"),
                &exact.forward_slice(x.as_slice().into(), m).unwrap(),
                "f32",
            );
        }
        let back = exact.with_activations(ActivationPrecision::Int8);
        assert_eq!(back.packed_weight().is_packed(), packs_here(&w));
        check_packed(
            &format!("{format} QuantLinear repacked"),
            &back.forward_slice(x.as_slice().into(), m).unwrap(),
            path,
        );
    }
}

#[test]
fn packed_weights_and_layers_cross_threads() {
    fn shareable<T: Send + Sync + Clone>(_: &T) {}
    let mut rng = Rng::new(2);
    let p = PackedWeights::new(&random_weight(QuantFormat::Q4_0, 8, 64, &mut rng)).unwrap();
    shareable(&p);
    let layer = crate::QuantLinear::new(p.to_quantized(), None).unwrap();
    shareable(&layer);
    // A clone answers like the original.
    let x = rng.vec(64, -1.0, 1.0);
    assert_same(
        "clone",
        &matmul_packed(x.as_slice().into(), 1, &p.clone(), int8()).unwrap(),
        &matmul_packed(x.as_slice().into(), 1, &p, int8()).unwrap(),
    );
}

/// The layouts this CPU runs grow from the least capable: AVX-VNNI and AVX-512 need the AVX2
/// set. (Which layouts it lacks, `tests/isa.rs` reports as ignored.)
#[test]
fn the_layouts_here_grow_from_the_least_capable() {
    #[cfg(target_arch = "x86_64")]
    {
        use crate::kernels::panels::Isa;
        let here = Isa::available();
        assert!(here.is_empty() || here[0] == Isa::Avx2, "{here:?}");
        let order = [Isa::Avx2, Isa::AvxVnni, Isa::Avx512Vnni];
        let rank = |i: &Isa| order.iter().position(|o| o == i).unwrap();
        assert!(here.windows(2).all(|p| rank(&p[0]) < rank(&p[1])), "{here:?}");
    }
    #[cfg(target_arch = "aarch64")]
    {
        use crate::kernels::panels::Isa;
        assert!(Isa::available().iter().all(|&i| i == Isa::NeonDot));
    }
}

#[test]
fn layouts_that_do_not_fit_keep_the_original() {
    let mut rng = Rng::new(3);
    // NF4 blocks that do not tile the rows (K = 96, blocks of 64) keep the original layout.
    let nf4 = random_weight(
        QuantFormat::Nf4 {
            block_size: 64,
            double_quant: false,
        },
        4,
        96,
        &mut rng,
    );
    let p = PackedWeights::new(&nf4).unwrap();
    assert_eq!((p.layout_name(), p.is_packed()), ("original", false));
    assert_eq!(p.as_quantized().unwrap().data(), nf4.data());
    let kept = PackedWeights::unpacked(random_weight(QuantFormat::Q4_0, 8, 64, &mut rng)).unwrap();
    assert_eq!(kept.layout_name(), "original");
}

/// `PackOptions::with_huge_pages(false)` keeps ordinary pages for a buffer that would get huge
/// ones (what each layout's check does with the layout's own packing).
#[test]
fn pack_options_turn_huge_pages_off() {
    let mut rng = Rng::new(31);
    let (n, k) = (40, 64 * 1024); // 2.5 MiB of Q8_0 blocks
    let w = random_weight(QuantFormat::Q8_0, n, k, &mut rng);
    let huge = PackedWeights::new(&w).unwrap();
    let small = PackedWeights::with_options(&w, PackOptions::default().with_huge_pages(false)).unwrap();
    assert!(huge.storage_bytes() >= crate::pages::HUGE);
    assert_eq!(huge.huge_pages(), huge.is_packed() && cfg!(target_os = "linux"));
    assert!(!small.huge_pages());
    assert_eq!(
        (small.layout_name(), small.to_quantized().data()),
        (huge.layout_name(), w.data())
    );
}

/// Every layout of every instruction set converts back to the bytes it was packed from, whole
/// and a panel's rows at a time (the last panel partial), on any CPU: packing and unpacking
/// are plain code (only the kernels need the set), so the layouts of the sets this CPU lacks
/// (AVX-512's 16-row and NEON's 4-row panels on an AVX2 machine) are checked here too.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[test]
fn every_layout_of_every_set_converts_back_to_its_bytes_on_any_cpu() {
    use crate::kernels::panels::{Isa, Kind, Packed};
    let mut rng = Rng::new(17);
    let n = 37;
    let mut checked = 0;
    for isa in [Isa::Avx2, Isa::AvxVnni, Isa::Avx512Vnni, Isa::NeonDot] {
        for format in packed_formats() {
            let w = random_weight(format, n, 512, &mut rng);
            let Some(kind) = Kind::for_tensor(&w, isa) else {
                continue;
            };
            let what = format!("{format} in {isa:?}'s {kind:?}");
            let p = Packed::pack(&w, kind, isa, false).unwrap();
            let back = p.unpack();
            assert_eq!(
                (back.data(), back.scales(), back.nested()),
                (w.data(), w.scales(), w.nested()),
                "{what}"
            );
            let (row_data, row_scales) = (w.data().len() / n, w.scales().len() / n);
            let pr = isa.rows();
            for n0 in [0, pr, (n - 1) / pr * pr] {
                let rows = pr.min(n - n0);
                let t = p.unpack_rows(n0, rows, Vec::new(), Vec::new());
                assert_eq!(
                    t.data(),
                    &w.data()[n0 * row_data..][..rows * row_data],
                    "{what}: rows {n0}.."
                );
                if row_scales > 0 && !matches!(kind, Kind::Fp8 { block_size: None, .. }) {
                    assert_eq!(
                        t.scales(),
                        &w.scales()[n0 * row_scales..][..rows * row_scales],
                        "{what}: scales of rows {n0}.."
                    );
                }
            }
            checked += 1;
        }
    }
    // Every format in at least one layout of each set that packs it.
    assert!(checked >= 3 * packed_formats().len() / 2, "{checked} layouts");
}
