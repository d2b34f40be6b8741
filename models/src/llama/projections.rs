//! Linear layers that read one input (a layer's Q, K and V projections; its MLP's gate and
//! up projections), run as one op over their weights' rows stacked where that is faster.

use std::sync::Arc;

use aihal_core::{Device, Result};
use aihal_ops::{Executor, Linear, LinearPrecision, Planned, Tensor};
use aihal_quantize::QuantizedTensor;

use super::model::Stored;

/// Linear layers over one input: each its own op, or one op over their rows stacked.
///
/// A stacked op reads the shared input once per call and streams every weight in one pass
/// on one set of threads, where separate ops pay the hand-off to the CPU's threads and a cold
/// start of the weight stream once per projection: at batch 1 on small matrices (SmolLM2's
/// 192 x 576 K and V) that hand-off is a large part of a call. The members' outputs are the
/// stacked op's columns, cut apart on the host, so the layers stack only where every provider
/// the stacked op was prepared on is the CPU (outputs in host memory); where a GPU or the NPU
/// may run it, each member stays its own op. Each output value is the same sum of the same
/// codes either way.
#[derive(Debug)]
pub(super) enum Projections {
    /// One op per member.
    Separate(Vec<Linear>),
    /// One op over the members' rows; `widths` are the members' output features in order.
    Stacked { op: Linear, widths: Vec<usize> },
}

impl Projections {
    /// The ops for `members` (each a weight as stored and its `[out, in]`; names for errors in
    /// `names`): stacked when `stack` is set, the
    /// executor's device is the CPU, every member is quantized in one format whose rows stack
    /// ([`QuantizedTensor::stack_rows`]) and the stacked op was prepared on the CPU alone;
    /// each its own op otherwise.
    pub(super) fn new(
        exec: &Arc<Executor>,
        members: Vec<(Stored, [usize; 2])>,
        names: &[String],
        precision: LinearPrecision,
        stack: bool,
    ) -> Result<Self> {
        let quantized: Vec<&QuantizedTensor> = members
            .iter()
            .filter_map(|(m, _)| match m {
                Stored::Quantized(w) => Some(w),
                Stored::Dense(_) => None,
            })
            .collect();
        if stack && exec.device() == Device::Cpu && members.len() > 1 && quantized.len() == members.len() {
            if let Ok(all) = QuantizedTensor::stack_rows(&quantized) {
                let op = Linear::with_precision(exec, &all, None, precision)
                    .map_err(|e| crate::context(e, &names.join(" + ")))?;
                drop(all);
                if op.prepared_on() == [Device::Cpu] {
                    let widths = quantized.iter().map(|w| w.rows()).collect();
                    return Ok(Self::Stacked { op, widths });
                }
            }
        }
        drop(quantized);
        let ops = members
            .into_iter()
            .zip(names)
            .map(|((m, shape), name)| {
                m.into_linear(exec, shape, precision)
                    .map_err(|e| crate::context(e, name))
            })
            .collect::<Result<_>>()?;
        Ok(Self::Separate(ops))
    }

    /// Each member's output for `x` (`[.., in]`), in order, each `[.., out_i]`.
    pub(super) fn forward(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        match self {
            Self::Separate(ops) => ops.iter().map(|op| op.forward(x)).collect(),
            Self::Stacked { op, widths } => {
                let y = op.forward(x)?;
                let dims = y.dims().to_vec();
                let all = match y.host_slice() {
                    Some(_) => y.into_host().unwrap_or_default(),
                    None => y.to_vec()?,
                };
                let total = op.out_features();
                let rows = all.len() / total.max(1);
                let mut at = 0;
                widths
                    .iter()
                    .map(|&w| {
                        let mut part = Vec::with_capacity(rows * w);
                        for row in all.chunks_exact(total) {
                            part.extend_from_slice(&row[at..at + w]);
                        }
                        at += w;
                        let mut shape = dims.clone();
                        if let Some(last) = shape.last_mut() {
                            *last = w;
                        }
                        Tensor::from_vec(part, &shape)
                    })
                    .collect()
            }
        }
    }

    /// The ops, in order (one when stacked).
    pub(super) fn ops(&self) -> Vec<&Linear> {
        match self {
            Self::Separate(ops) => ops.iter().collect(),
            Self::Stacked { op, .. } => vec![op],
        }
    }

    /// The ops, in order (one when stacked), to pin.
    pub(super) fn ops_mut(&mut self) -> Vec<&mut Linear> {
        match self {
            Self::Separate(ops) => ops.iter_mut().collect(),
            Self::Stacked { op, .. } => vec![op],
        }
    }
}
