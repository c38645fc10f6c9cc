//! fileserver: HTTP access to a guest directory.
//!
//! `fileserver DIR [PORT] [--admin]` serves DIR (typically a host volume,
//! `-v ./site:/data -- /data`) on PORT (default 80), one thread per
//! connection (keep-alive, blocking sockets with a 30 s idle timeout):
//!
//! - `GET`/`HEAD` a file: its bytes, with a content type from its name;
//!   a directory: an HTML listing (names escaped, directories marked `/`);
//! - `PUT` a file: writes the request body; 201 when it is new, 200 when
//!   it replaced one;
//! - errors: 404 for a missing file or directory, 403 when the volume is
//!   read-only (EROFS) or access is refused, 400 for a path that tries to
//!   leave DIR (`..` above it, even percent-encoded) or is malformed, 409
//!   for a PUT onto a directory, 405 for other methods, and the parser's
//!   4xx/5xx for malformed requests.
//!
//! Paths are resolved by `kiln_http::resolve_path` (no `..` above the
//! root) and then by the guest's VFS, whose symlinks resolve inside the
//! guest's own tree: a link in a host volume that points outside it never
//! reaches the host file (the VMM refuses to follow links at all).
//!
//! The parts list: the Kiln runtime, the TLSF heap, the cooperative
//! scheduler, kiln-rootfs (root, devfs, host volumes), kiln-net, kiln-http.
#![cfg_attr(kiln_guest, no_std)]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;

use kiln_http::{Limits, Method, Parsed, Response, parse_request};
use kiln_net::tcp::TcpStream;
use kiln_net::{Net, NetError};
use kiln_rt::println;
use kiln_vfs::{Errno, Kind, Vfs};

kiln_rt::main!(
    main,
    heap = kiln_alloc_tlsf::TlsfHeap,
    sched = kiln_sched_coop::Cooperative
);

/// A connection idle this long is closed.
const IDLE_TIMEOUT_US: u64 = 30_000_000;
/// The largest PUT body taken.
const MAX_BODY_BYTES: u64 = 8 << 20;

struct Server {
    vfs: Vfs,
    root: String,
    admin: bool,
}

fn main(args: &[&str]) -> i32 {
    let mut root = None;
    let mut port = 80u16;
    let mut admin = false;
    for a in args {
        match *a {
            "--admin" => admin = true,
            p if p.starts_with('/') && root.is_none() => root = Some(String::from(p)),
            p => match p.parse() {
                Ok(n) if n > 0 => port = n,
                _ => {
                    println!("fileserver: unknown argument {p:?}: give DIR [PORT] [--admin]");
                    return 2;
                }
            },
        }
    }
    let Some(root) = root else {
        println!("fileserver: give the directory to serve, e.g. -- /data");
        return 2;
    };
    let mounted = match kiln_rootfs::mount() {
        Ok(m) => m,
        Err(e) => {
            println!("fileserver: {e}");
            return 1;
        }
    };
    match mounted.vfs.stat(&root) {
        Ok(s) if s.kind == Kind::Dir => {}
        Ok(_) => {
            println!("fileserver: {root} is not a directory");
            return 1;
        }
        Err(e) => {
            println!("fileserver: {root}: {e} (share a host directory with -v HOST:{root})");
            return 1;
        }
    }
    let net = match Net::up() {
        Ok(n) => n,
        Err(e) => {
            println!("fileserver: {e}");
            return 1;
        }
    };
    let mut listener = match net.listen_tcp(port) {
        Ok(l) => l,
        Err(e) => {
            println!("fileserver: cannot listen on port {port}: {e}");
            return 1;
        }
    };
    println!(
        "fileserver: serving {root} on http://{}:{port}/",
        net.addr().map_or(String::from("?"), |a| format!("{a}"))
    );
    let server = Arc::new(Server {
        vfs: mounted.vfs,
        root: String::from(root.trim_end_matches('/')),
        admin,
    });
    let stop = Arc::new(core::sync::atomic::AtomicBool::new(false));
    // Accept wakes up now and then to see whether a shutdown was asked for.
    listener.set_timeout_us(Some(100_000));
    loop {
        if stop.load(core::sync::atomic::Ordering::SeqCst) {
            println!("fileserver: shutting down");
            return 0;
        }
        let stream = match listener.accept() {
            Ok(s) => s,
            Err(NetError::TimedOut) => continue,
            Err(e) => {
                println!("fileserver: accept: {e}");
                continue;
            }
        };
        let (server, stop2) = (server.clone(), stop.clone());
        let spawned = kiln_rt::thread::spawn(move || serve(stream, &server, &stop2));
        if let Err(e) = spawned {
            // The stream was moved into the closure and is dropped (closed).
            println!("fileserver: cannot start a connection thread: {e}");
        }
    }
}

