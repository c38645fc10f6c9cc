//! Helpers shared by the CLI integration tests: run `kiln`, check for KVM
//! and QEMU, and print an explicit skip line when one is missing.

#![allow(dead_code, reason = "each test file uses a subset")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// An app directory under `apps/`.
pub fn app(name: &str) -> PathBuf {
    root().join("apps").join(name)
}

/// Whether /dev/kvm can be used; prints a skip line for `test` when not.
pub fn kvm_or_skip(test: &str) -> bool {
    let ok = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    if !ok {
        println!("SKIP {test}: /dev/kvm is not available on this machine");
    }
    ok
}

/// Whether QEMU (with KVM) can be used; prints a skip line for `test` when not.
pub fn qemu_or_skip(test: &str) -> bool {
    if !kvm_or_skip(test) {
        return false;
    }
    let ok = Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .is_ok();
    if !ok {
        println!(
            "SKIP {test}: qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)"
        );
    }
    ok
}

/// Guest builds share one target directory: build each app once, serially.
static BUILD_LOCK: Mutex<()> = Mutex::new(());

/// Builds `apps/NAME` (quietly) and panics with Cargo's output if it fails.
pub fn build(name: &str) {
    let _guard = BUILD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let out = kiln(&["build", "-q", app(name).to_str().unwrap()]);
    assert!(
        out.status.success(),
        "building {name} failed:\n{}",
        stderr(&out)
    );
}

/// Runs the kiln binary with `args`.
pub fn kiln(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("the kiln binary runs")
}

/// Builds then runs `kiln run -q APP --platform P EXTRA...`.
pub fn run_app(name: &str, platform: &str, extra: &[&str]) -> Output {
    build(name);
    let app = app(name);
    let mut args = vec!["run", "-q", app.to_str().unwrap(), "--platform", platform];
    args.extend_from_slice(extra);
    kiln(&args)
}

/// Captured stdout as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Captured stderr as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The exit status (panics when killed by a signal).
pub fn status(out: &Output) -> i32 {
    out.status
        .code()
        .unwrap_or_else(|| panic!("kiln was killed: {:?}\n{}", out.status, stderr(out)))
}

/// The platforms usable here (each missing one is reported as skipped).
pub fn platforms(test: &str) -> Vec<&'static str> {
    let mut p = Vec::new();
    if kvm_or_skip(&format!("{test} on kvm")) {
        p.push("kvm");
    }
    if qemu_or_skip(&format!("{test} on qemu")) {
        p.push("qemu");
    }
    p
}
