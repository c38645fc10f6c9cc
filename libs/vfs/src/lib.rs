//! # kiln-vfs — the virtual file system
//!
//! [`Vfs`] joins file systems into one tree and gives it the Linux file
//! API, so the Linux-ABI layer can sit directly on it later:
//!
//! - mounts ([`Vfs::mount`]) of any [`FileSystem`] implementation
//!   (`kiln-fs-ramfs`, initrd, devfs, disk and host-volume file systems);
//! - path resolution: absolute and relative paths, `.` and `..` (never
//!   above the root), symbolic links (relative ones from the link's
//!   directory) with a limit of [`MAX_SYMLINKS`] (`ELOOP`), crossing mount
//!   points both ways;
//! - file descriptors ([`Fd`]) with open flags ([`flags`]) and a shared
//!   offset: read, write, lseek, pread, pwrite, fstat, ftruncate, close;
//! - path operations: stat, lstat, mkdir, rmdir, unlink, rename, symlink,
//!   readlink, readdir, truncate;
//! - every error is a Linux [`Errno`].
//!
//! File systems implement [`FileSystem`] on inode numbers; the VFS never
//! holds their locks across calls. Limits: no permissions or owners (one
//! user), no hard links across directories, no file locks, no
//! timestamps yet; `rename` does not cross mounts (`EXDEV`).
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

mod block;
mod errno;

mod fs;
mod vfs;

pub use block::BlockDevice;
pub use errno::Errno;

pub use fs::{DirEntry, FileSystem, InodeId, Kind, NewNode, Stat};
pub use vfs::{Fd, MAX_SYMLINKS, Vfs, Whence, flags};
