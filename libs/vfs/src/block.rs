//! The seam between block drivers and disk file systems.

use crate::Errno;

/// Storage addressed in bytes, in whole 512-byte sectors: offsets and
/// lengths are multiples of 512. Drivers (virtio-blk) implement it; disk
/// file systems (ext2) take one.
pub trait BlockDevice: Send {
    /// Reads `buf.len()` bytes at byte `offset`.
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), Errno>;
    /// Writes `buf` at byte `offset`.
    fn write(&mut self, offset: u64, buf: &[u8]) -> Result<(), Errno>;
    /// Makes written data durable.
    fn flush(&mut self) -> Result<(), Errno>;
    /// Size in bytes.
    fn size_bytes(&self) -> u64;
    /// Whether writes will fail (the device says it is read-only).
    fn read_only(&self) -> bool {
        false
    }
}
