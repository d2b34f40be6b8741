//! The emulator's own model format and its execution.
//!
//! An emulator model is a tiny int8 network, enough to exercise the whole model path of a
//! real `.rknn` file (query, typed inputs, run, outputs, performance counters, zero copy):
//!
//! - input 0 `"input"`: int8 `[1, H, W, C]` NHWC, affine quantization (`in_scale`, `in_zp`);
//! - a per-pixel fully connected layer `C -> O` with int8 weights `[O, C]` (`w_scale`,
//!   symmetric), int32 bias (in units of `in_scale * w_scale`), then ReLU;
//! - output 0 `"features"`: int8 `[1, O, H, W]` NCHW, affine (`out_scale`, `out_zp`);
//! - output 1 `"pooled"`: f16 `[1, O]`, the mean over pixels of output 0 dequantized.
//!
//! File layout (little-endian): `b"AEMU"`, format version `1u32`, `H, W, C, O` as u32,
//! `in_scale f32, in_zp i32, w_scale f32, out_scale f32, out_zp i32`, `O * C` weight bytes,
//! `O` bias i32, then a UTF-8 custom string to the end of the file.

use half::f16;

/// The magic bytes that start an emulator model.
pub const MAGIC: &[u8; 4] = b"AEMU";

/// An emulator model.
#[derive(Clone, Debug, PartialEq)]
pub struct EmuModel {
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Input channels.
    pub c: usize,
    /// Output channels.
    pub o: usize,
    /// Input quantization scale.
    pub in_scale: f32,
    /// Input zero point.
    pub in_zp: i32,
    /// Weight scale.
    pub w_scale: f32,
    /// Output quantization scale.
    pub out_scale: f32,
    /// Output zero point.
    pub out_zp: i32,
    /// Weights `[O, C]`.
    pub weights: Vec<i8>,
    /// Bias `[O]`, in units of `in_scale * w_scale`.
    pub bias: Vec<i32>,
    /// The custom string (`RKNN_QUERY_CUSTOM_STRING`).
    pub custom: String,
}

/// The reserved prefix of the header: magic, version, four dims, five quantization fields.
const HEADER: usize = 4 + 4 + 16 + 20;

