//! bitsandbytes' serialized 4-bit weights (NF4), read and written in safetensors.
//!
//! bitsandbytes (`Linear4bit`, `Params4bit`, `QuantState.as_dict(packed=True)`) saves a
//! quantized weight `W` as these entries:
//!
//! | entry | dtype | content |
//! | --- | --- | --- |
//! | `W` | `U8`, shape `[ceil(n/2), 1]` | the packed codes, first value in the high nibble |
//! | `W.absmax` | `F32` (`U8` with double quantization) | one absmax per block |
//! | `W.quant_map` | `F32` `[16]` | the NF4 code book |
//! | `W.nested_absmax` | `F32` | double quantization: one scale per 256 absmax codes |
//! | `W.nested_quant_map` | `F32` `[256]` | double quantization: the 8-bit code book |
//! | `W.quant_state.bitsandbytes__nf4` | `U8` | UTF-8 JSON: `quant_type`, `blocksize`, `dtype`, `shape`, and with double quantization `nested_blocksize`, `nested_dtype`, `nested_offset` |
//!
//! bitsandbytes dequantizes as `NF4[code] * absmax` in f32, where with double quantization
//! `absmax = nested_quant_map[q] * nested_absmax[q_block] + nested_offset`, and then
//! converts to `dtype` (usually bfloat16). [`BnbNf4::dequantize_as_stored_dtype`]
//! reproduces that final rounding; the [`QuantizedTensor`] keeps the f32 values.
//!
//! Tested against files written by bitsandbytes 0.50.2 (`Linear4bit.state_dict()`, saved with
//! safetensors): loading gives bitsandbytes' own dequantized values bit for bit, and
//! [`to_safetensors_bytes`] writes the same entries with the same bytes.

use std::collections::HashMap;

use aihal_core::{CoreError, Result};
use half::{bf16, f16};
use safetensors::tensor::{Dtype, SafeTensors};
use serde_json::{json, Value};

use crate::format::QuantFormat;
use crate::io::{about, read_f32, read_u8, serialize, st_err, Entry};
use crate::nf4::NF4_CODE;
use crate::ops::dequantize;
use crate::tensor::{NestedAbsmax, QuantizedTensor};

/// A bitsandbytes NF4 weight: the tensor and the dtype bitsandbytes dequantizes it to.
#[derive(Clone, Debug, PartialEq)]
pub struct BnbNf4 {
    /// The weight, NF4 with bitsandbytes' block size and (if used) double quantization.
    pub tensor: QuantizedTensor,
    /// `quant_state.dtype`: `"bfloat16"`, `"float16"` or `"float32"`.
    pub dtype: String,
}

impl BnbNf4 {
    /// The values bitsandbytes' `dequantize_4bit` returns: f32 products rounded (to nearest
    /// even) to `dtype`, widened back to f32.
    pub fn dequantize_as_stored_dtype(&self) -> Result<Vec<f32>> {
        let mut v = dequantize(&self.tensor)?;
        match self.dtype.as_str() {
            "bfloat16" => v.iter_mut().for_each(|x| *x = bf16::from_f32(*x).to_f32()),
            "float16" => v.iter_mut().for_each(|x| *x = f16::from_f32(*x).to_f32()),
            "float32" => {}
            other => return Err(CoreError::unsupported("bitsandbytes dequantization to", other)),
        }
        Ok(v)
    }
}

fn bad(name: &str, what: impl std::fmt::Display) -> CoreError {
    CoreError::invalid_input(format!("bitsandbytes weight {name:?}: {what}"))
}

