//! Plans: which provider runs each op of a chain (a model layer, a whole model) for one
//! phase, chosen from the dispatch table so that the measured op times plus the measured
//! transfers between providers are lowest. Deciding per op at run time costs more than it
//! gains; a plan is computed once per chain and phase and then followed.

use aihal_core::{CoreError, Result};

use crate::table::{DispatchTable, OpKey, Parity};

/// Where a chain's input starts and its output ends, as the table names it.
const HOST: &str = "cpu";

/// A partial plan's (op ns, transfer ns, moves), `None` where no placement reaches.
type Cost = Option<(u64, u64, usize)>;

/// One op of a chain: its table key and the bytes of the activation it takes in (what a
/// move to its provider would carry).
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    /// The op's key (its row class is the phase: 1 for decode, 65+ for a prompt).
    pub key: OpKey,
    /// Bytes of its input activation.
    pub input_bytes: usize,
}

/// A chain's placement, with what it is expected to cost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The device of each step, as the table names it.
    pub devices: Vec<String>,
    /// The steps' measured times, summed.
    pub op_ns: u64,
    /// The moves' measured times, summed (the input in from the host, each change of
    /// device, the output back to the host).
    pub transfer_ns: u64,
    /// How many moves the plan makes.
    pub transfers: usize,
}

impl Plan {
    /// Op and transfer time together.
    pub fn total_ns(&self) -> u64 {
        self.op_ns.saturating_add(self.transfer_ns)
    }
}

/// The lowest-cost placement of `steps` over `devices` (the providers the plan may use, by
/// their table names), the chain's input starting and its output ending in host memory
/// (`"cpu"`).
///
/// A provider can run a step only if the table lists it as passing parity for the step's key
/// with a time; a move between two devices only if the table measured it (a move from or to
/// the host is free when that device is the host).
///
/// Errors: `InvalidInput` for an empty chain or no devices; `NotImplemented` naming the first
/// step no allowed device has a measurement for, or when no placement connects the chain.
pub fn plan_chain(table: &DispatchTable, devices: &[&str], steps: &[Step]) -> Result<Plan> {
    if steps.is_empty() || devices.is_empty() {
        return Err(CoreError::invalid_input(
            "a plan needs at least one step and one device",
        ));
    }
    let op_ns = |s: &Step, d: &str| -> Option<u64> {
        table
            .entry(&s.key)?
            .providers
            .iter()
            .find(|m| m.device == d && matches!(m.parity, Parity::Pass { .. }))?
            .median_ns
    };
    let move_ns = |from: &str, to: &str, bytes: usize| -> Option<u64> {
        if from == to {
            Some(0)
        } else {
            table.transfer_ns(from, to, bytes)
        }
    };
    for s in steps {
        if devices.iter().all(|d| op_ns(s, d).is_none()) {
            return Err(CoreError::not_implemented(format!(
                "a plan for {}: no allowed device ({}) has a measurement for it; calibrate first",
                s.key,
                devices.join(", ")
            )));
        }
    }
    // cost[d] = (op ns, transfer ns, moves) of the best placement of steps[..=i] ending on d;
    // from[i][d] = the device of step i - 1 on that path.
    let add = |c: (u64, u64, usize), op: u64, mv: u64, moved: bool| {
        (c.0.saturating_add(op), c.1.saturating_add(mv), c.2 + usize::from(moved))
    };
    let total = |c: &(u64, u64, usize)| c.0.saturating_add(c.1);
    let mut cost: Vec<Cost> = devices
        .iter()
        .map(|d| {
            let op = op_ns(&steps[0], d)?;
            let mv = move_ns(HOST, d, steps[0].input_bytes)?;
            Some(add((0, 0, 0), op, mv, *d != HOST))
        })
        .collect();
    let mut from: Vec<Vec<usize>> = Vec::with_capacity(steps.len());
    from.push(vec![0; devices.len()]);
    for s in &steps[1..] {
        let mut next: Vec<Cost> = vec![None; devices.len()];
        let mut back = vec![0; devices.len()];
        for (j, d) in devices.iter().enumerate() {
            let Some(op) = op_ns(s, d) else { continue };
            for (i, prev) in devices.iter().enumerate() {
                let (Some(c), Some(mv)) = (cost[i], move_ns(prev, d, s.input_bytes)) else {
                    continue;
                };
                let cand = add(c, op, mv, prev != d);
                if next[j].is_none_or(|n| total(&cand) < total(&n)) {
                    next[j] = Some(cand);
                    back[j] = i;
                }
            }
        }
        cost = next;
        from.push(back);
    }
    let last_bytes = steps.last().map_or(0, |s| s.input_bytes);
    let (best, end) = devices
        .iter()
        .enumerate()
        .filter_map(|(j, d)| {
            let c = cost[j]?;
            let mv = move_ns(d, HOST, last_bytes)?;
            Some((j, add(c, 0, mv, *d != HOST)))
        })
        .min_by_key(|(_, c)| total(c))
        .ok_or_else(|| {
            CoreError::not_implemented("no placement connects the chain: a needed move was never measured")
        })?;
    let mut path = vec![best; steps.len()];
    for i in (1..steps.len()).rev() {
        path[i - 1] = from[i][path[i]];
    }
    Ok(Plan {
        devices: path.iter().map(|&j| devices[j].to_owned()).collect(),
        op_ns: end.0,
        transfer_ns: end.1,
        transfers: end.2,
    })
}

