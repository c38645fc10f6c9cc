//! Exceptions and interrupts, delivered to CPL3 handlers.
//!
//! The supervisor saves the interrupted context in the per-CPU
//! [`UpcallFrame`] and enters `kiln_upcall_entry` below on a dedicated
//! stack with interrupts off. That entry runs the handler registered for
//! the vector ([`register`]); an exception with no handler goes to the
//! fault hook (the runtime's crash report, [`set_fault_hook`]); an
//! interrupt with no handler is dropped. When the handler returns, the
//! (possibly edited) frame is resumed through the supervisor.
//!
//! Handlers run with interrupts off and must not block, allocate or take
//! locks that interrupted code may hold. A CPU exception inside a handler
//! ends the guest with [`kiln_abi::exit::DOUBLE_FAULT`].

use core::sync::atomic::{AtomicUsize, Ordering};
use kiln_abi::upcall::VECTORS;
pub use kiln_abi::upcall::{UpcallFrame, exception_name};

/// A handler for one vector; it may edit the frame (e.g. move `rip`).
pub type Handler = fn(&mut UpcallFrame);

/// What runs for an exception nobody handles; it must end the guest.
pub type FaultHook = fn(&UpcallFrame) -> !;

/// Why a handler could not be registered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpcallError {
    /// The vector is outside the supervisor's IDT (0..VECTORS).
    VectorOutOfRange(u8),
    /// Another handler is registered for the vector.
    Busy(u8),
}

impl core::fmt::Display for UpcallError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::VectorOutOfRange(v) => {
                write!(f, "vector {v} is outside the IDT (0..{VECTORS})")
            }
            Self::Busy(v) => write!(f, "vector {v} already has a handler"),
        }
    }
}

/// Handler per vector, stored as the address of a [`Handler`] (0 = none).
static HANDLERS: [AtomicUsize; VECTORS as usize] =
    [const { AtomicUsize::new(0) }; VECTORS as usize];
/// The fault hook, stored as the address of a [`FaultHook`] (0 = none).
static FAULT_HOOK: AtomicUsize = AtomicUsize::new(0);

/// Registers `handler` for `vector`.
pub fn register(vector: u8, handler: Handler) -> Result<(), UpcallError> {
    let slot = HANDLERS
        .get(usize::from(vector))
        .ok_or(UpcallError::VectorOutOfRange(vector))?;
    slot.compare_exchange(0, handler as usize, Ordering::AcqRel, Ordering::Acquire)
        .map(|_| ())
        .map_err(|_| UpcallError::Busy(vector))
}

/// Removes the handler of `vector`, if any.
pub fn unregister(vector: u8) {
    if let Some(slot) = HANDLERS.get(usize::from(vector)) {
        slot.store(0, Ordering::Release);
    }
}

/// Sets the hook that reports unhandled exceptions (replacing any earlier one).
pub fn set_fault_hook(hook: FaultHook) {
    FAULT_HOOK.store(hook as usize, Ordering::Release);
}

fn handler(vector: u64) -> Option<Handler> {
    let raw = HANDLERS.get(vector as usize)?.load(Ordering::Acquire);
    if raw == 0 {
        return None;
    }
    // SAFETY: HANDLERS only ever holds 0 or a value made from a `Handler`
    // by `register` (`handler as usize`), so this restores that same
    // function pointer.
    Some(unsafe { core::mem::transmute::<usize, Handler>(raw) })
}

/// Runs the handler for the vector in `frame`; returns when the frame may be resumed.
pub fn dispatch(frame: &mut UpcallFrame) {
    if let Some(h) = handler(frame.vector) {
        h(frame);
        if frame.vector >= u64::from(kiln_abi::upcall::FIRST_INTERRUPT_VECTOR) {
            crate::platform::x2apic::eoi_if_xapic();
        }
    } else if frame.vector < u64::from(kiln_abi::upcall::FIRST_INTERRUPT_VECTOR) {
        let hook = FAULT_HOOK.load(Ordering::Acquire);
        if hook != 0 {
            // SAFETY: FAULT_HOOK only holds 0 or a `FaultHook` stored by
            // `set_fault_hook`.
            let hook = unsafe { core::mem::transmute::<usize, FaultHook>(hook) };
            hook(frame);
        }
        crate::sc::exit(kiln_abi::exit::FAULT);
    }
}

/// Leaves the upcall handler, resuming the context saved in the frame.
pub fn resume() -> ! {
    #[cfg(all(kiln_guest, not(kiln_linuxu)))]
    // SAFETY: kiln_upcall_fx holds the x87/SSE state the trampoline saved
    // with fxsave64 when this upcall began (16-byte aligned, 512 bytes);
    // restoring it and entering the supervisor's resume call in one asm
    // block means no compiled code can clobber it in between. If the resume
    // fails (bad rip) the call returns and we only print and exit.
    unsafe {
        core::arch::asm!(
            "fxrstor64 [rip + kiln_upcall_fx]",
            "int3",
            inlateout("rax") kiln_abi::sc::RESUME => _,
            lateout("rcx") _,
            lateout("r11") _,
        );
    }
    #[cfg(not(all(kiln_guest, not(kiln_linuxu))))]
    crate::sc::raw(kiln_abi::sc::RESUME, 0, 0, 0);
    // Only a non-canonical rip in the frame makes resume fail.
    crate::console::write(b"\nkiln: cannot resume: the upcall frame holds a non-canonical rip\n");
    crate::sc::exit(kiln_abi::exit::DOUBLE_FAULT)
}

/// CPL3 entry of every exception and interrupt (jumped to by the supervisor).
#[cfg(all(kiln_guest, not(kiln_linuxu)))]
#[unsafe(no_mangle)]
extern "C" fn kiln_upcall_entry(frame: *mut UpcallFrame) -> ! {
    // SAFETY: the supervisor passes the address of the per-CPU
    // `kiln_upcall_frame`, which is valid, aligned, and touched by nothing
    // else until `resume` (interrupts are off and there is one CPU).
    let frame = unsafe { &mut *frame };
    dispatch(frame);
    resume()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn skip_two(frame: &mut UpcallFrame) {
        frame.rip += 2;
    }

    #[test]
    fn registered_handler_runs_and_edits_the_frame() {
        register(45, skip_two).unwrap();
        assert_eq!(register(45, skip_two), Err(UpcallError::Busy(45)));
        let mut frame = UpcallFrame {
            vector: 45,
            rip: 0x1000,
            ..Default::default()
        };
        dispatch(&mut frame);
        assert_eq!(frame.rip, 0x1002);
        unregister(45);
        assert!(register(45, skip_two).is_ok());
        unregister(45);
    }

    #[test]
    fn vectors_outside_the_idt_are_refused() {
        assert_eq!(
            register(200, skip_two),
            Err(UpcallError::VectorOutOfRange(200))
        );
    }

    #[test]
    fn unhandled_interrupt_is_dropped() {
        let mut frame = UpcallFrame {
            vector: 47,
            ..Default::default()
        };
        dispatch(&mut frame);
        assert_eq!(frame.vector, 47);
    }
}
