//! Routing an operation to a device: [`GpuDispatchable`] and the [`Dispatched`] result that
//! says which device ran it.

use crate::device::{BackendKind, Device};
use crate::error::{CoreError, Result};
use crate::strict::strict_mode;
use crate::warn::warn_once;

/// The result of a dispatch, with the backend that produced it.
#[derive(Clone, Debug, PartialEq)]
pub struct Dispatched<T> {
    /// The operation's output.
    pub output: T,
    /// The device that actually ran the operation.
    pub ran_on: Device,
    /// Why the operation ran on the CPU although `requested` was another device.
    pub fallback: Option<String>,
}

impl<T> Dispatched<T> {
    /// The backend that ran the operation.
    pub fn backend(&self) -> BackendKind {
        self.ran_on.backend()
    }
}

/// An operation with a CPU route and optional GPU and NPU routes, routed by device.
///
/// Implementors provide the routes; callers use [`dispatch`](Self::dispatch) (or
/// [`dispatch_traced`](Self::dispatch_traced) to learn which backend ran).
///
/// Routing: the CPU device runs `dispatch_cpu`. A GPU device runs `dispatch_gpu` when
/// [`gpu_available`](Self::gpu_available), the NPU runs `dispatch_npu` when
/// [`npu_available`](Self::npu_available). A route that is unavailable or answers
/// [`CoreError::NotImplemented`] falls back to the CPU **with a warning printed once per
/// process per operation and device kind**, and the fallback is recorded in
/// [`Dispatched::fallback`]. Any other error is returned as it is: a failing accelerator is
/// never hidden behind a CPU result.
///
/// In strict mode a fallback that would happen is instead a
/// [`CoreError::DeviceNotAvailable`] naming the device, the operation and the reason, and
/// the CPU route does not run. [`dispatch`](Self::dispatch) and
/// [`dispatch_traced`](Self::dispatch_traced) follow the process's setting
/// ([`strict_mode`](crate::strict_mode): `RUST_AI_STRICT_DEVICE`, or
/// [`set_strict`](crate::set_strict)); [`dispatch_traced_with`](Self::dispatch_traced_with)
/// takes it as an argument.
///
/// Each dispatch runs in a `tracing` span named `dispatch` (debug level) with the fields
/// `op`, `requested` (the device asked for), and, once known, `ran_on` and `fallback`
/// (whether the CPU ran in place of the device asked for). Without a subscriber that wants
/// it, the span costs a level check and allocates nothing.
///
/// Inputs are taken by reference so that a fallback can run the CPU route on the same input.
///
/// ```
/// use aihal_core::{BackendKind, CoreError, Device, GpuDispatchable, Result};
///
/// struct Sum;
/// impl GpuDispatchable for Sum {
///     type Input = [f32];
///     type Output = f32;
///     fn name(&self) -> &str { "sum" }
///     fn dispatch_gpu(&self, _: &[f32], _: &Device) -> Result<f32> {
///         Err(CoreError::not_implemented("sum on the GPU"))
///     }
///     fn dispatch_cpu(&self, x: &[f32]) -> Result<f32> { Ok(x.iter().sum()) }
///     fn gpu_available(&self) -> bool { true }
/// }
///
/// let x = [1.0, 2.0, 3.0];
/// assert_eq!(Sum.dispatch(&x, &Device::Cpu)?, 6.0);
/// let d = Sum.dispatch_traced(&x, &Device::Cuda { ordinal: 0 })?;
/// assert_eq!((d.output, d.backend()), (6.0, BackendKind::Cpu));
/// assert!(d.fallback.unwrap().contains("not implemented"));
///
/// // Strict: the same fallback is an error.
/// let err = Sum.dispatch_traced_with(&x, &Device::Cuda { ordinal: 0 }, true).unwrap_err();
/// assert!(matches!(err, CoreError::DeviceNotAvailable { .. }));
/// assert!(err.to_string().contains("sum would fall back to the CPU"));
/// # Ok::<(), CoreError>(())
/// ```
pub trait GpuDispatchable: Send + Sync {
    /// What the operation reads.
    type Input: ?Sized;
    /// What it returns.
    type Output;

    /// A short name for messages (`"q4_0 matmul"`).
    fn name(&self) -> &str;

    /// Runs on a GPU device (CUDA or Vulkan).
    fn dispatch_gpu(&self, input: &Self::Input, device: &Device) -> Result<Self::Output>;

    /// Runs on the CPU. Always available.
    fn dispatch_cpu(&self, input: &Self::Input) -> Result<Self::Output>;

    /// Runs on the NPU. The default answers `NotImplemented`, which dispatch turns into a
    /// logged CPU fallback.
    fn dispatch_npu(&self, input: &Self::Input, device: &Device) -> Result<Self::Output> {
        let _ = (input, device);
        Err(CoreError::not_implemented(format!("{} on the NPU", self.name())))
    }

