//! The stack thread: one mio event loop over the guest socket, the forwarded host
//! sockets and every flow's host socket, around one smoltcp `Interface` playing the
//! gateway.
//!
//! Each guest frame is first looked at here ([`Stack::route_guest_frame`]): DHCP is
//! answered directly, UDP is relayed directly (UDP needs no state machine), a TCP SYN
//! that opens an outbound flow is held until the host connect succeeds, and anything
//! the gateway should not see (spoofed sources, multicast, fragments, other protocols)
//! is dropped. What remains (ARP, ping, TCP segments) goes to smoltcp, whose TCP
//! sockets terminate the guest's connections; [`pump_flow`] moves bytes between each
//! smoltcp socket and its host `TcpStream`.

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4};
use std::os::unix::net::UnixDatagram as StdUnixDatagram;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::net::{TcpListener, TcpStream, UdpSocket, UnixDatagram};
use mio::{Events, Interest, Poll, Token};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::socket::tcp;
use smoltcp::wire::{
    ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol, HardwareAddress,
    IpAddress, IpCidr, IpEndpoint, IpListenEndpoint, IpProtocol, Ipv4Packet, Ipv4Repr, TcpPacket,
    UdpPacket, UdpRepr,
};

use crate::device::{FrameQueue, TX_SOFT_LIMIT_FRAMES};
use crate::frames::{self, DHCP_CLIENT_PORT, DHCP_SERVER_PORT, GATEWAY_ETHERNET};
use crate::{
    GATEWAY_ADDR, GUEST_ADDR, GUEST_MAC, HostSocket, PREFIX_LEN, PortForward, UDP_IDLE_TIMEOUT,
};

/// Socket buffer asked for on each end of the guest pair (capped by the kernel).
pub(crate) const PAIR_BUFFER_BYTES: usize = 4 << 20;
/// smoltcp buffer of each TCP flow, each way.
const TCP_BUFFER_BYTES: usize = 256 * 1024;
/// Largest guest frame accepted (longer messages are truncated by the kernel and dropped
/// by the parsers).
const GUEST_FRAME_BUFFER_BYTES: usize = 2048;
/// Guest frames read per round before the rest of the work gets a turn.
const GUEST_READ_BATCH: usize = 256;
/// Host connections accepted, or host datagrams read, per socket per round.
const HOST_READ_BATCH: usize = 64;
/// Rounds of work per wake-up before mio is polled again (without waiting).
const MAX_ROUNDS: usize = 64;
/// Limits that keep a misbehaving guest or host from exhausting memory.
const MAX_TCP_FLOWS: usize = 8192;
const MAX_UDP_FLOWS: usize = 4096;
/// First port of the gateway's ephemeral range (for forwarded flows and UDP peers).
const EPHEMERAL_FIRST: u16 = 49152;
/// How long a forwarded connection may wait for the guest's SYN-ACK, or an outbound one
/// for the host connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an aborted flow waits for its RST to reach the guest before it is dropped.
const ABORT_GRACE: Duration = Duration::from_secs(2);
/// Housekeeping period (UDP expiry, connect timeouts).
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// How often the guest's MAC is re-fed to smoltcp's neighbour cache (entries live 60 s).
const NEIGHBOR_REFRESH: Duration = Duration::from_secs(20);
/// Shortest timer wait: a guard against spinning on a socket that wants to send "now"
/// but cannot.
const MIN_TIMER_WAIT: Duration = Duration::from_millis(1);
/// The largest UDP datagram read from the host.
const HOST_DATAGRAM_BYTES: usize = 65536;

const GUEST_TOKEN: Token = Token(0);

/// Counters the tests read to check that flows are cleaned up.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    /// Live TCP flows (forwarded and outbound).
    pub(crate) tcp_flows: AtomicUsize,
    /// Live UDP mappings (forwarded peers and outbound flows).
    pub(crate) udp_mappings: AtomicUsize,
    /// Sockets in the smoltcp socket set.
    pub(crate) smoltcp_sockets: AtomicUsize,
}

/// A flow as the guest sees it: its own port and the far end it talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FlowKey {
    guest_port: u16,
    remote: SocketAddrV4,
}

/// A forwarded TCP host port.
struct Listener {
    socket: TcpListener,
    forward: PortForward,
    readable: bool,
}

/// A forwarded UDP host port.
struct UdpForward {
    socket: UdpSocket,
    forward: PortForward,
    readable: bool,
}

/// A host peer of a forwarded UDP port, reached by the guest at `10.0.2.2:<its port>`.
struct UdpPeer {
    forward: usize,
    peer: SocketAddr,
    last_active: Instant,
}

/// An outbound UDP flow of the guest, through a connected host socket.
struct UdpOutFlow {
    socket: UdpSocket,
    key: FlowKey,
    last_active: Instant,
    readable: bool,
}

/// One TCP connection: a smoltcp socket towards the guest, a host stream the other way.
struct TcpFlow {
    stream: TcpStream,
    key: FlowKey,
    /// None while an outbound host connect is in progress.
    socket: Option<SocketHandle>,
    /// Outbound: the guest's latest SYN, fed to smoltcp once the host connect is done.
    syn: Option<Vec<u8>>,
    outbound: bool,
    host_readable: bool,
    host_writable: bool,
    /// The host closed its sending side; the guest was sent a FIN.
    host_eof: bool,
    /// The guest's FIN was passed on (host write side shut down).
    host_write_shut: bool,
    /// Aborted (a reset on either side): waits for the RST to the guest to go out.
    failed_at: Option<Instant>,
    created: Instant,
}

