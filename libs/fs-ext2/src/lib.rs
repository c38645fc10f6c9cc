//! # kiln-fs-ext2 — ext2 on a block device
//!
//! [`Ext2Fs`] implements [`kiln_vfs::FileSystem`] over any
//! [`BlockDevice`] (the virtio-blk disk in a guest, a file in tests), on
//! images made by `mke2fs -t ext2`. Why ext2 (ADR 0007): the host has
//! `mke2fs`, `debugfs` and `e2fsck` to make, inspect and check images; it
//! is simple enough to implement read-write in a small safe crate; FAT
//! would need long-name and MBR handling for less (no symlinks, no modes).
//!
//! Supported: revision 1 (and 0) file systems with 1–4 KiB blocks, the
//! `filetype` feature, sparse superblocks, large files up to the double
//! indirect limit; lookup, stat, readdir, read, write (growing, with
//! holes), truncate, create (files, directories, symlinks — fast ones
//! inline), unlink, rmdir, rename. Writes go through to the device; the
//! primary superblock and group descriptors are kept current.
//!
//! Limits: images with incompatible features other than `filetype`
//! (extents, 64bit, meta_bg, journal recovery...) are refused with an
//! error naming them, and read-only-compatible extras (a journal, huge
//! files, checksums) mount read-only; triple-indirect blocks are `EFBIG`;
//! no extended attributes, times are not updated; htree directories are
//! read linearly and lose their index flag when changed (as e2fsck allows).
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use kiln_vfs::{DirEntry, Errno, FileSystem, InodeId, Kind, NewNode, Stat};

pub use kiln_vfs::BlockDevice;

/// Why an image could not be mounted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MountError {
    /// Reading the device failed.
    Io(Errno),
    /// No ext2 magic at byte 1080.
    NotExt2,
    /// A field is out of range (the image is damaged).
    Corrupt(&'static str),
    /// Incompatible features this driver cannot handle (the bits).
    Unsupported(u32),
}

impl core::fmt::Display for MountError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Io(e) => write!(f, "cannot read the disk: {e}"),
            Self::NotExt2 => f.write_str(
                "the disk has no ext2 file system (make one with `mke2fs -t ext2 FILE`)",
            ),
            Self::Corrupt(what) => {
                write!(f, "the ext2 file system is damaged: {what} (run e2fsck)")
            }
            Self::Unsupported(bits) => write!(
                f,
                "the file system uses features ext2 here does not support (incompat {bits:#x}: ext3/ext4?); make it with `mke2fs -t ext2`"
            ),
        }
    }
}

const ROOT_INO: u32 = 2;
const MAGIC: u16 = 0xef53;
const INCOMPAT_FILETYPE: u32 = 0x2;
const RO_COMPAT_OK: u32 = 0x1 | 0x2; // sparse_super, large_file
const COMPAT_HAS_JOURNAL: u32 = 0x4;
const INDEX_FL: u32 = 0x1000;

const S_IFMT: u16 = 0o170000;
const S_IFREG: u16 = 0o100000;
const S_IFDIR: u16 = 0o040000;
const S_IFLNK: u16 = 0o120000;
const S_IFCHR: u16 = 0o020000;

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// An inode as stored (the first 128 bytes).
#[derive(Clone)]
struct Inode {
    raw: [u8; 128],
}

impl Inode {
    fn mode(&self) -> u16 {
        le16(&self.raw, 0)
    }
    fn size(&self) -> u64 {
        let high = if self.mode() & S_IFMT == S_IFREG {
            u64::from(le32(&self.raw, 108))
        } else {
            0
        };
        u64::from(le32(&self.raw, 4)) | (high << 32)
    }
    fn set_size(&mut self, size: u64) {
        put32(&mut self.raw, 4, size as u32);
        if self.mode() & S_IFMT == S_IFREG {
            put32(&mut self.raw, 108, (size >> 32) as u32);
        }
    }
    fn links(&self) -> u16 {
        le16(&self.raw, 26)
    }
    fn set_links(&mut self, n: u16) {
        put16(&mut self.raw, 26, n);
    }
    fn sectors(&self) -> u32 {
        le32(&self.raw, 28)
    }
    fn set_sectors(&mut self, n: u32) {
        put32(&mut self.raw, 28, n);
    }
    fn flags(&self) -> u32 {
        le32(&self.raw, 32)
    }
    fn set_flags(&mut self, v: u32) {
        put32(&mut self.raw, 32, v);
    }
    fn block(&self, i: usize) -> u32 {
        le32(&self.raw, 40 + 4 * i)
    }
    fn set_block(&mut self, i: usize, v: u32) {
        put32(&mut self.raw, 40 + 4 * i, v);
    }
    fn kind(&self) -> Kind {
        match self.mode() & S_IFMT {
            S_IFDIR => Kind::Dir,
            S_IFLNK => Kind::Symlink,
            S_IFCHR => Kind::CharDevice,
            _ => Kind::File,
        }
    }
    /// A symlink whose target lives in `i_block` (no data blocks).
    fn is_fast_symlink(&self) -> bool {
        self.mode() & S_IFMT == S_IFLNK && self.sectors() == 0
    }
}

struct Inner {
    dev: alloc::boxed::Box<dyn BlockDevice>,
    block_bytes: usize,
    first_data_block: u32,
    blocks_count: u32,
    blocks_per_group: u32,
    inodes_per_group: u32,
    inodes_count: u32,
    inode_bytes: usize,
    first_ino: u32,
    groups: u32,
    filetype: bool,
    superblock: [u8; 1024],
    /// The group descriptor table as read (32 bytes per group).
    gdt: Vec<u8>,
}

/// An ext2 file system.
pub struct Ext2Fs {
    inner: spin::Mutex<Inner>,
    read_only: bool,
}

