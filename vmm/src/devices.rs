//! The embedded VMM's devices: COM1, the exit port, the hostcall console,
//! and the record of accesses nothing handles.

use std::io::{self, Write};
use std::sync::{Arc, Mutex};

use kiln_abi::port;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// A console sink that flushes after every newline (so interactive output
/// and interleaving with the host's own messages stay readable).
pub struct LineFlushing {
    inner: crate::ConsoleSink,
}

impl LineFlushing {
    pub fn new(inner: crate::ConsoleSink) -> Self {
        Self { inner }
    }
}

impl Write for LineFlushing {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write_all(buf)?;
        if buf.contains(&b'\n') {
            self.inner.flush()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Shared handle on the sink, as vm-superio's serial wants an owned writer.
#[derive(Clone)]
pub struct SharedConsole(pub Arc<Mutex<LineFlushing>>);

impl Write for SharedConsole {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| io::Error::other("console lock poisoned"))?
            .write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0
            .lock()
            .map_err(|_| io::Error::other("console lock poisoned"))?
            .flush()
    }
}

/// The COM1 UART, interrupting on IOAPIC pin 4.
pub type Com1 =
    vm_superio::Serial<crate::ioapic::IrqLine, vm_superio::serial::NoEvents, SharedConsole>;

/// Why a hostcall console write was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum HostcallError {
    /// The record or buffer lies outside guest memory.
    OutOfBounds(u64),
    /// The buffer is longer than `CONSOLE_WRITE_MAX_BYTES`.
    TooLong(u64),
}

/// Reads the `ConsoleWrite` record at `record_addr` and returns its bytes.
pub fn hostcall_console_bytes(
    mem: &GuestMemoryMmap,
    record_addr: u64,
) -> Result<Vec<u8>, HostcallError> {
    let mut record = [0u8; 16];
    mem.read_slice(&mut record, GuestAddress(record_addr))
        .map_err(|_| HostcallError::OutOfBounds(record_addr))?;
    let addr = u64::from_le_bytes(record[..8].try_into().unwrap_or_default());
    let len = u64::from_le_bytes(record[8..].try_into().unwrap_or_default());
    if len > port::CONSOLE_WRITE_MAX_BYTES {
        return Err(HostcallError::TooLong(len));
    }
    let mut bytes = vec![0u8; len as usize];
    mem.read_slice(&mut bytes, GuestAddress(addr))
        .map_err(|_| HostcallError::OutOfBounds(addr))?;
    Ok(bytes)
}

/// Tracks accesses no device handles.
///
/// Each is answered with all ones (reads) or dropped (writes) and logged
/// the first few times; a guest that makes [`LOOP_LIMIT`] of them in a row
/// to the same place, with no other exit between, is stuck.
#[derive(Default)]
pub struct Unhandled {
    last: Option<String>,
    repeats: u64,
    logged: u64,
}

/// Consecutive identical unhandled accesses that count as a loop.
pub const LOOP_LIMIT: u64 = 20_000;
/// How many unhandled accesses are logged.
const LOG_LIMIT: u64 = 10;

impl Unhandled {
    /// Records one; returns `Some(what)` when it is looping.
    pub fn record(&mut self, what: String, write: bool) -> Option<String> {
        if self.logged < LOG_LIMIT {
            self.logged += 1;
            eprintln!(
                "kiln-vmm: guest {} unhandled {what} (ignored{})",
                if write { "wrote to" } else { "read from" },
                if self.logged == LOG_LIMIT {
                    "; not reporting more"
                } else {
                    ""
                }
            );
        }
        if self.last.as_deref() == Some(what.as_str()) {
            self.repeats += 1;
        } else {
            self.last = Some(what);
            self.repeats = 1;
        }
        (self.repeats >= LOOP_LIMIT).then(|| self.last.clone().unwrap_or_default())
    }

