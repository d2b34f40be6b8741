//! [`RknnLinear`]: a quantized linear layer `y = x · Wᵀ` with an NPU route.

use std::sync::{Mutex, PoisonError};

use aihal_core::candle_core::{DType, Tensor};
use aihal_core::{CoreError, Device, GpuDispatchable, NpuCoreMask};
use aihal_quantize::{QuantFormat, QuantizedTensor};
use half::f16;

use crate::library::RknnLibrary;
use crate::matmul::{BOrder, MatMulType, RknnMatMul};

/// Matmul contexts kept per distinct row count M (each holds a copy of W on the NPU).
const CACHED_SHAPES: usize = 8;

enum Weight {
    /// Any aihal-quantize tensor; `int8` is `Some((values, per-row scales))` when the format
    /// is int8 with one scale per row, the form the NPU runs.
    Quantized {
        tensor: Box<QuantizedTensor>,
        int8: Option<(Vec<i8>, Vec<f32>)>,
    },
    /// f16 weights `[N, K]`.
    F16 { values: Vec<f16> },
}

struct Npu {
    /// `(M, one matmul per K chunk, core mask last set)`, most recent last.
    cache: Vec<(usize, Vec<RknnMatMul>, NpuCoreMask)>,
}

/// A linear layer `y = x · Wᵀ` (`W` is `[N, K]`) that runs on the NPU, on the CPU, or on the
/// CPU after a logged fallback, through [`GpuDispatchable`].
///
/// NPU routes:
/// - **int8 weights with one scale per row** (aihal-quantize `Int8PerChannel`, or
///   `Int8PerBlock` whose block covers the row): each row of `x` is quantized to int8
///   symmetrically (`scale = max|x| / 127`), the NPU computes the exact int32 products, and
///   the host applies `scale_x[m] * scale_w[n]`. The only error against the f32 CPU result is
///   the activation rounding: at most `scale_x[m] / 2 * sum_k |w[n][k]|` per output.
/// - **f16 weights** ([`RknnLinear::from_f16`]): `x` is rounded to f16 and the NPU
///   accumulates exact f16 products in f32.
///
/// K longer than the runtime's limit ([`MatMulType::max_k`]) is split into chunks whose
/// partial products are summed on the host (exactly for int8; in f32 for f16).
///
/// Other formats have no NPU route: dispatch to the NPU falls back to the CPU with a warning
/// printed once. The CPU route is the scalar reference (`aihal_reference::matmul`): this
/// standalone layer does not depend on another backend. In the op set, `RknnProvider` runs
/// the NPU product only and the executor places anything else on the fast CPU provider.
///
/// `Send + Sync`: NPU calls are serialised by an internal mutex; one matmul context per
/// distinct M (up to 8) is kept so repeated shapes reuse the weights already on the NPU.
pub struct RknnLinear {
    weight: Weight,
    n: usize,
    k: usize,
    lib: Option<RknnLibrary>,
    npu: Mutex<Npu>,
}

impl std::fmt::Debug for RknnLinear {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RknnLinear")
            .field("n", &self.n)
            .field("k", &self.k)
            .field("npu_route", &self.npu_type())
            .field("library", &self.lib)
            .finish_non_exhaustive()
    }
}

impl RknnLinear {
    /// A layer over an aihal-quantize weight `[N, K]`, using the process-wide runtime
    /// ([`RknnLibrary::global`]); without one, NPU dispatch falls back to the CPU.
    pub fn new(weight: QuantizedTensor) -> aihal_core::Result<Self> {
        Self::with_library(weight, RknnLibrary::global().ok())
    }

    /// A layer over an aihal-quantize weight `[N, K]` with an explicit runtime (`None`: CPU
    /// only).
    pub fn with_library(weight: QuantizedTensor, lib: Option<RknnLibrary>) -> aihal_core::Result<Self> {
        let &[n, k] = weight.shape() else {
            return Err(CoreError::invalid_input(format!(
                "a linear layer's weight must be [N, K], got shape {:?}",
                weight.shape()
            )));
        };
        let int8 = match weight.format() {
            QuantFormat::Int8PerChannel => true,
            QuantFormat::Int8PerBlock { block_size } => block_size >= k,
            _ => false,
        }
        .then(|| {
            let values = weight.data().iter().map(|&b| b as i8).collect();
            (values, weight.scales().to_vec())
        });
        Ok(Self::build(
            Weight::Quantized {
                tensor: Box::new(weight),
                int8,
            },
            n,
            k,
            lib,
        ))
    }

    /// A layer over f16 weights `[N, K]` row-major.
    pub fn from_f16(values: Vec<f16>, n: usize, k: usize, lib: Option<RknnLibrary>) -> aihal_core::Result<Self> {
        if values.len() != n * k || n == 0 || k == 0 {
            return Err(CoreError::shape_mismatch(
                "f16 linear weight [N, K]",
                [n, k],
                [values.len()],
            ));
        }
        Ok(Self::build(Weight::F16 { values }, n, k, lib))
    }

