//! In-guest tests of the supervisor: every CPL0 path, run on a booted guest.
//!
//! [`SUITE`] holds every case as a `kiln_ktest` test; `apps/selftest`
//! (and `apps/ktest`) run it, and the integration tests check the output
//! on every platform.
//!
//! Covered: the supervisor-call gate and each call (map and unmap with
//! their error cases and W^X, resume with edited registers, x2APIC writes,
//! halt woken by an interrupt), exception upcalls (#BP, #UD, #GP, #DE, #PF
//! on read, write and execute), interrupt upcalls while CPL3 code runs and
//! while halted, the APIC end-of-interrupt, and the `syscall` stub. Exit
//! and the fatal paths (crash report, fault in a handler) are covered by
//! the `fault` and `panic` apps.

use core::sync::atomic::{AtomicU64, Ordering};

use kiln_abi::sc::{self as abi_sc, errno};

use kiln_ktest::{Env, Outcome, Suite};

use crate::sc::{self, ScError};
use crate::upcall::{self, UpcallFrame};

/// Wraps each `fn() -> Result<(), &str>` case as a ktest test that first
/// makes sure the scratch pages exist.
macro_rules! suite {
    ($($f:ident $(= $p:literal)?),* $(,)?) => {{
        mod wrapped {
            $(
                pub fn $f(env: &mut kiln_ktest::Env) -> kiln_ktest::Outcome {
                    super::ensure_scratch(env)?;
                    super::$f().map_err(|m| kiln_ktest::Failure {
                        message: alloc::string::String::from(m),
                        location: concat!(file!(), " ", stringify!($f)),
                    })
                }
            )*
        }
        &[$(kiln_ktest::Test {
            name: concat!("kiln_hal::selftest::", stringify!($f)),
            run: wrapped::$f,
            requires: suite!(@requires $($p)?),
        }),*]
    }};
    (@requires) => { None };
    (@requires $p:literal) => { Some($p) };
}

/// The supervisor's in-guest tests, as a [`kiln_ktest::Suite`].
///
/// Cases marked `pvh` test the CPL0 supervisor itself and are skipped on
/// linuxu; the others test the platform API every platform provides.
pub const SUITE: Suite = suite![
    syscall_returns_enosys = "pvh",
    breakpoint_upcall_resumes,
    resume_restores_edited_registers,
    invalid_opcode_upcall,
    general_protection_upcall,
    divide_error_upcall,
    null_read_page_fault,
    map_rejects_bad_arguments,
    map_refuses_write_and_execute,
    map_refuses_supervisor_pages = "pvh",
    map_write_then_unmap,
    read_only_mapping_faults_on_write,
    executable_mapping_runs_code,
    non_executable_mapping_faults_on_fetch,
    apic_write_range_is_checked = "pvh",
    timer_interrupt_while_running,
    halt_wakes_on_timer_interrupt,
    interrupt_preserves_sse_registers,
    supervisor_calls_preserve_registers = "pvh",
    protect_rejects_a_wrapping_range = "pvh",
    writing_code_faults,
    writing_constants_faults,
    executing_data_faults,
    executing_the_heap_faults,
    device_interrupt_through_the_ioapic = "pvh",
];

/// Two page-aligned pages the mapping cases may overwrite.
static SCRATCH: AtomicU64 = AtomicU64::new(0);

fn ensure_scratch(env: &mut Env) -> Outcome {
    if SCRATCH.load(Ordering::SeqCst) == 0 {
        let Some(pages) = (env.memory)(8192) else {
            return Err(kiln_ktest::Failure {
                message: "no memory for the scratch pages".into(),
                location: file!(),
            });
        };
        SCRATCH.store(pages.as_mut_ptr() as u64, Ordering::SeqCst);
    }
    Ok(())
}

