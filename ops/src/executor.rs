//! [`Executor`]: the registered providers, the placement policy, strict mode and the record.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use aihal_core::{warn_once, CoreError, Device, Dispatched, Result};

use crate::provider::{Call, OpKind, OpSpec, Prepared, Provider, Support};
use crate::record::{Record, Report, MAX_PROVIDERS};
use crate::table::{DispatchTable, MClass, OpKey, SizeClass};
use crate::tensor::Tensor;

/// The providers an app runs on, in order of preference, with the placement policy.
///
/// Placement: with a measured dispatch table ([`ExecutorBuilder::table`]) and no explicit
/// device, each row class of an op runs on the first provider its key lists. Otherwise, and
/// for keys the table lacks, the provider of the requested or preferred device, else the first
/// provider in registration order that is not a software device. An op that provider cannot
/// run goes to the next provider that can, the CPU provider last; that is a fallback: warned
/// once per process, recorded with its reason in the [`report`](Self::report), and an error in
/// strict mode.
///
/// ```
/// # use aihal_ops::Executor;
/// // With no provider registered there is nothing to run on.
/// assert!(Executor::builder().build().is_err());
/// ```
pub struct Executor {
    providers: Vec<Arc<dyn Provider>>,
    preferred: usize,
    explicit: bool,
    table: std::sync::RwLock<Option<DispatchTable>>,
    calibrate_missing: Option<std::time::Duration>,
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
    explicit: bool,
    table: Option<DispatchTable>,
    calibrate_missing: Option<std::time::Duration>,
    strict: bool,
}

impl ExecutorBuilder {
    /// Adds a provider; earlier ones are preferred.
    #[must_use]
    pub fn provider(mut self, p: Arc<dyn Provider>) -> Self {
        self.providers.push(p);
        self
    }

    /// An explicit request: ops run on this device's provider (a software device too), a
    /// dispatch table notwithstanding; any op it cannot run is a fallback (an error in strict
    /// mode).
    #[must_use]
    pub fn device(mut self, device: Device) -> Self {
        self.device = Some(device);
        self.explicit = true;
        self
    }

    /// A preference: ops without a dispatch-table entry run on this device's provider first
    /// (what automatic device selection chose).
    #[must_use]
    pub fn prefer(mut self, device: Device) -> Self {
        self.device = Some(device);
        self.explicit = false;
        self
    }

    /// A measured dispatch table: for each op key it has, the providers that passed parity,
    /// fastest first, decide the placement per row class (unless a device was requested
    /// explicitly). Entries naming a device no provider has, or a software device, are
    /// passed over.
    #[must_use]
    pub fn table(mut self, table: DispatchTable) -> Self {
        self.table = Some(table);
        self
    }

