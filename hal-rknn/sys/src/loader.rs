//! Function-pointer types of the runtime's C functions and the run-time loader that resolves
//! them from `librknnrt.so` with `libloading`.
//!
//! Nothing is linked at build time: a binary built with the NPU backend starts on any
//! machine, and [`RknnLib::open_default`] answers an error listing every path it tried when
//! the runtime is absent. Functions that every supported runtime (1.5.0 to 2.3.x) exports are
//! required; the others are `Option`s, `None` when the runtime predates them.
#![allow(non_camel_case_types)]

use std::ffi::{c_int, c_void};
use std::fmt;
use std::path::{Path, PathBuf};

use libloading::Library;

use crate::types::{
    rknn_context, rknn_init_extend, rknn_input, rknn_matmul_ctx, rknn_matmul_info_v1, rknn_matmul_info_v2,
    rknn_matmul_io_attr, rknn_matmul_tensor_attr, rknn_output, rknn_output_extend, rknn_quant_params, rknn_run_extend,
    rknn_tensor_attr, rknn_tensor_mem,
};

/// `rknn_init(ctx_out, model, size, flag, extend)`: `size == 0` makes `model` a path.
pub type rknn_init_fn = unsafe extern "C" fn(*mut rknn_context, *mut c_void, u32, u32, *mut rknn_init_extend) -> c_int;
/// `rknn_dup_context(in, out)`.
pub type rknn_dup_context_fn = unsafe extern "C" fn(*mut rknn_context, *mut rknn_context) -> c_int;
/// `rknn_destroy(ctx)`.
pub type rknn_destroy_fn = unsafe extern "C" fn(rknn_context) -> c_int;
/// `rknn_query(ctx, cmd, info, size)`.
pub type rknn_query_fn = unsafe extern "C" fn(rknn_context, u32, *mut c_void, u32) -> c_int;
/// `rknn_inputs_set(ctx, n_inputs, inputs)`.
pub type rknn_inputs_set_fn = unsafe extern "C" fn(rknn_context, u32, *mut rknn_input) -> c_int;
/// `rknn_set_core_mask(ctx, mask)`.
pub type rknn_set_core_mask_fn = unsafe extern "C" fn(rknn_context, u32) -> c_int;
/// `rknn_run(ctx, extend)`.
pub type rknn_run_fn = unsafe extern "C" fn(rknn_context, *mut rknn_run_extend) -> c_int;
/// `rknn_outputs_get(ctx, n_outputs, outputs, extend)`.
pub type rknn_outputs_get_fn =
    unsafe extern "C" fn(rknn_context, u32, *mut rknn_output, *mut rknn_output_extend) -> c_int;
/// `rknn_outputs_release(ctx, n_outputs, outputs)`.
pub type rknn_outputs_release_fn = unsafe extern "C" fn(rknn_context, u32, *mut rknn_output) -> c_int;
/// `rknn_create_mem(ctx, size)`: NULL on failure.
pub type rknn_create_mem_fn = unsafe extern "C" fn(rknn_context, u32) -> *mut rknn_tensor_mem;
/// `rknn_destroy_mem(ctx, mem)`.
pub type rknn_destroy_mem_fn = unsafe extern "C" fn(rknn_context, *mut rknn_tensor_mem) -> c_int;
/// `rknn_set_io_mem(ctx, mem, attr)`.
pub type rknn_set_io_mem_fn = unsafe extern "C" fn(rknn_context, *mut rknn_tensor_mem, *mut rknn_tensor_attr) -> c_int;
/// `rknn_mem_sync(ctx, mem, mode)` (1.6.0).
pub type rknn_mem_sync_fn = unsafe extern "C" fn(rknn_context, *mut rknn_tensor_mem, u32) -> c_int;
/// `rknn_matmul_create(ctx_out, info, io_attr_out)`; `info` points to the struct layout of
/// the runtime's version ([`rknn_matmul_info_v1`] or [`rknn_matmul_info_v2`]).
pub type rknn_matmul_create_fn =
    unsafe extern "C" fn(*mut rknn_matmul_ctx, *mut c_void, *mut rknn_matmul_io_attr) -> c_int;
