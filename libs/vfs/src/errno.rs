//! Linux errno values, the only error type of the file API.

/// A Linux error number (the value a system call negates).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum Errno {
    /// Operation not permitted.
    Eperm = 1,
    /// No such file or directory.
    Enoent = 2,
    /// I/O error.
    Eio = 5,
    /// Bad file descriptor.
    Ebadf = 9,
    /// Permission denied.
    Eacces = 13,
    /// File exists.
    Eexist = 17,
    /// Device or resource busy.
    Ebusy = 16,
    /// Cross-device link.
    Exdev = 18,
    /// Not a directory.
    Enotdir = 20,
    /// Is a directory.
    Eisdir = 21,
    /// Invalid argument.
    Einval = 22,
    /// Too many open files.
    Emfile = 24,
    /// File too large.
    Efbig = 27,
    /// No space left on device.
    Enospc = 28,
    /// Read-only file system.
    Erofs = 30,
    /// File name too long.
    Enametoolong = 36,
    /// Function not implemented.
    Enosys = 38,
    /// Directory not empty.
    Enotempty = 39,
    /// Too many levels of symbolic links.
    Eloop = 40,
}

impl Errno {
    /// The Linux number.
    pub fn code(self) -> i32 {
        self as i32
    }

    /// The errno for a Linux number, if it is one of these.
    pub fn from_code(code: i32) -> Option<Self> {
        use Errno::*;
        [
            Eperm,
            Enoent,
            Eio,
            Ebadf,
            Eacces,
            Ebusy,
            Eexist,
            Exdev,
            Enotdir,
            Eisdir,
            Einval,
            Emfile,
            Efbig,
            Enospc,
            Erofs,
            Enametoolong,
            Enosys,
            Enotempty,
            Eloop,
        ]
        .into_iter()
        .find(|e| e.code() == code)
    }
}

impl core::fmt::Display for Errno {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{self:?} ({})", self.code())
    }
}
