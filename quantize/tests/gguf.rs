//! The GGUF reader against files written by the PyPI `gguf` package 0.19.0
//! (`tests/fixtures/gen_gguf_fixture.py`): tensors byte for byte as the writer was handed
//! them, TQ2_0 equal to our own quantization of the same input, Q4_0 / Q8_0 / F32 and all
//! metadata equal to what candle 0.11's reader makes of the same file, metadata values as
//! written. Malformed files are in `tests/gguf/hostile.rs`.
#![allow(clippy::float_cmp)] // exact values are the point

#[path = "gguf/hostile.rs"]
mod hostile;

use std::fs::File;
use std::io::{Cursor, Seek};

use aihal_core::{CoreError, DType};
use aihal_quantize::gguf::{GgmlType, GgufArray, GgufFile, GgufValue, GgufValueType};
use aihal_quantize::{dequantize, quantize, read_gguf_tensor, QuantFormat, QuantizedTensor};
use candle_core::quantized::gguf_file;
use half::{bf16, f16};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/");

/// One tensor as the generating script recorded it.
struct Expected {
    name: String,
    ggml_type: u32,
    shape: Vec<usize>,
    bytes: Vec<u8>,
    values: Vec<f32>,
    file_offsets: serde_json::Map<String, serde_json::Value>,
}

fn expected() -> Vec<Expected> {
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(format!("{DIR}gguf_manifest.json")).unwrap()).unwrap();
    let bytes = std::fs::read(format!("{DIR}gguf_expected.bin")).unwrap();
    let inputs: Vec<f32> = std::fs::read(format!("{DIR}gguf_inputs.f32"))
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let range = |v: &serde_json::Value| {
        let a = v.as_array().unwrap();
        let start = a[0].as_u64().unwrap() as usize;
        start..start + a[1].as_u64().unwrap() as usize
    };
    manifest["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| Expected {
            name: t["name"].as_str().unwrap().to_owned(),
            ggml_type: t["ggml_type"].as_u64().unwrap() as u32,
            shape: t["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect(),
            bytes: bytes[range(&t["bytes"])].to_vec(),
            values: inputs[range(&t["values"])].to_vec(),
            file_offsets: t["file_offset"].as_object().unwrap().clone(),
        })
        .collect()
}

fn open(name: &str) -> (GgufFile, File) {
    let mut f = File::open(format!("{DIR}{name}")).unwrap();
    (GgufFile::read(&mut f).unwrap(), f)
}

#[test]
fn fixtures_stay_small() {
    for name in ["mixed.gguf", "candle.gguf", "gguf_expected.bin", "gguf_inputs.f32"] {
        let len = std::fs::metadata(format!("{DIR}{name}")).unwrap().len();
        assert!(len < 64 * 1024, "{name} is {len} bytes");
    }
}

