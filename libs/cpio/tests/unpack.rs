//! Unpacking an archive into a VFS (the initrd path).

use std::sync::Arc;

use kiln_cpio::{UnpackError, Writer, unpack};
use kiln_fs_ramfs::RamFs;
use kiln_vfs::{Errno, Kind, Vfs};

#[test]
fn unpacks_files_dirs_and_links_creating_parents() {
    let mut w = Writer::new();
    w.file("etc/app/config.toml", 0o644, b"port = 80\n");
    w.dir("var", 0o755);
    w.symlink("etc/current", "app/config.toml");
    let vfs = Vfs::new(Arc::new(RamFs::new()));
    assert_eq!(unpack(&vfs, "/", &w.finish()), Ok(3));
    assert_eq!(
        vfs.read_file("/etc/app/config.toml").unwrap(),
        b"port = 80\n"
    );
    assert_eq!(vfs.read_file("/etc/current").unwrap(), b"port = 80\n");
    assert_eq!(vfs.stat("/var").unwrap().kind, Kind::Dir);
}

#[test]
fn bad_archives_and_conflicts_are_errors() {
    let vfs = Vfs::new(Arc::new(RamFs::new()));
    assert!(matches!(
        unpack(&vfs, "/", b"garbage"),
        Err(UnpackError::Archive(_))
    ));
    let mut w = Writer::new();
    w.file("f", 0o644, b"x");
    w.file("f/g", 0o644, b"y");
    assert_eq!(
        unpack(&vfs, "/", &w.finish()),
        Err(UnpackError::Fs {
            path: "/f/g".into(),
            errno: Errno::Enotdir
        })
    );
}
