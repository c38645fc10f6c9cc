//! `print!` and `println!` on the boot console.
//!
//! Output is formatted into a 256-byte buffer on the stack and handed to
//! the console in as few writes as possible (one hostcall per line on the
//! embedded VMM). No lock is taken, so printing works from handlers and
//! the panic path; lines from concurrent writers may interleave.

use core::fmt::{self, Write};

struct Buffered {
    buf: [u8; 256],
    len: usize,
}

impl Buffered {
    fn flush(&mut self) {
        if self.len > 0 {
            kiln_hal::console::write(&self.buf[..self.len]);
            self.len = 0;
        }
    }
}

impl Write for Buffered {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut bytes = s.as_bytes();
        while !bytes.is_empty() {
            if self.len == self.buf.len() {
                self.flush();
            }
            let n = bytes.len().min(self.buf.len() - self.len);
            self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
            self.len += n;
            bytes = &bytes[n..];
        }
        Ok(())
    }
}

/// Writes formatted output to the console (used by the macros).
#[doc(hidden)]
pub fn _print(args: fmt::Arguments<'_>) {
    let mut out = Buffered {
        buf: [0; 256],
        len: 0,
    };
    let _ = out.write_fmt(args);
    out.flush();
}

/// Prints to the guest console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::print::_print(format_args!($($arg)*)) };
}

/// Prints to the guest console, with a newline.
#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($arg:tt)*) => { $crate::print::_print(format_args!("{}\n", format_args!($($arg)*))) };
}
