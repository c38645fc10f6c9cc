//! The linuxu sandbox: a seccomp BPF filter over the process's system calls.
//!
//! Allowed, and nothing else ([`ALLOWED`], 11 calls):
//!
//! | call | why |
//! |---|---|
//! | `read` | only on host volumes' 9P channels (fds 3..7, `kiln run -v`) and the network channel (fd 7) |
//! | `write` | the console (stdout), requests on those channels, frames |
//! | `mmap` | map-window pages — only if `prot` is not both write and execute |
//! | `munmap` | unmapping them |
//! | `rt_sigreturn` | returning from upcall (signal) handlers |
//! | `pause` | `halt` |
//! | `nanosleep` | `halt_for` (idle until a deadline) |
//! | `restart_syscall` | a `nanosleep` resumed after a stop signal |
//! | `setitimer` | the one-shot timer |
//! | `clock_gettime` | the monotonic clock |
//! | `exit_group` | exit |
//!
//! Everything set up before the filter (RAM memfd, signal handlers,
//! alternate stack) needs no call after it. A call outside the list, or
//! from another architecture or ABI (x32), returns `SECCOMP_RET_TRAP`:
//! the process gets `SIGSYS`, reports the call's number and exits with
//! [`kiln_abi::exit::SANDBOX_VIOLATION`]; it cannot install another
//! `SIGSYS` handler because `rt_sigaction` is not allowed.

use super::nr;

/// One BPF instruction (`struct sock_filter`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockFilter {
    /// Opcode.
    pub code: u16,
    /// Jump offset if true.
    pub jt: u8,
    /// Jump offset if false.
    pub jf: u8,
    /// Operand.
    pub k: u32,
}

/// System calls the filter allows, with their names.
pub const ALLOWED: [(u64, &str); 11] = [
    (nr::READ, "read"),
    (nr::WRITE, "write"),
    (nr::MMAP, "mmap"),
    (nr::MUNMAP, "munmap"),
    (nr::RT_SIGRETURN, "rt_sigreturn"),
    (nr::PAUSE, "pause"),
    (nr::NANOSLEEP, "nanosleep"),
    // The kernel resumes a nanosleep interrupted by a stop signal (Ctrl-Z,
    // a debugger) through this call.
    (nr::RESTART_SYSCALL, "restart_syscall"),
    (nr::SETITIMER, "setitimer"),
    (nr::CLOCK_GETTIME, "clock_gettime"),
    (nr::EXIT_GROUP, "exit_group"),
];

const LD_W_ABS: u16 = 0x20;
const JEQ_K: u16 = 0x15;
const JGE_K: u16 = 0x35;
const AND_K: u16 = 0x54;
const RET_K: u16 = 0x06;

/// `AUDIT_ARCH_X86_64`.
pub const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
/// Filter results.
pub const RET_ALLOW: u32 = 0x7fff_0000;
/// Deliver SIGSYS.
pub const RET_TRAP: u32 = 0x0003_0000;

/// `seccomp_data` offsets.
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
/// Low 32 bits of `args[0]` (read's fd).
const OFF_ARG0: u32 = 16;
/// Low 32 bits of `args[2]` (mmap's `prot`).
const OFF_ARG2: u32 = 16 + 2 * 8;
/// The channel fds `read` may use: the volumes', then the network's.
const CHANNEL_FDS: (u32, u32) = (
    kiln_abi::LINUXU_VOLUME_FIRST_FD as u32,
    (kiln_abi::LINUXU_NET_FD + 1) as u32,
);

const PROT_WRITE_EXEC: u32 = 2 | 4;

