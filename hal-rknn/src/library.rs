//! [`RknnLibrary`]: the loaded runtime, shared by every context made from it.

use std::ffi::c_void;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use aihal_rknn_sys as sys;
use sys::{RknnApi, RknnLib, RuntimeVersion};

use crate::error::{Result, RknnError, RknnStatus};

/// Where a [`RuntimeInfo`]'s version came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VersionSource {
    /// `RKNN_QUERY_SDK_VERSION` on a context.
    SdkQuery,
    /// The functions the library exports: a lower bound, exact only up to the generation
    /// (2.1.0, 2.2.x and 2.3.x export the same functions and all read as 2.1.0).
    Symbols,
}

/// What the runtime says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeInfo {
    /// The runtime version (decides struct layouts and available calls).
    pub version: RuntimeVersion,
    /// How `version` was found.
    pub source: VersionSource,
    /// The runtime's full version string, when queried.
    pub api_version: Option<String>,
    /// The kernel driver's version string, when queried.
    pub driver_version: Option<String>,
}

impl fmt::Display for RuntimeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.api_version, &self.driver_version) {
            (Some(api), Some(drv)) => write!(f, "runtime {api}, driver {drv}"),
            _ => write!(f, "runtime {} (from exported symbols)", self.version),
        }
    }
}

/// Why detection failed, kept (cloneable) for every later call.
#[derive(Clone, Debug)]
enum DetectError {
    /// A runtime call failed.
    Status(&'static str, RknnStatus),
    /// The runtime is one this crate must not drive.
    Unsupported(String),
}

struct Inner {
    lib: RknnLib,
    info: OnceLock<Result<RuntimeInfo, DetectError>>,
}

/// The loaded RKNN runtime (`librknnrt.so`). Cheap to clone; every model and matmul keeps
/// one, so the library stays loaded while anything made from it lives.
///
/// `RknnLibrary` is `Send` and `Sync`: it holds the library handle and immutable function
/// pointers, and the runtime's functions are called through contexts, never through it.
#[derive(Clone)]
pub struct RknnLibrary {
    inner: Arc<Inner>,
}

impl fmt::Debug for RknnLibrary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RknnLibrary")
            .field("path", &self.inner.lib.path())
            .field("symbol_version", &self.inner.lib.symbol_version())
            .finish_non_exhaustive()
    }
}

static GLOBAL: OnceLock<std::result::Result<RknnLibrary, String>> = OnceLock::new();

impl RknnLibrary {
    /// Loads the runtime named by `RUST_AI_RKNN_LIB`, else the first of the usual places
    /// that has it (`librknnrt.so` on the loader path, `/usr/lib`, `/usr/lib64`,
    /// `/usr/lib/aarch64-linux-gnu`, `/usr/local/lib`). When it is absent the error lists
    /// every path tried; nothing panics.
    ///
    /// Loading runs the library's initialisers: point `RUST_AI_RKNN_LIB` only at an RKNN
    /// runtime (or an implementation of its ABI such as `aihal-rknn-emulator`).
    pub fn load() -> Result<Self> {
        // SAFETY: the library is the RKNN runtime the user installed or named, whose
        // functions have the signatures declared in aihal-rknn-sys (documented above).
        Ok(Self::wrap(unsafe { RknnLib::open_default() }?))
    }

    /// Loads the runtime at `path` (same contract as [`RknnLibrary::load`]).
    pub fn load_from(path: impl AsRef<Path>) -> Result<Self> {
        // SAFETY: as in `load`: the caller names an RKNN runtime.
        Ok(Self::wrap(unsafe { RknnLib::open(path.as_ref()) }?))
    }

    /// The process-wide library from [`RknnLibrary::load`], loaded once; a failure is also
    /// remembered (the error message is returned on every call).
    pub fn global() -> Result<Self> {
        GLOBAL
            .get_or_init(|| Self::load().map_err(|e| e.to_string()))
            .clone()
            .map_err(|message| RknnError::Core(aihal_core::CoreError::device_not_available("rknn", message)))
    }

    fn wrap(lib: RknnLib) -> Self {
        Self {
            inner: Arc::new(Inner {
                lib,
                info: OnceLock::new(),
            }),
        }
    }

    /// The resolved functions.
    pub(crate) fn api(&self) -> &RknnApi {
        self.inner.lib.api()
    }

    /// The path or name the library was loaded from.
    pub fn path(&self) -> &Path {
        self.inner.lib.path()
    }

