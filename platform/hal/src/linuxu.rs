//! The linuxu platform: the unikernel as an ordinary Linux process.
//!
//! The same libraries and apps run as a static executable with no libc
//! (built with `--cfg kiln_linuxu`), entered at `_start` and talking to
//! Linux through raw system calls:
//!
//! | PVH (VM) | linuxu |
//! |---|---|
//! | RAM from the memory map | a `memfd` of `mem=` bytes, mapped shared |
//! | console (hostcall, COM1) | `write(1, …)` |
//! | exit port | `exit_group` |
//! | `halt` | `pause` (returns after a signal handler ran) |
//! | `halt_for` | `nanosleep` (bounded; a signal ends it early) |
//! | map window, W^X | `mmap(MAP_FIXED_NOREPLACE)` of the memfd, W+X refused here *and* by seccomp |
//! | CPU exceptions | `SIGSEGV`/`SIGBUS`/`SIGILL`/`SIGFPE`/`SIGTRAP`: vector from `trapno` |
//! | APIC timer | `setitimer` + `SIGALRM` (vector 32) |
//! | TSC clock | `clock_gettime(CLOCK_MONOTONIC)` |
//!
//! Signals are turned into the same [`UpcallFrame`] as on PVH and handed to
//! [`crate::upcall::dispatch`]; the edited frame is written back into the
//! signal context, so returning from the handler resumes it.
//!
//! [`enter_sandbox`] then confines the process with a seccomp filter
//! ([`seccomp`]) that allows exactly the [`seccomp::ALLOWED`] system calls;
//! any other raises `SIGSYS`, whose handler prints
//! `kiln: sandbox violation: system call N …` and exits with
//! [`kiln_abi::exit::SANDBOX_VIOLATION`].

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use kiln_abi::sc::errno;
pub use kiln_abi::upcall::UpcallFrame;

use crate::platform::Platform;
use crate::sc::ScError;

pub mod seccomp;

/// Linux x86_64 system-call numbers used here.
pub mod nr {
    #![allow(missing_docs, reason = "Linux's own names")]
    pub const READ: u64 = 0;
    pub const WRITE: u64 = 1;
    pub const OPEN: u64 = 2;
    pub const CLOSE: u64 = 3;
    pub const LSEEK: u64 = 8;
    pub const MMAP: u64 = 9;
    pub const MUNMAP: u64 = 11;
    pub const CLOCK_GETTIME: u64 = 228;
    pub const RT_SIGACTION: u64 = 13;
    pub const RT_SIGRETURN: u64 = 15;
    pub const PAUSE: u64 = 34;
    pub const NANOSLEEP: u64 = 35;
    pub const SETITIMER: u64 = 38;
    pub const FTRUNCATE: u64 = 77;
    pub const SIGALTSTACK: u64 = 131;
    pub const PRCTL: u64 = 157;
    pub const RESTART_SYSCALL: u64 = 219;
    pub const EXIT_GROUP: u64 = 231;
    pub const FCNTL: u64 = 72;
    pub const GETPID: u64 = 39;
    pub const SECCOMP: u64 = 317;
    pub const MEMFD_CREATE: u64 = 319;
}

/// Makes a raw Linux system call.
///
/// # Safety
/// The call and its arguments must not break memory safety: e.g. `mmap`
/// with `MAP_FIXED` over memory Rust owns, or `write` from an invalid
/// buffer, are undefined behaviour.
pub unsafe fn syscall6(n: u64, a: [u64; 6]) -> i64 {
    let ret: i64;
    // SAFETY: the caller guarantees the call is memory-safe; `syscall`
    // clobbers only rcx and r11 besides the result.
    unsafe {
        core::arch::asm!("syscall", inlateout("rax") n as i64 => ret,
            in("rdi") a[0], in("rsi") a[1], in("rdx") a[2], in("r10") a[3], in("r8") a[4], in("r9") a[5],
            lateout("rcx") _, lateout("r11") _, options(nostack));
    }
    ret
}