/// Serves one connection until it closes.
fn serve(mut stream: TcpStream, server: &Server, stop: &core::sync::atomic::AtomicBool) {
    stream.set_read_timeout_us(Some(IDLE_TIMEOUT_US));
    let limits = Limits {
        max_body_bytes: MAX_BODY_BYTES,
        ..Limits::DEFAULT
    };
    let mut input: Vec<u8> = Vec::new();
    let mut buf = alloc::vec![0u8; 16 * 1024];
    let mut continued = false;
    loop {
        match parse_request(&input, &limits) {
            Ok(Parsed::Complete { request, head_len }) => {
                let body_len = usize::try_from(request.body_len()).unwrap_or(usize::MAX);
                let end = head_len.saturating_add(body_len);
                if input.len() < end {
                    if request.expects_continue() && !continued {
                        continued = true;
                        if stream.write_all(kiln_http::CONTINUE).is_err() {
                            return;
                        }
                    }
                } else {
                    let keep = request.keep_alive();
                    let head_only = request.method == Method::Head;
                    let response = handle(server, &request, &input[head_len..end], stop);
                    let mut out = Vec::new();
                    response.write(&mut out, keep, head_only);
                    if stream.write_all(&out).is_err() || !keep {
                        return;
                    }
                    input.drain(..end);
                    continued = false;
                    continue;
                }
            }
            Ok(Parsed::Incomplete) => {}
            Err(e) => {
                let _ = stream.write_all(&Response::from_error(&e).to_bytes(false));
                return;
            }
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => input.extend_from_slice(&buf[..n]),
        }
    }
}

/// Answers one request (`body` is its complete body).
fn handle(
    server: &Server,
    request: &kiln_http::Request<'_>,
    body: &[u8],
    stop: &core::sync::atomic::AtomicBool,
) -> Response {
    if server.admin && request.method == Method::Post && request.path == "/shutdown" {
        stop.store(true, core::sync::atomic::Ordering::SeqCst);
        return Response::new(200).body("shutting down\n");
    }
    let rel = match kiln_http::resolve_path(request.path) {
        Ok(r) => r,
        Err(e) => return Response::from_error(&e),
    };
    let path = if rel.is_empty() {
        server.root.clone()
    } else {
        format!("{}/{rel}", server.root)
    };
    match request.method {
        Method::Get | Method::Head => get(server, &path, &rel),
        Method::Put => put(&server.vfs, &path, body),
        _ => Response::new(405)
            .header("Allow", "GET, HEAD, PUT")
            .body("method not allowed\n"),
    }
}

fn get(server: &Server, path: &str, rel: &str) -> Response {
    let vfs = &server.vfs;
    match vfs.stat(path) {
        Ok(s) if s.kind == Kind::Dir => match vfs.readdir(path) {
            Ok(mut entries) => {
                entries.sort_by(|a, b| a.name.cmp(&b.name));
                let title = kiln_http::escape_html(&format!("/{rel}"));
                let mut html = format!(
                    "<!doctype html>\n<html><head><title>Index of {title}</title></head><body>\n<h1>Index of {title}</h1>\n<ul>\n"
                );
                for e in entries.iter().filter(|e| e.name != "." && e.name != "..") {
                    let slash = if e.kind == Kind::Dir { "/" } else { "" };
                    let href = if rel.is_empty() {
                        format!("/{}", e.name)
                    } else {
                        format!("/{rel}/{}", e.name)
                    };
                    html.push_str(&format!(
                        "<li><a href=\"{}{slash}\">{}{slash}</a></li>\n",
                        kiln_http::escape_html(&href),
                        kiln_http::escape_html(&e.name)
                    ));
                }
                html.push_str("</ul>\n</body></html>\n");
                Response::new(200)
                    .content_type("text/html; charset=utf-8")
                    .body(html)
            }
            Err(e) => error_response(e),
        },
        Ok(_) => match vfs.read_file(path) {
            Ok(bytes) => Response::new(200)
                .content_type(kiln_http::content_type_for(path))
                .body(bytes),
            Err(e) => error_response(e),
        },
        Err(e) => error_response(e),
    }
}

fn put(vfs: &Vfs, path: &str, body: &[u8]) -> Response {
    let existed = vfs.stat(path).is_ok();
    match vfs.write_file(path, body) {
        Ok(()) if existed => Response::new(200).body("replaced\n"),
        Ok(()) => Response::new(201).body("created\n"),
        Err(e) => error_response(e),
    }
}

/// The HTTP status for a file-system error.
fn error_response(e: Errno) -> Response {
    let status = match e {
        Errno::Enoent | Errno::Enotdir => 404,
        Errno::Erofs | Errno::Eacces | Errno::Eperm => 403,
        Errno::Eisdir => 409,
        Errno::Eloop | Errno::Enametoolong | Errno::Einval => 400,
        Errno::Enospc | Errno::Efbig => 507,
        _ => 500,
    };
    Response::new(status)
        .content_type("text/plain")
        .body(format!("{e}\n"))
}