impl TcpFlow {
    fn new(stream: TcpStream, key: FlowKey, socket: Option<SocketHandle>, now: Instant) -> Self {
        TcpFlow {
            stream,
            key,
            socket,
            syn: None,
            outbound: socket.is_none(),
            host_readable: false,
            host_writable: false,
            host_eof: false,
            host_write_shut: false,
            failed_at: None,
            created: now,
        }
    }
}

/// How a TCP flow ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Finish {
    /// Both sides closed cleanly: close the host stream normally.
    Graceful,
    /// Something reset: reset the host stream too.
    Reset,
    /// The outbound host connect failed: reset the guest's connection attempt.
    ConnectFailed,
}

/// What to do with a guest frame.
enum Route {
    Drop,
    /// Hand it to smoltcp.
    Stack,
    /// Keep it as the SYN of this (connecting) outbound flow.
    Stash(usize),
}

/// The whole user-mode network, run by [`Stack::run`] on the stack thread.
pub(crate) struct Stack {
    poll: Poll,
    guest: UnixDatagram,
    guest_readable: bool,
    guest_writable: bool,
    /// The kernel reported the guest end's hang-up.
    guest_hup: bool,
    guest_closed: bool,
    guest_mac: EthernetAddress,
    guest_mac_fed_at: Option<Instant>,
    iface: Interface,
    sockets: SocketSet<'static>,
    device: FrameQueue,
    epoch: Instant,
    allow_outbound: bool,
    listeners: Vec<Listener>,
    udp_forwards: Vec<UdpForward>,
    tcp_flows: HashMap<usize, TcpFlow>,
    tcp_keys: HashMap<FlowKey, usize>,
    tcp_gateway_ports: HashSet<u16>,
    udp_peers: HashMap<u16, UdpPeer>,
    udp_peer_ports: HashMap<(usize, SocketAddr), u16>,
    udp_out: HashMap<usize, UdpOutFlow>,
    udp_out_keys: HashMap<FlowKey, usize>,
    first_dynamic_token: usize,
    next_token: usize,
    next_port: u16,
    next_ident: u16,
    next_sweep: Instant,
    more_work: bool,
    udp_buffer: Vec<u8>,
    stats: Arc<Stats>,
}

impl Stack {
    /// Builds the stack around our end of the guest pair and the bound forwards.
    pub(crate) fn new(
        guest: StdUnixDatagram,
        bound: Vec<(PortForward, HostSocket)>,
        allow_outbound: bool,
    ) -> io::Result<Self> {
        let poll = Poll::new()?;
        let mut guest = UnixDatagram::from_std(guest);
        poll.registry().register(
            &mut guest,
            GUEST_TOKEN,
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let tcp_count = bound
            .iter()
            .filter(|(_, socket)| matches!(socket, HostSocket::Tcp(_)))
            .count();
        let mut listeners = Vec::new();
        let mut udp_forwards = Vec::new();
        for (forward, socket) in bound {
            match socket {
                HostSocket::Tcp(listener) => {
                    let mut socket = TcpListener::from_std(listener);
                    let token = Token(1 + listeners.len());
                    poll.registry()
                        .register(&mut socket, token, Interest::READABLE)?;
                    listeners.push(Listener {
                        socket,
                        forward,
                        readable: true,
                    });
                }
                HostSocket::Udp(udp) => {
                    let mut socket = UdpSocket::from_std(udp);
                    let token = Token(1 + tcp_count + udp_forwards.len());
                    poll.registry()
                        .register(&mut socket, token, Interest::READABLE)?;
                    udp_forwards.push(UdpForward {
                        socket,
                        forward,
                        readable: true,
                    });
                }
            }
        }
        let first_dynamic_token = 1 + listeners.len() + udp_forwards.len();

        let mut device = FrameQueue::default();
        let epoch = Instant::now();
        let seed = std::collections::hash_map::RandomState::new()
            .hash_one((std::time::SystemTime::now(), std::process::id()));
        let mut config = Config::new(HardwareAddress::Ethernet(GATEWAY_ETHERNET));
        config.random_seed = seed;
        let mut iface = Interface::new(config, &mut device, smoltcp::time::Instant::ZERO);
        iface.update_ip_addrs(|addrs| {
            let _ = addrs.push(IpCidr::new(IpAddress::Ipv4(GATEWAY_ADDR), PREFIX_LEN));
        });
        // The gateway terminates flows to any address (outbound flows, and the resets
        // that refuse them).
        iface.set_any_ip(true);
        let _ = iface.routes_mut().add_default_ipv4_route(GATEWAY_ADDR);

        let port_span = u64::from(u16::MAX - EPHEMERAL_FIRST) + 1;
        let next_port = EPHEMERAL_FIRST + u16::try_from(seed % port_span).unwrap_or(0);
        Ok(Stack {
            poll,
            guest,
            guest_readable: true,
            guest_writable: true,
            guest_hup: false,
            guest_closed: false,
            guest_mac: EthernetAddress(GUEST_MAC),
            guest_mac_fed_at: None,
            iface,
            sockets: SocketSet::new(Vec::new()),
            device,
            epoch,
            allow_outbound,
            listeners,
            udp_forwards,
            tcp_flows: HashMap::new(),
            tcp_keys: HashMap::new(),
            tcp_gateway_ports: HashSet::new(),
            udp_peers: HashMap::new(),
            udp_peer_ports: HashMap::new(),
            udp_out: HashMap::new(),
            udp_out_keys: HashMap::new(),
            first_dynamic_token,
            next_token: first_dynamic_token,
            next_port,
            next_ident: 1,
            next_sweep: epoch + SWEEP_INTERVAL,
            more_work: true,
            udp_buffer: vec![0; HOST_DATAGRAM_BYTES],
            stats: Arc::new(Stats::default()),
        })
    }

    /// The counters this stack publishes.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn stats(&self) -> Arc<Stats> {
        Arc::clone(&self.stats)
    }

