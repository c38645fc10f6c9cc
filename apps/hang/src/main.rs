//! hang: never exits, to show the timeout path. `halt` (default) idles the
//! CPU waiting for an interrupt that never comes; `busy` spins at full speed.
#![cfg_attr(kiln_guest, no_std)]
#![no_main]

kiln_rt::main!(main, heap = kiln_alloc_bump::BumpHeap);

fn main(args: &[&str]) -> i32 {
    let busy = args.first() == Some(&"busy");
    kiln_rt::println!(
        "spinning forever ({})",
        if busy { "busy" } else { "halted" }
    );
    loop {
        if busy {
            core::hint::spin_loop();
        } else {
            kiln_rt::hal::sc::halt();
        }
    }
}
