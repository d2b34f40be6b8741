//! `RknnMatMul` against the emulator of each runtime generation (1.5.0, 1.5.2, 1.6.0, 2.0.0,
//! 2.1.0 to 2.3.2): exact products for every type, layout, padding case and K up to the
//! runtime's limit (native B in 8192-row segments from 2.0.0), the quantization parameters
//! the documents allow (numbered per version) and those they do not, core masks as
//! documented and as reported, version detection, and every error path.

mod common;

use aihal_core::{CoreError, NpuCoreMask};
use aihal_rknn::{
    BLayout, BOrder, BQuant, MatMulOptions, MatMulType, MatmulInfoLayout, QuantMatrix, RknnError, RknnMatMul,
    RuntimeVersion, VersionSource,
};
use common::{Emu, Rng};
use half::f16;

/// One version of each struct generation and export set, and the two the reports name.
const VERSIONS: [&str; 8] = ["1.5.0", "1.5.2", "1.6.0", "2.0.0", "2.1.0", "2.2.0", "2.3.0", "2.3.2"];

/// `C[i][j] = sum_k A[i][k] * B[k][j]` with B given as `[K, N]`.
fn reference_i8(a: &[i8], b_kn: &[i8], m: usize, k: usize, n: usize) -> Vec<i32> {
    let mut c = vec![0i32; m * n];
    for i in 0..m {
        for j in 0..n {
            c[i * n + j] = (0..k)
                .map(|kk| i32::from(a[i * k + kk]) * i32::from(b_kn[kk * n + j]))
                .sum();
        }
    }
    c
}

fn transpose<T: Copy>(x: &[T], rows: usize, cols: usize) -> Vec<T> {
    (0..rows * cols)
        .map(|idx| x[(idx % rows) * cols + idx / rows])
        .collect()
}

fn is_status(err: &RknnError, op: &str, code: i32) -> bool {
    matches!(err, RknnError::Status { op: o, status } if *o == op && status.0 == code)
}

#[test]
fn each_generation_is_detected_and_chooses_its_matmul_info_layout() {
    for v in VERSIONS {
        let emu = Emu::new(v);
        let info = emu.lib.runtime_info().unwrap();
        assert_eq!(info.version, RuntimeVersion::parse(v).unwrap());
        assert_eq!(info.source, VersionSource::SdkQuery);
        assert!(info.driver_version.is_some());
        let mm = RknnMatMul::new(&emu.lib, 2, 32, 32, MatMulType::Int8ToInt32).unwrap();
        let want = if v.starts_with('1') {
            MatmulInfoLayout::V1
        } else {
            MatmulInfoLayout::V2
        };
        assert_eq!(mm.info_layout(), want, "{v}");
        assert_eq!(mm.native_b_blocks(), Some((32, 32)), "{v}: from B.dims");
        drop(mm);
        assert_eq!(emu.live(), (0, 0), "{v}: everything released");
    }
}

#[test]
fn each_copy_exports_what_its_version_exports() {
    // (version, symbol floor, has rknn_mem_sync, has rknn_matmul_set_quant_params)
    let cases = [
        ("1.5.0", "1.5.0", false, false),
        ("1.5.2", "1.5.2", false, false),
        ("1.6.0", "1.6.0", true, false),
        ("2.0.0", "2.0.0", true, true),
        ("2.1.0", "2.1.0", true, true),
        ("2.3.2", "2.1.0", true, true),
    ];
    for (v, floor, mem_sync, quant) in cases {
        let emu = Emu::new(v);
        // SAFETY: the path is the emulator's library, which implements the declared ABI.
        let raw = unsafe { aihal_rknn_sys::RknnLib::open(&emu.path) }.unwrap();
        assert_eq!(raw.symbol_version(), RuntimeVersion::parse(floor), "{v}");
        assert_eq!(raw.api().rknn_mem_sync.is_some(), mem_sync, "{v}");
        assert_eq!(raw.api().rknn_matmul_set_quant_params.is_some(), quant, "{v}");
    }
}

