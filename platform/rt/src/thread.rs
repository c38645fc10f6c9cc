//! Threads: spawn, join, yield, sleep, park/unpark — and the scheduler seam.
//!
//! The runtime owns every thread's context, stack and state; the
//! [`kiln_sched::Scheduler`] the app named (`kiln_rt::main!(..., sched =
//! ...)`) only picks who runs next and says when a running thread should be
//! preempted. The thread that ran `main` is thread 0.
//!
//! - Stacks ([`STACK_PAGES`] pages) are mapped into the map window with an
//!   unmapped guard page below each, so an overflow faults and is
//!   reported ("stack overflow: thread N").
//! - Switching is the cooperative [`kiln_hal::context::switch`]; x87/SSE
//!   control state is saved with it, and a preempted thread saves its
//!   whole register file on its own stack ([`kiln_hal::context::preempt`]).
//! - Preemption: the timer handler checks, without taking any lock, whether
//!   the running thread used up its slice while another is ready, and if so
//!   redirects it into the preemption stub, which yields. Code holding the
//!   runtime's lock (or the heap's) runs with preemption disabled.
//! - Idle: with nothing ready, the CPU halts until the next sleeper's
//!   deadline (timer). With nothing ready and nobody sleeping, every
//!   thread waits on another: that deadlock is reported as a panic.
//!
//! Limits: one CPU; at most [`MAX_THREADS`] threads alive (the map window
//! holds their stacks); priorities are the scheduler's business.

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use kiln_hal::context::{self, Context};
use kiln_hal::upcall::UpcallFrame;
pub use kiln_sched::{Scheduler, ThreadId};

/// Pages of each thread's stack (32 KiB), plus one guard page below.
pub const STACK_PAGES: u64 = 8;
/// Threads alive at once, including the main thread.
pub const MAX_THREADS: usize = (kiln_abi::MAP_WINDOW_BYTES / 4096 / (STACK_PAGES + 1)) as usize;

/// Why a thread could not be started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThreadError {
    /// The app named no scheduler in `kiln_rt::main!`.
    NoScheduler,
    /// [`MAX_THREADS`] threads are alive already.
    TooManyThreads,
    /// No memory for the stack.
    OutOfMemory,
}

impl core::fmt::Display for ThreadError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NoScheduler => f.write_str(
                "no scheduler: name one in kiln_rt::main!(main, heap = ..., sched = kiln_sched_coop::Cooperative)",
            ),
            Self::TooManyThreads => write!(f, "at most {MAX_THREADS} threads can be alive at once"),
            Self::OutOfMemory => f.write_str("no memory for a thread stack"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Ready,
    Running,
    Blocked,
    Sleeping(u64),
    Finished,
}

struct Stack {
    /// First window page of this slot (the guard page).
    slot: usize,
    /// Physical frames backing the stack.
    frames: u64,
}

struct Thread {
    ctx: Context,
    state: State,
    stack: Option<Stack>,
    joiners: Vec<ThreadId>,
    /// An unpark that came before the park.
    token: bool,
    /// Its JoinHandle is gone: remove the entry once it finished.
    detached: bool,
    /// Unique among all threads ever (ids are reused, generations not).
    generation: u64,
}

struct Runtime {
    threads: Vec<Option<Box<Thread>>>,
    sched: Box<dyn Scheduler>,
    current: ThreadId,
    /// Finished threads whose stacks can be freed once we are off them.
    dead: Vec<ThreadId>,
    /// Stack slots in use.
    slots: Vec<bool>,
    /// The thread waiting on each [`Event`], by event number.
    event_waiters: [Option<ThreadId>; MAX_EVENTS],
}

static RUNTIME: spin::Mutex<Option<Runtime>> = spin::Mutex::new(None);
/// >0: the timer must not preempt (lock held, or switching).
static PREEMPT_OFF: AtomicUsize = AtomicUsize::new(0);
/// The timer wanted to preempt while preemption was off.
static NEED_RESCHED: AtomicBool = AtomicBool::new(false);
/// When the running thread was picked (ns), its slice (us, 0 = none), and
/// how many threads are ready: read by the timer handler without locks.
static PICKED_AT_NS: AtomicU64 = AtomicU64::new(0);
static SLICE_US: AtomicU64 = AtomicU64::new(0);
static READY: AtomicUsize = AtomicUsize::new(0); // 1: some thread is ready
static STARTED: AtomicBool = AtomicBool::new(false);
/// The running thread.
static CURRENT: AtomicUsize = AtomicUsize::new(0);
/// The running thread's generation (distinguishes reused thread ids).
static CURRENT_GENERATION: AtomicU64 = AtomicU64::new(0);
/// Source of generations.
static NEXT_GENERATION: AtomicU64 = AtomicU64::new(1);
/// Earliest sleeper deadline (ns), `u64::MAX` when nobody sleeps.
static NEXT_WAKE_NS: AtomicU64 = AtomicU64::new(u64::MAX);

/// Disables preemption until the matching [`preempt_enable`].
pub fn preempt_disable() {
    PREEMPT_OFF.fetch_add(1, Ordering::SeqCst);
}

/// Re-enables preemption; yields if the timer asked for it meanwhile.
pub fn preempt_enable() {
    if PREEMPT_OFF.fetch_sub(1, Ordering::SeqCst) == 1 && NEED_RESCHED.swap(false, Ordering::SeqCst)
    {
        yield_now();
    }
}

fn scheduler_factory() -> Option<Box<dyn Scheduler>> {
    unsafe extern "Rust" {
        /// Defined by `kiln_rt::main!`: the app's scheduler, if it named one.
        fn __kiln_scheduler() -> Option<Box<dyn Scheduler>>;
    }
    // SAFETY: `main!` defines `__kiln_scheduler` with this signature in
    // every image; an image without it does not link.
    unsafe { __kiln_scheduler() }
}

/// Replaces the scheduler (the app's choice by default), e.g. for tests
/// of one implementation. Only while no thread but the caller is alive.
pub fn use_scheduler(sched: Box<dyn Scheduler>) -> Result<(), ThreadError> {
    if !STARTED.load(Ordering::SeqCst) {
        return start(sched);
    }
    preempt_disable();
    let mut guard = RUNTIME.lock();
    let result = match guard.as_mut() {
        Some(rt)
            if rt
                .threads
                .iter()
                .filter(|t| t.as_ref().is_some_and(|t| t.state != State::Finished))
                .count()
                == 1 =>
        {
            SLICE_US.store(sched.time_slice_us().unwrap_or(0), Ordering::SeqCst);
            rt.sched = sched;
            note_ready(rt);
            Ok(())
        }
        _ => Err(ThreadError::TooManyThreads),
    };
    drop(guard);
    arm_timer(None);
    preempt_enable();
    result
}

