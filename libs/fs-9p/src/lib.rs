//! # kiln-fs-9p — host directories over virtio-9p
//!
//! [`NineP::probe_all`] finds every virtio-9p device and attaches to it;
//! each is a [`kiln_vfs::FileSystem`] the runtime mounts at its tag (the
//! guest directory of `kiln run -v HOST:GUEST`). Requests are 9P2000.L
//! messages of at most 8 KiB over `kiln-virtio`'s polled queue.
//!
//! Inodes are the server's qid paths (the host's inode numbers); each one
//! the guest has looked up keeps a fid, opened lazily for I/O (read-write,
//! or read-only where the server refuses writing). Symlinks are resolved
//! by the VFS in the guest's tree; the server never follows them.
//! Errors are the server's errno (`EROFS` on a read-only volume).
//!
//! Limits: fids live until unmount (no forget); no hard links; times not
//! reported; one request at a time.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

use kiln_vfs::{DirEntry, Errno, FileSystem, InodeId, Kind, NewNode, Stat};
use kiln_virtio::{Piece, VirtioMmio};

const DEVICE_TYPE: u32 = 9;
const F_MOUNT_TAG: u64 = 1;
/// The largest message we offer (the server may choose less); requests
/// are built at buffer offset 0 and replies land at `MSIZE`.
const MSIZE: usize = 16384;
/// Room for a Tread/Twrite header inside a message.
const IO_HEADER: usize = 32;

const RLERROR: u8 = 7;
const TLOPEN: u8 = 12;
const TLCREATE: u8 = 14;
const TSYMLINK: u8 = 16;
const TREADLINK: u8 = 22;
const TGETATTR: u8 = 24;
const TSETATTR: u8 = 26;
const TREADDIR: u8 = 40;
const TMKDIR: u8 = 72;
const TRENAMEAT: u8 = 74;
const TUNLINKAT: u8 = 76;
const TVERSION: u8 = 100;
const TATTACH: u8 = 104;
const TWALK: u8 = 110;
const TREAD: u8 = 116;
const TWRITE: u8 = 118;
const TCLUNK: u8 = 120;

const O_RDONLY: u32 = 0;
const O_RDWR: u32 = 2;
const O_DIRECTORY: u32 = 0o200000;

/// A request body under construction.
#[derive(Default)]
struct Msg(Vec<u8>);

impl Msg {
    fn u16(mut self, v: u16) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn str(self, s: &str) -> Self {
        let mut m = self.u16(s.len() as u16);
        m.0.extend_from_slice(s.as_bytes());
        m
    }
    fn bytes(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(b);
        self
    }
}

/// A reply being read.
struct Reply {
    b: Vec<u8>,
    at: usize,
}

