//! virtio-9p: a host directory shared with the guest (`kiln run -v`).
//!
//! The device (type 9, mount tag in its config space) carries 9P2000.L
//! messages; [`Volume`] serves them from one host directory. The subset a
//! file system client needs: version, attach, walk, getattr, setattr
//! (size), lopen, lcreate, read, write, readdir, mkdir, symlink,
//! readlink, unlinkat, renameat, fsync, clunk.
//!
//! Confinement: every host access is `openat2` relative to the volume's
//! root with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS` (the kernel refuses
//! `..` escapes and never follows a symlink, inside or outside the
//! volume), or an `*at` call on a directory opened that way with one
//! checked name (no `/`, not `.` or `..`). Symlinks are the guest's to
//! resolve in its own tree, so a link to `/etc/passwd` names the guest's
//! file, never the host's. A read-only volume refuses every change with
//! `EROFS` here, on the host side.
//!
//! Limits: one request at a time; no locks, xattrs, hard links or
//! permission changes; ownership is the VMM's user.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags};
use virtio_queue::Queue;
use vm_memory::{Bytes, GuestMemoryMmap};

use super::VirtioDevice;

/// The virtio device ID.
pub const DEVICE_TYPE: u32 = 9;
/// `VIRTIO_9P_MOUNT_TAG`.
pub const F_MOUNT_TAG: u64 = 1;
/// Largest message.
pub const MSIZE: u32 = 16384;

/// Message types (9P2000.L).
#[allow(missing_docs, reason = "the names are the protocol's")]
pub mod msg {
    pub const RLERROR: u8 = 7;
    pub const TLOPEN: u8 = 12;
    pub const TLCREATE: u8 = 14;
    pub const TSYMLINK: u8 = 16;
    pub const TREADLINK: u8 = 22;
    pub const TGETATTR: u8 = 24;
    pub const TSETATTR: u8 = 26;
    pub const TREADDIR: u8 = 40;
    pub const TFSYNC: u8 = 50;
    pub const TMKDIR: u8 = 72;
    pub const TRENAMEAT: u8 = 74;
    pub const TUNLINKAT: u8 = 76;
    pub const TVERSION: u8 = 100;
    pub const TATTACH: u8 = 104;
    pub const TWALK: u8 = 110;
    pub const TREAD: u8 = 116;
    pub const TWRITE: u8 = 118;
    pub const TCLUNK: u8 = 120;
}

/// Why a volume cannot be shared.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// The host directory cannot be opened.
    #[error("cannot share {path}: {cause} (give an existing directory: -v HOSTDIR:GUESTDIR[:ro])")]
    Open {
        /// The directory.
        path: PathBuf,
        /// Why.
        cause: std::io::Error,
    },
    /// The mount tag is too long.
    #[error("volume tag {0:?} is longer than 255 bytes")]
    TagTooLong(String),
}

const EIO: u32 = 5;
const EBADF: u32 = 9;
const EINVAL: u32 = 22;
const EROFS: u32 = 30;
const EPERM: u32 = 1;
const ENOSYS: u32 = 38;

const QTDIR: u8 = 0x80;
const QTSYMLINK: u8 = 0x02;

struct Fid {
    /// Relative to the root; empty = the root.
    path: PathBuf,
    file: Option<File>,
}

/// A shared host directory behind a virtio-9p device.
pub struct Volume {
    root: OwnedFd,
    read_only: bool,
    config: Vec<u8>,
    fids: HashMap<u32, Fid>,
}

fn errno_of(e: &std::io::Error) -> u32 {
    e.raw_os_error().map_or(EIO, |c| c as u32)
}

impl From<rustix::io::Errno> for Failure {
    fn from(e: rustix::io::Errno) -> Self {
        Failure(e.raw_os_error() as u32)
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure(errno_of(&e))
    }
}

/// A request's failure: the errno for `Rlerror`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Failure(u32);

type Reply = Result<Vec<u8>, Failure>;

