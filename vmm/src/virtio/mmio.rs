//! The virtio-mmio transport (virtio 1.x, "version 2" register layout).
//!
//! [`MmioTransport`] answers the driver's register reads and writes at
//! offsets within its 4 KiB window: identification, feature negotiation
//! (the driver may accept only what the device offers; `FEATURES_OK` is
//! refused otherwise), queue setup, notification, interrupt status and
//! acknowledgement, device status (0 resets), and the device's config
//! space from 0x100. Accesses to other offsets or of odd widths read zero
//! and are ignored, as the spec asks of a device.

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;

use super::VirtioDevice;

/// Bytes of MMIO space one device occupies.
pub const WINDOW_BYTES: u64 = 0x1000;
/// "virt" in little endian.
pub const MAGIC: u32 = 0x7472_6976;
/// The modern register layout.
pub const VERSION: u32 = 2;
/// Kiln's vendor ID in the transport ("KILN" would not fit a PCI ID; any
/// value is allowed for MMIO).
pub const VENDOR_ID: u32 = 0x4b49_4c4e;

/// Register offsets.
#[allow(missing_docs, reason = "the names are the spec's")]
pub mod reg {
    pub const MAGIC: u64 = 0x000;
    pub const VERSION: u64 = 0x004;
    pub const DEVICE_ID: u64 = 0x008;
    pub const VENDOR_ID: u64 = 0x00c;
    pub const DEVICE_FEATURES: u64 = 0x010;
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    pub const DRIVER_FEATURES: u64 = 0x020;
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    pub const QUEUE_SEL: u64 = 0x030;
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    pub const QUEUE_NUM: u64 = 0x038;
    pub const QUEUE_READY: u64 = 0x044;
    pub const QUEUE_NOTIFY: u64 = 0x050;
    pub const INTERRUPT_STATUS: u64 = 0x060;
    pub const INTERRUPT_ACK: u64 = 0x064;
    pub const STATUS: u64 = 0x070;
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    pub const QUEUE_DESC_HIGH: u64 = 0x084;
    pub const QUEUE_DRIVER_LOW: u64 = 0x090;
    pub const QUEUE_DRIVER_HIGH: u64 = 0x094;
    pub const QUEUE_DEVICE_LOW: u64 = 0x0a0;
    pub const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
    pub const CONFIG_GENERATION: u64 = 0x0fc;
    pub const CONFIG: u64 = 0x100;
}

/// Device status bits.
#[allow(missing_docs, reason = "the names are the spec's")]
pub mod device_status {
    pub const ACKNOWLEDGE: u32 = 1;
    pub const DRIVER: u32 = 2;
    pub const DRIVER_OK: u32 = 4;
    pub const FEATURES_OK: u32 = 8;
    pub const FAILED: u32 = 0x80;
}

/// Interrupt status: the device used buffers.
pub const INT_USED_BUFFER: u32 = 1;

/// A device behind its MMIO registers.
pub struct MmioTransport<D> {
    device: D,
    queues: Vec<Queue>,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    status: u32,
    interrupt_status: std::sync::Arc<std::sync::atomic::AtomicU32>,
    raise: std::sync::Arc<dyn Fn() + Send + Sync>,
}

impl<D: VirtioDevice> MmioTransport<D> {
    /// Puts `device` behind a fresh register block whose interrupt line
    /// nothing raises (the caller raises it when `write` says so).
    pub fn new(device: D) -> Self {
        Self::with_line(device, std::sync::Arc::new(|| {}))
    }

    /// Puts `device` behind a fresh register block; `raise` raises its
    /// interrupt line (for devices that interrupt from their own thread).
    pub fn with_line(device: D, raise: std::sync::Arc<dyn Fn() + Send + Sync>) -> Self {
        let queues = device
            .queue_max_sizes()
            .iter()
            .filter_map(|max| Queue::new(*max).ok())
            .collect();
        Self {
            device,
            queues,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            status: 0,
            interrupt_status: Default::default(),
            raise,
        }
    }

    /// The device model.
    pub fn device(&self) -> &D {
        &self.device
    }

