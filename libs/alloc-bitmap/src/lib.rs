//! # kiln-alloc-bitmap — a bitmap frame allocator
//!
//! [`BitmapFrames`] implements [`kiln_alloc::FrameAllocator`] over one
//! physical range with one bit per 4 KiB frame (set = allocated), searching
//! first fit from a rotating hint. The bitmap is storage the caller lends
//! (the runtime carves it from the range itself), so the allocator needs
//! no heap and no `unsafe`.
//!
//! Cost: allocation scans bits (a word at a time over full words); 1 GiB of
//! frames needs 32 KiB of bitmap. Freeing checks every frame was allocated,
//! so double frees are reported instead of corrupting the map.
#![no_std]
#![forbid(unsafe_code)]

use kiln_alloc::{AllocError, FRAME_SIZE, FrameAllocator};

/// Words of bitmap needed for `frames` frames.
pub const fn bitmap_words(frames: usize) -> usize {
    frames.div_ceil(64)
}

/// Frame allocator over `[base, base + frames * 4 KiB)`.
#[derive(Debug)]
pub struct BitmapFrames<'a> {
    base: u64,
    frames: usize,
    free: usize,
    hint: usize,
    bits: &'a mut [u64],
}

impl<'a> BitmapFrames<'a> {
    /// Manages `frames` frames from page-aligned `base`, all free, with
    /// `bits` (at least [`bitmap_words`]`(frames)` words) as the bitmap.
    pub fn new(base: u64, frames: usize, bits: &'a mut [u64]) -> Result<Self, AllocError> {
        if !base.is_multiple_of(FRAME_SIZE) || bits.len() < bitmap_words(frames) || frames == 0 {
            return Err(AllocError::BadRegion);
        }
        bits.fill(0);
        Ok(Self {
            base,
            frames,
            free: frames,
            hint: 0,
            bits,
        })
    }

    fn is_set(&self, i: usize) -> bool {
        self.bits[i / 64] & (1 << (i % 64)) != 0
    }

    fn set(&mut self, i: usize, on: bool) {
        if on {
            self.bits[i / 64] |= 1 << (i % 64);
        } else {
            self.bits[i / 64] &= !(1 << (i % 64));
        }
    }

    /// First index >= from of a run of `count` clear bits ending before `limit`.
    fn find_run(&self, from: usize, limit: usize, count: usize) -> Option<usize> {
        let mut i = from;
        while i + count <= limit {
            if i.is_multiple_of(64) && self.bits[i / 64] == u64::MAX {
                i += 64;
                continue;
            }
            match (i..i + count).find(|&j| self.is_set(j)) {
                Some(used) => i = used + 1,
                None => return Some(i),
            }
        }
        None
    }

    /// Marks `count` frames from `addr` allocated (e.g. memory already in
    /// use at boot). Fails if any is outside the range or allocated.
    pub fn reserve(&mut self, addr: u64, count: usize) -> Result<(), AllocError> {
        let first = self.index(addr, count)?;
        if (first..first + count).any(|i| self.is_set(i)) {
            return Err(AllocError::NotAllocated { addr });
        }
        (first..first + count).for_each(|i| self.set(i, true));
        self.free -= count;
        Ok(())
    }

    fn index(&self, addr: u64, count: usize) -> Result<usize, AllocError> {
        let bad = AllocError::NotAllocated { addr };
        if addr < self.base || !(addr - self.base).is_multiple_of(FRAME_SIZE) {
            return Err(bad);
        }
        let first = usize::try_from((addr - self.base) / FRAME_SIZE).map_err(|_| bad)?;
        if count == 0 || first.checked_add(count).is_none_or(|end| end > self.frames) {
            return Err(bad);
        }
        Ok(first)
    }
}

