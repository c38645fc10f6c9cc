//! # kiln-http — HTTP/1.1 for Kiln apps
//!
//! A small server-side HTTP/1.1 library: it parses request heads and
//! writes responses, and leaves the socket to the caller. The apps
//! (`apps/httpd`: static page, JSON endpoint, keep-alive; `apps/fileserver`:
//! GET files and directory listings, PUT files) read bytes from a TCP
//! socket of the kiln-net socket API into a buffer, hand the buffer to this
//! crate, and write the bytes it produces back. `no_std` + `alloc`, no
//! dependencies, no `unsafe`; it builds for the guest and is tested on the
//! host.
//!
//! Key items:
//! - [`parse_request`] → [`Parsed`]: incremental and strict;
//!   `Incomplete` until the head's blank line arrives, then a [`Request`]
//!   borrowing the buffer (no allocation) and the head's length, or an
//!   [`HttpError`] as soon as the bytes cannot become a valid request.
//!   [`Limits`] bounds head, target, header count and body.
//! - [`Request`]: [`Method`], target, path, query, [`Version`], headers
//!   (case-insensitive [`Request::header`]), [`Request::content_length`],
//!   [`Request::keep_alive`], [`Request::expects_continue`].
//! - [`BodyReader`]: counts off the `Content-Length` body as it arrives and
//!   returns what follows (the next pipelined request).
//! - [`Response`]: status + headers + body builder that always writes a
//!   correct `Content-Length`, `Connection` and `Server: kiln`;
//!   [`Response::to_head_bytes`] answers HEAD, [`Response::write_head`]
//!   starts a streamed body, [`Response::from_error`] answers an
//!   [`HttpError`] with its [`HttpError::status`].
//! - [`resolve_path`] (request path → safe relative file name, refusing
//!   `..` above the root, even percent-encoded), [`percent_decode`],
//!   [`content_type_for`], [`escape_html`], [`escape_json`].
//!
//! A connection loop, in outline:
//!
//! ```
//! use kiln_http::{parse_request, Limits, Method, Parsed, Response};
//!
//! /// Answers every complete request at the start of `buf`; returns how
//! /// many bytes were used and whether to keep the connection.
//! fn serve(buf: &[u8], out: &mut Vec<u8>) -> (usize, bool) {
//!     let mut used = 0;
//!     loop {
//!         let rest = buf.get(used..).unwrap_or_default();
//!         match parse_request(rest, &Limits::DEFAULT) {
//!             // Read more from the socket, then call again.
//!             Ok(Parsed::Incomplete) => return (used, true),
//!             Ok(Parsed::Complete { request, head_len }) => {
//!                 // At most Limits::max_body_bytes (16 MiB).
//!                 let body_len = usize::try_from(request.body_len()).unwrap_or(usize::MAX);
//!                 let end = head_len.saturating_add(body_len);
//!                 let Some(body) = rest.get(head_len..end) else {
//!                     return (used, true); // the body is not all here yet
//!                 };
//!                 let response = match (request.method, request.path) {
//!                     (Method::Get | Method::Head, "/") => {
//!                         Response::new(200).content_type("text/plain").body("hello\n")
//!                     }
//!                     (Method::Post, "/echo") => Response::new(200).body(body),
//!                     _ => Response::new(404),
//!                 };
//!                 let keep = request.keep_alive();
//!                 response.write(out, keep, request.method == Method::Head);
//!                 used += end;
//!                 if !keep {
//!                     return (used, false);
//!                 }
//!             }
//!             Err(e) => {
//!                 // The framing is lost: answer and close.
//!                 out.extend(Response::from_error(&e).to_bytes(false));
//!                 return (buf.len(), false);
//!             }
//!         }
//!     }
//! }
//!
//! let mut out = Vec::new();
//! let input = b"GET / HTTP/1.1\r\nHost: k\r\n\r\nPOST /echo HTTP/1.1\r\nHost: k\r\n\
//!               Content-Length: 2\r\nConnection: close\r\n\r\nhi";
//! assert_eq!(serve(input, &mut out), (input.len(), false));
//! assert!(out.ends_with(b"Content-Length: 2\r\nConnection: close\r\n\r\nhi"));
//! ```
//!
//! Limits and choices: HTTP/1.0 and 1.1 only (no HTTP/2, no upgrades);
//! request bodies only with `Content-Length` (any `Transfer-Encoding`,
//! e.g. chunked, is refused with 501); responses are never chunked (the
//! length is always known); obsolete line folding and non-UTF-8 header
//! values are refused; bare LF line ends are accepted; no `Date` header;
//! no multipart, cookies, ranges or compression.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

mod error;
mod escape;
mod path;
mod request;
mod response;

pub use error::HttpError;
pub use escape::{escape_html, escape_json};
pub use path::{content_type_for, percent_decode, resolve_path};
pub use request::{
    BodyReader, CONTINUE, Headers, Limits, Method, Parsed, Request, Version, parse_request,
};
pub use response::{Response, reason_phrase};
