//! Packs a host directory into the cpio initrd the guest mounts as `/`.
//!
//! [`pack`] walks the tree in name order (so the same tree always gives
//! the same bytes) and keeps regular files, directories and symbolic
//! links with their permission bits. Anything else (sockets, FIFOs,
//! devices), a name that is not UTF-8 and a file over the format's 4 GiB
//! are errors naming the path; nothing is silently dropped.

use std::path::{Path, PathBuf};

/// Why a directory could not be packed.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// The rootfs directory does not exist or is not a directory.
    #[error("rootfs {0} is not a directory: give a directory whose contents become the guest's /")]
    NotADirectory(PathBuf),
    /// Reading the tree failed.
    #[error("cannot read {path} for the rootfs: {cause}")]
    Read {
        /// The path.
        path: PathBuf,
        /// Why.
        cause: std::io::Error,
    },
    /// An entry kind cpio cannot carry here.
    #[error(
        "{0} is not a regular file, directory or symbolic link: remove it from the rootfs (devices come from the guest's /dev)"
    )]
    Unsupported(PathBuf),
    /// A name that is not UTF-8.
    #[error("{0} has a name that is not UTF-8: rename it")]
    NotUtf8(PathBuf),
    /// A file too large for the format.
    #[error("{0} is larger than 4 GiB, the cpio limit: leave it out of the rootfs")]
    TooLarge(PathBuf),
}

/// Packs the tree under `dir` (not `dir` itself) into a newc archive.
pub fn pack(dir: &Path) -> Result<Vec<u8>, RootfsError> {
    if !dir.is_dir() {
        return Err(RootfsError::NotADirectory(dir.to_path_buf()));
    }
    let mut writer = kiln_cpio::Writer::new();
    walk(dir, "", &mut writer)?;
    Ok(writer.finish())
}

fn read_err(path: &Path) -> impl FnOnce(std::io::Error) -> RootfsError + '_ {
    move |cause| RootfsError::Read {
        path: path.to_path_buf(),
        cause,
    }
}

fn walk(dir: &Path, prefix: &str, writer: &mut kiln_cpio::Writer) -> Result<(), RootfsError> {
    use std::os::unix::fs::PermissionsExt;
    let mut entries = std::fs::read_dir(dir)
        .map_err(read_err(dir))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_err(dir))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let name = entry
            .file_name()
            .into_string()
            .map_err(|_| RootfsError::NotUtf8(path.clone()))?;
        let inner = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let meta = std::fs::symlink_metadata(&path).map_err(read_err(&path))?;
        let mode = meta.permissions().mode();
        let kind = meta.file_type();
        if kind.is_symlink() {
            let target = std::fs::read_link(&path).map_err(read_err(&path))?;
            let target = target
                .to_str()
                .ok_or_else(|| RootfsError::NotUtf8(path.clone()))?;
            writer.symlink(&inner, target);
        } else if kind.is_dir() {
            writer.dir(&inner, mode);
            walk(&path, &inner, writer)?;
        } else if kind.is_file() {
            if meta.len() > u64::from(u32::MAX) {
                return Err(RootfsError::TooLarge(path));
            }
            let data = std::fs::read(&path).map_err(read_err(&path))?;
            writer.file(&inner, mode, &data);
        } else {
            return Err(RootfsError::Unsupported(path));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_cpio::EntryKind;

    #[test]
    fn packs_files_dirs_and_links_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc/conf.d")).unwrap();
        std::fs::write(dir.path().join("etc/hostname"), "kiln\n").unwrap();
        std::fs::write(dir.path().join("a.txt"), "first").unwrap();
        std::os::unix::fs::symlink("etc/hostname", dir.path().join("link")).unwrap();
        let bytes = pack(dir.path()).unwrap();
        assert_eq!(bytes, pack(dir.path()).unwrap(), "packing is deterministic");
        let entries = kiln_cpio::parse(&bytes).unwrap();
        let names: Vec<_> = entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            names,
            ["a.txt", "etc", "etc/conf.d", "etc/hostname", "link"]
        );
        assert_eq!(entries[0].kind, EntryKind::File(b"first".to_vec()));
        assert_eq!(entries[1].kind, EntryKind::Dir);
        assert_eq!(entries[4].kind, EntryKind::Symlink("etc/hostname".into()));
    }

    #[test]
    fn refuses_a_fifo_and_a_missing_dir() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        let err = pack(dir.path()).unwrap_err();
        assert!(matches!(err, RootfsError::Unsupported(p) if p == fifo));
        let err = pack(&dir.path().join("nope")).unwrap_err();
        assert!(err.to_string().contains("is not a directory"), "{err}");
    }
}
