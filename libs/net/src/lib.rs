//! # kiln-net — the TCP/IP stack and its socket API
//!
//! A smoltcp `Interface` over a [`kiln_netdev::NetDevice`], shared by the
//! app's threads and one stack thread (`netd`), with blocking sockets that
//! park the calling thread on the scheduler until the stack makes progress.
//!
//! - [`Net::up`]: finds the network device (virtio-net on VMs, the CLI's
//!   channel on linuxu) and configures it from the kernel options the
//!   `kiln` CLI passes — `ip=ADDR/PREFIX` and `gw=ADDR`, or `ip=dhcp` —
//!   then starts `netd` (which needs a scheduler: name one in
//!   `kiln_rt::main!`). [`Net::start`] takes any device and an
//!   [`IpConfig`].
//! - Sockets: [`tcp::TcpListener`] (a backlog of listening sockets that is
//!   refilled as connections are accepted), [`tcp::TcpStream`]
//!   (read/write/shutdown/close, timeouts, non-blocking mode),
//!   [`udp::UdpSocket`], [`Net::ping`] (ICMP echo), and [`Net::poll`] to
//!   wait on many sockets at once (event-driven servers). The socket set
//!   grows with the connections; closed sockets are reaped.
//! - ARP and answering pings are smoltcp's.
//!
//! How waiting works: an operation that cannot complete registers the
//! thread's waker with the smoltcp socket and parks; whoever polls the
//! stack next (an app thread after its own operation, or `netd` after a
//! receive interrupt or a protocol timer) wakes it.
//!
//! Neighbours: `kiln-netdev` (devices), `kiln-virtio-net`, smoltcp; apps
//! such as `apps/httpd`. Limits: IPv4 only, one interface, no DNS, no IP
//! fragmentation; a closed connection's TIME-WAIT is not kept (its socket
//! is reaped at once).
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

mod device;
#[cfg(feature = "ktest")]
pub mod ktests;
pub mod tcp;
pub mod udp;

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::net::{Ipv4Addr, SocketAddrV4};
use core::task::Waker;

use kiln_netdev::NetDevice;
use kiln_rt::thread::sync::Mutex;
use kiln_rt::thread::{self, Event, ThreadId};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::{dhcpv4, icmp, tcp as stcp};
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, IpAddress, IpCidr, Ipv4Cidr};

use device::Adapter;

/// Why a network operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetError {
    /// No network device: the VM was started without one.
    NoDevice,
    /// A network device is there but could not be set up (the cause).
    DeviceSetup(&'static str),
    /// The `ip=`/`gw=` options are malformed.
    BadConfig(&'static str),
    /// No address from DHCP within the time allowed.
    DhcpTimeout,
    /// The stack thread could not start (no scheduler named in `main!`).
    NoThreads,
    /// The operation would block (non-blocking mode).
    WouldBlock,
    /// The timeout passed first.
    TimedOut,
    /// The peer refused the connection (reset during the handshake).
    ConnectionRefused,
    /// The connection is closed for this direction (or was reset).
    NotConnected,
    /// The port is taken.
    AddrInUse,
    /// An argument is invalid (port 0 to connect to, an oversized
    /// datagram, a socket of another kind in `poll`).
    InvalidInput,
    /// No ephemeral port is free.
    NoPorts,
    /// No memory for the socket's buffers.
    OutOfMemory,
    /// No route to the destination (no address configured yet).
    Unreachable,
}

impl NetError {
    /// The Linux errno for this error (for the syscall layer).
    pub fn errno(self) -> i32 {
        match self {
            Self::NoDevice => 19,           // ENODEV
            Self::DeviceSetup(_) => 5,      // EIO
            Self::BadConfig(_) => 22,       // EINVAL
            Self::DhcpTimeout => 110,       // ETIMEDOUT
            Self::NoThreads => 11,          // EAGAIN
            Self::WouldBlock => 11,         // EAGAIN
            Self::TimedOut => 110,          // ETIMEDOUT
            Self::ConnectionRefused => 111, // ECONNREFUSED
            Self::NotConnected => 107,      // ENOTCONN
            Self::AddrInUse => 98,          // EADDRINUSE
            Self::InvalidInput => 22,       // EINVAL
            Self::NoPorts => 99,            // EADDRNOTAVAIL
            Self::OutOfMemory => 12,        // ENOMEM
            Self::Unreachable => 101,       // ENETUNREACH
        }
    }
}

impl core::fmt::Display for NetError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NoDevice => f.write_str(
                "no network device: run with -p HOST:GUEST (user-mode networking), --net user or --net tap:NAME, or set net = true in Kiln.toml",
            ),
            Self::DeviceSetup(why) => write!(f, "the network device could not be set up: {why}"),
            Self::BadConfig(what) => write!(f, "bad network options: {what}"),
            Self::DhcpTimeout => f.write_str("no DHCP lease within 10 s"),
            Self::NoThreads => f.write_str(
                "kiln-net needs threads: name a scheduler in kiln_rt::main!(main, heap = ..., sched = ...)",
            ),
            Self::WouldBlock => f.write_str("the operation would block"),
            Self::TimedOut => f.write_str("timed out"),
            Self::ConnectionRefused => f.write_str("connection refused"),
            Self::NotConnected => f.write_str("not connected"),
            Self::AddrInUse => f.write_str("address in use"),
            Self::InvalidInput => f.write_str("invalid argument"),
            Self::NoPorts => f.write_str("no free local port"),
            Self::OutOfMemory => f.write_str("no memory for the socket's buffers"),
            Self::Unreachable => f.write_str("network unreachable"),
        }
    }
}

