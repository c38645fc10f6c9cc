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

pub(crate) mod x2apic {
    //! The local APIC timer, through x2APIC MSRs (supervisor calls) where
    //! the CPU has x2APIC, else through the xAPIC's MMIO registers mapped
    //! into the map window (QEMU's TCG, whose x2APIC timer never fires, is
    //! started without x2APIC).
    pub const SVR: u32 = 0x80f;
    pub const LVT_TIMER: u32 = 0x832;
    pub const TIMER_INITIAL: u32 = 0x838;
    pub const TIMER_DIVIDE: u32 = 0x83e;
    /// Spurious vector: the last one inside the supervisor's IDT.
    pub const SPURIOUS_VECTOR: u64 = kiln_abi::upcall::VECTORS as u64 - 1;
    /// Timer ticks per microsecond with divide-by-1 (KVM's and QEMU's APIC
    /// bus runs at 1 GHz) for the one-shot mode.
    pub const TICKS_PER_US: u64 = 1000;
    /// IA32_TSC_DEADLINE.
    pub const TSC_DEADLINE: u32 = 0x6e0;

    use crate::sc::ScError;
    use core::sync::atomic::{AtomicU8, Ordering};
    use kiln_abi::sc::errno;

    const UNSET: u8 = 0;
    const ONESHOT: u8 = 1;
    const DEADLINE: u8 = 2;
    const XAPIC: u8 = 3;
    /// The timer mode, chosen and programmed once.
    static MODE: AtomicU8 = AtomicU8::new(UNSET);

    /// Writes xAPIC register `offset` (MMIO, mapped at configure time).
    fn xapic_write(offset: u64, value: u32) {
        let va = kiln_abi::XAPIC_WINDOW_VA + offset;
        // SAFETY: XAPIC_WINDOW_VA maps the local APIC's register page (device
        // memory, not memory Rust owns); registers are 32-bit and aligned.
        unsafe { core::ptr::write_volatile(va as *mut u32, value) };
    }

    /// Software-enables the local APIC and sets up the timer (once):
    /// x2APIC in TSC-deadline mode where the CPU has it and the TSC
    /// frequency is published (CPUID), else x2APIC one-shot, else xAPIC
    /// one-shot through MMIO.
    pub(crate) fn configure() -> Result<u8, ScError> {
        let mode = MODE.load(Ordering::Relaxed);
        if mode != UNSET {
            return Ok(mode);
        }
        let vector = u64::from(kiln_abi::upcall::TIMER_VECTOR);
        match crate::sc::apic_write(SVR, 0x100 | SPURIOUS_VECTOR) {
            Ok(()) => {}
            Err(e) if e.0 == errno::ENODEV => {
                match crate::sc::map(
                    kiln_abi::XAPIC_WINDOW_VA,
                    kiln_abi::XAPIC_BASE,
                    kiln_abi::sc::MAP_WRITE,
                ) {
                    Ok(()) => {}
                    Err(e) if e.0 == errno::EEXIST => {}
                    Err(e) => return Err(e),
                }
                xapic_write(0xf0, 0x100 | SPURIOUS_VECTOR as u32);
                xapic_write(0x3e0, 0xb);
                xapic_write(0x320, vector as u32);
                MODE.store(XAPIC, Ordering::Relaxed);
                return Ok(XAPIC);
            }
            Err(e) => return Err(e),
        }
        let has_deadline = core::arch::x86_64::__cpuid(1).ecx & (1 << 24) != 0;
        let mode = if has_deadline && crate::time::tsc_per_ms_published().is_some() {
            DEADLINE
        } else {
            ONESHOT
        };
        crate::sc::apic_write(TIMER_DIVIDE, 0xb)?;
        let lvt_mode = if mode == DEADLINE { 2 << 17 } else { 0 };
        crate::sc::apic_write(LVT_TIMER, vector | lvt_mode)?;
        MODE.store(mode, Ordering::Relaxed);
        Ok(mode)
    }

    /// How to arm the timer `us` from now: a value and where it goes — an
    /// MSR number (x2APIC count or TSC deadline) or, in xAPIC mode, the
    /// virtual address of the initial-count register.
    pub fn arm_value(us: u64) -> Result<(u64, u64), ScError> {
        let ticks = us
            .saturating_mul(TICKS_PER_US)
            .clamp(1, u64::from(u32::MAX));
        match configure()? {
            DEADLINE => {
                let per_ms = crate::time::tsc_per_ms_published().unwrap_or(1_000_000);
                let delta = us.saturating_mul(per_ms) / 1000;
                Ok((
                    crate::time::rdtsc().saturating_add(delta.max(1)),
                    u64::from(TSC_DEADLINE),
                ))
            }
            XAPIC => Ok((ticks, kiln_abi::XAPIC_TIMER_INITIAL_VA)),
            _ => Ok((ticks, u64::from(TIMER_INITIAL))),
        }
    }

    /// Arms the timer `us` from now.
    pub fn arm(us: u64) -> Result<(), ScError> {
        let (value, target) = arm_value(us)?;
        if target == kiln_abi::XAPIC_TIMER_INITIAL_VA {
            xapic_write(0x380, value as u32);
            Ok(())
        } else {
            crate::sc::apic_write(target as u32, value)
        }
    }

    /// Ends an interrupt in xAPIC mode (the supervisor does it for x2APIC).
    pub fn eoi_if_xapic() {
        if MODE.load(Ordering::Relaxed) == XAPIC {
            xapic_write(0xb0, 0);
        }
    }

    /// "tsc-deadline", "one-shot", "xapic-one-shot" (after the first arm),
    /// else "unset".
    pub fn mode_name() -> &'static str {
        match MODE.load(Ordering::Relaxed) {
            DEADLINE => "tsc-deadline",
            ONESHOT => "one-shot",
            XAPIC => "xapic-one-shot",
            _ => "unset",
        }
    }
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
        x2apic::arm(us)
    }

    fn monotonic_ns() -> u64 {
        crate::time::tsc_monotonic_ns()
    }

    fn wall_clock_ns() -> Option<u64> {
        crate::time::rtc_wall_clock_ns()
    }

    fn halt_for_us(us: u64) {
        // Arms the timer and halts in one supervisor call.
        if let Ok((value, target)) = x2apic::arm_value(us) {
            crate::sc::raw(kiln_abi::sc::HALT_FOR, value, target, 0);
        }
    }
}

/// The platform this image was built for.
#[cfg(not(kiln_linuxu))]
pub type Current = Pvh;

/// The platform this image was built for.
#[cfg(kiln_linuxu)]
pub type Current = crate::linuxu::LinuxProcess;
