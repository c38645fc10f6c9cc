//! Request-head parsing: [`parse_request`] turns bytes into a [`Request`]
//! that borrows them; [`BodyReader`] counts the body bytes that follow.
//!
//! The parser never allocates: the request line and header values are
//! `&str` slices of the caller's buffer, and headers are re-split lazily
//! by [`Request::headers`] from the (already validated) header block.
//! Each call parses the buffer from its start; heads are small (at most
//! [`Limits::max_head_bytes`]), so re-parsing when more bytes arrive is
//! cheap.

use crate::HttpError;
use core::str;

/// Size limits applied by [`parse_request`].
///
/// The defaults ([`Limits::DEFAULT`]) suit the Kiln apps: an 8 KiB head,
/// a 4 KiB target, 64 header lines and a 16 MiB body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest accepted head in bytes, counting the request line, the
    /// header lines, their line ends, the final blank line and any empty
    /// lines before the request line. Over it: [`HttpError::HeadTooLarge`]
    /// (431).
    pub max_head_bytes: usize,
    /// Longest accepted request target in bytes; over it:
    /// [`HttpError::UriTooLong`] (414). A target longer than
    /// `max_head_bytes` gives 431 first.
    pub max_target_bytes: usize,
    /// Most header lines accepted; over it: [`HttpError::TooManyHeaders`]
    /// (431).
    pub max_headers: usize,
    /// Largest accepted `Content-Length`; over it:
    /// [`HttpError::BodyTooLarge`] (413).
    pub max_body_bytes: u64,
}

impl Limits {
    /// 8 KiB head, 4 KiB target, 64 headers, 16 MiB body.
    pub const DEFAULT: Limits = Limits {
        max_head_bytes: 8 * 1024,
        max_target_bytes: 4 * 1024,
        max_headers: 64,
        max_body_bytes: 16 * 1024 * 1024,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// A request method. Methods are case-sensitive (RFC 9110 §9.1): `get` is
/// `Other("get")`, not [`Method::Get`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method<'a> {
    /// `GET`
    Get,
    /// `HEAD`: answer like GET but without the body
    /// ([`crate::Response::to_head_bytes`]).
    Head,
    /// `POST`
    Post,
    /// `PUT`
    Put,
    /// `DELETE`
    Delete,
    /// `OPTIONS`
    Options,
    /// Any other method token, as sent (e.g. `PATCH`).
    Other(&'a str),
}

impl<'a> Method<'a> {
    /// The method for a token (the token is not checked here; the parser
    /// only passes valid tokens).
    pub fn from_token(token: &'a str) -> Method<'a> {
        match token {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "OPTIONS" => Method::Options,
            other => Method::Other(other),
        }
    }

    /// The method token, e.g. `"GET"`.
    pub fn as_str(&self) -> &'a str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
            Method::Other(token) => token,
        }
    }
}

/// The request's HTTP version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Version {
    /// `HTTP/1.0`
    Http10,
    /// `HTTP/1.1`; also `HTTP/1.2`..`HTTP/1.9`, which RFC 9110 §2.5 says to
    /// treat as the highest minor version implemented.
    Http11,
}

impl Version {
    /// `"HTTP/1.0"` or `"HTTP/1.1"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
        }
    }
}

/// A parsed request head. Everything borrows the buffer given to
/// [`parse_request`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    /// The method.
    pub method: Method<'a>,
    /// The request target exactly as sent (still percent-encoded).
    pub target: &'a str,
    /// The target's path, without the query, still percent-encoded: for
    /// origin-form the part before `?` (starts with `/`); for absolute-form
    /// (`http://host/p?q`) the part after the authority (`/` if empty); `*`
    /// for `OPTIONS *`. Feed it to [`crate::resolve_path`] to get a file
    /// name.
    pub path: &'a str,
    /// The part after the first `?`, if there is a `?` (may be empty).
    pub query: Option<&'a str>,
    /// The version.
    pub version: Version,
    /// The header lines (validated), split again by [`Request::headers`].
    raw_headers: &'a str,
    /// The validated `Content-Length`.
    content_length: Option<u64>,
}

impl<'a> Request<'a> {
    /// The headers in order, as `(name, value)`: the name as sent, the
    /// value with surrounding spaces and tabs removed.
    pub fn headers(&self) -> Headers<'a> {
        Headers {
            lines: self.raw_headers.lines(),
        }
    }

    /// The value of the first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// The `Content-Length`, if the request has one (validated: a single
    /// decimal number within [`Limits::max_body_bytes`]).
    pub fn content_length(&self) -> Option<u64> {
        self.content_length
    }

    /// How many body bytes follow the head: the `Content-Length`, or 0
    /// (requests without one have no body, as chunked ones are refused).
    pub fn body_len(&self) -> u64 {
        self.content_length.unwrap_or(0)
    }

    /// A [`BodyReader`] for this request's body.
    pub fn body_reader(&self) -> BodyReader {
        BodyReader::new(self.body_len())
    }

    /// Whether the connection stays open after the response: for HTTP/1.1
    /// unless a `Connection` header lists `close`; for HTTP/1.0 only if a
    /// `Connection` header lists `keep-alive` and none lists `close`.
    pub fn keep_alive(&self) -> bool {
        let close = self.connection_has("close");
        match self.version {
            Version::Http11 => !close,
            Version::Http10 => !close && self.connection_has("keep-alive"),
        }
    }

    /// Whether the client sent `Expect: 100-continue` on HTTP/1.1 and waits
    /// for [`CONTINUE`] before sending its body (curl does so for PUT
    /// bodies over 1 KiB). Answer [`CONTINUE`] first when accepting the
    /// body, or the final response (e.g. 403) to refuse it.
    pub fn expects_continue(&self) -> bool {
        self.version == Version::Http11
            && self.headers().any(|(n, v)| {
                n.eq_ignore_ascii_case("expect") && v.eq_ignore_ascii_case("100-continue")
            })
    }

    /// Whether any `Connection` header lists `token` (case-insensitive).
    fn connection_has(&self, token: &str) -> bool {
        self.headers()
            .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| trim_ows(t).eq_ignore_ascii_case(token))
    }
}

