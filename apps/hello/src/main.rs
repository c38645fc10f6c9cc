//! hello: prints `Hello from Kiln!`, then each argument on its own line.
//!
//! The parts list: the Kiln runtime and the bump heap (the smallest).
#![cfg_attr(kiln_guest, no_std)]
#![no_main]

kiln_rt::main!(main, heap = kiln_alloc_bump::BumpHeap);

fn main(args: &[&str]) -> i32 {
    kiln_rt::println!("Hello from Kiln!");
    for arg in args {
        kiln_rt::println!("{arg}");
    }
    0
}
