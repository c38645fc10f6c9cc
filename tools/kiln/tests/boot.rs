//! Boot tests: build the apps, boot them on every platform available here,
//! and check what the guest printed and its exit status.

mod common;

use common::*;

#[test]
fn hello_prints_greeting_and_arguments() {
    for p in platforms("hello_prints_greeting_and_arguments") {
        let out = run_app("hello", p, &["--", "a", "b"]);
        assert_eq!(
            stdout(&out),
            "Hello from Kiln!\na\nb\n",
            "on {p}: {}",
            stderr(&out)
        );
        assert_eq!(status(&out), 0, "on {p}");
    }
}

#[test]
fn hello_keeps_awkward_arguments_intact() {
    for p in platforms("hello_keeps_awkward_arguments_intact") {
        let out = run_app("hello", p, &["--", "two words", "", "q\"uote", "--", "x=y"]);
        assert_eq!(
            stdout(&out),
            "Hello from Kiln!\ntwo words\n\nq\"uote\n--\nx=y\n",
            "on {p}: {}",
            stderr(&out)
        );
        assert_eq!(status(&out), 0);
    }
}

#[test]
fn hello_boots_with_two_mib() {
    if !kvm_or_skip("hello_boots_with_two_mib") {
        return;
    }
    let out = run_app("hello", "kvm", &["-m", "2M", "--", "small"]);
    assert_eq!(
        stdout(&out),
        "Hello from Kiln!\nsmall\n",
        "{}",
        stderr(&out)
    );
    assert_eq!(status(&out), 0);
}

#[test]
fn hello_image_is_at_most_64_kib_stripped() {
    build("hello");
    let bytes = std::fs::read(image("hello", "kvm")).unwrap();
    assert!(bytes.len() <= 64 * 1024, "hello is {} bytes", bytes.len());
    // Stripped: no symbol table section name in the file.
    assert!(
        !bytes.windows(8).any(|w| w == b".symtab\0"),
        "image is not stripped"
    );
}

#[test]
fn guest_log_level_comes_from_the_command_line() {
    for p in platforms("guest_log_level_comes_from_the_command_line") {
        let out = run_app("hello", p, &["--log", "debug"]);
        let text = stdout(&out);
        assert!(text.contains("[DEBUG kiln_rt] memory:"), "on {p}: {text}");
        assert_eq!(status(&out), 0);
        let out = run_app("hello", p, &["--log", "warn"]);
        assert!(!stdout(&out).contains("DEBUG"), "on {p}");
    }
}

#[test]
fn panic_prints_message_and_location_and_exits_101() {
    for p in platforms("panic_prints_message_and_location_and_exits_101") {
        let out = run_app("panic", p, &[]);
        let text = stdout(&out);
        assert!(
            text.contains("kiln: panicked at apps/panic/src/main.rs:"),
            "on {p}: {text}"
        );
        assert!(
            text.contains("deliberate panic from the panic test app"),
            "on {p}: {text}"
        );
        assert_eq!(status(&out), 101, "on {p}");
        assert!(stderr(&out).contains("the guest panicked"), "on {p}");
    }
}

#[test]
fn null_dereference_prints_a_crash_report_and_exits_102() {
    for p in platforms("null_dereference_prints_a_crash_report_and_exits_102") {
        let out = run_app("fault", p, &[]);
        let text = stdout(&out);
        assert!(
            text.contains("kiln: CPU exception #PF (page fault), vector 14"),
            "on {p}: {text}"
        );
        assert!(
            text.contains("read of an unmapped page at address 0x0"),
            "on {p}: {text}"
        );
        assert!(
            text.contains("rip=0x") && text.contains("[rsp+0x00]"),
            "on {p}: {text}"
        );
        assert_eq!(status(&out), 102, "on {p}");
    }
}

#[test]
fn each_exception_kind_is_named() {
    let mut p = vec!["linuxu"];
    if kvm_or_skip("each_exception_kind_is_named on kvm") {
        p.push("kvm");
    }
    for p in p {
        for (kind, name) in [
            ("ud", "#UD (invalid opcode)"),
            ("gp", "#GP (general protection fault)"),
            ("de", "#DE (divide error)"),
        ] {
            let out = run_app("fault", p, &["--", kind]);
            assert!(
                stdout(&out).contains(name),
                "{kind} on {p}: {}",
                stdout(&out)
            );
            assert_eq!(status(&out), 102, "{kind} on {p}");
        }
    }
}