/// Starts the runtime on first use (thread 0 = the caller).
fn ensure_started() -> Result<(), ThreadError> {
    if STARTED.load(Ordering::SeqCst) {
        return Ok(());
    }
    start(scheduler_factory().ok_or(ThreadError::NoScheduler)?)
}

fn start(sched: Box<dyn Scheduler>) -> Result<(), ThreadError> {
    SLICE_US.store(sched.time_slice_us().unwrap_or(0), Ordering::SeqCst);
    let main = Box::new(Thread {
        ctx: Context::default(),
        state: State::Running,
        stack: None,
        joiners: Vec::new(),
        token: false,
        detached: false,
        generation: 0,
    });
    let mut slots = alloc::vec![false; MAX_THREADS];
    slots[0] = true; // slot 0 (pages 0-8) is the HAL's: tests, the IOAPIC
    slots[1] = true; // slot 1 (pages 9-17): page 9 holds virtio slot 1
    *RUNTIME.lock() = Some(Runtime {
        threads: alloc::vec![Some(main)],
        sched,
        current: 0,
        dead: Vec::new(),
        slots,
        event_waiters: [None; MAX_EVENTS],
    });
    let _ = kiln_hal::upcall::register(kiln_abi::upcall::TIMER_VECTOR, on_timer);
    PICKED_AT_NS.store(kiln_hal::time::now_ns(), Ordering::SeqCst);
    STARTED.store(true, Ordering::SeqCst);
    arm_timer(None);
    Ok(())
}

/// When the armed timer fires (ns; 0 = none armed or already fired).
static ARMED_AT_NS: AtomicU64 = AtomicU64::new(0);

/// Makes sure the one-shot timer fires by the next slice end or sleeper
/// deadline. Arming costs a supervisor call (tens of microseconds here), so
/// a timer that already fires early enough is left alone: a switch does
/// not re-arm it.
fn arm_timer(next_deadline_ns: Option<u64>) {
    let now = kiln_hal::time::now_ns();
    let slice = SLICE_US.load(Ordering::SeqCst);
    let mut wait_us = if slice > 0 { slice } else { u64::MAX };
    // u64::MAX: an event waiter without a deadline (no timer needed).
    if let Some(d) = next_deadline_ns.filter(|d| *d != u64::MAX) {
        wait_us = wait_us.min(d.saturating_sub(now).div_ceil(1000));
    }
    if wait_us == u64::MAX {
        return;
    }
    let wait_us = wait_us.max(MIN_TIMER_US);
    let fire_at = now + wait_us * 1000;
    let armed = ARMED_AT_NS.load(Ordering::SeqCst);
    if armed > now && armed <= fire_at {
        return;
    }
    rearm(now, wait_us);
}

/// Arms the timer `us` from `now` and records when it fires.
fn rearm(now: u64, us: u64) {
    if kiln_hal::timer::oneshot_us(us).is_ok() {
        ARMED_AT_NS.store(now + us * 1000, Ordering::SeqCst);
    }
}

/// Shortest timer the runtime arms: each interrupt costs tens of
/// microseconds on these hosts, so re-arming any closer would be a storm.
const MIN_TIMER_US: u64 = 50;

/// The timer: preempts the running thread when its slice is over and
/// another thread is ready, or when a sleeper is due. Takes no lock.
fn on_timer(frame: &mut UpcallFrame) {
    ARMED_AT_NS.store(0, Ordering::SeqCst);
    let slice_us = SLICE_US.load(Ordering::SeqCst);
    if slice_us == 0 {
        // Cooperative: the timer only ends a halt for a sleeper's deadline.
        return;
    }
    let now = kiln_hal::time::now_ns();
    let next_wake = NEXT_WAKE_NS.load(Ordering::SeqCst);
    let ran_us = now.saturating_sub(PICKED_AT_NS.load(Ordering::SeqCst)) / 1000;
    // A signalled event's waiter is due as a sleeper would be.
    let sleeper_due = next_wake <= now
        || EVENT_PENDING.load(Ordering::SeqCst) & EVENT_WAITED.load(Ordering::SeqCst) != 0;
    let slice_over = ran_us >= slice_us && READY.load(Ordering::SeqCst) > 0;
    if !(sleeper_due || slice_over) {
        // Next look: at the end of this slice (a whole one when it is over
        // with nobody waiting: re-arming at once would be an interrupt
        // storm) or at the next deadline.
        let mut wait_us = if ran_us >= slice_us {
            slice_us
        } else {
            slice_us - ran_us
        };
        if next_wake != u64::MAX {
            wait_us = wait_us.min((next_wake - now).div_ceil(1000));
        }
        rearm(now, wait_us.max(MIN_TIMER_US));
        return;
    }
    // A reschedule re-arms the timer; until then look again after a slice.
    rearm(now, slice_us.max(MIN_TIMER_US));
    if PREEMPT_OFF.load(Ordering::SeqCst) > 0 || context::in_critical_code(frame.rip) {
        NEED_RESCHED.store(true, Ordering::SeqCst);
        return;
    }
    // SAFETY: the frame is an interrupt of CPL3 code outside the switch and
    // the stub, with preemption enabled, so it runs on a thread stack with
    // room below (the stack's guard page catches the rest).
    unsafe { context::preempt(frame) };
}

/// Entered by the preemption stub: a cooperative yield.
#[cfg(kiln_guest)]
#[unsafe(no_mangle)]
extern "C" fn kiln_preempt_yield() {
    yield_now();
}

fn window_page(slot: usize, page: u64) -> u64 {
    kiln_abi::MAP_WINDOW_BASE + (slot as u64 * (STACK_PAGES + 1) + page) * 4096
}

fn alloc_stack(rt: &mut Runtime) -> Result<Stack, ThreadError> {
    let slot = rt
        .slots
        .iter()
        .position(|used| !used)
        .ok_or(ThreadError::TooManyThreads)?;
    let frames =
        crate::memory::alloc_frames(STACK_PAGES as usize).map_err(|_| ThreadError::OutOfMemory)?;
    for page in 0..STACK_PAGES {
        let mapped = kiln_hal::sc::map(
            window_page(slot, page + 1),
            frames + page * 4096,
            kiln_abi::sc::MAP_WRITE,
        );
        if mapped.is_err() {
            for undo in 0..page {
                let _ = kiln_hal::sc::unmap(window_page(slot, undo + 1));
            }
            let _ = crate::memory::free_frames(frames, STACK_PAGES as usize);
            return Err(ThreadError::OutOfMemory);
        }
    }
    rt.slots[slot] = true;
    Ok(Stack { slot, frames })
}

fn free_stack(rt: &mut Runtime, stack: Stack) {
    for page in 0..STACK_PAGES {
        let _ = kiln_hal::sc::unmap(window_page(stack.slot, page + 1));
    }
    let _ = crate::memory::free_frames(stack.frames, STACK_PAGES as usize);
    rt.slots[stack.slot] = false;
}

