//! httpd: an HTTP/1.1 server on Kiln's network stack.
//!
//! One thread serves every connection from an event loop (`Net::poll` over
//! the listener and the connections, non-blocking reads and writes), so a
//! few hundred concurrent keep-alive connections cost buffers, not
//! threads. Routes:
//!
//! - `GET /` (and `HEAD`): a static HTML page;
//! - `GET /api/status`: a small JSON document (requests and connections
//!   served, uptime, heap bytes in use and at peak);
//! - `POST /shutdown` with `--admin`: answers, then exits 0 (tests);
//! - any other path: 404; another method on a known path: 405;
//! - a malformed request: its 4xx/5xx (from `kiln-http`), then the
//!   connection is closed.
//!
//! Arguments: `[PORT]` (default 80) and `--admin`. It prints the address it
//! listens on. The parts list: the Kiln runtime, the TLSF heap, the
//! cooperative scheduler (kiln-net's stack thread), kiln-net, kiln-http.
#![cfg_attr(kiln_guest, no_std)]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::vec::Vec;

use kiln_http::{Limits, Method, Parsed, Response, parse_request};
use kiln_net::tcp::TcpStream;
use kiln_net::{Net, NetError, PollItem};
use kiln_rt::println;

kiln_rt::main!(
    main,
    heap = kiln_alloc_tlsf::TlsfHeap,
    sched = kiln_sched_coop::Cooperative
);

const PAGE: &str = "<!doctype html>\n<html><head><title>Kiln</title></head>\n<body><h1>Hello from Kiln!</h1>\n<p>This page was served by a unikernel.</p></body></html>\n";

/// Bytes of unparsed input a connection may hold (a head plus a body).
const MAX_INPUT_BYTES: usize = 64 * 1024;

struct Conn {
    stream: TcpStream,
    input: Vec<u8>,
    output: Vec<u8>,
    /// Close once `output` is sent.
    closing: bool,
    /// The peer closed its side.
    eof: bool,
}

struct Stats {
    requests: u64,
    connections: u64,
    started_ns: u64,
    shutdown: bool,
}

fn main(args: &[&str]) -> i32 {
    let mut port = 80u16;
    let mut admin = false;
    for a in args {
        match *a {
            "--admin" => admin = true,
            p => match p.parse() {
                Ok(n) if n > 0 => port = n,
                _ => {
                    println!("httpd: unknown argument {p:?}: give [PORT] [--admin]");
                    return 2;
                }
            },
        }
    }
    let net = match Net::up() {
        Ok(n) => n,
        Err(e) => {
            println!("httpd: {e}");
            return 1;
        }
    };
    let mut listener = match net.listen_tcp_backlog(port, 512) {
        Ok(l) => l,
        Err(e) => {
            println!("httpd: cannot listen on port {port}: {e}");
            return 1;
        }
    };
    listener.set_nonblocking(true);
    match net.addr() {
        Some(a) => println!("httpd: listening on http://{a}:{port}/"),
        None => println!("httpd: listening on port {port}"),
    }
    let mut stats = Stats {
        requests: 0,
        connections: 0,
        started_ns: kiln_rt::hal::time::now_ns(),
        shutdown: false,
    };
    let mut conns: Vec<Conn> = Vec::new();
    let mut items: Vec<PollItem> = Vec::new();
    loop {
        items.clear();
        items.push(PollItem::read(listener.id()));
        for c in &conns {
            let mut item = PollItem::read(c.stream.id());
            item.read = !c.eof && !c.closing;
            item.write = !c.output.is_empty();
            items.push(item);
        }
        if let Err(e) = net.poll(&mut items, None) {
            println!("httpd: poll: {e}");
            return 1;
        }
        if items[0].readable {
            loop {
                match listener.accept() {
                    Ok(mut stream) => {
                        stream.set_nonblocking(true);
                        stats.connections += 1;
                        conns.push(Conn {
                            stream,
                            input: Vec::new(),
                            output: Vec::new(),
                            closing: false,
                            eof: false,
                        });
                    }
                    Err(NetError::WouldBlock) => break,
                    Err(e) => {
                        println!("httpd: accept: {e}");
                        break;
                    }
                }
            }
        }
        for (i, item) in items.iter().enumerate().skip(1) {
            let Some(c) = conns.get_mut(i - 1) else { break };
            if item.readable {
                read_input(c);
                serve(c, &mut stats, admin);
            }
            if !c.output.is_empty() {
                flush(c);
            }
        }
        conns.retain(|c| !((c.closing || c.eof) && c.output.is_empty()));
        if stats.shutdown && conns.is_empty() {
            println!(
                "httpd: shutting down after {} requests on {} connections",
                stats.requests, stats.connections
            );
            return 0;
        }
    }
}

