//! The traits of configurations and quantization schemes. The dispatch trait,
//! `GpuDispatchable`, has its own module (`dispatch.rs`).

use candle_core::Tensor;

use crate::device::Device;
use crate::error::Result;

/// A configuration that can check itself before use.
///
/// `validate` rejects what would fail later (contradictions, out-of-range values) with an
/// `InvalidConfig` error saying what to change; constructors of aihal types call it so an
/// invalid configuration never reaches a kernel.
///
/// ```
/// use aihal_core::{CoreError, Result, ValidatableConfig};
///
/// struct BlockSize(usize);
/// impl ValidatableConfig for BlockSize {
///     fn validate(&self) -> Result<()> {
///         if self.0.is_power_of_two() && (32..=4096).contains(&self.0) {
///             Ok(())
///         } else {
///             Err(CoreError::invalid_config(format!("block size {} must be a power of two from 32 to 4096", self.0)))
///         }
///     }
/// }
/// assert!(BlockSize(64).validate().is_ok());
/// assert!(BlockSize(48).validate().is_err());
/// ```
pub trait ValidatableConfig: Send + Sync {
    /// `Ok(())` when the configuration can be used as it is.
    fn validate(&self) -> Result<()>;
}

/// A quantization scheme that turns a candle tensor into its quantized form `Q`.
///
/// `device` says where the work may run (the CPU scheme ignores it; a GPU scheme may
/// quantize there). Bad input (non-finite values, shapes that do not divide into blocks) is
/// an error, never silently wrong output.
///
/// Quantization and dequantization are separate traits because not every scheme can go
/// back, and some can only go back.
///
/// ```
/// use aihal_core::{Dequantize, Device, Quantize, Result};
/// use candle_core::Tensor;
///
/// /// Rounds to multiples of 0.5, stored as i32 halves.
/// struct Halves;
/// impl Quantize<Vec<i32>> for Halves {
///     fn quantize(&self, t: &Tensor, _: &Device) -> Result<Vec<i32>> {
///         Ok(t.flatten_all()?.to_vec1::<f32>()?.iter().map(|v| (v * 2.0).round() as i32).collect())
///     }
/// }
/// impl Dequantize<Vec<i32>> for Halves {
///     fn dequantize(&self, q: &Vec<i32>, _: &Device) -> Result<Tensor> {
///         let v: Vec<f32> = q.iter().map(|&h| h as f32 / 2.0).collect();
///         Ok(Tensor::from_vec(v, q.len(), &candle_core::Device::Cpu)?)
///     }
/// }
/// let t = Tensor::new(&[0.9f32, -1.2, 3.0], &candle_core::Device::Cpu)?;
/// let q = Halves.quantize(&t, &Device::Cpu)?;
/// assert_eq!(Halves.dequantize(&q, &Device::Cpu)?.to_vec1::<f32>()?, [1.0, -1.0, 3.0]);
/// # Ok::<(), aihal_core::CoreError>(())
/// ```
pub trait Quantize<Q>: Send + Sync {
    /// Quantizes `tensor`.
    fn quantize(&self, tensor: &Tensor, device: &Device) -> Result<Q>;
}

/// A quantization scheme that turns its quantized form `Q` back into a candle tensor (f32
/// unless the scheme documents otherwise). See [`Quantize`] for an example.
pub trait Dequantize<Q>: Send + Sync {
    /// Dequantizes `q`.
    fn dequantize(&self, q: &Q, device: &Device) -> Result<Tensor>;
}
