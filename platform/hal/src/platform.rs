//! The platform seam: what every guest platform gives the runtime.
//!
//! Two implementations exist, chosen when the image is built (the build
//! recipe sets `--cfg kiln_linuxu` for the Linux-process platform):
//!
//! - [`Pvh`]: a PVH virtual machine (embedded VMM, QEMU, Firecracker) with
//!   the CPL0 supervisor of `arch::x86_64`;
//! - [`crate::linuxu::LinuxProcess`]: an ordinary, seccomp-sandboxed Linux
//!   process.
//!
//! [`Current`] names the one compiled in. Everything above the HAL uses
//! only this trait (through [`crate::sc`], [`crate::console`],
//! [`crate::timer`]), so libraries and apps are the same crates on every
//! platform.

use crate::sc::ScError;

/// What a guest platform provides.
pub trait Platform {
    /// Short name for messages.
    const NAME: &'static str;
    /// Writes bytes to the console (never blocks on a lock).
    fn console_write(bytes: &[u8]);
    /// Ends the guest with `status`.
    fn exit(status: u8) -> !;
    /// Waits for the next interrupt (signal on linuxu); its upcall handler
    /// has run when this returns.
    fn halt();
    /// Maps the frame at `paddr` at `vaddr` in the map window, W^X enforced.
    fn map(vaddr: u64, paddr: u64, flags: u64) -> Result<(), ScError>;
    /// Removes a mapping made by `map`.
    fn unmap(vaddr: u64) -> Result<(), ScError>;
    /// Raises the timer interrupt (vector `TIMER_VECTOR`) once, after
    /// about `us` microseconds.
    fn timer_oneshot_us(us: u64) -> Result<(), ScError>;
    /// Nanoseconds since boot, monotonic.
    fn monotonic_ns() -> u64;
    /// Waits until an interrupt arrives or about `us` microseconds pass,
    /// whichever is first, without the race of arming a timer and then
    /// halting (a timer that fires in between cannot make this wait
    /// forever). The timer interrupt is raised as usual.
    fn halt_for_us(us: u64);
    /// Nanoseconds since the Unix epoch (UTC), if the platform has a clock.
    fn wall_clock_ns() -> Option<u64>;
}

/// The PVH virtual-machine platform (CPL0 supervisor + CPL3 Rust).
pub struct Pvh;

/// x2APIC registers used by the one-shot timer.
mod x2apic {
    pub const SVR: u32 = 0x80f;
    pub const LVT_TIMER: u32 = 0x832;
    pub const TIMER_INITIAL: u32 = 0x838;
    pub const TIMER_DIVIDE: u32 = 0x83e;
    /// Spurious vector: the last one inside the supervisor's IDT.
    pub const SPURIOUS_VECTOR: u64 = kiln_abi::upcall::VECTORS as u64 - 1;
    /// Timer ticks per microsecond with divide-by-1 (KVM's APIC bus runs
    /// at 1 GHz; calibration comes with the clock work).
    pub const TICKS_PER_US: u64 = 1000;
}

impl Platform for Pvh {
    const NAME: &'static str = "pvh";

    fn console_write(bytes: &[u8]) {
        crate::console::pvh_write(bytes);
    }

    fn exit(status: u8) -> ! {
        crate::sc::raw(kiln_abi::sc::EXIT, u64::from(status), 0, 0);
        // The supervisor halts forever when no exit device answered.
        loop {
            core::hint::spin_loop();
        }
    }

    fn halt() {
        crate::sc::raw(kiln_abi::sc::HALT, 0, 0, 0);
    }

    fn map(vaddr: u64, paddr: u64, flags: u64) -> Result<(), ScError> {
        crate::sc::result(crate::sc::raw(kiln_abi::sc::MAP, vaddr, paddr, flags)).map(|_| ())
    }

    fn unmap(vaddr: u64) -> Result<(), ScError> {
        crate::sc::result(crate::sc::raw(kiln_abi::sc::UNMAP, vaddr, 0, 0)).map(|_| ())
    }

    fn timer_oneshot_us(us: u64) -> Result<(), ScError> {
        use x2apic::*;
        let ticks = us
            .saturating_mul(TICKS_PER_US)
            .clamp(1, u64::from(u32::MAX));
        use core::sync::atomic::{AtomicBool, Ordering};
        /// Mode, divider and vector are set once; then only the count.
        static CONFIGURED: AtomicBool = AtomicBool::new(false);
        if !CONFIGURED.load(Ordering::Relaxed) {
            crate::sc::apic_write(SVR, 0x100 | SPURIOUS_VECTOR)?;
            crate::sc::apic_write(TIMER_DIVIDE, 0xb)?;
            crate::sc::apic_write(LVT_TIMER, u64::from(kiln_abi::upcall::TIMER_VECTOR))?;
            CONFIGURED.store(true, Ordering::Relaxed);
        }
        crate::sc::apic_write(TIMER_INITIAL, ticks)
    }

    fn monotonic_ns() -> u64 {
        crate::time::tsc_monotonic_ns()
    }

    fn wall_clock_ns() -> Option<u64> {
        crate::time::rtc_wall_clock_ns()
    }

    fn halt_for_us(us: u64) {
        // Sets the timer's mode and vector (and arms it), then re-arms the
        // count and halts atomically in the supervisor.
        if Self::timer_oneshot_us(us).is_err() {
            return;
        }
        let ticks = us
            .saturating_mul(x2apic::TICKS_PER_US)
            .clamp(1, u64::from(u32::MAX));
        crate::sc::raw(kiln_abi::sc::HALT_FOR, ticks, 0, 0);
    }
}

/// The platform this image was built for.
#[cfg(not(kiln_linuxu))]
pub type Current = Pvh;

/// The platform this image was built for.
#[cfg(kiln_linuxu)]
pub type Current = crate::linuxu::LinuxProcess;
