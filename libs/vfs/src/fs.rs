//! The file-system slot: what a file system implements for the VFS.

use alloc::string::String;
use alloc::vec::Vec;

use crate::Errno;

/// An inode number, unique within one file system.
pub type InodeId = u64;

/// What an inode is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A character device.
    CharDevice,
}

/// An inode's attributes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    /// Inode number.
    pub ino: InodeId,
    /// Kind.
    pub kind: Kind,
    /// Size in bytes (files, symlink targets).
    pub size: u64,
    /// Permission bits (not enforced).
    pub mode: u32,
    /// Links to it.
    pub nlink: u32,
}

/// A directory entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    /// Its name.
    pub name: String,
    /// Its inode.
    pub ino: InodeId,
    /// Its kind.
    pub kind: Kind,
}

/// What to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NewNode {
    /// An empty file.
    File,
    /// An empty directory.
    Dir,
    /// A symbolic link to the target.
    Symlink(String),
}

/// A file system, as the VFS uses it. Names are single path components
/// (no `/`, not `.` or `..`); the VFS checks that before calling.
pub trait FileSystem: Send + Sync {
    /// The root directory's inode.
    fn root(&self) -> InodeId;
    /// Whether writes are refused (`EROFS`).
    fn read_only(&self) -> bool {
        false
    }
    /// The inode named `name` in directory `dir`.
    fn lookup(&self, dir: InodeId, name: &str) -> Result<InodeId, Errno>;
    /// Attributes of `ino`.
    fn stat(&self, ino: InodeId) -> Result<Stat, Errno>;
    /// Creates `name` in `dir`; `EEXIST` when it exists.
    fn create(&self, dir: InodeId, name: &str, node: NewNode, mode: u32) -> Result<InodeId, Errno>;
    /// Removes a non-directory `name` from `dir`.
    fn unlink(&self, dir: InodeId, name: &str) -> Result<(), Errno>;
    /// Removes the empty directory `name` from `dir`.
    fn rmdir(&self, dir: InodeId, name: &str) -> Result<(), Errno>;
    /// Moves `from_dir/from` to `to_dir/to` (replacing a compatible target).
    /// The VFS has already refused moves into the source's own subtree
    /// (`EINVAL`) and onto an ancestor of the source (`ENOTEMPTY`).
    fn rename(&self, from_dir: InodeId, from: &str, to_dir: InodeId, to: &str)
    -> Result<(), Errno>;
    /// Reads from `offset`; returns the bytes read (0 at the end).
    fn read(&self, ino: InodeId, offset: u64, buf: &mut [u8]) -> Result<usize, Errno>;
    /// Writes at `offset` (growing the file); returns the bytes written.
    fn write(&self, ino: InodeId, offset: u64, buf: &[u8]) -> Result<usize, Errno>;
    /// Sets the size (zero-filling growth).
    fn truncate(&self, ino: InodeId, size: u64) -> Result<(), Errno>;
    /// The entries of directory `ino` (without `.` and `..`), sorted by name.
    fn readdir(&self, ino: InodeId) -> Result<Vec<DirEntry>, Errno>;
    /// The target of symlink `ino`.
    fn readlink(&self, ino: InodeId) -> Result<String, Errno>;
}
