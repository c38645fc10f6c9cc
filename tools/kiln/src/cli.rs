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