impl Reply {
    fn take(&mut self, n: usize) -> Result<&[u8], Errno> {
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.b.len())
            .ok_or(Errno::Eio)?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, Errno> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, Errno> {
        let s = self.take(2)?;
        Ok(u16::from_le_bytes([s[0], s[1]]))
    }
    fn u32(&mut self) -> Result<u32, Errno> {
        let s = self.take(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn u64(&mut self) -> Result<u64, Errno> {
        let s = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(u64::from_le_bytes(a))
    }
    fn str(&mut self) -> Result<String, Errno> {
        let n = usize::from(self.u16()?);
        Ok(String::from_utf8_lossy(self.take(n)?).into_owned())
    }
    /// A qid: (type, path).
    fn qid(&mut self) -> Result<(u8, u64), Errno> {
        let t = self.u8()?;
        self.u32()?;
        Ok((t, self.u64()?))
    }
}

/// How 9P messages reach the server.
pub trait Transport: Send {
    /// Sends `request`; puts the reply in `reply`, returns its length.
    fn rpc(&mut self, request: &[u8], reply: &mut [u8]) -> Result<usize, Errno>;
}

/// virtio-9p (VMs): requests at the buffer's start, replies at `MSIZE`.
struct Virtio(VirtioMmio);

impl Transport for Virtio {
    fn rpc(&mut self, request: &[u8], reply: &mut [u8]) -> Result<usize, Errno> {
        self.0.buffer().write(0, request);
        let pieces = [
            Piece {
                offset: 0,
                len: request.len(),
                device_writes: false,
            },
            Piece {
                offset: MSIZE,
                len: reply.len(),
                device_writes: true,
            },
        ];
        let written = (self.0.submit(&pieces).map_err(|_| Errno::Eio)? as usize).min(reply.len());
        self.0.buffer().read(MSIZE, &mut reply[..written]);
        Ok(written)
    }
}

/// linuxu: a socket to the CLI's 9P server (the same server as the VMM's).
struct Channel(u64);

impl Transport for Channel {
    fn rpc(&mut self, request: &[u8], reply: &mut [u8]) -> Result<usize, Errno> {
        kiln_rt::hal::linuxu::channel_rpc(self.0, request, reply)
            .map_err(|e| Errno::from_code(-e as i32).unwrap_or(Errno::Eio))
    }
}

struct Client {
    dev: alloc::boxed::Box<dyn Transport>,
    /// The negotiated message size.
    msize: usize,
    next_fid: u32,
    /// A fid per known inode (walked, not opened).
    fids: BTreeMap<u64, u32>,
    /// An opened fid per inode, and whether it can write.
    open: BTreeMap<u64, (u32, bool)>,
}

impl Client {
    fn call(&mut self, kind: u8, body: Msg) -> Result<Reply, Errno> {
        let len = 7 + body.0.len();
        if len > self.msize {
            return Err(Errno::Einval);
        }
        let mut frame = Vec::with_capacity(len);
        frame.extend_from_slice(&(len as u32).to_le_bytes());
        frame.push(kind);
        frame.extend_from_slice(&1u16.to_le_bytes());
        frame.extend_from_slice(&body.0);
        let mut b = alloc::vec![0u8; self.msize];
        let written = self.dev.rpc(&frame, &mut b)?;
        if written < 7 {
            return Err(Errno::Eio);
        }
        b.truncate(written);
        let mut r = Reply { b, at: 7 };
        match r.b[4] {
            RLERROR => Err(Errno::from_code(r.u32()? as i32).unwrap_or(Errno::Eio)),
            k if k == kind + 1 => Ok(r),
            _ => Err(Errno::Eio),
        }
    }

    fn new_fid(&mut self) -> u32 {
        self.next_fid += 1;
        self.next_fid
    }

    /// A fid naming `ino`: its walked one, else its opened one (after a
    /// rename, until the next lookup walks it again).
    fn fid(&self, ino: InodeId) -> Result<u32, Errno> {
        self.fids
            .get(&ino)
            .copied()
            .or_else(|| self.open.get(&ino).map(|(fid, _)| *fid))
            .ok_or(Errno::Enoent)
    }

    fn clunk(&mut self, fid: u32) {
        let _ = self.call(TCLUNK, Msg::default().u32(fid));
    }

    /// Walks from `dir` to `name`; returns the inode (keeping a fid).
    fn walk(&mut self, dir: InodeId, name: &str) -> Result<InodeId, Errno> {
        let dfid = self.fid(dir)?;
        let fid = self.new_fid();
        let mut r = self.call(TWALK, Msg::default().u32(dfid).u32(fid).u16(1).str(name))?;
        if r.u16()? != 1 {
            return Err(Errno::Enoent);
        }
        let (_, ino) = r.qid()?;
        // The server knows a fid by the path it was walked to: keep the
        // newest one (an older fid of this inode number may name a renamed
        // path, or a deleted file whose number the host reused).
        if let Some(old) = self.fids.insert(ino, fid)
            && old != fid
            && old != 0
        {
            self.clunk(old);
        }
        Ok(ino)
    }

    /// A fid of `ino` opened for I/O (`write`: read-write required).
    fn opened(&mut self, ino: InodeId, write: bool) -> Result<u32, Errno> {
        if let Some((fid, rw)) = self.open.get(&ino).copied() {
            if rw || !write {
                return Ok(fid);
            }
            return Err(Errno::Erofs);
        }
        let base = self.fid(ino)?;
        for (mode, rw) in [(O_RDWR, true), (O_RDONLY, false)] {
            let fid = self.new_fid();
            self.call(TWALK, Msg::default().u32(base).u32(fid).u16(0))?;
            match self.call(TLOPEN, Msg::default().u32(fid).u32(mode)) {
                Ok(_) => {
                    self.open.insert(ino, (fid, rw));
                    return if write && !rw {
                        Err(Errno::Erofs)
                    } else {
                        Ok(fid)
                    };
                }
                Err(e @ (Errno::Erofs | Errno::Eacces | Errno::Eperm)) if rw => {
                    self.clunk(fid);
                    if write {
                        return Err(e);
                    }
                }
                Err(e) => {
                    self.clunk(fid);
                    return Err(e);
                }
            }
        }
        Err(Errno::Eio)
    }

    fn forget(&mut self, ino: InodeId) {
        if let Some((fid, _)) = self.open.remove(&ino) {
            self.clunk(fid);
        }
    }
}

/// A host directory shared over virtio-9p.
pub struct NineP {
    client: spin::Mutex<Client>,
    root: InodeId,
    tag: String,
}

/// Why no volume could be attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NinePError {
    /// The transport failed.
    Virtio(kiln_virtio::VirtioError),
    /// The server refused the session (errno).
    Refused(Errno),
}

impl core::fmt::Display for NinePError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Virtio(e) => write!(f, "virtio-9p: {e}"),
            Self::Refused(e) => write!(f, "the 9P server refused the session: {e}"),
        }
    }
}

