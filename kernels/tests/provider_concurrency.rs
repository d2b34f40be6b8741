//! Eight threads share one `Linear` and one `Attention` prepared on the wgpu provider (each
//! thread with its own KV cache on the device) for 1000 calls each; every result equals, bit
//! for bit, the one a single thread computes. Lavapipe in CI; reported as ignored
//! without a Vulkan adapter (`AIHAL_REQUIRE_VULKAN=1` makes that a failure).
//!
//! The sizes are small (a 32 x 128 Q4_0 weight, two heads of 8 over up to 1000 cached
//! positions): each call is a device round trip (upload, kernels, download), about 2 ms on
//! lavapipe in a debug build, so the 9 x 2000 calls take about 35 s on a 2-core machine. The
//! count of calls is the full 1000 per thread.

#[path = "support/mod.rs"]
mod support;

use std::sync::Arc;

use aihal_kernels::conformance::Rng;
use aihal_kernels::cubecl::wgpu::WgpuRuntime;
use aihal_kernels::{wgpu_providers, CubeProvider};
use aihal_ops::{Attention, AttentionKind, AttentionShape, Executor, Linear, OpKind, Provider, Tensor};
use aihal_quantize::{quantize, QuantFormat};

const THREADS: usize = 8;
const CALLS: usize = 1000;

/// One thread's work: `CALLS` linear calls on rotating inputs, then `CALLS` decode steps of
/// attention through its own cache; every output's bits.
fn work(linear: &Linear, att: &Attention, shape: AttentionShape, seed: u64) -> Vec<u32> {
    let mut rng = Rng::new(seed);
    let (m, k) = (2, linear.in_features());
    let inputs: Vec<Tensor> = (0..4)
        .map(|_| Tensor::from_vec(rng.values(m * k, 1.0), &[m, k]).expect("tensor"))
        .collect();
    let mut bits = Vec::new();
    for c in 0..CALLS {
        let y = linear.forward(&inputs[c % 4]).expect("linear");
        bits.extend(y.to_vec().expect("download").iter().map(|v| v.to_bits()));
    }
    let (qw, kw) = (shape.n_heads * shape.head_dim, shape.n_kv_heads * shape.head_dim);
    let q = rng.values(CALLS * qw, 1.0);
    let kv = rng.values(CALLS * kw, 1.0);
    let mut cache = att.new_cache(1, CALLS).expect("cache");
    for step in 0..CALLS {
        let qt = Tensor::from_vec(q[step * qw..][..qw].to_vec(), &[1, 1, shape.n_heads, shape.head_dim]).expect("q");
        let kt = Tensor::from_vec(
            kv[step * kw..][..kw].to_vec(),
            &[1, 1, shape.n_kv_heads, shape.head_dim],
        )
        .expect("kv");
        let y = att.forward(&qt, &kt, &kt, &mut cache, None).expect("attention");
        bits.extend(y.to_vec().expect("download").iter().map(|v| v.to_bits()));
    }
    bits
}

/// The first wgpu provider, or why there is none.
fn provider() -> Result<Arc<CubeProvider<WgpuRuntime>>, String> {
    wgpu_providers()
        .into_iter()
        .next()
        .map(Arc::new)
        .ok_or_else(|| "no Vulkan adapter found (install mesa-vulkan-drivers for lavapipe)".to_string())
}

fn main() {
    let tests = vec![support::test(
        "eight_threads_sharing_one_linear_and_one_attention_equal_one_thread",
        eight_threads_sharing_one_linear_and_one_attention_equal_one_thread,
    )];
    support::run(provider, "AIHAL_REQUIRE_VULKAN", tests, Vec::new())
}

fn eight_threads_sharing_one_linear_and_one_attention_equal_one_thread(p: &Arc<CubeProvider<WgpuRuntime>>) {
    let p: Arc<dyn Provider> = p.clone();
    let device = p.device();
    let exec = Executor::builder()
        .provider(p)
        .device(device)
        .strict(true)
        .build()
        .expect("executor");
    let mut rng = Rng::fresh();
    let seed = rng.seed();
    let (n, k) = (32, 128);
    let w = quantize(QuantFormat::Q4_0, &rng.values(n * k, 1.0), &[n, k]).expect("quantize");
    let linear = Linear::new(&exec, &w, None).expect("linear");
    let shape = AttentionShape {
        n_heads: 2,
        n_kv_heads: 1,
        head_dim: 8,
    };
    let att = Attention::new(&exec, shape, AttentionKind::Causal, None).expect("attention");
    assert_eq!((linear.device(), att.device()), (device, device));
    let alone = work(&linear, &att, shape, seed);
    let together: Vec<Vec<u32>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|_| s.spawn(|| work(&linear, &att, shape, seed)))
            .collect();
        handles.into_iter().map(|h| h.join().expect("thread")).collect()
    });
    for (t, bits) in together.iter().enumerate() {
        assert!(
            bits == &alone,
            "thread {t} on {device} differs from one thread (seed {seed})"
        );
    }
    let report = exec.report();
    let runs = (THREADS as u64 + 1) * CALLS as u64;
    assert_eq!(report.calls(OpKind::Linear, device), runs);
    assert_eq!(report.calls(OpKind::Attention, device), runs);
}