/// The interim response to send when [`Request::expects_continue`].
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Iterator over a request's headers as `(name, value)`; see
/// [`Request::headers`].
#[derive(Clone, Debug)]
pub struct Headers<'a> {
    lines: str::Lines<'a>,
}

impl<'a> Iterator for Headers<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        // Every line was validated to be `name:value`; `lines` also strips
        // the CR of a CRLF.
        self.lines
            .by_ref()
            .find_map(|line| line.split_once(':'))
            .map(|(name, value)| (name, trim_ows(value)))
    }
}

/// The result of [`parse_request`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// The head is not complete yet and nothing wrong was seen so far:
    /// read more bytes and call again with the longer buffer.
    Incomplete,
    /// A complete, valid head.
    Complete {
        /// The request.
        request: Request<'a>,
        /// How many bytes of the buffer the head took. The body
        /// ([`Request::body_len`] bytes) starts there, and the next
        /// pipelined request after the body.
        head_len: usize,
    },
}

/// Parses the request head at the start of `buf`.
///
/// Returns [`Parsed::Incomplete`] while the head is unfinished (every
/// strict prefix of a valid request gives `Incomplete`), the request and
/// the head's length once the blank line arrives, or an [`HttpError`] as
/// soon as the bytes can no longer become a valid request (a bad request
/// line is refused before the headers arrive; a head that has not ended
/// within [`Limits::max_head_bytes`] gives [`HttpError::HeadTooLarge`]).
///
/// Syntax (RFC 9112, strictly):
/// - lines end with CRLF; a bare LF is also accepted as a line end (RFC
///   9112 §2.2 allows it), a bare CR anywhere is an error;
/// - empty lines before the request line are skipped (§2.2);
/// - request line: `method SP target SP HTTP/d.d` with single spaces; the
///   method a token; the target visible ASCII without `#`, in origin-form
///   (`/p?q`), absolute-form (`http://h/p`) or `*` (OPTIONS only);
///   `HTTP/1.0` and `HTTP/1.1` (and `HTTP/1.2`..`1.9` as 1.1) are
///   accepted, other majors give 505;
/// - header lines: `name: value`, the name a token with no space before the
///   `:`; the value visible ASCII, spaces, tabs and UTF-8 (no control
///   bytes; non-UTF-8 bytes are refused); a line starting with whitespace
///   (obs-fold) is refused;
/// - HTTP/1.1 needs exactly one `Host` (HTTP/1.0 at most one);
/// - `Content-Length` must be a single decimal number not above
///   [`Limits::max_body_bytes`]; any `Transfer-Encoding` is refused (501,
///   or 400 together with a `Content-Length`).
pub fn parse_request<'a>(buf: &'a [u8], limits: &Limits) -> Result<Parsed<'a>, HttpError> {
    // Only the first `max_head_bytes` can hold a head we accept.
    let window = buf.get(..limits.max_head_bytes).unwrap_or(buf);
    let mut pos = 0;
    let mut request_line: Option<RequestLine<'a>> = None;
    let mut headers_start = 0;
    let mut headers = 0usize;
    loop {
        let rest = window.get(pos..).unwrap_or_default();
        let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
            // An unfinished line: refuse it already if no continuation
            // can make it valid.
            let partial = strip_cr(rest);
            if request_line.is_none() {
                check_request_line(partial, false, limits)?;
            } else {
                check_header_line(partial, false)?;
            }
            return if buf.len() >= limits.max_head_bytes {
                Err(HttpError::HeadTooLarge)
            } else {
                Ok(Parsed::Incomplete)
            };
        };
        let line = strip_cr(rest.get(..nl).unwrap_or_default());
        let next = pos + nl + 1;
        match &request_line {
            None => {
                if !line.is_empty() {
                    check_request_line(line, true, limits)?;
                    let text = str::from_utf8(line).map_err(|_| HttpError::BadRequestLine)?;
                    request_line = Some(RequestLine::parse(text)?);
                    headers_start = next;
                }
            }
            Some(rl) => {
                if line.is_empty() {
                    let block = window.get(headers_start..pos).unwrap_or_default();
                    let raw_headers = str::from_utf8(block).map_err(|_| HttpError::BadHeader)?;
                    let request = finish(rl, raw_headers, limits)?;
                    return Ok(Parsed::Complete {
                        request,
                        head_len: next,
                    });
                }
                check_header_line(line, true)?;
                headers += 1;
                if headers > limits.max_headers {
                    return Err(HttpError::TooManyHeaders);
                }
            }
        }
        pos = next;
    }
}

