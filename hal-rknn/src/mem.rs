//! Memory the NPU reads and writes, from `rknn_create_mem`.

use std::ptr::NonNull;

use aihal_rknn_sys as sys;

use crate::error::{Result, RknnError, RknnStatus};
use crate::library::RknnLibrary;

/// One block from `rknn_create_mem`. It belongs to the context that made it and must be
/// released with [`NpuMem::destroy`] before that context is destroyed, which its owners
/// ([`crate::RknnMatMul`], [`crate::RknnModel`]) do.
pub(crate) struct NpuMem {
    desc: NonNull<sys::rknn_tensor_mem>,
    len: usize,
}

impl NpuMem {
    /// Allocates at least `len` bytes for `ctx`.
    ///
    /// # Safety
    /// `ctx` must be a live context of `lib`.
    pub(crate) unsafe fn create(lib: &RknnLibrary, ctx: sys::rknn_context, len: usize) -> Result<Self> {
        let size = u32::try_from(len)
            .map_err(|_| RknnError::invalid_input(format!("{len} bytes exceed the runtime's 4 GiB buffer limit")))?;
        // SAFETY: `ctx` is live (the caller's contract).
        let raw = unsafe { (lib.api().rknn_create_mem)(ctx, size) };
        let desc = NonNull::new(raw).ok_or(RknnError::NullMemory {
            op: "rknn_create_mem",
            bytes: len as u64,
        })?;
        let mem = Self { desc, len };
        // SAFETY: a non-null descriptor from rknn_create_mem is a valid `rknn_tensor_mem`.
        let d = unsafe { desc.as_ptr().read() };
        if d.virt_addr.is_null() || (d.size as usize) < len {
            // SAFETY: `mem` came from `ctx` and is released once, here.
            let _ = unsafe { mem.destroy(lib, ctx) };
            return Err(RknnError::NullMemory {
                op: "rknn_create_mem",
                bytes: len as u64,
            });
        }
        Ok(mem)
    }

    /// The descriptor, for `rknn_set_io_mem` and friends.
    pub(crate) fn as_ptr(&self) -> *mut sys::rknn_tensor_mem {
        self.desc.as_ptr()
    }

    /// The bytes, writable from the CPU.
    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: the descriptor is live while `self` is, `virt_addr` was checked non-null
        // with at least `len` bytes, and `&mut self` makes this the only CPU view.
        unsafe { std::slice::from_raw_parts_mut(self.desc.as_ref().virt_addr.cast::<u8>(), self.len) }
    }

    /// The bytes, readable from the CPU.
    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: as in `bytes_mut`; the NPU writes only inside runtime calls, which take
        // the owner mutably.
        unsafe { std::slice::from_raw_parts(self.desc.as_ref().virt_addr.cast::<u8>(), self.len) }
    }

    /// Releases the block.
    ///
    /// # Safety
    /// `ctx` must be the live context that created it; the block must not be used after.
    pub(crate) unsafe fn destroy(self, lib: &RknnLibrary, ctx: sys::rknn_context) -> Result<()> {
        // SAFETY: the caller's contract.
        RknnStatus(unsafe { (lib.api().rknn_destroy_mem)(ctx, self.desc.as_ptr()) }).result("rknn_destroy_mem")
    }
}

/// Destroys `mems`, then the context itself with `destroy_ctx` (named `what` in errors),
/// collecting every failure: one failed release never stops the others.
///
/// # Safety
/// `ctx` must be live, `mems` must have been created by it, and neither may be used after.
pub(crate) unsafe fn release_context(
    lib: &RknnLibrary,
    ctx: sys::rknn_context,
    mems: impl IntoIterator<Item = NpuMem>,
    destroy_ctx: sys::loader::rknn_destroy_fn,
    what: &'static str,
) -> Result<()> {
    let mut errors = Vec::new();
    for mem in mems {
        // SAFETY: the caller's contract: memory of this live context, released once.
        if let Err(e) = unsafe { mem.destroy(lib, ctx) } {
            errors.push(e);
        }
    }
    // SAFETY: the context is live and destroyed once, after its memory.
    if let Err(e) = RknnStatus(unsafe { destroy_ctx(ctx) }).result(what) {
        errors.push(e);
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(RknnError::Release(errors))
    }
}