/// How the interface gets its address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpConfig {
    /// A fixed address and prefix, and maybe a default gateway.
    Static {
        /// The interface's address.
        addr: Ipv4Addr,
        /// Its prefix length (24 for a /24).
        prefix_len: u8,
        /// The default gateway.
        gateway: Option<Ipv4Addr>,
    },
    /// Ask a DHCP server.
    Dhcp,
}

impl IpConfig {
    /// Parses `ip=` (`ADDR/PREFIX` or `dhcp`) and `gw=` option values.
    pub fn parse(ip: &str, gw: Option<&str>) -> Result<Self, NetError> {
        if ip == "dhcp" {
            return Ok(Self::Dhcp);
        }
        let (addr, prefix) = ip.split_once('/').ok_or(NetError::BadConfig(
            "ip= must be ADDR/PREFIX (10.0.2.15/24) or dhcp",
        ))?;
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| NetError::BadConfig("the address in ip= is not an IPv4 address"))?;
        let prefix_len: u8 = prefix
            .parse()
            .ok()
            .filter(|p| (1..=32).contains(p))
            .ok_or(NetError::BadConfig("the prefix in ip= must be 1..=32"))?;
        let gateway = gw
            .map(|g| {
                g.parse::<Ipv4Addr>()
                    .map_err(|_| NetError::BadConfig("gw= is not an IPv4 address"))
            })
            .transpose()?;
        Ok(Self::Static {
            addr,
            prefix_len,
            gateway,
        })
    }

    /// The configuration the kernel options give (`ip=`, `gw=`), or the
    /// user-mode network's default (10.0.2.15/24 via 10.0.2.2) without them.
    pub fn from_options() -> Result<Self, NetError> {
        match kiln_rt::boot::option("ip") {
            Some(ip) => Self::parse(ip, kiln_rt::boot::option("gw")),
            None => Ok(Self::Static {
                addr: kiln_abi::net::GUEST_ADDR,
                prefix_len: kiln_abi::net::PREFIX_LEN,
                gateway: Some(kiln_abi::net::GATEWAY_ADDR),
            }),
        }
    }
}

/// Receive and send buffer sizes of each TCP socket.
const TCP_RX_BYTES: usize = 32 * 1024;
const TCP_TX_BYTES: usize = 32 * 1024;
/// How long the stack thread polls the device after work before it sleeps
/// until an interrupt.
const BUSY_POLL_US: u64 = 1000;
/// A connection whose peer stops answering is aborted after this long.
const TCP_TIMEOUT_SECS: u64 = 60;
/// A connection closed by the app is aborted if it lingers this long.
const LINGER_NS: u64 = 30_000_000_000;
/// First ephemeral port.
const EPHEMERAL_FIRST: u16 = 49152;

pub(crate) fn now_ns() -> u64 {
    kiln_rt::hal::time::now_ns()
}

fn now() -> Instant {
    Instant::from_micros((now_ns() / 1000) as i64)
}

