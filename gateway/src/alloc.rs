//! The binary's allocator: mimalloc, asked for a plain block whenever a plain block is aligned
//! enough.
//!
//! The `mimalloc` crate (0.1.52) asks `mi_malloc_aligned` for every block. In mimalloc v3 that
//! call's fast path serves only a block of 1 KiB or less whose size class has a free block at
//! hand; every other request (the HTTP, TLS and JSON buffers of each request, and any size
//! class whose free list has just run out) takes the generic aligned path, which over-allocates
//! unless the size is a power of two. Under `weft bench view` that path was about a twentieth
//! of all the instructions the process ran (callgrind). A plain `mi_malloc` block of 16 bytes
//! or more is always 16-aligned, and a smaller one is aligned to its own size class, so the
//! aligned call is needed only where the standard library's own allocator needs it: an
//! alignment above 16 or above the size.

use std::alloc::{GlobalAlloc, Layout};

use libmimalloc_sys as mi;

/// What every plain mimalloc block of at least this size is aligned to (`MI_MAX_ALIGN_SIZE`).
const PLAIN_ALIGN: usize = 16;

pub struct MiMalloc;

/// Whether a plain block of `size` bytes is aligned to `align`.
fn plain(align: usize, size: usize) -> bool {
    align <= PLAIN_ALIGN && align <= size
}

// SAFETY: every block comes from mimalloc and goes back to it (`mi_free` and the reallocations
// take plain and aligned blocks alike); a plain block is asked for only where `plain` holds,
// which mimalloc's size classes guarantee to be aligned enough.
unsafe impl GlobalAlloc for MiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let (size, align) = (layout.size(), layout.align());
        if plain(align, size) {
            unsafe { mi::mi_malloc(size).cast() }
        } else {
            unsafe { mi::mi_malloc_aligned(size, align).cast() }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let (size, align) = (layout.size(), layout.align());
        if plain(align, size) {
            unsafe { mi::mi_zalloc(size).cast() }
        } else {
            unsafe { mi::mi_zalloc_aligned(size, align).cast() }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        unsafe { mi::mi_free(ptr.cast()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if plain(layout.align(), new_size) {
            unsafe { mi::mi_realloc(ptr.cast(), new_size).cast() }
        } else {
            unsafe { mi::mi_realloc_aligned(ptr.cast(), new_size, layout.align()).cast() }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every block is aligned as its layout asks, whether it was served plain or aligned, new,
    /// zeroed or moved by a reallocation, and a reallocated block keeps what it held.
    #[test]
    fn every_block_is_aligned_as_asked() {
        let a = MiMalloc;
        for align in [1, 2, 4, 8, 16, 32, 64, 128, 4096] {
            for size in [1, 3, 7, 8, 12, 16, 24, 40, 100, 1000, 1025, 5000, 70_000] {
                let layout = Layout::from_size_align(size, align).unwrap();
                unsafe {
                    let z = a.alloc_zeroed(layout);
                    assert_eq!(z as usize % align, 0, "zeroed {size} by {align}");
                    assert!(std::slice::from_raw_parts(z, size).iter().all(|&b| b == 0));
                    a.dealloc(z, layout);
                    for new_size in [size / 2 + 1, size * 3] {
                        let p = a.alloc(layout);
                        assert_eq!(p as usize % align, 0, "alloc {size} by {align}");
                        p.write_bytes(0xA5, size);
                        let q = a.realloc(p, layout, new_size);
                        assert_eq!(q as usize % align, 0, "{size} to {new_size} by {align}");
                        let kept = std::slice::from_raw_parts(q, size.min(new_size));
                        assert!(kept.iter().all(|&b| b == 0xA5));
                        a.dealloc(q, Layout::from_size_align(new_size, align).unwrap());
                    }
                }
            }
        }
    }
}
