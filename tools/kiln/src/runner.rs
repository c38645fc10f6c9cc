//! What `kiln build` and `kiln run` do.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use kiln_abi::exit;
use kiln_build::{Manifest, Platform};
use kiln_vmm::{Ending, VmConfig};

use crate::cli::{BuildArgs, Cli, Command, RunArgs};

/// Guest memory when neither `-m` nor Kiln.toml says.
pub const DEFAULT_MEMORY_BYTES: u64 = 64 << 20;

/// Runs a parsed command line; returns the process exit status.
pub fn dispatch(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Build(args) => build(args),
        Command::Run(args) => run(args),
        Command::Test(args) => test(args),
    }
}

/// `kiln test`: boots a test runner and says how it went.
fn test(mut args: RunArgs) -> anyhow::Result<u8> {
    // From the workspace root, `kiln test` means the workspace's runner.
    if args.target == Path::new(".") && !Path::new(kiln_build::manifest::FILE_NAME).exists() {
        args.target = Path::new("apps").join("ktest");
    }
    let status = run(args)?;
    match status {
        0 => eprintln!("kiln: all in-guest tests passed"),
        1..=99 => eprintln!("kiln: {status} in-guest test(s) failed (see the FAILED lines above)"),
        _ => eprintln!(
            "kiln: the test run did not finish (exit status {status}); the last test line names the test that stopped it"
        ),
    }
    Ok(status)
}

fn verbose_env() -> bool {
    std::env::var("KILN_LOG").is_ok_and(|v| matches!(v.as_str(), "debug" | "trace" | "1"))
}

/// The platform when neither the flag nor Kiln.toml names one: kvm where
/// /dev/kvm is usable, else linuxu (saying so in one line).
fn default_platform(announce: bool) -> Platform {
    if crate::qemu::kvm_usable() {
        return Platform::Kvm;
    }
    if announce {
        eprintln!(
            "kiln: {} is not usable here; running on linuxu (a sandboxed Linux process) instead",
            kiln_vmm::kvm_device().display()
        );
    }
    Platform::Linuxu
}

fn build(args: BuildArgs) -> anyhow::Result<u8> {
    let manifest = Manifest::load(&args.dir)?;
    let platform = args
        .platform
        .or(manifest.image.platform)
        .unwrap_or_else(|| default_platform(false));
    eprintln!("kiln: building {} for {platform}", args.dir.display());
    let built = kiln_build::build(&args.dir, platform.into(), args.quiet)?;
    let size = std::fs::metadata(&built.path).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "kiln: {} {} ({} bytes)",
        if built.rebuilt {
            "built"
        } else {
            "up to date:"
        },
        built.path.display(),
        size
    );
    Ok(0)
}

/// What `kiln run` resolved its target to.
struct Resolved {
    image: PathBuf,
    manifest: Manifest,
}

fn resolve(
    target: &Path,
    platform: Option<Platform>,
    quiet: bool,
    verbose: bool,
) -> anyhow::Result<(Resolved, Platform)> {
    if target.is_dir() {
        let manifest = Manifest::load(target)?;
        let platform = platform
            .or(manifest.image.platform)
            .unwrap_or_else(|| default_platform(true));
        let started = Instant::now();
        if kiln_build::image_path_if_fresh(target, platform.into())?.is_none() {
            eprintln!("kiln: building {} for {platform}", target.display());
        }
        let built = kiln_build::build(target, platform.into(), quiet)?;
        if verbose {
            eprintln!(
                "kiln: image {} ({}, {:.1} ms)",
                built.path.display(),
                if built.rebuilt {
                    "rebuilt"
                } else {
                    "up to date"
                },
                started.elapsed().as_secs_f64() * 1e3
            );
        }
        return Ok((
            Resolved {
                image: built.path,
                manifest,
            },
            platform,
        ));
    }
    if target.is_file() {
        let platform = platform_for_image_file(target, platform)?;
        return Ok((
            Resolved {
                image: target.to_path_buf(),
                manifest: Manifest::default(),
            },
            platform,
        ));
    }
    bail!(
        "{} does not exist: give an app directory (with Kiln.toml) or a built image file",
        target.display()
    )
}