impl NineP {
    /// Attaches to every host volume: the virtio-9p devices on VMs, the
    /// CLI's channels on linuxu (none is not an error).
    pub fn probe_all() -> Result<Vec<NineP>, NinePError> {
        let mut out = Vec::new();
        for dev in VirtioMmio::probe_all(DEVICE_TYPE, F_MOUNT_TAG).map_err(NinePError::Virtio)? {
            // Config space: tag length (u16), then the tag, read byte by
            // byte (QEMU refuses a wider read that runs past the end).
            let tag_len = usize::from(u16::from_le_bytes([dev.config8(0), dev.config8(1)]));
            let raw: Vec<u8> = (0..tag_len).map(|i| dev.config8(2 + i as u64)).collect();
            let tag = String::from_utf8_lossy(&raw).into_owned();
            let transport = alloc::boxed::Box::new(Virtio(dev));
            out.push(Self::attach(transport, tag).map_err(NinePError::Refused)?);
        }
        for (fd, guest) in kiln_rt::boot::linuxu_volumes() {
            let transport = alloc::boxed::Box::new(Channel(*fd));
            out.push(Self::attach(transport, guest.clone()).map_err(NinePError::Refused)?);
        }
        Ok(out)
    }

    fn attach(dev: alloc::boxed::Box<dyn Transport>, tag: String) -> Result<Self, Errno> {
        let mut client = Client {
            dev,
            msize: MSIZE,
            next_fid: 0,
            fids: BTreeMap::new(),
            open: BTreeMap::new(),
        };
        let mut r = client.call(TVERSION, Msg::default().u32(MSIZE as u32).str("9P2000.L"))?;
        let msize = r.u32()? as usize;
        if r.str()? != "9P2000.L" || !(256..=MSIZE).contains(&msize) {
            return Err(Errno::Einval);
        }
        client.msize = msize;
        let mut r = client.call(
            TATTACH,
            Msg::default().u32(0).u32(!0).str("").str("").u32(0),
        )?;
        let (_, root) = r.qid()?;
        client.fids.insert(root, 0);
        Ok(Self {
            client: spin::Mutex::new(client),
            root,
            tag,
        })
    }

    /// The mount tag: the guest directory to mount it on.
    pub fn tag(&self) -> &str {
        &self.tag
    }
}