/// Reads a request.
struct In<'a> {
    b: &'a [u8],
    at: usize,
}

impl In<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], Failure> {
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.b.len())
            .ok_or(Failure(EINVAL))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, Failure> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, Failure> {
        let s = self.take(2)?;
        Ok(u16::from_le_bytes([s[0], s[1]]))
    }
    fn u32(&mut self) -> Result<u32, Failure> {
        let s = self.take(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn u64(&mut self) -> Result<u64, Failure> {
        let s = self.take(8)?;
        Ok(u64::from_le_bytes(s.try_into().unwrap_or_default()))
    }
    fn str(&mut self) -> Result<String, Failure> {
        let n = usize::from(self.u16()?);
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| Failure(EINVAL))
    }
}

/// Builds a reply body.
#[derive(Default)]
struct Out(Vec<u8>);

impl Out {
    fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn str(&mut self, s: &str) -> &mut Self {
        self.u16(s.len() as u16);
        self.0.extend_from_slice(s.as_bytes());
        self
    }
    fn qid(&mut self, st: &rustix::fs::Stat) -> &mut Self {
        self.u8(qid_type(st.st_mode)).u32(0).u64(st.st_ino)
    }
}

fn qid_type(mode: u32) -> u8 {
    match mode & 0o170000 {
        0o040000 => QTDIR,
        0o120000 => QTSYMLINK,
        _ => 0,
    }
}

/// A single path component the guest may name.
fn check_name(name: &str) -> Result<&str, Failure> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(Failure(EPERM));
    }
    Ok(name)
}

impl Volume {
    /// Shares `dir` under mount tag `tag`; `read_only` refuses changes.
    pub fn open(dir: &Path, tag: &str, read_only: bool) -> Result<Self, VolumeError> {
        if tag.len() > 255 {
            return Err(VolumeError::TagTooLong(tag.into()));
        }
        let root = rustix::fs::open(
            dir,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| VolumeError::Open {
            path: dir.to_path_buf(),
            cause: e.into(),
        })?;
        let mut config = (tag.len() as u16).to_le_bytes().to_vec();
        config.extend_from_slice(tag.as_bytes());
        Ok(Self {
            root,
            read_only,
            config,
            fids: HashMap::new(),
        })
    }

    /// Opens `rel` beneath the root, never following a symlink.
    fn open_beneath(&self, rel: &Path, flags: OFlags) -> Result<OwnedFd, Failure> {
        let rel = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        Ok(rustix::fs::openat2(
            self.root.as_fd(),
            rel,
            flags | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        )?)
    }

    fn stat(&self, rel: &Path) -> Result<rustix::fs::Stat, Failure> {
        let fd = self.open_beneath(rel, OFlags::PATH)?;
        Ok(rustix::fs::statat(
            &fd,
            "",
            AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW,
        )?)
    }

    fn fid(&self, fid: u32) -> Result<&Fid, Failure> {
        self.fids.get(&fid).ok_or(Failure(EBADF))
    }

    fn writable(&self) -> Result<(), Failure> {
        if self.read_only {
            Err(Failure(EROFS))
        } else {
            Ok(())
        }
    }

    /// Serves one T-message; returns the R-message.
    pub fn handle(&mut self, request: &[u8]) -> Vec<u8> {
        let mut r = In { b: request, at: 0 };
        let header = (|| Ok::<_, Failure>((r.u32()?, r.u8()?, r.u16()?)))();
        let Ok((_size, kind, tag)) = header else {
            return frame(msg::RLERROR, 0xffff, Out::default().u32(EINVAL).0.clone());
        };
        match self.dispatch(kind, &mut r) {
            Ok(body) => frame(kind + 1, tag, body),
            Err(Failure(e)) => frame(msg::RLERROR, tag, Out::default().u32(e).0.clone()),
        }
    }

