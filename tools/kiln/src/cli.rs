//! Command-line flags.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use kiln_build::Platform;
use kiln_build::manifest::MemorySize;

/// Build and run Kiln unikernel images.
#[derive(Debug, Parser)]
#[command(name = "kiln", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build the image of the app in DIR (default: the current directory).
    Build(BuildArgs),
    /// Build if needed, then boot an app directory or a built image.
    Run(RunArgs),
    /// Build and boot an in-guest test runner (default: apps/ktest); ARGS
    /// filter tests by name. Exits 0 when every test passed.
    Test(RunArgs),
}

/// `kiln build` flags.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// App directory (a Cargo package with a Kiln.toml).
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Platform to build for: kvm and qemu share one image, linuxu has its own.
    #[arg(long)]
    pub platform: Option<Platform>,
    /// Hide Cargo's output.
    #[arg(short, long)]
    pub quiet: bool,
}

/// `kiln run` flags.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// App directory (built when its sources changed) or image file.
    #[arg(default_value = ".")]
    pub target: PathBuf,
    /// Guest memory, e.g. 16M (default: Kiln.toml, else 64M).
    #[arg(short = 'm', long = "memory", value_name = "SIZE")]
    pub memory: Option<MemorySize>,
    /// Where to run: kvm (embedded VMM), qemu, or linuxu (a sandboxed
    /// process). Default: Kiln.toml, else kvm when /dev/kvm is usable, else linuxu.
    #[arg(long)]
    pub platform: Option<Platform>,
    /// Stop the guest after this many seconds (exit status 124).
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<f64>,
    /// Guest log level (error, warn, info, debug, trace, off).
    #[arg(long, value_name = "LEVEL")]
    pub log: Option<String>,
    /// Directory packed into the initrd the guest mounts as `/` (default:
    /// Kiln.toml's `rootfs`, relative to the app directory).
    #[arg(long, value_name = "DIR")]
    pub rootfs: Option<PathBuf>,
    /// A disk image served as a virtio-blk device (`FILE` or `FILE:ro`);
    /// its size must be a multiple of 512 bytes. kvm and qemu.
    #[arg(long, value_name = "FILE[:ro]")]
    pub disk: Option<String>,
    /// Share a host directory with the guest, mounted at GUEST (e.g.
    /// `-v ./site:/data`; `:ro` refuses changes). Repeatable; every platform.
    #[arg(short = 'v', long = "volume", value_name = "HOST:GUEST[:ro]")]
    pub volumes: Vec<String>,
    /// Forward a port of this host to the guest: `8080:80` makes
    /// 127.0.0.1:8080 reach the guest's port 80 (`5353:53/udp` for UDP,
    /// `0.0.0.0:8080:80` for every host address). Repeatable; implies
    /// user-mode networking.
    #[arg(short = 'p', long = "publish", value_name = "[ADDR:]HOST:GUEST[/udp]")]
    pub publish: Vec<String>,
    /// The guest's network: `user` (rootless user-mode networking, the
    /// default when -p is given or Kiln.toml has `net = true`), `tap:NAME`
    /// (an existing TAP interface), or `none`.
    #[arg(long, value_name = "user|tap:NAME|none")]
    pub net: Option<String>,
    /// Let the guest open connections to other hosts (user-mode networking
    /// refuses them unless this is given).
    #[arg(long)]
    pub allow_outbound: bool,
    /// The guest's address, `ADDR/PREFIX` or `dhcp` (default 10.0.2.15/24,
    /// the user-mode network's).
    #[arg(long, value_name = "ADDR/PREFIX|dhcp")]
    pub ip: Option<String>,
    /// The guest's default gateway (default 10.0.2.2).
    #[arg(long, value_name = "ADDR")]
    pub gateway: Option<String>,
    /// Print build and boot phases with their timings (also KILN_LOG=debug).
    #[arg(long)]
    pub verbose: bool,
    /// Hide Cargo's output while building.
    #[arg(short, long)]
    pub quiet: bool,
    /// Arguments for the application's main.
    #[arg(last = true, value_name = "ARGS")]
    pub args: Vec<String>,
}
