//! The dispatch table: its file (round trip, errors naming file and line, hostile bytes),
//! calibration (parity first, then the measured order), and placement per row class.

mod common;

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use aihal_core::Device;
use aihal_ops::calibrate::{calibrate, CalibrateOptions, Probe, ProbeOp};
use aihal_ops::table::{DispatchTable, Entry, Fingerprint, MClass, Measured, OpKey, Parity, SizeClass};
use aihal_ops::{Executor, OpKind, Provider, Softmax, Tensor};
use common::{Behaviour, Counters, Gpu, Host, GPU};
use proptest::prelude::*;

fn gpu(behaviour: Behaviour) -> Arc<dyn Provider> {
    Arc::new(Gpu {
        counters: Arc::new(Counters {
            uploads: AtomicUsize::new(0),
            downloads: AtomicUsize::new(0),
            runs: AtomicUsize::new(0),
        }),
        behaviour,
        ops: &["add", "softmax"],
        max_values: usize::MAX,
    })
}

fn options() -> CalibrateOptions {
    CalibrateOptions {
        time_per_measure: Duration::from_millis(5),
        include_software: false,
        date: "2026-12-06".into(),
    }
}

fn softmax_probes() -> Vec<Probe> {
    MClass::ALL
        .into_iter()
        .map(|m| Probe {
            op: ProbeOp::Softmax { dim: 64 },
            m,
        })
        .collect()
}

fn measured_table() -> DispatchTable {
    calibrate(&[gpu(Behaviour::Right), Arc::new(Host)], &softmax_probes(), &options()).unwrap()
}

#[test]
fn calibration_writes_every_provider_that_passed_in_the_order_of_its_measured_times() {
    let table = measured_table();
    assert_eq!(table.entries.len(), 4);
    for e in &table.entries {
        assert_eq!(e.key.op, OpKind::Softmax);
        assert_eq!(e.providers.len(), 2, "{e:?}");
        let times: Vec<u64> = e.providers.iter().map(|p| p.median_ns.expect("a time")).collect();
        assert!(
            times.windows(2).all(|w| w[0] <= w[1]),
            "order is not the measured order: {times:?}"
        );
        assert!(e
            .providers
            .iter()
            .all(|p| matches!(p.parity, Parity::Pass { max_error } if max_error <= 1.0)));
    }
    // Both directions of the one pair of providers, two size classes each.
    assert_eq!(table.transfers.len(), 4);
    assert_eq!(table.machine.providers.len(), 2);
}

#[test]
fn a_provider_with_wrong_numbers_never_enters_and_the_table_says_why() {
    let table = calibrate(&[gpu(Behaviour::Wrong), Arc::new(Host)], &softmax_probes(), &options()).unwrap();
    for e in &table.entries {
        let order: Vec<&str> = e.order().collect();
        assert_eq!(order, ["cpu"], "{e:?}");
        let bad = e.providers.iter().find(|p| p.device == "cuda:0").unwrap();
        assert!(bad.median_ns.is_none());
        assert!(
            matches!(&bad.parity, Parity::Fail { reason } if reason.contains("outside tolerance")),
            "{bad:?}"
        );
    }
    // Placement follows the table: softmax never runs on the wrong provider although it is
    // the preferred one.
    let exec = Executor::builder()
        .provider(gpu(Behaviour::Wrong))
        .provider(Arc::new(Host))
        .table(table.clone())
        .build()
        .unwrap();
    let s = Softmax::new(&exec).unwrap();
    for rows in [1, 4, 32, 100] {
        assert_eq!(s.device_for(rows), Device::Cpu);
    }
    let text = table.to_toml();
    assert!(text.contains("outside tolerance"), "{text}");
}

fn hand_table(order_by_m: [[&str; 2]; 4]) -> DispatchTable {
    DispatchTable {
        machine: Fingerprint::of_this_machine(vec![]),
        entries: MClass::ALL
            .into_iter()
            .zip(order_by_m)
            .map(|(m, order)| Entry {
                key: OpKey {
                    op: OpKind::Softmax,
                    format: None,
                    m,
                    size: SizeClass::K1M,
                },
                date: "2026-12-06".into(),
                providers: order
                    .iter()
                    .map(|d| Measured {
                        device: (*d).into(),
                        median_ns: Some(1000),
                        parity: Parity::Pass { max_error: 0.1 },
                    })
                    .collect(),
            })
            .collect(),
        transfers: vec![],
    }
}