/// One request/reply exchange on a host volume's 9P channel `fd` (a
/// socket the CLI passed; the sandbox allows `read` on these fds only):
/// writes `request`, reads one size-prefixed reply into `reply`; returns
/// its length, or the negative errno (`-EMSGSIZE` for a reply too big).
pub fn channel_rpc(fd: u64, request: &[u8], reply: &mut [u8]) -> Result<usize, i64> {
    const EINTR: i64 = 4;
    const EMSGSIZE: i64 = 90;
    write_all(fd, request);
    let read_exact = |buf: &mut [u8]| -> Result<(), i64> {
        let mut done = 0;
        while done < buf.len() {
            let rest = &mut buf[done..];
            // SAFETY: read writes at most `rest.len()` bytes into `rest`.
            let n = unsafe {
                syscall6(
                    nr::READ,
                    [fd, rest.as_mut_ptr() as u64, rest.len() as u64, 0, 0, 0],
                )
            };
            match n {
                n if n == -EINTR => continue,
                0 => return Err(-5), // EIO: the host closed the channel
                n if n < 0 => return Err(n),
                n => done += n as usize,
            }
        }
        Ok(())
    };
    let mut size = [0u8; 4];
    read_exact(&mut size)?;
    let len = u32::from_le_bytes(size) as usize;
    if !(7..=reply.len()).contains(&len) {
        return Err(-EMSGSIZE);
    }
    reply[..4].copy_from_slice(&size);
    read_exact(&mut reply[4..len])?;
    Ok(len)
}

/// Writes all of `bytes` to file descriptor `fd` (retrying short writes).
pub fn write_all(fd: u64, mut bytes: &[u8]) {
    const EINTR: i64 = 4;
    while !bytes.is_empty() {
        // SAFETY: the buffer is a valid slice for its length.
        let n = unsafe {
            syscall6(
                nr::WRITE,
                [fd, bytes.as_ptr() as u64, bytes.len() as u64, 0, 0, 0],
            )
        };
        if n == -EINTR {
            // The timer signal interrupted a blocking write (the handlers
            // are installed without SA_RESTART): the bytes are still ours.
            continue;
        }
        if n <= 0 {
            return; // closed or failing stdout: nothing better to do
        }
        bytes = &bytes[(n as usize).min(bytes.len())..];
    }
}

/// Ends the process with `status`.
pub fn exit_group(status: u8) -> ! {
    loop {
        // SAFETY: exit_group never returns and touches no memory.
        unsafe { syscall6(nr::EXIT_GROUP, [u64::from(status), 0, 0, 0, 0, 0]) };
    }
}

// ----------------------------------------------------------------- memory

static RAM_BASE: AtomicU64 = AtomicU64::new(0);
static RAM_BYTES: AtomicU64 = AtomicU64::new(0);
static RAM_FD: AtomicU64 = AtomicU64::new(u64::MAX);
/// Pages of the map window currently mapped (512 bits).
static WINDOW_MAPPED: [AtomicU64; 8] = [const { AtomicU64::new(0) }; 8];

const PROT_READ: u64 = 1;
const PROT_WRITE: u64 = 2;
const PROT_EXEC: u64 = 4;
const MAP_SHARED: u64 = 1;
const MAP_FIXED_NOREPLACE: u64 = 0x10_0000;

/// Why the process could not be set up as a guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetupError {
    /// A system call failed during setup: (which, errno).
    Syscall(&'static str, i64),
}

impl core::fmt::Display for SetupError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Syscall(what, e) => write!(f, "linuxu setup: {what} failed with errno {e}"),
        }
    }
}

fn check(what: &'static str, ret: i64) -> Result<u64, SetupError> {
    if ret < 0 {
        Err(SetupError::Syscall(what, -ret))
    } else {
        Ok(ret as u64)
    }
}

