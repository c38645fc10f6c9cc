//! The VFS proper: mount table, resolution, descriptors, operations.

use alloc::collections::VecDeque;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;

use crate::{DirEntry, Errno, FileSystem, InodeId, Kind, NewNode, Stat};

/// Symbolic links followed in one resolution before `ELOOP`.
pub const MAX_SYMLINKS: usize = 40;
/// Longest path accepted.
const PATH_MAX: usize = 4096;
/// Longest path component accepted.
const NAME_MAX: usize = 255;
/// Most descriptors open at once.
const MAX_FDS: usize = 1024;

/// Open flags (Linux values).
pub mod flags {
    /// Read only.
    pub const O_RDONLY: u32 = 0;
    /// Write only.
    pub const O_WRONLY: u32 = 1;
    /// Read and write.
    pub const O_RDWR: u32 = 2;
    /// Access-mode mask.
    pub const O_ACCMODE: u32 = 3;
    /// Create if missing.
    pub const O_CREAT: u32 = 0o100;
    /// With `O_CREAT`: fail if it exists.
    pub const O_EXCL: u32 = 0o200;
    /// Truncate to zero on open.
    pub const O_TRUNC: u32 = 0o1000;
    /// Every write goes to the end.
    pub const O_APPEND: u32 = 0o2000;
    /// Fail unless a directory.
    pub const O_DIRECTORY: u32 = 0o200000;
    /// Do not follow a final symbolic link.
    pub const O_NOFOLLOW: u32 = 0o400000;
}
use flags::*;

/// A file descriptor.
pub type Fd = usize;

/// Where `lseek` counts from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Whence {
    /// From the start.
    Set,
    /// From the current offset.
    Cur,
    /// From the end.
    End,
}

/// A place in the tree: a mount and an inode in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Loc {
    mount: usize,
    ino: InodeId,
}

struct Mount {
    fs: Arc<dyn FileSystem>,
    /// Where it is mounted (None for the root file system).
    on: Option<Loc>,
}

struct OpenFile {
    loc: Loc,
    flags: u32,
    offset: spin::Mutex<u64>,
    /// Its kind at open (an inode's kind never changes): reads need not
    /// ask the file system again (one request less per read on 9p).
    is_dir: bool,
}

/// The virtual file system.
pub struct Vfs {
    mounts: spin::Mutex<Vec<Mount>>,
    files: spin::Mutex<Vec<Option<Arc<OpenFile>>>>,
}

fn split(path: &str) -> Result<VecDeque<String>, Errno> {
    if path.is_empty() {
        return Err(Errno::Enoent);
    }
    if path.len() > PATH_MAX {
        return Err(Errno::Enametoolong);
    }
    let mut parts = VecDeque::new();
    for c in path.split('/') {
        if c.len() > NAME_MAX {
            return Err(Errno::Enametoolong);
        }
        if !c.is_empty() {
            parts.push_back(c.to_string());
        }
    }
    Ok(parts)
}

impl Vfs {
    /// A VFS whose root is `root`.
    pub fn new(root: Arc<dyn FileSystem>) -> Self {
        Self {
            mounts: spin::Mutex::new(alloc::vec![Mount { fs: root, on: None }]),
            files: spin::Mutex::new(Vec::new()),
        }
    }

    fn fs(&self, mount: usize) -> Arc<dyn FileSystem> {
        self.mounts.lock()[mount].fs.clone()
    }

    fn root(&self) -> Loc {
        Loc {
            mount: 0,
            ino: self.mounts.lock()[0].fs.root(),
        }
    }

    fn stat_loc(&self, loc: Loc) -> Result<Stat, Errno> {
        self.fs(loc.mount).stat(loc.ino)
    }

    /// The root of a file system mounted on `loc`, if any.
    fn mounted_on(&self, loc: Loc) -> Option<Loc> {
        let mounts = self.mounts.lock();
        mounts
            .iter()
            .enumerate()
            .rev()
            .find(|(_, m)| m.on == Some(loc))
            .map(|(i, m)| Loc {
                mount: i,
                ino: m.fs.root(),
            })
    }

    /// Resolves `path`; the last component's symlink is followed when
    /// `follow_last`.
    fn resolve(&self, path: &str, follow_last: bool) -> Result<Loc, Errno> {
        self.resolve_chain(path, follow_last).map(|(loc, _)| loc)
    }

