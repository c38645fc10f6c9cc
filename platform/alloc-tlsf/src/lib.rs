//! # kiln-alloc-tlsf — the fast general-purpose heap (TLSF)
//!
//! [`TlsfHeap`] implements [`kiln_alloc::HeapAllocator`] with Two-Level
//! Segregated Fit: O(1) allocation and free with low fragmentation, the
//! usual choice for long-running servers. The algorithm comes from the
//! `rlsf` crate — small, `no_std`, no dependencies, maintained, and
//! measured well against other real-time allocators — rather than a
//! hand-written copy (docs/adr/0005).
//!
//! TLSF keeps block headers inside the memory it manages, so this crate
//! lives in `platform/` and uses `unsafe`. Its promise to make sound:
//! `rlsf` may only be asked to free blocks it handed out, with their
//! alignment. Two bitmaps in the lent metadata (two bits per 16 bytes of
//! heap, 1.6%) record every live allocation and whether it asked for an
//! alignment of at least `rlsf::GRANULARITY` (rlsf finds the block header
//! one of two ways depending on exactly that); a free of anything else, or
//! with an alignment of the other class, is ignored.
//!
//! Limits: blocks up to 8 GiB; 32-byte granularity.
#![no_std]

use core::alloc::Layout;
use core::mem::MaybeUninit;
use core::ptr::NonNull;

use kiln_alloc::{AllocError, HeapAllocator, HeapStats};
use rlsf::Tlsf;

/// Bytes per bit of the live-allocation bitmap.
const TRACK_GRANULE: usize = 16;

/// A TLSF heap over one region.
pub struct TlsfHeap {
    tlsf: Tlsf<'static, u32, u32, 28, 32>,
    start: usize,
    len: usize,
    /// Bit per 16 bytes: a live allocation starts here.
    live: &'static mut [u64],
    /// Bit per 16 bytes: that allocation's alignment is >= GRANULARITY.
    big_align: &'static mut [u64],
    stats: HeapStats,
}

impl Default for TlsfHeap {
    fn default() -> Self {
        Self::new()
    }
}

impl core::fmt::Debug for TlsfHeap {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TlsfHeap")
            .field("start", &self.start)
            .field("len", &self.len)
            .finish()
    }
}

impl TlsfHeap {
    /// An allocator with no memory yet.
    pub const fn new() -> Self {
        Self {
            tlsf: Tlsf::new(),
            start: 0,
            len: 0,
            live: &mut [],
            big_align: &mut [],
            stats: HeapStats {
                capacity_bytes: 0,
                used_bytes: 0,
                peak_bytes: 0,
                live_allocations: 0,
            },
        }
    }

    /// (word, bit) of the tracking bit for `addr`, if it can be an allocation.
    fn track_slot(&self, addr: usize) -> Option<(usize, u64)> {
        let offset = addr.checked_sub(self.start)?;
        if offset >= self.len || offset % TRACK_GRANULE != 0 {
            return None;
        }
        let i = offset / TRACK_GRANULE;
        Some((i / 64, 1 << (i % 64)))
    }
}

impl HeapAllocator for TlsfHeap {
    fn metadata_words(size_bytes: usize) -> usize {
        2 * (size_bytes / TRACK_GRANULE).div_ceil(64)
    }

    fn init(
        &mut self,
        memory: &'static mut [u8],
        metadata: &'static mut [u64],
    ) -> Result<(), AllocError> {
        let len = memory.len();
        if len < 256 || metadata.len() < Self::metadata_words(len) {
            return Err(AllocError::BadRegion);
        }
        metadata.fill(0);
        let start = memory.as_mut_ptr() as usize;
        // SAFETY: `memory` is exclusively ours for 'static; viewing
        // initialised bytes as MaybeUninit is always valid, and nothing reads
        // them as u8 again (the &mut [u8] is consumed here).
        let pool: &'static mut [MaybeUninit<u8>] =
            unsafe { core::slice::from_raw_parts_mut(memory.as_mut_ptr().cast(), len) };
        let (live, big_align) = metadata.split_at_mut(Self::metadata_words(len) / 2);
        *self = Self {
            start,
            len,
            live,
            big_align,
            ..Self::new()
        };
        self.tlsf.insert_free_block(pool);
        self.stats.capacity_bytes = len;
        Ok(())
    }