/// Creates the guest's RAM: a memfd of `bytes`, mapped read-write.
/// Returns `(base, bytes)`; page-aligned.
pub fn create_ram(bytes: u64) -> Result<(u64, u64), SetupError> {
    let bytes = bytes.next_multiple_of(4096);
    let name = b"kiln-ram\0";
    // SAFETY: memfd_create reads the NUL-terminated name only.
    let fd = check("memfd_create", unsafe {
        syscall6(nr::MEMFD_CREATE, [name.as_ptr() as u64, 1, 0, 0, 0, 0])
    })?;
    // SAFETY: ftruncate on our own new fd touches no memory.
    check("ftruncate", unsafe {
        syscall6(nr::FTRUNCATE, [fd, bytes, 0, 0, 0, 0])
    })?;
    // SAFETY: a new mapping at an address the kernel picks cannot overlap
    // memory Rust owns.
    let base = check("mmap", unsafe {
        syscall6(
            nr::MMAP,
            [0, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0],
        )
    })?;
    RAM_BASE.store(base, Ordering::SeqCst);
    RAM_BYTES.store(bytes, Ordering::SeqCst);
    RAM_FD.store(fd, Ordering::SeqCst);
    Ok((base, bytes))
}

/// Maps the file at `path` read-only (before the sandbox: it needs open,
/// lseek and close); returns `(address, size)`. `path` must be followed
/// by a NUL byte in memory (argv strings are).
pub fn map_file(path: &str) -> Result<(u64, u64), SetupError> {
    const O_RDONLY: u64 = 0;
    const SEEK_END: u64 = 2;
    const MAP_PRIVATE: u64 = 2;
    // SAFETY: `path` points at bytes followed by the NUL of its argv
    // string (the caller's contract); open only reads them.
    let fd = check("open", unsafe {
        syscall6(nr::OPEN, [path.as_ptr() as u64, O_RDONLY, 0, 0, 0, 0])
    })?;
    // SAFETY: lseek on our own fd touches no memory.
    let size = check("lseek", unsafe {
        syscall6(nr::LSEEK, [fd, 0, SEEK_END, 0, 0, 0])
    });
    let mapped = size.and_then(|size| {
        if size == 0 {
            return Ok((0, 0));
        }
        // SAFETY: a new private read-only mapping at an address the kernel
        // picks cannot overlap memory Rust owns.
        let addr = check("mmap", unsafe {
            syscall6(nr::MMAP, [0, size, PROT_READ, MAP_PRIVATE, fd, 0])
        })?;
        Ok((addr, size))
    });
    // SAFETY: closing our own fd; the mapping stays.
    unsafe { syscall6(nr::CLOSE, [fd, 0, 0, 0, 0, 0]) };
    mapped
}

/// The Linux process platform.
pub struct LinuxProcess;

impl Platform for LinuxProcess {
    const NAME: &'static str = "linuxu";

    fn console_write(bytes: &[u8]) {
        write_all(1, bytes);
    }

    fn exit(status: u8) -> ! {
        exit_group(status)
    }

    fn halt() {
        if crate::irq::wake_posted() {
            return;
        }
        // SAFETY: pause only waits for a signal.
        unsafe { syscall6(nr::PAUSE, [0; 6]) };
    }

    fn map(vaddr: u64, paddr: u64, flags: u64) -> Result<(), ScError> {
        use kiln_abi::sc::{MAP_EXEC, MAP_WRITE};
        let einval = Err(ScError(errno::EINVAL));
        if flags & !(MAP_WRITE | MAP_EXEC) != 0 {
            return einval;
        }
        if flags == MAP_WRITE | MAP_EXEC {
            return Err(ScError(errno::EPERM));
        }
        let page = window_page(vaddr)?;
        let (base, bytes) = (
            RAM_BASE.load(Ordering::SeqCst),
            RAM_BYTES.load(Ordering::SeqCst),
        );
        if !paddr.is_multiple_of(4096) || paddr < base || paddr >= base + bytes {
            return einval;
        }
        let mut prot = PROT_READ;
        if flags & MAP_WRITE != 0 {
            prot |= PROT_WRITE;
        }
        if flags & MAP_EXEC != 0 {
            prot |= PROT_EXEC;
        }
        let fd = RAM_FD.load(Ordering::SeqCst);
        // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping,
        // and the window range is reserved for these mappings (nothing Rust
        // owns lives there).
        let ret = unsafe {
            syscall6(
                nr::MMAP,
                [
                    vaddr,
                    4096,
                    prot,
                    MAP_SHARED | MAP_FIXED_NOREPLACE,
                    fd,
                    paddr - base,
                ],
            )
        };
        if ret == -errno::EEXIST || (ret >= 0 && ret as u64 != vaddr) {
            return Err(ScError(errno::EEXIST));
        }
        crate::sc::result(ret)?;
        WINDOW_MAPPED[page / 64].fetch_or(1 << (page % 64), Ordering::SeqCst);
        Ok(())
    }

