//! Safetensors save/load of every format, bitsandbytes' NF4 layout, and malformed files.
#![allow(clippy::float_cmp)] // exact values are the point

mod common;

use std::collections::HashMap;

use aihal_core::CoreError;
use aihal_quantize::io::{from_safetensors_bytes, load_safetensors, save_safetensors, to_safetensors_bytes};
use aihal_quantize::nf4::NF4_CODE;
use aihal_quantize::{bnb, dequantize, quantize, QuantFormat, QuantizedTensor};
use common::{all_formats, Rng};
use safetensors::tensor::{Dtype, TensorView};

fn sample(rng: &mut Rng, format: QuantFormat) -> QuantizedTensor {
    let shape = [6, 256];
    quantize(format, &rng.normals(6 * 256), &shape).unwrap()
}

#[test]
fn every_format_round_trips_through_safetensors() {
    let mut rng = Rng::new(20);
    let tensors: Vec<(String, QuantizedTensor)> = all_formats()
        .into_iter()
        .enumerate()
        .map(|(i, f)| (format!("layer{i}.weight"), sample(&mut rng, f)))
        .collect();
    let refs: Vec<(&str, &QuantizedTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let bytes = to_safetensors_bytes(&refs).unwrap();
    let loaded = from_safetensors_bytes(&bytes).unwrap();
    assert_eq!(loaded.len(), tensors.len());
    for (name, t) in &tensors {
        assert_eq!(&loaded[name], t, "{name}");
    }
    // And through a file.
    let path = std::env::temp_dir().join(format!("aihal-quantize-io-{}.safetensors", std::process::id()));
    save_safetensors(&refs, &path).unwrap();
    let from_file = load_safetensors(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(from_file, loaded);
}

/// Rewrites the metadata of a file written by `to_safetensors_bytes` with `edit`.
fn with_metadata(bytes: &[u8], edit: impl FnOnce(&mut HashMap<String, String>)) -> Vec<u8> {
    let st = safetensors::SafeTensors::deserialize(bytes).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes).unwrap();
    let mut meta = meta.metadata().clone().unwrap();
    edit(&mut meta);
    let views: Vec<(String, TensorView<'_>)> = st.tensors();
    safetensors::serialize(views, Some(meta)).unwrap()
}

#[test]
fn malformed_files_are_clear_errors() {
    let mut rng = Rng::new(21);
    let t = sample(&mut rng, QuantFormat::Int8PerBlock { block_size: 64 });
    let good = to_safetensors_bytes(&[("w", &t)]).unwrap();
    let key = "aihal.quantize.tensor.w".to_owned();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "version",
            with_metadata(&good, |m| {
                m.insert("aihal.quantize.version".into(), "9".into());
            }),
        ),
        (
            "not an aihal",
            with_metadata(&good, |m| {
                m.remove("aihal.quantize.version");
            }),
        ),
        (
            "JSON",
            with_metadata(&good, |m| {
                m.insert(key.clone(), "{not json".into());
            }),
        ),
        (
            "unknown format",
            with_metadata(&good, |m| {
                m.insert(
                    key.clone(),
                    r#"{"format":"iq1_m","block_size":null,"shape":[6,256]}"#.into(),
                );
            }),
        ),
        (
            "block_size",
            with_metadata(&good, |m| {
                m.insert(
                    key.clone(),
                    r#"{"format":"int8_block","block_size":-1,"shape":[6,256]}"#.into(),
                );
            }),
        ),
        (
            "shape",
            with_metadata(&good, |m| {
                m.insert(
                    key.clone(),
                    r#"{"format":"int8_block","block_size":64,"shape":"6x256"}"#.into(),
                );
            }),
        ),
        (
            "overflows",
            with_metadata(&good, |m| {
                m.insert(
                    key.clone(),
                    format!(
                        r#"{{"format":"int8_block","block_size":64,"shape":[{},{}]}}"#,
                        u64::MAX,
                        4
                    ),
                );
            }),
        ),
        ("header", good[..good.len() / 2].to_vec()),
        ("header", b"garbage".to_vec()),
    ];
    for (what, bytes) in cases {
        let err = from_safetensors_bytes(&bytes).unwrap_err();
        assert!(matches!(err, CoreError::InvalidInput(_)), "{what}: {err}");
    }
    // A shape that disagrees with the stored bytes.
    let bytes = with_metadata(&good, |m| {
        m.insert(
            key.clone(),
            r#"{"format":"int8_block","block_size":64,"shape":[5,256]}"#.into(),
        );
    });
    let err = from_safetensors_bytes(&bytes).unwrap_err();
    assert!(matches!(err, CoreError::ShapeMismatch { .. }), "{err}");
}