#[test]
fn every_tensor_reads_back_byte_for_byte() {
    let want = expected();
    let (gguf, mut f) = open("mixed.gguf");
    assert_eq!(gguf.version(), 3);
    assert_eq!(gguf.alignment(), 32);
    let names: Vec<&str> = gguf
        .tensors()
        .iter()
        .map(aihal_quantize::GgufTensorInfo::name)
        .collect();
    let want_names: Vec<&str> = want.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, want_names, "tensors in file order");
    assert_eq!(gguf.tensors()[0].file_offset(), gguf.data_offset());
    assert_eq!(gguf.data_offset() % 32, 0);

    for e in &want {
        let info = gguf.tensor(&e.name).unwrap();
        let ty = info.ggml_type();
        assert_eq!(ty.id(), e.ggml_type, "{}", e.name);
        assert_eq!(info.shape(), e.shape, "{}: candle order", e.name);
        // Where the package's own reader finds the data.
        assert_eq!(
            info.file_offset(),
            e.file_offsets["mixed.gguf"].as_u64().unwrap(),
            "{}",
            e.name
        );
        assert_eq!(info.byte_len(), Some(e.bytes.len() as u64), "{}", e.name);
        assert_eq!(gguf.read_raw(&mut f, &e.name).unwrap(), e.bytes, "{}: raw", e.name);

        if let Some(format) = ty.quant_format() {
            let q = gguf.read_tensor(&mut f, &e.name).unwrap();
            assert_eq!(q.format(), format);
            assert_eq!(q.shape(), e.shape);
            assert!(q.data() == e.bytes, "{}: blocks as written", e.name);
            assert!(q.scales().is_empty());
            // The same bytes a few rows at a time, and the ranges that are not rows of it.
            let k = *e.shape.last().unwrap();
            let n = e.shape.iter().product::<usize>() / k;
            let row_bytes = e.bytes.len() / n;
            for step in [1, 2, n] {
                for start in (0..n).step_by(step) {
                    let end = (start + step).min(n);
                    let part = gguf.read_tensor_rows(&mut f, &e.name, start..end).unwrap();
                    assert_eq!((part.format(), part.shape()), (format, &[end - start, k][..]));
                    assert!(
                        part.data() == &e.bytes[start * row_bytes..end * row_bytes],
                        "{}: rows {start}..{end}",
                        e.name
                    );
                }
            }
            for bad in [0..0, n..n + 1, 0..n + 1] {
                let err = gguf.read_tensor_rows(&mut f, &e.name, bad.clone()).unwrap_err();
                assert!(matches!(err, CoreError::InvalidInput(_)), "{}: {bad:?}: {err}", e.name);
            }
            let err = gguf.read_dense(&mut f, &e.name).unwrap_err();
            assert!(matches!(err, CoreError::Unsupported { .. }), "{}: {err}", e.name);
        } else if let Some(dtype) = ty.dense_dtype() {
            let d = gguf.read_dense(&mut f, &e.name).unwrap();
            assert_eq!(d.dtype(), dtype);
            assert_eq!(d.shape(), e.shape);
            assert!(d.bytes() == e.bytes, "{}: values as written", e.name);
            let err = gguf.read_tensor(&mut f, &e.name).unwrap_err();
            assert!(err.to_string().contains("read_dense"), "{}: {err}", e.name);
            let err = gguf.read_tensor_rows(&mut f, &e.name, 0..1).unwrap_err();
            assert!(matches!(err, CoreError::Unsupported { .. }), "{}: {err}", e.name);
        } else {
            // A type we do not read: listed, its bytes available, not read as a QuantizedTensor.
            let err = gguf.read_tensor(&mut f, &e.name).unwrap_err();
            assert!(matches!(err, CoreError::Unsupported { .. }), "{err}");
            assert!(err.to_string().contains(&ty.to_string()), "{err}");
        }
    }
    let err = gguf.read_tensor(&mut f, "no.such.tensor").unwrap_err();
    assert!(matches!(err, CoreError::InvalidInput(_)), "{err}");
}

#[test]
fn dense_tensors_hold_the_input_values() {
    let want = expected();
    let (gguf, mut f) = open("mixed.gguf");
    let by_name = |n: &str| want.iter().find(|e| e.name == n).unwrap();

    let e = by_name("blk.0.attn_norm.weight");
    let t = gguf.read_dense(&mut f, &e.name).unwrap();
    assert_eq!(t.shape(), &[2, 3, 8]);
    assert_eq!(t.as_slice::<f32>().unwrap(), e.values.as_slice());

    let e = by_name("output_norm.f16");
    let t = gguf.read_dense(&mut f, &e.name).unwrap();
    let want16: Vec<f16> = e.values.iter().map(|&v| f16::from_f32(v)).collect();
    assert_eq!(t.as_slice::<f16>().unwrap(), want16.as_slice());

    // numpy's conversion in `gguf.quants.BF16` rounds to nearest even, as `half` does.
    let e = by_name("output_norm.bf16");
    let t = gguf.read_dense(&mut f, &e.name).unwrap();
    assert_eq!(t.dtype(), DType::BF16);
    let want_bf: Vec<bf16> = e.values.iter().map(|&v| bf16::from_f32(v)).collect();
    assert_eq!(t.as_slice::<bf16>().unwrap(), want_bf.as_slice());
}

