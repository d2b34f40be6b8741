//! The dispatch table: for each op key, the providers that passed parity on this machine,
//! fastest first, with their measured times; and the measured cost of moving an activation
//! between providers. A TOML file a person can read, diff and edit.
//!
//! ```toml
//! [machine]
//! cpu = "AMD EPYC 9R45 (x86_64)"
//! cpu_features = ["avx2", "avx512f", "avx512vnni"]
//! providers = ["cpu: cpu (avx512-vnni)", "wgpu:0: wgpu:0 llvmpipe"]
//! aihal = "0.1.0"
//!
//! [[entry]]
//! op = "linear"
//! format = "q4_0"
//! m = "1"
//! size = "16M"
//! date = "2026-12-06"
//! providers = [
//!   { device = "cpu", median_ns = 61000, parity = "pass", max_error = 1.2e-6 },
//!   { device = "wgpu:0", median_ns = 890000, parity = "pass", max_error = 3.0e-7 },
//! ]
//!
//! [[transfer]]
//! from = "cpu"
//! to = "wgpu:0"
//! size = "64K"
//! median_ns = 41000
//! ```
//!
//! A provider whose parity check failed is kept with `parity = "fail"` and the reason, and is
//! never placed for that key. The order of `providers` is the placement order: a person may
//! reorder it by hand.

use std::fmt;
use std::path::Path;

use aihal_core::{CoreError, Result};
use serde::{Deserialize, Serialize};

use crate::provider::OpKind;

/// How many activation rows an op call has, in the buckets where the best provider changes
/// (decode, small batches, prompts).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MClass {
    /// One row: a decode step.
    One,
    /// 2 to 8 rows.
    Few,
    /// 9 to 64 rows.
    Some,
    /// 65 rows or more: prompts.
    Many,
}

impl MClass {
    /// Every class, in order.
    pub const ALL: [MClass; 4] = [Self::One, Self::Few, Self::Some, Self::Many];

    /// The class of `m` rows.
    pub fn of(m: usize) -> Self {
        match m {
            0 | 1 => Self::One,
            2..=8 => Self::Few,
            9..=64 => Self::Some,
            _ => Self::Many,
        }
    }

    /// A row count inside the class (what calibration measures).
    pub fn representative(self) -> usize {
        match self {
            Self::One => 1,
            Self::Few => 8,
            Self::Some => 32,
            Self::Many => 128,
        }
    }

    /// The name in the table (`"1"`, `"2-8"`, `"9-64"`, `"65+"`).
    pub fn name(self) -> &'static str {
        match self {
            Self::One => "1",
            Self::Few => "2-8",
            Self::Some => "9-64",
            Self::Many => "65+",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == s)
    }
}

/// The size of what an op reads besides its activations (a linear layer's or an embedding
/// table's weight bytes; 0 for the other ops), in buckets: the best provider for a weight
/// that fits in a cache is not the best for one streamed from memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SizeClass {
    /// Up to 1 MiB.
    K1M,
    /// Up to 16 MiB.
    M16,
    /// Up to 256 MiB.
    M256,
    /// More.
    Huge,
}

impl SizeClass {
    /// Every class, in order.
    pub const ALL: [SizeClass; 4] = [Self::K1M, Self::M16, Self::M256, Self::Huge];

    /// The class of `bytes`.
    pub fn of(bytes: usize) -> Self {
        match bytes {
            0..=0x10_0000 => Self::K1M,
            0x10_0001..=0x100_0000 => Self::M16,
            0x100_0001..=0x1000_0000 => Self::M256,
            _ => Self::Huge,
        }
    }

    /// The name in the table.
    pub fn name(self) -> &'static str {
        match self {
            Self::K1M => "1M",
            Self::M16 => "16M",
            Self::M256 => "256M",
            Self::Huge => "huge",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == s)
    }
}

/// What the best provider depends on: the op, its weight format (`None` for ops without a
/// quantized weight), the row class and the weight size class.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OpKey {
    /// The op.
    pub op: OpKind,
    /// The weight format's name (`"q4_0"`), if the op has a quantized weight.
    pub format: Option<String>,
    /// Activation rows.
    pub m: MClass,
    /// Weight bytes.
    pub size: SizeClass,
}

impl fmt::Display for OpKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.op)?;
        if let Some(fmt) = &self.format {
            write!(f, " {fmt}")?;
        }
        write!(f, " m={} size={}", self.m.name(), self.size.name())
    }
}

/// What calibration found for one provider under one key.
#[derive(Clone, Debug, PartialEq)]
pub struct Measured {
    /// The provider's device, as `Device` prints it (`cpu`, `wgpu:0`).
    pub device: String,
    /// The median time of one call, when it passed parity and was timed.
    pub median_ns: Option<u64>,
    /// The parity check's result.
    pub parity: Parity,
}

