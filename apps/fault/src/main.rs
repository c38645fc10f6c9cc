//! fault: raises a CPU exception on purpose, to show the crash report.
//!
//! The first argument picks it: `null` (default, page fault reading
//! address 0), `ud` (invalid opcode), `gp` (privileged instruction), `de`
//! (divide error), `nested` (a fault inside an exception handler),
//! `supervisor` (a fault at CPL0; VM platforms), `resume` (a handler
//! resuming into a non-canonical address), `syscall` (a raw Linux system
//! call: a sandbox violation on linuxu, `-ENOSYS` on VMs), `mmio` (reads
//! a VM address with no RAM forever: the VMM stops the loop), `stack`
//! (unbounded recursion: a stack overflow), `deadlock` (every thread
//! waits on another: reported as a panic).
#![cfg_attr(kiln_guest, no_std)]
#![no_main]

use kiln_rt::hal::{provoke, upcall};

kiln_rt::main!(
    main,
    heap = kiln_alloc_bump::BumpHeap,
    sched = kiln_sched_coop::Cooperative
);

fn fault_again(_: &mut upcall::UpcallFrame) {
    provoke::null_read();
}

fn main(args: &[&str]) -> i32 {
    let kind = args.first().copied().unwrap_or("null");
    kiln_rt::println!("provoking: {kind}");
    match kind {
        "null" => {
            provoke::null_read();
        }
        "ud" => provoke::invalid_opcode(),
        "gp" => provoke::privileged_instruction(),
        "de" => provoke::divide_error(),
        "nested" => {
            if upcall::register(6, fault_again).is_err() {
                return 2;
            }
            provoke::invalid_opcode();
        }
        "supervisor" => provoke::supervisor_fault(),
        "resume" => provoke::bad_resume(),
        "mmio" => provoke::unhandled_mmio_loop(),
        "deadlock" => {
            let (tx, rx) = kiln_rt::thread::sync::channel::<u8>();
            let waiter = kiln_rt::thread::spawn(move || rx.recv());
            if let Ok(w) = waiter {
                w.join(); // nobody ever sends: every thread waits
            }
            drop(tx);
        }
        "stack" => {
            kiln_rt::println!("{}", provoke::stack_overflow(0));
        }
        "syscall" => {
            kiln_rt::println!("syscall returned {}", provoke::forbidden_syscall());
            return 0;
        }
        other => {
            kiln_rt::println!(
                "unknown fault kind {other:?} (use null, ud, gp, de, nested, supervisor, resume, syscall, mmio, stack or deadlock)"
            );
            return 2;
        }
    }
    kiln_rt::println!("the fault did not stop the guest");
    1
}
