//! Tests of the whole stack: the real stack thread on one end of the pair, and on the
//! other end an in-memory "guest" — a second smoltcp interface (MAC 52:54:00:12:34:56,
//! 10.0.2.15/24, gateway 10.0.2.2) — while ordinary std sockets play the host's clients
//! and servers on 127.0.0.1.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, ChecksumCapabilities, DeviceCapabilities, Medium};
use smoltcp::socket::{dhcpv4, icmp, tcp, udp};
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, DhcpMessageType, DhcpPacket, DhcpRepr, EthernetAddress,
    EthernetFrame, EthernetProtocol, EthernetRepr, HardwareAddress, Icmpv4Packet, Icmpv4Repr,
    IpAddress, IpCidr, IpEndpoint, IpProtocol, Ipv4Packet, Ipv4Repr, TcpPacket, UdpPacket, UdpRepr,
};

use crate::stack::Stats;
use crate::{
    FRAME_MAX_BYTES, GATEWAY_ADDR, GATEWAY_MAC, GUEST_ADDR, GUEST_MAC, PortForward, Protocol,
    UserNet, UserNetConfig, UserNetError,
};

/// Guard against hangs only: every wait in these tests ends long before this.
const DEADLINE: Duration = Duration::from_secs(60);
/// Host sockets' read timeout, also a hang guard.
const HOST_TIMEOUT: Duration = Duration::from_secs(30);

// ---- The in-memory guest ----

/// The guest's link: the guest end of the pair as a smoltcp device.
struct GuestLink {
    socket: UnixDatagram,
}

struct GuestRx(Vec<u8>);

struct GuestTx<'a>(&'a UnixDatagram);

impl phy::RxToken for GuestRx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for GuestTx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = vec![0; len];
        let result = f(&mut frame);
        send_frame(self.0, &frame);
        result
    }
}

/// Sends a frame on a non-blocking guest end, waiting while the stack catches up.
fn send_frame(socket: &UnixDatagram, frame: &[u8]) {
    let start = Instant::now();
    loop {
        match socket.send(frame) {
            Err(error)
                if error.kind() == io::ErrorKind::WouldBlock && start.elapsed() < DEADLINE =>
            {
                thread::sleep(Duration::from_micros(200));
            }
            _ => return,
        }
    }
}

impl phy::Device for GuestLink {
    type RxToken<'a> = GuestRx;
    type TxToken<'a> = GuestTx<'a>;

    fn receive(
        &mut self,
        _timestamp: smoltcp::time::Instant,
    ) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let mut frame = vec![0; 4096];
        match self.socket.recv(&mut frame) {
            Ok(len) if len > 0 => {
                frame.truncate(len);
                Some((GuestRx(frame), GuestTx(&self.socket)))
            }
            _ => None,
        }
    }

    fn transmit(&mut self, _timestamp: smoltcp::time::Instant) -> Option<Self::TxToken<'_>> {
        Some(GuestTx(&self.socket))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = FRAME_MAX_BYTES;
        caps
    }
}

/// A guest: a smoltcp interface and its sockets, driven by the test thread.
struct Guest {
    iface: Interface,
    sockets: SocketSet<'static>,
    link: GuestLink,
    poll: mio::Poll,
    events: mio::Events,
    epoch: Instant,
}

static SEED: AtomicU64 = AtomicU64::new(0x5eed);

impl Guest {
    /// A guest on `socket`; `configured`: with its static address and route (else it
    /// has none, for DHCP).
    fn new(socket: UnixDatagram, configured: bool) -> Guest {
        socket.set_nonblocking(true).unwrap();
        let mut link = GuestLink { socket };
        let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress(GUEST_MAC)));
        config.random_seed = SEED.fetch_add(0x9e37_79b9, Ordering::Relaxed);
        let mut iface = Interface::new(config, &mut link, smoltcp::time::Instant::ZERO);
        if configured {
            iface.update_ip_addrs(|addrs| {
                addrs
                    .push(IpCidr::new(IpAddress::Ipv4(GUEST_ADDR), crate::PREFIX_LEN))
                    .unwrap();
            });
            iface
                .routes_mut()
                .add_default_ipv4_route(GATEWAY_ADDR)
                .unwrap();
        }
        let poll = mio::Poll::new().unwrap();
        poll.registry()
            .register(
                &mut mio::unix::SourceFd(&link.socket.as_raw_fd()),
                mio::Token(0),
                mio::Interest::READABLE,
            )
            .unwrap();
        Guest {
            iface,
            sockets: SocketSet::new(Vec::new()),
            link,
            poll,
            events: mio::Events::with_capacity(16),
            epoch: Instant::now(),
        }
    }

    fn now(&self) -> smoltcp::time::Instant {
        smoltcp::time::Instant::from_micros(self.epoch.elapsed().as_micros() as i64)
    }

    fn poll(&mut self) {
        let now = self.now();
        self.iface.poll(now, &mut self.link, &mut self.sockets);
    }

    /// Waits (at most 10 ms) for a frame or a guest timer.
    fn wait(&mut self) {
        let now = self.now();
        let delay = self
            .iface
            .poll_delay(now, &self.sockets)
            .map(|d| Duration::from_micros(d.total_micros()))
            .unwrap_or(Duration::MAX)
            .min(Duration::from_millis(10));
        let _ = self.poll.poll(&mut self.events, Some(delay));
    }

    /// Runs the guest until `step` returns a value (panics after [`DEADLINE`]).
    fn run_until<T>(&mut self, what: &str, mut step: impl FnMut(&mut Guest) -> Option<T>) -> T {
        let end = Instant::now() + DEADLINE;
        loop {
            self.poll();
            if let Some(value) = step(self) {
                self.poll();
                return value;
            }
            assert!(Instant::now() < end, "timed out waiting for {what}");
            self.wait();
        }
    }

    /// Runs the guest until `host` (a host-side thread) finishes, calling `step` on the
    /// way; returns the thread's result.
    fn serve_until<T>(&mut self, host: JoinHandle<T>, mut step: impl FnMut(&mut Guest)) -> T {
        self.run_until("the host side", |guest| {
            step(guest);
            host.is_finished().then_some(())
        });
        host.join().expect("the host side panicked")
    }

    fn listen(&mut self, port: u16, buffer_bytes: usize) -> SocketHandle {
        let mut socket = tcp_socket(buffer_bytes);
        socket.listen(port).unwrap();
        self.sockets.add(socket)
    }

    fn connect(&mut self, remote: (Ipv4Addr, u16), local_port: u16) -> SocketHandle {
        let mut socket = tcp_socket(64 * 1024);
        let remote = IpEndpoint::new(IpAddress::Ipv4(remote.0), remote.1);
        socket
            .connect(self.iface.context(), remote, local_port)
            .unwrap();
        self.sockets.add(socket)
    }

    fn tcp_socket(&mut self, handle: SocketHandle) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket>(handle)
    }
}