/// A request line, split.
struct RequestLine<'a> {
    method: Method<'a>,
    target: &'a str,
    path: &'a str,
    query: Option<&'a str>,
    version: Version,
}

impl<'a> RequestLine<'a> {
    /// Splits a line that [`check_request_line`] accepted as complete and
    /// checks the target's form and the version.
    fn parse(line: &'a str) -> Result<Self, HttpError> {
        let (method, rest) = line.split_once(' ').ok_or(HttpError::BadRequestLine)?;
        let (target, version) = rest.split_once(' ').ok_or(HttpError::BadRequestLine)?;
        let method = Method::from_token(method);
        let version = match version.as_bytes() {
            [b'H', b'T', b'T', b'P', b'/', b'1', b'.', b'0'] => Version::Http10,
            [b'H', b'T', b'T', b'P', b'/', b'1', b'.', minor] if minor.is_ascii_digit() => {
                Version::Http11
            }
            _ => return Err(HttpError::UnsupportedVersion),
        };
        let (path, query) = split_target(&method, target)?;
        Ok(RequestLine {
            method,
            target,
            path,
            query,
            version,
        })
    }
}

/// Path and query of a target, by its form (RFC 9112 §3.2).
fn split_target<'a>(
    method: &Method<'_>,
    target: &'a str,
) -> Result<(&'a str, Option<&'a str>), HttpError> {
    if target == "*" {
        return match method {
            Method::Options => Ok(("*", None)),
            _ => Err(HttpError::BadTarget),
        };
    }
    let (before_query, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    if before_query.starts_with('/') {
        return Ok((before_query, query));
    }
    let rest = strip_prefix_ignore_case(before_query, "http://")
        .or_else(|| strip_prefix_ignore_case(before_query, "https://"))
        .ok_or(HttpError::BadTarget)?;
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at_checked(i).ok_or(HttpError::BadTarget)?,
        None => (rest, ""),
    };
    if authority.is_empty() {
        return Err(HttpError::BadTarget);
    }
    Ok((if path.is_empty() { "/" } else { path }, query))
}

/// The header checks that need the whole head.
fn finish<'a>(
    rl: &RequestLine<'a>,
    raw_headers: &'a str,
    limits: &Limits,
) -> Result<Request<'a>, HttpError> {
    let mut request = Request {
        method: rl.method,
        target: rl.target,
        path: rl.path,
        query: rl.query,
        version: rl.version,
        raw_headers,
        content_length: None,
    };
    let mut hosts = 0usize;
    let mut transfer_encoding = false;
    for (name, value) in request.headers() {
        if name.eq_ignore_ascii_case("host") {
            hosts += 1;
        } else if name.eq_ignore_ascii_case("content-length") {
            if request.content_length.is_some() {
                return Err(HttpError::BadContentLength);
            }
            request.content_length = Some(parse_content_length(value)?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_encoding = true;
        }
    }
    if transfer_encoding {
        return Err(if request.content_length.is_some() {
            HttpError::ContentLengthAndTransferEncoding
        } else {
            HttpError::TransferEncodingNotImplemented
        });
    }
    if hosts > 1 {
        return Err(HttpError::DuplicateHost);
    }
    if hosts == 0 && request.version == Version::Http11 {
        return Err(HttpError::MissingHost);
    }
    if request.body_len() > limits.max_body_bytes {
        return Err(HttpError::BodyTooLarge);
    }
    Ok(request)
}

/// `1*DIGIT` into a `u64`.
fn parse_content_length(value: &str) -> Result<u64, HttpError> {
    if value.is_empty() {
        return Err(HttpError::BadContentLength);
    }
    value.bytes().try_fold(0u64, |n, b| {
        if !b.is_ascii_digit() {
            return Err(HttpError::BadContentLength);
        }
        n.checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(b - b'0')))
            .ok_or(HttpError::BadContentLength)
    })
}

/// Checks a request line (without its line end). With `complete == false`
/// the line is unfinished: only refuse what no continuation can fix.
fn check_request_line(line: &[u8], complete: bool, limits: &Limits) -> Result<(), HttpError> {
    if line.contains(&b'\r') {
        return Err(HttpError::BadRequestLine);
    }
    let parts = line.iter().filter(|&&b| b == b' ').count() + 1;
    if parts > 3 || (complete && parts < 3) {
        return Err(HttpError::BadRequestLine);
    }
    for (i, part) in line.split(|&b| b == b' ').enumerate() {
        // Whether this part is whole (followed by a space or the line end).
        let whole = i + 1 < parts || complete;
        match i {
            0 => {
                if (whole && part.is_empty()) || !part.iter().all(|&b| is_tchar(b)) {
                    return Err(HttpError::BadRequestLine);
                }
            }
            1 => {
                if whole && part.is_empty() {
                    return Err(HttpError::BadRequestLine);
                }
                if part.len() > limits.max_target_bytes {
                    return Err(HttpError::UriTooLong);
                }
                let form_ok = match part.first() {
                    None | Some(b'/' | b'*') => true,
                    // Absolute-form: as far as it goes, the scheme must be
                    // `http://` or `https://`.
                    Some(_) => ["http://", "https://"].iter().any(|scheme| {
                        let n = part.len().min(scheme.len());
                        part.get(..n)
                            .zip(scheme.as_bytes().get(..n))
                            .is_some_and(|(a, b)| a.eq_ignore_ascii_case(b))
                    }),
                };
                if !form_ok || !part.iter().all(|&b| is_target_byte(b)) {
                    return Err(HttpError::BadTarget);
                }
            }
            _ => {
                if !version_prefix_ok(part) || (whole && part.len() != 8) {
                    return Err(HttpError::BadVersion);
                }
            }
        }
    }
    Ok(())
}

