//! # kiln-virtio-net — the virtio-net driver
//!
//! [`VirtioNet::probe`] finds a virtio-net device (type 1), negotiates
//! `VERSION_1`, `MAC` and `MRG_RXBUF` where offered, sets up the receive
//! queue (0) full of 2 KiB buffers and the transmit queue (1), and routes
//! the device's interrupt line to an [`Event`]. It implements
//! [`kiln_netdev::NetDevice`] for `kiln-net`:
//!
//! - receive: pops a used RX chain, copies the frame out past the 12-byte
//!   `virtio_net_hdr_v1` (joining `num_buffers` buffers when the device
//!   merged them), and puts the buffers back;
//! - transmit: reclaims finished TX buffers, copies header + frame into a
//!   free one, and queues it; [`NetDevice::flush`] notifies the device once
//!   per batch, and only when it asked to be notified (`NO_NOTIFY`);
//! - interrupts are suppressed while the stack polls and re-enabled by
//!   [`NetDevice::arm_wakeup`] before it sleeps.
//!
//! Neighbours: `kiln-virtio` (transport, virtqueues), `kiln-netdev` (the
//! trait), the embedded VMM's and QEMU's virtio-net devices. Limits: one
//! device per image; no checksum or segmentation offload is negotiated
//! (frames carry full checksums: the device never has to finish them);
//! no control queue.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::vec::Vec;

use kiln_netdev::{MAX_FRAME_BYTES, NetDevice};
use kiln_rt::dma::DmaRegion;
use kiln_rt::thread::Event;
use kiln_virtio::{Buf, Transport, VirtioError, Virtqueue};

/// The virtio device type of a network card.
pub const DEVICE_TYPE: u32 = 1;
/// `VIRTIO_NET_F_MAC`: the device has a MAC address in its config space.
pub const F_MAC: u64 = 1 << 5;
/// `VIRTIO_NET_F_MRG_RXBUF`: a received frame may span several buffers.
pub const F_MRG_RXBUF: u64 = 1 << 15;

/// Bytes of `virtio_net_hdr_v1` before every frame.
pub const HEADER_BYTES: usize = 12;
/// Bytes of each RX and TX buffer (header + the largest frame fits).
const BUFFER_BYTES: usize = 2048;
/// Entries wanted in each queue.
const QUEUE_ENTRIES: u16 = 256;
const RX: u16 = 0;
const TX: u16 = 1;

/// Why no virtio-net device could be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VirtioNetError {
    /// The transport or queues failed.
    Virtio(VirtioError),
    /// The interrupt could not be routed.
    Interrupt,
}

impl core::fmt::Display for VirtioNetError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Virtio(e) => write!(f, "virtio-net: {e}"),
            Self::Interrupt => f.write_str("virtio-net: cannot route its interrupt"),
        }
    }
}

/// The device's interrupt event (one device per image).
static EVENT: spin::Once<Option<Event>> = spin::Once::new();
/// The device's transport (shared with the interrupt handler, which
/// acknowledges: QEMU's line is level-triggered and stays up until then).
static TRANSPORT: spin::Once<Transport> = spin::Once::new();

/// Whether the handler acknowledges (see `Transport::needs_interrupt_ack`).
static NEEDS_ACK: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(true);

fn on_interrupt(_: &mut kiln_rt::hal::upcall::UpcallFrame) {
    if NEEDS_ACK.load(core::sync::atomic::Ordering::Relaxed)
        && let Some(t) = TRANSPORT.get()
    {
        t.ack_interrupt();
    }
    if let Some(Some(e)) = EVENT.get() {
        e.signal();
    }
}

/// A queue's buffers: `count` buffers of [`BUFFER_BYTES`] in one region.
struct Buffers {
    region: DmaRegion,
}

impl Buffers {
    fn new(count: usize) -> Result<Self, VirtioNetError> {
        let bytes = count * BUFFER_BYTES;
        let region = DmaRegion::new(bytes.div_ceil(4096))
            .map_err(|_| VirtioNetError::Virtio(VirtioError::OutOfMemory))?;
        Ok(Self { region })
    }

    fn buf(&self, index: usize, len: usize, device_writes: bool) -> Buf {
        Buf {
            addr: self.region.phys() + (index * BUFFER_BYTES) as u64,
            len: len as u32,
            device_writes,
        }
    }
}

/// A virtio-net device, set up.
pub struct VirtioNet {
    transport: &'static Transport,
    rx: Virtqueue,
    tx: Virtqueue,
    rx_buffers: Buffers,
    tx_buffers: Buffers,
    /// The buffer each RX head descriptor points at.
    rx_buffer_of: Vec<u16>,
    /// The buffer each TX head descriptor points at.
    tx_buffer_of: Vec<u16>,
    /// TX buffers not in flight.
    tx_free: Vec<u16>,
    mac: [u8; 6],
    mergeable: bool,
    rx_refilled: bool,
    tx_queued: bool,
    event: &'static Event,
}

