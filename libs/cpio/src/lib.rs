//! # kiln-cpio — cpio "newc" archives (the initramfs format)
//!
//! [`parse`] reads an archive into [`Entry`]s and rejects anything
//! malformed with a [`CpioError`] that says what and where (bad magic,
//! truncation, bad hex, a name without its NUL, a path that climbs with
//! `..`); it never panics, whatever the bytes. [`Writer`] builds archives
//! (the host packs `--rootfs DIR` with it). Both are `no_std` + `alloc`, so
//! the guest's initrd file system and the host tool share them.
//!
//! Limits: regular files, directories and symbolic links only (device
//! nodes and hard links are refused); sizes up to 4 GiB (the format's).
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::string::String;
use alloc::vec::Vec;

/// The newc magic.
pub const MAGIC: &[u8; 6] = b"070701";
/// The name of the last entry.
pub const TRAILER: &str = "TRAILER!!!";
const HEADER_LEN: usize = 110;

/// What an entry is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file and its bytes.
    File(Vec<u8>),
    /// A directory.
    Dir,
    /// A symbolic link and its target.
    Symlink(String),
}

/// One archive member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Path relative to the archive root (no leading `/`, no `.`/`..`).
    pub path: String,
    /// Permission bits.
    pub mode: u32,
    /// What it is.
    pub kind: EntryKind,
}

/// Why an archive could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CpioError {
    /// An entry does not start with the newc magic "070701".
    BadMagic {
        /// Byte offset of the entry.
        offset: usize,
    },
    /// The archive ends inside an entry.
    Truncated {
        /// Byte offset of the entry.
        offset: usize,
    },
    /// A header field is not hexadecimal.
    BadField {
        /// Byte offset of the entry.
        offset: usize,
        /// The field's name.
        field: &'static str,
    },
    /// A name is empty, lacks its NUL, is not UTF-8, or climbs out with `..`.
    BadName {
        /// Byte offset of the entry.
        offset: usize,
    },
    /// A member that is not a file, directory or symlink.
    Unsupported {
        /// Its path.
        path: String,
        /// Its mode.
        mode: u32,
    },
    /// No `TRAILER!!!` entry.
    NoTrailer,
}

impl core::fmt::Display for CpioError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::BadMagic { offset } => write!(
                f,
                "not a cpio newc archive: no 070701 magic at byte {offset}"
            ),
            Self::Truncated { offset } => write!(
                f,
                "the cpio archive is truncated in the entry at byte {offset}"
            ),
            Self::BadField { offset, field } => {
                write!(f, "bad {field} field in the cpio entry at byte {offset}")
            }
            Self::BadName { offset } => {
                write!(f, "bad file name in the cpio entry at byte {offset}")
            }
            Self::Unsupported { path, mode } => {
                write!(
                    f,
                    "{path}: cpio member of mode {mode:o} is not a file, directory or symlink"
                )
            }
            Self::NoTrailer => f.write_str("the cpio archive has no TRAILER!!! entry (truncated?)"),
        }
    }
}

const S_IFMT: u32 = 0o170000;
const S_IFREG: u32 = 0o100000;
const S_IFDIR: u32 = 0o040000;
const S_IFLNK: u32 = 0o120000;

fn field(bytes: &[u8], offset: usize, index: usize, name: &'static str) -> Result<u32, CpioError> {
    let start = offset + 6 + index * 8;
    let raw = bytes
        .get(start..start + 8)
        .ok_or(CpioError::Truncated { offset })?;
    let text = core::str::from_utf8(raw).map_err(|_| CpioError::BadField {
        offset,
        field: name,
    })?;
    u32::from_str_radix(text, 16).map_err(|_| CpioError::BadField {
        offset,
        field: name,
    })
}

fn pad4(n: usize) -> usize {
    n.next_multiple_of(4)
}

/// Normalises an archive path: strips `./` and leading `/`, refuses `..`.
fn clean_path(raw: &str) -> Option<String> {
    let mut parts = Vec::new();
    for part in raw.split('/') {
        match part {
            "" | "." => {}
            ".." => return None,
            p => parts.push(p),
        }
    }
    Some(parts.join("/"))
}

