//! virtio-blk backed by a host file (`kiln run --disk FILE[:ro]`).
//!
//! The disk is the file's bytes; its size must be a whole number of
//! 512-byte sectors (anything else is a truncated or foreign image and is
//! refused when the VM is built). Requests: read, write, flush (an
//! `fdatasync` of the file) and get-id; others answer `UNSUPP`. A write to
//! a read-only disk, a request past the end, a malformed chain or a host
//! I/O error answer `IOERR` — the guest sees the failure, the VMM goes on.
//!
//! Limits: the request header must sit in the chain's first descriptor
//! and the status byte in its last (as every driver lays them out); data
//! moves through a bounce buffer.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use virtio_queue::Queue;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::VirtioDevice;

/// Bytes per sector (virtio-blk's unit, whatever the host's).
pub const SECTOR_BYTES: u64 = 512;
/// The virtio device ID.
pub const DEVICE_TYPE: u32 = 2;
/// Descriptors per queue.
pub const QUEUE_SIZE: u16 = 256;

/// `VIRTIO_BLK_F_RO`.
pub const F_RO: u64 = 1 << 5;
/// `VIRTIO_BLK_F_FLUSH`.
pub const F_FLUSH: u64 = 1 << 9;

/// Request types.
pub mod request {
    /// Read sectors.
    pub const IN: u32 = 0;
    /// Write sectors.
    pub const OUT: u32 = 1;
    /// Make writes durable.
    pub const FLUSH: u32 = 4;
    /// The device's ID string (20 bytes).
    pub const GET_ID: u32 = 8;
}

/// Status byte values.
pub mod status {
    /// Done.
    pub const OK: u8 = 0;
    /// Failed (I/O error, out of range, read-only, malformed).
    pub const IOERR: u8 = 1;
    /// Unknown request type.
    pub const UNSUPP: u8 = 2;
}

const HEADER_BYTES: u32 = 16;
const ID_BYTES: usize = 20;

/// Why a disk image cannot be attached.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// The file cannot be opened.
    #[error(
        "cannot open disk image {path}: {cause} (create one with e.g. `truncate -s 64M {path}`)"
    )]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        cause: std::io::Error,
    },
    /// The size is not a whole number of sectors.
    #[error(
        "disk image {path} is {bytes} bytes, not a multiple of 512: it is truncated or not a disk image"
    )]
    NotSectorSized {
        /// The file.
        path: PathBuf,
        /// Its size.
        bytes: u64,
    },
    /// The file is empty.
    #[error("disk image {path} is empty: give it a size (e.g. `truncate -s 64M {path}`)")]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

/// A virtio-blk device.
pub struct Block {
    file: File,
    read_only: bool,
    capacity_sectors: u64,
    id: [u8; ID_BYTES],
    config: [u8; 8],
}

