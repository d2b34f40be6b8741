//! Every dispatch is a `dispatch` tracing span naming the op, the device asked for, the one
//! that ran it and whether that was a fallback.
//!
//! Its own test binary with one test: tracing caches whether a call site is wanted when the
//! site is first reached, and a test reaching the same site on another thread of the same
//! process (with no subscriber) while this one installs its subscriber can leave the site
//! cached as unwanted, and this test would see no span.

use aihal_core::{Device, GpuDispatchable, Result};

/// Doubles its input on the CPU; its accelerator answers `gpu`, or is absent when `None`.
struct Double(Option<fn() -> Result<Vec<f32>>>);

impl GpuDispatchable for Double {
    type Input = [f32];
    type Output = Vec<f32>;
    fn name(&self) -> &'static str {
        "double"
    }
    fn dispatch_gpu(&self, _: &[f32], _: &Device) -> Result<Vec<f32>> {
        self.0.map_or_else(|| Ok(Vec::new()), |gpu| gpu())
    }
    fn dispatch_cpu(&self, x: &[f32]) -> Result<Vec<f32>> {
        Ok(x.iter().map(|v| v * 2.0).collect())
    }
    fn gpu_available(&self) -> bool {
        self.0.is_some()
    }
}

fn op(gpu: Option<fn() -> Result<Vec<f32>>>) -> Double {
    Double(gpu)
}

const CUDA: Device = Device::Cuda { ordinal: 0 };

/// Records the fields of every `dispatch` span, by span.
#[derive(Default)]
struct SpanRecorder {
    spans: std::sync::Mutex<Vec<Vec<(String, String)>>>,
}

struct Fields<'a>(&'a mut Vec<(String, String)>);
impl tracing::field::Visit for Fields<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.push((field.name().to_owned(), value.to_owned()));
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push((field.name().to_owned(), format!("{value:?}")));
    }
}

impl tracing::Subscriber for SpanRecorder {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, attrs: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        let mut spans = self.spans.lock().unwrap();
        let mut fields = vec![("name".to_owned(), attrs.metadata().name().to_owned())];
        attrs.record(&mut Fields(&mut fields));
        spans.push(fields);
        tracing::span::Id::from_u64(spans.len() as u64)
    }
    fn record(&self, span: &tracing::span::Id, values: &tracing::span::Record<'_>) {
        let mut spans = self.spans.lock().unwrap();
        values.record(&mut Fields(&mut spans[span.into_u64() as usize - 1]));
    }
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, _: &tracing::Event<'_>) {}
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[test]
fn each_dispatch_is_a_span_with_the_op_the_devices_and_the_fallback() {
    let recorder = std::sync::Arc::new(SpanRecorder::default());
    tracing::subscriber::with_default(recorder.clone(), || {
        op(None).dispatch_traced(&[1.0], &Device::Cpu).unwrap();
        op(Some(|| Ok(vec![42.0]))).dispatch_traced(&[1.0], &CUDA).unwrap();
        op(None).dispatch_traced_with(&[1.0], &CUDA, false).unwrap();
        op(None).dispatch_traced_with(&[1.0], &CUDA, true).unwrap_err();
    });
    let field =
        |fields: &[(String, String)], name: &str| fields.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    let spans = recorder.spans.lock().unwrap();
    let seen: Vec<_> = spans
        .iter()
        .map(|s| {
            (
                field(s, "name").unwrap(),
                field(s, "op").unwrap(),
                field(s, "requested").unwrap(),
                field(s, "ran_on"),
                field(s, "fallback"),
            )
        })
        .collect();
    let some = |s: &str| Some(s.to_owned());
    let row = |requested: &str, ran_on, fallback| {
        (
            "dispatch".to_owned(),
            "double".to_owned(),
            requested.to_owned(),
            ran_on,
            fallback,
        )
    };
    assert_eq!(
        seen,
        [
            row("cpu", some("cpu"), some("false")),
            row("cuda:0", some("cuda:0"), some("false")),
            row("cuda:0", some("cpu"), some("true")),
            // Strict refused the fallback: nothing ran.
            row("cuda:0", None, None),
        ]
    );
}
