//! The executor's placement, fallbacks, strict mode, record and data movement, with the test
//! providers of `common`.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use aihal_core::{CoreError, Device};
use aihal_ops::{Add, Executor, OpKind, Softmax, Tensor};
use common::{compute, executor, Behaviour, Host, Kind, GPU};

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
fn a_panic_inside_a_provider_is_an_error_to_its_caller_and_the_op_keeps_serving() {
    let (exec, c) = executor(Behaviour::Panics, &["add"], true);
    let add = Add::new(&exec).unwrap();
    let err = add.forward(&t(&[-1.0, 2.0]), &t(&[1.0, 1.0])).unwrap_err();
    assert!(matches!(err, CoreError::Kernel { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("panicked") && text.contains("a negative first value"),
        "{text}"
    );
    // The same op, and others sharing it from other threads, go on computing right answers
    // while one thread keeps hitting the panic.
    std::thread::scope(|s| {
        let bad = s.spawn(|| (0..5).filter(|_| add.forward(&t(&[-3.0]), &t(&[1.0])).is_err()).count());
        let good: Vec<_> = (0..3)
            .map(|i| {
                let add = &add;
                s.spawn(move || {
                    (0..50).all(|j| {
                        let x = (i * 100 + j) as f32;
                        add.forward(&t(&[x, 1.0]), &t(&[1.0, 2.0])).unwrap().to_vec().unwrap() == vec![x + 1.0, 3.0]
                    })
                })
            })
            .collect();
        assert_eq!(bad.join().unwrap(), 5, "every panicking call is an error");
        assert!(
            good.into_iter().all(|h| h.join().unwrap()),
            "the other threads' results"
        );
    });
    assert_eq!(
        c.runs.load(Ordering::SeqCst),
        3 * 50,
        "runs that completed on the device"
    );
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

/// A provider on another device that reads host memory (as the NPU does): host tensors go to
/// it as they are, and its host outputs go on to the next op without a move.
struct HostReader;

impl aihal_ops::Provider for HostReader {
    fn device(&self) -> Device {
        Device::Rknn {
            core_mask: aihal_core::NpuCoreMask::AUTO,
        }
    }
    fn name(&self) -> String {
        "host-memory reader".into()
    }
    fn reads_host_memory(&self) -> bool {
        true
    }
    fn supports(&self, spec: &aihal_ops::OpSpec<'_>) -> aihal_ops::Support {
        Host.supports(spec)
    }
    fn prepare(&self, spec: &aihal_ops::OpSpec<'_>) -> aihal_core::Result<Box<dyn aihal_ops::Prepared>> {
        Host.prepare(spec)
    }
    fn upload(&self, data: &[f32], shape: aihal_ops::Shape) -> aihal_core::Result<Tensor> {
        panic!(
            "a host-memory reader is never uploaded to ({} values, {shape:?})",
            data.len()
        )
    }
    fn new_kv_store(&self, layout: aihal_ops::KvLayout) -> aihal_core::Result<Box<dyn aihal_ops::KvStore>> {
        Host.new_kv_store(layout)
    }
}

#[test]
fn a_provider_that_reads_host_memory_takes_host_tensors_without_a_move() {
    use aihal_ops::Provider as _;
    let exec = Executor::builder()
        .provider(Arc::new(HostReader))
        .provider(Arc::new(Host))
        .build()
        .unwrap();
    let add = Add::new(&exec).unwrap();
    let x = t(&[1.0, 2.0]);
    let y = add.forward_traced(&x, &x).unwrap();
    assert_eq!(y.ran_on, HostReader.device());
    let z = add.forward(&y.output, &y.output).unwrap();
    assert_eq!(z.to_vec().unwrap(), [4.0, 8.0]);
    assert_eq!(exec.moves(), 0);
}

#[test]
fn gpu_dispatchable_runs_each_route_only_where_the_op_was_placed() {
    use aihal_core::GpuDispatchable;
    let (exec, c) = executor(Behaviour::Right, &["add"], false);
    let add = Add::new(&exec).unwrap();
    assert!(add.gpu_available() && !add.npu_available());
    let x = (t(&[1.0, 2.0]), t(&[3.0, 4.0]));
    let on_gpu = add.dispatch_traced(&x, &GPU).unwrap();
    assert_eq!((on_gpu.ran_on, on_gpu.fallback), (GPU, None));
    assert_eq!(c.runs.load(Ordering::SeqCst), 1);
    let on_cpu = add.dispatch_traced(&x, &Device::Cpu).unwrap();
    assert_eq!(on_cpu.ran_on, Device::Cpu);
    assert_eq!(on_cpu.output.to_vec().unwrap(), [4.0, 6.0]);
    assert_eq!(
        c.runs.load(Ordering::SeqCst),
        1,
        "the CPU route did not run on the device"
    );

    // An op placed on the host only: a GPU request falls back to its CPU route, said so.
    let softmax = Softmax::new(&exec).unwrap();
    assert!(!softmax.gpu_available());
    let d = softmax.dispatch_traced(&t(&[0.0, 0.0]), &GPU).unwrap();
    assert_eq!(d.ran_on, Device::Cpu);
    assert!(d.fallback.is_some());
    assert_eq!(d.output.to_vec().unwrap(), [0.5, 0.5]);
}
