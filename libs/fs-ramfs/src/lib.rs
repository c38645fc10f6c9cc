//! # kiln-fs-ramfs — an in-memory file system
//!
//! [`RamFs`] implements [`kiln_vfs::FileSystem`] with every inode in a map
//! behind one lock: files are byte vectors, directories sorted name maps,
//! symlinks strings. It is the root file system of images without a disk
//! and the scratch space of every test of the VFS.
//!
//! Limits: memory is the heap's (a write that cannot grow the file returns
//! `ENOSPC` beyond [`RamFs::with_capacity`]); no hard links; no times.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

use kiln_vfs::{DirEntry, Errno, FileSystem, InodeId, Kind, NewNode, Stat};

enum Body {
    File(Vec<u8>),
    Dir(BTreeMap<String, InodeId>),
    Symlink(String),
}

struct Node {
    body: Body,
    mode: u32,
    /// The containing directory (directories only; the root is its own).
    parent: InodeId,
}

struct Inner {
    nodes: BTreeMap<InodeId, Node>,
    next: InodeId,
    bytes: u64,
}

/// An in-memory file system.
pub struct RamFs {
    inner: spin::Mutex<Inner>,
    capacity_bytes: u64,
}

const ROOT: InodeId = 1;

impl Default for RamFs {
    fn default() -> Self {
        Self::new()
    }
}

impl RamFs {
    /// An empty file system with an unlimited capacity.
    pub fn new() -> Self {
        Self::with_capacity(u64::MAX)
    }

    /// An empty file system whose files hold at most `capacity_bytes` in all.
    pub fn with_capacity(capacity_bytes: u64) -> Self {
        let mut nodes = BTreeMap::new();
        nodes.insert(
            ROOT,
            Node {
                body: Body::Dir(BTreeMap::new()),
                mode: 0o755,
                parent: ROOT,
            },
        );
        Self {
            inner: spin::Mutex::new(Inner {
                nodes,
                next: ROOT + 1,
                bytes: 0,
            }),
            capacity_bytes,
        }
    }
}

impl Inner {
    fn node(&self, ino: InodeId) -> Result<&Node, Errno> {
        self.nodes.get(&ino).ok_or(Errno::Enoent)
    }

    fn dir(&self, ino: InodeId) -> Result<&BTreeMap<String, InodeId>, Errno> {
        match &self.node(ino)?.body {
            Body::Dir(d) => Ok(d),
            _ => Err(Errno::Enotdir),
        }
    }

    fn dir_mut(&mut self, ino: InodeId) -> Result<&mut BTreeMap<String, InodeId>, Errno> {
        match &mut self.nodes.get_mut(&ino).ok_or(Errno::Enoent)?.body {
            Body::Dir(d) => Ok(d),
            _ => Err(Errno::Enotdir),
        }
    }

    fn kind(&self, ino: InodeId) -> Result<Kind, Errno> {
        Ok(match self.node(ino)?.body {
            Body::File(_) => Kind::File,
            Body::Dir(_) => Kind::Dir,
            Body::Symlink(_) => Kind::Symlink,
        })
    }

    /// Whether `ino` is `ancestor` or lies below it.
    fn drop_node(&mut self, ino: InodeId) {
        if let Some(Node {
            body: Body::File(data),
            ..
        }) = self.nodes.remove(&ino)
        {
            self.bytes -= data.len() as u64;
        }
    }
}

impl FileSystem for RamFs {
    fn root(&self) -> InodeId {
        ROOT
    }

    fn lookup(&self, dir: InodeId, name: &str) -> Result<InodeId, Errno> {
        self.inner
            .lock()
            .dir(dir)?
            .get(name)
            .copied()
            .ok_or(Errno::Enoent)
    }

    fn stat(&self, ino: InodeId) -> Result<Stat, Errno> {
        let inner = self.inner.lock();
        let node = inner.node(ino)?;
        let (kind, size, nlink) = match &node.body {
            Body::File(d) => (Kind::File, d.len() as u64, 1),
            Body::Dir(d) => (
                Kind::Dir,
                0,
                2 + d
                    .values()
                    .filter(|c| matches!(inner.kind(**c), Ok(Kind::Dir)))
                    .count() as u32,
            ),
            Body::Symlink(t) => (Kind::Symlink, t.len() as u64, 1),
        };
        Ok(Stat {
            ino,
            kind,
            size,
            mode: node.mode,
            nlink,
        })
    }

    fn create(&self, dir: InodeId, name: &str, node: NewNode, mode: u32) -> Result<InodeId, Errno> {
        let mut inner = self.inner.lock();
        if inner.dir(dir)?.contains_key(name) {
            return Err(Errno::Eexist);
        }
        let ino = inner.next;
        inner.next += 1;
        let body = match node {
            NewNode::File => Body::File(Vec::new()),
            NewNode::Dir => Body::Dir(BTreeMap::new()),
            NewNode::Symlink(target) => Body::Symlink(target),
        };
        let parent = if matches!(body, Body::Dir(_)) { dir } else { 0 };
        inner.nodes.insert(ino, Node { body, mode, parent });
        inner.dir_mut(dir)?.insert(name.into(), ino);
        Ok(ino)
    }

