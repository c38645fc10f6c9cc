//! # kiln-alloc-buddy — a binary buddy heap allocator
//!
//! [`BuddyHeap`] implements [`kiln_alloc::HeapAllocator`]. Blocks are powers
//! of two from 32 bytes ([`MIN_ORDER`]) up to 1 GiB; a request takes the
//! smallest block that fits its size and alignment, splitting larger ones,
//! and a freed block merges with its free buddy, so memory comes back
//! whole (no long-term fragmentation from free order).
//!
//! All bookkeeping is out of band, in the metadata words the runtime lends
//! (about 1.6% of the heap): per order, one bitmap of free blocks and one
//! of allocated ones. The allocator never writes into the memory it hands
//! out and needs no `unsafe`; a free of an address it did not hand out is
//! ignored instead of corrupting anything.
//!
//! Costs: allocation and free are O(orders) plus a scan for a set bit that
//! starts at a per-order hint. Limits: alignment above 4 KiB is refused
//! (the region is only page aligned); internal fragmentation up to 2x.
#![no_std]
#![forbid(unsafe_code)]

use core::alloc::Layout;
use kiln_alloc::{AllocError, HeapAllocator, HeapStats};

/// Smallest block: 2^5 = 32 bytes.
pub const MIN_ORDER: u32 = 5;
/// Largest block: 2^30 = 1 GiB.
pub const MAX_ORDER: u32 = 30;
const ORDERS: usize = (MAX_ORDER - MIN_ORDER + 1) as usize;
/// Largest alignment served (the region is page aligned).
pub const MAX_ALIGN: usize = 4096;

/// Where one order's bitmaps live in the metadata.
#[derive(Clone, Copy, Debug, Default)]
struct OrderMap {
    /// Blocks of this order that fit in the region.
    blocks: usize,
    /// First word of the free bitmap; the allocated bitmap follows.
    offset: usize,
    /// Words per bitmap.
    words: usize,
    /// Free blocks now.
    free: usize,
    /// Lowest word that may hold a free bit.
    hint: usize,
}

/// A binary buddy allocator over one region.
#[derive(Debug, Default)]
pub struct BuddyHeap {
    start: usize,
    len: usize,
    maps: [OrderMap; ORDERS],
    bits: &'static mut [u64],
    stats: HeapStats,
}

fn layout_of(len: usize) -> ([OrderMap; ORDERS], usize) {
    let mut maps = [OrderMap::default(); ORDERS];
    let mut offset = 0;
    for (i, m) in maps.iter_mut().enumerate() {
        let blocks = len >> (MIN_ORDER as usize + i);
        let words = blocks.div_ceil(64);
        *m = OrderMap {
            blocks,
            offset,
            words,
            free: 0,
            hint: 0,
        };
        offset += 2 * words;
    }
    (maps, offset)
}

/// The order serving `layout`, if any.
fn order_for(layout: Layout) -> Option<u32> {
    if layout.align() > MAX_ALIGN {
        return None;
    }
    let need = layout.size().max(layout.align()).max(1);
    let order = need.next_power_of_two().trailing_zeros().max(MIN_ORDER);
    (order <= MAX_ORDER && need.checked_next_power_of_two().is_some()).then_some(order)
}

impl BuddyHeap {
    /// An allocator with no memory yet.
    pub const fn new() -> Self {
        const EMPTY: OrderMap = OrderMap {
            blocks: 0,
            offset: 0,
            words: 0,
            free: 0,
            hint: 0,
        };
        Self {
            start: 0,
            len: 0,
            maps: [EMPTY; ORDERS],
            bits: &mut [],
            stats: HeapStats {
                capacity_bytes: 0,
                used_bytes: 0,
                peak_bytes: 0,
                live_allocations: 0,
            },
        }
    }

    fn slot(&self, order: u32, index: usize, allocated: bool) -> (usize, u64) {
        let m = &self.maps[(order - MIN_ORDER) as usize];
        let word = m.offset + if allocated { m.words } else { 0 } + index / 64;
        (word, 1u64 << (index % 64))
    }

    fn get(&self, order: u32, index: usize, allocated: bool) -> bool {
        let m = &self.maps[(order - MIN_ORDER) as usize];
        if index >= m.blocks {
            return false;
        }
        let (w, b) = self.slot(order, index, allocated);
        self.bits[w] & b != 0
    }

    fn set(&mut self, order: u32, index: usize, allocated: bool, on: bool) {
        let (w, b) = self.slot(order, index, allocated);
        if on {
            self.bits[w] |= b;
        } else {
            self.bits[w] &= !b;
        }
        if !allocated {
            let m = &mut self.maps[(order - MIN_ORDER) as usize];
            if on {
                m.free += 1;
                m.hint = m.hint.min(index / 64);
            } else {
                m.free -= 1;
            }
        }
    }

    /// Index of some free block of `order` (the lowest at or after the hint).
    fn find_free(&mut self, order: u32) -> Option<usize> {
        let i = (order - MIN_ORDER) as usize;
        let m = self.maps[i];
        if m.free == 0 {
            return None;
        }
        for w in m.hint..m.words {
            let word = self.bits[m.offset + w];
            if word != 0 {
                self.maps[i].hint = w;
                return Some(w * 64 + word.trailing_zeros() as usize);
            }
        }
        None
    }
}