/// Loads the NF4 weight `name` from the bytes of a safetensors file bitsandbytes wrote.
///
/// Errors: a missing entry, a malformed `quant_state` JSON, an FP4 weight (`Unsupported`),
/// a `quant_map` that is not the NF4 code book, lengths that disagree with `shape` and
/// `blocksize` (`ShapeMismatch`), and non-finite values.
pub fn load_nf4(bytes: &[u8], name: &str) -> Result<BnbNf4> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| st_err("safetensors file", e))?;
    if st.tensor(&format!("{name}.quant_state.bitsandbytes__fp4")).is_ok() {
        return Err(CoreError::unsupported(
            "the bitsandbytes loader",
            format!("FP4 weight {name:?} (NF4 only)"),
        ));
    }
    let state = read_u8(&st, &format!("{name}.quant_state.bitsandbytes__nf4"))?;
    let state: Value =
        serde_json::from_slice(&state).map_err(|e| bad(name, format!("quant_state is not JSON: {e}")))?;
    if state["quant_type"].as_str() != Some("nf4") {
        return Err(bad(
            name,
            format!("quant_type is {}, expected \"nf4\"", state["quant_type"]),
        ));
    }
    let uint = |key: &str| -> Result<usize> {
        state[key]
            .as_u64()
            .and_then(|v| usize::try_from(v).ok())
            .ok_or_else(|| {
                bad(
                    name,
                    format!("quant_state.{key} is missing or not a non-negative integer"),
                )
            })
    };
    let block_size = uint("blocksize")?;
    let shape = state["shape"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
                .collect::<Option<Vec<_>>>()
        })
        .ok_or_else(|| bad(name, "quant_state.shape is missing or not a list of sizes"))?;
    let dtype = state["dtype"].as_str().unwrap_or("float32").to_owned();
    if !["bfloat16", "float16", "float32"].contains(&dtype.as_str()) {
        return Err(bad(
            name,
            format!("quant_state.dtype {dtype:?} is not bfloat16, float16 or float32"),
        ));
    }
    let quant_map = read_f32(&st, &format!("{name}.quant_map"))?;
    if quant_map.len() != 16 || quant_map.iter().zip(NF4_CODE).any(|(a, b)| (a - b).abs() > 1e-6) {
        return Err(bad(name, "quant_map is not the NF4 code book"));
    }
    let data = read_u8(&st, name)?;
    let about = |e| about(&format!("bitsandbytes weight {name:?}"), e);
    let double_quant = state.get("nested_offset").is_some();
    let format = QuantFormat::Nf4 {
        block_size,
        double_quant,
    };
    let tensor = if double_quant {
        let offset = state["nested_offset"]
            .as_f64()
            .ok_or_else(|| bad(name, "quant_state.nested_offset is not a number"))? as f32;
        let nested = NestedAbsmax {
            codes: read_u8(&st, &format!("{name}.absmax"))?,
            scales: read_f32(&st, &format!("{name}.nested_absmax"))?,
            code: read_f32(&st, &format!("{name}.nested_quant_map"))?,
            offset,
            block_size: uint("nested_blocksize")?,
        };
        QuantizedTensor::from_nested(format, shape, data, nested).map_err(about)?
    } else {
        let absmax = read_f32(&st, &format!("{name}.absmax"))?;
        QuantizedTensor::from_parts(format, shape, data, absmax).map_err(about)?
    };
    tensor.validate_values().map_err(about)?;
    Ok(BnbNf4 { tensor, dtype })
}

/// The names of the NF4 weights in the bytes of a safetensors file bitsandbytes wrote (each
/// weight `W` that has a `W.quant_state.bitsandbytes__nf4` entry), sorted; each can be
/// handed to [`load_nf4`]. FP4 weights are not listed. Errors: bytes that are not a
/// safetensors file (`InvalidInput`).
pub fn nf4_weight_names(bytes: &[u8]) -> Result<Vec<String>> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| st_err("safetensors file", e))?;
    let mut names: Vec<String> = st
        .names()
        .into_iter()
        .filter_map(|n| n.strip_suffix(".quant_state.bitsandbytes__nf4"))
        .map(str::to_owned)
        .collect();
    names.sort();
    Ok(names)
}

/// Writes NF4 tensors in bitsandbytes' layout (module docs), with `dtype` (`"bfloat16"`,
/// `"float16"` or `"float32"`) as the dtype bitsandbytes will dequantize to.
///
/// Only NF4 tensors can be written (`Unsupported` otherwise).
pub fn to_safetensors_bytes(tensors: &[(&str, &QuantizedTensor)], dtype: &str) -> Result<Vec<u8>> {
    let mut entries = Vec::new();
    for (name, t) in tensors {
        let QuantFormat::Nf4 { block_size, .. } = t.format() else {
            return Err(CoreError::unsupported("bitsandbytes export", t.format()));
        };
        let mut state = json!({
            "quant_type": "nf4",
            "blocksize": block_size,
            "dtype": dtype,
            "shape": t.shape(),
        });
        entries.push(Entry {
            name: (*name).to_owned(),
            dtype: Dtype::U8,
            shape: vec![t.data().len(), 1],
            bytes: t.data().to_vec(),
        });
        entries.push(Entry::f32(format!("{name}.quant_map"), &NF4_CODE));
        if let Some(n) = t.nested() {
            state["nested_blocksize"] = json!(n.block_size);
            state["nested_dtype"] = json!("float32");
            state["nested_offset"] = json!(n.offset);
            entries.push(Entry::u8(format!("{name}.absmax"), n.codes.clone()));
            entries.push(Entry::f32(format!("{name}.nested_absmax"), &n.scales));
            entries.push(Entry::f32(format!("{name}.nested_quant_map"), &n.code));
        } else {
            entries.push(Entry::f32(format!("{name}.absmax"), t.scales()));
        }
        entries.push(Entry::u8(
            format!("{name}.quant_state.bitsandbytes__nf4"),
            state.to_string().into_bytes(),
        ));
    }
    serialize(&entries, None::<HashMap<String, String>>)
}
