//! Saving and loading quantized tensors to safetensors, with metadata that fully describes
//! them.
//!
//! # File layout (version 1)
//!
//! For a tensor saved under `name`:
//!
//! | safetensors entry | dtype | shape | content |
//! | --- | --- | --- | --- |
//! | `name` | `U8` | `[data bytes]` | the packed bytes, exactly as the [layout contract](mod@crate::format) says |
//! | `name.scales` | `F32` | `[scale count]` | the f32 scales (absent when the format keeps none: Q4_0, Q8_0, TQ2_0) |
//! | `name.nested_codes` | `U8` | `[blocks]` | NF4 with double quantization: the 8-bit absmax codes |
//! | `name.nested_scales` | `F32` | `[ceil(blocks / 256)]` | their block scales |
//! | `name.nested_code` | `F32` | `[256]` | the 8-bit code book |
//!
//! The safetensors header's `__metadata__` holds `"aihal.quantize.version": "1"` and, per
//! tensor, `"aihal.quantize.tensor.<name>"`: a JSON object
//! `{"format": "nf4", "block_size": 64, "double_quant": true, "shape": [4096, 4096]}`
//! (`block_size` is `null` for formats without one or for per-tensor FP8;
//! `double_quant` only for NF4), plus `"nested_offset"` and `"nested_block_size"` for
//! double quantization. `format` is [`QuantFormat::name`].
//!
//! Loading checks everything: a missing or malformed entry, an unknown format or version,
//! lengths that contradict the shape, and non-finite scales are errors naming the tensor.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use aihal_core::{CoreError, Result};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde_json::{json, Value};

use crate::format::QuantFormat;
use crate::tensor::{NestedAbsmax, QuantizedTensor};

/// The layout version this crate writes and reads.
pub const FORMAT_VERSION: u32 = 1;
const VERSION_KEY: &str = "aihal.quantize.version";
const TENSOR_KEY: &str = "aihal.quantize.tensor.";

pub(crate) fn st_err(context: &str, e: impl std::fmt::Display) -> CoreError {
    CoreError::invalid_input(format!("{context}: {e}"))
}

/// Says which tensor an `InvalidInput` or `ShapeMismatch` error is about (`what` is e.g.
/// `tensor "w"`); other errors pass through.
pub(crate) fn about(what: &str, err: CoreError) -> CoreError {
    match err {
        CoreError::InvalidInput(msg) => CoreError::InvalidInput(format!("{what}: {msg}")),
        CoreError::ShapeMismatch {
            context,
            expected,
            actual,
        } => CoreError::ShapeMismatch {
            context: format!("{what}: {context}"),
            expected,
            actual,
        },
        other => other,
    }
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|f| f.to_le_bytes()).collect()
}

fn format_json(t: &QuantizedTensor) -> Value {
    let f = t.format();
    let block = match f {
        QuantFormat::Nf4 { block_size, .. } | QuantFormat::Int8PerBlock { block_size } => Some(block_size),
        QuantFormat::Fp8E4M3 { block_size } | QuantFormat::Fp8E5M2 { block_size } => block_size,
        _ => None,
    };
    let mut v = json!({ "format": f.name(), "block_size": block, "shape": t.shape() });
    if let QuantFormat::Nf4 { double_quant, .. } = f {
        v["double_quant"] = json!(double_quant);
    }
    if let Some(n) = t.nested() {
        v["nested_offset"] = json!(n.offset);
        v["nested_block_size"] = json!(n.block_size);
    }
    v
}

/// Serializes named tensors into safetensors bytes (layout in the [module docs](self)).
///
/// Names must be unique and must not collide with another tensor's companion entries
/// (`InvalidInput` otherwise).
pub fn to_safetensors_bytes(tensors: &[(&str, &QuantizedTensor)]) -> Result<Vec<u8>> {
    let mut meta = HashMap::new();
    meta.insert(VERSION_KEY.to_owned(), FORMAT_VERSION.to_string());
    let mut owned: Vec<Entry> = Vec::new();
    for (name, t) in tensors {
        if meta
            .insert(format!("{TENSOR_KEY}{name}"), format_json(t).to_string())
            .is_some()
        {
            return Err(CoreError::invalid_input(format!("tensor name {name:?} given twice")));
        }
        owned.push(Entry::u8((*name).to_owned(), t.data().to_vec()));
        if !t.scales().is_empty() {
            owned.push(Entry::f32(format!("{name}.scales"), t.scales()));
        }
        if let Some(n) = t.nested() {
            owned.push(Entry::u8(format!("{name}.nested_codes"), n.codes.clone()));
            owned.push(Entry::f32(format!("{name}.nested_scales"), &n.scales));
            owned.push(Entry::f32(format!("{name}.nested_code"), &n.code));
        }
    }
    serialize(&owned, Some(meta))
}

