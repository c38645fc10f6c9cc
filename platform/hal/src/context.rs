//! Thread contexts: the CPL3 context switch and preemption stub.
//!
//! [`switch`] is a cooperative switch at a function-call boundary: it saves
//! the callee-saved registers, MXCSR and the x87 control word on the
//! current stack, stores the stack pointer, and resumes the other context
//! the same way (no trap, a few nanoseconds). [`Context::new_thread`] lays
//! out a fresh stack so the first switch to it calls an entry function.
//!
//! Preemption reuses the same switch: an interrupt handler that decides to
//! preempt calls [`preempt`] on the interrupted frame, which saves the whole
//! interrupted register state on the interrupted stack (below its red
//! zone) and redirects the frame to `kiln_preempt_stub`. Resumed there,
//! the thread saves its x87/SSE state, calls the `kiln_preempt_yield`
//! symbol (the scheduler's cooperative yield), and when it runs again
//! restores everything and returns to where it was interrupted, without a
//! trap (`ret 128` lands past the red zone). Nothing here knows threads;
//! the scheduler lives in `kiln-rt`.

use kiln_abi::upcall::UpcallFrame;

/// A suspended context: its stack pointer (everything else is on the stack).
#[derive(Debug, Default)]
#[repr(C)]
pub struct Context {
    rsp: u64,
}

/// Bytes a preempted thread's saved state takes below its red zone
/// (registers, then a 512-byte fxsave area, 64-byte aligned).
pub const PREEMPT_AREA_BYTES: u64 = 1024;
/// The System V red zone below the stack pointer.
const RED_ZONE: u64 = 128;

// Layout of the preemption save area (u64 slots), used by the stub.
const SLOT_RAX: u64 = 0;
const SLOT_RBX: u64 = 1;
const SLOT_RCX: u64 = 2;
const SLOT_RDX: u64 = 3;
const SLOT_RSI: u64 = 4;
const SLOT_RDI: u64 = 5;
const SLOT_RBP: u64 = 6;
const SLOT_R8: u64 = 7;
const SLOT_R9: u64 = 8;
const SLOT_R10: u64 = 9;
const SLOT_R11: u64 = 10;
const SLOT_R12: u64 = 11;
const SLOT_R13: u64 = 12;
const SLOT_R14: u64 = 13;
const SLOT_R15: u64 = 14;
const SLOT_RIP: u64 = 15;
const SLOT_RFLAGS: u64 = 16;
const SLOT_RSP: u64 = 17;
/// Offset of the fxsave area.
#[cfg_attr(
    not(kiln_guest),
    allow(dead_code, reason = "used by the guest-only stub")
)]
const FX_OFFSET: u64 = 256;

