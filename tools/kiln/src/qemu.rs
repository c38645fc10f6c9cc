//! The qemu platform: the same image under `qemu-system-x86_64 -M microvm`.
//!
//! QEMU boots the PVH ELF with `-kernel`, COM1 goes to stdout, and
//! `isa-debug-exit` on the exit port turns the guest's status `v` into
//! QEMU's exit status `(v << 1) | 1`, decoded here. KVM is used when
//! `/dev/kvm` is usable, else TCG.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use kiln_vmm::Ending;

/// The QEMU binary (override with `KILN_QEMU`).
fn qemu_binary() -> String {
    std::env::var("KILN_QEMU").unwrap_or_else(|_| "qemu-system-x86_64".into())
}

/// Whether the KVM device can be opened for reading and writing.
pub fn kvm_usable() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(kiln_vmm::kvm_device())
        .is_ok()
}

/// The QEMU command line for an image.
pub fn command(
    image: &Path,
    memory_bytes: u64,
    cmdline: &str,
    initrd: Option<&Path>,
    devices: &Devices,
    kvm: bool,
) -> Command {
    let mut cmd = Command::new(qemu_binary());
    // auto-kernel-cmdline=off: the guest finds virtio devices by probing,
    // and its command line carries only what kiln put there.
    cmd.args([
        "-M",
        // acpi=off and ioapic2=off put transport n's interrupt on IOAPIC
        // pin 5 + n, as on the embedded VMM.
        "microvm,pic=off,pit=off,rtc=on,auto-kernel-cmdline=off,acpi=off,ioapic2=off",
    ]);
    if kvm {
        // -arch-capabilities: QEMU 7.2 aborts on MSR 0x10a here; +invtsc makes
        // QEMU publish the TSC frequency (CPUID 0x4000_0010) to the clock.
        cmd.args(["-accel", "kvm", "-cpu", "host,-arch-capabilities,+invtsc"]);
    } else {
        // TCG's x2APIC timer never fires here (DESIGN.md §3): without
        // x2APIC the guest uses the xAPIC's MMIO registers.
        cmd.args(["-accel", "tcg", "-cpu", "max,-x2apic"]);
    }
    let memory_kib = memory_bytes.div_ceil(1024);
    cmd.args(["-m", &format!("{memory_kib}K")])
        .args([
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
        ])
        .args(["-serial", "stdio"])
        .args([
            "-device",
            &format!("isa-debug-exit,iobase={:#x},iosize=4", kiln_abi::port::EXIT),
        ])
        .arg("-kernel")
        .arg(image)
        .args(["-append", cmdline]);
    if let Some(initrd) = initrd {
        // QEMU hands it to a PVH kernel as module 0 of start_info.
        cmd.arg("-initrd").arg(initrd);
    }
    let has_net = !matches!(devices.net, crate::runner::Network::None);
    if !devices.disks.is_empty() || !devices.volumes.is_empty() || has_net {
        // Modern (virtio 1.x) transports: the guest drivers need them.
        cmd.args(["-global", "virtio-mmio.force-legacy=false"]);
    }
    for (i, disk) in devices.disks.iter().enumerate() {
        let mut drive = std::ffi::OsString::from(format!("id=disk{i},if=none,format=raw,file="));
        drive.push(qemu_escape(&disk.path));
        if disk.read_only {
            drive.push(",readonly=on");
        }
        cmd.arg("-drive").arg(drive);
        cmd.args(["-device", &format!("virtio-blk-device,drive=disk{i}")]);
    }
    for (i, vol) in devices.volumes.iter().enumerate() {
        let mut fsdev =
            std::ffi::OsString::from(format!("local,id=vol{i},security_model=none,path="));
        fsdev.push(qemu_escape(&vol.host_dir));
        if vol.read_only {
            fsdev.push(",readonly=on");
        }
        cmd.arg("-fsdev").arg(fsdev);
        cmd.args([
            "-device",
            &format!("virtio-9p-device,fsdev=vol{i},mount_tag={}", vol.guest_dir),
        ]);
    }
    match &devices.net {
        crate::runner::Network::None => {}
        crate::runner::Network::User(cfg) => {
            // QEMU's own user-mode networking (slirp): the same addresses
            // as kiln-user-net, forwards as hostfwd rules; `restrict`
            // refuses the guest's own connections, as kiln does.
            let mut netdev = String::from("user,id=net0");
            // QEMU's `restrict` also drops the guest's replies to UDP
            // forwards, so it is only used without them.
            let udp = cfg
                .forwards
                .iter()
                .any(|f| f.protocol == kiln_user_net::Protocol::Udp);
            if !cfg.allow_outbound && !udp {
                netdev.push_str(",restrict=on");
            } else if !cfg.allow_outbound {
                eprintln!(
                    "kiln: note: QEMU's user network cannot forward UDP while refusing the guest's own connections; on this run the guest can reach other hosts"
                );
            }
            for f in &cfg.forwards {
                let proto = match f.protocol {
                    kiln_user_net::Protocol::Tcp => "tcp",
                    kiln_user_net::Protocol::Udp => "udp",
                };
                netdev.push_str(&format!(
                    ",hostfwd={proto}:{}:{}-:{}",
                    f.host_addr, f.host_port, f.guest_port
                ));
            }
            cmd.args(["-netdev", &netdev]);
        }
        crate::runner::Network::Tap(name) => {
            cmd.args([
                "-netdev",
                &format!("tap,id=net0,ifname={name},script=no,downscript=no"),
            ]);
        }
    }
    if has_net {
        let mac = kiln_abi::net::GUEST_MAC
            .map(|b| format!("{b:02x}"))
            .join(":");
        cmd.args([
            "-device",
            &format!("virtio-net-device,netdev=net0,mac={mac}"),
        ]);
    }
    cmd
}

