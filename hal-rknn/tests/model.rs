//! `RknnModel` against the emulator's model format: queries, typed inputs in both layouts,
//! outputs as tensors and bytes, performance counters, duplicated contexts, zero copy, and
//! every error path.

mod common;

use aihal_core::candle_core::DType;
use aihal_core::{CoreError, NpuCoreMask};
use aihal_rknn::{
    Input, InputData, ModelOptions, Quantization, RknnError, RknnModel, RuntimeVersion, TensorFormat, TensorType,
};
use aihal_rknn_emulator::model::EmuModel;
use common::{Emu, Rng};
use half::f16;

const H: usize = 3;
const W: usize = 4;
const C: usize = 5;
const O: usize = 6;

fn model(rng: &mut Rng) -> EmuModel {
    EmuModel {
        h: H,
        w: W,
        c: C,
        o: O,
        in_scale: 0.02,
        in_zp: 4,
        w_scale: 0.01,
        out_scale: 0.004,
        out_zp: -100,
        weights: rng.i8s(O * C),
        bias: (0..O).map(|i| i as i32 * 37 - 90).collect(),
        custom: "aihal test model".into(),
    }
}

/// What the network computes, written from its specification: quantize the NHWC input,
/// per-pixel int8 dot products plus bias, ReLU, requantize; output 1 is the per-channel mean
/// of output 0, rounded to f16.
fn expected(m: &EmuModel, nhwc: &[f32]) -> (Vec<i8>, Vec<f32>) {
    let q: Vec<i32> = nhwc
        .iter()
        .map(|v| ((v / m.in_scale).round() as i32 + m.in_zp).clamp(-128, 127))
        .collect();
    let pixels = m.h * m.w;
    let mut features = vec![0i8; m.o * pixels];
    for p in 0..pixels {
        for o in 0..m.o {
            let acc: i32 = m.bias[o]
                + (0..m.c)
                    .map(|c| (q[p * m.c + c] - m.in_zp) * i32::from(m.weights[o * m.c + c]))
                    .sum::<i32>();
            let real = (acc as f32 * m.in_scale * m.w_scale).max(0.0);
            features[o * pixels + p] = ((real / m.out_scale).round() as i32 + m.out_zp).clamp(-128, 127) as i8;
        }
    }
    let pooled = (0..m.o)
        .map(|o| {
            let s: f32 = features[o * pixels..(o + 1) * pixels]
                .iter()
                .map(|&v| (i32::from(v) - m.out_zp) as f32 * m.out_scale)
                .sum();
            f16::from_f32(s / pixels as f32).to_f32()
        })
        .collect();
    (features, pooled)
}

fn nhwc_to_nchw(x: &[f32]) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    for p in 0..H * W {
        for c in 0..C {
            out[c * H * W + p] = x[p * C + c];
        }
    }
    out
}

#[test]
fn queries_describe_the_model() {
    let emu = Emu::new("2.1.0");
    let m = model(&mut Rng::new(1));
    let model = RknnModel::from_bytes(&emu.lib, &m.to_bytes()).unwrap();
    let [input] = model.inputs() else { panic!("one input") };
    assert_eq!(input.name, "input");
    assert_eq!(input.dims, [1, H, W, C]);
    assert_eq!(
        (input.format, input.dtype, input.n_elems),
        (TensorFormat::Nhwc, TensorType::I8, H * W * C)
    );
    assert_eq!(
        input.quantization,
        Quantization::Affine {
            scale: 0.02,
            zero_point: 4
        }
    );
    let [features, pooled] = model.outputs() else {
        panic!("two outputs")
    };
    assert_eq!(
        (features.name.as_str(), features.dims.as_slice()),
        ("features", [1, O, H, W].as_slice())
    );
    assert_eq!((features.format, features.dtype), (TensorFormat::Nchw, TensorType::I8));
    assert_eq!(
        (pooled.dtype, pooled.dims.as_slice()),
        (TensorType::F16, [1, O].as_slice())
    );
    assert_eq!(pooled.quantization, Quantization::None);
    assert_eq!(model.native_inputs().unwrap(), model.inputs());

    let sdk = model.sdk_version().unwrap();
    assert_eq!(sdk.version, RuntimeVersion::new(2, 1, 0));
    assert!(sdk.driver_version.unwrap().starts_with("0.9.8"));
    assert_eq!(model.custom_string().unwrap(), "aihal test model");
    assert_eq!(model.memory_size().unwrap().0, (O * C + 4 * O) as u64);
}

