//! [`Executor`]: the registered providers, the placement policy, strict mode and the record.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use aihal_core::{warn_once, CoreError, Device, Dispatched, Result};

use crate::provider::{Call, OpKind, OpSpec, Prepared, Provider, Support};
use crate::record::{Record, Report, MAX_PROVIDERS};
use crate::tensor::Tensor;

/// The providers an app runs on, in order of preference, with the placement policy.
///
/// Placement (until a measured table exists): the provider of the requested device if one was
/// given ([`ExecutorBuilder::device`]), else the first provider in registration order that is
/// not a software device. An op that provider cannot run goes to the next provider that can,
/// the CPU provider last; that is a fallback: warned once per process, recorded with its
/// reason in the [`report`](Self::report), and an error in strict mode.
///
/// ```
/// # use aihal_ops::Executor;
/// // With no provider registered there is nothing to run on.
/// assert!(Executor::builder().build().is_err());
/// ```
pub struct Executor {
    providers: Vec<Arc<dyn Provider>>,
    preferred: usize,
    strict: bool,
    record: Record,
    moves: AtomicU64,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field(
                "providers",
                &self.providers.iter().map(|p| p.name()).collect::<Vec<_>>(),
            )
            .field("device", &self.device())
            .field("strict", &self.strict)
            .finish_non_exhaustive()
    }
}

/// Builds an [`Executor`].
#[derive(Default)]
pub struct ExecutorBuilder {
    providers: Vec<Arc<dyn Provider>>,
    device: Option<Device>,
    strict: bool,
}

impl ExecutorBuilder {
    /// Adds a provider; earlier ones are preferred.
    #[must_use]
    pub fn provider(mut self, p: Arc<dyn Provider>) -> Self {
        self.providers.push(p);
        self
    }

    /// Places ops on this device's provider first (a software device too, when named).
    #[must_use]
    pub fn device(mut self, device: Device) -> Self {
        self.device = Some(device);
        self
    }

    /// Strict mode: any fallback is an error instead of a warning.
    #[must_use]
    pub fn strict(mut self, strict: bool) -> Self {
        self.strict = strict;
        self
    }

