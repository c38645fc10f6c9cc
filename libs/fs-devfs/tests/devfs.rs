//! /dev through the VFS.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use kiln_fs_devfs::DevFs;
use kiln_vfs::flags::*;
use kiln_vfs::{Errno, FileSystem, Kind, Vfs};

static CONSOLE_BYTES: AtomicUsize = AtomicUsize::new(0);

fn entropy(buf: &mut [u8]) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(37).wrapping_add(11);
    }
}

fn console(bytes: &[u8]) {
    CONSOLE_BYTES.fetch_add(bytes.len(), Ordering::SeqCst);
}

fn vfs() -> Vfs {
    let root = kiln_vfs_root();
    let v = Vfs::new(root);
    v.mount("/dev", Arc::new(DevFs::new(entropy, console)))
        .unwrap();
    v
}

fn kiln_vfs_root() -> Arc<dyn FileSystem> {
    // A root holding only an empty /dev to mount on (no sibling file
    // system needed).
    struct OneDir;
    impl FileSystem for OneDir {
        fn root(&self) -> u64 {
            1
        }
        fn lookup(&self, d: u64, n: &str) -> Result<u64, Errno> {
            if d == 1 && n == "dev" {
                Ok(2)
            } else {
                Err(Errno::Enoent)
            }
        }
        fn stat(&self, i: u64) -> Result<kiln_vfs::Stat, Errno> {
            Ok(kiln_vfs::Stat {
                ino: i,
                kind: Kind::Dir,
                size: 0,
                mode: 0o755,
                nlink: 2,
            })
        }
        fn create(&self, _: u64, _: &str, _: kiln_vfs::NewNode, _: u32) -> Result<u64, Errno> {
            Err(Errno::Erofs)
        }
        fn unlink(&self, _: u64, _: &str) -> Result<(), Errno> {
            Err(Errno::Erofs)
        }
        fn rmdir(&self, _: u64, _: &str) -> Result<(), Errno> {
            Err(Errno::Erofs)
        }
        fn rename(&self, _: u64, _: &str, _: u64, _: &str) -> Result<(), Errno> {
            Err(Errno::Erofs)
        }
        fn read(&self, _: u64, _: u64, _: &mut [u8]) -> Result<usize, Errno> {
            Err(Errno::Eisdir)
        }
        fn write(&self, _: u64, _: u64, _: &[u8]) -> Result<usize, Errno> {
            Err(Errno::Eisdir)
        }
        fn truncate(&self, _: u64, _: u64) -> Result<(), Errno> {
            Err(Errno::Eisdir)
        }
        fn readdir(&self, i: u64) -> Result<Vec<kiln_vfs::DirEntry>, Errno> {
            Ok(if i == 1 {
                vec![kiln_vfs::DirEntry {
                    name: "dev".into(),
                    ino: 2,
                    kind: Kind::Dir,
                }]
            } else {
                vec![]
            })
        }
        fn readlink(&self, _: u64) -> Result<String, Errno> {
            Err(Errno::Einval)
        }
    }
    Arc::new(OneDir)
}

#[test]
fn devices_behave_like_linux() {
    let v = vfs();
    let names: Vec<_> = v
        .readdir("/dev")
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["console", "null", "urandom", "zero"]);
    assert_eq!(v.stat("/dev/null").unwrap().kind, Kind::CharDevice);
    assert_eq!(v.read_file("/dev/null").unwrap(), b"");
    let fd = v.open("/dev/zero", O_RDONLY, 0).unwrap();
    let mut buf = [9u8; 64];
    assert_eq!(v.read(fd, &mut buf).unwrap(), 64);
    assert!(buf.iter().all(|b| *b == 0));
    let fd = v.open("/dev/urandom", O_RDONLY, 0).unwrap();
    v.read(fd, &mut buf).unwrap();
    assert_eq!(buf[1], 48, "bytes come from the entropy source");
    v.write_file("/dev/null", b"gone").unwrap();
    v.write_file("/dev/console", b"hello\n").unwrap();
    assert_eq!(CONSOLE_BYTES.load(Ordering::SeqCst), 6);
    assert_eq!(v.write_file("/dev/new", b"x"), Err(Errno::Eperm));
    assert_eq!(v.unlink("/dev/null"), Err(Errno::Eperm));
    assert_eq!(v.read_file("/dev/missing"), Err(Errno::Enoent));
}
