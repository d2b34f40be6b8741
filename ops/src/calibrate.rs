//! Calibration: parity first, then speed. For each probe (an op at concrete shapes standing
//! for a table key) and each provider, the op runs on fresh pseudo-random data and is compared
//! with `aihal-reference`; a provider outside tolerance is written down with the reason and
//! never placed for that key. The providers that passed are timed (warm-up, then the median of
//! repeated calls; linear layers rotate several weight copies when one would stay in cache)
//! and written fastest first. Moving an activation between each pair of providers is timed
//! too.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aihal_core::{CoreError, Result};
use aihal_quantize::{quantize, QuantFormat, QuantizedTensor};
use aihal_reference::{self as reference, AttentionShape};

use crate::layers::{Act, Attention, Linear, RmsNorm, Softmax};
use crate::provider::{Activation, AttentionKind, LinearPrecision, OpKind, OpSpec, Provider};
use crate::table::{DispatchTable, Entry, Fingerprint, MClass, Measured, OpKey, Parity, SizeClass, Transfer};
use crate::tensor::Tensor;
use crate::Executor;

/// An op at concrete shapes, measured for one table key.
#[derive(Clone, Debug, PartialEq)]
pub enum ProbeOp {
    /// A linear layer `[n, k]` in `format`.
    Linear {
        /// The weight format.
        format: QuantFormat,
        /// Output features.
        n: usize,
        /// Input features.
        k: usize,
    },
    /// RMSNorm over rows of `dim`.
    RmsNorm {
        /// Row length.
        dim: usize,
    },
    /// Softmax over rows of `dim`.
    Softmax {
        /// Row length.
        dim: usize,
    },
    /// SiLU over rows of `dim`.
    Silu {
        /// Row length.
        dim: usize,
    },
    /// Causal attention of the probe's rows after `past` cached positions.
    Attention {
        /// Heads.
        shape: AttentionShape,
        /// Positions already cached.
        past: usize,
    },
}

/// One probe: an op and the row count class it is measured at.
#[derive(Clone, Debug, PartialEq)]
pub struct Probe {
    /// The op and its shapes.
    pub op: ProbeOp,
    /// The row class (measured at [`MClass::representative`] rows).
    pub m: MClass,
}

impl Probe {
    /// The probe that stands for `spec` at row class `m`, for the ops whose shapes the spec
    /// fixes (a quantized linear layer, RMSNorm); `None` for the others, whose activation
    /// widths are only known per call.
    pub fn for_spec(spec: &OpSpec<'_>, m: MClass) -> Option<Self> {
        let op = match *spec {
            OpSpec::Linear { weight, .. } => match *weight.shape() {
                [n, k] => ProbeOp::Linear {
                    format: weight.format(),
                    n,
                    k,
                },
                _ => return None,
            },
            OpSpec::RmsNorm { weight, .. } => ProbeOp::RmsNorm { dim: weight.len() },
            _ => return None,
        };
        Some(Self { op, m })
    }

    /// The table key this probe measures.
    pub fn key(&self) -> OpKey {
        let (op, format, bytes) = match &self.op {
            ProbeOp::Linear { format, n, k } => (
                OpKind::Linear,
                Some(format.name().to_owned()),
                weight_bytes(*format, *n, *k),
            ),
            ProbeOp::RmsNorm { .. } => (OpKind::RmsNorm, None, 0),
            ProbeOp::Softmax { .. } => (OpKind::Softmax, None, 0),
            ProbeOp::Silu { .. } => (OpKind::Activation, None, 0),
            ProbeOp::Attention { .. } => (OpKind::Attention, None, 0),
        };
        OpKey {
            op,
            format,
            m: self.m,
            size: SizeClass::of(bytes),
        }
    }
}

/// The bytes of an `[n, k]` weight in `format`, as the executor counts them: one row's, `n`
/// times (0 when a row of `k` does not fit the format).
fn weight_bytes(format: QuantFormat, n: usize, k: usize) -> usize {
    quantize(format, &vec![1.0; k], &[1, k]).map_or(0, |row| (row.data().len() + 4 * row.scales().len()) * n)
}

