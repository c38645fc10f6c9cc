//! # kiln-ktest — tests that run inside a booted Kiln guest
//!
//! Unit tests on the host cannot cover what only exists in a guest: the
//! supervisor, real page tables, the timer, the heap over guest RAM. A
//! guest crate declares in-guest tests as plain functions and lists them
//! in a [`Suite`] (by convention `pub mod ktests` behind an additive
//! `ktest` feature); a runner image (`apps/ktest`) lists the suites, and
//! [`run`] executes them, printing one line per test and a summary:
//!
//! ```text
//! ktest: kiln_alloc_buddy::merge_after_free ... ok
//! ktest: kiln_rt::sleep_10ms_waits_at_least_10ms ... FAILED: slept 3 ms (src/time.rs:40)
//! ktest: 41 passed, 1 failed, 0 skipped
//! ```
//!
//! `kiln test` builds and boots the runner and turns the summary into its
//! exit status. Tests get an [`Env`] from the runner for what they need
//! from the platform (fresh memory); they fail with [`check!`] and
//! [`check_eq!`] (a panic aborts the whole run; the last `...` line names
//! the test). Registration is explicit — no linker sections — so library
//! crates stay `#![forbid(unsafe_code)]`.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::string::String;

#[doc(hidden)]
pub use alloc::format as __format;

/// Why a test failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The message.
    pub message: String,
    /// `file:line` of the failed check.
    pub location: &'static str,
}

/// What a test returns.
pub type Outcome = Result<(), Failure>;

/// What the runner gives tests.
pub struct Env {
    /// Returns `bytes` of fresh, zeroed, page-aligned memory the test owns
    /// (never freed), or `None` when the guest is out of memory.
    pub memory: fn(bytes: usize) -> Option<&'static mut [u8]>,
    /// Returns `words` zeroed words of fresh memory.
    pub words: fn(words: usize) -> Option<&'static mut [u64]>,
    /// The platform's name ("pvh", "linuxu").
    pub platform: &'static str,
}

/// One in-guest test.
#[derive(Clone, Copy)]
pub struct Test {
    /// Full name (`crate::function`).
    pub name: &'static str,
    /// The test.
    pub run: fn(&mut Env) -> Outcome,
    /// The platform it needs (`Env::platform`), if only one has what it tests.
    pub requires: Option<&'static str>,
}

/// The tests of one crate.
pub type Suite = &'static [Test];

/// Declares a [`Test`] for a function `fn(&mut Env) -> Outcome`;
/// `test!(f, requires = "pvh")` limits it to one platform.
#[macro_export]
macro_rules! test {
    ($f:path) => {
        $crate::Test {
            name: concat!(module_path!(), "::", stringify!($f)),
            run: $f,
            requires: None,
        }
    };
    ($f:path, requires = $p:literal) => {
        $crate::Test {
            name: concat!(module_path!(), "::", stringify!($f)),
            run: $f,
            requires: Some($p),
        }
    };
}

/// Fails the test with a formatted message unless `cond` holds.
#[macro_export]
macro_rules! check {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err($crate::Failure {
                message: $crate::__format!($($msg)+),
                location: concat!(file!(), ":", line!()),
            });
        }
    };
    ($cond:expr) => {
        $crate::check!($cond, "check failed: {}", stringify!($cond))
    };
}

/// Fails the test unless `left == right`, showing both.
#[macro_export]
macro_rules! check_eq {
    ($left:expr, $right:expr $(,)?) => {{
        let (l, r) = (&$left, &$right);
        $crate::check!(
            l == r,
            "{} == {} failed: {:?} != {:?}",
            stringify!($left),
            stringify!($right),
            l,
            r
        )
    }};
}

/// Totals of a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Tests that passed.
    pub passed: usize,
    /// Tests that failed.
    pub failed: usize,
    /// Tests not run: not selected by the filter, or for another platform.
    pub skipped: usize,
}