impl VirtioNet {
    /// Finds and sets up the first virtio-net device.
    pub fn probe() -> Result<Self, VirtioNetError> {
        if TRANSPORT.get().is_some() {
            return Err(VirtioNetError::Virtio(VirtioError::NoDevice));
        }
        let transport =
            Transport::probe(DEVICE_TYPE, F_MAC | F_MRG_RXBUF).map_err(VirtioNetError::Virtio)?;
        let transport: &'static Transport = TRANSPORT.call_once(|| transport);
        let rx = transport
            .add_queue(RX, QUEUE_ENTRIES)
            .map_err(VirtioNetError::Virtio)?;
        let tx = transport
            .add_queue(TX, QUEUE_ENTRIES)
            .map_err(VirtioNetError::Virtio)?;
        let features = transport.features();
        let mac = if features & F_MAC != 0 {
            core::array::from_fn(|i| transport.config8(i as u64))
        } else {
            kiln_netdev::channel::MAC
        };
        let rx_buffers = Buffers::new(usize::from(rx.size()))?;
        let tx_buffers = Buffers::new(usize::from(tx.size()))?;
        let event = EVENT
            .call_once(|| Event::new().ok())
            .as_ref()
            .ok_or(VirtioNetError::Interrupt)?;
        let line = transport.irq_line();
        NEEDS_ACK.store(
            transport.needs_interrupt_ack(),
            core::sync::atomic::Ordering::Relaxed,
        );
        let mut dev = Self {
            rx_buffer_of: alloc::vec![0; usize::from(rx.size())],
            tx_buffer_of: alloc::vec![0; usize::from(tx.size())],
            tx_free: (0..tx.size()).rev().collect(),
            transport,
            rx,
            tx,
            rx_buffers,
            tx_buffers,
            mac,
            mergeable: features & F_MRG_RXBUF != 0,
            rx_refilled: false,
            tx_queued: false,
            event,
        };
        for i in 0..dev.rx.size() {
            dev.post_rx(i)?;
        }
        // Finished transmissions are reclaimed when sending; the stack
        // polls while busy.
        dev.tx.suppress_interrupts(true);
        dev.rx.suppress_interrupts(true);
        dev.transport.start();
        dev.transport.notify(RX);
        kiln_rt::hal::irq::register(line, on_interrupt).map_err(|_| VirtioNetError::Interrupt)?;
        Ok(dev)
    }

    /// Puts RX buffer `index` on the receive queue.
    fn post_rx(&mut self, index: u16) -> Result<(), VirtioNetError> {
        let buf = self.rx_buffers.buf(usize::from(index), BUFFER_BYTES, true);
        let head = self.rx.add(&[buf]).map_err(VirtioNetError::Virtio)?;
        self.rx_buffer_of[usize::from(head)] = index;
        self.rx_refilled = true;
        Ok(())
    }

    /// Takes the next used RX buffer: (buffer index, bytes written).
    fn pop_rx(&mut self) -> Option<(u16, usize)> {
        let used = self.rx.pop_used()?;
        let index = self.rx_buffer_of[usize::from(used.head)];
        Some((index, (used.len as usize).min(BUFFER_BYTES)))
    }

    fn reclaim_tx(&mut self) {
        while let Some(used) = self.tx.pop_used() {
            self.tx_free.push(self.tx_buffer_of[usize::from(used.head)]);
        }
    }
}

impl NetDevice for VirtioNet {
    fn mac(&self) -> [u8; 6] {
        self.mac
    }

    fn receive(&mut self, buf: &mut [u8]) -> Option<usize> {
        loop {
            let (index, len) = self.pop_rx()?;
            let region = &self.rx_buffers.region;
            let base = usize::from(index) * BUFFER_BYTES;
            let mut header = [0u8; HEADER_BYTES];
            region.read(base, &mut header);
            let extra = if self.mergeable {
                u16::from_le_bytes([header[10], header[11]]).saturating_sub(1)
            } else {
                0
            };
            let mut total = 0usize;
            let mut fits = true;
            let first = len.saturating_sub(HEADER_BYTES);
            if let Some(dst) = buf.get_mut(..first) {
                region.read(base + HEADER_BYTES, dst);
                total = first;
            } else {
                fits = false;
            }
            let _ = self.post_rx(index);
            // Merged buffers carry the rest of the frame, without headers.
            for _ in 0..extra {
                let Some((more, more_len)) = self.pop_rx() else {
                    fits = false;
                    break;
                };
                let at = usize::from(more) * BUFFER_BYTES;
                if fits && let Some(dst) = buf.get_mut(total..total + more_len) {
                    self.rx_buffers.region.read(at, dst);
                    total += more_len;
                } else {
                    fits = false;
                }
                let _ = self.post_rx(more);
            }
            if fits && total > 0 {
                return Some(total);
            }
            // Empty or oversized: dropped; try the next one.
        }
    }

    fn transmit(&mut self, frame: &[u8]) -> bool {
        if frame.len() > MAX_FRAME_BYTES.max(BUFFER_BYTES - HEADER_BYTES) {
            return false;
        }
        self.reclaim_tx();
        let Some(index) = self.tx_free.pop() else {
            return false;
        };
        let base = usize::from(index) * BUFFER_BYTES;
        let region = &self.tx_buffers.region;
        region.write(base, &[0u8; HEADER_BYTES]);
        region.write(base + HEADER_BYTES, frame);
        let buf = self
            .tx_buffers
            .buf(usize::from(index), HEADER_BYTES + frame.len(), false);
        match self.tx.add(&[buf]) {
            Ok(head) => {
                self.tx_buffer_of[usize::from(head)] = index;
                self.tx_queued = true;
                true
            }
            Err(_) => {
                self.tx_free.push(index);
                false
            }
        }
    }

    fn flush(&mut self) {
        if core::mem::take(&mut self.tx_queued) && self.tx.should_notify() {
            self.transport.notify(TX);
        }
        if core::mem::take(&mut self.rx_refilled) && self.rx.should_notify() {
            self.transport.notify(RX);
        }
    }

    fn arm_wakeup(&mut self) -> bool {
        self.rx.suppress_interrupts(false);
        !self.rx.has_used()
    }

    fn disarm_wakeup(&mut self) {
        self.rx.suppress_interrupts(true);
    }

    fn wakeup(&self) -> &'static Event {
        self.event
    }
}