impl EmuModel {
    /// Serializes the model.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + self.weights.len() + 4 * self.bias.len() + self.custom.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&1u32.to_le_bytes());
        for d in [self.h, self.w, self.c, self.o] {
            out.extend_from_slice(&(d as u32).to_le_bytes());
        }
        out.extend_from_slice(&self.in_scale.to_le_bytes());
        out.extend_from_slice(&self.in_zp.to_le_bytes());
        out.extend_from_slice(&self.w_scale.to_le_bytes());
        out.extend_from_slice(&self.out_scale.to_le_bytes());
        out.extend_from_slice(&self.out_zp.to_le_bytes());
        out.extend(self.weights.iter().map(|&w| w as u8));
        for b in &self.bias {
            out.extend_from_slice(&b.to_le_bytes());
        }
        out.extend_from_slice(self.custom.as_bytes());
        out
    }

    /// Parses a model; `None` for anything malformed.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        let u32_at = |at: usize| -> Option<u32> { Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?)) };
        let f32_at = |at: usize| u32_at(at).map(f32::from_bits);
        if bytes.get(..4)? != MAGIC || u32_at(4)? != 1 {
            return None;
        }
        let dim = |at: usize| -> Option<usize> {
            let d = u32_at(at)? as usize;
            (1..=4096).contains(&d).then_some(d)
        };
        let (h, w, c, o) = (dim(8)?, dim(12)?, dim(16)?, dim(20)?);
        let model = |at| f32_at(at).filter(|s| s.is_finite() && *s > 0.0);
        let (in_scale, w_scale, out_scale) = (model(24)?, model(32)?, model(36)?);
        let (in_zp, out_zp) = (u32_at(28)? as i32, u32_at(40)? as i32);
        if !(-128..=127).contains(&in_zp) || !(-128..=127).contains(&out_zp) || h * w * c > 1 << 24 {
            return None;
        }
        let weights_end = HEADER + o * c;
        let weights = bytes.get(HEADER..weights_end)?.iter().map(|&b| b as i8).collect();
        let bias_end = weights_end + 4 * o;
        let bias = (0..o)
            .map(|i| u32_at(weights_end + 4 * i).map(|v| v as i32))
            .collect::<Option<_>>()?;
        let custom = std::str::from_utf8(bytes.get(bias_end..)?).ok()?.to_owned();
        Some(Self {
            h,
            w,
            c,
            o,
            in_scale,
            in_zp,
            w_scale,
            out_scale,
            out_zp,
            weights,
            bias,
            custom,
        })
    }

    /// Runs the network on a quantized NHWC input (`H * W * C` values): output 0 as int8
    /// NCHW and output 1 as f32 (the caller rounds it to f16 where needed).
    pub fn run(&self, input: &[i8]) -> (Vec<i8>, Vec<f32>) {
        let pixels = self.h * self.w;
        let mut features = vec![0i8; self.o * pixels];
        let mut pooled = vec![0f32; self.o];
        for p in 0..pixels {
            let x = &input[p * self.c..(p + 1) * self.c];
            for o in 0..self.o {
                let row = &self.weights[o * self.c..(o + 1) * self.c];
                let acc: i64 = i64::from(self.bias[o])
                    + x.iter()
                        .zip(row)
                        .map(|(&xv, &wv)| (i64::from(xv) - i64::from(self.in_zp)) * i64::from(wv))
                        .sum::<i64>();
                let real = (acc as f32 * self.in_scale * self.w_scale).max(0.0);
                let q = ((real / self.out_scale).round() as i64 + i64::from(self.out_zp)).clamp(-128, 127) as i8;
                features[o * pixels + p] = q;
            }
        }
        for (o, slot) in pooled.iter_mut().enumerate() {
            let sum: f32 = features[o * pixels..(o + 1) * pixels]
                .iter()
                .map(|&q| (i32::from(q) - self.out_zp) as f32 * self.out_scale)
                .sum();
            *slot = f16::from_f32(sum / pixels as f32).to_f32();
        }
        (features, pooled)
    }
}

/// The state of a model context.
pub struct ModelCtx {
    /// The version the context behaves as.
    pub version: crate::version::Version,
    /// The network.
    pub model: std::sync::Arc<EmuModel>,
    /// `rknn_init` flags.
    pub flags: u32,
    /// The core mask set.
    pub core_mask: u32,
    /// The quantized NHWC input set by `rknn_inputs_set`.
    pub input: Option<Vec<i8>>,
    /// Memory bound to the input by `rknn_set_io_mem`.
    pub in_mem: Option<usize>,
    /// Memory bound to the outputs by `rknn_set_io_mem`.
    pub out_mem: [Option<usize>; 2],
    /// The outputs of the last run.
    pub outputs: Option<(Vec<i8>, Vec<f32>)>,
    /// Buffers handed out by `rknn_outputs_get`.
    pub allocations: crate::state::OutputAllocations,
    /// Microseconds the last run took.
    pub perf_us: i64,
    /// The per-layer report returned by `RKNN_QUERY_PERF_DETAIL`.
    pub perf_detail: std::ffi::CString,
}

impl ModelCtx {
    /// A fresh context for `model`.
    pub fn new(version: crate::version::Version, model: std::sync::Arc<EmuModel>, flags: u32) -> Self {
        Self {
            version,
            model,
            flags,
            core_mask: 0,
            input: None,
            in_mem: None,
            out_mem: [None; 2],
            outputs: None,
            allocations: crate::state::OutputAllocations::default(),
            perf_us: 0,
            perf_detail: std::ffi::CString::default(),
        }
    }

