//! `GpuDispatchable` routes for the transformer glue and attention kernels.

use aihal_core::{CoreError, Device, GpuDispatchable, Result};
use aihal_kernels::cubecl::prelude::Runtime;
use aihal_kernels::{Context, DeviceBuffer};
use aihal_reference as reference;
use candle_core::Tensor;

use crate::dispatch::{cuda_device_context, gpu_present, wgpu_device_context};

/// Which row or elementwise op a [`GlueOp`] runs.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Glue {
    /// RMSNorm over the last dimension with a weight of that length.
    RmsNorm {
        /// One value per element of the last dimension.
        weight: Vec<f32>,
        /// Added to the mean square (finite, ≥ 0).
        eps: f32,
    },
    /// Softmax over the last dimension.
    Softmax,
    /// SiLU, elementwise.
    Silu,
    /// GELU (tanh approximation), elementwise.
    Gelu,
}

/// A glue op routed by device: CubeCL kernels on CUDA and Vulkan, `aihal_reference` on
/// the CPU. Input: a candle tensor (any float dtype, on the CPU); output: the same shape in
/// f32.
#[derive(Clone, Debug)]
pub struct GlueOp {
    glue: Glue,
    name: &'static str,
}

impl GlueOp {
    /// The op.
    pub fn new(glue: Glue) -> Self {
        let name = match glue {
            Glue::RmsNorm { .. } => "rms_norm",
            Glue::Softmax => "softmax",
            Glue::Silu => "silu",
            Glue::Gelu => "gelu",
        };
        Self { glue, name }
    }

    fn run<R: Runtime>(&self, ctx: &Context<R>, x: &Tensor) -> Result<Tensor> {
        let (values, dim) = host_values(x)?;
        let xd = ctx.upload(&values)?;
        let y: DeviceBuffer<R, f32> = ctx.alloc(values.len())?;
        match &self.glue {
            Glue::RmsNorm { weight, eps } => {
                aihal_kernels::rms_norm(ctx, &xd, dim, &ctx.upload(weight)?, *eps, &y)?;
            }
            Glue::Softmax => aihal_kernels::softmax(ctx, &xd, dim, &y)?,
            Glue::Silu => aihal_kernels::silu(ctx, &xd, &y)?,
            Glue::Gelu => aihal_kernels::gelu(ctx, &xd, &y)?,
        }
        Ok(Tensor::from_vec(
            ctx.download(&y)?,
            x.dims(),
            &candle_core::Device::Cpu,
        )?)
    }
}

/// The tensor's values in f32, row-major, and the length of its last dimension.
fn host_values(x: &Tensor) -> Result<(Vec<f32>, usize)> {
    let dim = x.dims().last().copied().unwrap_or(1);
    let values = x
        .to_device(&candle_core::Device::Cpu)?
        .to_dtype(candle_core::DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    Ok((values, dim))
}

impl GpuDispatchable for GlueOp {
    type Input = Tensor;
    type Output = Tensor;

    fn name(&self) -> &str {
        self.name
    }

    fn dispatch_gpu(&self, x: &Tensor, device: &Device) -> Result<Tensor> {
        match *device {
            Device::Cuda { ordinal } => self.run(&cuda_device_context(ordinal)?, x),
            Device::Wgpu { adapter } => self.run(&wgpu_device_context(adapter)?, x),
            other => Err(CoreError::device_mismatch("a GPU (cuda or wgpu)", other)),
        }
    }

    fn dispatch_cpu(&self, x: &Tensor) -> Result<Tensor> {
        let (values, dim) = host_values(x)?;
        let y = match &self.glue {
            Glue::RmsNorm { weight, eps } => reference::rms_norm(&values, dim, weight, *eps)?,
            Glue::Softmax => reference::softmax(&values, dim)?,
            Glue::Silu => reference::silu(&values),
            Glue::Gelu => reference::gelu(&values),
        };
        Ok(Tensor::from_vec(y, x.dims(), &candle_core::Device::Cpu)?)
    }

    fn gpu_available(&self) -> bool {
        gpu_present()
    }
}

/// The inputs of [`AttentionOp`]: `q` `[q_len, n_heads, head_dim]`, `k` and `v`
/// `[kv_len, n_kv_heads, head_dim]` (candle tensors, any float dtype, on the CPU).
#[derive(Clone, Debug)]
pub struct AttentionInput {
    /// The queries.
    pub q: Tensor,
    /// The key cache, including the queried tokens.
    pub k: Tensor,
    /// The value cache, including the queried tokens.
    pub v: Tensor,
}

/// Causal attention routed by device: the flash-style CubeCL kernel on CUDA and Vulkan,
/// `aihal_reference::attention` on the CPU. Output: `[q_len, n_heads, head_dim]` f32.
#[derive(Clone, Copy, Debug)]
pub struct AttentionOp {
    /// The head layout.
    pub dims: reference::AttentionShape,
    /// The score scale; `None` is `1 / sqrt(head_dim)`.
    pub scale: Option<f32>,
}

impl AttentionOp {
    fn kv_len(&self, k: &[f32]) -> Result<usize> {
        let row = self.dims.n_kv_heads * self.dims.head_dim;
        if row == 0 || !k.len().is_multiple_of(row) {
            return Err(CoreError::invalid_input(format!(
                "attention: k holds {} values, not a whole number of [n_kv_heads, head_dim] = {row} rows",
                k.len()
            )));
        }
        Ok(k.len() / row)
    }

    fn run<R: Runtime>(&self, ctx: &Context<R>, input: &AttentionInput) -> Result<Tensor> {
        let (q, _) = host_values(&input.q)?;
        let (k, _) = host_values(&input.k)?;
        let (v, _) = host_values(&input.v)?;
        let kv_len = self.kv_len(&k)?;
        let out = ctx.alloc::<f32>(q.len())?;
        aihal_kernels::attention(
            ctx,
            &ctx.upload(&q)?,
            &ctx.upload(&k)?,
            &ctx.upload(&v)?,
            kv_len,
            self.dims,
            self.scale,
            &out,
        )?;
        Ok(Tensor::from_vec(
            ctx.download(&out)?,
            input.q.dims(),
            &candle_core::Device::Cpu,
        )?)
    }
}

impl GpuDispatchable for AttentionOp {
    type Input = AttentionInput;
    type Output = Tensor;

    fn name(&self) -> &'static str {
        "attention"
    }

    fn dispatch_gpu(&self, input: &AttentionInput, device: &Device) -> Result<Tensor> {
        match *device {
            Device::Cuda { ordinal } => self.run(&cuda_device_context(ordinal)?, input),
            Device::Wgpu { adapter } => self.run(&wgpu_device_context(adapter)?, input),
            other => Err(CoreError::device_mismatch("a GPU (cuda or wgpu)", other)),
        }
    }

    fn dispatch_cpu(&self, input: &AttentionInput) -> Result<Tensor> {
        let (q, _) = host_values(&input.q)?;
        let (k, _) = host_values(&input.k)?;
        let (v, _) = host_values(&input.v)?;
        let kv_len = self.kv_len(&k)?;
        let y = reference::attention(&q, &k, &v, kv_len, self.dims, self.scale)?;
        Ok(Tensor::from_vec(y, input.q.dims(), &candle_core::Device::Cpu)?)
    }

    fn gpu_available(&self) -> bool {
        gpu_present()
    }
}