/// Which platform runs a built image file: the image's kind decides, and
/// a `--platform` that does not fit it is an error.
fn platform_for_image_file(image: &Path, asked: Option<Platform>) -> anyhow::Result<Platform> {
    use kiln_build::ImageKind;
    let bytes =
        std::fs::read(image).with_context(|| format!("cannot read image {}", image.display()))?;
    let Some(kind) = kiln_build::image_kind(&bytes) else {
        // Not a Kiln image: let the image checks say precisely why.
        return Ok(asked.unwrap_or_else(|| default_platform(false)));
    };
    Ok(match (kind, asked) {
        (ImageKind::Pvh, Some(Platform::Linuxu)) => bail!(
            "{} is a VM image: run it with --platform kvm or qemu, or build the app with --platform linuxu",
            image.display()
        ),
        (ImageKind::Linuxu, Some(p @ (Platform::Kvm | Platform::Qemu))) => bail!(
            "{} is a linuxu executable, not a VM image for {p}: run it with --platform linuxu, or build the app for {p}",
            image.display()
        ),
        (_, Some(p)) => p,
        (ImageKind::Pvh, None) => match default_platform(false) {
            Platform::Linuxu => bail!(
                "{} is a VM image but /dev/kvm is not usable here: enable KVM, use --platform qemu, or build the app with --platform linuxu",
                image.display()
            ),
            p => p,
        },
        (ImageKind::Linuxu, None) => Platform::Linuxu,
    })
}

fn run(args: RunArgs) -> anyhow::Result<u8> {
    let verbose = args.verbose || verbose_env();
    let (Resolved { image, manifest }, platform) =
        resolve(&args.target, args.platform, args.quiet, verbose)?;
    let memory_bytes = args
        .memory
        .map(|m| m.0)
        .or(manifest.image.memory.map(|m| m.0))
        .unwrap_or(DEFAULT_MEMORY_BYTES);
    let timeout = match args.timeout {
        Some(secs) if !(secs.is_finite() && secs >= 0.0) => {
            bail!("--timeout {secs} is not a number of seconds (use e.g. --timeout 10)")
        }
        Some(secs) if secs > 0.0 => Some(Duration::from_secs_f64(secs)),
        Some(_) => None,
        None => manifest
            .image
            .timeout_secs
            .filter(|s| *s > 0)
            .map(Duration::from_secs),
    };
    let log = args
        .log
        .clone()
        .or(manifest.image.log.map(|l| l.as_str().to_string()));
    let guest_args = if args.args.is_empty() {
        manifest.image.args.clone()
    } else {
        args.args.clone()
    };
    let disks: Vec<kiln_vmm::DiskConfig> = match &args.disk {
        None => Vec::new(),
        Some(_) if platform == Platform::Linuxu => {
            bail!("--disk needs a VM: use --platform kvm or qemu (linuxu has no disks yet)")
        }
        Some(spec) => {
            let (path, read_only) = match spec.strip_suffix(":ro") {
                Some(path) => (path, true),
                None => (spec.as_str(), false),
            };
            // The same image checks on every VM platform, before anything
            // starts (QEMU would serve a truncated image as a shorter disk).
            kiln_vmm::virtio::block::Block::open(Path::new(path), read_only)?;
            vec![kiln_vmm::DiskConfig {
                path: path.into(),
                read_only,
            }]
        }
    };

    let volumes = args
        .volumes
        .iter()
        .map(|spec| parse_volume(spec))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let rootfs_dir = args
        .rootfs
        .clone()
        .or_else(|| manifest.image.rootfs.as_ref().map(|r| args.target.join(r)));
    let initrd = match &rootfs_dir {
        Some(dir) => {
            let bytes = kiln_build::rootfs::pack(dir)?;
            if verbose {
                eprintln!(
                    "kiln: rootfs {} packed into a {}-byte initrd",
                    dir.display(),
                    bytes.len()
                );
            }
            Some(bytes)
        }
        None => None,
    };
    // qemu and linuxu read the initrd from a file.
    let initrd_file = match (&initrd, platform) {
        (Some(bytes), Platform::Qemu | Platform::Linuxu) => {
            let mut file = tempfile::Builder::new()
                .prefix("kiln-initrd-")
                .suffix(".cpio")
                .tempfile()
                .context("cannot create a temporary file for the initrd")?;
            std::io::Write::write_all(&mut file, bytes)
                .context("cannot write the initrd's temporary file")?;
            Some(file.into_temp_path())
        }
        _ => None,
    };
    let network = resolve_network(&args, &manifest)?;
    let (net_ip, net_gw) = guest_ip_options(&args, &network)?;
    let mut options: Vec<(&str, &str)> =
        log.as_deref().map(|l| vec![("log", l)]).unwrap_or_default();
    if let Some(ip) = &net_ip {
        options.push(("ip", ip));
    }
    if let Some(gw) = &net_gw {
        options.push(("gw", gw));
    }
    let initrd_path = initrd_file
        .as_ref()
        .map(|p| {
            p.to_str()
                .context("the temporary directory's path is not UTF-8")
        })
        .transpose()?;
    if platform == Platform::Linuxu
        && let Some(path) = initrd_path
    {
        options.push(("initrd", path));
    }
    let cmdline = kiln_abi::cmdline::encode(&options, &guest_args);
    let bytes =
        std::fs::read(&image).with_context(|| format!("cannot read image {}", image.display()))?;
    if bytes.len() < 4 || &bytes[..4] != b"\x7fELF" {
        bail!(
            "{} is not an ELF image: pass an app directory or an image built by `kiln build`",
            image.display()
        );
    }
    // Same checks on every platform, before anything is started.
    let memory_limit = if platform == Platform::Linuxu {
        u64::MAX
    } else {
        memory_bytes
    };
    kiln_vmm::check_image(&bytes, memory_limit)?;
    if verbose {
        eprintln!(
            "kiln: booting {} on {platform} with {} MiB, cmdline {cmdline:?}",
            image.display(),
            memory_bytes >> 20
        );
    }
    let ending = match platform {
        Platform::Kvm => {
            let outcome = kiln_vmm::run(VmConfig {
                image: bytes,
                memory_bytes,
                cmdline,
                initrd,
                disks: disks.clone(),
                volumes: volumes.clone(),
                net: match &network {
                    Network::None => None,
                    Network::User(cfg) => Some(kiln_vmm::NetConfig::User(cfg.clone())),
                    Network::Tap(name) => Some(kiln_vmm::NetConfig::Tap(name.clone())),
                },
                timeout,
                console: Box::new(std::io::stdout()),
            })?;
            if verbose {
                let t = outcome.timings;
                eprintln!(
                    "kiln: vm setup {:.2} ms, first guest exit at {}, guest ended at {:.2} ms after {} exits",
                    t.setup.as_secs_f64() * 1e3,
                    t.first_exit
                        .map_or("-".into(), |d| format!("{:.2} ms", d.as_secs_f64() * 1e3)),
                    t.end.as_secs_f64() * 1e3,
                    t.exits
                );
            }
            outcome.ending
        }
        Platform::Qemu => crate::qemu::run(
            &image,
            memory_bytes,
            &cmdline,
            initrd_file.as_deref(),
            &crate::qemu::Devices {
                disks,
                volumes,
                net: network,
            },
            timeout,
            verbose,
        )?,
        Platform::Linuxu => crate::linuxu::run(
            &image,
            memory_bytes,
            &options,
            &guest_args,
            &volumes,
            &network,
            timeout,
        )?,
    };
    Ok(report(&ending))
}

