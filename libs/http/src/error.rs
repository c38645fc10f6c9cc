//! [`HttpError`]: why a request (or a path in it) was refused, and which
//! status to answer with.

use core::fmt;

/// Why a request was refused.
///
/// Every variant maps to the response status to send ([`HttpError::status`])
/// and has a one-line English message ([`fmt::Display`]) suitable for a
/// `text/plain` error body ([`crate::Response::from_error`] builds that
/// response). After a parse error the connection's framing is unknown: send
/// the error response with `keep_alive = false` and close.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HttpError {
    /// The request line is not `method SP target SP version` (bad method
    /// token, extra or missing spaces, control characters, a bare CR). 400.
    BadRequestLine,
    /// The request target is not origin-form (`/path?query`), absolute-form
    /// (`http://host/path`) or `*` with OPTIONS, or has a byte outside
    /// visible ASCII, or a `#`. 400.
    BadTarget,
    /// The version is not of the form `HTTP/<digit>.<digit>`. 400.
    BadVersion,
    /// A well-formed version other than HTTP/1.x (e.g. `HTTP/2.0`). 505.
    UnsupportedVersion,
    /// A header line is malformed: no `:`, an empty or invalid name,
    /// whitespace before the `:`, a control character or invalid UTF-8 in
    /// the value, a bare CR. 400.
    BadHeader,
    /// A line starts with whitespace: obsolete line folding (RFC 9112
    /// §5.2), which this parser refuses. 400.
    ObsFold,
    /// An HTTP/1.1 request without a `Host` header. 400.
    MissingHost,
    /// More than one `Host` header. 400.
    DuplicateHost,
    /// `Content-Length` is not a plain decimal number, overflows `u64`,
    /// or appears more than once. 400.
    BadContentLength,
    /// Both `Content-Length` and `Transfer-Encoding` (request smuggling
    /// risk). 400.
    ContentLengthAndTransferEncoding,
    /// The request has a `Transfer-Encoding` (chunked request bodies are not
    /// implemented). 501.
    TransferEncodingNotImplemented,
    /// The head (request line + headers + blank line) is longer than
    /// [`crate::Limits::max_head_bytes`]. 431.
    HeadTooLarge,
    /// More header lines than [`crate::Limits::max_headers`]. 431.
    TooManyHeaders,
    /// The request target is longer than [`crate::Limits::max_target_bytes`].
    /// 414.
    UriTooLong,
    /// `Content-Length` is over [`crate::Limits::max_body_bytes`]. 413.
    BodyTooLarge,
    /// A `%` not followed by two hex digits, a `%00`, or decoded bytes that
    /// are not UTF-8. 400.
    BadPercentEncoding,
    /// A path that does not start with `/`, or whose segment decodes to
    /// something containing `/` or `\` (`%2f`, `%5c`). 400.
    BadPath,
    /// A `..` segment (literal or percent-encoded) that would climb above
    /// the root. 400.
    PathTraversal,
}

impl HttpError {
    /// The response status code to answer this error with.
    pub const fn status(&self) -> u16 {
        match self {
            HttpError::BadRequestLine
            | HttpError::BadTarget
            | HttpError::BadVersion
            | HttpError::BadHeader
            | HttpError::ObsFold
            | HttpError::MissingHost
            | HttpError::DuplicateHost
            | HttpError::BadContentLength
            | HttpError::ContentLengthAndTransferEncoding
            | HttpError::BadPercentEncoding
            | HttpError::BadPath
            | HttpError::PathTraversal => 400,
            HttpError::UriTooLong => 414,
            HttpError::BodyTooLarge => 413,
            HttpError::HeadTooLarge | HttpError::TooManyHeaders => 431,
            HttpError::TransferEncodingNotImplemented => 501,
            HttpError::UnsupportedVersion => 505,
        }
    }

    /// The one-line message, as [`fmt::Display`] prints it.
    pub const fn message(&self) -> &'static str {
        match self {
            HttpError::BadRequestLine => "malformed request line",
            HttpError::BadTarget => "malformed request target",
            HttpError::BadVersion => "malformed HTTP version",
            HttpError::UnsupportedVersion => "HTTP version not supported (only HTTP/1.x)",
            HttpError::BadHeader => "malformed header line",
            HttpError::ObsFold => "header line starts with whitespace (obsolete line folding)",
            HttpError::MissingHost => "HTTP/1.1 request without a Host header",
            HttpError::DuplicateHost => "more than one Host header",
            HttpError::BadContentLength => "invalid or repeated Content-Length",
            HttpError::ContentLengthAndTransferEncoding => {
                "both Content-Length and Transfer-Encoding"
            }
            HttpError::TransferEncodingNotImplemented => {
                "Transfer-Encoding (chunked request bodies) not implemented"
            }
            HttpError::HeadTooLarge => "request head too large",
            HttpError::TooManyHeaders => "too many header lines",
            HttpError::UriTooLong => "request target too long",
            HttpError::BodyTooLarge => "request body too large",
            HttpError::BadPercentEncoding => "invalid percent-encoding",
            HttpError::BadPath => "invalid path (encoded '/' or '\\', or not absolute)",
            HttpError::PathTraversal => "path climbs above the root",
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl core::error::Error for HttpError {}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    const ALL: [HttpError; 18] = [
        HttpError::BadRequestLine,
        HttpError::BadTarget,
        HttpError::BadVersion,
        HttpError::UnsupportedVersion,
        HttpError::BadHeader,
        HttpError::ObsFold,
        HttpError::MissingHost,
        HttpError::DuplicateHost,
        HttpError::BadContentLength,
        HttpError::ContentLengthAndTransferEncoding,
        HttpError::TransferEncodingNotImplemented,
        HttpError::HeadTooLarge,
        HttpError::TooManyHeaders,
        HttpError::UriTooLong,
        HttpError::BodyTooLarge,
        HttpError::BadPercentEncoding,
        HttpError::BadPath,
        HttpError::PathTraversal,
    ];

    #[test]
    fn statuses() {
        let expect = [
            400, 400, 400, 505, 400, 400, 400, 400, 400, 400, 501, 431, 431, 414, 413, 400, 400,
            400,
        ];
        for (e, s) in ALL.iter().zip(expect) {
            assert_eq!(e.status(), s, "{e:?}");
        }
    }

    #[test]
    fn messages_are_distinct_and_displayed() {
        for (i, a) in ALL.iter().enumerate() {
            assert_eq!(a.to_string(), a.message());
            assert!(!a.message().is_empty());
            for b in ALL.iter().skip(i + 1) {
                assert_ne!(a.message(), b.message(), "{a:?} vs {b:?}");
            }
        }
    }
}