    fn unmap(vaddr: u64) -> Result<(), ScError> {
        let page = window_page(vaddr)?;
        let bit = 1u64 << (page % 64);
        if WINDOW_MAPPED[page / 64].fetch_and(!bit, Ordering::SeqCst) & bit == 0 {
            return Err(ScError(errno::ENOENT));
        }
        // SAFETY: the page was mapped by `map` in the window; no Rust
        // reference points into the window.
        crate::sc::result(unsafe { syscall6(nr::MUNMAP, [vaddr, 4096, 0, 0, 0, 0]) }).map(|_| ())
    }

    fn halt_for_us(us: u64) {
        // nanosleep returns early (EINTR) when a signal arrives, and a
        // signal that came before it only makes it sleep its full, bounded
        // time: no lost wake-up.
        // A SIGIO (network channel) posted since the waiter's last check
        // ends the wait at once; one landing in the few instructions
        // between this check and nanosleep waits for the timer (bounded).
        if crate::irq::wake_posted() {
            return;
        }
        let us = us.max(1);
        let ts: [u64; 2] = [us / 1_000_000, (us % 1_000_000) * 1000];
        // SAFETY: nanosleep reads the 16-byte timespec; the remainder
        // pointer is null.
        unsafe { syscall6(nr::NANOSLEEP, [ts.as_ptr() as u64, 0, 0, 0, 0, 0]) };
    }

    fn wall_clock_ns() -> Option<u64> {
        const CLOCK_REALTIME: u64 = 0;
        let mut ts = [0u64; 2];
        // SAFETY: clock_gettime writes the 16-byte timespec it points to.
        let r = unsafe {
            syscall6(
                nr::CLOCK_GETTIME,
                [CLOCK_REALTIME, ts.as_mut_ptr() as u64, 0, 0, 0, 0],
            )
        };
        (r == 0).then(|| ts[0].saturating_mul(1_000_000_000).saturating_add(ts[1]))
    }

    fn monotonic_ns() -> u64 {
        const CLOCK_MONOTONIC: u64 = 1;
        let mut ts = [0u64; 2];
        // SAFETY: clock_gettime writes the 16-byte timespec it points to.
        unsafe {
            syscall6(
                nr::CLOCK_GETTIME,
                [CLOCK_MONOTONIC, ts.as_mut_ptr() as u64, 0, 0, 0, 0],
            )
        };
        ts[0].saturating_mul(1_000_000_000).saturating_add(ts[1])
    }

    fn timer_oneshot_us(us: u64) -> Result<(), ScError> {
        // struct itimerval { interval: timeval, value: timeval }
        let us = us.max(1);
        let itv: [u64; 4] = [0, 0, us / 1_000_000, us % 1_000_000];
        // SAFETY: setitimer reads the 32-byte itimerval and writes nothing
        // (old value pointer is null).
        crate::sc::result(unsafe { syscall6(nr::SETITIMER, [0, itv.as_ptr() as u64, 0, 0, 0, 0]) })
            .map(|_| ())
    }
}

/// Index of the window page at `vaddr`, or `EINVAL`.
fn window_page(vaddr: u64) -> Result<usize, ScError> {
    let off = vaddr.wrapping_sub(kiln_abi::MAP_WINDOW_BASE);
    if off >= kiln_abi::MAP_WINDOW_BYTES || !vaddr.is_multiple_of(4096) {
        return Err(ScError(errno::EINVAL));
    }
    Ok((off / 4096) as usize)
}