/// The stack's state (behind the shared lock).
pub(crate) struct Stack {
    pub(crate) iface: Interface,
    pub(crate) sockets: SocketSet<'static>,
    dev: Adapter,
    /// Sockets the app closed: reaped once closed (or after lingering).
    closing: Vec<(SocketHandle, u64)>,
    /// Listening ports: their sockets (listening, or holding a connection
    /// not yet accepted).
    pub(crate) listeners: BTreeMap<u16, tcp::Listening>,
    next_port: u16,
    dhcp: Option<SocketHandle>,
    /// The address is configured (statically or by DHCP).
    pub(crate) configured: bool,
    /// Threads to wake when the address changes (DHCP).
    config_waiters: Vec<ThreadId>,
}

impl Stack {
    /// Runs the interface: timers, ingress one frame at a time (so every
    /// listener has a listening socket for the next SYN), egress; then
    /// hands queued frames to the device and reaps closed sockets.
    pub(crate) fn poll(&mut self) {
        use smoltcp::iface::PollIngressSingleResult;
        let now = now();
        self.iface.poll_maintenance(now);
        loop {
            self.ensure_listening();
            match self
                .iface
                .poll_ingress_single(now, &mut self.dev, &mut self.sockets)
            {
                PollIngressSingleResult::None => break,
                _ => continue,
            }
        }
        while self
            .iface
            .poll_egress(now, &mut self.dev, &mut self.sockets)
            == smoltcp::iface::PollResult::SocketStateChanged
        {}
        self.poll_dhcp();
        self.dev.dev.flush();
        self.reap();
    }

    fn poll_dhcp(&mut self) {
        let Some(h) = self.dhcp else { return };
        let event = self.sockets.get_mut::<dhcpv4::Socket>(h).poll();
        match event {
            Some(dhcpv4::Event::Configured(cfg)) => {
                let cidr = cfg.address;
                self.iface.update_ip_addrs(|addrs| {
                    addrs.clear();
                    let _ = addrs.push(IpCidr::Ipv4(cidr));
                });
                match cfg.router {
                    Some(r) => {
                        let _ = self.iface.routes_mut().add_default_ipv4_route(r);
                    }
                    None => {
                        self.iface.routes_mut().remove_default_ipv4_route();
                    }
                }
                self.configured = true;
                for t in self.config_waiters.drain(..) {
                    thread::unpark(t);
                }
            }
            Some(dhcpv4::Event::Deconfigured) => {
                self.iface.update_ip_addrs(|addrs| addrs.clear());
                self.iface.routes_mut().remove_default_ipv4_route();
                self.configured = false;
            }
            None => {}
        }
    }

    fn reap(&mut self) {
        if self.closing.is_empty() {
            return;
        }
        let now = now_ns();
        let sockets = &mut self.sockets;
        self.closing.retain(|&(h, since)| {
            let s = sockets.get_mut::<stcp::Socket>(h);
            match s.state() {
                stcp::State::Closed | stcp::State::TimeWait => {
                    sockets.remove(h);
                    false
                }
                _ if now.saturating_sub(since) > LINGER_NS => {
                    s.abort();
                    true // removed once the RST is out (Closed)
                }
                _ => true,
            }
        });
    }

    /// Keeps [`tcp::IDLE_LISTENERS`] sockets listening on every listening
    /// port, while its connections waiting to be accepted are fewer than
    /// its backlog (a SYN beyond that is refused).
    fn ensure_listening(&mut self) {
        let mut wanted = Vec::new();
        for (port, l) in &self.listeners {
            let idle = l
                .handles
                .iter()
                .filter(|h| self.sockets.get::<stcp::Socket>(**h).state() == stcp::State::Listen)
                .count();
            let pending = l.handles.len() - idle;
            if idle < tcp::IDLE_LISTENERS && pending < l.backlog {
                wanted.push((*port, tcp::IDLE_LISTENERS - idle));
            }
        }
        for (port, n) in wanted {
            for _ in 0..n {
                // Without memory the next SYN is refused, as by a full backlog.
                let Ok(h) = self.new_tcp() else { return };
                if self.sockets.get_mut::<stcp::Socket>(h).listen(port).is_ok()
                    && let Some(l) = self.listeners.get_mut(&port)
                {
                    l.handles.push(h);
                } else {
                    self.sockets.remove(h);
                }
            }
        }
    }

    /// Hands a socket the app no longer uses to the reaper.
    pub(crate) fn close_later(&mut self, h: SocketHandle) {
        self.sockets.get_mut::<stcp::Socket>(h).close();
        self.closing.push((h, now_ns()));
    }