/// Whether `v` is a prefix of `HTTP/<digit>.<digit>`.
fn version_prefix_ok(v: &[u8]) -> bool {
    v.len() <= 8
        && v.iter().enumerate().all(|(i, &b)| match i {
            5 | 7 => b.is_ascii_digit(),
            6 => b == b'.',
            _ => b"HTTP/".get(i) == Some(&b),
        })
}

/// Checks a header line (without its line end); `complete` as for
/// [`check_request_line`].
fn check_header_line(line: &[u8], complete: bool) -> Result<(), HttpError> {
    if matches!(line.first(), Some(b' ' | b'\t')) {
        return Err(HttpError::ObsFold);
    }
    if line.contains(&b'\r') {
        return Err(HttpError::BadHeader);
    }
    let (name, value) = match line.iter().position(|&b| b == b':') {
        Some(colon) => {
            let (name, value) = line.split_at_checked(colon).ok_or(HttpError::BadHeader)?;
            if name.is_empty() {
                return Err(HttpError::BadHeader);
            }
            (name, value.get(1..).unwrap_or_default())
        }
        None if complete => return Err(HttpError::BadHeader),
        None => (line, &[][..]),
    };
    if !name.iter().all(|&b| is_tchar(b)) || !value.iter().all(|&b| is_value_byte(b)) {
        return Err(HttpError::BadHeader);
    }
    Ok(())
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Bytes allowed in a request target: visible ASCII except `#`.
fn is_target_byte(b: u8) -> bool {
    (0x21..=0x7e).contains(&b) && b != b'#'
}

/// Bytes allowed in a header value: tab, space, visible ASCII and bytes
/// above 0x7F (which must form UTF-8, checked when the head is complete).
fn is_value_byte(b: u8) -> bool {
    b == b'\t' || (0x20..=0x7e).contains(&b) || b >= 0x80
}

/// `line` without one trailing CR.
fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// `s` without surrounding spaces and tabs (RFC 9110 `OWS`).
fn trim_ows(s: &str) -> &str {
    s.trim_matches([' ', '\t'])
}

/// `s` after `prefix`, compared ASCII-case-insensitively.
fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix) {
        s.get(prefix.len()..)
    } else {
        None
    }
}

/// Counts down a request body that arrives in pieces.
///
/// After [`Parsed::Complete`], the body is the next
/// [`Request::body_len`] bytes after `head_len`. When the whole body fits
/// in the buffer, slice it directly; to stream a large one (e.g. a PUT
/// straight to a file), feed each received chunk to [`BodyReader::take`],
/// which splits off the body part and returns the rest (the start of the
/// next pipelined request).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyReader {
    remaining: u64,
}

impl BodyReader {
    /// A reader for a body of `len` bytes.
    pub const fn new(len: u64) -> Self {
        BodyReader { remaining: len }
    }

    /// Body bytes still to come.
    pub const fn remaining(&self) -> u64 {
        self.remaining
    }

    /// Whether the whole body has been taken.
    pub const fn is_done(&self) -> bool {
        self.remaining == 0
    }