impl HeapAllocator for BuddyHeap {
    fn metadata_words(size_bytes: usize) -> usize {
        layout_of(size_bytes).1
    }

    fn init(
        &mut self,
        memory: &'static mut [u8],
        metadata: &'static mut [u64],
    ) -> Result<(), AllocError> {
        let addr = memory.as_ptr() as usize;
        let skip = addr.next_multiple_of(MAX_ALIGN) - addr;
        if memory.len() <= skip {
            return Err(AllocError::BadRegion);
        }
        let len = (memory.len() - skip) / (1 << MIN_ORDER) * (1 << MIN_ORDER);
        let (maps, words) = layout_of(len);
        if len == 0 || metadata.len() < words {
            return Err(AllocError::BadRegion);
        }
        metadata.fill(0);
        *self = Self {
            start: addr + skip,
            len,
            maps,
            bits: metadata,
            ..Self::new()
        };
        self.stats.capacity_bytes = len;
        // Cover the region with the largest aligned blocks that fit.
        let mut offset = 0;
        while offset < len {
            let mut order = MAX_ORDER;
            while (1usize << order) > len - offset || offset % (1usize << order) != 0 {
                order -= 1;
            }
            self.set(order, offset >> order, false, true);
            offset += 1 << order;
        }
        Ok(())
    }

    fn alloc(&mut self, layout: Layout) -> Option<usize> {
        let want = order_for(layout)?;
        let mut order = want;
        let mut index = loop {
            if order > MAX_ORDER {
                return None;
            }
            if let Some(i) = self.find_free(order) {
                break i;
            }
            order += 1;
        };
        self.set(order, index, false, false);
        while order > want {
            order -= 1;
            index *= 2;
            self.set(order, index + 1, false, true);
        }
        self.set(order, index, true, true);
        self.stats.used_bytes += layout.size();
        self.stats.peak_bytes = self.stats.peak_bytes.max(self.stats.used_bytes);
        self.stats.live_allocations += 1;
        Some(self.start + (index << order))
    }

    fn dealloc(&mut self, addr: usize, layout: Layout) {
        let Some(mut order) = order_for(layout) else {
            return;
        };
        let Some(offset) = addr.checked_sub(self.start) else {
            return;
        };
        if offset >= self.len || offset % (1 << order) != 0 {
            return;
        }
        let mut index = offset >> order;
        if !self.get(order, index, true) {
            return; // not handed out here, or already freed
        }
        self.set(order, index, true, false);
        self.stats.used_bytes -= layout.size();
        self.stats.live_allocations -= 1;
        while order < MAX_ORDER && self.get(order, index ^ 1, false) {
            self.set(order, index ^ 1, false, false);
            index /= 2;
            order += 1;
        }
        self.set(order, index, false, true);
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
        kiln_alloc::heap_suite!(super::BuddyHeap);
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_alloc::testing;

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    #[test]
    fn sizes_round_to_powers_of_two_and_align() {
        let (mut h, start) = testing::heap::<BuddyHeap>(1 << 16);
        let a = h.alloc(layout(1, 1)).unwrap();
        let b = h.alloc(layout(33, 1)).unwrap();
        let c = h.alloc(layout(8, 1024)).unwrap();
        assert_eq!(a, start);
        assert_eq!(b % 64, 0);
        assert_eq!(c % 1024, 0);
        assert!(
            h.alloc(layout(8, 8192)).is_none(),
            "alignment above 4 KiB is refused"
        );
    }

    #[test]
    fn buddies_merge_back_to_the_whole_region() {
        let (mut h, _) = testing::heap::<BuddyHeap>(1 << 16);
        let blocks: [usize; 4] = core::array::from_fn(|_| h.alloc(layout(1 << 14, 8)).unwrap());
        assert!(h.alloc(layout(1, 1)).is_none(), "the region is full");
        for b in blocks {
            h.dealloc(b, layout(1 << 14, 8));
        }
        assert!(
            h.alloc(layout(1 << 16, 8)).is_some(),
            "freed buddies did not merge"
        );
    }

    #[test]
    fn out_of_memory_and_foreign_frees_are_harmless() {
        let (mut h, start) = testing::heap::<BuddyHeap>(4096);
        assert!(h.alloc(layout(8192, 8)).is_none());
        let a = h.alloc(layout(100, 8)).unwrap();
        h.dealloc(a + 32, layout(100, 8)); // not an allocation: ignored
        h.dealloc(start + (1 << 20), layout(8, 8)); // outside: ignored
        h.dealloc(a, layout(100, 8));
        h.dealloc(a, layout(100, 8)); // double free: ignored
        assert_eq!(h.stats().live_allocations, 0);
        assert!(h.alloc(layout(4096, 8)).is_some());
    }

    #[test]
    fn odd_sized_regions_are_covered() {
        let (first, second) = testing::refill::<BuddyHeap>(3 * 4096 + 96, 32);
        assert_eq!(first, (3 * 4096 + 96) / 32);
        assert_eq!(first, second);
    }

    #[test]
    fn random_operations_keep_blocks_disjoint_and_aligned() {
        for seed in 1..30 {
            assert!(testing::exercise::<BuddyHeap>(1 << 20, seed, 3000, 2000) > 1000);
        }
    }

    #[test]
    fn metadata_is_small() {
        let words = BuddyHeap::metadata_words(8 << 20);
        assert!(words * 8 < (8 << 20) / 50, "{words} words");
    }
}
