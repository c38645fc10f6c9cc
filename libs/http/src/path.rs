//! Path helpers for file servers: [`percent_decode`], [`resolve_path`]
//! (a request path to a safe relative file name) and
//! [`content_type_for`].

use crate::HttpError;
use alloc::string::String;
use alloc::vec::Vec;

/// Decodes `%XX` escapes (either hex case). `+` stays `+` (that is a
/// form-encoding rule, not a path one).
///
/// Errors with [`HttpError::BadPercentEncoding`] for a `%` not followed by
/// two hex digits, a NUL (escaped or not), or a result that is not UTF-8.
pub fn percent_decode(s: &str) -> Result<String, HttpError> {
    if !s.bytes().any(|b| b == b'%' || b == 0) {
        return Ok(String::from(s));
    }
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        let b = if b == b'%' {
            let hi = bytes.next().and_then(hex_value);
            let lo = bytes.next().and_then(hex_value);
            match (hi, lo) {
                (Some(hi), Some(lo)) => (hi << 4) | lo,
                _ => return Err(HttpError::BadPercentEncoding),
            }
        } else {
            b
        };
        if b == 0 {
            return Err(HttpError::BadPercentEncoding);
        }
        out.push(b);
    }
    String::from_utf8(out).map_err(|_| HttpError::BadPercentEncoding)
}

/// The value of a hex digit.
fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Turns a request path ([`crate::Request::path`], still percent-encoded)
/// into a normalized path relative to the served root: segments joined by
/// `/`, no leading or trailing `/`, `""` for the root itself.
///
/// The path is split on `/` *before* decoding, then each segment is
/// decoded, so escapes cannot forge separators or dot segments:
/// - empty segments (`//`, a trailing `/`) and `.` are dropped;
/// - `..` (also `%2e%2e`, `.%2E`...) removes the previous segment, so
///   `/a/../b` is allowed and gives `b`; a `..` with nothing left to remove
///   (`/../x`, `/a/../../x`) is [`HttpError::PathTraversal`];
/// - a segment that decodes to something containing `/` or `\` (`%2f`,
///   `%5c`) is [`HttpError::BadPath`], as is a path not starting with `/`
///   (e.g. `*`);
/// - bad escapes and `%00` are [`HttpError::BadPercentEncoding`].
///
/// All of these are 400s. Whether a trailing `/` was sent (directory
/// listing vs. redirect) can be read from the request path itself.
pub fn resolve_path(path: &str) -> Result<String, HttpError> {
    let rest = path.strip_prefix('/').ok_or(HttpError::BadPath)?;
    let mut out = String::with_capacity(rest.len());
    // Length of `out` before each kept segment, to undo it on `..`.
    let mut marks: Vec<usize> = Vec::new();
    for raw in rest.split('/') {
        let segment = percent_decode(raw)?;
        if segment.contains(['/', '\\']) {
            return Err(HttpError::BadPath);
        }
        match segment.as_str() {
            "" | "." => {}
            ".." => {
                let mark = marks.pop().ok_or(HttpError::PathTraversal)?;
                out.truncate(mark);
            }
            name => {
                marks.push(out.len());
                if !out.is_empty() {
                    out.push('/');
                }
                out.push_str(name);
            }
        }
    }
    Ok(out)
}

