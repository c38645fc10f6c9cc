//! # kiln-sched-preempt — preemptive round robin
//!
//! [`Preemptive`] runs ready threads in FIFO order and gives each a time
//! slice ([`DEFAULT_SLICE_US`], or [`Preemptive::with_slice_us`]); when the
//! timer finds the running thread past its slice and another thread ready,
//! the runtime preempts it. A spinning thread cannot starve the others.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

use kiln_sched::{ReadyQueue, Scheduler, ThreadId};

/// Default time slice: 5 ms.
pub const DEFAULT_SLICE_US: u64 = 5_000;

/// Round robin with time slices.
#[derive(Debug)]
pub struct Preemptive {
    ready: ReadyQueue,
    slice_us: u64,
}

impl Default for Preemptive {
    fn default() -> Self {
        Self::with_slice_us(DEFAULT_SLICE_US)
    }
}

impl Preemptive {
    /// A scheduler with slices of `slice_us` (at least 100 us).
    pub fn with_slice_us(slice_us: u64) -> Self {
        Self {
            ready: ReadyQueue::default(),
            slice_us: slice_us.max(100),
        }
    }
}

impl Scheduler for Preemptive {
    fn name(&self) -> &'static str {
        "preemptive"
    }

    fn enqueue(&mut self, thread: ThreadId) {
        self.ready.push(thread);
    }

    fn pick_next(&mut self) -> Option<ThreadId> {
        self.ready.pop()
    }

    fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    fn time_slice_us(&self) -> Option<u64> {
        Some(self.slice_us)
    }

    fn should_preempt(&self, _: ThreadId, ran_us: u64) -> bool {
        ran_us >= self.slice_us && !self.ready.is_empty()
    }
}

/// In-guest tests (feature `ktest`): the common thread suite under this
/// scheduler, plus its own promise: a spinning thread cannot starve others.
#[cfg(feature = "ktest")]
pub mod ktests {
    use alloc::sync::Arc;
    use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use kiln_ktest::{Env, Outcome, Suite, Test, check};
    use kiln_rt::thread;

    /// The common suite.
    pub const COMMON: Suite = kiln_rt::thread_suite!(super::Preemptive);

    fn a_spinning_thread_does_not_starve_another(_: &mut Env) -> Outcome {
        let _ = thread::use_scheduler(alloc::boxed::Box::new(super::Preemptive::with_slice_us(
            2000,
        )));
        let stop = Arc::new(AtomicBool::new(false));
        let spins = Arc::new(AtomicU64::new(0));
        let (s1, n1) = (stop.clone(), spins.clone());
        // Never yields, never blocks: only preemption lets others run.
        let spinner = thread::spawn(move || {
            while !s1.load(Ordering::SeqCst) {
                n1.fetch_add(1, Ordering::Relaxed);
                core::hint::spin_loop();
            }
        });
        let worker_ran = Arc::new(AtomicBool::new(false));
        let w = worker_ran.clone();
        let worker = thread::spawn(move || w.store(true, Ordering::SeqCst));
        // Main waits by yielding: under a cooperative scheduler the spinner
        // would never give the CPU back.
        let start = kiln_rt::hal::time::now_ns();
        while !worker_ran.load(Ordering::SeqCst)
            && kiln_rt::hal::time::now_ns() - start < 2_000_000_000
        {
            thread::yield_now();
        }
        stop.store(true, Ordering::SeqCst);
        for h in [spinner, worker].into_iter().flatten() {
            h.join();
        }
        check!(
            worker_ran.load(Ordering::SeqCst),
            "the worker never ran beside a spinning thread"
        );
        check!(spins.load(Ordering::SeqCst) > 0, "the spinner never ran");
        Ok(())
    }

    /// Preemptive-only tests.
    pub const SUITE: Suite = &[Test {
        name: "kiln_sched_preempt::ktests::a_spinning_thread_does_not_starve_another",
        run: a_spinning_thread_does_not_starve_another,
        requires: None,
    }];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preempts_only_after_the_slice_and_with_someone_waiting() {
        let mut s = Preemptive::with_slice_us(1000);
        assert!(!s.should_preempt(0, 5000), "nobody else is ready");
        s.enqueue(1);
        assert!(!s.should_preempt(0, 999));
        assert!(s.should_preempt(0, 1000));
        assert_eq!(s.pick_next(), Some(1));
        assert_eq!(s.time_slice_us(), Some(1000));
        assert_eq!(Preemptive::with_slice_us(1).time_slice_us(), Some(100));
    }
}