#[test]
fn corrupt_values_are_rejected_on_load() {
    let x: Vec<f32> = (0..64).map(|i| i as f32 / 10.0).collect();
    // A NaN scale.
    let t = QuantizedTensor::from_parts(
        QuantFormat::Int8PerChannel,
        vec![2, 32],
        vec![1; 64],
        vec![1.0, f32::NAN],
    )
    .unwrap();
    let err = from_safetensors_bytes(&to_safetensors_bytes(&[("w", &t)]).unwrap()).unwrap_err();
    assert!(err.to_string().contains("scale 1"), "{err}");
    // An infinite f16 scale inside a Q8_0 block.
    let mut data = quantize(QuantFormat::Q8_0, &x, &[2, 32]).unwrap().data().to_vec();
    data[34..36].copy_from_slice(&half::f16::INFINITY.to_le_bytes());
    let t = QuantizedTensor::from_parts(QuantFormat::Q8_0, vec![2, 32], data, vec![]).unwrap();
    let err = from_safetensors_bytes(&to_safetensors_bytes(&[("w", &t)]).unwrap()).unwrap_err();
    assert!(err.to_string().contains("block 1"), "{err}");
    // Ternary code 3, FP8 NaN.
    let t =
        QuantizedTensor::from_parts(QuantFormat::Ternary, vec![8], vec![0b0101_0101, 0b1101_0101], vec![1.0]).unwrap();
    assert!(t.validate_values().unwrap_err().to_string().contains("byte 1"));
    let t = QuantizedTensor::from_parts(
        QuantFormat::Fp8E4M3 { block_size: None },
        vec![3],
        vec![0, 0xFF, 1],
        vec![1.0],
    )
    .unwrap();
    assert!(t.validate_values().unwrap_err().to_string().contains("value 1"));
    assert!(quantize(QuantFormat::Tq2_0, &[0.5; 256], &[256])
        .unwrap()
        .validate_values()
        .is_ok());
}

fn f32_le(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|f| f.to_le_bytes()).collect()
}

/// A bitsandbytes-layout file assembled entry by entry, as `Params4bit` serializes it
/// (`quant_state` JSON in Python's `json.dumps` spelling), independent of our writer.
fn handmade_bnb_file(
    codes: &[u8],
    absmax_codes: &[u8],
    nested_absmax: &[f32],
    nested_map: &[f32],
    offset: f32,
    shape: [usize; 2],
) -> Vec<u8> {
    let state = format!(
        r#"{{"quant_type": "nf4", "blocksize": 64, "dtype": "bfloat16", "shape": [{}, {}], "nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": {offset:?}}}"#,
        shape[0], shape[1]
    );
    let qmap = f32_le(&NF4_CODE);
    let na = f32_le(nested_absmax);
    let nm = f32_le(nested_map);
    let entries = vec![
        (
            "w.weight".to_owned(),
            TensorView::new(Dtype::U8, vec![codes.len(), 1], codes).unwrap(),
        ),
        (
            "w.weight.absmax".to_owned(),
            TensorView::new(Dtype::U8, vec![absmax_codes.len()], absmax_codes).unwrap(),
        ),
        (
            "w.weight.quant_map".to_owned(),
            TensorView::new(Dtype::F32, vec![16], &qmap).unwrap(),
        ),
        (
            "w.weight.nested_absmax".to_owned(),
            TensorView::new(Dtype::F32, vec![nested_absmax.len()], &na).unwrap(),
        ),
        (
            "w.weight.nested_quant_map".to_owned(),
            TensorView::new(Dtype::F32, vec![256], &nm).unwrap(),
        ),
        (
            "w.weight.quant_state.bitsandbytes__nf4".to_owned(),
            TensorView::new(Dtype::U8, vec![state.len()], state.as_bytes()).unwrap(),
        ),
    ];
    safetensors::serialize(entries, None).unwrap()
}

