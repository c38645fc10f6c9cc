//! # kiln-alloc-bump — a region (bump) heap allocator
//!
//! [`BumpHeap`] implements [`kiln_alloc::HeapAllocator`] by moving one
//! pointer up. It is the smallest allocator (a few hundred bytes of code)
//! and the fastest, and suits programs that allocate at start-up and then
//! run: freeing the most recent block gives its memory back, and when every
//! block is freed the whole region is reused; other frees only update the
//! statistics.
//!
//! Limits: long-running programs that free and allocate in any order run
//! out of memory; pick a general-purpose allocator for them.
#![no_std]
#![forbid(unsafe_code)]

use core::alloc::Layout;
use kiln_alloc::{AllocError, HeapAllocator, HeapStats};

/// A bump allocator over one region.
#[derive(Debug, Default)]
pub struct BumpHeap {
    start: usize,
    end: usize,
    next: usize,
    stats: HeapStats,
}

impl BumpHeap {
    /// An allocator with no memory yet (see [`HeapAllocator::init`]).
    pub const fn new() -> Self {
        Self {
            start: 0,
            end: 0,
            next: 0,
            stats: HeapStats {
                capacity_bytes: 0,
                used_bytes: 0,
                peak_bytes: 0,
                live_allocations: 0,
            },
        }
    }
}

impl HeapAllocator for BumpHeap {
    fn init(&mut self, memory: &'static mut [u8], _: &'static mut [u64]) -> Result<(), AllocError> {
        let (start, size_bytes) = (memory.as_ptr() as usize, memory.len());
        let end = start.checked_add(size_bytes).ok_or(AllocError::BadRegion)?;
        if size_bytes == 0 {
            return Err(AllocError::BadRegion);
        }
        *self = Self {
            start,
            end,
            next: start,
            ..Self::new()
        };
        self.stats.capacity_bytes = size_bytes;
        Ok(())
    }

    fn alloc(&mut self, layout: Layout) -> Option<usize> {
        let addr = self.next.checked_next_multiple_of(layout.align())?;
        let new_next = addr.checked_add(layout.size().max(1))?;
        if new_next > self.end {
            return None;
        }
        self.next = new_next;
        self.stats.used_bytes += layout.size();
        self.stats.peak_bytes = self.stats.peak_bytes.max(self.stats.used_bytes);
        self.stats.live_allocations += 1;
        Some(addr)
    }

    fn dealloc(&mut self, addr: usize, layout: Layout) {
        if addr < self.start || addr >= self.end || self.stats.live_allocations == 0 {
            return;
        }
        self.stats.used_bytes = self.stats.used_bytes.saturating_sub(layout.size());
        self.stats.live_allocations -= 1;
        if self.stats.live_allocations == 0 {
            self.next = self.start;
        } else if addr + layout.size().max(1) == self.next {
            self.next = addr;
        }
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
        kiln_alloc::heap_suite!(super::BumpHeap);
}

#[cfg(test)]
mod tests {
    use super::*;

    use kiln_alloc::testing;

    fn heap(size: usize) -> BumpHeap {
        testing::heap::<BumpHeap>(size).0
    }

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    #[test]
    fn allocations_are_aligned_and_disjoint() {
        let mut h = heap(4096);
        let a = h.alloc(layout(3, 1)).unwrap();
        let b = h.alloc(layout(8, 64)).unwrap();
        let c = h.alloc(layout(1, 1)).unwrap();
        assert_eq!(b % 64, 0);
        assert!(a + 3 <= b && b + 8 <= c);
        assert_eq!(h.stats().live_allocations, 3);
        assert_eq!(h.stats().used_bytes, 12);
    }

    #[test]
    fn out_of_memory_is_none_not_overflow() {
        let mut h = heap(128);
        assert!(h.alloc(layout(100, 1)).is_some());
        assert!(h.alloc(layout(100, 1)).is_none());
        assert!(h.alloc(layout(usize::MAX / 2, 1)).is_none());
        assert!(h.alloc(layout(28, 1)).is_some());
    }

    #[test]
    fn freeing_the_last_block_rolls_back() {
        let mut h = heap(256);
        let a = h.alloc(layout(16, 8)).unwrap();
        let b = h.alloc(layout(16, 8)).unwrap();
        h.dealloc(b, layout(16, 8));
        assert_eq!(h.alloc(layout(16, 8)), Some(b));
        h.dealloc(a, layout(16, 8));
        assert_eq!(h.stats().live_allocations, 1);
    }

    #[test]
    fn freeing_everything_reuses_the_region() {
        let mut h = heap(64);
        let a = h.alloc(layout(32, 1)).unwrap();
        let b = h.alloc(layout(32, 1)).unwrap();
        h.dealloc(a, layout(32, 1));
        h.dealloc(b, layout(32, 1));
        assert_eq!(h.alloc(layout(64, 1)), Some(a));
        assert_eq!(h.stats().peak_bytes, 64);
    }

    #[test]
    fn empty_region_is_refused() {
        let mut h = BumpHeap::new();
        assert_eq!(
            h.init(testing::region(0), testing::metadata(0)),
            Err(AllocError::BadRegion)
        );
        assert!(h.alloc(layout(1, 1)).is_none());
    }

    #[test]
    fn random_operations_keep_blocks_disjoint_and_aligned() {
        for seed in 1..20 {
            assert!(testing::exercise::<BumpHeap>(1 << 20, seed, 2000, 300) > 500);
        }
    }

    #[test]
    fn region_is_reused_after_freeing_everything() {
        let (first, second) = testing::refill::<BumpHeap>(64 << 10, 100);
        assert_eq!(first, second);
    }
}
