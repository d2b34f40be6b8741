//! A planned chain against the same chain on each single provider, side by side: the plan
//! (measured op times plus measured moves, `aihal::ops::plan::follow_plan`) never loses to
//! the best single provider, for a decode step (1 row) and a prompt (128 rows).
//!
//! The chain is a transformer MLP block at MiniLM's width: RMSNorm (384) → Linear Q8_0
//! 384→1536 → SiLU → Linear Q8_0 1536→384 → softmax. The providers are those compiled in:
//! the CPU always; Vulkan (lavapipe here, allowed because it is named) with `--features
//! kernels`; the NPU with `--features rknn` (our emulator of its runtime when
//! `RUST_AI_RKNN_LIB` is unset). Ops a provider cannot run fall back to the CPU in its
//! single-provider run, as they would for a user who asked for that device.
//!
//! The table is calibrated here, in-process, for the chain's keys (a few seconds).
//!
//! `cargo bench --features kernels,rknn --bench plan`
#![allow(missing_docs)] // criterion_group!/criterion_main! generate undocumented items

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use aihal::ops::calibrate::{calibrate, CalibrateOptions, Probe, ProbeOp};
use aihal::ops::plan::{follow_plan, ChainOp};
use aihal::ops::table::MClass;
use aihal::ops::{Activation, Executor, Planned, Provider};
use aihal::quantize::{quantize, QuantFormat};
use aihal::{Act, Device, Linear, LinearPrecision, RmsNorm, Softmax, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

const D: usize = 384;
const H: usize = 1536;

fn values(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        })
        .collect()
}

struct Chain {
    norm: RmsNorm,
    up: Linear,
    act: Act,
    down: Linear,
    soft: Softmax,
}

impl Chain {
    fn new(exec: &Arc<Executor>) -> Self {
        let up = quantize(QuantFormat::Q8_0, &values(1, H * D), &[H, D]).unwrap();
        let down = quantize(QuantFormat::Q8_0, &values(2, D * H), &[D, H]).unwrap();
        Self {
            norm: RmsNorm::new(exec, &vec![1.0; D], 1e-6).unwrap(),
            up: Linear::with_precision(exec, &up, None, LinearPrecision::Int8Activations).unwrap(),
            act: Act::new(exec, Activation::Silu).unwrap(),
            down: Linear::with_precision(exec, &down, None, LinearPrecision::Int8Activations).unwrap(),
            soft: Softmax::new(exec).unwrap(),
        }
    }

    fn run(&self, x: &Tensor) -> Vec<f32> {
        let y = self.norm.forward(x).unwrap();
        let y = self.up.forward(&y).unwrap();
        let y = self.act.forward(&y).unwrap();
        let y = self.down.forward(&y).unwrap();
        self.soft.forward(&y).unwrap().to_vec().unwrap()
    }

    fn follow(&mut self, exec: &Executor, m: MClass) {
        let rows = m.representative();
        let mut ops = [
            ChainOp {
                op: &mut self.norm as &mut dyn Planned,
                input_bytes: rows * D * 4,
            },
            ChainOp {
                op: &mut self.up,
                input_bytes: rows * D * 4,
            },
            ChainOp {
                op: &mut self.act,
                input_bytes: rows * H * 4,
            },
            ChainOp {
                op: &mut self.down,
                input_bytes: rows * H * 4,
            },
            ChainOp {
                op: &mut self.soft,
                input_bytes: rows * D * 4,
            },
        ];
        let plan = follow_plan(exec, &mut ops, m).unwrap();
        println!("plan for {} rows: {:?} ({} moves)", rows, plan.devices, plan.transfers);
    }
}

fn providers() -> Vec<Arc<dyn Provider>> {
    #[cfg(feature = "rknn")]
    if std::env::var_os("RUST_AI_RKNN_LIB").is_none() {
        if let Some(lib) = aihal_rknn_emulator::library_path() {
            std::env::set_var("RUST_AI_RKNN_LIB", lib);
        }
    }
    aihal::builtin_providers()
}

fn bench(c: &mut Criterion) {
    let providers = providers();
    let cpu: Arc<dyn Provider> = providers.iter().find(|p| p.device() == Device::Cpu).cloned().unwrap();
    let mut probes = Vec::new();
    for m in [MClass::One, MClass::Many] {
        for op in [
            ProbeOp::RmsNorm { dim: D },
            ProbeOp::Linear {
                format: QuantFormat::Q8_0,
                n: H,
                k: D,
            },
            ProbeOp::Silu { dim: H },
            ProbeOp::Softmax { dim: D },
        ] {
            probes.push(Probe { op, m });
        }
    }
    let options = CalibrateOptions {
        time_per_measure: Duration::from_millis(100),
        include_software: true,
        ..CalibrateOptions::default()
    };
    let table = calibrate(&providers, &probes, &options).unwrap();
    println!("{}", table.to_toml());

    let mut g = c.benchmark_group("plan");
    g.sample_size(20);
    for (m, rows) in [(MClass::One, 1usize), (MClass::Many, 128)] {
        let x = Tensor::from_vec(values(3, rows * D), &[rows, D]).unwrap();
        // Each provider alone (with the CPU behind it for the ops it cannot run).
        for p in &providers {
            let mut b = Executor::builder().provider(Arc::clone(p));
            if p.device() != Device::Cpu {
                b = b.provider(Arc::clone(&cpu));
            }
            let exec = b.device(p.device()).build().unwrap();
            let chain = Chain::new(&exec);
            g.bench_with_input(BenchmarkId::new(p.device().to_string(), rows), &x, |b, x| {
                b.iter(|| black_box(chain.run(x)));
            });
        }
        // The plan over all of them (a software device is planned because it is preferred).
        let mut b = Executor::builder().table(table.clone());
        for p in &providers {
            b = b.provider(Arc::clone(p));
        }
        if let Some(sw) = providers.iter().find(|p| p.is_software()) {
            b = b.prefer(sw.device());
        }
        let exec = b.build().unwrap();
        let mut chain = Chain::new(&exec);
        chain.follow(&exec, m);
        g.bench_with_input(BenchmarkId::new("planned", rows), &x, |b, x| {
            b.iter(|| black_box(chain.run(x)));
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
