//! Checks for [`HeapAllocator`] implementations (feature `test-utils`),
//! shared by their host unit tests and their in-guest tests:
//!
//! - [`check_random`]: random allocations and frees of random sizes and
//!   alignments, checking after each step that every live block is
//!   aligned, inside the region and disjoint from every other, and that the
//!   statistics agree;
//! - [`check_refill`]: freeing everything makes the whole region usable
//!   again;
//! - [`heap_suite!`](crate::heap_suite): the in-guest `kiln_ktest` suite
//!   of an implementation (random operations, alignment, out of memory,
//!   refill), on guest memory.
//!
//! With feature `std` (host tests), `region`, `metadata`, `heap`,
//! `exercise` and `refill` work on leaked host buffers.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::alloc::Layout;

use crate::HeapAllocator;

#[cfg(feature = "std")]
mod host {
    extern crate std;
    use std::boxed::Box;
    use std::vec;

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

    /// [`super::check_random`] on a fresh heap; panics on a broken invariant.
    pub fn exercise<H: HeapAllocator + Default>(
        bytes: usize,
        seed: u64,
        steps: usize,
        max_size: usize,
    ) -> usize {
        let (h, start) = heap::<H>(bytes);
        super::check_random(h, start, bytes, seed, steps, max_size).unwrap()
    }

    /// [`super::check_refill`] on a fresh heap.
    pub fn refill<H: HeapAllocator + Default>(bytes: usize, block: usize) -> (usize, usize) {
        let (h, _) = heap::<H>(bytes);
        super::check_refill(h, block)
    }
}

#[cfg(feature = "std")]
pub use host::{exercise, heap, metadata, refill, region};

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

/// Runs `steps` random operations on `h`, which manages `[start, start +
/// bytes)`; returns how many allocations succeeded, or what broke.
pub fn check_random<H: HeapAllocator>(
    mut h: H,
    start: usize,
    bytes: usize,
    seed: u64,
    steps: usize,
    max_size: usize,
) -> Result<usize, String> {
    let end = start + bytes;
    let mut rng = Rng(seed | 1);
    let mut live: Vec<(usize, Layout)> = Vec::new();
    let mut successes = 0;
    for step in 0..steps {
        if live.is_empty() || rng.below(100) < 60 {
            let size = 1 + rng.below(max_size as u64) as usize;
            let align = 1usize << rng.below(7);
            let layout = Layout::from_size_align(size, align).map_err(|e| format!("{e}"))?;
            if let Some(addr) = h.alloc(layout) {
                successes += 1;
                if addr % align != 0 {
                    return Err(format!("step {step}: {addr:#x} not aligned to {align}"));
                }
                if addr < start || addr + size > end {
                    return Err(format!(
                        "step {step}: block {addr:#x}+{size} outside the region"
                    ));
                }
                if let Some((other, ol)) = live
                    .iter()
                    .find(|(o, l)| !(addr + size <= *o || o + l.size() <= addr))
                {
                    return Err(format!(
                        "step {step}: {addr:#x}+{size} overlaps {other:#x}+{}",
                        ol.size()
                    ));
                }
                live.push((addr, layout));
            }
        } else {
            let i = rng.below(live.len() as u64) as usize;
            let (addr, layout) = live.swap_remove(i);
            h.dealloc(addr, layout);
        }
        let stats = h.stats();
        if stats.live_allocations != live.len() {
            return Err(format!(
                "step {step}: {} live, stats say {}",
                live.len(),
                stats.live_allocations
            ));
        }
        let used: usize = live.iter().map(|(_, l)| l.size()).sum();
        if stats.used_bytes != used {
            return Err(format!(
                "step {step}: {used} bytes used, stats say {}",
                stats.used_bytes
            ));
        }
    }
    for (addr, layout) in live.drain(..) {
        h.dealloc(addr, layout);
    }
    if h.stats().live_allocations != 0 {
        return Err("allocations left after freeing everything".into());
    }
    Ok(successes)
}