#[test]
fn bitsandbytes_layout_loads_with_bitsandbytes_arithmetic() {
    let mut rng = Rng::new(22);
    let shape = [8, 128]; // 1024 values, 16 blocks of 64
    let codes: Vec<u8> = (0..512).map(|_| rng.next_u64() as u8).collect();
    let absmax_codes: Vec<u8> = (0..16).map(|_| rng.next_u64() as u8).collect();
    let nested_map: Vec<f32> = (0..256).map(|i| (i as f32 - 127.5) / 128.0).collect();
    let nested_absmax = [0.37f32];
    let offset = 0.81f32;
    let file = handmade_bnb_file(&codes, &absmax_codes, &nested_absmax, &nested_map, offset, shape);
    let w = bnb::load_nf4(&file, "w.weight").unwrap();
    assert_eq!(w.dtype, "bfloat16");
    assert_eq!(w.tensor.shape(), &shape);
    assert_eq!(
        w.tensor.format(),
        QuantFormat::Nf4 {
            block_size: 64,
            double_quant: true
        }
    );
    let y = dequantize(&w.tensor).unwrap();
    for i in 0..1024 {
        let nib = if i % 2 == 0 {
            codes[i / 2] >> 4
        } else {
            codes[i / 2] & 15
        };
        let absmax = nested_map[usize::from(absmax_codes[i / 64])] * nested_absmax[0] + offset;
        assert_eq!(y[i], NF4_CODE[usize::from(nib)] * absmax, "value {i}");
    }
    let yb = w.dequantize_as_stored_dtype().unwrap();
    assert!(yb.iter().zip(&y).all(|(b, f)| *b == half::bf16::from_f32(*f).to_f32()));
}

#[test]
fn our_bitsandbytes_writer_round_trips() {
    let mut rng = Rng::new(23);
    for double_quant in [false, true] {
        let f = QuantFormat::Nf4 {
            block_size: 64,
            double_quant,
        };
        let t = quantize(f, &rng.normals(300 * 64), &[300, 64]).unwrap();
        let bytes = bnb::to_safetensors_bytes(&[("model.q_proj.weight", &t)], "float16").unwrap();
        let w = bnb::load_nf4(&bytes, "model.q_proj.weight").unwrap();
        assert_eq!(w.tensor, t);
        assert_eq!(w.dtype, "float16");
    }
}

#[test]
fn bitsandbytes_errors() {
    let mut rng = Rng::new(24);
    let t = quantize(
        QuantFormat::Nf4 {
            block_size: 64,
            double_quant: false,
        },
        &rng.normals(256),
        &[4, 64],
    )
    .unwrap();
    let good = bnb::to_safetensors_bytes(&[("w", &t)], "bfloat16").unwrap();
    assert!(bnb::load_nf4(&good, "v").is_err(), "missing weight");
    assert!(bnb::load_nf4(&good[..100], "w").is_err(), "truncated");
    let st = safetensors::SafeTensors::deserialize(&good).unwrap();
    let rebuild = |replace: &str, dtype: Dtype, data: &[u8]| -> Vec<u8> {
        let mut views: Vec<(String, TensorView<'_>)> = st.tensors().into_iter().filter(|(n, _)| n != replace).collect();
        views.push((
            replace.to_owned(),
            TensorView::new(dtype, vec![data.len() / if dtype == Dtype::F32 { 4 } else { 1 }], data).unwrap(),
        ));
        safetensors::serialize(views, None).unwrap()
    };
    let cases = [
        (
            "w.quant_state.bitsandbytes__nf4",
            Dtype::U8,
            b"{\"quant_type\": \"nf4\"".to_vec(),
            "JSON",
        ),
        (
            "w.quant_state.bitsandbytes__nf4",
            Dtype::U8,
            br#"{"quant_type": "nf4", "blocksize": 64, "dtype": "bfloat16", "shape": [5, 64]}"#.to_vec(),
            "shape",
        ),
        (
            "w.quant_state.bitsandbytes__nf4",
            Dtype::U8,
            br#"{"quant_type": "nf4", "blocksize": 48, "dtype": "bfloat16", "shape": [4, 64]}"#.to_vec(),
            "block",
        ),
        (
            "w.quant_state.bitsandbytes__nf4",
            Dtype::U8,
            br#"{"quant_type": "fp4", "blocksize": 64, "dtype": "bfloat16", "shape": [4, 64]}"#.to_vec(),
            "fp4",
        ),
        ("w.quant_map", Dtype::F32, f32_le(&[0.0; 16]), "quant_map"),
        ("w.absmax", Dtype::F32, f32_le(&[1.0; 3]), "absmax count"),
        (
            "w.absmax",
            Dtype::F32,
            f32_le(&[1.0, 1.0, f32::INFINITY, 1.0]),
            "infinite absmax",
        ),
    ];
    for (entry, dtype, data, what) in cases {
        let bytes = rebuild(entry, dtype, &data);
        assert!(bnb::load_nf4(&bytes, "w").is_err(), "{what}");
    }
}
