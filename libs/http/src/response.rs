//! [`Response`]: a small builder that writes a correctly framed HTTP/1.1
//! response (status line, `Server`, the app's headers, `Content-Length`,
//! `Connection`, blank line, body).

use crate::HttpError;
use alloc::string::String;
use alloc::vec::Vec;

/// A response under construction.
///
/// ```
/// use kiln_http::Response;
/// let bytes = Response::new(200).content_type("text/plain").body("hi").to_bytes(true);
/// assert_eq!(
///     bytes,
///     b"HTTP/1.1 200 OK\r\nServer: kiln\r\nContent-Type: text/plain\r\n\
///       Content-Length: 2\r\nConnection: keep-alive\r\n\r\nhi"
/// );
/// ```
///
/// The framing headers are always written by this type and cannot be set
/// by hand: `Content-Length` (the body's length, or the length given to
/// [`Response::write_head`]), `Connection: keep-alive` or
/// `Connection: close` (as the caller decides, usually from
/// [`crate::Request::keep_alive`]) and `Server: kiln`. No `Date` header is
/// sent (a unikernel may have no clock; RFC 9110 §6.6.1 allows that).
/// Responses that cannot have a body (1xx, 204, 304) get no
/// `Content-Length` and no body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    status: u16,
    content_type: Option<String>,
    /// Extra header lines, already serialized as `Name: value\r\n`.
    headers: Vec<u8>,
    body: Vec<u8>,
}

