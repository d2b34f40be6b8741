//! The executor's placement, fallbacks, strict mode, record and data movement, with two test
//! providers: a host one that runs everything, and a "device" one (it claims `cuda:0`) that
//! keeps its tensors as device data, counts its transfers, runs only `add` and `softmax`, and
//! answers `NotImplemented` for inputs of more than 8 values (or a real error, when asked to).

use std::any::Any;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use aihal_core::{CoreError, Device, Result};
use aihal_ops::{
    Add, Call, DeviceData, Executor, KvLayout, KvStore, OpKind, OpSpec, Prepared, Provider, Shape, Softmax, Support,
    Tensor,
};

const GPU: Device = Device::Cuda { ordinal: 0 };

/// Runs add and softmax on host slices (the reference's arithmetic).
fn compute(spec: Kind, a: &[f32], b: Option<&[f32]>, last: usize) -> Vec<f32> {
    match spec {
        Kind::Add => a.iter().zip(b.unwrap()).map(|(x, y)| x + y).collect(),
        Kind::Softmax => aihal_reference::softmax(a, last).unwrap(),
    }
}

#[derive(Clone, Copy, Debug)]
enum Kind {
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

struct Host;
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
struct Counters {
    uploads: AtomicUsize,
    downloads: AtomicUsize,
    runs: AtomicUsize,
}

#[derive(Clone, Copy, PartialEq)]
enum Behaviour {
    Right,
    Fails,
}

struct Gpu {
    counters: Arc<Counters>,
    behaviour: Behaviour,
    ops: &'static [&'static str],
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
        if a.numel() > 8 {
            return Err(CoreError::not_implemented("test gpu: more than 8 values"));
        }
        if self.behaviour == Behaviour::Fails {
            return Err(CoreError::kernel("test", "op", "device lost"));
        }
        self.counters.runs.fetch_add(1, Ordering::SeqCst);
        let y = compute(self.kind, gpu_values(a), b.map(gpu_values), a.shape().last());
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

fn executor(behaviour: Behaviour, ops: &'static [&'static str], strict: bool) -> (Arc<Executor>, Arc<Counters>) {
    let counters = Arc::new(Counters::default());
    let gpu = Gpu {
        counters: Arc::clone(&counters),
        behaviour,
        ops,
    };
    let exec = Executor::builder()
        .provider(Arc::new(gpu))
        .provider(Arc::new(Host))
        .strict(strict)
        .build()
        .unwrap();
    (exec, counters)
}

fn t(v: &[f32]) -> Tensor {
    Tensor::from_vec(v.to_vec(), &[v.len()]).unwrap()
}

#[test]
fn a_chain_on_the_device_moves_data_once_in_and_once_out() {
    let (exec, c) = executor(Behaviour::Right, &["add", "softmax"], false);
    assert_eq!(exec.device(), GPU);
    let add = Add::new(&exec).unwrap();
    let softmax = Softmax::new(&exec).unwrap();
    let x = t(&[1.0, 2.0, 3.0, 4.0]);
    let mut y = add.forward(&x, &x).unwrap(); // x is uploaded once per input: two uploads
    for _ in 0..6 {
        y = add.forward(&y, &y).unwrap();
        y = softmax.forward(&y).unwrap();
        assert_eq!(y.device(), GPU, "outputs stay where they were computed");
    }
    assert_eq!(c.uploads.load(Ordering::SeqCst), 2);
    assert_eq!(c.downloads.load(Ordering::SeqCst), 0);
    let got = y.to_vec().unwrap();
    assert_eq!(c.downloads.load(Ordering::SeqCst), 1);
    assert_eq!(exec.moves(), 2);

    // The same chain on the host, for the values.
    let mut want = compute(Kind::Add, &[1.0, 2.0, 3.0, 4.0], Some(&[1.0, 2.0, 3.0, 4.0]), 4);
    for _ in 0..6 {
        want = compute(Kind::Add, &want, Some(&want), 4);
        want = compute(Kind::Softmax, &want, None, 4);
    }
    assert_eq!(got, want);
    let report = exec.report();
    assert_eq!(report.calls(OpKind::Add, GPU), 7);
    assert_eq!(report.calls(OpKind::Softmax, GPU), 6);
    assert!(report.fallbacks.is_empty());
}