fn check(ok: bool, why: &'static str) -> Result<(), &'static str> {
    if ok { Ok(()) } else { Err(why) }
}

// Handlers cannot capture: they report through these.
static HITS: AtomicU64 = AtomicU64::new(0);
static LAST_CR2: AtomicU64 = AtomicU64::new(0);
static LAST_ERROR: AtomicU64 = AtomicU64::new(0);
static SKIP_BYTES: AtomicU64 = AtomicU64::new(0);

fn count_and_skip(frame: &mut UpcallFrame) {
    HITS.fetch_add(1, Ordering::SeqCst);
    LAST_CR2.store(frame.cr2, Ordering::SeqCst);
    LAST_ERROR.store(frame.error_code, Ordering::SeqCst);
    frame.rip += SKIP_BYTES.load(Ordering::SeqCst);
}

/// Registers `count_and_skip` for `vector`, runs `f`, unregisters; returns the hits.
fn with_handler(vector: u8, skip: u64, f: impl FnOnce()) -> Result<u64, &'static str> {
    HITS.store(0, Ordering::SeqCst);
    SKIP_BYTES.store(skip, Ordering::SeqCst);
    upcall::register(vector, count_and_skip).map_err(|_| "vector busy")?;
    f();
    upcall::unregister(vector);
    Ok(HITS.load(Ordering::SeqCst))
}

fn syscall_returns_enosys() -> Result<(), &'static str> {
    let ret: i64;
    // SAFETY: `syscall` enters the LSTAR stub, which only sets rax and
    // returns to rcx; rcx and r11 are declared clobbered.
    unsafe {
        core::arch::asm!("syscall", inlateout("rax") 39i64 => ret, lateout("rcx") _, lateout("r11") _,
            options(nostack));
    }
    check(ret == -errno::ENOSYS, "syscall did not return -ENOSYS")
}

fn breakpoint_upcall_resumes() -> Result<(), &'static str> {
    let hits = with_handler(3, 0, crate::provoke::breakpoint)?;
    check(hits == 1, "breakpoint handler did not run exactly once")
}

fn set_rbx(frame: &mut UpcallFrame) {
    frame.rbx = 0x1234_5678_9abc_def0;
    frame.r15 = 0x0f0f;
}

fn resume_restores_edited_registers() -> Result<(), &'static str> {
    upcall::register(3, set_rbx).map_err(|_| "vector busy")?;
    let (rbx, r15): (u64, u64);
    // SAFETY: int3 with rax = 0 is a breakpoint; the handler edits rbx
    // (saved and restored around it, LLVM reserves it) and r15 (an output).
    unsafe {
        core::arch::asm!("push rbx", "xor ebx, ebx", "xor r15d, r15d", "int3", "mov {0}, rbx", "pop rbx",
            out(reg) rbx, in("rax") 0u64, out("r15") r15);
    }
    upcall::unregister(3);
    check(
        rbx == 0x1234_5678_9abc_def0 && r15 == 0x0f0f,
        "edited registers were not restored",
    )
}

fn invalid_opcode_upcall() -> Result<(), &'static str> {
    let hits = with_handler(6, 2, crate::provoke::invalid_opcode)?;
    check(hits == 1, "#UD handler did not run")
}

fn general_protection_upcall() -> Result<(), &'static str> {
    let hits = with_handler(13, 1, crate::provoke::privileged_instruction)?;
    check(hits == 1, "#GP handler did not run")
}

fn divide_error_upcall() -> Result<(), &'static str> {
    let hits = with_handler(0, 3, crate::provoke::divide_error)?;
    check(hits == 1, "#DE handler did not run")
}

fn null_read_page_fault() -> Result<(), &'static str> {
    let hits = with_handler(14, 8, || {
        crate::provoke::null_read();
    })?;
    check(hits == 1, "#PF handler did not run")?;
    check(LAST_CR2.load(Ordering::SeqCst) == 0, "cr2 is not 0")?;
    check(
        LAST_ERROR.load(Ordering::SeqCst) & 0b101 == 0b100,
        "error code is not user/not-present",
    )
}

const WINDOW: u64 = kiln_abi::MAP_WINDOW_BASE;

/// The scratch pages (see `ensure_scratch`).
fn scratch_page() -> u64 {
    SCRATCH.load(Ordering::SeqCst)
}

