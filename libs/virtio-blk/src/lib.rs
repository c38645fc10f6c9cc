//! # kiln-virtio-blk — a virtio-blk driver (virtio-mmio, split queue)
//!
//! [`VirtioBlk::probe`] finds the block device in a virtio-mmio slot (see
//! `kiln_abi::VIRTIO_MMIO_BASE`), negotiates features (virtio 1.x, flush
//! and read-only when offered), sets up one 8-entry split virtqueue and
//! reads the capacity. [`VirtioBlk::read`], [`VirtioBlk::write`] and
//! [`VirtioBlk::flush`] then move whole sectors, 4 KiB per request.
//!
//! Neighbours: `kiln_rt::hal::mmio` maps the registers, `kiln_rt::dma`
//! gives the rings and buffers, so this crate has no `unsafe`. The
//! embedded VMM's device (`kiln_vmm::virtio::block`) is the other end.
//!
//! Limits: one request in flight, completion by polling the used ring
//! (the embedded VMM completes a request before the notify returns; other
//! hypervisors get a 2-second deadline); no interrupts, no indirect
//! descriptors; VMs only.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

use kiln_rt::dma::DmaRegion;
use kiln_rt::hal::mmio::MmioPage;

/// Bytes per sector.
pub const SECTOR_BYTES: usize = 512;
/// Most bytes one request moves.
pub const MAX_REQUEST_BYTES: usize = 4096;

const MAGIC: u32 = 0x7472_6976;
const QUEUE_SIZE: u16 = 8;
const F_RO: u64 = 1 << 5;
const F_FLUSH: u64 = 1 << 9;
const F_VERSION_1: u64 = 1 << 32;

// Registers (virtio 1.x, MMIO).
const R_MAGIC: u64 = 0x000;
const R_VERSION: u64 = 0x004;
const R_DEVICE_ID: u64 = 0x008;
const R_DEVICE_FEATURES: u64 = 0x010;
const R_DEVICE_FEATURES_SEL: u64 = 0x014;
const R_DRIVER_FEATURES: u64 = 0x020;
const R_DRIVER_FEATURES_SEL: u64 = 0x024;
const R_QUEUE_SEL: u64 = 0x030;
const R_QUEUE_NUM_MAX: u64 = 0x034;
const R_QUEUE_NUM: u64 = 0x038;
const R_QUEUE_READY: u64 = 0x044;
const R_QUEUE_NOTIFY: u64 = 0x050;

const R_STATUS: u64 = 0x070;
const R_QUEUE_DESC: u64 = 0x080;
const R_QUEUE_DRIVER: u64 = 0x090;
const R_QUEUE_DEVICE: u64 = 0x0a0;
const R_CONFIG: u64 = 0x100;

// Status bits.
const ACKNOWLEDGE: u32 = 1;
const DRIVER: u32 = 2;
const DRIVER_OK: u32 = 4;
const FEATURES_OK: u32 = 8;
const FAILED: u32 = 0x80;

// The DMA region: frame 0 the queue, frame 1 header + status, frame 2 data.
const DESC: usize = 0;
const AVAIL: usize = 128;
const USED: usize = 256;
const HEADER: usize = 4096;
const STATUS: usize = HEADER + 16;
const DATA: usize = 8192;

const DESC_F_NEXT: u16 = 1;
const DESC_F_WRITE: u16 = 2;

const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;

/// Why the disk could not be set up or a request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlkError {
    /// Nothing answers in the slot (start with `kiln run --disk FILE`).
    NoDevice,
    /// The slot holds another kind of virtio device.
    NotBlock(u32),
    /// The device refused a setup step.
    Setup(&'static str),
    /// No frames for the rings and buffers.
    OutOfMemory,
    /// The registers could not be mapped (errno).
    Map(i64),
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
    /// The device did not complete the request in time.
    Timeout,
}

impl core::fmt::Display for BlkError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NoDevice => f.write_str("no virtio device in the slot (run with --disk FILE)"),
            Self::NotBlock(id) => write!(f, "the virtio device is type {id}, not a block device"),
            Self::Setup(step) => write!(f, "the block device refused setup: {step}"),
            Self::OutOfMemory => f.write_str("no memory for the virtqueue"),
            Self::Map(e) => write!(f, "cannot map the device registers (errno {e})"),
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
            Self::Timeout => f.write_str("the device did not complete the request within 2 s"),
        }
    }
}

/// A virtio-blk disk.
pub struct VirtioBlk {
    regs: MmioPage,
    dma: DmaRegion,
    queue_size: u16,
    next_avail: u16,
    seen_used: u16,
    capacity_sectors: u64,
    features: u64,
}