/// A guest TCP echo server on one port, with a pool of listening sockets (smoltcp has no
/// backlog: each socket serves one connection, then is replaced).
struct EchoServer {
    port: u16,
    buffer_bytes: usize,
    handles: Vec<SocketHandle>,
    served: usize,
    scratch: Vec<u8>,
}

impl EchoServer {
    fn new(guest: &mut Guest, port: u16, listeners: usize, buffer_bytes: usize) -> Self {
        let handles = (0..listeners)
            .map(|_| guest.listen(port, buffer_bytes))
            .collect();
        EchoServer {
            port,
            buffer_bytes,
            handles,
            served: 0,
            scratch: vec![0; 64 * 1024],
        }
    }

    fn step(&mut self, guest: &mut Guest) {
        for handle in self.handles.iter_mut() {
            let socket = guest.sockets.get_mut::<tcp::Socket>(*handle);
            loop {
                let room = socket.send_capacity() - socket.send_queue();
                if room == 0 || !socket.can_recv() || !socket.may_send() {
                    break;
                }
                let len = room.min(self.scratch.len());
                let got = socket.recv_slice(&mut self.scratch[..len]).unwrap_or(0);
                if got == 0 {
                    break;
                }
                assert_eq!(socket.send_slice(&self.scratch[..got]).unwrap(), got);
            }
            if socket.state() == tcp::State::CloseWait
                && !socket.can_recv()
                && socket.send_queue() == 0
            {
                socket.close();
            }
            if matches!(socket.state(), tcp::State::Closed | tcp::State::TimeWait) {
                guest.sockets.remove(*handle);
                let mut socket = tcp_socket(self.buffer_bytes);
                socket.listen(self.port).unwrap();
                *handle = guest.sockets.add(socket);
                self.served += 1;
            }
        }
    }
}

// ---- Setup helpers ----

fn tcp_socket(buffer_bytes: usize) -> tcp::Socket<'static> {
    tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; buffer_bytes]),
        tcp::SocketBuffer::new(vec![0; buffer_bytes]),
    )
}

fn forward(protocol: Protocol, guest_port: u16) -> PortForward {
    PortForward {
        protocol,
        host_addr: Ipv4Addr::LOCALHOST,
        host_port: 0,
        guest_port,
    }
}

/// A running stack (on its own thread) with a configured guest attached.
struct Setup {
    guest: Guest,
    forwards: Vec<PortForward>,
    stats: Arc<Stats>,
    thread: JoinHandle<()>,
}

fn start(forwards: Vec<PortForward>, allow_outbound: bool) -> Setup {
    start_with(forwards, allow_outbound, true)
}

fn start_with(forwards: Vec<PortForward>, allow_outbound: bool, configured: bool) -> Setup {
    let net = UserNet::bind(UserNetConfig {
        forwards,
        allow_outbound,
    })
    .unwrap();
    let forwards = net.forwards();
    let (guest_end, stack) = net.into_stack().unwrap();
    let stats = stack.stats();
    let thread = thread::spawn(move || stack.run());
    Setup {
        guest: Guest::new(guest_end, configured),
        forwards,
        stats,
        thread,
    }
}

fn host_connect(port: u16) -> TcpStream {
    let stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
    stream.set_read_timeout(Some(HOST_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(HOST_TIMEOUT)).unwrap();
    stream
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ seed.wrapping_mul(31))
        .collect()
}

fn is_closed_or_reset(result: io::Result<usize>) -> bool {
    match result {
        Ok(0) => true,
        Err(error) => error.kind() == io::ErrorKind::ConnectionReset,
        Ok(_) => false,
    }
}

// ---- PortForward parsing and binding ----

#[test]
fn parse_forward_accepts_documented_forms() {
    let parse = |text: &str| text.parse::<PortForward>().unwrap();
    let local = Ipv4Addr::LOCALHOST;
    let expect = |protocol, host_addr, host_port, guest_port| PortForward {
        protocol,
        host_addr,
        host_port,
        guest_port,
    };
    assert_eq!(parse("8080:80"), expect(Protocol::Tcp, local, 8080, 80));
    assert_eq!(parse("8080:80/tcp"), expect(Protocol::Tcp, local, 8080, 80));
    assert_eq!(parse("5353:53/udp"), expect(Protocol::Udp, local, 5353, 53));
    assert_eq!(parse("8080:80/UDP"), expect(Protocol::Udp, local, 8080, 80));
    assert_eq!(
        parse("127.0.0.1:8080:80"),
        expect(Protocol::Tcp, local, 8080, 80)
    );
    assert_eq!(
        parse("0.0.0.0:8080:80/udp"),
        expect(Protocol::Udp, Ipv4Addr::UNSPECIFIED, 8080, 80)
    );
    assert_eq!(
        parse("0.0.0.0:8080:80/udp").to_string(),
        "0.0.0.0:8080:80/udp"
    );
}