#[test]
fn fault_inside_the_handler_exits_103() {
    for p in platforms("fault_inside_the_handler_exits_103") {
        let out = run_app("fault", p, &["--", "nested"]);
        assert!(
            stdout(&out).contains("CPU exception inside the exception handler"),
            "on {p}: {}",
            stdout(&out)
        );
        assert_eq!(status(&out), 103, "on {p}");
    }
}

#[test]
fn fault_in_the_supervisor_is_reported_and_exits_106() {
    for p in vm_platforms("fault_in_the_supervisor_is_reported_and_exits_106") {
        let out = run_app("fault", p, &["--", "supervisor"]);
        assert!(
            stdout(&out).contains("CPU exception in the supervisor"),
            "on {p}: {}",
            stdout(&out)
        );
        assert_eq!(status(&out), 106, "on {p}");
    }
}

#[test]
fn resume_into_a_non_canonical_address_is_refused() {
    for p in platforms("resume_into_a_non_canonical_address_is_refused") {
        let out = run_app("fault", p, &["--", "resume"]);
        assert!(
            stdout(&out).contains("cannot resume: the upcall frame holds a non-canonical rip"),
            "on {p}: {}",
            stdout(&out)
        );
        assert_eq!(status(&out), 103, "on {p}");
    }
}

#[test]
fn exit_without_an_exit_device_halts_the_cpu() {
    // On a machine with no exit port the supervisor's exit must stop the
    // CPU (cli; hlt), not return into the program or reset the machine.
    if !qemu_or_skip("exit_without_an_exit_device_halts_the_cpu") {
        return;
    }
    build("hello");
    let image = image("hello", "qemu");
    let mut child = std::process::Command::new("qemu-system-x86_64")
        .args(["-M", "microvm,pic=off,pit=off,rtc=off", "-accel", "kvm"])
        .args([
            "-cpu",
            "host,-arch-capabilities",
            "-m",
            "16M",
            "-nodefaults",
        ])
        .args([
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
            "-serial",
            "stdio",
        ])
        .arg("-kernel")
        .arg(&image)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let still_running = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("Hello from Kiln!"));
    assert!(
        still_running,
        "QEMU ended: the guest reset or ran on after exit"
    );
}

#[test]
fn a_guest_that_never_exits_is_stopped_by_the_timeout() {
    for p in platforms("a_guest_that_never_exits_is_stopped_by_the_timeout") {
        for mode in ["halt", "busy"] {
            let out = run_app("hang", p, &["--timeout", "1", "--", mode]);
            assert!(stdout(&out).contains("spinning forever"), "on {p}/{mode}");
            assert_eq!(status(&out), 124, "on {p}/{mode}");
            let err = stderr(&out);
            assert!(
                err.contains("did not exit within 1.0 s"),
                "on {p}/{mode}: {err}"
            );
        }
    }
}

#[test]
fn supervisor_selftest_passes() {
    for p in platforms("supervisor_selftest_passes") {
        let out = run_app("selftest", p, &[]);
        let text = stdout(&out);
        // linuxu has no supervisor: its supervisor-only cases are skipped.
        let expect = if p == "linuxu" {
            "ktest: 19 passed, 0 failed, 6 skipped"
        } else {
            "ktest: 25 passed, 0 failed, 0 skipped"
        };
        assert!(text.contains(expect), "on {p}: {text}");
        assert!(!text.contains("FAILED"), "on {p}: {text}");
        assert_eq!(status(&out), 0, "on {p}");
    }
}

#[test]
fn linuxu_sandbox_kills_a_forbidden_system_call() {
    let out = run_app("fault", "linuxu", &["--", "syscall"]);
    assert_eq!(status(&out), 107, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("sandbox violation"), "{err}");
    assert!(err.contains("Linux system call 39"), "{err}");
    assert!(
        !stdout(&out).contains("syscall returned"),
        "the call returned instead of being stopped"
    );
}

#[test]
fn vm_platforms_answer_a_raw_system_call_with_enosys() {
    for p in vm_platforms("vm_platforms_answer_a_raw_system_call_with_enosys") {
        let out = run_app("fault", p, &["--", "syscall"]);
        assert!(
            stdout(&out).contains("syscall returned -38"),
            "on {p}: {}",
            stdout(&out)
        );
        assert_eq!(status(&out), 0, "on {p}");
    }
}

