//! Zeroed buffers for packed weights, on transparent huge pages where the OS grants them.
//!
//! A matrix-vector product streams every weight byte once per call. With 4 KiB pages that is a
//! TLB miss per 4 KiB of every stream (codes and scales are two); a buffer of 2 MiB pages
//! takes one per 2 MiB. On Linux a buffer of at least [`HUGE`] bytes is aligned to 2 MiB and
//! advised with `madvise(MADV_HUGEPAGE)` before its first touch, which is what a system with
//! transparent huge pages set to `madvise` (a common default) needs to back it with them.
//! Elsewhere, or when the kernel declines, the buffer is an ordinary allocation.

use std::alloc::Layout;
use std::mem::MaybeUninit;
use std::ptr::NonNull;

use aihal_core::{CoreError, Result};
use bytemuck::Zeroable;
#[cfg(not(miri))]
use rayon::prelude::*;

/// The huge page size advised for (2 MiB, x86_64's and aarch64's usual one); buffers smaller
/// than this are ordinary allocations.
pub(crate) const HUGE: usize = 2 << 20;

/// `len` values of `T`, zero-initialised, freed on drop.
pub(crate) struct PageBuf<T> {
    ptr: NonNull<T>,
    len: usize,
    /// The allocation's layout; `None` when nothing was allocated (zero bytes).
    layout: Option<Layout>,
    /// Whether the buffer was advised to use huge pages.
    advised: bool,
}

// SAFETY: a `PageBuf<T>` owns its values like a `Vec<T>` does.
unsafe impl<T: Send> Send for PageBuf<T> {}
// SAFETY: shared access only hands out `&[T]`.
unsafe impl<T: Sync> Sync for PageBuf<T> {}

impl<T: Zeroable + Copy> PageBuf<T> {
    /// `len` zeros, on huge pages where `huge` asks for them and the buffer spans at least
    /// [`HUGE`] bytes. Errors: the size overflows, or the allocation fails
    /// ([`CoreError::OutOfMemory`]).
    pub(crate) fn zeroed(len: usize, huge: bool) -> Result<Self> {
        let bytes = len
            .checked_mul(size_of::<T>())
            .ok_or_else(|| CoreError::invalid_input(format!("a buffer of {len} values overflows")))?;
        if bytes == 0 {
            return Ok(Self {
                ptr: NonNull::dangling(),
                len,
                layout: None,
                advised: false,
            });
        }
        let advise = huge && bytes >= HUGE && cfg!(all(target_os = "linux", not(miri)));
        let align = if advise { HUGE } else { align_of::<T>().max(64) };
        let layout =
            Layout::from_size_align(bytes, align).map_err(|_| CoreError::out_of_memory("cpu", Some(bytes as u64)))?;
        // SAFETY: the layout's size is not zero.
        let raw = unsafe { std::alloc::alloc(layout) };
        let ptr = NonNull::new(raw.cast::<T>()).ok_or_else(|| CoreError::out_of_memory("cpu", Some(bytes as u64)))?;
        if advise {
            advise_huge(raw, bytes);
        }
        // SAFETY: the allocation holds `bytes` bytes, not yet initialised (which
        // `MaybeUninit` allows), and nothing else refers to it.
        let uninit = unsafe { std::slice::from_raw_parts_mut(raw.cast::<MaybeUninit<u8>>(), bytes) };
        let zero = |c: &mut [MaybeUninit<u8>]| c.fill(MaybeUninit::new(0));
        // The first touch, in parallel: with huge pages each fault clears 2 MiB. (Serial under
        // miri, which reports rayon's epoch collector, not this code.)
        #[cfg(not(miri))]
        uninit.par_chunks_mut(HUGE).for_each(zero);
        #[cfg(miri)]
        uninit.chunks_mut(HUGE).for_each(zero);
        Ok(Self {
            ptr,
            len,
            layout: Some(layout),
            advised: advise,
        })
    }