// ---------------------------------------------------------------- signals

const SIGILL: u64 = 4;
const SIGTRAP: u64 = 5;
const SIGBUS: u64 = 7;
const SIGFPE: u64 = 8;
const SIGSEGV: u64 = 11;
const SIGALRM: u64 = 14;
const SIGSYS: u64 = 31;
const SIGIO: u64 = 29;

/// Signals turned into upcalls (and SIGSYS, the sandbox's).
const HANDLED: [u64; 8] = [
    SIGILL, SIGTRAP, SIGBUS, SIGFPE, SIGSEGV, SIGALRM, SIGSYS, SIGIO,
];

const SA_SIGINFO: u64 = 4;
const SA_ONSTACK: u64 = 0x0800_0000;
const SA_RESTORER: u64 = 0x0400_0000;
const SA_NODEFER: u64 = 0x4000_0000;

/// Offsets in the kernel's `ucontext` (x86_64): `uc_mcontext.gregs` starts
/// at byte 40; these are indices into it (`REG_*` in `<sys/ucontext.h>`).
mod greg {
    pub const BASE: usize = 40;
    pub const R8: usize = 0;
    pub const R9: usize = 1;
    pub const R10: usize = 2;
    pub const R11: usize = 3;
    pub const R12: usize = 4;
    pub const R13: usize = 5;
    pub const R14: usize = 6;
    pub const R15: usize = 7;
    pub const RDI: usize = 8;
    pub const RSI: usize = 9;
    pub const RBP: usize = 10;
    pub const RBX: usize = 11;
    pub const RDX: usize = 12;
    pub const RAX: usize = 13;
    pub const RCX: usize = 14;
    pub const RSP: usize = 15;
    pub const RIP: usize = 16;
    pub const EFL: usize = 17;
    pub const ERR: usize = 19;
    pub const TRAPNO: usize = 20;
    pub const CR2: usize = 22;
    pub const COUNT: usize = 23;
}

/// Offset of `si_syscall` in `siginfo_t` for SIGSYS.
const SIGINFO_SYSCALL: usize = 24;

/// Alternate signal stack: handlers run here, so a stack overflow can
/// still be reported.
#[repr(C, align(16))]
struct AltStack([u8; 64 * 1024]);
static mut ALT_STACK: AltStack = AltStack([0; 64 * 1024]);

static IN_UPCALL: AtomicBool = AtomicBool::new(false);

#[cfg(all(kiln_guest, kiln_linuxu))]
core::arch::global_asm!(
    ".pushsection .text.kiln_linuxu, \"ax\", @progbits",
    ".globl _start",
    "_start:",
    "    mov rdi, rsp",          // &argc
    "    and rsp, -16",
    "    call kiln_linuxu_entry",
    "    ud2",
    ".globl kiln_linuxu_restorer",
    "kiln_linuxu_restorer:",
    "    mov eax, 15",           // rt_sigreturn
    "    syscall",
    "    ud2",
    ".popsection",
    // Marks the executable as a Kiln linuxu image (kiln_abi::LINUXU_NOTE_TYPE).
    ".pushsection .note.kiln, \"a\", @note",
    ".balign 4",
    ".long 5, 0, {note_type}",
    ".asciz \"Kiln\"",
    ".balign 4",
    ".popsection",
    note_type = const kiln_abi::LINUXU_NOTE_TYPE,
);

#[cfg(all(kiln_guest, kiln_linuxu))]
unsafe extern "C" {
    fn kiln_linuxu_restorer();
}

/// The restorer address for `rt_sigaction` (0 outside linuxu guest builds).
fn restorer() -> u64 {
    #[cfg(all(kiln_guest, kiln_linuxu))]
    {
        kiln_linuxu_restorer as *const () as u64
    }
    #[cfg(not(all(kiln_guest, kiln_linuxu)))]
    {
        0
    }
}

