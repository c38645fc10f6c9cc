//! # kiln-virtio-net — the virtio-net driver
//!
//! [`VirtioNet::probe`] finds a virtio-net device (type 1), negotiates
//! `VERSION_1`, `MAC`, `MRG_RXBUF`, `CSUM` and `GUEST_CSUM` where offered, sets up the receive
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
//! trait), the embedded VMM's and QEMU's virtio-net devices.
//!
//! Checksums: with `CSUM` the stack leaves TCP and UDP checksums to the
//! device ([`offload_fields`] seeds the pseudo-header sum and the header
//! says where); with `GUEST_CSUM` a received frame may carry a partial
//! checksum, which [`complete_checksum`] finishes. QEMU offers both; the
//! embedded VMM neither (its frames always carry full checksums). Limits:
//! one device per image; no segmentation offload; no control queue.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::vec::Vec;

use kiln_netdev::{MAX_FRAME_BYTES, NetDevice};
use kiln_rt::dma::DmaRegion;
use kiln_rt::thread::Event;
use kiln_virtio::{Buf, MmioTransport, Transport, VirtioError, Virtqueue};

/// The virtio device type of a network card.
pub const DEVICE_TYPE: u32 = 1;
/// `VIRTIO_NET_F_CSUM`: the device completes partial checksums the driver
/// sends.
pub const F_CSUM: u64 = 1 << 0;
/// `VIRTIO_NET_F_GUEST_CSUM`: the device may send frames with partial
/// checksums, which the driver completes.
pub const F_GUEST_CSUM: u64 = 1 << 1;
/// The features this driver asks for.
pub const FEATURES: u64 = F_MAC | F_MRG_RXBUF | F_CSUM | F_GUEST_CSUM;
/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`.
const HDR_F_NEEDS_CSUM: u8 = 1;
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
static TRANSPORT: spin::Once<alloc::boxed::Box<dyn Transport>> = spin::Once::new();

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
    transport: &'static dyn Transport,
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
    /// The device checksums TCP and UDP (the stack leaves it to us).
    tx_csum: bool,
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
            MmioTransport::probe(DEVICE_TYPE, FEATURES).map_err(VirtioNetError::Virtio)?;
        Self::with_transport(alloc::boxed::Box::new(transport))
    }

    /// Sets up the device behind `transport` (features negotiated with
    /// at most [`FEATURES`]); the first one wins (one device per image).
    pub fn with_transport(
        transport: alloc::boxed::Box<dyn Transport>,
    ) -> Result<Self, VirtioNetError> {
        if TRANSPORT.get().is_some() {
            return Err(VirtioNetError::Virtio(VirtioError::NoDevice));
        }
        let transport: &'static dyn Transport = TRANSPORT.call_once(|| transport).as_ref();
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
            tx_csum: features & F_CSUM != 0,
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
        // The interrupt is routed before the device goes live: a failure
        // after `start` would free rings the device is already using.
        kiln_rt::hal::irq::register(line, on_interrupt).map_err(|_| VirtioNetError::Interrupt)?;
        dev.transport.start();
        dev.transport.notify(RX);
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
                if header[0] & HDR_F_NEEDS_CSUM != 0 {
                    // A partial checksum (only with GUEST_CSUM): finish it.
                    let start = u16::from_le_bytes([header[6], header[7]]);
                    let offset = u16::from_le_bytes([header[8], header[9]]);
                    complete_checksum(&mut buf[..total], usize::from(start), usize::from(offset));
                }
                return Some(total);
            }
            // Empty or oversized: dropped; try the next one.
        }
    }

    fn transmit(&mut self, frame: &[u8]) -> bool {
        if frame.len() > MAX_FRAME_BYTES.min(BUFFER_BYTES - HEADER_BYTES) {
            return false;
        }
        self.reclaim_tx();
        let Some(index) = self.tx_free.pop() else {
            return false;
        };
        let base = usize::from(index) * BUFFER_BYTES;
        let region = &self.tx_buffers.region;
        let mut header = [0u8; HEADER_BYTES];
        let offload = if self.tx_csum {
            offload_fields(frame)
        } else {
            None
        };
        if let Some((start, offset, _)) = offload {
            header[0] = HDR_F_NEEDS_CSUM;
            header[6..8].copy_from_slice(&start.to_le_bytes());
            header[8..10].copy_from_slice(&offset.to_le_bytes());
        }
        region.write(base, &header);
        region.write(base + HEADER_BYTES, frame);
        if let Some((start, offset, pseudo)) = offload {
            // The device adds the sum of the bytes from `start` to what the
            // checksum field holds: the pseudo-header's sum.
            let at = base + HEADER_BYTES + usize::from(start) + usize::from(offset);
            region.write(at, &pseudo.to_be_bytes());
        }
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

    fn checksum_offload(&self) -> bool {
        self.tx_csum
    }

    fn has_rx(&self) -> bool {
        self.rx.has_used()
    }

    fn wakeup(&self) -> &'static Event {
        self.event
    }
}

/// Adds `data` as big-endian 16-bit words (an odd last byte padded with
/// zero) to `sum`.
fn sum16(mut sum: u64, data: &[u8]) -> u64 {
    for pair in data.chunks(2) {
        let hi = pair[0];
        let lo = pair.get(1).copied().unwrap_or(0);
        sum += u64::from(u16::from_be_bytes([hi, lo]));
    }
    sum
}

/// Folds a sum into 16 bits, ones' complement.
fn fold(mut sum: u64) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// Finishes a partial checksum (`NEEDS_CSUM`): the field at
/// `start + offset` holds the pseudo-header's sum; the checksum of
/// everything from `start` goes there. Returns `false` (frame unchanged)
/// when the offsets do not fit the frame.
pub fn complete_checksum(frame: &mut [u8], start: usize, offset: usize) -> bool {
    let Some(at) = start.checked_add(offset).filter(|at| at + 2 <= frame.len()) else {
        return false;
    };
    let sum = !fold(sum16(0, &frame[start..]));
    // 0 and 0xffff are the same in ones' complement; UDP reserves 0.
    let sum = if sum == 0 { 0xffff } else { sum };
    frame[at..at + 2].copy_from_slice(&sum.to_be_bytes());
    true
}

/// For an Ethernet/IPv4 TCP or UDP frame whose checksum field is zero
/// (smoltcp leaves it so when the device checksums): where the checksum
/// covers from (`csum_start`), where the field is within it
/// (`csum_offset`), and the pseudo-header's folded sum to seed it with.
/// `None` for anything else (ARP, ICMP, fragments, short frames).
pub fn offload_fields(frame: &[u8]) -> Option<(u16, u16, u16)> {
    const ETH: usize = 14;
    if frame.get(12..14)? != [0x08, 0x00] {
        return None;
    }
    let ip = frame.get(ETH..)?;
    let ihl = usize::from(*ip.first()? & 0x0f) * 4;
    if ip[0] >> 4 != 4 || ihl < 20 || ip.len() < ihl {
        return None;
    }
    if u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0 {
        return None; // a fragment
    }
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let offset: u16 = match ip[9] {
        6 => 16,
        17 => 6,
        _ => return None,
    };
    if total < ihl || total > ip.len() || ihl + usize::from(offset) + 2 > total {
        return None;
    }
    let l4_len = (total - ihl) as u64;
    let pseudo = sum16(0, &ip[12..20]) + u64::from(ip[9]) + l4_len;
    Some(((ETH + ihl) as u16, offset, fold(pseudo)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sum itself, on a known answer: the IPv4 header example of RFC
    /// 1071's tutorials (checksum 0xb861).
    #[test]
    fn the_internet_checksum_matches_a_known_answer() {
        let header = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(!fold(sum16(0, &header)), 0xb861);
    }

    /// An Ethernet/IPv4/UDP frame 10.0.2.15:7 -> 10.0.2.2:9 with its full
    /// checksum computed the straightforward way.
    fn udp_frame(payload: &[u8]) -> Vec<u8> {
        let mut f = alloc::vec![0u8; 14];
        f[12] = 0x08;
        let total = 20 + 8 + payload.len();
        let mut ip = alloc::vec![
            0x45,
            0,
            (total >> 8) as u8,
            total as u8,
            0,
            0,
            0x40,
            0,
            64,
            17,
            0,
            0
        ];
        ip.extend_from_slice(&[10, 0, 2, 15, 10, 0, 2, 2]);
        let ip_sum = !fold(sum16(0, &ip));
        ip[10..12].copy_from_slice(&ip_sum.to_be_bytes());
        f.extend_from_slice(&ip);
        let len = 8 + payload.len();
        f.extend_from_slice(&[0, 7, 0, 9, (len >> 8) as u8, len as u8, 0, 0]);
        f.extend_from_slice(payload);
        // The full checksum, the straightforward way.
        let pseudo = sum16(0, &f[26..34]) + 17 + len as u64;
        let sum = !fold(sum16(pseudo, &f[34..]));
        f[40..42].copy_from_slice(&sum.to_be_bytes());
        f
    }

    #[test]
    fn offloaded_then_completed_checksums_match_the_full_one() {
        for payload in [&b""[..], b"x", b"hello, checksum", &[0xff; 999]] {
            let full = udp_frame(payload);
            let mut partial = full.clone();
            partial[40..42].copy_from_slice(&[0, 0]); // as smoltcp leaves it
            let (start, offset, pseudo) = offload_fields(&partial).unwrap();
            assert_eq!((start, offset), (34, 6));
            partial[40..42].copy_from_slice(&pseudo.to_be_bytes());
            assert!(complete_checksum(&mut partial, start.into(), offset.into()));
            assert_eq!(partial, full, "payload of {} bytes", payload.len());
        }
    }

    #[test]
    fn only_ipv4_tcp_and_udp_are_offloaded() {
        let udp = udp_frame(b"abc");
        let mut arp = udp.clone();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(offload_fields(&arp), None);
        let mut icmp = udp.clone();
        icmp[23] = 1;
        assert_eq!(offload_fields(&icmp), None);
        let mut fragment = udp.clone();
        fragment[20] = 0x20; // more fragments
        assert_eq!(offload_fields(&fragment), None);
        let mut tcp = udp.clone();
        tcp[23] = 6;
        tcp[16..18].copy_from_slice(&[0, 60]);
        tcp.resize(14 + 60, 0);
        assert_eq!(offload_fields(&tcp).map(|f| (f.0, f.1)), Some((34, 16)));
        for cut in 0..udp.len() {
            let _ = offload_fields(&udp[..cut]); // never panics
        }
        assert_eq!(offload_fields(&udp[..30]), None);
    }

    #[test]
    fn offsets_outside_the_frame_leave_it_alone() {
        let mut f = udp_frame(b"abc");
        let before = f.clone();
        assert!(!complete_checksum(&mut f, 40, 5));
        assert!(!complete_checksum(&mut f, usize::MAX, 2));
        assert_eq!(f, before);
    }
}