impl FrameAllocator for BitmapFrames<'_> {
    fn alloc_frames(&mut self, count: usize) -> Result<u64, AllocError> {
        let oom = AllocError::OutOfMemory {
            requested: count as u64,
        };
        if count == 0 || count > self.free {
            return Err(oom);
        }
        let start = self
            .find_run(self.hint, self.frames, count)
            .or_else(|| self.find_run(0, (self.hint + count).min(self.frames), count))
            .ok_or(oom)?;
        (start..start + count).for_each(|i| self.set(i, true));
        self.free -= count;
        self.hint = (start + count) % self.frames;
        Ok(self.base + start as u64 * FRAME_SIZE)
    }

    fn free_frames(&mut self, addr: u64, count: usize) -> Result<(), AllocError> {
        let first = self.index(addr, count)?;
        if !(first..first + count).all(|i| self.is_set(i)) {
            return Err(AllocError::NotAllocated { addr });
        }
        (first..first + count).for_each(|i| self.set(i, false));
        self.free += count;
        Ok(())
    }

    fn free_count(&self) -> usize {
        self.free
    }

    fn total_count(&self) -> usize {
        self.frames
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: u64 = 0x20_0000;

    #[test]
    fn allocates_contiguous_distinct_runs() {
        let mut bits = [0u64; 2];
        let mut f = BitmapFrames::new(BASE, 100, &mut bits).unwrap();
        let a = f.alloc_frames(3).unwrap();
        let b = f.alloc_frames(70).unwrap();
        assert_eq!(a, BASE);
        assert_eq!(b, BASE + 3 * FRAME_SIZE);
        assert_eq!(f.free_count(), 27);
        assert_eq!(
            f.alloc_frames(28),
            Err(AllocError::OutOfMemory { requested: 28 })
        );
    }

    #[test]
    fn freed_frames_are_reused_and_double_free_is_caught() {
        let mut bits = [0u64; 1];
        let mut f = BitmapFrames::new(BASE, 8, &mut bits).unwrap();
        let a = f.alloc_frames(4).unwrap();
        let _b = f.alloc_frames(4).unwrap();
        f.free_frames(a, 4).unwrap();
        assert_eq!(
            f.free_frames(a, 4),
            Err(AllocError::NotAllocated { addr: a })
        );
        assert_eq!(f.alloc_frames(4), Ok(a));
    }

    #[test]
    fn fragmentation_needs_a_contiguous_run() {
        let mut bits = [0u64; 1];
        let mut f = BitmapFrames::new(BASE, 6, &mut bits).unwrap();
        let frames: [u64; 6] = core::array::from_fn(|_| f.alloc_frames(1).unwrap());
        f.free_frames(frames[1], 1).unwrap();
        f.free_frames(frames[3], 1).unwrap();
        assert!(f.alloc_frames(2).is_err());
        f.free_frames(frames[2], 1).unwrap();
        assert_eq!(f.alloc_frames(3), Ok(frames[1]));
    }

    #[test]
    fn reserve_and_bad_addresses() {
        let mut bits = [0u64; 1];
        let mut f = BitmapFrames::new(BASE, 10, &mut bits).unwrap();
        f.reserve(BASE, 2).unwrap();
        assert!(f.reserve(BASE + FRAME_SIZE, 1).is_err());
        assert_eq!(f.alloc_frames(1), Ok(BASE + 2 * FRAME_SIZE));
        assert!(f.free_frames(BASE + 1, 1).is_err());
        assert!(f.free_frames(BASE - FRAME_SIZE, 1).is_err());
        assert!(f.free_frames(BASE + 9 * FRAME_SIZE, 2).is_err());
        assert!(BitmapFrames::new(BASE + 1, 10, &mut [0u64; 1]).is_err());
        assert!(BitmapFrames::new(BASE, 65, &mut [0u64; 1]).is_err());
    }

    #[test]
    fn full_words_are_skipped() {
        let mut bits = [0u64; 4];
        let mut f = BitmapFrames::new(BASE, 256, &mut bits).unwrap();
        assert_eq!(f.alloc_frames(130), Ok(BASE));
        assert_eq!(f.alloc_frames(126), Ok(BASE + 130 * FRAME_SIZE));
        assert_eq!(f.free_count(), 0);
    }
}
