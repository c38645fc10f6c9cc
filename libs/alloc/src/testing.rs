//! A randomized checker for [`HeapAllocator`] implementations (feature
//! `test-utils`): random allocations and frees of random sizes and
//! alignments, checking after each step that every live block is aligned,
//! inside the region and disjoint from every other, and that the
//! statistics agree.

extern crate std;

use core::alloc::Layout;
use std::boxed::Box;
use std::vec;
use std::vec::Vec;

use crate::HeapAllocator;

/// A leaked, zeroed buffer usable as heap memory in host tests, aligned to 4 KiB.
pub fn region(bytes: usize) -> &'static mut [u8] {
    let pages = bytes.div_ceil(4096) + 1;
    let raw: &'static mut [u8] = Box::leak(vec![0u8; pages * 4096].into_boxed_slice());
    let skip = raw.as_ptr().align_offset(4096);
    &mut raw[skip..skip + bytes]
}

/// Leaked zeroed metadata of `words` words.
pub fn metadata(words: usize) -> &'static mut [u64] {
    Box::leak(vec![0u64; words].into_boxed_slice())
}

/// A heap of type `H` over a fresh `bytes`-byte region.
pub fn heap<H: HeapAllocator + Default>(bytes: usize) -> (H, usize) {
    let mut h = H::default();
    let memory = region(bytes);
    let start = memory.as_ptr() as usize;
    h.init(memory, metadata(H::metadata_words(bytes)))
        .expect("init");
    (h, start)
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Runs `steps` random operations on a fresh `H` over `bytes` bytes;
/// panics on the first broken invariant. Returns how many allocations
/// succeeded (so callers can check the heap was really exercised).
pub fn exercise<H: HeapAllocator + Default>(
    bytes: usize,
    seed: u64,
    steps: usize,
    max_size: usize,
) -> usize {
    let (mut h, start) = heap::<H>(bytes);
    let end = start + bytes;
    let mut rng = Rng(seed | 1);
    let mut live: Vec<(usize, Layout)> = Vec::new();
    let mut successes = 0;
    for step in 0..steps {
        if live.is_empty() || rng.below(100) < 60 {
            let size = 1 + rng.below(max_size as u64) as usize;
            let align = 1usize << rng.below(7);
            let layout = Layout::from_size_align(size, align).unwrap();
            if let Some(addr) = h.alloc(layout) {
                successes += 1;
                assert_eq!(
                    addr % align,
                    0,
                    "step {step}: {addr:#x} not aligned to {align}"
                );
                assert!(
                    addr >= start && addr + size <= end,
                    "step {step}: block outside the region"
                );
                for (other, ol) in &live {
                    let disjoint = addr + size <= *other || other + ol.size() <= addr;
                    assert!(
                        disjoint,
                        "step {step}: {addr:#x}+{size} overlaps {other:#x}+{}",
                        ol.size()
                    );
                }
                live.push((addr, layout));
            }
        } else {
            let i = rng.below(live.len() as u64) as usize;
            let (addr, layout) = live.swap_remove(i);
            h.dealloc(addr, layout);
        }
        let stats = h.stats();
        assert_eq!(
            stats.live_allocations,
            live.len(),
            "step {step}: live count"
        );
        assert_eq!(
            stats.used_bytes,
            live.iter().map(|(_, l)| l.size()).sum::<usize>(),
            "step {step}: used bytes"
        );
    }
    for (addr, layout) in live.drain(..) {
        h.dealloc(addr, layout);
    }
    assert_eq!(h.stats().live_allocations, 0);
    successes
}

/// Checks that freeing everything makes the whole region usable again:
/// fills the heap with `block` bytes, frees all, fills again.
pub fn refill<H: HeapAllocator + Default>(bytes: usize, block: usize) -> (usize, usize) {
    let (mut h, _) = heap::<H>(bytes);
    let layout = Layout::from_size_align(block, 8).unwrap();
    let fill = |h: &mut H| {
        let mut got = Vec::new();
        while let Some(a) = h.alloc(layout) {
            got.push(a);
        }
        got
    };
    let first = fill(&mut h);
    for a in &first {
        h.dealloc(*a, layout);
    }
    let second = fill(&mut h);
    (first.len(), second.len())
}
