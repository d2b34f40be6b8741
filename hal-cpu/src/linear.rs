//! `QuantLinear`: a quantized drop-in for `candle_nn::Linear`.

use std::sync::OnceLock;

use aihal_core::{CoreError, Result};
use aihal_quantize::{QuantFormat, QuantizedTensor};
use candle_core::{DType, Tensor};

use crate::matmul::{ActivationPrecision, Activations, MatmulOptions};
use crate::packed::{matmul_packed, PackedWeights};

/// A linear layer `y = x · Wᵀ + b` over a quantized weight `[out_features, in_features]`, on
/// the CPU: this crate's own layer, for candle code that uses aihal-cpu alone. To place a
/// layer on whatever device a machine has, use the op set's `Linear` (the facade's
/// `aihal::Linear`), whose CPU provider holds one of these.
///
/// Implements [`candle_nn::Module`], so a candle model can swap its `Linear` layers for
/// quantized ones: the input is `[..., in_features]` in f32, f16 or bf16 on the CPU, the
/// output `[..., out_features]` in the input's dtype (accumulation is f32).
///
/// The weight is held as [`PackedWeights`]: on the default int8-activation path it is
/// repacked once, when the layer is built, for this CPU's kernels (about the cost of copying
/// the weight; no extra memory: the packed form replaces the original). On the f32 path
/// ([`with_activations`](Self::with_activations)`(F32)`; FP8 weights excepted, whose packed
/// kernels run f32 activations), or after [`with_packing`](Self::with_packing)`(false)`, the
/// original tensor is kept instead.
/// [`weight`](Self::weight) rebuilds the original tensor from the packed form the first
/// time it is called and keeps it (the weight's size again).
///
/// ```
/// use aihal_cpu::QuantLinear;
/// use aihal_quantize::QuantFormat;
/// use candle_core::{Device, Module, Tensor};
///
/// let w = Tensor::randn(0f32, 1.0, (64, 128), &Device::Cpu)?;
/// let layer = QuantLinear::from_tensor(&w, None, QuantFormat::Q8_0)?;
/// let x = Tensor::randn(0f32, 1.0, (2, 5, 128), &Device::Cpu)?;
/// let y = layer.forward(&x)?;
/// assert_eq!(y.dims(), &[2, 5, 64]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct QuantLinear {
    weight: PackedWeights,
    /// The original tensor rebuilt from a packed weight, on the first call to `weight()`.
    original: OnceLock<QuantizedTensor>,
    bias: Option<Vec<f32>>,
    activations: ActivationPrecision,
    packing: bool,
}

impl QuantLinear {
    /// A layer over `weight` (`[out_features, in_features]`, any format) and an optional f32
    /// bias of `out_features` values. The weight is packed here, once, where this CPU has a
    /// packed layout for its format (see the type's docs).
    pub fn new(weight: QuantizedTensor, bias: Option<Vec<f32>>) -> Result<Self> {
        let (n, _) = crate::matmul::check_weight(0, 0, &weight)?;
        if let Some(b) = &bias {
            if b.len() != n {
                return Err(CoreError::shape_mismatch(
                    "QuantLinear bias [out_features]",
                    [n],
                    [b.len()],
                ));
            }
        }
        Ok(Self {
            weight: PackedWeights::from_tensor(weight)?,
            original: OnceLock::new(),
            bias,
            activations: ActivationPrecision::default(),
            packing: true,
        })
    }

    /// Quantizes a candle weight `[out_features, in_features]` (and takes an optional bias
    /// `[out_features]`), as `candle_nn::Linear::new(weight, bias)` would hold them.
    pub fn from_tensor(weight: &Tensor, bias: Option<&Tensor>, format: QuantFormat) -> Result<Self> {
        let dims = weight.dims().to_vec();
        let w = weight.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let q = aihal_quantize::quantize(format, &w, &dims)?;
        let b = bias
            .map(|b| b.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>())
            .transpose()?;
        Self::new(q, b)
    }

    /// Chooses how activations meet the weights (int8 per block of 32 by default). The f32
    /// path keeps the weight unpacked (converted back once if it was packed), but for FP8.
    #[must_use]
    pub fn with_activations(mut self, activations: ActivationPrecision) -> Self {
        self.activations = activations;
        self.relayout()
    }

