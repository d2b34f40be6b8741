//! The runtime versions the emulator behaves as, and which `rknn_matmul_info` each one reads.
//!
//! Written from the published headers, independently of `aihal-rknn-sys` (whose rules the
//! emulator exists to check): the version type, its parser and the struct-generation table
//! below are this crate's own.

use std::fmt;

/// A runtime version, `major.minor.patch`, ordered numerically.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    /// Major version.
    pub major: u32,
    /// Minor version.
    pub minor: u32,
    /// Patch version.
    pub patch: u32,
}

/// Shorthand for [`Version`] literals.
pub const fn v(major: u32, minor: u32, patch: u32) -> Version {
    Version { major, minor, patch }
}

impl Version {
    /// The oldest version the emulator can be configured as. 1.3.0 and 1.4.0 are modelled
    /// only as far as their exports go (see [`crate::exports`]): no header documents their
    /// matmul struct.
    pub const OLDEST: Version = v(1, 3, 0);
    /// The newest version whose headers the emulator follows.
    pub const NEWEST: Version = v(2, 3, 2);

    /// Reads `X.Y.Z` (or `X.Y`, patch 0), ignoring surrounding blanks; `None` for anything
    /// else.
    pub fn parse(s: &str) -> Option<Version> {
        let mut parts = s.trim().split('.');
        let mut next = || -> Option<u32> {
            let p = parts.next()?;
            (!p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                .then(|| p.parse().ok())
                .flatten()
        };
        let (major, minor) = (next()?, next()?);
        let patch = match parts.next() {
            None => 0,
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p.parse().ok()?,
            Some(_) => return None,
        };
        parts.next().is_none().then_some(v(major, minor, patch))
    }

    /// Whether the emulator can behave as this version (1.3.0 to 2.3.x).
    pub fn is_emulated(self) -> bool {
        self >= Self::OLDEST && self < v(2, 4, 0)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// The four generations of `rknn_matmul_info`, as each version's `rknn_matmul_api.h`
/// declares it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InfoGeneration {
    /// rknpu2 v1.5.0 header (same in 1.5.2): 24 bytes, `int32_t M, K, N`, `rknn_tensor_type
    /// type`, `int32_t native_layout` (B), `int32_t perf_layout` (A and C).
    V1_5,
    /// rknn-toolkit2 v1.6.0 header: 24 bytes, `type` becomes `rknn_matmul_type`, the last two
    /// fields are renamed `B_layout` and `AC_layout` (still `int32_t`).
    V1_6,
    /// rknn-toolkit2 v2.0.0-beta0 header: 64 bytes; `int16_t B_layout, B_quant_type,
    /// AC_layout, AC_quant_type` at 16..24, `int32_t iommu_domain_id` at 24, 36 reserved
    /// bytes.
    V2_0,
    /// rknn-toolkit2 v2.1.0 header (unchanged to 2.3.2): as 2.0, but `int16_t group_size` at
    /// 28 and 34 reserved bytes.
    V2_1,
}

/// The first version of each generation, oldest first: the version's generation is the last
/// entry not newer than it.
const GENERATIONS: [(Version, InfoGeneration); 4] = [
    (v(1, 5, 0), InfoGeneration::V1_5),
    (v(1, 6, 0), InfoGeneration::V1_6),
    (v(2, 0, 0), InfoGeneration::V2_0),
    (v(2, 1, 0), InfoGeneration::V2_1),
];

impl InfoGeneration {
    /// The generation `version` reads, `None` before 1.5.0 (no public header documents the
    /// matmul struct of 1.3.0 or 1.4.0).
    pub fn of(version: Version) -> Option<InfoGeneration> {
        GENERATIONS
            .iter()
            .take_while(|(first, _)| *first <= version)
            .last()
            .map(|&(_, generation)| generation)
    }

    /// How many bytes of the caller's struct this generation reads.
    pub fn size(self) -> usize {
        match self {
            Self::V1_5 | Self::V1_6 => 24,
            Self::V2_0 | Self::V2_1 => 64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_strictly() {
        assert_eq!(Version::parse("2.3.2"), Some(v(2, 3, 2)));
        assert_eq!(Version::parse(" 1.6 "), Some(v(1, 6, 0)));
        for bad in ["", "2", "2.x.0", "2.1.0.4", "2..1", "-1.5.0", "1.5.0 (abc)"] {
            assert_eq!(Version::parse(bad), None, "{bad:?}");
        }
        assert!(v(1, 5, 2) < v(1, 6, 0) && v(1, 10, 0) > v(1, 9, 9));
        assert_eq!(v(2, 0, 0).to_string(), "2.0.0");
        assert!(v(1, 3, 0).is_emulated() && v(2, 3, 9).is_emulated());
        assert!(!v(1, 2, 0).is_emulated() && !v(2, 4, 0).is_emulated());
    }

    #[test]
    fn each_version_reads_its_headers_generation() {
        use InfoGeneration::*;
        let cases = [
            (v(1, 3, 0), None),
            (v(1, 4, 0), None),
            (v(1, 5, 0), Some(V1_5)),
            (v(1, 5, 2), Some(V1_5)),
            (v(1, 6, 0), Some(V1_6)),
            (v(2, 0, 0), Some(V2_0)),
            (v(2, 1, 0), Some(V2_1)),
            (v(2, 2, 0), Some(V2_1)),
            (v(2, 3, 2), Some(V2_1)),
        ];
        for (version, want) in cases {
            assert_eq!(InfoGeneration::of(version), want, "{version}");
        }
        assert_eq!((V1_5.size(), V1_6.size(), V2_0.size(), V2_1.size()), (24, 24, 64, 64));
    }
}
