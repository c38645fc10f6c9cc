//! # kiln-virtio-blk — a virtio-blk driver
//!
//! [`VirtioBlk::probe`] finds the block device among the virtio-mmio
//! slots (through `kiln-virtio`, which negotiates virtio 1.x, flush and
//! read-only and sets up the queue) and reads the capacity.
//! [`VirtioBlk::read`], [`VirtioBlk::write`] and [`VirtioBlk::flush`] then
//! move whole sectors, 4 KiB per request; it is also a
//! `kiln_vfs::BlockDevice` for disk file systems (ext2).
//!
//! Neighbours: `kiln-virtio` below, `kiln-fs-ext2` above, the embedded
//! VMM's device (`kiln_vmm::virtio::block`) at the other end. Limits: one
//! request in flight, polled; no interrupts; VMs only.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

use kiln_virtio::{Piece, VirtioError, VirtioMmio};

/// Bytes per sector.
pub const SECTOR_BYTES: usize = 512;
/// Most bytes one request moves.
pub const MAX_REQUEST_BYTES: usize = 4096;

const DEVICE_TYPE: u32 = 2;
const F_RO: u64 = 1 << 5;
const F_FLUSH: u64 = 1 << 9;

// The buffer area: header + status, then data.
const HEADER: usize = 0;
const STATUS: usize = 16;
const DATA: usize = 4096;

const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;

/// Why the disk could not be set up or a request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlkError {
    /// No block device (start with `kiln run --disk FILE`).
    NoDevice,
    /// The transport failed (setup, memory, timeout).
    Virtio(VirtioError),
    /// The buffer is not a whole number of sectors.
    NotSectorSized(usize),
    /// The request runs past the end of the disk.
    OutOfRange {
        /// First sector asked for.
        sector: u64,
        /// The disk's size in sectors.
        capacity_sectors: u64,
    },
    /// The device answered with an error status (1 = I/O error, which
    /// includes a write to a read-only disk; 2 = unsupported).
    Device {
        /// The request's first sector.
        sector: u64,
        /// The status byte.
        status: u8,
    },
}

impl core::fmt::Display for BlkError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NoDevice => f.write_str("no virtio block device (run with --disk FILE)"),
            Self::Virtio(e) => e.fmt(f),
            Self::NotSectorSized(n) => {
                write!(f, "{n} bytes is not a whole number of 512-byte sectors")
            }
            Self::OutOfRange {
                sector,
                capacity_sectors,
            } => write!(
                f,
                "sector {sector} is past the end of a {capacity_sectors}-sector disk"
            ),
            Self::Device { sector, status: 1 } => {
                write!(f, "I/O error at sector {sector} (or the disk is read-only)")
            }
            Self::Device { sector, status } => {
                write!(f, "the device answered status {status} at sector {sector}")
            }
        }
    }
}

/// A virtio-blk disk.
pub struct VirtioBlk {
    dev: VirtioMmio,
    capacity_sectors: u64,
}

impl VirtioBlk {
    /// Sets up the first virtio block device.
    pub fn probe() -> Result<Self, BlkError> {
        let dev = VirtioMmio::probe(DEVICE_TYPE, F_FLUSH | F_RO).map_err(|e| match e {
            VirtioError::NoDevice => BlkError::NoDevice,
            e => BlkError::Virtio(e),
        })?;
        let capacity_sectors = u64::from(dev.config32(0)) | (u64::from(dev.config32(4)) << 32);
        Ok(Self {
            dev,
            capacity_sectors,
        })
    }

    /// The disk's size in sectors.
    pub fn capacity_sectors(&self) -> u64 {
        self.capacity_sectors
    }

    /// Whether the device says it is read-only (writes will fail).
    pub fn read_only(&self) -> bool {
        self.dev.features() & F_RO != 0
    }

    fn check(&self, sector: u64, bytes: usize) -> Result<(), BlkError> {
        if !bytes.is_multiple_of(SECTOR_BYTES) {
            return Err(BlkError::NotSectorSized(bytes));
        }
        let end = sector.checked_add((bytes / SECTOR_BYTES) as u64);
        if end.is_none_or(|end| end > self.capacity_sectors) {
            return Err(BlkError::OutOfRange {
                sector,
                capacity_sectors: self.capacity_sectors,
            });
        }
        Ok(())
    }

