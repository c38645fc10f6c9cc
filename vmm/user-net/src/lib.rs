//! # kiln-user-net — rootless user-mode networking for Kiln guests
//!
//! Gives a VM guest a network without root, TAP devices or any host setup, in the
//! spirit of QEMU's "slirp" user networking but in pure Rust. The guest exchanges raw
//! Ethernet frames with this crate; on the host side a [`smoltcp`] `Interface` plays the
//! guest's gateway and terminates the guest's TCP and UDP flows itself, relaying their
//! bytes to ordinary host sockets. That is what lets `kiln run app -p 8080:80` make
//! `curl http://127.0.0.1:8080/` reach the guest's port 80.
//!
//! ## The network the guest sees
//! The addresses are QEMU's, so a guest is configured identically under both:
//! network `10.0.2.0/24`, gateway [`GATEWAY_ADDR`] `10.0.2.2` ([`GATEWAY_MAC`]), guest
//! [`GUEST_ADDR`] `10.0.2.15` (its MAC is learned from its frames; [`GUEST_MAC`] is the
//! default a VMM should give it). The gateway answers ARP, ICMP echo (ping) and DHCP
//! (DISCOVER/REQUEST get the guest address, a /24 mask, the router and a one-day lease).
//!
//! ## Key types
//! - [`UserNetConfig`]: the port forwards ([`PortForward`], parsed from `-p` strings like
//!   `8080:80`, `5353:53/udp`, `0.0.0.0:8080:80`) and whether the guest may open
//!   connections to the outside ([`UserNetConfig::allow_outbound`]).
//! - [`UserNet`]: [`UserNet::bind`] binds every forwarded host port up front (a port in
//!   use is an error before the guest boots); [`UserNet::spawn`] starts the stack on its
//!   own thread and returns the guest's end of a socket pair.
//! - [`UserNetError`]: every failure, with a message naming the cause and the fix.
//!
//! ## Neighbours
//! The guest end returned by [`UserNet::spawn`] carries one Ethernet frame (without FCS,
//! at most [`FRAME_MAX_BYTES`]) per message in each direction. The kiln VMM's virtio-net
//! device moves those frames to and from the guest's virtqueues; the linuxu platform hands
//! the socket to the guest process as a file descriptor. The stack thread ends, closing
//! every host socket, when the guest end is closed; conversely the guest end reads EOF
//! (a 0-byte `recv`, again and again) once the thread is gone: a reader should take that
//! as "the network stopped", not as an empty frame.
//!
//! The pair is created as `SOCK_SEQPACKET` and returned as a
//! [`std::os::unix::net::UnixDatagram`]: it keeps datagram boundaries exactly like
//! `UnixDatagram::pair()`, but unlike `SOCK_DGRAM`, Linux reports a closed peer (EOF and
//! `POLLHUP`), which is how each side notices the other is gone (an empty message is not
//! a frame, and is ignored).
//!
//! ## Forwarding
//! - TCP `-p HOST:GUEST`: every connection accepted on the host port becomes a guest
//!   connection from `10.0.2.2:<ephemeral>` to `10.0.2.15:GUEST`. Bytes are relayed both
//!   ways with backpressure (256 KiB of buffering each way, nothing unbounded), half-closes
//!   (FIN) and resets are propagated, and a guest that refuses makes the host connection
//!   close at once.
//! - UDP `-p HOST:GUEST/udp`: datagrams from each host peer reach the guest from
//!   `10.0.2.2:<a port per peer>`; the guest's replies to that port go back to that peer.
//!   A peer's mapping expires after [`UDP_IDLE_TIMEOUT`] without traffic.
//! - Outbound (only with [`UserNetConfig::allow_outbound`]): a guest TCP connection to
//!   `X:Y` becomes a host connection to `X:Y` (`10.0.2.2` meaning the host's `127.0.0.1`),
//!   and the guest's handshake completes only once the host connect succeeded (it gets a
//!   reset otherwise); UDP likewise through one host socket per flow. Without it, a
//!   guest's TCP connect to anything is reset at once ("connection refused") and UDP gets
//!   ICMP port unreachable.
//!
//! ## Limits
//! IPv4 only; MTU 1500 (no jumbo frames, no TSO/GSO from the guest). No DNS server
//! (`10.0.2.3` is not served) and no outbound ICMP: only the gateway answers pings.
//! Outbound traffic to other addresses inside `10.0.2.0/24` is refused. IP fragments sent
//! by the guest are dropped (TCP never needs them; large UDP datagrams from the guest are
//! lost), while large host datagrams are fragmented towards the guest. One guest per
//! stack. At most 8192 TCP flows and 4096 UDP mappings at a time; a forwarded connection
//! the guest neither accepts nor refuses within 30 s is reset.
#![forbid(unsafe_code)]

