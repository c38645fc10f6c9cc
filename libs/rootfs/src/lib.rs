//! # kiln-rootfs — the file tree an image starts with
//!
//! [`mount`] assembles the guest's [`Vfs`]:
//!
//! - `/` is a [`RamFs`] holding the initrd: the first boot module (the
//!   cpio archive `kiln run --rootfs DIR` packs, passed as a PVH module on
//!   kvm and qemu and as a mapped file on linuxu) is unpacked into it;
//!   without one the root starts empty;
//! - `/dev` is a [`DevFs`] (`null`, `zero`, `urandom` from
//!   `kiln_hal::random`, `console`);
//! - `/tmp` exists, empty;
//! - every virtio-9p volume (`kiln run -v HOST:GUEST`) is mounted at its
//!   tag, the GUEST directory (created, with its parents, in the ramfs).
//!
//! Neighbours: `kiln-rt` gives the boot modules, `kiln-vfs` the file API
//! applications (and later the syscall layer) use, `kiln-cpio` the
//! unpacker. Limits: the initrd is copied into the ramfs, so its bytes
//! are held twice (the module's frames stay reserved); a root file system
//! on a block device is a later step.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::sync::Arc;

use kiln_fs_devfs::DevFs;
use kiln_fs_ramfs::RamFs;
use kiln_vfs::Errno;
pub use kiln_vfs::Vfs;

/// Why the file tree could not be assembled.
#[derive(Debug)]
pub enum RootfsError {
    /// The initrd is not a valid cpio archive or could not be unpacked.
    Initrd(kiln_cpio::UnpackError),
    /// Creating a mount point failed.
    MountPoint {
        /// The directory.
        path: &'static str,
        /// Why.
        errno: Errno,
    },
    /// A host volume could not be attached or mounted.
    Volume(alloc::string::String),
}

impl core::fmt::Display for RootfsError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Initrd(e) => write!(
                f,
                "the initrd is unusable ({e}): pass a directory with --rootfs, which kiln packs as cpio newc"
            ),
            Self::MountPoint { path, errno } => write!(f, "cannot create {path}: {errno}"),
            Self::Volume(why) => write!(f, "cannot mount a host volume: {why}"),
        }
    }
}

/// What [`mount`] found.
pub struct Mounted {
    /// The tree.
    pub vfs: Vfs,
    /// Members unpacked from the initrd (0 without one).
    pub initrd_entries: usize,
}

impl core::fmt::Debug for Mounted {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Mounted")
            .field("initrd_entries", &self.initrd_entries)
            .finish_non_exhaustive()
    }
}

fn ensure_dir(vfs: &Vfs, path: &'static str) -> Result<(), RootfsError> {
    match vfs.mkdir(path, 0o755) {
        Ok(()) | Err(Errno::Eexist) => Ok(()),
        Err(errno) => Err(RootfsError::MountPoint { path, errno }),
    }
}

/// Builds the tree from `initrd` (the first boot module, if any).
pub fn mount_from(initrd: Option<&[u8]>) -> Result<Mounted, RootfsError> {
    let vfs = Vfs::new(Arc::new(RamFs::new()));
    let initrd_entries = match initrd {
        Some(bytes) => kiln_cpio::unpack(&vfs, "/", bytes).map_err(RootfsError::Initrd)?,
        None => 0,
    };
    ensure_dir(&vfs, "/tmp")?;
    ensure_dir(&vfs, "/dev")?;
    vfs.mount(
        "/dev",
        Arc::new(DevFs::new(
            kiln_rt::hal::random::fill,
            kiln_rt::hal::console::write,
        )),
    )
    .map_err(|errno| RootfsError::MountPoint {
        path: "/dev",
        errno,
    })?;
    Ok(Mounted {
        vfs,
        initrd_entries,
    })
}

/// Builds the tree from the boot modules the loader passed, and mounts
/// the host volumes.
pub fn mount() -> Result<Mounted, RootfsError> {
    let mounted = mount_from(kiln_rt::boot::modules().first().copied())?;
    let volumes =
        kiln_fs_9p::NineP::probe_all().map_err(|e| RootfsError::Volume(alloc::format!("{e}")))?;
    for volume in volumes {
        let at = alloc::string::String::from(volume.tag());
        let mut prefix = alloc::string::String::new();
        for part in at.split('/').filter(|p| !p.is_empty()) {
            prefix.push('/');
            prefix.push_str(part);
            match mounted.vfs.mkdir(&prefix, 0o755) {
                Ok(()) | Err(Errno::Eexist) => {}
                Err(e) => return Err(RootfsError::Volume(alloc::format!("mkdir {prefix}: {e}"))),
            }
        }
        mounted
            .vfs
            .mount(&at, Arc::new(volume))
            .map_err(|e| RootfsError::Volume(alloc::format!("mount {at}: {e}")))?;
    }
    Ok(mounted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpacks_the_initrd_and_mounts_dev() {
        let mut w = kiln_cpio::Writer::new();
        w.dir("etc", 0o755);
        w.file("etc/motd", 0o644, b"welcome\n");
        let m = mount_from(Some(&w.finish())).unwrap();
        assert_eq!(m.initrd_entries, 2);
        assert_eq!(m.vfs.read_file("/etc/motd").unwrap(), b"welcome\n");
        let mut zero = [1u8; 4];
        let fd = m.vfs.open("/dev/zero", 0, 0).unwrap();
        assert_eq!(m.vfs.read(fd, &mut zero).unwrap(), 4);
        assert_eq!(zero, [0; 4]);
        assert!(m.vfs.readdir("/tmp").unwrap().is_empty());
    }

    #[test]
    fn a_bad_initrd_is_an_error_naming_the_format() {
        let err = mount_from(Some(b"not an archive")).unwrap_err();
        assert!(err.to_string().contains("cpio"), "{err}");
    }

    #[test]
    fn no_initrd_gives_an_empty_root_with_dev_and_tmp() {
        let m = mount_from(None).unwrap();
        let names: alloc::vec::Vec<_> = m
            .vfs
            .readdir("/")
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert!(
            names.contains(&"dev".into()) && names.contains(&"tmp".into()),
            "{names:?}"
        );
    }
}