/// Which thread's stack guard page holds `addr`, if any (crash reports).
pub fn guard_owner(addr: u64) -> Option<ThreadId> {
    let off = addr.checked_sub(kiln_abi::MAP_WINDOW_BASE)?;
    if off >= kiln_abi::MAP_WINDOW_BYTES || (off / 4096) % (STACK_PAGES + 1) != 0 {
        return None;
    }
    let slot = (off / 4096 / (STACK_PAGES + 1)) as usize;
    let guard = RUNTIME.try_lock()?;
    let rt = guard.as_ref()?;
    rt.threads.iter().position(|t| {
        t.as_ref()
            .and_then(|t| t.stack.as_ref())
            .is_some_and(|s| s.slot == slot)
    })
}

/// A running or finished thread's handle; [`JoinHandle::join`] waits for
/// its result.
pub struct JoinHandle<T> {
    id: ThreadId,
    result: Arc<spin::Mutex<Option<T>>>,
}

impl<T> JoinHandle<T> {
    /// The thread's id.
    pub fn id(&self) -> ThreadId {
        self.id
    }

    /// Waits for the thread to finish and returns what it returned.
    pub fn join(self) -> T {
        loop {
            preempt_disable();
            let mut guard = RUNTIME.lock();
            let Some(rt) = guard.as_mut() else {
                unreachable!("a JoinHandle exists, so threads started")
            };
            let finished = rt
                .threads
                .get(self.id)
                .and_then(|t| t.as_ref())
                .is_none_or(|t| t.state == State::Finished);
            if finished {
                drop(guard);
                let value = self.result.lock().take();
                preempt_enable();
                if let Some(value) = value {
                    return value; // Drop removes the table entry
                }
                unreachable!("a finished thread always leaves its result");
            }
            let me = rt.current;
            if let Some(Some(t)) = rt.threads.get_mut(self.id) {
                t.joiners.push(me);
            }
            drop(guard);
            block_current();
            preempt_enable();
        }
    }
}

/// Starts a thread running `f`; its result comes back through [`JoinHandle::join`].
pub fn spawn<F, T>(f: F) -> Result<JoinHandle<T>, ThreadError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    ensure_started()?;
    let result = Arc::new(spin::Mutex::new(None));
    let slot = result.clone();
    let body: Box<dyn FnOnce() + Send> = Box::new(move || {
        let value = f();
        preempt_disable(); // a spin lock: never preempted while held
        *slot.lock() = Some(value);
        preempt_enable();
    });
    preempt_disable();
    let mut guard = RUNTIME.lock();
    let Some(rt) = guard.as_mut() else {
        unreachable!("started above")
    };
    let alive = rt.threads.iter().filter(|t| t.is_some()).count();
    if alive >= MAX_THREADS {
        drop(guard);
        preempt_enable();
        return Err(ThreadError::TooManyThreads);
    }
    let stack = match alloc_stack(rt) {
        Ok(s) => s,
        Err(e) => {
            drop(guard);
            preempt_enable();
            return Err(e);
        }
    };
    let top = window_page(stack.slot, STACK_PAGES + 1);
    let arg = Box::into_raw(Box::new(body)) as usize;
    // SAFETY: [top - 32 KiB, top) was just mapped writable for this thread
    // alone, and stays mapped until the thread has finished and another
    // thread runs (see `reap`).
    let ctx = unsafe { Context::new_thread(top, thread_entry, arg) };
    let thread = Box::new(Thread {
        ctx,
        state: State::Ready,
        stack: Some(stack),
        joiners: Vec::new(),
        token: false,
        detached: false,
        generation: NEXT_GENERATION.fetch_add(1, Ordering::SeqCst),
    });
    let id = match rt.threads.iter().position(Option::is_none) {
        Some(free) => {
            rt.threads[free] = Some(thread);
            free
        }
        None => {
            rt.threads.push(Some(thread));
            rt.threads.len() - 1
        }
    };
    rt.sched.enqueue(id);
    note_ready(rt);
    drop(guard);
    preempt_enable();
    Ok(JoinHandle { id, result })
}

extern "C" fn thread_entry(arg: usize) -> ! {
    // A new thread starts where `reschedule` would have returned: finish
    // the switch, and end the preemption-off section the switching thread
    // began (it ends its own when it is switched back to).
    after_switch();
    preempt_enable();
    // SAFETY: `spawn` passed the pointer from Box::into_raw of exactly this
    // type, and each thread starts once.
    let body = unsafe { Box::from_raw(arg as *mut Box<dyn FnOnce() + Send>) };
    body();
    exit_current()
}

/// The id of the running thread (0 before any thread was spawned).
pub fn current() -> ThreadId {
    CURRENT.load(Ordering::SeqCst)
}

/// Lets other ready threads run; returns when this one is picked again.
pub fn yield_now() {
    if !STARTED.load(Ordering::SeqCst) {
        return;
    }
    preempt_disable();
    reschedule(State::Ready);
    preempt_enable();
}

/// Blocks the running thread for at least `ms` milliseconds.
pub fn sleep_ms(ms: u64) {
    sleep_us(ms.saturating_mul(1000));
}

/// Blocks the running thread for at least `us` microseconds (halts the
/// CPU when no other thread is ready).
pub fn sleep_us(us: u64) {
    if !STARTED.load(Ordering::SeqCst) {
        kiln_hal::time::sleep_us(us);
        return;
    }
    let deadline = kiln_hal::time::now_ns().saturating_add(us.saturating_mul(1000));
    while kiln_hal::time::now_ns() < deadline {
        preempt_disable();
        reschedule(State::Sleeping(deadline));
        preempt_enable();
    }
}

/// Blocks the running thread until [`unpark`] (returns at once if an
/// unpark came first).
pub fn park() {
    if !STARTED.load(Ordering::SeqCst) {
        return;
    }
    preempt_disable();
    block_current();
    preempt_enable();
}

/// Like [`park`], but gives up after `us` microseconds; returns `true`
/// when woken by [`unpark`] (or a pending one), `false` on timeout.
pub fn park_timeout_us(us: u64) -> bool {
    let deadline = kiln_hal::time::now_ns().saturating_add(us.saturating_mul(1000));
    if !STARTED.load(Ordering::SeqCst) {
        kiln_hal::time::sleep_us(us);
        return false;
    }
    preempt_disable();
    if take_token() {
        preempt_enable();
        return true;
    }
    reschedule(State::Sleeping(deadline));
    // An unpark while sleeping left its token (see `wake`).
    let woken = take_token();
    preempt_enable();
    woken
}

/// Takes the running thread's unpark token (preemption already off).
fn take_token() -> bool {
    let mut guard = RUNTIME.lock();
    guard.as_mut().is_some_and(|rt| {
        let me = rt.current;
        rt.threads
            .get_mut(me)
            .and_then(|t| t.as_mut())
            .is_some_and(|t| core::mem::take(&mut t.token))
    })
}