#[test]
fn parse_forward_rejects_bad_forms_naming_the_part() {
    let cases = [
        ("8080", "found 1"),
        ("", "found 1"),
        ("1:2:3:4", "found 4"),
        ("80800:80", "host port `80800`"),
        ("0:80", "host port `0`"),
        ("8080:http", "guest port `http`"),
        ("8080:", "guest port ``"),
        ("8080:80/sctp", "unknown protocol `sctp`"),
        ("localhost:8080:80", "`localhost` is not an IPv4 address"),
        ("::1:8080:80", "found 5"),
    ];
    for (text, part) in cases {
        let error = text.parse::<PortForward>().unwrap_err();
        assert!(matches!(error, UserNetError::InvalidForward { .. }));
        let message = error.to_string();
        assert!(message.contains(part), "{text}: {message}");
        assert!(message.contains(&format!("`{text}`")), "{text}: {message}");
        assert!(message.contains("accepted forms"), "{text}: {message}");
        assert!(message.contains("5353:53/udp"), "{text}: {message}");
    }
}

#[test]
fn bind_reports_port_in_use() {
    let taken = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut busy = forward(Protocol::Tcp, 80);
    busy.host_port = port;
    let error = UserNet::bind(UserNetConfig {
        forwards: vec![busy],
        allow_outbound: false,
    })
    .unwrap_err();
    assert!(matches!(error, UserNetError::PortInUse { .. }), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains(&format!("host port {port} (tcp) is in use")),
        "{message}"
    );
    assert!(message.contains("pick another HOST port"), "{message}");

    let udp_taken = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let mut busy = forward(Protocol::Udp, 53);
    busy.host_port = udp_taken.local_addr().unwrap().port();
    let error = UserNet::bind(UserNetConfig {
        forwards: vec![busy],
        allow_outbound: false,
    })
    .unwrap_err();
    assert!(error.to_string().contains("(udp) is in use"), "{error}");

    let twice = "8080:80".parse::<PortForward>().unwrap();
    let error = UserNet::bind(UserNetConfig {
        forwards: vec![twice, twice],
        allow_outbound: false,
    })
    .unwrap_err();
    assert!(matches!(error, UserNetError::DuplicateForward { .. }));
    assert!(error.to_string().contains("forwarded twice"), "{error}");
}

// ---- TCP forwarding ----

#[test]
fn tcp_echo_through_forward() {
    let mut setup = start(vec![forward(Protocol::Tcp, 80)], false);
    let mut echo = EchoServer::new(&mut setup.guest, 80, 4, 64 * 1024);
    let port = setup.forwards[0].host_port;
    let host = thread::spawn(move || {
        let mut stream = host_connect(port);
        stream.write_all(b"hello, guest").unwrap();
        let mut reply = [0; 12];
        stream.read_exact(&mut reply).unwrap();
        reply
    });
    let reply = setup.guest.serve_until(host, |guest| echo.step(guest));
    assert_eq!(&reply, b"hello, guest");
}

#[test]
fn tcp_large_transfer_both_ways() {
    const BYTES: usize = 1 << 20;
    let mut setup = start(vec![forward(Protocol::Tcp, 80)], false);
    let mut echo = EchoServer::new(&mut setup.guest, 80, 2, 64 * 1024);
    let port = setup.forwards[0].host_port;
    let host = thread::spawn(move || {
        let stream = host_connect(port);
        let mut writer = stream.try_clone().unwrap();
        let sender = thread::spawn(move || {
            writer.write_all(&pattern(BYTES, 7)).unwrap();
            writer.shutdown(Shutdown::Write).unwrap();
        });
        let mut received = Vec::with_capacity(BYTES);
        (&stream).read_to_end(&mut received).unwrap();
        sender.join().unwrap();
        received
    });
    let received = setup.guest.serve_until(host, |guest| echo.step(guest));
    assert_eq!(received.len(), BYTES);
    assert!(received == pattern(BYTES, 7), "echoed bytes differ");
}

#[test]
fn tcp_half_close_both_ways() {
    let mut setup = start(vec![forward(Protocol::Tcp, 80)], false);
    let port = setup.forwards[0].host_port;

    // The host half-closes after its request; the guest still answers, then closes.
    let server = setup.guest.listen(80, 16 * 1024);
    let host = thread::spawn(move || {
        let mut stream = host_connect(port);
        stream.write_all(b"request").unwrap();
        stream.shutdown(Shutdown::Write).unwrap();
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).unwrap();
        reply
    });
    let mut request = Vec::new();
    let mut answered = false;
    let reply = setup.guest.serve_until(host, |guest| {
        let socket = guest.tcp_socket(server);
        if socket.can_recv() {
            let mut buffer = [0; 64];
            let len = socket.recv_slice(&mut buffer).unwrap();
            request.extend_from_slice(&buffer[..len]);
        }
        if !answered && socket.state() == tcp::State::CloseWait {
            socket.send_slice(b"response after your FIN").unwrap();
            socket.close();
            answered = true;
        }
    });
    assert_eq!(request, b"request");
    assert_eq!(reply, b"response after your FIN");

    // The guest half-closes right after its greeting; the host still sends, then closes.
    let server = setup.guest.listen(80, 16 * 1024);
    let host = thread::spawn(move || {
        let mut stream = host_connect(port);
        let mut greeting = Vec::new();
        stream.read_to_end(&mut greeting).unwrap();
        stream.write_all(b"data after your FIN").unwrap();
        stream.shutdown(Shutdown::Write).unwrap();
        greeting
    });
    let mut greeted = false;
    let mut received = Vec::new();
    let greeting = setup.guest.serve_until(host, |guest| {
        let socket = guest.tcp_socket(server);
        if !greeted && socket.may_send() {
            socket.send_slice(b"greeting").unwrap();
            socket.close();
            greeted = true;
        }
        if socket.can_recv() {
            let mut buffer = [0; 64];
            let len = socket.recv_slice(&mut buffer).unwrap();
            received.extend_from_slice(&buffer[..len]);
        }
    });
    assert_eq!(greeting, b"greeting");
    // The host's data and FIN reach the guest after it closed its side.
    setup.guest.run_until("the host's data and FIN", |guest| {
        let socket = guest.tcp_socket(server);
        if socket.can_recv() {
            let mut buffer = [0; 64];
            let len = socket.recv_slice(&mut buffer).unwrap();
            received.extend_from_slice(&buffer[..len]);
        }
        matches!(socket.state(), tcp::State::TimeWait | tcp::State::Closed).then_some(())
    });
    assert_eq!(received, b"data after your FIN");
}