    /// Any handled exit breaks a run of unhandled ones.
    pub fn reset(&mut self) {
        self.repeats = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostcall_reads_record_and_bounds_checks() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
        mem.write_slice(b"hi there", GuestAddress(0x2000)).unwrap();
        let mut rec = Vec::new();
        rec.extend_from_slice(&0x2000u64.to_le_bytes());
        rec.extend_from_slice(&8u64.to_le_bytes());
        mem.write_slice(&rec, GuestAddress(0x1000)).unwrap();
        assert_eq!(hostcall_console_bytes(&mem, 0x1000).unwrap(), b"hi there");
        assert_eq!(
            hostcall_console_bytes(&mem, 0xfff8),
            Err(HostcallError::OutOfBounds(0xfff8))
        );
        let mut rec = Vec::new();
        rec.extend_from_slice(&0xff00u64.to_le_bytes());
        rec.extend_from_slice(&0x200u64.to_le_bytes());
        mem.write_slice(&rec, GuestAddress(0x1000)).unwrap();
        assert_eq!(
            hostcall_console_bytes(&mem, 0x1000),
            Err(HostcallError::OutOfBounds(0xff00))
        );
        rec.clear();
        rec.extend_from_slice(&0u64.to_le_bytes());
        rec.extend_from_slice(&u64::MAX.to_le_bytes());
        mem.write_slice(&rec, GuestAddress(0x1000)).unwrap();
        assert_eq!(
            hostcall_console_bytes(&mem, 0x1000),
            Err(HostcallError::TooLong(u64::MAX))
        );
    }

    #[test]
    fn repeated_unhandled_access_is_a_loop() {
        let mut u = Unhandled {
            logged: LOG_LIMIT,
            ..Default::default()
        };
        for _ in 0..LOOP_LIMIT - 1 {
            assert_eq!(u.record("port 0x61".into(), false), None);
        }
        assert_eq!(
            u.record("port 0x61".into(), false),
            Some("port 0x61".into())
        );
        u.reset();
        assert_eq!(u.record("port 0x61".into(), false), None);
        assert_eq!(u.record("port 0x62".into(), false), None);
    }
}

/// The CMOS real-time clock: the host's time, UTC, BCD, 24-hour mode.
#[derive(Default)]
pub struct Rtc {
    index: u8,
}

impl Rtc {
    /// A write to the index port.
    pub fn select(&mut self, value: u8) {
        self.index = value & 0x7f; // bit 7 is the NMI mask
    }

    /// A read of the data port, at host time `unix_secs`.
    pub fn read_at(&self, unix_secs: u64) -> u8 {
        use kiln_abi::rtc::*;
        let t = DateTime::from_unix(unix_secs);
        match self.index {
            REG_SECONDS => to_bcd(t.second),
            REG_MINUTES => to_bcd(t.minute),
            REG_HOURS => to_bcd(t.hour),
            0x06 => to_bcd(((t.year.rem_euclid(7) as u32) % 7) + 1), // weekday (unused)
            REG_DAY => to_bcd(t.day),
            REG_MONTH => to_bcd(t.month),
            REG_YEAR => to_bcd((t.year.rem_euclid(100)) as u32),
            REG_CENTURY => to_bcd((t.year / 100) as u32),
            REG_STATUS_A => 0x26, // no update in progress, 32.768 kHz base
            REG_STATUS_B => STATUS_B_24H,
            0x0d => 0x80, // status D: battery good
            _ => 0,
        }
    }

    /// A read of the data port now.
    pub fn read(&self) -> u8 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.read_at(now)
    }
}

#[cfg(test)]
mod rtc_tests {
    use super::*;

    #[test]
    fn registers_carry_the_host_time_in_bcd() {
        let mut rtc = Rtc::default();
        let at = 1_795_971_687; // 2026-11-29 17:01:27 UTC
        let read = |rtc: &mut Rtc, reg: u8| {
            rtc.select(reg | 0x80);
            rtc.read_at(at)
        };
        assert_eq!(read(&mut rtc, 0x00), 0x27);
        assert_eq!(read(&mut rtc, 0x02), 0x01);
        assert_eq!(read(&mut rtc, 0x04), 0x17);
        assert_eq!(read(&mut rtc, 0x07), 0x29);
        assert_eq!(read(&mut rtc, 0x08), 0x11);
        assert_eq!(read(&mut rtc, 0x09), 0x26);
        assert_eq!(read(&mut rtc, 0x32), 0x20);
        assert_eq!(read(&mut rtc, 0x0b), kiln_abi::rtc::STATUS_B_24H);
        assert_eq!(read(&mut rtc, 0x0a) & 0x80, 0, "no update in progress");
    }
}