/// Makes `thread` runnable again after [`park`] (or lets its next `park`
/// return at once).
pub fn unpark(thread: ThreadId) {
    preempt_disable();
    if let Some(rt) = RUNTIME.lock().as_mut() {
        wake(rt, thread);
    }
    preempt_enable();
}

/// Publishes whether any thread is ready, for the lock-free timer handler.
fn note_ready(rt: &Runtime) {
    READY.store(usize::from(rt.sched.has_ready()), Ordering::SeqCst);
}

fn wake(rt: &mut Runtime, id: ThreadId) {
    if let Some(Some(t)) = rt.threads.get_mut(id) {
        match t.state {
            State::Blocked => {
                t.state = State::Ready;
                rt.sched.enqueue(id);
                note_ready(rt);
            }
            // A sleeper keeps the token: `park_timeout_us` takes it as
            // "woken", `sleep_us` goes back to sleep and its next `park`
            // returns at once (regression: the unpark used to be lost).
            State::Sleeping(_) => {
                t.state = State::Ready;
                t.token = true;
                rt.sched.enqueue(id);
                note_ready(rt);
            }
            State::Ready | State::Running => t.token = true,
            State::Finished => {}
        }
    }
}

/// Blocks unless an unpark token is pending (preemption already off).
fn block_current() {
    {
        let mut guard = RUNTIME.lock();
        if let Some(rt) = guard.as_mut() {
            let me = rt.current;
            if let Some(Some(t)) = rt.threads.get_mut(me)
                && t.token
            {
                t.token = false;
                return;
            }
        }
    }
    reschedule(State::Blocked);
}

fn exit_current() -> ! {
    preempt_disable();
    {
        let mut guard = RUNTIME.lock();
        if let Some(rt) = guard.as_mut() {
            let me = rt.current;
            let joiners = rt.threads[me]
                .as_mut()
                .map(|t| core::mem::take(&mut t.joiners))
                .unwrap_or_default();
            for j in joiners {
                wake(rt, j);
            }
            rt.dead.push(me);
        }
    }
    reschedule(State::Finished);
    unreachable!("a finished thread was scheduled again")
}

/// Makes the waiters of signalled events ready (their `wait` takes the
/// event's bit).
fn wake_event_waiters(rt: &mut Runtime) {
    let pending = EVENT_PENDING.load(Ordering::SeqCst);
    if pending == 0 {
        return;
    }
    for (i, waiter) in rt.event_waiters.iter_mut().enumerate() {
        if pending & (1 << i) == 0 {
            continue;
        }
        EVENT_WAITED.fetch_and(!(1 << i), Ordering::SeqCst);
        if let Some(id) = waiter.take()
            && let Some(Some(t)) = rt.threads.get_mut(id)
            && matches!(t.state, State::Sleeping(_))
        {
            // No unpark token: the waiter learns from the event's bit.
            t.state = State::Ready;
            rt.sched.enqueue(id);
        }
    }
    note_ready(rt);
}

/// Events that can exist (one bit each).
pub const MAX_EVENTS: usize = 64;
/// Signalled events, one bit per [`Event`].
static EVENT_PENDING: AtomicU64 = AtomicU64::new(0);
/// Events a thread waits on (for the lock-free timer handler).
static EVENT_WAITED: AtomicU64 = AtomicU64::new(0);
/// Events handed out.
static EVENTS_MADE: AtomicUsize = AtomicUsize::new(0);

/// A wake-up from interrupt context to a thread: a device's interrupt
/// handler calls [`Event::signal`] (lock-free), one thread at a time
/// blocks in [`Event::wait_timeout_us`] until it is signalled.
///
/// A signal with nobody waiting is kept for the next wait (it is a flag,
/// not a count). Waiting works before any thread is spawned too (the CPU
/// halts). Limits: [`MAX_EVENTS`] events per run, never freed (devices
/// live for the whole run); one waiter per event.
#[derive(Debug)]
pub struct Event {
    index: usize,
}

/// No more [`Event`]s can be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooManyEvents;

impl core::fmt::Display for TooManyEvents {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "at most {MAX_EVENTS} interrupt events can exist")
    }
}

impl Event {
    /// A new, unsignalled event.
    pub fn new() -> Result<Self, TooManyEvents> {
        let index = EVENTS_MADE.fetch_add(1, Ordering::SeqCst);
        if index >= MAX_EVENTS {
            return Err(TooManyEvents);
        }
        EVENT_PENDING.fetch_and(!(1 << index), Ordering::SeqCst);
        Ok(Self { index })
    }

    /// Signals the event; callable from interrupt handlers.
    pub fn signal(&self) {
        EVENT_PENDING.fetch_or(1 << self.index, Ordering::SeqCst);
        kiln_hal::irq::post_wake();
    }

    /// Takes the signal, if any.
    fn take(&self) -> bool {
        EVENT_PENDING.fetch_and(!(1 << self.index), Ordering::SeqCst) & (1 << self.index) != 0
    }

    /// Blocks until the event is signalled (returns `true`) or `us`
    /// microseconds pass (`false`; `None` waits without limit).
    pub fn wait_timeout_us(&self, us: Option<u64>) -> bool {
        if self.take() {
            return true;
        }
        let now = kiln_hal::time::now_ns();
        let deadline = us.map_or(u64::MAX, |us| now.saturating_add(us.saturating_mul(1000)));
        if !STARTED.load(Ordering::SeqCst) {
            // No threads: halt until the interrupt (or the deadline).
            loop {
                kiln_hal::irq::take_wake();
                if self.take() {
                    return true;
                }
                let now = kiln_hal::time::now_ns();
                if now >= deadline {
                    return false;
                }
                let wait_us = (deadline - now).div_ceil(1000).clamp(1, 1_000_000);
                <kiln_hal::platform::Current as kiln_hal::platform::Platform>::halt_for_us(wait_us);
            }
        }
        preempt_disable();
        if let Some(rt) = RUNTIME.lock().as_mut() {
            rt.event_waiters[self.index] = Some(rt.current);
            EVENT_WAITED.fetch_or(1 << self.index, Ordering::SeqCst);
        }
        reschedule(State::Sleeping(deadline));
        if let Some(rt) = RUNTIME.lock().as_mut()
            && rt.event_waiters[self.index] == Some(rt.current)
        {
            rt.event_waiters[self.index] = None; // timed out
            EVENT_WAITED.fetch_and(!(1 << self.index), Ordering::SeqCst);
        }
        let signalled = self.take();
        preempt_enable();
        signalled
    }
}

/// Moves due sleepers to ready; returns the earliest remaining deadline.
fn wake_sleepers(rt: &mut Runtime, now: u64) -> Option<u64> {
    let mut earliest = None::<u64>;
    for id in 0..rt.threads.len() {
        if let Some(Some(t)) = rt.threads.get(id)
            && let State::Sleeping(deadline) = t.state
        {
            if deadline <= now {
                // The deadline passed: ready, with no unpark token.
                if let Some(Some(t)) = rt.threads.get_mut(id) {
                    t.state = State::Ready;
                }
                rt.sched.enqueue(id);
                note_ready(rt);
            } else {
                earliest = Some(earliest.map_or(deadline, |e| e.min(deadline)));
            }
        }
    }
    earliest
}

