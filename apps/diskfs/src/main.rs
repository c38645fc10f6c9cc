//! diskfs: mounts the ext2 file system of the `--disk` at `/data`,
//! appends `boot N` to `/data/boots.log` (N = its line count + 1), syncs,
//! and prints the log. Exit statuses: 0 done, 2 no disk or no ext2 on it,
//! 3 the append failed (e.g. `EROFS` on a `:ro` disk).
//!
//! The parts list: the runtime, the TLSF heap, the virtio-blk driver, the
//! VFS with a ramfs root and ext2 mounted on it.
#![cfg_attr(kiln_guest, no_std)]
#![no_main]

extern crate alloc;

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;

use kiln_fs_ext2::Ext2Fs;
use kiln_rt::println;
use kiln_vfs::{Errno, Vfs, flags};

kiln_rt::main!(main, heap = kiln_alloc_tlsf::TlsfHeap);

const LOG: &str = "/data/boots.log";

fn main(_args: &[&str]) -> i32 {
    let disk = match kiln_virtio_blk::VirtioBlk::probe() {
        Ok(d) => d,
        Err(e) => {
            println!("diskfs: {e}");
            return 2;
        }
    };
    let ext2 = match Ext2Fs::mount(Box::new(disk), false) {
        Ok(fs) => Arc::new(fs),
        Err(e) => {
            println!("diskfs: {e}");
            return 2;
        }
    };
    let vfs = Vfs::new(Arc::new(kiln_fs_ramfs::RamFs::new()));
    if let Err(e) = vfs
        .mkdir("/data", 0o755)
        .and_then(|()| vfs.mount("/data", ext2.clone()))
    {
        println!("diskfs: cannot mount /data: {e}");
        return 2;
    }
    let before = match vfs.read_file(LOG) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(Errno::Enoent) => String::new(),
        Err(e) => {
            println!("diskfs: cannot read {LOG}: {e}");
            return 2;
        }
    };
    let line = format!("boot {}\n", before.lines().count() + 1);
    let appended = vfs
        .open(
            LOG,
            flags::O_WRONLY | flags::O_CREAT | flags::O_APPEND,
            0o644,
        )
        .and_then(|fd| {
            let r = vfs.write(fd, line.as_bytes());
            vfs.close(fd)?;
            r
        })
        .and_then(|_| ext2.sync());
    if let Err(e) = appended {
        println!("diskfs: cannot append to {LOG}: {e}");
        return 3;
    }
    match vfs.read_file(LOG) {
        Ok(bytes) => {
            println!("diskfs: {LOG}:");
            kiln_rt::print!("{}", String::from_utf8_lossy(&bytes));
            0
        }
        Err(e) => {
            println!("diskfs: cannot read {LOG} back: {e}");
            2
        }
    }
}
