//! Escaping text for HTML pages ([`escape_html`]) and JSON strings
//! ([`escape_json`]).

use alloc::string::String;
use core::fmt::Write;

/// `s` made safe as HTML text or a quoted attribute value: `&`, `<`, `>`,
/// `"` and `'` become character references. For directory listings, where
/// file names are untrusted.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `s` escaped for use inside a JSON string, *without* the surrounding
/// quotes: `"` and `\` are backslash-escaped, control characters become
/// `\n`, `\r`, `\t`, `\b`, `\f` or `\u00XX`; everything else (including
/// non-ASCII) is kept as UTF-8.
pub fn escape_json(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if u32::from(c) < 0x20 => {
                // Writing to a String cannot fail.
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html() {
        assert_eq!(escape_html("plain name.txt"), "plain name.txt");
        assert_eq!(
            escape_html("<script>alert(\"x\" & 'y')</script>"),
            "&lt;script&gt;alert(&quot;x&quot; &amp; &#39;y&#39;)&lt;/script&gt;"
        );
        assert_eq!(escape_html("caf\u{e9} &amp;"), "caf\u{e9} &amp;amp;");
        assert_eq!(escape_html(""), "");
    }

    #[test]
    fn json() {
        assert_eq!(escape_json("hello"), "hello");
        assert_eq!(escape_json("a\"b\\c"), "a\\\"b\\\\c");
        assert_eq!(escape_json("l1\nl2\r\t\u{8}\u{c}"), "l1\\nl2\\r\\t\\b\\f");
        assert_eq!(escape_json("\u{0}\u{1f}\u{7f}"), "\\u0000\\u001f\u{7f}");
        assert_eq!(
            escape_json("caf\u{e9} \u{2603} </x>"),
            "caf\u{e9} \u{2603} </x>"
        );
        assert_eq!(escape_json(""), "");
    }
}