#[test]
fn without_kvm_run_falls_back_to_linuxu() {
    build_for("hello", "linuxu");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["run", "-q", app("hello").to_str().unwrap(), "--", "no-kvm"])
        .env("KILN_KVM_DEVICE", "/nonexistent/kvm")
        .output()
        .unwrap();
    assert_eq!(
        stdout(&out),
        "Hello from Kiln!\nno-kvm\n",
        "{}",
        stderr(&out)
    );
    assert_eq!(status(&out), 0);
    let notices = stderr(&out)
        .lines()
        .filter(|l| l.contains("running on linuxu"))
        .count();
    assert_eq!(notices, 1, "{}", stderr(&out));
}

#[test]
fn images_run_only_on_their_platform() {
    build_for("hello", "kvm");
    build_for("hello", "linuxu");
    let vm = image("hello", "kvm");
    let process = image("hello", "linuxu");
    let out = kiln(&["run", vm.to_str().unwrap(), "--platform", "linuxu"]);
    assert_eq!(status(&out), 1);
    assert!(stderr(&out).contains("is a VM image"), "{}", stderr(&out));
    let out = kiln(&["run", process.to_str().unwrap(), "--platform", "kvm"]);
    assert_eq!(status(&out), 1);
    assert!(
        stderr(&out).contains("is a linuxu executable"),
        "{}",
        stderr(&out)
    );
    let out = kiln(&["run", process.to_str().unwrap(), "--", "plain"]);
    assert_eq!(
        stdout(&out),
        "Hello from Kiln!\nplain\n",
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_guest_looping_on_unhandled_mmio_is_stopped() {
    if !kvm_or_skip("a_guest_looping_on_unhandled_mmio_is_stopped") {
        return;
    }
    let out = run_app("fault", "kvm", &["-m", "16M", "--", "mmio"]);
    assert_eq!(status(&out), 126, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("unhandled MMIO 0x20000000 (ignored)"), "{err}");
    assert!(
        err.contains("kept accessing MMIO 0x20000000, which no device handles"),
        "{err}"
    );
}

#[test]
fn kiln_test_runs_every_in_guest_suite() {
    for p in platforms("kiln_test_runs_every_in_guest_suite") {
        build_for("ktest", p);
        let out = kiln(&["test", "-q", "--platform", p]);
        let text = stdout(&out);
        let expect = if p == "linuxu" {
            "ktest: 66 passed, 0 failed, 8 skipped"
        } else {
            "ktest: 74 passed, 0 failed, 0 skipped"
        };
        assert!(text.contains(expect), "on {p}: {text}\n{}", stderr(&out));
        assert!(!text.contains("FAILED"), "on {p}: {text}");
        assert_eq!(status(&out), 0, "on {p}");
        assert!(stderr(&out).contains("all in-guest tests passed"), "on {p}");
    }
}

#[test]
fn stack_overflow_is_reported_as_such() {
    for p in platforms("stack_overflow_is_reported_as_such") {
        let out = run_app("fault", p, &["--", "stack"]);
        let text = stdout(&out);
        assert!(
            text.contains("CPU exception #PF (page fault)"),
            "on {p}: {text}"
        );
        assert!(text.contains("stack overflow: the"), "on {p}: {text}");
        assert_eq!(status(&out), 102, "on {p}");
    }
}

#[test]
fn producer_consumer_runs_under_both_schedulers() {
    for p in platforms("producer_consumer_runs_under_both_schedulers") {
        for sched in ["coop", "preempt"] {
            let out = run_app("prodcons", p, &["--", sched]);
            let text = stdout(&out);
            assert!(
                text.contains("consumed 60 items, sum 60570 (expected 60570)"),
                "{sched} on {p}: {text}"
            );
            assert_eq!(status(&out), 0, "{sched} on {p}");
        }
    }
}

#[test]
fn guest_wall_clock_matches_the_host() {
    for p in platforms("guest_wall_clock_matches_the_host") {
        let out = run_app("hello", p, &["--log", "debug"]);
        let text = stdout(&out);
        let guest: u64 = text
            .split("wall clock: ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no wall clock line on {p}: {text}"));
        let host = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(
            host.abs_diff(guest) <= 5,
            "on {p}: guest {guest}, host {host}"
        );
    }
}

#[test]
fn qemu_without_kvm_runs_the_in_guest_tests_under_tcg() {
    // TCG, and the xAPIC (MMIO) timer path: QEMU is started without x2APIC.
    if std::process::Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .is_err()
    {
        println!(
            "SKIP qemu_without_kvm_runs_the_in_guest_tests_under_tcg: qemu-system-x86_64 is not installed"
        );
        return;
    }
    build_for("ktest", "qemu");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["test", "-q", "--platform", "qemu", "--timeout", "300"])
        .current_dir(root())
        .env("KILN_KVM_DEVICE", "/nonexistent/kvm")
        .output()
        .unwrap();
    let text = stdout(&out);
    assert!(
        text.contains("ktest: 74 passed, 0 failed, 0 skipped"),
        "{text}\n{}",
        stderr(&out)
    );
    assert!(
        text.contains("timer_uses_tsc_deadline_where_available ... ok"),
        "{text}"
    );
    assert_eq!(status(&out), 0);
}

