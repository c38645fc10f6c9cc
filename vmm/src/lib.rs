//! # kiln-vmm — Kiln's embedded KVM microVM monitor
//!
//! Boots one Kiln image (a PVH ELF, see `kiln-abi`) in a one-vCPU KVM
//! virtual machine and runs it to its end:
//!
//! - [`VmConfig`] says what to run: image bytes, memory size, command
//!   line, timeout, where console output goes.
//! - [`run`] builds the VM (guest memory, in-kernel interrupt controller,
//!   CPUID, PVH start info, 32-bit entry state), runs the vCPU, and returns
//!   a [`RunOutcome`]: how the guest ended ([`Ending`]) and how long each
//!   phase took ([`Timings`]).
//! - Devices: COM1 (vm-superio, interrupting on IOAPIC pin 4) and the Kiln
//!   hostcall port write to the console sink; the exit port ends the run
//!   with the guest's status; a CMOS RTC gives the host's time; a
//!   userspace IOAPIC turns device interrupts into MSIs for the in-kernel
//!   local APIC (split irqchip, docs/adr/0003); CPUID carries the TSC
//!   frequency. Other port and MMIO accesses are logged and answered with
//!   all ones; a guest stuck repeating one is stopped
//!   ([`Ending::UnhandledAccessLoop`]).
//!
//! Built on rust-vmm: kvm-ioctls, kvm-bindings, vm-memory, linux-loader,
//! vm-superio, vmm-sys-util. Neighbours: `kiln-abi` (the guest contract),
//! the `kiln` CLI (which maps [`Ending`] to exit statuses and messages).
//!
//! - [`virtio`]: virtio-mmio devices at `kiln_abi::VIRTIO_MMIO_BASE`;
//!   `--disk` images are virtio-blk ([`DiskConfig`]).
//!
//! - Network: a virtio-net device ([`NetConfig`]) backed by rootless
//!   user-mode networking (`kiln-user-net`, `-p` forwards) or a TAP device
//!   ([`tap`]).
//!
//! Limits: one vCPU; at most `kiln_abi::VIRTIO_MMIO_SLOTS` virtio devices;
//! memory up to 3 GiB (the guest uses the first GiB); x86_64 hosts only.

pub mod child;
mod devices;

mod elfcheck;
mod error;
mod ioapic;
mod layout;
pub mod tap;
mod vcpu;
pub mod virtio;

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

pub use elfcheck::check as check_image;
pub use error::VmmError;
pub use layout::{MAX_MEMORY_BYTES, MIN_MEMORY_BYTES};

/// The KVM device: `/dev/kvm`, or `KILN_KVM_DEVICE` when set (hosts with
/// another path, and tests of the no-KVM paths).
pub fn kvm_device() -> std::path::PathBuf {
    std::env::var_os("KILN_KVM_DEVICE").map_or_else(|| "/dev/kvm".into(), Into::into)
}

/// Where console output goes.
pub type ConsoleSink = Box<dyn Write + Send>;

/// What to run.
pub struct VmConfig {
    /// The image (a PVH ELF).
    pub image: Vec<u8>,
    /// Guest RAM in bytes.
    pub memory_bytes: u64,
    /// Guest command line (see `kiln_abi::cmdline`).
    pub cmdline: String,
    /// Stop the guest after this long; `None` waits forever.
    pub timeout: Option<Duration>,
    /// Console output (COM1 and hostcall writes).
    pub console: ConsoleSink,
    /// An initrd (cpio archive) handed to the guest as PVH module 0.
    pub initrd: Option<Vec<u8>>,
    /// Disk images served as virtio-blk devices.
    pub disks: Vec<DiskConfig>,
    /// Host directories served as virtio-9p volumes (after the disks;
    /// disks, volumes and the network share `kiln_abi::VIRTIO_MMIO_SLOTS`
    /// slots).
    pub volumes: Vec<VolumeConfig>,
    /// The network device, if any (after the volumes).
    pub net: Option<NetConfig>,
}

/// Where the guest's network device leads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetConfig {
    /// Rootless user-mode networking (`kiln-user-net`): the VMM
    /// terminates the guest's flows; forwarded ports and outbound policy.
    User(kiln_user_net::UserNetConfig),
    /// A host TAP interface, by name.
    Tap(String),
}

/// A host directory shared with the guest (`-v HOST:GUEST[:ro]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeConfig {
    /// The host directory.
    pub host_dir: std::path::PathBuf,
    /// Where the guest mounts it (the device's mount tag).
    pub guest_dir: String,
    /// Refuse the guest's changes (on the host side).
    pub read_only: bool,
}

/// A host file served as a virtio-blk disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskConfig {
    /// The image file (a whole number of 512-byte sectors).
    pub path: std::path::PathBuf,
    /// Refuse the guest's writes (they fail with an I/O error status).
    pub read_only: bool,
}

