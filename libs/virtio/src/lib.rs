//! # kiln-virtio — the guest side of a virtio-mmio device
//!
//! - [`Transport`]: the seam between drivers and the bus — add queues,
//!   start, notify, acknowledge interrupts, read the config space, name the
//!   interrupt line. [`MmioTransport`] implements it for virtio-mmio: it
//!   finds a device of a given type in the slots
//!   (`kiln_abi::VIRTIO_MMIO_BASE`, then QEMU microvm's) and negotiates
//!   features (virtio 1.x plus what the driver asks for and the device
//!   offers). A virtio-pci transport would be a second implementation.
//! - [`Virtqueue`]: a split virtqueue the driver runs itself — add chains,
//!   pop used ones, notification and interrupt suppression. Used
//!   asynchronously by `kiln-virtio-net` (RX and TX queues).
//! - [`VirtioMmio`]: the simple synchronous use: queue 0 with 8 entries
//!   and a 32 KiB buffer area; [`VirtioMmio::submit`] puts one chain on it,
//!   notifies, and polls until the device is done (`kiln-virtio-blk`,
//!   `kiln-fs-9p`).
//!
//! Registers come from `kiln_rt::hal::mmio`, memory from `kiln_rt::dma`,
//! so there is no `unsafe` here. Limits: split rings only, no indirect
//! descriptors or event index; [`VirtioMmio`] has one request in flight and
//! no interrupts (the embedded VMM completes a request before the notify
//! returns; others get a 2-second deadline; ADR 0007).
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;
use alloc::vec as alloc_vec;

mod queue;
pub use queue::{Buf, MAX_QUEUE_SIZE, Used, Virtqueue};

use kiln_rt::dma::DmaRegion;
use kiln_rt::hal::mmio::MmioPage;

/// `VIRTIO_F_VERSION_1`.
pub const F_VERSION_1: u64 = 1 << 32;
/// Bytes of the buffer area ([`VirtioMmio::buffer`]) a driver may use.
pub const BUFFER_BYTES: usize = 8 * 4096;

const MAGIC: u32 = 0x7472_6976;
const QUEUE_SIZE: u16 = 8;

// Registers (virtio 1.x, MMIO).
const R_MAGIC: u64 = 0x000;
const R_VERSION: u64 = 0x004;
const R_DEVICE_ID: u64 = 0x008;
const R_VENDOR_ID: u64 = 0x00c;
/// The embedded VMM's vendor ID ("KILN").
const KILN_VENDOR_ID: u32 = 0x4b49_4c4e;
const R_DEVICE_FEATURES: u64 = 0x010;
const R_DEVICE_FEATURES_SEL: u64 = 0x014;
const R_DRIVER_FEATURES: u64 = 0x020;
const R_DRIVER_FEATURES_SEL: u64 = 0x024;
const R_QUEUE_SEL: u64 = 0x030;
const R_QUEUE_NUM_MAX: u64 = 0x034;
const R_QUEUE_NUM: u64 = 0x038;
const R_QUEUE_READY: u64 = 0x044;
const R_QUEUE_NOTIFY: u64 = 0x050;
const R_INTERRUPT_STATUS: u64 = 0x060;
const R_INTERRUPT_ACK: u64 = 0x064;
const R_STATUS: u64 = 0x070;
const R_QUEUE_DESC: u64 = 0x080;
const R_QUEUE_DRIVER: u64 = 0x090;
const R_QUEUE_DEVICE: u64 = 0x0a0;
const R_CONFIG: u64 = 0x100;

const ACKNOWLEDGE: u32 = 1;
const DRIVER: u32 = 2;
const DRIVER_OK: u32 = 4;
const FEATURES_OK: u32 = 8;
const FAILED: u32 = 0x80;

/// Why a device could not be set up or a request not completed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VirtioError {
    /// No device of the wanted type in any slot.
    NoDevice,
    /// The device refused a setup step.
    Setup(&'static str),
    /// No frames for the queue and buffers.
    OutOfMemory,
    /// The device did not complete the request in time.
    Timeout,
    /// A chain piece lies outside the buffer area, or too many pieces.
    BadChain,
}