/// `rknn_matmul_set_io_mem(ctx, mem, attr)`; `attr` is one of the io_attr's matrices.
pub type rknn_matmul_set_io_mem_fn =
    unsafe extern "C" fn(rknn_matmul_ctx, *mut rknn_tensor_mem, *mut rknn_matmul_tensor_attr) -> c_int;
/// `rknn_matmul_set_core_mask(ctx, mask)`.
pub type rknn_matmul_set_core_mask_fn = unsafe extern "C" fn(rknn_matmul_ctx, u32) -> c_int;
/// `rknn_matmul_run(ctx)`.
pub type rknn_matmul_run_fn = unsafe extern "C" fn(rknn_matmul_ctx) -> c_int;
/// `rknn_matmul_destroy(ctx)`.
pub type rknn_matmul_destroy_fn = unsafe extern "C" fn(rknn_matmul_ctx) -> c_int;
/// `rknn_matmul_set_quant_params(ctx, params)` (2.0.0).
pub type rknn_matmul_set_quant_params_fn = unsafe extern "C" fn(rknn_matmul_ctx, *mut rknn_quant_params) -> c_int;

/// The environment variable naming the runtime library to load.
pub const LIBRARY_ENV: &str = "RUST_AI_RKNN_LIB";

/// The names tried, in order, when [`LIBRARY_ENV`] is unset: the soname through the dynamic
/// loader's search path, then the places board images install it.
pub const DEFAULT_LIBRARY_CANDIDATES: [&str; 5] = [
    "librknnrt.so",
    "/usr/lib/librknnrt.so",
    "/usr/lib64/librknnrt.so",
    "/usr/lib/aarch64-linux-gnu/librknnrt.so",
    "/usr/local/lib/librknnrt.so",
];

/// A runtime version, `major.minor.patch`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RuntimeVersion {
    /// Major version.
    pub major: u32,
    /// Minor version.
    pub minor: u32,
    /// Patch version.
    pub patch: u32,
}

impl RuntimeVersion {
    /// The oldest runtime this crate supports (the first with the matmul API).
    pub const MIN_SUPPORTED: Self = Self::new(1, 5, 0);

    /// A version from its parts.
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Self { major, minor, patch }
    }

    /// Parses the leading `X.Y.Z` of a version string such as
    /// `2.1.0 (967d001cc8@2024-08-07T19:28:19)`; a missing patch reads as 0.
    pub fn parse(s: &str) -> Option<Self> {
        let head = s.trim().split(|c: char| !(c.is_ascii_digit() || c == '.')).next()?;
        let mut parts = head.split('.').filter(|p| !p.is_empty()).map(str::parse::<u32>);
        let major = parts.next()?.ok()?;
        let minor = parts.next()?.ok()?;
        let patch = parts.next().transpose().ok()?.unwrap_or(0);
        Some(Self::new(major, minor, patch))
    }

    /// The `rknn_matmul_info` layout this version reads.
    pub fn matmul_info_layout(self) -> MatmulInfoLayout {
        if self >= Self::new(2, 0, 0) {
            MatmulInfoLayout::V2
        } else {
            MatmulInfoLayout::V1
        }
    }
}

/// What `rknn_matmul_info.B_quant_type` can declare about B's quantization parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MatmulQuantKind {
    /// One scale (and zero point) for the whole of B.
    PerLayer,
    /// One scale (and zero point) per column of B (`N` values).
    PerChannel,
    /// One scale per group of `group_size` elements of B (2.1.0 and later).
    PerGroup,
}