#[test]
fn tcp_guest_not_listening_closes_host_connection() {
    let mut setup = start(vec![forward(Protocol::Tcp, 81)], false);
    let port = setup.forwards[0].host_port;
    let host = thread::spawn(move || {
        let mut stream = host_connect(port);
        let mut buffer = [0; 16];
        stream.read(&mut buffer)
    });
    let result = setup.guest.serve_until(host, |_| {});
    let shown = format!("{result:?}");
    assert!(
        is_closed_or_reset(result),
        "expected EOF or reset, got {shown}"
    );
}

#[test]
fn tcp_resets_propagate_both_ways() {
    let mut setup = start(vec![forward(Protocol::Tcp, 80)], false);
    let port = setup.forwards[0].host_port;

    // The guest aborts an established connection: the host sees a reset.
    let server = setup.guest.listen(80, 16 * 1024);
    let host = thread::spawn(move || {
        let mut stream = host_connect(port);
        stream.write_all(b"x").unwrap();
        let mut buffer = [0; 16];
        stream.read(&mut buffer).map_err(|e| e.kind())
    });
    let result = setup.guest.serve_until(host, |guest| {
        let socket = guest.tcp_socket(server);
        if socket.can_recv() {
            socket.abort();
        }
    });
    assert_eq!(result, Err(io::ErrorKind::ConnectionReset));

    // The host resets (SO_LINGER 0): the guest's connection is reset too (closed
    // without ever receiving a FIN).
    let server = setup.guest.listen(80, 16 * 1024);
    let host = thread::spawn(move || {
        let mut stream = host_connect(port);
        stream.write_all(b"bye").unwrap();
        // The guest acknowledges the data before the reset.
        let mut ack = [0; 1];
        stream.read_exact(&mut ack).unwrap();
        rustix::net::sockopt::set_socket_linger(&stream, Some(Duration::ZERO)).unwrap();
        drop(stream);
    });
    let mut got = Vec::new();
    setup.guest.serve_until(host, |guest| {
        let socket = guest.tcp_socket(server);
        if socket.can_recv() {
            let mut buffer = [0; 16];
            let len = socket.recv_slice(&mut buffer).unwrap();
            got.extend_from_slice(&buffer[..len]);
            if got == b"bye" {
                socket.send_slice(b"k").unwrap();
            }
        }
    });
    assert_eq!(got, b"bye");
    setup
        .guest
        .run_until("the guest to see the reset", |guest| {
            (guest.tcp_socket(server).state() == tcp::State::Closed).then_some(())
        });
    assert!(
        !matches!(
            setup.guest.tcp_socket(server).recv(|_| (0, ())),
            Err(tcp::RecvError::Finished)
        ),
        "the guest saw a FIN, not a reset"
    );
}

#[test]
fn tcp_200_concurrent_connections() {
    const CONNECTIONS: usize = 200;
    let mut setup = start(vec![forward(Protocol::Tcp, 80)], false);
    let mut echo = EchoServer::new(&mut setup.guest, 80, CONNECTIONS + 10, 4096);
    let port = setup.forwards[0].host_port;
    let host = thread::spawn(move || {
        let streams: Vec<TcpStream> = (0..CONNECTIONS).map(|_| host_connect(port)).collect();
        for (i, mut stream) in streams.iter().enumerate() {
            stream
                .write_all(format!("connection {i:03}").as_bytes())
                .unwrap();
        }
        let mut served = 0;
        for (i, mut stream) in streams.iter().enumerate() {
            let mut reply = [0; 14];
            stream.read_exact(&mut reply).unwrap();
            assert_eq!(reply, format!("connection {i:03}").as_bytes());
            served += 1;
        }
        served
    });
    let served = setup.guest.serve_until(host, |guest| echo.step(guest));
    assert_eq!(served, CONNECTIONS);
}

#[test]
fn two_forwarded_ports_at_once() {
    let mut setup = start(
        vec![forward(Protocol::Tcp, 80), forward(Protocol::Tcp, 81)],
        false,
    );
    let mut echo = EchoServer::new(&mut setup.guest, 80, 2, 16 * 1024);
    let banner = setup.guest.listen(81, 16 * 1024);
    let (echo_port, banner_port) = (setup.forwards[0].host_port, setup.forwards[1].host_port);
    assert_ne!(echo_port, banner_port);
    let host = thread::spawn(move || {
        let mut first = host_connect(echo_port);
        let mut second = host_connect(banner_port);
        first.write_all(b"to port 80").unwrap();
        let mut echoed = [0; 10];
        first.read_exact(&mut echoed).unwrap();
        let mut text = Vec::new();
        second.read_to_end(&mut text).unwrap();
        (echoed, text)
    });
    let mut sent = false;
    let (echoed, text) = setup.guest.serve_until(host, |guest| {
        echo.step(guest);
        let socket = guest.tcp_socket(banner);
        if !sent && socket.may_send() {
            socket.send_slice(b"this is port 81").unwrap();
            socket.close();
            sent = true;
        }
    });
    assert_eq!(&echoed, b"to port 80");
    assert_eq!(text, b"this is port 81");
}

