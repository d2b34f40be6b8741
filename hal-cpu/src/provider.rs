//! [`CpuProvider`]: this crate as an aihal execution provider.

use std::any::Any;
use std::sync::Arc;

use aihal_core::{CoreError, Device, Result};
use aihal_ops::{
    Activation, AttentionKind, Call, KvLayout, KvStore, LinearPrecision, OpSpec, Prepared, Provider, Shape, Support,
    Tensor,
};
use aihal_quantize::{QuantFormat, QuantizedTensor};
use aihal_reference::{AttentionMask, AttentionShape, GateActivation};

use crate::matmul::{ActivationPrecision, Activations, MatmulOptions};
use crate::{kernel_set_name, matmul_packed, ops, PackedWeights};

/// The CPU as an execution provider: every op of `aihal-ops`, with this crate's fast kernels
/// (packed weights and int8 activations for [`Linear`](aihal_ops::Linear), the SIMD norms,
/// softmax, activations and attention). Its tensors are host tensors, so nothing moves
/// between its ops.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuProvider;

fn host<'t>(t: &'t Tensor, op: &str) -> Result<&'t [f32]> {
    t.host_slice()
        .ok_or_else(|| CoreError::invalid_input(format!("{op}: the CPU provider was given a tensor on {}", t.device())))
}

fn out(data: Vec<f32>, shape: Shape) -> Result<Tensor> {
    Tensor::with_shape(data, shape)
}

fn wrong_call(op: &str, call: &Call<'_>) -> CoreError {
    CoreError::invalid_input(format!("{op}: unexpected call {call:?}"))
}

/// A quantized layer: what [`QuantLinear`](crate::QuantLinear) holds for the same options,
/// built from the borrowed weight without an intermediate copy (packing reads the caller's
/// tensor; only the f32 path, which keeps the original layout, copies it).
struct Linear {
    weight: PackedWeights,
    bias: Option<Vec<f32>>,
    activations: ActivationPrecision,
}

impl Linear {
    /// Packed for the int8-activation kernels (and FP8 on either path, whose packed kernels
    /// run f32 activations), else kept as stored: `QuantLinear::with_activations`'s rule.
    fn new(weight: &QuantizedTensor, bias: Option<&[f32]>, activations: ActivationPrecision) -> Result<Self> {
        let (n, _) = crate::matmul::check_weight(0, 0, weight)?;
        if let Some(b) = bias {
            if b.len() != n {
                return Err(CoreError::shape_mismatch("linear bias [out_features]", [n], [b.len()]));
            }
        }
        let fp8 = matches!(
            weight.format(),
            QuantFormat::Fp8E4M3 { .. } | QuantFormat::Fp8E5M2 { .. }
        );
        let weight = if activations == ActivationPrecision::Int8 || fp8 {
            PackedWeights::new(weight)?
        } else {
            PackedWeights::unpacked(weight.clone())?
        };
        Ok(Self {
            weight,
            bias: bias.map(<[f32]>::to_vec),
            activations,
        })
    }
}

/// A dense f32 layer: candle's f32 matmul (its gemm kernels), the weight kept transposed
/// once, `[in, out]`, so each call is one `x · Wᵀ`.
struct DenseLinear {
    weight_t: candle_core::Tensor,
    bias: Option<Vec<f32>>,
    in_features: usize,
    out_features: usize,
}

impl Prepared for DenseLinear {
    fn run(&self, call: Call<'_>) -> Result<Tensor> {
        let Call::Unary(x) = call else {
            return Err(wrong_call("linear", &call));
        };
        let xs = host(x, "linear")?;
        let m = xs.len() / self.in_features;
        let xt = candle_core::Tensor::from_slice(xs, (m, self.in_features), &candle_core::Device::Cpu)?;
        let mut y = xt.matmul(&self.weight_t)?.flatten_all()?.to_vec1::<f32>()?;
        if let Some(b) = &self.bias {
            for row in y.chunks_exact_mut(self.out_features) {
                row.iter_mut().zip(b).for_each(|(v, &bv)| *v += bv);
            }
        }
        out(y, x.shape().with_last(self.out_features))
    }
}

impl Prepared for Linear {
    fn run(&self, call: Call<'_>) -> Result<Tensor> {
        let Call::Unary(x) = call else {
            return Err(wrong_call("linear", &call));
        };
        let [n, k] = self.weight.shape();
        let m = x.numel() / k.max(1);
        let options = MatmulOptions {
            activations: self.activations,
            output: None,
        };
        let mut y = matmul_packed(Activations::F32(host(x, "linear")?), m, &self.weight, options)?;
        if let Some(b) = &self.bias {
            for row in y.chunks_exact_mut(n) {
                row.iter_mut().zip(b).for_each(|(v, &bv)| *v += bv);
            }
        }
        out(y, x.shape().with_last(n))
    }