#[test]
fn the_table_places_each_row_class_on_its_own_fastest_provider() {
    // A device fast for prompts, slow for decode: the table says so.
    let table = hand_table([
        ["cpu", "cuda:0"],
        ["cpu", "cuda:0"],
        ["cuda:0", "cpu"],
        ["cuda:0", "cpu"],
    ]);
    let exec = Executor::builder()
        .provider(Arc::new(Host))
        .provider(gpu(Behaviour::Right))
        .table(table.clone())
        .build()
        .unwrap();
    let s = Softmax::new(&exec).unwrap();
    let rows = |n: usize| Tensor::from_vec(vec![0.5; n * 4], &[n, 4]).unwrap();
    assert_eq!(s.forward_traced(&rows(1)).unwrap().ran_on, Device::Cpu);
    assert_eq!(s.forward_traced(&rows(8)).unwrap().ran_on, Device::Cpu);
    let big = s.forward_traced(&rows(100)).unwrap();
    assert_eq!((big.ran_on, big.fallback), (GPU, None));
    assert_eq!(s.forward_traced(&rows(9)).unwrap().ran_on, GPU);
    assert!(exec.report().fallbacks.is_empty());

    // An explicit device request wins over the table.
    let pinned = Executor::builder()
        .provider(Arc::new(Host))
        .provider(gpu(Behaviour::Right))
        .device(Device::Cpu)
        .table(table)
        .build()
        .unwrap();
    assert_eq!(Softmax::new(&pinned).unwrap().device_for(100), Device::Cpu);
}

#[test]
fn a_table_round_trips_through_its_file() {
    let table = measured_table();
    let text = table.to_toml();
    let back = DispatchTable::parse(&text, "dispatch.toml").unwrap();
    assert_eq!(back, table);
}

#[test]
fn malformed_tables_are_errors_naming_the_file_and_line() {
    let good = measured_table().to_toml();
    let bad_op = good.replacen("op = \"softmax\"", "op = \"softmin\"", 1);
    let line = bad_op.lines().position(|l| l.contains("softmin")).unwrap() + 1;
    let err = DispatchTable::parse(&bad_op, "t.toml").unwrap_err().to_string();
    assert!(
        err.contains(&format!("t.toml:{line}:")) && err.contains("softmin"),
        "{err}"
    );

    let bad_parity = good.replacen("parity = \"pass\"", "parity = \"maybe\"", 1);
    let err = DispatchTable::parse(&bad_parity, "t.toml").unwrap_err().to_string();
    assert!(err.contains("t.toml:") && err.contains("maybe"), "{err}");

    let err = DispatchTable::parse("[machine]\ncpu = 3\n", "t.toml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("t.toml:2:"), "{err}");

    let no_time = good.replacen("median_ns = ", "unused_ns = ", 1);
    assert!(DispatchTable::parse(&no_time, "t.toml").is_err());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = DispatchTable::parse(&text, "fuzz.toml");
    }

    #[test]
    fn mutated_real_tables_parse_or_fail_cleanly_and_place_only_on_real_providers(
        cuts in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6)
    ) {
        let good = hand_table([["cpu", "cuda:0"], ["cuda:0", "cpu"], ["cpu", "cuda:0"], ["cuda:0", "cpu"]]).to_toml();
        let mut bytes = good.into_bytes();
        for (at, b) in cuts {
            let i = at.index(bytes.len());
            bytes[i] = b;
        }
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if let Ok(table) = DispatchTable::parse(&text, "mutated.toml") {
            // Whatever parsed, placement follows it onto providers that exist and run the op.
            let exec = Executor::builder()
                .provider(Arc::new(Host))
                .provider(gpu(Behaviour::Right))
                .table(table)
                .build()
                .unwrap();
            let s = Softmax::new(&exec).unwrap();
            for rows in [1, 5, 20, 70] {
                let d = s.device_for(rows);
                prop_assert!(d == Device::Cpu || d == GPU, "{d}");
                let y = s.forward(&Tensor::from_vec(vec![0.0; rows * 2], &[rows, 2]).unwrap()).unwrap();
                prop_assert_eq!(y.to_vec().unwrap(), vec![0.5; rows * 2]);
            }
        }
    }
}

