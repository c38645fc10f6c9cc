//! # kiln-fs-devfs — the device file system
//!
//! [`DevFs`] serves the four character devices programs expect in `/dev`:
//!
//! | device | read | write |
//! |---|---|---|
//! | `null` | end of file | swallowed |
//! | `zero` | zeros | swallowed |
//! | `urandom` | bytes from the entropy source | swallowed |
//! | `console` | end of file (no input yet) | to the console |
//!
//! The entropy source and the console are functions the runtime passes in
//! (RDRAND on x86, the boot console), so this crate stays portable and
//! testable. The directory is fixed: creating, removing or renaming
//! entries is `EPERM`.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::string::String;
use alloc::vec::Vec;

use kiln_vfs::{DirEntry, Errno, FileSystem, InodeId, Kind, NewNode, Stat};

const ROOT: InodeId = 1;
const DEVICES: [(&str, InodeId); 4] = [("console", 5), ("null", 2), ("urandom", 4), ("zero", 3)];

/// `/dev`.
pub struct DevFs {
    entropy: fn(&mut [u8]),
    console: fn(&[u8]),
}

impl DevFs {
    /// A devfs reading random bytes from `entropy` and writing the console with `console`.
    pub fn new(entropy: fn(&mut [u8]), console: fn(&[u8])) -> Self {
        Self { entropy, console }
    }
}

impl FileSystem for DevFs {
    fn root(&self) -> InodeId {
        ROOT
    }

    fn lookup(&self, dir: InodeId, name: &str) -> Result<InodeId, Errno> {
        if dir != ROOT {
            return Err(Errno::Enotdir);
        }
        DEVICES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, i)| *i)
            .ok_or(Errno::Enoent)
    }

    fn stat(&self, ino: InodeId) -> Result<Stat, Errno> {
        let kind = match ino {
            ROOT => Kind::Dir,
            2..=5 => Kind::CharDevice,
            _ => return Err(Errno::Enoent),
        };
        Ok(Stat {
            ino,
            kind,
            size: 0,
            mode: if ino == ROOT { 0o755 } else { 0o666 },
            nlink: if ino == ROOT { 2 } else { 1 },
        })
    }

    fn create(&self, _: InodeId, _: &str, _: NewNode, _: u32) -> Result<InodeId, Errno> {
        Err(Errno::Eperm)
    }

    fn unlink(&self, _: InodeId, _: &str) -> Result<(), Errno> {
        Err(Errno::Eperm)
    }

    fn rmdir(&self, _: InodeId, _: &str) -> Result<(), Errno> {
        Err(Errno::Eperm)
    }

    fn rename(&self, _: InodeId, _: &str, _: InodeId, _: &str) -> Result<(), Errno> {
        Err(Errno::Eperm)
    }

    fn read(&self, ino: InodeId, _: u64, buf: &mut [u8]) -> Result<usize, Errno> {
        match ino {
            2 | 5 => Ok(0),
            3 => {
                buf.fill(0);
                Ok(buf.len())
            }
            4 => {
                (self.entropy)(buf);
                Ok(buf.len())
            }
            ROOT => Err(Errno::Eisdir),
            _ => Err(Errno::Enoent),
        }
    }

    fn write(&self, ino: InodeId, _: u64, buf: &[u8]) -> Result<usize, Errno> {
        match ino {
            2..=4 => Ok(buf.len()),
            5 => {
                (self.console)(buf);
                Ok(buf.len())
            }
            ROOT => Err(Errno::Eisdir),
            _ => Err(Errno::Enoent),
        }
    }

    fn truncate(&self, ino: InodeId, _: u64) -> Result<(), Errno> {
        match ino {
            2..=5 => Ok(()), // O_TRUNC on a device is ignored
            _ => Err(Errno::Eisdir),
        }
    }

    fn readdir(&self, ino: InodeId) -> Result<Vec<DirEntry>, Errno> {
        if ino != ROOT {
            return Err(Errno::Enotdir);
        }
        Ok(DEVICES
            .iter()
            .map(|(n, i)| DirEntry {
                name: String::from(*n),
                ino: *i,
                kind: Kind::CharDevice,
            })
            .collect())
    }

    fn readlink(&self, _: InodeId) -> Result<String, Errno> {
        Err(Errno::Einval)
    }
}