impl Summary {
    /// The exit status for the run: the number of failures, at most 99.
    pub fn status(&self) -> u8 {
        self.failed.min(99) as u8
    }
}

/// Runs every test of `suites` whose name contains one of `filters` (all
/// when empty), printing through `print`.
pub fn run(
    suites: &[Suite],
    filters: &[&str],
    env: &mut Env,
    print: fn(core::fmt::Arguments<'_>),
) -> Summary {
    let mut summary = Summary::default();
    for test in suites.iter().flat_map(|s| s.iter()) {
        if !filters.is_empty() && !filters.iter().any(|f| test.name.contains(f)) {
            summary.skipped += 1;
            continue;
        }
        if let Some(needed) = test.requires
            && needed != env.platform
        {
            summary.skipped += 1;
            print(format_args!(
                "ktest: {} ... skipped (needs {needed})\n",
                test.name
            ));
            continue;
        }
        print(format_args!("ktest: {} ... ", test.name));
        match (test.run)(env) {
            Ok(()) => {
                summary.passed += 1;
                print(format_args!("ok\n"));
            }
            Err(f) => {
                summary.failed += 1;
                print(format_args!("FAILED: {} ({})\n", f.message, f.location));
            }
        }
    }
    print(format_args!(
        "ktest: {} passed, {} failed, {} skipped\n",
        summary.passed, summary.failed, summary.skipped
    ));
    summary
}

/// Parses a summary line printed by [`run`] (for hosts reading the output).
pub fn parse_summary(line: &str) -> Option<Summary> {
    let rest = line.trim().strip_prefix("ktest: ")?;
    let mut numbers = rest
        .split(", ")
        .map(|part| part.split(' ').next()?.parse().ok());
    let summary = Summary {
        passed: numbers.next()??,
        failed: numbers.next()??,
        skipped: numbers.next()??,
    };
    rest.ends_with(" skipped").then_some(summary)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::string::ToString;
    use std::sync::Mutex;

    static OUT: Mutex<String> = Mutex::new(String::new());

    fn print(args: core::fmt::Arguments<'_>) {
        OUT.lock().unwrap().push_str(&args.to_string());
    }

    fn passes(_: &mut Env) -> Outcome {
        check_eq!(1 + 1, 2);
        Ok(())
    }

    fn fails(_: &mut Env) -> Outcome {
        let x = 3;
        check!(x < 2, "x is {x}");
        Ok(())
    }

    fn env() -> Env {
        Env {
            memory: |_| None,
            words: |_| None,
            platform: "host",
        }
    }

    const SUITE: Suite = &[test!(passes), test!(fails), test!(passes, requires = "pvh")];

    #[test]
    fn runs_filters_and_summarises() {
        let s = run(&[SUITE], &[], &mut env(), print);
        assert_eq!(
            s,
            Summary {
                passed: 1,
                failed: 1,
                skipped: 1
            }
        );
        let out = OUT.lock().unwrap().clone();
        assert!(out.contains("::passes ... ok\n"), "{out}");
        assert!(
            out.contains("::fails ... FAILED: x is 3 (platform/ktest/src/lib.rs:"),
            "{out}"
        );
        let last = out.lines().last().unwrap();
        assert_eq!(parse_summary(last), Some(s));
        assert!(out.contains("::passes ... skipped (needs pvh)\n"), "{out}");
        let s = run(&[SUITE], &["passes"], &mut env(), print);
        assert_eq!(
            s,
            Summary {
                passed: 1,
                failed: 0,
                skipped: 2
            }
        );
        assert_eq!(s.status(), 0);
    }

    #[test]
    fn summary_lines_parse() {
        assert_eq!(
            parse_summary("ktest: 41 passed, 2 failed, 3 skipped"),
            Some(Summary {
                passed: 41,
                failed: 2,
                skipped: 3
            })
        );
        assert_eq!(parse_summary("selftest: 1 passed"), None);
        assert_eq!(parse_summary("ktest: x passed, 0 failed, 0 skipped"), None);
    }
}
