//! Deliberate CPU exceptions, for tests of the fault paths.
//!
//! Each function raises one exception without touching memory the program
//! owns: the page at address 0 is never mapped (the supervisor's page
//! tables leave it out), `ud2` is defined to fault, `hlt` faults at CPL3.
//! With no handler registered the runtime prints a crash report and the
//! guest exits with [`kiln_abi::exit::FAULT`]; with a handler that moves
//! `rip` past the instruction (length given in each doc), execution goes on.

/// Reads address 0 (`mov rax, [0]`, 8 bytes): a page fault.
pub fn null_read() -> u64 {
    let value: u64;
    // SAFETY: page 0 is never mapped, so the load faults instead of reading
    // memory; if a handler resumes past it, rax holds whatever it set.
    unsafe {
        core::arch::asm!("mov rax, qword ptr [0]", out("rax") value, options(nostack, readonly))
    };
    value
}

/// Executes `ud2` (2 bytes): an invalid-opcode exception.
pub fn invalid_opcode() {
    // SAFETY: ud2 only raises #UD; it reads and writes nothing.
    unsafe { core::arch::asm!("ud2", options(nomem, nostack)) };
}

/// Executes `hlt` at CPL3 (1 byte): a general-protection fault.
pub fn privileged_instruction() {
    // SAFETY: hlt at CPL3 raises #GP before doing anything.
    unsafe { core::arch::asm!("hlt", options(nomem, nostack)) };
}

/// Executes `int3` with `rax` = 0 (1 byte): a breakpoint exception.
///
/// Execution resumes after it when a handler returns.
pub fn breakpoint() {
    // SAFETY: int3 with rax outside the supervisor-call range is a plain
    // breakpoint trap; it reads and writes nothing.
    unsafe { core::arch::asm!("int3", in("rax") 0u64, options(nomem, nostack)) };
}

/// Divides by zero (`div rcx`, 3 bytes): a divide error.
pub fn divide_error() {
    // SAFETY: div by a zero register raises #DE; registers it would write
    // are declared clobbered.
    unsafe {
        core::arch::asm!("div rcx", in("rcx") 0u64, inout("rax") 1u64 => _, inout("rdx") 0u64 => _,
            options(nomem, nostack));
    }
}

/// Makes the supervisor execute `ud2` at CPL0: the "fault in the
/// supervisor" report, ending the guest with
/// [`kiln_abi::exit::SUPERVISOR_FAULT`].
pub fn supervisor_fault() -> ! {
    crate::sc::raw(kiln_abi::sc::FAULT_TEST, 0, 0, 0);
    crate::sc::exit(kiln_abi::exit::SUPERVISOR_FAULT)
}

/// Returns from an exception handler into a non-canonical `rip`: the
/// supervisor refuses the resume and the guest ends with
/// [`kiln_abi::exit::DOUBLE_FAULT`].
pub fn bad_resume() {
    fn corrupt(frame: &mut crate::upcall::UpcallFrame) {
        frame.rip = 0x8000_0000_0000_0000;
    }
    if crate::upcall::register(3, corrupt).is_ok() {
        breakpoint();
    }
}

/// Makes the Linux system call `getpid` (39) directly.
///
/// On linuxu the sandbox forbids it: the guest reports a sandbox violation
/// naming call 39 and exits with [`kiln_abi::exit::SANDBOX_VIOLATION`]. On
/// PVH it returns `-ENOSYS` (no Linux ABI yet).
pub fn forbidden_syscall() -> i64 {
    let ret: i64;
    // SAFETY: getpid reads and writes no memory; rcx and r11 are clobbered.
    unsafe {
        core::arch::asm!("syscall", inlateout("rax") 39i64 => ret, lateout("rcx") _, lateout("r11") _,
            options(nostack));
    }
    ret
}

/// Reads, forever, an address inside the identity map where the VM has
/// no RAM (512 MiB; guests smaller than that): every read is an MMIO exit
/// nothing answers, which the embedded VMM must stop as a loop.
pub fn unhandled_mmio_loop() -> ! {
    loop {
        let value: u64;
        // SAFETY: the address is mapped (identity map) but backed by no
        // guest RAM, so the read is an MMIO exit answered with all ones; it
        // touches no memory the program owns.
        unsafe {
            core::arch::asm!("mov rax, qword ptr [rdi]", in("rdi") 0x2000_0000u64, out("rax") value,
                options(nostack, readonly));
        }
        core::hint::black_box(value);
    }
}

/// Recurses until the stack overflows: the guard page below the stack
/// faults and the crash report calls it a stack overflow.
#[expect(unconditional_recursion, reason = "overflowing the stack is the point")]
pub fn stack_overflow(depth: u64) -> u64 {
    let frame = core::hint::black_box([depth; 32]);
    stack_overflow(depth + 1).wrapping_add(frame[(depth % 32) as usize])
}
