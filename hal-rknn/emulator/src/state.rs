//! The emulator's process-wide state: configuration from the environment, the registry of
//! contexts and of NPU memory, and fault injection.

use std::collections::HashMap;
use std::ffi::c_int;
use std::sync::{Mutex, PoisonError};

use aihal_rknn_sys::{rknn_tensor_mem, RKNN_ERR_FAIL, RKNN_TENSOR_MEMORY_FLAGS_ALLOC_INSIDE};

use crate::matmul::MatMulCtx;
use crate::model::ModelCtx;
use crate::version::{v, Version};

/// The environment variable choosing the runtime version the emulator reports and behaves
/// as (`1.3.0` to `2.3.x`). It overrides the version baked into a per-version copy of the
/// library ([`crate::versioned_library`]); without either, [`DEFAULT_VERSION`]. Read when a
/// context is created. Note that it does not change what the library exports: a copy made
/// for another version, or the library cargo builds (2.3.2's exports), keeps its own.
pub const VERSION_ENV: &str = "AIHAL_RKNN_EMU_VERSION";
/// The environment variable that makes chosen calls fail: a comma-separated list of
/// `function[:code]` (code defaults to `RKNN_ERR_FAIL`; for `rknn_create_mem` the call
/// answers NULL). Read on every call.
pub const FAIL_ENV: &str = "AIHAL_RKNN_EMU_FAIL";
/// The environment variable that switches from the documented behaviour to what users report
/// real hardware doing, where the two differ (`1` to switch; read on every call). Each
/// behaviour it changes names its report next to it. Without it, what no document describes
/// is answered with an error.
pub const REPORTED_ENV: &str = "AIHAL_RKNN_EMU_REPORTED";
/// The version reported without [`VERSION_ENV`] or a baked version.
pub const DEFAULT_VERSION: Version = v(2, 3, 2);

/// The version chosen by [`VERSION_ENV`], else the baked one, else [`DEFAULT_VERSION`];
/// `None` when [`VERSION_ENV`] is set to something outside 1.3.0 to 2.3.x.
pub fn configured_version() -> Option<Version> {
    match std::env::var(VERSION_ENV) {
        Ok(s) if !s.trim().is_empty() => Version::parse(&s).filter(|v| v.is_emulated()),
        _ => Some(crate::exports::baked_version().unwrap_or(DEFAULT_VERSION)),
    }
}

/// Whether [`REPORTED_ENV`] asks for the behaviour users report from real hardware.
pub fn reported_mode() -> bool {
    std::env::var(REPORTED_ENV).is_ok_and(|s| s.trim() == "1")
}

/// The status an injected fault makes `function` return, if [`FAIL_ENV`] names it.
pub fn injected_fault(function: &str) -> Option<c_int> {
    let spec = std::env::var(FAIL_ENV).ok()?;
    spec.split(',').map(str::trim).find_map(|entry| {
        let (name, code) = entry.split_once(':').unwrap_or((entry, ""));
        (name == function).then(|| code.trim().parse().unwrap_or(RKNN_ERR_FAIL))
    })
}

/// A context of either kind.
pub enum Context {
    /// Made by `rknn_init` or `rknn_dup_context`.
    Model(Box<ModelCtx>),
    /// Made by `rknn_matmul_create`.
    MatMul(Box<MatMulCtx>),
}

/// One block of emulated NPU memory. The descriptor and the bytes are heap blocks whose
/// addresses were handed to the caller; they are freed only by [`State::free_mem`].
pub struct MemEntry {
    /// The context that created it.
    pub ctx: u64,
    /// Address of the `rknn_tensor_mem` descriptor (from `Box::into_raw`).
    desc: usize,
    /// Address of the bytes (from `Box::into_raw` of a boxed slice).
    buf: usize,
    /// Number of bytes.
    pub len: usize,
}

impl MemEntry {
    /// The bytes, read-only.
    ///
    /// The caller may write them through `virt_addr` between calls; the emulator reads them
    /// only inside a call, while it holds the state lock.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `buf` is a live allocation of `len` bytes made in `State::alloc_mem` and
        // freed only in `State::free_mem`, which also drops this entry.
        unsafe { std::slice::from_raw_parts(self.buf as *const u8, self.len) }
    }

    /// The bytes, writable.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`; `&mut self` gives this entry's sole access inside the lock.
        unsafe { std::slice::from_raw_parts_mut(self.buf as *mut u8, self.len) }
    }
}

/// Heap buffers handed out by `rknn_outputs_get`, freed by `rknn_outputs_release` or
/// `rknn_destroy`.
#[derive(Default)]
pub struct OutputAllocations(HashMap<usize, usize>);

impl OutputAllocations {
    /// Allocates `bytes` and returns the pointer handed to the caller.
    pub fn alloc(&mut self, bytes: Vec<u8>) -> *mut u8 {
        let len = bytes.len();
        let ptr = Box::into_raw(bytes.into_boxed_slice()).cast::<u8>();
        self.0.insert(ptr as usize, len);
        ptr
    }

