//! Plans over a chain: the phase decides the device when the table says so, moves are
//! counted and paid for, and a plan never costs more than running the whole chain on any one
//! device.

use aihal_ops::plan::{plan_chain, Step};
use aihal_ops::table::{DispatchTable, Entry, Fingerprint, MClass, Measured, OpKey, Parity, SizeClass, Transfer};
use aihal_ops::OpKind;
use proptest::prelude::*;

const CHAIN: [OpKind; 8] = [
    OpKind::RmsNorm,
    OpKind::Linear,
    OpKind::Rope,
    OpKind::Attention,
    OpKind::Linear,
    OpKind::Activation,
    OpKind::Linear,
    OpKind::Softmax,
];

/// The key of step `i` (each linear layer its own format, so every step has its own entry).
fn key(i: usize, m: MClass) -> OpKey {
    let op = CHAIN[i];
    OpKey {
        op,
        format: (op == OpKind::Linear).then(|| format!("w{i}")),
        m,
        size: SizeClass::K1M,
    }
}

fn measured(device: &str, ns: u64) -> Measured {
    Measured {
        device: device.into(),
        median_ns: Some(ns),
        parity: Parity::Pass { max_error: 0.1 },
    }
}

/// `times(op, m)` gives (cpu ns, gpu ns) for each op of the chain; moves cost `move_ns`.
fn table(times: impl Fn(usize, MClass) -> (u64, u64), move_ns: u64) -> DispatchTable {
    let mut entries = Vec::new();
    for m in [MClass::One, MClass::Many] {
        for i in 0..CHAIN.len() {
            let (c, g) = times(i, m);
            entries.push(Entry {
                key: key(i, m),
                date: "2026-12-06".into(),
                providers: vec![measured("cpu", c), measured("wgpu:0", g)],
            });
        }
    }
    let transfers = [("cpu", "wgpu:0"), ("wgpu:0", "cpu")]
        .into_iter()
        .flat_map(|(from, to)| {
            SizeClass::ALL.into_iter().map(move |size| Transfer {
                from: from.into(),
                to: to.into(),
                size,
                median_ns: move_ns,
            })
        })
        .collect();
    DispatchTable {
        machine: Fingerprint::of_this_machine(vec![]),
        entries,
        transfers,
    }
}

fn steps(m: MClass) -> Vec<Step> {
    (0..CHAIN.len())
        .map(|i| Step {
            key: key(i, m),
            input_bytes: 4096,
        })
        .collect()
}

#[test]
fn prefill_goes_to_the_device_that_wins_prompts_and_decode_stays_on_the_cpu() {
    // The device is 5x faster on prompts and 3x slower on one row; a move costs 20 us.
    let t = table(
        |_, m| match m {
            MClass::Many => (500_000, 100_000),
            _ => (10_000, 30_000),
        },
        20_000,
    );
    let devices = ["cpu", "wgpu:0"];
    let prefill = plan_chain(&t, &devices, &steps(MClass::Many)).unwrap();
    assert_eq!(prefill.devices, vec!["wgpu:0"; 8]);
    assert_eq!(prefill.transfers, 2, "one upload, one download");
    assert_eq!((prefill.op_ns, prefill.transfer_ns), (800_000, 40_000));
    let decode = plan_chain(&t, &devices, &steps(MClass::One)).unwrap();
    assert_eq!(decode.devices, vec!["cpu"; 8]);
    assert_eq!((decode.transfers, decode.total_ns()), (0, 80_000));
}

#[test]
fn one_faster_op_is_not_worth_two_moves() {
    // Attention (step 3) is 10 us faster on the device, but a move costs 20 us each way.
    let t = table(|i, _| if i == 3 { (50_000, 40_000) } else { (10_000, 30_000) }, 20_000);
    let plan = plan_chain(&t, &["cpu", "wgpu:0"], &steps(MClass::One)).unwrap();
    assert_eq!(plan.devices, vec!["cpu"; 8]);
    // With cheap moves, it is.
    let t = table(|i, _| if i == 3 { (50_000, 40_000) } else { (10_000, 30_000) }, 1_000);
    let plan = plan_chain(&t, &["cpu", "wgpu:0"], &steps(MClass::One)).unwrap();
    assert_eq!(plan.devices[3], "wgpu:0");
    assert_eq!((plan.transfers, plan.transfer_ns), (2, 2_000));
}

#[test]
fn a_chain_without_measurements_is_a_clear_error() {
    let t = table(|_, _| (1, 1), 1);
    let mut s = steps(MClass::Few);
    s.truncate(1);
    let err = plan_chain(&t, &["cpu"], &s).unwrap_err().to_string();
    assert!(err.contains("rms_norm") && err.contains("calibrate"), "{err}");
    assert!(plan_chain(&t, &["cpu"], &[]).is_err());
}

proptest! {
    #[test]
    fn a_plan_never_costs_more_than_any_single_device(
        times in proptest::collection::vec((1u64..1_000_000, 1u64..1_000_000), 16),
        move_ns in 0u64..500_000,
    ) {
        let t = table(|i, m| times[i + if m == MClass::Many { 8 } else { 0 }], move_ns);
        for m in [MClass::One, MClass::Many] {
            let plan = plan_chain(&t, &["cpu", "wgpu:0"], &steps(m)).unwrap();
            let base = if m == MClass::Many { 8 } else { 0 };
            let all_cpu: u64 = (0..8).map(|i| times[base + i].0).sum();
            let all_gpu: u64 = (0..8).map(|i| times[base + i].1).sum::<u64>() + 2 * move_ns;
            prop_assert!(plan.total_ns() <= all_cpu.min(all_gpu), "{plan:?} vs {all_cpu} / {all_gpu}");
            // The plan's own accounting adds up.
            let ops: u64 = plan.devices.iter().enumerate().map(|(i, d)| {
                let (c, g) = times[base + i];
                if d == "cpu" { c } else { g }
            }).sum();
            prop_assert_eq!(ops, plan.op_ns);
            prop_assert_eq!(plan.transfer_ns, plan.transfers as u64 * move_ns);
        }
    }
}
