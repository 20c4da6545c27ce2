//! The process's allocator: mimalloc, called the way the C library's malloc
//! is called by Rust's own `System` allocator.
//!
//! The `mimalloc` crate passes every allocation to `mi_malloc_aligned`, even
//! one that needs no more than mimalloc always gives. mimalloc's aligned
//! entry has a fast path only while the size class's current page has a free
//! block at hand; when that page's free list is empty (every few dozen
//! allocations under request churn: freed blocks wait on a second list until
//! the generic path collects them) it goes to its over-allocation path,
//! which takes a larger block and aligns inside it. Under the benchmark's
//! load that was ~10 of the ~55 allocations per proxied request and ~2,200
//! instructions each request (callgrind, docs/benchmarks.md).
//!
//! mimalloc's plain `mi_malloc` already gives 16-byte alignment to every
//! block over 8 bytes and 8-byte alignment to smaller ones (x86-64 and
//! aarch64: its size classes above one word are whole multiples of
//! `MI_MAX_ALIGN_SIZE`). So a layout whose alignment is at most 16 and at
//! most its size (the condition `std`'s `System` uses for `malloc`) goes to
//! `mi_malloc`; any other (a cache-padded task cell, alignment 128) to the
//! aligned entry. Freeing is the same `mi_free` either way.

#![expect(
    unsafe_code,
    reason = "a global allocator is an unsafe trait over raw pointers; the only unsafe in the crate"
)]

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// The largest alignment mimalloc's plain allocation gives to a block at
/// least that large (`MI_MAX_ALIGN_SIZE`, 16 on 64-bit targets).
const PLAIN_ALIGN: usize = 16;

/// mimalloc as the global allocator; see the module documentation for why
/// not `mimalloc::MiMalloc`.
pub struct Allocator;

/// Whether mimalloc's plain entry points already align `align` for `size`.
#[inline]
fn plain(size: usize, align: usize) -> bool {
    align <= PLAIN_ALIGN && align <= size
}

// SAFETY: every pointer comes from mimalloc and goes back to it; layouts
// that plain allocation might misalign take the aligned entry points.
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if plain(layout.size(), layout.align()) {
            // SAFETY: any size is valid for mi_malloc.
            unsafe { mi::mi_malloc(layout.size()).cast() }
        } else {
            // SAFETY: a Layout's alignment is a power of two.
            unsafe { mi::mi_malloc_aligned(layout.size(), layout.align()).cast() }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if plain(layout.size(), layout.align()) {
            // SAFETY: as in `alloc`.
            unsafe { mi::mi_zalloc(layout.size()).cast() }
        } else {
            // SAFETY: as in `alloc`.
            unsafe { mi::mi_zalloc_aligned(layout.size(), layout.align()).cast() }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from one of this allocator's calls.
        unsafe { mi::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if plain(new_size, layout.align()) {
            // SAFETY: `ptr` came from this allocator; mi_realloc keeps
            // the 16-byte guarantee of mi_malloc for the new block.
            unsafe { mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast() }
        } else {
            // SAFETY: as above, with the alignment asked for.
            unsafe { mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast() }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every size up to 300 bytes (and some larger) at every alignment up
    /// to 4 KiB comes back aligned, writable, and survives growing and
    /// shrinking with its contents.
    #[test]
    fn every_layout_is_aligned_through_alloc_zeroed_and_realloc() {
        let a = Allocator;
        let sizes = (1..=300).chain([511, 512, 513, 1000, 1024, 4095, 4096, 8191, 65_536, 1 << 20]);
        let mut held = Vec::new();
        for size in sizes {
            for shift in 0..=12 {
                let align = 1usize << shift;
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: non-zero size; freed below with the same layout.
                unsafe {
                    let p = if size % 2 == 0 {
                        a.alloc_zeroed(layout)
                    } else {
                        a.alloc(layout)
                    };
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "size {size} align {align}");
                    if size % 2 == 0 {
                        assert!(std::slice::from_raw_parts(p, size).iter().all(|&b| b == 0));
                    }
                    std::ptr::write_bytes(p, 0xa5, size);
                    let grown = size * 3 + 5;
                    let q = a.realloc(p, layout, grown);
                    assert_eq!(
                        q as usize % align,
                        0,
                        "realloc {size}->{grown} align {align}"
                    );
                    assert!(std::slice::from_raw_parts(q, size)
                        .iter()
                        .all(|&b| b == 0xa5));
                    let small = size.div_ceil(2);
                    let r = a.realloc(q, Layout::from_size_align(grown, align).unwrap(), small);
                    assert_eq!(
                        r as usize % align,
                        0,
                        "shrink {grown}->{small} align {align}"
                    );
                    assert!(std::slice::from_raw_parts(r, small)
                        .iter()
                        .all(|&b| b == 0xa5));
                    held.push((r, Layout::from_size_align(small, align).unwrap()));
                }
            }
            // Free in batches, so that later sizes reuse freed blocks (the
            // case the aligned fast path missed).
            if size % 32 == 0 {
                for (p, layout) in held.drain(..) {
                    // SAFETY: allocated above with this layout.
                    unsafe { a.dealloc(p, layout) };
                }
            }
        }
        for (p, layout) in held {
            // SAFETY: allocated above with this layout.
            unsafe { a.dealloc(p, layout) };
        }
    }
}
