//! The `#[global_allocator]` glue around the app's heap allocator.
//!
//! [`GlobalHeap`] wraps any [`HeapAllocator`] in a spin lock and hands it
//! the region [`crate::memory`] set aside, on first use. Allocation failure
//! returns null as `GlobalAlloc` requires; Rust's alloc-error path then
//! panics with the size, which the panic handler reports.
//!
//! Limits: do not allocate in upcall (interrupt) handlers — the lock may
//! be held by the interrupted code.

use core::alloc::{GlobalAlloc, Layout};
pub use kiln_alloc::{HeapAllocator, HeapStats};

/// A heap allocator made usable as `#[global_allocator]`.
pub struct GlobalHeap<H> {
    inner: spin::Mutex<Option<H>>,
}

impl<H: HeapAllocator + Default> GlobalHeap<H> {
    /// An uninitialised heap; it takes its region on the first allocation.
    pub const fn new() -> Self {
        Self {
            inner: spin::Mutex::new(None),
        }
    }

    /// Usage figures (zero before the first allocation).
    pub fn stats(&self) -> HeapStats {
        // Same rule as `with`: never hold the heap lock preemptible, or an
        // allocating thread (preemption off) spins on it forever.
        crate::thread::preempt_disable();
        let stats = self.inner.lock().as_ref().map(H::stats).unwrap_or_default();
        crate::thread::preempt_enable();
        stats
    }

    fn with<R>(&self, f: impl FnOnce(&mut H) -> R) -> Option<R> {
        // A preempted lock holder would make every other allocating thread
        // spin; the heap lock is held with preemption off.
        crate::thread::preempt_disable();
        let result = self.with_locked(f);
        crate::thread::preempt_enable();
        result
    }

    fn with_locked<R>(&self, f: impl FnOnce(&mut H) -> R) -> Option<R> {
        let mut guard = self.inner.lock();
        if guard.is_none() {
            let (memory, metadata) = take_heap_region::<H>()?;
            let mut heap = H::default();
            heap.init(memory, metadata).ok()?;
            *guard = Some(heap);
        }
        guard.as_mut().map(f)
    }
}

/// Splits the heap region into the allocator's metadata (first, 64-byte
/// aligned) and the memory it manages; hands both out once.
fn take_heap_region<H: HeapAllocator>() -> Option<(&'static mut [u8], &'static mut [u64])> {
    use core::sync::atomic::{AtomicBool, Ordering};
    static TAKEN: AtomicBool = AtomicBool::new(false);
    let (start, size) = crate::memory::heap_region()?;
    if TAKEN.swap(true, Ordering::SeqCst) {
        return None;
    }
    let words = H::metadata_words(size);
    let meta_bytes = (words * 8).next_multiple_of(64);
    let mem_bytes = size.checked_sub(meta_bytes)?;
    // SAFETY: [start, start + size) is the heap region `memory::init`
    // reserved from free RAM (identity-mapped, writable, used by nothing
    // else); the TAKEN flag makes this the only time slices over it are
    // made, and the two slices do not overlap. `start` is page aligned.
    unsafe {
        let metadata = core::slice::from_raw_parts_mut(start as *mut u64, words);
        metadata.fill(0);
        let memory = core::slice::from_raw_parts_mut((start + meta_bytes) as *mut u8, mem_bytes);
        Some((memory, metadata))
    }
}

impl<H: HeapAllocator + Default> Default for GlobalHeap<H> {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: blocks come from the region `memory::init` reserved for the heap
// (RAM nobody else uses); the allocator contract (`HeapAllocator`) returns
// disjoint, suitably aligned blocks of at least `layout.size()` bytes, and
// the lock serialises all calls.
unsafe impl<H: HeapAllocator + Default> GlobalAlloc for GlobalHeap<H> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match self.with(|h| h.alloc(layout)).flatten() {
            Some(addr) => core::ptr::with_exposed_provenance_mut(addr),
            None => core::ptr::null_mut(),
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        self.with(|h| h.dealloc(ptr.expose_provenance(), layout));
    }
}

/// The statistics of the heap the app named in `kiln_rt::main!` (all
/// zero in host builds), e.g. for a server's status page or a soak test.
pub fn app_stats() -> HeapStats {
    #[cfg(kiln_guest)]
    {
        unsafe extern "Rust" {
            /// Defined by `kiln_rt::main!`.
            fn __kiln_heap_stats() -> HeapStats;
        }
        // SAFETY: `main!` defines `__kiln_heap_stats` with exactly this
        // signature; an image without it does not link.
        unsafe { __kiln_heap_stats() }
    }
    #[cfg(not(kiln_guest))]
    HeapStats::default()
}
