//! Child processes of the CLI: handing file descriptors to them at fixed
//! numbers (linuxu's volume and network channels) and making them die
//! with `kiln` ([`die_with_parent`]).

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Makes the child of `cmd` see `fds[i]` as descriptor `first + i`.
/// The parent keeps its copies (drop them after spawning).
pub fn give_fds(cmd: &mut Command, fds: &[OwnedFd], first: i32) -> std::io::Result<()> {
    // Move the sources out of the way of the targets first (>= 100), so a
    // dup2 in the child never overwrites a source it still needs.
    let high: Vec<OwnedFd> = fds
        .iter()
        .map(|fd| rustix::io::fcntl_dupfd_cloexec(fd, 100).map_err(std::io::Error::from))
        .collect::<Result<_, _>>()?;
    let pairs: Vec<(i32, i32)> = high
        .iter()
        .enumerate()
        .map(|(i, fd)| (fd.as_raw_fd(), first + i as i32))
        .collect();
    // SAFETY: the closure runs in the child between fork and exec; it only
    // calls dup2, which is async-signal-safe, on descriptors that exist
    // (`high` is moved into the closure, so they stay open until then) and
    // allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            let _keep = &high;
            for (src, dst) in &pairs {
                if libc::dup2(*src, *dst) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    Ok(())
}

/// Makes the child of `cmd` get `SIGKILL` when this process dies, so a
/// killed `kiln` never leaves a guest (QEMU, a linuxu process) running
/// with its forwarded ports.
pub fn die_with_parent(cmd: &mut Command) {
    // SAFETY: the closure runs in the child between fork and exec and
    // only calls prctl, which is async-signal-safe and allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