impl RuntimeVersion {
    /// The number `rknn_matmul_info.B_quant_type` must hold to declare `kind` on this version
    /// (symmetric quantization), or `None` when this version cannot declare it.
    ///
    /// - before 2.0.0 the struct has no such field: only per-layer exists, and it is `None`
    ///   too because there is nothing to write;
    /// - 2.0.0 numbers them in the field's comment: 0 per layer, 1 per channel (its matmul
    ///   demo sets 1 for per-channel B); it has no `group_size`, so no per-group;
    /// - 2.1.0 and later use the `rknn_matmul_quant_type` enum ([`RKNN_QUANT_TYPE_PER_LAYER_SYM`]
    ///   0, [`RKNN_QUANT_TYPE_PER_CHANNEL_SYM`] 2, [`RKNN_QUANT_TYPE_PER_GROUP_SYM`] 4), which
    ///   their demo uses (the field's comment there still says 0/1/2 and is contradicted by the
    ///   enum, by the 2.3.0 API reference and by the runtime's own error text).
    ///
    /// [`RKNN_QUANT_TYPE_PER_LAYER_SYM`]: crate::consts::RKNN_QUANT_TYPE_PER_LAYER_SYM
    /// [`RKNN_QUANT_TYPE_PER_CHANNEL_SYM`]: crate::consts::RKNN_QUANT_TYPE_PER_CHANNEL_SYM
    /// [`RKNN_QUANT_TYPE_PER_GROUP_SYM`]: crate::consts::RKNN_QUANT_TYPE_PER_GROUP_SYM
    pub fn matmul_quant_type(self, kind: MatmulQuantKind) -> Option<i16> {
        use crate::consts::{
            RKNN_QUANT_TYPE_PER_CHANNEL_SYM, RKNN_QUANT_TYPE_PER_GROUP_SYM, RKNN_QUANT_TYPE_PER_LAYER_SYM,
            RKNN_V2_0_QUANT_TYPE_PER_CHANNEL, RKNN_V2_0_QUANT_TYPE_PER_LAYER,
        };
        if self < Self::new(2, 0, 0) {
            None
        } else if self < Self::new(2, 1, 0) {
            match kind {
                MatmulQuantKind::PerLayer => Some(RKNN_V2_0_QUANT_TYPE_PER_LAYER),
                MatmulQuantKind::PerChannel => Some(RKNN_V2_0_QUANT_TYPE_PER_CHANNEL),
                MatmulQuantKind::PerGroup => None,
            }
        } else {
            Some(match kind {
                MatmulQuantKind::PerLayer => RKNN_QUANT_TYPE_PER_LAYER_SYM,
                MatmulQuantKind::PerChannel => RKNN_QUANT_TYPE_PER_CHANNEL_SYM,
                MatmulQuantKind::PerGroup => RKNN_QUANT_TYPE_PER_GROUP_SYM,
            })
        }
    }

    /// How many rows of B one native-layout segment holds on the RK3588, `None` when B is one
    /// unsegmented block.
    ///
    /// From 2.0.0 the matmul header's RK3588 section says that a native-layout B whose K
    /// exceeds 8192 is stored as `ceil(K / 8192)` consecutive segments of 8192 rows (the last
    /// one shorter), each in the native layout on its own. The 1.5.x and 1.6.0 headers
    /// describe one block (their K limit, 4096 and 10240, is all the constraint they state).
    pub fn native_b_segment_rows(self) -> Option<usize> {
        (self >= Self::new(2, 0, 0)).then_some(8192)
    }
}

impl fmt::Display for RuntimeVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// The two layouts of `rknn_matmul_info`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatmulInfoLayout {
    /// 24 bytes: runtimes 1.5.0 to 1.6.x ([`rknn_matmul_info_v1`]).
    V1,
    /// 64 bytes: runtimes 2.0.0 and later ([`rknn_matmul_info_v2`]).
    V2,
}