    /// Rows of the weight, the table's rows as the embedding op gives them, bit for bit:
    /// from the weight as stored (the f32 path) or read back from its packed panels
    /// ([`PackedWeights::rows`]).
    fn weight_rows(&self, ids: &[u32], lead: Shape) -> Result<Tensor> {
        let [n, k] = self.weight.shape();
        aihal_ops::check_token_ids(ids, lead, n)?;
        let mut dims = lead.dims().to_vec();
        dims.push(k);
        out(self.weight.rows(ids)?, Shape::new(&dims)?)
    }
}

enum Rowwise {
    RmsNorm {
        weight: Vec<f32>,
        eps: f32,
    },
    LayerNorm {
        weight: Vec<f32>,
        bias: Option<Vec<f32>>,
        eps: f32,
    },
    Softmax,
    Activation(Activation),
}

impl Prepared for Rowwise {
    fn run(&self, call: Call<'_>) -> Result<Tensor> {
        let Call::Unary(x) = call else {
            return Err(wrong_call("row-wise op", &call));
        };
        let xs = host(x, "row-wise op")?;
        let y = match self {
            Self::RmsNorm { weight, eps } => ops::rms_norm(xs, weight.len(), weight, *eps)?,
            Self::LayerNorm { weight, bias, eps } => ops::layer_norm(xs, weight.len(), weight, bias.as_deref(), *eps)?,
            Self::Softmax => ops::softmax(xs, x.shape().last())?,
            Self::Activation(Activation::Silu) => ops::silu(xs),
            Self::Activation(Activation::GeluTanh) => ops::gelu(xs),
            Self::Activation(Activation::GeluErf) => ops::gelu_erf(xs),
        };
        out(y, x.shape())
    }
}

enum Binary {
    Gated(GateActivation),
    Add,
}

impl Prepared for Binary {
    fn run(&self, call: Call<'_>) -> Result<Tensor> {
        let Call::Binary(a, b) = call else {
            return Err(wrong_call("binary op", &call));
        };
        let (xa, xb) = (host(a, "binary op")?, host(b, "binary op")?);
        if xa.len() != xb.len() {
            return Err(CoreError::shape_mismatch("binary op: second input", a.dims(), b.dims()));
        }
        let mut y = match self {
            Self::Gated(GateActivation::Silu) => ops::silu(xa),
            Self::Gated(GateActivation::GeluTanh) => ops::gelu(xa),
            Self::Gated(GateActivation::GeluErf) => ops::gelu_erf(xa),
            Self::Add => xa.to_vec(),
        };
        match self {
            Self::Gated(_) => y.iter_mut().zip(xb).for_each(|(y, &u)| *y *= u),
            Self::Add => y.iter_mut().zip(xb).for_each(|(y, &u)| *y += u),
        }
        out(y, a.shape())
    }
}

struct Rope {
    n_heads: usize,
    rotary: ops::Rotary,
}

impl Prepared for Rope {
    fn run(&self, call: Call<'_>) -> Result<Tensor> {
        let Call::Rope { x, pos0 } = call else {
            return Err(wrong_call("rope", &call));
        };
        let xs = host(x, "rope")?;
        let dims = x.dims();
        // A leading batch dimension: each sequence starts at pos0.
        let per_seq = if dims.len() == 4 {
            dims[1..].iter().product()
        } else {
            xs.len()
        };
        let mut y = Vec::with_capacity(xs.len());
        for seq in xs.chunks(per_seq.max(1)) {
            y.extend(self.rotary.apply(seq, self.n_heads, pos0)?);
        }
        out(y, x.shape())
    }
}

/// The table as the caller shared it (no copy).
struct Embedding(Arc<QuantizedTensor>);

impl Prepared for Embedding {
    fn run(&self, call: Call<'_>) -> Result<Tensor> {
        let Call::Embedding { ids, lead } = call else {
            return Err(wrong_call("embedding", &call));
        };
        let dim = self.0.shape()[1];
        let mut dims = lead.dims().to_vec();
        dims.push(dim);
        out(aihal_reference::embedding(ids, &self.0)?, Shape::new(&dims)?)
    }
}

/// A dense table's rows, copied.
struct DenseEmbedding {
    table: Vec<f32>,
    dim: usize,
}

