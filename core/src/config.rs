//! `DeviceConfig`: what the user wants, from code or from the environment.

use crate::device::DeviceRequest;
use crate::error::{CoreError, Result};
use crate::traits::ValidatableConfig;

/// The environment variables aihal reads, in the order they are consulted.
pub mod env {
    /// Force the CPU (`1`/`0`, `true`/`false`, `yes`/`no`, `on`/`off`). First set one wins.
    pub const FORCE_CPU: [&str; 3] = ["RUST_AI_FORCE_CPU", "AXOLOTL_FORCE_CPU", "VSA_OPTIM_FORCE_CPU"];
    /// The preferred CUDA ordinal for automatic selection. First set one wins.
    pub const CUDA_DEVICE: [&str; 3] = ["RUST_AI_CUDA_DEVICE", "AXOLOTL_CUDA_DEVICE", "VSA_OPTIM_CUDA_DEVICE"];
    /// An explicit device (`cpu`, `cuda`, `cuda:1`, `rknn`, `rknn:0b111`, `wgpu`, `wgpu:0`).
    pub const DEVICE: &str = "RUST_AI_DEVICE";
    /// Turn every fallback into an error (boolean): device selection's (through
    /// [`DeviceConfig::from_env`](crate::DeviceConfig::from_env)) and op dispatch's (read
    /// once per process by [`strict_mode`](crate::strict_mode)).
    pub const STRICT: &str = "RUST_AI_STRICT_DEVICE";
    /// All variables, for diagnostics.
    pub const ALL: [&str; 8] = [
        FORCE_CPU[0],
        FORCE_CPU[1],
        FORCE_CPU[2],
        CUDA_DEVICE[0],
        CUDA_DEVICE[1],
        CUDA_DEVICE[2],
        DEVICE,
        STRICT,
    ];
}

const BOOL_FORMS: &str = "1, 0, true, false, yes, no, on, off";

/// What the user wants from device selection.
///
/// Build it in code, or read it from the environment with [`DeviceConfig::from_env`]:
///
/// ```
/// use aihal_core::{DeviceConfig, DeviceRequest, ValidatableConfig};
/// let config = DeviceConfig::new().cuda_device(1).strict(true);
/// assert_eq!(config.preferred_cuda_device(), Some(1));
/// config.validate().unwrap();
///
/// let explicit = DeviceConfig::new().device("rknn:0b111".parse::<DeviceRequest>().unwrap());
/// assert!(explicit.requested_device().is_some());
///
/// // Forcing the CPU and asking for CUDA contradict each other.
/// assert!(DeviceConfig::new().force_cpu(true).device(DeviceRequest::Cuda { ordinal: None }).validate().is_err());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceConfig {
    force_cpu: bool,
    cuda_device: Option<usize>,
    device: Option<DeviceRequest>,
    strict: bool,
}

impl DeviceConfig {
    /// Automatic selection, no preferences, fallbacks allowed.
    pub fn new() -> Self {
        Self::default()
    }

    /// Run on the CPU whatever else is present; the CPU is then intended and no fallback
    /// warning is printed.
    #[must_use]
    pub fn force_cpu(mut self, force: bool) -> Self {
        self.force_cpu = force;
        self
    }

    /// The CUDA ordinal automatic selection prefers.
    #[must_use]
    pub fn cuda_device(mut self, ordinal: usize) -> Self {
        self.cuda_device = Some(ordinal);
        self
    }

    /// Ask for one device explicitly: if it is not there, selection fails instead of
    /// falling back.
    #[must_use]
    pub fn device(mut self, request: DeviceRequest) -> Self {
        self.device = Some(request);
        self
    }

    /// Make device selection's CPU fallback an error. Op dispatch has its own process-wide
    /// setting, read from the same variable: [`strict_mode`](crate::strict_mode) and
    /// [`set_strict`](crate::set_strict).
    #[must_use]
    pub fn strict(mut self, strict: bool) -> Self {
        self.strict = strict;
        self
    }

    /// Whether the CPU is forced.
    pub fn is_cpu_forced(&self) -> bool {
        self.force_cpu
    }

    /// Whether the CPU is what the user intends: forced, or asked for explicitly.
    pub fn is_cpu_intended(&self) -> bool {
        self.force_cpu || self.device == Some(DeviceRequest::Cpu)
    }

    /// The preferred CUDA ordinal, if one was set.
    pub fn preferred_cuda_device(&self) -> Option<usize> {
        self.cuda_device
    }