/// Reads every entry of `bytes` (an archive ending with the trailer).
pub fn parse(bytes: &[u8]) -> Result<Vec<Entry>, CpioError> {
    let mut entries = Vec::new();
    let mut offset = 0;
    loop {
        let header = bytes
            .get(offset..offset + HEADER_LEN)
            .ok_or(if offset >= bytes.len() {
                CpioError::NoTrailer
            } else {
                CpioError::Truncated { offset }
            })?;
        if &header[..6] != MAGIC {
            return Err(CpioError::BadMagic { offset });
        }
        let mode = field(bytes, offset, 1, "mode")?;
        let size = field(bytes, offset, 6, "filesize")? as usize;
        let name_len = field(bytes, offset, 11, "namesize")? as usize;
        let name_start = offset + HEADER_LEN;
        let name_raw = bytes
            .get(
                name_start
                    ..name_start
                        .checked_add(name_len)
                        .ok_or(CpioError::Truncated { offset })?,
            )
            .ok_or(CpioError::Truncated { offset })?;
        let (&nul, name) = name_raw.split_last().ok_or(CpioError::BadName { offset })?;
        if nul != 0 || name.is_empty() {
            return Err(CpioError::BadName { offset });
        }
        let name = core::str::from_utf8(name).map_err(|_| CpioError::BadName { offset })?;
        let data_start = pad4(name_start + name_len);
        let data_end = data_start
            .checked_add(size)
            .ok_or(CpioError::Truncated { offset })?;
        let data = bytes
            .get(data_start..data_end)
            .ok_or(CpioError::Truncated { offset })?;
        if name == TRAILER {
            return Ok(entries);
        }
        let path = clean_path(name).ok_or(CpioError::BadName { offset })?;
        let kind = match mode & S_IFMT {
            S_IFREG => EntryKind::File(data.to_vec()),
            S_IFDIR => EntryKind::Dir,
            S_IFLNK => EntryKind::Symlink(
                String::from_utf8(data.to_vec()).map_err(|_| CpioError::BadName { offset })?,
            ),
            _ => return Err(CpioError::Unsupported { path, mode }),
        };
        if !path.is_empty() {
            entries.push(Entry {
                path,
                mode: mode & 0o7777,
                kind,
            });
        }
        offset = pad4(data_end);
    }
}

/// Builds a newc archive entry by entry.
#[derive(Default)]
pub struct Writer {
    out: Vec<u8>,
    ino: u32,
}

impl Writer {
    /// An empty archive.
    pub fn new() -> Self {
        Self::default()
    }

    fn header(&mut self, path: &str, mode: u32, size: usize) {
        self.ino += 1;
        let fields = [
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            size as u32,
            0,
            0,
            0,
            0,
            path.len() as u32 + 1,
            0,
        ];
        self.out.extend_from_slice(MAGIC);
        for f in fields {
            let hex = [
                (f >> 28) & 15,
                (f >> 24) & 15,
                (f >> 20) & 15,
                (f >> 16) & 15,
                (f >> 12) & 15,
                (f >> 8) & 15,
                (f >> 4) & 15,
                f & 15,
            ];
            self.out
                .extend(hex.iter().map(|d| b"0123456789abcdef"[*d as usize]));
        }
        self.out.extend_from_slice(path.as_bytes());
        self.out.push(0);
        self.out.resize(pad4(self.out.len()), 0);
    }

    fn body(&mut self, data: &[u8]) {
        self.out.extend_from_slice(data);
        self.out.resize(pad4(self.out.len()), 0);
    }

    /// Adds a directory.
    pub fn dir(&mut self, path: &str, mode: u32) {
        self.header(path, S_IFDIR | (mode & 0o7777), 0);
    }

    /// Adds a regular file.
    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) {
        self.header(path, S_IFREG | (mode & 0o7777), data.len());
        self.body(data);
    }

    /// Adds a symbolic link.
    pub fn symlink(&mut self, path: &str, target: &str) {
        self.header(path, S_IFLNK | 0o777, target.len());
        self.body(target.as_bytes());
    }

    /// Ends the archive and returns its bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.header(TRAILER, 0, 0);
        self.out
    }
}

/// Why an archive could not be unpacked into a file system.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UnpackError {
    /// The archive is malformed.
    Archive(CpioError),
    /// Creating `path` failed with `errno`.
    Fs {
        /// The member.
        path: String,
        /// The error.
        errno: kiln_vfs::Errno,
    },
}

impl core::fmt::Display for UnpackError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Archive(e) => e.fmt(f),
            Self::Fs { path, errno } => write!(f, "cannot unpack {path}: {errno}"),
        }
    }
}