impl Response {
    /// A response with `status`, no extra headers and an empty body.
    /// A status outside 100..=999 is sent as 500.
    pub fn new(status: u16) -> Self {
        Response {
            status: if (100..=999).contains(&status) {
                status
            } else {
                500
            },
            content_type: None,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// The response for a parse or path error: its status
    /// ([`HttpError::status`]) and its message as a `text/plain` body.
    /// Send it with `keep_alive = false` after a parse error (the rest of
    /// the stream cannot be trusted).
    pub fn from_error(err: &HttpError) -> Self {
        let mut body = Vec::with_capacity(err.message().len() + 1);
        body.extend_from_slice(err.message().as_bytes());
        body.push(b'\n');
        Response::new(err.status())
            .content_type("text/plain; charset=utf-8")
            .body(body)
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The body set so far.
    pub fn body_bytes(&self) -> &[u8] {
        &self.body
    }

    /// Adds a header line `name: value`.
    ///
    /// `Content-Type` is the same as [`Response::content_type`]. The headers
    /// this type writes itself (`Content-Length`, `Connection`, `Server`)
    /// and `Transfer-Encoding` are ignored, as is a header whose name is not
    /// a token or whose value holds a control character (CR, LF, NUL...):
    /// the builder cannot produce a malformed or split response.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        if name.eq_ignore_ascii_case("content-type") {
            return self.content_type(value);
        }
        let reserved = [
            "content-length",
            "connection",
            "server",
            "transfer-encoding",
        ]
        .iter()
        .any(|r| name.eq_ignore_ascii_case(r));
        if !reserved && valid_name(name) && valid_value(value) {
            self.headers.extend_from_slice(name.as_bytes());
            self.headers.extend_from_slice(b": ");
            self.headers.extend_from_slice(value.as_bytes());
            self.headers.extend_from_slice(b"\r\n");
        }
        self
    }

    /// Sets (or replaces) the `Content-Type`, e.g.
    /// `"text/html; charset=utf-8"` (see [`crate::content_type_for`]).
    /// A value with control characters is ignored.
    pub fn content_type(mut self, value: &str) -> Self {
        if valid_value(value) {
            self.content_type = Some(String::from(value));
        }
        self
    }

    /// Sets the body (`&str`, `String`, `&[u8]` or `Vec<u8>`).
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Appends the head to `out`, announcing a body of `body_len` bytes
    /// that the caller sends itself (a file streamed in chunks, or nothing
    /// for HEAD). The body set with [`Response::body`] is not used.
    pub fn write_head(&self, out: &mut Vec<u8>, keep_alive: bool, body_len: u64) {
        out.extend_from_slice(b"HTTP/1.1 ");
        push_decimal(out, u64::from(self.status));
        out.push(b' ');
        out.extend_from_slice(reason_phrase(self.status).as_bytes());
        out.extend_from_slice(b"\r\nServer: kiln\r\n");
        if let Some(ct) = &self.content_type {
            out.extend_from_slice(b"Content-Type: ");
            out.extend_from_slice(ct.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(&self.headers);
        if self.may_have_body() {
            out.extend_from_slice(b"Content-Length: ");
            push_decimal(out, body_len);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(if keep_alive {
            b"Connection: keep-alive\r\n\r\n"
        } else {
            b"Connection: close\r\n\r\n"
        });
    }

    /// Appends the whole response to `out`; with `head_only` (answering a
    /// HEAD request) only the head, still announcing the body's length.
    pub fn write(&self, out: &mut Vec<u8>, keep_alive: bool, head_only: bool) {
        let body: &[u8] = if self.may_have_body() {
            &self.body
        } else {
            &[]
        };
        self.write_head(out, keep_alive, body.len() as u64);
        if !head_only {
            out.extend_from_slice(body);
        }
    }

    /// The whole response as bytes.
    pub fn to_bytes(&self, keep_alive: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(128 + self.headers.len() + self.body.len());
        self.write(&mut out, keep_alive, false);
        out
    }

    /// The head only, with the body's `Content-Length`: the answer to a
    /// HEAD request for the same resource.
    pub fn to_head_bytes(&self, keep_alive: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(128 + self.headers.len());
        self.write(&mut out, keep_alive, true);
        out
    }

    /// 1xx, 204 and 304 responses have no body and no `Content-Length`.
    fn may_have_body(&self) -> bool {
        !(self.status < 200 || self.status == 204 || self.status == 304)
    }
}

/// The reason phrase for a status code (RFC 9110 §15), or `""` for codes
/// it does not know (the status line is then `HTTP/1.1 599 `, which is
/// valid).
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        422 => "Unprocessable Content",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        507 => "Insufficient Storage",
        _ => "",
    }
}

/// Whether `name` is a non-empty RFC 9110 token.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Whether `value` has no control characters other than tab.
fn valid_value(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// Appends `n` in decimal.
fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        if let Some(d) = digits.get_mut(start) {
            *d = b'0' + (n % 10) as u8;
        }
        n /= 10;
        if n == 0 || start == 0 {
            break;
        }
    }
    out.extend_from_slice(digits.get(start..).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(bytes: &[u8]) -> &str {
        core::str::from_utf8(bytes).unwrap()
    }

    #[test]
    fn exact_bytes_keep_alive_and_close() {
        let r = Response::new(200)
            .content_type("text/html")
            .body("<p>hi</p>");
        assert_eq!(
            text(&r.to_bytes(true)),
            "HTTP/1.1 200 OK\r\nServer: kiln\r\nContent-Type: text/html\r\n\
             Content-Length: 9\r\nConnection: keep-alive\r\n\r\n<p>hi</p>"
        );
        assert_eq!(
            text(&r.to_bytes(false)),
            "HTTP/1.1 200 OK\r\nServer: kiln\r\nContent-Type: text/html\r\n\
             Content-Length: 9\r\nConnection: close\r\n\r\n<p>hi</p>"
        );
    }

    #[test]
    fn content_length_for_several_sizes() {
        for size in [0usize, 1, 9, 10, 99, 100, 4096, 65_536, 1_000_000] {
            let body = alloc::vec![b'x'; size];
            let bytes = Response::new(200).body(body.clone()).to_bytes(true);
            let head = alloc::format!(
                "HTTP/1.1 200 OK\r\nServer: kiln\r\nContent-Length: {size}\r\nConnection: keep-alive\r\n\r\n"
            );
            assert_eq!(&bytes[..head.len()], head.as_bytes(), "size {size}");
            assert_eq!(&bytes[head.len()..], &body[..]);
        }
    }

    #[test]
    fn head_requests_get_the_length_but_no_body() {
        let r = Response::new(200)
            .content_type("application/json")
            .body("{\"a\":1}");
        let expected = "HTTP/1.1 200 OK\r\nServer: kiln\r\nContent-Type: application/json\r\n\
                        Content-Length: 7\r\nConnection: keep-alive\r\n\r\n";
        assert_eq!(text(&r.to_head_bytes(true)), expected);
        let mut out = Vec::new();
        r.write(&mut out, true, true);
        assert_eq!(text(&out), expected);
        // write_head: a length the caller streams itself.
        let mut out = b"previous".to_vec();
        Response::new(200).write_head(&mut out, false, 123_456_789_012);
        assert_eq!(
            text(&out),
            "previousHTTP/1.1 200 OK\r\nServer: kiln\r\nContent-Length: 123456789012\r\n\
             Connection: close\r\n\r\n"
        );
    }

    #[test]
    fn headers_in_order_and_framing_headers_protected() {
        let r = Response::new(201)
            .header("Location", "/files/a.txt")
            .header("Content-Length", "999")
            .header("connection", "upgrade")
            .header("Server", "other")
            .header("Transfer-Encoding", "chunked")
            .header("Bad Name", "x")
            .header("X-Injected", "a\r\nSet-Cookie: evil")
            .header("X-Tab", "a\tb")
            .header("content-type", "text/plain")
            .content_type("text/plain; charset=utf-8")
            .content_type("bad\nvalue")
            .body(&b"created\n"[..]);
        assert_eq!(
            text(&r.to_bytes(true)),
            "HTTP/1.1 201 Created\r\nServer: kiln\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Location: /files/a.txt\r\nX-Tab: a\tb\r\nContent-Length: 8\r\n\
             Connection: keep-alive\r\n\r\ncreated\n"
        );
        assert_eq!(r.status(), 201);
        assert_eq!(r.body_bytes(), b"created\n");
    }

    #[test]
    fn bodiless_statuses() {
        let r = Response::new(204).body("ignored");
        assert_eq!(
            text(&r.to_bytes(true)),
            "HTTP/1.1 204 No Content\r\nServer: kiln\r\nConnection: keep-alive\r\n\r\n"
        );
        let r = Response::new(304).body("ignored");
        assert_eq!(
            text(&r.to_bytes(false)),
            "HTTP/1.1 304 Not Modified\r\nServer: kiln\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn status_lines() {
        for (status, line) in [
            (400, "HTTP/1.1 400 Bad Request\r\n"),
            (403, "HTTP/1.1 403 Forbidden\r\n"),
            (404, "HTTP/1.1 404 Not Found\r\n"),
            (413, "HTTP/1.1 413 Content Too Large\r\n"),
            (414, "HTTP/1.1 414 URI Too Long\r\n"),
            (431, "HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            (501, "HTTP/1.1 501 Not Implemented\r\n"),
            (505, "HTTP/1.1 505 HTTP Version Not Supported\r\n"),
            (599, "HTTP/1.1 599 \r\n"),
            (42, "HTTP/1.1 500 Internal Server Error\r\n"),
            (1000, "HTTP/1.1 500 Internal Server Error\r\n"),
        ] {
            let bytes = Response::new(status).to_bytes(true);
            assert!(text(&bytes).starts_with(line), "{status}: {}", text(&bytes));
        }
    }

    #[test]
    fn error_responses() {
        let r = Response::from_error(&HttpError::PathTraversal);
        assert_eq!(
            text(&r.to_bytes(false)),
            "HTTP/1.1 400 Bad Request\r\nServer: kiln\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Length: 27\r\nConnection: close\r\n\r\npath climbs above the root\n"
        );
        assert_eq!(Response::from_error(&HttpError::UriTooLong).status(), 414);
    }

    #[test]
    fn decimal() {
        for n in [0u64, 7, 10, 12_345, u64::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            assert_eq!(text(&out), alloc::format!("{n}"));
        }
    }
}
