//! bench-disk: storage throughput measured with the guest's clock.
//!
//! `bench-disk` (default) uses the raw virtio-blk `--disk`; `bench-disk
//! volume` uses the file `/data/bench.bin` on a host volume (`-v
//! HOST:/data`, virtio-9p). Either way: sequential write, then read, of
//! 32 MiB in 4 KiB requests; then 2048 random 4 KiB writes and reads in
//! that range (xorshift offsets, seed 1); the disk is flushed after each
//! write phase. Prints `bench: <metric> <value> MiB/s`, the format
//! bench/disk.sh reads; the host runs the same pattern for the ratio.
#![cfg_attr(kiln_guest, no_std)]
#![no_main]

use kiln_rt::hal::time::now_ns;
use kiln_rt::println;
use kiln_virtio_blk::VirtioBlk;

kiln_rt::main!(main, heap = kiln_alloc_tlsf::TlsfHeap);

const SPAN_BYTES: u64 = 32 << 20;
const IO_BYTES: usize = 4096;
const RANDOM_OPS: u64 = 2048;

fn mib_s(bytes: u64, ns: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64 / (ns.max(1) as f64 / 1e9)
}

/// The offsets of one phase (4 KiB aligned, inside the span).
fn offsets(random: bool) -> impl Iterator<Item = u64> {
    let mut x = 1u64;
    let count = if random {
        RANDOM_OPS
    } else {
        SPAN_BYTES / IO_BYTES as u64
    };
    (0..count).map(move |i| {
        if !random {
            return i * IO_BYTES as u64;
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % (SPAN_BYTES / IO_BYTES as u64)) * IO_BYTES as u64
    })
}

/// Where the bytes go.
trait Target {
    fn io(&mut self, write: bool, offset: u64, buf: &mut [u8])
    -> Result<(), alloc::string::String>;
    fn flush(&mut self) -> Result<(), alloc::string::String>;
}

extern crate alloc;

impl Target for VirtioBlk {
    fn io(
        &mut self,
        write: bool,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), alloc::string::String> {
        let r = if write {
            self.write(offset / 512, buf)
        } else {
            self.read(offset / 512, buf)
        };
        r.map_err(|e| alloc::format!("{e}"))
    }
    fn flush(&mut self) -> Result<(), alloc::string::String> {
        VirtioBlk::flush(self).map_err(|e| alloc::format!("{e}"))
    }
}

struct VolumeFile {
    vfs: kiln_vfs::Vfs,
    fd: kiln_vfs::Fd,
}

impl Target for VolumeFile {
    fn io(
        &mut self,
        write: bool,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), alloc::string::String> {
        let r = if write {
            self.vfs.pwrite(self.fd, buf, offset)
        } else {
            self.vfs.pread(self.fd, buf, offset)
        };
        match r {
            Ok(n) if n == buf.len() => Ok(()),
            Ok(n) => Err(alloc::format!("short transfer of {n} bytes at {offset}")),
            Err(e) => Err(alloc::format!("{e}")),
        }
    }
    fn flush(&mut self) -> Result<(), alloc::string::String> {
        Ok(())
    }
}

fn target(volume: bool) -> Result<alloc::boxed::Box<dyn Target>, alloc::string::String> {
    if !volume {
        let disk = VirtioBlk::probe().map_err(|e| alloc::format!("{e}"))?;
        if disk.capacity_sectors() * 512 < SPAN_BYTES {
            return Err("the disk must hold at least 32 MiB".into());
        }
        return Ok(alloc::boxed::Box::new(disk));
    }
    let mounted = kiln_rootfs::mount().map_err(|e| alloc::format!("{e}"))?;
    let vfs = mounted.vfs;
    let flags = kiln_vfs::flags::O_RDWR | kiln_vfs::flags::O_CREAT;
    let fd = vfs
        .open("/data/bench.bin", flags, 0o644)
        .map_err(|e| alloc::format!("/data/bench.bin (run with -v DIR:/data): {e}"))?;
    Ok(alloc::boxed::Box::new(VolumeFile { vfs, fd }))
}

fn main(args: &[&str]) -> i32 {
    let mut target = match target(args.first() == Some(&"volume")) {
        Ok(t) => t,
        Err(e) => {
            println!("bench-disk: {e}");
            return 2;
        }
    };
    let mut buf = [0x5au8; IO_BYTES];
    for (metric, write, random) in [
        ("seq_write", true, false),
        ("seq_read", false, false),
        ("rand_write", true, true),
        ("rand_read", false, true),
    ] {
        let start = now_ns();
        let mut moved = 0u64;
        for offset in offsets(random) {
            if let Err(e) = target.io(write, offset, &mut buf) {
                println!("bench-disk: {e}");
                return 1;
            }
            moved += IO_BYTES as u64;
        }
        if write && let Err(e) = target.flush() {
            println!("bench-disk: {e}");
            return 1;
        }
        println!(
            "bench: {metric} {:.1} MiB/s",
            mib_s(moved, now_ns() - start)
        );
    }
    0
}