impl Prepared for DenseEmbedding {
    fn run(&self, call: Call<'_>) -> Result<Tensor> {
        let Call::Embedding { ids, lead } = call else {
            return Err(wrong_call("embedding", &call));
        };
        let vocab = self.table.len() / self.dim;
        let mut y = Vec::with_capacity(ids.len() * self.dim);
        for (i, &id) in ids.iter().enumerate() {
            let row = self
                .table
                .get(id as usize * self.dim..(id as usize + 1) * self.dim)
                .ok_or_else(|| {
                    CoreError::invalid_input(format!(
                        "embedding: token id {id} at index {i} is not below the vocabulary size {vocab}"
                    ))
                })?;
            y.extend_from_slice(row);
        }
        let mut dims = lead.dims().to_vec();
        dims.push(self.dim);
        out(y, Shape::new(&dims)?)
    }
}

struct Attention {
    shape: AttentionShape,
    kind: AttentionKind,
    scale: Option<f32>,
}

/// Keys and values of `batch` sequences, `[batch, max_len, n_kv_heads, head_dim]` each.
#[derive(Debug)]
struct CpuKv {
    layout: KvLayout,
    k: Vec<f32>,
    v: Vec<f32>,
}

impl KvStore for CpuKv {
    fn device(&self) -> Device {
        Device::Cpu
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
    fn can_drop_front(&self) -> bool {
        true
    }
    fn drop_front(&mut self, b: usize, len: usize, n: usize) -> Result<()> {
        let l = self.layout;
        if b >= l.batch || n > len || len > l.max_len {
            return Err(CoreError::invalid_input(format!(
                "KV cache: dropping {n} of {len} positions of sequence {b} (batch {}, max_len {})",
                l.batch, l.max_len
            )));
        }
        let row = l.n_kv_heads * l.head_dim;
        let base = b * l.max_len * row;
        for buf in [&mut self.k, &mut self.v] {
            buf.copy_within(base + n * row..base + len * row, base);
        }
        Ok(())
    }
}

impl Prepared for Attention {
    fn run(&self, call: Call<'_>) -> Result<Tensor> {
        let Call::Attention {
            q,
            k,
            v,
            cache,
            past,
            valid,
        } = call
        else {
            return Err(wrong_call("attention", &call));
        };
        let kv = cache
            .as_any_mut()
            .downcast_mut::<CpuKv>()
            .ok_or_else(|| CoreError::invalid_input("attention: the KV cache was not made by the CPU provider"))?;
        let (qs, ks, vs) = (host(q, "attention")?, host(k, "attention")?, host(v, "attention")?);
        let l = kv.layout;
        let row = l.n_kv_heads * l.head_dim;
        let seq = l.max_len * row;
        let (batch, q_len) = (q.dims()[0], q.dims()[1]);
        let q_seq = q_len * self.shape.n_heads * self.shape.head_dim;
        let mut y = Vec::with_capacity(qs.len());
        for b in 0..batch {
            let start = b * seq + past[b] * row;
            kv.k[start..start + q_len * row].copy_from_slice(&ks[b * q_len * row..][..q_len * row]);
            kv.v[start..start + q_len * row].copy_from_slice(&vs[b * q_len * row..][..q_len * row]);
            let kv_len = past[b] + q_len;
            let mask = match (self.kind, valid) {
                (AttentionKind::Causal, _) => AttentionMask::Causal,
                (AttentionKind::SlidingWindow(w), _) => AttentionMask::SlidingWindow(w),
                (AttentionKind::Bidirectional, Some(valid)) => AttentionMask::Padded { valid: valid[b] },
                (AttentionKind::Bidirectional, None) => {
                    return Err(CoreError::invalid_input(
                        "bidirectional attention without valid lengths",
                    ))
                }
            };
            y.extend(ops::attention_masked(
                &qs[b * q_seq..][..q_seq],
                &kv.k[b * seq..][..kv_len * row],
                &kv.v[b * seq..][..kv_len * row],
                kv_len,
                self.shape,
                self.scale,
                mask,
            )?);
        }
        out(y, q.shape())
    }
}

impl Provider for CpuProvider {
    fn device(&self) -> Device {
        Device::Cpu
    }

    fn name(&self) -> String {
        format!("cpu ({})", kernel_set_name())
    }