mod device;
mod frames;
mod stack;
#[cfg(test)]
mod tests;

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::str::FromStr;
use std::thread::JoinHandle;
use std::time::Duration;

/// The gateway's address: the host as the guest sees it (and the DHCP server).
pub const GATEWAY_ADDR: Ipv4Addr = kiln_abi::net::GATEWAY_ADDR;
/// The one address the guest gets (by DHCP or static configuration).
pub const GUEST_ADDR: Ipv4Addr = kiln_abi::net::GUEST_ADDR;
/// Prefix length of the guest network `10.0.2.0/24`.
pub const PREFIX_LEN: u8 = kiln_abi::net::PREFIX_LEN;
/// The gateway's Ethernet address.
pub const GATEWAY_MAC: [u8; 6] = kiln_abi::net::GATEWAY_MAC;
/// The Ethernet address a VMM should give the guest's NIC (any unicast MAC works: the
/// stack learns the guest's MAC from its frames).
pub const GUEST_MAC: [u8; 6] = kiln_abi::net::GUEST_MAC;
/// The IP MTU of the guest link, in bytes.
pub const MTU_BYTES: usize = 1500;
/// The largest Ethernet frame (header included, FCS excluded) either side sends.
pub const FRAME_MAX_BYTES: usize = MTU_BYTES + 14;
/// How long a UDP mapping (forwarded peer or outbound flow) lives without traffic.
pub const UDP_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// A transport protocol of a port forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// TCP (the default of a `-p` forward).
    Tcp,
    /// UDP (`-p HOST:GUEST/udp`).
    Udp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// One `-p` forward: traffic to `host_addr:host_port` on the host reaches the guest's
/// `guest_port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortForward {
    /// TCP or UDP.
    pub protocol: Protocol,
    /// The host address to bind (`127.0.0.1` unless given; `0.0.0.0` for all).
    pub host_addr: Ipv4Addr,
    /// The host port to bind (0 lets the OS choose; see [`UserNet::forwards`]).
    pub host_port: u16,
    /// The guest port the traffic goes to.
    pub guest_port: u16,
}

impl fmt::Display for PortForward {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}/{}",
            self.host_addr, self.host_port, self.guest_port, self.protocol
        )
    }
}

/// The forms [`PortForward::from_str`] accepts, quoted in its errors.
const FORWARD_FORMS: &str = "HOST:GUEST, HOST:GUEST/tcp, HOST:GUEST/udp or \
     ADDR:HOST:GUEST[/tcp|/udp], e.g. 8080:80, 5353:53/udp, 0.0.0.0:8080:80";

impl FromStr for PortForward {
    type Err = UserNetError;

    /// Parses `[ADDR:]HOST:GUEST[/tcp|/udp]`; `ADDR` defaults to `127.0.0.1`, the
    /// protocol to TCP.
    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let bad = |problem: String| UserNetError::InvalidForward {
            spec: spec.to_string(),
            problem,
        };
        let (body, protocol) = match spec.rsplit_once('/') {
            None => (spec, Protocol::Tcp),
            Some((body, proto)) => match proto.to_ascii_lowercase().as_str() {
                "tcp" => (body, Protocol::Tcp),
                "udp" => (body, Protocol::Udp),
                _ => {
                    return Err(bad(format!("unknown protocol `{proto}` (use tcp or udp)")));
                }
            },
        };
        let parts: Vec<&str> = body.split(':').collect();
        let (host_addr, host, guest) = match parts.as_slice() {
            [host, guest] => (Ipv4Addr::LOCALHOST, *host, *guest),
            [addr, host, guest] => {
                let addr = addr
                    .parse::<Ipv4Addr>()
                    .map_err(|_| bad(format!("`{addr}` is not an IPv4 address")))?;
                (addr, *host, *guest)
            }
            _ => {
                return Err(bad(format!(
                    "expected 2 or 3 `:`-separated parts, found {}",
                    parts.len()
                )));
            }
        };
        let port = |text: &str, which: &str| match text.parse::<u16>() {
            Ok(port) if port != 0 => Ok(port),
            _ => Err(bad(format!(
                "{which} port `{text}` is not a number from 1 to 65535"
            ))),
        };
        Ok(PortForward {
            protocol,
            host_addr,
            host_port: port(host, "host")?,
            guest_port: port(guest, "guest")?,
        })
    }
}