    /// A new TCP socket with the default buffers, or
    /// [`NetError::OutOfMemory`] when the heap cannot hold them.
    pub(crate) fn new_tcp(&mut self) -> Result<SocketHandle, NetError> {
        let buffer = |bytes: usize| -> Result<Vec<u8>, NetError> {
            let mut v = Vec::new();
            v.try_reserve_exact(bytes)
                .map_err(|_| NetError::OutOfMemory)?;
            v.resize(bytes, 0);
            Ok(v)
        };
        let mut s = stcp::Socket::new(
            stcp::SocketBuffer::new(buffer(TCP_RX_BYTES)?),
            stcp::SocketBuffer::new(buffer(TCP_TX_BYTES)?),
        );
        s.set_nagle_enabled(false);
        // A peer that stops answering (a half-open handshake, unacknowledged
        // data) is given up on, so such sockets are freed.
        s.set_timeout(Some(smoltcp::time::Duration::from_secs(TCP_TIMEOUT_SECS)));
        Ok(self.sockets.add(s))
    }

    /// A free ephemeral port (not listened on, not bound by a live socket).
    pub(crate) fn ephemeral_port(&mut self) -> Result<u16, NetError> {
        for _ in 0..(u16::MAX - EPHEMERAL_FIRST) {
            let port = self.next_port;
            self.next_port = if port == u16::MAX {
                EPHEMERAL_FIRST
            } else {
                port + 1
            };
            let in_use = self.listeners.contains_key(&port)
                || self.sockets.iter().any(|(_, s)| match s {
                    smoltcp::socket::Socket::Tcp(t) => {
                        t.local_endpoint().is_some_and(|e| e.port == port)
                    }
                    smoltcp::socket::Socket::Udp(u) => u.endpoint().port == port,
                    _ => false,
                });
            if !in_use {
                return Ok(port);
            }
        }
        Err(NetError::NoPorts)
    }
}

struct Shared {
    stack: Mutex<Stack>,
    wakeup: &'static Event,
    /// When the stack thread will poll next on its own (ns; 0 while it
    /// runs, `u64::MAX` when it waits for an interrupt only).
    netd_wakes_at_ns: core::sync::atomic::AtomicU64,
}

/// A handle on the network stack (cheap to clone; all clones share it).
#[derive(Clone)]
pub struct Net {
    shared: Arc<Shared>,
}

/// Wakes a parked thread (the waker sockets keep while it waits).
struct Unparker(ThreadId);

impl alloc::task::Wake for Unparker {
    fn wake(self: Arc<Self>) {
        thread::unpark(self.0);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        thread::unpark(self.0);
    }
}

/// What a socket is, for [`Net::poll`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SocketId {
    /// A TCP listener (by port).
    Listener(u16),
    /// A TCP connection or a UDP socket.
    Socket(SocketHandle),
}

/// One socket [`Net::poll`] watches: what to wait for, and what it found.
#[derive(Clone, Copy, Debug)]
pub struct PollItem {
    /// The socket.
    pub id: SocketId,
    /// Wait until it can be read (data, end of stream, a connection to
    /// accept).
    pub read: bool,
    /// Wait until it can be written (buffer space, or closed).
    pub write: bool,
    /// Set by `poll`: a read would not block.
    pub readable: bool,
    /// Set by `poll`: a write would not block.
    pub writable: bool,
}

impl PollItem {
    /// Watches `id` for reading.
    pub fn read(id: SocketId) -> Self {
        Self {
            id,
            read: true,
            write: false,
            readable: false,
            writable: false,
        }
    }
}

impl Net {
    /// Brings up the image's network: the device (virtio-net, or linuxu's
    /// channel) and the address from the kernel options.
    pub fn up() -> Result<Self, NetError> {
        let config = IpConfig::from_options()?;
        let dev: Box<dyn NetDevice> = if kiln_rt::boot::option("netchan").is_some() {
            Box::new(
                kiln_netdev::channel::Channel::open()
                    .map_err(|_| NetError::DeviceSetup("cannot route the channel's SIGIO"))?,
            )
        } else {
            use kiln_virtio::VirtioError;
            use kiln_virtio_net::VirtioNetError;
            Box::new(kiln_virtio_net::VirtioNet::probe().map_err(|e| match e {
                VirtioNetError::Virtio(VirtioError::NoDevice) => NetError::NoDevice,
                VirtioNetError::Virtio(VirtioError::Setup(step)) => NetError::DeviceSetup(step),
                VirtioNetError::Virtio(VirtioError::OutOfMemory) => NetError::OutOfMemory,
                VirtioNetError::Virtio(_) => NetError::DeviceSetup("the virtio transport failed"),
                VirtioNetError::Interrupt => {
                    NetError::DeviceSetup("its interrupt line cannot be routed (no IOAPIC?)")
                }
            })?)
        };
        Self::start(dev, config)
    }