fn map_rejects_bad_arguments() -> Result<(), &'static str> {
    let p = scratch_page();
    let einval = Err(ScError(errno::EINVAL));
    check(
        sc::map(WINDOW + 1, p, 0) == einval,
        "unaligned vaddr accepted",
    )?;
    check(
        sc::map(WINDOW, p + 8, 0) == einval,
        "unaligned paddr accepted",
    )?;
    check(
        sc::map(WINDOW - 4096, p, 0) == einval,
        "vaddr below the window accepted",
    )?;
    check(
        sc::map(WINDOW + kiln_abi::MAP_WINDOW_BYTES, p, 0) == einval,
        "vaddr above the window accepted",
    )?;
    check(sc::map(WINDOW, p, 4) == einval, "unknown flag accepted")?;
    check(sc::map(WINDOW, 1 << 40, 0) == einval, "huge paddr accepted")?;
    check(sc::unmap(WINDOW + 8) == einval, "unaligned unmap accepted")?;
    check(
        sc::unmap(WINDOW) == Err(ScError(errno::ENOENT)),
        "unmap of nothing succeeded",
    )
}

fn map_refuses_write_and_execute() -> Result<(), &'static str> {
    let r = sc::map(WINDOW, scratch_page(), abi_sc::MAP_WRITE | abi_sc::MAP_EXEC);
    check(
        r == Err(ScError(errno::EPERM)),
        "W+X mapping was not refused with EPERM",
    )
}

fn map_refuses_supervisor_pages() -> Result<(), &'static str> {
    for page in [0, kiln_abi::SUP_PAGES - 1] {
        let paddr = kiln_abi::IMAGE_BASE + page * kiln_abi::PAGE_SIZE;
        check(
            sc::map(WINDOW, paddr, 0) == Err(ScError(errno::EPERM)),
            "supervisor page mappable",
        )?;
    }
    Ok(())
}

/// Reads 8 bytes at `addr` with a 3-byte `mov rax, [rdi]`.
///
/// # Safety
/// `addr` is readable and not memory Rust code holds a `&mut` to, or it
/// faults and a registered #PF handler skips the 3-byte instruction.
unsafe fn read_u64(addr: u64) -> u64 {
    let v: u64;
    // SAFETY: forwarded from the caller.
    unsafe {
        core::arch::asm!("mov rax, qword ptr [rdi]", in("rdi") addr, out("rax") v, options(nostack, readonly))
    };
    v
}

/// Writes 8 bytes at `addr` with a 3-byte `mov [rdi], rax`.
///
/// # Safety
/// `addr` lies in the scratch pages (directly or through a window mapping
/// of them), or it faults and a registered #PF handler skips the 3-byte
/// instruction.
unsafe fn write_u64(addr: u64, v: u64) {
    // SAFETY: forwarded from the caller.
    unsafe {
        core::arch::asm!("mov qword ptr [rdi], rax", in("rdi") addr, in("rax") v, options(nostack))
    };
}

fn map_write_then_unmap() -> Result<(), &'static str> {
    let p = scratch_page() + 4096;
    sc::map(WINDOW + 4096, p, abi_sc::MAP_WRITE).map_err(|_| "map failed")?;
    check(
        sc::map(WINDOW + 4096, p, 0) == Err(ScError(errno::EEXIST)),
        "double map accepted",
    )?;
    // SAFETY: the window page maps the second scratch page, writable.
    unsafe { write_u64(WINDOW + 4096 + 16, 0xfeed_f00d) };
    // SAFETY: p is the second scratch page, identity-mapped.
    let seen = unsafe { read_u64(p + 16) };
    check(
        seen == 0xfeed_f00d,
        "write through the window did not reach the page",
    )?;
    sc::unmap(WINDOW + 4096).map_err(|_| "unmap failed")?;
    let hits = with_handler(14, 3, || {
        // SAFETY: unmapped: faults, and the handler skips the read.
        unsafe { read_u64(WINDOW + 4096) };
    })?;
    check(hits == 1, "access after unmap did not fault (stale TLB?)")
}

fn read_only_mapping_faults_on_write() -> Result<(), &'static str> {
    sc::map(WINDOW + 8192, scratch_page(), 0).map_err(|_| "map failed")?;
    // SAFETY: mapped readable (the first scratch page).
    let _ = unsafe { read_u64(WINDOW + 8192) };
    // SAFETY: mapped read-only: faults, and the handler skips the write.
    let hits = with_handler(14, 3, || unsafe { write_u64(WINDOW + 8192, 1) })?;
    sc::unmap(WINDOW + 8192).map_err(|_| "unmap failed")?;
    check(hits == 1, "write to a read-only mapping did not fault")?;
    check(
        LAST_ERROR.load(Ordering::SeqCst) & 0b111 == 0b111,
        "error code is not user/write/present",
    )
}