#[test]
fn tq2_0_from_the_file_is_our_own_quantization() {
    let want = expected();
    let (gguf, mut f) = open("mixed.gguf");
    let e = want.iter().find(|e| e.ggml_type == GgmlType::TQ2_0.id()).unwrap();
    assert!(e.values.iter().any(|&v| v != 0.0));
    let read = gguf.read_tensor(&mut f, &e.name).unwrap();
    let ours = quantize(QuantFormat::Tq2_0, &e.values, &e.shape).unwrap();
    assert!(read.data() == ours.data(), "TQ2_0 blocks equal our quantizer's");
    let (a, b) = (dequantize(&read).unwrap(), dequantize(&ours).unwrap());
    assert_eq!(a, b);
    // And the values are a ternary approximation of the input (not all zero).
    assert!(a.iter().any(|&v| v != 0.0));
    for (q, t) in [
        (QuantFormat::Q4_0, "blk.0.attn_q.weight"),
        (QuantFormat::Q8_0, "blk.0.attn_k.weight"),
    ] {
        let e = want.iter().find(|e| e.name == t).unwrap();
        let ours = quantize(q, &e.values, &e.shape).unwrap();
        assert!(gguf.read_tensor(&mut f, t).unwrap() == ours, "{q}");
    }
}

/// Whether our value equals candle's reading of the same entry.
fn same_value(ours: &GgufValue, theirs: &gguf_file::Value) -> bool {
    use gguf_file::Value as C;
    match (ours, theirs) {
        (GgufValue::U8(a), C::U8(b)) => a == b,
        (GgufValue::I8(a), C::I8(b)) => a == b,
        (GgufValue::U16(a), C::U16(b)) => a == b,
        (GgufValue::I16(a), C::I16(b)) => a == b,
        (GgufValue::U32(a), C::U32(b)) => a == b,
        (GgufValue::I32(a), C::I32(b)) => a == b,
        (GgufValue::U64(a), C::U64(b)) => a == b,
        (GgufValue::I64(a), C::I64(b)) => a == b,
        (GgufValue::F32(a), C::F32(b)) => a.to_bits() == b.to_bits(),
        (GgufValue::F64(a), C::F64(b)) => a.to_bits() == b.to_bits(),
        (GgufValue::Bool(a), C::Bool(b)) => a == b,
        (GgufValue::String(a), C::String(b)) => a == b,
        (GgufValue::Array(a), C::Array(b)) => a.len() == b.len() && same_array(a, b),
        _ => false,
    }
}

fn same_array(ours: &GgufArray, theirs: &[gguf_file::Value]) -> bool {
    let items: Vec<GgufValue> = match ours {
        GgufArray::U8(v) => v.iter().map(|&x| GgufValue::U8(x)).collect(),
        GgufArray::I8(v) => v.iter().map(|&x| GgufValue::I8(x)).collect(),
        GgufArray::U16(v) => v.iter().map(|&x| GgufValue::U16(x)).collect(),
        GgufArray::I16(v) => v.iter().map(|&x| GgufValue::I16(x)).collect(),
        GgufArray::U32(v) => v.iter().map(|&x| GgufValue::U32(x)).collect(),
        GgufArray::I32(v) => v.iter().map(|&x| GgufValue::I32(x)).collect(),
        GgufArray::F32(v) => v.iter().map(|&x| GgufValue::F32(x)).collect(),
        GgufArray::Bool(v) => v.iter().map(|&x| GgufValue::Bool(x)).collect(),
        GgufArray::String(v) => v.iter().cloned().map(GgufValue::String).collect(),
        GgufArray::Array(v) => v.iter().cloned().map(GgufValue::Array).collect(),
        GgufArray::U64(v) => v.iter().map(|&x| GgufValue::U64(x)).collect(),
        GgufArray::I64(v) => v.iter().map(|&x| GgufValue::I64(x)).collect(),
        GgufArray::F64(v) => v.iter().map(|&x| GgufValue::F64(x)).collect(),
    };
    items.iter().zip(theirs).all(|(a, b)| same_value(a, b))
}