    /// Runs until the guest end of the pair is closed (or polling fails), then drops
    /// every host socket.
    pub(crate) fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        while !self.guest_closed {
            let timeout = self.poll_timeout();
            if let Err(error) = self.poll.poll(&mut events, timeout)
                && error.kind() != io::ErrorKind::Interrupted
            {
                break;
            }
            for event in events.iter() {
                self.on_event(event);
            }
            self.process();
        }
    }

    fn smol_now(&self, now: Instant) -> smoltcp::time::Instant {
        let micros = now.saturating_duration_since(self.epoch).as_micros();
        smoltcp::time::Instant::from_micros(i64::try_from(micros).unwrap_or(i64::MAX))
    }

    fn poll_timeout(&mut self) -> Option<Duration> {
        if self.more_work {
            return Some(Duration::ZERO);
        }
        let now = Instant::now();
        let mut timeout = self.next_sweep.saturating_duration_since(now);
        // While the guest is not reading, smoltcp's timers cannot send anything anyway;
        // the guest socket's writable event wakes us.
        if !self.device.tx_busy() {
            let smol_now = self.smol_now(now);
            if let Some(delay) = self.iface.poll_delay(smol_now, &self.sockets) {
                let delay = Duration::from_micros(delay.total_micros()).max(MIN_TIMER_WAIT);
                timeout = timeout.min(delay);
            }
        }
        Some(timeout)
    }

    fn on_event(&mut self, event: &Event) {
        let token = event.token().0;
        let readable = event.is_readable() || event.is_read_closed() || event.is_error();
        let writable = event.is_writable() || event.is_write_closed() || event.is_error();
        if event.token() == GUEST_TOKEN {
            self.guest_readable |= readable;
            self.guest_writable |= writable;
            self.guest_hup |= event.is_read_closed();
        } else if let Some(listener) = token
            .checked_sub(1)
            .and_then(|index| self.listeners.get_mut(index))
        {
            listener.readable |= readable;
        } else if let Some(forward) = token
            .checked_sub(1 + self.listeners.len())
            .and_then(|index| self.udp_forwards.get_mut(index))
        {
            forward.readable |= readable;
        } else if token >= self.first_dynamic_token {
            if let Some(flow) = self.tcp_flows.get_mut(&token) {
                flow.host_readable |= readable;
                flow.host_writable |= writable;
            } else if let Some(flow) = self.udp_out.get_mut(&token) {
                flow.readable |= readable;
            }
        }
    }

    /// Does all the work that is ready, in rounds, until a round changes nothing.
    fn process(&mut self) {
        self.more_work = false;
        let mut rounds = 0;
        loop {
            let now = Instant::now();
            let mut progress = self.accept_connections(now);
            progress |= self.read_guest(now);
            self.poll_iface(now);
            progress |= self.pump_tcp(now);
            progress |= self.pump_udp(now);
            self.poll_iface(now);
            progress |= self.flush_guest();
            if self.guest_closed {
                return;
            }
            rounds += 1;
            if !progress {
                break;
            }
            if rounds >= MAX_ROUNDS {
                self.more_work = true;
                break;
            }
        }
        let now = Instant::now();
        if now >= self.next_sweep {
            self.sweep(now);
            self.next_sweep = now + SWEEP_INTERVAL;
        }
        self.stats
            .tcp_flows
            .store(self.tcp_flows.len(), Ordering::Relaxed);
        self.stats
            .udp_mappings
            .store(self.udp_peers.len() + self.udp_out.len(), Ordering::Relaxed);
        self.stats
            .smoltcp_sockets
            .store(self.sockets.iter().count(), Ordering::Relaxed);
    }

    /// Runs smoltcp over every queued guest frame, then until it has nothing to emit.
    fn poll_iface(&mut self, now: Instant) {
        let smol_now = self.smol_now(now);
        self.iface
            .poll(smol_now, &mut self.device, &mut self.sockets);
    }

    fn alloc_token(&mut self) -> usize {
        let token = self.next_token;
        self.next_token = self
            .next_token
            .wrapping_add(1)
            .max(self.first_dynamic_token);
        token
    }

    fn alloc_ident(&mut self) -> u16 {
        let ident = self.next_ident;
        self.next_ident = self.next_ident.wrapping_add(1);
        ident
    }

    // ---- The guest socket ----

    fn read_guest(&mut self, now: Instant) -> bool {
        let mut progress = false;
        for _ in 0..GUEST_READ_BATCH {
            if !self.guest_readable || self.guest_closed {
                break;
            }
            let mut buffer = self.device.rx_buffer();
            buffer.resize(GUEST_FRAME_BUFFER_BYTES, 0);
            match self.guest.recv(&mut buffer) {
                // EOF once the kernel reported the hang-up; before that, an empty message
                // (not a frame: dropped).
                Ok(0) => self.guest_closed = self.guest_hup,
                Ok(len) => {
                    buffer.truncate(len);
                    progress = true;
                    self.on_guest_frame(buffer, now);
                    continue;
                }
                Err(error) => match error.kind() {
                    io::ErrorKind::WouldBlock => self.guest_readable = false,
                    io::ErrorKind::Interrupted => {}
                    _ => self.guest_closed = true,
                },
            }
            self.device.recycle_rx(buffer);
        }
        progress
    }

    fn flush_guest(&mut self) -> bool {
        let mut progress = false;
        while self.guest_writable {
            let Some(frame) = self.device.tx.front() else {
                break;
            };
            match self.guest.send(frame) {
                Ok(_) => {
                    progress = true;
                    if let Some(frame) = self.device.tx.pop_front() {
                        self.device.recycle_tx(frame);
                    }
                }
                Err(error) => match error.kind() {
                    io::ErrorKind::WouldBlock => self.guest_writable = false,
                    io::ErrorKind::Interrupted => {}
                    io::ErrorKind::BrokenPipe
                    | io::ErrorKind::ConnectionRefused
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::NotConnected => {
                        self.guest_closed = true;
                        break;
                    }
                    // Anything else is about this frame (e.g. too large): drop it.
                    _ => {
                        if let Some(frame) = self.device.tx.pop_front() {
                            self.device.recycle_tx(frame);
                        }
                    }
                },
            }
        }
        progress
    }

    fn on_guest_frame(&mut self, frame: Vec<u8>, now: Instant) {
        match self.route_guest_frame(&frame, now) {
            Route::Drop => self.device.recycle_rx(frame),
            Route::Stack => self.device.rx.push_back(frame),
            Route::Stash(token) => match self.tcp_flows.get_mut(&token) {
                Some(flow) => {
                    if let Some(old) = flow.syn.replace(frame) {
                        self.device.recycle_rx(old);
                    }
                }
                None => self.device.recycle_rx(frame),
            },
        }
    }

    /// Decides what becomes of a guest frame (and does it, for DHCP and UDP).
    fn route_guest_frame(&mut self, frame: &[u8], now: Instant) -> Route {
        let Ok(eth) = EthernetFrame::new_checked(frame) else {
            return Route::Drop;
        };
        let src_mac = eth.src_addr();
        let dst_mac = eth.dst_addr();
        if !src_mac.is_unicast() || (dst_mac != GATEWAY_ETHERNET && !dst_mac.is_broadcast()) {
            return Route::Drop;
        }
        match eth.ethertype() {
            EthernetProtocol::Arp => self.route_arp(eth.payload(), src_mac, now),
            EthernetProtocol::Ipv4 => self.route_ipv4(eth.payload(), src_mac, now),
            _ => Route::Drop,
        }
    }

    fn route_arp(&mut self, payload: &[u8], src_mac: EthernetAddress, now: Instant) -> Route {
        let Ok(packet) = ArpPacket::new_checked(payload) else {
            return Route::Drop;
        };
        let Ok(ArpRepr::EthernetIpv4 {
            source_hardware_addr,
            source_protocol_addr,
            target_protocol_addr,
            ..
        }) = ArpRepr::parse(&packet)
        else {
            return Route::Drop;
        };
        if source_protocol_addr == GUEST_ADDR && source_hardware_addr == src_mac {
            self.learn_guest_mac(src_mac, now);
        }
        // The gateway answers for the network's other hosts (so connects to them are
        // refused quickly rather than timing out in ARP), never for the guest itself.
        if target_protocol_addr == GUEST_ADDR || !is_network_host(target_protocol_addr) {
            return Route::Drop;
        }
        Route::Stack
    }

    fn route_ipv4(&mut self, payload: &[u8], src_mac: EthernetAddress, now: Instant) -> Route {
        let Ok(ip) = Ipv4Packet::new_checked(payload) else {
            return Route::Drop;
        };
        let Ok(repr) = Ipv4Repr::parse(&ip, &ChecksumCapabilities::default()) else {
            return Route::Drop;
        };
        if ip.more_frags() || ip.frag_offset() != 0 {
            return Route::Drop;
        }
        let (src, dst) = (repr.src_addr, repr.dst_addr);
        let body = ip.payload();
        if repr.next_header == IpProtocol::Udp
            && (src.is_unspecified() || src == GUEST_ADDR)
            && let Ok(udp) = UdpPacket::new_checked(body)
            && udp.src_port() == DHCP_CLIENT_PORT
            && udp.dst_port() == DHCP_SERVER_PORT
        {
            if UdpRepr::parse(
                &udp,
                &IpAddress::Ipv4(src),
                &IpAddress::Ipv4(dst),
                &ChecksumCapabilities::default(),
            )
            .is_ok()
            {
                frames::queue_dhcp_reply(&mut self.device, udp.payload());
            }
            return Route::Drop;
        }
        if src != GUEST_ADDR {
            return Route::Drop;
        }
        self.learn_guest_mac(src_mac, now);
        if !is_unicast(dst) || dst == GUEST_ADDR {
            return Route::Drop;
        }
        match repr.next_header {
            IpProtocol::Icmp if dst == GATEWAY_ADDR => Route::Stack,
            IpProtocol::Tcp => self.route_tcp(body, src, dst, now),
            IpProtocol::Udp => self.route_udp(body, src, dst, now),
            _ => Route::Drop,
        }
    }

    fn route_tcp(&mut self, body: &[u8], src: Ipv4Addr, dst: Ipv4Addr, now: Instant) -> Route {
        let Ok(tcp) = TcpPacket::new_checked(body) else {
            return Route::Drop;
        };
        let key = FlowKey {
            guest_port: tcp.src_port(),
            remote: SocketAddrV4::new(dst, tcp.dst_port()),
        };
        let opening = tcp.syn() && !tcp.ack() && !tcp.rst();
        if let Some(&token) = self.tcp_keys.get(&key) {
            let connecting = self
                .tcp_flows
                .get(&token)
                .is_some_and(|flow| flow.socket.is_none());
            return match (connecting, opening) {
                (false, _) => Route::Stack,
                (true, true) => Route::Stash(token),
                (true, false) => Route::Drop,
            };
        }
        if opening
            && self.allow_outbound
            && tcp.verify_checksum(&IpAddress::Ipv4(src), &IpAddress::Ipv4(dst))
            && let Some(target) = outbound_target(key.remote)
            && let Some(token) = self.open_outbound_tcp(key, target, now)
        {
            return Route::Stash(token);
        }
        // Forwarded flows' segments, and everything smoltcp should refuse with a RST.
        Route::Stack
    }

    fn route_udp(&mut self, body: &[u8], src: Ipv4Addr, dst: Ipv4Addr, now: Instant) -> Route {
        let Ok(udp) = UdpPacket::new_checked(body) else {
            return Route::Drop;
        };
        let Ok(repr) = UdpRepr::parse(
            &udp,
            &IpAddress::Ipv4(src),
            &IpAddress::Ipv4(dst),
            &ChecksumCapabilities::default(),
        ) else {
            return Route::Drop;
        };
        let data = udp.payload();
        if dst == GATEWAY_ADDR
            && let Some(peer) = self.udp_peers.get_mut(&repr.dst_port)
        {
            peer.last_active = now;
            if let Some(forward) = self.udp_forwards.get(peer.forward) {
                let _ = forward.socket.send_to(data, peer.peer);
            }
            return Route::Drop;
        }
        let key = FlowKey {
            guest_port: repr.src_port,
            remote: SocketAddrV4::new(dst, repr.dst_port),
        };
        if let Some(flow) = self
            .udp_out_keys
            .get(&key)
            .and_then(|token| self.udp_out.get_mut(token))
        {
            flow.last_active = now;
            let _ = flow.socket.send(data);
            return Route::Drop;
        }
        if self.allow_outbound
            && let Some(target) = outbound_target(key.remote)
            && self.open_outbound_udp(key, target, data, now)
        {
            return Route::Drop;
        }
        // smoltcp answers with ICMP port unreachable.
        Route::Stack
    }

    /// Where frames built here go: the guest's MAC once a frame showed it, broadcast
    /// before (the guest may use another MAC than the default).
    fn guest_mac_or_broadcast(&self) -> EthernetAddress {
        if self.guest_mac_fed_at.is_some() {
            self.guest_mac
        } else {
            EthernetAddress::BROADCAST
        }
    }

    /// Tells smoltcp where the guest is, without waiting for an ARP exchange.
    fn learn_guest_mac(&mut self, mac: EthernetAddress, now: Instant) {
        let stale = self
            .guest_mac_fed_at
            .is_none_or(|at| now.saturating_duration_since(at) >= NEIGHBOR_REFRESH);
        if mac != self.guest_mac || stale {
            self.guest_mac = mac;
            self.guest_mac_fed_at = Some(now);
            let buffer = self.device.rx_buffer();
            self.device
                .rx
                .push_back(frames::guest_arp_reply(buffer, mac));
        }
    }

    // ---- TCP ----

    fn accept_connections(&mut self, now: Instant) -> bool {
        let mut progress = false;
        for index in 0..self.listeners.len() {
            for _ in 0..HOST_READ_BATCH {
                let Some(listener) = self.listeners.get_mut(index) else {
                    break;
                };
                if !listener.readable {
                    break;
                }
                match listener.socket.accept() {
                    Ok((stream, _)) => {
                        progress = true;
                        self.open_forwarded_tcp(index, stream, now);
                    }
                    Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                    // WouldBlock, or e.g. out of file descriptors: wait for the next event.
                    Err(_) => listener.readable = false,
                }
            }
        }
        progress
    }

    fn open_forwarded_tcp(&mut self, index: usize, mut stream: TcpStream, now: Instant) {
        let Some(guest_port) = self.listeners.get(index).map(|l| l.forward.guest_port) else {
            return;
        };
        if self.tcp_flows.len() >= MAX_TCP_FLOWS {
            reset_stream(&stream);
            return;
        }
        let ports = &self.tcp_gateway_ports;
        let Some(port) = alloc_port(&mut self.next_port, |port| ports.contains(&port)) else {
            reset_stream(&stream);
            return;
        };
        let mut socket = new_tcp_socket();
        let remote = IpEndpoint::new(IpAddress::Ipv4(GUEST_ADDR), guest_port);
        let local = IpListenEndpoint {
            addr: Some(IpAddress::Ipv4(GATEWAY_ADDR)),
            port,
        };
        if socket.connect(self.iface.context(), remote, local).is_err() {
            reset_stream(&stream);
            return;
        }
        let token = self.alloc_token();
        if self
            .poll
            .registry()
            .register(
                &mut stream,
                Token(token),
                Interest::READABLE | Interest::WRITABLE,
            )
            .is_err()
        {
            reset_stream(&stream);
            return;
        }
        let _ = stream.set_nodelay(true);
        let handle = self.sockets.add(socket);
        let key = FlowKey {
            guest_port,
            remote: SocketAddrV4::new(GATEWAY_ADDR, port),
        };
        self.tcp_gateway_ports.insert(port);
        self.tcp_keys.insert(key, token);
        self.tcp_flows
            .insert(token, TcpFlow::new(stream, key, Some(handle), now));
    }

    fn open_outbound_tcp(
        &mut self,
        key: FlowKey,
        target: SocketAddrV4,
        now: Instant,
    ) -> Option<usize> {
        if self.tcp_flows.len() >= MAX_TCP_FLOWS {
            return None;
        }
        let mut stream = TcpStream::connect(SocketAddr::V4(target)).ok()?;
        let token = self.alloc_token();
        self.poll
            .registry()
            .register(
                &mut stream,
                Token(token),
                Interest::READABLE | Interest::WRITABLE,
            )
            .ok()?;
        let _ = stream.set_nodelay(true);
        self.tcp_keys.insert(key, token);
        self.tcp_flows
            .insert(token, TcpFlow::new(stream, key, None, now));
        Some(token)
    }

    /// The host connect of an outbound flow succeeded: let smoltcp answer the SYN.
    fn outbound_connected(&mut self, token: usize, now: Instant) {
        // smoltcp hands a SYN to the first listening socket for its destination: make
        // sure this flow's SYN is the only one it sees while its socket listens.
        self.poll_iface(now);
        let Some(flow) = self.tcp_flows.get_mut(&token) else {
            return;
        };
        let mut socket = new_tcp_socket();
        let endpoint = IpListenEndpoint {
            addr: Some(IpAddress::Ipv4(*flow.key.remote.ip())),
            port: flow.key.remote.port(),
        };
        let syn = flow.syn.take();
        match (socket.listen(endpoint), syn) {
            (Ok(()), Some(syn)) => {
                flow.socket = Some(self.sockets.add(socket));
                self.device.rx.push_back(syn);
                self.poll_iface(now);
            }
            (_, syn) => {
                flow.syn = syn;
                self.finish_tcp(token, Finish::ConnectFailed);
            }
        }
    }

    fn pump_tcp(&mut self, now: Instant) -> bool {
        let mut progress = false;
        let mut connected = Vec::new();
        let mut finished = Vec::new();
        for (&token, flow) in self.tcp_flows.iter_mut() {
            match flow.socket {
                None => {
                    if flow.host_writable {
                        match connect_result(&flow.stream) {
                            Some(true) => connected.push(token),
                            Some(false) => finished.push((token, Finish::ConnectFailed)),
                            None => flow.host_writable = false,
                        }
                    }
                }
                Some(handle) => {
                    let socket = self.sockets.get_mut::<tcp::Socket>(handle);
                    let (moved, finish) = pump_flow(flow, socket, now);
                    progress |= moved;
                    if let Some(finish) = finish {
                        finished.push((token, finish));
                    }
                }
            }
        }
        for token in connected {
            progress = true;
            self.outbound_connected(token, now);
        }
        for (token, finish) in finished {
            progress = true;
            self.finish_tcp(token, finish);
        }
        progress
    }

    fn finish_tcp(&mut self, token: usize, finish: Finish) {
        let Some(mut flow) = self.tcp_flows.remove(&token) else {
            return;
        };
        self.tcp_keys.remove(&flow.key);
        if !flow.outbound {
            self.tcp_gateway_ports.remove(&flow.key.remote.port());
        }
        if let Some(handle) = flow.socket {
            self.sockets.remove(handle);
        }
        let _ = self.poll.registry().deregister(&mut flow.stream);
        match finish {
            Finish::Graceful => {}
            Finish::Reset => reset_stream(&flow.stream),
            Finish::ConnectFailed => {
                // With no socket for it any more, smoltcp answers the SYN with a RST.
                if let Some(syn) = flow.syn.take() {
                    self.device.rx.push_back(syn);
                }
            }
        }
    }

    // ---- UDP ----

    fn open_outbound_udp(
        &mut self,
        key: FlowKey,
        target: SocketAddrV4,
        data: &[u8],
        now: Instant,
    ) -> bool {
        if self.udp_out.len() >= MAX_UDP_FLOWS {
            return false;
        }
        let socket = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).and_then(|socket| {
            socket.connect(target)?;
            socket.set_nonblocking(true)?;
            Ok(socket)
        });
        let Ok(socket) = socket else {
            return false;
        };
        let mut socket = UdpSocket::from_std(socket);
        let token = self.alloc_token();
        if self
            .poll
            .registry()
            .register(&mut socket, Token(token), Interest::READABLE)
            .is_err()
        {
            return false;
        }
        let _ = socket.send(data);
        self.udp_out_keys.insert(key, token);
        self.udp_out.insert(
            token,
            UdpOutFlow {
                socket,
                key,
                last_active: now,
                readable: true,
            },
        );
        true
    }

    fn pump_udp(&mut self, now: Instant) -> bool {
        let mut progress = false;
        let mut buffer = std::mem::take(&mut self.udp_buffer);
        for index in 0..self.udp_forwards.len() {
            for _ in 0..HOST_READ_BATCH {
                if self.device.tx.len() >= TX_SOFT_LIMIT_FRAMES {
                    break;
                }
                let Some(forward) = self.udp_forwards.get_mut(index) else {
                    break;
                };
                if !forward.readable {
                    break;
                }
                match forward.socket.recv_from(&mut buffer) {
                    Ok((len, peer)) => {
                        progress = true;
                        let data = buffer.get(..len).unwrap_or_default();
                        self.udp_from_peer(index, peer, data, now);
                    }
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                        forward.readable = false;
                    }
                    // Interrupted, or an ICMP error surfacing: try again.
                    Err(_) => {}
                }
            }
        }
        let guest_mac = self.guest_mac_or_broadcast();
        for flow in self.udp_out.values_mut() {
            for _ in 0..HOST_READ_BATCH {
                if !flow.readable || self.device.tx.len() >= TX_SOFT_LIMIT_FRAMES {
                    break;
                }
                match flow.socket.recv(&mut buffer) {
                    Ok(len) => {
                        progress = true;
                        flow.last_active = now;
                        let ident = self.next_ident;
                        self.next_ident = self.next_ident.wrapping_add(1);
                        frames::queue_udp(
                            &mut self.device,
                            guest_mac,
                            flow.key.remote,
                            SocketAddrV4::new(GUEST_ADDR, flow.key.guest_port),
                            ident,
                            buffer.get(..len).unwrap_or_default(),
                        );
                    }
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                        flow.readable = false;
                    }
                    Err(_) => {}
                }
            }
        }
        self.udp_buffer = buffer;
        progress
    }

    /// A datagram from host peer `peer` of forward `index`: to the guest, from the
    /// gateway port that stands for this peer.
    fn udp_from_peer(&mut self, index: usize, peer: SocketAddr, data: &[u8], now: Instant) {
        let Some(guest_port) = self.udp_forwards.get(index).map(|f| f.forward.guest_port) else {
            return;
        };
        let port = match self.udp_peer_ports.get(&(index, peer)) {
            Some(&port) => port,
            None => {
                if self.udp_peers.len() >= MAX_UDP_FLOWS {
                    return;
                }
                let peers = &self.udp_peers;
                let Some(port) = alloc_port(&mut self.next_port, |port| peers.contains_key(&port))
                else {
                    return;
                };
                self.udp_peer_ports.insert((index, peer), port);
                port
            }
        };
        self.udp_peers.insert(
            port,
            UdpPeer {
                forward: index,
                peer,
                last_active: now,
            },
        );
        let ident = self.alloc_ident();
        let guest_mac = self.guest_mac_or_broadcast();
        frames::queue_udp(
            &mut self.device,
            guest_mac,
            SocketAddrV4::new(GATEWAY_ADDR, port),
            SocketAddrV4::new(GUEST_ADDR, guest_port),
            ident,
            data,
        );
    }

    // ---- Housekeeping ----

    fn sweep(&mut self, now: Instant) {
        let idle = |last: Instant| now.saturating_duration_since(last) >= UDP_IDLE_TIMEOUT;
        self.udp_peers.retain(|_, peer| !idle(peer.last_active));
        let peers = &self.udp_peers;
        self.udp_peer_ports
            .retain(|_, port| peers.contains_key(port));
        let expired: Vec<usize> = self
            .udp_out
            .iter()
            .filter(|(_, flow)| idle(flow.last_active))
            .map(|(&token, _)| token)
            .collect();
        for token in expired {
            if let Some(mut flow) = self.udp_out.remove(&token) {
                self.udp_out_keys.remove(&flow.key);
                let _ = self.poll.registry().deregister(&mut flow.socket);
            }
        }

        let mut stuck = Vec::new();
        for (&token, flow) in self.tcp_flows.iter_mut() {
            if now.saturating_duration_since(flow.created) < CONNECT_TIMEOUT {
                continue;
            }
            match flow.socket {
                None => stuck.push(token),
                Some(handle) => {
                    let socket = self.sockets.get_mut::<tcp::Socket>(handle);
                    if matches!(
                        socket.state(),
                        tcp::State::SynSent | tcp::State::SynReceived
                    ) && flow.failed_at.is_none()
                    {
                        socket.abort();
                        flow.failed_at = Some(now);
                        self.more_work = true;
                    }
                }
            }
        }
        for token in stuck {
            self.finish_tcp(token, Finish::ConnectFailed);
        }
    }
}

