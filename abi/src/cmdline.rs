//! The guest command line: kernel options, then `--`, then application arguments.
//!
//! A boot protocol offers one string. Kiln puts `key=value` (or bare `key`)
//! kernel options first and the application's arguments after a lone `--`:
//!
//! ```text
//! log=debug -- "hello world" b
//! ```
//!
//! Tokens are separated by spaces. A token that is empty or contains a
//! space, tab, `"` or `\` is written in double quotes, with `\"` and `\\`
//! escapes inside, so any argument survives the trip ([`encode`] and
//! [`parse`] are inverse).

use alloc::string::String;
use alloc::vec::Vec;

/// A parsed command line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cmdline {
    /// Kernel options in order: `(key, value)`, value empty for a bare key.
    pub options: Vec<(String, String)>,
    /// Application arguments (without a program name).
    pub args: Vec<String>,
}

impl Cmdline {
    /// Builds a command line from already-split tokens (e.g. a process's
    /// argv): options up to the first `--`, arguments after it.
    pub fn from_tokens<'a, I: IntoIterator<Item = &'a str>>(tokens: I) -> Self {
        let mut cmdline = Self::default();
        let mut in_args = false;
        for token in tokens {
            if in_args {
                cmdline.args.push(String::from(token));
            } else if token == "--" {
                in_args = true;
            } else {
                let (k, v) = token.split_once('=').unwrap_or((token, ""));
                cmdline.options.push((String::from(k), String::from(v)));
            }
        }
        cmdline
    }

    /// Value of the last option named `key`, if any.
    pub fn option(&self, key: &str) -> Option<&str> {
        self.options
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Why a command line could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CmdlineError {
    /// A quoted token was not closed before the end of the line.
    UnterminatedQuote,
}

impl core::fmt::Display for CmdlineError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::UnterminatedQuote => f.write_str("unterminated quote in the command line"),
        }
    }
}

fn needs_quotes(token: &str) -> bool {
    token.is_empty() || token.contains([' ', '\t', '"', '\\']) || token == "--"
}

fn push_token(out: &mut String, token: &str) {
    if !out.is_empty() {
        out.push(' ');
    }
    if !needs_quotes(token) {
        out.push_str(token);
        return;
    }
    out.push('"');
    for c in token.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

/// Builds a command line from kernel options and application arguments.
///
/// An argument equal to `--` is quoted so it is not taken for the separator.
pub fn encode<K: AsRef<str>, V: AsRef<str>, A: AsRef<str>>(
    options: &[(K, V)],
    args: &[A],
) -> String {
    let mut out = String::new();
    for (k, v) in options {
        let (k, v) = (k.as_ref(), v.as_ref());
        if v.is_empty() {
            push_token(&mut out, k);
        } else {
            let mut kv = String::from(k);
            kv.push('=');
            kv.push_str(v);
            push_token(&mut out, &kv);
        }
    }
    if !args.is_empty() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str("--");
        for a in args {
            push_token(&mut out, a.as_ref());
        }
    }
    out
}

/// One token and whether it was quoted.
fn tokens(line: &str) -> Result<Vec<(String, bool)>, CmdlineError> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
            chars.next();
        }
        let Some(&first) = chars.peek() else {
            return Ok(out);
        };
        let mut token = String::new();
        if first == '"' {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err(CmdlineError::UnterminatedQuote),
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        None => return Err(CmdlineError::UnterminatedQuote),
                        Some(c) => token.push(c),
                    },
                    Some(c) => token.push(c),
                }
            }
            out.push((token, true));
        } else {
            while let Some(&c) = chars.peek() {
                if c == ' ' || c == '\t' {
                    break;
                }
                token.push(c);
                chars.next();
            }
            out.push((token, false));
        }
    }
}

/// Parses a command line written by [`encode`] (or by hand).
pub fn parse(line: &str) -> Result<Cmdline, CmdlineError> {
    let mut cmdline = Cmdline::default();
    let mut in_args = false;
    for (token, quoted) in tokens(line)? {
        if in_args {
            cmdline.args.push(token);
        } else if token == "--" && !quoted {
            in_args = true;
        } else {
            let (k, v) = token.split_once('=').unwrap_or((&token, ""));
            cmdline.options.push((String::from(k), String::from(v)));
        }
    }
    Ok(cmdline)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| String::from(*x)).collect()
    }

    #[test]
    fn options_and_args_split_at_separator() {
        let c = parse("log=debug quiet -- a b").unwrap();
        assert_eq!(c.option("log"), Some("debug"));
        assert_eq!(c.option("quiet"), Some(""));
        assert_eq!(c.option("missing"), None);
        assert_eq!(c.args, s(&["a", "b"]));
    }

    #[test]
    fn round_trips_awkward_arguments() {
        let args = ["", " ", "a b", "\"q\"", "back\\slash", "--", "x=y", "ünï"];
        let line = encode(&[("log", "info"), ("flag", "")], &args);
        let c = parse(&line).unwrap();
        assert_eq!(c.args, s(&args));
        assert_eq!(
            c.options,
            vec![
                (String::from("log"), String::from("info")),
                (String::from("flag"), String::new())
            ]
        );
    }

    #[test]
    fn no_args_means_no_separator() {
        let none: [&str; 0] = [];
        assert_eq!(encode(&[("log", "warn")], &none), "log=warn");
        assert_eq!(encode::<&str, &str, &str>(&[], &["a"]), "-- a");
    }

    #[test]
    fn unterminated_quote_is_an_error() {
        assert_eq!(parse("-- \"abc"), Err(CmdlineError::UnterminatedQuote));
        assert_eq!(parse("-- \"abc\\"), Err(CmdlineError::UnterminatedQuote));
    }

    #[test]
    fn tokens_split_like_a_parsed_line() {
        let c = Cmdline::from_tokens(["log=debug", "mem=1024", "--", "a b", "--", ""]);
        assert_eq!(c.option("mem"), Some("1024"));
        assert_eq!(c.args, s(&["a b", "--", ""]));
        assert_eq!(Cmdline::from_tokens(["x"]).args, Vec::<String>::new());
    }

    #[test]
    fn last_option_wins() {
        assert_eq!(parse("log=a log=b").unwrap().option("log"), Some("b"));
    }
}
