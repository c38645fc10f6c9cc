//! Bad input gets a clear error, never a panic: broken manifests, missing
//! or non-ELF images, bad sizes and flags.

mod common;

use common::*;

fn assert_clean_error(out: &std::process::Output, needle: &str) {
    let err = stderr(out);
    assert_eq!(status(out), 1, "stderr: {err}");
    assert!(err.contains("kiln: error:"), "{err}");
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn broken_manifest_names_key_and_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Kiln.toml"), "[image]\nmemroy = \"16M\"\n").unwrap();
    let out = kiln(&["run", dir.path().to_str().unwrap()]);
    assert_clean_error(&out, "memroy");
    assert!(stderr(&out).contains("Kiln.toml"));

    std::fs::write(dir.path().join("Kiln.toml"), "[image]\nmemory = \"lots\"\n").unwrap();
    let out = kiln(&["run", dir.path().to_str().unwrap()]);
    assert_clean_error(&out, "`lots` is not a memory size");

    std::fs::write(dir.path().join("Kiln.toml"), "[image\n").unwrap();
    let out = kiln(&["build", dir.path().to_str().unwrap()]);
    assert_clean_error(&out, "is invalid");
}

#[test]
fn directory_without_manifest_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let out = kiln(&["run", dir.path().to_str().unwrap()]);
    assert_clean_error(&out, "has no Kiln.toml");
}

#[test]
fn missing_image_is_explained() {
    let out = kiln(&["run", "/no/such/image.elf"]);
    assert_clean_error(&out, "does not exist");
}

#[test]
fn non_elf_image_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("notes.txt");
    std::fs::write(&image, "just some text, not a kernel").unwrap();
    let out = kiln(&["run", image.to_str().unwrap()]);
    assert_clean_error(&out, "is not an ELF image");
}

#[test]
fn truncated_elf_is_refused() {
    build("hello");
    let full =
        std::fs::read(root().join("target/guest/x86_64-unknown-linux-gnu/guest/hello")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("truncated.elf");
    std::fs::write(&image, &full[..200]).unwrap();
    let out = kiln(&["run", image.to_str().unwrap()]);
    assert_clean_error(&out, "not a bootable ELF");
}

#[test]
fn elf_without_pvh_note_is_refused() {
    let out = kiln(&["run", "/bin/true"]);
    let err = stderr(&out);
    assert_eq!(status(&out), 1, "{err}");
    assert!(
        err.contains("not a bootable ELF") || err.contains("no PVH entry note"),
        "{err}"
    );
    assert!(!err.contains("panicked"));
}

#[test]
fn unsupported_memory_size_is_explained() {
    if !kvm_or_skip("unsupported_memory_size_is_explained") {
        return;
    }
    build("hello");
    let out = kiln(&["run", "-q", app("hello").to_str().unwrap(), "-m", "1M"]);
    assert_clean_error(&out, "raise -m");
    let out = kiln(&["run", "-q", app("hello").to_str().unwrap(), "-m", "5G"]);
    assert_clean_error(&out, "use -m between");
}

#[test]
fn bad_flags_are_usage_errors() {
    let out = kiln(&["run", "--timeout", "soon"]);
    assert_eq!(status(&out), 2);
    let out = kiln(&["run", "--platform", "xen"]);
    assert_eq!(status(&out), 2);
    assert!(stderr(&out).contains("unknown platform `xen`"));
    let out = kiln(&["run", "-m", "12Q"]);
    assert_eq!(status(&out), 2);
}

#[test]
fn too_little_memory_for_the_runtime_is_reported_by_the_guest() {
    if !kvm_or_skip("too_little_memory_for_the_runtime_is_reported_by_the_guest") {
        return;
    }
    build("hello");
    // The VMM says how much the image itself needs; a little more than that
    // loads it but leaves the runtime no room for its heap.
    let out = kiln(&["run", "-q", app("hello").to_str().unwrap(), "-m", "1M"]);
    let err = stderr(&out);
    let needed: u64 = err
        .split("needs ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no size in: {err}"));
    let memory = format!("{}K", needed.div_ceil(4096) * 4 + 8);
    let out = kiln(&["run", "-q", app("hello").to_str().unwrap(), "-m", &memory]);
    assert_eq!(status(&out), 104, "-m {memory}: {}", stderr(&out));
    assert!(
        stdout(&out).contains("give the guest more memory with -m"),
        "{}",
        stdout(&out)
    );
    assert!(stderr(&out).contains("ran out of memory"));
}

#[test]
fn missing_qemu_says_how_to_install_it() {
    build("hello");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args([
            "run",
            "-q",
            "--platform",
            "qemu",
            app("hello").to_str().unwrap(),
        ])
        .env("KILN_QEMU", "/nonexistent/qemu-system-x86_64")
        .output()
        .unwrap();
    assert_clean_error(&out, "apt-get install qemu-system-x86");
}

#[test]
fn a_missing_rootfs_directory_is_explained() {
    let out = run_app("fsdemo", "linuxu", &["--rootfs", "/nonexistent/kiln-root"]);
    assert_clean_error(&out, "rootfs /nonexistent/kiln-root is not a directory");
}

#[test]
fn a_rootfs_with_a_fifo_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("pipe");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let out = run_app(
        "fsdemo",
        "linuxu",
        &["--rootfs", dir.path().to_str().unwrap()],
    );
    assert_clean_error(&out, "is not a regular file, directory or symbolic link");
    assert!(stderr(&out).contains("pipe"));
}

#[test]
fn a_truncated_or_missing_disk_image_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("short.img");
    std::fs::write(&img, vec![0u8; 1000]).unwrap();
    // Disks are checked before KVM is opened: no skip needed.
    let out = run_app("diskdemo", "kvm", &["--disk", img.to_str().unwrap()]);
    assert_clean_error(&out, "is 1000 bytes, not a multiple of 512");
    let out = run_app("diskdemo", "qemu", &["--disk", img.to_str().unwrap()]);
    assert_clean_error(&out, "is 1000 bytes, not a multiple of 512");

    let out = run_app("diskdemo", "kvm", &["--disk", "/nonexistent/disk.img"]);
    assert_clean_error(&out, "cannot open disk image /nonexistent/disk.img");
    let out = run_app("diskdemo", "linuxu", &["--disk", img.to_str().unwrap()]);
    assert_clean_error(&out, "--disk needs a VM");
}

#[test]
fn a_missing_or_malformed_volume_is_explained() {
    let out = run_app("fsdemo", "kvm", &["-v", "/nonexistent/site:/data"]);
    assert_clean_error(&out, "/nonexistent/site is not a directory on this host");
    let out = run_app("fsdemo", "kvm", &["-v", "/tmp"]);
    assert_clean_error(&out, "give HOST:GUEST");
    let out = run_app("fsdemo", "kvm", &["-v", "/tmp:data"]);
    assert_clean_error(&out, "GUEST an absolute guest path");
}