/// Calls `addr` and returns its `rax`.
///
/// # Safety
/// `addr` holds code that returns with the C ABI and touches no memory,
/// or the call faults and a registered #PF handler returns to the caller.
unsafe fn call_address(addr: u64) -> u64 {
    let ret: u64;
    // SAFETY: forwarded from the caller.
    unsafe {
        core::arch::asm!("xor eax, eax", "call rdi", in("rdi") addr, out("rax") ret, clobber_abi("C"));
    }
    ret
}

fn executable_mapping_runs_code() -> Result<(), &'static str> {
    let p = scratch_page();
    // mov eax, 42; ret — written through the identity map, run through an
    // execute-only window mapping.
    // SAFETY: p is the first scratch page.
    unsafe { write_u64(p + 64, RETURN_42) };
    sc::map(WINDOW + 12288, p, abi_sc::MAP_EXEC).map_err(|_| "map failed")?;
    // SAFETY: the mapped page holds RETURN_42 at offset 64.
    let r = unsafe { call_address(WINDOW + 12288 + 64) };
    sc::unmap(WINDOW + 12288).map_err(|_| "unmap failed")?;
    check(r == 42, "code in the executable mapping did not run")
}

/// `mov eax, 42; ret`, little-endian.
const RETURN_42: u64 = 0x0000_c300_0000_2ab8;

fn return_to_caller(frame: &mut UpcallFrame) {
    HITS.fetch_add(1, Ordering::SeqCst);
    LAST_ERROR.store(frame.error_code, Ordering::SeqCst);
    // Emulate `ret`: the faulting fetch happened right after `call`, so
    // the return address is on top of the interrupted stack.
    // SAFETY: frame.rsp is the interrupted (readable) stack pointer.
    frame.rip = unsafe { read_u64(frame.rsp) };
    frame.rsp += 8;
}

fn non_executable_mapping_faults_on_fetch() -> Result<(), &'static str> {
    let p = scratch_page();
    // SAFETY: p is the first scratch page.
    unsafe { write_u64(p + 64, RETURN_42) };
    sc::map(WINDOW + 16384, p, abi_sc::MAP_WRITE).map_err(|_| "map failed")?;
    HITS.store(0, Ordering::SeqCst);
    upcall::register(14, return_to_caller).map_err(|_| "vector busy")?;
    // SAFETY: the fetch faults (no execute) and the handler returns here.
    let r = unsafe { call_address(WINDOW + 16384 + 64) };
    upcall::unregister(14);
    sc::unmap(WINDOW + 16384).map_err(|_| "unmap failed")?;
    check(
        HITS.load(Ordering::SeqCst) == 1 && r != 42,
        "code in a writable mapping ran",
    )?;
    check(
        LAST_ERROR.load(Ordering::SeqCst) & 0x10 != 0,
        "fault was not an instruction fetch",
    )
}

/// Whether the CPU has x2APIC (else the supervisor's APIC calls say ENODEV).
fn has_x2apic() -> bool {
    core::arch::x86_64::__cpuid(1).ecx & (1 << 21) != 0
}

fn apic_write_range_is_checked() -> Result<(), &'static str> {
    if !has_x2apic() {
        let enodev = Err(ScError(errno::ENODEV));
        return check(
            sc::apic_write(0x808, 0) == enodev,
            "apic_write without x2APIC did not say ENODEV",
        );
    }
    check(
        sc::apic_write(0x1b, 0) == Err(ScError(errno::EINVAL)),
        "MSR outside x2APIC range accepted",
    )?;
    check(
        sc::apic_write(0x900, 0) == Err(ScError(errno::EINVAL)),
        "MSR past x2APIC range accepted",
    )?;
    // Regression: these used to reach wrmsr and #GP at CPL0 (exit 106) or
    // send an IPI: read-only (0x802 ID, 0x803 version, 0x839 current
    // count), the ICR (0x830), and a 64-bit value for a 32-bit register.
    for msr in [0x802, 0x803, 0x830, 0x839] {
        check(
            sc::apic_write(msr, 0) == Err(ScError(errno::EINVAL)),
            "a read-only or dangerous x2APIC register was written",
        )?;
    }
    check(
        sc::apic_write(0x808, 1 << 32) == Err(ScError(errno::EINVAL)),
        "a 64-bit value for a 32-bit register was accepted",
    )
}