impl Ext2Fs {
    /// Mounts the file system on `dev`; `read_only` refuses writes
    /// (forced when the image has features only readable here).
    pub fn mount(
        mut dev: alloc::boxed::Box<dyn BlockDevice>,
        read_only: bool,
    ) -> Result<Self, MountError> {
        let mut sb = [0u8; 1024];
        dev.read(1024, &mut sb).map_err(MountError::Io)?;
        if le16(&sb, 56) != MAGIC {
            return Err(MountError::NotExt2);
        }
        let log = le32(&sb, 24);
        if log > 2 {
            return Err(MountError::Corrupt("block size above 4 KiB"));
        }
        let block_bytes = 1024usize << log;
        let rev = le32(&sb, 76);
        let (first_ino, inode_bytes, compat, incompat, ro_compat) = if rev >= 1 {
            (
                le32(&sb, 84),
                usize::from(le16(&sb, 88)),
                le32(&sb, 92),
                le32(&sb, 96),
                le32(&sb, 100),
            )
        } else {
            (11, 128, 0, 0, 0)
        };
        if incompat & !INCOMPAT_FILETYPE != 0 {
            return Err(MountError::Unsupported(incompat & !INCOMPAT_FILETYPE));
        }
        let blocks_count = le32(&sb, 4);
        let blocks_per_group = le32(&sb, 32);
        let inodes_per_group = le32(&sb, 40);
        let first_data_block = le32(&sb, 20);
        if blocks_per_group == 0
            || inodes_per_group == 0
            || inode_bytes < 128
            || !inode_bytes.is_power_of_two()
        {
            return Err(MountError::Corrupt("group geometry"));
        }
        let per_bitmap = 8 * block_bytes as u32;
        if blocks_count <= first_data_block
            || blocks_per_group > per_bitmap
            || inodes_per_group > per_bitmap
        {
            return Err(MountError::Corrupt("group geometry"));
        }
        if u64::from(blocks_count) * block_bytes as u64 > dev.size_bytes() {
            return Err(MountError::Corrupt(
                "the file system is larger than the disk (truncated image?)",
            ));
        }
        let groups = (blocks_count - first_data_block).div_ceil(blocks_per_group);
        if u64::from(le32(&sb, 0)) > u64::from(groups) * u64::from(inodes_per_group) {
            return Err(MountError::Corrupt("more inodes than the groups hold"));
        }
        let gdt_bytes = (groups as usize * 32).next_multiple_of(block_bytes);
        let mut gdt = vec![0u8; gdt_bytes];
        dev.read(
            u64::from(first_data_block + 1) * block_bytes as u64,
            &mut gdt,
        )
        .map_err(MountError::Io)?;
        let forced_ro =
            ro_compat & !RO_COMPAT_OK != 0 || compat & COMPAT_HAS_JOURNAL != 0 || dev.read_only();
        Ok(Self {
            inner: spin::Mutex::new(Inner {
                dev,
                block_bytes,
                first_data_block,
                blocks_count,
                blocks_per_group,
                inodes_per_group,
                inodes_count: le32(&sb, 0),
                inode_bytes,
                first_ino,
                groups,
                filetype: incompat & INCOMPAT_FILETYPE != 0,
                superblock: sb,
                gdt,
            }),
            read_only: read_only || forced_ro,
        })
    }

    /// Writes everything out and flushes the device.
    pub fn sync(&self) -> Result<(), Errno> {
        self.inner.lock().dev.flush()
    }
}

fn ino_u32(ino: InodeId) -> Result<u32, Errno> {
    u32::try_from(ino).map_err(|_| Errno::Enoent)
}

impl Inner {
    fn read_block(&mut self, block: u32) -> Result<Vec<u8>, Errno> {
        if block == 0 || block >= self.blocks_count {
            return Err(Errno::Eio);
        }
        let mut buf = vec![0u8; self.block_bytes];
        self.dev
            .read(u64::from(block) * self.block_bytes as u64, &mut buf)?;
        Ok(buf)
    }

    fn write_block(&mut self, block: u32, data: &[u8]) -> Result<(), Errno> {
        if block == 0 || block >= self.blocks_count {
            return Err(Errno::Eio);
        }
        self.dev
            .write(u64::from(block) * self.block_bytes as u64, data)
    }

    fn inode_location(&self, ino: u32) -> Result<(u32, usize), Errno> {
        if ino == 0 || ino > self.inodes_count {
            return Err(Errno::Enoent);
        }
        let group = (ino - 1) / self.inodes_per_group;
        let index = ((ino - 1) % self.inodes_per_group) as usize;
        let table = le32(&self.gdt, group as usize * 32 + 8);
        let byte = index * self.inode_bytes;
        Ok((
            table + (byte / self.block_bytes) as u32,
            byte % self.block_bytes,
        ))
    }

    fn inode(&mut self, ino: u32) -> Result<Inode, Errno> {
        let (block, at) = self.inode_location(ino)?;
        let data = self.read_block(block)?;
        let mut raw = [0u8; 128];
        raw.copy_from_slice(&data[at..at + 128]);
        let inode = Inode { raw };
        // Freed (links 0): gone, even for a descriptor still open on it
        // (regression: writes through one allocated blocks to a free inode).
        if inode.links() == 0 {
            return Err(Errno::Enoent);
        }
        Ok(inode)
    }

    fn put_inode(&mut self, ino: u32, inode: &Inode) -> Result<(), Errno> {
        let (block, at) = self.inode_location(ino)?;
        let mut data = self.read_block(block)?;
        data[at..at + 128].copy_from_slice(&inode.raw);
        self.write_block(block, &data)
    }

    fn ptrs_per_block(&self) -> usize {
        self.block_bytes / 4
    }

    /// The disk block of file block `n` (0 = a hole); allocates the path
    /// to it when `alloc` (updating `inode`, which the caller saves).
    fn bmap(&mut self, inode: &mut Inode, n: usize, alloc: bool) -> Result<u32, Errno> {
        let p = self.ptrs_per_block();
        if n < 12 {
            let b = inode.block(n);
            if b != 0 || !alloc {
                return Ok(b);
            }
            let b = self.alloc_block(inode, true)?;
            inode.set_block(n, b);
            return Ok(b);
        }
        let (slot, path): (usize, Vec<usize>) = if n - 12 < p {
            (12, vec![n - 12])
        } else if n - 12 - p < p * p {
            let m = n - 12 - p;
            (13, vec![m / p, m % p])
        } else {
            return Err(Errno::Efbig);
        };
        let mut table = inode.block(slot);
        if table == 0 {
            if !alloc {
                return Ok(0);
            }
            table = self.alloc_block(inode, true)?;
            inode.set_block(slot, table);
        }
        for index in &path {
            let mut data = self.read_block(table)?;
            let mut next = le32(&data, index * 4);
            if next == 0 {
                if !alloc {
                    return Ok(0);
                }
                // Zeroed: tables must be, and a partly written data block
                // must read back zeros around the new bytes.
                next = self.alloc_block(inode, true)?;
                put32(&mut data, index * 4, next);
                self.write_block(table, &data)?;
            }
            table = next;
        }
        Ok(table)
    }

