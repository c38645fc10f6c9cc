//! x86_64: the supervisor's assembly and raw port I/O.
//!
//! The supervisor source is `supervisor.S` beside this file; the constants it
//! needs come from `kiln-abi` through `const` operands, so the two cannot
//! drift apart.

use kiln_abi::port;
#[cfg(all(kiln_guest, not(kiln_linuxu)))]
use kiln_abi::{sc, upcall};

/// Pages the supervisor may occupy from 1 MiB on (mapped supervisor-only).
///
/// The linker script checks the supervisor fits (see `kiln.ld`).
pub const SUP_PAGES: u64 = kiln_abi::SUP_PAGES;

/// Size of the initial CPL3 stack `kiln_rust_entry` runs on.
pub const BOOT_STACK_BYTES: usize = 128 * 1024;

/// Bytes of the TSS I/O bitmap.
#[cfg_attr(
    not(all(kiln_guest, not(kiln_linuxu))),
    allow(dead_code, reason = "used by the guest-only supervisor and tests")
)]
const IO_BITMAP_BYTES: usize = port::IO_BITMAP_PORTS as usize / 8;

/// Bitmap byte index and value that open one port range of
/// [`port::OPEN_TO_CPL3`]; every range must sit inside one byte.
const fn io_open(i: usize) -> (usize, u8) {
    let (first, count) = port::OPEN_TO_CPL3[i];
    let byte = first as usize / 8;
    assert!((first as usize + count as usize - 1) / 8 == byte);
    let bits = ((1u16 << count) - 1) as u8;
    (byte, !(bits << (first % 8)))
}
#[cfg_attr(
    not(all(kiln_guest, not(kiln_linuxu))),
    allow(dead_code, reason = "used by the guest-only supervisor and tests")
)]
const IO_OPEN: [(usize, u8); 4] = [io_open(0), io_open(1), io_open(2), io_open(3)];
const _: () = {
    let mut i = 0;
    while i < IO_OPEN.len() {
        let mut j = i + 1;
        while j < IO_OPEN.len() {
            assert!(
                IO_OPEN[i].0 != IO_OPEN[j].0,
                "two open port ranges share a bitmap byte"
            );
            j += 1;
        }
        i += 1;
    }
};

#[cfg(all(kiln_guest, not(kiln_linuxu)))]
core::arch::global_asm!(
    include_str!("supervisor.S"),
    SUP_PAGES = const SUP_PAGES,
    SC_BASE = const sc::BASE,
    SC_END = const sc::END,
    ENOSYS = const sc::errno::ENOSYS,
    EINVAL = const sc::errno::EINVAL,
    EPERM = const sc::errno::EPERM,
    EEXIST = const sc::errno::EEXIST,
    ENOENT = const sc::errno::ENOENT,
    ENODEV = const sc::errno::ENODEV,
    MAP_WRITE = const sc::MAP_WRITE,
    MAP_EXEC = const sc::MAP_EXEC,
    MAP_WINDOW_BASE = const kiln_abi::MAP_WINDOW_BASE,
    MAP_WINDOW_BYTES = const kiln_abi::MAP_WINDOW_BYTES,
    XAPIC_TIMER_INITIAL_VA = const kiln_abi::XAPIC_TIMER_INITIAL_VA,
    EXIT_PORT = const port::EXIT,
    COM1 = const port::COM1,
    EXIT_DOUBLE_FAULT = const kiln_abi::exit::DOUBLE_FAULT,
    EXIT_SUPERVISOR_FAULT = const kiln_abi::exit::SUPERVISOR_FAULT,
    VECTORS = const upcall::VECTORS,
    FRAME_SIZE = const core::mem::size_of::<upcall::UpcallFrame>(),
    BOOT_STACK_BYTES = const BOOT_STACK_BYTES,
    IO_BITMAP_BYTES = const IO_BITMAP_BYTES,
    IO_OPEN0_BYTE = const IO_OPEN[0].0,
    IO_OPEN0_VALUE = const IO_OPEN[0].1,
    IO_OPEN1_BYTE = const IO_OPEN[1].0,
    IO_OPEN1_VALUE = const IO_OPEN[1].1,
    IO_OPEN2_BYTE = const IO_OPEN[2].0,
    IO_OPEN2_VALUE = const IO_OPEN[2].1,
    IO_OPEN3_BYTE = const IO_OPEN[3].0,
    IO_OPEN3_VALUE = const IO_OPEN[3].1,
    OFF_RAX = const upcall::OFF_RAX,
    OFF_RBX = const upcall::OFF_RBX,
    OFF_RCX = const upcall::OFF_RCX,
    OFF_RDX = const upcall::OFF_RDX,
    OFF_RSI = const upcall::OFF_RSI,
    OFF_RDI = const upcall::OFF_RDI,
    OFF_RBP = const upcall::OFF_RBP,
    OFF_R8 = const upcall::OFF_R8,
    OFF_R9 = const upcall::OFF_R9,
    OFF_R10 = const upcall::OFF_R10,
    OFF_R11 = const upcall::OFF_R11,
    OFF_R12 = const upcall::OFF_R12,
    OFF_R13 = const upcall::OFF_R13,
    OFF_R14 = const upcall::OFF_R14,
    OFF_R15 = const upcall::OFF_R15,
    OFF_VECTOR = const upcall::OFF_VECTOR,
    OFF_ERROR_CODE = const upcall::OFF_ERROR_CODE,
    OFF_RIP = const upcall::OFF_RIP,
    OFF_CS = const upcall::OFF_CS,
    OFF_RFLAGS = const upcall::OFF_RFLAGS,
    OFF_RSP = const upcall::OFF_RSP,
    OFF_SS = const upcall::OFF_SS,
    OFF_CR2 = const upcall::OFF_CR2,
    options(att_syntax)
);