fn kind_of(mode: u32) -> Kind {
    match mode & 0o170000 {
        0o040000 => Kind::Dir,
        0o120000 => Kind::Symlink,
        0o020000 => Kind::CharDevice,
        _ => Kind::File,
    }
}

impl FileSystem for NineP {
    fn root(&self) -> InodeId {
        self.root
    }

    fn lookup(&self, dir: InodeId, name: &str) -> Result<InodeId, Errno> {
        self.client.lock().walk(dir, name)
    }

    fn stat(&self, ino: InodeId) -> Result<Stat, Errno> {
        let mut c = self.client.lock();
        let fid = c.fid(ino)?;
        let mut r = c.call(TGETATTR, Msg::default().u32(fid).u64(0x3fff))?;
        r.u64()?;
        r.qid()?;
        let mode = r.u32()?;
        r.u32()?;
        r.u32()?;
        let nlink = r.u64()?;
        r.u64()?;
        let size = r.u64()?;
        Ok(Stat {
            ino,
            kind: kind_of(mode),
            size,
            mode: mode & 0o7777,
            nlink: nlink as u32,
        })
    }

    fn create(&self, dir: InodeId, name: &str, node: NewNode, mode: u32) -> Result<InodeId, Errno> {
        let mut c = self.client.lock();
        let dfid = c.fid(dir)?;
        match node {
            NewNode::File => {
                let fid = c.new_fid();
                c.call(TWALK, Msg::default().u32(dfid).u32(fid).u16(0))?;
                let created = c.call(
                    TLCREATE,
                    Msg::default()
                        .u32(fid)
                        .str(name)
                        .u32(O_RDWR)
                        .u32(mode)
                        .u32(0),
                );
                let mut r = match created {
                    Ok(r) => r,
                    Err(e) => {
                        c.clunk(fid);
                        return Err(e);
                    }
                };
                let (_, ino) = r.qid()?;
                c.open.insert(ino, (fid, true));
                drop(c);
                self.lookup(dir, name)?;
                Ok(ino)
            }
            NewNode::Dir => {
                c.call(TMKDIR, Msg::default().u32(dfid).str(name).u32(mode).u32(0))?;
                c.walk(dir, name)
            }
            NewNode::Symlink(target) => {
                c.call(
                    TSYMLINK,
                    Msg::default().u32(dfid).str(name).str(&target).u32(0),
                )?;
                c.walk(dir, name)
            }
        }
    }

    fn unlink(&self, dir: InodeId, name: &str) -> Result<(), Errno> {
        let mut c = self.client.lock();
        let dfid = c.fid(dir)?;
        if let Ok(ino) = c.walk(dir, name) {
            c.forget(ino);
            if let Some(fid) = c.fids.remove(&ino) {
                c.clunk(fid);
            }
        }
        c.call(TUNLINKAT, Msg::default().u32(dfid).str(name).u32(0))?;
        Ok(())
    }

    fn rmdir(&self, dir: InodeId, name: &str) -> Result<(), Errno> {
        let mut c = self.client.lock();
        let dfid = c.fid(dir)?;
        if let Ok(ino) = c.walk(dir, name)
            && let Some(fid) = c.fids.remove(&ino)
        {
            c.clunk(fid);
        }
        c.call(TUNLINKAT, Msg::default().u32(dfid).str(name).u32(0x200))?;
        Ok(())
    }

    fn rename(
        &self,
        from_dir: InodeId,
        from: &str,
        to_dir: InodeId,
        to: &str,
    ) -> Result<(), Errno> {
        let mut c = self.client.lock();
        let (ffid, tfid) = (c.fid(from_dir)?, c.fid(to_dir)?);
        // Cached fids name paths on the host: drop the walked fids of both
        // names (the next lookup walks afresh). The source's opened fid
        // stays: an open file on the server does not depend on its path,
        // so descriptors opened before the rename keep working. A replaced
        // target is gone: its opened fid goes too.
        let source = c.walk(from_dir, from).ok();
        let target = c.walk(to_dir, to).ok().filter(|t| Some(*t) != source);
        for ino in source.into_iter().chain(target) {
            if let Some(fid) = c.fids.remove(&ino) {
                c.clunk(fid);
            }
        }
        if let Some(t) = target {
            c.forget(t);
        }
        c.call(
            TRENAMEAT,
            Msg::default().u32(ffid).str(from).u32(tfid).str(to),
        )?;
        Ok(())
    }