    fn group_free_blocks(&self, g: u32) -> u16 {
        le16(&self.gdt, g as usize * 32 + 12)
    }

    fn save_meta(&mut self) -> Result<(), Errno> {
        let sb = self.superblock;
        self.dev.write(1024, &sb)?;
        let gdt = self.gdt.clone();
        self.dev.write(
            u64::from(self.first_data_block + 1) * self.block_bytes as u64,
            &gdt,
        )
    }

    /// Takes a free block (zeroed when `zero`), charged to `inode`.
    fn alloc_block(&mut self, inode: &mut Inode, zero: bool) -> Result<u32, Errno> {
        for g in 0..self.groups {
            if self.group_free_blocks(g) == 0 {
                continue;
            }
            let bitmap_block = le32(&self.gdt, g as usize * 32);
            let mut bitmap = self.read_block(bitmap_block)?;
            let in_group = self
                .blocks_per_group
                .min(self.blocks_count - self.first_data_block - g * self.blocks_per_group);
            let Some(bit) = (0..in_group as usize).find(|b| bitmap[b / 8] & (1 << (b % 8)) == 0)
            else {
                continue;
            };
            bitmap[bit / 8] |= 1 << (bit % 8);
            self.write_block(bitmap_block, &bitmap)?;
            let at = g as usize * 32 + 12;
            let free = le16(&self.gdt, at) - 1;
            put16(&mut self.gdt, at, free);
            let sb_free = le32(&self.superblock, 12).saturating_sub(1);
            put32(&mut self.superblock, 12, sb_free);
            self.save_meta()?;
            let block = self.first_data_block + g * self.blocks_per_group + bit as u32;
            if zero {
                let zeros = vec![0u8; self.block_bytes];
                self.write_block(block, &zeros)?;
            }
            inode.set_sectors(inode.sectors() + (self.block_bytes / 512) as u32);
            return Ok(block);
        }
        Err(Errno::Enospc)
    }

    fn free_block(&mut self, inode: &mut Inode, block: u32) -> Result<(), Errno> {
        if block == 0 || block >= self.blocks_count {
            return Err(Errno::Eio); // a damaged block pointer
        }
        let rel = block.checked_sub(self.first_data_block).ok_or(Errno::Eio)?;
        let (g, bit) = (
            rel / self.blocks_per_group,
            (rel % self.blocks_per_group) as usize,
        );
        let bitmap_block = le32(&self.gdt, g as usize * 32);
        let mut bitmap = self.read_block(bitmap_block)?;
        if bitmap[bit / 8] & (1 << (bit % 8)) != 0 {
            bitmap[bit / 8] &= !(1 << (bit % 8));
            self.write_block(bitmap_block, &bitmap)?;
            let at = g as usize * 32 + 12;
            let free = le16(&self.gdt, at) + 1;
            put16(&mut self.gdt, at, free);
            let sb_free = le32(&self.superblock, 12) + 1;
            put32(&mut self.superblock, 12, sb_free);
            self.save_meta()?;
        }
        inode.set_sectors(
            inode
                .sectors()
                .saturating_sub((self.block_bytes / 512) as u32),
        );
        Ok(())
    }

    /// Frees every data block from file block `first` on (and indirect
    /// blocks left empty).
    fn free_from(&mut self, inode: &mut Inode, first: usize) -> Result<(), Errno> {
        for n in first..12 {
            let b = inode.block(n);
            if b != 0 {
                self.free_block(inode, b)?;
                inode.set_block(n, 0);
            }
        }
        let p = self.ptrs_per_block();
        // Single indirect: file blocks 12 .. 12 + p.
        let single = inode.block(12);
        if single != 0 {
            let start = first.saturating_sub(12);
            if self.free_table(inode, single, start, 1)? {
                self.free_block(inode, single)?;
                inode.set_block(12, 0);
            }
        }
        let double = inode.block(13);
        if double != 0 {
            let start = first.saturating_sub(12 + p);
            if self.free_table(inode, double, start, 2)? {
                self.free_block(inode, double)?;
                inode.set_block(13, 0);
            }
        }
        Ok(())
    }

    /// Frees entries covering file blocks from `start` (relative to the
    /// table) in a table of `depth`; returns whether the table is now empty.
    fn free_table(
        &mut self,
        inode: &mut Inode,
        table: u32,
        start: usize,
        depth: u32,
    ) -> Result<bool, Errno> {
        let p = self.ptrs_per_block();
        let span = if depth == 1 { 1 } else { p };
        let mut data = self.read_block(table)?;
        let mut changed = false;
        for i in 0..p {
            let b = le32(&data, i * 4);
            if b == 0 || (i + 1) * span <= start {
                continue;
            }
            let free_it = if depth == 1 {
                true
            } else {
                self.free_table(inode, b, start.saturating_sub(i * span), depth - 1)?
            };
            if free_it {
                self.free_block(inode, b)?;
                put32(&mut data, i * 4, 0);
                changed = true;
            }
        }
        if changed {
            self.write_block(table, &data)?;
        }
        Ok((0..p).all(|i| le32(&data, i * 4) == 0))
    }

    fn alloc_inode(&mut self, dir: bool) -> Result<u32, Errno> {
        for g in 0..self.groups {
            let at = g as usize * 32;
            if le16(&self.gdt, at + 14) == 0 {
                continue;
            }
            let bitmap_block = le32(&self.gdt, at + 4);
            let mut bitmap = self.read_block(bitmap_block)?;
            let found = (0..self.inodes_per_group as usize).find(|b| {
                let ino = g * self.inodes_per_group + *b as u32 + 1;
                ino >= self.first_ino && bitmap[b / 8] & (1 << (b % 8)) == 0
            });
            let Some(bit) = found else { continue };
            bitmap[bit / 8] |= 1 << (bit % 8);
            self.write_block(bitmap_block, &bitmap)?;
            let free = le16(&self.gdt, at + 14) - 1;
            put16(&mut self.gdt, at + 14, free);
            if dir {
                let used = le16(&self.gdt, at + 16) + 1;
                put16(&mut self.gdt, at + 16, used);
            }
            let sb_free = le32(&self.superblock, 16).saturating_sub(1);
            put32(&mut self.superblock, 16, sb_free);
            self.save_meta()?;
            return Ok(g * self.inodes_per_group + bit as u32 + 1);
        }
        Err(Errno::Enospc)
    }