/// What the stack does: its forwards and its outbound policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserNetConfig {
    /// Host ports forwarded into the guest (`-p`).
    pub forwards: Vec<PortForward>,
    /// Whether the guest may open TCP connections and send UDP to the outside (the host
    /// itself being `10.0.2.2`). Off: the guest's connects are refused at once.
    pub allow_outbound: bool,
}

/// Why user networking cannot start.
#[derive(Debug, thiserror::Error)]
pub enum UserNetError {
    /// A `-p` string does not parse.
    #[error("invalid port forward `{spec}`: {problem}; accepted forms: {forms}", forms = FORWARD_FORMS)]
    InvalidForward {
        /// The string given.
        spec: String,
        /// What is wrong with it.
        problem: String,
    },
    /// Two forwards claim the same host port.
    #[error(
        "host port {port} ({protocol}) is forwarded twice: give each -p HOST:GUEST its own HOST port"
    )]
    DuplicateForward {
        /// The host port.
        port: u16,
        /// Its protocol.
        protocol: Protocol,
    },
    /// The host port is taken by another program.
    #[error(
        "host port {port} ({protocol}) is in use on {addr}: pick another HOST port in -p HOST:GUEST"
    )]
    PortInUse {
        /// The host address.
        addr: Ipv4Addr,
        /// The host port.
        port: u16,
        /// Its protocol.
        protocol: Protocol,
    },
    /// The host port needs privileges.
    #[error(
        "host port {port} ({protocol}) needs privileges (ports below 1024 do): pick a HOST port of 1024 or more in -p HOST:GUEST"
    )]
    PortPrivileged {
        /// The host port.
        port: u16,
        /// Its protocol.
        protocol: Protocol,
    },
    /// The host address is not one of this machine's.
    #[error(
        "host address {addr} is not an address of this machine: use 127.0.0.1 or 0.0.0.0 in -p ADDR:HOST:GUEST"
    )]
    AddrNotAvailable {
        /// The host address.
        addr: Ipv4Addr,
    },
    /// Binding the host port failed for another reason.
    #[error("cannot bind host port {addr}:{port} ({protocol}): {cause}")]
    Bind {
        /// The host address.
        addr: Ipv4Addr,
        /// The host port.
        port: u16,
        /// Its protocol.
        protocol: Protocol,
        /// The OS error.
        cause: io::Error,
    },
    /// The guest socket pair or the event poller could not be created.
    #[error(
        "cannot set up user networking ({what}): {cause}; the process may be out of file descriptors (raise `ulimit -n`)"
    )]
    Setup {
        /// Which step failed.
        what: &'static str,
        /// The OS error.
        cause: io::Error,
    },
    /// The network thread could not be started.
    #[error(
        "cannot start the user-networking thread: {cause}; the system is out of threads or memory"
    )]
    Thread {
        /// The OS error.
        cause: io::Error,
    },
}