    /// The explicitly requested device, if any.
    pub fn requested_device(&self) -> Option<DeviceRequest> {
        self.device
    }

    /// Whether fallbacks are errors.
    pub fn is_strict(&self) -> bool {
        self.strict
    }

    /// Reads the configuration from the process environment (see [`env`](mod@env) for the variables
    /// and their order), then validates it.
    ///
    /// A malformed value is an `InvalidConfig` error naming the variable and the forms it
    /// accepts; an empty value counts as unset.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Like [`from_env`](Self::from_env), reading variables through `lookup` instead of the
    /// process environment (for tests and for configuration files that mimic it).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let first_set = |names: &[&'static str]| {
            names
                .iter()
                .find_map(|&name| lookup(name).filter(|v| !v.trim().is_empty()).map(|v| (name, v)))
        };

        let mut config = Self::new();
        if let Some((name, value)) = first_set(&env::FORCE_CPU) {
            config.force_cpu = parse_bool(name, &value)?;
        }
        if let Some((name, value)) = first_set(&env::CUDA_DEVICE) {
            config.cuda_device = Some(value.trim().parse().map_err(|_| {
                CoreError::invalid_config(format!(
                    "{name}={value:?} is not a CUDA ordinal; use a non-negative integer such as 0 or 1"
                ))
            })?);
        }
        if let Some((name, value)) = first_set(&[env::DEVICE]) {
            config.device = Some(value.parse().map_err(|_| {
                CoreError::invalid_config(format!(
                    "{name}={value:?} is not a device; accepted forms: {}",
                    DeviceRequest::ACCEPTED_FORMS
                ))
            })?);
        }
        if let Some((name, value)) = first_set(&[env::STRICT]) {
            config.strict = parse_bool(name, &value)?;
        }
        config.validate()?;
        Ok(config)
    }
}

impl ValidatableConfig for DeviceConfig {
    /// Rejects contradictions: the CPU forced together with another explicit device, or a
    /// preferred CUDA ordinal that differs from the one explicitly requested.
    fn validate(&self) -> Result<()> {
        if let Some(request) = self.device {
            if self.force_cpu && request != DeviceRequest::Cpu {
                return Err(CoreError::invalid_config(format!(
                    "the CPU is forced but device `{request}` is requested; unset one of them"
                )));
            }
            if let (DeviceRequest::Cuda { ordinal: Some(asked) }, Some(preferred)) = (request, self.cuda_device) {
                if asked != preferred {
                    return Err(CoreError::invalid_config(format!(
                        "device `cuda:{asked}` is requested but the preferred CUDA device is {preferred}; unset one of them"
                    )));
                }
            }
        }
        Ok(())
    }
}