#[test]
fn int8_products_are_exact_for_every_version_layout_and_padding() {
    let shapes = [(1, 32, 32), (3, 64, 96), (5, 33, 7), (2, 100, 45), (7, 1, 1)];
    let mut rng = Rng::new(1);
    for v in VERSIONS {
        let emu = Emu::new(v);
        for (m, k, n) in shapes {
            let a = rng.i8s(m * k);
            let b = rng.i8s(k * n);
            let want = reference_i8(&a, &b, m, k, n);
            for layout in [BLayout::Native, BLayout::Normal] {
                let mut mm = RknnMatMul::with_b_layout(&emu.lib, m, k, n, MatMulType::Int8ToInt32, layout).unwrap();
                assert_eq!(mm.shape(), (m, k, n));
                let (kp, np) = mm.padded_shape();
                assert!(kp % 32 == 0 && np % 32 == 0 && kp >= k && np >= n);
                mm.set_b_i8(&b, BOrder::KxN).unwrap();
                assert_eq!(mm.run_i8(&a).unwrap(), want, "{v} {layout:?} {m}x{k}x{n}");
                // The same B given as [N, K] gives the same product.
                mm.set_b_i8(&transpose(&b, k, n), BOrder::NxK).unwrap();
                assert_eq!(mm.run_i8(&a).unwrap(), want, "{v} {layout:?} N×K");
                // A second A with the same B.
                let a2 = rng.i8s(m * k);
                assert_eq!(mm.run_i8(&a2).unwrap(), reference_i8(&a2, &b, m, k, n));
                mm.close().unwrap();
            }
        }
        assert_eq!(emu.live(), (0, 0));
    }
}

#[test]
fn native_b_with_k_above_8192_is_segmented_from_2_0() {
    // K above 8192 (one block on 1.6.0, two segments from 2.0.0) and N not a multiple of a
    // block, native and normal B, int8 and fp16.
    let mut rng = Rng::new(7);
    let (m, k, n) = (2, 10_000, 45);
    let a = rng.i8s(m * k);
    let b = rng.i8s(k * n);
    let want = reference_i8(&a, &b, m, k, n);
    let ah: Vec<f16> = rng.f32s(m * k, 1.0).into_iter().map(f16::from_f32).collect();
    let bh: Vec<f16> = rng.f32s(k * n, 1.0).into_iter().map(f16::from_f32).collect();
    for v in ["1.6.0", "2.0.0", "2.1.0", "2.3.2"] {
        let emu = Emu::new(v);
        for layout in [BLayout::Native, BLayout::Normal] {
            let mut mm = RknnMatMul::with_b_layout(&emu.lib, m, k, n, MatMulType::Int8ToInt32, layout).unwrap();
            mm.set_b_i8(&transpose(&b, k, n), BOrder::NxK).unwrap();
            assert_eq!(mm.run_i8(&a).unwrap(), want, "{v} {layout:?}");
            let mut mh = RknnMatMul::with_b_layout(&emu.lib, m, k, n, MatMulType::Float16ToFloat32, layout).unwrap();
            mh.set_b_f16(&bh, BOrder::KxN).unwrap();
            assert_f16_product(&mh.run_f16(&ah).unwrap(), &ah, &bh, m, k, n, &format!("{v} {layout:?}"));
            if layout == BLayout::Native {
                assert_eq!(mh.native_b_blocks(), Some((16, 32)));
            }
        }
        assert_eq!(emu.live(), (0, 0));
    }
}

