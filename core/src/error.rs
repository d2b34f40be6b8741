//! The error type every aihal crate returns, and the `Result` alias.

use std::error::Error as StdError;

/// A `Result` whose error is [`CoreError`].
pub type Result<T, E = CoreError> = std::result::Result<T, E>;

/// Everything that can go wrong in aihal, in terms a caller can act on.
///
/// Backend crates keep their own error types (with vendor details) and convert them into
/// `CoreError`, usually through [`CoreError::backend`]; `CoreError` itself never names a
/// vendor type, so `aihal-core` links no vendor library.
///
/// The enum is `#[non_exhaustive]`: match the variants you handle and keep a `_` arm.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoreError {
    /// A configuration value is malformed, contradictory or out of range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    /// Data handed to aihal is unusable as it is: a NaN where none is allowed, a malformed
    /// file, a packed buffer that contradicts its own header.
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// A shape (or a length, written as a one-element shape) differs from the one required.
    #[error("shape mismatch in {context}: expected {expected:?}, got {actual:?}")]
    ShapeMismatch {
        /// What was being checked, e.g. `"TensorBuffer bytes"` or `"matmul weight"`.
        context: String,
        /// The shape that was required.
        expected: Vec<usize>,
        /// The shape that was given.
        actual: Vec<usize>,
    },

    /// One dimension (or a rank) differs from the one required.
    #[error("dimension mismatch in {context}: expected {expected}, got {actual}")]
    DimensionMismatch {
        /// What was being checked, e.g. `"matmul inner dimension K"`.
        context: String,
        /// The required size.
        expected: usize,
        /// The given size.
        actual: usize,
    },

    /// The device asked for is not present or cannot be used, and why.
    #[error("device {device} is not available: {reason}")]
    DeviceNotAvailable {
        /// The device, as `RUST_AI_DEVICE` would spell it (`cuda:1`, `rknn`, …).
        device: String,
        /// Why it cannot be used, with what to do about it where there is something.
        reason: String,
    },

    /// Two operands live on different devices.
    #[error("device mismatch: expected data on {expected}, found it on {actual}")]
    DeviceMismatch {
        /// The device the operation runs on.
        expected: String,
        /// The device the offending operand lives on.
        actual: String,
    },

    /// An allocation failed on a device.
    #[error("out of memory on {device}{}", requested_bytes.map(|b| format!(" (requested {b} bytes)")).unwrap_or_default())]
    OutOfMemory {
        /// The device whose memory ran out.
        device: String,
        /// The size of the failed request, when known.
        requested_bytes: Option<u64>,
    },

    /// A kernel failed to compile, launch or complete.
    #[error("{backend} kernel {kernel} failed: {message}")]
    Kernel {
        /// The backend that ran it (`cpu`, `cuda`, `wgpu`, `rknn`).
        backend: String,
        /// The kernel's name.
        kernel: String,
        /// What went wrong.
        message: String,
    },

    /// A route that exists in the API but has no implementation yet (for example the NPU
    /// route of an op the NPU cannot run). [`crate::GpuDispatchable::dispatch`] turns this
    /// into a logged CPU fallback.
    #[error("not implemented: {0}")]
    NotImplemented(String),

    /// An operation does not support a data type or format.
    #[error("{op} does not support {dtype}")]
    Unsupported {
        /// The operation.
        op: String,
        /// The data type or format it was given.
        dtype: String,
    },

    /// An I/O error (reading a model or a file of weights).
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),

    /// An error from candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// An error from a backend crate, kept whole so `source()` reaches the vendor detail.
    #[error("{backend} backend: {source}")]
    Backend {
        /// The backend that failed (`cuda`, `rknn`, `wgpu`).
        backend: &'static str,
        /// The backend's own error.
        #[source]
        source: Box<dyn StdError + Send + Sync + 'static>,
    },
}

// The constructors take `impl Display` by value so call sites can pass a `Device`, a `&str`
// or a `String` alike.
#[allow(clippy::needless_pass_by_value)]
impl CoreError {
    /// An [`InvalidConfig`](CoreError::InvalidConfig) error.
    pub fn invalid_config(message: impl Into<String>) -> Self {
        Self::InvalidConfig(message.into())
    }