impl Block {
    /// Opens `path` as a disk (`read_only`: never written, `F_RO` offered).
    pub fn open(path: &Path, read_only: bool) -> Result<Self, BlockError> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(|cause| BlockError::Open {
                path: path.to_path_buf(),
                cause,
            })?;
        let bytes = file
            .metadata()
            .map_err(|cause| BlockError::Open {
                path: path.to_path_buf(),
                cause,
            })?
            .len();
        if bytes == 0 {
            return Err(BlockError::Empty {
                path: path.to_path_buf(),
            });
        }
        if !bytes.is_multiple_of(SECTOR_BYTES) {
            return Err(BlockError::NotSectorSized {
                path: path.to_path_buf(),
                bytes,
            });
        }
        let capacity_sectors = bytes / SECTOR_BYTES;
        let mut id = [0u8; ID_BYTES];
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let n = name.len().min(ID_BYTES);
        id[..n].copy_from_slice(&name.as_bytes()[..n]);
        Ok(Self {
            file,
            read_only,
            capacity_sectors,
            id,
            config: capacity_sectors.to_le_bytes(),
        })
    }

    /// The size in sectors.
    pub fn capacity_sectors(&self) -> u64 {
        self.capacity_sectors
    }

    /// Serves one request; returns the bytes written into the chain.
    fn serve(
        &mut self,
        mem: &GuestMemoryMmap,
        descs: &[virtio_queue::desc::split::Descriptor],
    ) -> u32 {
        let Some((last, rest)) = descs.split_last() else {
            return 0;
        };
        if !last.is_write_only() || last.len() == 0 {
            return 0; // nowhere to put a status
        }
        let Some(status_addr) = last
            .addr()
            .0
            .checked_add(u64::from(last.len()) - 1)
            .map(GuestAddress)
        else {
            return 0;
        };
        let (code, written) = self.execute(mem, rest);
        if mem.write_obj(code, status_addr).is_err() {
            return written;
        }
        written + 1
    }

    /// Runs the request of `descs` (header first, status excluded);
    /// returns its status and the data bytes written to the guest.
    fn execute(
        &mut self,
        mem: &GuestMemoryMmap,
        descs: &[virtio_queue::desc::split::Descriptor],
    ) -> (u8, u32) {
        let Some((header, data)) = descs.split_first() else {
            return (status::IOERR, 0);
        };
        if header.is_write_only() || header.len() < HEADER_BYTES {
            return (status::IOERR, 0);
        }
        let Ok(kind) = mem.read_obj::<u32>(header.addr()) else {
            return (status::IOERR, 0);
        };
        let Some(sector_addr) = header.addr().0.checked_add(8) else {
            return (status::IOERR, 0);
        };
        let Ok(sector) = mem.read_obj::<u64>(GuestAddress(sector_addr)) else {
            return (status::IOERR, 0);
        };
        let (kind, sector) = (u32::from_le(kind), u64::from_le(sector));
        match kind {
            request::IN | request::OUT => {
                let writing = kind == request::OUT;
                if writing && self.read_only {
                    return (status::IOERR, 0);
                }
                // Every data buffer must point the right way.
                if data.iter().any(|d| d.is_write_only() == writing) {
                    return (status::IOERR, 0);
                }
                let total: u64 = data.iter().map(|d| u64::from(d.len())).sum();
                let end = sector
                    .checked_mul(SECTOR_BYTES)
                    .and_then(|start| start.checked_add(total));
                if end.is_none_or(|end| end > self.capacity_sectors * SECTOR_BYTES) {
                    return (status::IOERR, 0);
                }
                let mut offset = sector * SECTOR_BYTES;
                let mut moved = 0u32;
                for d in data {
                    let mut buf = vec![0u8; d.len() as usize];
                    let ok = if writing {
                        mem.read_slice(&mut buf, d.addr()).is_ok()
                            && self.file.write_all_at(&buf, offset).is_ok()
                    } else {
                        self.file.read_exact_at(&mut buf, offset).is_ok()
                            && mem.write_slice(&buf, d.addr()).is_ok()
                    };
                    if !ok {
                        return (status::IOERR, moved);
                    }
                    if !writing {
                        moved += d.len();
                    }
                    offset += u64::from(d.len());
                }
                (status::OK, moved)
            }
            request::FLUSH => match self.file.sync_data() {
                Ok(()) => (status::OK, 0),
                Err(_) => (status::IOERR, 0),
            },
            request::GET_ID => {
                let Some(d) = data.first().filter(|d| d.is_write_only()) else {
                    return (status::IOERR, 0);
                };
                let n = (d.len() as usize).min(ID_BYTES);
                match mem.write_slice(&self.id[..n], d.addr()) {
                    Ok(()) => (status::OK, n as u32),
                    Err(_) => (status::IOERR, 0),
                }
            }
            _ => (status::UNSUPP, 0),
        }
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        DEVICE_TYPE
    }

    fn features(&self) -> u64 {
        super::F_VERSION_1 | F_FLUSH | if self.read_only { F_RO } else { 0 }
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        super::read_config_bytes(&self.config, offset, data);
    }

    fn process_queue(&mut self, _index: usize, queue: &mut Queue, mem: &GuestMemoryMmap) -> bool {
        super::serve_queue(queue, mem, |descs| self.serve(mem, descs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtio_queue::desc::RawDescriptor;
    use virtio_queue::desc::split::Descriptor;
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::GuestMemoryMmap;

    const NEXT: u16 = 1;
    const WRITE: u16 = 2;

    fn memory() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap()
    }

    fn disk(bytes: usize) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        let data: Vec<u8> = (0..bytes).map(|i| (i % 251) as u8).collect();
        std::fs::write(f.path(), data).unwrap();
        f
    }

    /// Runs one request: header at 0x8000, data buffers at 0x9000.., status
    /// at 0xf000. Returns (status, used length, the queue's interrupt wish).
    fn request(
        block: &mut Block,
        mem: &GuestMemoryMmap,
        kind: u32,
        sector: u64,
        data: &[(u32, bool)],
    ) -> (u8, u32) {
        let vq = MockSplitQueue::new(mem, 16);
        mem.write_obj(kind.to_le(), GuestAddress(0x8000)).unwrap();
        mem.write_obj(0u32, GuestAddress(0x8004)).unwrap();
        mem.write_obj(sector.to_le(), GuestAddress(0x8008)).unwrap();
        mem.write_obj(0xffu8, GuestAddress(0xf000)).unwrap();
        let mut descs = vec![RawDescriptor::from(Descriptor::new(0x8000, 16, NEXT, 1))];
        let mut addr = 0x9000u64;
        for (i, (len, device_writes)) in data.iter().enumerate() {
            let flags = NEXT | if *device_writes { WRITE } else { 0 };
            descs.push(RawDescriptor::from(Descriptor::new(
                addr,
                *len,
                flags,
                i as u16 + 2,
            )));
            addr += u64::from(*len).next_multiple_of(0x1000);
        }
        descs.push(RawDescriptor::from(Descriptor::new(0xf000, 1, WRITE, 0)));
        vq.add_desc_chains(&descs, 0).unwrap();
        let mut queue: Queue = vq.create_queue().unwrap();
        assert!(block.process_queue(0, &mut queue, mem));
        let used_len: u32 = mem
            .read_obj(GuestAddress(vq.used_addr().0 + 4 + 4))
            .unwrap();
        (mem.read_obj(GuestAddress(0xf000)).unwrap(), used_len)
    }

    #[test]
    fn reads_and_writes_sectors_of_the_file() {
        let f = disk(8 * 512);
        let mut block = Block::open(f.path(), false).unwrap();
        assert_eq!(block.capacity_sectors(), 8);
        let mem = memory();
        // Read sectors 2..4 into two buffers.
        let (st, used) = request(
            &mut block,
            &mem,
            request::IN,
            2,
            &[(512, true), (512, true)],
        );
        assert_eq!((st, used), (status::OK, 1025));
        let mut got = vec![0u8; 512];
        mem.read_slice(&mut got, GuestAddress(0xa000)).unwrap();
        let want: Vec<u8> = (3 * 512..4 * 512).map(|i| (i % 251) as u8).collect();
        assert_eq!(got, want);
        // Write sector 7 and see it in the file.
        mem.write_slice(&[0xab; 512], GuestAddress(0x9000)).unwrap();
        let (st, used) = request(&mut block, &mem, request::OUT, 7, &[(512, false)]);
        assert_eq!((st, used), (status::OK, 1));
        let file = std::fs::read(f.path()).unwrap();
        assert_eq!(&file[7 * 512..], &[0xab; 512][..]);
        assert_eq!(file[6 * 512], ((6 * 512) % 251) as u8);
        let (st, _) = request(&mut block, &mem, request::FLUSH, 0, &[]);
        assert_eq!(st, status::OK);
    }

    #[test]
    fn read_only_out_of_range_and_unknown_requests_fail_cleanly() {
        let f = disk(4 * 512);
        let before = std::fs::read(f.path()).unwrap();
        let mut ro = Block::open(f.path(), true).unwrap();
        assert_ne!(ro.features() & F_RO, 0);
        let mem = memory();
        let (st, _) = request(&mut ro, &mem, request::OUT, 0, &[(512, false)]);
        assert_eq!(st, status::IOERR, "a write to a read-only disk");
        assert_eq!(std::fs::read(f.path()).unwrap(), before, "file unchanged");
        let (st, _) = request(&mut ro, &mem, request::IN, 3, &[(1024, true)]);
        assert_eq!(st, status::IOERR, "a read past the end");
        let (st, _) = request(&mut ro, &mem, request::IN, u64::MAX, &[(512, true)]);
        assert_eq!(st, status::IOERR, "a sector number that overflows");
        let (st, _) = request(&mut ro, &mem, request::IN, 0, &[(512, false)]);
        assert_eq!(st, status::IOERR, "a read into a device-readable buffer");
        let (st, _) = request(&mut ro, &mem, 99, 0, &[]);
        assert_eq!(st, status::UNSUPP);
        let (st, used) = request(&mut ro, &mem, request::GET_ID, 0, &[(20, true)]);
        assert_eq!((st, used), (status::OK, 21));
    }

    #[test]
    fn truncated_empty_and_missing_images_are_refused_by_name() {
        let f = disk(1000);
        let err = Block::open(f.path(), false).err().unwrap().to_string();
        assert!(err.contains("1000 bytes, not a multiple of 512"), "{err}");
        let f = disk(0);
        let err = Block::open(f.path(), false).err().unwrap().to_string();
        assert!(err.contains("is empty"), "{err}");
        let err = Block::open(Path::new("/nonexistent/disk.img"), false)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("cannot open disk image /nonexistent/disk.img"),
            "{err}"
        );
    }

    #[test]
    fn config_space_holds_the_capacity() {
        let f = disk(16 * 512);
        let block = Block::open(f.path(), false).unwrap();
        let mut cap = [0u8; 8];
        block.read_config(0, &mut cap);
        assert_eq!(u64::from_le_bytes(cap), 16);
        let mut past = [9u8; 4];
        block.read_config(100, &mut past);
        assert_eq!(past, [0; 4]);
    }
}