impl MatmulInfoLayout {
    /// The struct's size in bytes.
    pub const fn size(self) -> usize {
        match self {
            Self::V1 => size_of::<rknn_matmul_info_v1>(),
            Self::V2 => size_of::<rknn_matmul_info_v2>(),
        }
    }
}

/// The lowest runtime version whose headers declare every function `has` reports present,
/// judged by the functions each version added: `rknn_matmul_create_dynamic_shape` (2.1.0),
/// `rknn_matmul_set_quant_params` or `rknn_create_mem2` (2.0.0), `rknn_mem_sync` (1.6.0),
/// `rknn_set_input_shapes` (1.5.2), `rknn_set_input_shape` (1.5.0).
///
/// `None` when none of them is present: a runtime older than 1.5.0, or not an RK3588
/// runtime. `rknn_matmul_create` is deliberately not a witness: runtimes 1.3.0 and 1.4.0
/// already export it and its siblings, but no public header documents their
/// `rknn_matmul_info`, so they must not be mistaken for 1.5.0.
///
/// Versions that added no function (2.2.x and 2.3.x after 2.1.0) cannot be told apart this
/// way: the answer is a lower bound within the right struct generation.
pub fn version_from_symbols(has: impl Fn(&str) -> bool) -> Option<RuntimeVersion> {
    let steps = [
        ("rknn_matmul_create_dynamic_shape", RuntimeVersion::new(2, 1, 0)),
        ("rknn_matmul_set_quant_params", RuntimeVersion::new(2, 0, 0)),
        ("rknn_create_mem2", RuntimeVersion::new(2, 0, 0)),
        ("rknn_mem_sync", RuntimeVersion::new(1, 6, 0)),
        ("rknn_set_input_shapes", RuntimeVersion::new(1, 5, 2)),
        ("rknn_set_input_shape", RuntimeVersion::new(1, 5, 0)),
    ];
    steps.iter().find(|(symbol, _)| has(symbol)).map(|&(_, v)| v)
}

/// Why the runtime could not be loaded.
#[derive(Debug)]
#[non_exhaustive]
pub enum LoadError {
    /// No candidate could be opened; each attempt with the loader's message.
    NotFound {
        /// `(path or name, error)` for every candidate tried.
        attempts: Vec<(String, String)>,
        /// Whether the candidate came from [`LIBRARY_ENV`].
        from_env: bool,
    },
    /// The library opened but lacks a function every supported version exports.
    MissingSymbol {
        /// The library.
        path: PathBuf,
        /// The missing function.
        symbol: &'static str,
    },
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotFound { attempts, from_env } => {
                f.write_str("the RKNN runtime (librknnrt.so) could not be loaded; tried: ")?;
                for (i, (path, err)) in attempts.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    if err.starts_with(path.as_str()) {
                        f.write_str(err)?;
                    } else {
                        write!(f, "{path} ({err})")?;
                    }
                }
                if *from_env {
                    write!(f, ". {LIBRARY_ENV} names this path: fix or unset it")
                } else {
                    write!(
                        f,
                        ". Install the rknpu2 runtime (runtime 1.5.0 or later) or set {LIBRARY_ENV} to its path"
                    )
                }
            }
            Self::MissingSymbol { path, symbol } => write!(
                f,
                "{} is not a usable RKNN runtime: it does not export `{symbol}` (runtime 1.5.0 or later is required)",
                path.display()
            ),
        }
    }
}

impl std::error::Error for LoadError {}