static TICKS: AtomicU64 = AtomicU64::new(0);

fn on_tick(_: &mut UpcallFrame) {
    TICKS.fetch_add(1, Ordering::SeqCst);
}

/// Arms a one-shot APIC timer on the timer vector.
fn arm_timer(us: u64) -> Result<(), &'static str> {
    crate::timer::oneshot_us(us).map_err(|_| "the one-shot timer could not be armed (no x2APIC?)")
}

fn timer_interrupt_while_running() -> Result<(), &'static str> {
    TICKS.store(0, Ordering::SeqCst);
    upcall::register(kiln_abi::upcall::TIMER_VECTOR, on_tick).map_err(|_| "vector busy")?;
    arm_timer(50)?;
    let mut spins: u64 = 0;
    while TICKS.load(Ordering::SeqCst) == 0 && spins < 2_000_000_000 {
        spins += 1;
        core::hint::spin_loop();
    }
    upcall::unregister(kiln_abi::upcall::TIMER_VECTOR);
    check(
        TICKS.load(Ordering::SeqCst) == 1,
        "timer interrupt did not arrive while spinning",
    )
}

fn halt_wakes_on_timer_interrupt() -> Result<(), &'static str> {
    TICKS.store(0, Ordering::SeqCst);
    upcall::register(kiln_abi::upcall::TIMER_VECTOR, on_tick).map_err(|_| "vector busy")?;
    // 2 ms: far longer than the two supervisor calls before the halt, so
    // the tick cannot come before it (the case says so if it does).
    arm_timer(2_000)?;
    if TICKS.load(Ordering::SeqCst) != 0 {
        upcall::unregister(kiln_abi::upcall::TIMER_VECTOR);
        return Err("the timer fired before halt was entered");
    }
    sc::halt();
    let ticks = TICKS.load(Ordering::SeqCst);
    upcall::unregister(kiln_abi::upcall::TIMER_VECTOR);
    check(
        ticks == 1,
        "halt returned without the interrupt being delivered",
    )
}

/// A timer handler that wipes every SSE register, as compiled Rust in a
/// handler may.
fn tick_and_clobber_sse(_: &mut UpcallFrame) {
    TICKS.fetch_add(1, Ordering::SeqCst);
    // SAFETY: only SSE registers are written, and they are declared clobbered.
    unsafe {
        core::arch::asm!(
            "pxor xmm0, xmm0", "pxor xmm1, xmm1", "pxor xmm2, xmm2", "pxor xmm3, xmm3",
            "pxor xmm4, xmm4", "pxor xmm5, xmm5", "pxor xmm6, xmm6", "pxor xmm7, xmm7",
            "pxor xmm8, xmm8", "pxor xmm9, xmm9", "pxor xmm10, xmm10", "pxor xmm11, xmm11",
            "pxor xmm12, xmm12", "pxor xmm13, xmm13", "pxor xmm14, xmm14", "pxor xmm15, xmm15",
            out("xmm0") _, out("xmm1") _, out("xmm2") _, out("xmm3") _, out("xmm4") _, out("xmm5") _,
            out("xmm6") _, out("xmm7") _, out("xmm8") _, out("xmm9") _, out("xmm10") _, out("xmm11") _,
            out("xmm12") _, out("xmm13") _, out("xmm14") _, out("xmm15") _,
            options(nomem, nostack),
        );
    }
}