    fn read(&self, ino: InodeId, offset: u64, buf: &mut [u8]) -> Result<usize, Errno> {
        let mut c = self.client.lock();
        let fid = c.opened(ino, false)?;
        let mut done = 0;
        while done < buf.len() {
            let want = (buf.len() - done).min(c.msize - IO_HEADER);
            let mut r = c.call(
                TREAD,
                Msg::default()
                    .u32(fid)
                    .u64(offset + done as u64)
                    .u32(want as u32),
            )?;
            let n = (r.u32()? as usize).min(want);
            buf[done..done + n].copy_from_slice(r.take(n)?);
            done += n;
            if n < want {
                break;
            }
        }
        Ok(done)
    }

    fn write(&self, ino: InodeId, offset: u64, buf: &[u8]) -> Result<usize, Errno> {
        let mut c = self.client.lock();
        let fid = c.opened(ino, true)?;
        let mut done = 0;
        while done < buf.len() {
            let chunk = &buf[done..(done + c.msize - IO_HEADER).min(buf.len())];
            let mut r = c.call(
                TWRITE,
                Msg::default()
                    .u32(fid)
                    .u64(offset + done as u64)
                    .u32(chunk.len() as u32)
                    .bytes(chunk),
            )?;
            let n = r.u32()? as usize;
            done += n;
            if n < chunk.len() {
                break;
            }
        }
        Ok(done)
    }

    fn truncate(&self, ino: InodeId, size: u64) -> Result<(), Errno> {
        let mut c = self.client.lock();
        let fid = c.fid(ino)?;
        let body = Msg::default()
            .u32(fid)
            .u32(0x8)
            .u32(0)
            .u32(0)
            .u32(0)
            .u64(size);
        c.call(TSETATTR, body.u64(0).u64(0).u64(0).u64(0))?;
        Ok(())
    }

    fn readdir(&self, ino: InodeId) -> Result<Vec<DirEntry>, Errno> {
        let mut c = self.client.lock();
        let base = c.fid(ino)?;
        let fid = c.new_fid();
        c.call(TWALK, Msg::default().u32(base).u32(fid).u16(0))?;
        let result = (|| {
            c.call(TLOPEN, Msg::default().u32(fid).u32(O_RDONLY | O_DIRECTORY))?;
            let mut out = Vec::new();
            let mut offset = 0u64;
            loop {
                let count = (c.msize - IO_HEADER) as u32;
                let mut r = c.call(TREADDIR, Msg::default().u32(fid).u64(offset).u32(count))?;
                let count = r.u32()? as usize;
                if count == 0 {
                    break;
                }
                let end = r.at + count;
                while r.at < end {
                    let (_, e_ino) = r.qid()?;
                    offset = r.u64()?;
                    let dtype = r.u8()?;
                    let name = r.str()?;
                    // QEMU's server lists them; the VFS handles both.
                    if name == "." || name == ".." {
                        continue;
                    }
                    let kind = match dtype {
                        4 => Kind::Dir,
                        10 => Kind::Symlink,
                        2 => Kind::CharDevice,
                        _ => Kind::File,
                    };
                    out.push(DirEntry {
                        name,
                        ino: e_ino,
                        kind,
                    });
                }
            }
            out.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(out)
        })();
        c.clunk(fid);
        result
    }

    fn readlink(&self, ino: InodeId) -> Result<String, Errno> {
        let mut c = self.client.lock();
        let fid = c.fid(ino)?;
        c.call(TREADLINK, Msg::default().u32(fid))?.str()
    }
}