#[test]
fn a_deadlock_is_reported_not_hung() {
    for p in platforms("a_deadlock_is_reported_not_hung") {
        let out = run_app("fault", p, &["--timeout", "30", "--", "deadlock"]);
        let text = stdout(&out);
        assert!(
            text.contains("deadlock: every thread is blocked"),
            "on {p}: {text}"
        );
        assert_eq!(status(&out), 101, "on {p}");
    }
}

#[test]
fn the_rootfs_directory_becomes_the_guests_root() {
    let expected_tree = "  /dev/\n  /dev/console (device)\n  /dev/null (device)\n  /dev/urandom (device)\n  /dev/zero (device)\n  /etc/\n  /etc/hostname (12 bytes)\n  /etc/motd (49 bytes)\n  /srv/\n  /srv/www/\n  /srv/www/index.html (34 bytes)\n  /srv/www/motd -> ../../etc/motd\n  /tmp/\n";
    for p in platforms("the_rootfs_directory_becomes_the_guests_root") {
        let out = run_app("fsdemo", p, &[]);
        let text = stdout(&out);
        assert!(
            text.contains("fsdemo: initrd had 7 entries\n"),
            "on {p}: {text}\n{}",
            stderr(&out)
        );
        assert!(text.contains(expected_tree), "on {p}: {text}");
        assert!(text.contains("/tmp/note.txt round trip ok"), "on {p}");
        assert!(text.contains("16 bytes, not all zero"), "on {p}");
        assert!(text.contains("fsdemo: hello via /dev/console\n"), "on {p}");
        assert_eq!(status(&out), 0, "on {p}");
        // A file read through the symlink, byte for byte.
        let out = run_app("fsdemo", p, &["--", "cat", "/srv/www/motd"]);
        assert_eq!(
            stdout(&out),
            std::fs::read_to_string(app("fsdemo").join("rootfs/etc/motd")).unwrap(),
            "on {p}"
        );
        assert_eq!(status(&out), 0, "on {p}");
    }
}

#[test]
fn rootfs_flag_overrides_the_manifest_and_missing_files_say_enoent() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(dir.path().join("data/blob.bin"), &big).unwrap();
    let root = dir.path().to_str().unwrap();
    for p in platforms("rootfs_flag_overrides_the_manifest") {
        let out = run_app("fsdemo", p, &["--rootfs", root, "--", "cat", "/etc/motd"]);
        assert!(
            stdout(&out).contains("fsdemo: cat /etc/motd: Enoent (2)"),
            "on {p}: {}{}",
            stdout(&out),
            stderr(&out)
        );
        assert_eq!(status(&out), 1, "on {p}");
        let out = run_app("fsdemo", p, &["--rootfs", root]);
        assert!(
            stdout(&out).contains("  /data/blob.bin (300000 bytes)\n"),
            "on {p}: {}{}",
            stdout(&out),
            stderr(&out)
        );
        assert_eq!(status(&out), 0, "on {p}");
    }
}

#[test]
fn a_disk_keeps_data_across_boots_and_read_only_disks_refuse_writes() {
    for p in vm_platforms("a_disk_keeps_data_across_boots_and_read_only_disks_refuse_writes") {
        a_disk_keeps_data_across_boots_and_read_only_disks_refuse_writes_on(p);
    }
}

