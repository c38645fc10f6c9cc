//! # kiln-sched-coop — cooperative round robin
//!
//! [`Cooperative`] runs ready threads in FIFO order; a thread runs until it
//! blocks, sleeps, yields or exits, and is never preempted (like
//! Unikraft's default `ukschedcoop`). Smallest and fastest; a thread that
//! spins without yielding starves the others.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

use kiln_sched::{ReadyQueue, Scheduler, ThreadId};

/// FIFO of ready threads.
#[derive(Debug, Default)]
pub struct Cooperative {
    ready: ReadyQueue,
}

impl Scheduler for Cooperative {
    fn name(&self) -> &'static str {
        "cooperative"
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
        None
    }

    fn should_preempt(&self, _: ThreadId, _: u64) -> bool {
        false
    }
}

/// In-guest tests (feature `ktest`): the common thread suite under this
/// scheduler, plus its own promise: yields run threads in FIFO order.
#[cfg(feature = "ktest")]
pub mod ktests {
    use alloc::sync::Arc;
    use alloc::vec::Vec;
    use kiln_ktest::{Env, Outcome, Suite, Test, check_eq};
    use kiln_rt::thread::{self, sync};

    /// The common suite.
    pub const COMMON: Suite = kiln_rt::thread_suite!(super::Cooperative);

    fn yields_run_threads_in_fifo_order(_: &mut Env) -> Outcome {
        let _ = thread::use_scheduler(alloc::boxed::Box::new(super::Cooperative::default()));
        let log = Arc::new(sync::Mutex::new(Vec::new()));
        let handles: Vec<_> = (0..3u32)
            .map(|t| {
                let log = log.clone();
                thread::spawn(move || {
                    for round in 0..3u32 {
                        log.lock().push(t * 10 + round);
                        thread::yield_now();
                    }
                })
            })
            .collect();
        for h in handles.into_iter().flatten() {
            h.join();
        }
        check_eq!(*log.lock(), alloc::vec![0, 10, 20, 1, 11, 21, 2, 12, 22]);
        Ok(())
    }

    /// Cooperative-only tests.
    pub const SUITE: Suite = &[Test {
        name: "kiln_sched_coop::ktests::yields_run_threads_in_fifo_order",
        run: yields_run_threads_in_fifo_order,
        requires: None,
    }];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_in_fifo_order_and_never_preempts() {
        let mut s = Cooperative::default();
        for t in [3, 1, 2] {
            s.enqueue(t);
        }
        s.enqueue(1);
        assert_eq!(
            [s.pick_next(), s.pick_next(), s.pick_next(), s.pick_next()],
            [Some(3), Some(1), Some(2), None]
        );
        assert!(!s.should_preempt(1, u64::MAX));
        assert_eq!(s.time_slice_us(), None);
    }
}
