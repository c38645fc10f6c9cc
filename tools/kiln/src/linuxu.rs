//! The linuxu platform: the image is a static Linux executable, run as a
//! child process.
//!
//! Kernel options travel as arguments before `--` (`mem=BYTES`, `log=`),
//! the application's after it. The process confines itself with seccomp
//! before `main` (see `kiln_hal::linuxu`); a forbidden system call ends it
//! with `SANDBOX_VIOLATION` after it printed the call's number.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use kiln_vmm::Ending;

/// How the guest reports a forbidden system call on stderr (must match
/// `kiln_hal::linuxu::VIOLATION_PREFIX`).
const VIOLATION_PREFIX: &str = "kiln: sandbox violation: system call ";

/// Runs the linuxu executable `image` until it ends or `timeout` expires.
pub fn run(
    image: &Path,
    memory_bytes: u64,
    options: &[(&str, &str)],
    args: &[String],
    volumes: &[kiln_vmm::VolumeConfig],
    network: &crate::runner::Network,
    timeout: Option<Duration>,
) -> anyhow::Result<Ending> {
    let mut cmd = Command::new(image);
    cmd.arg(format!("mem={memory_bytes}"));
    // Host volumes: the VMM's 9P server, confined the same way, on a
    // socket the guest reads at a fixed fd (the only fds its sandbox lets
    // it read).
    if volumes.len() as u64 > kiln_abi::LINUXU_MAX_VOLUMES {
        anyhow::bail!(
            "{} volumes were given but linuxu serves at most {}: drop some -v",
            volumes.len(),
            kiln_abi::LINUXU_MAX_VOLUMES
        );
    }
    let mut guest_ends = Vec::new();
    for (i, v) in volumes.iter().enumerate() {
        let volume = kiln_vmm::virtio::fs9p::Volume::open(&v.host_dir, &v.guest_dir, v.read_only)?;
        let (host_end, guest_end) =
            std::os::unix::net::UnixStream::pair().context("cannot create a volume channel")?;
        std::thread::spawn(move || volume.serve(host_end));
        cmd.arg(format!(
            "volume={}:{}",
            kiln_abi::LINUXU_VOLUME_FIRST_FD + i as u64,
            v.guest_dir
        ));
        guest_ends.push(std::os::fd::OwnedFd::from(guest_end));
    }
    kiln_vmm::child::give_fds(
        &mut cmd,
        &guest_ends,
        kiln_abi::LINUXU_VOLUME_FIRST_FD as i32,
    )
    .context("cannot hand the volume channels to the guest")?;
    // The network: user-mode networking's socket (the VMM's backend, run
    // in this process) or a TAP device, at a fixed fd; SIGIO is its
    // interrupt (docs/adr/0009).
    let net_end: Option<std::os::fd::OwnedFd> = match network {
        crate::runner::Network::None => None,
        crate::runner::Network::User(cfg) => {
            let (guest_end, _thread) = kiln_user_net::UserNet::bind(cfg.clone())?.spawn()?;
            Some(guest_end.into())
        }
        crate::runner::Network::Tap(name) => Some(kiln_vmm::tap::open(name)?.into()),
    };
    if let Some(fd) = &net_end {
        let fd = fd
            .try_clone()
            .context("cannot hand the network channel to the guest")?;
        kiln_vmm::child::give_fds(&mut cmd, &[fd], kiln_abi::LINUXU_NET_FD as i32)
            .context("cannot hand the network channel to the guest")?;
        cmd.arg(format!("netchan={}", kiln_abi::LINUXU_NET_FD));
    }
    for (k, v) in options {
        cmd.arg(if v.is_empty() {
            k.to_string()
        } else {
            format!("{k}={v}")
        });
    }
    kiln_vmm::child::die_with_parent(&mut cmd);
    cmd.arg("--")
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {} as a linuxu process", image.display()))?;
    // The child has its copies; closing ours lets the servers see EOF.
    drop(guest_ends);
    drop(net_end);
    // Forward the guest's stderr, noting a sandbox-violation report.
    let stderr = child.stderr.take().context("the guest's stderr")?;
    let watcher = std::thread::spawn(move || {
        use std::io::{BufRead, Write};
        let mut violation = None;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(rest) = line.strip_prefix(VIOLATION_PREFIX) {
                violation = rest.split(' ').next().and_then(|n| n.parse::<i64>().ok());
            }
            let _ = writeln!(std::io::stderr(), "{line}");
        }
        violation
    });
    let Some(status) = crate::child::wait_or_kill(&mut child, started, timeout)? else {
        return Ok(Ending::TimedOut {
            after: timeout.unwrap_or_default(),
        });
    };
    let violation = watcher.join().ok().flatten();
    if let Some(number) = violation
        && status.code() == Some(i32::from(kiln_abi::exit::SANDBOX_VIOLATION))
    {
        return Ok(Ending::SandboxViolation { syscall: number });
    }
    if let Some(code) = status.code() {
        return Ok(Ending::Exited(code as u8));
    }
    use std::os::unix::process::ExitStatusExt;
    let signal = status.signal().unwrap_or(0);
    Ok(Ending::HypervisorError {
        detail: match signal {
            31 => {
                "the guest process was killed by SIGSYS (a system call outside its sandbox)".into()
            }
            s => format!("the guest process was killed by signal {s}"),
        },
    })
}