/// A TCP socket for one flow: generous buffers (window scaling follows from their size),
/// no Nagle (the host side already batches).
fn new_tcp_socket() -> tcp::Socket<'static> {
    let mut socket = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; TCP_BUFFER_BYTES]),
        tcp::SocketBuffer::new(vec![0; TCP_BUFFER_BYTES]),
    );
    socket.set_nagle_enabled(false);
    socket
}

/// Moves bytes between a flow's smoltcp socket and its host stream, as far as both sides
/// allow, and says whether anything moved and whether the flow is over.
fn pump_flow(
    flow: &mut TcpFlow,
    socket: &mut tcp::Socket<'static>,
    now: Instant,
) -> (bool, Option<Finish>) {
    let mut progress = false;
    if flow.outbound && socket.state() == tcp::State::Listen {
        // The guest reset the handshake and smoltcp went back to listening.
        return (true, Some(Finish::Reset));
    }

    // Guest → host, only as fast as the host takes it (smoltcp's window closes meanwhile).
    while flow.failed_at.is_none()
        && flow.host_writable
        && !flow.host_write_shut
        && socket.can_recv()
    {
        let written = socket.recv(|data| match flow.stream.write(data) {
            Ok(len) => (len, Ok(len)),
            Err(error) => (0, Err(error)),
        });
        match written {
            Ok(Ok(0)) => flow.host_writable = false,
            Ok(Ok(_)) => progress = true,
            Ok(Err(error)) => match error.kind() {
                io::ErrorKind::WouldBlock => flow.host_writable = false,
                io::ErrorKind::Interrupted => {}
                _ => {
                    socket.abort();
                    flow.failed_at = Some(now);
                    progress = true;
                }
            },
            Err(_) => break,
        }
    }
    // The guest's FIN, once its data is all written.
    if flow.failed_at.is_none()
        && !flow.host_write_shut
        && !socket.can_recv()
        && guest_finished(socket)
    {
        let _ = flow.stream.shutdown(Shutdown::Write);
        flow.host_write_shut = true;
        progress = true;
    }

    // Host → guest, only while smoltcp's send buffer has room.
    while flow.failed_at.is_none() && flow.host_readable && !flow.host_eof && socket.may_send() {
        let read = socket.send(|space| {
            if space.is_empty() {
                return (0, None);
            }
            match flow.stream.read(space) {
                Ok(len) => (len, Some(Ok(len))),
                Err(error) => (0, Some(Err(error))),
            }
        });
        match read {
            Ok(None) | Err(_) => break,
            Ok(Some(Ok(0))) => {
                flow.host_eof = true;
                socket.close();
                progress = true;
            }
            Ok(Some(Ok(_))) => progress = true,
            Ok(Some(Err(error))) => match error.kind() {
                io::ErrorKind::WouldBlock => flow.host_readable = false,
                io::ErrorKind::Interrupted => {}
                _ => {
                    socket.abort();
                    flow.failed_at = Some(now);
                    progress = true;
                }
            },
        }
    }

    if let Some(failed_at) = flow.failed_at {
        // smoltcp forgets the peer once the RST is out.
        let sent = socket.remote_endpoint().is_none();
        if sent || now.saturating_duration_since(failed_at) >= ABORT_GRACE {
            return (true, Some(Finish::Reset));
        }
        return (progress, None);
    }
    let state = socket.state();
    if !matches!(state, tcp::State::Closed | tcp::State::TimeWait) {
        return (progress, None);
    }
    if socket.can_recv() && !flow.host_write_shut {
        // Deliver what the guest sent before it closed.
        return (progress, None);
    }
    if state == tcp::State::Closed && socket.remote_endpoint().is_some() {
        // smoltcp gave up (timeout) and still has a RST to send.
        flow.failed_at = Some(now);
        return (true, None);
    }
    let graceful = flow.host_eof && (flow.host_write_shut || guest_finished(socket));
    if graceful && !flow.host_write_shut {
        let _ = flow.stream.shutdown(Shutdown::Write);
    }
    (
        true,
        Some(if graceful {
            Finish::Graceful
        } else {
            Finish::Reset
        }),
    )
}