    fn dispatch(&mut self, kind: u8, r: &mut In<'_>) -> Reply {
        let mut o = Out::default();
        match kind {
            msg::TVERSION => {
                let msize = r.u32()?.min(MSIZE);
                let version = r.str()?;
                self.fids.clear();
                let v = if version == "9P2000.L" {
                    "9P2000.L"
                } else {
                    "unknown"
                };
                o.u32(msize).str(v);
            }
            msg::TATTACH => {
                let fid = r.u32()?;
                let st = self.stat(Path::new(""))?;
                self.fids.insert(
                    fid,
                    Fid {
                        path: PathBuf::new(),
                        file: None,
                    },
                );
                o.qid(&st);
            }
            msg::TWALK => {
                let (fid, newfid, n) = (r.u32()?, r.u32()?, r.u16()?);
                let mut path = self.fid(fid)?.path.clone();
                let mut qids = Vec::new();
                for i in 0..n {
                    let name = r.str()?;
                    let step = check_name(&name).map(|n| path.join(n));
                    match step.and_then(|p| self.stat(&p).map(|st| (p, st))) {
                        Ok((p, st)) => {
                            path = p;
                            qids.push(st);
                        }
                        Err(e) if i == 0 => return Err(e),
                        Err(_) => break,
                    }
                }
                if qids.len() == usize::from(n) {
                    self.fids.insert(newfid, Fid { path, file: None });
                }
                o.u16(qids.len() as u16);
                for st in &qids {
                    o.qid(st);
                }
            }
            msg::TGETATTR => {
                let fid = r.u32()?;
                let st = self.stat(&self.fid(fid)?.path)?;
                o.u64(0x3fff)
                    .qid(&st)
                    .u32(st.st_mode)
                    .u32(st.st_uid)
                    .u32(st.st_gid);
                o.u64(st.st_nlink)
                    .u64(st.st_rdev)
                    .u64(st.st_size as u64)
                    .u64(st.st_blksize as u64);
                o.u64(st.st_blocks as u64);
                for _ in 0..8 {
                    o.u64(0); // times and btime
                }
                o.u64(0).u64(0); // gen, data_version
            }
            msg::TSETATTR => {
                let (fid, valid) = (r.u32()?, r.u32()?);
                let (_mode, _uid, _gid, size) = (r.u32()?, r.u32()?, r.u32()?, r.u64()?);
                if valid & 0x8 != 0 {
                    self.writable()?;
                    let fd = self.open_beneath(&self.fid(fid)?.path.clone(), OFlags::WRONLY)?;
                    File::from(fd).set_len(size)?;
                }
            }
            msg::TLOPEN => {
                let (fid, flags) = (r.u32()?, r.u32()?);
                let path = self.fid(fid)?.path.clone();
                let access = flags & 3;
                if access != 0 || flags & 0o1000 != 0 {
                    self.writable()?;
                }
                let mut oflags =
                    OFlags::from_bits_truncate(flags & (3 | 0o1000 | 0o2000 | 0o200000));
                oflags |= OFlags::NOCTTY;
                let fd = self.open_beneath(&path, oflags)?;
                let st = rustix::fs::fstat(&fd)?;
                if let Some(f) = self.fids.get_mut(&fid) {
                    f.file = Some(File::from(fd));
                }
                o.qid(&st).u32(MSIZE - 24);
            }
            msg::TLCREATE => {
                let (fid, name, flags, mode, _gid) =
                    (r.u32()?, r.str()?, r.u32()?, r.u32()?, r.u32()?);
                self.writable()?;
                let name = check_name(&name)?.to_string();
                let dir = self.fid(fid)?.path.clone();
                let dfd = self.open_beneath(&dir, OFlags::PATH | OFlags::DIRECTORY)?;
                let oflags = OFlags::from_bits_truncate(flags & (3 | 0o2000))
                    | OFlags::CREATE
                    | OFlags::EXCL
                    | OFlags::NOFOLLOW
                    | OFlags::CLOEXEC;
                let fd = rustix::fs::openat(
                    &dfd,
                    name.as_str(),
                    oflags,
                    Mode::from_bits_truncate(mode & 0o777),
                )?;
                let st = rustix::fs::fstat(&fd)?;
                self.fids.insert(
                    fid,
                    Fid {
                        path: dir.join(&name),
                        file: Some(File::from(fd)),
                    },
                );
                o.qid(&st).u32(MSIZE - 24);
            }
            msg::TREAD => {
                let (fid, offset, count) = (r.u32()?, r.u64()?, r.u32()?);
                let file = self.fid(fid)?.file.as_ref().ok_or(Failure(EBADF))?;
                let mut buf = vec![0u8; count.min(MSIZE - 11) as usize];
                let n = file.read_at(&mut buf, offset)?;
                o.u32(n as u32);
                o.0.extend_from_slice(&buf[..n]);
            }
            msg::TWRITE => {
                let (fid, offset, count) = (r.u32()?, r.u64()?, r.u32()?);
                self.writable()?;
                let data = r.take(count as usize)?.to_vec();
                let file = self.fid(fid)?.file.as_ref().ok_or(Failure(EBADF))?;
                let n = file.write_at(&data, offset)?;
                o.u32(n as u32);
            }
            msg::TREADDIR => {
                let (fid, offset, count) = (r.u32()?, r.u64()?, r.u32()?);
                let path = self.fid(fid)?.path.clone();
                let fd = self.open_beneath(&path, OFlags::RDONLY | OFlags::DIRECTORY)?;
                let mut names = Vec::new();
                for entry in rustix::fs::Dir::read_from(&fd)? {
                    let entry = entry?;
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if name != "." && name != ".." {
                        names.push(name);
                    }
                }
                names.sort();
                let mut body = Out::default();
                for (i, name) in names.iter().enumerate().skip(offset as usize) {
                    let Ok(st) = self.stat(&path.join(name)) else {
                        continue;
                    };
                    let mut e = Out::default();
                    let dtype = match qid_type(st.st_mode) {
                        QTDIR => 4,
                        QTSYMLINK => 10,
                        _ => 8,
                    };
                    e.qid(&st).u64(i as u64 + 1).u8(dtype).str(name);
                    if body.0.len() + e.0.len() > count.min(MSIZE - 11) as usize {
                        break;
                    }
                    body.0.extend_from_slice(&e.0);
                }
                o.u32(body.0.len() as u32);
                o.0.extend_from_slice(&body.0);
            }
            msg::TMKDIR => {
                let (dfid, name, mode, _gid) = (r.u32()?, r.str()?, r.u32()?, r.u32()?);
                self.writable()?;
                let dir = self.fid(dfid)?.path.clone();
                let name = check_name(&name)?.to_string();
                let dfd = self.open_beneath(&dir, OFlags::PATH | OFlags::DIRECTORY)?;
                rustix::fs::mkdirat(&dfd, name.as_str(), Mode::from_bits_truncate(mode & 0o777))?;
                o.qid(&self.stat(&dir.join(&name))?);
            }
            msg::TSYMLINK => {
                let (fid, name, target, _gid) = (r.u32()?, r.str()?, r.str()?, r.u32()?);
                self.writable()?;
                let dir = self.fid(fid)?.path.clone();
                let name = check_name(&name)?.to_string();
                let dfd = self.open_beneath(&dir, OFlags::PATH | OFlags::DIRECTORY)?;
                rustix::fs::symlinkat(target.as_str(), &dfd, name.as_str())?;
                o.qid(&self.stat(&dir.join(&name))?);
            }
            msg::TREADLINK => {
                let fid = r.u32()?;
                let path = self.fid(fid)?.path.clone();
                let name = path.file_name().ok_or(Failure(EINVAL))?.to_owned();
                let parent = path.parent().unwrap_or(Path::new(""));
                let dfd = self.open_beneath(parent, OFlags::PATH | OFlags::DIRECTORY)?;
                let target = rustix::fs::readlinkat(&dfd, name.as_os_str(), Vec::new())?;
                o.str(&target.to_string_lossy());
            }
            msg::TUNLINKAT => {
                let (dfid, name, flags) = (r.u32()?, r.str()?, r.u32()?);
                self.writable()?;
                let dir = self.fid(dfid)?.path.clone();
                let name = check_name(&name)?.to_string();
                let dfd = self.open_beneath(&dir, OFlags::PATH | OFlags::DIRECTORY)?;
                let at = if flags & 0x200 != 0 {
                    AtFlags::REMOVEDIR
                } else {
                    AtFlags::empty()
                };
                rustix::fs::unlinkat(&dfd, name.as_str(), at)?;
            }
            msg::TRENAMEAT => {
                let (ofid, oname, nfid, nname) = (r.u32()?, r.str()?, r.u32()?, r.str()?);
                self.writable()?;
                let (odir, ndir) = (self.fid(ofid)?.path.clone(), self.fid(nfid)?.path.clone());
                let (oname, nname) = (
                    check_name(&oname)?.to_string(),
                    check_name(&nname)?.to_string(),
                );
                let ofd = self.open_beneath(&odir, OFlags::PATH | OFlags::DIRECTORY)?;
                let nfd = self.open_beneath(&ndir, OFlags::PATH | OFlags::DIRECTORY)?;
                rustix::fs::renameat(&ofd, oname.as_str(), &nfd, nname.as_str())?;
            }
            msg::TFSYNC => {
                let fid = r.u32()?;
                if let Some(file) = &self.fid(fid)?.file {
                    file.sync_data()?;
                }
            }
            msg::TCLUNK => {
                let fid = r.u32()?;
                self.fids.remove(&fid).ok_or(Failure(EBADF))?;
            }
            _ => return Err(Failure(ENOSYS)),
        }
        Ok(o.0)
    }
}