#[test]
fn closed_flows_are_cleaned_up() {
    const CONNECTIONS: usize = 1000;
    let mut setup = start(vec![forward(Protocol::Tcp, 80)], false);
    let mut echo = EchoServer::new(&mut setup.guest, 80, 8, 4096);
    let port = setup.forwards[0].host_port;
    let host = thread::spawn(move || {
        for i in 0..CONNECTIONS {
            let mut stream = host_connect(port);
            let message = format!("{i:04}");
            stream.write_all(message.as_bytes()).unwrap();
            let mut reply = [0; 4];
            stream.read_exact(&mut reply).unwrap();
            assert_eq!(reply, message.as_bytes());
        }
    });
    setup.guest.serve_until(host, |guest| echo.step(guest));
    let stats = Arc::clone(&setup.stats);
    setup
        .guest
        .run_until("every flow to be cleaned up", |guest| {
            echo.step(guest);
            (stats.tcp_flows.load(Ordering::Relaxed) == 0
                && stats.smoltcp_sockets.load(Ordering::Relaxed) == 0)
                .then_some(())
        });
    assert!(echo.served >= CONNECTIONS - 8, "served {}", echo.served);
}

// ---- UDP forwarding ----

#[test]
fn udp_echo_through_forward() {
    let mut setup = start(vec![forward(Protocol::Udp, 53)], false);
    let port = setup.forwards[0].host_port;
    let mut socket = udp::Socket::new(
        udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 16], vec![0; 16 * 1024]),
        udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 16], vec![0; 16 * 1024]),
    );
    socket.bind(53).unwrap();
    let handle = setup.guest.sockets.add(socket);
    let host = thread::spawn(move || {
        let peers: Vec<UdpSocket> = (0..2)
            .map(|_| {
                let peer = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
                peer.set_read_timeout(Some(Duration::from_millis(200)))
                    .unwrap();
                peer
            })
            .collect();
        let target = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let mut replies = Vec::new();
        for round in 0..2 {
            for (i, peer) in peers.iter().enumerate() {
                let message = format!("query {round} from peer {i}");
                // UDP may drop: retry a few times.
                let reply = (0..50).find_map(|_| {
                    peer.send_to(message.as_bytes(), target).unwrap();
                    let mut buffer = [0; 64];
                    let (len, from) = peer.recv_from(&mut buffer).ok()?;
                    Some((message.clone(), buffer[..len].to_vec(), from))
                });
                replies.push(reply.expect("no UDP reply"));
            }
        }
        replies
    });
    // What the guest saw: (payload, sender).
    let mut seen = Vec::new();
    let replies = setup.guest.serve_until(host, |guest| {
        let socket = guest.sockets.get_mut::<udp::Socket>(handle);
        while let Ok((data, meta)) = socket.recv() {
            let data = data.to_vec();
            socket.send_slice(&data, meta.endpoint).unwrap();
            seen.push((String::from_utf8(data).unwrap(), meta.endpoint));
        }
    });
    for (message, data, from) in &replies {
        assert_eq!(data, message.as_bytes());
        assert_eq!(*from, SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    }
    // Each host peer appears to the guest as the gateway, on a port of its own that
    // stays the same across its datagrams.
    let sender_of = |peer: usize| {
        let senders: Vec<IpEndpoint> = seen
            .iter()
            .filter(|(message, _)| message.ends_with(&format!("from peer {peer}")))
            .map(|(_, sender)| *sender)
            .collect();
        assert!(senders.len() >= 2, "{seen:?}");
        assert!(senders.iter().all(|s| *s == senders[0]), "{seen:?}");
        senders[0]
    };
    let (first, second) = (sender_of(0), sender_of(1));
    assert_eq!(first.addr, IpAddress::Ipv4(GATEWAY_ADDR));
    assert_eq!(second.addr, IpAddress::Ipv4(GATEWAY_ADDR));
    assert_ne!(first.port, second.port);
}

#[test]
fn udp_datagrams_larger_than_the_mtu_are_fragmented() {
    let mut queue = crate::device::FrameQueue::default();
    let payload = pattern(4000, 3);
    let src = std::net::SocketAddrV4::new(GATEWAY_ADDR, 50000);
    let dst = std::net::SocketAddrV4::new(GUEST_ADDR, 53);
    assert!(crate::frames::queue_udp(
        &mut queue,
        EthernetAddress(GUEST_MAC),
        src,
        dst,
        77,
        &payload
    ));
    assert_eq!(queue.tx.len(), 3);
    let mut datagram = vec![0; 8 + payload.len()];
    let mut covered = 0;
    for (i, frame) in queue.tx.iter().enumerate() {
        assert!(frame.len() <= FRAME_MAX_BYTES);
        let eth = EthernetFrame::new_checked(&frame[..]).unwrap();
        assert_eq!(eth.dst_addr(), EthernetAddress(GUEST_MAC));
        let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!(ip.ident(), 77);
        assert_eq!(ip.more_frags(), i < 2);
        let offset = usize::from(ip.frag_offset());
        datagram[offset..offset + ip.payload().len()].copy_from_slice(ip.payload());
        covered += ip.payload().len();
    }
    assert_eq!(covered, datagram.len());
    let udp = UdpPacket::new_checked(&datagram[..]).unwrap();
    assert!(udp.verify_checksum(&IpAddress::Ipv4(*src.ip()), &IpAddress::Ipv4(*dst.ip())));
    assert_eq!(udp.payload(), &payload[..]);
}

