//! `memcpy`, `memmove`, `memset`, `memcmp`, `bcmp` and `strlen` for guest images.
//!
//! The host triple's precompiled `core` calls these C symbols, and a guest
//! links no libc (docs/adr/0001). They use the x86 string instructions,
//! which are fast on every CPU with ERMS and cannot be turned back into
//! calls to themselves by the optimiser. Guest-only (`--cfg kiln_guest`):
//! a host build keeps its libc's versions.

#[cfg(kiln_guest)]
mod imp {
    /// # Safety
    /// `dst` and `src` are valid for `n` bytes and do not overlap.
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
        // SAFETY: the caller guarantees both ranges are valid for n bytes;
        // `rep movsb` touches exactly those bytes (DF is clear per the ABI).
        unsafe {
            core::arch::asm!("rep movsb", inout("rdi") dst => _, inout("rsi") src => _,
                inout("rcx") n => _, options(nostack, preserves_flags));
        }
        dst
    }

    /// # Safety
    /// `dst` and `src` are valid for `n` bytes; they may overlap.
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
        if (dst as usize).wrapping_sub(src as usize) >= n {
            // Forward copy is safe: dst is below src or past its end.
            // SAFETY: forwarded contract; forward order never reads a byte
            // it already overwrote in this case.
            return unsafe { memcpy(dst, src, n) };
        }
        // SAFETY: the caller guarantees validity; copying backwards from the
        // last byte (DF set, then cleared again) handles dst above src.
        unsafe {
            core::arch::asm!("std", "rep movsb", "cld",
                inout("rdi") dst.wrapping_add(n).wrapping_sub(1) => _,
                inout("rsi") src.wrapping_add(n).wrapping_sub(1) => _,
                inout("rcx") n => _, options(nostack));
        }
        dst
    }

    /// # Safety
    /// `dst` is valid for `n` bytes.
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn memset(dst: *mut u8, value: i32, n: usize) -> *mut u8 {
        // SAFETY: the caller guarantees dst is valid for n bytes; `rep stosb`
        // writes exactly those.
        unsafe {
            core::arch::asm!("rep stosb", inout("rdi") dst => _, inout("rcx") n => _,
                in("al") value as u8, options(nostack, preserves_flags));
        }
        dst
    }

    /// # Safety
    /// `a` and `b` are valid for `n` bytes.
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
        let mut i = 0;
        while i < n {
            // SAFETY: i < n and the caller guarantees n readable bytes.
            let (x, y) = unsafe {
                (
                    core::ptr::read_volatile(a.add(i)),
                    core::ptr::read_volatile(b.add(i)),
                )
            };
            if x != y {
                return i32::from(x) - i32::from(y);
            }
            i += 1;
        }
        0
    }

    /// # Safety
    /// `a` and `b` are valid for `n` bytes.
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
        // SAFETY: same contract as memcmp.
        unsafe { memcmp(a, b, n) }
    }

    /// # Safety
    /// `s` points at a NUL-terminated string.
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn strlen(s: *const u8) -> usize {
        let end: *const u8;
        // SAFETY: the caller guarantees a NUL byte follows; `repne scasb`
        // reads up to and including it (rcx = -1: no other bound).
        unsafe {
            core::arch::asm!("repne scasb", inout("rdi") s => end, inout("rcx") usize::MAX => _,
                in("al") 0u8, options(nostack, readonly));
        }
        end as usize - s as usize - 1
    }

    /// The host `alloc` references the unwinder's personality routine; a
    /// guest never unwinds (panic = abort), so it is never called.
    #[unsafe(no_mangle)]
    pub extern "C" fn rust_eh_personality() {}

    /// Referenced by precompiled unwinding code paths; never reached with
    /// panic = abort, so reaching it is a bug and ends the guest.
    #[unsafe(no_mangle)]
    pub extern "C" fn _Unwind_Resume() -> ! {
        crate::sc::exit(kiln_abi::exit::PANIC)
    }
}