    /// Whether the buffer was advised to use huge pages (whether the kernel granted them is
    /// its own decision, see `AnonHugePages` in `/proc/meminfo`).
    pub(crate) fn advised(&self) -> bool {
        self.advised
    }
}

/// Asks Linux to back `bytes` bytes from `ptr` (2 MiB aligned) with huge pages. A hint: when
/// the kernel refuses (no transparent huge pages, or set to `never`), the pages stay small.
#[cfg(all(target_os = "linux", not(miri)))]
fn advise_huge(ptr: *mut u8, bytes: usize) {
    // SAFETY: `ptr .. ptr + bytes` is an allocation of ours, aligned to 2 MiB (a multiple
    // of the page size); MADV_HUGEPAGE changes no contents and no mapping.
    let rc = unsafe { libc::madvise(ptr.cast(), bytes, libc::MADV_HUGEPAGE) };
    if rc != 0 {
        tracing::debug!(
            "madvise(MADV_HUGEPAGE) over {bytes} bytes declined: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(not(all(target_os = "linux", not(miri))))]
fn advise_huge(_ptr: *mut u8, _bytes: usize) {}

impl<T> std::ops::Deref for PageBuf<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: `ptr` holds `len` initialised values (or is dangling with `len * size_of::<T>() == 0`).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T> std::ops::DerefMut for PageBuf<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`, and `&mut self` is unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl<T> Drop for PageBuf<T> {
    fn drop(&mut self) {
        if let Some(layout) = self.layout {
            // SAFETY: allocated with this layout in `zeroed`, freed once.
            unsafe { std::alloc::dealloc(self.ptr.as_ptr().cast(), layout) };
        }
    }
}

/// A copy on pages of the same kind (aborts on allocation failure, as `Vec::clone` does).
impl<T: Zeroable + Copy> Clone for PageBuf<T> {
    fn clone(&self) -> Self {
        let mut copy = Self::zeroed(self.len, self.advised)
            .unwrap_or_else(|_| std::alloc::handle_alloc_error(self.layout.unwrap_or_else(Layout::new::<T>)));
        copy.copy_from_slice(self);
        copy
    }
}

impl<T> std::fmt::Debug for PageBuf<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageBuf")
            .field("len", &self.len)
            .field("advised", &self.advised)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_start_zeroed_and_hold_what_is_written() {
        for len in [0, 1, 63, 1000] {
            let mut b = PageBuf::<u32>::zeroed(len, true).unwrap();
            assert_eq!(b.len(), len);
            assert!(b.iter().all(|&v| v == 0));
            for (i, v) in b.iter_mut().enumerate() {
                *v = i as u32 * 3;
            }
            let c = b.clone();
            drop(b);
            assert!(c.iter().enumerate().all(|(i, &v)| v == i as u32 * 3));
            assert!(len == 0 || (c.as_ptr() as usize).is_multiple_of(64));
        }
    }

    #[test]
    #[cfg_attr(miri, ignore = "allocates 2 MiB and more")]
    fn large_buffers_are_advised_on_linux_and_aligned_to_huge_pages() {
        let mut b = PageBuf::<u64>::zeroed(HUGE / 8 + 5, true).unwrap();
        assert_eq!(b.advised(), cfg!(target_os = "linux"));
        if b.advised() {
            assert!((b.as_ptr() as usize).is_multiple_of(HUGE));
        }
        assert!(b.iter().all(|&v| v == 0));
        let last = b.len() - 1;
        b[last] = 7;
        assert_eq!(b.clone()[last], 7);
        let small = PageBuf::<u64>::zeroed(HUGE / 8 + 5, false).unwrap();
        assert!(!small.advised() && small.iter().all(|&v| v == 0));
    }

    #[test]
    fn impossible_sizes_are_errors() {
        assert!(PageBuf::<u64>::zeroed(usize::MAX / 4, true).is_err());
        let e = PageBuf::<u8>::zeroed(isize::MAX as usize, false);
        assert!(matches!(e, Err(CoreError::OutOfMemory { .. })), "{e:?}");
    }
}
