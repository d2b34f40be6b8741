//! aihal's `Linear` in candle code: built from a candle `QTensor`, a GGUF tensor or a
//! safetensors tensor, run on a CPU executor through `candle_nn::Module`, and compared with
//! candle's own layers on the same weights.

use std::path::PathBuf;
use std::sync::Arc;

use aihal_core::CoreError;
use aihal_ops::{Executor, Linear, LinearPrecision, LinearWeight};
use aihal_quantize::QuantFormat;
use candle_core::quantized::{gguf_file, GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};

/// Outputs computed from the same decoded weights in f32 may differ by the order of the f32
/// sums only: `|aihal - candle| <= TOL * max(1, max |candle|)`.
const TOL: f32 = 1e-4;

/// candle's quantized kernel (`QMatMul` over a `QTensor`) quantizes the activations to 8 bits
/// (Q8_0 or Q8_K blocks) before multiplying, so it is compared at this looser bound, relative
/// to the largest output.
const CANDLE_Q8_TOL: f32 = 2e-2;

fn exec() -> Arc<Executor> {
    Executor::builder()
        .provider(Arc::new(aihal_cpu::CpuProvider))
        .build()
        .unwrap()
}

/// Deterministic values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn tensor(n: usize, seed: u64, shape: (usize, usize)) -> Tensor {
    Tensor::from_vec(values(n, seed), shape, &Device::Cpu).unwrap()
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// The largest |a - b| over the largest |b| (at least 1).
fn rel_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    let (a, b) = (flat(a), flat(b));
    let scale = b.iter().fold(1f32, |m, v| m.max(v.abs()));
    a.iter().zip(&b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("aihal-candle-interop-{}-{name}", std::process::id()))
}

const OUT: usize = 8;
/// A multiple of 256, so K-quants fit; `OUT != IN` checks the `[out, in]` convention.
const IN: usize = 256;
const ROWS: usize = 3;

const FORMATS: [(GgmlDType, QuantFormat); 6] = [
    (GgmlDType::Q4_0, QuantFormat::Q4_0),
    (GgmlDType::Q4_1, QuantFormat::Q4_1),
    (GgmlDType::Q5_0, QuantFormat::Q5_0),
    (GgmlDType::Q8_0, QuantFormat::Q8_0),
    (GgmlDType::Q4K, QuantFormat::Q4K),
    (GgmlDType::Q6K, QuantFormat::Q6K),
];

#[test]
fn qtensor_weights_keep_their_bytes_and_match_candle() {
    let exec = exec();
    let w = tensor(OUT * IN, 1, (OUT, IN));
    let x = tensor(ROWS * IN, 2, (ROWS, IN));
    let bias = values(OUT, 3);
    let bias_t = Tensor::from_vec(bias.clone(), OUT, &Device::Cpu).unwrap();
    for (dtype, format) in FORMATS {
        let q = QTensor::quantize(&w, dtype).unwrap();

        let weight = LinearWeight::from_qtensor(&q).unwrap();
        let aq = weight.as_quantized().expect("a block type stays quantized");
        assert_eq!(aq.format(), format);
        assert_eq!(aq.shape(), &[OUT, IN]);
        assert_eq!(aq.data(), &*q.data().unwrap(), "{dtype:?}: bytes re-encoded");

        let linear = Linear::from_qtensor(&exec, &q, Some(&bias), LinearPrecision::F32).unwrap();
        assert_eq!((linear.out_features(), linear.in_features()), (OUT, IN));
        let y = Module::forward(&linear, &x).unwrap();
        assert_eq!(y.dims(), &[ROWS, OUT]);

        // candle with its dequantized weights (what CANDLE_DEQUANTIZE_ALL does).
        let want = x
            .matmul(&q.dequantize(&Device::Cpu).unwrap().t().unwrap())
            .unwrap()
            .broadcast_add(&bias_t)
            .unwrap();
        let d = rel_diff(&y, &want);
        assert!(d <= TOL, "{dtype:?}: {d} from candle's dequantized matmul");

        // candle's quantized kernel, 8-bit activations.
        let qmm = QMatMul::from_qtensor(QTensor::quantize(&w, dtype).unwrap()).unwrap();
        let candle_q = qmm.forward(&x).unwrap().broadcast_add(&bias_t).unwrap();
        let d = rel_diff(&y, &candle_q);
        assert!(d <= CANDLE_Q8_TOL, "{dtype:?}: {d} from candle's QMatMul");
    }
}