/// Writes one byte to an I/O port the supervisor opened to CPL3.
///
/// Any other port raises `#GP`, which is reported as a crash; the check
/// below turns that into a panic that names the port instead.
pub fn outb(port: u16, value: u8) {
    assert!(port::open_to_cpl3(port), "port {port:#x} is closed to CPL3");
    // SAFETY: the port is one of kiln_abi::port::OPEN_TO_CPL3 (checked
    // above); writing to it has no effect on memory this program owns.
    unsafe {
        core::arch::asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags));
    }
}

/// Reads one byte from an I/O port the supervisor opened to CPL3.
pub fn inb(port: u16) -> u8 {
    assert!(port::open_to_cpl3(port), "port {port:#x} is closed to CPL3");
    let value: u8;
    // SAFETY: as in `outb`; reading a port only returns a value.
    unsafe {
        core::arch::asm!("in al, dx", in("dx") port, out("al") value, options(nomem, nostack, preserves_flags));
    }
    value
}

/// Writes 32 bits to an I/O port the supervisor opened to CPL3.
pub fn outl(port: u16, value: u32) {
    assert!(port::open_to_cpl3(port), "port {port:#x} is closed to CPL3");
    // SAFETY: as in `outb`. A hostcall port write may make the host read
    // guest memory; it never writes guest memory.
    unsafe {
        core::arch::asm!("out dx, eax", in("dx") port, in("eax") value, options(nostack, preserves_flags));
    }
}

/// Reads 32 bits from an I/O port the supervisor opened to CPL3.
pub fn inl(port: u16) -> u32 {
    assert!(port::open_to_cpl3(port), "port {port:#x} is closed to CPL3");
    let value: u32;
    // SAFETY: as in `inb`.
    unsafe {
        core::arch::asm!("in eax, dx", in("dx") port, out("eax") value, options(nomem, nostack, preserves_flags));
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_bitmap_opens_exactly_the_abi_ports() {
        let mut bitmap = [0xffu8; IO_BITMAP_BYTES];
        for (byte, value) in IO_OPEN {
            bitmap[byte] = value;
        }
        for p in 0..port::IO_BITMAP_PORTS {
            let open = bitmap[p as usize / 8] & (1 << (p % 8)) == 0;
            assert_eq!(open, port::open_to_cpl3(p), "port {p:#x}");
        }
    }
}