#[test]
fn a_chain_over_two_providers_moves_data_exactly_where_placement_changes() {
    // Softmax has no route on the device: it is placed on the host.
    let (exec, c) = executor(Behaviour::Right, &["add"], false);
    let add = Add::new(&exec).unwrap();
    let softmax = Softmax::new(&exec).unwrap();
    assert_eq!((add.device(), softmax.device()), (GPU, Device::Cpu));
    let x = t(&[0.5; 4]);
    let a = add.forward(&x, &x).unwrap(); // 2 uploads (x twice)
    let s = softmax.forward(&a).unwrap(); // 1 download
    let b = add.forward(&s, &s).unwrap(); // 2 uploads
    assert_eq!(b.device(), GPU);
    assert_eq!(c.uploads.load(Ordering::SeqCst), 4);
    assert_eq!(c.downloads.load(Ordering::SeqCst), 1);
    assert_eq!(exec.moves(), 5);
    let report = exec.report();
    assert_eq!(report.fallbacks.len(), 1);
    assert_eq!(report.fallbacks[0].op, OpKind::Softmax);
    assert!(
        report.fallbacks[0].reason.contains("test gpu has no softmax"),
        "{report}"
    );
}

#[test]
fn strict_mode_turns_a_placement_fallback_into_an_error_naming_the_op() {
    let (exec, _) = executor(Behaviour::Right, &["add"], true);
    let err = Softmax::new(&exec).unwrap_err();
    assert!(matches!(err, CoreError::DeviceNotAvailable { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("softmax") && msg.contains("strict"), "{msg}");
    assert!(Add::new(&exec).is_ok());
}

#[test]
fn a_run_time_not_implemented_walks_to_the_next_provider_and_is_recorded() {
    let (exec, c) = executor(Behaviour::Right, &["add"], false);
    let add = Add::new(&exec).unwrap();
    let big = t(&[1.0; 16]);
    let d = add.forward_traced(&big, &big).unwrap();
    assert_eq!(d.ran_on, Device::Cpu);
    assert!(d.fallback.as_deref().unwrap().contains("more than 8 values"));
    assert_eq!(d.output.to_vec().unwrap(), vec![2.0; 16]);
    assert_eq!(c.runs.load(Ordering::SeqCst), 0);
    let report = exec.report();
    assert_eq!(report.calls(OpKind::Add, Device::Cpu), 1);
    assert_eq!(report.fallbacks[0].ran_on, Device::Cpu);
    assert!(report.to_string().contains("fallbacks:"));

    // Strict: the same call is an error.
    let (strict, _) = executor(Behaviour::Right, &["add"], true);
    let add = Add::new(&strict).unwrap();
    assert!(add.forward(&big, &big).is_err());
}

#[test]
fn a_real_provider_error_is_returned_not_hidden_behind_the_next_provider() {
    let (exec, _) = executor(Behaviour::Fails, &["add"], false);
    let add = Add::new(&exec).unwrap();
    let err = add.forward(&t(&[1.0]), &t(&[1.0])).unwrap_err();
    assert!(err.to_string().contains("device lost"), "{err}");
    assert_eq!(exec.report().calls(OpKind::Add, Device::Cpu), 0);
}

#[test]
fn builder_errors_name_what_is_wrong() {
    assert!(Executor::builder().build().is_err());
    let err = Executor::builder()
        .provider(Arc::new(Host))
        .device(GPU)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("cuda:0"), "{err}");
    let err = Executor::builder()
        .provider(Arc::new(Host))
        .provider(Arc::new(Host))
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("two providers"), "{err}");
}

#[test]
fn bad_shapes_are_errors_before_any_provider_runs() {
    let (exec, c) = executor(Behaviour::Right, &["add"], false);
    let add = Add::new(&exec).unwrap();
    let err = add.forward(&t(&[1.0, 2.0]), &t(&[1.0])).unwrap_err();
    assert!(matches!(err, CoreError::ShapeMismatch { .. }), "{err:?}");
    assert_eq!(c.uploads.load(Ordering::SeqCst), 0);
    assert!(Tensor::from_vec(vec![1.0; 3], &[2, 2]).is_err());
    assert!(Tensor::from_vec(vec![], &[usize::MAX, 2]).is_err());
    assert!(t(&[1.0; 4]).reshape(&[3]).is_err());
}