/// Puts the running thread in `state` and runs the next one (preemption
/// must be off). Returns when this thread runs again.
fn reschedule(state: State) {
    let (from, to): (*mut Context, *const Context) = loop {
        let mut guard = RUNTIME.lock();
        let Some(rt) = guard.as_mut() else { return };
        let me = rt.current;
        if let Some(Some(t)) = rt.threads.get_mut(me)
            && t.state == State::Running
        {
            t.state = state;
            if state == State::Ready {
                rt.sched.enqueue(me);
                note_ready(rt);
            }
        }
        let now = kiln_hal::time::now_ns();
        // Clear posted wake-ups before looking at events: one posted after
        // this makes the halt below return at once.
        kiln_hal::irq::take_wake();
        wake_event_waiters(rt);
        let next_deadline = wake_sleepers(rt, now);
        NEXT_WAKE_NS.store(next_deadline.unwrap_or(u64::MAX), Ordering::SeqCst);
        if let Some(next) = rt.sched.pick_next() {
            note_ready(rt);
            PICKED_AT_NS.store(now, Ordering::SeqCst);
            // Whatever asked for a reschedule got one.
            NEED_RESCHED.store(false, Ordering::SeqCst);
            arm_timer(next_deadline);
            if let Some(Some(t)) = rt.threads.get_mut(next) {
                t.state = State::Running;
            }
            if next == me {
                return;
            }
            rt.current = next;
            CURRENT.store(next, Ordering::SeqCst);
            let generation = rt.threads[next].as_ref().map_or(0, |t| t.generation);
            CURRENT_GENERATION.store(generation, Ordering::SeqCst);
            let from = rt.threads[me].as_mut().map(|t| &mut t.ctx as *mut Context);
            let to = rt.threads[next].as_ref().map(|t| &t.ctx as *const Context);
            match (from, to) {
                (Some(f), Some(t)) => break (f, t),
                _ => unreachable!("threads in the table have contexts"),
            }
        }
        // Nothing ready: wait for a sleeper, or report the deadlock.
        let Some(deadline) = next_deadline else {
            drop(guard);
            panic!("deadlock: every thread is blocked and none is sleeping");
        };
        drop(guard);
        let now = kiln_hal::time::now_ns();
        // Capped: a thread waiting on an event with no deadline sleeps
        // "until u64::MAX". On linuxu a SIGIO landing just before the
        // sleep call is only noticed when the sleep ends (no supervisor to
        // check the wake-up flag atomically), so it sleeps in short steps.
        let cap_us = if cfg!(kiln_linuxu) { 10_000 } else { 1_000_000 };
        let wait_us = deadline.saturating_sub(now).div_ceil(1000).clamp(1, cap_us);
        // halt_for arms the timer itself.
        ARMED_AT_NS.store(now + wait_us * 1000, Ordering::SeqCst);
        <kiln_hal::platform::Current as kiln_hal::platform::Platform>::halt_for_us(wait_us);
    };
    // SAFETY: both contexts live in boxed Thread entries that stay in the
    // table while either can run (a finished thread is only removed by
    // `reap`, after the switch away from it); `to` is suspended (not
    // running), and preemption is off.
    unsafe { context::switch(from, to) };
    after_switch();
}

/// Runs on the thread just switched to: frees finished threads' stacks.
fn after_switch() {
    let mut guard = RUNTIME.lock();
    let Some(rt) = guard.as_mut() else { return };
    let me = rt.current;
    let dead: Vec<ThreadId> = rt.dead.iter().copied().filter(|d| *d != me).collect();
    rt.dead.retain(|d| *d == me);
    for id in dead {
        if let Some(stack) = rt
            .threads
            .get_mut(id)
            .and_then(|t| t.as_mut())
            .and_then(|t| t.stack.take())
        {
            free_stack(rt, stack);
        }
        // Finished entries stay until joined (`join` reads their state),
        // unless nobody can join them any more.
        if rt.threads[id].as_ref().is_some_and(|t| t.detached) {
            rt.threads[id] = None;
        }
    }
}

impl<T> Drop for JoinHandle<T> {
    fn drop(&mut self) {
        preempt_disable();
        if let Some(rt) = RUNTIME.lock().as_mut()
            && let Some(slot) = rt.threads.get_mut(self.id)
        {
            match slot {
                Some(t) if t.state == State::Finished && t.stack.is_none() => *slot = None,
                Some(t) => t.detached = true,
                None => {}
            }
        }
        preempt_enable();
    }
}

/// Per-thread values of one type: every thread sees its own `T`, made
/// with `T::default()` on its first use (the app-level thread-local
/// storage). The value is taken out while `with` runs, so the closure may
/// block or yield; a nested `with` on the same `ThreadLocal` sees a fresh
/// default.
pub struct ThreadLocal<T> {
    values: spin::Mutex<Vec<Option<(u64, T)>>>,
}

impl<T: Default> ThreadLocal<T> {
    /// An empty table.
    pub const fn new() -> Self {
        Self {
            values: spin::Mutex::new(Vec::new()),
        }
    }

    /// Runs `f` on the running thread's value.
    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        let (id, generation) = (current(), CURRENT_GENERATION.load(Ordering::SeqCst));
        preempt_disable();
        let taken = self.values.lock().get_mut(id).and_then(Option::take);
        preempt_enable();
        let mut value = match taken {
            Some((g, v)) if g == generation => v,
            _ => T::default(), // first use, or a previous thread with this id
        };
        let result = f(&mut value);
        preempt_disable();
        let mut values = self.values.lock();
        if values.len() <= id {
            values.resize_with(id + 1, || None);
        }
        values[id] = Some((generation, value));
        drop(values);
        preempt_enable();
        result
    }
}

impl<T: Default> Default for ThreadLocal<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// Blocking primitives built on park/unpark.
pub mod sync {
    use super::*;
    use core::cell::UnsafeCell;
    use core::ops::{Deref, DerefMut};

    /// A FIFO of parked threads.
    #[derive(Default)]
    pub struct WaitQueue {
        waiting: spin::Mutex<VecDeque<ThreadId>>,
    }

    impl WaitQueue {
        /// An empty queue.
        pub const fn new() -> Self {
            Self {
                waiting: spin::Mutex::new(VecDeque::new()),
            }
        }

        /// Adds the running thread; it should `park` next.
        pub fn enqueue_current(&self) {
            preempt_disable();
            self.waiting.lock().push_back(current());
            preempt_enable();
        }

        /// Wakes the longest waiter; whether there was one.
        pub fn wake_one(&self) -> bool {
            preempt_disable();
            let next = self.waiting.lock().pop_front();
            preempt_enable();
            next.map(unpark).is_some()
        }