    /// Starts the stack on `dev` with `config`, and its thread; with DHCP,
    /// returns once an address is leased (or fails after 10 s).
    pub fn start(dev: Box<dyn NetDevice>, config: IpConfig) -> Result<Self, NetError> {
        let net = Self::new(dev, config);
        let worker = net.clone();
        thread::spawn(move || worker.netd()).map_err(|_| NetError::NoThreads)?;
        if config == IpConfig::Dhcp {
            let deadline = now_ns() + 10_000_000_000;
            loop {
                {
                    let mut s = net.shared.stack.lock();
                    if s.configured {
                        break;
                    }
                    s.config_waiters.push(thread::current());
                }
                let now = now_ns();
                if now >= deadline {
                    return Err(NetError::DhcpTimeout);
                }
                thread::park_timeout_us((deadline - now) / 1000);
            }
        }
        Ok(net)
    }

    /// The stack without its thread (tests drive it with [`Net::poll_now`]).
    pub fn new(dev: Box<dyn NetDevice>, config: IpConfig) -> Self {
        let wakeup = dev.wakeup();
        let mac = dev.mac();
        let mut adapter = Adapter::new(dev);
        let mut cfg = Config::new(EthernetAddress(mac).into());
        let mut seed = [0u8; 8];
        kiln_rt::hal::random::fill(&mut seed);
        cfg.random_seed = u64::from_le_bytes(seed);
        let mut iface = Interface::new(cfg, &mut adapter, now());
        let mut sockets = SocketSet::new(Vec::new());
        let mut dhcp = None;
        let mut configured = false;
        match config {
            IpConfig::Static {
                addr,
                prefix_len,
                gateway,
            } => {
                iface.update_ip_addrs(|addrs| {
                    let _ = addrs.push(IpCidr::Ipv4(Ipv4Cidr::new(addr, prefix_len)));
                });
                if let Some(gw) = gateway {
                    let _ = iface.routes_mut().add_default_ipv4_route(gw);
                }
                configured = true;
            }
            IpConfig::Dhcp => dhcp = Some(sockets.add(dhcpv4::Socket::new())),
        }
        let port_seed = u16::from_le_bytes([seed[0], seed[1]]) % (u16::MAX - EPHEMERAL_FIRST);
        Self {
            shared: Arc::new(Shared {
                stack: Mutex::new(Stack {
                    iface,
                    sockets,
                    dev: adapter,
                    closing: Vec::new(),
                    listeners: BTreeMap::new(),
                    next_port: EPHEMERAL_FIRST + port_seed,
                    dhcp,
                    configured,
                    config_waiters: Vec::new(),
                }),
                wakeup,
                netd_wakes_at_ns: core::sync::atomic::AtomicU64::new(0),
            }),
        }
    }

    /// The interface's address (once configured).
    pub fn addr(&self) -> Option<Ipv4Addr> {
        let s = self.shared.stack.lock();
        s.iface.ipv4_addr()
    }

    /// Polls the stack once (the stack thread does this on its own; tests
    /// without threads call it).
    pub fn poll_now(&self) {
        self.shared.stack.lock().poll();
    }