/// Regression test: upcall handlers once ran without saving the
/// interrupted code's SSE state, so an interrupt could silently change
/// its xmm registers.
fn interrupt_preserves_sse_registers() -> Result<(), &'static str> {
    TICKS.store(0, Ordering::SeqCst);
    upcall::register(kiln_abi::upcall::TIMER_VECTOR, tick_and_clobber_sse)
        .map_err(|_| "vector busy")?;
    arm_timer(100)?;
    let pattern: u64 = 0x0123_4567_89ab_cdef;
    let (x0, x7, x15): (u64, u64, u64);
    // SAFETY: only registers (declared) and the TICKS atomic (read) are
    // touched; the loop is bounded.
    unsafe {
        core::arch::asm!(
            "movq xmm0, {p}", "movq xmm7, {p}", "movq xmm15, {p}",
            "mov rcx, 4000000000",
            "2:",
            "pause",
            "cmp qword ptr [{ticks}], 0",
            "jne 3f",
            "dec rcx",
            "jnz 2b",
            "3:",
            "movq {x0}, xmm0", "movq {x7}, xmm7", "movq {x15}, xmm15",
            p = in(reg) pattern,
            ticks = in(reg) TICKS.as_ptr(),
            x0 = out(reg) x0, x7 = out(reg) x7, x15 = out(reg) x15,
            out("rcx") _, out("xmm0") _, out("xmm7") _, out("xmm15") _,
            options(nostack, readonly),
        );
    }
    upcall::unregister(kiln_abi::upcall::TIMER_VECTOR);
    check(
        TICKS.load(Ordering::SeqCst) == 1,
        "the timer interrupt did not arrive",
    )?;
    check(
        x0 == pattern && x7 == pattern && x15 == pattern,
        "an interrupt changed xmm registers",
    )
}

/// Regression test: `protect(0xffff_ffff_ffff_f000, 1, _)` wrapped its end
/// to 0, passed the range checks and made the supervisor fault at CPL0.
fn protect_rejects_a_wrapping_range() -> Result<(), &'static str> {
    let ret = sc::raw(kiln_abi::sc::PROTECT, 0xffff_ffff_ffff_f000, 1, 0);
    check(
        ret == -errno::EINVAL,
        "a range wrapping past 2^64 was not EINVAL",
    )
}

/// Regression test: `protect` walked its range in rdi/rsi and
/// `apic_write` loaded rdx for wrmsr, so callers that kept values in those
/// registers across the call saw them changed.
fn supervisor_calls_preserve_registers() -> Result<(), &'static str> {
    let calls: [(u64, [u64; 3]); 4] = [
        // protect(rodata page, 1, read-only) of a page already read-only.
        (
            kiln_abi::sc::PROTECT,
            [crate::paging::image_layout().rodata.0, 1, 0],
        ),
        // apic_write(task priority register, 0).
        (kiln_abi::sc::APIC_WRITE, [0x808, 0, 0x5555]),
        (kiln_abi::sc::MAP, [WINDOW + 0x1f_f000, scratch_page(), 0]),
        (kiln_abi::sc::UNMAP, [WINDOW + 0x1f_f000, 0x7777, 0x6666]),
    ];
    for (number, [a0, a1, a2]) in calls {
        if number == kiln_abi::sc::APIC_WRITE && !has_x2apic() {
            continue;
        }
        let (ret, d0, d1, d2, r8, r9, r10): (i64, u64, u64, u64, u64, u64, u64);
        // SAFETY: each call's arguments are valid (see above); every
        // register the asm names is declared as an output.
        unsafe {
            core::arch::asm!(
                "mov r8, 0x88", "mov r9, 0x99", "mov r10, 0x1010",
                "int3",
                inlateout("rax") number as i64 => ret,
                inout("rdi") a0 => d0, inout("rsi") a1 => d1, inout("rdx") a2 => d2,
                out("r8") r8, out("r9") r9, out("r10") r10,
                lateout("rcx") _, lateout("r11") _,
            );
        }
        check(ret == 0, "a supervisor call failed")?;
        check((d0, d1, d2) == (a0, a1, a2), "argument registers changed")?;
        check((r8, r9, r10) == (0x88, 0x99, 0x1010), "r8-r10 changed")?;
    }
    Ok(())
}

/// A constant: lives in read-only data.
static CONSTANT: u64 = 0x5eed;

/// A `ret` instruction in writable data.
static DATA_RET: AtomicU64 = AtomicU64::new(0xc3);