    /// The version, driver and how they were found (detected once per library).
    ///
    /// First the exported functions must show runtime 1.5.0 or later
    /// ([`sys::version_from_symbols`]): runtimes 1.3.0 and 1.4.0 export a matmul API whose
    /// struct no public header documents, so a library without any 1.5.0 addition is refused
    /// ([`RknnError::UnsupportedRuntime`]) before any matmul call. Then a throw-away 1×64×64
    /// int8 matmul context is created and asked for `RKNN_QUERY_SDK_VERSION`. Its info struct
    /// is the 64-byte layout with zero quantization fields, which a 1.x runtime reads as the
    /// same shape and layouts through its 24-byte view. A version below 1.5.0 in the answer
    /// is refused too. A runtime that creates the context but does not answer the query is
    /// judged by its exported symbols, a lower bound ([`VersionSource::Symbols`]). A runtime
    /// that cannot create the context (no NPU, driver missing) is an error: nothing will run
    /// on it.
    pub fn runtime_info(&self) -> Result<RuntimeInfo> {
        self.inner
            .info
            .get_or_init(|| self.detect())
            .clone()
            .map_err(|e| match e {
                DetectError::Status(op, status) => RknnError::Status { op, status },
                DetectError::Unsupported(reason) => RknnError::UnsupportedRuntime {
                    path: self.path().display().to_string(),
                    reason,
                },
            })
    }

    /// The runtime version ([`RknnLibrary::runtime_info`]'s).
    pub fn version(&self) -> Result<RuntimeVersion> {
        self.runtime_info().map(|i| i.version)
    }

    fn detect(&self) -> Result<RuntimeInfo, DetectError> {
        let Some(floor) = self.inner.lib.symbol_version() else {
            return Err(DetectError::Unsupported(format!(
                "it exports none of the functions runtime {} added (rknn_set_input_shape, \
                 rknn_set_input_shapes, rknn_mem_sync, rknn_create_mem2, ...): it is older than {} \
                 (1.3.x and 1.4.x export an undocumented matmul API) or not an RK3588 runtime; \
                 install runtime {} or later",
                RuntimeVersion::MIN_SUPPORTED,
                RuntimeVersion::MIN_SUPPORTED,
                RuntimeVersion::MIN_SUPPORTED
            )));
        };
        let api = self.api();
        let mut info = sys::rknn_matmul_info_v2::zeroed();
        info.M = 1;
        // 64, not 32: one user guide for 1.5.2 asks for K and N above 32.
        info.K = 64;
        info.N = 64;
        info.type_ = sys::RKNN_INT8_MM_INT8_TO_INT32;
        let mut io = sys::rknn_matmul_io_attr::zeroed();
        let mut ctx: sys::rknn_matmul_ctx = 0;
        // SAFETY: `info` is a zeroed 64-byte struct, at least as large as either layout the
        // runtime may read; `ctx` and `io` are writable.
        let code = unsafe { (api.rknn_matmul_create)(&raw mut ctx, (&raw mut info).cast::<c_void>(), &raw mut io) };
        if code < 0 {
            return Err(DetectError::Status("rknn_matmul_create", RknnStatus(code)));
        }
        let mut sdk = sys::rknn_sdk_version::zeroed();
        // SAFETY: `ctx` was just created; `sdk` is writable for the size passed.
        let code = unsafe {
            (api.rknn_query)(
                ctx,
                sys::RKNN_QUERY_SDK_VERSION,
                (&raw mut sdk).cast::<c_void>(),
                size_of::<sys::rknn_sdk_version>() as u32,
            )
        };
        // SAFETY: `ctx` is live and destroyed once, here.
        let destroyed = unsafe { (api.rknn_matmul_destroy)(ctx) };
        if destroyed < 0 {
            tracing::warn!(
                "aihal-rknn: destroying the version-probe matmul context failed: {}",
                RknnStatus(destroyed)
            );
        }
        let api_version = sys::read_c_name(&sdk.api_version);
        match RuntimeVersion::parse(&api_version) {
            Some(version) if code >= 0 && version < RuntimeVersion::MIN_SUPPORTED => {
                Err(DetectError::Unsupported(format!(
                    "it reports runtime {api_version}; runtime {} or later is required",
                    RuntimeVersion::MIN_SUPPORTED
                )))
            }
            Some(version) if code >= 0 => Ok(RuntimeInfo {
                version,
                source: VersionSource::SdkQuery,
                api_version: Some(api_version),
                driver_version: Some(sys::read_c_name(&sdk.drv_version)),
            }),
            _ => Ok(RuntimeInfo {
                version: floor,
                source: VersionSource::Symbols,
                api_version: None,
                driver_version: None,
            }),
        }
    }

    /// `Ok` when the runtime is at least `version`, else [`RknnError::MissingFunction`] for
    /// `function`.
    pub(crate) fn require(&self, version: RuntimeVersion, function: &'static str, needs: &'static str) -> Result<()> {
        let have = self.version()?;
        if have >= version {
            Ok(())
        } else {
            Err(RknnError::MissingFunction {
                function,
                version: have,
                needs,
            })
        }
    }

    /// [`RknnError::MissingFunction`] for an optional symbol the library does not export.
    pub(crate) fn missing(&self, function: &'static str, needs: &'static str) -> RknnError {
        match self.version() {
            Ok(version) => RknnError::MissingFunction {
                function,
                version,
                needs,
            },
            Err(e) => e,
        }
    }
}