    /// The input attribute (normal and native are the same: int8 NHWC).
    pub fn input_attr(&self) -> aihal_rknn_sys::rknn_tensor_attr {
        use aihal_rknn_sys as sys;
        let m = &self.model;
        let mut a = sys::rknn_tensor_attr::zeroed();
        sys::write_c_name(&mut a.name, "input");
        set_dims(&mut a, &[1, m.h, m.w, m.c]);
        a.size = a.n_elems;
        a.size_with_stride = a.size;
        a.w_stride = m.w as u32;
        a.fmt = sys::RKNN_TENSOR_NHWC;
        a.type_ = sys::RKNN_TENSOR_INT8;
        a.qnt_type = sys::RKNN_TENSOR_QNT_AFFINE_ASYMMETRIC;
        a.zp = m.in_zp;
        a.scale = m.in_scale;
        a
    }

    /// The attribute of output `index` (0 or 1; normal and native are the same).
    pub fn output_attr(&self, index: u32) -> Option<aihal_rknn_sys::rknn_tensor_attr> {
        use aihal_rknn_sys as sys;
        let m = &self.model;
        let mut a = sys::rknn_tensor_attr::zeroed();
        a.index = index;
        match index {
            0 => {
                sys::write_c_name(&mut a.name, "features");
                set_dims(&mut a, &[1, m.o, m.h, m.w]);
                a.size = a.n_elems;
                a.fmt = sys::RKNN_TENSOR_NCHW;
                a.type_ = sys::RKNN_TENSOR_INT8;
                a.qnt_type = sys::RKNN_TENSOR_QNT_AFFINE_ASYMMETRIC;
                a.zp = m.out_zp;
                a.scale = m.out_scale;
                a.w_stride = m.w as u32;
            }
            1 => {
                sys::write_c_name(&mut a.name, "pooled");
                set_dims(&mut a, &[1, m.o]);
                a.size = a.n_elems * 2;
                a.fmt = sys::RKNN_TENSOR_UNDEFINED;
                a.type_ = sys::RKNN_TENSOR_FLOAT16;
                a.qnt_type = sys::RKNN_TENSOR_QNT_NONE;
                a.scale = 1.0;
            }
            _ => return None,
        }
        a.size_with_stride = a.size;
        Some(a)
    }

    /// Output `index` of the last run as bytes: f32 when `want_float`, else its own type.
    pub fn output_bytes(&self, index: u32, want_float: bool) -> Option<Vec<u8>> {
        let (features, pooled) = self.outputs.as_ref()?;
        let m = &self.model;
        Some(match (index, want_float) {
            (0, false) => features.iter().map(|&q| q as u8).collect(),
            (0, true) => features
                .iter()
                .flat_map(|&q| ((i32::from(q) - m.out_zp) as f32 * m.out_scale).to_le_bytes())
                .collect(),
            (1, false) => pooled
                .iter()
                .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
                .collect(),
            (1, true) => pooled.iter().flat_map(|&v| v.to_le_bytes()).collect(),
            _ => return None,
        })
    }
}

fn set_dims(a: &mut aihal_rknn_sys::rknn_tensor_attr, dims: &[usize]) {
    a.n_dims = dims.len() as u32;
    for (d, &v) in a.dims.iter_mut().zip(dims) {
        *d = v as u32;
    }
    a.n_elems = dims.iter().product::<usize>() as u32;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> EmuModel {
        EmuModel {
            h: 2,
            w: 3,
            c: 4,
            o: 5,
            in_scale: 0.05,
            in_zp: -3,
            w_scale: 0.02,
            out_scale: 0.01,
            out_zp: -128,
            weights: (0..20).map(|i| (i * 13 % 255 - 127) as i8).collect(),
            bias: vec![10, -20, 30, -40, 50],
            custom: "emulated".into(),
        }
    }

    #[test]
    fn models_round_trip_and_malformed_ones_are_rejected() {
        let m = model();
        let bytes = m.to_bytes();
        assert_eq!(EmuModel::parse(&bytes), Some(m));
        assert_eq!(EmuModel::parse(&bytes[..40]), None);
        let mut bad = bytes.clone();
        bad[0] = b'X';
        assert_eq!(EmuModel::parse(&bad), None);
        let mut zero_dim = bytes;
        zero_dim[8..12].copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(EmuModel::parse(&zero_dim), None);
    }
}