/// Writes `addr`'s own value back to it under a #PF handler; returns the
/// number of faults and the error code. If W^X were broken the write
/// would succeed, but it would not change a byte.
fn write_back_faults(addr: u64) -> Result<(u64, u64), &'static str> {
    // SAFETY: addr is readable (code or rodata of this image).
    let value = unsafe { read_u64(addr) };
    // SAFETY: writes back the value just read, so nothing changes even if
    // the write is (wrongly) allowed; a fault is skipped by the handler.
    let hits = with_handler(14, 3, || unsafe { write_u64(addr, value) })?;
    Ok((hits, LAST_ERROR.load(Ordering::SeqCst)))
}

fn writing_code_faults() -> Result<(), &'static str> {
    let (hits, error) = write_back_faults(writing_code_faults as *const () as u64)?;
    check(hits == 1, "writing to the image's code did not fault (W^X)")?;
    check(
        error & 0b11 == 0b11,
        "the fault is not a write to a present page",
    )
}

fn writing_constants_faults() -> Result<(), &'static str> {
    let (hits, _) = write_back_faults(core::ptr::addr_of!(CONSTANT) as u64)?;
    check(hits == 1, "writing to read-only data did not fault")
}

/// Calls `addr` under a #PF handler that returns to the caller; returns
/// the number of faults and the error code.
fn call_faults(addr: u64) -> Result<(u64, u64), &'static str> {
    HITS.store(0, Ordering::SeqCst);
    upcall::register(14, return_to_caller).map_err(|_| "vector busy")?;
    // SAFETY: addr holds a bare `ret`: running it returns at once; if the
    // fetch faults, the handler returns to the caller instead.
    unsafe { call_address(addr) };
    upcall::unregister(14);
    Ok((
        HITS.load(Ordering::SeqCst),
        LAST_ERROR.load(Ordering::SeqCst),
    ))
}

fn executing_data_faults() -> Result<(), &'static str> {
    let (hits, error) = call_faults(DATA_RET.as_ptr() as u64)?;
    check(hits == 1, "code in writable data ran (W^X)")?;
    check(error & 0x10 != 0, "the fault is not an instruction fetch")
}

fn executing_the_heap_faults() -> Result<(), &'static str> {
    let code = alloc::vec![0xc3u8; 64];
    let (hits, error) = call_faults(code.as_ptr() as u64)?;
    check(hits == 1, "code on the heap ran (W^X)")?;
    check(error & 0x10 != 0, "the fault is not an instruction fetch")
}

static RECEIVED: AtomicU64 = AtomicU64::new(0);

fn on_com1(_: &mut UpcallFrame) {
    // Reading the receive buffer acknowledges the UART's interrupt.
    let byte = crate::arch::x86_64::inb(kiln_abi::port::COM1);
    RECEIVED.store(0x100 | u64::from(byte), Ordering::SeqCst);
}

/// A real device interrupt end to end: COM1 in loopback mode receives the
/// byte it sends, raises IRQ 4, the IOAPIC routes it to a vector, and the
/// handler reads the byte back.
fn device_interrupt_through_the_ioapic() -> Result<(), &'static str> {
    use crate::arch::x86_64::{inb, outb};
    use kiln_abi::port::COM1;
    const IER: u16 = COM1 + 1;
    const MCR: u16 = COM1 + 4;
    RECEIVED.store(0, Ordering::SeqCst);
    let line = kiln_abi::COM1_IRQ;
    crate::irq::register(line, on_com1).map_err(|_| "cannot route IRQ 4 (no IOAPIC?)")?;
    let saved_mcr = inb(MCR);
    outb(MCR, 0x18); // loopback + OUT2 (which gates the IRQ on PCs)
    outb(IER, 0x01); // interrupt on received data
    outb(COM1, 0x5a);
    for _ in 0..10_000_000 {
        if RECEIVED.load(Ordering::SeqCst) != 0 {
            break;
        }
        core::hint::spin_loop();
    }
    outb(IER, 0);
    outb(MCR, saved_mcr);
    crate::irq::unregister(line);
    match RECEIVED.load(Ordering::SeqCst) {
        0 => Err("the UART interrupt never arrived"),
        0x15a => Ok(()),
        _ => Err("the handler read the wrong byte"),
    }
}
