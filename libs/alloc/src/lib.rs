//! # kiln-alloc — the allocator slots of a Kiln image
//!
//! Two traits, no implementation (Unikraft's `ukalloc` split):
//!
//! - [`FrameAllocator`]: hands out runs of 4 KiB physical frames (page
//!   tables, DMA buffers, the heap's own memory).
//! - [`HeapAllocator`]: serves `Layout`s from one region of memory; the
//!   runtime (`kiln-rt`) wraps the one an app names into its
//!   `#[global_allocator]`.
//!
//! Implementations live in sibling crates and never depend on each other:
//! `kiln-alloc-bump` (region/bump, the smallest), `kiln-alloc-buddy`
//! (binary buddy, out-of-band bitmaps), `platform/alloc-tlsf` (TLSF, the
//! fast general-purpose one), `kiln-alloc-bitmap` (frames). A heap gets its
//! memory as `&'static mut [u8]` — proof that nobody else uses it — plus a
//! metadata array of the size it asked for ([`HeapAllocator::metadata_words`]),
//! and answers with addresses, so allocators that never write into the
//! memory they manage are written, and unit-tested on the host, without
//! `unsafe`; one that keeps headers inside it (TLSF) lives in `platform/`.
//!
//! With the `test-utils` feature, [`testing`] offers a randomized checker
//! every implementation runs in its tests.
#![no_std]
#![forbid(unsafe_code)]

#[cfg(feature = "test-utils")]
extern crate alloc;

use core::alloc::Layout;

/// Size of one frame.
pub const FRAME_SIZE: u64 = 4096;

/// Why an allocator could not do what was asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllocError {
    /// Not enough free memory for the request.
    OutOfMemory {
        /// Bytes (heap) or frames (frame allocator) requested.
        requested: u64,
    },
    /// The address was not handed out by this allocator, or already freed.
    NotAllocated {
        /// The address passed to `free`.
        addr: u64,
    },
    /// The region given to the allocator cannot hold it (too small or unaligned).
    BadRegion,
}

impl core::fmt::Display for AllocError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::OutOfMemory { requested } => write!(f, "out of memory ({requested} requested)"),
            Self::NotAllocated { addr } => {
                write!(
                    f,
                    "{addr:#x} was not allocated here (double free or foreign address)"
                )
            }
            Self::BadRegion => f.write_str("the memory region is too small or unaligned"),
        }
    }
}

/// Allocates runs of physical frames.
pub trait FrameAllocator {
    /// Allocates `count` contiguous frames; returns the first one's address.
    fn alloc_frames(&mut self, count: usize) -> Result<u64, AllocError>;
    /// Returns `count` frames starting at `addr` (as allocated).
    fn free_frames(&mut self, addr: u64, count: usize) -> Result<(), AllocError>;
    /// Frames currently free.
    fn free_count(&self) -> usize;
    /// Frames managed in all.
    fn total_count(&self) -> usize;
}

/// Usage figures of a heap.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeapStats {
    /// Bytes of the region.
    pub capacity_bytes: usize,
    /// Bytes handed out and not freed.
    pub used_bytes: usize,
    /// Largest `used_bytes` seen.
    pub peak_bytes: usize,
    /// Live allocations.
    pub live_allocations: usize,
}

/// Serves allocations from one region of memory.
pub trait HeapAllocator: Send {
    /// Words of metadata needed to manage `size_bytes` of memory (0 by default).
    fn metadata_words(size_bytes: usize) -> usize
    where
        Self: Sized,
    {
        let _ = size_bytes;
        0
    }
    /// Takes over `memory` (and `metadata`, zeroed, at least
    /// [`Self::metadata_words`] long); called once before any allocation.
    fn init(
        &mut self,
        memory: &'static mut [u8],
        metadata: &'static mut [u64],
    ) -> Result<(), AllocError>;
    /// Returns the address of a block fitting `layout`, or `None` when out of memory.
    fn alloc(&mut self, layout: Layout) -> Option<usize>;
    /// Frees a block returned by `alloc` with the same `layout`; addresses
    /// it did not hand out (or already took back) are ignored.
    fn dealloc(&mut self, addr: usize, layout: Layout);
    /// Current usage.
    fn stats(&self) -> HeapStats;
}

#[cfg(feature = "test-utils")]
pub mod testing;