/// fp16 products against the f32 sum of the exact products. The NPU's accumulation order and
/// precision are not documented, so the bound allows an f16-sized rounding per product.
fn assert_f16_product(got: &[f32], a: &[f16], b_kn: &[f16], m: usize, k: usize, n: usize, what: &str) {
    for i in 0..m {
        for j in 0..n {
            let products = (0..k).map(|kk| f64::from(a[i * k + kk].to_f32()) * f64::from(b_kn[kk * n + j].to_f32()));
            let (sum, size) = products.fold((0f64, 0f64), |(s, z), p| (s + p, z + p.abs()));
            let err = (f64::from(got[i * n + j]) - sum).abs();
            assert!(
                err <= size * 1e-3 + 1e-6,
                "{what} ({i}, {j}): {} vs {sum}",
                got[i * n + j]
            );
        }
    }
}

#[test]
fn f16_products_match_the_exact_products_within_rounding() {
    let mut rng = Rng::new(2);
    for v in ["1.5.2", "1.6.0", "2.0.0", "2.3.2"] {
        let emu = Emu::new(v);
        for (m, k, n) in [(2, 32, 16), (3, 40, 20), (1, 64, 48)] {
            let a: Vec<f16> = rng.f32s(m * k, 2.0).into_iter().map(f16::from_f32).collect();
            let b: Vec<f16> = rng.f32s(k * n, 2.0).into_iter().map(f16::from_f32).collect();
            for layout in [BLayout::Native, BLayout::Normal] {
                let mut mm =
                    RknnMatMul::with_b_layout(&emu.lib, m, k, n, MatMulType::Float16ToFloat32, layout).unwrap();
                assert_eq!(mm.padded_shape().1 % 16, 0);
                mm.set_b_f16(&b, BOrder::KxN).unwrap();
                let got = mm.run_f16(&a).unwrap();
                assert_f16_product(&got, &a, &b, m, k, n, &format!("{v} {layout:?} {m}x{k}x{n}"));
            }
        }
    }
}

#[test]
fn int8_to_f32_is_the_accumulation_and_takes_no_scales() {
    let mut rng = Rng::new(3);
    let (m, k, n) = (3, 64, 32);
    let a = rng.i8s(m * k);
    let b = rng.i8s(k * n);
    let acc = reference_i8(&a, &b, m, k, n);

    for v in ["2.1.0", "2.3.2"] {
        let emu = Emu::new(v);
        let mut mm = RknnMatMul::new(&emu.lib, m, k, n, MatMulType::Int8ToFloat32).unwrap();
        mm.set_b_i8(&b, BOrder::KxN).unwrap();
        // The runtime's default parameters: per layer, scale 1 (the 2.3.0 API reference).
        let want: Vec<f32> = acc.iter().map(|&c| c as f32).collect();
        assert_eq!(mm.run_i8_f32(&a).unwrap(), want, "{v}");
        // Per-layer scales for this type are undocumented: refused before the runtime.
        let err = mm.set_quant_params(QuantMatrix::A, &[0.5], &[0]).unwrap_err();
        assert!(matches!(err, RknnError::Core(CoreError::Unsupported { .. })), "{err}");
        assert!(err.to_string().contains("issue 550"), "{err}");
        // Per-channel B for int8 -> f32 is refused at creation.
        let opts = MatMulOptions::new().b_quant(BQuant::PerChannel);
        let err = RknnMatMul::with_options(&emu.lib, m, k, n, MatMulType::Int8ToFloat32, opts).unwrap_err();
        assert!(err.to_string().contains("per-channel B"), "{err}");
        // Running with the wrong method is an error, not garbage.
        assert!(matches!(
            mm.run_i8(&a),
            Err(RknnError::Core(CoreError::Unsupported { .. }))
        ));
    }

    let emu = Emu::new("2.0.0");
    let err = RknnMatMul::new(&emu.lib, m, k, n, MatMulType::Int8ToFloat32).unwrap_err();
    assert!(err.to_string().contains("needs 2.1.0"), "{err}");
}