#[test]
fn typed_inputs_in_both_layouts_give_the_specified_outputs() {
    let emu = Emu::new("2.3.2");
    let mut rng = Rng::new(2);
    let m = model(&mut rng);
    let mut model = RknnModel::from_bytes(&emu.lib, &m.to_bytes()).unwrap();
    let nhwc = rng.f32s(H * W * C, 2.0);
    let (features, pooled) = expected(&m, &nhwc);
    let dequantized: Vec<f32> = features
        .iter()
        .map(|&q| (i32::from(q) - m.out_zp) as f32 * m.out_scale)
        .collect();
    assert!(
        features.iter().any(|&q| i32::from(q) != m.out_zp),
        "the test input must produce non-trivial output"
    );

    let nchw = nhwc_to_nchw(&nhwc);
    let f16_nhwc: Vec<f16> = nhwc.iter().map(|&v| f16::from_f32(v)).collect();
    for input in [
        Input::new(InputData::F32(&nhwc), TensorFormat::Nhwc),
        Input::new(InputData::F32(&nchw), TensorFormat::Nchw),
    ] {
        model.run(&[input]).unwrap();
        let outs = model.output_tensors(true).unwrap();
        assert_eq!(outs[0].dims(), [1, O, H, W]);
        assert_eq!(outs[0].dtype(), DType::F32);
        assert_eq!(outs[0].flatten_all().unwrap().to_vec1::<f32>().unwrap(), dequantized);
        assert_eq!(outs[1].flatten_all().unwrap().to_vec1::<f32>().unwrap(), pooled);

        let native = model.output_tensors(false).unwrap();
        assert_eq!(native[0].dtype(), DType::I16, "int8 is widened to i16 for candle");
        let got: Vec<i16> = native[0].flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(got, features.iter().map(|&v| i16::from(v)).collect::<Vec<_>>());
        assert_eq!(native[1].dtype(), DType::F16);

        let raw = model.outputs_raw(false).unwrap();
        assert_eq!(raw[0].dtype, TensorType::I8);
        assert_eq!(raw[0].bytes, features.iter().map(|&v| v as u8).collect::<Vec<_>>());
    }

    // f16 input: the same values after rounding to f16.
    let rounded: Vec<f32> = f16_nhwc.iter().map(|v| v.to_f32()).collect();
    model
        .run(&[Input::new(InputData::F16(&f16_nhwc), TensorFormat::Nhwc)])
        .unwrap();
    let raw = model.outputs_raw(false).unwrap();
    assert_eq!(
        raw[0].bytes,
        expected(&m, &rounded).0.iter().map(|&v| v as u8).collect::<Vec<_>>()
    );

    // u8 pixels and pre-quantized pass-through int8.
    let pixels: Vec<u8> = rng.i8s(H * W * C).iter().map(|&v| v as u8 / 64).collect();
    model
        .run(&[Input::new(InputData::U8(&pixels), TensorFormat::Nhwc)])
        .unwrap();
    let as_f32: Vec<f32> = pixels.iter().map(|&v| f32::from(v)).collect();
    assert_eq!(
        model.outputs_raw(false).unwrap()[0].bytes,
        expected(&m, &as_f32).0.iter().map(|&v| v as u8).collect::<Vec<_>>()
    );
    let q: Vec<i8> = nhwc
        .iter()
        .map(|v| ((v / m.in_scale).round() as i32 + m.in_zp).clamp(-128, 127) as i8)
        .collect();
    model
        .run(&[Input::pass_through(InputData::I8(&q), TensorFormat::Nhwc)])
        .unwrap();
    assert_eq!(
        model.outputs_raw(false).unwrap()[0].bytes,
        features.iter().map(|&v| v as u8).collect::<Vec<_>>()
    );

    assert!(model.perf_run().unwrap().as_micros() >= 1);
    assert!(model
        .perf_detail()
        .unwrap_err()
        .to_string()
        .contains("collect_perf_detail"));
    drop(model);
    assert_eq!(emu.live(), (0, 0));
}

