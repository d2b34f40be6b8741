//! [`RknnProvider`]: the RK3588 NPU as an execution provider of the op set (`aihal-ops`).

use aihal_core::{CoreError, Device, NpuCoreMask, Result};
use aihal_ops::{Call, KvLayout, KvStore, LinearPrecision, OpSpec, Prepared, Provider, Shape, Support, Tensor};
use aihal_quantize::{QuantFormat, QuantizedTensor};

use crate::library::RknnLibrary;
use crate::linear::RknnLinear;

/// The NPU as an execution provider: it runs linear layers (the matmuls that dominate a
/// model), on the NPU's int8 product with one scale per weight row.
///
/// A weight in another format is converted once, when the layer is prepared, to int8 with one
/// scale per row (decoded to f32 as the layout contract defines it, then quantized as
/// `aihal-quantize` quantizes `Int8PerChannel`); the conversion's error adds to the format's
/// own and is measured per format in this crate's tests (`tests/provider.rs`) and stated in
/// the README. Activations are quantized per row to int8 on the host and the int32 products
/// are exact: the result meets `LinearPrecision::Int8Activations`' bound. Layers held to f32
/// rounding (`LinearPrecision::F32`, dense f32 layers) answer `Support::No`. The bias is added
/// on the host.
///
/// The NPU reads host memory, so host tensors go to it without a move and its outputs are
/// host tensors. Other ops answer `Support::No`: the executor places them on the next
/// provider, which says so once.
#[derive(Clone, Debug)]
pub struct RknnProvider {
    lib: RknnLibrary,
    core_mask: NpuCoreMask,
}

impl RknnProvider {
    /// A provider over `lib` running on the cores `core_mask`.
    pub fn new(lib: RknnLibrary, core_mask: NpuCoreMask) -> Self {
        Self { lib, core_mask }
    }

    /// The provider over the process's runtime ([`RknnLibrary::global`]) with the runtime's
    /// automatic core choice.
    ///
    /// Errors: the loader's (no `librknnrt.so`, a runtime older than 1.5.0).
    pub fn global() -> Result<Self> {
        Ok(Self::new(RknnLibrary::global()?, NpuCoreMask::AUTO))
    }
}

/// The weight as int8 with one scale per row: as it is when it already is, else converted.
fn int8_per_row(w: &QuantizedTensor) -> Result<QuantizedTensor> {
    let &[n, k] = w.shape() else {
        return Err(CoreError::invalid_input(format!(
            "a linear layer's weight must be [N, K], got shape {:?}",
            w.shape()
        )));
    };
    match w.format() {
        QuantFormat::Int8PerChannel => return Ok(w.clone()),
        QuantFormat::Int8PerBlock { block_size } if block_size >= k => return Ok(w.clone()),
        _ => {}
    }
    let mut dense = vec![0.0f32; n * k];
    for (j, row) in dense.chunks_exact_mut(k).enumerate() {
        aihal_quantize::decode::decode_row_into(w, j, 0, row)?;
    }
    aihal_quantize::quantize(QuantFormat::Int8PerChannel, &dense, &[n, k])
}

struct NpuLinear {
    layer: RknnLinear,
    bias: Option<Vec<f32>>,
    mask: NpuCoreMask,
    in_features: usize,
    out_features: usize,
}

impl Prepared for NpuLinear {
    fn run(&self, call: Call<'_>) -> Result<Tensor> {
        let Call::Unary(x) = call else {
            return Err(CoreError::invalid_input(format!(
                "NPU linear: unexpected call {call:?}"
            )));
        };
        let xs = match x.host_slice() {
            Some(v) => std::borrow::Cow::Borrowed(v),
            None => std::borrow::Cow::Owned(x.to_vec()?),
        };
        let m = xs.len() / self.in_features;
        let mut y = self.layer.forward_rows(&xs, m, self.mask)?;
        if let Some(b) = &self.bias {
            for row in y.chunks_exact_mut(self.out_features) {
                row.iter_mut().zip(b).for_each(|(v, &bv)| *v += bv);
            }
        }
        Tensor::with_shape(y, x.shape().with_last(self.out_features))
    }
}

impl Provider for RknnProvider {
    fn device(&self) -> Device {
        Device::Rknn {
            core_mask: self.core_mask,
        }
    }

    fn name(&self) -> String {
        match self.lib.version() {
            Ok(v) => format!("rknn runtime {v} ({})", self.lib.path().display()),
            Err(_) => format!("rknn runtime of unknown version ({})", self.lib.path().display()),
        }
    }

    fn reads_host_memory(&self) -> bool {
        true
    }

    fn supports(&self, spec: &OpSpec<'_>) -> Support {
        match spec {
            OpSpec::Linear {
                weight,
                precision: LinearPrecision::Int8Activations,
                ..
            } if weight.shape().len() == 2 => Support::Yes,
            OpSpec::Linear { .. } | OpSpec::DenseLinear { .. } => Support::No(
                "the NPU multiplies int8: a layer held to f32 rounding (LinearPrecision::F32, dense layers) runs elsewhere"
                    .into(),
            ),
            other => Support::No(format!(
                "the NPU provider runs linear layers only, not {}",
                other.kind()
            )),
        }
    }

    fn prepare(&self, spec: &OpSpec<'_>) -> Result<Box<dyn Prepared>> {
        let (weight, bias) = match *spec {
            OpSpec::Linear { weight, bias, .. } => (int8_per_row(weight)?, bias),
            OpSpec::DenseLinear {
                weight,
                out_features,
                in_features,
                bias,
            } => (
                aihal_quantize::quantize(QuantFormat::Int8PerChannel, weight, &[out_features, in_features])?,
                bias,
            ),
            _ => {
                return Err(CoreError::not_implemented(format!(
                    "{} on the NPU provider",
                    spec.kind()
                )))
            }
        };
        let (out_features, in_features) = (weight.shape()[0], weight.shape()[1]);
        Ok(Box::new(NpuLinear {
            layer: RknnLinear::with_library(weight, Some(self.lib.clone()))?,
            bias: bias.map(<[f32]>::to_vec),
            mask: self.core_mask,
            in_features,
            out_features,
        }))
    }

    fn upload(&self, data: &[f32], shape: Shape) -> Result<Tensor> {
        Tensor::with_shape(data.to_vec(), shape)
    }

    fn new_kv_store(&self, _layout: KvLayout) -> Result<Box<dyn KvStore>> {
        Err(CoreError::not_implemented(
            "a KV cache on the NPU provider (it runs linear layers only)",
        ))
    }
}
