//! The [`log`] backend: records go to the console as `[LEVEL target] message`.
//!
//! The level comes from the `log=` kernel option (error, warn, info, debug,
//! trace, off; info when absent). An unknown value keeps info and says so.

use log::{LevelFilter, Log, Metadata, Record};

struct ConsoleLogger;

impl Log for ConsoleLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if self.enabled(record.metadata()) {
            crate::println!(
                "[{:<5} {}] {}",
                record.level(),
                record.target(),
                record.args()
            );
        }
    }

    fn flush(&self) {}
}

static LOGGER: ConsoleLogger = ConsoleLogger;

/// Parses a `log=` value.
pub fn parse_level(value: &str) -> Option<LevelFilter> {
    value.parse().ok()
}

/// Installs the console logger with the level named by `option` (`log=`).
pub fn init(option: Option<&str>) {
    let level = match option.map(|v| (v, parse_level(v))) {
        None => LevelFilter::Info,
        Some((_, Some(level))) => level,
        Some((bad, None)) => {
            crate::println!(
                "kiln: unknown log level {bad:?} (use error, warn, info, debug, trace or off); using info"
            );
            LevelFilter::Info
        }
    };
    // A second init keeps the first logger; only the level changes.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_case_insensitively() {
        assert_eq!(parse_level("debug"), Some(LevelFilter::Debug));
        assert_eq!(parse_level("WARN"), Some(LevelFilter::Warn));
        assert_eq!(parse_level("off"), Some(LevelFilter::Off));
        assert_eq!(parse_level("loud"), None);
    }
}