/// The resolved functions of one loaded runtime. Copyable raw pointers: valid only while the
/// [`RknnLib`] they came from is alive.
#[derive(Clone, Copy, Debug)]
#[allow(missing_docs)] // each field is the C function of the same name, typed above
pub struct RknnApi {
    pub rknn_init: rknn_init_fn,
    pub rknn_destroy: rknn_destroy_fn,
    pub rknn_query: rknn_query_fn,
    pub rknn_inputs_set: rknn_inputs_set_fn,
    pub rknn_run: rknn_run_fn,
    pub rknn_outputs_get: rknn_outputs_get_fn,
    pub rknn_outputs_release: rknn_outputs_release_fn,
    pub rknn_create_mem: rknn_create_mem_fn,
    pub rknn_destroy_mem: rknn_destroy_mem_fn,
    pub rknn_set_io_mem: rknn_set_io_mem_fn,
    pub rknn_dup_context: Option<rknn_dup_context_fn>,
    pub rknn_set_core_mask: Option<rknn_set_core_mask_fn>,
    pub rknn_mem_sync: Option<rknn_mem_sync_fn>,
    pub rknn_matmul_create: rknn_matmul_create_fn,
    pub rknn_matmul_set_io_mem: rknn_matmul_set_io_mem_fn,
    pub rknn_matmul_set_core_mask: Option<rknn_matmul_set_core_mask_fn>,
    pub rknn_matmul_run: rknn_matmul_run_fn,
    pub rknn_matmul_destroy: rknn_matmul_destroy_fn,
    pub rknn_matmul_set_quant_params: Option<rknn_matmul_set_quant_params_fn>,
}

/// A loaded runtime: the library handle, its resolved functions and the version its symbols
/// imply. The functions stay valid as long as this value lives.
pub struct RknnLib {
    api: RknnApi,
    path: PathBuf,
    symbol_version: Option<RuntimeVersion>,
    // Dropped last: unloading invalidates every pointer in `api`.
    _library: Library,
}

impl fmt::Debug for RknnLib {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RknnLib")
            .field("path", &self.path)
            .field("symbol_version", &self.symbol_version)
            .finish_non_exhaustive()
    }
}

impl RknnLib {
    /// Loads the library named by [`LIBRARY_ENV`] if it is set, else the first of
    /// [`DEFAULT_LIBRARY_CANDIDATES`] that opens.
    ///
    /// # Safety
    /// Loading runs the library's initialisers, and every resolved function is called with
    /// the signatures declared here: the library found must be an RKNN runtime (or an
    /// implementation of the same ABI).
    pub unsafe fn open_default() -> Result<Self, LoadError> {
        if let Some(path) = std::env::var_os(LIBRARY_ENV).filter(|p| !p.is_empty()) {
            // SAFETY: forwarded from this function's contract.
            return unsafe { Self::open_candidates(&[PathBuf::from(path)], true) };
        }
        let candidates: Vec<PathBuf> = DEFAULT_LIBRARY_CANDIDATES.iter().map(PathBuf::from).collect();
        // SAFETY: forwarded from this function's contract.
        unsafe { Self::open_candidates(&candidates, false) }
    }

    /// Loads the library at `path`.
    ///
    /// # Safety
    /// As for [`RknnLib::open_default`]: `path` must be an RKNN runtime.
    pub unsafe fn open(path: &Path) -> Result<Self, LoadError> {
        // SAFETY: forwarded from this function's contract.
        unsafe { Self::open_candidates(&[path.to_path_buf()], false) }
    }

    /// # Safety
    /// As for [`RknnLib::open_default`].
    unsafe fn open_candidates(candidates: &[PathBuf], from_env: bool) -> Result<Self, LoadError> {
        let mut attempts = Vec::new();
        for path in candidates {
            // SAFETY: the caller vouches that the candidates are RKNN runtimes.
            match unsafe { Library::new(path) } {
                // SAFETY: as above; the symbols are resolved with the declared signatures.
                Ok(library) => return unsafe { Self::resolve(library, path.clone()) },
                Err(e) => {
                    // libloading's message is generic ("dlopen failed"); the loader's own
                    // reason (file not found, wrong ELF class, …) is its source.
                    let reason = std::error::Error::source(&e).map_or_else(|| e.to_string(), ToString::to_string);
                    attempts.push((path.display().to_string(), reason));
                }
            }
        }
        Err(LoadError::NotFound { attempts, from_env })
    }