    /// Whether the GPU route can run in this process.
    fn gpu_available(&self) -> bool;

    /// Whether the NPU route can run in this process.
    fn npu_available(&self) -> bool {
        false
    }

    /// Runs the operation on `device`, falling back to the CPU as described on the trait.
    fn dispatch(&self, input: &Self::Input, device: &Device) -> Result<Self::Output> {
        self.dispatch_traced(input, device).map(|d| d.output)
    }

    /// Like [`dispatch`](Self::dispatch), and reports which device ran and why a fallback
    /// happened. Strict as the process is ([`strict_mode`](crate::strict_mode)); a malformed
    /// `RUST_AI_STRICT_DEVICE` is an error when a fallback would happen.
    fn dispatch_traced(&self, input: &Self::Input, device: &Device) -> Result<Dispatched<Self::Output>> {
        route(self, input, device, strict_mode)
    }

    /// Like [`dispatch_traced`](Self::dispatch_traced), strict or not as `strict` says,
    /// whatever the process's setting.
    fn dispatch_traced_with(
        &self,
        input: &Self::Input,
        device: &Device,
        strict: bool,
    ) -> Result<Dispatched<Self::Output>> {
        route(self, input, device, || Ok(strict))
    }
}

/// The routing of [`GpuDispatchable::dispatch_traced`]: `strict` is asked only when a
/// fallback would happen, so the process's setting costs nothing on the other paths.
fn route<O: GpuDispatchable + ?Sized>(
    op: &O,
    input: &O::Input,
    device: &Device,
    strict: impl FnOnce() -> Result<bool>,
) -> Result<Dispatched<O::Output>> {
    let span = tracing::debug_span!(
        "dispatch",
        op = op.name(),
        requested = %device,
        ran_on = tracing::field::Empty,
        fallback = tracing::field::Empty,
    );
    let _entered = span.enter();
    // Recording looks the field up by name: skip it for a disabled span (no subscriber).
    let ran = |ran_on: &Device, fallback: bool| {
        if !span.is_disabled() {
            span.record("ran_on", tracing::field::display(ran_on));
            span.record("fallback", fallback);
        }
    };

    let accelerated = match device {
        Device::Cuda { .. } | Device::Wgpu { .. } if op.gpu_available() => Some(op.dispatch_gpu(input, device)),
        Device::Rknn { .. } if op.npu_available() => Some(op.dispatch_npu(input, device)),
        _ => None,
    };
    let fallback = match accelerated {
        None if device.is_cpu() => None,
        None => Some(format!("{} has no route available on {device}", op.name())),
        Some(Ok(output)) => {
            ran(device, false);
            return Ok(Dispatched {
                output,
                ran_on: *device,
                fallback: None,
            });
        }
        Some(Err(e)) if e.is_not_implemented() => Some(format!("{e} (asked for {device})")),
        Some(Err(e)) => return Err(e),
    };
    if let Some(why) = &fallback {
        if strict()? {
            return Err(CoreError::device_not_available(
                device,
                format!(
                    "{} would fall back to the CPU, which strict mode forbids: {why}",
                    op.name()
                ),
            ));
        }
        warn_once(
            &format!("dispatch-fallback:{}:{}", op.name(), device.backend()),
            &format!("aihal: {} ran on the CPU: {why}", op.name()),
        );
    }
    ran(&Device::Cpu, fallback.is_some());
    Ok(Dispatched {
        output: op.dispatch_cpu(input)?,
        ran_on: Device::Cpu,
        fallback,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NpuCoreMask;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Doubles its input; each route's behaviour is set per test.
    struct Double {
        gpu: Option<fn() -> Result<Vec<f32>>>,
        npu: bool,
        cpu_calls: AtomicUsize,
    }

    impl GpuDispatchable for Double {
        type Input = [f32];
        type Output = Vec<f32>;
        fn name(&self) -> &'static str {
            "double"
        }
        fn dispatch_gpu(&self, _: &[f32], _: &Device) -> Result<Vec<f32>> {
            (self.gpu.expect("dispatch_gpu called although gpu_available is false"))()
        }
        fn dispatch_cpu(&self, x: &[f32]) -> Result<Vec<f32>> {
            self.cpu_calls.fetch_add(1, Ordering::SeqCst);
            Ok(x.iter().map(|v| v * 2.0).collect())
        }
        fn gpu_available(&self) -> bool {
            self.gpu.is_some()
        }
        fn npu_available(&self) -> bool {
            self.npu
        }
    }

    fn op(gpu: Option<fn() -> Result<Vec<f32>>>, npu: bool) -> Double {
        Double {
            gpu,
            npu,
            cpu_calls: AtomicUsize::new(0),
        }
    }

    const CUDA: Device = Device::Cuda { ordinal: 0 };
    const NPU: Device = Device::Rknn {
        core_mask: NpuCoreMask::AUTO,
    };

    #[test]
    fn cpu_device_runs_the_cpu_route_without_fallback() {
        let o = op(None, false);
        let d = o.dispatch_traced(&[1.0, 2.0], &Device::Cpu).unwrap();
        assert_eq!(d.output, [2.0, 4.0]);
        assert_eq!(d.ran_on, Device::Cpu);
        assert_eq!(d.fallback, None);
    }

    #[test]
    fn gpu_route_runs_when_available_and_reports_the_gpu() {
        let o = op(Some(|| Ok(vec![42.0])), false);
        let d = o.dispatch_traced(&[1.0], &CUDA).unwrap();
        assert_eq!((d.output, d.ran_on, d.fallback), (vec![42.0], CUDA, None));
        assert_eq!(o.cpu_calls.load(Ordering::SeqCst), 0);
        assert_eq!(o.dispatch(&[1.0], &Device::Wgpu { adapter: 0 }).unwrap(), [42.0]);
    }

    #[test]
    fn not_implemented_and_unavailable_routes_fall_back_with_a_reason() {
        // Explicitly lenient: the process's setting is tested in a child process
        // (tests/strict_dispatch.rs).
        let o = op(Some(|| Err(CoreError::not_implemented("double on CUDA"))), false);
        let d = o.dispatch_traced_with(&[3.0], &CUDA, false).unwrap();
        assert_eq!((d.output.as_slice(), d.ran_on), ([6.0].as_slice(), Device::Cpu));
        assert!(d.fallback.as_deref().unwrap().contains("double on CUDA"));

        let o = op(None, false);
        let d = o.dispatch_traced_with(&[3.0], &CUDA, false).unwrap();
        assert!(d.fallback.as_deref().unwrap().contains("no route available on cuda:0"));

        // The default NPU route is NotImplemented; with npu_available it still falls back.
        let o = op(None, true);
        let d = o.dispatch_traced_with(&[3.0], &NPU, false).unwrap();
        assert_eq!(d.ran_on, Device::Cpu);
        assert!(d.fallback.as_deref().unwrap().contains("double on the NPU"));
        assert_eq!(o.cpu_calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn strict_dispatch_turns_every_fallback_into_an_error_naming_op_device_and_reason() {
        let cases: [(Double, Device, &str); 3] = [
            (
                op(Some(|| Err(CoreError::not_implemented("double on CUDA"))), false),
                CUDA,
                "not implemented: double on CUDA",
            ),
            (op(None, false), CUDA, "no route available on cuda:0"),
            (op(None, true), NPU, "double on the NPU"),
        ];
        for (o, device, why) in cases {
            let err = o.dispatch_traced_with(&[3.0], &device, true).unwrap_err();
            let CoreError::DeviceNotAvailable { device: named, reason } = &err else {
                panic!("expected DeviceNotAvailable, got {err:?}")
            };
            assert_eq!(*named, device.to_string());
            assert!(reason.contains("double would fall back to the CPU"), "{err}");
            assert!(reason.contains(why) && reason.contains("strict"), "{err}");
            assert_eq!(o.cpu_calls.load(Ordering::SeqCst), 0, "the CPU route must not run");

            // The same call without strict mode falls back.
            let d = o.dispatch_traced_with(&[3.0], &device, false).unwrap();
            assert_eq!((d.output.as_slice(), d.ran_on), ([6.0].as_slice(), Device::Cpu));
            assert!(d.fallback.as_deref().unwrap().contains(why));
        }
    }

    #[test]
    fn strict_dispatch_still_runs_what_needs_no_fallback() {
        let o = op(Some(|| Ok(vec![42.0])), false);
        assert_eq!(o.dispatch_traced_with(&[1.0], &CUDA, true).unwrap().ran_on, CUDA);
        let d = o.dispatch_traced_with(&[1.0], &Device::Cpu, true).unwrap();
        assert_eq!((d.output, d.ran_on, d.fallback), (vec![2.0], Device::Cpu, None));
        let o = op(Some(|| Err(CoreError::out_of_memory("cuda:0", None))), false);
        let err = o.dispatch_traced_with(&[1.0], &CUDA, true).unwrap_err();
        assert!(
            matches!(err, CoreError::OutOfMemory { .. }),
            "real errors stay what they are"
        );
    }

    #[test]
    fn real_accelerator_errors_are_not_hidden_by_a_fallback() {
        let o = op(Some(|| Err(CoreError::out_of_memory("cuda:0", Some(1 << 30)))), false);
        let err = o.dispatch(&[1.0], &CUDA).unwrap_err();
        assert!(matches!(err, CoreError::OutOfMemory { .. }));
        assert_eq!(o.cpu_calls.load(Ordering::SeqCst), 0);
    }
}
