//! selftest: runs the supervisor's in-guest tests (`kiln_hal::selftest`)
//! and exits with the number of failures.
#![cfg_attr(kiln_guest, no_std)]
#![no_main]

kiln_rt::main!(main, heap = kiln_alloc_bump::BumpHeap);

fn print(args: core::fmt::Arguments<'_>) {
    kiln_rt::print!("{args}");
}

#[cfg(kiln_guest)]
fn main(_args: &[&str]) -> i32 {
    let scratch = match kiln_rt::memory::alloc_frames(2) {
        Ok(addr) => addr,
        Err(e) => {
            kiln_rt::println!("selftest: no scratch pages: {e}");
            return 1;
        }
    };
    kiln_rt::hal::selftest::run_all(print, scratch) as i32
}

#[cfg(not(kiln_guest))]
fn main(_args: &[&str]) -> i32 {
    print(format_args!("selftest runs only in a guest\n"));
    1
}