/// Fills `h` with `block`-byte allocations, frees them all, fills it again;
/// returns both counts (equal when the region came back whole).
pub fn check_refill<H: HeapAllocator>(mut h: H, block: usize) -> (usize, usize) {
    let Ok(layout) = Layout::from_size_align(block, 8) else {
        return (0, 0);
    };
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

/// A heap of type `H` on guest memory from the in-guest test environment.
pub fn guest_heap<H: HeapAllocator + Default>(
    env: &mut kiln_ktest::Env,
    bytes: usize,
) -> Result<(H, usize), kiln_ktest::Failure> {
    let fail = |message: &str| kiln_ktest::Failure {
        message: message.into(),
        location: file!(),
    };
    let memory = (env.memory)(bytes).ok_or_else(|| fail("no memory for the test heap"))?;
    let metadata =
        (env.words)(H::metadata_words(bytes)).ok_or_else(|| fail("no memory for metadata"))?;
    let start = memory.as_ptr() as usize;
    let mut h = H::default();
    h.init(memory, metadata).map_err(|e| kiln_ktest::Failure {
        message: format!("init: {e}"),
        location: file!(),
    })?;
    Ok((h, start))
}

/// The in-guest suite of a heap implementation: `heap_suite!(BuddyHeap)`.
#[macro_export]
macro_rules! heap_suite {
    ($heap:ty) => {{
        use $crate::HeapAllocator as _;
        use $crate::testing::kiln_ktest::{Env, Outcome, Test, check, check_eq};
        fn random_operations(env: &mut Env) -> Outcome {
            for seed in 1..5 {
                let (h, start) = $crate::testing::guest_heap::<$heap>(env, 1 << 20)?;
                let done = $crate::testing::check_random(h, start, 1 << 20, seed, 2000, 2000);
                check!(
                    done.as_ref().is_ok_and(|n| *n > 500),
                    "seed {seed}: {:?}",
                    done
                );
            }
            Ok(())
        }
        fn alignment_up_to_a_page(env: &mut Env) -> Outcome {
            let (mut h, _) = $crate::testing::guest_heap::<$heap>(env, 1 << 16)?;
            for shift in 0..=12 {
                let layout = core::alloc::Layout::from_size_align(24, 1 << shift).unwrap();
                let addr = h.alloc(layout);
                check!(
                    addr.is_some_and(|a| a % (1 << shift) == 0),
                    "align {}: {:?}",
                    1 << shift,
                    addr
                );
            }
            Ok(())
        }
        fn out_of_memory_is_reported(env: &mut Env) -> Outcome {
            let (mut h, _) = $crate::testing::guest_heap::<$heap>(env, 1 << 14)?;
            let too_big = core::alloc::Layout::from_size_align(1 << 15, 8).unwrap();
            check!(
                h.alloc(too_big).is_none(),
                "a block larger than the heap was handed out"
            );
            let small = core::alloc::Layout::from_size_align(64, 8).unwrap();
            let mut n = 0;
            while h.alloc(small).is_some() {
                n += 1;
                check!(n < 1 << 14, "the heap never ran out");
            }
            check!(n > 100, "only {n} small blocks fit");
            Ok(())
        }
        fn memory_comes_back_after_freeing_everything(env: &mut Env) -> Outcome {
            let (h, _) = $crate::testing::guest_heap::<$heap>(env, 1 << 16)?;
            let (first, second) = $crate::testing::check_refill(h, 48);
            check!(first > 100, "only {first} blocks fit");
            check_eq!(first, second);
            Ok(())
        }
        const SUITE: &[Test] = &[
            Test {
                name: concat!(module_path!(), "::random_operations"),
                run: random_operations,
                requires: None,
            },
            Test {
                name: concat!(module_path!(), "::alignment_up_to_a_page"),
                run: alignment_up_to_a_page,
                requires: None,
            },
            Test {
                name: concat!(module_path!(), "::out_of_memory_is_reported"),
                run: out_of_memory_is_reported,
                requires: None,
            },
            Test {
                name: concat!(
                    module_path!(),
                    "::memory_comes_back_after_freeing_everything"
                ),
                run: memory_comes_back_after_freeing_everything,
                requires: None,
            },
        ];
        SUITE
    }};
}

pub use kiln_ktest;
