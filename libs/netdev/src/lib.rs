//! # kiln-netdev — the network device seam
//!
//! [`NetDevice`] is what a NIC driver gives the TCP/IP stack (`kiln-net`):
//! Ethernet frames in ([`NetDevice::receive`]), frames out
//! ([`NetDevice::transmit`], then [`NetDevice::flush`] once per batch so a
//! device that is notified per batch is not notified per frame), its MAC
//! address, and a way to sleep until a frame may have arrived
//! ([`NetDevice::arm_wakeup`] + [`NetDevice::wakeup`]).
//!
//! Implementations: `kiln-virtio-net` (virtio-net over virtio-mmio, on the
//! embedded VMM and QEMU) and [`channel::Channel`] here (linuxu: frames as
//! datagrams on a socket the `kiln` CLI passes, with `SIGIO` as the
//! interrupt). [`Loopback`] joins two stacks in memory for tests.
//!
//! Limits: Ethernet only, one frame per call (copied: drivers own their
//! DMA buffers), MTU 1500.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod channel;

use alloc::collections::VecDeque;
use alloc::sync::Arc;
use alloc::vec::Vec;

use kiln_rt::thread::Event;

/// The largest Ethernet frame (without FCS) at MTU 1500.
pub const MAX_FRAME_BYTES: usize = 1514;

/// A network interface card, as the TCP/IP stack sees it.
pub trait NetDevice: Send {
    /// Its Ethernet address.
    fn mac(&self) -> [u8; 6];
    /// Copies the next received frame into `buf` (at least
    /// [`MAX_FRAME_BYTES`]) and returns its length, or `None` when no frame
    /// is waiting. Frames longer than `buf` are dropped.
    fn receive(&mut self, buf: &mut [u8]) -> Option<usize>;
    /// Queues `frame` for sending; `false` when the device has no room
    /// (the frame is dropped, as by a full NIC ring).
    fn transmit(&mut self, frame: &[u8]) -> bool;
    /// Hands queued frames and refilled receive buffers to the device
    /// (one notification per batch).
    fn flush(&mut self);
    /// Prepares to sleep: re-enables the receive interrupt. Returns `false`
    /// when a frame is already waiting (then do not sleep).
    fn arm_wakeup(&mut self) -> bool;
    /// Stops receive interrupts again (the stack polls while busy).
    fn disarm_wakeup(&mut self);
    /// Whether a received frame is waiting, checked without side effects
    /// (the stack polls this for a short while before it sleeps; `false`
    /// when the device cannot tell cheaply).
    fn has_rx(&self) -> bool {
        false
    }
    /// Whether the device computes TCP and UDP checksums of sent frames
    /// (then the stack leaves them zero).
    fn checksum_offload(&self) -> bool {
        false
    }
    /// The event the receive interrupt signals.
    fn wakeup(&self) -> &'static Event;
}

/// One end of an in-memory link between two stacks (tests, examples).
pub struct Loopback {
    mac: [u8; 6],
    rx: Arc<spin::Mutex<VecDeque<Vec<u8>>>>,
    tx: Arc<spin::Mutex<VecDeque<Vec<u8>>>>,
    event: &'static Event,
    peer_event: &'static Event,
}

impl Loopback {
    /// Two connected ends with MACs `a` and `b`; each end's frames are the
    /// other's received frames. `events` are what each end's stack waits
    /// on (an end signals the other's when it transmits).
    pub fn pair(a: [u8; 6], b: [u8; 6], events: [&'static Event; 2]) -> (Self, Self) {
        let one = Arc::new(spin::Mutex::new(VecDeque::new()));
        let two = Arc::new(spin::Mutex::new(VecDeque::new()));
        (
            Self {
                mac: a,
                rx: one.clone(),
                tx: two.clone(),
                event: events[0],
                peer_event: events[1],
            },
            Self {
                mac: b,
                rx: two,
                tx: one,
                event: events[1],
                peer_event: events[0],
            },
        )
    }
}

impl NetDevice for Loopback {
    fn mac(&self) -> [u8; 6] {
        self.mac
    }

    fn receive(&mut self, buf: &mut [u8]) -> Option<usize> {
        loop {
            let frame = self.rx.lock().pop_front()?;
            if let Some(dst) = buf.get_mut(..frame.len()) {
                dst.copy_from_slice(&frame);
                return Some(frame.len());
            }
        }
    }

    fn transmit(&mut self, frame: &[u8]) -> bool {
        self.tx.lock().push_back(frame.to_vec());
        self.peer_event.signal();
        true
    }

    fn flush(&mut self) {}

    fn arm_wakeup(&mut self) -> bool {
        self.rx.lock().is_empty()
    }

    fn disarm_wakeup(&mut self) {}

    fn wakeup(&self) -> &'static Event {
        self.event
    }
}