/// A `Content-Type` for a file name, by its extension (case-insensitive):
/// HTML, CSS, JavaScript, JSON, plain text, XML, the common image types,
/// WebAssembly and PDF; `application/octet-stream` otherwise. Text types
/// say `charset=utf-8`.
pub fn content_type_for(path: &str) -> &'static str {
    let name = path.rsplit('/').next().unwrap_or(path);
    let Some((_, ext)) = name.rsplit_once('.') else {
        return "application/octet-stream";
    };
    const TYPES: [(&str, &str); 19] = [
        ("html", "text/html; charset=utf-8"),
        ("htm", "text/html; charset=utf-8"),
        ("css", "text/css; charset=utf-8"),
        ("js", "text/javascript; charset=utf-8"),
        ("mjs", "text/javascript; charset=utf-8"),
        ("json", "application/json"),
        ("txt", "text/plain; charset=utf-8"),
        ("md", "text/markdown; charset=utf-8"),
        ("xml", "application/xml"),
        ("svg", "image/svg+xml"),
        ("png", "image/png"),
        ("jpg", "image/jpeg"),
        ("jpeg", "image/jpeg"),
        ("gif", "image/gif"),
        ("webp", "image/webp"),
        ("ico", "image/x-icon"),
        ("wasm", "application/wasm"),
        ("pdf", "application/pdf"),
        ("csv", "text/csv; charset=utf-8"),
    ];
    TYPES
        .iter()
        .find(|(e, _)| e.eq_ignore_ascii_case(ext))
        .map_or("application/octet-stream", |(_, t)| t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding() {
        assert_eq!(percent_decode("plain").as_deref(), Ok("plain"));
        assert_eq!(percent_decode("a%20b%2Fc%2f").as_deref(), Ok("a b/c/"));
        assert_eq!(percent_decode("%41%7a+").as_deref(), Ok("Az+"));
        assert_eq!(percent_decode("caf%C3%A9").as_deref(), Ok("caf\u{e9}"));
        assert_eq!(percent_decode("").as_deref(), Ok(""));
        assert_eq!(percent_decode("\u{e9}%21").as_deref(), Ok("\u{e9}!"));
        for bad in [
            "%", "%4", "a%g0", "%0g", "%%41", "%00", "a\0b", "%C3", "%FF", "%e9",
        ] {
            assert_eq!(
                percent_decode(bad),
                Err(HttpError::BadPercentEncoding),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn normalization() {
        for (path, expect) in [
            ("/", ""),
            ("//", ""),
            ("/./", ""),
            ("/index.html", "index.html"),
            ("/a/b/", "a/b"),
            ("/a//b/./c", "a/b/c"),
            ("/a/../b", "b"),
            ("/a/b/../../c", "c"),
            ("/a/..", ""),
            ("/a/%2e%2e/b", "b"),
            ("/my%20file.txt", "my file.txt"),
            ("/%2e/x", "x"),
            ("/...", "..."),
            ("/..a/b..", "..a/b.."),
            ("/caf%C3%A9/", "caf\u{e9}"),
        ] {
            assert_eq!(resolve_path(path).as_deref(), Ok(expect), "{path:?}");
        }
    }

    #[test]
    fn traversal_attempts_are_refused() {
        for (path, err) in [
            ("/..", HttpError::PathTraversal),
            ("/../x", HttpError::PathTraversal),
            ("/a/../../x", HttpError::PathTraversal),
            ("/%2e%2e/x", HttpError::PathTraversal),
            ("/%2E%2e", HttpError::PathTraversal),
            ("/.%2e/x", HttpError::PathTraversal),
            ("/a/%2E%2E/%2E%2E/x", HttpError::PathTraversal),
            ("//../x", HttpError::PathTraversal),
            ("/./../x", HttpError::PathTraversal),
            ("/a/b/../../../etc/passwd", HttpError::PathTraversal),
            ("/..%2fx", HttpError::BadPath),
            ("/a%2f..%2f..%2fx", HttpError::BadPath),
            ("/%2f", HttpError::BadPath),
            ("/..%5cx", HttpError::BadPath),
            ("/a\\b", HttpError::BadPath),
            ("relative", HttpError::BadPath),
            ("*", HttpError::BadPath),
            ("", HttpError::BadPath),
            ("/%00", HttpError::BadPercentEncoding),
            ("/%2", HttpError::BadPercentEncoding),
            ("/%%2e%2e", HttpError::BadPercentEncoding),
        ] {
            assert_eq!(resolve_path(path), Err(err), "{path:?}");
            assert_eq!(err.status(), 400);
        }
    }

    #[test]
    fn resolved_paths_never_climb() {
        // Whatever the input, an Ok result has no `..`, `.` or empty
        // segment and no leading or trailing `/`.
        let alphabet = ["a", ".", "..", "/", "%2e", "%2E", "%2f", "%", "2", "e", "b"];
        let mut state = 0x1234_5678_9abc_def1u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let (mut oks, mut climbs) = (0, 0);
        for _ in 0..20_000 {
            let mut path = String::from("/");
            for _ in 0..next() % 12 {
                path.push_str(alphabet[(next() % alphabet.len() as u64) as usize]);
            }
            match resolve_path(&path) {
                Ok(rel) => {
                    oks += 1;
                    assert!(
                        rel.is_empty()
                            || rel
                                .split('/')
                                .all(|s| !s.is_empty() && s != "." && s != ".."),
                        "{path:?} -> {rel:?}"
                    );
                }
                Err(HttpError::PathTraversal) => climbs += 1,
                Err(_) => {}
            }
        }
        // Both outcomes are well exercised.
        assert!(oks > 2_000 && climbs > 300, "{oks} {climbs}");
    }

    #[test]
    fn content_types() {
        assert_eq!(content_type_for("index.html"), "text/html; charset=utf-8");
        assert_eq!(
            content_type_for("dir/APP.JS"),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(content_type_for("a.b/data.json"), "application/json");
        assert_eq!(content_type_for("a.b/README"), "application/octet-stream");
        assert_eq!(content_type_for("image.png"), "image/png");
        assert_eq!(
            content_type_for("archive.tar.gz"),
            "application/octet-stream"
        );
        assert_eq!(content_type_for(""), "application/octet-stream");
    }
}