    /// # Safety
    /// `library` must implement the RKNN runtime ABI with the signatures declared here.
    unsafe fn resolve(library: Library, path: PathBuf) -> Result<Self, LoadError> {
        macro_rules! optional {
            ($name:literal) => {
                // SAFETY: the symbol is a function with the signature of the field it fills
                // (the caller's contract); the pointer is copied out and used only while
                // `library`, stored alongside it, stays loaded.
                unsafe { library.get($name).ok().map(|s| *s) }
            };
        }
        macro_rules! required {
            ($name:literal) => {
                optional!($name).ok_or_else(|| LoadError::MissingSymbol {
                    path: path.clone(),
                    symbol: $name,
                })?
            };
        }
        let api = RknnApi {
            rknn_init: required!("rknn_init"),
            rknn_destroy: required!("rknn_destroy"),
            rknn_query: required!("rknn_query"),
            rknn_inputs_set: required!("rknn_inputs_set"),
            rknn_run: required!("rknn_run"),
            rknn_outputs_get: required!("rknn_outputs_get"),
            rknn_outputs_release: required!("rknn_outputs_release"),
            rknn_create_mem: required!("rknn_create_mem"),
            rknn_destroy_mem: required!("rknn_destroy_mem"),
            rknn_set_io_mem: required!("rknn_set_io_mem"),
            rknn_dup_context: optional!("rknn_dup_context"),
            rknn_set_core_mask: optional!("rknn_set_core_mask"),
            rknn_mem_sync: optional!("rknn_mem_sync"),
            rknn_matmul_create: required!("rknn_matmul_create"),
            rknn_matmul_set_io_mem: required!("rknn_matmul_set_io_mem"),
            rknn_matmul_set_core_mask: optional!("rknn_matmul_set_core_mask"),
            rknn_matmul_run: required!("rknn_matmul_run"),
            rknn_matmul_destroy: required!("rknn_matmul_destroy"),
            rknn_matmul_set_quant_params: optional!("rknn_matmul_set_quant_params"),
        };
        let has = |name: &str| {
            // SAFETY: only the presence of the symbol is checked; the pointer is not used.
            unsafe { library.get::<*const c_void>(name).is_ok() }
        };
        let symbol_version = version_from_symbols(has);
        Ok(Self {
            api,
            path,
            symbol_version,
            _library: library,
        })
    }

    /// The resolved functions, valid while `self` lives.
    pub fn api(&self) -> &RknnApi {
        &self.api
    }