/// One op of a chain a plan places: the op and the bytes of the activation it takes in.
pub struct ChainOp<'a> {
    /// The op (any op but attention, which runs where its cache lives).
    pub op: &'a mut dyn crate::Planned,
    /// Bytes of its input activation at the planned row class.
    pub input_bytes: usize,
}

/// Plans `chain` for calls of row class `m` from `exec`'s dispatch table ([`plan_chain`]
/// over the devices each op was prepared on) and makes every op follow it: from then on a
/// call of that row class runs first where the plan says, with no lookup beyond the op's
/// cached slot index. Plan each phase once (decode: [`MClass::One`](crate::table::MClass),
/// a prompt: `Many`); calls of other row classes keep their placement.
///
/// A software device (lavapipe) is planned only when it is the executor's requested device,
/// as in placement. An explicit device request or strict mode wins over the table: a plan
/// that would move an op elsewhere is then an error, and no op is changed.
///
/// An op whose key the table has not measured on any device it was prepared on (an
/// embedding, a rotary embedding: keys calibration does not probe) stays where it runs now,
/// and the moves into and out of it are still counted.
///
/// Errors: `NotImplemented` without a dispatch table or when no placement connects the chain
/// (see [`plan_chain`]); `InvalidInput` for an empty chain; `InvalidConfig` as above.
pub fn follow_plan(exec: &crate::Executor, chain: &mut [ChainOp<'_>], m: crate::table::MClass) -> Result<Plan> {
    let mut table = exec.table().ok_or_else(|| {
        CoreError::not_implemented(
            "following a plan needs a dispatch table: run `cargo run --release --example calibrate` \
             or give the executor one (ExecutorBuilder::table)",
        )
    })?;
    let allowed = |d: &aihal_core::Device| {
        exec.providers()
            .iter()
            .any(|p| p.device() == *d && (!p.is_software() || exec.device() == *d))
    };
    let steps: Vec<Step> = chain
        .iter()
        .map(|c| Step {
            key: c.op.op_key(m),
            input_bytes: c.input_bytes,
        })
        .collect();
    // Each step may go only where its op was prepared. A step whose key the table has not
    // measured anywhere stays where it runs now (counted as free there): the plan moves only
    // what was measured, and the moves around such a step are still counted.
    let mut devices: Vec<String> = Vec::new();
    for (c, s) in chain.iter().zip(&steps) {
        let prepared: Vec<String> =
            c.op.prepared_on()
                .iter()
                .filter(|d| allowed(d))
                .map(ToString::to_string)
                .collect();
        let measured = table.entries.iter_mut().find(|e| e.key == s.key).map(|e| {
            e.providers.retain(|p| {
                prepared.contains(&p.device) && matches!(p.parity, Parity::Pass { .. }) && p.median_ns.is_some()
            });
            !e.providers.is_empty()
        });
        if measured != Some(true) {
            table.entries.retain(|e| e.key != s.key);
            table.entries.push(crate::table::Entry {
                key: s.key.clone(),
                date: String::new(),
                providers: vec![crate::table::Measured {
                    device: c.op.runs_first(m).to_string(),
                    median_ns: Some(0),
                    parity: Parity::Pass { max_error: 0.0 },
                }],
            });
        }
        for d in prepared {
            if !devices.contains(&d) {
                devices.push(d);
            }
        }
    }
    let names: Vec<&str> = devices.iter().map(String::as_str).collect();
    let plan = plan_chain(&table, &names, &steps)?;
    // Resolve every step's device first, so that an error leaves every op as it was.
    let mut targets = Vec::with_capacity(chain.len());
    for (c, name) in chain.iter().zip(&plan.devices) {
        let device =
            c.op.prepared_on()
                .into_iter()
                .find(|d| d.to_string() == *name)
                .ok_or_else(|| {
                    CoreError::not_implemented(format!("the plan names {name}, where the op was not prepared"))
                })?;
        if (exec.is_strict() || exec.device_requested()) && device != exec.device() {
            return Err(CoreError::invalid_config(format!(
                "a plan puts {} on {device}, but {} was requested{}",
                c.op.op_key(m).op,
                exec.device(),
                if exec.is_strict() { " in strict mode" } else { "" }
            )));
        }
        targets.push(device);
    }
    for (c, device) in chain.iter_mut().zip(targets) {
        c.op.pin(m, device)?;
    }
    Ok(plan)
}