/// How the guest ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ending {
    /// The guest wrote this status to the exit port.
    Exited(u8),
    /// The timeout expired first.
    TimedOut {
        /// The timeout that expired.
        after: Duration,
    },
    /// The guest reset its CPU (triple fault) or asked for a shutdown.
    TripleFault,
    /// KVM could not emulate or enter the guest (`KVM_EXIT_INTERNAL_ERROR`,
    /// failed entry); `detail` says which.
    HypervisorError {
        /// What KVM reported.
        detail: String,
    },
    /// linuxu: the guest made a system call its sandbox forbids.
    SandboxViolation {
        /// The Linux system-call number.
        syscall: i64,
    },
    /// The guest kept accessing one port or MMIO address nothing handles.
    UnhandledAccessLoop {
        /// "port 0x61" or "MMIO 0xfee00000".
        what: String,
    },
}

/// Phase durations of one run, all from the start of [`run`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timings {
    /// VM built (memory, image, vCPU) and about to enter the guest.
    pub setup: Duration,
    /// First exit from the guest (its first I/O): a bound on time to first instruction.
    pub first_exit: Option<Duration>,
    /// The guest ended.
    pub end: Duration,
    /// VM exits handled.
    pub exits: u64,
}

/// The result of [`run`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunOutcome {
    /// How the guest ended.
    pub ending: Ending,
    /// How long it took.
    pub timings: Timings,
}

/// How long a timed-out run waits for the vCPU thread to stop.
const KICK_GIVE_UP: Duration = Duration::from_secs(2);

/// Boots `config.image` and runs it until it ends (or the timeout expires).
pub fn run(config: VmConfig) -> Result<RunOutcome, VmmError> {
    let start = Instant::now();
    let VmConfig {
        image,
        memory_bytes,
        cmdline,
        timeout,
        console,
        initrd,
        disks,
        volumes,
        net,
    } = config;
    let count = disks.len() + volumes.len() + usize::from(net.is_some());
    if count as u64 > kiln_abi::VIRTIO_MMIO_SLOTS {
        return Err(VmmError::TooManyDevices { count });
    }
    // Disk and volume problems are reported before KVM is touched.
    let mut devices: Vec<Box<dyn virtio::VirtioDevice>> = Vec::new();
    for d in &disks {
        devices.push(Box::new(virtio::block::Block::open(&d.path, d.read_only)?));
    }
    for v in &volumes {
        devices.push(Box::new(virtio::fs9p::Volume::open(
            &v.host_dir,
            &v.guest_dir,
            v.read_only,
        )?));
    }
    if let Some(net) = net {
        let backend = match net {
            NetConfig::User(cfg) => {
                // The stack thread ends when the device drops its socket.
                let (guest_end, _thread) = kiln_user_net::UserNet::bind(cfg)?.spawn()?;
                virtio::net::Backend::User(guest_end)
            }
            NetConfig::Tap(name) => virtio::net::Backend::Tap(tap::open(&name)?),
        };
        devices.push(Box::new(
            virtio::net::Net::new(backend, virtio::net::DEFAULT_MAC)
                .map_err(VmmError::NetDevice)?,
        ));
    }
    let console = Arc::new(Mutex::new(devices::LineFlushing::new(console)));
    let mut vm = vcpu::Vm::build(
        &image,
        memory_bytes,
        &cmdline,
        initrd.as_deref(),
        devices,
        console.clone(),
    )?;
    let setup = start.elapsed();

    let stop = Arc::new(AtomicBool::new(false));
    let (done_tx, done_rx) = mpsc::channel();
    let vcpu_stop = stop.clone();
    vcpu::install_kick_handler();
    let handle = std::thread::Builder::new()
        .name("kiln-vcpu0".into())
        .spawn(move || {
            let result = vm.run_until_end(&vcpu_stop, start);
            let _ = done_tx.send(());
            result
        })
        .map_err(VmmError::Thread)?;

    let mut timed_out = false;
    match timeout {
        None => {
            let _ = done_rx.recv();
        }
        Some(limit) => {
            let remaining = limit.saturating_sub(start.elapsed());
            if done_rx.recv_timeout(remaining) == Err(mpsc::RecvTimeoutError::Timeout) {
                timed_out = true;
                stop.store(true, Ordering::SeqCst);
                // Kick until the vCPU thread notices: a signal that lands
                // just before it re-enters KVM_RUN would otherwise be lost.
                // A thread stuck outside KVM_RUN (writing to a console
                // nobody reads) never notices: after KICK_GIVE_UP the run
                // ends anyway and the thread is left to the process's exit.
                let kicked_at = Instant::now();
                while done_rx.recv_timeout(Duration::from_millis(5))
                    == Err(mpsc::RecvTimeoutError::Timeout)
                {
                    if kicked_at.elapsed() > KICK_GIVE_UP {
                        return Ok(RunOutcome {
                            ending: Ending::TimedOut { after: limit },
                            timings: Timings {
                                setup,
                                end: start.elapsed(),
                                ..Timings::default()
                            },
                        });
                    }
                    vcpu::kick(&handle);
                }
            }
        }
    }
    let (ending, mut timings) = handle.join().map_err(|_| VmmError::VcpuPanicked)??;
    if let Ok(mut c) = console.try_lock() {
        let _ = c.flush();
    }
    if timed_out && let Some(after) = timeout {
        return Ok(RunOutcome {
            ending: Ending::TimedOut { after },
            timings: Timings {
                end: start.elapsed(),
                ..timings
            },
        });
    }
    timings.setup = setup;
    Ok(RunOutcome { ending, timings })
}