impl Volume {
    /// Serves one virtio chain: the T-message from its readable part (at
    /// most MSIZE bytes, whatever the descriptors claim), the R-message
    /// into its writable part; returns the bytes written.
    fn serve_chain(
        &mut self,
        mem: &GuestMemoryMmap,
        descs: &[virtio_queue::desc::split::Descriptor],
    ) -> u32 {
        let mut request = Vec::new();
        for d in descs.iter().filter(|d| !d.is_write_only()) {
            let room = MSIZE as usize - request.len();
            if room == 0 {
                break;
            }
            let mut part = vec![0u8; (d.len() as usize).min(room)];
            if mem.read_slice(&mut part, d.addr()).is_err() {
                break;
            }
            request.extend_from_slice(&part);
        }
        let reply = self.handle(&request);
        let mut written = 0usize;
        for d in descs.iter().filter(|d| d.is_write_only()) {
            if written == reply.len() {
                break;
            }
            let n = (d.len() as usize).min(reply.len() - written);
            if mem
                .write_slice(&reply[written..written + n], d.addr())
                .is_err()
            {
                break;
            }
            written += n;
        }
        written as u32
    }

    /// Serves size-prefixed 9P messages on `stream` until it closes (the
    /// linuxu platform's channel: the guest process is a client like a
    /// VM's driver, with the same confinement here).
    pub fn serve<S: std::io::Read + std::io::Write>(mut self, mut stream: S) {
        let mut size = [0u8; 4];
        while stream.read_exact(&mut size).is_ok() {
            let len = u32::from_le_bytes(size) as usize;
            if !(7..=MSIZE as usize).contains(&len) {
                return; // not 9P: drop the channel
            }
            let mut message = vec![0u8; len];
            message[..4].copy_from_slice(&size);
            if stream.read_exact(&mut message[4..]).is_err() {
                return;
            }
            let reply = self.handle(&message);
            if stream.write_all(&reply).is_err() {
                return;
            }
        }
    }
}

