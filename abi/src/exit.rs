//! Exit statuses with a fixed meaning.
//!
//! A guest ends by writing its status to [`crate::port::EXIT`]; the host
//! turns it into its own process exit status. Values below
//! [`FIRST_RESERVED`] are the application's own. Hosts also end runs the
//! guest cannot report itself; those use [`HOST_TIMEOUT`] and up.

/// First status reserved by Kiln; applications should stay below it.
pub const FIRST_RESERVED: u8 = 100;

/// The guest panicked (message and location were printed).
pub const PANIC: u8 = 101;

/// A CPU exception was not handled (a crash report was printed).
pub const FAULT: u8 = 102;

/// An exception hit while the exception handler itself ran.
pub const DOUBLE_FAULT: u8 = 103;

/// The guest ran out of memory.
pub const OUT_OF_MEMORY: u8 = 104;

/// The guest's boot information was unusable (bad PVH start info).
pub const BAD_BOOT_INFO: u8 = 105;

/// The supervisor itself faulted (a Kiln bug).
pub const SUPERVISOR_FAULT: u8 = 106;

/// linuxu: the guest made a system call its seccomp sandbox forbids.
pub const SANDBOX_VIOLATION: u8 = 107;

/// Host: the guest did not exit before `--timeout`.
pub const HOST_TIMEOUT: u8 = 124;

/// Host: the guest reset the CPU (triple fault or shutdown).
pub const HOST_TRIPLE_FAULT: u8 = 125;

/// Host: the hypervisor could not run the guest (KVM internal error,
/// failed entry, endless unhandled I/O).
pub const HOST_VM_ERROR: u8 = 126;

/// What a reserved status means, for messages.
pub fn describe(status: u8) -> Option<&'static str> {
    Some(match status {
        PANIC => "the guest panicked",
        FAULT => "the guest hit an unhandled CPU exception",
        DOUBLE_FAULT => "the guest faulted inside its exception handler",
        OUT_OF_MEMORY => "the guest ran out of memory",
        BAD_BOOT_INFO => "the guest could not read its boot information",
        SUPERVISOR_FAULT => "the guest supervisor faulted",
        SANDBOX_VIOLATION => "the guest was stopped by its sandbox (a forbidden system call)",
        HOST_TIMEOUT => "the guest did not exit before the timeout",
        HOST_TRIPLE_FAULT => "the guest reset its CPU (triple fault)",
        HOST_VM_ERROR => "the hypervisor could not run the guest",
        _ => return None,
    })
}

/// Guest status from QEMU's process status with `isa-debug-exit` on
/// [`crate::port::EXIT`]: QEMU exits with `(v << 1) | 1` for a write of `v`.
///
/// Returns `None` for even statuses, which did not come from the exit port
/// (QEMU itself failed, or the guest reset with `-no-reboot`).
pub fn from_qemu_status(qemu_status: i32) -> Option<u8> {
    if qemu_status & 1 == 1 {
        Some(((qemu_status >> 1) & 0x7f) as u8)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_status_round_trips_small_values() {
        for v in 0u8..=127 {
            assert_eq!(from_qemu_status((i32::from(v) << 1) | 1), Some(v));
        }
        assert_eq!(from_qemu_status(0), None);
        assert_eq!(from_qemu_status(2), None);
    }

    #[test]
    fn reserved_statuses_are_described_and_distinct() {
        let all = [
            PANIC,
            FAULT,
            DOUBLE_FAULT,
            OUT_OF_MEMORY,
            BAD_BOOT_INFO,
            SUPERVISOR_FAULT,
            SANDBOX_VIOLATION,
            HOST_TIMEOUT,
            HOST_TRIPLE_FAULT,
            HOST_VM_ERROR,
        ];
        for (i, a) in all.iter().enumerate() {
            assert!(*a >= FIRST_RESERVED && *a < 128, "{a} must survive QEMU");
            assert!(describe(*a).is_some());
            assert!(all[i + 1..].iter().all(|b| b != a));
        }
        assert_eq!(describe(0), None);
    }
}
