//! selftest: runs the supervisor's in-guest tests (`kiln_hal::selftest`)
//! and exits with the number of failures. Arguments filter tests by name.
#![cfg_attr(kiln_guest, no_std)]
#![no_main]

kiln_rt::main!(main, heap = kiln_alloc_bump::BumpHeap);

#[cfg(kiln_guest)]
fn main(args: &[&str]) -> i32 {
    let suites = [kiln_rt::hal::selftest::SUITE];
    let summary = kiln_ktest::run(
        &suites,
        args,
        &mut kiln_rt::testing::env(),
        kiln_rt::testing::print,
    );
    i32::from(summary.status())
}

#[cfg(not(kiln_guest))]
fn main(_args: &[&str]) -> i32 {
    1
}