/// The probes `cargo run --example calibrate` measures by default: linear layers in the
/// common formats at a decoder's widths, the row ops, and attention, at every row class.
pub fn default_probes() -> Vec<Probe> {
    let mut out = Vec::new();
    for m in MClass::ALL {
        for format in [QuantFormat::Q4_0, QuantFormat::Q8_0] {
            out.push(Probe {
                op: ProbeOp::Linear {
                    format,
                    n: 2048,
                    k: 2048,
                },
                m,
            });
        }
        out.push(Probe {
            op: ProbeOp::RmsNorm { dim: 2048 },
            m,
        });
        out.push(Probe {
            op: ProbeOp::Softmax { dim: 2048 },
            m,
        });
        out.push(Probe {
            op: ProbeOp::Silu { dim: 5632 },
            m,
        });
        out.push(Probe {
            op: ProbeOp::Attention {
                shape: AttentionShape {
                    n_heads: 16,
                    n_kv_heads: 4,
                    head_dim: 64,
                },
                past: 256,
            },
            m,
        });
    }
    out
}

/// How calibration runs.
#[derive(Clone, Debug)]
pub struct CalibrateOptions {
    /// The most time spent timing one provider on one probe (after parity and warm-up).
    pub time_per_measure: Duration,
    /// Whether software devices (lavapipe) are measured too. They are written to the table
    /// but never placed unless named.
    pub include_software: bool,
    /// The date written into each entry (`YYYY-MM-DD`); today's UTC date by default.
    pub date: String,
}

impl Default for CalibrateOptions {
    fn default() -> Self {
        Self {
            time_per_measure: Duration::from_millis(150),
            include_software: false,
            date: today(),
        }
    }
}

/// Today's UTC date as `YYYY-MM-DD`.
pub fn today() -> String {
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400) as i64;
    // Civil date from days since 1970-01-01 (the proleptic Gregorian calendar).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Fresh pseudo-random values in `[-scale, scale)`: `seed` mixed with a number drawn once per
/// process from the clock, so each calibration checks parity on data it has not seen.
fn values(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    static NONCE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let nonce = *NONCE.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x5EED, |d| d.as_nanos() as u64)
    });
    let mut s = (seed ^ nonce).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// The largest `|got - want| / bound`, and whether every element is within its bound.
fn worst(got: &[f32], want: &[f32], bound: impl Fn(usize, f32) -> f32) -> Result<f64> {
    if got.len() != want.len() {
        return Err(CoreError::shape_mismatch(
            "calibration output",
            [want.len()],
            [got.len()],
        ));
    }
    let mut w = 0.0f64;
    for (i, (&g, &r)) in got.iter().zip(want).enumerate() {
        let e = if g.is_nan() && r.is_nan() {
            0.0
        } else {
            f64::from((g - r).abs()) / f64::from(bound(i, r))
        };
        if !e.is_finite() {
            // A NaN against a number, or an infinity: as far outside as it gets.
            return Ok(f64::INFINITY);
        }
        w = w.max(e);
    }
    Ok(w)
}

/// A measurement: run once on fresh data for parity, then time.
struct Runner {
    /// Runs one call (the timed unit).
    call: Box<dyn FnMut() -> Result<()>>,
    /// The parity result over the bound (at most 1 passes).
    parity: f64,
}