    fn free_inode(&mut self, ino: u32, dir: bool) -> Result<(), Errno> {
        let g = (ino - 1) / self.inodes_per_group;
        let bit = ((ino - 1) % self.inodes_per_group) as usize;
        let at = g as usize * 32;
        let bitmap_block = le32(&self.gdt, at + 4);
        let mut bitmap = self.read_block(bitmap_block)?;
        bitmap[bit / 8] &= !(1 << (bit % 8));
        self.write_block(bitmap_block, &bitmap)?;
        let free = le16(&self.gdt, at + 14) + 1;
        put16(&mut self.gdt, at + 14, free);
        if dir {
            let used = le16(&self.gdt, at + 16).saturating_sub(1);
            put16(&mut self.gdt, at + 16, used);
        }
        let sb_free = le32(&self.superblock, 16) + 1;
        put32(&mut self.superblock, 16, sb_free);
        self.save_meta()
    }

    fn read_data(
        &mut self,
        inode: &mut Inode,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize, Errno> {
        let size = inode.size();
        if offset >= size {
            return Ok(0);
        }
        let len = (buf.len() as u64).min(size - offset) as usize;
        let bs = self.block_bytes;
        let mut done = 0;
        while done < len {
            let pos = offset as usize + done;
            let (n, within) = (pos / bs, pos % bs);
            let chunk = (bs - within).min(len - done);
            let block = self.bmap(inode, n, false)?;
            if block == 0 {
                buf[done..done + chunk].fill(0);
            } else {
                let data = self.read_block(block)?;
                buf[done..done + chunk].copy_from_slice(&data[within..within + chunk]);
            }
            done += chunk;
        }
        Ok(len)
    }

    fn write_data(
        &mut self,
        ino: u32,
        inode: &mut Inode,
        offset: u64,
        buf: &[u8],
    ) -> Result<usize, Errno> {
        let bs = self.block_bytes;
        let mut done = 0;
        let mut result = Ok(());
        while done < buf.len() {
            let pos = offset as usize + done;
            let (n, within) = (pos / bs, pos % bs);
            let chunk = (bs - within).min(buf.len() - done);
            let block = match self.bmap(inode, n, true) {
                Ok(b) => b,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            };
            let mut data = if chunk == bs {
                vec![0u8; bs]
            } else {
                self.read_block(block)?
            };
            data[within..within + chunk].copy_from_slice(&buf[done..done + chunk]);
            self.write_block(block, &data)?;
            done += chunk;
        }
        if done > 0 && offset + done as u64 > inode.size() {
            inode.set_size(offset + done as u64);
        }
        self.put_inode(ino, inode)?;
        match result {
            Err(e) if done == 0 => Err(e),
            _ => Ok(done),
        }
    }

    /// Directory entries as (inode, name).
    fn entries(&mut self, dir: &mut Inode) -> Result<Vec<(u32, String)>, Errno> {
        if dir.kind() != Kind::Dir {
            return Err(Errno::Enotdir);
        }
        let size = dir.size();
        let bs = self.block_bytes;
        let mut out = Vec::new();
        let mut block_buf = vec![0u8; bs];
        let mut pos = 0u64;
        while pos < size {
            self.read_data(dir, pos, &mut block_buf)?;
            let mut at = 0usize;
            while at + 8 <= bs {
                let ino = le32(&block_buf, at);
                let rec_len = le16(&block_buf, at + 4);
                let name_len = usize::from(block_buf[at + 6]);
                if rec_len < 8
                    || !rec_len.is_multiple_of(4)
                    || at + usize::from(rec_len) > bs
                    || 8 + name_len > usize::from(rec_len)
                {
                    return Err(Errno::Eio);
                }
                if ino != 0 {
                    let name =
                        String::from_utf8_lossy(&block_buf[at + 8..at + 8 + name_len]).into_owned();
                    out.push((ino, name));
                }
                at += usize::from(rec_len);
            }
            pos += bs as u64;
        }
        Ok(out)
    }

    fn lookup(&mut self, dir: u32, name: &str) -> Result<u32, Errno> {
        let mut d = self.inode(dir)?;
        self.entries(&mut d)?
            .into_iter()
            .find(|e| e.1 == name)
            .map(|e| e.0)
            .ok_or(Errno::Enoent)
    }

    fn file_type(&self, kind: &NewNode) -> u8 {
        if !self.filetype {
            return 0;
        }
        match kind {
            NewNode::File => 1,
            NewNode::Dir => 2,
            NewNode::Symlink(_) => 7,
        }
    }

    /// Adds `name` → `ino` to directory `dir`.
    fn add_entry(
        &mut self,
        dir_ino: u32,
        dir: &mut Inode,
        name: &str,
        ino: u32,
        ftype: u8,
    ) -> Result<(), Errno> {
        if name.len() > 255 {
            return Err(Errno::Enametoolong);
        }
        let need = (8 + name.len()).next_multiple_of(4);
        let bs = self.block_bytes;
        let blocks = dir.size().div_ceil(bs as u64) as usize;
        if dir.flags() & INDEX_FL != 0 {
            dir.set_flags(dir.flags() & !INDEX_FL);
        }
        let write_entry = |data: &mut [u8], at: usize, rec_len: usize| {
            put32(data, at, ino);
            put16(data, at + 4, rec_len as u16);
            data[at + 6] = name.len() as u8;
            data[at + 7] = ftype;
            data[at + 8..at + 8 + name.len()].copy_from_slice(name.as_bytes());
        };
        for n in 0..blocks {
            let block = self.bmap(dir, n, false)?;
            if block == 0 {
                continue;
            }
            let mut data = self.read_block(block)?;
            let mut at = 0usize;
            while at + 8 <= bs {
                let e_ino = le32(&data, at);
                let rec_len = usize::from(le16(&data, at + 4));
                if rec_len < 8 || !rec_len.is_multiple_of(4) || at + rec_len > bs {
                    return Err(Errno::Eio);
                }
                let used = if e_ino == 0 {
                    0
                } else {
                    (8 + usize::from(data[at + 6])).next_multiple_of(4)
                };
                if used > rec_len {
                    return Err(Errno::Eio); // a damaged entry
                }
                if rec_len - used >= need {
                    if used == 0 {
                        write_entry(&mut data, at, rec_len);
                    } else {
                        put16(&mut data, at + 4, used as u16);
                        write_entry(&mut data, at + used, rec_len - used);
                    }
                    self.write_block(block, &data)?;
                    return self.put_inode(dir_ino, dir);
                }
                at += rec_len;
            }
        }
        // A new block holding only this entry.
        let block = self.bmap(dir, blocks, true)?;
        let mut data = vec![0u8; bs];
        write_entry(&mut data, 0, bs);
        self.write_block(block, &data)?;
        dir.set_size((blocks as u64 + 1) * bs as u64);
        self.put_inode(dir_ino, dir)
    }

    /// Removes the entry `name` from `dir`; returns its inode.
    fn remove_entry(&mut self, dir_ino: u32, dir: &mut Inode, name: &str) -> Result<u32, Errno> {
        let bs = self.block_bytes;
        let blocks = dir.size().div_ceil(bs as u64) as usize;
        for n in 0..blocks {
            let block = self.bmap(dir, n, false)?;
            if block == 0 {
                continue;
            }
            let mut data = self.read_block(block)?;
            let mut at = 0usize;
            let mut prev: Option<usize> = None;
            while at + 8 <= bs {
                let e_ino = le32(&data, at);
                let rec_len = usize::from(le16(&data, at + 4));
                if rec_len < 8 || !rec_len.is_multiple_of(4) || at + rec_len > bs {
                    return Err(Errno::Eio);
                }
                let len = usize::from(data[at + 6]);
                if e_ino != 0 && &data[at + 8..at + 8 + len] == name.as_bytes() {
                    match prev {
                        Some(p) => {
                            let merged = usize::from(le16(&data, p + 4)) + rec_len;
                            put16(&mut data, p + 4, merged as u16);
                        }
                        None => put32(&mut data, at, 0),
                    }
                    self.write_block(block, &data)?;
                    if dir.flags() & INDEX_FL != 0 {
                        dir.set_flags(dir.flags() & !INDEX_FL);
                        self.put_inode(dir_ino, dir)?;
                    }
                    return Ok(e_ino);
                }
                prev = Some(at);
                at += rec_len;
            }
        }
        Err(Errno::Enoent)
    }

    /// Drops one link of `ino`; frees it when none remain.
    fn drop_link(&mut self, ino: u32) -> Result<(), Errno> {
        let mut inode = self.inode(ino)?;
        let is_dir = inode.kind() == Kind::Dir;
        let links = if is_dir {
            0
        } else {
            inode.links().saturating_sub(1)
        };
        inode.set_links(links);
        if links == 0 {
            if !inode.is_fast_symlink() {
                self.free_from(&mut inode, 0)?;
            }
            inode.set_size(0);
            // dtime marks it deleted; a value below the inode count would
            // read as an ext3 orphan-list link, so use the last write time.
            let dtime = le32(&self.superblock, 48).max(self.inodes_count + 1);
            put32(&mut inode.raw, 20, dtime);
            self.put_inode(ino, &inode)?;
            self.free_inode(ino, is_dir)?;
        } else {
            self.put_inode(ino, &inode)?;
        }
        Ok(())
    }
}

impl FileSystem for Ext2Fs {
    fn root(&self) -> InodeId {
        InodeId::from(ROOT_INO)
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn lookup(&self, dir: InodeId, name: &str) -> Result<InodeId, Errno> {
        self.inner
            .lock()
            .lookup(ino_u32(dir)?, name)
            .map(InodeId::from)
    }

    fn stat(&self, ino: InodeId) -> Result<Stat, Errno> {
        let inode = self.inner.lock().inode(ino_u32(ino)?)?;
        Ok(Stat {
            ino,
            kind: inode.kind(),
            size: inode.size(),
            mode: u32::from(inode.mode() & 0o7777),
            nlink: u32::from(inode.links()),
        })
    }

    fn create(&self, dir: InodeId, name: &str, node: NewNode, mode: u32) -> Result<InodeId, Errno> {
        if self.read_only {
            return Err(Errno::Erofs);
        }
        let mut fs = self.inner.lock();
        let dir_ino = ino_u32(dir)?;
        let mut d = fs.inode(dir_ino)?;
        if fs.entries(&mut d)?.iter().any(|e| e.1 == name) {
            return Err(Errno::Eexist);
        }
        let is_dir = matches!(node, NewNode::Dir);
        let ino = fs.alloc_inode(is_dir)?;
        let kind_bits = match node {
            NewNode::File => S_IFREG,
            NewNode::Dir => S_IFDIR,
            NewNode::Symlink(_) => S_IFLNK,
        };
        let mut inode = Inode { raw: [0u8; 128] };
        put16(&mut inode.raw, 0, kind_bits | (mode as u16 & 0o7777));
        inode.set_links(if is_dir { 2 } else { 1 });
        let ftype = fs.file_type(&node);
        match &node {
            NewNode::File => fs.put_inode(ino, &inode)?,
            NewNode::Dir => {
                let bs = fs.block_bytes;
                let block = fs.alloc_block(&mut inode, false)?;
                inode.set_block(0, block);
                inode.set_size(bs as u64);
                let mut data = vec![0u8; bs];
                let dir_type = if fs.filetype { 2 } else { 0 };
                put32(&mut data, 0, ino);
                put16(&mut data, 4, 12);
                data[6] = 1;
                data[7] = dir_type;
                data[8] = b'.';
                put32(&mut data, 12, dir_ino);
                put16(&mut data, 16, (bs - 12) as u16);
                data[18] = 2;
                data[19] = dir_type;
                data[20..22].copy_from_slice(b"..");
                fs.write_block(block, &data)?;
                fs.put_inode(ino, &inode)?;
                d.set_links(d.links() + 1);
            }
            NewNode::Symlink(target) => {
                if target.len() < 60 {
                    inode.raw[40..40 + target.len()].copy_from_slice(target.as_bytes());
                    inode.set_size(target.len() as u64);
                    fs.put_inode(ino, &inode)?;
                } else {
                    fs.write_data(ino, &mut inode, 0, target.as_bytes())?;
                }
            }
        }
        fs.add_entry(dir_ino, &mut d, name, ino, ftype)?;
        Ok(InodeId::from(ino))
    }

    fn unlink(&self, dir: InodeId, name: &str) -> Result<(), Errno> {
        if self.read_only {
            return Err(Errno::Erofs);
        }
        let mut fs = self.inner.lock();
        let dir_ino = ino_u32(dir)?;
        let target = fs.lookup(dir_ino, name)?;
        if fs.inode(target)?.kind() == Kind::Dir {
            return Err(Errno::Eisdir);
        }
        let mut d = fs.inode(dir_ino)?;
        fs.remove_entry(dir_ino, &mut d, name)?;
        fs.drop_link(target)
    }

    fn rmdir(&self, dir: InodeId, name: &str) -> Result<(), Errno> {
        if self.read_only {
            return Err(Errno::Erofs);
        }
        let mut fs = self.inner.lock();
        let dir_ino = ino_u32(dir)?;
        let target = fs.lookup(dir_ino, name)?;
        let mut t = fs.inode(target)?;
        if t.kind() != Kind::Dir {
            return Err(Errno::Enotdir);
        }
        if fs
            .entries(&mut t)?
            .iter()
            .any(|e| e.1 != "." && e.1 != "..")
        {
            return Err(Errno::Enotempty);
        }
        let mut d = fs.inode(dir_ino)?;
        fs.remove_entry(dir_ino, &mut d, name)?;
        d.set_links(d.links().saturating_sub(1));
        fs.put_inode(dir_ino, &d)?;
        fs.drop_link(target)
    }

    fn rename(
        &self,
        from_dir: InodeId,
        from: &str,
        to_dir: InodeId,
        to: &str,
    ) -> Result<(), Errno> {
        if self.read_only {
            return Err(Errno::Erofs);
        }
        let mut fs = self.inner.lock();
        let (fd, td) = (ino_u32(from_dir)?, ino_u32(to_dir)?);
        let moving = fs.lookup(fd, from)?;
        let m = fs.inode(moving)?;
        let is_dir = m.kind() == Kind::Dir;
        // The tree rules (own subtree, ancestor target) are the VFS's.
        if let Ok(existing) = fs.lookup(td, to) {
            if existing == moving {
                return Ok(());
            }
            let mut e = fs.inode(existing)?;
            match (is_dir, e.kind() == Kind::Dir) {
                (false, true) => return Err(Errno::Eisdir),
                (true, false) => return Err(Errno::Enotdir),
                (true, true)
                    if fs
                        .entries(&mut e)?
                        .iter()
                        .any(|x| x.1 != "." && x.1 != "..") =>
                {
                    return Err(Errno::Enotempty);
                }
                _ => {}
            }
            let mut t = fs.inode(td)?;
            fs.remove_entry(td, &mut t, to)?;
            if is_dir {
                t.set_links(t.links().saturating_sub(1));
                fs.put_inode(td, &t)?;
            }
            fs.drop_link(existing)?;
        }
        let ftype = if !fs.filetype {
            0
        } else if is_dir {
            2
        } else if m.kind() == Kind::Symlink {
            7
        } else {
            1
        };
        // The new name first: if it cannot be added (a full disk), the
        // file keeps its old one instead of being lost.
        let mut t = fs.inode(td)?;
        fs.add_entry(td, &mut t, to, moving, ftype)?;
        let mut f = fs.inode(fd)?;
        fs.remove_entry(fd, &mut f, from)?;
        if is_dir && fd != td {
            // Point ".." at the new parent and move the link count.
            let mut mv = fs.inode(moving)?;
            let first = fs.bmap(&mut mv, 0, false)?;
            let mut data = fs.read_block(first)?;
            put32(&mut data, 12, td);
            fs.write_block(first, &data)?;
            let mut f = fs.inode(fd)?;
            f.set_links(f.links().saturating_sub(1));
            fs.put_inode(fd, &f)?;
            let mut t = fs.inode(td)?;
            t.set_links(t.links() + 1);
            fs.put_inode(td, &t)?;
        }
        Ok(())
    }

    fn read(&self, ino: InodeId, offset: u64, buf: &mut [u8]) -> Result<usize, Errno> {
        let mut fs = self.inner.lock();
        let mut inode = fs.inode(ino_u32(ino)?)?;
        if inode.kind() == Kind::Dir {
            return Err(Errno::Eisdir);
        }
        fs.read_data(&mut inode, offset, buf)
    }

    fn write(&self, ino: InodeId, offset: u64, buf: &[u8]) -> Result<usize, Errno> {
        if self.read_only {
            return Err(Errno::Erofs);
        }
        let mut fs = self.inner.lock();
        let n = ino_u32(ino)?;
        let mut inode = fs.inode(n)?;
        if inode.kind() != Kind::File {
            return Err(Errno::Eisdir);
        }
        fs.write_data(n, &mut inode, offset, buf)
    }

    fn truncate(&self, ino: InodeId, size: u64) -> Result<(), Errno> {
        if self.read_only {
            return Err(Errno::Erofs);
        }
        let mut fs = self.inner.lock();
        let n = ino_u32(ino)?;
        let mut inode = fs.inode(n)?;
        if inode.kind() != Kind::File {
            return Err(Errno::Eisdir);
        }
        let bs = fs.block_bytes as u64;
        if size < inode.size() {
            fs.free_from(&mut inode, size.div_ceil(bs) as usize)?;
            // Zero the tail of the last kept block.
            if !size.is_multiple_of(bs) {
                let block = fs.bmap(&mut inode, (size / bs) as usize, false)?;
                if block != 0 {
                    let mut data = fs.read_block(block)?;
                    data[(size % bs) as usize..].fill(0);
                    fs.write_block(block, &data)?;
                }
            }
        }
        inode.set_size(size); // growth is a hole
        fs.put_inode(n, &inode)
    }

    fn readdir(&self, ino: InodeId) -> Result<Vec<DirEntry>, Errno> {
        let mut fs = self.inner.lock();
        let mut d = fs.inode(ino_u32(ino)?)?;
        let mut out = Vec::new();
        for (e_ino, name) in fs.entries(&mut d)? {
            if name == "." || name == ".." {
                continue;
            }
            let kind = fs.inode(e_ino)?.kind();
            out.push(DirEntry {
                name,
                ino: InodeId::from(e_ino),
                kind,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn readlink(&self, ino: InodeId) -> Result<String, Errno> {
        let mut fs = self.inner.lock();
        let mut inode = fs.inode(ino_u32(ino)?)?;
        if inode.kind() != Kind::Symlink {
            return Err(Errno::Einval);
        }
        let size = inode.size() as usize;
        if inode.is_fast_symlink() {
            return Ok(String::from_utf8_lossy(&inode.raw[40..40 + size.min(60)]).into_owned());
        }
        let mut buf = vec![0u8; size];
        fs.read_data(&mut inode, 0, &mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use alloc::boxed::Box;
    use alloc::format;
    use alloc::string::ToString;
    use std::os::unix::fs::FileExt;
    use std::process::Command;

    struct FileDisk(std::fs::File, u64);

    impl BlockDevice for FileDisk {
        fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), Errno> {
            self.0.read_exact_at(buf, offset).map_err(|_| Errno::Eio)
        }
        fn write(&mut self, offset: u64, buf: &[u8]) -> Result<(), Errno> {
            self.0.write_all_at(buf, offset).map_err(|_| Errno::Eio)
        }
        fn flush(&mut self) -> Result<(), Errno> {
            self.0.sync_data().map_err(|_| Errno::Eio)
        }
        fn size_bytes(&self) -> u64 {
            self.1
        }
    }

    fn tool(args: &[&str]) -> std::process::Output {
        let out = Command::new(args[0]).args(&args[1..]).output();
        out.unwrap_or_else(|e| panic!("{} is needed for this test (e2fsprogs): {e}", args[0]))
    }

    /// A fresh ext2 image of `kib` KiB with `block` byte blocks.
    fn image(dir: &std::path::Path, kib: u32, block: u32) -> std::path::PathBuf {
        let path = dir.join("fs.img");
        std::fs::write(&path, vec![0u8; kib as usize * 1024]).unwrap();
        let out = tool(&[
            "mke2fs",
            "-q",
            "-F",
            "-t",
            "ext2",
            "-b",
            &block.to_string(),
            path.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        path
    }

    fn mount(path: &std::path::Path, ro: bool) -> Result<Ext2Fs, MountError> {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        let len = f.metadata().unwrap().len();
        Ext2Fs::mount(Box::new(FileDisk(f, len)), ro)
    }

    fn fsck_clean(path: &std::path::Path) {
        let out = tool(&["e2fsck", "-fn", path.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "e2fsck found problems:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn debugfs_cat(path: &std::path::Path, file: &str) -> Vec<u8> {
        tool(&[
            "debugfs",
            "-R",
            &format!("cat {file}"),
            path.to_str().unwrap(),
        ])
        .stdout
    }

    #[test]
    fn reads_what_the_host_tools_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let img = image(dir.path(), 2048, 1024);
        let host = dir.path().join("motd");
        std::fs::write(&host, "from the host\n").unwrap();
        let out = tool(&[
            "debugfs",
            "-w",
            "-R",
            &format!("write {} motd", host.display()),
            img.to_str().unwrap(),
        ]);
        assert!(out.status.success());
        let fs = mount(&img, true).unwrap();
        let vfs = kiln_vfs::Vfs::new(alloc::sync::Arc::new(fs));
        assert_eq!(vfs.read_file("/motd").unwrap(), b"from the host\n");
        let names: Vec<_> = vfs
            .readdir("/")
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, ["lost+found", "motd"]);
        assert_eq!(vfs.write_file("/new", b"x"), Err(Errno::Erofs));
    }

    #[test]
    fn every_operation_leaves_a_clean_file_system_the_host_can_read() {
        for block in [1024u32, 4096] {
            let dir = tempfile::tempdir().unwrap();
            let img = image(dir.path(), 4096, block);
            let vfs = kiln_vfs::Vfs::new(alloc::sync::Arc::new(mount(&img, false).unwrap()));
            vfs.mkdir("/data", 0o755).unwrap();
            vfs.mkdir("/data/sub", 0o700).unwrap();
            // 300 KiB: past the single-indirect range with 1 KiB blocks.
            let big: Vec<u8> = (0..300 * 1024u32).map(|i| (i * 7 % 253) as u8).collect();
            vfs.write_file("/data/big.bin", &big).unwrap();
            assert_eq!(vfs.read_file("/data/big.bin").unwrap(), big);
            vfs.write_file("/data/small.txt", b"hello ext2\n").unwrap();
            vfs.symlink("small.txt", "/data/link").unwrap();
            let long_target = "x/".repeat(40) + "target";
            vfs.symlink(&long_target, "/data/longlink").unwrap();
            assert_eq!(vfs.readlink("/data/longlink").unwrap(), long_target);
            vfs.rename("/data/small.txt", "/data/sub/moved.txt")
                .unwrap();
            vfs.rename("/data/sub", "/sub2").unwrap();
            assert_eq!(vfs.read_file("/sub2/moved.txt").unwrap(), b"hello ext2\n");
            // Many entries: the directory grows past one block.
            for i in 0..120 {
                vfs.write_file(&format!("/data/f{i:03}"), format!("{i}").as_bytes())
                    .unwrap();
            }
            for i in (0..120).step_by(2) {
                vfs.unlink(&format!("/data/f{i:03}")).unwrap();
            }
            vfs.truncate("/data/big.bin", 5000).unwrap();
            assert_eq!(vfs.read_file("/data/big.bin").unwrap(), &big[..5000]);
            vfs.mkdir("/gone", 0o755).unwrap();
            vfs.rmdir("/gone").unwrap();
            assert_eq!(vfs.rmdir("/sub2"), Err(Errno::Enotempty));
            // A hole: write past the end.
            let fd = vfs
                .open(
                    "/holes",
                    kiln_vfs::flags::O_CREAT | kiln_vfs::flags::O_RDWR,
                    0o644,
                )
                .unwrap();
            vfs.pwrite(fd, b"end", 20_000).unwrap();
            vfs.close(fd).unwrap();
            let holes = vfs.read_file("/holes").unwrap();
            assert_eq!(holes.len(), 20_003);
            assert!(holes[..20_000].iter().all(|b| *b == 0));
            drop(vfs);
            fsck_clean(&img);
            assert_eq!(
                debugfs_cat(&img, "/sub2/moved.txt"),
                b"hello ext2\n",
                "block {block}"
            );
            assert_eq!(debugfs_cat(&img, "/data/big.bin"), &big[..5000]);
            assert_eq!(debugfs_cat(&img, "/data/f001"), b"1");
            // And it mounts again with the same content.
            let vfs = kiln_vfs::Vfs::new(alloc::sync::Arc::new(mount(&img, false).unwrap()));
            assert_eq!(vfs.readlink("/data/link").unwrap(), "small.txt");
            assert_eq!(vfs.stat("/data/f000"), Err(Errno::Enoent));
        }
    }

    /// Random operations on ext2 and on ramfs (itself checked against the
    /// host's file system in kiln-vfs), compared result by result and tree
    /// by tree; then e2fsck must find the image clean.
    #[test]
    fn differential_against_ramfs_then_fsck_clean() {
        let names = ["a", "b", "c"];
        for seed in 1..=12u64 {
            let dir = tempfile::tempdir().unwrap();
            let img = image(dir.path(), 4096, 1024);
            let ext = kiln_vfs::Vfs::new(alloc::sync::Arc::new(mount(&img, false).unwrap()));
            let ram = kiln_vfs::Vfs::new(alloc::sync::Arc::new(kiln_fs_ramfs::RamFs::new()));
            let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            let mut next = |n: u64| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng % n
            };
            for step in 0..250 {
                let path = format!(
                    "/{}",
                    (0..1 + next(3))
                        .map(|_| names[next(3) as usize])
                        .collect::<Vec<_>>()
                        .join("/")
                );
                let path2 = format!(
                    "/{}",
                    (0..1 + next(3))
                        .map(|_| names[next(3) as usize])
                        .collect::<Vec<_>>()
                        .join("/")
                );
                let size = [0usize, 1, 1023, 1024, 5000, 13_000, 300_000][next(7) as usize];
                let data: Vec<u8> = (0..size).map(|i| (i as u64 * 31 + step) as u8).collect();
                let op = next(8);
                let run = |v: &kiln_vfs::Vfs| -> Result<Vec<u8>, Errno> {
                    match op {
                        0 => v.mkdir(&path, 0o755).map(|_| vec![]),
                        1 => v.write_file(&path, &data).map(|_| vec![]),
                        2 => v.read_file(&path),
                        3 => v.unlink(&path).map(|_| vec![]),
                        4 => v.rmdir(&path).map(|_| vec![]),
                        5 => v.rename(&path, &path2).map(|_| vec![]),
                        6 => v.truncate(&path, (size / 3) as u64).map(|_| vec![]),
                        _ => v.stat(&path).map(|s| vec![s.kind as u8, s.size as u8]),
                    }
                };
                assert_eq!(
                    run(&ext),
                    run(&ram),
                    "seed {seed} step {step}: op {op} {path} -> {path2}"
                );
            }
            fn tree(v: &kiln_vfs::Vfs, dir: &str, out: &mut Vec<(String, Vec<u8>)>) {
                for e in v.readdir(if dir.is_empty() { "/" } else { dir }).unwrap() {
                    let name = format!("{dir}/{}", e.name);
                    if e.kind == Kind::Dir {
                        out.push((name.clone(), vec![]));
                        tree(v, &name, out);
                    } else {
                        out.push((name.clone(), v.read_file(&name).unwrap()));
                    }
                }
            }
            let (mut a, mut b) = (Vec::new(), Vec::new());
            tree(&ext, "", &mut a);
            tree(&ram, "", &mut b);
            a.retain(|(n, _)| n != "/lost+found");
            assert_eq!(a, b, "seed {seed}: trees differ");
            drop(ext);
            fsck_clean(&img);
        }
    }

    /// Regressions from a review: a failed write grew the file; a write
    /// through a descriptor of an unlinked file reached a freed inode.
    #[test]
    fn failed_writes_and_unlinked_files_leave_the_image_clean() {
        let dir = tempfile::tempdir().unwrap();
        let img = image(dir.path(), 2048, 1024);
        let vfs = kiln_vfs::Vfs::new(alloc::sync::Arc::new(mount(&img, false).unwrap()));
        let flags = kiln_vfs::flags::O_CREAT | kiln_vfs::flags::O_RDWR;
        let fd = vfs.open("/f", flags, 0o644).unwrap();
        // Past the double-indirect limit of 1 KiB blocks (~64 MiB).
        assert_eq!(vfs.pwrite(fd, b"x", 100 << 20), Err(Errno::Efbig));
        assert_eq!(
            vfs.fstat(fd).unwrap().size,
            0,
            "a failed write must not grow the file"
        );
        vfs.unlink("/f").unwrap();
        assert_eq!(vfs.pwrite(fd, b"late", 0), Err(Errno::Enoent));
        vfs.close(fd).unwrap();
        drop(vfs);
        fsck_clean(&img);
    }

    #[test]
    fn a_superblock_with_impossible_geometry_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let img = image(dir.path(), 2048, 1024);
        let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
        f.write_all_at(&u32::MAX.to_le_bytes(), 1024).unwrap(); // s_inodes_count
        let err = mount(&img, false).err().unwrap();
        assert!(matches!(err, MountError::Corrupt(_)), "{err:?}");
    }

    #[test]
    fn foreign_damaged_and_ext4_images_are_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("zero.img");
        std::fs::write(&path, vec![0u8; 1 << 20]).unwrap();
        assert_eq!(mount(&path, false).err(), Some(MountError::NotExt2));
        let img = image(dir.path(), 2048, 1024);
        let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
        f.set_len(1 << 20).unwrap();
        let err = mount(&img, false).err().unwrap();
        assert!(err.to_string().contains("larger than the disk"), "{err}");
        let ext4 = dir.path().join("ext4.img");
        std::fs::write(&ext4, vec![0u8; 4 << 20]).unwrap();
        assert!(
            tool(&["mke2fs", "-q", "-F", "-t", "ext4", ext4.to_str().unwrap()])
                .status
                .success()
        );
        let err = mount(&ext4, false).err().unwrap();
        assert!(matches!(err, MountError::Unsupported(_)), "{err:?}");
        assert!(err.to_string().contains("mke2fs -t ext2"));
    }
}