/// Unpacks archive `bytes` below directory `at` of `vfs` (the initrd);
/// missing parent directories are created. Returns the number of members.
pub fn unpack(vfs: &kiln_vfs::Vfs, at: &str, bytes: &[u8]) -> Result<usize, UnpackError> {
    let entries = parse(bytes).map_err(UnpackError::Archive)?;
    let base = at.trim_end_matches('/');
    for entry in &entries {
        let path = alloc::format!("{base}/{}", entry.path);
        let fs_err = |errno| UnpackError::Fs {
            path: path.clone(),
            errno,
        };
        // Parents first (archives need not list them).
        let mut prefix = String::from(base);
        for part in entry
            .path
            .split('/')
            .collect::<Vec<_>>()
            .split_last()
            .map_or(&[][..], |(_, p)| p)
        {
            prefix.push('/');
            prefix.push_str(part);
            match vfs.mkdir(&prefix, 0o755) {
                Ok(()) | Err(kiln_vfs::Errno::Eexist) => {}
                Err(e) => return Err(fs_err(e)),
            }
        }
        match &entry.kind {
            EntryKind::Dir => match vfs.mkdir(&path, entry.mode) {
                Ok(()) | Err(kiln_vfs::Errno::Eexist) => {}
                Err(e) => return Err(fs_err(e)),
            },
            EntryKind::File(data) => vfs.write_file(&path, data).map_err(fs_err)?,
            EntryKind::Symlink(target) => vfs.symlink(target, &path).map_err(fs_err)?,
        }
    }
    Ok(entries.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn sample() -> Vec<u8> {
        let mut w = Writer::new();
        w.dir("etc", 0o755);
        w.file("etc/hostname", 0o644, b"kiln\n");
        w.file("./data/../odd", 0o600, b"");
        w.symlink("etc/name", "hostname");
        w.file("big", 0o644, &[7u8; 1001]);
        w.finish()
    }

    #[test]
    fn round_trips_files_dirs_and_links() {
        let mut w = Writer::new();
        w.dir("etc", 0o755);
        w.file("etc/hostname", 0o644, b"kiln\n");
        w.symlink("etc/name", "hostname");
        w.file("big", 0o644, &[7u8; 1001]);
        let entries = parse(&w.finish()).unwrap();
        assert_eq!(entries.len(), 4);
        assert_eq!(
            entries[0],
            Entry {
                path: "etc".into(),
                mode: 0o755,
                kind: EntryKind::Dir
            }
        );
        assert_eq!(entries[1].kind, EntryKind::File(b"kiln\n".to_vec()));
        assert_eq!(entries[2].kind, EntryKind::Symlink("hostname".into()));
        assert_eq!(entries[3].kind, EntryKind::File(vec![7u8; 1001]));
    }

    #[test]
    fn climbing_paths_are_refused() {
        assert!(matches!(parse(&sample()), Err(CpioError::BadName { .. })));
        let mut w = Writer::new();
        w.file("/abs/./x", 0o644, b"1");
        assert_eq!(parse(&w.finish()).unwrap()[0].path, "abs/x");
    }

    #[test]
    fn malformed_archives_are_errors() {
        assert_eq!(parse(b""), Err(CpioError::NoTrailer));
        assert_eq!(parse(b"070702"), Err(CpioError::Truncated { offset: 0 }));
        let mut bad = Writer::new().finish();
        bad[0] = b'9';
        assert_eq!(parse(&bad), Err(CpioError::BadMagic { offset: 0 }));
        let mut w = Writer::new();
        w.file("f", 0o644, b"hello");
        let good = w.finish();
        // Cut inside the file's data: the first entry is truncated.
        assert_eq!(
            parse(&good[..HEADER_LEN + 4]),
            Err(CpioError::Truncated { offset: 0 })
        );
        let mut hex = good.clone();
        hex[6 + 8] = b'z';
        assert_eq!(
            parse(&hex),
            Err(CpioError::BadField {
                offset: 0,
                field: "mode"
            })
        );
    }

    #[test]
    fn devices_are_unsupported() {
        let mut w = Writer::new();
        w.header("dev/null", 0o020666, 0);
        assert!(matches!(
            parse(&w.finish()),
            Err(CpioError::Unsupported { .. })
        ));
    }

    #[test]
    fn every_truncation_and_random_bytes_never_panic() {
        let mut w = Writer::new();
        w.dir("d", 0o755);
        w.file("d/f", 0o644, b"0123456789");
        w.symlink("l", "d/f");
        let good = w.finish();
        for cut in 0..good.len() {
            assert!(parse(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2000 {
            let mut bytes = good.clone();
            for _ in 0..4 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let i = (seed as usize) % bytes.len();
                bytes[i] = (seed >> 32) as u8;
            }
            let _ = parse(&bytes);
        }
    }
}