#[cfg(kiln_guest)]
core::arch::global_asm!(
    ".pushsection .text.kiln_context, \"ax\", @progbits",
    // kiln_context_switch(from: *mut Context, to: *const Context)
    ".globl kiln_context_switch",
    "kiln_context_switch:",
    "    push rbp",
    "    push rbx",
    "    push r12",
    "    push r13",
    "    push r14",
    "    push r15",
    "    sub rsp, 8",
    "    stmxcsr [rsp]",
    "    fnstcw [rsp + 4]",
    "    mov [rdi], rsp",
    "    mov rsp, [rsi]",
    "    ldmxcsr [rsp]",
    "    fldcw [rsp + 4]",
    "    add rsp, 8",
    "    pop r15",
    "    pop r14",
    "    pop r13",
    "    pop r12",
    "    pop rbx",
    "    pop rbp",
    "    ret",
    ".globl kiln_context_switch_end",
    "kiln_context_switch_end:",
    // First run of a new context: r12 = entry, r13 = argument.
    "kiln_thread_trampoline:",
    "    mov rdi, r13",
    "    and rsp, -16",
    "    call r12",
    "    ud2",
    // Preempted thread resumes here with rsp = rdi = its save area.
    ".globl kiln_preempt_stub",
    "kiln_preempt_stub:",
    "    fxsave64 [rsp + {fx}]",
    "    call kiln_preempt_yield",
    "    fxrstor64 [rsp + {fx}]",
    "    mov rax, rsp",
    "    mov rdx, [rax + {rsp_slot} * 8]",
    "    sub rdx, 144",          // rflags, rip just below the red zone
    "    mov rcx, [rax + {rflags} * 8]",
    "    mov [rdx], rcx",
    "    mov rcx, [rax + {rip} * 8]",
    "    mov [rdx + 8], rcx",
    "    mov rsp, rdx",
    "    mov rbx, [rax + {rbx} * 8]",
    "    mov rcx, [rax + {rcx} * 8]",
    "    mov rdx, [rax + {rdx} * 8]",
    "    mov rsi, [rax + {rsi} * 8]",
    "    mov rdi, [rax + {rdi} * 8]",
    "    mov rbp, [rax + {rbp} * 8]",
    "    mov r8, [rax + {r8} * 8]",
    "    mov r9, [rax + {r9} * 8]",
    "    mov r10, [rax + {r10} * 8]",
    "    mov r11, [rax + {r11} * 8]",
    "    mov r12, [rax + {r12} * 8]",
    "    mov r13, [rax + {r13} * 8]",
    "    mov r14, [rax + {r14} * 8]",
    "    mov r15, [rax + {r15} * 8]",
    "    mov rax, [rax + {rax} * 8]",
    "    popfq",
    "    ret 128",
    ".globl kiln_preempt_stub_end",
    "kiln_preempt_stub_end:",
    ".popsection",
    fx = const FX_OFFSET,
    rsp_slot = const SLOT_RSP,
    rflags = const SLOT_RFLAGS,
    rip = const SLOT_RIP,
    rax = const SLOT_RAX,
    rbx = const SLOT_RBX,
    rcx = const SLOT_RCX,
    rdx = const SLOT_RDX,
    rsi = const SLOT_RSI,
    rdi = const SLOT_RDI,
    rbp = const SLOT_RBP,
    r8 = const SLOT_R8,
    r9 = const SLOT_R9,
    r10 = const SLOT_R10,
    r11 = const SLOT_R11,
    r12 = const SLOT_R12,
    r13 = const SLOT_R13,
    r14 = const SLOT_R14,
    r15 = const SLOT_R15,
);

#[cfg(kiln_guest)]
unsafe extern "C" {
    fn kiln_context_switch(from: *mut Context, to: *const Context);
    fn kiln_thread_trampoline();
    fn kiln_preempt_stub();
    static kiln_preempt_stub_end: u8;
    static kiln_context_switch_end: u8;
}

impl Context {
    /// A context that, when first switched to, runs `entry(arg)` on the
    /// stack ending at `stack_top` (16-byte aligned). `entry` must never
    /// return.
    ///
    /// # Safety
    /// `[stack_top - 64, stack_top)` must be writable memory that this
    /// context will own as its stack until it is never switched to again.
    pub unsafe fn new_thread(stack_top: u64, entry: extern "C" fn(usize) -> !, arg: usize) -> Self {
        #[cfg(kiln_guest)]
        let trampoline = kiln_thread_trampoline as *const () as u64;
        #[cfg(not(kiln_guest))]
        let trampoline = 0u64;
        // Popped by the switch: [mxcsr | fcw], r15, r14, r13, r12, rbx, rbp, return.
        let words: [u64; 8] = [
            0x1f80 | (0x37f << 32),
            0,
            0,
            arg as u64,
            entry as *const () as u64,
            0,
            0,
            trampoline,
        ];
        let base = stack_top - 8 * (words.len() as u64 + 1);
        for (i, w) in words.iter().enumerate() {
            // SAFETY: the caller gives us the top of a writable stack; these
            // 72 bytes are inside it.
            unsafe { core::ptr::write((base + 8 * i as u64) as *mut u64, *w) };
        }
        Self { rsp: base }
    }
}

/// Saves the current context in `from` and resumes `to`; returns when
/// something switches back to `from`.
///
/// # Safety
/// `to` must be a context made by [`Context::new_thread`] or saved by an
/// earlier `switch`, whose stack is still alive, and not running; `from`
/// must stay valid while suspended.
pub unsafe fn switch(from: *mut Context, to: *const Context) {
    #[cfg(kiln_guest)]
    // SAFETY: forwarded from the caller.
    unsafe {
        kiln_context_switch(from, to)
    };
    #[cfg(not(kiln_guest))]
    let _ = (from, to);
}