    /// Frees a buffer from [`OutputAllocations::alloc`]; `false` if `ptr` is not one.
    pub fn free(&mut self, ptr: *mut u8) -> bool {
        match self.0.remove(&(ptr as usize)) {
            Some(len) => {
                // SAFETY: `ptr` came from `Box::into_raw` of a boxed slice of `len` bytes in
                // `alloc` and was removed from the map, so it is freed exactly once.
                drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(ptr, len)) });
                true
            }
            None => false,
        }
    }
}

impl Drop for OutputAllocations {
    fn drop(&mut self) {
        let ptrs: Vec<usize> = self.0.keys().copied().collect();
        for p in ptrs {
            self.free(p as *mut u8);
        }
    }
}

/// Everything the emulator remembers between calls.
#[derive(Default)]
pub struct State {
    next_ctx: u64,
    contexts: HashMap<u64, Context>,
    mems: HashMap<usize, MemEntry>,
}

// SAFETY: the raw addresses in `MemEntry` and `OutputAllocations` name heap blocks owned by
// the state, reached only while the global mutex is held.
unsafe impl Send for State {}

static STATE: Mutex<Option<State>> = Mutex::new(None);

/// Runs `f` with the state locked (a poisoned lock is recovered: every mutation is complete
/// before anything that could panic).
pub fn with_state<R>(f: impl FnOnce(&mut State) -> R) -> R {
    let mut guard = STATE.lock().unwrap_or_else(PoisonError::into_inner);
    f(guard.get_or_insert_with(State::default))
}

impl State {
    /// Registers a context and returns its handle (never 0).
    pub fn add_context(&mut self, ctx: Context) -> u64 {
        self.next_ctx += 1;
        // Handles look like addresses, as the real runtime's do, and are never reused.
        let handle = 0x5000_0000 + self.next_ctx * 0x10;
        self.contexts.insert(handle, ctx);
        handle
    }

    /// The context behind `handle`.
    pub fn context(&mut self, handle: u64) -> Option<&mut Context> {
        self.contexts.get_mut(&handle)
    }

    /// Removes a context and frees the NPU memory it still owns.
    pub fn remove_context(&mut self, handle: u64) -> Option<Context> {
        let ctx = self.contexts.remove(&handle)?;
        let owned: Vec<usize> = self
            .mems
            .iter()
            .filter(|(_, m)| m.ctx == handle)
            .map(|(&k, _)| k)
            .collect();
        for desc in owned {
            self.free_mem(handle, desc as *mut rknn_tensor_mem);
        }
        Some(ctx)
    }

    /// Allocates `len` zeroed bytes of NPU memory for `ctx` and its descriptor.
    pub fn alloc_mem(&mut self, ctx: u64, len: usize) -> *mut rknn_tensor_mem {
        let buf = Box::into_raw(vec![0u8; len].into_boxed_slice()).cast::<u8>();
        let mut desc = rknn_tensor_mem::zeroed();
        desc.virt_addr = buf.cast();
        desc.phys_addr = buf as u64;
        desc.fd = -1;
        desc.size = len as u32;
        desc.flags = RKNN_TENSOR_MEMORY_FLAGS_ALLOC_INSIDE;
        let desc = Box::into_raw(Box::new(desc));
        self.mems.insert(
            desc as usize,
            MemEntry {
                ctx,
                desc: desc as usize,
                buf: buf as usize,
                len,
            },
        );
        desc
    }

    /// The memory behind a descriptor created for `ctx`.
    pub fn mem(&mut self, ctx: u64, desc: *const rknn_tensor_mem) -> Option<&mut MemEntry> {
        self.mems.get_mut(&(desc as usize)).filter(|m| m.ctx == ctx)
    }

    /// The memory behind a descriptor address, whoever owns it.
    pub fn mem_by_addr(&mut self, desc: usize) -> Option<&mut MemEntry> {
        self.mems.get_mut(&desc)
    }

    /// Frees memory created for `ctx`; `false` if `desc` is not such memory.
    pub fn free_mem(&mut self, ctx: u64, desc: *mut rknn_tensor_mem) -> bool {
        if self.mem(ctx, desc).is_none() {
            return false;
        }
        let Some(entry) = self.mems.remove(&(desc as usize)) else {
            return false;
        };
        // SAFETY: both blocks were made by `Box::into_raw` in `alloc_mem` (the slice with
        // `len` bytes) and are freed once, here, after their entry left the map.
        unsafe {
            drop(Box::from_raw(std::ptr::slice_from_raw_parts_mut(
                entry.buf as *mut u8,
                entry.len,
            )));
            drop(Box::from_raw(entry.desc as *mut rknn_tensor_mem));
        }
        true
    }

    /// Number of live contexts and memory blocks (for tests of leak freedom).
    pub fn live_counts(&self) -> (usize, usize) {
        (self.contexts.len(), self.mems.len())
    }
}
