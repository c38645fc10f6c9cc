//! netdemo: small network tools in the guest, for examples and tests.
//!
//! - `udp-echo PORT N`: echoes N datagrams on PORT, then exits 0;
//! - `tcp-echo PORT N`: echoes N connections (until each peer closes);
//! - `ping ADDR [COUNT]`: ICMP echo, prints each round trip; exit 1 if
//!   none came back;
//! - `connect ADDR:PORT`: opens a TCP connection, sends a line, prints
//!   the reply; prints the error (e.g. "connection refused") and exits 1
//!   if it cannot;
//! - `addr`: prints the interface's address.
//!
//! The parts list: the Kiln runtime, the TLSF heap, the cooperative
//! scheduler, kiln-net.
#![cfg_attr(kiln_guest, no_std)]
#![no_main]

extern crate alloc;

use core::net::{Ipv4Addr, SocketAddrV4};

use kiln_net::Net;
use kiln_rt::println;

kiln_rt::main!(
    main,
    heap = kiln_alloc_tlsf::TlsfHeap,
    sched = kiln_sched_coop::Cooperative
);

const USAGE: &str =
    "usage: udp-echo PORT N | tcp-echo PORT N | ping ADDR [COUNT] | connect ADDR:PORT | addr";

fn main(args: &[&str]) -> i32 {
    let net = match Net::up() {
        Ok(n) => n,
        Err(e) => {
            println!("netdemo: {e}");
            return 1;
        }
    };
    let num = |i: usize| args.get(i).and_then(|a| a.parse::<u64>().ok());
    match args {
        ["addr"] => {
            match net.addr() {
                Some(a) => println!("netdemo: address {a}"),
                None => println!("netdemo: no address"),
            }
            0
        }
        ["udp-echo", ..] => match (num(1), num(2)) {
            (Some(port), Some(n)) => udp_echo(&net, port as u16, n),
            _ => usage(),
        },
        ["tcp-echo", ..] => match (num(1), num(2)) {
            (Some(port), Some(n)) => tcp_echo(&net, port as u16, n),
            _ => usage(),
        },
        ["ping", addr, rest @ ..] => match addr.parse::<Ipv4Addr>() {
            Ok(a) => ping(
                &net,
                a,
                rest.first().and_then(|c| c.parse().ok()).unwrap_or(3),
            ),
            Err(_) => usage(),
        },
        ["connect", addr] => match addr.parse::<SocketAddrV4>() {
            Ok(a) => connect(&net, a),
            Err(_) => usage(),
        },
        _ => usage(),
    }
}

fn usage() -> i32 {
    println!("netdemo: {USAGE}");
    2
}

fn udp_echo(net: &Net, port: u16, n: u64) -> i32 {
    let sock = match net.bind_udp(port) {
        Ok(s) => s,
        Err(e) => {
            println!("netdemo: cannot bind UDP port {port}: {e}");
            return 1;
        }
    };
    println!("netdemo: UDP echo on port {port}");
    let mut buf = [0u8; 2048];
    for _ in 0..n {
        match sock.recv_from(&mut buf) {
            Ok((len, from)) => {
                if let Err(e) = sock.send_to(&buf[..len], from) {
                    println!("netdemo: send to {from}: {e}");
                    return 1;
                }
                println!("netdemo: echoed {len} bytes to {from}");
            }
            Err(e) => {
                println!("netdemo: receive: {e}");
                return 1;
            }
        }
    }
    0
}

fn tcp_echo(net: &Net, port: u16, n: u64) -> i32 {
    let listener = match net.listen_tcp(port) {
        Ok(l) => l,
        Err(e) => {
            println!("netdemo: cannot listen on TCP port {port}: {e}");
            return 1;
        }
    };
    println!("netdemo: TCP echo on port {port}");
    let mut buf = [0u8; 4096];
    for _ in 0..n {
        let mut s = match listener.accept() {
            Ok(s) => s,
            Err(e) => {
                println!("netdemo: accept: {e}");
                return 1;
            }
        };
        let mut total = 0usize;
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(len) => {
                    if s.write_all(&buf[..len]).is_err() {
                        break;
                    }
                    total += len;
                }
                Err(_) => break,
            }
        }
        println!("netdemo: echoed {total} bytes");
    }
    0
}

fn ping(net: &Net, addr: Ipv4Addr, count: u64) -> i32 {
    let mut replies = 0;
    for i in 0..count {
        match net.ping(addr, 2_000_000) {
            Ok(us) => {
                replies += 1;
                println!("netdemo: reply from {addr}: seq={i} time={us} us");
            }
            Err(e) => println!("netdemo: no reply from {addr}: seq={i}: {e}"),
        }
    }
    println!("netdemo: {replies}/{count} replies from {addr}");
    if replies > 0 { 0 } else { 1 }
}

fn connect(net: &Net, addr: SocketAddrV4) -> i32 {
    let mut s = match net.connect_tcp(addr, 5_000_000) {
        Ok(s) => s,
        Err(e) => {
            println!("netdemo: connect to {addr}: {e}");
            return 1;
        }
    };
    println!("netdemo: connected to {addr}");
    if let Err(e) = s.write_all(b"hello from kiln\n") {
        println!("netdemo: write: {e}");
        return 1;
    }
    s.shutdown_write();
    let mut buf = [0u8; 512];
    let mut got = alloc::vec::Vec::new();
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => {
                println!("netdemo: read: {e}");
                return 1;
            }
        }
    }
    println!(
        "netdemo: reply: {}",
        core::str::from_utf8(&got)
            .unwrap_or("(not UTF-8)")
            .trim_end()
    );
    0
}
