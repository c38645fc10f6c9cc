//! Guest memory: the frame allocator and the heap's region.
//!
//! [`init`] picks the largest RAM range above the image and below the end
//! of the identity map, lends its first frames to a
//! [`kiln_alloc_bitmap::BitmapFrames`] as bitmap, and sets aside half of
//! the remaining frames (or `heap_percent` of them) as the heap region,
//! which the app's heap allocator takes over on first use. The rest stays
//! with the frame allocator ([`alloc_frames`], [`free_frames`]).

use kiln_alloc::{AllocError, FRAME_SIZE, FrameAllocator};
use kiln_alloc_bitmap::{BitmapFrames, bitmap_words};

static FRAMES: spin::Mutex<Option<BitmapFrames<'static>>> = spin::Mutex::new(None);
static HEAP_REGION: spin::Once<(usize, usize)> = spin::Once::new();
static RANGE: spin::Once<(u64, u64)> = spin::Once::new();

/// Why guest memory could not be set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryError {
    /// No RAM above the image: the guest needs more memory (`-m`).
    NoFreeRam {
        /// End of the loaded image.
        image_end: u64,
    },
    /// The free range is too small for the bitmap, heap and a few frames.
    TooSmall {
        /// Bytes of the largest free range.
        free_bytes: u64,
    },
    /// `init` ran twice.
    AlreadyInitialised,
}

impl core::fmt::Display for MemoryError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NoFreeRam { image_end } => write!(
                f,
                "no free RAM above the image (it ends at {image_end:#x}): give the guest more memory with -m"
            ),
            Self::TooSmall { free_bytes } => write!(
                f,
                "only {free_bytes} bytes of free RAM: give the guest more memory with -m"
            ),
            Self::AlreadyInitialised => f.write_str("memory was initialised twice"),
        }
    }
}

/// Summary for logs and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// First byte of the managed range.
    pub range_start: u64,
    /// Bytes in the managed range.
    pub range_bytes: u64,
    /// Frames the frame allocator manages.
    pub total_frames: usize,
    /// Frames free now.
    pub free_frames: usize,
    /// Heap region start and size.
    pub heap: (usize, usize),
}

/// The largest range of `ram` above `image_end` and below `limit`, page aligned.
pub fn largest_free_range(
    ram: &[crate::boot::RamRange],
    image_end: u64,
    limit: u64,
) -> Option<(u64, u64)> {
    ram.iter()
        .filter_map(|r| {
            let start = r.start.max(image_end).next_multiple_of(FRAME_SIZE);
            let end = (r.start.saturating_add(r.len)).min(limit) / FRAME_SIZE * FRAME_SIZE;
            (end > start).then(|| (start, end - start))
        })
        .max_by_key(|&(_, len)| len)
}

/// How a free range of `frames` frames is split: (bitmap frames, heap frames).
pub fn split(frames: u64, heap_percent: u64) -> Option<(u64, u64)> {
    let bitmap_frames = (bitmap_words(frames as usize) as u64 * 8).div_ceil(FRAME_SIZE);
    let usable = frames.checked_sub(bitmap_frames)?;
    let heap = usable * heap_percent.clamp(1, 95) / 100;
    (heap >= 1 && usable - heap >= 4).then_some((bitmap_frames, heap))
}

/// End of the loaded image (PVH images; from the linker script).
#[cfg(all(kiln_guest, not(kiln_linuxu)))]
pub fn image_end() -> u64 {
    unsafe extern "C" {
        /// End of the loaded image (from the linker script).
        static _end: u8;
    }
    (&raw const _end) as u64
}

