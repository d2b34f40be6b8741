//! `RknnMatMul` against the emulator: exact products for every type, layout, padding case and
//! runtime version, quantization parameters, core masks, and every error path.

mod common;

use aihal_core::{CoreError, NpuCoreMask};
use aihal_rknn::{
    BLayout, BOrder, MatMulType, MatmulInfoLayout, QuantMatrix, RknnError, RknnMatMul, RuntimeVersion, VersionSource,
};
use common::{Emu, Rng};
use half::f16;

const VERSIONS: [&str; 6] = ["1.5.0", "1.5.2", "1.6.0", "2.0.0", "2.1.0", "2.3.2"];

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

#[test]
fn the_detected_version_chooses_the_matmul_info_layout() {
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
        drop(mm);
        assert_eq!(emu.live(), (0, 0), "{v}: everything released");
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
fn f16_products_match_an_f32_accumulation_of_exact_f16_products() {
    let mut rng = Rng::new(2);
    for v in ["1.5.2", "2.3.2"] {
        let emu = Emu::new(v);
        for (m, k, n) in [(2, 32, 16), (3, 40, 20), (1, 64, 48)] {
            let a: Vec<f16> = rng.f32s(m * k, 2.0).into_iter().map(f16::from_f32).collect();
            let b: Vec<f16> = rng.f32s(k * n, 2.0).into_iter().map(f16::from_f32).collect();
            let mut want = vec![0f32; m * n];
            for i in 0..m {
                for j in 0..n {
                    let mut acc = 0f32;
                    for kk in 0..k {
                        acc += a[i * k + kk].to_f32() * b[kk * n + j].to_f32();
                    }
                    want[i * n + j] = acc;
                }
            }
            for layout in [BLayout::Native, BLayout::Normal] {
                let mut mm =
                    RknnMatMul::with_b_layout(&emu.lib, m, k, n, MatMulType::Float16ToFloat32, layout).unwrap();
                assert_eq!(mm.padded_shape().1 % 16, 0);
                mm.set_b_f16(&b, BOrder::KxN).unwrap();
                let got = mm.run_f16(&a).unwrap();
                assert_eq!(got, want, "{v} {layout:?} {m}x{k}x{n}");
            }
        }
    }
}

#[test]
fn int8_to_f32_applies_per_layer_scales_from_runtime_2_1() {
    let mut rng = Rng::new(3);
    let (m, k, n) = (3, 64, 32);
    let a = rng.i8s(m * k);
    let b = rng.i8s(k * n);
    let acc = reference_i8(&a, &b, m, k, n);

    let emu = Emu::new("2.1.0");
    let mut mm = RknnMatMul::new(&emu.lib, m, k, n, MatMulType::Int8ToFloat32).unwrap();
    mm.set_b_i8(&b, BOrder::KxN).unwrap();
    mm.set_quant_params(QuantMatrix::A, &[0.5], &[0]).unwrap();
    mm.set_quant_params(QuantMatrix::B, &[0.25], &[0]).unwrap();
    let got = mm.run_i8_f32(&a).unwrap();
    let want: Vec<f32> = acc.iter().map(|&c| c as f32 * 0.5 * 0.25).collect();
    assert_eq!(got, want);

    // Per-column B scales are rejected by the runtime for this type, with its status.
    let err = mm
        .set_quant_params(QuantMatrix::B, &vec![1.0; n], &vec![0; n])
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "rknn_matmul_set_quant_params failed: RKNN_ERR_PARAM_INVALID (-5)"
    );
    // Bad lengths and scales are caught before the runtime.
    assert!(matches!(
        mm.set_quant_params(QuantMatrix::A, &[1.0, 2.0], &[0, 0]),
        Err(RknnError::Core(CoreError::InvalidInput(_)))
    ));
    assert!(mm.set_quant_params(QuantMatrix::A, &[f32::NAN], &[0]).is_err());
    // Running with the wrong method is an error, not garbage.
    assert!(matches!(
        mm.run_i8(&a),
        Err(RknnError::Core(CoreError::Unsupported { .. }))
    ));
    drop(mm);
    drop(emu);

    let emu = Emu::new("2.0.0");
    let err = RknnMatMul::new(&emu.lib, m, k, n, MatMulType::Int8ToFloat32).unwrap_err();
    assert!(err.to_string().contains("needs 2.1.0"), "{err}");
    drop(emu);

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
fn zero_points_shift_the_operands() {
    let mut rng = Rng::new(4);
    let (m, k, n) = (2, 32, 32);
    let a = rng.i8s(m * k);
    let b = rng.i8s(k * n);
    let emu = Emu::new("2.3.2");
    let mut mm = RknnMatMul::new(&emu.lib, m, k, n, MatMulType::Int8ToInt32).unwrap();
    mm.set_b_i8(&b, BOrder::KxN).unwrap();
    mm.set_quant_params(QuantMatrix::A, &[1.0], &[3]).unwrap();
    let shifted: Vec<i32> = (0..m * n)
        .map(|idx| {
            let (i, j) = (idx / n, idx % n);
            (0..k)
                .map(|kk| (i32::from(a[i * k + kk]) - 3) * i32::from(b[kk * n + j]))
                .sum()
        })
        .collect();
    assert_eq!(mm.run_i8(&a).unwrap(), shifted);
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
fn core_masks_single_cores_always_multi_core_from_2_0() {
    let emu = Emu::new("1.6.0");
    let mut mm = RknnMatMul::new(&emu.lib, 1, 32, 32, MatMulType::Int8ToInt32).unwrap();
    mm.set_core_mask(NpuCoreMask::CORE_2).unwrap();
    let err = mm.set_core_mask(NpuCoreMask::CORES_0_1).unwrap_err();
    assert_eq!(err.to_string(), "rknn_matmul_set_core_mask failed: RKNN_ERR_FAIL (-1)");
    assert!(mm.set_core_mask(NpuCoreMask::ALL).is_err());
    drop(mm);
    drop(emu);
    let emu = Emu::new("2.3.2");
    let mut mm = RknnMatMul::new(&emu.lib, 1, 32, 32, MatMulType::Int8ToInt32).unwrap();
    for mask in [
        NpuCoreMask::AUTO,
        NpuCoreMask::CORES_0_1_2,
        NpuCoreMask::ALL,
        NpuCoreMask::CORE_1,
    ] {
        mm.set_core_mask(mask).unwrap();
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
        fn int8_products_match_the_reference(m in 1usize..6, k in 1usize..130, n in 1usize..80, seed in any::<u64>()) {
            let emu = Emu::new("2.3.2");
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
fn without_an_sdk_answer_the_symbols_decide_and_the_64_byte_info_still_reads_right_on_1_x() {
    // A 1.6 runtime that does not answer RKNN_QUERY_SDK_VERSION: the emulator exports the 2.0
    // symbols, so the symbol rule answers 2.0 and the 64-byte struct is passed. Its first 24
    // bytes read as the same shape and layouts in the 1.x view, so products stay exact.
    let emu = Emu::new("1.6.0");
    emu.fail("rknn_query");
    let info = emu.lib.runtime_info().unwrap();
    emu.heal();
    assert_eq!(info.source, VersionSource::Symbols);
    assert_eq!(info.version, RuntimeVersion::new(2, 0, 0));
    assert_eq!(info.api_version, None);
    let mut rng = Rng::new(6);
    let (m, k, n) = (2, 64, 64);
    let a = rng.i8s(m * k);
    let b = rng.i8s(k * n);
    let mut mm = RknnMatMul::new(&emu.lib, m, k, n, MatMulType::Int8ToInt32).unwrap();
    assert_eq!(mm.info_layout(), MatmulInfoLayout::V2);
    mm.set_b_i8(&b, BOrder::KxN).unwrap();
    assert_eq!(mm.run_i8(&a).unwrap(), reference_i8(&a, &b, m, k, n));
}
