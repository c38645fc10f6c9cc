//! virtio-net: Ethernet frames between the guest and a [`Backend`].
//!
//! Queue 0 receives (device → guest), queue 1 transmits. Offered features:
//! `VERSION_1`, `MAC` (`kiln_abi::net::GUEST_MAC` unless given), and `MRG_RXBUF`
//! (every frame fits one 2 KiB buffer, so `num_buffers` is always 1).
//! Every frame is preceded by the 12-byte `virtio_net_hdr_v1`, all zeros
//! both ways: no checksum or segmentation offload.
//!
//! Transmit runs on the vCPU thread when the driver notifies queue 1: each
//! chain's bytes past the header go to the backend as one frame. Receive
//! runs on the device's own thread from `DRIVER_OK` on: it waits for the
//! backend to be readable, moves frames into the driver's receive buffers
//! and interrupts (unless the driver set `NO_INTERRUPT`: it is polling).
//! After moving frames the thread keeps serving both rings by polling for
//! a short while with the transmit ring's `NO_NOTIFY` set, so under load
//! the guest sends without register exits. While it has buffers it asks not to be notified of new
//! ones (`NO_NOTIFY`); when they run out it stops reading the backend (the
//! frame waiting stays there, so nothing is lost to a full ring) and asks
//! to be notified.
//!
//! Guest-controlled input — descriptor chains, addresses, lengths — is
//! checked: a chain that does not fit guest memory or is longer than a
//! frame is completed with nothing sent or received.

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use super::{Interrupt, VirtioDevice};

/// The virtio device type of a network card.
pub const DEVICE_TYPE: u32 = 1;
/// `VIRTIO_NET_F_MAC`.
pub const F_MAC: u64 = 1 << 5;
/// `VIRTIO_NET_F_MRG_RXBUF`.
pub const F_MRG_RXBUF: u64 = 1 << 15;
/// Entries in each queue.
pub const QUEUE_SIZE: u16 = 256;
/// Bytes of `virtio_net_hdr_v1`.
pub const HEADER_BYTES: usize = 12;
/// The largest frame handled (a 1500-byte MTU plus the Ethernet header,
/// with room for a VLAN tag).
pub const MAX_FRAME_BYTES: usize = 1518;
/// The guest's MAC address unless told otherwise.
pub const DEFAULT_MAC: [u8; 6] = kiln_abi::net::GUEST_MAC;

const RX: usize = 0;
const TX: usize = 1;

/// Where the guest's frames go and come from: one Ethernet frame per
/// datagram (user-mode networking's socket) or per read/write (TAP).
/// Both are non-blocking.
#[derive(Debug)]
pub enum Backend {
    /// The guest end of `kiln-user-net`'s socket pair (seqpacket: one
    /// frame per message, and a hang-up when the stack stops).
    User(UnixDatagram),
    /// A TAP device.
    Tap(std::fs::File),
}

impl Backend {
    fn send(&self, frame: &[u8]) -> io::Result<()> {
        match self {
            Self::User(s) => s.send(frame).map(|_| ()),
            Self::Tap(f) => io::Write::write(&mut &*f, frame).map(|_| ()),
        }
    }

    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::User(s) => s.recv(buf),
            Self::Tap(f) => io::Read::read(&mut &*f, buf),
        }
    }

    fn raw_fd(&self) -> i32 {
        match self {
            Self::User(s) => s.as_fd().as_raw_fd(),
            Self::Tap(f) => f.as_raw_fd(),
        }
    }

    /// Makes the descriptor non-blocking (the TAP one already is).
    fn set_nonblocking(&self) -> io::Result<()> {
        match self {
            Self::User(s) => s.set_nonblocking(true),
            Self::Tap(_) => Ok(()),
        }
    }
}

/// The receive side's state, shared by the vCPU and the receive thread.
struct Active {
    rx: Queue,
    tx: Queue,
    mem: GuestMemoryMmap,
    interrupt: Interrupt,
    /// The length of a frame read from the backend that no receive buffer
    /// took yet.
    pending: Option<usize>,
    /// The header and the frame being received.
    frame: Vec<u8>,
    /// No receive buffers: do not read the backend until the driver adds
    /// some.
    stalled: bool,
}