impl core::fmt::Display for VirtioError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NoDevice => f.write_str("no such virtio device"),
            Self::Setup(step) => write!(f, "the virtio device refused setup: {step}"),
            Self::OutOfMemory => f.write_str("no memory for the virtqueue"),
            Self::Timeout => f.write_str("the device did not complete the request within 2 s"),
            Self::BadChain => f.write_str("a request does not fit the virtqueue buffer"),
        }
    }
}

/// One piece of a request: `len` bytes at `offset` of the buffer area.
#[derive(Clone, Copy, Debug)]
pub struct Piece {
    /// Offset in the buffer area.
    pub offset: usize,
    /// Length in bytes.
    pub len: usize,
    /// The device writes it (else it reads it).
    pub device_writes: bool,
}

/// What a driver needs from a virtio transport once features are
/// negotiated: the seam between drivers (`kiln-virtio-net`, and through
/// [`VirtioMmio`] block and 9P) and the bus. [`MmioTransport`] is the
/// virtio-mmio one; a virtio-pci transport would implement the same.
pub trait Transport: Send + Sync {
    /// The features both sides agreed on.
    fn features(&self) -> u64;
    /// Sets up queue `index` with up to `size` entries (before `start`).
    fn add_queue(&self, index: u16, size: u16) -> Result<Virtqueue, VirtioError>;
    /// Tells the device the driver is ready (after its queues are added).
    fn start(&self);
    /// Tells the device queue `queue` has new buffers.
    fn notify(&self, queue: u16);
    /// Reads and acknowledges the interrupt status.
    fn ack_interrupt(&self) -> u32;
    /// Whether interrupts must be acknowledged before they can fire again.
    fn needs_interrupt_ack(&self) -> bool;
    /// The interrupt line (IOAPIC pin) the device raises.
    fn irq_line(&self) -> u8;
    /// Reads the config-space byte at `offset`.
    fn config8(&self, offset: u64) -> u8;
    /// Reads the 32-bit config-space word at `offset`.
    fn config32(&self, offset: u64) -> u32;
}

/// A virtio-mmio device after feature negotiation: queues are added with
/// [`Transport::add_queue`], then [`Transport::start`] makes it live.
#[derive(Debug)]
pub struct MmioTransport {
    regs: Regs,
    features: u64,
}

impl MmioTransport {
    /// Finds the first device of `device_type` and negotiates features:
    /// virtio 1.x (which it must offer) plus those of `wanted` it offers.
    pub fn probe(device_type: u32, wanted: u64) -> Result<Self, VirtioError> {
        Self::find(device_type, 1)?
            .pop()
            .ok_or(VirtioError::NoDevice)
            .and_then(|regs| Self::negotiate(regs, wanted))
    }

    /// Maps the register blocks of up to `most` devices of `device_type`.
    ///
    /// Window pages are claimed in order by the devices already set up
    /// (each keeps its page), so this takes the first page not in use by
    /// a live mapping of this search.
    fn find(device_type: u32, most: usize) -> Result<alloc_vec::Vec<Regs>, VirtioError> {
        let mut found = alloc_vec::Vec::new();
        let first_free = IN_USE.load(core::sync::atomic::Ordering::SeqCst);
        for paddr in kiln_rt::hal::mmio::virtio_candidates() {
            let index = first_free + found.len() as u64;
            if found.len() == most || index >= kiln_abi_slots() {
                break;
            }
            let Ok(page) = MmioPage::map(index, paddr & !0xfff) else {
                continue;
            };
            let regs = Regs {
                page,
                base: paddr & 0xfff,
                paddr,
            };
            if regs.read32(R_MAGIC) == MAGIC && regs.read32(R_DEVICE_ID) == device_type {
                found.push(regs);
            }
        }
        IN_USE.fetch_add(found.len() as u64, core::sync::atomic::Ordering::SeqCst);
        Ok(found)
    }

