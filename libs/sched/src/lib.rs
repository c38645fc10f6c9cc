//! # kiln-sched — the scheduler slot
//!
//! The thread runtime (`kiln_rt::thread`) owns threads, stacks, blocking
//! and waking; a [`Scheduler`] only decides who runs next and whether a
//! running thread should be preempted. Implementations:
//! `kiln-sched-coop` (cooperative round robin: a thread runs until it
//! blocks or yields) and `kiln-sched-preempt` (round robin with time
//! slices, enforced by the timer). An app names one in
//! `kiln_rt::main!(..., sched = ...)`.
//!
//! Schedulers are plain data structures: no `unsafe`, no platform calls,
//! unit-tested on the host.
#![no_std]
#![forbid(unsafe_code)]

/// A thread's identity (index in the runtime's thread table).
pub type ThreadId = usize;

/// Decides which ready thread runs next.
pub trait Scheduler: Send {
    /// Short name for logs.
    fn name(&self) -> &'static str;
    /// `thread` became ready to run.
    fn enqueue(&mut self, thread: ThreadId);
    /// Takes the next thread to run, if any is ready.
    fn pick_next(&mut self) -> Option<ThreadId>;
    /// Whether any thread is ready.
    fn has_ready(&self) -> bool;
    /// The longest a thread may run before the timer asks [`Self::should_preempt`]
    /// (`None`: never preempt).
    fn time_slice_us(&self) -> Option<u64>;
    /// Called from the timer when `current` has run `ran_us` since it was
    /// picked; `true` means switch to another ready thread now.
    fn should_preempt(&self, current: ThreadId, ran_us: u64) -> bool;
}

extern crate alloc;

/// A FIFO of ready threads without duplicates: the queue both round-robin
/// schedulers share.
#[derive(Debug, Default)]
pub struct ReadyQueue {
    ready: alloc::collections::VecDeque<ThreadId>,
}

impl ReadyQueue {
    /// Appends `thread` unless it is queued already.
    pub fn push(&mut self, thread: ThreadId) {
        if !self.ready.contains(&thread) {
            self.ready.push_back(thread);
        }
    }

    /// Takes the longest-waiting thread.
    pub fn pop(&mut self) -> Option<ThreadId> {
        self.ready.pop_front()
    }

    /// Whether no thread is queued.
    pub fn is_empty(&self) -> bool {
        self.ready.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_queue_is_fifo_without_duplicates() {
        let mut q = ReadyQueue::default();
        for t in [3, 1, 3, 2] {
            q.push(t);
        }
        assert_eq!(
            [q.pop(), q.pop(), q.pop(), q.pop()],
            [Some(3), Some(1), Some(2), None]
        );
        assert!(q.is_empty());
    }
}
