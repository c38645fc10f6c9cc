//! panic: panics on purpose, to show the panic path (message, location,
//! exit status 101). With an argument, panics with that message.
#![cfg_attr(kiln_guest, no_std)]
#![no_main]

kiln_rt::main!(main, heap = kiln_alloc_bump::BumpHeap);

fn main(args: &[&str]) -> i32 {
    kiln_rt::println!("about to panic");
    match args.first() {
        Some(message) => panic!("{message}"),
        None => panic!("deliberate panic from the panic test app"),
    }
}