    /// Splits `input` into `(body bytes, what follows the body)` and counts
    /// the body bytes off. The second part is empty until the body is
    /// done.
    pub fn take<'b>(&mut self, input: &'b [u8]) -> (&'b [u8], &'b [u8]) {
        let n = usize::try_from(self.remaining)
            .unwrap_or(usize::MAX)
            .min(input.len());
        let (body, rest) = input.split_at_checked(n).unwrap_or((input, &[]));
        self.remaining -= body.len() as u64;
        (body, rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    const LIMITS: Limits = Limits::DEFAULT;

    /// Parses `text`, expecting a complete request of exactly its length.
    fn complete(text: &str) -> Request<'_> {
        match parse_request(text.as_bytes(), &LIMITS) {
            Ok(Parsed::Complete { request, head_len }) => {
                assert_eq!(head_len, text.len(), "{text:?}");
                request
            }
            other => panic!("{text:?}: {other:?}"),
        }
    }

    fn error(text: &[u8], limits: &Limits) -> HttpError {
        match parse_request(text, limits) {
            Err(e) => e,
            other => panic!("{:?}: {other:?}", str::from_utf8(text)),
        }
    }

    #[test]
    fn simple_get() {
        let r = complete("GET /index.html HTTP/1.1\r\nHost: example\r\nAccept: */*\r\n\r\n");
        assert_eq!(r.method, Method::Get);
        assert_eq!(r.target, "/index.html");
        assert_eq!(r.path, "/index.html");
        assert_eq!(r.query, None);
        assert_eq!(r.version, Version::Http11);
        assert_eq!(r.header("host"), Some("example"));
        assert_eq!(r.header("accept"), Some("*/*"));
        assert_eq!(r.header("missing"), None);
        assert_eq!(r.content_length(), None);
        assert_eq!(r.body_len(), 0);
        assert!(r.keep_alive());
        assert!(!r.expects_continue());
        let all: Vec<_> = r.headers().collect();
        assert_eq!(all, [("Host", "example"), ("Accept", "*/*")]);
    }

    #[test]
    fn header_names_are_case_insensitive_and_values_trimmed() {
        let r = complete(
            "GET / HTTP/1.1\r\nhOsT:  a.b \r\nX-Thing:\tone two\t\r\nEmpty:\r\nCONTENT-LENGTH: 0\r\n\r\n",
        );
        assert_eq!(r.header("HOST"), Some("a.b"));
        assert_eq!(r.header("x-thing"), Some("one two"));
        assert_eq!(r.header("empty"), Some(""));
        assert_eq!(r.header("Content-Length"), Some("0"));
        assert_eq!(r.content_length(), Some(0));
        // The name is returned as sent.
        assert_eq!(r.headers().next(), Some(("hOsT", "a.b")));
    }

    #[test]
    fn utf8_header_values() {
        let r = complete("GET / HTTP/1.1\r\nHost: h\r\nX-Name: caf\u{e9} \u{2603}\r\n\r\n");
        assert_eq!(r.header("x-name"), Some("caf\u{e9} \u{2603}"));
        // Latin-1 obs-text is not UTF-8: refused.
        let e = error(b"GET / HTTP/1.1\r\nHost: h\r\nX: caf\xe9\r\n\r\n", &LIMITS);
        assert_eq!(e, HttpError::BadHeader);
    }

    #[test]
    fn methods() {
        for (token, method) in [
            ("GET", Method::Get),
            ("HEAD", Method::Head),
            ("POST", Method::Post),
            ("PUT", Method::Put),
            ("DELETE", Method::Delete),
            ("OPTIONS", Method::Options),
            ("PATCH", Method::Other("PATCH")),
            ("get", Method::Other("get")),
        ] {
            let text = alloc::format!("{token} / HTTP/1.1\r\nHost: h\r\n\r\n");
            let r = complete(&text);
            assert_eq!(r.method, method);
            assert_eq!(r.method.as_str(), token);
        }
    }

    #[test]
    fn query_split() {
        let r = complete("GET /a/b?x=1&y=%20?z HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(r.target, "/a/b?x=1&y=%20?z");
        assert_eq!(r.path, "/a/b");
        assert_eq!(r.query, Some("x=1&y=%20?z"));
        let r = complete("GET /a? HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!((r.path, r.query), ("/a", Some("")));
        let r = complete("GET /?q HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!((r.path, r.query), ("/", Some("q")));
    }

    #[test]
    fn target_forms() {
        let r = complete("GET http://example.com/x/y?z HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!((r.path, r.query), ("/x/y", Some("z")));
        let r = complete("GET HTTPS://example.com HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!((r.path, r.query), ("/", None));
        let r = complete("GET http://example.com?q HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!((r.path, r.query), ("/", Some("q")));
        let r = complete("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!((r.path, r.query), ("*", None));
        for bad in [
            "GET * HTTP/1.1\r\n\r\n",
            "GET ftp://x/ HTTP/1.1\r\n\r\n",
            "GET http:///x HTTP/1.1\r\n\r\n",
            "CONNECT example.com:443 HTTP/1.1\r\n\r\n",
            "GET /a#frag HTTP/1.1\r\n\r\n",
            "GET ?x HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(
                error(bad.as_bytes(), &LIMITS),
                HttpError::BadTarget,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn versions() {
        assert_eq!(complete("GET / HTTP/1.0\r\n\r\n").version, Version::Http10);
        assert_eq!(
            complete("GET / HTTP/1.1\r\nHost: h\r\n\r\n").version,
            Version::Http11
        );
        assert_eq!(
            complete("GET / HTTP/1.7\r\nHost: h\r\n\r\n").version,
            Version::Http11
        );
        assert_eq!(Version::Http10.as_str(), "HTTP/1.0");
        assert_eq!(Version::Http11.as_str(), "HTTP/1.1");
    }

    #[test]
    fn keep_alive_rules() {
        let cases = [
            ("GET / HTTP/1.1\r\nHost: h\r\n\r\n", true),
            (
                "GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
                false,
            ),
            (
                "GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, CLOSE\r\n\r\n",
                false,
            ),
            (
                "GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\n\r\n",
                true,
            ),
            (
                "GET / HTTP/1.1\r\nHost: h\r\nConnection: closed\r\n\r\n",
                true,
            ),
            ("GET / HTTP/1.0\r\n\r\n", false),
            ("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", true),
            (
                "GET / HTTP/1.0\r\nConnection: foo ,keep-alive\r\n\r\n",
                true,
            ),
            (
                "GET / HTTP/1.0\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n",
                false,
            ),
            ("GET / HTTP/1.0\r\nX-Connection: keep-alive\r\n\r\n", false),
        ];
        for (text, keep) in cases {
            assert_eq!(complete(text).keep_alive(), keep, "{text:?}");
        }
    }

    #[test]
    fn content_length_and_body() {
        let text = "PUT /f HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello";
        let Ok(Parsed::Complete { request, head_len }) = parse_request(text.as_bytes(), &LIMITS)
        else {
            panic!()
        };
        assert_eq!(request.method, Method::Put);
        assert_eq!(request.content_length(), Some(5));
        assert_eq!(request.body_len(), 5);
        assert_eq!(head_len, text.len() - 5);
        let mut reader = request.body_reader();
        assert_eq!(
            reader.take(&text.as_bytes()[head_len..]),
            (&b"hello"[..], &b""[..])
        );
        assert!(reader.is_done());
        let r = complete("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 007\r\n\r\n");
        assert_eq!(r.content_length(), Some(7));
        let unlimited = Limits {
            max_body_bytes: u64::MAX,
            ..Limits::DEFAULT
        };
        let text = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 18446744073709551615\r\n\r\n";
        let Ok(Parsed::Complete { request, .. }) = parse_request(text, &unlimited) else {
            panic!()
        };
        assert_eq!(request.content_length(), Some(u64::MAX));
    }

    #[test]
    fn expect_continue() {
        let r = complete(
            "PUT /f HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n",
        );
        assert!(r.expects_continue());
        let r = complete("PUT /f HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n");
        assert!(!r.expects_continue());
        assert_eq!(CONTINUE, b"HTTP/1.1 100 Continue\r\n\r\n");
    }

    #[test]
    fn bare_lf_and_leading_empty_lines() {
        let r = complete("GET /x HTTP/1.1\nHost: h\n\n");
        assert_eq!((r.path, r.header("host")), ("/x", Some("h")));
        let r = complete("\r\n\r\n\nGET /y HTTP/1.1\r\nHost: h\n\r\n");
        assert_eq!((r.path, r.header("host")), ("/y", Some("h")));
    }

    #[test]
    fn body_reader_streams() {
        let mut reader = BodyReader::new(10);
        assert_eq!(reader.take(b"0123"), (&b"0123"[..], &b""[..]));
        assert_eq!(reader.remaining(), 6);
        assert_eq!(reader.take(b""), (&b""[..], &b""[..]));
        assert_eq!(reader.take(b"456789GET /"), (&b"456789"[..], &b"GET /"[..]));
        assert!(reader.is_done());
        assert_eq!(reader.take(b"more"), (&b""[..], &b"more"[..]));
        let mut empty = BodyReader::new(0);
        assert!(empty.is_done());
        assert_eq!(empty.take(b"x"), (&b""[..], &b"x"[..]));
    }

    #[test]
    fn every_error_variant_with_its_status() {
        let long_target = alloc::format!("GET /{} HTTP/1.1\r\nHost: h\r\n\r\n", "a".repeat(4096));
        let many_headers =
            alloc::format!("GET / HTTP/1.1\r\nHost: h\r\n{}\r\n", "X: y\r\n".repeat(64));
        let big_head = alloc::format!(
            "GET / HTTP/1.1\r\nHost: h\r\nX: {}\r\n\r\n",
            "v".repeat(8192)
        );
        let cases: [(&[u8], HttpError, u16); 34] = [
            (b"GET / HTTP/1.1 extra\r\n\r\n", HttpError::BadRequestLine, 400),
            (b"GET  / HTTP/1.1\r\n\r\n", HttpError::BadRequestLine, 400),
            (b"GET /\r\n\r\n", HttpError::BadRequestLine, 400),
            (b"GET\r\n", HttpError::BadRequestLine, 400),
            (b"G(T / HTTP/1.1\r\n", HttpError::BadRequestLine, 400),
            (b"GET / HTTP/1.1\rHost: h\r\n\r\n", HttpError::BadRequestLine, 400),
            (b" GET / HTTP/1.1\r\n", HttpError::BadRequestLine, 400),
            (b"GET /a\x01 HTTP/1.1\r\n", HttpError::BadTarget, 400),
            (b"GET \xc3\xa9 HTTP/1.1\r\n", HttpError::BadTarget, 400),
            (b"GET / HTTP/1.1x\r\n", HttpError::BadVersion, 400),
            (b"GET / http/1.1\r\n", HttpError::BadVersion, 400),
            (b"GET / HTTP/10.0\r\n", HttpError::BadVersion, 400),
            (b"GET / HTTP/1\r\n\r\n", HttpError::BadVersion, 400),
            (b"GET / HTTP/2.0\r\nHost: h\r\n\r\n", HttpError::UnsupportedVersion, 505),
            (b"GET / HTTP/0.9\r\n\r\n", HttpError::UnsupportedVersion, 505),
            (b"GET / HTTP/1.1\r\nHost h\r\n\r\n", HttpError::BadHeader, 400),
            (b"GET / HTTP/1.1\r\nHost : h\r\n\r\n", HttpError::BadHeader, 400),
            (b"GET / HTTP/1.1\r\n: h\r\n\r\n", HttpError::BadHeader, 400),
            (b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n", HttpError::BadHeader, 400),
            (b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n", HttpError::BadHeader, 400),
            (b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n", HttpError::ObsFold, 400),
            (b"GET / HTTP/1.1\r\n\tHost: h\r\n\r\n", HttpError::ObsFold, 400),
            (b"GET / HTTP/1.1\r\nX: y\r\n\r\n", HttpError::MissingHost, 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n", HttpError::DuplicateHost, 400),
            (b"PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 1x\r\n\r\n", HttpError::BadContentLength, 400),
            (b"PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n", HttpError::BadContentLength, 400),
            (b"PUT / HTTP/1.1\r\nHost: h\r\nContent-Length:\r\n\r\n", HttpError::BadContentLength, 400),
            (b"PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 18446744073709551616\r\n\r\n", HttpError::BadContentLength, 400),
            (b"PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n", HttpError::BadContentLength, 400),
            (b"PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 1, 1\r\n\r\n", HttpError::BadContentLength, 400),
            (b"PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", HttpError::ContentLengthAndTransferEncoding, 400),
            (b"PUT / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n", HttpError::TransferEncodingNotImplemented, 501),
            (b"PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 16777217\r\n\r\n", HttpError::BodyTooLarge, 413),
            (long_target.as_bytes(), HttpError::UriTooLong, 414),
        ];
        for (text, err, status) in cases {
            assert_eq!(error(text, &LIMITS), err, "{:?}", str::from_utf8(text));
            assert_eq!(err.status(), status);
        }
        assert_eq!(
            error(many_headers.as_bytes(), &LIMITS),
            HttpError::TooManyHeaders
        );
        assert_eq!(HttpError::TooManyHeaders.status(), 431);
        assert_eq!(error(big_head.as_bytes(), &LIMITS), HttpError::HeadTooLarge);
        assert_eq!(HttpError::HeadTooLarge.status(), 431);
    }

    #[test]
    fn limits_are_inclusive() {
        let limits = Limits {
            max_head_bytes: 64,
            max_target_bytes: 10,
            max_headers: 2,
            max_body_bytes: 100,
        };
        let ok = |text: &str| {
            assert!(
                matches!(
                    parse_request(text.as_bytes(), &limits),
                    Ok(Parsed::Complete { .. })
                ),
                "{text:?}"
            )
        };
        // Target of exactly 10 bytes, then 11.
        ok("GET /123456789 HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(
            error(b"GET /1234567890 HTTP/1.1\r\nHost: h\r\n\r\n", &limits),
            HttpError::UriTooLong
        );
        // A too-long target is refused before the line ends.
        assert_eq!(error(b"GET /1234567890", &limits), HttpError::UriTooLong);
        // Two headers, then three.
        ok("GET / HTTP/1.1\r\nHost: h\r\nA: b\r\n\r\n");
        assert_eq!(
            error(
                b"GET / HTTP/1.1\r\nHost: h\r\nA: b\r\nC: d\r\n\r\n",
                &limits
            ),
            HttpError::TooManyHeaders
        );
        // Body of exactly 100, then 101.
        ok("PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n");
        assert_eq!(
            error(
                b"PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 101\r\n\r\n",
                &limits
            ),
            HttpError::BodyTooLarge
        );
        // Head of exactly 64 bytes, then 65.
        let head = alloc::format!("GET / HTTP/1.1\r\nHost: h\r\nX: {}\r\n\r\n", "v".repeat(32));
        assert_eq!(head.len(), 64);
        ok(&head);
        // Body bytes after a head that fits do not count.
        let mut with_more = head.clone().into_bytes();
        with_more.extend_from_slice(&[b'z'; 100]);
        assert!(matches!(
            parse_request(&with_more, &limits),
            Ok(Parsed::Complete { head_len: 64, .. })
        ));
        let head = alloc::format!("GET / HTTP/1.1\r\nHost: h\r\nX: {}\r\n\r\n", "v".repeat(33));
        assert_eq!(error(head.as_bytes(), &limits), HttpError::HeadTooLarge);
        // An unfinished head that reached the limit is refused at once.
        assert_eq!(
            error(&head.as_bytes()[..64], &limits),
            HttpError::HeadTooLarge
        );
        assert_eq!(
            parse_request(&head.as_bytes()[..63], &limits),
            Ok(Parsed::Incomplete)
        );
        // Endless empty lines before the request line count too.
        assert_eq!(error(&[b'\n'; 64], &limits), HttpError::HeadTooLarge);
    }

    #[test]
    fn early_errors_before_the_head_ends() {
        for text in [
            &b"GET  "[..],
            b"GE T",
            b"GET /a b",
            b"GET / HTTP/1.1 ",
            b"GET / HTTPS",
            b"GET / HTTP/1.1\r\nBad Name",
            b"GET / HTTP/1.1\r\nX: \x07",
            b"GET / HTTP/1.1\r\n ",
            b"\x00",
        ] {
            assert!(
                parse_request(text, &LIMITS).is_err(),
                "{:?}",
                str::from_utf8(text)
            );
        }
    }

    const VALID: [&str; 8] = [
        "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
        "GET /a/b?c=d HTTP/1.1\r\nHost: h\r\nUser-Agent: curl/8\r\nAccept: */*\r\n\r\n",
        "PUT /upload/file.txt HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n",
        "HEAD /x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        "GET /lf HTTP/1.1\nHost: h\n\n",
        "\r\nOPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
        "DELETE http://h:8080/p?q HTTP/1.1\r\nHost: h:8080\r\nX-Empty:\r\n\r\n",
        "POST /json HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\nContent-Length: 0\r\nX-U: \u{e9}\r\n\r\n",
    ];

    #[test]
    fn every_strict_prefix_is_incomplete() {
        for text in VALID {
            let bytes = text.as_bytes();
            for len in 0..bytes.len() {
                assert_eq!(
                    parse_request(&bytes[..len], &LIMITS),
                    Ok(Parsed::Incomplete),
                    "prefix {len} of {text:?}"
                );
            }
            assert!(matches!(
                parse_request(bytes, &LIMITS),
                Ok(Parsed::Complete { head_len, .. }) if head_len == bytes.len()
            ));
        }
    }

    #[test]
    fn pipelined_requests() {
        let stream = b"PUT /a HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nbodyGET /b HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\nGET /c";
        let mut rest = &stream[..];
        let Ok(Parsed::Complete { request, head_len }) = parse_request(rest, &LIMITS) else {
            panic!()
        };
        assert_eq!(request.path, "/a");
        let mut reader = request.body_reader();
        let (body, after) = reader.take(&rest[head_len..]);
        assert_eq!(body, b"body");
        assert!(reader.is_done());
        rest = after;
        let Ok(Parsed::Complete { request, head_len }) = parse_request(rest, &LIMITS) else {
            panic!()
        };
        assert_eq!(request.path, "/b");
        assert!(!request.keep_alive());
        assert_eq!(request.body_len(), 0);
        rest = &rest[head_len..];
        assert_eq!(rest, b"GET /c");
        assert_eq!(parse_request(rest, &LIMITS), Ok(Parsed::Incomplete));
    }

    /// xorshift64*: deterministic, no dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn byte(&mut self) -> u8 {
            // Mostly bytes that matter to the parser, sometimes any byte.
            const INTERESTING: &[u8] =
                b" \t\r\n:/?%.#*HTTP/1.0GETHostContent-Length0123456789\x00\x7f\xc3\xa9";
            if self.below(4) == 0 {
                self.next() as u8
            } else {
                INTERESTING[self.below(INTERESTING.len())]
            }
        }
    }

    /// Checks what must hold for any input, beyond not panicking.
    fn check_invariants(buf: &[u8], limits: &Limits, deep: bool) {
        match parse_request(buf, limits) {
            Ok(Parsed::Complete { request, head_len }) => {
                assert!(head_len <= buf.len() && head_len <= limits.max_head_bytes);
                // Using every accessor must not panic either.
                let _ = (
                    request.keep_alive(),
                    request.expects_continue(),
                    request.body_len(),
                );
                assert!(request.body_len() <= limits.max_body_bytes);
                assert!(request.headers().count() <= limits.max_headers);
                let _ = crate::resolve_path(request.path);
                // The head alone parses the same.
                let again = parse_request(&buf[..head_len], limits);
                assert_eq!(
                    again,
                    Ok(Parsed::Complete {
                        request: request.clone(),
                        head_len
                    })
                );
                if deep {
                    for len in 0..head_len {
                        assert_eq!(parse_request(&buf[..len], limits), Ok(Parsed::Incomplete));
                    }
                }
            }
            Ok(Parsed::Incomplete) => {
                assert!(buf.len() < limits.max_head_bytes);
                if deep {
                    for len in 0..buf.len() {
                        assert_eq!(parse_request(&buf[..len], limits), Ok(Parsed::Incomplete));
                    }
                }
            }
            Err(e) => {
                if deep {
                    // More bytes never turn an error into a request.
                    let mut longer = buf.to_vec();
                    longer.extend_from_slice(b"\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n");
                    assert!(parse_request(&longer, limits).is_err(), "{e:?} {buf:?}");
                }
            }
        }
    }

    #[test]
    fn fuzz_random_bytes_never_panic() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let limits = Limits {
            max_head_bytes: 256,
            max_target_bytes: 64,
            max_headers: 8,
            max_body_bytes: 1000,
        };
        let mut buf = Vec::new();
        for i in 0..50_000 {
            buf.clear();
            let len = rng.below(300);
            for _ in 0..len {
                buf.push(rng.byte());
            }
            check_invariants(&buf, &limits, i % 50 == 0);
            check_invariants(&buf, &LIMITS, false);
        }
    }

    #[test]
    fn fuzz_mutated_requests_never_panic() {
        let mut rng = Rng(0x0123_4567_89ab_cdef);
        let limits = Limits {
            max_head_bytes: 160,
            max_target_bytes: 24,
            max_headers: 4,
            max_body_bytes: 100,
        };
        let mut completes = 0;
        let mut buf = Vec::new();
        for i in 0..50_000 {
            buf.clear();
            buf.extend_from_slice(VALID[rng.below(VALID.len())].as_bytes());
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(buf.len() + 1);
                match rng.below(5) {
                    0 if at < buf.len() => buf[at] = rng.byte(),
                    1 => buf.insert(at, rng.byte()),
                    2 if at < buf.len() => {
                        buf.remove(at);
                    }
                    3 => buf.truncate(at),
                    _ => {
                        let copy = buf.clone();
                        buf.extend_from_slice(&copy[at..]);
                    }
                }
            }
            if matches!(parse_request(&buf, &LIMITS), Ok(Parsed::Complete { .. })) {
                completes += 1;
            }
            check_invariants(&buf, &LIMITS, i % 25 == 0);
            check_invariants(&buf, &limits, i % 25 == 1);
        }
        // The mutations are not so wild that nothing parses.
        assert!(completes > 5_000, "{completes}");
    }
}