// ---- Gateway services ----

#[test]
fn guest_pings_the_gateway() {
    let mut setup = start(Vec::new(), false);
    let mut socket = icmp::Socket::new(
        icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 4], vec![0; 1024]),
        icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 4], vec![0; 1024]),
    );
    socket.bind(icmp::Endpoint::Ident(0x4b4e)).unwrap();
    let handle = setup.guest.sockets.add(socket);
    let mut sent_at = None::<Instant>;
    let reply = setup.guest.run_until("an echo reply", |guest| {
        let socket = guest.sockets.get_mut::<icmp::Socket>(handle);
        if sent_at.is_none_or(|at| at.elapsed() > Duration::from_secs(1)) {
            let request = Icmpv4Repr::EchoRequest {
                ident: 0x4b4e,
                seq_no: 1,
                data: b"kiln ping",
            };
            let buffer = socket
                .send(request.buffer_len(), IpAddress::Ipv4(GATEWAY_ADDR))
                .unwrap();
            request.emit(
                &mut Icmpv4Packet::new_unchecked(buffer),
                &ChecksumCapabilities::default(),
            );
            sent_at = Some(Instant::now());
        }
        let (data, from) = socket.recv().ok()?;
        let packet = Icmpv4Packet::new_checked(data).unwrap();
        let repr = Icmpv4Repr::parse(&packet, &ChecksumCapabilities::default()).unwrap();
        match repr {
            Icmpv4Repr::EchoReply {
                ident,
                seq_no,
                data,
            } => Some((from, ident, seq_no, data.to_vec())),
            _ => None,
        }
    });
    assert_eq!(
        reply,
        (
            IpAddress::Ipv4(GATEWAY_ADDR),
            0x4b4e,
            1,
            b"kiln ping".to_vec()
        )
    );
}

#[test]
fn guest_gets_a_dhcp_lease() {
    let mut setup = start_with(Vec::new(), false, false);
    let handle = setup.guest.sockets.add(dhcpv4::Socket::new());
    let (address, router) = setup.guest.run_until("a DHCP lease", |guest| {
        match guest.sockets.get_mut::<dhcpv4::Socket>(handle).poll() {
            Some(dhcpv4::Event::Configured(config)) => Some((config.address, config.router)),
            _ => None,
        }
    });
    assert_eq!(address.address(), GUEST_ADDR);
    assert_eq!(address.prefix_len(), crate::PREFIX_LEN);
    assert_eq!(router, Some(GATEWAY_ADDR));
}

// ---- Outbound connections ----

/// Runs a guest connect until it is established (true) or closed (false).
fn guest_connect_outcome(guest: &mut Guest, handle: SocketHandle) -> bool {
    guest.run_until("the connect to finish", |guest| {
        match guest.tcp_socket(handle).state() {
            tcp::State::Established => Some(true),
            tcp::State::Closed => Some(false),
            _ => None,
        }
    })
}

#[test]
fn outbound_tcp_refused_by_default() {
    let mut setup = start(Vec::new(), false);
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let to_host = setup.guest.connect((GATEWAY_ADDR, port), 40001);
    // A documentation address (TEST-NET-3): nothing is ever sent there.
    let to_outside = setup
        .guest
        .connect((Ipv4Addr::new(203, 0, 113, 7), 80), 40002);
    assert!(!guest_connect_outcome(&mut setup.guest, to_host));
    assert!(!guest_connect_outcome(&mut setup.guest, to_outside));
    assert_eq!(
        listener.accept().unwrap_err().kind(),
        io::ErrorKind::WouldBlock,
        "the host listener got a connection"
    );
}

#[test]
fn outbound_tcp_allowed_via_gateway() {
    let mut setup = start(Vec::new(), true);
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let host = thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(HOST_TIMEOUT)).unwrap();
        let mut request = [0; 10];
        stream.read_exact(&mut request).unwrap();
        stream.write_all(b"hello guest").unwrap();
        request
    });
    let handle = setup.guest.connect((GATEWAY_ADDR, port), 40003);
    let mut sent = false;
    let mut reply = Vec::new();
    setup.guest.run_until("the reply and FIN", |guest| {
        let socket = guest.tcp_socket(handle);
        if !sent && socket.may_send() {
            socket.send_slice(b"hello host").unwrap();
            sent = true;
        }
        if socket.can_recv() {
            let mut buffer = [0; 64];
            let len = socket.recv_slice(&mut buffer).unwrap();
            reply.extend_from_slice(&buffer[..len]);
        }
        (socket.state() == tcp::State::CloseWait && !socket.can_recv()).then_some(())
    });
    assert_eq!(&host.join().unwrap(), b"hello host");
    assert_eq!(reply, b"hello guest");
    setup.guest.tcp_socket(handle).close();

    // A host port nobody listens on: the guest's connect is reset.
    let handle = setup.guest.connect((GATEWAY_ADDR, free_port()), 40004);
    assert!(!guest_connect_outcome(&mut setup.guest, handle));
}

#[test]
fn outbound_udp_allowed_via_gateway() {
    let mut setup = start(Vec::new(), true);
    let server = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    server.set_read_timeout(Some(HOST_TIMEOUT)).unwrap();
    let port = server.local_addr().unwrap().port();
    let host = thread::spawn(move || {
        let mut buffer = [0; 64];
        let (len, from) = server.recv_from(&mut buffer).unwrap();
        server.send_to(&buffer[..len], from).unwrap();
        buffer[..len].to_vec()
    });
    let mut socket = udp::Socket::new(
        udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 4], vec![0; 4096]),
        udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 4], vec![0; 4096]),
    );
    socket.bind(40005).unwrap();
    let handle = setup.guest.sockets.add(socket);
    let target = IpEndpoint::new(IpAddress::Ipv4(GATEWAY_ADDR), port);
    setup
        .guest
        .sockets
        .get_mut::<udp::Socket>(handle)
        .send_slice(b"udp out", target)
        .unwrap();
    let (data, from) = setup.guest.run_until("the UDP reply", |guest| {
        let socket = guest.sockets.get_mut::<udp::Socket>(handle);
        let (data, meta) = socket.recv().ok()?;
        Some((data.to_vec(), meta.endpoint))
    });
    assert_eq!(host.join().unwrap(), b"udp out");
    assert_eq!(data, b"udp out");
    assert_eq!(from, target);
}