#[test]
fn bad_inputs_are_errors_that_name_the_problem() {
    let emu = Emu::new("2.3.2");
    let mut rng = Rng::new(3);
    let m = model(&mut rng);
    let mut model = RknnModel::from_bytes(&emu.lib, &m.to_bytes()).unwrap();
    let err = model.outputs_raw(true).unwrap_err();
    assert!(err.to_string().contains("call run first"), "{err}");
    let short = vec![0f32; H * W * C - 1];
    assert!(matches!(
        model.run(&[Input::new(InputData::F32(&short), TensorFormat::Nhwc)]),
        Err(RknnError::Core(CoreError::ShapeMismatch { .. }))
    ));
    assert!(matches!(
        model.run(&[]),
        Err(RknnError::Core(CoreError::DimensionMismatch { .. }))
    ));
    // The runtime itself rejects pass-through data of the wrong type.
    let ok_len = vec![0f32; H * W * C];
    let err = model
        .run(&[Input::pass_through(InputData::F32(&ok_len), TensorFormat::Nhwc)])
        .unwrap_err();
    assert_eq!(err.to_string(), "rknn_inputs_set failed: RKNN_ERR_INPUT_INVALID (-8)");

    let err = RknnModel::from_bytes(&emu.lib, b"not a model").unwrap_err();
    assert_eq!(err.to_string(), "rknn_init failed: RKNN_ERR_MODEL_INVALID (-6)");
    assert!(RknnModel::from_bytes(&emu.lib, &[]).is_err());
    let err = RknnModel::load(&emu.lib, "/nonexistent/model.rknn").unwrap_err();
    assert!(matches!(err, RknnError::Core(CoreError::Io(_))), "{err}");
    assert!(err.to_string().contains("/nonexistent/model.rknn"));
    drop(model);
    assert_eq!(emu.live(), (0, 0));
}