/// Whether the guest closed its sending side (FIN received, all data read).
fn guest_finished(socket: &mut tcp::Socket<'static>) -> bool {
    matches!(socket.recv(|_| (0, ())), Err(tcp::RecvError::Finished))
}

/// The outcome of a non-blocking connect after a writable event: Some(true) connected,
/// Some(false) failed, None still in progress.
fn connect_result(stream: &TcpStream) -> Option<bool> {
    match stream.take_error() {
        Ok(Some(_)) | Err(_) => Some(false),
        Ok(None) => match stream.peer_addr() {
            Ok(_) => Some(true),
            Err(error)
                if error.kind() == io::ErrorKind::NotConnected
                    || error.raw_os_error()
                        == Some(rustix::io::Errno::INPROGRESS.raw_os_error()) =>
            {
                None
            }
            Err(_) => Some(false),
        },
    }
}

/// Closes a host stream with a RST rather than a FIN (SO_LINGER 0), once it is dropped.
fn reset_stream(stream: &TcpStream) {
    let _ = rustix::net::sockopt::set_socket_linger(stream, Some(Duration::ZERO));
}

/// Picks the next free gateway port, round-robin over the ephemeral range so a port is
/// reused as late as possible.
fn alloc_port(next: &mut u16, in_use: impl Fn(u16) -> bool) -> Option<u16> {
    for _ in EPHEMERAL_FIRST..=u16::MAX {
        let port = *next;
        *next = if port == u16::MAX {
            EPHEMERAL_FIRST
        } else {
            port + 1
        };
        if port >= EPHEMERAL_FIRST && !in_use(port) {
            return Some(port);
        }
    }
    None
}