/// A parity check's result against `aihal-reference`.
#[derive(Clone, Debug, PartialEq)]
pub enum Parity {
    /// Within tolerance; the largest error seen, relative to the tolerance's scale.
    Pass {
        /// The largest error over the tolerance (at most 1).
        max_error: f64,
    },
    /// Outside tolerance, or the provider failed: never placed for this key.
    Fail {
        /// Why.
        reason: String,
    },
}

/// One key's measured providers, in placement order.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// The key.
    pub key: OpKey,
    /// When it was measured (`YYYY-MM-DD`).
    pub date: String,
    /// Providers in placement order (those that failed parity last).
    pub providers: Vec<Measured>,
}

impl Entry {
    /// The devices that passed parity, in placement order.
    pub fn order(&self) -> impl Iterator<Item = &str> {
        self.providers
            .iter()
            .filter(|m| matches!(m.parity, Parity::Pass { .. }))
            .map(|m| m.device.as_str())
    }
}

/// The measured cost of moving an activation of a size class between two providers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transfer {
    /// From this device.
    pub from: String,
    /// To this one.
    pub to: String,
    /// Activation bytes, by class.
    pub size: SizeClass,
    /// The median time of one move.
    pub median_ns: u64,
}

/// Identifies the machine a table was measured on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// The CPU's model name and architecture.
    pub cpu: String,
    /// The SIMD features the CPU reports.
    pub cpu_features: Vec<String>,
    /// Each provider, `device: name` (name includes the GPU's adapter and driver, the NPU
    /// runtime's version).
    pub providers: Vec<String>,
    /// The aihal version.
    pub aihal: String,
}

/// A dispatch table: the machine it describes, the measured keys, the transfers.
#[derive(Clone, Debug, PartialEq)]
pub struct DispatchTable {
    /// The machine.
    pub machine: Fingerprint,
    /// One entry per key.
    pub entries: Vec<Entry>,
    /// Transfer costs.
    pub transfers: Vec<Transfer>,
}