    /// The stack thread: polls after every receive interrupt and protocol
    /// timer, sleeping in between.
    fn netd(self) {
        loop {
            let delay_us = {
                let mut s = self.shared.stack.lock();
                s.dev.dev.disarm_wakeup();
                s.poll();
                drop(s);
                // Busy-poll briefly (letting the app threads run) before
                // sleeping: under load the next frame comes without an
                // interrupt.
                let until = now_ns() + BUSY_POLL_US * 1000;
                let mut more = false;
                while now_ns() < until {
                    thread::yield_now();
                    if self.shared.stack.lock().dev.dev.has_rx() {
                        more = true;
                        break;
                    }
                }
                if more {
                    continue;
                }
                let mut s = self.shared.stack.lock();
                s.poll();
                if !s.dev.dev.arm_wakeup() {
                    continue; // a frame came in meanwhile
                }
                let Stack { iface, sockets, .. } = &mut *s;
                let delay_us = iface.poll_delay(now(), sockets).map(|d| d.total_micros());
                self.shared.netd_wakes_at_ns.store(
                    delay_us.map_or(u64::MAX, |us| now_ns().saturating_add(us * 1000)),
                    core::sync::atomic::Ordering::SeqCst,
                );
                delay_us
            };
            if delay_us != Some(0) {
                self.shared.wakeup.wait_timeout_us(delay_us);
            }
            self.shared
                .netd_wakes_at_ns
                .store(0, core::sync::atomic::Ordering::SeqCst);
        }
    }

    /// Runs `attempt` under the stack lock until it gives a result,
    /// parking in between (`attempt` registers the waker with the sockets
    /// it waits on). `timeout_us: None` waits without limit;
    /// `nonblocking` returns [`NetError::WouldBlock`] instead of waiting.
    pub(crate) fn block<T>(
        &self,
        timeout_us: Option<u64>,
        nonblocking: bool,
        mut attempt: impl FnMut(&mut Stack, &Waker) -> Option<Result<T, NetError>>,
    ) -> Result<T, NetError> {
        let deadline = timeout_us.map(|us| now_ns().saturating_add(us.saturating_mul(1000)));
        let waker = Waker::from(Arc::new(Unparker(thread::current())));
        loop {
            let result = {
                let mut s = self.shared.stack.lock();
                let r = attempt(&mut s, &waker);
                s.poll();
                self.kick_netd_if_needed(&mut s);
                r
            };
            if let Some(r) = result {
                return r;
            }
            if nonblocking {
                return Err(NetError::WouldBlock);
            }
            match deadline {
                Some(d) => {
                    let now = now_ns();
                    if now >= d {
                        return Err(NetError::TimedOut);
                    }
                    thread::park_timeout_us((d - now).div_ceil(1000));
                }
                None => thread::park(),
            }
        }
    }

    /// Runs `f` on the stack (then polls it).
    pub(crate) fn with<T>(&self, f: impl FnOnce(&mut Stack) -> T) -> T {
        let mut s = self.shared.stack.lock();
        let r = f(&mut s);
        s.poll();
        self.kick_netd_if_needed(&mut s);
        r
    }

    /// Wakes the stack thread when an app thread's poll started a timer
    /// (a retransmission, an ARP request) due before the thread's own
    /// wake-up: otherwise it would sleep past it.
    fn kick_netd_if_needed(&self, s: &mut Stack) {
        let Stack { iface, sockets, .. } = s;
        let Some(at) = iface.poll_at(now(), sockets) else {
            return;
        };
        let at_ns = u64::try_from(at.total_micros())
            .unwrap_or(0)
            .saturating_mul(1000);
        if at_ns
            < self
                .shared
                .netd_wakes_at_ns
                .load(core::sync::atomic::Ordering::SeqCst)
        {
            self.shared.wakeup.signal();
        }
    }

    /// Waits until one of `items` is ready as asked (or `timeout_us`
    /// passes); fills in their `readable`/`writable` and returns how many
    /// are ready (0 on timeout).
    pub fn poll(&self, items: &mut [PollItem], timeout_us: Option<u64>) -> Result<usize, NetError> {
        let r = self.block(timeout_us, false, |s, waker| {
            let mut ready = 0;
            for item in items.iter_mut() {
                let (r, w) = readiness(s, item.id, waker);
                item.readable = item.read && r;
                item.writable = item.write && w;
                if item.readable || item.writable {
                    ready += 1;
                }
            }
            (ready > 0).then_some(Ok(ready))
        });
        match r {
            Err(NetError::TimedOut) => Ok(0),
            other => other,
        }
    }

