//! The crate's error type: runtime status codes with the call that returned them, loader
//! failures, and everything else as a [`CoreError`].

use std::ffi::c_int;
use std::fmt;

use aihal_core::CoreError;
use aihal_rknn_sys::{status_name, LoadError, RuntimeVersion};

/// A `Result` whose error is [`RknnError`].
pub type Result<T, E = RknnError> = std::result::Result<T, E>;

/// A status code returned by the runtime (`int`, 0 on success).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RknnStatus(pub c_int);

impl RknnStatus {
    /// The symbolic name (`RKNN_ERR_TIMEOUT`), or `UNKNOWN_STATUS` for a code no runtime
    /// version defines.
    pub fn name(self) -> &'static str {
        status_name(self.0).unwrap_or("UNKNOWN_STATUS")
    }

    /// `Ok` for `RKNN_SUCC` and any positive value, else a [`RknnError::Status`] naming `op`.
    pub fn result(self, op: &'static str) -> Result<()> {
        if self.0 >= 0 {
            Ok(())
        } else {
            Err(RknnError::Status { op, status: self })
        }
    }
}

impl fmt::Display for RknnStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.0)
    }
}

impl fmt::Debug for RknnStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Everything that can go wrong talking to the NPU runtime.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RknnError {
    /// A runtime call returned an error status: `rknn_run failed: RKNN_ERR_TIMEOUT (-2)`.
    #[error("{op} failed: {status}{}", hint(*status))]
    Status {
        /// The C function that failed.
        op: &'static str,
        /// What it returned.
        status: RknnStatus,
    },
    /// A runtime call that returns a pointer returned NULL.
    #[error("{op} failed: the runtime returned no memory ({bytes} bytes requested)")]
    NullMemory {
        /// The C function that failed.
        op: &'static str,
        /// The size asked for.
        bytes: u64,
    },
    /// The runtime library could not be loaded.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The loaded runtime does not export a function this operation needs.
    #[error("{function} is not available in RKNN runtime {version}; {needs}")]
    MissingFunction {
        /// The missing C function.
        function: &'static str,
        /// The runtime's version.
        version: RuntimeVersion,
        /// What would provide it.
        needs: &'static str,
    },
    /// The library is not a runtime this crate can drive (older than 1.5.0, or not an RK3588
    /// runtime).
    #[error("{path} is not a supported RKNN runtime: {reason}")]
    UnsupportedRuntime {
        /// The library.
        path: String,
        /// Why, and what to install instead.
        reason: String,
    },
    /// One or more handles could not be released; see [`RknnMatMul::close`](crate::RknnMatMul::close)
    /// and [`RknnModel::close`](crate::RknnModel::close).
    #[error("releasing NPU resources failed: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Release(Vec<RknnError>),
    /// A validation error that is not specific to the runtime.
    #[error(transparent)]
    Core(#[from] CoreError),
}

fn hint(status: RknnStatus) -> &'static str {
    match status.0 {
        -3 => " (is the rknpu kernel driver loaded and /dev/dri or /dev/rknpu readable by this user?)",
        -10 => " (runtime, driver and firmware versions do not match: update the rknpu2 runtime or the kernel driver)",
        -13 => " (the model was compiled for another platform: convert it for rk3588)",
        _ => "",
    }
}

impl From<RknnError> for CoreError {
    fn from(e: RknnError) -> Self {
        match e {
            RknnError::Core(core) => core,
            RknnError::Load(load) => CoreError::device_not_available("rknn", load.to_string()),
            other => CoreError::backend("rknn", other),
        }
    }
}

impl RknnError {
    /// The runtime status, when the error is one.
    pub fn status(&self) -> Option<RknnStatus> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// An invalid-input error (bad shapes, lengths, values handed in by the caller).
    pub(crate) fn invalid_input(message: impl Into<String>) -> Self {
        Self::Core(CoreError::invalid_input(message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_errors_name_the_operation_and_the_code() {
        let e = RknnStatus(-2).result("rknn_run").unwrap_err();
        assert_eq!(e.to_string(), "rknn_run failed: RKNN_ERR_TIMEOUT (-2)");
        assert_eq!(e.status(), Some(RknnStatus(-2)));
        assert!(RknnStatus(0).result("rknn_run").is_ok());
        assert_eq!(format!("{:?}", RknnStatus(-99)), "UNKNOWN_STATUS (-99)");
        let e = RknnStatus(-13).result("rknn_init").unwrap_err();
        assert!(e.to_string().contains("rk3588"), "{e}");
    }

    #[test]
    fn conversion_into_core_error_keeps_the_source() {
        let core: CoreError = RknnStatus(-7).result("rknn_query").unwrap_err().into();
        assert_eq!(
            core.to_string(),
            "rknn backend: rknn_query failed: RKNN_ERR_CTX_INVALID (-7)"
        );
        let source = std::error::Error::source(&core).unwrap();
        assert!(source.downcast_ref::<RknnError>().is_some());

        let core: CoreError = RknnError::invalid_input("bad").into();
        assert!(matches!(core, CoreError::InvalidInput(_)));
    }
}