        /// Wakes every waiter.
        pub fn wake_all(&self) {
            while self.wake_one() {}
        }

        /// Drops `thread` from the queue (after it gave up waiting);
        /// whether it was still there (`false`: a waker popped it first).
        pub fn remove(&self, thread: ThreadId) -> bool {
            preempt_disable();
            let mut waiting = self.waiting.lock();
            let before = waiting.len();
            waiting.retain(|t| *t != thread);
            let removed = waiting.len() != before;
            drop(waiting);
            preempt_enable();
            removed
        }
    }

    /// A blocking mutual-exclusion lock.
    pub struct Mutex<T> {
        locked: AtomicBool,
        queue: WaitQueue,
        value: UnsafeCell<T>,
    }

    // SAFETY: the lock gives one thread at a time access to the value, so
    // sharing the Mutex is safe when the value can move between threads.
    unsafe impl<T: Send> Sync for Mutex<T> {}
    // SAFETY: as above, for sending the Mutex itself.
    unsafe impl<T: Send> Send for Mutex<T> {}

    impl<T> Mutex<T> {
        /// A new unlocked mutex.
        pub const fn new(value: T) -> Self {
            Self {
                locked: AtomicBool::new(false),
                queue: WaitQueue::new(),
                value: UnsafeCell::new(value),
            }
        }

        fn try_acquire(&self) -> bool {
            self.locked
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        }

        /// Locks, parking while another thread holds the lock.
        pub fn lock(&self) -> MutexGuard<'_, T> {
            while !self.try_acquire() {
                self.queue.enqueue_current();
                if self.try_acquire() {
                    // Got it after all: leave the queue, or the next unlock
                    // would "wake" this stale entry instead of a real waiter
                    // (regression: a lost wake-up hung the next locker). If
                    // an unlock already popped us, our own unlock wakes the
                    // next waiter.
                    self.queue.remove(current());
                    break;
                }
                park();
                // A spurious wake-up (a stale unpark, e.g. from a socket
                // waker) leaves our entry queued: take it out before
                // queueing again, or an unlock would later wake the stale
                // entry instead of a real waiter (regression test
                // `spurious_unparks_do_not_strand_a_mutex_waiter`).
                self.queue.remove(current());
            }
            MutexGuard { mutex: self }
        }
    }

    /// Access to a locked [`Mutex`]'s value; unlocks when dropped.
    pub struct MutexGuard<'a, T> {
        mutex: &'a Mutex<T>,
    }

    impl<T> Deref for MutexGuard<'_, T> {
        type Target = T;
        fn deref(&self) -> &T {
            // SAFETY: holding the guard means holding the lock.
            unsafe { &*self.mutex.value.get() }
        }
    }

    impl<T> DerefMut for MutexGuard<'_, T> {
        fn deref_mut(&mut self) -> &mut T {
            // SAFETY: holding the guard means holding the lock, exclusively.
            unsafe { &mut *self.mutex.value.get() }
        }
    }

    impl<T> Drop for MutexGuard<'_, T> {
        fn drop(&mut self) {
            self.mutex.locked.store(false, Ordering::Release);
            self.mutex.queue.wake_one();
        }
    }

    /// A condition variable for [`Mutex`].
    #[derive(Default)]
    pub struct Condvar {
        queue: WaitQueue,
    }

    impl Condvar {
        /// A new condition variable.
        pub const fn new() -> Self {
            Self {
                queue: WaitQueue::new(),
            }
        }

        /// Unlocks, waits for a notification, locks again. Wake-ups may be
        /// spurious: wait in a loop on the condition.
        pub fn wait<'a, T>(&self, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
            let mutex = guard.mutex;
            self.queue.enqueue_current();
            drop(guard);
            park();
            mutex.lock()
        }

        /// Like [`Condvar::wait`], giving up after `us` microseconds; the
        /// flag is `true` when the wait timed out.
        pub fn wait_timeout_us<'a, T>(
            &self,
            guard: MutexGuard<'a, T>,
            us: u64,
        ) -> (MutexGuard<'a, T>, bool) {
            let mutex = guard.mutex;
            self.queue.enqueue_current();
            drop(guard);
            let woken = park_timeout_us(us);
            // Timed out, but a notify popped us meanwhile: that notification
            // is ours, so report a wake-up rather than swallow it.
            let timed_out = !woken && self.queue.remove(current());
            (mutex.lock(), timed_out)
        }

        /// Wakes one waiter.
        pub fn notify_one(&self) {
            self.queue.wake_one();
        }

        /// Wakes every waiter.
        pub fn notify_all(&self) {
            self.queue.wake_all();
        }
    }

    /// A counting semaphore.
    pub struct Semaphore {
        count: Mutex<usize>,
        available: Condvar,
    }

    impl Semaphore {
        /// A semaphore with `permits` permits.
        pub const fn new(permits: usize) -> Self {
            Self {
                count: Mutex::new(permits),
                available: Condvar::new(),
            }
        }

        /// Takes a permit, waiting for one if none is left.
        pub fn acquire(&self) {
            let mut count = self.count.lock();
            while *count == 0 {
                count = self.available.wait(count);
            }
            *count -= 1;
        }

        /// Returns a permit.
        pub fn release(&self) {
            *self.count.lock() += 1;
            self.available.notify_one();
        }
    }

    struct Channel<T> {
        queue: Mutex<(VecDeque<T>, usize)>,
        ready: Condvar,
    }

    /// Why [`Receiver::recv_timeout_us`] returned no value.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum RecvTimeoutError {
        /// Nothing arrived in time.
        Timeout,
        /// Every sender is gone and nothing is queued.
        Disconnected,
    }

    /// The sending half of [`channel`]; clone it for more senders.
    pub struct Sender<T> {
        inner: Arc<Channel<T>>,
    }

    /// The receiving half of [`channel`].
    pub struct Receiver<T> {
        inner: Arc<Channel<T>>,
    }

    /// An unbounded multi-producer, single-consumer channel.
    pub fn channel<T: Send>() -> (Sender<T>, Receiver<T>) {
        let inner = Arc::new(Channel {
            queue: Mutex::new((VecDeque::new(), 1)),
            ready: Condvar::new(),
        });
        (
            Sender {
                inner: inner.clone(),
            },
            Receiver { inner },
        )
    }

    impl<T> Sender<T> {
        /// Queues `value` for the receiver.
        pub fn send(&self, value: T) {
            self.inner.queue.lock().0.push_back(value);
            self.inner.ready.notify_one();
        }
    }

    impl<T> Clone for Sender<T> {
        fn clone(&self) -> Self {
            self.inner.queue.lock().1 += 1;
            Self {
                inner: self.inner.clone(),
            }
        }
    }

    impl<T> Drop for Sender<T> {
        fn drop(&mut self) {
            self.inner.queue.lock().1 -= 1;
            self.inner.ready.notify_all();
        }
    }

    impl<T> Receiver<T> {
        /// The next value, waiting at most `us` microseconds for one.
        pub fn recv_timeout_us(&self, us: u64) -> Result<T, RecvTimeoutError> {
            let deadline = kiln_hal::time::now_ns().saturating_add(us.saturating_mul(1000));
            let mut q = self.inner.queue.lock();
            loop {
                if let Some(v) = q.0.pop_front() {
                    return Ok(v);
                }
                if q.1 == 0 {
                    return Err(RecvTimeoutError::Disconnected);
                }
                let now = kiln_hal::time::now_ns();
                if now >= deadline {
                    return Err(RecvTimeoutError::Timeout);
                }
                q = self
                    .inner
                    .ready
                    .wait_timeout_us(q, (deadline - now).div_ceil(1000))
                    .0;
            }
        }

        /// The next value, waiting for one; `None` once every sender is
        /// gone and the queue is empty.
        pub fn recv(&self) -> Option<T> {
            let mut q = self.inner.queue.lock();
            loop {
                if let Some(v) = q.0.pop_front() {
                    return Some(v);
                }
                if q.1 == 0 {
                    return None;
                }
                q = self.inner.ready.wait(q);
            }
        }
    }
}