struct Running {
    state: Arc<Mutex<Active>>,
    wake: Arc<EventFd>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// A virtio-net device.
pub struct Net {
    mac: [u8; 6],
    backend: Arc<Backend>,
    config: [u8; 8],
    running: Option<Running>,
}

impl Net {
    /// A device with `mac` whose frames go to `backend`.
    pub fn new(backend: Backend, mac: [u8; 6]) -> io::Result<Self> {
        backend.set_nonblocking()?;
        let mut config = [0u8; 8];
        config[..6].copy_from_slice(&mac);
        Ok(Self {
            mac,
            backend: Arc::new(backend),
            config,
            running: None,
        })
    }

    /// Its MAC address.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    fn stop(&mut self) {
        if let Some(mut r) = self.running.take() {
            r.stop.store(true, Ordering::SeqCst);
            let _ = r.wake.write(1);
            if let Some(t) = r.thread.take() {
                let _ = t.join();
            }
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.stop();
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        DEVICE_TYPE
    }

    fn features(&self) -> u64 {
        super::F_VERSION_1 | F_MAC | F_MRG_RXBUF
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        super::read_config_bytes(&self.config, offset, data);
    }

    fn process_queue(&mut self, index: usize, _queue: &mut Queue, _mem: &GuestMemoryMmap) -> bool {
        let Some(running) = &self.running else {
            return false;
        };
        let Ok(mut state) = running.state.lock() else {
            return false;
        };
        match index {
            TX => transmit(&mut state, &self.backend),
            RX => {
                // New receive buffers: fill them, and let the thread read
                // the backend again.
                let mem = state.mem.clone();
                let _ = state.rx.disable_notification(&mem);
                state.stalled = false;
                let interrupt = receive(&mut state, &self.backend);
                let _ = running.wake.write(1);
                interrupt
            }
            _ => false,
        }
    }

    fn activate(&mut self, queues: &[Queue], mem: &GuestMemoryMmap, interrupt: Interrupt) {
        self.stop();
        let (Some(mut rx), Some(tx)) = (
            queues.get(RX).and_then(copy_queue),
            queues.get(TX).and_then(copy_queue),
        ) else {
            return;
        };
        if !rx.is_valid(mem) || !tx.is_valid(mem) {
            return;
        }
        let _ = rx.disable_notification(mem);
        let state = Arc::new(Mutex::new(Active {
            rx,
            tx,
            mem: mem.clone(),
            interrupt,
            pending: None,
            frame: vec![0; HEADER_BYTES + 65536],
            stalled: false,
        }));
        let Ok(wake) = EventFd::new(EFD_NONBLOCK) else {
            return;
        };
        let wake = Arc::new(wake);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (state, wake, stop, backend) = (
                state.clone(),
                wake.clone(),
                stop.clone(),
                self.backend.clone(),
            );
            std::thread::Builder::new()
                .name("kiln-net-rx".into())
                .spawn(move || rx_thread(&state, &wake, &stop, &backend))
                .ok()
        };
        self.running = Some(Running {
            state,
            wake,
            stop,
            thread,
        });
    }

    fn reset(&mut self) {
        self.stop();
    }
}

/// The receive thread: waits for frames (or new buffers, or the stop
/// request) and moves frames into the guest.
fn rx_thread(state: &Mutex<Active>, wake: &EventFd, stop: &AtomicBool, backend: &Backend) {
    while !stop.load(Ordering::SeqCst) {
        let stalled = state.lock().map_or(true, |s| s.stalled);
        let mut fds = [
            libc::pollfd {
                fd: wake.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: backend.raw_fd(),
                events: if stalled { 0 } else { libc::POLLIN },
                revents: 0,
            },
        ];
        // SAFETY: `fds` is a valid array of two pollfd structures for the
        // duration of the call; both descriptors are open (owned by `wake`
        // and `backend`, which outlive this loop).
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, 1000) };
        if n < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        if fds[0].revents != 0 {
            let _ = wake.read();
        }
        if fds[1].revents & (libc::POLLHUP | libc::POLLERR) != 0
            && fds[1].revents & libc::POLLIN == 0
        {
            return; // the backend is gone
        }
        if let Ok(mut s) = state.lock()
            && receive(&mut s, backend)
        {
            s.interrupt.used_buffer();
        }
        poll_while_busy(state, backend, stop);
    }
}

