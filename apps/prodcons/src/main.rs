//! prodcons: three producers send numbered items over a channel, sleeping
//! between items; one consumer adds them up; a fourth thread spins on its
//! own work. The first argument picks the scheduler: `coop` (the spinner
//! yields now and then) or `preempt` (the default; the spinner never
//! yields and is preempted). Prints the total and exits 0 when it is right.
#![cfg_attr(kiln_guest, no_std)]
#![no_main]

extern crate alloc;

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering};

use kiln_rt::println;
use kiln_rt::thread::{self, sync};

kiln_rt::main!(
    main,
    heap = kiln_alloc_tlsf::TlsfHeap,
    sched = kiln_sched_preempt::Preemptive
);

const PRODUCERS: u64 = 3;
const ITEMS: u64 = 20;

static DONE: AtomicBool = AtomicBool::new(false);

fn main(args: &[&str]) -> i32 {
    let cooperative = args.first() == Some(&"coop");
    if cooperative
        && let Err(e) = thread::use_scheduler(Box::new(kiln_sched_coop::Cooperative::default()))
    {
        println!("prodcons: {e}");
        return 1;
    }
    println!(
        "prodcons: {} scheduler",
        if cooperative {
            "cooperative"
        } else {
            "preemptive"
        }
    );
    let (tx, rx) = sync::channel::<u64>();
    let mut handles = Vec::new();
    for p in 0..PRODUCERS {
        let tx = tx.clone();
        handles.push(thread::spawn(move || {
            for i in 0..ITEMS {
                tx.send(p * 1000 + i);
                thread::sleep_ms(1 + p);
            }
        }));
    }
    drop(tx);
    let spinner = thread::spawn(move || {
        let mut spins = 0u64;
        while !DONE.load(Ordering::SeqCst) {
            spins += 1;
            if cooperative && spins.is_multiple_of(10_000) {
                thread::yield_now();
            }
            core::hint::spin_loop();
        }
        spins
    });
    let consumer = thread::spawn(move || {
        let (mut count, mut sum) = (0u64, 0u64);
        while let Some(item) = rx.recv() {
            count += 1;
            sum += item;
        }
        (count, sum)
    });
    for h in handles.into_iter().flatten() {
        h.join();
    }
    let Ok(consumer) = consumer else { return 1 };
    let (count, sum) = consumer.join();
    DONE.store(true, Ordering::SeqCst);
    let spins = spinner.map(|s| s.join()).unwrap_or(0);
    let expected: u64 = (0..PRODUCERS)
        .map(|p| (0..ITEMS).map(|i| p * 1000 + i).sum::<u64>())
        .sum();
    println!(
        "prodcons: consumed {count} items, sum {sum} (expected {expected}); the spinner spun {} times",
        if spins > 0 { "many" } else { "zero" }
    );
    if count == PRODUCERS * ITEMS && sum == expected && spins > 0 {
        0
    } else {
        1
    }
}