/// A bound host socket of one forward.
#[derive(Debug)]
enum HostSocket {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

/// User-mode networking for one guest: bound forwards, ready to [`spawn`](Self::spawn).
#[derive(Debug)]
pub struct UserNet {
    allow_outbound: bool,
    /// Each forward with its real host port, and its bound socket.
    bound: Vec<(PortForward, HostSocket)>,
}

impl UserNet {
    /// Binds every forwarded host port now, so a port in use is an error before the guest
    /// boots.
    pub fn bind(config: UserNetConfig) -> Result<Self, UserNetError> {
        let mut bound: Vec<(PortForward, HostSocket)> = Vec::new();
        for (i, forward) in config.forwards.iter().enumerate() {
            let clash = config.forwards.iter().take(i).any(|other| {
                other.protocol == forward.protocol
                    && other.host_port == forward.host_port
                    && forward.host_port != 0
                    && (other.host_addr == forward.host_addr
                        || other.host_addr.is_unspecified()
                        || forward.host_addr.is_unspecified())
            });
            if clash {
                return Err(UserNetError::DuplicateForward {
                    port: forward.host_port,
                    protocol: forward.protocol,
                });
            }
            let addr = SocketAddr::from((forward.host_addr, forward.host_port));
            let result = match forward.protocol {
                Protocol::Tcp => TcpListener::bind(addr).and_then(|listener| {
                    listener.set_nonblocking(true)?;
                    Ok((listener.local_addr()?, HostSocket::Tcp(listener)))
                }),
                Protocol::Udp => UdpSocket::bind(addr).and_then(|socket| {
                    socket.set_nonblocking(true)?;
                    Ok((socket.local_addr()?, HostSocket::Udp(socket)))
                }),
            };
            let (local, socket) = result.map_err(|cause| bind_error(forward, cause))?;
            let mut actual = *forward;
            actual.host_port = local.port();
            bound.push((actual, socket));
        }
        Ok(UserNet {
            allow_outbound: config.allow_outbound,
            bound,
        })
    }

    /// The forwards with their real host ports (a host port of 0 in the configuration is
    /// replaced by the port the OS chose).
    pub fn forwards(&self) -> Vec<PortForward> {
        self.bound.iter().map(|(forward, _)| *forward).collect()
    }

    /// Runs the stack on its own thread. The returned socket is the guest's end of the
    /// pair: one Ethernet frame per message in each direction (hand it to a virtio-net
    /// device, or to a guest process as an fd). The thread ends, closing every host
    /// socket, when the guest end is closed.
    pub fn spawn(self) -> Result<(UnixDatagram, JoinHandle<()>), UserNetError> {
        let (guest_end, stack) = self.into_stack()?;
        let handle = std::thread::Builder::new()
            .name("kiln-user-net".to_string())
            .spawn(move || stack.run())
            .map_err(|cause| UserNetError::Thread { cause })?;
        Ok((guest_end, handle))
    }

    /// Builds the stack without starting it: the guest end and the stack, whose
    /// [`stack::Stack::run`] is the thread body.
    pub(crate) fn into_stack(self) -> Result<(UnixDatagram, stack::Stack), UserNetError> {
        let setup =
            |what: &'static str| move |cause: io::Error| UserNetError::Setup { what, cause };
        let (ours, theirs) = rustix::net::socketpair(
            rustix::net::AddressFamily::UNIX,
            rustix::net::SocketType::SEQPACKET,
            rustix::net::SocketFlags::CLOEXEC,
            None,
        )
        .map_err(io::Error::from)
        .map_err(setup("socket pair"))?;
        // Room for a few thousand frames in flight each way; best effort (capped by
        // net.core.wmem_max).
        for fd in [&ours, &theirs] {
            let _ = rustix::net::sockopt::set_socket_send_buffer_size(fd, stack::PAIR_BUFFER_BYTES);
            let _ = rustix::net::sockopt::set_socket_recv_buffer_size(fd, stack::PAIR_BUFFER_BYTES);
        }
        let ours = UnixDatagram::from(ours);
        let theirs = UnixDatagram::from(theirs);
        ours.set_nonblocking(true).map_err(setup("socket pair"))?;
        let stack = stack::Stack::new(ours, self.bound, self.allow_outbound)
            .map_err(setup("event poller"))?;
        Ok((theirs, stack))
    }
}

/// Maps a bind failure to the error that names its fix.
fn bind_error(forward: &PortForward, cause: io::Error) -> UserNetError {
    let (addr, port, protocol) = (forward.host_addr, forward.host_port, forward.protocol);
    match cause.kind() {
        io::ErrorKind::AddrInUse => UserNetError::PortInUse {
            addr,
            port,
            protocol,
        },
        io::ErrorKind::PermissionDenied => UserNetError::PortPrivileged { port, protocol },
        io::ErrorKind::AddrNotAvailable => UserNetError::AddrNotAvailable { addr },
        _ => UserNetError::Bind {
            addr,
            port,
            protocol,
            cause,
        },
    }
}
