//! Ops following a chain plan: the table's per-op order would put a short decode chain on
//! the device (each op slightly faster there), but the plan counts the moves in and out and
//! keeps decode on the host, while a prompt's chain goes to the device and moves its data once
//! each way. An explicit device request wins over any plan.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use aihal_core::{CoreError, Device};
use aihal_ops::plan::{follow_plan, ChainOp};
use aihal_ops::table::{DispatchTable, Entry, Fingerprint, MClass, Measured, OpKey, Parity, SizeClass, Transfer};
use aihal_ops::{Add, Executor, OpKind, Planned, Softmax, Tensor};
use common::{Behaviour, Counters, Gpu, Host, GPU};

const DIM: usize = 4;

fn measured(device: &str, ns: u64) -> Measured {
    Measured {
        device: device.into(),
        median_ns: Some(ns),
        parity: Parity::Pass { max_error: 0.0 },
    }
}

/// Decode (one row): the device is 10 % faster per op, but a move costs 10x an op. A prompt
/// (65+ rows): the device is 100x faster.
fn table() -> DispatchTable {
    let gpu = GPU.to_string();
    let mut entries = Vec::new();
    for op in [OpKind::Softmax, OpKind::Add] {
        for (m, cpu_ns, gpu_ns) in [(MClass::One, 1_000, 900), (MClass::Many, 100_000, 1_000)] {
            entries.push(Entry {
                key: OpKey {
                    op,
                    format: None,
                    m,
                    size: SizeClass::of(0),
                },
                date: "2026-12-06".into(),
                providers: vec![measured(&gpu, gpu_ns), measured("cpu", cpu_ns)],
            });
        }
    }
    let transfers = [("cpu", gpu.as_str()), (gpu.as_str(), "cpu")]
        .into_iter()
        .flat_map(|(from, to)| {
            SizeClass::ALL.into_iter().map(move |size| Transfer {
                from: from.into(),
                to: to.into(),
                size,
                median_ns: 10_000,
            })
        })
        .collect();
    DispatchTable {
        machine: Fingerprint::of_this_machine(vec![]),
        entries,
        transfers,
    }
}

fn executor(explicit_cpu: bool) -> (Arc<Executor>, Arc<Counters>) {
    let counters = Arc::new(Counters::default());
    let gpu = Gpu {
        counters: Arc::clone(&counters),
        behaviour: Behaviour::Right,
        ops: &["softmax", "add"],
        max_values: usize::MAX,
    };
    let mut b = Executor::builder()
        .provider(Arc::new(gpu))
        .provider(Arc::new(Host))
        .table(table());
    if explicit_cpu {
        b = b.device(Device::Cpu);
    }
    (b.build().unwrap(), counters)
}

struct Chain {
    first: Softmax,
    add: Add,
    last: Softmax,
}

impl Chain {
    fn new(exec: &Arc<Executor>) -> Self {
        Self {
            first: Softmax::new(exec).unwrap(),
            add: Add::new(exec).unwrap(),
            last: Softmax::new(exec).unwrap(),
        }
    }

    /// Runs the chain on `rows` rows; the devices each op ran on, and the output.
    fn run(&self, rows: usize) -> (Vec<Device>, Vec<f32>) {
        let x = Tensor::from_vec((0..rows * DIM).map(|i| (i % 5) as f32).collect(), &[rows, DIM]).unwrap();
        let a = self.first.forward_traced(&x).unwrap();
        let b = self.add.forward_traced(&a.output, &a.output).unwrap();
        let c = self.last.forward_traced(&b.output).unwrap();
        (vec![a.ran_on, b.ran_on, c.ran_on], c.output.to_vec().unwrap())
    }