/// Reads what arrived (until it would block).
fn read_input(c: &mut Conn) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match c.stream.read(&mut buf) {
            Ok(0) => {
                c.eof = true;
                return;
            }
            Ok(n) => {
                if c.input.len() + n > MAX_INPUT_BYTES {
                    let r = Response::new(413).body("request too large\n");
                    c.output.extend_from_slice(&r.to_bytes(false));
                    c.closing = true;
                    c.input.clear();
                    return;
                }
                c.input.extend_from_slice(&buf[..n]);
            }
            Err(NetError::WouldBlock) => return,
            Err(_) => {
                c.eof = true;
                return;
            }
        }
    }
}

/// Answers every complete request in the connection's input.
fn serve(c: &mut Conn, stats: &mut Stats, admin: bool) {
    let mut input = core::mem::take(&mut c.input);
    let mut used = 0;
    while !c.closing {
        let rest = &input[used..];
        if rest.is_empty() {
            break;
        }
        match parse_request(rest, &Limits::DEFAULT) {
            Ok(Parsed::Incomplete) => break,
            Ok(Parsed::Complete { request, head_len }) => {
                let body_len = usize::try_from(request.body_len()).unwrap_or(usize::MAX);
                let Some(end) = head_len.checked_add(body_len).filter(|e| *e <= rest.len()) else {
                    break; // the body is not all here yet
                };
                stats.requests += 1;
                let keep = request.keep_alive();
                let head_only = request.method == Method::Head;
                let response = route(&request, stats, admin, &mut c.closing);
                response.write(&mut c.output, keep, head_only);
                if !keep {
                    c.closing = true;
                }
                used += end;
            }
            Err(e) => {
                stats.requests += 1;
                Response::from_error(&e).write(&mut c.output, false, false);
                c.closing = true;
                used = input.len();
            }
        }
    }
    input.drain(..used);
    if c.eof && !input.is_empty() && !c.closing {
        // The peer closed in the middle of a request.
        input.clear();
    }
    c.input = input;
}

fn route(
    request: &kiln_http::Request<'_>,
    stats: &mut Stats,
    admin: bool,
    closing: &mut bool,
) -> Response {
    let get = matches!(request.method, Method::Get | Method::Head);
    match request.path {
        "/" | "/index.html" if get => Response::new(200)
            .content_type("text/html; charset=utf-8")
            .body(PAGE),
        "/api/status" if get => {
            let uptime_ms = (kiln_rt::hal::time::now_ns() - stats.started_ns) / 1_000_000;
            let heap = kiln_rt::heap::app_stats();
            Response::new(200)
                .content_type("application/json")
                .body(format!(
                    "{{\"server\":\"kiln\",\"requests\":{},\"connections\":{},\"uptime_ms\":{},\"heap_used_bytes\":{},\"heap_peak_bytes\":{}}}\n",
                    stats.requests, stats.connections, uptime_ms, heap.used_bytes, heap.peak_bytes
                ))
        }
        "/shutdown" if admin && request.method == Method::Post => {
            stats.shutdown = true;
            *closing = true;
            Response::new(200).body("shutting down\n")
        }
        "/" | "/index.html" | "/api/status" => Response::new(405)
            .header("Allow", "GET, HEAD")
            .body("method not allowed\n"),
        _ => Response::new(404)
            .content_type("text/plain")
            .body("not found\n"),
    }
}

/// Sends queued output (until it would block).
fn flush(c: &mut Conn) {
    while !c.output.is_empty() {
        match c.stream.write(&c.output) {
            Ok(n) => {
                c.output.drain(..n);
            }
            Err(NetError::WouldBlock) => return,
            Err(_) => {
                c.output.clear();
                c.eof = true;
                return;
            }
        }
    }
}
