//! In-guest tests (`apps/ktest`): two stacks joined by a
//! [`kiln_netdev::Loopback`] link, with real threads, time and wake-ups.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::net::{Ipv4Addr, SocketAddrV4};

use kiln_ktest::{Env, Failure, Outcome, Suite, check, check_eq, test};
use kiln_netdev::{Loopback, NetDevice};
use kiln_rt::thread::Event;

use crate::{IpConfig, Net, NetError};

/// The value of `Ok`, or a failed test naming `what` and the error.
macro_rules! need {
    ($e:expr, $what:literal) => {
        match $e {
            Ok(v) => v,
            Err(e) => {
                return Err(Failure {
                    message: alloc::format!("{}: {:?}", $what, e),
                    location: concat!(file!(), ":", line!()),
                })
            }
        }
    };
}

const A: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 2);
const MAC_A: [u8; 6] = [2, 0, 0, 0, 9, 1];
const MAC_B: [u8; 6] = [2, 0, 0, 0, 9, 2];

/// Two wake-up events per link (events live for the whole run).
fn events() -> Result<[&'static Event; 2], kiln_rt::thread::TooManyEvents> {
    let make = || Event::new().map(|e| &*Box::leak(Box::new(e)));
    Ok([make()?, make()?])
}

fn config(addr: Ipv4Addr) -> IpConfig {
    IpConfig::Static {
        addr,
        prefix_len: 24,
        gateway: None,
    }
}

/// A UDP datagram from B:9 to A:7, as B's Ethernet frame.
fn udp_frame(payload: &[u8]) -> Vec<u8> {
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{
        EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, IpProtocol, Ipv4Packet,
        Ipv4Repr, UdpPacket, UdpRepr,
    };
    let udp = UdpRepr {
        src_port: 9,
        dst_port: 7,
    };
    let ip = Ipv4Repr {
        src_addr: B,
        dst_addr: A,
        next_header: IpProtocol::Udp,
        payload_len: udp.header_len() + payload.len(),
        hop_limit: 64,
    };
    let eth = EthernetRepr {
        src_addr: EthernetAddress(MAC_B),
        dst_addr: EthernetAddress(MAC_A),
        ethertype: EthernetProtocol::Ipv4,
    };
    let mut buf = alloc::vec![0u8; eth.buffer_len() + ip.buffer_len() + ip.payload_len];
    let caps = ChecksumCapabilities::default();
    let mut frame = EthernetFrame::new_unchecked(&mut buf[..]);
    eth.emit(&mut frame);
    let mut packet = Ipv4Packet::new_unchecked(frame.payload_mut());
    ip.emit(&mut packet, &caps);
    let mut datagram = UdpPacket::new_unchecked(packet.payload_mut());
    udp.emit(
        &mut datagram,
        &B.into(),
        &A.into(),
        payload.len(),
        |p| p.copy_from_slice(payload),
        &caps,
    );
    buf
}

/// Random, truncated and bit-flipped frames on the receive path never
/// panic the stack, and it still takes a good datagram afterwards.
fn random_frames_do_not_break_the_stack(_: &mut Env) -> Outcome {
    let (dev, mut peer) = Loopback::pair(MAC_A, MAC_B, need!(events(), "events"));
    let net = Net::new(Box::new(dev), config(A));
    let mut sock = need!(net.bind_udp(7), "bind");
    sock.set_nonblocking(true);
    let good = udp_frame(b"still alive");
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut buf = [0u8; 64];
    for i in 0..20_000u32 {
        let frame: Vec<u8> = match i % 3 {
            0 => (0..next() % 1600).map(|_| next() as u8).collect(),
            1 => good[..(next() as usize % good.len())].to_vec(),
            _ => {
                let mut f = good.clone();
                let at = next() as usize % f.len();
                f[at] ^= 1 << (next() % 8);
                f
            }
        };
        peer.transmit(&frame);
        if i % 64 == 0 {
            net.poll_now();
            // Whatever the mutations let through.
            while sock.recv_from(&mut buf).is_ok() {}
        }
    }
    net.poll_now();
    while sock.recv_from(&mut buf).is_ok() {}
    peer.transmit(&good);
    net.poll_now();
    let (n, from) = need!(sock.recv_from(&mut buf), "the good datagram was lost");
    check_eq!(&buf[..n], b"still alive");
    check_eq!(from, SocketAddrV4::new(B, 9));
    Ok(())
}

/// Blocking sockets end to end: B connects to A, sends 200 KB, A echoes
/// it, both sides compare; a second connect to a closed port is refused.
fn tcp_echo_between_two_stacks(_: &mut Env) -> Outcome {
    let (da, db) = Loopback::pair(MAC_A, MAC_B, need!(events(), "events"));
    let a = need!(Net::start(Box::new(da), config(A)), "stack A");
    let b = need!(Net::start(Box::new(db), config(B)), "stack B");
    let listener = need!(a.listen_tcp(7), "listen");
    check!(matches!(a.listen_tcp(7), Err(NetError::AddrInUse)));
    let server = kiln_rt::thread::spawn(move || -> Result<usize, NetError> {
        let mut s = listener.accept()?;
        let mut buf = [0u8; 4096];
        let mut total = 0;
        loop {
            let n = s.read(&mut buf)?;
            if n == 0 {
                return Ok(total);
            }
            s.write_all(&buf[..n])?;
            total += n;
        }
    });
    let server = need!(server, "spawn");
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    let mut c = need!(b.connect_tcp(SocketAddrV4::new(A, 7), 5_000_000), "connect");
    c.set_read_timeout_us(Some(10_000_000));
    let writer_data = data.clone();
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    let mut sent = 0;
    // Interleave writes and reads: the echo fills our receive buffer.
    while got.len() < writer_data.len() {
        if sent < writer_data.len() {
            c.set_nonblocking(true);
            match c.write(&writer_data[sent..]) {
                Ok(n) => sent += n,
                Err(NetError::WouldBlock) => {}
                Err(e) => need!(Err(e), "write"),
            }
            c.set_nonblocking(sent < writer_data.len());
        }
        match c.read(&mut buf) {
            Ok(0) => need!(Err("end of stream"), "read"),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(NetError::WouldBlock) => kiln_rt::thread::yield_now(),
            Err(e) => need!(Err(e), "read"),
        }
    }
    check!(got == data, "the echo differs");
    c.shutdown_write();
    check_eq!(server.join(), Ok(200_000));
    let refused = b.connect_tcp(SocketAddrV4::new(A, 8), 5_000_000);
    check_eq!(refused.err(), Some(NetError::ConnectionRefused));
    let rtt = b.ping(A, 2_000_000);
    check!(rtt.is_ok(), "ping: {rtt:?}");
    Ok(())
}

/// The suite.
pub const SUITE: Suite = &[
    test!(random_frames_do_not_break_the_stack),
    test!(tcp_echo_between_two_stacks),
];