    /// The path or name the library was opened by.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The lowest version consistent with the exported symbols (see
    /// [`version_from_symbols`]); `None` for a runtime older than 1.5.0 or not an RK3588
    /// runtime.
    pub fn symbol_version(&self) -> Option<RuntimeVersion> {
        self.symbol_version
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_from_sdk_strings() {
        assert_eq!(
            RuntimeVersion::parse("2.1.0 (967d001cc8@2024-08-07T19:28:19)"),
            Some(RuntimeVersion::new(2, 1, 0))
        );
        assert_eq!(
            RuntimeVersion::parse("1.6.0 (9a7b5d24c@2023-12-13T17:31:11)"),
            Some(RuntimeVersion::new(1, 6, 0))
        );
        assert_eq!(RuntimeVersion::parse("1.5"), Some(RuntimeVersion::new(1, 5, 0)));
        assert_eq!(RuntimeVersion::parse("garbage"), None);
        assert_eq!(RuntimeVersion::parse(""), None);
        assert!(RuntimeVersion::new(1, 5, 2) < RuntimeVersion::new(1, 6, 0));
        assert_eq!(RuntimeVersion::new(2, 3, 2).to_string(), "2.3.2");
    }

    #[test]
    fn matmul_info_layout_changes_at_2_0() {
        assert_eq!(RuntimeVersion::new(1, 6, 9).matmul_info_layout(), MatmulInfoLayout::V1);
        assert_eq!(RuntimeVersion::new(2, 0, 0).matmul_info_layout(), MatmulInfoLayout::V2);
        assert_eq!(MatmulInfoLayout::V1.size(), 24);
        assert_eq!(MatmulInfoLayout::V2.size(), 64);
    }

    #[test]
    fn symbol_sets_map_to_the_version_that_added_them() {
        const MATMUL: &str = "rknn_matmul_create";
        let set = |names: &'static [&'static str]| move |s: &str| names.contains(&s);
        assert_eq!(version_from_symbols(set(&[])), None);
        // What 1.3.0 and 1.4.0 export: the matmul functions, none of 1.5.0's additions.
        assert_eq!(
            version_from_symbols(set(&[MATMUL, "rknn_matmul_run", "rknn_init", "rknn_destroy_mem"])),
            None
        );
        assert_eq!(
            version_from_symbols(set(&[MATMUL, "rknn_set_input_shape"])),
            Some(RuntimeVersion::new(1, 5, 0))
        );
        assert_eq!(
            version_from_symbols(set(&[MATMUL, "rknn_set_input_shape", "rknn_set_input_shapes"])),
            Some(RuntimeVersion::new(1, 5, 2))
        );
        assert_eq!(
            version_from_symbols(set(&[MATMUL, "rknn_set_input_shapes", "rknn_mem_sync"])),
            Some(RuntimeVersion::new(1, 6, 0))
        );
        assert_eq!(
            version_from_symbols(set(&[MATMUL, "rknn_mem_sync", "rknn_create_mem2"])),
            Some(RuntimeVersion::new(2, 0, 0))
        );
        assert_eq!(
            version_from_symbols(set(&["rknn_matmul_create_dynamic_shape", MATMUL])),
            Some(RuntimeVersion::new(2, 1, 0))
        );
    }

    #[test]
    fn quantization_types_are_numbered_per_runtime_generation() {
        use MatmulQuantKind::{PerChannel, PerGroup, PerLayer};
        let v = RuntimeVersion::new;
        for kind in [PerLayer, PerChannel, PerGroup] {
            assert_eq!(v(1, 6, 0).matmul_quant_type(kind), None, "no field before 2.0");
        }
        assert_eq!(v(2, 0, 0).matmul_quant_type(PerLayer), Some(0));
        assert_eq!(v(2, 0, 0).matmul_quant_type(PerChannel), Some(1));
        assert_eq!(v(2, 0, 0).matmul_quant_type(PerGroup), None);
        for version in [v(2, 1, 0), v(2, 2, 0), v(2, 3, 2)] {
            assert_eq!(version.matmul_quant_type(PerLayer), Some(0));
            assert_eq!(version.matmul_quant_type(PerChannel), Some(2));
            assert_eq!(version.matmul_quant_type(PerGroup), Some(4));
        }
    }

    #[test]
    fn native_b_is_segmented_from_2_0() {
        assert_eq!(RuntimeVersion::new(1, 5, 2).native_b_segment_rows(), None);
        assert_eq!(RuntimeVersion::new(1, 6, 0).native_b_segment_rows(), None);
        assert_eq!(RuntimeVersion::new(2, 0, 0).native_b_segment_rows(), Some(8192));
        assert_eq!(RuntimeVersion::new(2, 3, 2).native_b_segment_rows(), Some(8192));
    }

    #[test]
    fn a_missing_library_is_an_error_naming_what_was_tried() {
        // SAFETY: the path does not exist, so nothing is loaded.
        let err = unsafe { RknnLib::open(Path::new("/nonexistent/librknnrt.so")) }.unwrap_err();
        let text = err.to_string();
        assert!(text.contains("/nonexistent/librknnrt.so"), "{text}");
        assert!(text.contains(LIBRARY_ENV), "{text}");
        assert!(matches!(err, LoadError::NotFound { ref attempts, .. } if attempts.len() == 1));
    }
}