/// Installs the signal handlers on an alternate stack.
pub fn install_signal_handlers() -> Result<(), SetupError> {
    let stack_base = (&raw mut ALT_STACK) as u64;
    // stack_t { ss_sp, ss_flags (int + pad), ss_size }
    let ss: [u64; 3] = [stack_base, 0, core::mem::size_of::<AltStack>() as u64];
    // SAFETY: sigaltstack reads the 24-byte stack_t; the alternate stack is
    // a static used by nothing but signal delivery.
    check("sigaltstack", unsafe {
        syscall6(nr::SIGALTSTACK, [ss.as_ptr() as u64, 0, 0, 0, 0, 0])
    })?;
    for sig in HANDLED {
        // While a handler runs, the timer and I/O signals wait (interrupts
        // off).
        let mask = (1u64 << (SIGALRM - 1)) | (1u64 << (SIGIO - 1));
        // struct kernel_sigaction { handler, flags, restorer, mask }
        let act: [u64; 4] = [
            on_signal as *const () as u64,
            SA_SIGINFO | SA_ONSTACK | SA_RESTORER | SA_NODEFER,
            restorer(),
            mask,
        ];
        // SAFETY: rt_sigaction reads the 32-byte sigaction; the handler is
        // an `extern "C"` function with the SA_SIGINFO signature.
        check("rt_sigaction", unsafe {
            syscall6(nr::RT_SIGACTION, [sig, act.as_ptr() as u64, 0, 8, 0, 0])
        })?;
    }
    Ok(())
}

/// Makes the network channel `fd` (a datagram socket the CLI passed)
/// non-blocking and asks for `SIGIO` to this process when it becomes
/// readable: the signal is the channel's interrupt
/// ([`kiln_abi::LINUXU_NET_IRQ`]). Must run before the sandbox (which
/// forbids `fcntl`).
pub fn setup_net_channel(fd: u64) -> Result<(), SetupError> {
    const F_SETOWN: u64 = 8;
    const F_SETFL: u64 = 4;
    const O_NONBLOCK: u64 = 0o4000;
    const O_ASYNC: u64 = 0o20000;
    // SAFETY: getpid has no arguments and no memory effects.
    let pid = check("getpid", unsafe { syscall6(nr::GETPID, [0; 6]) })?;
    // SAFETY: fcntl on a file descriptor with integer arguments touches no
    // memory of ours.
    check("fcntl(F_SETOWN)", unsafe {
        syscall6(nr::FCNTL, [fd, F_SETOWN, pid, 0, 0, 0])
    })?;
    // SAFETY: as above.
    check("fcntl(F_SETFL)", unsafe {
        syscall6(nr::FCNTL, [fd, F_SETFL, O_NONBLOCK | O_ASYNC, 0, 0, 0])
    })?;
    Ok(())
}

/// Reads one datagram (a frame) from the non-blocking channel `fd` into
/// `buf`: its length, `Ok(None)` when none is waiting, or the negative
/// errno (`-EIO` when the host closed the channel).
pub fn channel_recv(fd: u64, buf: &mut [u8]) -> Result<Option<usize>, i64> {
    const EAGAIN: i64 = 11;
    const EINTR: i64 = 4;
    loop {
        // SAFETY: read writes at most `buf.len()` bytes into `buf`.
        let n = unsafe {
            syscall6(
                nr::READ,
                [fd, buf.as_mut_ptr() as u64, buf.len() as u64, 0, 0, 0],
            )
        };
        match n {
            n if n == -EINTR => continue,
            n if n == -EAGAIN => return Ok(None),
            0 => return Err(-5),
            n if n < 0 => return Err(n),
            n => return Ok(Some(n as usize)),
        }
    }
}

/// Sends `frame` as one datagram on the channel `fd`; a full socket
/// buffer drops it (`false`), as a full NIC ring would.
pub fn channel_send(fd: u64, frame: &[u8]) -> bool {
    const EINTR: i64 = 4;
    loop {
        // SAFETY: write reads `frame.len()` bytes from `frame`.
        let n = unsafe {
            syscall6(
                nr::WRITE,
                [fd, frame.as_ptr() as u64, frame.len() as u64, 0, 0, 0],
            )
        };
        if n == -EINTR {
            continue;
        }
        return n >= 0;
    }
}

