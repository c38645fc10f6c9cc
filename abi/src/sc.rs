//! Supervisor calls: how CPL3 code asks the CPL0 supervisor for privileged work.
//!
//! A supervisor call is an `int3` instruction with `rax` holding one of the
//! numbers below (far outside Linux's syscall range, so the two never mix)
//! and arguments in `rdi`, `rsi`, `rdx`; `rcx` and `r11` are clobbered. The
//! result comes back in `rax`: zero or a positive value on success, a
//! negated Linux errno on failure. An `int3` with any other `rax` is a
//! breakpoint exception. A `syscall` instruction returns `-ENOSYS` until
//! the Linux-ABI layer exists.

/// First supervisor-call number ("KI" in the high half).
pub const BASE: u64 = 0x4b49_0000;

/// `exit(status)`: end the guest with `status` (never returns).
pub const EXIT: u64 = BASE;
/// `halt()`: wait for the next interrupt; it is delivered to the upcall
/// handler before the call returns 0.
pub const HALT: u64 = BASE + 1;
/// `map(vaddr, paddr, flags)`: map one 4 KiB page inside the map window.
pub const MAP: u64 = BASE + 2;
/// `unmap(vaddr)`: remove one page mapped with [`MAP`] and flush the TLB entry.
pub const UNMAP: u64 = BASE + 3;
/// `resume(frame)`: leave the upcall handler, resuming the context in `frame`.
pub const RESUME: u64 = BASE + 4;
/// `apic_write(msr, value)`: write an x2APIC register (MSR 0x800–0x8ff) or
/// the TSC-deadline MSR (0x6e0).
pub const APIC_WRITE: u64 = BASE + 5;
/// `fault_test()`: executes `ud2` in the supervisor, to test the report
/// of a fault at CPL0 (ends the guest with `exit::SUPERVISOR_FAULT`).
pub const FAULT_TEST: u64 = BASE + 6;
/// `protect(vaddr, pages, flags)`: sets the access of identity-mapped
/// pages in the first 2 MiB (the image), outside the supervisor and the
/// null page: a set of [`PROTECT_WRITE`], [`PROTECT_EXEC`], or
/// [`PROTECT_NONE`] (unmapped, for guard pages). W+X is refused (`EPERM`).
pub const PROTECT: u64 = BASE + 7;
/// `halt_for(value, target)`: arms the local-APIC timer — `target` 0x838
/// loads the x2APIC one-shot count, 0x6e0 the TSC deadline, and
/// [`crate::XAPIC_TIMER_INITIAL_VA`] the xAPIC count through its mapping
/// (mode and vector must already be set up) — and halts, with interrupts
/// off until the `hlt`, so the timer cannot fire unseen in between. Like
/// [`HALT`] otherwise.
pub const HALT_FOR: u64 = BASE + 8;
/// One past the last supervisor-call number.
pub const END: u64 = BASE + 9;

/// [`PROTECT`] flag: writable.
pub const PROTECT_WRITE: u64 = 1;
/// [`PROTECT`] flag: executable.
pub const PROTECT_EXEC: u64 = 2;
/// [`PROTECT`] flag: not mapped at all.
pub const PROTECT_NONE: u64 = 4;
/// Highest address (exclusive) [`PROTECT`] can change.
pub const PROTECT_LIMIT: u64 = 2 << 20;

/// [`MAP`] flag: the page is writable.
pub const MAP_WRITE: u64 = 1;
/// [`MAP`] flag: the page is executable. Refused together with [`MAP_WRITE`].
pub const MAP_EXEC: u64 = 2;

/// Linux errno values the supervisor returns (negated).
pub mod errno {
    /// Operation not permitted (W+X mapping, mapping the supervisor).
    pub const EPERM: i64 = 1;
    /// No such entry (unmapping a page that is not mapped).
    pub const ENOENT: i64 = 2;
    /// Entry exists (mapping over a mapped page).
    pub const EEXIST: i64 = 17;
    /// No such device (no x2APIC for `apic_write`).
    pub const ENODEV: i64 = 19;
    /// Invalid argument (unaligned, outside the window, unknown flags).
    pub const EINVAL: i64 = 22;
    /// Function not implemented (unknown call number).
    pub const ENOSYS: i64 = 38;
}