fn prepare(exec: &Arc<Executor>, probe: &Probe) -> Result<Runner> {
    let rows = probe.m.representative();
    match probe.op.clone() {
        ProbeOp::Linear { format, n, k } => {
            let w = quantize(format, &values(1, n * k, 0.5), &[n, k])?;
            let x = values(2, rows * k, 1.0);
            let want = reference::matmul(&x, rows, &w)?;
            let bound = linear_bounds(&x, &reference::dequantize_weight(&w)?, rows, n, k);
            let layer = Linear::new(exec, &w, None)?;
            let xt = Tensor::from_vec(x, &[rows, k])?;
            let parity = worst(&layer.forward(&xt)?.to_vec()?, &want, |i, _| bound[i])?;
            // Weights of at most 32 MiB would stay partly cached: rotate copies.
            let copies = ((64 << 20) / weight_bytes(format, n, k).max(1)).clamp(1, 8);
            let mut layers = vec![layer];
            for c in 1..copies.min(8) {
                let wc: QuantizedTensor = quantize(format, &values(10 + c as u64, n * k, 0.5), &[n, k])?;
                layers.push(Linear::new(exec, &wc, None)?);
            }
            let mut next = 0;
            Ok(Runner {
                call: Box::new(move || {
                    next = (next + 1) % layers.len();
                    layers[next].forward(&xt).map(drop)
                }),
                parity,
            })
        }
        ProbeOp::RmsNorm { dim } => {
            let (x, g) = (values(3, rows * dim, 2.0), values(4, dim, 1.0));
            let want = reference::rms_norm(&x, dim, &g, 1e-6)?;
            let op = RmsNorm::new(exec, &g, 1e-6)?;
            row_runner(x, &[rows, dim], &want, move |t| op.forward(t))
        }
        ProbeOp::Softmax { dim } => {
            let x = values(5, rows * dim, 4.0);
            let want = reference::softmax(&x, dim)?;
            let op = Softmax::new(exec)?;
            row_runner(x, &[rows, dim], &want, move |t| op.forward(t))
        }
        ProbeOp::Silu { dim } => {
            let x = values(6, rows * dim, 4.0);
            let want = reference::silu(&x);
            let op = Act::new(exec, Activation::Silu)?;
            row_runner(x, &[rows, dim], &want, move |t| op.forward(t))
        }
        ProbeOp::Attention { shape, past } => {
            let (qw, kw) = (shape.n_heads * shape.head_dim, shape.n_kv_heads * shape.head_dim);
            let total = past + rows;
            let (q, k, v) = (
                values(7, rows * qw, 1.0),
                values(8, total * kw, 1.0),
                values(9, total * kw, 1.0),
            );
            let want = reference::attention(&q, &k, &v, total, shape, None)?;
            let op = Attention::new(exec, shape, AttentionKind::Causal, None)?;
            let mut cache = op.new_cache(1, total)?;
            let t =
                |v: &[f32], len: usize, heads: usize| Tensor::from_vec(v.to_vec(), &[1, len, heads, shape.head_dim]);
            if past > 0 {
                let qp = Tensor::from_vec(vec![0.0; past * qw], &[1, past, shape.n_heads, shape.head_dim])?;
                op.forward(
                    &qp,
                    &t(&k[..past * kw], past, shape.n_kv_heads)?,
                    &t(&v[..past * kw], past, shape.n_kv_heads)?,
                    &mut cache,
                    None,
                )?;
            }
            let (qt, kt, vt) = (
                t(&q, rows, shape.n_heads)?,
                t(&k[past * kw..], rows, shape.n_kv_heads)?,
                t(&v[past * kw..], rows, shape.n_kv_heads)?,
            );
            let got = op.forward(&qt, &kt, &vt, &mut cache, None)?.to_vec()?;
            let parity = worst(&got, &want, |_, r| 1e-5 * (1.0 + r.abs()))?;
            Ok(Runner {
                call: Box::new(move || {
                    cache.truncate(past);
                    op.forward(&qt, &kt, &vt, &mut cache, None).map(drop)
                }),
                parity,
            })
        }
    }
}

fn row_runner(
    x: Vec<f32>,
    shape: &[usize],
    want: &[f32],
    op: impl Fn(&Tensor) -> Result<Tensor> + 'static,
) -> Result<Runner> {
    let t = Tensor::from_vec(x, shape)?;
    let parity = worst(&op(&t)?.to_vec()?, want, |_, r| 1e-5 * (1.0 + r.abs()))?;
    Ok(Runner {
        call: Box::new(move || op(&t).map(drop)),
        parity,
    })
}

/// Per output: [`LinearPrecision::bound`] of the default precision.
fn linear_bounds(x: &[f32], w: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(m * n);
    for i in 0..m {
        for j in 0..n {
            out.push(LinearPrecision::default().bound(&x[i * k..][..k], &w[j * k..][..k]));
        }
    }
    out
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

/// Times `call`: two warm-up calls, then calls until `budget` is spent (at least 3, at most
/// 51); the median.
fn time(call: &mut dyn FnMut() -> Result<()>, budget: Duration) -> Result<u64> {
    call()?;
    call()?;
    let start = Instant::now();
    let mut samples = Vec::new();
    while samples.len() < 3 || (start.elapsed() < budget && samples.len() < 51) {
        let t0 = Instant::now();
        call()?;
        samples.push(u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX));
    }
    Ok(median(samples))
}

