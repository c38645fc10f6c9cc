//! The upcall frame: how an exception or interrupt reaches CPL3 code.
//!
//! Exceptions and interrupts enter the supervisor at CPL0 on the TSS stack.
//! The supervisor stores the interrupted context in the one per-CPU
//! [`UpcallFrame`], then enters the CPL3 upcall handler on its own stack,
//! with interrupts disabled and `rdi` pointing at the frame. The handler
//! either ends the guest or leaves through [`crate::sc::RESUME`], which
//! reloads the (possibly edited) frame.

/// Interrupted context handed to the CPL3 upcall handler.
///
/// The supervisor's assembly addresses the fields by the `OFF_*` constants
/// below; a unit test keeps them equal to the real offsets.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs, reason = "register names speak for themselves")]
pub struct UpcallFrame {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    /// Vector number (0–31 exceptions, 32–255 interrupts).
    pub vector: u64,
    /// Error code the CPU pushed, or 0.
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
    /// Faulting address for a page fault (CR2), else 0.
    pub cr2: u64,
}

macro_rules! offsets {
    ($($name:ident = $field:ident),* $(,)?) => {
        $(
            #[doc = concat!("Byte offset of `", stringify!($field), "` in [`UpcallFrame`].")]
            pub const $name: usize = core::mem::offset_of!(UpcallFrame, $field);
        )*
    };
}

offsets!(
    OFF_RAX = rax,
    OFF_RBX = rbx,
    OFF_RCX = rcx,
    OFF_RDX = rdx,
    OFF_RSI = rsi,
    OFF_RDI = rdi,
    OFF_RBP = rbp,
    OFF_R8 = r8,
    OFF_R9 = r9,
    OFF_R10 = r10,
    OFF_R11 = r11,
    OFF_R12 = r12,
    OFF_R13 = r13,
    OFF_R14 = r14,
    OFF_R15 = r15,
    OFF_VECTOR = vector,
    OFF_ERROR_CODE = error_code,
    OFF_RIP = rip,
    OFF_CS = cs,
    OFF_RFLAGS = rflags,
    OFF_RSP = rsp,
    OFF_SS = ss,
    OFF_CR2 = cr2,
);

/// First vector of device and timer interrupts.
pub const FIRST_INTERRUPT_VECTOR: u8 = 32;

/// Vector the supervisor wires for the local APIC timer.
pub const TIMER_VECTOR: u8 = 32;

/// Vectors the supervisor's IDT handles (0 up to this, exclusive).
pub const VECTORS: u8 = 48;

/// Short name and description of an exception vector, for crash reports.
pub fn exception_name(vector: u64) -> (&'static str, &'static str) {
    match vector {
        0 => ("#DE", "divide error"),
        1 => ("#DB", "debug"),
        2 => ("NMI", "non-maskable interrupt"),
        3 => ("#BP", "breakpoint"),
        4 => ("#OF", "overflow"),
        5 => ("#BR", "bound range exceeded"),
        6 => ("#UD", "invalid opcode"),
        7 => ("#NM", "device not available"),
        8 => ("#DF", "double fault"),
        10 => ("#TS", "invalid TSS"),
        11 => ("#NP", "segment not present"),
        12 => ("#SS", "stack-segment fault"),
        13 => ("#GP", "general protection fault"),
        14 => ("#PF", "page fault"),
        16 => ("#MF", "x87 floating-point exception"),
        17 => ("#AC", "alignment check"),
        18 => ("#MC", "machine check"),
        19 => ("#XM", "SIMD floating-point exception"),
        20 => ("#VE", "virtualization exception"),
        21 => ("#CP", "control protection exception"),
        9 | 15 | 22..=31 => ("#??", "reserved exception"),
        _ => ("IRQ", "interrupt"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_is_packed_u64s_in_declared_order() {
        assert_eq!(core::mem::size_of::<UpcallFrame>(), 23 * 8);
        assert_eq!(OFF_RAX, 0);
        assert_eq!(OFF_R15, 14 * 8);
        assert_eq!(OFF_VECTOR, 15 * 8);
        assert_eq!(OFF_RIP, 17 * 8);
        assert_eq!(OFF_SS, 21 * 8);
        assert_eq!(OFF_CR2, 22 * 8);
    }

    #[test]
    fn names_cover_common_faults() {
        assert_eq!(exception_name(14).0, "#PF");
        assert_eq!(exception_name(13).1, "general protection fault");
        assert_eq!(exception_name(9).0, "#??");
        assert_eq!(exception_name(40).0, "IRQ");
    }
}
