//! The image's own page protections: W^X for text, rodata and data, and
//! guard pages under the stacks.
//!
//! The supervisor's boot page tables map the image read-write-execute
//! (it cannot know section boundaries); [`harden_image`], run first thing
//! by the runtime, asks it (`protect`) to make text read-execute, rodata
//! read-only, data and bss read-write and not executable, and to unmap the
//! guard pages below the boot and upcall stacks, so an overflow faults and
//! is reported as one ([`guard_page_of`]); free memory after the image
//! becomes non-executable like all memory outside it already is. On linuxu the kernel lays the executable out
//! with the same permissions and guards the stack; nothing is done there.
//!
//! Limits: only the first 2 MiB (where the image lives; the linker script
//! checks text ends below it) can be changed.

use crate::sc::ScError;

/// Sets the access of `pages` identity-mapped pages from `vaddr` (PVH):
/// a set of `kiln_abi::sc::PROTECT_*` flags. `ENOSYS` on linuxu.
pub fn protect(vaddr: u64, pages: u64, flags: u64) -> Result<(), ScError> {
    if cfg!(kiln_linuxu) {
        return Err(ScError(kiln_abi::sc::errno::ENOSYS));
    }
    crate::sc::result(crate::sc::raw(kiln_abi::sc::PROTECT, vaddr, pages, flags)).map(|_| ())
}

/// Address ranges of the image (PVH builds; empty elsewhere).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImageLayout {
    /// Code: read and execute.
    pub text: (u64, u64),
    /// Constants: read only.
    pub rodata: (u64, u64),
    /// Data and bss: read and write.
    pub data: (u64, u64),
    /// Guard page below the boot stack.
    pub boot_stack_guard: u64,
    /// Guard page below the upcall (exception handler) stack.
    pub upcall_stack_guard: u64,
}

/// The image's layout, from the linker script's symbols.
#[cfg(all(kiln_guest, not(kiln_linuxu)))]
pub fn image_layout() -> ImageLayout {
    unsafe extern "C" {
        static __text_start: u8;
        static __text_end: u8;
        static __rodata_start: u8;
        static __data_start: u8;
        static _end: u8;
        static kiln_boot_stack_guard: u8;
        static kiln_upcall_stack_guard: u8;
    }
    let a = |p: *const u8| p as u64;
    ImageLayout {
        text: (a(&raw const __text_start), a(&raw const __text_end)),
        rodata: (a(&raw const __rodata_start), a(&raw const __data_start)),
        data: (a(&raw const __data_start), a(&raw const _end)),
        boot_stack_guard: a(&raw const kiln_boot_stack_guard),
        upcall_stack_guard: a(&raw const kiln_upcall_stack_guard),
    }
}

/// The image's layout (nothing to protect outside PVH guest builds).
#[cfg(not(all(kiln_guest, not(kiln_linuxu))))]
pub fn image_layout() -> ImageLayout {
    ImageLayout::default()
}

/// Applies W^X to the image and unmaps the stack guard pages (PVH).
pub fn harden_image() -> Result<ImageLayout, ScError> {
    use kiln_abi::sc::{PROTECT_EXEC, PROTECT_NONE, PROTECT_WRITE};
    let l = image_layout();
    if l == ImageLayout::default() {
        return Ok(l);
    }
    let pages = |(start, end): (u64, u64)| (end.saturating_sub(start)).div_ceil(4096);
    let limit = kiln_abi::sc::PROTECT_LIMIT;
    protect(l.text.0, pages(l.text), PROTECT_EXEC)?;
    protect(l.rodata.0, pages(l.rodata), 0)?;
    // Data beyond 2 MiB is already read-write, non-executable.
    let data_end = l.data.1.min(limit);
    if data_end > l.data.0 {
        protect(l.data.0, pages((l.data.0, data_end)), PROTECT_WRITE)?;
    }
    // Free memory after the image in the first 2 MiB (the rest of RAM is
    // mapped with non-executable 2 MiB pages already).
    let after = l.data.1.next_multiple_of(4096);
    if after < limit {
        protect(after, (limit - after) / 4096, PROTECT_WRITE)?;
    }
    for guard in [l.boot_stack_guard, l.upcall_stack_guard] {
        if guard + 4096 <= limit {
            protect(guard, 1, PROTECT_NONE)?;
        }
    }
    Ok(l)
}

/// Which stack's guard page holds `addr`, if any (for crash reports).
pub fn guard_page_of(addr: u64) -> Option<&'static str> {
    let l = image_layout();
    let within = |page: u64| page != 0 && (page..page + 4096).contains(&addr);
    if within(l.boot_stack_guard) {
        Some("boot")
    } else if within(l.upcall_stack_guard) {
        Some("exception-handler")
    } else {
        None
    }
}
