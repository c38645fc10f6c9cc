//! ktest: Kiln's in-guest test runner. Lists every crate's suite, runs
//! those whose names contain one of the arguments (all without arguments),
//! and exits with the number of failures. `kiln test` builds and boots it.
#![cfg_attr(kiln_guest, no_std)]
#![no_main]

use kiln_ktest::Suite;

kiln_rt::main!(
    main,
    heap = kiln_alloc_tlsf::TlsfHeap,
    sched = kiln_sched_preempt::Preemptive
);

/// Every suite, lowest layer first.
const SUITES: &[Suite] = &[
    kiln_rt::hal::selftest::SUITE,
    kiln_rt::hal::time::ktests::SUITE,
    kiln_rt::testing::ktests::SUITE,
    kiln_alloc_bump::ktests::SUITE,
    kiln_alloc_buddy::ktests::SUITE,
    kiln_alloc_tlsf::ktests::SUITE,
    kiln_sched_coop::ktests::COMMON,
    kiln_sched_coop::ktests::SUITE,
    kiln_sched_preempt::ktests::COMMON,
    kiln_sched_preempt::ktests::SUITE,
    kiln_net::ktests::SUITE,
];

fn main(args: &[&str]) -> i32 {
    let summary = kiln_ktest::run(
        SUITES,
        args,
        &mut kiln_rt::testing::env(),
        kiln_rt::testing::print,
    );
    i32::from(summary.status())
}