    fn build(weight: Weight, n: usize, k: usize, lib: Option<RknnLibrary>) -> Self {
        Self {
            weight,
            n,
            k,
            lib,
            npu: Mutex::new(Npu { cache: Vec::new() }),
        }
    }

    /// `(N, K)`.
    pub fn shape(&self) -> (usize, usize) {
        (self.n, self.k)
    }

    /// The NPU product this layer runs, `None` when its format has no NPU route.
    pub fn npu_type(&self) -> Option<MatMulType> {
        match &self.weight {
            Weight::Quantized { int8: Some(_), .. } => Some(MatMulType::Int8ToInt32),
            Weight::Quantized { int8: None, .. } => None,
            Weight::F16 { .. } => Some(MatMulType::Float16ToFloat32),
        }
    }

    /// `x` as `[M, K]` f32 rows, and the leading dims of the output.
    fn rows(&self, x: &Tensor) -> aihal_core::Result<(Vec<f32>, usize, Vec<usize>)> {
        let dims = x.dims();
        match dims.split_last() {
            Some((&k, lead)) if k == self.k => {
                let m: usize = lead.iter().product();
                let flat = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
                Ok((flat, m, lead.to_vec()))
            }
            _ => Err(CoreError::shape_mismatch(
                "linear input [..., K]",
                [self.k],
                dims.to_vec(),
            )),
        }
    }

    /// `y = x · Wᵀ` for `m` rows of `x` (`[M, K]` f32) on the NPU with the core `mask`:
    /// `[M, N]` f32. No CPU route: a layer whose format has no NPU product answers
    /// `NotImplemented`, as does a layer without a runtime.
    ///
    /// Errors: `ShapeMismatch` when `x` is not `m` rows of K; `InvalidInput` for a non-finite
    /// input (or one outside f16's range on the f16 route); the runtime's errors.
    pub fn forward_rows(&self, x: &[f32], m: usize, mask: NpuCoreMask) -> aihal_core::Result<Vec<f32>> {
        if m.checked_mul(self.k) != Some(x.len()) {
            return Err(CoreError::shape_mismatch(
                "NPU linear input [M, K]",
                [m, self.k],
                [x.len()],
            ));
        }
        self.forward_npu(x, m, mask)
    }

    /// Runs the NPU product for `[M, K]` rows `x`.
    fn forward_npu(&self, x: &[f32], m: usize, mask: NpuCoreMask) -> aihal_core::Result<Vec<f32>> {
        let Some(lib) = &self.lib else {
            return Err(CoreError::not_implemented("linear on the NPU without an RKNN runtime"));
        };
        let Some(ty) = self.npu_type() else {
            return Err(CoreError::not_implemented(format!(
                "linear with {} weights on the NPU (it runs int8 with one scale per row, or f16)",
                self.format_name()
            )));
        };
        if let Some(i) = x.iter().position(|v| !v.is_finite()) {
            return Err(CoreError::invalid_input(format!(
                "NPU linear input has a non-finite value at index {i}"
            )));
        }
        let f16_overflow = x.iter().position(|v| v.abs() > f32::from(f16::MAX));
        if let (MatMulType::Float16ToFloat32, Some(i)) = (ty, f16_overflow) {
            return Err(CoreError::invalid_input(format!(
                "NPU f16 linear input {} at index {i} is outside the f16 range",
                x[i]
            )));
        }
        let (n, k) = (self.n, self.k);
        let chunks = k_chunks(k, ty.max_k(lib.version()?));
        let mut npu = self.npu.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = if let Some(i) = npu.cache.iter().position(|(cm, ..)| *cm == m) {
            i
        } else {
            let mut parts = Vec::with_capacity(chunks.len());
            for &(k0, k1) in &chunks {
                let mut mm = RknnMatMul::new(lib, m, k1 - k0, n, ty)?;
                match &self.weight {
                    Weight::Quantized { int8: Some((w, _)), .. } => mm.set_b_i8(&columns(w, k, k0, k1), BOrder::NxK)?,
                    Weight::F16 { values } => mm.set_b_f16(&columns(values, k, k0, k1), BOrder::NxK)?,
                    Weight::Quantized { int8: None, .. } => {
                        return Err(CoreError::not_implemented("this weight format on the NPU"));
                    }
                }
                parts.push(mm);
            }
            if npu.cache.len() == CACHED_SHAPES {
                npu.cache.remove(0);
            }
            npu.cache.push((m, parts, NpuCoreMask::AUTO));
            npu.cache.len() - 1
        };
        let (_, parts, current) = &mut npu.cache[slot];
        if *current != mask {
            for mm in parts.iter_mut() {
                mm.set_core_mask(mask)?;
            }
            *current = mask;
        }
        if let Weight::Quantized {
            int8: Some((_, w_scales)),
            ..
        } = &self.weight
        {
            let (q, x_scales) = quantize_rows(x, m, k);
            let mut acc = vec![0i32; m * n];
            for (mm, &(k0, k1)) in parts.iter_mut().zip(&chunks) {
                // Exact: each part is an int32 dot product of a slice of K.
                let part = mm.run_i8(&columns(&q, k, k0, k1))?;
                acc.iter_mut().zip(part).for_each(|(a, p)| *a += p);
            }
            let mut y = Vec::with_capacity(m * n);
            for i in 0..m {
                y.extend((0..n).map(|j| acc[i * n + j] as f32 * x_scales[i] * w_scales[j]));
            }
            return Ok(y);
        }
        let xh: Vec<f16> = x.iter().map(|&v| f16::from_f32(v)).collect();
        let mut y = vec![0f32; m * n];
        for (mm, &(k0, k1)) in parts.iter_mut().zip(&chunks) {
            let part = mm.run_f16(&columns(&xh, k, k0, k1))?;
            y.iter_mut().zip(part).for_each(|(a, p)| *a += p);
        }
        Ok(y)
    }