    /// An [`InvalidInput`](CoreError::InvalidInput) error.
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::InvalidInput(message.into())
    }

    /// A [`ShapeMismatch`](CoreError::ShapeMismatch) error.
    pub fn shape_mismatch(
        context: impl Into<String>,
        expected: impl Into<Vec<usize>>,
        actual: impl Into<Vec<usize>>,
    ) -> Self {
        Self::ShapeMismatch {
            context: context.into(),
            expected: expected.into(),
            actual: actual.into(),
        }
    }

    /// A [`DimensionMismatch`](CoreError::DimensionMismatch) error.
    pub fn dimension_mismatch(context: impl Into<String>, expected: usize, actual: usize) -> Self {
        Self::DimensionMismatch {
            context: context.into(),
            expected,
            actual,
        }
    }

    /// A [`DeviceNotAvailable`](CoreError::DeviceNotAvailable) error.
    pub fn device_not_available(device: impl ToString, reason: impl Into<String>) -> Self {
        Self::DeviceNotAvailable {
            device: device.to_string(),
            reason: reason.into(),
        }
    }

    /// A [`DeviceMismatch`](CoreError::DeviceMismatch) error.
    pub fn device_mismatch(expected: impl ToString, actual: impl ToString) -> Self {
        Self::DeviceMismatch {
            expected: expected.to_string(),
            actual: actual.to_string(),
        }
    }

    /// An [`OutOfMemory`](CoreError::OutOfMemory) error.
    pub fn out_of_memory(device: impl ToString, requested_bytes: Option<u64>) -> Self {
        Self::OutOfMemory {
            device: device.to_string(),
            requested_bytes,
        }
    }

    /// A [`Kernel`](CoreError::Kernel) error.
    pub fn kernel(backend: impl Into<String>, kernel: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Kernel {
            backend: backend.into(),
            kernel: kernel.into(),
            message: message.into(),
        }
    }

    /// A [`NotImplemented`](CoreError::NotImplemented) error.
    pub fn not_implemented(what: impl Into<String>) -> Self {
        Self::NotImplemented(what.into())
    }

    /// An [`Unsupported`](CoreError::Unsupported) error.
    pub fn unsupported(op: impl Into<String>, dtype: impl ToString) -> Self {
        Self::Unsupported {
            op: op.into(),
            dtype: dtype.to_string(),
        }
    }

    /// A [`Backend`](CoreError::Backend) error wrapping a backend crate's own error.
    pub fn backend(backend: &'static str, source: impl StdError + Send + Sync + 'static) -> Self {
        Self::Backend {
            backend,
            source: Box::new(source),
        }
    }

    /// Whether this is a [`NotImplemented`](CoreError::NotImplemented) error, the one that
    /// dispatch answers with a CPU fallback.
    pub fn is_not_implemented(&self) -> bool {
        matches!(self, Self::NotImplemented(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers_build_the_matching_variant_with_actionable_messages() {
        let e = CoreError::invalid_config("RUST_AI_DEVICE=gpu");
        assert!(matches!(e, CoreError::InvalidConfig(_)));
        assert_eq!(e.to_string(), "invalid configuration: RUST_AI_DEVICE=gpu");

        let e = CoreError::invalid_input("NaN at index 3");
        assert_eq!(e.to_string(), "invalid input: NaN at index 3");

        let e = CoreError::shape_mismatch("weight", [4, 8], vec![4, 7]);
        assert!(
            matches!(&e, CoreError::ShapeMismatch { expected, actual, .. } if expected == &[4, 8] && actual == &[4, 7])
        );
        assert_eq!(e.to_string(), "shape mismatch in weight: expected [4, 8], got [4, 7]");

        let e = CoreError::dimension_mismatch("matmul K", 64, 32);
        assert_eq!(e.to_string(), "dimension mismatch in matmul K: expected 64, got 32");

        let e = CoreError::device_not_available("cuda:1", "only 1 CUDA device (ordinal 0)");
        assert_eq!(
            e.to_string(),
            "device cuda:1 is not available: only 1 CUDA device (ordinal 0)"
        );

        let e = CoreError::device_mismatch("cuda:0", "cpu");
        assert_eq!(
            e.to_string(),
            "device mismatch: expected data on cuda:0, found it on cpu"
        );

        assert_eq!(
            CoreError::out_of_memory("cuda:0", Some(1024)).to_string(),
            "out of memory on cuda:0 (requested 1024 bytes)"
        );
        assert_eq!(
            CoreError::out_of_memory("cuda:0", None).to_string(),
            "out of memory on cuda:0"
        );

        assert_eq!(
            CoreError::kernel("wgpu", "gemv_q4_0", "launch failed").to_string(),
            "wgpu kernel gemv_q4_0 failed: launch failed"
        );

        let e = CoreError::not_implemented("NPU route of softmax");
        assert!(e.is_not_implemented());
        assert_eq!(e.to_string(), "not implemented: NPU route of softmax");

        let e = CoreError::unsupported("to_candle", "i8");
        assert!(!e.is_not_implemented());
        assert_eq!(e.to_string(), "to_candle does not support i8");
    }

    #[test]
    fn conversions_keep_the_source() {
        #[derive(Debug, thiserror::Error)]
        #[error("RKNN_ERR_TIMEOUT (-2)")]
        struct VendorError;

        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "model.rknn");
        let e: CoreError = io.into();
        assert!(matches!(e, CoreError::Io(_)));
        assert!(e.to_string().contains("model.rknn"));

        let c = candle_core::Error::Msg("boom".into());
        let e: CoreError = c.into();
        assert!(matches!(e, CoreError::Candle(_)));
        assert_eq!(e.to_string(), "boom");

        let e = CoreError::backend("rknn", VendorError);
        assert_eq!(e.to_string(), "rknn backend: RKNN_ERR_TIMEOUT (-2)");
        let source = std::error::Error::source(&e).expect("backend error keeps its source");
        assert!(source.downcast_ref::<VendorError>().is_some());
    }

    #[test]
    fn core_error_is_send_sync_static() {
        fn assert_bounds<T: Send + Sync + 'static>() {}
        assert_bounds::<CoreError>();
    }
}