    fn alloc(&mut self, layout: Layout) -> Option<usize> {
        let ptr = self.tlsf.allocate(layout)?;
        let addr = ptr.as_ptr() as usize;
        let Some((w, b)) = self.track_slot(addr) else {
            // Cannot happen (blocks come from the pool, 16-byte aligned);
            // never hand out what could not be tracked.
            // SAFETY: ptr was just allocated by self.tlsf with this layout.
            unsafe { self.tlsf.deallocate(ptr, layout.align()) };
            return None;
        };
        self.live[w] |= b;
        if layout.align() >= rlsf::GRANULARITY {
            self.big_align[w] |= b;
        } else {
            self.big_align[w] &= !b;
        }
        self.stats.used_bytes += layout.size();
        self.stats.peak_bytes = self.stats.peak_bytes.max(self.stats.used_bytes);
        self.stats.live_allocations += 1;
        Some(addr)
    }

    fn dealloc(&mut self, addr: usize, layout: Layout) {
        let Some((w, b)) = self.track_slot(addr) else {
            return;
        };
        if self.live[w] & b == 0 {
            return; // not handed out here, or already freed
        }
        let big = self.big_align[w] & b != 0;
        if big != (layout.align() >= rlsf::GRANULARITY) {
            return; // a layout that cannot be the one allocated: keep the block
        }
        self.live[w] &= !b;
        let Some(ptr) = NonNull::new(addr as *mut u8) else {
            return;
        };
        // SAFETY: the tracking bit proves `addr` is a live block returned by
        // self.tlsf.allocate (bits are set only there and cleared here), and
        // its alignment class matches the one it was allocated with, which
        // is all rlsf 0.2 uses the alignment for.
        unsafe { self.tlsf.deallocate(ptr, layout.align()) };
        self.stats.used_bytes = self.stats.used_bytes.saturating_sub(layout.size());
        self.stats.live_allocations -= 1;
    }

    fn stats(&self) -> HeapStats {
        self.stats
    }
}

/// In-guest tests of this allocator (feature `ktest`).
#[cfg(feature = "ktest")]
pub mod ktests {
    /// The suite, for a runner image.
    pub const SUITE: kiln_alloc::testing::kiln_ktest::Suite =
        kiln_alloc::heap_suite!(super::TlsfHeap);
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_alloc::testing;

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    #[test]
    fn random_operations_keep_blocks_disjoint_and_aligned() {
        for seed in 1..30 {
            assert!(testing::exercise::<TlsfHeap>(1 << 20, seed, 3000, 4000) > 1000);
        }
    }

    #[test]
    fn freed_memory_is_reused() {
        let (first, second) = testing::refill::<TlsfHeap>(64 << 10, 48);
        assert!(first > 500);
        assert_eq!(first, second);
    }

    #[test]
    fn large_alignment_is_honoured() {
        let (mut h, _) = testing::heap::<TlsfHeap>(1 << 16);
        let a = h.alloc(layout(10, 4096)).unwrap();
        assert_eq!(a % 4096, 0);
        h.dealloc(a, layout(10, 4096));
    }

    #[test]
    fn foreign_and_double_frees_are_ignored() {
        let (mut h, start) = testing::heap::<TlsfHeap>(1 << 16);
        let a = h.alloc(layout(64, 8)).unwrap();
        h.dealloc(a + 16, layout(64, 8));
        h.dealloc(start + (1 << 20), layout(64, 8));
        h.dealloc(a, layout(64, 64)); // wrong alignment class: kept
        assert_eq!(h.stats().live_allocations, 1);
        h.dealloc(a, layout(64, 8));
        h.dealloc(a, layout(64, 8));
        assert_eq!(h.stats().live_allocations, 0);
        assert!(h.alloc(layout(32 << 10, 8)).is_some());
    }

    #[test]
    fn out_of_memory_is_none() {
        let (mut h, _) = testing::heap::<TlsfHeap>(4096);
        assert!(h.alloc(layout(8192, 8)).is_none());
    }
}