/// After traffic, serves both rings by polling for [`BUSY_POLL`] past the
/// last frame moved, with the transmit ring's `NO_NOTIFY` set: the guest
/// then sends without a register exit (~60 µs each under nested KVM).
/// Notifications are re-enabled (and the ring re-checked) before the
/// thread goes back to sleeping in `poll`.
fn poll_while_busy(state: &Mutex<Active>, backend: &Backend, stop: &AtomicBool) {
    let mut last_work = std::time::Instant::now();
    if let Ok(mut s) = state.lock() {
        let mem = s.mem.clone();
        let _ = s.tx.disable_notification(&mem);
    }
    while last_work.elapsed() < BUSY_POLL && !stop.load(Ordering::SeqCst) {
        let Ok(mut s) = state.lock() else { return };
        let before = (s.tx.next_avail(), s.rx.next_used());
        let tx_irq = transmit(&mut s, backend);
        let rx_irq = receive(&mut s, backend);
        if tx_irq || rx_irq {
            s.interrupt.used_buffer();
        }
        if (s.tx.next_avail(), s.rx.next_used()) != before {
            last_work = std::time::Instant::now();
        }
        drop(s);
        std::thread::yield_now();
    }
    if let Ok(mut s) = state.lock() {
        let mem = s.mem.clone();
        // Anything the guest queued while notifications were off.
        if s.tx.enable_notification(&mem).unwrap_or(false) && transmit(&mut s, backend) {
            s.interrupt.used_buffer();
        }
    }
}

/// How long the receive thread keeps polling both rings after the last
/// frame it moved.
const BUSY_POLL: std::time::Duration = std::time::Duration::from_micros(200);

/// Sends every chain the driver made available on the transmit queue;
/// returns whether to interrupt.
fn transmit(state: &mut Active, backend: &Backend) -> bool {
    let mem = state.mem.clone();
    let mut used_any = false;
    while let Some(chain) = state.tx.pop_descriptor_chain(&mem) {
        let head = chain.head_index();
        let mut frame = Vec::with_capacity(HEADER_BYTES + MAX_FRAME_BYTES);
        let mut ok = true;
        for desc in chain {
            let len = desc.len() as usize;
            if desc.is_write_only() || frame.len() + len > HEADER_BYTES + MAX_FRAME_BYTES {
                ok = false;
                break;
            }
            let start = frame.len();
            frame.resize(start + len, 0);
            if mem.read_slice(&mut frame[start..], desc.addr()).is_err() {
                ok = false;
                break;
            }
        }
        if ok && frame.len() > HEADER_BYTES {
            // A full backend drops the frame, as a full wire would.
            let _ = backend.send(&frame[HEADER_BYTES..]);
        }
        if state.tx.add_used(&mem, head, 0).is_err() {
            break;
        }
        used_any = true;
    }
    used_any && super::driver_wants_interrupt(&state.tx, &mem)
}

/// Moves frames from the backend into receive buffers until one runs
/// out; returns whether to interrupt.
fn receive(state: &mut Active, backend: &Backend) -> bool {
    let mem = state.mem.clone();
    let mut used_any = false;
    let mut retried = false;
    loop {
        if state.stalled {
            break;
        }
        let len = match state.pending {
            Some(len) => len,
            None => match backend.recv(&mut state.frame[HEADER_BYTES..]) {
                // End of file: the user-mode stack stopped (its socket is
                // a seqpacket pair); the thread sees the hang-up next.
                Ok(0) => break,
                Ok(len) => len,
                Err(_) => break, // WouldBlock, or a broken backend
            },
        };
        if len > MAX_FRAME_BYTES {
            state.pending = None;
            continue; // oversized: dropped
        }
        state.pending = Some(len);
        let Some(chain) = state.rx.pop_descriptor_chain(&mem) else {
            // Out of buffers: ask to be told when there are more. A ring
            // whose index says "more" but that yields no chain is broken
            // (an index more than a ring ahead): stall rather than spin.
            match state.rx.enable_notification(&mem) {
                Ok(true) if !retried => {
                    retried = true;
                    let _ = state.rx.disable_notification(&mem);
                    continue;
                }
                _ => {
                    state.stalled = true;
                    break;
                }
            }
        };
        retried = false;
        let head = chain.head_index();
        // virtio_net_hdr_v1: no offloads, num_buffers = 1.
        state.frame[..HEADER_BYTES].fill(0);
        state.frame[10] = 1;
        let mut written = 0usize;
        let total = HEADER_BYTES + len;
        for desc in chain {
            if written == total {
                break;
            }
            if !desc.is_write_only() {
                break;
            }
            let n = (desc.len() as usize).min(total - written);
            if mem
                .write_slice(&state.frame[written..written + n], desc.addr())
                .is_err()
            {
                break;
            }
            written += n;
        }
        if written < total {
            written = 0; // the chain could not hold it: dropped
        }
        state.pending = None;
        if state.rx.add_used(&mem, head, written as u32).is_err() {
            break;
        }
        used_any = true;
    }
    used_any && super::driver_wants_interrupt(&state.rx, &mem)
}

