//! Virtio devices for the embedded VMM.
//!
//! - [`VirtioDevice`]: what a device model provides (type, features,
//!   config space, queue processing); the transport owns the queues.
//! - [`mmio::MmioTransport`]: the virtio-mmio (version 2) register block a
//!   device sits behind, as `virtio_mmio.device=` on Linux describes it.
//! - [`block::Block`]: virtio-blk backed by a host file.
//! - [`fs9p::Volume`]: virtio-9p serving a host directory (`-v`).
//! - [`net::Net`]: virtio-net, frames to and from a backend (user-mode
//!   networking or a TAP device), receiving on its own thread.
//!
//! Queues are `virtio_queue::Queue` (rust-vmm): split rings only, no
//! indirect descriptors offered, no event index. The transport processes
//! a queue synchronously when the driver writes `QueueNotify` (on the vCPU
//! thread); devices that also work on their own (the network's receive
//! side) take their queues at `DRIVER_OK` ([`VirtioDevice::activate`])
//! and interrupt through [`Interrupt`]. Limits: no ioeventfd.

pub mod block;
pub mod fs9p;
pub mod net;

pub mod mmio;

use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;

/// `VIRTIO_F_VERSION_1`: a modern (1.x) device.
pub const F_VERSION_1: u64 = 1 << 32;

/// A device model behind a transport.
pub trait VirtioDevice: Send {
    /// The virtio device ID (2 = block).
    fn device_type(&self) -> u32;
    /// The feature bits the device offers.
    fn features(&self) -> u64;
    /// The largest size of each of its queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// Reads `data.len()` bytes of the config space at `offset` (bytes
    /// past its end read as zero).
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Handles what the driver made available on queue `index`; returns
    /// whether the driver should be interrupted.
    fn process_queue(&mut self, index: usize, queue: &mut Queue, mem: &GuestMemoryMmap) -> bool;
    /// The driver set `DRIVER_OK`: a device that works on its own (not
    /// only on notifications) takes copies of the configured `queues` and
    /// interrupts through `interrupt` from then on.
    fn activate(&mut self, _queues: &[Queue], _mem: &GuestMemoryMmap, _interrupt: Interrupt) {}
    /// The driver reset the device: stop using the queues.
    fn reset(&mut self) {}
}

/// How a device interrupts its driver from any thread: it sets the
/// "used buffer" bit of the transport's interrupt status and raises the
/// device's line.
#[derive(Clone)]
pub struct Interrupt {
    status: std::sync::Arc<std::sync::atomic::AtomicU32>,
    raise: std::sync::Arc<dyn Fn() + Send + Sync>,
}

impl Interrupt {
    /// An interrupt that sets bits in `status` and calls `raise`.
    pub fn new(
        status: std::sync::Arc<std::sync::atomic::AtomicU32>,
        raise: std::sync::Arc<dyn Fn() + Send + Sync>,
    ) -> Self {
        Self { status, raise }
    }

    /// Signals used buffers.
    pub fn used_buffer(&self) {
        self.status
            .fetch_or(mmio::INT_USED_BUFFER, std::sync::atomic::Ordering::SeqCst);
        (self.raise)();
    }
}

impl VirtioDevice for Box<dyn VirtioDevice> {
    fn device_type(&self) -> u32 {
        self.as_ref().device_type()
    }
    fn features(&self) -> u64 {
        self.as_ref().features()
    }
    fn queue_max_sizes(&self) -> &[u16] {
        self.as_ref().queue_max_sizes()
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        self.as_ref().read_config(offset, data);
    }
    fn process_queue(&mut self, index: usize, queue: &mut Queue, mem: &GuestMemoryMmap) -> bool {
        self.as_mut().process_queue(index, queue, mem)
    }
    fn activate(&mut self, queues: &[Queue], mem: &GuestMemoryMmap, interrupt: Interrupt) {
        self.as_mut().activate(queues, mem, interrupt);
    }
    fn reset(&mut self) {
        self.as_mut().reset();
    }
}

/// Serves every chain the driver made available on `queue`: `serve` gets
/// a chain's descriptors and returns the bytes it wrote into them. Returns
/// whether the driver should be interrupted (some chain was used and the
/// driver did not suppress notifications).
pub(crate) fn serve_queue(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    mut serve: impl FnMut(&[virtio_queue::desc::split::Descriptor]) -> u32,
) -> bool {
    use virtio_queue::{QueueOwnedT, QueueT};
    let mut used_any = false;
    loop {
        let chains: Vec<_> = match queue.iter(mem) {
            Ok(iter) => iter.collect(),
            Err(_) => return used_any,
        };
        if chains.is_empty() {
            break;
        }
        for chain in chains {
            let head = chain.head_index();
            let descs: Vec<_> = chain.collect();
            let written = serve(&descs);
            if queue.add_used(mem, head, written).is_err() {
                return used_any;
            }
            used_any = true;
        }
    }
    used_any && driver_wants_interrupt(queue, mem)
}

/// Whether the driver wants an interrupt for used buffers on `queue`: not
/// while it sets `VRING_AVAIL_F_NO_INTERRUPT` (it is polling).
/// virtio-queue's `needs_notification` only implements the event-index
/// scheme, which these devices do not offer, and ignores that flag.
pub(crate) fn driver_wants_interrupt(queue: &Queue, mem: &GuestMemoryMmap) -> bool {
    use virtio_queue::QueueT;
    use vm_memory::Bytes;
    // Used entries written before must be visible before the flags are
    // read (the driver clears the flag, then re-checks the used index).
    std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
    mem.read_obj::<u16>(vm_memory::GuestAddress(queue.avail_ring()))
        .map_or(true, |flags| u16::from_le(flags) & 1 == 0)
}

/// Reads `data.len()` bytes at `offset` of `config`, zero past its end.
pub(crate) fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    for (i, byte) in data.iter_mut().enumerate() {
        *byte = usize::try_from(offset)
            .ok()
            .and_then(|o| o.checked_add(i))
            .and_then(|o| config.get(o))
            .copied()
            .unwrap_or(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtio_queue::desc::RawDescriptor;
    use virtio_queue::desc::split::Descriptor;
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestAddress};

    /// A polling driver (`VRING_AVAIL_F_NO_INTERRUPT`) is not interrupted;
    /// one that clears the flag is (virtio-queue's own check ignored it).
    #[test]
    fn no_interrupt_is_honoured() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let vq = MockSplitQueue::new(&mem, 16);
        let mut q: Queue = vq.create_queue().unwrap();
        let chain = [RawDescriptor::from(Descriptor::new(0x8000, 16, 0, 0))];
        mem.write_obj(1u16, vq.avail_addr()).unwrap(); // NO_INTERRUPT
        vq.add_desc_chains(&chain, 0).unwrap();
        assert!(
            !serve_queue(&mut q, &mem, |_| 0),
            "interrupted a polling driver"
        );
        mem.write_obj(0u16, vq.avail_addr()).unwrap();
        vq.add_desc_chains(&chain, 1).unwrap();
        assert!(serve_queue(&mut q, &mem, |_| 0));
    }
}