fn frame(kind: u8, tag: u16, body: Vec<u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(7 + body.len());
    out.extend_from_slice(&(7 + body.len() as u32).to_le_bytes());
    out.push(kind);
    out.extend_from_slice(&tag.to_le_bytes());
    out.extend_from_slice(&body);
    out
}

impl VirtioDevice for Volume {
    fn device_type(&self) -> u32 {
        DEVICE_TYPE
    }

    fn features(&self) -> u64 {
        super::F_VERSION_1 | F_MOUNT_TAG
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[128]
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        super::read_config_bytes(&self.config, offset, data);
    }

    fn process_queue(&mut self, _index: usize, queue: &mut Queue, mem: &GuestMemoryMmap) -> bool {
        super::serve_queue(queue, mem, |descs| self.serve_chain(mem, descs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Client {
        vol: Volume,
    }

    impl Client {
        fn call(&mut self, kind: u8, body: &Out) -> (u8, Vec<u8>) {
            let reply = self.vol.handle(&frame(kind, 1, body.0.clone()));
            (reply[4], reply[7..].to_vec())
        }
        fn ok(&mut self, kind: u8, body: &Out) -> Vec<u8> {
            let (k, b) = self.call(kind, body);
            assert_eq!(
                k,
                kind + 1,
                "request {kind} failed with errno {:?}",
                b.get(..4)
            );
            b
        }
        fn err(&mut self, kind: u8, body: &Out) -> u32 {
            let (k, b) = self.call(kind, body);
            assert_eq!(k, msg::RLERROR, "request {kind} should fail");
            u32::from_le_bytes(b[..4].try_into().unwrap())
        }
        fn walk(&mut self, fid: u32, newfid: u32, names: &[&str]) -> Result<(), u32> {
            let mut o = Out::default();
            o.u32(fid).u32(newfid).u16(names.len() as u16);
            for n in names {
                o.str(n);
            }
            match self.call(msg::TWALK, &o) {
                (k, b)
                    if k == msg::TWALK + 1
                        && usize::from(u16::from_le_bytes([b[0], b[1]])) == names.len() =>
                {
                    Ok(())
                }
                (k, _) if k == msg::TWALK + 1 => Err(2), // ENOENT: a partial walk
                (_, b) => Err(u32::from_le_bytes(b[..4].try_into().unwrap())),
            }
        }
    }

    fn setup(read_only: bool) -> (tempfile::TempDir, Client) {
        let dir = tempfile::tempdir().unwrap();
        let share = dir.path().join("share");
        std::fs::create_dir(&share).unwrap();
        std::fs::write(share.join("hello.txt"), "hi from the host\n").unwrap();
        std::fs::write(dir.path().join("secret"), "outside").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), share.join("abs-link")).unwrap();
        std::os::unix::fs::symlink("../secret", share.join("rel-link")).unwrap();
        let mut c = Client {
            vol: Volume::open(&share, "data", read_only).unwrap(),
        };
        let mut o = Out::default();
        o.u32(8192).str("9P2000.L");
        c.ok(msg::TVERSION, &o);
        let mut o = Out::default();
        o.u32(0).u32(!0).str("").str("").u32(0);
        c.ok(msg::TATTACH, &o);
        (dir, c)
    }

    #[test]
    fn reads_and_writes_files_in_the_shared_directory() {
        let (dir, mut c) = setup(false);
        c.walk(0, 1, &["hello.txt"]).unwrap();
        let mut o = Out::default();
        o.u32(1).u32(0);
        c.ok(msg::TLOPEN, &o);
        let mut o = Out::default();
        o.u32(1).u64(0).u32(100);
        let b = c.ok(msg::TREAD, &o);
        assert_eq!(&b[4..], b"hi from the host\n");
        // Create, write and see it on the host.
        c.walk(0, 2, &[]).unwrap();
        let mut o = Out::default();
        o.u32(2).str("new.txt").u32(2).u32(0o644).u32(0);
        c.ok(msg::TLCREATE, &o);
        let mut o = Out::default();
        o.u32(2).u64(0).u32(5);
        o.0.extend_from_slice(b"guest");
        c.ok(msg::TWRITE, &o);
        assert_eq!(
            std::fs::read(dir.path().join("share/new.txt")).unwrap(),
            b"guest"
        );
        let mut o = Out::default();
        o.u32(0).str("sub").u32(0o755).u32(0);
        c.ok(msg::TMKDIR, &o);
        let mut o = Out::default();
        o.u32(0).str("new.txt").u32(0).str("moved.txt");
        c.ok(msg::TRENAMEAT, &o);
        assert!(dir.path().join("share/moved.txt").exists());
        let mut o = Out::default();
        o.u32(0).u64(0).u32(4000);
        let b = c.ok(msg::TREADDIR, &o);
        let text = String::from_utf8_lossy(&b);
        for name in ["abs-link", "hello.txt", "moved.txt", "rel-link", "sub"] {
            assert!(text.contains(name), "{name} missing from readdir");
        }
        let mut o = Out::default();
        o.u32(0).str("sub").u32(0x200);
        c.ok(msg::TUNLINKAT, &o);
        assert!(!dir.path().join("share/sub").exists());
    }

    #[test]
    fn escapes_are_refused_and_symlinks_never_followed_on_the_host() {
        let (dir, mut c) = setup(false);
        assert_eq!(c.walk(0, 3, &[".."]), Err(EPERM));
        assert_eq!(c.walk(0, 3, &["a/../.."]), Err(EPERM));
        // Walking onto a symlink gives the link; opening it is refused
        // (ELOOP), and readlink returns the text for the guest to resolve.
        for link in ["abs-link", "rel-link"] {
            c.walk(0, 4, &[link]).unwrap();
            let mut o = Out::default();
            o.u32(4).u32(0);
            let e = c.err(msg::TLOPEN, &o);
            assert_eq!(e, 40, "opening {link} must not follow it (ELOOP)");
            let mut o = Out::default();
            o.u32(4);
            c.ok(msg::TREADLINK, &o);
            let mut o = Out::default();
            o.u32(4);
            c.ok(msg::TCLUNK, &o);
        }
        // No walk through a symlink either.
        assert!(c.walk(0, 5, &["abs-link", "x"]).is_err());
        assert_eq!(
            std::fs::read(dir.path().join("secret")).unwrap(),
            b"outside"
        );
    }

    #[test]
    fn a_read_only_volume_refuses_every_change_on_the_host_side() {
        let (dir, mut c) = setup(true);
        c.walk(0, 1, &["hello.txt"]).unwrap();
        let mut o = Out::default();
        o.u32(1).u32(2);
        assert_eq!(c.err(msg::TLOPEN, &o), EROFS);
        let mut o = Out::default();
        o.u32(0).str("x").u32(0o755).u32(0);
        assert_eq!(c.err(msg::TMKDIR, &o), EROFS);
        let mut o = Out::default();
        o.u32(0).str("hello.txt").u32(0);
        assert_eq!(c.err(msg::TUNLINKAT, &o), EROFS);
        let mut o = Out::default();
        o.u32(1)
            .u32(0x8)
            .u32(0)
            .u32(0)
            .u32(0)
            .u64(0)
            .u64(0)
            .u64(0)
            .u64(0)
            .u64(0);
        assert_eq!(c.err(msg::TSETATTR, &o), EROFS);
        assert_eq!(
            std::fs::read(dir.path().join("share/hello.txt")).unwrap(),
            b"hi from the host\n"
        );
    }

    #[test]
    fn a_missing_directory_is_a_clear_error() {
        let err = Volume::open(Path::new("/nonexistent/site"), "data", false)
            .err()
            .unwrap();
        assert!(
            err.to_string().contains("cannot share /nonexistent/site"),
            "{err}"
        );
    }
}