    /// The executor.
    ///
    /// Errors: `InvalidConfig` with no provider or more than 8, or two for one device;
    /// `DeviceNotAvailable` when the requested device has no provider, or when every
    /// provider is a software device and none was named.
    pub fn build(self) -> Result<Arc<Executor>> {
        if self.providers.is_empty() || self.providers.len() > MAX_PROVIDERS {
            return Err(CoreError::invalid_config(format!(
                "an executor needs 1 to {MAX_PROVIDERS} providers, got {}",
                self.providers.len()
            )));
        }
        for (i, p) in self.providers.iter().enumerate() {
            if self.providers[..i].iter().any(|q| q.device() == p.device()) {
                return Err(CoreError::invalid_config(format!(
                    "two providers for {}: {} and {}",
                    p.device(),
                    self.providers[..i]
                        .iter()
                        .find(|q| q.device() == p.device())
                        .map_or(String::new(), |q| q.name()),
                    p.name()
                )));
            }
        }
        let preferred = match self.device {
            Some(d) => self.providers.iter().position(|p| p.device() == d).ok_or_else(|| {
                CoreError::device_not_available(
                    d,
                    format!(
                        "no provider for it is registered (registered: {})",
                        self.providers
                            .iter()
                            .map(|p| p.device().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            })?,
            None => self.providers.iter().position(|p| !p.is_software()).ok_or_else(|| {
                CoreError::device_not_available(
                    "any hardware device",
                    "every registered provider is a software device; name one to use it",
                )
            })?,
        };
        Ok(Arc::new(Executor {
            providers: self.providers,
            preferred,
            strict: self.strict,
            record: Record::new(),
            moves: AtomicU64::new(0),
        }))
    }
}

impl Executor {
    /// A builder with no provider.
    pub fn builder() -> ExecutorBuilder {
        ExecutorBuilder::default()
    }

    /// The providers, in order of preference.
    pub fn providers(&self) -> &[Arc<dyn Provider>] {
        &self.providers
    }

    /// The device placement prefers.
    pub fn device(&self) -> Device {
        self.providers[self.preferred].device()
    }

    /// Whether fallbacks are errors.
    pub fn is_strict(&self) -> bool {
        self.strict
    }

    /// What ran where so far, as a table when printed.
    pub fn report(&self) -> Report {
        let names: Vec<_> = self.providers.iter().map(|p| (p.device(), p.name())).collect();
        self.record.snapshot(&names)
    }

    /// How many tensors the executor moved between providers so far (each move is a
    /// download, an upload, or both).
    pub fn moves(&self) -> u64 {
        self.moves.load(Ordering::Relaxed)
    }

    /// Copies `t` to `device`'s provider if it is not there already.
    ///
    /// Errors: `DeviceNotAvailable` when no provider of this executor has `device`; a
    /// provider's transfer error.
    pub fn to_device(&self, t: &Tensor, device: Device) -> Result<Tensor> {
        let i = self
            .providers
            .iter()
            .position(|p| p.device() == device)
            .ok_or_else(|| CoreError::device_not_available(device, "no provider of this executor runs there"))?;
        Ok(self.move_to(t, i)?.unwrap_or_else(|| t.clone()))
    }

    /// `Some(copy on provider i)` when `t` lives elsewhere.
    fn move_to(&self, t: &Tensor, i: usize) -> Result<Option<Tensor>> {
        let p = &self.providers[i];
        if t.device() == p.device() {
            return Ok(None);
        }
        self.moves.fetch_add(1, Ordering::Relaxed);
        let _span =
            tracing::trace_span!("aihal.move", from = %t.device(), to = %p.device(), values = t.numel()).entered();
        if let Some(host) = t.host_slice() {
            p.upload(host, t.shape()).map(Some)
        } else {
            let host = t.to_vec()?;
            p.upload(&host, t.shape()).map(Some)
        }
    }

    /// Places `spec`: the providers that will run it, in order, each prepared.
    ///
    /// `only` restricts placement to one device (a KV cache's).
    pub(crate) fn place(self: &Arc<Self>, spec: &OpSpec<'_>, only: Option<Device>) -> Result<Placed> {
        let kind = spec.kind();
        let wanted = only.unwrap_or_else(|| self.device());
        let mut order: Vec<usize> = Vec::with_capacity(2);
        let mut reasons = Vec::new();
        let candidates =
            std::iter::once(self.preferred).chain((0..self.providers.len()).filter(|&i| i != self.preferred));
        for i in candidates {
            let p = &self.providers[i];
            if only.is_some_and(|d| d != p.device()) || (i != self.preferred && p.is_software()) {
                continue;
            }
            match p.supports(spec) {
                Support::Yes => order.push(i),
                Support::No(why) => reasons.push(format!("{}: {why}", p.device())),
            }
            // The chosen provider and one fallback after it: each keeps a prepared copy.
            if order.len() == 2 {
                break;
            }
        }
        let Some(&first) = order.first() else {
            return Err(CoreError::not_implemented(format!(
                "{kind} ({}) on any provider: {}",
                spec.format().map_or_else(|| "f32".to_owned(), |f| f.name().to_owned()),
                reasons.join("; ")
            )));
        };
        let first_device = self.providers[first].device();
        let fallback = (first_device != wanted).then(|| reasons.join("; "));
        if let Some(why) = &fallback {
            self.fall_back(kind, wanted, first_device, why)?;
        }
        // Each provider placed keeps a prepared copy, made now (weights are borrowed only here).
        let slots = order
            .iter()
            .map(|&i| {
                Ok(Slot {
                    provider: i,
                    device: self.providers[i].device(),
                    prepared: self.providers[i].prepare(spec)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Placed {
            exec: Arc::clone(self),
            kind,
            wanted,
            slots,
            fallback,
        })
    }

    fn fall_back(&self, op: OpKind, wanted: Device, ran_on: Device, why: &str) -> Result<()> {
        if self.strict {
            return Err(CoreError::device_not_available(
                wanted,
                format!("{op} would fall back to {ran_on} ({why}); strict mode forbids it"),
            ));
        }
        warn_once(
            &format!("aihal-op-fallback:{op}:{wanted}:{ran_on}"),
            &format!("aihal: {op} runs on {ran_on} instead of {wanted}: {why}"),
        );
        self.record.fell_back(op, wanted, ran_on, why);
        Ok(())
    }
}

/// An op placed on an executor: the providers that run it, each with its prepared form.
pub(crate) struct Placed {
    exec: Arc<Executor>,
    kind: OpKind,
    wanted: Device,
    slots: Vec<Slot>,
    fallback: Option<String>,
}

/// One provider an op was placed on, with its prepared form.
struct Slot {
    provider: usize,
    device: Device,
    prepared: Box<dyn Prepared>,
}

impl std::fmt::Debug for Placed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Placed")
            .field("op", &self.kind)
            .field("providers", &self.slots.iter().map(|s| s.device).collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Placed {
    /// The device the op runs on first.
    pub(crate) fn device(&self) -> Device {
        self.slots[0].device
    }

    /// The executor.
    pub(crate) fn executor(&self) -> &Arc<Executor> {
        &self.exec
    }

    /// Runs the op: on each placed provider in turn until one does not answer
    /// `NotImplemented`, moving the inputs there first (attention runs on its first provider
    /// only: its cache lives there).
    pub(crate) fn run<const N: usize>(&self, inputs: [&Tensor; N], mut args: Args<'_>) -> Result<Dispatched<Tensor>> {
        let exec = &*self.exec;
        let tries = if matches!(args, Args::Attention { .. }) {
            1
        } else {
            self.slots.len()
        };
        let mut fallback = None;
        for (n, slot) in self.slots.iter().take(tries).enumerate() {
            // The common case, every input already there, moves and copies nothing.
            let result = if inputs.iter().all(|t| t.device() == slot.device) {
                self.run_on(slot, args.call(&inputs))
            } else {
                let moved = self.move_inputs(inputs, slot.provider)?;
                let here: [&Tensor; N] = std::array::from_fn(|k| moved[k].as_ref().unwrap_or(inputs[k]));
                self.run_on(slot, args.call(&here))
            };
            match result {
                Ok(output) => {
                    return Ok(Dispatched {
                        output,
                        ran_on: slot.device,
                        fallback: fallback.or_else(|| self.fallback.clone()),
                    })
                }
                Err(e) if e.is_not_implemented() && n + 1 < tries => {
                    let why = e.to_string();
                    exec.fall_back(self.kind, self.wanted, self.slots[n + 1].device, &why)?;
                    fallback = Some(why);
                }
                Err(e) => return Err(e),
            }
        }
        Err(CoreError::not_implemented(format!(
            "{}: no provider left to run it",
            self.kind
        )))
    }

    fn move_inputs<const N: usize>(&self, inputs: [&Tensor; N], i: usize) -> Result<[Option<Tensor>; N]> {
        let mut out: [Option<Tensor>; N] = std::array::from_fn(|_| None);
        for (o, t) in out.iter_mut().zip(inputs) {
            *o = self.exec.move_to(t, i)?;
        }
        Ok(out)
    }

    #[inline]
    fn run_on(&self, slot: &Slot, call: Call<'_>) -> Result<Tensor> {
        let span = tracing::debug_span!("aihal.op", op = self.kind.name(), provider = %slot.device);
        let _entered = span.enter();
        let record = &self.exec.record;
        if record.start(self.kind, slot.provider) {
            let t0 = Instant::now();
            let out = slot.prepared.run(call)?;
            record.timed(self.kind, slot.provider, t0.elapsed());
            Ok(out)
        } else {
            slot.prepared.run(call)
        }
    }
}

/// What a call carries besides its tensors.
pub(crate) enum Args<'a> {
    Unary,
    Binary,
    Rope {
        pos0: usize,
    },
    Embedding {
        ids: &'a [u32],
        lead: crate::tensor::Shape,
    },
    Attention {
        cache: &'a mut dyn crate::provider::KvStore,
        past: &'a [usize],
        valid: Option<&'a [usize]>,
    },
}

impl Args<'_> {
    /// The call for `inputs` (as many as the variant takes).
    fn call<'x, const N: usize>(&'x mut self, inputs: &[&'x Tensor; N]) -> Call<'x> {
        match self {
            Self::Unary => Call::Unary(inputs[0]),
            Self::Binary => Call::Binary(inputs[0], inputs[1]),
            Self::Rope { pos0 } => Call::Rope {
                x: inputs[0],
                pos0: *pos0,
            },
            Self::Embedding { ids, lead } => Call::Embedding { ids, lead: *lead },
            Self::Attention { cache, past, valid } => Call::Attention {
                q: inputs[0],
                k: inputs[1],
                v: inputs[2],
                cache: &mut **cache,
                past,
                valid: *valid,
            },
        }
    }
}