    fn format_name(&self) -> String {
        match &self.weight {
            Weight::Quantized { tensor, .. } => tensor.format().to_string(),
            Weight::F16 { .. } => "f16".into(),
        }
    }

    /// `y = x · Wᵀ` on the CPU for `[M, K]` rows.
    fn forward_cpu(&self, x: &[f32], m: usize) -> aihal_core::Result<Vec<f32>> {
        match &self.weight {
            Weight::Quantized { tensor, .. } => aihal_reference::matmul(x, m, tensor),
            Weight::F16 { values } => {
                let (n, k) = (self.n, self.k);
                let mut y = vec![0f32; m * n];
                for i in 0..m {
                    for j in 0..n {
                        y[i * n + j] = (0..k).map(|kk| x[i * k + kk] * values[j * k + kk].to_f32()).sum();
                    }
                }
                Ok(y)
            }
        }
    }

    fn to_tensor(&self, y: Vec<f32>, mut lead: Vec<usize>) -> aihal_core::Result<Tensor> {
        lead.push(self.n);
        Ok(Tensor::from_vec(y, lead, &aihal_core::candle_core::Device::Cpu)?)
    }
}

/// Splits `0..k` into chunks the NPU accepts: at most `max_k` long, multiples of 32 except
/// the last.
fn k_chunks(k: usize, max_k: usize) -> Vec<(usize, usize)> {
    let step = (max_k / 32 * 32).max(32);
    (0..k).step_by(step).map(|k0| (k0, (k0 + step).min(k))).collect()
}

/// Columns `k0..k1` of a row-major matrix with rows of `k`.
fn columns<T: Copy>(x: &[T], k: usize, k0: usize, k1: usize) -> Vec<T> {
    x.chunks_exact(k).flat_map(|row| row[k0..k1].iter().copied()).collect()
}

/// Symmetric per-row int8 quantization: `q = round(x / s)`, `s = max|x| / 127` (1 for an
/// all-zero row).
pub(crate) fn quantize_rows(x: &[f32], m: usize, k: usize) -> (Vec<i8>, Vec<f32>) {
    let mut q = Vec::with_capacity(m * k);
    let mut scales = Vec::with_capacity(m);
    for row in x.chunks_exact(k).take(m) {
        let amax = row.iter().fold(0f32, |a, v| a.max(v.abs()));
        let s = if amax > 0.0 { amax / 127.0 } else { 1.0 };
        q.extend(row.iter().map(|v| (v / s).round().clamp(-127.0, 127.0) as i8));
        scales.push(s);
    }
    (q, scales)
}

impl GpuDispatchable for RknnLinear {
    type Input = Tensor;
    type Output = Tensor;

    fn name(&self) -> &'static str {
        "rknn linear"
    }

    fn dispatch_gpu(&self, _: &Tensor, device: &Device) -> aihal_core::Result<Tensor> {
        Err(CoreError::not_implemented(format!(
            "RknnLinear on {device} (use the aihal-kernels layers)"
        )))
    }

    fn dispatch_cpu(&self, x: &Tensor) -> aihal_core::Result<Tensor> {
        let (rows, m, lead) = self.rows(x)?;
        let y = self.forward_cpu(&rows, m)?;
        self.to_tensor(y, lead)
    }

    fn dispatch_npu(&self, x: &Tensor, device: &Device) -> aihal_core::Result<Tensor> {
        let Device::Rknn { core_mask } = device else {
            return Err(CoreError::device_mismatch("rknn", device));
        };
        let (rows, m, lead) = self.rows(x)?;
        let y = self.forward_npu(&rows, m, *core_mask)?;
        self.to_tensor(y, lead)
    }

    fn gpu_available(&self) -> bool {
        false
    }

    fn npu_available(&self) -> bool {
        self.lib.as_ref().is_some_and(|l| l.runtime_info().is_ok())
    }
}