#[test]
fn agrees_with_candles_reader_on_a_file_candle_can_read() {
    let want = expected();
    let (ours, mut f) = open("candle.gguf");
    // Our reader leaves the stream at the end of the header; candle reads from where it is.
    let header_end = f.stream_position().unwrap();
    assert!(header_end <= ours.data_offset() && ours.data_offset() - header_end < 64);
    f.rewind().unwrap();
    let content = gguf_file::Content::read(&mut f).unwrap();
    assert_eq!(ours.alignment(), 64);
    assert_eq!(ours.data_offset(), content.tensor_data_offset);

    // Metadata: the same keys with the same values and types.
    assert_eq!(ours.metadata().len(), content.metadata.len());
    for (key, value) in ours.metadata() {
        let theirs = &content.metadata[key];
        assert!(same_value(value, theirs), "{key}: ours {value:?}, candle {theirs:?}");
    }

    // Tensor infos and data.
    assert_eq!(ours.tensors().len(), content.tensor_infos.len());
    for t in ours.tensors() {
        let info = &content.tensor_infos[t.name()];
        assert_eq!(t.shape(), info.shape.dims(), "{}", t.name());
        assert_eq!(t.offset(), info.offset, "{}", t.name());
        let e = want.iter().find(|e| e.name == t.name()).unwrap();
        assert_eq!(t.file_offset(), e.file_offsets["candle.gguf"].as_u64().unwrap());

        let qt = content.tensor(&mut f, t.name(), &candle_core::Device::Cpu).unwrap();
        let candle_values = qt
            .dequantize(&candle_core::Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        if t.ggml_type() == GgmlType::F32 {
            let d = ours.read_dense(&mut f, t.name()).unwrap();
            assert_eq!(d.as_slice::<f32>().unwrap(), candle_values.as_slice());
            continue;
        }
        let q = ours.read_tensor(&mut f, t.name()).unwrap();
        assert!(q == QuantizedTensor::from_qtensor(&qt).unwrap(), "{}", t.name());
        assert!(
            q == read_gguf_tensor(&content, &mut f, t.name()).unwrap(),
            "{}",
            t.name()
        );
        assert_eq!(dequantize(&q).unwrap(), candle_values, "{}", t.name());
    }

    // The same Q4_0 / Q8_0 tensors in the file candle cannot read (it has a TQ2_0 tensor).
    let mut mixed = File::open(format!("{DIR}mixed.gguf")).unwrap();
    let err = gguf_file::Content::read(&mut mixed).err();
    assert!(
        err.is_some(),
        "candle 0.11 cannot read TQ2_0 (if it now can, compare on it too)"
    );
    let mixed_gguf = GgufFile::read(&mut mixed).unwrap();
    for name in ["blk.0.attn_q.weight", "blk.0.attn_k.weight"] {
        let qt = content.tensor(&mut f, name, &candle_core::Device::Cpu).unwrap();
        let q = mixed_gguf.read_tensor(&mut mixed, name).unwrap();
        assert!(q == QuantizedTensor::from_qtensor(&qt).unwrap(), "{name}");
    }
}

#[test]
fn metadata_values_as_written() {
    let (gguf, _) = open("mixed.gguf");
    let keys: Vec<&str> = gguf.metadata().map(|(k, _)| k).collect();
    assert_eq!(
        keys,
        [
            "general.architecture",
            "general.name",
            "test.u8",
            "test.i8",
            "test.u16",
            "test.i16",
            "test.u32",
            "test.i32",
            "test.f32",
            "test.u64",
            "test.i64",
            "test.f64",
            "test.true",
            "test.false",
            "test.strings",
            "test.ints",
            "test.u32s",
            "test.floats",
            "test.bools",
            "test.nested",
        ]
    );
    let get = |k: &str| gguf.get(k).unwrap().clone();
    assert_eq!(get("general.architecture"), GgufValue::String("aihal-test".into()));
    assert_eq!(get("general.name").as_str(), Some("aihal fixture \u{2013} tern\u{e4}r"));
    assert_eq!(get("test.u8"), GgufValue::U8(200));
    assert_eq!(get("test.i8"), GgufValue::I8(-100));
    assert_eq!(get("test.u16"), GgufValue::U16(60000));
    assert_eq!(get("test.i16"), GgufValue::I16(-30000));
    assert_eq!(get("test.u32"), GgufValue::U32(4_000_000_000));
    assert_eq!(get("test.i32"), GgufValue::I32(-2_000_000_000));
    assert_eq!(get("test.f32"), GgufValue::F32(0.1));
    assert_eq!(get("test.u64"), GgufValue::U64((1 << 63) + 5));
    assert_eq!(get("test.i64"), GgufValue::I64(-(1 << 62) - 3));
    assert_eq!(get("test.f64"), GgufValue::F64(1.0 / 3.0));
    assert_eq!(get("test.true").as_bool(), Some(true));
    assert_eq!(get("test.false").as_bool(), Some(false));
    assert_eq!(
        get("test.strings"),
        GgufValue::Array(GgufArray::String(vec![
            "alpha".into(),
            String::new(),
            "\u{fc}n\u{ef}c\u{f6}de \u{2713}".into()
        ]))
    );
    assert_eq!(get("test.ints"), GgufValue::Array(GgufArray::I32(vec![1, -2, 300_000])));
    assert_eq!(
        get("test.u32s"),
        GgufValue::Array(GgufArray::U32(vec![7, 4_000_000_000]))
    );
    assert_eq!(
        get("test.floats"),
        GgufValue::Array(GgufArray::F32(vec![0.5, -1.25, 3.0e-8]))
    );
    assert_eq!(
        get("test.bools"),
        GgufValue::Array(GgufArray::Bool(vec![true, false, true]))
    );
    let nested = get("test.nested");
    assert_eq!(nested.value_type(), GgufValueType::Array);
    assert_eq!(nested.as_array().unwrap().element_type(), GgufValueType::Array);
    assert_eq!(
        nested,
        GgufValue::Array(GgufArray::Array(vec![
            GgufArray::I32(vec![1, 2]),
            GgufArray::String(vec!["x".into(), "yz".into()]),
            GgufArray::Array(vec![GgufArray::Bool(vec![true]), GgufArray::Bool(vec![false, false])]),
        ]))
    );
    assert_eq!(get("test.u32").as_u64(), Some(4_000_000_000));
    assert!(gguf.get("test.missing").is_none());
}

#[test]
fn reads_from_an_in_memory_stream_and_files_candle_writes() {
    let bytes = std::fs::read(format!("{DIR}mixed.gguf")).unwrap();
    let mut c = Cursor::new(bytes);
    let gguf = GgufFile::read(&mut c).unwrap();
    assert_eq!(gguf.tensors().len(), 7);
    assert_eq!(
        gguf.read_tensor(&mut c, "blk.0.ffn_down.weight").unwrap().shape(),
        &[3, 512]
    );

    // A file written by candle (version 2 or 3, its own padding and metadata encoding).
    let x: Vec<f32> = (0..4 * 64).map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0).collect();
    let t = candle_core::Tensor::from_vec(x.clone(), (4, 64), &candle_core::Device::Cpu).unwrap();
    let q8 = candle_core::quantized::QTensor::quantize(&t, candle_core::quantized::GgmlDType::Q8_0).unwrap();
    let mut buf = Cursor::new(Vec::new());
    let meta = gguf_file::Value::Array(vec![gguf_file::Value::U16(3), gguf_file::Value::U16(4)]);
    gguf_file::write(&mut buf, &[("k", &meta)], &[("w", &q8)]).unwrap();
    let gguf = GgufFile::read(&mut buf).unwrap();
    assert_eq!(gguf.get("k"), Some(&GgufValue::Array(GgufArray::U16(vec![3, 4]))));
    let w = gguf.read_tensor(&mut buf, "w").unwrap();
    assert!(w == quantize(QuantFormat::Q8_0, &x, &[4, 64]).unwrap());
}

#[test]
fn ggml_type_table_is_the_gguf_packages() {
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(format!("{DIR}gguf_manifest.json")).unwrap()).unwrap();
    let table = manifest["ggml_types"].as_object().unwrap();
    assert!(table.len() > 30);
    for (name, v) in table {
        let v: Vec<u64> = v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
        let t = GgmlType(v[0] as u32);
        assert_eq!(t.name(), Some(name.as_str()), "id {}", v[0]);
        assert_eq!(t.block_layout(), Some((v[1], v[2])), "{name}");
    }
    // And nothing beyond it.
    let known = (0..64).filter(|&id| GgmlType(id).name().is_some()).count();
    assert_eq!(known, table.len());
}
