//! I/O ports a Kiln guest uses.
//!
//! The supervisor opens exactly these ports to CPL3 code through the TSS
//! I/O permission bitmap; any other port access from CPL3 raises `#GP`.

/// First port of the 16550 UART COM1 (8 ports).
pub const COM1: u16 = 0x3f8;

/// Exit port: a 32-bit `out` of value `v` ends the guest with status `v & 0xff`.
///
/// It sits where QEMU's `isa-debug-exit` device is conventionally placed,
/// so the same image reports its status under QEMU (which exits with
/// `(v << 1) | 1`; see [`crate::exit::from_qemu_status`]).
pub const EXIT: u16 = 0xf4;

/// Kiln hostcall port (embedded VMM only).
///
/// A 32-bit `in` returns [`HOSTCALL_MAGIC`] when the host implements
/// hostcalls (other hosts float the bus and return all ones). A 32-bit
/// `out` of the guest-physical address of a [`ConsoleWrite`] record writes
/// that whole buffer to the console in one exit.
pub const HOSTCALL: u16 = 0x4b0;

/// Value read from [`HOSTCALL`] on the embedded VMM ("KILN").
pub const HOSTCALL_MAGIC: u32 = 0x4b49_4c4e;

/// Record a guest passes to a console hostcall.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConsoleWrite {
    /// Guest-physical address of the bytes.
    pub addr: u64,
    /// Number of bytes.
    pub len: u64,
}

/// Longest buffer one console hostcall may carry; hosts reject longer ones.
pub const CONSOLE_WRITE_MAX_BYTES: u64 = 64 * 1024;

/// CMOS/RTC index port (write the register number).
pub const CMOS_INDEX: u16 = 0x70;

/// CMOS/RTC data port (read the selected register).
pub const CMOS_DATA: u16 = 0x71;

/// Port ranges (first port, count) opened to CPL3 code.
pub const OPEN_TO_CPL3: [(u16, u16); 4] = [(COM1, 8), (EXIT, 4), (HOSTCALL, 4), (CMOS_INDEX, 2)];

/// Ports covered by the TSS I/O bitmap (all higher ports are closed).
pub const IO_BITMAP_PORTS: u16 = 0x500;

/// Whether `port` is opened to CPL3 code.
pub fn open_to_cpl3(port: u16) -> bool {
    OPEN_TO_CPL3
        .iter()
        .any(|&(first, count)| port >= first && port < first + count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_ports_are_inside_the_bitmap() {
        for (first, count) in OPEN_TO_CPL3 {
            assert!(first + count <= IO_BITMAP_PORTS);
        }
    }

    #[test]
    fn only_listed_ports_are_open() {
        assert!(open_to_cpl3(COM1));
        assert!(open_to_cpl3(COM1 + 7));
        assert!(!open_to_cpl3(COM1 + 8));
        assert!(open_to_cpl3(EXIT + 3));
        assert!(open_to_cpl3(0x71));
        assert!(!open_to_cpl3(0x72));
        assert!(!open_to_cpl3(0xcf8));
    }
}