    /// Opt-in: when an op with a weight (a quantized linear layer) is placed and the table
    /// has no entry for one of its row classes, and two or more hardware providers could run
    /// it, calibrate that key then (parity, then timing, as `cargo run --example calibrate`
    /// does) and add it to the executor's table. Each missing key takes at most about
    /// `budget` of timing on top of the parity runs; the whole op's placement pays it once.
    #[must_use]
    pub fn calibrate_missing(mut self, budget: std::time::Duration) -> Self {
        self.calibrate_missing = Some(budget);
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
            explicit: self.explicit,
            table: std::sync::RwLock::new(self.table),
            calibrate_missing: self.calibrate_missing,
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

    /// Whether the device was requested explicitly ([`ExecutorBuilder::device`]): then ops
    /// run there, whatever a dispatch table says.
    pub fn device_requested(&self) -> bool {
        self.explicit
    }

    /// The dispatch table placement follows, if any (with the keys calibrated since, in
    /// the opt-in mode).
    pub fn table(&self) -> Option<DispatchTable> {
        self.table
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The table's provider order for `key` (those this executor has, hardware only), when
    /// it has the key and no device was requested explicitly.
    fn table_order(&self, key: &OpKey) -> Option<Vec<usize>> {
        if self.explicit {
            return None;
        }
        let table = self.table.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = table.as_ref()?.entry(key)?;
        let order: Vec<usize> = entry
            .order()
            .filter_map(|d| self.providers.iter().position(|p| p.device().to_string() == d))
            .filter(|&i| !self.providers[i].is_software())
            .collect();
        (!order.is_empty()).then_some(order)
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
        if t.device() == p.device() || (t.device() == Device::Cpu && p.reads_host_memory()) {
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

    /// Places `spec`: for each row class, the provider that runs it first; those and one
    /// fallback each prepare the op now.
    ///
    /// Without a table entry the order is the preference order (the preferred provider,
    /// then the others, software devices only when preferred); a table entry's order wins
    /// unless a device was requested explicitly. A preferred provider that cannot run the op
    /// is a fallback: warned once, recorded, an error in strict mode.
    pub(crate) fn place(self: &Arc<Self>, spec: &OpSpec<'_>) -> Result<Placed> {
        let kind = spec.kind();
        let wanted = self.device();
        let mut reasons = Vec::new();
        let mut supported = vec![false; self.providers.len()];
        for (i, p) in self.providers.iter().enumerate() {
            if i != self.preferred && p.is_software() {
                continue;
            }
            match p.supports(spec) {
                Support::Yes => supported[i] = true,
                Support::No(why) => reasons.push(format!("{}: {why}", p.device())),
            }
        }
        let default: Vec<usize> = std::iter::once(self.preferred)
            .chain((0..self.providers.len()).filter(|&i| i != self.preferred))
            .filter(|&i| supported[i])
            .collect();
        let Some(&first) = default.first() else {
            return Err(CoreError::not_implemented(format!(
                "{kind} ({}) on any provider: {}",
                spec.format().map_or_else(|| "f32".to_owned(), |f| f.name().to_owned()),
                reasons.join("; ")
            )));
        };
        // Each row class's first provider: the table's when it has the key.
        let size = SizeClass::of(spec.weight_bytes());
        let format = spec.format().map(|f| f.name().to_owned());
        if let Some(budget) = self.calibrate_missing.filter(|_| !self.explicit) {
            self.calibrate_keys(spec, &supported, budget);
        }
        let firsts: [usize; 4] = MClass::ALL.map(|m| {
            let key = OpKey {
                op: kind,
                format: format.clone(),
                m,
                size,
            };
            self.table_order(&key)
                .and_then(|order| order.into_iter().find(|&i| supported[i]))
                .unwrap_or(first)
        });
        let fallback =
            (self.providers[first].device() != wanted && firsts.contains(&first)).then(|| reasons.join("; "));
        if let Some(why) = &fallback {
            self.fall_back(kind, wanted, self.providers[first].device(), why)?;
        }
        // The slots: each class's first provider, then one fallback (the next in the
        // default order), each prepared once (weights are borrowed only here).
        let mut order: Vec<usize> = Vec::with_capacity(3);
        for i in firsts {
            if !order.contains(&i) {
                order.push(i);
            }
        }
        if let Some(&next) = default.iter().find(|i| !order.contains(i)) {
            order.push(next);
        }
        let slots = order
            .iter()
            .map(|&i| {
                Ok(Slot {
                    provider: i,
                    device: self.providers[i].device(),
                    host_memory: self.providers[i].reads_host_memory(),
                    prepared: Arc::from(self.providers[i].prepare(spec)?),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let by_m = firsts.map(|i| order.iter().position(|&o| o == i).unwrap_or(0) as u8);
        Ok(Placed {
            exec: Arc::clone(self),
            kind,
            slots,
            by_m,
            fallback,
            format,
            size,
        })
    }

    /// The opt-in calibration of the keys of `spec` the table lacks (see
    /// [`ExecutorBuilder::calibrate_missing`]).
    fn calibrate_keys(&self, spec: &OpSpec<'_>, supported: &[bool], budget: std::time::Duration) {
        let candidates: Vec<Arc<dyn Provider>> = self
            .providers
            .iter()
            .zip(supported)
            .filter(|(p, &ok)| ok && !p.is_software())
            .map(|(p, _)| Arc::clone(p))
            .collect();
        if candidates.len() < 2 {
            return;
        }
        let missing: Vec<crate::calibrate::Probe> = MClass::ALL
            .into_iter()
            .filter_map(|m| crate::calibrate::Probe::for_spec(spec, m))
            .filter(|probe| {
                let table = self.table.read().unwrap_or_else(std::sync::PoisonError::into_inner);
                table.as_ref().and_then(|t| t.entry(&probe.key())).is_none()
            })
            .collect();
        if missing.is_empty() {
            return;
        }
        let per_measure = budget / u32::try_from(2 * candidates.len()).unwrap_or(u32::MAX);
        let options = crate::calibrate::CalibrateOptions {
            time_per_measure: per_measure,
            ..Default::default()
        };
        let _span =
            tracing::info_span!("aihal.calibrate_missing", op = spec.kind().name(), keys = missing.len()).entered();
        match crate::calibrate::calibrate_entries(&candidates, &missing, &options) {
            Ok(entries) => {
                let mut table = self.table.write().unwrap_or_else(std::sync::PoisonError::into_inner);
                let table = table.get_or_insert_with(|| DispatchTable {
                    machine: crate::table::Fingerprint::of_this_machine(crate::calibrate::fingerprint_providers(
                        self.providers.iter().filter(|p| !p.is_software()).map(|p| &**p),
                    )),
                    entries: Vec::new(),
                    transfers: Vec::new(),
                });
                for e in entries {
                    if table.entry(&e.key).is_none() {
                        table.entries.push(e);
                    }
                }
            }
            Err(e) => {
                warn_once(
                    &format!("aihal-calibrate-missing:{}", spec.kind()),
                    &format!(
                        "aihal: calibrating {} when first needed failed ({e}); it is placed in the default order",
                        spec.kind()
                    ),
                );
            }
        }
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
    slots: Vec<Slot>,
    /// The slot that runs first for each row class ([`MClass`] order).
    by_m: [u8; 4],
    fallback: Option<String>,
    /// The op's dispatch-table key without its row class: weight format and size class.
    format: Option<String>,
    size: SizeClass,
}

/// One provider an op was placed on, with its prepared form.
struct Slot {
    provider: usize,
    device: Device,
    host_memory: bool,
    /// Shared by the ops made from this one ([`Placed::tied_rows`]).
    prepared: Arc<dyn Prepared>,
}

/// A prepared linear layer seen as an embedding lookup over its weight's rows.
struct WeightRows(Arc<dyn Prepared>);

impl Prepared for WeightRows {
    fn run(&self, call: Call<'_>) -> Result<Tensor> {
        match call {
            Call::Embedding { ids, lead } => self.0.weight_rows(ids, lead),
            other => Err(CoreError::invalid_input(format!(
                "an embedding tied to a linear layer's weight: unexpected call {other:?}"
            ))),
        }
    }
}

impl Slot {
    /// Whether `t` can be handed to this slot's provider as it is.
    #[inline]
    fn takes(&self, t: &Tensor) -> bool {
        let d = t.device();
        d == self.device || (self.host_memory && d == Device::Cpu)
    }
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
        self.slots[usize::from(self.by_m[0])].device
    }

    /// The device that runs a call of `rows` rows first.
    pub(crate) fn device_for(&self, rows: usize) -> Device {
        self.slots[usize::from(self.by_m[MClass::of(rows) as usize])].device
    }

    /// The executor.
    pub(crate) fn executor(&self) -> &Arc<Executor> {
        &self.exec
    }

    /// The op's dispatch-table key for calls of row class `m`.
    pub(crate) fn key(&self, m: MClass) -> OpKey {
        OpKey {
            op: self.kind,
            format: self.format.clone(),
            m,
            size: self.size,
        }
    }

    /// An embedding lookup over the rows of this op's weight (a linear layer's, for an
    /// embedding tied to it): the slots whose prepared form gives its weight's rows
    /// ([`Prepared::weight_rows`], asked for row 0 here), shared, nothing prepared or
    /// copied again; each row class runs first where this op runs it.
    ///
    /// Errors: `NotImplemented` when the slot that runs some row class first does not give
    /// its rows.
    pub(crate) fn tied_rows(&self) -> Result<Placed> {
        let one = crate::tensor::Shape::new(&[1])?;
        let gives: Vec<bool> = self
            .slots
            .iter()
            .map(|s| s.prepared.weight_rows(&[0], one).is_ok())
            .collect();
        if let Some(&b) = self.by_m.iter().find(|&&b| !gives[usize::from(b)]) {
            return Err(CoreError::not_implemented(format!(
                "{} on {}: its prepared form does not give its weight's rows",
                self.kind,
                self.slots[usize::from(b)].device
            )));
        }
        let keep: Vec<usize> = (0..self.slots.len()).filter(|&i| gives[i]).collect();
        let slots = keep
            .iter()
            .map(|&i| {
                let s = &self.slots[i];
                Slot {
                    provider: s.provider,
                    device: s.device,
                    host_memory: s.host_memory,
                    prepared: Arc::new(WeightRows(Arc::clone(&s.prepared))),
                }
            })
            .collect();
        let by_m = self
            .by_m
            .map(|b| keep.iter().position(|&i| i == usize::from(b)).unwrap_or(0) as u8);
        Ok(Placed {
            exec: Arc::clone(&self.exec),
            kind: OpKind::Embedding,
            slots,
            by_m,
            fallback: self.fallback.clone(),
            format: self.format.clone(),
            size: self.size,
        })
    }

    /// Makes the provider of `device` the first to run calls of row class `m` (a plan's
    /// choice). It must be one the op was prepared on ([`Placed::devices`]); the others stay
    /// the fallbacks. An explicit device request or strict mode is not overridden: pinning
    /// elsewhere is then an error.
    pub(crate) fn pin(&mut self, m: MClass, device: Device) -> Result<()> {
        let Some(slot) = self.slots.iter().position(|s| s.device == device) else {
            return Err(CoreError::not_implemented(format!(
                "{} on {device}: it was prepared on {} only",
                self.kind,
                self.slots
                    .iter()
                    .map(|s| s.device.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        };
        if (self.exec.explicit || self.exec.is_strict()) && device != self.exec.device() {
            return Err(CoreError::invalid_config(format!(
                "{}: a plan puts it on {device}, but {} was requested{}",
                self.kind,
                self.exec.device(),
                if self.exec.is_strict() {
                    " in strict mode"
                } else {
                    " explicitly"
                }
            )));
        }
        self.by_m[m as usize] = slot as u8;
        Ok(())
    }

    /// Runs the op: on each placed provider in turn until one does not answer
    /// `NotImplemented`, moving the inputs there first (attention runs on its first provider
    /// only: its cache lives there).
    pub(crate) fn run<const N: usize>(&self, inputs: [&Tensor; N], mut args: Args<'_>) -> Result<Dispatched<Tensor>> {
        let exec = &*self.exec;
        // The row count matters only when a table placed the row classes apart.
        let start = if self.by_m.iter().all(|&b| b == self.by_m[0]) {
            usize::from(self.by_m[0])
        } else {
            let rows = match (&args, inputs.first()) {
                (Args::Embedding { ids, .. }, _) => ids.len(),
                (_, Some(t)) => t.numel() / t.shape().last().max(1),
                (_, None) => 1,
            };
            usize::from(self.by_m[MClass::of(rows) as usize])
        };
        // The common case: every input already on the first provider, which runs the call.
        let first = &self.slots[start];
        let quick = inputs.iter().all(|t| first.takes(t));
        if quick && self.slots.len() == 1 {
            let output = self.run_on(first, args.call(&inputs))?;
            return Ok(Dispatched {
                output,
                ran_on: first.device,
                fallback: self.fallback.clone(),
            });
        }
        // The row class's slot first, then the others in order; attention runs on its
        // cache's provider only.
        let tries = if matches!(args, Args::Attention { .. }) {
            1
        } else {
            self.slots.len()
        };
        let mut order = std::iter::once(start)
            .chain((0..self.slots.len()).filter(|&n| n != start))
            .take(tries)
            .peekable();
        let mut fallback = None;
        while let Some(n) = order.next() {
            let slot = &self.slots[n];
            // The common case, every input already there, moves and copies nothing.
            let result = if inputs.iter().all(|t| slot.takes(t)) {
                self.run_on(slot, args.call(&inputs))
            } else {
                let moved = self.move_inputs(inputs, slot.provider)?;
                let here: [&Tensor; N] = std::array::from_fn(|k| moved[k].as_ref().unwrap_or(inputs[k]));
                self.run_on(slot, args.call(&here))
            };
            match (result, order.peek()) {
                (Ok(output), _) => {
                    return Ok(Dispatched {
                        output,
                        ran_on: slot.device,
                        fallback: fallback.or_else(|| self.fallback.clone()),
                    })
                }
                (Err(e), Some(&next)) if e.is_not_implemented() => {
                    let why = e.to_string();
                    exec.fall_back(self.kind, slot.device, self.slots[next].device, &why)?;
                    fallback = Some(why);
                }
                (Err(e), _) => return Err(e),
            }
        }
        Err(CoreError::not_implemented(format!(
            "{}: no provider left to run it",
            self.kind
        )))
    }

    /// Runs the op on the provider of `device` only, if the op was placed there (for
    /// `GpuDispatchable`'s per-device routes).
    pub(crate) fn run_at<const N: usize>(
        &self,
        device: Device,
        inputs: [&Tensor; N],
        mut args: Args<'_>,
    ) -> Result<Dispatched<Tensor>> {
        let Some(slot) = self.slots.iter().find(|s| s.device == device) else {
            return Err(CoreError::not_implemented(format!(
                "{} on {device}: it was placed on {}",
                self.kind,
                self.slots
                    .iter()
                    .map(|s| s.device.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        };
        let moved = self.move_inputs(inputs, slot.provider)?;
        let here: [&Tensor; N] = std::array::from_fn(|k| moved[k].as_ref().unwrap_or(inputs[k]));
        let output = self.run_on(slot, args.call(&here))?;
        Ok(Dispatched {
            output,
            ran_on: slot.device,
            fallback: None,
        })
    }

    /// The devices the op was placed on.
    pub(crate) fn devices(&self) -> impl Iterator<Item = Device> + '_ {
        self.slots.iter().map(|s| s.device)
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
        // The input's shape is formatted only when a subscriber records the span.
        let shape = match &call {
            Call::Unary(x) | Call::Binary(x, _) | Call::Rope { x, .. } => x.dims(),
            Call::Attention { q, .. } => q.dims(),
            Call::Embedding { lead, .. } => lead.dims(),
        };
        let span = tracing::debug_span!("aihal.op", op = self.kind.name(), provider = %slot.device, shape = ?shape);
        let _entered = span.enter();
        let record = &self.exec.record;
        if record.start(self.kind, slot.provider) {
            let t0 = Instant::now();
            let out = self.guarded(slot, call)?;
            record.timed(self.kind, slot.provider, t0.elapsed());
            Ok(out)
        } else {
            self.guarded(slot, call)
        }
    }

    /// Runs the prepared op, turning a panic inside the provider (a bug there, or in a task it
    /// handed to a thread pool) into a `Kernel` error for this caller: the executor, the op
    /// and the pools keep serving other calls. The panic hook still prints the panic.
    ///
    /// Unwind safety: the provider's prepared state is read-only during a call; what a
    /// panicking call may leave half written is its own output and, for attention, the KV
    /// cache it was appending to, which the error tells the caller to clear.
    #[inline]
    fn guarded(&self, slot: &Slot, call: Call<'_>) -> Result<Tensor> {
        let attention = matches!(call, Call::Attention { .. });
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| slot.prepared.run(call))).unwrap_or_else(|payload| {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".into());
            Err(CoreError::kernel(
                slot.device.to_string(),
                self.kind.name(),
                format!(
                    "the provider panicked: {what}{}",
                    if attention {
                        "; clear the KV cache this call was appending to before using it again"
                    } else {
                        ""
                    }
                ),
            ))
        })
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