/// In-guest tests of threads and their primitives under any scheduler:
/// `thread_suite!(kiln_sched_coop::Cooperative)`.
#[macro_export]
macro_rules! thread_suite {
    ($sched:ty) => {{
        use $crate::ktest_reexport::{Env, Outcome, Test, check, check_eq};
        use $crate::thread::{self, sync};
        extern crate alloc;
        use alloc::sync::Arc;
        use alloc::vec::Vec;

        fn with_scheduler() -> Outcome {
            let r = thread::use_scheduler(alloc::boxed::Box::new(<$sched as Default>::default()));
            check!(r.is_ok(), "cannot select the scheduler: {:?}", r);
            Ok(())
        }
        fn spawn_and_join_return_values(_: &mut Env) -> Outcome {
            with_scheduler()?;
            let handles: Vec<_> = (0..8u64).map(|i| thread::spawn(move || i * i)).collect();
            let mut sum = 0;
            for h in handles {
                check!(h.is_ok(), "spawn failed");
                sum += h.map(|h| h.join()).unwrap_or(0);
            }
            check_eq!(sum, 140);
            Ok(())
        }
        fn threads_can_be_created_again_and_again(_: &mut Env) -> Outcome {
            with_scheduler()?;
            for round in 0..3 {
                let handles: Vec<_> = (0..20).map(|i| thread::spawn(move || i + round)).collect();
                check!(
                    handles.iter().all(|h| h.is_ok()),
                    "round {round}: spawn failed"
                );
                for h in handles.into_iter().flatten() {
                    h.join();
                }
            }
            Ok(())
        }
        fn mutex_keeps_a_counter_exact_under_contention(_: &mut Env) -> Outcome {
            with_scheduler()?;
            let counter = Arc::new(sync::Mutex::new(0u64));
            let handles: Vec<_> = (0..6)
                .map(|_| {
                    let c = counter.clone();
                    thread::spawn(move || {
                        for i in 0..2000 {
                            let mut g = c.lock();
                            let v = *g;
                            if i % 64 == 0 {
                                thread::yield_now(); // hold the lock across a switch
                            }
                            *g = v + 1;
                        }
                    })
                })
                .collect();
            for h in handles.into_iter().flatten() {
                h.join();
            }
            check_eq!(*counter.lock(), 12_000);
            Ok(())
        }
        fn condvar_hands_a_token_back_and_forth(_: &mut Env) -> Outcome {
            with_scheduler()?;
            let state = Arc::new((sync::Mutex::new(0u32), sync::Condvar::new()));
            let s2 = state.clone();
            let ponger = thread::spawn(move || {
                let (m, cv) = &*s2;
                for round in 0..50 {
                    let mut g = m.lock();
                    while *g != 2 * round + 1 {
                        g = cv.wait(g);
                    }
                    *g += 1;
                    cv.notify_all();
                }
            });
            let (m, cv) = &*state;
            for round in 0..50 {
                let mut g = m.lock();
                while *g != 2 * round {
                    g = cv.wait(g);
                }
                *g += 1;
                cv.notify_all();
            }
            if let Ok(h) = ponger {
                h.join();
            }
            check_eq!(*m.lock(), 100);
            Ok(())
        }
        fn semaphore_limits_concurrency(_: &mut Env) -> Outcome {
            with_scheduler()?;
            let sem = Arc::new(sync::Semaphore::new(2));
            let inside = Arc::new(sync::Mutex::new((0u32, 0u32)));
            let handles: Vec<_> = (0..6)
                .map(|_| {
                    let (sem, inside) = (sem.clone(), inside.clone());
                    thread::spawn(move || {
                        sem.acquire();
                        {
                            let mut g = inside.lock();
                            g.0 += 1;
                            g.1 = g.1.max(g.0);
                        }
                        thread::sleep_ms(1);
                        inside.lock().0 -= 1;
                        sem.release();
                    })
                })
                .collect();
            for h in handles.into_iter().flatten() {
                h.join();
            }
            let (now, most) = *inside.lock();
            check_eq!(now, 0);
            check!(
                most == 2,
                "{most} threads held the 2-permit semaphore at once"
            );
            Ok(())
        }
        fn channel_delivers_every_message_in_order(_: &mut Env) -> Outcome {
            with_scheduler()?;
            let (tx, rx) = sync::channel::<(u32, u32)>();
            let producers: Vec<_> = (0..3)
                .map(|p| {
                    let tx = tx.clone();
                    thread::spawn(move || {
                        for i in 0..200 {
                            tx.send((p, i));
                            if i % 50 == 0 {
                                thread::yield_now();
                            }
                        }
                    })
                })
                .collect();
            drop(tx);
            let mut next = [0u32; 3];
            let mut total = 0;
            while let Some((p, i)) = rx.recv() {
                check_eq!(i, next[p as usize]);
                next[p as usize] += 1;
                total += 1;
            }
            for h in producers.into_iter().flatten() {
                h.join();
            }
            check_eq!(total, 600);
            Ok(())
        }
        fn sleeping_threads_wake_in_deadline_order(_: &mut Env) -> Outcome {
            with_scheduler()?;
            let order = Arc::new(sync::Mutex::new(Vec::new()));
            // All sleeps start together (spawning is slow under QEMU's TCG
            // on a loaded host: it once took longer than the gaps).
            let go = Arc::new(core::sync::atomic::AtomicBool::new(false));
            let handles: Vec<_> = [30u64, 10, 20]
                .into_iter()
                .map(|ms| {
                    let order = order.clone();
                    let go = go.clone();
                    thread::spawn(move || {
                        while !go.load(core::sync::atomic::Ordering::SeqCst) {
                            thread::yield_now();
                        }
                        thread::sleep_ms(ms);
                        order.lock().push(ms);
                    })
                })
                .collect();
            let start = $crate::hal::time::now_ns();
            go.store(true, core::sync::atomic::Ordering::SeqCst);
            for h in handles.into_iter().flatten() {
                h.join();
            }
            let ms = ($crate::hal::time::now_ns() - start) / 1_000_000;
            check_eq!(*order.lock(), alloc::vec![10, 20, 30]);
            // Order is the point; the bound only catches a missed wake-up.
            check!((30..1000).contains(&ms), "the sleeps took {ms} ms in all");
            Ok(())
        }
        fn thread_locals_are_per_thread(_: &mut Env) -> Outcome {
            with_scheduler()?;
            static COUNT: thread::ThreadLocal<u32> = thread::ThreadLocal::new();
            let handles: Vec<_> = (1..=4u32)
                .map(|t| {
                    thread::spawn(move || {
                        for _ in 0..t * 10 {
                            COUNT.with(|c| *c += 1);
                            thread::yield_now();
                        }
                        COUNT.with(|c| *c)
                    })
                })
                .collect();
            let seen: Vec<u32> = handles.into_iter().flatten().map(|h| h.join()).collect();
            check_eq!(seen, alloc::vec![10, 20, 30, 40]);
            // A new thread that reuses an id starts from the default again.
            let again = thread::spawn(|| COUNT.with(|c| *c));
            check_eq!(again.map(|h| h.join()).ok(), Some(0));
            Ok(())
        }
        fn blocking_calls_time_out(_: &mut Env) -> Outcome {
            with_scheduler()?;
            let (tx, rx) = sync::channel::<u32>();
            let start = $crate::hal::time::now_ns();
            let r = rx.recv_timeout_us(3000);
            let ms = ($crate::hal::time::now_ns() - start) as f64 / 1e6;
            check_eq!(r, Err(sync::RecvTimeoutError::Timeout));
            check!(
                (3.0..500.0).contains(&ms),
                "a 3 ms receive timeout took {ms:.2} ms"
            );
            let sender = thread::spawn(move || {
                thread::sleep_ms(1);
                tx.send(7);
            });
            check_eq!(rx.recv_timeout_us(1_000_000), Ok(7));
            if let Ok(h) = sender {
                h.join();
            }
            check_eq!(
                rx.recv_timeout_us(1000),
                Err(sync::RecvTimeoutError::Disconnected)
            );
            check!(
                !thread::park_timeout_us(500),
                "a park with nobody to unpark it did not time out"
            );
            Ok(())
        }
        /// Regression: an unpark that reached a thread in `sleep_ms` was
        /// dropped, so its next `park` blocked although the unpark came first.
        fn an_unpark_during_sleep_is_not_lost(_: &mut Env) -> Outcome {
            with_scheduler()?;
            let spawned = thread::spawn(|| {
                thread::sleep_ms(20);
                thread::park_timeout_us(500_000)
            });
            check!(spawned.is_ok(), "cannot spawn the sleeper");
            let Ok(sleeper) = spawned else {
                return Ok(());
            };
            thread::sleep_ms(5);
            thread::unpark(sleeper.id());
            check!(sleeper.join(), "the unpark sent during sleep_ms was lost");
            Ok(())
        }
        /// Regression: a spurious unpark (a stale socket waker) of a thread
        /// waiting in `Mutex::lock` queued it twice; an unlock then woke the
        /// stale entry and left a real waiter blocked on a free lock.
        fn spurious_unparks_do_not_strand_a_mutex_waiter(_: &mut Env) -> Outcome {
            with_scheduler()?;
            let m = Arc::new(sync::Mutex::new(0u32));
            let guard = m.lock();
            let (m1, m2) = (m.clone(), m.clone());
            let Ok(b) = thread::spawn(move || *m1.lock() += 1) else {
                check!(false, "cannot spawn");
                return Ok(());
            };
            thread::sleep_ms(2);
            for _ in 0..3 {
                thread::unpark(b.id());
                thread::sleep_ms(1);
            }
            let done = Arc::new(core::sync::atomic::AtomicBool::new(false));
            let c_done = done.clone();
            let Ok(c) = thread::spawn(move || {
                *m2.lock() += 10;
                c_done.store(true, core::sync::atomic::Ordering::SeqCst);
            }) else {
                check!(false, "cannot spawn");
                return Ok(());
            };
            thread::sleep_ms(2);
            drop(guard);
            // Watch without touching the mutex (each lock/unlock here would
            // pop a stale entry and rescue the stranded waiter).
            for _ in 0..200 {
                if done.load(core::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                thread::sleep_ms(5);
            }
            check!(
                done.load(core::sync::atomic::Ordering::SeqCst),
                "a waiter stayed blocked on a free mutex"
            );
            b.join();
            c.join();
            check_eq!(*m.lock(), 11);
            Ok(())
        }
        const SUITE: &[Test] = &[
            Test {
                name: concat!(
                    module_path!(),
                    "::spurious_unparks_do_not_strand_a_mutex_waiter"
                ),
                run: spurious_unparks_do_not_strand_a_mutex_waiter,
                requires: None,
            },
            Test {
                name: concat!(module_path!(), "::an_unpark_during_sleep_is_not_lost"),
                run: an_unpark_during_sleep_is_not_lost,
                requires: None,
            },
            Test {
                name: concat!(module_path!(), "::thread_locals_are_per_thread"),
                run: thread_locals_are_per_thread,
                requires: None,
            },
            Test {
                name: concat!(module_path!(), "::blocking_calls_time_out"),
                run: blocking_calls_time_out,
                requires: None,
            },
            Test {
                name: concat!(module_path!(), "::spawn_and_join_return_values"),
                run: spawn_and_join_return_values,
                requires: None,
            },
            Test {
                name: concat!(module_path!(), "::threads_can_be_created_again_and_again"),
                run: threads_can_be_created_again_and_again,
                requires: None,
            },
            Test {
                name: concat!(
                    module_path!(),
                    "::mutex_keeps_a_counter_exact_under_contention"
                ),
                run: mutex_keeps_a_counter_exact_under_contention,
                requires: None,
            },
            Test {
                name: concat!(module_path!(), "::condvar_hands_a_token_back_and_forth"),
                run: condvar_hands_a_token_back_and_forth,
                requires: None,
            },
            Test {
                name: concat!(module_path!(), "::semaphore_limits_concurrency"),
                run: semaphore_limits_concurrency,
                requires: None,
            },
            Test {
                name: concat!(module_path!(), "::channel_delivers_every_message_in_order"),
                run: channel_delivers_every_message_in_order,
                requires: None,
            },
            Test {
                name: concat!(module_path!(), "::sleeping_threads_wake_in_deadline_order"),
                run: sleeping_threads_wake_in_deadline_order,
                requires: None,
            },
        ];
        SUITE
    }};
}