/// Whether `addr` can be the destination of a guest packet the gateway handles.
fn is_unicast(addr: Ipv4Addr) -> bool {
    let special = addr.is_unspecified() || addr.is_broadcast() || addr.is_multicast();
    let network_special = in_network(addr) && !is_network_host(addr);
    !special && !network_special
}

fn in_network(addr: Ipv4Addr) -> bool {
    let mask = u32::MAX << (32 - u32::from(PREFIX_LEN));
    u32::from(addr) & mask == u32::from(GATEWAY_ADDR) & mask
}

/// A host address inside the guest network (not its network or broadcast address).
fn is_network_host(addr: Ipv4Addr) -> bool {
    let host_bits = u32::from(addr) & !(u32::MAX << (32 - u32::from(PREFIX_LEN)));
    in_network(addr) && host_bits != 0 && host_bits != !(u32::MAX << (32 - u32::from(PREFIX_LEN)))
}

/// Where an outbound flow to `remote` goes on the host: the gateway is the host's
/// loopback; other addresses of the guest network are not reachable; the rest is itself.
fn outbound_target(remote: SocketAddrV4) -> Option<SocketAddrV4> {
    if remote.port() == 0 {
        return None;
    }
    if *remote.ip() == GATEWAY_ADDR {
        return Some(SocketAddrV4::new(Ipv4Addr::LOCALHOST, remote.port()));
    }
    if in_network(*remote.ip()) || remote.ip().is_loopback() || !is_unicast(*remote.ip()) {
        return None;
    }
    Some(remote)
}