// ---- Lifecycle and robustness ----

/// Waits (at most [`DEADLINE`]) for the stack thread to end.
fn join_stack(thread: JoinHandle<()>) {
    let end = Instant::now() + DEADLINE;
    while !thread.is_finished() {
        assert!(Instant::now() < end, "the stack thread did not exit");
        thread::sleep(Duration::from_millis(10));
    }
    thread.join().unwrap();
}

#[test]
fn thread_exits_when_idle_guest_end_is_dropped() {
    // Nothing is ever sent to the guest: only the hang-up itself can end the thread.
    let net = UserNet::bind(UserNetConfig::default()).unwrap();
    let (guest_end, thread) = net.spawn().unwrap();
    thread::sleep(Duration::from_millis(50));
    drop(guest_end);
    join_stack(thread);
}

#[test]
fn thread_exits_when_guest_end_is_dropped() {
    let net = UserNet::bind(UserNetConfig {
        forwards: vec![forward(Protocol::Tcp, 80)],
        allow_outbound: false,
    })
    .unwrap();
    let port = net.forwards()[0].host_port;
    let (guest_end, thread) = net.spawn().unwrap();
    // A host connection in flight (the guest never answers it).
    let mut stream = host_connect(port);
    thread::sleep(Duration::from_millis(100));
    drop(guest_end);
    join_stack(thread);
    // Its host sockets are closed: the connection ends, the port is free again.
    let mut buffer = [0; 4];
    assert!(is_closed_or_reset(stream.read(&mut buffer)));
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
}

#[test]
fn guest_end_sees_eof_when_the_stack_stops() {
    let net = UserNet::bind(UserNetConfig::default()).unwrap();
    let (guest_end, stack) = net.into_stack().unwrap();
    drop(stack);
    let mut buffer = [0; 64];
    assert_eq!(guest_end.recv(&mut buffer).unwrap(), 0);
}

/// xorshift64: a small deterministic PRNG.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn fill(&mut self, bytes: &mut [u8]) {
        for byte in bytes {
            *byte = self.next() as u8;
        }
    }
}

/// An Ethernet+IPv4 frame from the guest carrying `payload` as `protocol`.
fn ipv4_frame(src: Ipv4Addr, dst: Ipv4Addr, protocol: IpProtocol, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0; 14 + 20 + payload.len()];
    EthernetRepr {
        src_addr: EthernetAddress(GUEST_MAC),
        dst_addr: EthernetAddress(GATEWAY_MAC),
        ethertype: EthernetProtocol::Ipv4,
    }
    .emit(&mut EthernetFrame::new_unchecked(&mut frame[..]));
    Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: protocol,
        payload_len: payload.len(),
        hop_limit: 64,
    }
    .emit(
        &mut Ipv4Packet::new_unchecked(&mut frame[14..]),
        &ChecksumCapabilities::default(),
    );
    frame[34..].copy_from_slice(payload);
    frame
}

/// A structurally valid frame with random contents: checksums are right, so it gets
/// past the parsers into the stack's and smoltcp's logic.
fn random_valid_frame(rng: &mut XorShift, forwarded_port: u16) -> Vec<u8> {
    let addresses = [
        GATEWAY_ADDR,
        GUEST_ADDR,
        Ipv4Addr::new(10, 0, 2, 3),
        Ipv4Addr::new(10, 0, 2, 255),
        Ipv4Addr::new(203, 0, 113, 9),
        Ipv4Addr::BROADCAST,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::new(224, 0, 0, 1),
    ];
    let src = if rng.below(4) == 0 {
        addresses[rng.below(addresses.len())]
    } else {
        GUEST_ADDR
    };
    let dst = addresses[rng.below(addresses.len())];
    let ports = [80, 67, 68, 53, forwarded_port, 49152, 0];
    let mut port = || {
        if rng.below(2) == 0 {
            ports[rng.below(ports.len())]
        } else {
            rng.next() as u16
        }
    };
    let (src_port, dst_port) = (port(), port());
    match rng.below(5) {
        0 | 1 => {
            let mut segment = vec![0; 20 + rng.below(64)];
            rng.fill(&mut segment);
            let mut tcp = TcpPacket::new_unchecked(&mut segment[..]);
            tcp.set_src_port(src_port);
            tcp.set_dst_port(dst_port);
            tcp.set_header_len(20 + 4 * rng.below(3) as u8);
            tcp.fill_checksum(&IpAddress::Ipv4(src), &IpAddress::Ipv4(dst));
            ipv4_frame(src, dst, IpProtocol::Tcp, &segment)
        }
        2 => {
            let mut data = vec![0; rng.below(300)];
            rng.fill(&mut data);
            let mut datagram = vec![0; 8 + data.len()];
            UdpRepr { src_port, dst_port }.emit(
                &mut UdpPacket::new_unchecked(&mut datagram[..]),
                &IpAddress::Ipv4(src),
                &IpAddress::Ipv4(dst),
                data.len(),
                |b| b.copy_from_slice(&data),
                &ChecksumCapabilities::default(),
            );
            ipv4_frame(src, dst, IpProtocol::Udp, &datagram)
        }
        3 => {
            let mut message = vec![0; 8 + rng.below(64)];
            rng.fill(&mut message);
            let mut icmp = Icmpv4Packet::new_unchecked(&mut message[..]);
            icmp.fill_checksum();
            ipv4_frame(src, dst, IpProtocol::Icmp, &message)
        }
        _ => {
            let mut frame = vec![0; 14 + 28];
            EthernetRepr {
                src_addr: EthernetAddress(GUEST_MAC),
                dst_addr: EthernetAddress::BROADCAST,
                ethertype: EthernetProtocol::Arp,
            }
            .emit(&mut EthernetFrame::new_unchecked(&mut frame[..]));
            ArpRepr::EthernetIpv4 {
                operation: if rng.below(2) == 0 {
                    ArpOperation::Request
                } else {
                    ArpOperation::Reply
                },
                source_hardware_addr: EthernetAddress(GUEST_MAC),
                source_protocol_addr: src,
                target_hardware_addr: EthernetAddress([0; 6]),
                target_protocol_addr: dst,
            }
            .emit(&mut ArpPacket::new_unchecked(&mut frame[14..]));
            frame
        }
    }
}

