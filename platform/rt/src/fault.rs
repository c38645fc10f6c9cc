//! Crash reports for CPU exceptions nobody handled, and the panic handler.
//!
//! A report names the exception, the error code (decoded for page
//! faults), `rip`, `cr2`, the registers and the top stack words, then the
//! guest exits with [`kiln_abi::exit::FAULT`]. A panic prints
//! `kiln: panicked at FILE:LINE:COL:` and the message, and exits with
//! [`kiln_abi::exit::PANIC`]; a panic while panicking exits at once.

use core::sync::atomic::{AtomicBool, Ordering};
use kiln_abi::upcall::{UpcallFrame, exception_name};

use crate::println;

/// Words of the interrupted stack shown in a report.
const STACK_WORDS: u64 = 4;

/// Describes a page-fault error code.
pub fn page_fault_cause(error_code: u64) -> &'static str {
    let present = error_code & 1 != 0;
    let write = error_code & 2 != 0;
    let fetch = error_code & 16 != 0;
    match (present, fetch, write) {
        (_, true, _) if present => "instruction fetch from a non-executable page",
        (_, true, _) => "instruction fetch from an unmapped page",
        (true, false, true) => "write to a read-only or supervisor page",
        (true, false, false) => "read of a supervisor page",
        (false, false, true) => "write to an unmapped page",
        (false, false, false) => "read of an unmapped page",
    }
}

/// Prints the crash report for `frame` (no exit).
pub fn print_report(frame: &UpcallFrame) {
    let (short, long) = exception_name(frame.vector);
    println!(
        "\nkiln: CPU exception {short} ({long}), vector {}, error code {:#x}",
        frame.vector, frame.error_code
    );
    let mut overflowed = false;
    if frame.vector == 14 {
        println!(
            "kiln:   {} at address {:#x}",
            page_fault_cause(frame.error_code),
            frame.cr2
        );
        if frame.cr2 < kiln_abi::PAGE_SIZE {
            println!("kiln:   (a null pointer dereference)");
        }
        if let Some(stack) = kiln_hal::paging::guard_page_of(frame.cr2) {
            println!("kiln:   stack overflow: the {stack} stack ran into its guard page");
            overflowed = true;
        } else if let Some(thread) = crate::thread::guard_owner(frame.cr2) {
            println!("kiln:   stack overflow: thread {thread}'s stack ran into its guard page");
            overflowed = true;
        } else if cfg!(kiln_linuxu)
            && frame.cr2 < frame.rsp.saturating_add(4096)
            && frame.rsp - frame.cr2.min(frame.rsp) < 65536
        {
            // linuxu: the kernel's guard gap below the process stack.
            println!("kiln:   stack overflow: the stack ran into its guard gap");
            overflowed = true;
        }
    }
    println!(
        "kiln:   rip={:#018x} rsp={:#018x} rflags={:#x}",
        frame.rip, frame.rsp, frame.rflags
    );
    println!(
        "kiln:   rax={:#x} rbx={:#x} rcx={:#x} rdx={:#x} rsi={:#x} rdi={:#x} rbp={:#x}",
        frame.rax, frame.rbx, frame.rcx, frame.rdx, frame.rsi, frame.rdi, frame.rbp
    );
    println!(
        "kiln:   r8={:#x} r9={:#x} r10={:#x} r11={:#x} r12={:#x} r13={:#x} r14={:#x} r15={:#x}",
        frame.r8, frame.r9, frame.r10, frame.r11, frame.r12, frame.r13, frame.r14, frame.r15
    );
    if overflowed {
        println!("kiln:   (stack words not shown: the stack pointer is at the guard)");
        return;
    }
    for i in 0..STACK_WORDS {
        let addr = frame.rsp.wrapping_add(i * 8);
        match read_stack_word(addr) {
            Some(word) => println!("kiln:   [rsp+{:#04x}] {word:#018x}", i * 8),
            None => {
                println!("kiln:   [rsp+{:#04x}] (not readable)", i * 8);
                break;
            }
        }
    }
}

/// Reads a word of the interrupted stack if it lies in the image's RAM.
fn read_stack_word(addr: u64) -> Option<u64> {
    if cfg!(kiln_linuxu) {
        if !addr.is_multiple_of(8) || !kiln_hal::linuxu::readable(addr) {
            return None;
        }
        // SAFETY: on linuxu the address lies in the initial stack or the
        // guest RAM mapping (checked above), both mapped readable.
        return Some(unsafe { core::ptr::read_volatile(addr as *const u64) });
    }
    let mem = crate::memory::stats();
    let in_image = addr >= kiln_abi::IMAGE_BASE + kiln_abi::SUP_PAGES * kiln_abi::PAGE_SIZE
        && addr.checked_add(8)? <= mem.range_start + mem.range_bytes;
    if !addr.is_multiple_of(8) || !in_image {
        return None;
    }
    // SAFETY: the address is 8-aligned and lies between the end of the
    // supervisor and the end of the managed RAM range: identity-mapped,
    // user-readable RAM (image or free memory), so the read cannot fault.
    Some(unsafe { core::ptr::read_volatile(addr as *const u64) })
}

/// The fault hook: report and exit.
pub fn report(frame: &UpcallFrame) -> ! {
    print_report(frame);
    crate::exit(kiln_abi::exit::FAULT)
}

static PANICKING: AtomicBool = AtomicBool::new(false);

#[cfg(kiln_guest)]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    if PANICKING.swap(true, Ordering::SeqCst) {
        crate::exit(kiln_abi::exit::PANIC);
    }
    match info.location() {
        Some(l) => println!(
            "\nkiln: panicked at {}:{}:{}:\n{}",
            l.file(),
            l.line(),
            l.column(),
            info.message()
        ),
        None => println!("\nkiln: panicked:\n{}", info.message()),
    }
    crate::exit(kiln_abi::exit::PANIC)
}

/// Whether a panic is in progress (for code that must not print then).
pub fn panicking() -> bool {
    PANICKING.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_fault_causes() {
        assert_eq!(page_fault_cause(0b0_0100), "read of an unmapped page");
        assert_eq!(page_fault_cause(0b0_0110), "write to an unmapped page");
        assert_eq!(
            page_fault_cause(0b0_0111),
            "write to a read-only or supervisor page"
        );
        assert_eq!(
            page_fault_cause(0b1_0101),
            "instruction fetch from a non-executable page"
        );
        assert_eq!(
            page_fault_cause(0b1_0100),
            "instruction fetch from an unmapped page"
        );
    }
}