    fn supports(&self, spec: &OpSpec<'_>) -> Support {
        // Every op of the set, every format of the crate's table of formats: the packed
        // kernels where a format has them, the generic kernels (which decode any format)
        // elsewhere. The table names every format (an exhaustive match): a format without
        // an exact kernel would be refused here with the table's reason.
        if let Some(format) = spec.format() {
            if let Err(why) = crate::kernels::formats::entry(format).exact {
                return Support::No(format!("{format} weights: {why}"));
            }
        }
        match spec {
            OpSpec::Linear { .. }
            | OpSpec::DenseLinear { .. }
            | OpSpec::RmsNorm { .. }
            | OpSpec::LayerNorm { .. }
            | OpSpec::Softmax
            | OpSpec::Activation(_)
            | OpSpec::Gated(_)
            | OpSpec::Add
            | OpSpec::Rope { .. }
            | OpSpec::Embedding { .. }
            | OpSpec::DenseEmbedding { .. }
            | OpSpec::Attention { .. } => Support::Yes,
            other => Support::No(format!("{} is newer than this CPU provider", other.kind())),
        }
    }

    fn prepare(&self, spec: &OpSpec<'_>) -> Result<Box<dyn Prepared>> {
        Ok(match *spec {
            OpSpec::Linear {
                weight,
                bias,
                precision,
            } => {
                let precision = match precision {
                    LinearPrecision::Int8Activations => ActivationPrecision::Int8,
                    LinearPrecision::F32 => ActivationPrecision::F32,
                };
                Box::new(Linear::new(weight, bias, precision)?)
            }
            OpSpec::DenseLinear {
                weight,
                out_features,
                in_features,
                bias,
            } => {
                let w =
                    candle_core::Tensor::from_slice(weight, (out_features, in_features), &candle_core::Device::Cpu)?;
                Box::new(DenseLinear {
                    weight_t: w.t()?.contiguous()?,
                    bias: bias.map(<[f32]>::to_vec),
                    in_features,
                    out_features,
                })
            }
            OpSpec::RmsNorm { weight, eps } => Box::new(Rowwise::RmsNorm {
                weight: weight.to_vec(),
                eps,
            }),
            OpSpec::LayerNorm { weight, bias, eps } => Box::new(Rowwise::LayerNorm {
                weight: weight.to_vec(),
                bias: bias.map(<[f32]>::to_vec),
                eps,
            }),
            OpSpec::Softmax => Box::new(Rowwise::Softmax),
            OpSpec::Activation(a) => Box::new(Rowwise::Activation(a)),
            OpSpec::Gated(a) => Box::new(Binary::Gated(a)),
            OpSpec::Add => Box::new(Binary::Add),
            OpSpec::Rope {
                n_heads,
                head_dim,
                theta,
                style,
            } => Box::new(Rope {
                n_heads,
                rotary: ops::Rotary::new(head_dim, theta, style),
            }),
            OpSpec::Embedding { table } => Box::new(Embedding(Arc::clone(table))),
            OpSpec::DenseEmbedding { table, dim } => Box::new(DenseEmbedding {
                table: table.to_vec(),
                dim,
            }),
            OpSpec::Attention { shape, kind, scale } => Box::new(Attention { shape, kind, scale }),
            _ => {
                return Err(CoreError::not_implemented(format!(
                    "{} on the CPU provider",
                    spec.kind()
                )))
            }
        })
    }

    fn upload(&self, data: &[f32], shape: Shape) -> Result<Tensor> {
        Tensor::with_shape(data.to_vec(), shape)
    }

    fn new_kv_store(&self, layout: KvLayout) -> Result<Box<dyn KvStore>> {
        let n = [layout.batch, layout.max_len, layout.n_kv_heads, layout.head_dim]
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| CoreError::invalid_input(format!("KV cache {layout:?} overflows usize")))?;
        let mut k = Vec::new();
        let mut v = Vec::new();
        k.try_reserve_exact(n)
            .and_then(|()| v.try_reserve_exact(n))
            .map_err(|_| CoreError::out_of_memory("cpu", Some(2 * n as u64 * 4)))?;
        k.resize(n, 0.0);
        v.resize(n, 0.0);
        Ok(Box::new(CpuKv { layout, k, v }))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use aihal_ops::{Embedding, Executor, Linear, LinearPrecision};
    use aihal_quantize::{quantize, QuantFormat};

    use super::CpuProvider;

    fn executor() -> Arc<Executor> {
        Executor::builder()
            .provider(Arc::new(CpuProvider))
            .device(aihal_core::Device::Cpu)
            .strict(true)
            .build()
            .unwrap()
    }