/// Measures `probes` on each of `providers` and the transfers between them; returns the table.
///
/// Errors: none for a provider that fails (that is written into the table); `InvalidConfig`
/// when no provider is given.
pub fn calibrate(
    providers: &[Arc<dyn Provider>],
    probes: &[Probe],
    options: &CalibrateOptions,
) -> Result<DispatchTable> {
    let providers: Vec<&Arc<dyn Provider>> = providers
        .iter()
        .filter(|p| options.include_software || !p.is_software())
        .collect();
    if providers.is_empty() {
        return Err(CoreError::invalid_config("calibration needs at least one provider"));
    }
    let owned: Vec<Arc<dyn Provider>> = providers.iter().map(|p| Arc::clone(p)).collect();
    let entries = calibrate_entries(&owned, probes, options)?;
    let executors = solo_executors(providers.iter().copied())?;
    let mut transfers = Vec::new();
    for (a, ea) in providers.iter().zip(&executors) {
        for b in &providers {
            if a.device() == b.device() {
                continue;
            }
            for (size, values_n) in [(SizeClass::K1M, 16 << 10), (SizeClass::M16, 1 << 20)] {
                let host = Tensor::from_vec(values(11, values_n, 1.0), &[values_n])?;
                let on_a = ea.to_device(&host, a.device())?;
                let both = Executor::builder()
                    .provider(Arc::clone(a))
                    .provider(Arc::clone(b))
                    .build()?;
                let mut call = || both.to_device(&on_a, b.device()).map(drop);
                let t = time(&mut call, options.time_per_measure)?;
                transfers.push(Transfer {
                    from: a.device().to_string(),
                    to: b.device().to_string(),
                    size,
                    median_ns: t,
                });
            }
        }
    }
    Ok(DispatchTable {
        machine: Fingerprint::of_this_machine(fingerprint_providers(providers.iter().map(|p| &***p))),
        entries,
        transfers,
    })
}

/// The table entries of `probes` on `providers` (all of them, software ones included): parity
/// against the reference, then timing of those that passed, fastest first.
///
/// Errors: `InvalidConfig` when no provider is given.
pub fn calibrate_entries(
    providers: &[Arc<dyn Provider>],
    probes: &[Probe],
    options: &CalibrateOptions,
) -> Result<Vec<Entry>> {
    if providers.is_empty() {
        return Err(CoreError::invalid_config("calibration needs at least one provider"));
    }
    let executors = solo_executors(providers.iter())?;
    let mut entries: Vec<Entry> = Vec::new();
    for probe in probes {
        let mut measured = Vec::new();
        for (p, exec) in providers.iter().zip(&executors) {
            let device = p.device().to_string();
            let result = prepare(exec, probe).and_then(|mut r| {
                if r.parity <= 1.0 {
                    let t = time(&mut *r.call, options.time_per_measure)?;
                    Ok((r.parity, Some(t)))
                } else {
                    Ok((r.parity, None))
                }
            });
            measured.push(match result {
                Ok((max_error, Some(t))) => Measured {
                    device,
                    median_ns: Some(t),
                    parity: Parity::Pass { max_error },
                },
                Ok((worst, None)) => Measured {
                    device,
                    median_ns: None,
                    parity: Parity::Fail {
                        reason: format!("outside tolerance: the largest error is {worst:.3e} times its bound"),
                    },
                },
                Err(e) => Measured {
                    device,
                    median_ns: None,
                    parity: Parity::Fail {
                        reason: format!("did not run: {e}"),
                    },
                },
            });
        }
        measured.sort_by_key(|m| (matches!(m.parity, Parity::Fail { .. }), m.median_ns.unwrap_or(u64::MAX)));
        entries.push(Entry {
            key: probe.key(),
            date: options.date.clone(),
            providers: measured,
        });
    }
    Ok(entries)
}

/// One strict executor per provider, holding only that provider and naming its device.
fn solo_executors<'a>(providers: impl Iterator<Item = &'a Arc<dyn Provider>>) -> Result<Vec<Arc<Executor>>> {
    providers
        .map(|p| {
            Executor::builder()
                .provider(Arc::clone(p))
                .device(p.device())
                .strict(true)
                .build()
        })
        .collect()
}

/// `device: name` of each provider, as the fingerprint lists them.
pub fn fingerprint_providers<'a>(providers: impl Iterator<Item = &'a dyn Provider>) -> Vec<String> {
    providers.map(|p| format!("{}: {}", p.device(), p.name())).collect()
}