impl VirtioBlk {
    /// Sets up the block device in virtio-mmio slot `slot`.
    pub fn probe(slot: u64) -> Result<Self, BlkError> {
        let paddr = kiln_rt::hal::mmio::virtio_paddr(slot);
        let regs = MmioPage::map(slot, paddr).map_err(|e| BlkError::Map(e.0))?;
        if regs.read32(R_MAGIC) != MAGIC {
            return Err(BlkError::NoDevice);
        }
        if regs.read32(R_VERSION) != 2 {
            return Err(BlkError::Setup(
                "only virtio-mmio version 2 (virtio 1.x) is supported",
            ));
        }
        let id = regs.read32(R_DEVICE_ID);
        if id != 2 {
            return Err(BlkError::NotBlock(id));
        }
        let fail = |regs: &MmioPage, step| {
            regs.write32(R_STATUS, FAILED);
            BlkError::Setup(step)
        };
        regs.write32(R_STATUS, 0);
        regs.write32(R_STATUS, ACKNOWLEDGE);
        regs.write32(R_STATUS, ACKNOWLEDGE | DRIVER);
        regs.write32(R_DEVICE_FEATURES_SEL, 0);
        let low = u64::from(regs.read32(R_DEVICE_FEATURES));
        regs.write32(R_DEVICE_FEATURES_SEL, 1);
        let offered = low | (u64::from(regs.read32(R_DEVICE_FEATURES)) << 32);
        if offered & F_VERSION_1 == 0 {
            return Err(fail(&regs, "the device is not virtio 1.x"));
        }
        let features = offered & (F_VERSION_1 | F_FLUSH | F_RO);
        regs.write32(R_DRIVER_FEATURES_SEL, 0);
        regs.write32(R_DRIVER_FEATURES, features as u32);
        regs.write32(R_DRIVER_FEATURES_SEL, 1);
        regs.write32(R_DRIVER_FEATURES, (features >> 32) as u32);
        regs.write32(R_STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
        if regs.read32(R_STATUS) & FEATURES_OK == 0 {
            return Err(fail(&regs, "features were not accepted"));
        }
        regs.write32(R_QUEUE_SEL, 0);
        let max = regs.read32(R_QUEUE_NUM_MAX);
        if max == 0 {
            return Err(fail(&regs, "queue 0 does not exist"));
        }
        let queue_size = QUEUE_SIZE.min(max as u16);
        let dma = DmaRegion::new(3).map_err(|_| BlkError::OutOfMemory)?;
        regs.write32(R_QUEUE_NUM, u32::from(queue_size));
        for (reg, offset) in [
            (R_QUEUE_DESC, DESC),
            (R_QUEUE_DRIVER, AVAIL),
            (R_QUEUE_DEVICE, USED),
        ] {
            let addr = dma.phys() + offset as u64;
            regs.write32(reg, addr as u32);
            regs.write32(reg + 4, (addr >> 32) as u32);
        }
        regs.write32(R_QUEUE_READY, 1);
        regs.write32(R_STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK);
        let capacity_sectors =
            u64::from(regs.read32(R_CONFIG)) | (u64::from(regs.read32(R_CONFIG + 4)) << 32);
        Ok(Self {
            regs,
            dma,
            queue_size,
            next_avail: 0,
            seen_used: 0,
            capacity_sectors,
            features,
        })
    }

    /// The disk's size in sectors.
    pub fn capacity_sectors(&self) -> u64 {
        self.capacity_sectors
    }

    /// Whether the device says it is read-only (writes will fail).
    pub fn read_only(&self) -> bool {
        self.features & F_RO != 0
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
            self.dma.read(DATA, chunk);
        }
        Ok(())
    }

    /// Writes `buf` (whole sectors) from `sector` on.
    pub fn write(&mut self, sector: u64, buf: &[u8]) -> Result<(), BlkError> {
        self.check(sector, buf.len())?;
        for (i, chunk) in buf.chunks(MAX_REQUEST_BYTES).enumerate() {
            let at = sector + (i * MAX_REQUEST_BYTES / SECTOR_BYTES) as u64;
            self.dma.write(DATA, chunk);
            self.request(T_OUT, at, chunk.len())?;
        }
        Ok(())
    }

    /// Makes completed writes durable (a no-op when the device has no
    /// flush: it then writes through).
    pub fn flush(&mut self) -> Result<(), BlkError> {
        if self.features & F_FLUSH == 0 {
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

    fn descriptor(&self, index: usize, offset: usize, len: usize, flags: u16, next: u16) {
        let at = DESC + index * 16;
        self.dma.write_u64(at, self.dma.phys() + offset as u64);
        self.dma.write_u32(at + 8, len as u32);
        self.dma.write_u16(at + 12, flags);
        self.dma.write_u16(at + 14, next);
    }

    /// Runs one request with `data_len` bytes at `DATA` and waits for it.
    fn request(&mut self, kind: u32, sector: u64, data_len: usize) -> Result<(), BlkError> {
        self.dma.write_u32(HEADER, kind);
        self.dma.write_u32(HEADER + 4, 0);
        self.dma.write_u64(HEADER + 8, sector);
        self.dma.write(STATUS, &[0xff]);
        if data_len > 0 {
            let data_flags = DESC_F_NEXT | if kind == T_IN { DESC_F_WRITE } else { 0 };
            self.descriptor(0, HEADER, 16, DESC_F_NEXT, 1);
            self.descriptor(1, DATA, data_len, data_flags, 2);
        } else {
            self.descriptor(0, HEADER, 16, DESC_F_NEXT, 2);
        }
        self.descriptor(2, STATUS, 1, DESC_F_WRITE, 0);
        let slot = usize::from(self.next_avail % self.queue_size);
        self.dma.write_u16(AVAIL + 4 + slot * 2, 0);
        self.next_avail = self.next_avail.wrapping_add(1);
        core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
        self.dma.write_u16(AVAIL + 2, self.next_avail);
        self.regs.write32(R_QUEUE_NOTIFY, 0);
        let deadline = kiln_rt::hal::time::now_ns() + 2_000_000_000;
        while self.dma.read_u16(USED + 2) == self.seen_used {
            if kiln_rt::hal::time::now_ns() > deadline {
                return Err(BlkError::Timeout);
            }
            core::hint::spin_loop();
        }
        // Polling: the interrupt status is left set (its IOAPIC line stays
        // masked), which saves two register exits per request.
        self.seen_used = self.seen_used.wrapping_add(1);
        let mut status = [0u8; 1];
        self.dma.read(STATUS, &mut status);
        match status[0] {
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