    fn unlink(&self, dir: InodeId, name: &str) -> Result<(), Errno> {
        let mut inner = self.inner.lock();
        let ino = *inner.dir(dir)?.get(name).ok_or(Errno::Enoent)?;
        if inner.kind(ino)? == Kind::Dir {
            return Err(Errno::Eisdir);
        }
        inner.dir_mut(dir)?.remove(name);
        inner.drop_node(ino);
        Ok(())
    }

    fn rmdir(&self, dir: InodeId, name: &str) -> Result<(), Errno> {
        let mut inner = self.inner.lock();
        let ino = *inner.dir(dir)?.get(name).ok_or(Errno::Enoent)?;
        if !inner.dir(ino)?.is_empty() {
            return Err(Errno::Enotempty);
        }
        inner.dir_mut(dir)?.remove(name);
        inner.nodes.remove(&ino);
        Ok(())
    }

    fn rename(
        &self,
        from_dir: InodeId,
        from: &str,
        to_dir: InodeId,
        to: &str,
    ) -> Result<(), Errno> {
        let mut inner = self.inner.lock();
        let ino = *inner.dir(from_dir)?.get(from).ok_or(Errno::Enoent)?;
        inner.dir(to_dir)?;
        let moving_dir = inner.kind(ino)? == Kind::Dir;
        // The tree rules (own subtree, ancestor target) are the VFS's.
        if let Some(&existing) = inner.dir(to_dir)?.get(to) {
            if existing == ino {
                return Ok(());
            }
            match (moving_dir, inner.kind(existing)? == Kind::Dir) {
                (true, false) => return Err(Errno::Enotdir),
                (false, true) => return Err(Errno::Eisdir),
                (true, true) if !inner.dir(existing)?.is_empty() => return Err(Errno::Enotempty),
                _ => {}
            }
        }
        if let Some(existing) = inner.dir_mut(to_dir)?.remove(to) {
            inner.drop_node(existing);
        }
        inner.dir_mut(from_dir)?.remove(from);
        inner.dir_mut(to_dir)?.insert(to.into(), ino);
        if moving_dir && let Some(n) = inner.nodes.get_mut(&ino) {
            n.parent = to_dir;
        }
        Ok(())
    }

    fn read(&self, ino: InodeId, offset: u64, buf: &mut [u8]) -> Result<usize, Errno> {
        let inner = self.inner.lock();
        match &inner.node(ino)?.body {
            Body::File(data) => {
                let start = usize::try_from(offset)
                    .unwrap_or(usize::MAX)
                    .min(data.len());
                let n = buf.len().min(data.len() - start);
                buf[..n].copy_from_slice(&data[start..start + n]);
                Ok(n)
            }
            Body::Dir(_) => Err(Errno::Eisdir),
            Body::Symlink(_) => Err(Errno::Einval),
        }
    }

    fn write(&self, ino: InodeId, offset: u64, buf: &[u8]) -> Result<usize, Errno> {
        let mut inner = self.inner.lock();
        let end = offset.checked_add(buf.len() as u64).ok_or(Errno::Efbig)?;
        let old_len = match &inner.node(ino)?.body {
            Body::File(d) => d.len() as u64,
            Body::Dir(_) => return Err(Errno::Eisdir),
            Body::Symlink(_) => return Err(Errno::Einval),
        };
        let growth = end.saturating_sub(old_len);
        if inner.bytes + growth > self.capacity_bytes {
            return Err(Errno::Enospc);
        }
        let end = usize::try_from(end).map_err(|_| Errno::Efbig)?;
        let Some(Node {
            body: Body::File(data),
            ..
        }) = inner.nodes.get_mut(&ino)
        else {
            return Err(Errno::Enoent);
        };
        if data.len() < end {
            data.resize(end, 0);
        }
        data[end - buf.len()..end].copy_from_slice(buf);
        inner.bytes += growth;
        Ok(buf.len())
    }

    fn truncate(&self, ino: InodeId, size: u64) -> Result<(), Errno> {
        let mut inner = self.inner.lock();
        let old_len = match &inner.node(ino)?.body {
            Body::File(d) => d.len() as u64,
            Body::Dir(_) => return Err(Errno::Eisdir),
            Body::Symlink(_) => return Err(Errno::Einval),
        };
        if size > old_len && inner.bytes + (size - old_len) > self.capacity_bytes {
            return Err(Errno::Enospc);
        }
        let new_len = usize::try_from(size).map_err(|_| Errno::Efbig)?;
        if let Some(Node {
            body: Body::File(data),
            ..
        }) = inner.nodes.get_mut(&ino)
        {
            data.resize(new_len, 0);
        }
        inner.bytes = inner.bytes - old_len + size;
        Ok(())
    }

    fn readdir(&self, ino: InodeId) -> Result<Vec<DirEntry>, Errno> {
        let inner = self.inner.lock();
        inner
            .dir(ino)?
            .iter()
            .map(|(name, &child)| {
                Ok(DirEntry {
                    name: name.clone(),
                    ino: child,
                    kind: inner.kind(child)?,
                })
            })
            .collect()
    }

    fn readlink(&self, ino: InodeId) -> Result<String, Errno> {
        match &self.inner.lock().node(ino)?.body {
            Body::Symlink(t) => Ok(t.clone()),
            _ => Err(Errno::Einval),
        }
    }
}