    /// Sends an ICMP echo request to `addr` and waits for the reply;
    /// returns the round trip in microseconds.
    pub fn ping(&self, addr: Ipv4Addr, timeout_us: u64) -> Result<u64, NetError> {
        use smoltcp::wire::{Icmpv4Packet, Icmpv4Repr};
        let ident = 0x4b4c;
        let payload = b"kiln ping";
        let handle = self.with(|s| {
            let mut sock = icmp::Socket::new(
                icmp::PacketBuffer::new(
                    alloc::vec![icmp::PacketMetadata::EMPTY; 4],
                    alloc::vec![0; 512],
                ),
                icmp::PacketBuffer::new(
                    alloc::vec![icmp::PacketMetadata::EMPTY; 4],
                    alloc::vec![0; 512],
                ),
            );
            let _ = sock.bind(icmp::Endpoint::Ident(ident));
            s.sockets.add(sock)
        });
        let sent_at = now_ns();
        let mut sent = false;
        let result = self.block(Some(timeout_us), false, |s, waker| {
            let caps = smoltcp::phy::ChecksumCapabilities::default();
            let sock = s.sockets.get_mut::<icmp::Socket>(handle);
            if !sent {
                let repr = Icmpv4Repr::EchoRequest {
                    ident,
                    seq_no: 1,
                    data: payload,
                };
                match sock.send(repr.buffer_len(), IpAddress::Ipv4(addr)) {
                    Ok(buf) => {
                        repr.emit(&mut Icmpv4Packet::new_unchecked(buf), &caps);
                        sent = true;
                    }
                    Err(_) => return Some(Err(NetError::Unreachable)),
                }
            }
            while sock.can_recv() {
                let Ok((data, from)) = sock.recv() else { break };
                if from != IpAddress::Ipv4(addr) {
                    continue;
                }
                let Ok(packet) = Icmpv4Packet::new_checked(data) else {
                    continue;
                };
                if let Ok(Icmpv4Repr::EchoReply { ident: i, .. }) =
                    Icmpv4Repr::parse(&packet, &caps)
                    && i == ident
                {
                    return Some(Ok((now_ns() - sent_at) / 1000));
                }
            }
            sock.register_recv_waker(waker);
            None
        });
        self.with(|s| {
            s.sockets.remove(handle);
        });
        result
    }
}

/// Whether `id` can be read and written without blocking; registers
/// `waker` for what is not ready.
fn readiness(s: &mut Stack, id: SocketId, waker: &Waker) -> (bool, bool) {
    match id {
        SocketId::Listener(port) => {
            let Some(listening) = s.listeners.get(&port) else {
                return (true, false); // closed: accept fails at once
            };
            let mut ready = false;
            for h in &listening.handles {
                let sock = s.sockets.get_mut::<stcp::Socket>(*h);
                if tcp::accept_ready(sock) {
                    ready = true;
                } else {
                    sock.register_recv_waker(waker);
                }
            }
            (ready, false)
        }
        SocketId::Socket(h) => match s.sockets.get_mut::<smoltcp::socket::Socket>(h) {
            smoltcp::socket::Socket::Tcp(sock) => {
                let r = sock.can_recv() || !sock.may_recv();
                let w = sock.can_send() || !sock.may_send();
                if !r {
                    sock.register_recv_waker(waker);
                }
                if !w {
                    sock.register_send_waker(waker);
                }
                (r, w)
            }
            smoltcp::socket::Socket::Udp(sock) => {
                let r = sock.can_recv();
                let w = sock.can_send();
                if !r {
                    sock.register_recv_waker(waker);
                }
                if !w {
                    sock.register_send_waker(waker);
                }
                (r, w)
            }
            _ => (true, true),
        },
    }
}

/// An IPv4 socket address from smoltcp's endpoint.
pub(crate) fn to_addr(e: smoltcp::wire::IpEndpoint) -> SocketAddrV4 {
    match e.addr {
        IpAddress::Ipv4(a) => SocketAddrV4::new(a, e.port),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_options_parse() {
        assert_eq!(IpConfig::parse("dhcp", None), Ok(IpConfig::Dhcp));
        assert_eq!(
            IpConfig::parse("10.0.2.15/24", Some("10.0.2.2")),
            Ok(IpConfig::Static {
                addr: Ipv4Addr::new(10, 0, 2, 15),
                prefix_len: 24,
                gateway: Some(Ipv4Addr::new(10, 0, 2, 2)),
            })
        );
        for bad in [
            "10.0.2.15",
            "10.0.2/24",
            "10.0.2.15/33",
            "10.0.2.15/0",
            "x/24",
        ] {
            assert!(
                matches!(IpConfig::parse(bad, None), Err(NetError::BadConfig(_))),
                "{bad}"
            );
        }
        assert!(IpConfig::parse("10.0.2.15/24", Some("gw")).is_err());
    }
}
