//! # kiln — build Kiln unikernel images and run them
//!
//! `kiln build [DIR]` compiles the app in DIR (a Cargo package with a
//! `Kiln.toml`) into a bootable image; `kiln run [DIR | IMAGE] [-- ARGS]`
//! builds it if its sources changed and boots it on the embedded KVM VMM
//! (`--platform kvm`, the default where `/dev/kvm` is usable), under QEMU
//! (`--platform qemu`) or as a sandboxed Linux process (`--platform
//! linuxu`, the fallback without KVM), and exits with the guest's status.
//!
//! Exit statuses: the guest's own; 124 when `--timeout` stopped it; 125
//! when it reset its CPU; 126 when the hypervisor could not run it; 1 when
//! Kiln itself failed (bad manifest, missing image, build error), with a
//! message naming the cause and the fix.
//!
//! Modules: [`cli`] (flags), [`runner`] (resolving what to run, the kvm
//! platform, status mapping), [`qemu`] and [`linuxu`] (those platforms).
#![forbid(unsafe_code)]

mod child;
mod cli;
mod linuxu;
mod qemu;
mod runner;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    match runner::dispatch(cli) {
        Ok(status) => std::process::ExitCode::from(status),
        Err(e) => {
            eprintln!("kiln: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