/// A provider that runs quantized linear layers with the reference's arithmetic, on a device
/// of the test's choosing (its tensors stay in host memory).
struct RefLinear(Device);

struct RefLinearOp(aihal_quantize::QuantizedTensor);

impl aihal_ops::Prepared for RefLinearOp {
    fn run(&self, call: aihal_ops::Call<'_>) -> aihal_core::Result<Tensor> {
        let aihal_ops::Call::Unary(x) = call else {
            unreachable!()
        };
        let (n, k) = (self.0.shape()[0], self.0.shape()[1]);
        let xs = x.to_vec()?;
        let y = aihal_reference::matmul(&xs, xs.len() / k, &self.0)?;
        Tensor::with_shape(y, x.shape().with_last(n))
    }
}

impl Provider for RefLinear {
    fn device(&self) -> Device {
        self.0
    }
    fn name(&self) -> String {
        format!("reference linear on {}", self.0)
    }
    fn supports(&self, spec: &aihal_ops::OpSpec<'_>) -> aihal_ops::Support {
        match spec {
            aihal_ops::OpSpec::Linear { .. } => aihal_ops::Support::Yes,
            _ => aihal_ops::Support::No("linear only".into()),
        }
    }
    fn prepare(&self, spec: &aihal_ops::OpSpec<'_>) -> aihal_core::Result<Box<dyn aihal_ops::Prepared>> {
        let aihal_ops::OpSpec::Linear { weight, .. } = spec else {
            unreachable!()
        };
        Ok(Box::new(RefLinearOp((*weight).clone())))
    }
    fn upload(&self, data: &[f32], shape: aihal_ops::Shape) -> aihal_core::Result<Tensor> {
        Tensor::with_shape(data.to_vec(), shape)
    }
    fn new_kv_store(&self, _: aihal_ops::KvLayout) -> aihal_core::Result<Box<dyn aihal_ops::KvStore>> {
        Err(aihal_core::CoreError::not_implemented("no cache"))
    }
}

#[test]
fn the_opt_in_mode_calibrates_a_missing_key_when_an_op_is_first_placed() {
    use aihal_quantize::{quantize, QuantFormat};
    let w = quantize(QuantFormat::Q8_0, &vec![0.25; 32 * 64], &[32, 64]).unwrap();
    let exec = Executor::builder()
        .provider(Arc::new(RefLinear(GPU)))
        .provider(Arc::new(RefLinear(Device::Cpu)))
        .calibrate_missing(Duration::from_millis(4))
        .build()
        .unwrap();
    assert!(exec.table().is_none());
    let layer = aihal_ops::Linear::new(&exec, &w, None).unwrap();
    let table = exec.table().expect("the keys were calibrated");
    assert_eq!(table.entries.len(), 4);
    for e in &table.entries {
        assert_eq!(e.key.op, OpKind::Linear);
        assert_eq!(e.key.format.as_deref(), Some("q8_0"));
        assert_eq!(e.order().count(), 2, "{e:?}");
        // Placement follows what was measured.
        let first = e.order().next().unwrap();
        assert_eq!(layer.device_for(e.key.m.representative()).to_string(), first);
    }
    // A second layer of the same key is not measured again.
    let _again = aihal_ops::Linear::new(&exec, &w, None).unwrap();
    assert_eq!(exec.table().unwrap().entries.len(), 4);

    // With one hardware provider there is nothing to choose: nothing is measured.
    let single = Executor::builder()
        .provider(Arc::new(RefLinear(Device::Cpu)))
        .calibrate_missing(Duration::from_millis(4))
        .build()
        .unwrap();
    aihal_ops::Linear::new(&single, &w, None).unwrap();
    assert!(single.table().is_none());
}