/// Sets up the frame allocator and the heap region from the RAM ranges,
/// using only memory above `image_end` and below `limit`.
#[cfg(kiln_guest)]
pub fn init(
    ram: &[crate::boot::RamRange],
    heap_percent: u64,
    image_end: u64,
    limit: u64,
    keep_out: &[crate::boot::RamRange],
) -> Result<MemoryStats, MemoryError> {
    let (start, len) =
        largest_free_range(ram, image_end, limit).ok_or(MemoryError::NoFreeRam { image_end })?;
    let frames = len / FRAME_SIZE;
    let (bitmap_frames, heap_frames) =
        split(frames, heap_percent).ok_or(MemoryError::TooSmall { free_bytes: len })?;
    let mut slot = FRAMES.lock();
    if slot.is_some() {
        return Err(MemoryError::AlreadyInitialised);
    }
    let managed = (frames - bitmap_frames) as usize;
    // SAFETY: [start, start + bitmap_frames * 4 KiB) is usable RAM (from the
    // memory map) above the image and inside the identity map, so it is
    // mapped user-writable and nothing else refers to it; the check above
    // ensures this slice is created once. u64 alignment holds (page aligned).
    let bits: &'static mut [u64] =
        unsafe { core::slice::from_raw_parts_mut(start as *mut u64, bitmap_words(managed)) };
    let mut frames_alloc = BitmapFrames::new(start + bitmap_frames * FRAME_SIZE, managed, bits)
        .map_err(|_| MemoryError::TooSmall { free_bytes: len })?;
    // Boot modules that lie in free RAM (QEMU reports its initrd as RAM)
    // must survive: take their frames out first.
    let base = start + bitmap_frames * FRAME_SIZE;
    let managed_end = base + managed as u64 * FRAME_SIZE;
    for m in keep_out {
        let first = (m.start / FRAME_SIZE * FRAME_SIZE).max(base);
        let end = (m.start + m.len)
            .next_multiple_of(FRAME_SIZE)
            .min(managed_end);
        if end > first {
            let _ = frames_alloc.reserve(first, ((end - first) / FRAME_SIZE) as usize);
        }
    }
    let heap_start = frames_alloc
        .alloc_frames(heap_frames as usize)
        .map_err(|_| MemoryError::TooSmall { free_bytes: len })?;
    let heap = (heap_start as usize, (heap_frames * FRAME_SIZE) as usize);
    HEAP_REGION.call_once(|| heap);
    RANGE.call_once(|| (start, len));
    *slot = Some(frames_alloc);
    drop(slot);
    Ok(stats())
}

/// The region the heap allocator manages, once [`init`] ran.
pub fn heap_region() -> Option<(usize, usize)> {
    HEAP_REGION.get().copied()
}

/// Allocates `count` contiguous 4 KiB frames.
pub fn alloc_frames(count: usize) -> Result<u64, AllocError> {
    crate::thread::preempt_disable();
    let result = FRAMES
        .lock()
        .as_mut()
        .ok_or(AllocError::OutOfMemory {
            requested: count as u64,
        })
        .and_then(|f| f.alloc_frames(count));
    crate::thread::preempt_enable();
    result
}

/// Frees frames from [`alloc_frames`].
pub fn free_frames(addr: u64, count: usize) -> Result<(), AllocError> {
    crate::thread::preempt_disable();
    let result = FRAMES
        .lock()
        .as_mut()
        .ok_or(AllocError::NotAllocated { addr })
        .and_then(|f| f.free_frames(addr, count));
    crate::thread::preempt_enable();
    result
}

/// Current memory figures.
pub fn stats() -> MemoryStats {
    // The frame lock is never held preemptible (see `heap::GlobalHeap`).
    crate::thread::preempt_disable();
    let (total_frames, free_frames) = FRAMES
        .lock()
        .as_ref()
        .map_or((0, 0), |f| (f.total_count(), f.free_count()));
    crate::thread::preempt_enable();
    let heap = heap_region().unwrap_or((0, 0));
    let (range_start, range_bytes) = RANGE.get().copied().unwrap_or((0, 0));
    MemoryStats {
        range_start,
        range_bytes,
        total_frames,
        free_frames,
        heap,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::RamRange;

    #[test]
    fn picks_largest_range_above_image() {
        let ram = [
            RamRange {
                start: 0,
                len: 0x9fc00,
            },
            RamRange {
                start: 0x10_0000,
                len: 0x10_0000,
            },
        ];
        assert_eq!(
            largest_free_range(&ram, 0x13_2001, 1 << 30),
            Some((0x13_3000, 0xcd000))
        );
        assert_eq!(largest_free_range(&ram, 0x20_0000, 1 << 30), None);
        assert_eq!(
            largest_free_range(&ram, 0x10_0000, 0x18_0000),
            Some((0x10_0000, 0x8_0000))
        );
    }

    #[test]
    fn split_leaves_room_for_frames() {
        assert_eq!(split(200, 50), Some((1, 99)));
        assert_eq!(split(4, 50), None);
        let (bitmap, heap) = split(262_144, 50).unwrap();
        assert_eq!(bitmap, 8);
        assert_eq!(heap, (262_144 - 8) / 2);
    }
}