    fn negotiate(regs: Regs, wanted: u64) -> Result<Self, VirtioError> {
        if regs.read32(R_VERSION) != 2 {
            return Err(VirtioError::Setup(
                "only virtio-mmio version 2 (virtio 1.x) is supported",
            ));
        }
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
        let features = offered & (F_VERSION_1 | wanted);
        regs.write32(R_DRIVER_FEATURES_SEL, 0);
        regs.write32(R_DRIVER_FEATURES, features as u32);
        regs.write32(R_DRIVER_FEATURES_SEL, 1);
        regs.write32(R_DRIVER_FEATURES, (features >> 32) as u32);
        regs.write32(R_STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
        if regs.read32(R_STATUS) & FEATURES_OK == 0 {
            return Err(fail(&regs, "features were not accepted"));
        }
        Ok(Self { regs, features })
    }
}

impl Transport for MmioTransport {
    /// The features both sides agreed on.
    fn features(&self) -> u64 {
        self.features
    }

    /// Whether the device's interrupt must be acknowledged before it can
    /// fire again: QEMU's virtio-mmio line is level-triggered (it stays up
    /// until acknowledged, and the IOAPIC entry is edge-triggered), while
    /// the embedded VMM sends one message per event, so acknowledging
    /// there would only cost two register exits per interrupt.
    fn needs_interrupt_ack(&self) -> bool {
        self.regs.read32(R_VENDOR_ID) != KILN_VENDOR_ID
    }

    /// The interrupt line (IOAPIC pin) the device raises: slot `n` of the
    /// embedded VMM and QEMU microvm's transport `n` both use pin 5 + n.
    fn irq_line(&self) -> u8 {
        let p = self.regs.paddr;
        let n = if p >= kiln_abi::QEMU_MICROVM_VIRTIO_BASE {
            (p - kiln_abi::QEMU_MICROVM_VIRTIO_BASE) / kiln_abi::QEMU_MICROVM_VIRTIO_STRIDE
        } else {
            (p - kiln_abi::VIRTIO_MMIO_BASE) / kiln_abi::PAGE_SIZE
        };
        kiln_abi::VIRTIO_FIRST_IRQ + n as u8
    }

    /// Sets up queue `index` with up to `size` entries (fewer if the device
    /// offers fewer; rounded down to a power of two).
    fn add_queue(&self, index: u16, size: u16) -> Result<Virtqueue, VirtioError> {
        let regs = &self.regs;
        regs.write32(R_QUEUE_SEL, u32::from(index));
        let max = regs.read32(R_QUEUE_NUM_MAX).min(u32::from(size));
        if max == 0 {
            return Err(fail(regs, "a queue the driver needs does not exist"));
        }
        let size = 1u16 << (31 - max.leading_zeros());
        let queue = Virtqueue::new(index, size)?;
        regs.write32(R_QUEUE_NUM, u32::from(size));
        let (desc, avail, used) = queue.addresses();
        for (reg, addr) in [
            (R_QUEUE_DESC, desc),
            (R_QUEUE_DRIVER, avail),
            (R_QUEUE_DEVICE, used),
        ] {
            regs.write32(reg, addr as u32);
            regs.write32(reg + 4, (addr >> 32) as u32);
        }
        regs.write32(R_QUEUE_READY, 1);
        Ok(queue)
    }

    /// Tells the device the driver is ready (after its queues are added).
    fn start(&self) {
        self.regs
            .write32(R_STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK);
    }

    /// Tells the device queue `queue` has new buffers.
    fn notify(&self, queue: u16) {
        self.regs.write32(R_QUEUE_NOTIFY, u32::from(queue));
    }

    /// Reads and acknowledges the interrupt status (bit 0: used buffers,
    /// bit 1: configuration change); call from the interrupt handler.
    fn ack_interrupt(&self) -> u32 {
        let status = self.regs.read32(R_INTERRUPT_STATUS);
        if status != 0 {
            self.regs.write32(R_INTERRUPT_ACK, status);
        }
        status
    }

    /// Reads the 32-bit config-space word at `offset`.
    fn config32(&self, offset: u64) -> u32 {
        self.regs.read32(R_CONFIG + offset)
    }

    /// Reads the config-space byte at `offset`.
    fn config8(&self, offset: u64) -> u8 {
        self.regs.page.read8(self.regs.base + R_CONFIG + offset)
    }
}

fn fail(regs: &Regs, step: &'static str) -> VirtioError {
    regs.write32(R_STATUS, FAILED);
    VirtioError::Setup(step)
}

/// A set-up virtio-mmio device with queue 0, used one request at a time
/// (block and 9P).
pub struct VirtioMmio {
    transport: MmioTransport,
    queue: Virtqueue,
    buffers: DmaRegion,
}

impl VirtioMmio {
    /// Finds the first device of `device_type` and sets it up, accepting
    /// `wanted` features it offers (plus virtio 1.x, which it must).
    pub fn probe(device_type: u32, wanted: u64) -> Result<Self, VirtioError> {
        Self::setup(MmioTransport::probe(device_type, wanted)?)
    }