fn parse_bool(name: &str, value: &str) -> Result<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(CoreError::invalid_config(format!(
            "{name}={value:?} is not a boolean; accepted forms: {BOOL_FORMS}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NpuCoreMask;
    use std::collections::HashMap;

    fn from(vars: &[(&str, &str)]) -> Result<DeviceConfig> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        DeviceConfig::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn empty_environment_means_automatic_selection() {
        assert_eq!(from(&[]).unwrap(), DeviceConfig::new());
    }

    #[test]
    fn each_force_cpu_variable_is_read() {
        for name in env::FORCE_CPU {
            for (value, want) in [("1", true), ("TRUE", true), ("on", true), ("0", false), ("no", false)] {
                let c = from(&[(name, value)]).unwrap();
                assert_eq!(c.is_cpu_forced(), want, "{name}={value}");
            }
        }
    }

    #[test]
    fn each_cuda_device_variable_is_read() {
        for (i, name) in env::CUDA_DEVICE.iter().enumerate() {
            let c = from(&[(name, &i.to_string())]).unwrap();
            assert_eq!(c.preferred_cuda_device(), Some(i), "{name}");
        }
    }

    #[test]
    fn first_set_variable_wins_in_the_documented_order() {
        // RUST_AI_ beats AXOLOTL_ beats VSA_OPTIM_.
        let c = from(&[
            ("RUST_AI_FORCE_CPU", "0"),
            ("AXOLOTL_FORCE_CPU", "1"),
            ("VSA_OPTIM_FORCE_CPU", "1"),
        ])
        .unwrap();
        assert!(!c.is_cpu_forced());
        let c = from(&[("AXOLOTL_FORCE_CPU", "1"), ("VSA_OPTIM_FORCE_CPU", "0")]).unwrap();
        assert!(c.is_cpu_forced());
        let c = from(&[("AXOLOTL_CUDA_DEVICE", "2"), ("VSA_OPTIM_CUDA_DEVICE", "5")]).unwrap();
        assert_eq!(c.preferred_cuda_device(), Some(2));
        let c = from(&[("RUST_AI_CUDA_DEVICE", "1"), ("AXOLOTL_CUDA_DEVICE", "2")]).unwrap();
        assert_eq!(c.preferred_cuda_device(), Some(1));
        // An empty higher-priority variable counts as unset.
        let c = from(&[("RUST_AI_FORCE_CPU", ""), ("AXOLOTL_FORCE_CPU", "1")]).unwrap();
        assert!(c.is_cpu_forced());
    }

    #[test]
    fn a_malformed_higher_priority_value_is_an_error_not_skipped() {
        let err = from(&[("RUST_AI_FORCE_CPU", "maybe"), ("AXOLOTL_FORCE_CPU", "1")]).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, CoreError::InvalidConfig(_)));
        assert!(
            msg.contains("RUST_AI_FORCE_CPU") && msg.contains("maybe") && msg.contains(BOOL_FORMS),
            "{msg}"
        );
    }

    #[test]
    fn malformed_values_name_the_variable_and_the_accepted_forms() {
        let cases = [
            ("AXOLOTL_FORCE_CPU", "2", BOOL_FORMS),
            ("VSA_OPTIM_CUDA_DEVICE", "gpu0", "non-negative integer"),
            ("RUST_AI_CUDA_DEVICE", "-1", "non-negative integer"),
            ("RUST_AI_DEVICE", "tpu", DeviceRequest::ACCEPTED_FORMS),
            ("RUST_AI_DEVICE", "rknn:0b1111", DeviceRequest::ACCEPTED_FORMS),
            ("RUST_AI_STRICT_DEVICE", "strict", BOOL_FORMS),
        ];
        for (name, value, forms) in cases {
            let err = from(&[(name, value)]).unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, CoreError::InvalidConfig(_)), "{name}");
            assert!(
                msg.contains(name) && msg.contains(value) && msg.contains(forms),
                "{msg}"
            );
        }
    }

    #[test]
    fn explicit_device_and_strict_mode_are_read() {
        let c = from(&[("RUST_AI_DEVICE", "rknn:0b111"), ("RUST_AI_STRICT_DEVICE", "1")]).unwrap();
        assert_eq!(
            c.requested_device(),
            Some(DeviceRequest::Rknn {
                core_mask: Some(NpuCoreMask::CORES_0_1_2)
            })
        );
        assert!(c.is_strict());
        let c = from(&[("RUST_AI_DEVICE", "cpu")]).unwrap();
        assert!(c.is_cpu_intended() && !c.is_cpu_forced());
    }

    #[test]
    fn contradictions_are_rejected() {
        let err = from(&[("RUST_AI_FORCE_CPU", "1"), ("RUST_AI_DEVICE", "cuda")]).unwrap_err();
        assert!(err.to_string().contains("forced"), "{err}");
        let err = from(&[("RUST_AI_CUDA_DEVICE", "0"), ("RUST_AI_DEVICE", "cuda:1")]).unwrap_err();
        assert!(err.to_string().contains("cuda:1"), "{err}");
        // Consistent combinations are fine.
        from(&[("RUST_AI_FORCE_CPU", "1"), ("RUST_AI_DEVICE", "cpu")]).unwrap();
        from(&[("RUST_AI_CUDA_DEVICE", "1"), ("RUST_AI_DEVICE", "cuda:1")]).unwrap();
    }

    #[test]
    fn from_env_reads_the_process_environment() {
        // The only test in this crate that touches the process environment; it uses a
        // variable nothing else in this test binary reads (op dispatch reads
        // RUST_AI_STRICT_DEVICE once and caches it, so that one must stay untouched).
        let _guard = crate::test_support::ENV_LOCK.lock().unwrap();
        std::env::set_var("VSA_OPTIM_CUDA_DEVICE", "3");
        let c = DeviceConfig::from_env();
        std::env::remove_var("VSA_OPTIM_CUDA_DEVICE");
        assert_eq!(c.unwrap().preferred_cuda_device(), Some(3));
    }
}