const fn stmt(code: u16, k: u32) -> SockFilter {
    SockFilter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

const fn jump(code: u16, k: u32, jt: u8, jf: u8) -> SockFilter {
    SockFilter { code, jt, jf, k }
}

/// Instructions in the filter.
pub const LEN: usize = 4 + ALLOWED.len() + 6 + 5;

/// Builds the filter program.
///
/// Layout (BPF jumps only forward): arch check, number load, x32 check,
/// one `jeq` per allowed call, `ret TRAP` for no match, then mmap's check
/// of `prot` (`ld`, `and`, `jeq`), `ret ALLOW`, `ret TRAP`, then read's
/// check of its fd (`ld`, two `jge`), `ret ALLOW`, `ret TRAP`.
pub const fn filter() -> [SockFilter; LEN] {
    let n = ALLOWED.len();
    let trap = 4 + n; // no call matched
    let mmap_check = trap + 1;
    let allow = trap + 4;
    let read_check = allow + 2;
    let mut p = [stmt(RET_K, RET_TRAP); LEN];
    p[0] = stmt(LD_W_ABS, OFF_ARCH);
    p[1] = jump(JEQ_K, AUDIT_ARCH_X86_64, 0, (trap - 2) as u8);
    p[2] = stmt(LD_W_ABS, OFF_NR);
    p[3] = jump(JGE_K, 0x4000_0000, (trap - 4) as u8, 0);
    let mut i = 0;
    while i < n {
        let at = 4 + i;
        let target = if ALLOWED[i].0 == nr::MMAP {
            mmap_check
        } else if ALLOWED[i].0 == nr::READ {
            read_check
        } else {
            allow
        };
        p[at] = jump(JEQ_K, ALLOWED[i].0 as u32, (target - at - 1) as u8, 0);
        i += 1;
    }
    p[trap] = stmt(RET_K, RET_TRAP);
    p[mmap_check] = stmt(LD_W_ABS, OFF_ARG2);
    p[mmap_check + 1] = stmt(AND_K, PROT_WRITE_EXEC);
    p[mmap_check + 2] = jump(JEQ_K, PROT_WRITE_EXEC, 1, 0);
    p[allow] = stmt(RET_K, RET_ALLOW);
    p[allow + 1] = stmt(RET_K, RET_TRAP);
    p[read_check] = stmt(LD_W_ABS, OFF_ARG0);
    p[read_check + 1] = jump(JGE_K, CHANNEL_FDS.0, 0, 2);
    p[read_check + 2] = jump(JGE_K, CHANNEL_FDS.1, 1, 0);
    p[read_check + 3] = stmt(RET_K, RET_ALLOW);
    p[read_check + 4] = stmt(RET_K, RET_TRAP);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A BPF interpreter for the instructions the filter uses.
    fn run(prog: &[SockFilter], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&nr.to_le_bytes());
        data[4..8].copy_from_slice(&arch.to_le_bytes());
        for (i, a) in args.iter().enumerate() {
            data[16 + i * 8..24 + i * 8].copy_from_slice(&a.to_le_bytes());
        }
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let ins = prog[pc];
            pc += 1;
            match ins.code {
                LD_W_ABS => {
                    let o = ins.k as usize;
                    acc = u32::from_le_bytes(data[o..o + 4].try_into().unwrap());
                }
                AND_K => acc &= ins.k,
                JEQ_K => pc += usize::from(if acc == ins.k { ins.jt } else { ins.jf }),
                JGE_K => pc += usize::from(if acc >= ins.k { ins.jt } else { ins.jf }),
                RET_K => return ins.k,
                other => panic!("unexpected opcode {other:#x}"),
            }
        }
    }

    #[test]
    fn allows_exactly_the_listed_calls() {
        let prog = filter();
        for n in 0..450u32 {
            let allowed = ALLOWED.iter().any(|(a, _)| *a == u64::from(n));
            let expect = if allowed { RET_ALLOW } else { RET_TRAP };
            assert_eq!(
                run(&prog, AUDIT_ARCH_X86_64, n, [3, 0, 1, 0, 0, 0]),
                expect,
                "syscall {n}"
            );
        }
    }

    #[test]
    fn mmap_write_and_execute_is_refused() {
        let prog = filter();
        let m = nr::MMAP as u32;
        for (prot, expect) in [
            (1, RET_ALLOW),
            (3, RET_ALLOW),
            (5, RET_ALLOW),
            (6, RET_TRAP),
            (7, RET_TRAP),
        ] {
            assert_eq!(
                run(&prog, AUDIT_ARCH_X86_64, m, [0, 4096, prot, 1, 3, 0]),
                expect,
                "prot {prot}"
            );
        }
    }

    #[test]
    fn other_architectures_and_x32_are_refused() {
        let prog = filter();
        assert_eq!(run(&prog, 0x4000_0003, 1, [0; 6]), RET_TRAP);
        assert_eq!(run(&prog, AUDIT_ARCH_X86_64, 0x4000_0001, [0; 6]), RET_TRAP);
    }

    #[test]
    fn read_is_allowed_only_on_volume_and_network_channels() {
        let prog = filter();
        for (fd, expect) in [
            (0, RET_TRAP),
            (2, RET_TRAP),
            (3, RET_ALLOW),
            (6, RET_ALLOW),
            (7, RET_ALLOW),
            (8, RET_TRAP),
            (1 << 20, RET_TRAP),
        ] {
            assert_eq!(
                run(&prog, AUDIT_ARCH_X86_64, 0, [fd, 0, 16, 0, 0, 0]),
                expect,
                "read on fd {fd}"
            );
        }
    }

    #[test]
    fn the_list_has_eleven_calls() {
        assert_eq!(ALLOWED.len(), 11);
        assert_eq!(filter().len(), LEN);
    }

    /// Regression: a sleep resumed after SIGSTOP/SIGCONT restarts through
    /// `restart_syscall`, which the filter used to kill as a violation.
    #[test]
    fn a_resumed_sleep_is_allowed() {
        let prog = filter();
        assert_eq!(run(&prog, AUDIT_ARCH_X86_64, 219, [0; 6]), RET_ALLOW);
    }
}
