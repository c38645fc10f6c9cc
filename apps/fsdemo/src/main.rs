//! fsdemo: mounts the root file system from the initrd, then
//!
//! - with no arguments: prints the tree (`find`-style, with sizes and
//!   link targets), writes and reads back `/tmp/note`, renames it, reads
//!   16 bytes of `/dev/urandom`, and greets on `/dev/console`;
//! - with `cat PATH`: prints that file (exit 1 with the errno when it
//!   cannot);
//! - with `write PATH TEXT`: writes TEXT and a newline to PATH (exit 1
//!   with the errno when it cannot);
//! - with `ls DIR`: lists DIR's tree;
//! - with `mv FROM TO`, `mkdir DIR`, `rm PATH`: those;
//! - several commands separated by `,` run in order in one boot.
//!
//! Host volumes (`-v HOST:GUEST`) are mounted at GUEST.
//!
//! The parts list: the Kiln runtime, the TLSF heap and `kiln-rootfs`
//! (ramfs root + initrd + devfs).
#![cfg_attr(kiln_guest, no_std)]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::string::String;

use kiln_rt::println;
use kiln_vfs::{Errno, Kind, Vfs, flags};

kiln_rt::main!(main, heap = kiln_alloc_tlsf::TlsfHeap);

fn main(args: &[&str]) -> i32 {
    let mounted = match kiln_rootfs::mount() {
        Ok(m) => m,
        Err(e) => {
            println!("fsdemo: {e}");
            return 1;
        }
    };
    let vfs = &mounted.vfs;
    if args.is_empty() {
        return match tour(vfs, mounted.initrd_entries) {
            Ok(()) => 0,
            Err((what, e)) => {
                println!("fsdemo: {what}: {e}");
                1
            }
        };
    }
    // Commands separated by `,` run in order in one boot; the first that
    // fails ends the run with its status.
    for command in args.split(|a| *a == ",") {
        let status = run(vfs, command);
        if status != 0 {
            return status;
        }
    }
    0
}

fn run(vfs: &Vfs, args: &[&str]) -> i32 {
    match args {
        ["cat", path] => match vfs.read_file(path) {
            Ok(bytes) => {
                kiln_rt::print!("{}", String::from_utf8_lossy(&bytes));
                0
            }
            Err(e) => {
                println!("fsdemo: cat {path}: {e}");
                1
            }
        },
        ["write", path, text] => match vfs.write_file(path, format!("{text}\n").as_bytes()) {
            Ok(()) => {
                println!("fsdemo: wrote {path}");
                0
            }
            Err(e) => {
                println!("fsdemo: write {path}: {e}");
                1
            }
        },
        ["ls", dir] => match walk(vfs, dir.trim_end_matches('/')) {
            Ok(()) => 0,
            Err((what, e)) => {
                println!("fsdemo: {what}: {e}");
                1
            }
        },
        ["mv", from, to] => match vfs.rename(from, to) {
            Ok(()) => {
                println!("fsdemo: moved {from} to {to}");
                0
            }
            Err(e) => {
                println!("fsdemo: mv {from} {to}: {e}");
                1
            }
        },
        ["mkdir", dir] => match vfs.mkdir(dir, 0o755) {
            Ok(()) => 0,
            Err(e) => {
                println!("fsdemo: mkdir {dir}: {e}");
                1
            }
        },
        ["rm", path] => match vfs.unlink(path) {
            Ok(()) => 0,
            Err(e) => {
                println!("fsdemo: rm {path}: {e}");
                1
            }
        },
        _ => {
            println!(
                "fsdemo: usage: fsdemo [CMD [, CMD]...], CMD: cat PATH | write PATH TEXT | ls DIR | mv FROM TO | mkdir DIR | rm PATH"
            );
            2
        }
    }
}

type Step = Result<(), (String, Errno)>;

fn at<T>(what: &str, r: Result<T, Errno>) -> Result<T, (String, Errno)> {
    r.map_err(|e| (String::from(what), e))
}

fn tour(vfs: &Vfs, initrd_entries: usize) -> Step {
    println!("fsdemo: initrd had {initrd_entries} entries");
    walk(vfs, "")?;
    let note = b"written in the guest\n";
    at("write /tmp/note", vfs.write_file("/tmp/note", note))?;
    at("rename", vfs.rename("/tmp/note", "/tmp/note.txt"))?;
    let back = at("read /tmp/note.txt", vfs.read_file("/tmp/note.txt"))?;
    println!(
        "fsdemo: /tmp/note.txt round trip {}",
        if back == note { "ok" } else { "MISMATCH" }
    );
    let fd = at(
        "open /dev/urandom",
        vfs.open("/dev/urandom", flags::O_RDONLY, 0),
    )?;
    let mut random = [0u8; 16];
    let n = at("read /dev/urandom", vfs.read(fd, &mut random))?;
    at("close", vfs.close(fd))?;
    println!(
        "fsdemo: /dev/urandom gave {n} bytes, {}",
        if random.iter().any(|b| *b != 0) {
            "not all zero"
        } else {
            "ALL ZERO"
        }
    );
    let fd = at(
        "open /dev/console",
        vfs.open("/dev/console", flags::O_WRONLY, 0),
    )?;
    at(
        "write /dev/console",
        vfs.write(fd, b"fsdemo: hello via /dev/console\n"),
    )?;
    at("close", vfs.close(fd))?;
    println!("fsdemo: done");
    Ok(())
}

/// Prints every entry below `dir` ("" is the root), depth first.
fn walk(vfs: &Vfs, dir: &str) -> Step {
    let shown = if dir.is_empty() { "/" } else { dir };
    for entry in at(&format!("readdir {shown}"), vfs.readdir(shown))? {
        let path = format!("{dir}/{}", entry.name);
        match entry.kind {
            Kind::Dir => {
                println!("  {path}/");
                walk(vfs, &path)?;
            }
            Kind::Symlink => {
                let target = at(&format!("readlink {path}"), vfs.readlink(&path))?;
                println!("  {path} -> {target}");
            }
            Kind::File => {
                let stat = at(&format!("stat {path}"), vfs.stat(&path))?;
                println!("  {path} ({} bytes)", stat.size);
            }
            Kind::CharDevice => println!("  {path} (device)"),
        }
    }
    Ok(())
}