#[test]
fn dense_qtensors_become_dense_layers() {
    let exec = exec();
    let w = tensor(OUT * IN, 4, (OUT, IN));
    let x = tensor(ROWS * IN, 5, (ROWS, IN));
    for dtype in [GgmlDType::F32, GgmlDType::F16, GgmlDType::BF16] {
        let q = QTensor::quantize(&w, dtype).unwrap();
        let weight = LinearWeight::from_qtensor(&q).unwrap();
        assert!(weight.as_quantized().is_none(), "{dtype:?}");
        assert_eq!(weight.shape(), [OUT, IN]);
        let linear = Linear::from_qtensor(&exec, &q, None, LinearPrecision::F32).unwrap();
        let want = x.matmul(&q.dequantize(&Device::Cpu).unwrap().t().unwrap()).unwrap();
        let d = rel_diff(&Module::forward(&linear, &x).unwrap(), &want);
        assert!(d <= TOL, "{dtype:?}: {d}");
    }
}

#[test]
fn ggml_types_without_an_aihal_format_are_unsupported() {
    let exec = exec();
    let w = tensor(OUT * IN, 6, (OUT, IN));
    for dtype in [GgmlDType::Q8_1, GgmlDType::Q8K] {
        let q = QTensor::quantize(&w, dtype).unwrap();
        let err = Linear::from_qtensor(&exec, &q, None, LinearPrecision::F32).unwrap_err();
        let CoreError::Unsupported { op, dtype: what } = &err else {
            panic!("{dtype:?}: {err}")
        };
        assert!(op.contains("from_qtensor"), "{err}");
        assert!(what.contains(&format!("{dtype:?}")), "{err}");
    }
}

#[test]
fn a_weight_that_is_not_rank_2_is_invalid() {
    let w = Tensor::from_vec(values(2 * 4 * 32, 7), (2, 4, 32), &Device::Cpu).unwrap();
    let q = QTensor::quantize(&w, GgmlDType::Q8_0).unwrap();
    let err = LinearWeight::from_qtensor(&q).unwrap_err();
    assert!(matches!(err, CoreError::InvalidInput(_)), "{err}");
}

/// The bias-free MLP `down(gelu(up(x)))` of a candle model, over any `Module` layers.
struct Mlp<L> {
    up: L,
    down: L,
}

impl<L: Module> Module for Mlp<L> {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        self.down.forward(&self.up.forward(xs)?.gelu_erf()?)
    }
}

#[test]
fn aihal_linears_inside_a_candle_model_match_candle_layers() {
    const HIDDEN: usize = 512;
    let exec = exec();
    let up = QTensor::quantize(&tensor(HIDDEN * IN, 8, (HIDDEN, IN)), GgmlDType::Q4K).unwrap();
    let down = QTensor::quantize(&tensor(IN * HIDDEN, 9, (IN, HIDDEN)), GgmlDType::Q8_0).unwrap();
    let x = tensor(ROWS * IN, 10, (ROWS, IN)).reshape((1, ROWS, IN)).unwrap();

    let aihal = Mlp {
        up: Linear::from_qtensor(&exec, &up, None, LinearPrecision::F32).unwrap(),
        down: Linear::from_qtensor(&exec, &down, None, LinearPrecision::F32).unwrap(),
    };
    let y = aihal.forward(&x).unwrap();
    assert_eq!(y.dims(), &[1, ROWS, IN]);

    let dequantized = |q: &QTensor| QMatMul::Tensor(q.dequantize(&Device::Cpu).unwrap());
    let candle_f32 = Mlp {
        up: dequantized(&up),
        down: dequantized(&down),
    };
    let d = rel_diff(&y, &candle_f32.forward(&x).unwrap());
    assert!(d <= TOL, "{d} from candle's layers over the dequantized weights");

    let candle_q = Mlp {
        up: QMatMul::from_qtensor(QTensor::quantize(&tensor(HIDDEN * IN, 8, (HIDDEN, IN)), GgmlDType::Q4K).unwrap())
            .unwrap(),
        down: QMatMul::from_qtensor(QTensor::quantize(&tensor(IN * HIDDEN, 9, (IN, HIDDEN)), GgmlDType::Q8_0).unwrap())
            .unwrap(),
    };
    let d = rel_diff(&y, &candle_q.forward(&x).unwrap());
    assert!(d <= CANDLE_Q8_TOL, "{d} from candle's QMatMul layers");

    // The output keeps the input's dtype, as candle layers do.
    let y16 = aihal.forward(&x.to_dtype(DType::F16).unwrap()).unwrap();
    assert_eq!(y16.dtype(), DType::F16);
}

