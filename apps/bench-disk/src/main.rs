//! bench-disk: virtio-blk throughput measured with the guest's clock.
//!
//! On the `--disk` (at least 32 MiB): sequential write, then read, of
//! 32 MiB in 4 KiB requests; then 2048 random 4 KiB writes and reads in
//! that range (xorshift offsets, seed 1); a flush ends each write phase.
//! Prints `bench: <metric> <value> MiB/s`, the format bench/disk.sh reads;
//! the host runs the same pattern on the same file for the ratio.
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

/// The random offsets (4 KiB aligned, inside the span).
fn offsets() -> impl Iterator<Item = u64> {
    let mut x = 1u64;
    (0..RANDOM_OPS).map(move |_| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % (SPAN_BYTES / IO_BYTES as u64)) * IO_BYTES as u64
    })
}

fn main(_args: &[&str]) -> i32 {
    let mut disk = match VirtioBlk::probe() {
        Ok(d) => d,
        Err(e) => {
            println!("bench-disk: {e}");
            return 2;
        }
    };
    if disk.capacity_sectors() * 512 < SPAN_BYTES {
        println!("bench-disk: the disk must hold at least 32 MiB");
        return 2;
    }
    let mut buf = [0x5au8; IO_BYTES];
    let sector = |offset: u64| offset / 512;
    let run = |disk: &mut VirtioBlk, buf: &mut [u8; IO_BYTES], write: bool, random: bool| {
        let start = now_ns();
        let mut moved = 0u64;
        let sequential = (0..SPAN_BYTES / IO_BYTES as u64).map(|i| i * IO_BYTES as u64);
        let list: &mut dyn Iterator<Item = u64> = if random {
            &mut offsets()
        } else {
            &mut { sequential }
        };
        for offset in list {
            let r = if write {
                disk.write(sector(offset), buf)
            } else {
                disk.read(sector(offset), buf)
            };
            if let Err(e) = r {
                println!("bench-disk: {e}");
                return None;
            }
            moved += IO_BYTES as u64;
        }
        if write && disk.flush().is_err() {
            return None;
        }
        Some(mib_s(moved, now_ns() - start))
    };
    for (metric, write, random) in [
        ("seq_write", true, false),
        ("seq_read", false, false),
        ("rand_write", true, true),
        ("rand_read", false, true),
    ] {
        match run(&mut disk, &mut buf, write, random) {
            Some(v) => println!("bench: {metric} {v:.1} MiB/s"),
            None => return 1,
        }
    }
    0
}
