//! A split virtqueue the driver runs itself (virtio 1.x §2.7).
//!
//! [`Virtqueue`] owns its rings in one [`DmaRegion`]: the descriptor table,
//! the available ring (driver → device) and, on its own page, the used
//! ring (device → driver). [`Virtqueue::add`] puts a chain of buffers on
//! the available ring without notifying; the caller notifies through its
//! transport when [`Virtqueue::should_notify`] says the device wants it.
//! [`Virtqueue::pop_used`] takes back what the device finished and frees
//! the chain's descriptors.
//!
//! Index arithmetic is modulo 2^16 as the spec says; ring slots are the
//! index modulo the queue size (a power of two). No indirect descriptors,
//! no event index (notification suppression uses the ring flags).

use alloc::vec::Vec;

use kiln_rt::dma::DmaRegion;

use crate::VirtioError;

const DESC_F_NEXT: u16 = 1;
const DESC_F_WRITE: u16 = 2;
/// `VRING_AVAIL_F_NO_INTERRUPT`.
const AVAIL_F_NO_INTERRUPT: u16 = 1;
/// `VRING_USED_F_NO_NOTIFY`.
const USED_F_NO_NOTIFY: u16 = 1;

/// Largest queue this driver sets up.
pub const MAX_QUEUE_SIZE: u16 = 256;

/// One buffer of a chain: guest-physical address, length, direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Buf {
    /// Guest-physical address (a [`DmaRegion`]'s `phys()` plus an offset).
    pub addr: u64,
    /// Length in bytes.
    pub len: u32,
    /// The device writes it (else it reads it).
    pub device_writes: bool,
}

/// A chain the device finished.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Used {
    /// The head descriptor [`Virtqueue::add`] returned.
    pub head: u16,
    /// Bytes the device wrote into the chain's writable buffers.
    pub len: u32,
}

/// A split virtqueue.
#[derive(Debug)]
pub struct Virtqueue {
    index: u16,
    size: u16,
    ring: DmaRegion,
    avail_off: usize,
    used_off: usize,
    next_avail: u16,
    seen_used: u16,
    /// Free descriptors (a stack).
    free: Vec<u16>,
    /// Descriptors in the chain headed by each descriptor.
    chain_len: Vec<u16>,
}

impl Virtqueue {
    /// Allocates queue `index` with `size` entries (a power of two up to
    /// [`MAX_QUEUE_SIZE`]).
    pub(crate) fn new(index: u16, size: u16) -> Result<Self, VirtioError> {
        if size == 0 || !size.is_power_of_two() || size > MAX_QUEUE_SIZE {
            return Err(VirtioError::Setup(
                "queue size must be a power of two up to 256",
            ));
        }
        let n = usize::from(size);
        let avail_off = 16 * n;
        let avail_end = avail_off + 6 + 2 * n;
        let used_off = avail_end.next_multiple_of(4096);
        let used_end = used_off + 6 + 8 * n;
        let ring = DmaRegion::new(used_end.div_ceil(4096)).map_err(|_| VirtioError::OutOfMemory)?;
        Ok(Self {
            index,
            size,
            ring,
            avail_off,
            used_off,
            next_avail: 0,
            seen_used: 0,
            free: (0..size).rev().collect(),
            chain_len: alloc::vec![0; n],
        })
    }

    /// The queue's number on its device.
    pub fn index(&self) -> u16 {
        self.index
    }

    /// Entries in the queue.
    pub fn size(&self) -> u16 {
        self.size
    }

    /// Guest-physical addresses of (descriptor table, available ring, used
    /// ring), for the transport's queue registers.
    pub fn addresses(&self) -> (u64, u64, u64) {
        let base = self.ring.phys();
        (
            base,
            base + self.avail_off as u64,
            base + self.used_off as u64,
        )
    }

    /// Descriptors not in any chain.
    pub fn free_descriptors(&self) -> usize {
        self.free.len()
    }

    /// Puts a chain of `bufs` on the available ring (without notifying);
    /// returns its head descriptor.
    pub fn add(&mut self, bufs: &[Buf]) -> Result<u16, VirtioError> {
        if bufs.is_empty() || bufs.len() > self.free.len() {
            return Err(VirtioError::BadChain);
        }
        let ids: Vec<u16> = (0..bufs.len()).filter_map(|_| self.free.pop()).collect();
        for (i, (buf, id)) in bufs.iter().zip(&ids).enumerate() {
            let next = ids.get(i + 1);
            let flags = if next.is_some() { DESC_F_NEXT } else { 0 }
                | if buf.device_writes { DESC_F_WRITE } else { 0 };
            let at = 16 * usize::from(*id);
            self.ring.write_u64(at, buf.addr);
            self.ring.write_u32(at + 8, buf.len);
            self.ring.write_u16(at + 12, flags);
            self.ring.write_u16(at + 14, next.copied().unwrap_or(0));
        }
        let head = ids[0];
        self.chain_len[usize::from(head)] = bufs.len() as u16;
        let slot = usize::from(self.next_avail % self.size);
        self.ring.write_u16(self.avail_off + 4 + 2 * slot, head);
        self.next_avail = self.next_avail.wrapping_add(1);
        // The entry must be visible before the index that publishes it.
        core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
        self.ring.write_u16(self.avail_off + 2, self.next_avail);
        Ok(head)
    }

    /// Whether the device asked to be notified of new buffers (it clears
    /// the used ring's `NO_NOTIFY` flag when it is not polling).
    pub fn should_notify(&self) -> bool {
        core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
        self.ring.read_u16(self.used_off) & USED_F_NO_NOTIFY == 0
    }

    /// Asks the device not to interrupt when it uses buffers (`true`), or
    /// to interrupt again (`false`). Advisory: interrupts may still come.
    pub fn suppress_interrupts(&self, suppress: bool) {
        self.ring.write_u16(
            self.avail_off,
            if suppress { AVAIL_F_NO_INTERRUPT } else { 0 },
        );
        core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
    }

    /// Whether the device has finished a chain not yet popped.
    pub fn has_used(&self) -> bool {
        core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
        self.ring.read_u16(self.used_off + 2) != self.seen_used
    }

    /// Takes the next finished chain and frees its descriptors. A used
    /// entry naming a descriptor that is not a chain head (a broken
    /// device) is skipped.
    pub fn pop_used(&mut self) -> Option<Used> {
        while self.has_used() {
            let slot = usize::from(self.seen_used % self.size);
            self.seen_used = self.seen_used.wrapping_add(1);
            let at = self.used_off + 4 + 8 * slot;
            let id = self.ring.read_u32(at);
            let len = self.ring.read_u32(at + 4);
            let Some(head) = u16::try_from(id).ok().filter(|h| *h < self.size) else {
                continue;
            };
            let count = core::mem::take(&mut self.chain_len[usize::from(head)]);
            if count == 0 {
                continue;
            }
            let mut id = head;
            for _ in 0..count {
                self.free.push(id);
                id = self.ring.read_u16(16 * usize::from(id) + 14) % self.size;
            }
            return Some(Used { head, len });
        }
        None
    }
}