/// One safetensors entry to write.
pub(crate) struct Entry {
    pub(crate) name: String,
    pub(crate) dtype: Dtype,
    pub(crate) shape: Vec<usize>,
    pub(crate) bytes: Vec<u8>,
}

impl Entry {
    /// A 1-D `U8` entry.
    pub(crate) fn u8(name: String, bytes: Vec<u8>) -> Self {
        Self {
            name,
            dtype: Dtype::U8,
            shape: vec![bytes.len()],
            bytes,
        }
    }

    /// A 1-D `F32` entry.
    pub(crate) fn f32(name: String, values: &[f32]) -> Self {
        Self {
            name,
            dtype: Dtype::F32,
            shape: vec![values.len()],
            bytes: f32_bytes(values),
        }
    }
}

/// Writes `entries` with `meta` as safetensors bytes.
pub(crate) fn serialize(entries: &[Entry], meta: Option<HashMap<String, String>>) -> Result<Vec<u8>> {
    let mut names = std::collections::HashSet::new();
    let mut views = Vec::with_capacity(entries.len());
    for e in entries {
        if !names.insert(e.name.as_str()) {
            return Err(CoreError::invalid_input(format!(
                "safetensors entry {:?} would be written twice",
                e.name
            )));
        }
        let view =
            TensorView::new(e.dtype, e.shape.clone(), &e.bytes).map_err(|err| st_err("safetensors entry", err))?;
        views.push((e.name.as_str(), view));
    }
    safetensors::serialize(views, meta).map_err(|e| st_err("safetensors serialization", e))
}

/// Saves named tensors to a safetensors file at `path`.
pub fn save_safetensors(tensors: &[(&str, &QuantizedTensor)], path: impl AsRef<Path>) -> Result<()> {
    std::fs::write(path, to_safetensors_bytes(tensors)?)?;
    Ok(())
}

/// Loads every quantized tensor of a file written by [`save_safetensors`].
pub fn load_safetensors(path: impl AsRef<Path>) -> Result<BTreeMap<String, QuantizedTensor>> {
    from_safetensors_bytes(&std::fs::read(path)?)
}