    /// Like [`Vfs::resolve`], with the directories walked through to get
    /// there (its ancestors, root first).
    fn resolve_chain(&self, path: &str, follow_last: bool) -> Result<(Loc, Vec<Loc>), Errno> {
        let mut queue = split(path)?;
        let mut current = self.root();
        let mut stack: Vec<Loc> = Vec::new();
        let mut links = 0;
        while let Some(part) = queue.pop_front() {
            match part.as_str() {
                "." => continue,
                ".." => {
                    if let Some(parent) = stack.pop() {
                        current = parent;
                    }
                    continue;
                }
                _ => {}
            }
            if self.stat_loc(current)?.kind != Kind::Dir {
                return Err(Errno::Enotdir);
            }
            let fs = self.fs(current.mount);
            let mut child = Loc {
                mount: current.mount,
                ino: fs.lookup(current.ino, &part)?,
            };
            if let Some(root) = self.mounted_on(child) {
                child = root;
            }
            let stat = self.stat_loc(child)?;
            if stat.kind == Kind::Symlink && (follow_last || !queue.is_empty()) {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(Errno::Eloop);
                }
                let target = self.fs(child.mount).readlink(child.ino)?;
                if target.starts_with('/') {
                    current = self.root();
                    stack.clear();
                }
                for p in split(&target)?.into_iter().rev() {
                    queue.push_front(p);
                }
                continue;
            }
            stack.push(current);
            current = child;
        }
        Ok((current, stack))
    }

    /// Resolves all but the last component; returns the directory and the
    /// last name (`EEXIST`-prone names `.`/`..` and the root are refused).
    fn resolve_parent(&self, path: &str) -> Result<(Loc, String), Errno> {
        self.resolve_parent_chain(path)
            .map(|(dir, name, _)| (dir, name))
    }

    /// Like [`Vfs::resolve_parent`], with the directory's ancestors.
    fn resolve_parent_chain(&self, path: &str) -> Result<(Loc, String, Vec<Loc>), Errno> {
        let parts = split(path)?;
        let Some(name) = parts.back().cloned() else {
            return Err(Errno::Eexist); // the root itself
        };
        if name == "." || name == ".." {
            return Err(Errno::Einval);
        }
        let parent: String = if parts.len() == 1 {
            "/".into()
        } else {
            let mut p = String::from("/");
            for c in parts.iter().take(parts.len() - 1) {
                p.push_str(c);
                p.push('/');
            }
            p
        };
        let (dir, ancestors) = self.resolve_chain(&parent, true)?;
        if self.stat_loc(dir)?.kind != Kind::Dir {
            return Err(Errno::Enotdir);
        }
        Ok((dir, name, ancestors))
    }

    fn writable(&self, mount: usize) -> Result<Arc<dyn FileSystem>, Errno> {
        let fs = self.fs(mount);
        if fs.read_only() {
            Err(Errno::Erofs)
        } else {
            Ok(fs)
        }
    }

    /// Mounts `fs` on the directory `path`.
    pub fn mount(&self, path: &str, fs: Arc<dyn FileSystem>) -> Result<(), Errno> {
        let on = self.resolve(path, true)?;
        if self.stat_loc(on)?.kind != Kind::Dir {
            return Err(Errno::Enotdir);
        }
        self.mounts.lock().push(Mount { fs, on: Some(on) });
        Ok(())
    }

    /// Opens `path`; returns the lowest free descriptor.
    pub fn open(&self, path: &str, flags: u32, mode: u32) -> Result<Fd, Errno> {
        let access = flags & O_ACCMODE;
        if access == O_ACCMODE {
            return Err(Errno::Einval);
        }
        let wants_write = access != O_RDONLY || flags & O_TRUNC != 0;
        let loc = if flags & O_CREAT != 0 {
            let (dir, name) = self.resolve_parent(path)?;
            let fs = self.fs(dir.mount);
            match fs.lookup(dir.ino, &name) {
                Ok(_) if flags & O_EXCL != 0 => return Err(Errno::Eexist),
                Ok(_) => self.resolve(path, flags & O_NOFOLLOW == 0)?,
                Err(Errno::Enoent) => {
                    let fs = self.writable(dir.mount)?;
                    Loc {
                        mount: dir.mount,
                        ino: fs.create(dir.ino, &name, NewNode::File, mode)?,
                    }
                }
                Err(e) => return Err(e),
            }
        } else {
            self.resolve(path, flags & O_NOFOLLOW == 0)?
        };
        let stat = self.stat_loc(loc)?;
        match stat.kind {
            Kind::Symlink => return Err(Errno::Eloop), // O_NOFOLLOW on a link
            Kind::Dir if wants_write => return Err(Errno::Eisdir),
            k if flags & O_DIRECTORY != 0 && k != Kind::Dir => return Err(Errno::Enotdir),
            _ => {}
        }
        if wants_write {
            let fs = self.writable(loc.mount)?;
            if flags & O_TRUNC != 0 && stat.kind == Kind::File {
                fs.truncate(loc.ino, 0)?;
            }
        }
        let file = Arc::new(OpenFile {
            loc,
            flags,
            offset: spin::Mutex::new(0),
            is_dir: stat.kind == Kind::Dir,
        });
        self.install(file)
    }

    /// Puts `file` on the lowest free descriptor.
    fn install(&self, file: Arc<OpenFile>) -> Result<Fd, Errno> {
        let mut files = self.files.lock();
        match files.iter().position(Option::is_none) {
            Some(fd) => {
                files[fd] = Some(file);
                Ok(fd)
            }
            None if files.len() < MAX_FDS => {
                files.push(Some(file));
                Ok(files.len() - 1)
            }
            None => Err(Errno::Emfile),
        }
    }

    fn file(&self, fd: Fd) -> Result<Arc<OpenFile>, Errno> {
        self.files
            .lock()
            .get(fd)
            .cloned()
            .flatten()
            .ok_or(Errno::Ebadf)
    }

    /// Closes `fd`.
    pub fn close(&self, fd: Fd) -> Result<(), Errno> {
        self.files
            .lock()
            .get_mut(fd)
            .and_then(Option::take)
            .map(|_| ())
            .ok_or(Errno::Ebadf)
    }

    /// Duplicates `fd` onto the lowest free descriptor (sharing the offset).
    pub fn dup(&self, fd: Fd) -> Result<Fd, Errno> {
        self.install(self.file(fd)?)
    }

    fn readable(file: &OpenFile) -> Result<(), Errno> {
        if file.flags & O_ACCMODE == O_WRONLY {
            Err(Errno::Ebadf)
        } else {
            Ok(())
        }
    }

    fn writable_file(file: &OpenFile) -> Result<(), Errno> {
        if file.flags & O_ACCMODE == O_RDONLY {
            Err(Errno::Ebadf)
        } else {
            Ok(())
        }
    }

    fn read_at(&self, file: &OpenFile, offset: u64, buf: &mut [u8]) -> Result<usize, Errno> {
        Self::readable(file)?;
        if file.is_dir {
            return Err(Errno::Eisdir);
        }
        self.fs(file.loc.mount).read(file.loc.ino, offset, buf)
    }

    fn write_at(&self, file: &OpenFile, offset: u64, buf: &[u8]) -> Result<usize, Errno> {
        Self::writable_file(file)?;
        self.writable(file.loc.mount)?
            .write(file.loc.ino, offset, buf)
    }

    /// Reads at the descriptor's offset and advances it.
    pub fn read(&self, fd: Fd, buf: &mut [u8]) -> Result<usize, Errno> {
        let file = self.file(fd)?;
        let mut offset = file.offset.lock();
        let n = self.read_at(&file, *offset, buf)?;
        *offset += n as u64;
        Ok(n)
    }

    /// Writes at the descriptor's offset (the end with `O_APPEND`) and advances it.
    pub fn write(&self, fd: Fd, buf: &[u8]) -> Result<usize, Errno> {
        let file = self.file(fd)?;
        let mut offset = file.offset.lock();
        if file.flags & O_APPEND != 0 {
            *offset = self.stat_loc(file.loc)?.size;
        }
        let n = self.write_at(&file, *offset, buf)?;
        *offset += n as u64;
        Ok(n)
    }

    /// Reads at `offset` without moving the descriptor's offset.
    pub fn pread(&self, fd: Fd, buf: &mut [u8], offset: u64) -> Result<usize, Errno> {
        let file = self.file(fd)?;
        self.read_at(&file, offset, buf)
    }

    /// Writes at `offset` without moving the descriptor's offset.
    pub fn pwrite(&self, fd: Fd, buf: &[u8], offset: u64) -> Result<usize, Errno> {
        let file = self.file(fd)?;
        self.write_at(&file, offset, buf)
    }

    /// Moves the descriptor's offset; returns the new one.
    pub fn lseek(&self, fd: Fd, offset: i64, whence: Whence) -> Result<u64, Errno> {
        let file = self.file(fd)?;
        let mut current = file.offset.lock();
        let base = match whence {
            Whence::Set => 0,
            Whence::Cur => *current as i64,
            Whence::End => self.stat_loc(file.loc)?.size as i64,
        };
        let new = base
            .checked_add(offset)
            .filter(|n| *n >= 0)
            .ok_or(Errno::Einval)?;
        *current = new as u64;
        Ok(*current)
    }

    /// Attributes of an open file.
    pub fn fstat(&self, fd: Fd) -> Result<Stat, Errno> {
        self.stat_loc(self.file(fd)?.loc)
    }

    /// Sets an open file's size.
    pub fn ftruncate(&self, fd: Fd, size: u64) -> Result<(), Errno> {
        let file = self.file(fd)?;
        Self::writable_file(&file).map_err(|_| Errno::Einval)?;
        self.writable(file.loc.mount)?.truncate(file.loc.ino, size)
    }

    /// Attributes of `path` (following symlinks).
    pub fn stat(&self, path: &str) -> Result<Stat, Errno> {
        self.stat_loc(self.resolve(path, true)?)
    }

    /// Attributes of `path` itself (a symlink is not followed).
    pub fn lstat(&self, path: &str) -> Result<Stat, Errno> {
        self.stat_loc(self.resolve(path, false)?)
    }

    /// Sets the size of the file at `path`.
    pub fn truncate(&self, path: &str, size: u64) -> Result<(), Errno> {
        let loc = self.resolve(path, true)?;
        if self.stat_loc(loc)?.kind == Kind::Dir {
            return Err(Errno::Eisdir);
        }
        self.writable(loc.mount)?.truncate(loc.ino, size)
    }

    /// Creates the directory `path`.
    pub fn mkdir(&self, path: &str, mode: u32) -> Result<(), Errno> {
        self.create_new(path, NewNode::Dir, mode)
    }

    /// Creates `node` at `path`, which must not exist (`EEXIST`, also for
    /// `.`, `..` and the root, as Linux answers mkdir and symlink there).
    fn create_new(&self, path: &str, node: NewNode, mode: u32) -> Result<(), Errno> {
        let (dir, name) = self
            .resolve_parent(path)
            .map_err(|e| if e == Errno::Einval { Errno::Eexist } else { e })?;
        let fs = self.fs(dir.mount);
        if fs.lookup(dir.ino, &name).is_ok() {
            return Err(Errno::Eexist);
        }
        self.writable(dir.mount)?
            .create(dir.ino, &name, node, mode)
            .map(|_| ())
    }

    /// Removes the empty directory `path`.
    pub fn rmdir(&self, path: &str) -> Result<(), Errno> {
        let (dir, name) = self
            .resolve_parent(path)
            .map_err(|e| if e == Errno::Eexist { Errno::Ebusy } else { e })?;
        let fs = self.fs(dir.mount);
        let target = Loc {
            mount: dir.mount,
            ino: fs.lookup(dir.ino, &name)?,
        };
        if self.stat_loc(target)?.kind != Kind::Dir {
            return Err(Errno::Enotdir);
        }
        if self.mounted_on(target).is_some() {
            return Err(Errno::Ebusy);
        }
        self.writable(dir.mount)?.rmdir(dir.ino, &name)
    }

    /// Removes the non-directory `path` (a symlink itself, not its target).
    pub fn unlink(&self, path: &str) -> Result<(), Errno> {
        let (dir, name) = self
            .resolve_parent(path)
            .map_err(|e| if e == Errno::Eexist { Errno::Eisdir } else { e })?;
        let fs = self.fs(dir.mount);
        let target = Loc {
            mount: dir.mount,
            ino: fs.lookup(dir.ino, &name)?,
        };
        if self.stat_loc(target)?.kind == Kind::Dir {
            return Err(Errno::Eisdir);
        }
        self.writable(dir.mount)?.unlink(dir.ino, &name)
    }

    /// Moves `from` to `to` within one mount.
    pub fn rename(&self, from: &str, to: &str) -> Result<(), Errno> {
        let (from_dir, from_name, from_up) = self
            .resolve_parent_chain(from)
            .map_err(|e| if e == Errno::Eexist { Errno::Ebusy } else { e })?;
        let (to_dir, to_name, to_up) = self
            .resolve_parent_chain(to)
            .map_err(|e| if e == Errno::Eexist { Errno::Ebusy } else { e })?;
        let fs = self.fs(from_dir.mount);
        let moving = Loc {
            mount: from_dir.mount,
            ino: fs.lookup(from_dir.ino, &from_name)?,
        };
        if from_dir.mount != to_dir.mount {
            return Err(Errno::Exdev);
        }
        // The tree rules, for every file system (Linux checks them before
        // the kinds): a directory cannot move into its own subtree, and
        // the target cannot be an ancestor of the source.
        let target = fs.lookup(to_dir.ino, &to_name).ok().map(|ino| Loc {
            mount: to_dir.mount,
            ino,
        });
        if target == Some(moving) {
            return Ok(());
        }
        let is_dir = |loc: Loc| self.stat_loc(loc).is_ok_and(|s| s.kind == Kind::Dir);
        if is_dir(moving) && (to_dir == moving || to_up.contains(&moving)) {
            return Err(Errno::Einval);
        }
        if let Some(t) = target
            && is_dir(t)
            && (from_dir == t || from_up.contains(&t))
        {
            return Err(Errno::Enotempty);
        }
        self.writable(from_dir.mount)?
            .rename(from_dir.ino, &from_name, to_dir.ino, &to_name)
    }

    /// Creates the symbolic link `path` pointing at `target`.
    pub fn symlink(&self, target: &str, path: &str) -> Result<(), Errno> {
        self.create_new(path, NewNode::Symlink(target.into()), 0o777)
    }

    /// The target of the symbolic link `path`.
    pub fn readlink(&self, path: &str) -> Result<String, Errno> {
        let loc = self.resolve(path, false)?;
        if self.stat_loc(loc)?.kind != Kind::Symlink {
            return Err(Errno::Einval);
        }
        self.fs(loc.mount).readlink(loc.ino)
    }

    /// The entries of the directory `path`, sorted by name.
    pub fn readdir(&self, path: &str) -> Result<Vec<DirEntry>, Errno> {
        let loc = self.resolve(path, true)?;
        if self.stat_loc(loc)?.kind != Kind::Dir {
            return Err(Errno::Enotdir);
        }
        let mut entries = self.fs(loc.mount).readdir(loc.ino)?;
        // A mount point shows the mounted root's kind.
        for e in entries.iter_mut() {
            if let Some(root) = self.mounted_on(Loc {
                mount: loc.mount,
                ino: e.ino,
            }) {
                e.kind = self.stat_loc(root)?.kind;
            }
        }
        Ok(entries)
    }

    /// Reads the whole file at `path` (a convenience over open/read).
    pub fn read_file(&self, path: &str) -> Result<Vec<u8>, Errno> {
        let fd = self.open(path, O_RDONLY, 0)?;
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        let result = loop {
            match self.read(fd, &mut buf) {
                Ok(0) => break Ok(out),
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) => break Err(e),
            }
        };
        let _ = self.close(fd);
        result
    }

    /// Creates or replaces the file at `path` with `data`.
    pub fn write_file(&self, path: &str, data: &[u8]) -> Result<(), Errno> {
        let fd = self.open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)?;
        let mut done = 0;
        let result = loop {
            if done == data.len() {
                break Ok(());
            }
            match self.write(fd, &data[done..]) {
                Ok(0) => break Err(Errno::Enospc),
                Ok(n) => done += n,
                Err(e) => break Err(e),
            }
        };
        let _ = self.close(fd);
        result
    }
}