/// A queue configured like `q` (the driver's ring addresses and size),
/// at its start: the device's own copy from `DRIVER_OK` on.
fn copy_queue(q: &Queue) -> Option<Queue> {
    let mut c = Queue::new(q.max_size()).ok()?;
    c.set_size(q.size());
    let split = |a: u64| (Some(a as u32), Some((a >> 32) as u32));
    let (lo, hi) = split(q.desc_table());
    c.set_desc_table_address(lo, hi);
    let (lo, hi) = split(q.avail_ring());
    c.set_avail_ring_address(lo, hi);
    let (lo, hi) = split(q.used_ring());
    c.set_used_ring_address(lo, hi);
    c.set_ready(q.ready());
    Some(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;
    use std::time::{Duration, Instant};
    use virtio_queue::desc::RawDescriptor;
    use virtio_queue::desc::split::Descriptor;
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{GuestAddress, GuestMemoryMmap};

    const WRITE: u16 = 2;

    struct Rig {
        mem: GuestMemoryMmap,
        net: Net,
        host: UnixDatagram,
        interrupts: Arc<AtomicU32>,
        status: Arc<AtomicU32>,
    }

    /// A device on a socket pair, activated with RX at 0 and TX at 0x4000.
    fn rig() -> Rig {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let (host, guest) = UnixDatagram::pair().unwrap();
        let mut net = Net::new(Backend::User(guest), DEFAULT_MAC).unwrap();
        let rx = MockSplitQueue::create(&mem, GuestAddress(0), 16)
            .create_queue::<Queue>()
            .unwrap();
        let tx = MockSplitQueue::create(&mem, GuestAddress(0x4000), 16)
            .create_queue::<Queue>()
            .unwrap();
        let interrupts = Arc::new(AtomicU32::new(0));
        let status = Arc::new(AtomicU32::new(0));
        let counter = interrupts.clone();
        let interrupt = Interrupt::new(
            status.clone(),
            Arc::new(move || {
                counter.fetch_add(1, Ordering::SeqCst);
            }),
        );
        net.activate(&[rx, tx], &mem, interrupt);
        Rig {
            mem,
            net,
            host,
            interrupts,
            status,
        }
    }

    fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
        let start = Instant::now();
        while !f() {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "{what} never happened"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn dummy_queue() -> Queue {
        Queue::new(16).unwrap()
    }

    #[test]
    fn identifies_as_a_network_card_with_its_mac() {
        let (_h, g) = UnixDatagram::pair().unwrap();
        let net = Net::new(Backend::User(g), [2, 0, 0, 0, 0, 9]).unwrap();
        assert_eq!(net.device_type(), 1);
        assert_ne!(net.features() & F_MAC, 0);
        let mut mac = [0u8; 6];
        net.read_config(0, &mut mac);
        assert_eq!(mac, [2, 0, 0, 0, 0, 9]);
    }

    #[test]
    fn a_transmitted_chain_reaches_the_backend_without_its_header() {
        let mut r = rig();
        let tx = MockSplitQueue::create(&r.mem, GuestAddress(0x4000), 16);
        r.mem
            .write_slice(&[0u8; HEADER_BYTES], GuestAddress(0x2_0000))
            .unwrap();
        r.mem
            .write_slice(b"an ethernet frame", GuestAddress(0x2_1000))
            .unwrap();
        tx.add_desc_chains(
            &[
                RawDescriptor::from(Descriptor::new(0x2_0000, HEADER_BYTES as u32, 1, 1)),
                RawDescriptor::from(Descriptor::new(0x2_1000, 17, 0, 0)),
            ],
            0,
        )
        .unwrap();
        let mut q = dummy_queue();
        r.net.process_queue(TX, &mut q, &r.mem);
        let mut buf = [0u8; 64];
        r.host
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let n = r.host.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"an ethernet frame");
        assert_eq!(tx.used().idx().load(), 1, "the chain was used");
    }

    #[test]
    fn a_backend_frame_lands_in_a_receive_buffer_and_interrupts() {
        let r = rig();
        let rx = MockSplitQueue::create(&r.mem, GuestAddress(0), 16);
        rx.add_desc_chains(
            &[RawDescriptor::from(Descriptor::new(
                0x3_0000, 2048, WRITE, 0,
            ))],
            0,
        )
        .unwrap();
        r.host.send(b"frame from the host").unwrap();
        wait_for("the interrupt", || r.interrupts.load(Ordering::SeqCst) > 0);
        assert_eq!(rx.used().idx().load(), 1);
        let mut got = [0u8; HEADER_BYTES + 19];
        r.mem.read_slice(&mut got, GuestAddress(0x3_0000)).unwrap();
        assert_eq!(got[10], 1, "num_buffers");
        assert_eq!(&got[HEADER_BYTES..], b"frame from the host");
        assert_eq!(r.status.load(Ordering::SeqCst), 1, "used-buffer status bit");
    }

    #[test]
    fn frames_wait_in_the_backend_until_the_driver_adds_buffers() {
        let mut r = rig();
        r.host.send(b"early").unwrap();
        // No buffers yet: nothing is used, nothing lost.
        std::thread::sleep(Duration::from_millis(50));
        let rx = MockSplitQueue::create(&r.mem, GuestAddress(0), 16);
        assert_eq!(rx.used().idx().load(), 0);
        rx.add_desc_chains(
            &[RawDescriptor::from(Descriptor::new(
                0x3_0000, 2048, WRITE, 0,
            ))],
            0,
        )
        .unwrap();
        let mut q = dummy_queue();
        // The driver's notify of new buffers delivers the waiting frame.
        let interrupt = r.net.process_queue(RX, &mut q, &r.mem);
        assert!(interrupt);
        assert_eq!(rx.used().idx().load(), 1);
        let mut got = [0u8; HEADER_BYTES + 5];
        r.mem.read_slice(&mut got, GuestAddress(0x3_0000)).unwrap();
        assert_eq!(&got[HEADER_BYTES..], b"early");
    }

    /// Random chains (addresses anywhere, any lengths and flags) on both
    /// queues never panic the device.
    #[test]
    fn random_descriptor_chains_do_not_panic() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..200 {
            let mut r = rig();
            let rx = MockSplitQueue::create(&r.mem, GuestAddress(0), 16);
            let tx = MockSplitQueue::create(&r.mem, GuestAddress(0x4000), 16);
            for q in [&rx, &tx] {
                let n = 1 + (next() % 6) as usize;
                let descs: Vec<RawDescriptor> = (0..n)
                    .map(|i| {
                        let addr = match next() % 4 {
                            0 => next(),
                            1 => 0x2_0000 + next() % 0x10000,
                            2 => 0xf_fff0,
                            _ => 0x8_0000,
                        };
                        let len = match next() % 4 {
                            0 => next() as u32,
                            1 => 0,
                            _ => (next() % 4096) as u32,
                        };
                        let flags = (next() % 8) as u16;
                        let nxt = if i + 1 < n {
                            (i + 1) as u16
                        } else {
                            (next() % 32) as u16
                        };
                        RawDescriptor::from(Descriptor::new(addr, len, flags, nxt))
                    })
                    .collect();
                let _ = q.add_desc_chains(&descs, 0);
            }
            let junk: Vec<u8> = (0..(next() % 3000)).map(|_| next() as u8).collect();
            let _ = r.host.send(&junk);
            let mut q = dummy_queue();
            r.net.process_queue(TX, &mut q, &r.mem);
            r.net.process_queue(RX, &mut q, &r.mem);
            r.net.process_queue(7, &mut q, &r.mem);
            let _ = round;
        }
    }

    /// Regression: an available index far ahead of the ring (no chain can
    /// be popped, yet "more buffers" is reported) made receive spin forever
    /// while holding the device lock.
    #[test]
    fn a_broken_available_index_does_not_hang_the_device() {
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut r = rig();
            let rx = MockSplitQueue::create(&r.mem, GuestAddress(0), 16);
            r.mem
                .write_obj(300u16, GuestAddress(rx.avail_addr().0 + 2))
                .unwrap();
            r.host.send(b"a frame").unwrap();
            let mut q = dummy_queue();
            r.net.process_queue(RX, &mut q, &r.mem);
            r.net.reset();
            let _ = done_tx.send(());
        });
        assert!(
            done_rx.recv_timeout(Duration::from_secs(10)).is_ok(),
            "the device hung on a broken ring"
        );
    }

    #[test]
    fn reset_stops_the_receive_thread() {
        let mut r = rig();
        r.net.reset();
        assert!(r.net.running.is_none());
        // Frames after a reset stay in the backend.
        r.host.send(b"late").unwrap();
        let mut q = dummy_queue();
        assert!(!r.net.process_queue(RX, &mut q, &r.mem));
    }
}