#[test]
fn files_perf_detail_and_core_masks() {
    let emu = Emu::new("1.5.2");
    let mut rng = Rng::new(4);
    let m = model(&mut rng);
    let dir = std::env::temp_dir().join(format!("aihal-rknn-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tiny.rknn");
    std::fs::write(&path, m.to_bytes()).unwrap();
    let options = ModelOptions {
        collect_perf_detail: true,
        ..ModelOptions::default()
    };
    let mut model = RknnModel::load_with(&emu.lib, &path, options).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let x = rng.f32s(H * W * C, 1.0);
    model
        .run(&[Input::new(InputData::F32(&x), TensorFormat::Nhwc)])
        .unwrap();
    assert!(model.perf_detail().unwrap().contains("Conv"));
    model.set_core_mask(NpuCoreMask::CORES_0_1_2).unwrap();
    // 0xffff (all cores) is a 2.0 value: runtime 1.5.2 rejects it.
    let err = model.set_core_mask(NpuCoreMask::ALL).unwrap_err();
    assert_eq!(
        err.to_string(),
        "rknn_set_core_mask failed: RKNN_ERR_PARAM_INVALID (-5)"
    );
    model.close().unwrap();
    assert_eq!(emu.live(), (0, 0));
}

#[test]
fn duplicated_contexts_run_on_other_threads() {
    let emu = Emu::new("2.3.2");
    let mut rng = Rng::new(5);
    let m = model(&mut rng);
    let mut model = RknnModel::from_bytes(&emu.lib, &m.to_bytes()).unwrap();
    let inputs: Vec<Vec<f32>> = (0..3).map(|_| rng.f32s(H * W * C, 2.0)).collect();
    let handles: Vec<_> = inputs
        .iter()
        .cloned()
        .map(|x| {
            let mut dup = model.duplicate().unwrap();
            std::thread::spawn(move || {
                dup.run(&[Input::new(InputData::F32(&x), TensorFormat::Nhwc)]).unwrap();
                dup.outputs_raw(false).unwrap()[0].bytes.clone()
            })
        })
        .collect();
    for (x, h) in inputs.iter().zip(handles) {
        let got = h.join().unwrap();
        assert_eq!(got, expected(&m, x).0.iter().map(|&v| v as u8).collect::<Vec<_>>());
        model.run(&[Input::new(InputData::F32(x), TensorFormat::Nhwc)]).unwrap();
        assert_eq!(model.outputs_raw(false).unwrap()[0].bytes, got);
    }
    drop(model);
    assert_eq!(emu.live(), (0, 0));
}

#[test]
fn zero_copy_buffers_give_the_same_outputs() {
    for version in ["1.5.2", "2.3.2"] {
        let emu = Emu::new(version);
        let mut rng = Rng::new(6);
        let m = model(&mut rng);
        let x = rng.f32s(H * W * C, 2.0);
        let (features, pooled) = expected(&m, &x);
        let mut model = RknnModel::from_bytes(&emu.lib, &m.to_bytes()).unwrap();
        model.enable_zero_copy().unwrap();
        let q: Vec<u8> = x
            .iter()
            .map(|v| ((v / m.in_scale).round() as i32 + m.in_zp).clamp(-128, 127) as i8 as u8)
            .collect();
        model.input_buffer_mut(0).unwrap()[..q.len()].copy_from_slice(&q);
        model.run_zero_copy().unwrap();
        let out0 = model.output_buffer(0).unwrap();
        assert_eq!(
            &out0[..features.len()],
            features.iter().map(|&v| v as u8).collect::<Vec<_>>().as_slice()
        );
        let out1 = model.output_buffer(1).unwrap();
        let got: Vec<f32> = out1
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect();
        assert_eq!(got, pooled);
        // The general path is refused on a zero-copy context; bad indices are errors.
        assert!(model
            .run(&[Input::new(InputData::F32(&x), TensorFormat::Nhwc)])
            .is_err());
        assert!(model.input_buffer_mut(1).is_err());
        assert!(model.output_buffer(2).is_err());
        drop(model);
        assert_eq!(emu.live(), (0, 0), "{version}");
    }
}

#[test]
fn every_failing_call_of_the_model_path_is_named_and_leaks_nothing() {
    let cases = [
        (
            "rknn_init:-13",
            "rknn_init failed: RKNN_ERR_TARGET_PLATFORM_UNMATCH (-13)",
        ),
        ("rknn_query:-7", "rknn_query failed: RKNN_ERR_CTX_INVALID (-7)"),
        (
            "rknn_inputs_set:-8",
            "rknn_inputs_set failed: RKNN_ERR_INPUT_INVALID (-8)",
        ),
        ("rknn_run:-2", "rknn_run failed: RKNN_ERR_TIMEOUT (-2)"),
        (
            "rknn_outputs_get:-9",
            "rknn_outputs_get failed: RKNN_ERR_OUTPUT_INVALID (-9)",
        ),
        (
            "rknn_outputs_release:-1",
            "rknn_outputs_release failed: RKNN_ERR_FAIL (-1)",
        ),
        (
            "rknn_dup_context:-4",
            "rknn_dup_context failed: RKNN_ERR_MALLOC_FAIL (-4)",
        ),
        (
            "rknn_create_mem",
            "rknn_create_mem failed: the runtime returned no memory",
        ),
        (
            "rknn_set_io_mem:-5",
            "rknn_set_io_mem failed: RKNN_ERR_PARAM_INVALID (-5)",
        ),
        ("rknn_mem_sync:-1", "rknn_mem_sync failed: RKNN_ERR_FAIL (-1)"),
    ];
    let mut rng = Rng::new(7);
    let m = model(&mut rng);
    let bytes = m.to_bytes();
    let x = rng.f32s(H * W * C, 1.0);
    for (spec, message) in cases {
        let emu = Emu::new("2.3.2");
        emu.lib.runtime_info().unwrap();
        emu.fail(spec);
        let zero_copy = spec.contains("mem");
        let result = RknnModel::from_bytes(&emu.lib, &bytes).and_then(|mut model| {
            if zero_copy {
                model.enable_zero_copy()?;
                model.run_zero_copy()?;
                return Ok(());
            }
            let _dup = model.duplicate()?;
            model.run(&[Input::new(InputData::F32(&x), TensorFormat::Nhwc)])?;
            model.outputs_raw(true).map(drop)
        });
        let err = result.unwrap_err();
        assert!(err.to_string().contains(message), "{spec}: {err}");
        emu.heal();
        assert_eq!(
            emu.live(),
            (0, 0),
            "{spec}: everything allocated before the failure was freed"
        );
    }

    // A failed destroy is reported by close, and drop does not panic on one.
    let emu = Emu::new("2.3.2");
    let model = RknnModel::from_bytes(&emu.lib, &bytes).unwrap();
    emu.fail("rknn_destroy:-7");
    let err = model.close().unwrap_err();
    assert!(
        err.to_string()
            .contains("rknn_destroy failed: RKNN_ERR_CTX_INVALID (-7)"),
        "{err}"
    );
    drop(RknnModel::from_bytes(&emu.lib, &bytes).unwrap());
    emu.heal();
    assert_eq!(emu.live(), (0, 0));
}
