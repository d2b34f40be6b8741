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