    /// Sets up every device of `device_type` (as many as there are window
    /// pages for devices), in address order.
    pub fn probe_all(device_type: u32, wanted: u64) -> Result<alloc_vec::Vec<Self>, VirtioError> {
        MmioTransport::find(device_type, kiln_abi_slots() as usize)?
            .into_iter()
            .map(|regs| MmioTransport::negotiate(regs, wanted).and_then(Self::setup))
            .collect()
    }

    fn setup(transport: MmioTransport) -> Result<Self, VirtioError> {
        let queue = transport.add_queue(0, QUEUE_SIZE)?;
        let buffers = DmaRegion::new(BUFFER_BYTES / 4096).map_err(|_| VirtioError::OutOfMemory)?;
        transport.start();
        Ok(Self {
            transport,
            queue,
            buffers,
        })
    }

    /// The features both sides agreed on.
    pub fn features(&self) -> u64 {
        self.transport.features()
    }

    /// Reads the 32-bit config-space word at `offset`.
    pub fn config32(&self, offset: u64) -> u32 {
        self.transport.config32(offset)
    }

    /// Reads the config-space byte at `offset`.
    pub fn config8(&self, offset: u64) -> u8 {
        self.transport.config8(offset)
    }

    /// The buffer area requests are built in.
    pub fn buffer(&self) -> Buffer<'_> {
        Buffer { dma: &self.buffers }
    }

    /// Runs one request made of `pieces`; returns the bytes the device
    /// says it wrote.
    pub fn submit(&mut self, pieces: &[Piece]) -> Result<u32, VirtioError> {
        if pieces.is_empty()
            || pieces.len() > usize::from(self.queue.size())
            || pieces.iter().any(|p| {
                p.offset
                    .checked_add(p.len)
                    .is_none_or(|end| end > BUFFER_BYTES)
            })
        {
            return Err(VirtioError::BadChain);
        }
        let bufs: alloc_vec::Vec<Buf> = pieces
            .iter()
            .map(|p| Buf {
                addr: self.buffers.phys() + p.offset as u64,
                len: p.len as u32,
                device_writes: p.device_writes,
            })
            .collect();
        self.queue.add(&bufs)?;
        self.transport.notify(0);
        let deadline = kiln_rt::hal::time::now_ns() + 2_000_000_000;
        loop {
            // Polling: the interrupt status is left set (its IOAPIC line
            // stays masked), which saves two register exits per request.
            if let Some(used) = self.queue.pop_used() {
                return Ok(used.len);
            }
            if kiln_rt::hal::time::now_ns() > deadline {
                return Err(VirtioError::Timeout);
            }
            core::hint::spin_loop();
        }
    }
}

fn kiln_abi_slots() -> u64 {
    kiln_rt::hal::mmio::VIRTIO_SLOTS
}

/// Device window pages handed out (devices live for the whole run).
static IN_USE: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// A device's registers: `base` bytes into a mapped page (QEMU packs
/// eight 512-byte transports into one page).
#[derive(Debug)]
struct Regs {
    page: MmioPage,
    base: u64,
    /// Guest-physical address of the register block.
    paddr: u64,
}

impl Regs {
    fn read32(&self, offset: u64) -> u32 {
        self.page.read32(self.base + offset)
    }

    fn write32(&self, offset: u64, value: u32) {
        self.page.write32(self.base + offset, value);
    }
}

/// The buffer area of a device (bounds-checked, volatile).
pub struct Buffer<'a> {
    dma: &'a DmaRegion,
}

impl Buffer<'_> {
    /// Writes `bytes` at `offset`.
    pub fn write(&self, offset: usize, bytes: &[u8]) {
        self.dma.write(offset, bytes);
    }

    /// Reads `buf.len()` bytes at `offset`.
    pub fn read(&self, offset: usize, buf: &mut [u8]) {
        self.dma.read(offset, buf);
    }
}