    fn plan(&mut self, exec: &Executor, m: MClass) -> aihal_core::Result<aihal_ops::plan::Plan> {
        let bytes = m.representative() * DIM * 4;
        let mut ops: [ChainOp<'_>; 3] = [
            ChainOp {
                op: &mut self.first as &mut dyn Planned,
                input_bytes: bytes,
            },
            ChainOp {
                op: &mut self.add,
                input_bytes: bytes,
            },
            ChainOp {
                op: &mut self.last,
                input_bytes: bytes,
            },
        ];
        follow_plan(exec, &mut ops, m)
    }
}

#[test]
fn decode_stays_on_the_host_and_a_prompt_goes_to_the_device_once_planned() {
    let (exec, counters) = executor(false);
    let mut chain = Chain::new(&exec);
    // Op by op, the table's order sends a decode step to the device: three ops, a move in and
    // a move out.
    let (before, want) = chain.run(1);
    assert_eq!(before, vec![GPU; 3]);

    let decode = chain.plan(&exec, MClass::One).unwrap();
    assert_eq!(decode.devices, vec!["cpu"; 3], "{decode:?}");
    assert_eq!(decode.transfers, 0);
    let prompt = chain.plan(&exec, MClass::Many).unwrap();
    assert_eq!(prompt.devices, vec![GPU.to_string(); 3], "{prompt:?}");
    assert_eq!(prompt.transfers, 2, "in once, out once");

    let uploads = counters.uploads.load(Ordering::SeqCst);
    let (after, got) = chain.run(1);
    assert_eq!(after, vec![Device::Cpu; 3]);
    assert_eq!(got, want, "the same values on the host");
    assert_eq!(
        counters.uploads.load(Ordering::SeqCst),
        uploads,
        "a decode step moves nothing"
    );

    let downloads = counters.downloads.load(Ordering::SeqCst);
    let (ran, _) = chain.run(128);
    assert_eq!(ran, vec![GPU; 3]);
    assert_eq!(
        counters.uploads.load(Ordering::SeqCst),
        uploads + 1,
        "the prompt moves in once"
    );
    assert_eq!(counters.downloads.load(Ordering::SeqCst), downloads + 1, "and out once");
}

#[test]
fn an_explicit_device_wins_over_a_plan_and_a_failed_plan_changes_nothing() {
    let (exec, _) = executor(true);
    let mut chain = Chain::new(&exec);
    let err = chain.plan(&exec, MClass::Many).unwrap_err();
    assert!(matches!(err, CoreError::InvalidConfig { .. }), "{err}");
    let (ran, _) = chain.run(128);
    assert_eq!(ran, vec![Device::Cpu; 3], "every op still runs where it was requested");
}

#[test]
fn without_a_table_there_is_no_plan() {
    let exec = Executor::builder().provider(Arc::new(Host)).build().unwrap();
    let mut chain = Chain::new(&exec);
    let err = chain.plan(&exec, MClass::One).unwrap_err();
    assert!(
        err.is_not_implemented() && err.to_string().contains("calibrate"),
        "{err}"
    );
}

#[test]
fn an_op_the_table_never_measured_stays_where_it_runs_and_its_moves_still_count() {
    let counters = Arc::new(Counters::default());
    let gpu = Gpu {
        counters: Arc::clone(&counters),
        behaviour: Behaviour::Right,
        ops: &["softmax", "add"],
        max_values: usize::MAX,
    };
    let mut t = table();
    t.entries.retain(|e| e.key.op != OpKind::Add);
    let exec = Executor::builder()
        .provider(Arc::new(gpu))
        .provider(Arc::new(Host))
        .table(t)
        .build()
        .unwrap();
    let mut chain = Chain::new(&exec);
    // Unmeasured, `add` keeps the device placement gave it (the preferred one); for decode the
    // softmaxes would be cheaper on the host, but not by the two moves around `add`.
    assert_eq!(chain.add.device_for(1), GPU);
    let plan = chain.plan(&exec, MClass::One).unwrap();
    assert_eq!(plan.devices, vec![GPU.to_string(); 3], "{plan:?}");
    assert_eq!(plan.transfers, 2);
    let (ran, _) = chain.run(1);
    assert_eq!(ran, vec![GPU; 3]);
}
