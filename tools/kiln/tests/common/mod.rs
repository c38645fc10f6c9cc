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

/// Whether KVM can be used; prints a skip line for `test` when not.
///
/// The device is `/dev/kvm`, or `KILN_KVM_DEVICE` as for `kiln` itself
/// (`KILN_KVM_DEVICE=/nonexistent cargo test` runs the suite as on a
/// machine without KVM).
pub fn kvm_or_skip(test: &str) -> bool {
    let device = std::env::var_os("KILN_KVM_DEVICE").unwrap_or_else(|| "/dev/kvm".into());
    let ok = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&device)
        .is_ok();
    if !ok {
        println!(
            "SKIP {test}: {} is not available on this machine",
            device.to_string_lossy()
        );
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

/// Builds `apps/NAME` as a VM image (quietly); panics with the build output on failure.
pub fn build(name: &str) {
    build_for(name, "kvm");
}

/// Builds `apps/NAME` for `platform` (kvm and qemu share one image).
pub fn build_for(name: &str, platform: &str) {
    let _guard = BUILD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let app = app(name);
    let out = kiln(&["build", "-q", "--platform", platform, app.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "building {name} failed:\n{}",
        stderr(&out)
    );
}

/// The built image of `apps/NAME` for `platform`.
pub fn image(name: &str, platform: &str) -> PathBuf {
    let dir = if platform == "linuxu" {
        "guest-linuxu"
    } else {
        "guest"
    };
    root()
        .join("target")
        .join(dir)
        .join("x86_64-unknown-linux-gnu/guest")
        .join(name)
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
    build_for(name, platform);
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

/// The VM platforms usable here (each missing one is reported as skipped).
pub fn vm_platforms(test: &str) -> Vec<&'static str> {
    let mut p = Vec::new();
    if kvm_or_skip(&format!("{test} on kvm")) {
        p.push("kvm");
    }
    if qemu_or_skip(&format!("{test} on qemu")) {
        p.push("qemu");
    }
    p
}

/// Every platform usable here: the VM ones, and linuxu (needs only Linux).
pub fn platforms(test: &str) -> Vec<&'static str> {
    let mut p = vm_platforms(test);
    p.push("linuxu");
    p
}