/// Disks, volumes and the network for QEMU's own virtio devices.
pub struct Devices {
    /// `--disk` images.
    pub disks: Vec<kiln_vmm::DiskConfig>,
    /// `-v` volumes.
    pub volumes: Vec<kiln_vmm::VolumeConfig>,
    /// The network.
    pub net: crate::runner::Network,
}

/// A path inside a QEMU option value (commas are doubled).
fn qemu_escape(path: &Path) -> std::ffi::OsString {
    std::ffi::OsString::from(path.to_string_lossy().replace(',', ",,"))
}

/// Boots `image` under QEMU and waits for it to end.
pub fn run(
    image: &Path,
    memory_bytes: u64,
    cmdline: &str,
    initrd: Option<&Path>,
    devices: &Devices,
    timeout: Option<Duration>,
    verbose: bool,
) -> anyhow::Result<Ending> {
    if let crate::runner::Network::User(cfg) = &devices.net {
        // QEMU would only say "could not set up host forwarding rule":
        // check the ports here and say which one is taken.
        drop(kiln_user_net::UserNet::bind(cfg.clone())?);
    }
    let kvm = kvm_usable();
    let mut cmd = command(image, memory_bytes, cmdline, initrd, devices, kvm);
    cmd.stdin(Stdio::null());
    kiln_vmm::child::die_with_parent(&mut cmd);
    if verbose {
        eprintln!("kiln: {cmd:?}");
    }
    let started = Instant::now();
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "{} was not found: install QEMU (Debian/Ubuntu: `sudo apt-get install qemu-system-x86`) or use --platform kvm",
            qemu_binary()
        ),
        Err(e) => return Err(e).context("cannot start QEMU"),
    };
    let Some(status) = crate::child::wait_or_kill(&mut child, started, timeout)? else {
        return Ok(Ending::TimedOut {
            after: timeout.unwrap_or_default(),
        });
    };
    if verbose {
        eprintln!(
            "kiln: qemu ({}) ended after {:.2} ms with {status}",
            if kvm { "kvm" } else { "tcg" },
            started.elapsed().as_secs_f64() * 1e3
        );
    }
    let Some(code) = status.code() else {
        return Ok(Ending::HypervisorError {
            detail: format!("QEMU was killed ({status})"),
        });
    };
    Ok(match kiln_abi::exit::from_qemu_status(code) {
        Some(guest) => Ending::Exited(guest),
        // With -no-reboot, a guest reset makes QEMU exit 0.
        None if code == 0 => Ending::TripleFault,
        None => Ending::HypervisorError {
            detail: format!("QEMU failed with exit status {code} (see its message above)"),
        },
    })
}