/// Confines the process: no new privileges, then the seccomp filter.
pub fn enter_sandbox() -> Result<(), SetupError> {
    const PR_SET_NO_NEW_PRIVS: u64 = 38;
    const SECCOMP_SET_MODE_FILTER: u64 = 1;
    // SAFETY: prctl(NO_NEW_PRIVS) touches no memory.
    check("prctl(NO_NEW_PRIVS)", unsafe {
        syscall6(nr::PRCTL, [PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0, 0])
    })?;
    let program = seccomp::filter();
    // struct sock_fprog { u16 len; (pad) ; *filter }
    let fprog: [u64; 2] = [program.len() as u64, program.as_ptr() as u64];
    // SAFETY: seccomp reads the sock_fprog and the filter it points to,
    // both alive for the call.
    check("seccomp", unsafe {
        syscall6(
            nr::SECCOMP,
            [SECCOMP_SET_MODE_FILTER, 0, fprog.as_ptr() as u64, 0, 0, 0],
        )
    })?;
    Ok(())
}

/// Reads general register `i` of the signal context.
///
/// # Safety
/// `uctx` is the `ucontext` the kernel passed to the handler.
unsafe fn greg_get(uctx: *mut u8, i: usize) -> u64 {
    debug_assert!(i < greg::COUNT);
    // SAFETY: the kernel's ucontext holds gregs[23] of u64 at byte 40,
    // 8-aligned.
    unsafe { core::ptr::read(uctx.add(greg::BASE + i * 8).cast::<u64>()) }
}

/// Writes general register `i` of the signal context.
///
/// # Safety
/// As for [`greg_get`].
unsafe fn greg_set(uctx: *mut u8, i: usize, v: u64) {
    // SAFETY: as in greg_get; the context is ours until the handler returns.
    unsafe { core::ptr::write(uctx.add(greg::BASE + i * 8).cast::<u64>(), v) }
}

/// Register order shared by the frame and the signal context.
/// Picks one register field out of a frame.
type FieldOf = fn(&mut UpcallFrame) -> &mut u64;

const PAIRS: [(usize, FieldOf); 18] = [
    (greg::RAX, |f| &mut f.rax),
    (greg::RBX, |f| &mut f.rbx),
    (greg::RCX, |f| &mut f.rcx),
    (greg::RDX, |f| &mut f.rdx),
    (greg::RSI, |f| &mut f.rsi),
    (greg::RDI, |f| &mut f.rdi),
    (greg::RBP, |f| &mut f.rbp),
    (greg::R8, |f| &mut f.r8),
    (greg::R9, |f| &mut f.r9),
    (greg::R10, |f| &mut f.r10),
    (greg::R11, |f| &mut f.r11),
    (greg::R12, |f| &mut f.r12),
    (greg::R13, |f| &mut f.r13),
    (greg::R14, |f| &mut f.r14),
    (greg::R15, |f| &mut f.r15),
    (greg::RIP, |f| &mut f.rip),
    (greg::RSP, |f| &mut f.rsp),
    (greg::EFL, |f| &mut f.rflags),
];

fn print_and_exit(message: &[u8], status: u8) -> ! {
    write_all(1, message);
    exit_group(status)
}

/// The line (on stderr) that reports a sandbox violation; the CLI parses it.
pub const VIOLATION_PREFIX: &str = "kiln: sandbox violation: system call ";