/// Reads the f32 entry `name` of a safetensors file.
pub(crate) fn read_f32(st: &SafeTensors<'_>, name: &str) -> Result<Vec<f32>> {
    let v = st
        .tensor(name)
        .map_err(|e| st_err(&format!("safetensors entry {name:?}"), e))?;
    if v.dtype() != Dtype::F32 {
        return Err(CoreError::invalid_input(format!(
            "safetensors entry {name:?} is {:?}, expected F32",
            v.dtype()
        )));
    }
    Ok(v.data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

/// Reads the u8 entry `name` of a safetensors file.
pub(crate) fn read_u8(st: &SafeTensors<'_>, name: &str) -> Result<Vec<u8>> {
    let v = st
        .tensor(name)
        .map_err(|e| st_err(&format!("safetensors entry {name:?}"), e))?;
    if v.dtype() != Dtype::U8 {
        return Err(CoreError::invalid_input(format!(
            "safetensors entry {name:?} is {:?}, expected U8",
            v.dtype()
        )));
    }
    Ok(v.data().to_vec())
}

/// Parses the safetensors `__metadata__` of `bytes`.
pub(crate) fn header_metadata(bytes: &[u8]) -> Result<HashMap<String, String>> {
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| st_err("safetensors header", e))?;
    Ok(meta.metadata().clone().unwrap_or_default())
}

/// What a tensor's metadata says: format, shape, and the nested offset and block size.
type Described = (QuantFormat, Vec<usize>, Option<(f32, usize)>);

fn parse_format(name: &str, v: &Value) -> Result<Described> {
    let bad = |what: &str| CoreError::invalid_input(format!("metadata of tensor {name:?}: {what}"));
    let format = v["format"].as_str().ok_or_else(|| bad("no \"format\" string"))?;
    let block = match &v["block_size"] {
        Value::Null => None,
        b => Some(
            b.as_u64()
                .and_then(|b| usize::try_from(b).ok())
                .ok_or_else(|| bad("\"block_size\" is not a non-negative integer"))?,
        ),
    };
    let need_block = || block.ok_or_else(|| bad("\"block_size\" is required for this format"));
    let shape = v["shape"]
        .as_array()
        .ok_or_else(|| bad("no \"shape\" array"))?
        .iter()
        .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
        .collect::<Option<Vec<usize>>>()
        .ok_or_else(|| bad("\"shape\" holds something other than non-negative integers"))?;
    let f = match format {
        "nf4" => QuantFormat::Nf4 {
            block_size: need_block()?,
            double_quant: v["double_quant"]
                .as_bool()
                .ok_or_else(|| bad("\"double_quant\" is not a boolean"))?,
        },
        "ternary" => QuantFormat::Ternary,
        "int8_channel" => QuantFormat::Int8PerChannel,
        "int8_block" => QuantFormat::Int8PerBlock {
            block_size: need_block()?,
        },
        "fp8_e4m3" => QuantFormat::Fp8E4M3 { block_size: block },
        "fp8_e5m2" => QuantFormat::Fp8E5M2 { block_size: block },
        other => match crate::formats::by_name(other) {
            Some(b) => b.format,
            None => return Err(bad(&format!("unknown format {other:?}"))),
        },
    };
    let nested = if matches!(f, QuantFormat::Nf4 { double_quant: true, .. }) {
        let offset = v["nested_offset"]
            .as_f64()
            .ok_or_else(|| bad("\"nested_offset\" is missing or not a number"))? as f32;
        let nb = v["nested_block_size"]
            .as_u64()
            .and_then(|b| usize::try_from(b).ok())
            .filter(|&b| b > 0)
            .ok_or_else(|| bad("\"nested_block_size\" is missing or not a positive integer"))?;
        Some((offset, nb))
    } else {
        None
    };
    Ok((f, shape, nested))
}

/// Parses safetensors bytes written by [`to_safetensors_bytes`] into named tensors.
///
/// Entries of the file that are not described by aihal metadata are ignored, so a file may
/// also carry unquantized tensors.
pub fn from_safetensors_bytes(bytes: &[u8]) -> Result<BTreeMap<String, QuantizedTensor>> {
    let meta = header_metadata(bytes)?;
    match meta.get(VERSION_KEY).map(String::as_str) {
        Some("1") => {}
        Some(v) => {
            return Err(CoreError::invalid_input(format!(
                "aihal quantized safetensors version {v} is not supported (this build reads version {FORMAT_VERSION})"
            )))
        }
        None => {
            return Err(CoreError::invalid_input(format!(
                "not an aihal quantized safetensors file (no {VERSION_KEY:?} in the metadata)"
            )))
        }
    }
    let st = SafeTensors::deserialize(bytes).map_err(|e| st_err("safetensors file", e))?;
    let mut out = BTreeMap::new();
    for (key, json) in &meta {
        let Some(name) = key.strip_prefix(TENSOR_KEY) else {
            continue;
        };
        let v: Value = serde_json::from_str(json).map_err(|e| st_err(&format!("metadata of tensor {name:?}"), e))?;
        let (format, shape, nested) = parse_format(name, &v)?;
        let data = read_u8(&st, name)?;
        let scales = if crate::tensor::expected_lens(format, &shape)?.1 == 0 {
            Vec::new()
        } else {
            read_f32(&st, &format!("{name}.scales"))?
        };
        let about = |e| about(&format!("tensor {name:?}"), e);
        let mut t = QuantizedTensor::from_parts(format, shape, data, scales).map_err(about)?;
        if let Some((offset, block_size)) = nested {
            let n = NestedAbsmax {
                codes: read_u8(&st, &format!("{name}.nested_codes"))?,
                scales: read_f32(&st, &format!("{name}.nested_scales"))?,
                code: read_f32(&st, &format!("{name}.nested_code"))?,
                offset,
                block_size,
            };
            t = t.with_nested(n).map_err(about)?;
            // Lengths were checked by `with_nested`, so decoding cannot index out of bounds.
            let decoded = t.nested().map(crate::nf4::decode_nested).unwrap_or_default();
            if decoded.iter().zip(t.scales()).any(|(a, b)| a.to_bits() != b.to_bits()) {
                return Err(CoreError::invalid_input(format!(
                    "tensor {name:?}: the stored absmax disagrees with its double-quantized form"
                )));
            }
        }
        t.validate_values().map_err(about)?;
        out.insert(name.to_owned(), t);
    }
    Ok(out)
}