/// The guest's network, from `--net`, `-p`, `--allow-outbound` and
/// Kiln.toml's `net` and `ports`.
pub enum Network {
    /// No network device.
    None,
    /// Rootless user-mode networking.
    User(kiln_user_net::UserNetConfig),
    /// A host TAP interface.
    Tap(String),
}

fn resolve_network(args: &RunArgs, manifest: &Manifest) -> anyhow::Result<Network> {
    let specs = if args.publish.is_empty() {
        &manifest.image.ports
    } else {
        &args.publish
    };
    let forwards = specs
        .iter()
        .map(|s| {
            s.parse::<kiln_user_net::PortForward>()
                .map_err(|e| anyhow::anyhow!("-p {s}: {e}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let implied = !forwards.is_empty() || manifest.image.net || args.allow_outbound;
    let mode = args
        .net
        .as_deref()
        .unwrap_or(if implied { "user" } else { "none" });
    match mode {
        "none" => {
            if !forwards.is_empty() {
                bail!("-p forwards ports into the guest's network: drop --net none");
            }
            Ok(Network::None)
        }
        "user" => Ok(Network::User(kiln_user_net::UserNetConfig {
            forwards,
            allow_outbound: args.allow_outbound,
        })),
        m => match m.strip_prefix("tap:") {
            Some(name) => {
                if !args.publish.is_empty() {
                    bail!(
                        "-p forwards ports through user-mode networking; on --net {m} the guest is reached at its own address (--ip): drop -p"
                    );
                }
                Ok(Network::Tap(name.to_string()))
            }
            None => bail!("--net {m}: use user, tap:NAME or none"),
        },
    }
}

/// The `ip=` and `gw=` kernel options for the guest (none without a
/// network).
fn guest_ip_options(
    args: &RunArgs,
    network: &Network,
) -> anyhow::Result<(Option<String>, Option<String>)> {
    if matches!(network, Network::None) {
        if args.ip.is_some() || args.gateway.is_some() {
            bail!(
                "--ip and --gateway configure the guest's network, which it does not have: add -p or --net"
            );
        }
        return Ok((None, None));
    }
    let ip = args.ip.clone().unwrap_or_else(|| {
        format!(
            "{}/{}",
            kiln_abi::net::GUEST_ADDR,
            kiln_abi::net::PREFIX_LEN
        )
    });
    if ip == "dhcp" {
        if args.gateway.is_some() {
            bail!("--gateway comes from the DHCP server with --ip dhcp: drop --gateway");
        }
        return Ok((Some(ip), None));
    }
    let valid = ip.split_once('/').is_some_and(|(a, p)| {
        a.parse::<std::net::Ipv4Addr>().is_ok()
            && p.parse::<u8>().is_ok_and(|p| (1..=32).contains(&p))
    });
    if !valid {
        bail!("--ip {ip}: give ADDR/PREFIX (e.g. 10.0.2.15/24) or dhcp");
    }
    let gw = args
        .gateway
        .clone()
        .unwrap_or_else(|| kiln_abi::net::GATEWAY_ADDR.to_string());
    if gw.parse::<std::net::Ipv4Addr>().is_err() {
        bail!("--gateway {gw}: give an IPv4 address (e.g. 10.0.2.2)");
    }
    Ok((Some(ip), Some(gw)))
}

/// Parses `HOST:GUEST[:ro]`.
fn parse_volume(spec: &str) -> anyhow::Result<kiln_vmm::VolumeConfig> {
    let (rest, read_only) = match spec.strip_suffix(":ro") {
        Some(rest) => (rest, true),
        None => (spec, false),
    };
    let Some((host, guest)) = rest.rsplit_once(':') else {
        bail!("-v {spec}: give HOST:GUEST, e.g. -v ./site:/data (add :ro for read-only)");
    };
    if host.is_empty()
        || !guest.starts_with('/')
        || guest == "/"
        || guest.split('/').any(|c| c == "..")
    {
        bail!(
            "-v {spec}: HOST must be a directory and GUEST an absolute guest path other than / (e.g. /data)"
        );
    }
    if !Path::new(host).is_dir() {
        bail!("-v {spec}: {host} is not a directory on this host: create it or fix the path");
    }
    Ok(kiln_vmm::VolumeConfig {
        host_dir: host.into(),
        guest_dir: guest.trim_end_matches('/').to_string(),
        read_only,
    })
}

/// Prints what an abnormal ending means; returns the exit status.
pub fn report(ending: &Ending) -> u8 {
    match ending {
        Ending::Exited(status) => {
            if let Some(what) = exit::describe(*status) {
                eprintln!("kiln: {what} (exit status {status})");
            }
            *status
        }
        Ending::TimedOut { after } => {
            eprintln!(
                "kiln: error: the guest did not exit within {:.1} s and was stopped (raise --timeout if it needs longer)",
                after.as_secs_f64()
            );
            exit::HOST_TIMEOUT
        }
        Ending::TripleFault => {
            eprintln!("kiln: error: the guest reset its CPU (triple fault or shutdown request)");
            exit::HOST_TRIPLE_FAULT
        }
        Ending::HypervisorError { detail } => {
            eprintln!("kiln: error: the hypervisor stopped the guest: {detail}");
            exit::HOST_VM_ERROR
        }
        Ending::SandboxViolation { syscall } => {
            eprintln!(
                "kiln: error: sandbox violation: the guest made Linux system call {syscall}, which the linuxu sandbox does not allow (docs/adr/0004 lists what it allows)"
            );
            exit::SANDBOX_VIOLATION
        }
        Ending::UnhandledAccessLoop { what } => {
            eprintln!(
                "kiln: error: the guest kept accessing {what}, which no device handles; stopped it"
            );
            exit::HOST_VM_ERROR
        }
    }
}
