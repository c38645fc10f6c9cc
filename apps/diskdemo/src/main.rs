//! diskdemo: keeps a boot counter on the virtio-blk disk.
//!
//! Sector 0 holds `KILNDISK`, then the count (u64, little endian). Each
//! boot reads it (0 on a blank disk), adds one, writes it back with a
//! 12 KiB pattern derived from the count at sector 8 (several requests),
//! reads the pattern back, flushes, and prints `diskdemo: boot N`.
//! Exit statuses: 0 done, 2 no usable disk, 3 a write failed (e.g. a
//! read-only disk), 4 the read-back differed, 5 a read failed.
//!
//! The parts list: the Kiln runtime, the TLSF heap, the virtio-blk driver.
#![cfg_attr(kiln_guest, no_std)]
#![no_main]

extern crate alloc;

use alloc::vec;

use kiln_rt::println;
use kiln_virtio_blk::{SECTOR_BYTES, VirtioBlk};

kiln_rt::main!(main, heap = kiln_alloc_tlsf::TlsfHeap);

const MAGIC: &[u8; 8] = b"KILNDISK";
const PATTERN_SECTOR: u64 = 8;
const PATTERN_BYTES: usize = 12 * 1024;

fn main(_args: &[&str]) -> i32 {
    let mut disk = match VirtioBlk::probe() {
        Ok(d) => d,
        Err(e) => {
            println!("diskdemo: {e}");
            return 2;
        }
    };
    println!(
        "diskdemo: disk of {} sectors{}",
        disk.capacity_sectors(),
        if disk.read_only() { ", read-only" } else { "" }
    );
    if disk.capacity_sectors() < PATTERN_SECTOR + (PATTERN_BYTES / SECTOR_BYTES) as u64 {
        println!("diskdemo: the disk is too small: give it at least 32 KiB");
        return 2;
    }
    let mut first = [0u8; SECTOR_BYTES];
    if let Err(e) = disk.read(0, &mut first) {
        println!("diskdemo: read failed: {e}");
        return 5;
    }
    let count = if &first[..8] == MAGIC {
        u64::from_le_bytes(first[8..16].try_into().unwrap_or_default())
    } else {
        0
    } + 1;
    first[..8].copy_from_slice(MAGIC);
    first[8..16].copy_from_slice(&count.to_le_bytes());
    let pattern: alloc::vec::Vec<u8> = (0..PATTERN_BYTES)
        .map(|i| (i as u64).wrapping_mul(31).wrapping_add(count) as u8)
        .collect();
    let written = disk
        .write(0, &first)
        .and_then(|()| disk.write(PATTERN_SECTOR, &pattern))
        .and_then(|()| disk.flush());
    if let Err(e) = written {
        println!("diskdemo: write failed: {e}");
        return 3;
    }
    let mut back = vec![0u8; PATTERN_BYTES];
    if let Err(e) = disk.read(PATTERN_SECTOR, &mut back) {
        println!("diskdemo: read failed: {e}");
        return 5;
    }
    if back != pattern {
        println!("diskdemo: the read-back differs from what was written");
        return 4;
    }
    println!("diskdemo: boot {count}");
    0
}