    /// Turns the one-time packing of the weight on (the default) or off. Off, the layer keeps
    /// the original tensor and each call runs the kernels of
    /// [`matmul_with`](crate::matmul_with) on it.
    #[must_use]
    pub fn with_packing(mut self, packing: bool) -> Self {
        self.packing = packing;
        self.relayout()
    }

    /// Packs or unpacks the weight for the current options.
    fn relayout(mut self) -> Self {
        // FP8's packed kernels run f32 activations: packed on either path.
        let fp8 = matches!(
            self.weight.format(),
            QuantFormat::Fp8E4M3 { .. } | QuantFormat::Fp8E5M2 { .. }
        );
        let want_packed = self.packing && (self.activations == ActivationPrecision::Int8 || fp8);
        if want_packed == self.weight.is_packed() {
            return self;
        }
        let original = match (self.original.take(), self.weight.as_quantized()) {
            (Some(w), _) => w,
            (None, Some(w)) => w.clone(),
            (None, None) => self.weight.to_quantized(),
        };
        self.weight = if want_packed {
            // Packing a tensor that passed `new` cannot fail; keep it unpacked if it did.
            PackedWeights::new(&original)
                .or_else(|_| PackedWeights::unpacked(original))
                .expect("the weight passed QuantLinear::new")
        } else {
            PackedWeights::unpacked(original).expect("the weight passed QuantLinear::new")
        };
        self
    }

    /// The quantized weight in its original format (rebuilt from the packed form on the first
    /// call when the weight is packed, then kept).
    pub fn weight(&self) -> &QuantizedTensor {
        match self.weight.as_quantized() {
            Some(w) => w,
            None => self.original.get_or_init(|| self.weight.to_quantized()),
        }
    }

    /// The weight as the layer runs it (its [`PackedWeights::layout_name`] tells the layout).
    pub fn packed_weight(&self) -> &PackedWeights {
        &self.weight
    }

    /// The bias, if any.
    pub fn bias(&self) -> Option<&[f32]> {
        self.bias.as_deref()
    }

    /// `in_features` (K).
    pub fn in_features(&self) -> usize {
        self.weight.shape()[1]
    }

    /// `out_features` (N).
    pub fn out_features(&self) -> usize {
        self.weight.shape()[0]
    }

    /// `y = x · Wᵀ + b` for `m` rows of f32, f16 or bf16 activations; `[m, out_features]` f32.
    pub fn forward_slice(&self, x: Activations<'_>, m: usize) -> Result<Vec<f32>> {
        let options = MatmulOptions {
            activations: self.activations,
            output: None,
        };
        let mut y = matmul_packed(x, m, &self.weight, options)?;
        if let Some(b) = &self.bias {
            for row in y.chunks_exact_mut(b.len()) {
                for (v, &bv) in row.iter_mut().zip(b) {
                    *v += bv;
                }
            }
        }
        Ok(y)
    }

    /// The [`candle_nn::Module`] forward pass with an aihal error.
    pub fn forward_tensor(&self, x: &Tensor) -> Result<Tensor> {
        if !x.device().is_cpu() {
            return Err(CoreError::device_mismatch(
                "cpu",
                format!("{:?}", x.device().location()),
            ));
        }
        let dims = x.dims();
        let Some((&k, lead)) = dims.split_last() else {
            return Err(CoreError::invalid_input(
                "QuantLinear: input must be [..., in_features]",
            ));
        };
        if k != self.in_features() {
            return Err(CoreError::dimension_mismatch(
                "QuantLinear input features (last dimension)",
                self.in_features(),
                k,
            ));
        }
        let m: usize = lead.iter().product();
        let flat = x.flatten_all()?;
        let y = match x.dtype() {
            DType::F32 => self.forward_slice(Activations::F32(&flat.to_vec1::<f32>()?), m)?,
            DType::F16 => self.forward_slice(Activations::F16(&flat.to_vec1::<half::f16>()?), m)?,
            DType::BF16 => self.forward_slice(Activations::Bf16(&flat.to_vec1::<half::bf16>()?), m)?,
            other => return Err(CoreError::unsupported("QuantLinear input", format!("{other:?}"))),
        };
        let mut shape = lead.to_vec();
        shape.push(self.out_features());
        Ok(Tensor::from_vec(y, shape, &candle_core::Device::Cpu)?.to_dtype(x.dtype())?)
    }
}

impl candle_nn::Module for QuantLinear {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        self.forward_tensor(xs).map_err(candle_core::Error::wrap)
    }
}
