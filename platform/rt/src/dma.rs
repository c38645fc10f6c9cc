//! Memory a device reads and writes (descriptor rings, I/O buffers).
//!
//! [`DmaRegion`] is whole, zeroed 4 KiB frames from the frame allocator,
//! freed on drop. Guest RAM is identity-mapped, so the address a driver
//! gives the device ([`DmaRegion::phys`]) is the one the CPU uses. Every
//! access is volatile and bounds-checked (the device may change the bytes
//! at any time), which keeps driver crates free of `unsafe`.
//!
//! Limits: VMs only (on linuxu the frames are not guest-physical memory
//! and no device exists); no IOMMU.

use crate::memory;
pub use kiln_alloc::AllocError;
use kiln_alloc::FRAME_SIZE;

/// Frames shared with a device.
#[derive(Debug)]
pub struct DmaRegion {
    addr: u64,
    frames: usize,
}

impl DmaRegion {
    /// `frames` contiguous zeroed frames.
    pub fn new(frames: usize) -> Result<Self, AllocError> {
        let addr = memory::alloc_frames(frames)?;
        let region = Self { addr, frames };
        for offset in (0..region.len()).step_by(8) {
            region.write_u64(offset, 0);
        }
        Ok(region)
    }

    /// The address the device uses (= the CPU's).
    pub fn phys(&self) -> u64 {
        self.addr
    }

    /// Its size in bytes.
    pub fn len(&self) -> usize {
        self.frames * FRAME_SIZE as usize
    }

    /// Whether it is empty (never: regions have at least one frame).
    pub fn is_empty(&self) -> bool {
        self.frames == 0
    }

    fn ptr<T>(&self, offset: usize) -> *mut T {
        let size = core::mem::size_of::<T>();
        assert!(
            offset.is_multiple_of(core::mem::align_of::<T>())
                && offset
                    .checked_add(size)
                    .is_some_and(|end| end <= self.len()),
            "DMA access of {size} bytes at {offset} outside a {}-byte region",
            self.len()
        );
        (self.addr as usize + offset) as *mut T
    }

    /// Checks that `len` bytes at `offset` are inside the region.
    fn check_range(&self, offset: usize, len: usize) {
        assert!(
            offset.checked_add(len).is_some_and(|end| end <= self.len()),
            "DMA access of {len} bytes at {offset} outside a {}-byte region",
            self.len()
        );
    }

    /// Writes `bytes` at `offset` (8 bytes per access where aligned: frames
    /// are copied through here).
    pub fn write(&self, offset: usize, bytes: &[u8]) {
        self.check_range(offset, bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let at = self.addr as usize + offset + i;
            if at.is_multiple_of(8) && bytes.len() - i >= 8 {
                let mut word = [0u8; 8];
                word.copy_from_slice(&bytes[i..i + 8]);
                // SAFETY: `check_range` put the 8 bytes inside the region,
                // which this value owns (frames nobody else uses) for its
                // lifetime; `at` is 8-aligned.
                unsafe { core::ptr::write_volatile(at as *mut u64, u64::from_ne_bytes(word)) };
                i += 8;
            } else {
                // SAFETY: as above, one byte.
                unsafe { core::ptr::write_volatile(at as *mut u8, bytes[i]) };
                i += 1;
            }
        }
    }

    /// Reads `buf.len()` bytes at `offset` (8 bytes per access where
    /// aligned).
    pub fn read(&self, offset: usize, buf: &mut [u8]) {
        self.check_range(offset, buf.len());
        let mut i = 0;
        while i < buf.len() {
            let at = self.addr as usize + offset + i;
            if at.is_multiple_of(8) && buf.len() - i >= 8 {
                // SAFETY: as in `write`.
                let word = unsafe { core::ptr::read_volatile(at as *const u64) };
                buf[i..i + 8].copy_from_slice(&word.to_ne_bytes());
                i += 8;
            } else {
                // SAFETY: as in `write`, one byte.
                buf[i] = unsafe { core::ptr::read_volatile(at as *const u8) };
                i += 1;
            }
        }
    }

    /// Writes a little-endian `u16` at an aligned `offset`.
    pub fn write_u16(&self, offset: usize, value: u16) {
        // SAFETY: as in `write`; `ptr` checked the alignment.
        unsafe { core::ptr::write_volatile(self.ptr(offset), value.to_le()) };
    }

    /// Reads a little-endian `u16` at an aligned `offset`.
    pub fn read_u16(&self, offset: usize) -> u16 {
        // SAFETY: as in `write_u16`.
        u16::from_le(unsafe { core::ptr::read_volatile(self.ptr(offset)) })
    }

    /// Writes a little-endian `u32` at an aligned `offset`.
    pub fn write_u32(&self, offset: usize, value: u32) {
        // SAFETY: as in `write_u16`.
        unsafe { core::ptr::write_volatile(self.ptr(offset), value.to_le()) };
    }

    /// Reads a little-endian `u32` at an aligned `offset`.
    pub fn read_u32(&self, offset: usize) -> u32 {
        // SAFETY: as in `write_u16`.
        u32::from_le(unsafe { core::ptr::read_volatile(self.ptr(offset)) })
    }

    /// Writes a little-endian `u64` at an aligned `offset`.
    pub fn write_u64(&self, offset: usize, value: u64) {
        // SAFETY: as in `write_u16`.
        unsafe { core::ptr::write_volatile(self.ptr(offset), value.to_le()) };
    }
}

impl Drop for DmaRegion {
    fn drop(&mut self) {
        let _ = memory::free_frames(self.addr, self.frames);
    }
}
