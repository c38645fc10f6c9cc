//! Privileged operations: safe calls that every platform implements.
//!
//! On the PVH platform they are supervisor calls: `int3` with the call
//! number in `rax` (docs/adr/0002: on kvm_pvm `syscall` does not change
//! privilege, and `int N` other than `int3` raises `#UD`); numbers and
//! error values are in [`kiln_abi::sc`]. On linuxu they are Linux system
//! calls ([`crate::linuxu`]). Each function says what its result means;
//! errors are Linux errno values in [`ScError`].

use kiln_abi::sc;

use crate::platform::{Current, Platform};

/// A supervisor call failed; the value is the Linux errno it returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScError(pub i64);

impl ScError {
    /// The errno name, for messages.
    pub fn name(self) -> &'static str {
        match self.0 {
            sc::errno::EPERM => "EPERM",
            sc::errno::ENOENT => "ENOENT",
            sc::errno::EEXIST => "EEXIST",
            sc::errno::EINVAL => "EINVAL",
            sc::errno::ENOSYS => "ENOSYS",
            sc::errno::ENODEV => "ENODEV",
            _ => "errno",
        }
    }
}

impl core::fmt::Display for ScError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "supervisor call failed: {} ({})", self.name(), self.0)
    }
}

/// Raw supervisor call: returns `rax`.
///
/// Safe because the supervisor validates every argument: it never reads or
/// writes memory named by the caller, and a bad argument is an error value.
pub fn raw(number: u64, a0: u64, a1: u64, a2: u64) -> i64 {
    let ret: i64;
    // SAFETY: `int3` with a call number in rax enters the supervisor, which
    // preserves every register except rax (result), rcx and r11, never
    // touches the caller's stack (the CPU switches to the TSS stack) and
    // touches no memory of this program except what the call documents
    // (resume and exit do not return here at all).
    unsafe {
        core::arch::asm!(
            "int3",
            inlateout("rax") number as i64 => ret,
            in("rdi") a0,
            in("rsi") a1,
            in("rdx") a2,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

/// Turns a raw return value (negative errno on failure) into a `Result`.
pub fn result(ret: i64) -> Result<u64, ScError> {
    if ret < 0 {
        Err(ScError(-ret))
    } else {
        Ok(ret as u64)
    }
}

/// Ends the guest with `status` (the host's exit status).
pub fn exit(status: u8) -> ! {
    Current::exit(status)
}

/// Waits for the next interrupt.
///
/// The interrupt is delivered to its upcall handler before this returns.
/// With no interrupt source armed this waits forever (the host's timeout
/// ends such a guest).
pub fn halt() {
    Current::halt();
}

/// Maps the 4 KiB page at guest-physical `paddr` at `vaddr` inside the map
/// window ([`kiln_abi::MAP_WINDOW_BASE`], [`kiln_abi::MAP_WINDOW_BYTES`]).
///
/// `flags` is a set of [`sc::MAP_WRITE`] and [`sc::MAP_EXEC`]. Errors:
/// `EPERM` for write+execute or a supervisor page, `EEXIST` when `vaddr` is
/// mapped, `EINVAL` for an unaligned or out-of-window address or unknown
/// flags.
pub fn map(vaddr: u64, paddr: u64, flags: u64) -> Result<(), ScError> {
    Current::map(vaddr, paddr, flags)
}

/// Unmaps a page mapped with [`map`] and flushes its TLB entry.
///
/// Errors: `ENOENT` when nothing is mapped there, `EINVAL` as for [`map`].
pub fn unmap(vaddr: u64) -> Result<(), ScError> {
    Current::unmap(vaddr)
}

/// Writes x2APIC register `msr` (0x800–0x8ff).
///
/// Errors: `ENODEV` when the CPU has no x2APIC (and always on linuxu),
/// `EINVAL` outside the range. PVH platform only.
pub fn apic_write(msr: u32, value: u64) -> Result<(), ScError> {
    result(raw(sc::APIC_WRITE, u64::from(msr), value, 0)).map(|_| ())
}