// The file's shape, with spans for the fields whose meaning is checked after parsing.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    machine: Fingerprint,
    #[serde(default, rename = "entry")]
    entries: Vec<FileEntry>,
    #[serde(default, rename = "transfer")]
    transfers: Vec<FileTransfer>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEntry {
    op: toml::Spanned<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    format: Option<String>,
    m: toml::Spanned<String>,
    size: toml::Spanned<String>,
    date: String,
    providers: Vec<FileMeasured>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileMeasured {
    device: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    median_ns: Option<u64>,
    parity: toml::Spanned<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_error: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTransfer {
    from: String,
    to: String,
    size: toml::Spanned<String>,
    median_ns: u64,
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset).unwrap_or(text).matches('\n').count() + 1
}

impl DispatchTable {
    /// Parses a table; `origin` names the file in errors.
    ///
    /// Errors: `InvalidConfig` naming `origin` and the line for malformed TOML, unknown or
    /// missing fields, an unknown op, row class, size class or parity word, a passing
    /// provider without a time or a failing one without a reason.
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let file: File = toml::from_str(text).map_err(|e| {
            let line = e.span().map_or(0, |s| line_of(text, s.start));
            CoreError::invalid_config(format!("{origin}:{line}: {}", e.message()))
        })?;
        let at = |span: std::ops::Range<usize>, what: String| {
            CoreError::invalid_config(format!("{origin}:{}: {what}", line_of(text, span.start)))
        };
        let mut entries = Vec::with_capacity(file.entries.len());
        for e in file.entries {
            let op = OpKind::ALL
                .into_iter()
                .find(|k| k.name() == e.op.get_ref().as_str())
                .ok_or_else(|| at(e.op.span(), format!("unknown op `{}`", e.op.get_ref())))?;
            let m = MClass::parse(e.m.get_ref()).ok_or_else(|| {
                at(
                    e.m.span(),
                    format!("unknown row class `{}` (1, 2-8, 9-64, 65+)", e.m.get_ref()),
                )
            })?;
            let size = SizeClass::parse(e.size.get_ref()).ok_or_else(|| {
                at(
                    e.size.span(),
                    format!("unknown size class `{}` (1M, 16M, 256M, huge)", e.size.get_ref()),
                )
            })?;
            let mut providers = Vec::with_capacity(e.providers.len());
            for p in e.providers {
                let parity = match (p.parity.get_ref().as_str(), p.max_error, p.reason) {
                    ("pass", Some(max_error), _) if max_error.is_finite() && p.median_ns.is_some() => {
                        Parity::Pass { max_error }
                    }
                    ("pass", ..) => {
                        return Err(at(
                            p.parity.span(),
                            format!("`{}` passed parity but has no median_ns or finite max_error", p.device),
                        ))
                    }
                    ("fail", _, Some(reason)) => Parity::Fail { reason },
                    ("fail", _, None) => {
                        return Err(at(
                            p.parity.span(),
                            format!("`{}` failed parity but gives no reason", p.device),
                        ))
                    }
                    (other, ..) => {
                        return Err(at(
                            p.parity.span(),
                            format!("parity is `pass` or `fail`, not `{other}`"),
                        ))
                    }
                };
                providers.push(Measured {
                    device: p.device,
                    median_ns: p.median_ns,
                    parity,
                });
            }
            entries.push(Entry {
                key: OpKey {
                    op,
                    format: e.format,
                    m,
                    size,
                },
                date: e.date,
                providers,
            });
        }
        let mut transfers = Vec::with_capacity(file.transfers.len());
        for t in file.transfers {
            let size = SizeClass::parse(t.size.get_ref())
                .ok_or_else(|| at(t.size.span(), format!("unknown size class `{}`", t.size.get_ref())))?;
            transfers.push(Transfer {
                from: t.from,
                to: t.to,
                size,
                median_ns: t.median_ns,
            });
        }
        Ok(Self {
            machine: file.machine,
            entries,
            transfers,
        })
    }

    /// Reads and parses a table file.
    ///
    /// Errors: `InvalidConfig` naming the path for an unreadable file, and as [`parse`](Self::parse).
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            CoreError::invalid_config(format!("{}: cannot read the dispatch table: {e}", path.display()))
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// The table as TOML.
    pub fn to_toml(&self) -> String {
        let spanned = |s: &str| toml::Spanned::new(0..0, s.to_owned());
        let file = File {
            machine: self.machine.clone(),
            entries: self
                .entries
                .iter()
                .map(|e| FileEntry {
                    op: spanned(e.key.op.name()),
                    format: e.key.format.clone(),
                    m: spanned(e.key.m.name()),
                    size: spanned(e.key.size.name()),
                    date: e.date.clone(),
                    providers: e
                        .providers
                        .iter()
                        .map(|p| {
                            let (parity, max_error, reason) = match &p.parity {
                                Parity::Pass { max_error } => ("pass", Some(*max_error), None),
                                Parity::Fail { reason } => ("fail", None, Some(reason.clone())),
                            };
                            FileMeasured {
                                device: p.device.clone(),
                                median_ns: p.median_ns,
                                parity: spanned(parity),
                                max_error,
                                reason,
                            }
                        })
                        .collect(),
                })
                .collect(),
            transfers: self
                .transfers
                .iter()
                .map(|t| FileTransfer {
                    from: t.from.clone(),
                    to: t.to.clone(),
                    size: spanned(t.size.name()),
                    median_ns: t.median_ns,
                })
                .collect(),
        };
        toml::to_string_pretty(&file).unwrap_or_else(|e| format!("# the table could not be written: {e}\n"))
    }

    /// The entry for `key`, if measured.
    pub fn entry(&self, key: &OpKey) -> Option<&Entry> {
        self.entries.iter().find(|e| &e.key == key)
    }

    /// The measured cost of moving `bytes` from one device to another, if measured (the
    /// nearest measured size class at or above, else the largest).
    pub fn transfer_ns(&self, from: &str, to: &str, bytes: usize) -> Option<u64> {
        let want = SizeClass::of(bytes);
        let mut pairs: Vec<&Transfer> = self.transfers.iter().filter(|t| t.from == from && t.to == to).collect();
        pairs.sort_by_key(|t| t.size);
        pairs
            .iter()
            .find(|t| t.size >= want)
            .or(pairs.last())
            .map(|t| t.median_ns)
    }
}

impl Fingerprint {
    /// This machine's fingerprint for `providers` (`device: name` each).
    pub fn of_this_machine(providers: Vec<String>) -> Self {
        Self {
            cpu: cpu_model(),
            cpu_features: cpu_features(),
            providers,
            aihal: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }
}

fn cpu_model() -> String {
    let name = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name") || l.starts_with("Hardware") || l.starts_with("CPU part"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    format!("{name} ({})", std::env::consts::ARCH)
}

fn cpu_features() -> Vec<String> {
    #[allow(unused_mut)] // other architectures list nothing
    let mut out: Vec<&str> = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! probe {
            ($($f:tt),*) => { $(if std::arch::is_x86_feature_detected!($f) { out.push($f); })* };
        }
        probe!(
            "avx2",
            "fma",
            "f16c",
            "avx512f",
            "avx512bw",
            "avx512vnni",
            "avx512bf16",
            "avx512vbmi",
            "avxvnni"
        );
    }
    #[cfg(target_arch = "aarch64")]
    {
        macro_rules! probe {
            ($($f:tt),*) => { $(if std::arch::is_aarch64_feature_detected!($f) { out.push($f); })* };
        }
        probe!("neon", "dotprod", "fp16", "i8mm", "sve");
    }
    out.into_iter().map(str::to_owned).collect()
}
