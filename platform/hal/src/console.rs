//! The boot console: bytes out to whoever runs the guest.
//!
//! On linuxu this is standard output. On the embedded VMM one hostcall hands over a whole buffer (one VM exit,
//! instead of one or two per byte); elsewhere (QEMU, Firecracker, bare
//! metal) bytes go to the COM1 UART, waiting for its transmit register.
//! [`init`] probes once which one is there. `write` takes no lock, so it
//! is usable from handlers and the panic path; concurrent writers may
//! interleave.

use core::sync::atomic::{AtomicU8, Ordering};
use kiln_abi::port;

const UNKNOWN: u8 = 0;
const HOSTCALL: u8 = 1;
const UART: u8 = 2;

static BACKEND: AtomicU8 = AtomicU8::new(UNKNOWN);

/// Probes for the Kiln hostcall console; falls back to COM1 (PVH only).
pub fn init() {
    if cfg!(kiln_linuxu) {
        return;
    }
    let backend = if crate::arch::x86_64::inl(port::HOSTCALL) == port::HOSTCALL_MAGIC {
        HOSTCALL
    } else {
        UART
    };
    BACKEND.store(backend, Ordering::Relaxed);
}

/// Whether the console uses the embedded VMM's hostcall.
pub fn uses_hostcall() -> bool {
    BACKEND.load(Ordering::Relaxed) == HOSTCALL
}

/// Writes `bytes` to the console of the current platform.
pub fn write(bytes: &[u8]) {
    use crate::platform::{Current, Platform};
    Current::console_write(bytes);
}

/// Writes `bytes` to the PVH console (hostcall or COM1).
pub fn pvh_write(bytes: &[u8]) {
    if BACKEND.load(Ordering::Relaxed) == UNKNOWN {
        init();
    }
    let start = bytes.as_ptr() as u64;
    let identity_mapped = start.saturating_add(bytes.len() as u64) <= kiln_abi::IDENTITY_MAP_BYTES;
    if uses_hostcall() && identity_mapped {
        for chunk in bytes.chunks(port::CONSOLE_WRITE_MAX_BYTES as usize) {
            hostcall_write(chunk);
        }
    } else {
        for &b in bytes {
            uart_write(b);
        }
    }
}

fn hostcall_write(chunk: &[u8]) {
    // Guest-virtual equals guest-physical below IDENTITY_MAP_BYTES, and the
    // record lives on the stack, which is identity-mapped too.
    let record = port::ConsoleWrite {
        addr: chunk.as_ptr() as u64,
        len: chunk.len() as u64,
    };
    let record = core::hint::black_box(&record);
    let addr = record as *const port::ConsoleWrite as u64;
    debug_assert!(addr < kiln_abi::IDENTITY_MAP_BYTES);
    core::sync::atomic::compiler_fence(Ordering::SeqCst);
    crate::arch::x86_64::outl(port::HOSTCALL, addr as u32);
}

fn uart_write(byte: u8) {
    const LSR: u16 = port::COM1 + 5;
    const THR_EMPTY: u8 = 1 << 5;
    // A real UART needs a few microseconds per byte; emulated ones are
    // always ready. Bounded so a missing UART cannot hang the guest.
    for _ in 0..100_000 {
        if crate::arch::x86_64::inb(LSR) & THR_EMPTY != 0 {
            break;
        }
    }
    crate::arch::x86_64::outb(port::COM1, byte);
}