fn sandbox_violation(number: i32) -> ! {
    let mut buf = [0u8; 128];
    let mut len = 0;
    let head = VIOLATION_PREFIX.as_bytes();
    buf[..head.len()].copy_from_slice(head);
    len += head.len();
    let mut digits = [0u8; 12];
    let mut n = i64::from(number).unsigned_abs();
    let mut d = digits.len();
    loop {
        d -= 1;
        digits[d] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let tail = b" is not allowed on linuxu; stopping\n";
    buf[len..len + digits.len() - d].copy_from_slice(&digits[d..]);
    len += digits.len() - d;
    buf[len..len + tail.len()].copy_from_slice(tail);
    len += tail.len();
    write_all(2, &buf[..len]);
    exit_group(kiln_abi::exit::SANDBOX_VIOLATION)
}

extern "C" fn on_signal(sig: i32, info: *mut u8, uctx: *mut u8) {
    let sig = sig as u64;
    if sig == SIGSYS {
        // SAFETY: for SIGSYS the kernel fills siginfo's _sigsys part;
        // si_syscall is an int at byte 24.
        let number = unsafe { core::ptr::read(info.add(SIGINFO_SYSCALL).cast::<i32>()) };
        sandbox_violation(number);
    }
    if IN_UPCALL.swap(true, Ordering::SeqCst) {
        print_and_exit(
            b"\nkiln: CPU exception inside the exception handler; stopping\n",
            kiln_abi::exit::DOUBLE_FAULT,
        );
    }
    let mut frame = UpcallFrame::default();
    for (i, field) in PAIRS {
        // SAFETY: uctx is the handler's ucontext.
        *field(&mut frame) = unsafe { greg_get(uctx, i) };
    }
    frame.cs = 0x33;
    frame.ss = 0x2b;
    // SAFETY: uctx is the handler's ucontext.
    let (trapno, err, cr2) = unsafe {
        (
            greg_get(uctx, greg::TRAPNO),
            greg_get(uctx, greg::ERR),
            greg_get(uctx, greg::CR2),
        )
    };
    let interrupt = sig == SIGALRM || sig == SIGIO;
    frame.vector = match sig {
        SIGALRM => u64::from(kiln_abi::upcall::TIMER_VECTOR),
        SIGIO => u64::from(crate::irq::FIRST_DEVICE_VECTOR + kiln_abi::LINUXU_NET_IRQ),
        _ => trapno,
    };
    frame.error_code = if interrupt { 0 } else { err };
    frame.cr2 = if frame.vector == 14 { cr2 } else { 0 };
    crate::upcall::dispatch(&mut frame);
    let rip = frame.rip;
    if ((rip << 16) as i64 >> 16) as u64 != rip {
        print_and_exit(
            b"\nkiln: cannot resume: the upcall frame holds a non-canonical rip\n",
            kiln_abi::exit::DOUBLE_FAULT,
        );
    }
    for (i, field) in PAIRS {
        // SAFETY: uctx is the handler's ucontext; returning resumes it.
        unsafe { greg_set(uctx, i, *field(&mut frame)) };
    }
    IN_UPCALL.store(false, Ordering::SeqCst);
}

/// Bounds of the process stack the guest started on, for crash reports:
/// `(lowest, highest)` address considered readable.
static STACK_TOP: AtomicU64 = AtomicU64::new(0);

/// Records the initial stack pointer (called from the entry).
pub fn set_stack_top(sp: u64) {
    STACK_TOP.store(sp, Ordering::SeqCst);
}

/// Whether `addr` is inside the initial stack (8 MiB below its top) or the RAM.
pub fn readable(addr: u64) -> bool {
    let top = STACK_TOP.load(Ordering::SeqCst);
    let (base, bytes) = (
        RAM_BASE.load(Ordering::SeqCst),
        RAM_BYTES.load(Ordering::SeqCst),
    );
    (addr < top && addr >= top.saturating_sub(8 << 20)) || (addr >= base && addr < base + bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_pages_are_checked() {
        assert_eq!(window_page(kiln_abi::MAP_WINDOW_BASE), Ok(0));
        assert_eq!(window_page(kiln_abi::MAP_WINDOW_BASE + 4096 * 511), Ok(511));
        assert!(window_page(kiln_abi::MAP_WINDOW_BASE + kiln_abi::MAP_WINDOW_BYTES).is_err());
        assert!(window_page(kiln_abi::MAP_WINDOW_BASE - 4096).is_err());
        assert!(window_page(kiln_abi::MAP_WINDOW_BASE + 1).is_err());
    }
}