/// Whether `rip` is inside code that must not be preempted (the switch and
/// the preemption stub keep state in registers and on a half-built stack).
pub fn in_critical_code(rip: u64) -> bool {
    #[cfg(kiln_guest)]
    {
        let switch =
            kiln_context_switch as *const () as u64..(&raw const kiln_context_switch_end) as u64;
        let stub = kiln_preempt_stub as *const () as u64..(&raw const kiln_preempt_stub_end) as u64;
        switch.contains(&rip) || stub.contains(&rip)
    }
    #[cfg(not(kiln_guest))]
    {
        let _ = rip;
        false
    }
}

/// Redirects the interrupted context in `frame` into the preemption stub,
/// saving its registers on its own stack below the red zone.
///
/// # Safety
/// `frame` is the frame of an interrupt that hit CPL3 code running on a
/// normal thread stack with at least [`PREEMPT_AREA_BYTES`] + 256 free
/// bytes below its stack pointer, and not [`in_critical_code`].
pub unsafe fn preempt(frame: &mut UpcallFrame) {
    let area = (frame.rsp - RED_ZONE - 16 - PREEMPT_AREA_BYTES) & !63;
    let slots: [(u64, u64); 18] = [
        (SLOT_RAX, frame.rax),
        (SLOT_RBX, frame.rbx),
        (SLOT_RCX, frame.rcx),
        (SLOT_RDX, frame.rdx),
        (SLOT_RSI, frame.rsi),
        (SLOT_RDI, frame.rdi),
        (SLOT_RBP, frame.rbp),
        (SLOT_R8, frame.r8),
        (SLOT_R9, frame.r9),
        (SLOT_R10, frame.r10),
        (SLOT_R11, frame.r11),
        (SLOT_R12, frame.r12),
        (SLOT_R13, frame.r13),
        (SLOT_R14, frame.r14),
        (SLOT_R15, frame.r15),
        (SLOT_RIP, frame.rip),
        (SLOT_RFLAGS, frame.rflags),
        (SLOT_RSP, frame.rsp),
    ];
    for (slot, value) in slots {
        // SAFETY: the caller guarantees the area below the red zone is free
        // stack of the interrupted thread (the ABI lets nothing live there).
        unsafe { core::ptr::write((area + slot * 8) as *mut u64, value) };
    }
    #[cfg(kiln_guest)]
    {
        frame.rip = kiln_preempt_stub as *const () as u64;
    }
    frame.rsp = area;
    frame.rdi = area;
    // The interrupted code may have been inside `std; rep movsb; cld`
    // (memmove): the stub and the scheduler must run with the ABI's DF=0.
    // The saved RFLAGS slot brings the interrupted value back.
    frame.rflags &= !RFLAGS_DF;
}

/// RFLAGS' direction flag.
const RFLAGS_DF: u64 = 1 << 10;

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: a preemption inside a backwards copy ran the scheduler
    /// with DF=1, so its own copies went backwards and corrupted memory.
    #[test]
    fn preemption_clears_the_direction_flag_and_saves_the_original() {
        let mut stack = alloc::vec![0u64; 1024];
        let top = stack.as_mut_ptr() as u64 + 1024 * 8;
        let mut frame = kiln_abi::upcall::UpcallFrame {
            rsp: top,
            rflags: 0x602,
            rax: 11,
            ..Default::default()
        };
        // SAFETY: `stack` is 8 KiB of free memory below `top`, more than
        // the save area plus the red zone.
        unsafe { preempt(&mut frame) };
        assert_eq!(frame.rflags, 0x202, "DF must be clear for the stub");
        let area = frame.rsp;
        assert!(area < top - RED_ZONE && area >= top - 8 * 1024);
        // SAFETY: `preempt` just wrote these slots inside `stack`.
        let (flags, rax) = unsafe {
            (
                core::ptr::read((area + SLOT_RFLAGS * 8) as *const u64),
                core::ptr::read((area + SLOT_RAX * 8) as *const u64),
            )
        };
        assert_eq!((flags, rax), (0x602, 11));
    }
}