    /// The device status the driver set.
    pub fn status(&self) -> u32 {
        self.status
    }

    /// Whether the interrupt line should be asserted.
    pub fn interrupt_pending(&self) -> bool {
        self.interrupt_status
            .load(std::sync::atomic::Ordering::SeqCst)
            != 0
    }

    fn reset(&mut self) {
        for q in &mut self.queues {
            q.reset();
        }
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.queue_sel = 0;
        self.status = 0;
        self.interrupt_status
            .store(0, std::sync::atomic::Ordering::SeqCst);
        self.device.reset();
    }

    fn selected_queue(&mut self) -> Option<&mut Queue> {
        // Queues are configured only before DRIVER_OK.
        if self.status & device_status::DRIVER_OK != 0 {
            return None;
        }
        self.queues.get_mut(self.queue_sel as usize)
    }

    /// A driver read of `data.len()` bytes at `offset`.
    pub fn read(&self, offset: u64, data: &mut [u8]) {
        if offset >= reg::CONFIG {
            self.device.read_config(offset - reg::CONFIG, data);
            return;
        }
        if data.len() != 4 {
            data.fill(0);
            return;
        }
        let queue = self.queues.get(self.queue_sel as usize);
        let value = match offset {
            reg::MAGIC => MAGIC,
            reg::VERSION => VERSION,
            reg::DEVICE_ID => self.device.device_type(),
            reg::VENDOR_ID => VENDOR_ID,
            reg::DEVICE_FEATURES => match self.device_features_sel {
                0 => self.device.features() as u32,
                1 => (self.device.features() >> 32) as u32,
                _ => 0,
            },
            reg::QUEUE_NUM_MAX => queue.map_or(0, |q| u32::from(q.max_size())),
            reg::QUEUE_READY => queue.map_or(0, |q| u32::from(q.ready())),
            reg::INTERRUPT_STATUS => self
                .interrupt_status
                .load(std::sync::atomic::Ordering::SeqCst),
            reg::STATUS => self.status,
            reg::CONFIG_GENERATION => 0,
            _ => 0,
        };
        data.copy_from_slice(&value.to_le_bytes());
    }