    /// Reads `buf.len()` bytes (whole sectors) from `sector` on.
    pub fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), BlkError> {
        self.check(sector, buf.len())?;
        for (i, chunk) in buf.chunks_mut(MAX_REQUEST_BYTES).enumerate() {
            let at = sector + (i * MAX_REQUEST_BYTES / SECTOR_BYTES) as u64;
            self.request(T_IN, at, chunk.len())?;
            self.dev.buffer().read(DATA, chunk);
        }
        Ok(())
    }

    /// Writes `buf` (whole sectors) from `sector` on.
    pub fn write(&mut self, sector: u64, buf: &[u8]) -> Result<(), BlkError> {
        self.check(sector, buf.len())?;
        for (i, chunk) in buf.chunks(MAX_REQUEST_BYTES).enumerate() {
            let at = sector + (i * MAX_REQUEST_BYTES / SECTOR_BYTES) as u64;
            self.dev.buffer().write(DATA, chunk);
            self.request(T_OUT, at, chunk.len())?;
        }
        Ok(())
    }

    /// Makes completed writes durable (a no-op when the device has no
    /// flush: it then writes through).
    pub fn flush(&mut self) -> Result<(), BlkError> {
        if self.dev.features() & F_FLUSH == 0 {
            return Ok(());
        }
        self.request(T_FLUSH, 0, 0)
    }

    fn sectors(offset: u64, len: usize) -> Result<u64, kiln_vfs::Errno> {
        if !offset.is_multiple_of(SECTOR_BYTES as u64) || !len.is_multiple_of(SECTOR_BYTES) {
            return Err(kiln_vfs::Errno::Einval);
        }
        Ok(offset / SECTOR_BYTES as u64)
    }

    /// Runs one request with `data_len` bytes at `DATA`.
    fn request(&mut self, kind: u32, sector: u64, data_len: usize) -> Result<(), BlkError> {
        let mut header = [0u8; 16];
        header[..4].copy_from_slice(&kind.to_le_bytes());
        header[8..].copy_from_slice(&sector.to_le_bytes());
        let buffer = self.dev.buffer();
        buffer.write(HEADER, &header);
        buffer.write(STATUS, &[0xff]);
        let head = Piece {
            offset: HEADER,
            len: 16,
            device_writes: false,
        };
        let data = Piece {
            offset: DATA,
            len: data_len,
            device_writes: kind == T_IN,
        };
        let status = Piece {
            offset: STATUS,
            len: 1,
            device_writes: true,
        };
        let chain: &[Piece] = if data_len > 0 {
            &[head, data, status]
        } else {
            &[head, status]
        };
        self.dev.submit(chain).map_err(BlkError::Virtio)?;
        let mut code = [0u8; 1];
        self.dev.buffer().read(STATUS, &mut code);
        match code[0] {
            0 => Ok(()),
            s => Err(BlkError::Device { sector, status: s }),
        }
    }
}

/// The disk as the file systems' block device: device errors are `EIO`
/// (`EROFS` on a read-only disk), unaligned requests `EINVAL`.
impl kiln_vfs::BlockDevice for VirtioBlk {
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), kiln_vfs::Errno> {
        let sector = Self::sectors(offset, buf.len())?;
        VirtioBlk::read(self, sector, buf).map_err(|_| kiln_vfs::Errno::Eio)
    }

    fn write(&mut self, offset: u64, buf: &[u8]) -> Result<(), kiln_vfs::Errno> {
        if self.read_only() {
            return Err(kiln_vfs::Errno::Erofs);
        }
        let sector = Self::sectors(offset, buf.len())?;
        VirtioBlk::write(self, sector, buf).map_err(|_| kiln_vfs::Errno::Eio)
    }

    fn flush(&mut self) -> Result<(), kiln_vfs::Errno> {
        VirtioBlk::flush(self).map_err(|_| kiln_vfs::Errno::Eio)
    }

    fn size_bytes(&self) -> u64 {
        self.capacity_sectors * SECTOR_BYTES as u64
    }

    fn read_only(&self) -> bool {
        VirtioBlk::read_only(self)
    }
}