fn a_disk_keeps_data_across_boots_and_read_only_disks_refuse_writes_on(p: &str) {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
    let disk = img.to_str().unwrap();
    for boot in 1..=2 {
        let out = run_app("diskdemo", p, &["--disk", disk]);
        assert_eq!(
            stdout(&out),
            format!("diskdemo: disk of 2048 sectors\ndiskdemo: boot {boot}\n"),
            "{}",
            stderr(&out)
        );
        assert_eq!(status(&out), 0);
    }
    let bytes = std::fs::read(&img).unwrap();
    assert_eq!(&bytes[..8], b"KILNDISK");
    assert_eq!(bytes[8], 2, "the count the guest wrote is on the host file");
    // The pattern of the second boot, 12 KiB from sector 8.
    let pattern: Vec<u8> = (0..12 * 1024u64).map(|i| (i * 31 + 2) as u8).collect();
    assert_eq!(&bytes[8 * 512..8 * 512 + 12 * 1024], &pattern[..]);

    let out = run_app("diskdemo", p, &["--disk", &format!("{disk}:ro")]);
    let text = stdout(&out);
    assert!(text.contains("disk of 2048 sectors, read-only"), "{text}");
    assert!(
        text.contains("diskdemo: write failed: I/O error at sector 0"),
        "{text}"
    );
    assert_eq!(status(&out), 3);
    assert_eq!(
        std::fs::read(&img).unwrap(),
        bytes,
        "a read-only disk is unchanged"
    );

    let out = run_app("diskdemo", p, &[]);
    assert!(
        stdout(&out).contains("no virtio block device (run with --disk FILE)"),
        "{}",
        stdout(&out)
    );
    assert_eq!(status(&out), 2);
}

#[test]
fn a_file_on_an_ext2_disk_persists_across_boots() {
    for p in vm_platforms("a_file_on_an_ext2_disk_persists_across_boots") {
        a_file_on_an_ext2_disk_persists_across_boots_on(p);
    }
}

fn a_file_on_an_ext2_disk_persists_across_boots_on(p: &str) {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("fs.img");
    std::fs::write(&img, vec![0u8; 8 << 20]).unwrap();
    let mkfs = std::process::Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext2"])
        .arg(&img)
        .status()
        .expect("mke2fs (e2fsprogs) is needed");
    assert!(mkfs.success());
    let disk = img.to_str().unwrap();
    for boot in 1..=2 {
        let out = run_app("diskfs", p, &["--disk", disk]);
        let want: String = (1..=boot).map(|i| format!("boot {i}\n")).collect();
        assert_eq!(
            stdout(&out),
            format!("diskfs: /data/boots.log:\n{want}"),
            "{}",
            stderr(&out)
        );
        assert_eq!(status(&out), 0);
    }
    // The host reads the guest's file, and the file system is clean.
    let cat = std::process::Command::new("debugfs")
        .args(["-R", "cat /boots.log"])
        .arg(&img)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&cat.stdout), "boot 1\nboot 2\n");
    let fsck = std::process::Command::new("e2fsck")
        .arg("-fn")
        .arg(&img)
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    let before = std::fs::read(&img).unwrap();
    let out = run_app("diskfs", p, &["--disk", &format!("{disk}:ro")]);
    assert!(
        stdout(&out).contains("cannot append to /data/boots.log: Erofs"),
        "{}",
        stdout(&out)
    );
    assert_eq!(status(&out), 3);
    assert_eq!(
        std::fs::read(&img).unwrap(),
        before,
        "a read-only disk is unchanged"
    );
    // A disk without ext2 is named as such.
    let blank = dir.path().join("blank.img");
    std::fs::write(&blank, vec![0u8; 1 << 20]).unwrap();
    let out = run_app("diskfs", p, &["--disk", blank.to_str().unwrap()]);
    assert!(
        stdout(&out).contains("has no ext2 file system"),
        "{}",
        stdout(&out)
    );
    assert_eq!(status(&out), 2);
}

#[test]
fn a_host_volume_is_shared_confined_and_read_only_when_asked() {
    for p in platforms("a_host_volume_is_shared_confined_and_read_only_when_asked") {
        a_host_volume_is_shared_confined_and_read_only_when_asked_on(p);
    }
}