    /// A shared table is kept, not copied: the prepared op holds the caller's `Arc` (one more
    /// strong count while the op lives, none after), and its rows are the reference's.
    #[test]
    fn a_shared_embedding_table_is_held_not_copied() {
        let (vocab, dim) = (40, 64);
        let w: Vec<f32> = (0..vocab * dim).map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0).collect();
        let table = Arc::new(quantize(QuantFormat::Q8_0, &w, &[vocab, dim]).unwrap());
        let exec = executor();
        let op = Embedding::shared(&exec, &table).unwrap();
        assert_eq!(Arc::strong_count(&table), 2, "the provider copied the table");
        let ids = [3u32, 0, 39, 3];
        let got = op.forward(&ids, None).unwrap().to_vec().unwrap();
        // Dequantizing rows is exact arithmetic on the stored codes: bit for bit the same.
        assert_eq!(got, aihal_reference::embedding(&ids, &table).unwrap());
        drop(op);
        assert_eq!(
            Arc::strong_count(&table),
            1,
            "the op kept the table after it was dropped"
        );
    }

    /// An embedding tied to a layer reads the layer's weight, kept as stored (the f32 path)
    /// or packed (int8 activations): the table's rows, bit for bit, with no table of its
    /// own, for the tied tables of real files (Q8_0, Q4_1, Q6_K) and a few more formats;
    /// 40 rows, so that the last panel is partial.
    #[test]
    fn an_embedding_tied_to_a_layer_reads_its_weight_on_both_paths() {
        let (vocab, dim) = (40, 256);
        let w: Vec<f32> = (0..vocab * dim).map(|i| ((i * 41) % 89) as f32 / 40.0 - 1.1).collect();
        let exec = executor();
        for format in [
            QuantFormat::Q8_0,
            QuantFormat::Q4_0,
            QuantFormat::Q4_1,
            QuantFormat::Q5_0,
            QuantFormat::Q4K,
            QuantFormat::Q6K,
            QuantFormat::Q5_1,
            QuantFormat::Q2K,
            QuantFormat::Q5K,
        ] {
            let table = quantize(format, &w, &[vocab, dim]).unwrap();
            for precision in [LinearPrecision::F32, LinearPrecision::Int8Activations] {
                let layer = Linear::with_precision(&exec, &table, None, precision).unwrap();
                let tied = Embedding::tied(&layer).unwrap();
                let ids = [39u32, 1, 1, 0, 17, 5];
                let got = tied.forward(&ids, Some(&[2, 3])).unwrap();
                assert_eq!(got.dims(), &[2, 3, dim]);
                assert_eq!(
                    got.to_vec().unwrap(),
                    aihal_reference::embedding(&ids, &table).unwrap(),
                    "{format} {precision:?}"
                );
                assert!(tied.forward(&[40], None).unwrap_err().to_string().contains("40"));
            }
        }
    }

    /// The layer built from a borrowed weight gives what `QuantLinear` gives (which the
    /// provider held before): bit for bit (the same kernels on the same layout), on both
    /// activation paths, for a packed format, two converted ones and FP8 (packed on both
    /// paths).
    #[test]
    fn linear_from_a_borrowed_weight_matches_quant_linear() {
        let (n, k, m) = (48, 256, 3);
        let w: Vec<f32> = (0..n * k).map(|i| ((i * 53) % 97) as f32 / 40.0 - 1.2).collect();
        let x: Vec<f32> = (0..m * k).map(|i| ((i * 29) % 83) as f32 / 30.0 - 1.4).collect();
        let bias: Vec<f32> = (0..n).map(|i| i as f32 / 16.0 - 1.0).collect();
        let exec = executor();
        for format in [
            QuantFormat::Q8_0,
            QuantFormat::Q5_0,
            QuantFormat::Q4K,
            QuantFormat::Fp8E4M3 { block_size: None },
        ] {
            let q = quantize(format, &w, &[n, k]).unwrap();
            for (precision, activations) in [
                (LinearPrecision::Int8Activations, crate::ActivationPrecision::Int8),
                (LinearPrecision::F32, crate::ActivationPrecision::F32),
            ] {
                let layer = Linear::with_precision(&exec, &q, Some(&bias), precision).unwrap();
                let x_t = aihal_ops::Tensor::from_vec(x.clone(), &[m, k]).unwrap();
                let got = layer.forward(&x_t).unwrap().to_vec().unwrap();
                let want = crate::QuantLinear::new(q.clone(), Some(bias.clone()))
                    .unwrap()
                    .with_activations(activations)
                    .forward_slice(crate::Activations::F32(&x), m)
                    .unwrap();
                assert_eq!(got, want, "{format} {precision:?}");
            }
        }
    }
}