#[test]
fn per_layer_scales_leave_the_int32_product_exact_and_zero_points_are_refused() {
    let mut rng = Rng::new(4);
    let (m, k, n) = (2, 32, 32);
    let a = rng.i8s(m * k);
    let b = rng.i8s(k * n);
    for v in ["2.0.0", "2.1.0", "2.3.2"] {
        let emu = Emu::new(v);
        let mut mm = RknnMatMul::new(&emu.lib, m, k, n, MatMulType::Int8ToInt32).unwrap();
        mm.set_b_i8(&b, BOrder::KxN).unwrap();
        mm.set_quant_params(QuantMatrix::A, &[0.5], &[0]).unwrap();
        mm.set_quant_params(QuantMatrix::B, &[0.25], &[0]).unwrap();
        assert_eq!(mm.run_i8(&a).unwrap(), reference_i8(&a, &b, m, k, n), "{v}");
        // What a zero point does to an int32 result is undocumented.
        let err = mm.set_quant_params(QuantMatrix::A, &[1.0], &[3]).unwrap_err();
        assert!(err.to_string().contains("zero point 3"), "{err}");
        // N scales on a B declared per layer never reach the runtime.
        let err = mm
            .set_quant_params(QuantMatrix::B, &vec![1.0; n], &vec![0; n])
            .unwrap_err();
        assert!(err.to_string().contains("BQuant::PerChannel"), "{err}");
        // Bad scales are caught before the runtime.
        assert!(matches!(
            mm.set_quant_params(QuantMatrix::A, &[1.0, 2.0], &[0, 0]),
            Err(RknnError::Core(CoreError::InvalidInput(_)))
        ));
        assert!(mm.set_quant_params(QuantMatrix::A, &[f32::NAN], &[0]).is_err());
    }

    let emu = Emu::new("1.6.0");
    let mut mm = RknnMatMul::new(&emu.lib, m, k, n, MatMulType::Int8ToInt32).unwrap();
    let err = mm.set_quant_params(QuantMatrix::A, &[1.0], &[0]).unwrap_err();
    assert!(
        matches!(
            err,
            RknnError::MissingFunction {
                function: "rknn_matmul_set_quant_params",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn per_channel_b_is_declared_with_each_versions_number_and_kept_off_where_reported_broken() {
    let (m, k, n) = (2, 64, 40);
    let opts = MatMulOptions::new().b_quant(BQuant::PerChannel);
    // 2.0.0 numbers per-channel 1, 2.1.0 and 2.2.0 number it 2: the emulator refuses any
    // other number at creation and refuses N scales unless per-channel was declared.
    for v in ["2.0.0", "2.1.0", "2.2.0"] {
        let emu = Emu::new(v);
        let mut mm = RknnMatMul::with_options(&emu.lib, m, k, n, MatMulType::Int8ToInt32, opts).unwrap();
        assert_eq!(mm.b_quant(), BQuant::PerChannel);
        let scales: Vec<f32> = (0..n).map(|j| 0.01 * (j + 1) as f32).collect();
        mm.set_quant_params(QuantMatrix::B, &scales, &vec![0; n]).unwrap();
        assert!(mm.set_quant_params(QuantMatrix::B, &[0.5], &[0]).is_err(), "one scale");
        // What the runtime then computes is not documented: the emulator does not invent it.
        mm.set_b_i8(&vec![1; k * n], BOrder::KxN).unwrap();
        let err = mm.run_i8(&vec![1; m * k]).unwrap_err();
        assert!(is_status(&err, "rknn_matmul_run", -5), "{v}: {err}");
        drop(mm);
        assert_eq!(emu.live(), (0, 0));
    }
    // Reported to return all zeros on 2.3.2 (rknn-toolkit2 issue 550): refused before the
    // runtime is asked, in both emulator modes.
    for reported in [false, true] {
        let emu = if reported {
            Emu::reported("2.3.2")
        } else {
            Emu::new("2.3.2")
        };
        let err = RknnMatMul::with_options(&emu.lib, m, k, n, MatMulType::Int8ToInt32, opts).unwrap_err();
        assert!(err.to_string().contains("issue 550"), "{err}");
        assert_eq!(emu.live(), (0, 0), "nothing was created");
    }
    // A runtime that does not report its version is only known to be 2.1.0 or later.
    let emu = Emu::new("2.1.0");
    emu.fail("rknn_query");
    let err = RknnMatMul::with_options(&emu.lib, m, k, n, MatMulType::Int8ToInt32, opts).unwrap_err();
    assert!(err.to_string().contains("known only to be 2.1.0 or later"), "{err}");
    drop(emu);
    // Before 2.0.0 there is no field to declare it in.
    let emu = Emu::new("1.6.0");
    assert!(RknnMatMul::with_options(&emu.lib, m, k, n, MatMulType::Int8ToInt32, opts).is_err());
}

#[test]
fn alignment_limits_and_shapes_are_checked() {
    let emu = Emu::new("1.5.2");
    // 1.5.x accepts K up to 4096 for int8 and 2048 for fp16.
    assert!(RknnMatMul::new(&emu.lib, 1, 4096, 32, MatMulType::Int8ToInt32).is_ok());
    let err = RknnMatMul::new(&emu.lib, 1, 4097, 32, MatMulType::Int8ToInt32).unwrap_err();
    assert!(err.to_string().contains("limit of 4096"), "{err}");
    assert!(RknnMatMul::new(&emu.lib, 1, 2049, 16, MatMulType::Float16ToFloat32).is_err());
    drop(emu);
    let emu = Emu::new("2.3.2");
    assert!(RknnMatMul::new(&emu.lib, 1, 4097, 32, MatMulType::Int8ToInt32).is_ok());
    assert!(RknnMatMul::new(&emu.lib, 1, 10241, 32, MatMulType::Int8ToInt32).is_err());
    assert!(RknnMatMul::new(&emu.lib, 0, 32, 32, MatMulType::Int8ToInt32).is_err());

    let mut mm = RknnMatMul::new(&emu.lib, 2, 32, 32, MatMulType::Int8ToInt32).unwrap();
    let err = mm.run_i8(&[0; 64]).unwrap_err();
    assert!(err.to_string().contains("before B was set"), "{err}");
    assert!(matches!(
        mm.set_b_i8(&[0; 10], BOrder::KxN),
        Err(RknnError::Core(CoreError::ShapeMismatch { .. }))
    ));
    mm.set_b_i8(&[1; 32 * 32], BOrder::KxN).unwrap();
    assert!(matches!(
        mm.run_i8(&[0; 63]),
        Err(RknnError::Core(CoreError::ShapeMismatch { .. }))
    ));
    assert!(mm.set_b_f16(&[f16::ONE; 32 * 32], BOrder::KxN).is_err());
    drop(mm);
    assert_eq!(emu.live(), (0, 0));
}

#[test]
fn core_masks_as_the_headers_document_them_and_as_users_report_them() {
    let multi = [NpuCoreMask::CORES_0_1, NpuCoreMask::CORES_0_1_2];
    for v in ["1.5.2", "1.6.0", "2.0.0", "2.1.0", "2.3.0", "2.3.2"] {
        // Documented: every header lists the single and combined masks; ALL from 2.0.0.
        let emu = Emu::new(v);
        let mut mm = RknnMatMul::new(&emu.lib, 1, 32, 32, MatMulType::Int8ToInt32).unwrap();
        for mask in [NpuCoreMask::AUTO, NpuCoreMask::CORE_2].into_iter().chain(multi) {
            mm.set_core_mask(mask).unwrap();
        }
        assert_eq!(mm.set_core_mask(NpuCoreMask::ALL).is_ok(), v.starts_with('2'), "{v}");
        drop(mm);
        drop(emu);
        // Reported: 1.6.0 (rknn-toolkit2 issue 7) and 2.3.x (issue 253) fail multi-core masks;
        // the failure is the runtime's status, not hidden.
        let emu = Emu::reported(v);
        let mut mm = RknnMatMul::new(&emu.lib, 1, 32, 32, MatMulType::Int8ToInt32).unwrap();
        mm.set_core_mask(NpuCoreMask::CORE_1).unwrap();
        let fails = v == "1.6.0" || v.starts_with("2.3");
        for mask in multi {
            let result = mm.set_core_mask(mask);
            assert_eq!(result.is_err(), fails, "{v} {mask:?}");
            if let Err(err) = result {
                assert_eq!(err.to_string(), "rknn_matmul_set_core_mask failed: RKNN_ERR_FAIL (-1)");
            }
        }
    }
}

#[test]
fn every_failing_call_is_a_named_error_and_leaks_nothing() {
    let cases = [
        (
            "rknn_matmul_create:-5",
            "rknn_matmul_create failed: RKNN_ERR_PARAM_INVALID (-5)",
        ),
        (
            "rknn_create_mem",
            "rknn_create_mem failed: the runtime returned no memory",
        ),
        (
            "rknn_matmul_set_io_mem:-4",
            "rknn_matmul_set_io_mem failed: RKNN_ERR_MALLOC_FAIL (-4)",
        ),
        ("rknn_mem_sync:-1", "rknn_mem_sync failed: RKNN_ERR_FAIL (-1)"),
        ("rknn_matmul_run:-2", "rknn_matmul_run failed: RKNN_ERR_TIMEOUT (-2)"),
        (
            "rknn_matmul_run:-3",
            "RKNN_ERR_DEVICE_UNAVAILABLE (-3) (is the rknpu kernel driver loaded",
        ),
    ];
    let mut rng = Rng::new(5);
    let (m, k, n) = (2, 40, 20);
    let a = rng.i8s(m * k);
    let b = rng.i8s(k * n);
    for (spec, message) in cases {
        let emu = Emu::new("2.3.2");
        emu.lib.runtime_info().unwrap(); // detection before faults are injected
        emu.fail(spec);
        let result = RknnMatMul::new(&emu.lib, m, k, n, MatMulType::Int8ToInt32).and_then(|mut mm| {
            mm.set_b_i8(&b, BOrder::KxN)?;
            mm.run_i8(&a)
        });
        let err = result.unwrap_err();
        assert!(err.to_string().contains(message), "{spec}: {err}");
        emu.heal();
        assert_eq!(
            emu.live(),
            (0, 0),
            "{spec}: everything allocated before the failure was freed"
        );
        // The failure converts into a CoreError that keeps the detail.
        let core: CoreError = err.into();
        assert!(core.to_string().contains(message.split(" (").next().unwrap()), "{core}");
    }
}

#[test]
fn failed_releases_are_reported_by_close_and_tolerated_by_drop() {
    let emu = Emu::new("2.3.2");
    let mm = RknnMatMul::new(&emu.lib, 1, 32, 32, MatMulType::Int8ToInt32).unwrap();
    emu.fail("rknn_destroy_mem:-7,rknn_matmul_destroy:-1");
    let err = mm.close().unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with("releasing NPU resources failed"), "{text}");
    assert!(
        text.contains("rknn_destroy_mem failed: RKNN_ERR_CTX_INVALID (-7)"),
        "{text}"
    );
    assert!(
        text.contains("rknn_matmul_destroy failed: RKNN_ERR_FAIL (-1)"),
        "{text}"
    );
    assert!(matches!(err, RknnError::Release(ref all) if all.len() == 4));

    let mm = RknnMatMul::new(&emu.lib, 1, 32, 32, MatMulType::Int8ToInt32);
    // Creation itself works with only release faults injected; dropping must not panic.
    drop(mm.unwrap());
    emu.heal();
    assert_eq!(emu.live(), (0, 0));
}

mod random_shapes {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn int8_products_match_the_reference(
            m in 1usize..6, k in 1usize..130, n in 1usize..80, seed in any::<u64>(), v in 0usize..VERSIONS.len()
        ) {
            let emu = Emu::new(VERSIONS[v]);
            let mut rng = common::Rng::new(seed);
            let a = rng.i8s(m * k);
            let b = rng.i8s(n * k);
            let mut mm = RknnMatMul::new(&emu.lib, m, k, n, MatMulType::Int8ToInt32).unwrap();
            mm.set_b_i8(&b, BOrder::NxK).unwrap();
            let want = reference_i8(&a, &transpose(&b, n, k), m, k, n);
            prop_assert_eq!(mm.run_i8(&a).unwrap(), want);
        }
    }
}

#[test]
fn without_an_sdk_answer_the_exported_functions_bound_the_version() {
    // A runtime that does not answer RKNN_QUERY_SDK_VERSION: the functions it exports give
    // its generation's first version, which picks the right struct, and products stay exact.
    let cases = [
        ("1.5.0", RuntimeVersion::new(1, 5, 0), MatmulInfoLayout::V1),
        ("1.5.2", RuntimeVersion::new(1, 5, 2), MatmulInfoLayout::V1),
        ("1.6.0", RuntimeVersion::new(1, 6, 0), MatmulInfoLayout::V1),
        ("2.0.0", RuntimeVersion::new(2, 0, 0), MatmulInfoLayout::V2),
        ("2.3.2", RuntimeVersion::new(2, 1, 0), MatmulInfoLayout::V2),
    ];
    let mut rng = Rng::new(6);
    let (m, k, n) = (2, 8224, 64);
    let a = rng.i8s(m * k);
    let b = rng.i8s(k * n);
    for (v, floor, layout) in cases {
        let emu = Emu::new(v);
        emu.fail("rknn_query");
        let info = emu.lib.runtime_info().unwrap();
        emu.heal();
        assert_eq!(info.source, VersionSource::Symbols, "{v}");
        assert_eq!(info.version, floor, "{v}");
        assert_eq!(info.api_version, None);
        let k = if v.starts_with("1.5") { 4000 } else { k };
        let mut mm = RknnMatMul::new(&emu.lib, m, k, n, MatMulType::Int8ToInt32).unwrap();
        assert_eq!(mm.info_layout(), layout, "{v}");
        mm.set_b_i8(&b[..k * n], BOrder::KxN).unwrap();
        assert_eq!(
            mm.run_i8(&a[..m * k]).unwrap(),
            reference_i8(&a[..m * k], &b[..k * n], m, k, n),
            "{v}"
        );
    }
}

#[test]
fn runtimes_older_than_1_5_are_refused_before_any_matmul_call() {
    // 1.3.0 and 1.4.0 export rknn_matmul_create and its siblings, but none of 1.5.0's
    // additions; their matmul struct is undocumented.
    for v in ["1.3.0", "1.4.0"] {
        let emu = Emu::new(v);
        let err = emu.lib.runtime_info().unwrap_err();
        assert!(matches!(err, RknnError::UnsupportedRuntime { .. }), "{v}: {err}");
        let text = err.to_string();
        assert!(text.contains("older than 1.5.0"), "{text}");
        assert!(text.contains("install runtime 1.5.0 or later"), "{text}");
        let err = RknnMatMul::new(&emu.lib, 1, 32, 32, MatMulType::Int8ToInt32).unwrap_err();
        assert!(matches!(err, RknnError::UnsupportedRuntime { .. }), "{v}: {err}");
        assert_eq!(emu.live(), (0, 0), "{v}: no context was created");
        // Device selection reports why.
        let core: CoreError = err.into();
        assert!(core.to_string().contains("not a supported RKNN runtime"), "{core}");
    }
}