#[test]
fn gguf_tensors_load_by_name() {
    let exec = exec();
    let w = tensor(OUT * IN, 11, (OUT, IN));
    let q4 = QTensor::quantize(&w, GgmlDType::Q4_0).unwrap();
    let f32w = QTensor::quantize(&w, GgmlDType::F32).unwrap();
    let path = temp_path("tiny.gguf");
    {
        let mut f = std::fs::File::create(&path).unwrap();
        let arch = gguf_file::Value::String("test".into());
        gguf_file::write(
            &mut f,
            &[("general.architecture", &arch)],
            &[("blk.0.ffn_up.weight", &q4), ("output.weight", &f32w)],
        )
        .unwrap();
    }
    let x = tensor(ROWS * IN, 12, (ROWS, IN));
    let bias = values(OUT, 13);

    let weight = LinearWeight::from_gguf(&path, "blk.0.ffn_up.weight").unwrap();
    assert_eq!(weight.as_quantized().unwrap().data(), &*q4.data().unwrap());
    let from_file = Linear::from_gguf(&exec, &path, "blk.0.ffn_up.weight", Some(&bias), LinearPrecision::F32).unwrap();
    let from_candle = Linear::from_qtensor(&exec, &q4, Some(&bias), LinearPrecision::F32).unwrap();
    assert_eq!(
        flat(&Module::forward(&from_file, &x).unwrap()),
        flat(&Module::forward(&from_candle, &x).unwrap())
    );

    let dense = LinearWeight::from_gguf(&path, "output.weight").unwrap();
    assert_eq!(
        dense,
        LinearWeight::Dense {
            values: flat(&w),
            shape: [OUT, IN]
        }
    );
    let linear = Linear::from_gguf(&exec, &path, "output.weight", None, LinearPrecision::F32).unwrap();
    let d = rel_diff(
        &Module::forward(&linear, &x).unwrap(),
        &x.matmul(&w.t().unwrap()).unwrap(),
    );
    assert!(d <= TOL, "{d}");

    let err = Linear::from_gguf(&exec, &path, "blk.9.missing", None, LinearPrecision::F32).unwrap_err();
    let CoreError::InvalidInput(msg) = &err else {
        panic!("{err}")
    };
    assert!(
        msg.contains("blk.9.missing") && msg.contains(&path.display().to_string()),
        "{msg}"
    );

    let err = LinearWeight::from_gguf(temp_path("no-such.gguf"), "w").unwrap_err();
    assert!(
        matches!(&err, CoreError::Io(e) if e.to_string().contains("no-such.gguf")),
        "{err}"
    );
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn safetensors_tensors_load_quantized_or_dense() {
    use safetensors::tensor::TensorView;
    use safetensors::Dtype;

    let exec = exec();
    let w = values(OUT * IN, 14);
    let w_bytes: Vec<u8> = w.iter().flat_map(|v| v.to_le_bytes()).collect();
    let ids_bytes: Vec<u8> = (0..4i64).flat_map(i64::to_le_bytes).collect();
    let path = temp_path("tiny.safetensors");
    let file = safetensors::serialize(
        [
            ("w", TensorView::new(Dtype::F32, vec![OUT, IN], &w_bytes).unwrap()),
            ("ids", TensorView::new(Dtype::I64, vec![2, 2], &ids_bytes).unwrap()),
        ],
        None,
    )
    .unwrap();
    std::fs::write(&path, file).unwrap();
    let x = aihal_ops::Tensor::from_vec(values(ROWS * IN, 15), &[ROWS, IN]).unwrap();
    let bias = values(OUT, 16);
    let run = |l: &Linear| l.forward(&x).unwrap().to_vec().unwrap();

    let q8 = Linear::from_safetensors(
        &exec,
        &path,
        "w",
        Some(QuantFormat::Q8_0),
        Some(&bias),
        LinearPrecision::F32,
    )
    .unwrap();
    let want_q = aihal_quantize::quantize(QuantFormat::Q8_0, &w, &[OUT, IN]).unwrap();
    assert_eq!(
        LinearWeight::from_safetensors(&path, "w", Some(QuantFormat::Q8_0)).unwrap(),
        LinearWeight::Quantized(want_q.clone())
    );
    let want = Linear::with_precision(&exec, &want_q, Some(&bias), LinearPrecision::F32).unwrap();
    assert_eq!(run(&q8), run(&want));

    // The default precision (int8 activations where the provider has them), as Linear::new.
    let q8 = Linear::from_safetensors(
        &exec,
        &path,
        "w",
        Some(QuantFormat::Q8_0),
        Some(&bias),
        LinearPrecision::default(),
    )
    .unwrap();
    let want = Linear::new(&exec, &want_q, Some(&bias)).unwrap();
    assert_eq!(run(&q8), run(&want));

    let dense = Linear::from_safetensors(&exec, &path, "w", None, Some(&bias), LinearPrecision::F32).unwrap();
    let want = Linear::dense(&exec, &w, [OUT, IN], Some(&bias)).unwrap();
    assert_eq!(run(&dense), run(&want));

    let err = Linear::from_safetensors(&exec, &path, "nope", None, None, LinearPrecision::F32).unwrap_err();
    let CoreError::InvalidInput(msg) = &err else {
        panic!("{err}")
    };
    assert!(
        msg.contains("\"nope\"") && msg.contains(&path.display().to_string()),
        "{msg}"
    );

    let err = Linear::from_safetensors(&exec, &path, "ids", None, None, LinearPrecision::F32).unwrap_err();
    let CoreError::Unsupported { op, dtype } = &err else {
        panic!("{err}")
    };
    assert!(op.contains("\"ids\"") && dtype.contains("I64"), "{err}");
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn safetensors_half_precision_tensors_widen_exactly() {
    let w = tensor(OUT * IN, 17, (OUT, IN));
    let path = temp_path("half.safetensors");
    let mut tensors = std::collections::HashMap::new();
    tensors.insert("h".to_owned(), w.to_dtype(DType::F16).unwrap());
    tensors.insert("b".to_owned(), w.to_dtype(DType::BF16).unwrap());
    candle_core::safetensors::save(&tensors, &path).unwrap();
    for (name, t) in &tensors {
        let got = LinearWeight::from_safetensors(&path, name, None).unwrap();
        let want = LinearWeight::Dense {
            values: flat(&t.to_dtype(DType::F32).unwrap()),
            shape: [OUT, IN],
        };
        assert_eq!(got, want, "{name}");
    }
    std::fs::remove_file(&path).unwrap();
}

/// Every F16 and BF16 bit pattern, read from a file, against candle's conversion (the `half`
/// crate's): the same f32 bits, or NaN for NaN.
#[test]
fn safetensors_half_precision_decoding_is_exact_for_every_pattern() {
    use safetensors::tensor::TensorView;
    use safetensors::Dtype;

    let bytes: Vec<u8> = (0..=u16::MAX).flat_map(u16::to_le_bytes).collect();
    let path = temp_path("patterns.safetensors");
    let file = safetensors::serialize(
        [
            ("f16", TensorView::new(Dtype::F16, vec![256, 256], &bytes).unwrap()),
            ("bf16", TensorView::new(Dtype::BF16, vec![256, 256], &bytes).unwrap()),
        ],
        None,
    )
    .unwrap();
    std::fs::write(&path, file).unwrap();
    for (name, dtype) in [("f16", DType::F16), ("bf16", DType::BF16)] {
        let LinearWeight::Dense { values, shape } = LinearWeight::from_safetensors(&path, name, None).unwrap() else {
            panic!("{name}: not dense")
        };
        assert_eq!(shape, [256, 256]);
        let want = flat(
            &Tensor::from_raw_buffer(&bytes, dtype, &[65536], &Device::Cpu)
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap(),
        );
        for (i, (g, w)) in values.iter().zip(&want).enumerate() {
            assert!(
                g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
                "{name} pattern {i:#06x}: {g} vs {w}"
            );
        }
    }
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn aihal_quantized_safetensors_load_as_stored() {
    let w = values(OUT * IN, 18);
    let q4 = aihal_quantize::quantize(QuantFormat::Q4_1, &w, &[OUT, IN]).unwrap();
    let nf4 = aihal_quantize::quantize(
        QuantFormat::Nf4 {
            block_size: 64,
            double_quant: true,
        },
        &w,
        &[OUT, IN],
    )
    .unwrap();
    let path = temp_path("aihal.safetensors");
    aihal_quantize::io::save_safetensors(&[("a", &q4), ("b", &nf4)], &path).unwrap();

    assert_eq!(
        LinearWeight::from_safetensors(&path, "a", None).unwrap(),
        LinearWeight::Quantized(q4.clone())
    );
    assert_eq!(
        LinearWeight::from_safetensors(&path, "b", None).unwrap(),
        LinearWeight::Quantized(nf4)
    );
    assert_eq!(
        LinearWeight::from_safetensors(&path, "a", Some(QuantFormat::Q4_1)).unwrap(),
        LinearWeight::Quantized(q4)
    );
    let err = LinearWeight::from_safetensors(&path, "a", Some(QuantFormat::Q8_0)).unwrap_err();
    assert!(
        matches!(&err, CoreError::InvalidInput(m) if m.contains("re-quantized")),
        "{err}"
    );
    std::fs::remove_file(&path).unwrap();
}