    /// A driver write at `offset`; returns whether the interrupt line
    /// should now be raised (the device used buffers).
    pub fn write(&mut self, offset: u64, data: &[u8], mem: &GuestMemoryMmap) -> bool {
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            return false; // config space is read-only here; odd widths ignored
        };
        let value = u32::from_le_bytes(bytes);
        match offset {
            reg::DEVICE_FEATURES_SEL => self.device_features_sel = value,
            reg::DRIVER_FEATURES_SEL => self.driver_features_sel = value,
            reg::DRIVER_FEATURES if self.status & device_status::FEATURES_OK == 0 => {
                match self.driver_features_sel {
                    0 => {
                        self.driver_features =
                            (self.driver_features & !0xffff_ffff) | u64::from(value)
                    }
                    1 => {
                        self.driver_features =
                            (self.driver_features & 0xffff_ffff) | (u64::from(value) << 32)
                    }
                    _ => {}
                }
            }
            reg::QUEUE_SEL => self.queue_sel = value,
            reg::QUEUE_NUM => {
                if let Some(q) = self.selected_queue() {
                    q.set_size(value as u16);
                }
            }
            reg::QUEUE_READY => {
                if let Some(q) = self.selected_queue() {
                    q.set_ready(value == 1);
                }
            }
            reg::QUEUE_DESC_LOW
            | reg::QUEUE_DESC_HIGH
            | reg::QUEUE_DRIVER_LOW
            | reg::QUEUE_DRIVER_HIGH
            | reg::QUEUE_DEVICE_LOW
            | reg::QUEUE_DEVICE_HIGH => {
                if let Some(q) = self.selected_queue() {
                    let (low, high) = if offset & 4 == 0 {
                        (Some(value), None)
                    } else {
                        (None, Some(value))
                    };
                    match offset & !4 {
                        reg::QUEUE_DESC_LOW => q.set_desc_table_address(low, high),
                        reg::QUEUE_DRIVER_LOW => q.set_avail_ring_address(low, high),
                        _ => q.set_used_ring_address(low, high),
                    }
                }
            }
            reg::QUEUE_NOTIFY => return self.notify(value as usize, mem),
            reg::INTERRUPT_ACK => {
                self.interrupt_status
                    .fetch_and(!value, std::sync::atomic::Ordering::SeqCst);
            }
            reg::STATUS => self.set_status(value, mem),
            _ => {}
        }
        false
    }

    fn set_status(&mut self, value: u32, mem: &GuestMemoryMmap) {
        if value == 0 {
            self.reset();
            return;
        }
        let mut value = value;
        if value & device_status::FEATURES_OK != 0 && self.status & device_status::FEATURES_OK == 0
        {
            // Only a subset of what the device offers, and a modern driver.
            let offered = self.device.features();
            let acceptable = self.driver_features & !offered == 0
                && self.driver_features & super::F_VERSION_1 != 0;
            if !acceptable {
                value &= !device_status::FEATURES_OK;
            }
        }
        let activating = value & device_status::DRIVER_OK != 0
            && self.status & device_status::DRIVER_OK == 0
            && value & device_status::FEATURES_OK != 0;
        self.status = value;
        if activating {
            let interrupt =
                super::Interrupt::new(self.interrupt_status.clone(), self.raise.clone());
            self.device.activate(&self.queues, mem, interrupt);
        }
    }

    fn notify(&mut self, index: usize, mem: &GuestMemoryMmap) -> bool {
        if self.status & device_status::DRIVER_OK == 0 || self.status & device_status::FAILED != 0 {
            return false;
        }
        let Some(queue) = self.queues.get_mut(index) else {
            return false;
        };
        if !queue.is_valid(mem) {
            return false;
        }
        if self.device.process_queue(index, queue, mem) {
            self.interrupt_status
                .fetch_or(INT_USED_BUFFER, std::sync::atomic::Ordering::SeqCst);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::block::{self, Block};
    use virtio_queue::desc::RawDescriptor;
    use virtio_queue::desc::split::Descriptor;
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestAddress};

    fn read32<D: VirtioDevice>(t: &MmioTransport<D>, offset: u64) -> u32 {
        let mut b = [0u8; 4];
        t.read(offset, &mut b);
        u32::from_le_bytes(b)
    }

    fn write32<D: VirtioDevice>(
        t: &mut MmioTransport<D>,
        mem: &GuestMemoryMmap,
        offset: u64,
        v: u32,
    ) -> bool {
        t.write(offset, &v.to_le_bytes(), mem)
    }

    fn setup() -> (
        tempfile::NamedTempFile,
        MmioTransport<Block>,
        GuestMemoryMmap,
    ) {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), vec![0x5a; 4096]).unwrap();
        let t = MmioTransport::new(Block::open(f.path(), false).unwrap());
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        (f, t, mem)
    }

    /// The driver side of device initialisation (virtio 1.x §3.1.1);
    /// returns whether FEATURES_OK stuck.
    fn negotiate(t: &mut MmioTransport<Block>, mem: &GuestMemoryMmap, features: u64) -> bool {
        use device_status::*;
        write32(t, mem, reg::STATUS, 0);
        write32(t, mem, reg::STATUS, ACKNOWLEDGE);
        write32(t, mem, reg::STATUS, ACKNOWLEDGE | DRIVER);
        write32(t, mem, reg::DRIVER_FEATURES_SEL, 0);
        write32(t, mem, reg::DRIVER_FEATURES, features as u32);
        write32(t, mem, reg::DRIVER_FEATURES_SEL, 1);
        write32(t, mem, reg::DRIVER_FEATURES, (features >> 32) as u32);
        write32(t, mem, reg::STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
        read32(t, reg::STATUS) & FEATURES_OK != 0
    }

    #[test]
    fn identifies_as_a_modern_block_device_with_its_capacity() {
        let (_f, t, _mem) = setup();
        assert_eq!(read32(&t, reg::MAGIC), MAGIC);
        assert_eq!(read32(&t, reg::VERSION), 2);
        assert_eq!(read32(&t, reg::DEVICE_ID), block::DEVICE_TYPE);
        assert_eq!(read32(&t, reg::QUEUE_NUM_MAX), u32::from(block::QUEUE_SIZE));
        assert_eq!(read32(&t, reg::CONFIG), 8, "4096 bytes = 8 sectors");
        let mut one = [0u8; 1];
        t.read(reg::MAGIC, &mut one);
        assert_eq!(one, [0], "odd-width register reads give zero");
    }

    #[test]
    fn features_the_device_does_not_offer_are_refused() {
        let (_f, mut t, mem) = setup();
        assert!(!negotiate(
            &mut t,
            &mem,
            crate::virtio::F_VERSION_1 | block::F_RO
        ));
        assert!(!negotiate(&mut t, &mem, block::F_FLUSH), "a legacy driver");
        assert!(negotiate(
            &mut t,
            &mem,
            crate::virtio::F_VERSION_1 | block::F_FLUSH
        ));
    }

    #[test]
    fn a_notify_runs_the_queue_and_raises_the_interrupt_until_acked() {
        let (f, mut t, mem) = setup();
        assert!(negotiate(&mut t, &mem, crate::virtio::F_VERSION_1));
        let vq = MockSplitQueue::new(&mem, 16);
        write32(&mut t, &mem, reg::QUEUE_SEL, 0);
        write32(&mut t, &mem, reg::QUEUE_NUM, 16);
        for (low, addr) in [
            (reg::QUEUE_DESC_LOW, vq.desc_table_addr()),
            (reg::QUEUE_DRIVER_LOW, vq.avail_addr()),
            (reg::QUEUE_DEVICE_LOW, vq.used_addr()),
        ] {
            write32(&mut t, &mem, low, addr.0 as u32);
            write32(&mut t, &mem, low + 4, (addr.0 >> 32) as u32);
        }
        write32(&mut t, &mem, reg::QUEUE_READY, 1);
        // A notify before DRIVER_OK does nothing.
        assert!(!write32(&mut t, &mem, reg::QUEUE_NOTIFY, 0));
        use device_status::*;
        write32(
            &mut t,
            &mem,
            reg::STATUS,
            ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK,
        );
        // Write sector 1 with 0x11s.
        mem.write_obj(block::request::OUT, GuestAddress(0x8000))
            .unwrap();
        mem.write_obj(1u64, GuestAddress(0x8008)).unwrap();
        mem.write_slice(&[0x11; 512], GuestAddress(0x9000)).unwrap();
        vq.add_desc_chains(
            &[
                RawDescriptor::from(Descriptor::new(0x8000, 16, 1, 1)),
                RawDescriptor::from(Descriptor::new(0x9000, 512, 1, 2)),
                RawDescriptor::from(Descriptor::new(0xf000, 1, 2, 0)),
            ],
            0,
        )
        .unwrap();
        assert!(write32(&mut t, &mem, reg::QUEUE_NOTIFY, 0));
        assert!(t.interrupt_pending());
        assert_eq!(read32(&t, reg::INTERRUPT_STATUS), INT_USED_BUFFER);
        assert_eq!(
            mem.read_obj::<u8>(GuestAddress(0xf000)).unwrap(),
            block::status::OK
        );
        let disk = std::fs::read(f.path()).unwrap();
        assert_eq!(&disk[512..1024], &[0x11; 512][..]);
        assert_eq!(disk[0], 0x5a);
        write32(&mut t, &mem, reg::INTERRUPT_ACK, INT_USED_BUFFER);
        assert!(!t.interrupt_pending());
        // Queue registers are frozen after DRIVER_OK; a reset clears all.
        write32(&mut t, &mem, reg::QUEUE_NUM, 2);
        write32(&mut t, &mem, reg::STATUS, 0);
        assert_eq!(read32(&t, reg::STATUS), 0);
        assert_eq!(read32(&t, reg::QUEUE_READY), 0);
    }
}
