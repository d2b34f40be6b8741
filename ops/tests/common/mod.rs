//! Test providers shared by the executor and table tests: a host one that runs add and
//! softmax, and a "device" one (it claims `cuda:0`) that keeps its tensors as device data,
//! counts its transfers, runs the ops it is given, and answers `NotImplemented` for inputs of
//! more than `max_values` values (or a real error, when asked to).
#![allow(dead_code, unreachable_pub)] // each test binary uses part of it

use std::any::Any;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use aihal_core::{CoreError, Device, Result};
use aihal_ops::{Call, DeviceData, Executor, KvLayout, KvStore, OpSpec, Prepared, Provider, Shape, Support, Tensor};

pub const GPU: Device = Device::Cuda { ordinal: 0 };

/// Runs add and softmax on host slices (the reference's arithmetic).
pub fn compute(spec: Kind, a: &[f32], b: Option<&[f32]>, last: usize) -> Vec<f32> {
    match spec {
        Kind::Add => a.iter().zip(b.unwrap()).map(|(x, y)| x + y).collect(),
        Kind::Softmax => aihal_reference::softmax(a, last).unwrap(),
    }
}

#[derive(Clone, Copy, Debug)]
pub enum Kind {
    Add,
    Softmax,
}

fn kind_of(spec: &OpSpec<'_>) -> Option<Kind> {
    match spec {
        OpSpec::Add => Some(Kind::Add),
        OpSpec::Softmax => Some(Kind::Softmax),
        _ => None,
    }
}

pub struct Host;
struct HostOp(Kind);

impl Prepared for HostOp {
    fn run(&self, call: Call<'_>) -> Result<Tensor> {
        let (a, b) = match call {
            Call::Unary(a) => (a, None),
            Call::Binary(a, b) => (a, Some(b)),
            _ => unreachable!(),
        };
        let y = compute(
            self.0,
            a.host_slice().unwrap(),
            b.map(|b| b.host_slice().unwrap()),
            a.shape().last(),
        );
        Tensor::with_shape(y, a.shape())
    }
}

impl Provider for Host {
    fn device(&self) -> Device {
        Device::Cpu
    }
    fn name(&self) -> String {
        "host".into()
    }
    fn supports(&self, spec: &OpSpec<'_>) -> Support {
        if kind_of(spec).is_some() {
            Support::Yes
        } else {
            Support::No("test host runs add and softmax only".into())
        }
    }
    fn prepare(&self, spec: &OpSpec<'_>) -> Result<Box<dyn Prepared>> {
        Ok(Box::new(HostOp(kind_of(spec).unwrap())))
    }
    fn upload(&self, data: &[f32], shape: Shape) -> Result<Tensor> {
        Tensor::with_shape(data.to_vec(), shape)
    }
    fn new_kv_store(&self, _: KvLayout) -> Result<Box<dyn KvStore>> {
        Err(CoreError::not_implemented("no cache here"))
    }
}

#[derive(Debug, Default)]
pub struct Counters {
    pub uploads: AtomicUsize,
    pub downloads: AtomicUsize,
    pub runs: AtomicUsize,
}

#[derive(Clone, Copy, PartialEq)]
pub enum Behaviour {
    Right,
    /// Adds 1 to the first value of every output.
    Wrong,
    Fails,
    /// Panics when the first input value is negative (a provider bug), runs right otherwise.
    Panics,
}

pub struct Gpu {
    pub counters: Arc<Counters>,
    pub behaviour: Behaviour,
    pub ops: &'static [&'static str],
    /// Inputs of more values answer `NotImplemented`.
    pub max_values: usize,
}

#[derive(Debug)]
struct GpuData {
    values: Vec<f32>,
    counters: Arc<Counters>,
}

impl DeviceData for GpuData {
    fn device(&self) -> Device {
        GPU
    }
    fn read(&self) -> Result<Vec<f32>> {
        self.counters.downloads.fetch_add(1, Ordering::SeqCst);
        Ok(self.values.clone())
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

struct GpuOp {
    kind: Kind,
    counters: Arc<Counters>,
    behaviour: Behaviour,
    max_values: usize,
}

fn gpu_values(t: &Tensor) -> &[f32] {
    &t.device_data()
        .expect("the executor moved the input here")
        .as_any()
        .downcast_ref::<GpuData>()
        .unwrap()
        .values
}

impl Prepared for GpuOp {
    fn run(&self, call: Call<'_>) -> Result<Tensor> {
        let (a, b) = match call {
            Call::Unary(a) => (a, None),
            Call::Binary(a, b) => (a, Some(b)),
            _ => unreachable!(),
        };
        if a.numel() > self.max_values {
            return Err(CoreError::not_implemented(format!(
                "test gpu: more than {} values",
                self.max_values
            )));
        }
        if self.behaviour == Behaviour::Fails {
            return Err(CoreError::kernel("test", "op", "device lost"));
        }
        assert!(
            self.behaviour != Behaviour::Panics || gpu_values(a)[0] >= 0.0,
            "test gpu: a negative first value"
        );
        self.counters.runs.fetch_add(1, Ordering::SeqCst);
        let mut y = compute(self.kind, gpu_values(a), b.map(gpu_values), a.shape().last());
        if self.behaviour == Behaviour::Wrong {
            y[0] += 1.0;
        }
        Tensor::on_device(
            Arc::new(GpuData {
                values: y,
                counters: Arc::clone(&self.counters),
            }),
            a.dims(),
        )
    }
}

impl Provider for Gpu {
    fn device(&self) -> Device {
        GPU
    }
    fn name(&self) -> String {
        "test gpu".into()
    }
    fn supports(&self, spec: &OpSpec<'_>) -> Support {
        if self.ops.contains(&spec.kind().name()) {
            Support::Yes
        } else {
            Support::No(format!("test gpu has no {}", spec.kind()))
        }
    }
    fn prepare(&self, spec: &OpSpec<'_>) -> Result<Box<dyn Prepared>> {
        Ok(Box::new(GpuOp {
            kind: kind_of(spec).unwrap(),
            counters: Arc::clone(&self.counters),
            behaviour: self.behaviour,
            max_values: self.max_values,
        }))
    }
    fn upload(&self, data: &[f32], shape: Shape) -> Result<Tensor> {
        self.counters.uploads.fetch_add(1, Ordering::SeqCst);
        Tensor::on_device(
            Arc::new(GpuData {
                values: data.to_vec(),
                counters: Arc::clone(&self.counters),
            }),
            shape.dims(),
        )
    }
    fn new_kv_store(&self, _: KvLayout) -> Result<Box<dyn KvStore>> {
        Err(CoreError::not_implemented("no cache here"))
    }
}

pub fn executor(behaviour: Behaviour, ops: &'static [&'static str], strict: bool) -> (Arc<Executor>, Arc<Counters>) {
    let counters = Arc::new(Counters::default());
    let gpu = Gpu {
        counters: Arc::clone(&counters),
        behaviour,
        ops,
        max_values: 8,
    };
    let exec = Executor::builder()
        .provider(Arc::new(gpu))
        .provider(Arc::new(Host))
        .strict(strict)
        .build()
        .unwrap();
    (exec, counters)
}