fn a_host_volume_is_shared_confined_and_read_only_when_asked_on(p: &str) {
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("site");
    std::fs::create_dir_all(site.join("sub")).unwrap();
    std::fs::write(site.join("index.html"), "host page\n").unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "outside\n").unwrap();
    std::os::unix::fs::symlink(&secret, site.join("abs-link")).unwrap();
    std::os::unix::fs::symlink("../secret", site.join("rel-link")).unwrap();
    let vol = format!("{}:/data", site.display());
    let run = |extra: &[&str]| {
        let mut args = vec!["-v", vol.as_str(), "--"];
        args.extend_from_slice(extra);
        run_app("fsdemo", p, &args)
    };
    let out = run(&["cat", "/data/index.html"]);
    assert_eq!(stdout(&out), "host page\n", "{}", stderr(&out));
    assert_eq!(status(&out), 0);
    let out = run(&["write", "/data/sub/from-guest.txt", "hello host"]);
    assert_eq!(status(&out), 0, "{}", stdout(&out));
    assert_eq!(
        std::fs::read_to_string(site.join("sub/from-guest.txt")).unwrap(),
        "hello host\n",
        "the host sees the guest's write"
    );
    let out = run(&["ls", "/data"]);
    assert!(
        stdout(&out).contains("  /data/sub/from-guest.txt (11 bytes)\n"),
        "{}",
        stdout(&out)
    );
    // Escapes: symlinks and `..` resolve in the guest's tree, never the host's.
    for path in [
        "/data/abs-link",
        "/data/rel-link",
        "/data/../secret",
        "/data/sub/../../secret",
    ] {
        let out = run(&["cat", path]);
        assert!(
            !stdout(&out).contains("outside"),
            "{path} reached the host file"
        );
        assert_eq!(status(&out), 1, "{path}: {}", stdout(&out));
        // A write lands in the guest's own tree (or fails), never on the host.
        run(&["write", path, "pwned"]);
    }
    assert_eq!(
        std::fs::read_to_string(&secret).unwrap(),
        "outside\n",
        "host file untouched"
    );
    // Read-only: EROFS, and the host file is unchanged.
    let ro = format!("{}:/data:ro", site.display());
    let out = run_app(
        "fsdemo",
        "kvm",
        &["-v", &ro, "--", "write", "/data/index.html", "x"],
    );
    assert_eq!(stdout(&out), "fsdemo: write /data/index.html: Erofs (30)\n");
    assert_eq!(status(&out), 1);
    assert_eq!(
        std::fs::read_to_string(site.join("index.html")).unwrap(),
        "host page\n"
    );
}

/// Regression: a guest blocked writing to a console nobody reads (a full
/// pipe) kept the embedded VMM's timeout from ending the run.
#[test]
fn the_timeout_fires_even_when_nobody_reads_the_console() {
    if !kvm_or_skip("the_timeout_fires_even_when_nobody_reads_the_console") {
        return;
    }
    build_for("fsdemo", "kvm");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("big.txt"), "x".repeat(1 << 20)).unwrap();
    let app = app("fsdemo");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args([
            "run",
            "-q",
            app.to_str().unwrap(),
            "--platform",
            "kvm",
            "--timeout",
            "2",
        ])
        .args([
            "--rootfs",
            dir.path().to_str().unwrap(),
            "--",
            "cat",
            "/big.txt",
        ])
        .stdout(std::process::Stdio::piped()) // never read: the pipe fills
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > std::time::Duration::from_secs(60) {
            child.kill().unwrap();
            panic!("kiln did not end a guest stuck on a full console pipe");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(124), "the run ends as a timeout");
}

/// Regression (review): the 9p client kept an inode's first fid, which the
/// server knows by its old path, so files under a renamed directory, and
/// files reusing a deleted file's inode number, answered ENOENT.
#[test]
fn volume_files_stay_reachable_after_renames_and_deletes() {
    for p in platforms("volume_files_stay_reachable_after_renames_and_deletes") {
        let dir = tempfile::tempdir().unwrap();
        let vol = format!("{}:/data", dir.path().display());
        #[rustfmt::skip]
        let script = [
            "mkdir", "/data/d", ",", "write", "/data/d/f", "one", ",",
            "cat", "/data/d/f", ",", "mv", "/data/d", "/data/e", ",",
            "cat", "/data/e/f", ",", "rm", "/data/e/f", ",",
            "write", "/data/e/g", "two", ",", "cat", "/data/e/g",
        ];
        let mut args = vec!["-v", vol.as_str(), "--"];
        args.extend_from_slice(&script);
        let out = run_app("fsdemo", p, &args);
        assert_eq!(
            stdout(&out),
            "fsdemo: wrote /data/d/f\none\nfsdemo: moved /data/d to /data/e\none\nfsdemo: wrote /data/e/g\ntwo\n",
            "on {p}: {}",
            stderr(&out)
        );
        assert_eq!(status(&out), 0, "on {p}");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("e/g")).unwrap(),
            "two\n"
        );
    }
}
