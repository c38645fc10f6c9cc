//! bench-core: measures, inside the guest, the cost of a context switch
//! (two threads yielding to each other), of creating and joining a thread,
//! and the throughput of each heap allocator (allocate/free of mixed sizes
//! in a 16 MiB region). Prints `bench: NAME VALUE UNIT` lines that
//! bench/core.sh collects; timings come from the guest's monotonic clock.
#![cfg_attr(kiln_guest, no_std)]
#![no_main]

extern crate alloc;

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::alloc::Layout;

use kiln_alloc::HeapAllocator;
use kiln_rt::hal::time::now_ns;
use kiln_rt::println;
use kiln_rt::thread;

kiln_rt::main!(
    main,
    heap = kiln_alloc_tlsf::TlsfHeap,
    sched = kiln_sched_coop::Cooperative
);

fn context_switch_ns() -> f64 {
    const ROUNDS: u64 = 20_000;
    let other = thread::spawn(|| {
        for _ in 0..ROUNDS {
            thread::yield_now();
        }
    });
    let start = now_ns();
    for _ in 0..ROUNDS {
        thread::yield_now();
    }
    let elapsed = now_ns() - start;
    if let Ok(h) = other {
        h.join();
    }
    // Each round is two switches (to the other thread and back).
    elapsed as f64 / (2 * ROUNDS) as f64
}

fn create_join_us() -> f64 {
    const ROUNDS: u64 = 300;
    let start = now_ns();
    for i in 0..ROUNDS {
        if let Ok(h) = thread::spawn(move || i) {
            h.join();
        }
    }
    (now_ns() - start) as f64 / ROUNDS as f64 / 1000.0
}

/// Millions of allocate+free pairs per second for heap `H` (mixed sizes,
/// a window of 64 live blocks).
fn alloc_mops<H: HeapAllocator + Default>() -> f64 {
    const BYTES: usize = 16 << 20;
    const OPS: usize = 200_000;
    let Some(memory) = (kiln_rt::testing::env().memory)(BYTES) else {
        return 0.0;
    };
    let Some(meta) = (kiln_rt::testing::env().words)(H::metadata_words(BYTES)) else {
        return 0.0;
    };
    let mut heap = H::default();
    if heap.init(memory, meta).is_err() {
        return 0.0;
    }
    let sizes = [16usize, 24, 64, 100, 256, 512, 1000, 4096];
    let mut live: Vec<(usize, Layout)> = Vec::with_capacity(64);
    let start = now_ns();
    for i in 0..OPS {
        let layout =
            Layout::from_size_align(sizes[i % sizes.len()], 8).unwrap_or(Layout::new::<u64>());
        if live.len() == 64 {
            let (a, l) = live.swap_remove((i * 7) % 64);
            heap.dealloc(a, l);
        }
        if let Some(a) = heap.alloc(layout) {
            live.push((a, layout));
        }
    }
    for (a, l) in live.drain(..) {
        heap.dealloc(a, l);
    }
    let secs = (now_ns() - start) as f64 / 1e9;
    OPS as f64 / secs / 1e6
}

fn main(_args: &[&str]) -> i32 {
    let platform = kiln_rt::testing::env().platform;
    println!("bench: platform {platform}");
    let _ = now_ns();
    println!("bench: tsc_khz {} kHz", kiln_rt::hal::time::tsc_per_ms());
    println!("bench: context_switch {:.0} ns", context_switch_ns());
    println!("bench: thread_create_join {:.1} us", create_join_us());
    let _ = thread::use_scheduler(Box::new(kiln_sched_preempt::Preemptive::default()));
    println!(
        "bench: context_switch_preemptive_sched {:.0} ns",
        context_switch_ns()
    );
    println!("bench: timer_mode {} -", kiln_rt::hal::timer::mode());
    println!(
        "bench: alloc_tlsf {:.2} Mops/s",
        alloc_mops::<kiln_alloc_tlsf::TlsfHeap>()
    );
    println!(
        "bench: alloc_buddy {:.2} Mops/s",
        alloc_mops::<kiln_alloc_buddy::BuddyHeap>()
    );
    println!(
        "bench: alloc_bump {:.2} Mops/s",
        alloc_mops::<kiln_alloc_bump::BumpHeap>()
    );
    0
}