/// Valid frames of each kind the stack handles, to truncate and corrupt.
fn templates(forwarded_port: u16) -> Vec<Vec<u8>> {
    let mut syn = vec![0; 20];
    {
        let mut tcp = TcpPacket::new_unchecked(&mut syn[..]);
        tcp.set_src_port(40000);
        tcp.set_dst_port(forwarded_port);
        tcp.set_header_len(20);
        tcp.set_syn(true);
        tcp.set_window_len(1024);
        tcp.fill_checksum(&IpAddress::Ipv4(GUEST_ADDR), &IpAddress::Ipv4(GATEWAY_ADDR));
    }
    let discover = DhcpRepr {
        message_type: DhcpMessageType::Discover,
        transaction_id: 0x1234,
        secs: 0,
        client_hardware_address: EthernetAddress(GUEST_MAC),
        client_ip: Ipv4Addr::UNSPECIFIED,
        your_ip: Ipv4Addr::UNSPECIFIED,
        server_ip: Ipv4Addr::UNSPECIFIED,
        router: None,
        subnet_mask: None,
        relay_agent_ip: Ipv4Addr::UNSPECIFIED,
        broadcast: false,
        requested_ip: Some(GUEST_ADDR),
        client_identifier: None,
        server_identifier: None,
        parameter_request_list: Some(&[1, 3, 6]),
        dns_servers: None,
        max_size: None,
        lease_duration: None,
        renew_duration: None,
        rebind_duration: None,
        additional_options: &[],
    };
    let mut dhcp = vec![0; discover.buffer_len()];
    discover
        .emit(&mut DhcpPacket::new_unchecked(&mut dhcp[..]))
        .unwrap();
    let mut datagram = vec![0; 8 + dhcp.len()];
    UdpRepr {
        src_port: 68,
        dst_port: 67,
    }
    .emit(
        &mut UdpPacket::new_unchecked(&mut datagram[..]),
        &IpAddress::Ipv4(Ipv4Addr::UNSPECIFIED),
        &IpAddress::Ipv4(Ipv4Addr::BROADCAST),
        dhcp.len(),
        |b| b.copy_from_slice(&dhcp),
        &ChecksumCapabilities::default(),
    );
    vec![
        ipv4_frame(GUEST_ADDR, GATEWAY_ADDR, IpProtocol::Tcp, &syn),
        ipv4_frame(
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::BROADCAST,
            IpProtocol::Udp,
            &datagram,
        ),
        random_valid_frame(&mut XorShift(99), forwarded_port),
    ]
}

#[test]
fn random_frames_never_break_the_stack() {
    const FRAMES: usize = 20_000;
    // Outbound stays off: nothing the fuzzer sends may leave this machine.
    let mut setup = start(vec![forward(Protocol::Tcp, 80)], false);
    let port = setup.forwards[0].host_port;
    let templates = templates(80);
    let mut rng = XorShift(0x0123_4567_89ab_cdef);
    let socket = &setup.guest.link.socket;
    let mut drain = [0; 4096];
    for i in 0..FRAMES {
        let frame = match rng.below(5) {
            0 => {
                let mut frame = vec![0; rng.below(1600)];
                rng.fill(&mut frame);
                frame
            }
            1 => {
                let template = &templates[rng.below(templates.len())];
                template[..rng.below(template.len() + 1)].to_vec()
            }
            2 => {
                let mut frame = templates[rng.below(templates.len())].clone();
                for _ in 0..1 + rng.below(8) {
                    let at = rng.below(frame.len());
                    frame[at] ^= 1 << rng.below(8);
                }
                frame
            }
            _ => {
                let mut frame = random_valid_frame(&mut rng, 80);
                if rng.below(8) == 0 {
                    frame.truncate(rng.below(frame.len() + 1));
                }
                frame
            }
        };
        send_frame(socket, &frame);
        if i % 64 == 0 {
            // (0 bytes: the stack's end is gone; the assertion below says so.)
            while matches!(socket.recv(&mut drain), Ok(len) if len > 0) {}
            assert!(
                !setup.thread.is_finished(),
                "the stack thread died at frame {i}"
            );
        }
    }
    assert!(!setup.thread.is_finished(), "the stack thread died");

    // Forwarding still works.
    let mut echo = EchoServer::new(&mut setup.guest, 80, 4, 16 * 1024);
    let host = thread::spawn(move || {
        let mut stream = host_connect(port);
        stream.write_all(b"still alive").unwrap();
        let mut reply = [0; 11];
        stream.read_exact(&mut reply).unwrap();
        reply
    });
    let reply = setup.guest.serve_until(host, |guest| echo.step(guest));
    assert_eq!(&reply, b"still alive");
    assert!(!setup.thread.is_finished());
}
