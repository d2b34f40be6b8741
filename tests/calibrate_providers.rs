//! Calibration on the three real providers this machine has: the CPU, Vulkan on lavapipe
//! (allowed for calibration by `include_software`) and the NPU through our emulator of its
//! runtime. Each provider enters the keys it runs with a measured time after passing parity,
//! the NPU answers "did not run" for the ops it does not have, and the order written is the
//! order of the measured times.
//!
//! Built only with `--features kernels,rknn` (`.ci/run` runs it). Without a Vulkan adapter it
//! skips loudly; `AIHAL_REQUIRE_VULKAN=1` makes that a failure.
#![cfg(all(feature = "kernels", feature = "rknn", feature = "cpu"))]

use std::sync::Arc;
use std::time::Duration;

use aihal::ops::calibrate::{calibrate, CalibrateOptions, Probe, ProbeOp};
use aihal::ops::table::{MClass, Parity};
use aihal::ops::{OpKind, Provider};
use aihal::quantize::QuantFormat;

#[test]
fn cpu_lavapipe_and_the_npu_emulator_each_enter_with_a_measured_time_in_measured_order() {
    let mut providers: Vec<Arc<dyn Provider>> = vec![Arc::new(aihal::cpu::CpuProvider)];
    let vulkan = aihal::kernels::wgpu_providers();
    if vulkan.is_empty() {
        assert!(
            std::env::var("AIHAL_REQUIRE_VULKAN").as_deref() != Ok("1"),
            "AIHAL_REQUIRE_VULKAN=1 but no Vulkan adapter opens; install mesa-vulkan-drivers"
        );
        eprintln!("\n*** SKIPPED: no Vulkan adapter (install mesa-vulkan-drivers). ***\n");
        return;
    }
    providers.extend(vulkan.into_iter().map(|p| Arc::new(p) as Arc<dyn Provider>));
    let emulator = aihal_rknn_emulator::library_path().expect("cargo builds the emulator's library for this test");
    let lib = aihal::rknn::RknnLibrary::load_from(&emulator).expect("the emulator loads");
    providers.push(Arc::new(aihal::rknn::RknnProvider::new(
        lib,
        aihal::core::NpuCoreMask::AUTO,
    )));

    let probes: Vec<Probe> = [MClass::One, MClass::Few]
        .into_iter()
        .map(|m| Probe {
            op: ProbeOp::Linear {
                format: QuantFormat::Q8_0,
                n: 64,
                k: 256,
            },
            m,
        })
        .chain(std::iter::once(Probe {
            op: ProbeOp::RmsNorm { dim: 256 },
            m: MClass::One,
        }))
        .collect();
    let options = CalibrateOptions {
        time_per_measure: Duration::from_millis(20),
        include_software: true,
        date: "2026-12-06".into(),
    };
    let table = calibrate(&providers, &probes, &options).unwrap();
    println!("{}", table.to_toml());
    let devices: Vec<String> = providers.iter().map(|p| p.device().to_string()).collect();
    for e in &table.entries {
        let passed: Vec<&str> = e.order().collect();
        let times: Vec<u64> = e
            .providers
            .iter()
            .filter(|p| matches!(p.parity, Parity::Pass { .. }))
            .map(|p| p.median_ns.expect("a provider that passed has a time"))
            .collect();
        assert!(
            times.windows(2).all(|w| w[0] <= w[1]),
            "{}: not in measured order: {times:?}",
            e.key
        );
        if e.key.op == OpKind::Linear {
            for d in &devices {
                assert!(passed.contains(&d.as_str()), "{}: {d} did not enter: {e:?}", e.key);
            }
        } else {
            assert_eq!(passed.len(), devices.len() - 1, "{e:?}");
            let npu = e.providers.iter().find(|p| p.device.starts_with("rknn")).unwrap();
            assert!(
                matches!(&npu.parity, Parity::Fail { reason } if reason.contains("did not run")),
                "{npu:?}"
            );
        }
    }
    // Moves between every pair, both ways.
    let n = devices.len();
    assert_eq!(table.transfers.len(), n * (n - 1) * 2);
}
