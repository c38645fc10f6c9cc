//! VFS behaviour over ramfs, and a differential test against the host's
//! file system (the behaviour to match is Linux's).

use std::sync::Arc;

use kiln_fs_ramfs::RamFs;
use kiln_vfs::flags::*;
use kiln_vfs::{Errno, FileSystem, Kind, NewNode, Vfs, Whence};

fn vfs() -> Vfs {
    Vfs::new(Arc::new(RamFs::new()))
}

#[test]
fn files_read_write_seek() {
    let v = vfs();
    let fd = v.open("/f", O_RDWR | O_CREAT, 0o644).unwrap();
    assert_eq!(v.write(fd, b"hello world").unwrap(), 11);
    assert_eq!(v.lseek(fd, 6, Whence::Set).unwrap(), 6);
    let mut buf = [0u8; 16];
    assert_eq!(v.read(fd, &mut buf).unwrap(), 5);
    assert_eq!(&buf[..5], b"world");
    assert_eq!(v.read(fd, &mut buf).unwrap(), 0, "end of file");
    assert_eq!(v.pwrite(fd, b"J", 0).unwrap(), 1);
    assert_eq!(v.pread(fd, &mut buf[..5], 0).unwrap(), 5);
    assert_eq!(&buf[..5], b"Jello");
    assert_eq!(
        v.lseek(fd, 0, Whence::Cur).unwrap(),
        11,
        "pread/pwrite keep the offset"
    );
    assert_eq!(v.lseek(fd, -1, Whence::End).unwrap(), 10);
    assert_eq!(v.lseek(fd, -20, Whence::Cur), Err(Errno::Einval));
    assert_eq!(v.pwrite(fd, b"!", 20).unwrap(), 1);
    assert_eq!(
        v.fstat(fd).unwrap().size,
        21,
        "a write past the end fills with zeros"
    );
    v.close(fd).unwrap();
    assert_eq!(v.close(fd), Err(Errno::Ebadf));
    assert_eq!(v.read(fd, &mut buf), Err(Errno::Ebadf));
}

#[test]
fn open_flags() {
    let v = vfs();
    assert_eq!(v.open("/missing", O_RDONLY, 0), Err(Errno::Enoent));
    v.write_file("/f", b"data").unwrap();
    assert_eq!(
        v.open("/f", O_CREAT | O_EXCL | O_WRONLY, 0),
        Err(Errno::Eexist)
    );
    let fd = v.open("/f", O_WRONLY | O_APPEND, 0).unwrap();
    v.write(fd, b"+more").unwrap();
    assert_eq!(v.read(fd, &mut [0u8; 4]), Err(Errno::Ebadf), "write-only");
    v.close(fd).unwrap();
    assert_eq!(v.read_file("/f").unwrap(), b"data+more");
    let fd = v.open("/f", O_RDONLY, 0).unwrap();
    assert_eq!(v.write(fd, b"x"), Err(Errno::Ebadf), "read-only");
    let fd2 = v.open("/f", O_WRONLY | O_TRUNC, 0).unwrap();
    assert_eq!(v.fstat(fd2).unwrap().size, 0);
    assert_eq!(fd2, fd + 1, "lowest free descriptor");
    v.close(fd).unwrap();
    assert_eq!(
        v.open("/f", O_RDONLY, 0).unwrap(),
        fd,
        "freed descriptors are reused"
    );
    v.mkdir("/d", 0o755).unwrap();
    assert_eq!(v.open("/d", O_WRONLY, 0), Err(Errno::Eisdir));
    assert!(v.open("/d", O_RDONLY | O_DIRECTORY, 0).is_ok());
    assert_eq!(v.open("/f", O_RDONLY | O_DIRECTORY, 0), Err(Errno::Enotdir));
    assert_eq!(v.open("/f/x", O_RDONLY, 0), Err(Errno::Enotdir));
    assert_eq!(v.open("/f", 3, 0), Err(Errno::Einval));
}

#[test]
fn dup_shares_the_offset() {
    let v = vfs();
    v.write_file("/f", b"abcdef").unwrap();
    let a = v.open("/f", O_RDONLY, 0).unwrap();
    let b = v.dup(a).unwrap();
    let mut buf = [0u8; 2];
    v.read(a, &mut buf).unwrap();
    v.read(b, &mut buf).unwrap();
    assert_eq!(&buf, b"cd");
}

#[test]
fn directories() {
    let v = vfs();
    v.mkdir("/a", 0o755).unwrap();
    v.mkdir("/a/b", 0o755).unwrap();
    v.write_file("/a/f", b"x").unwrap();
    assert_eq!(v.mkdir("/a", 0o755), Err(Errno::Eexist));
    assert_eq!(v.mkdir("/x/y", 0o755), Err(Errno::Enoent));
    assert_eq!(v.mkdir("/a/f/y", 0o755), Err(Errno::Enotdir));
    let names: Vec<_> = v
        .readdir("/a")
        .unwrap()
        .into_iter()
        .map(|e| (e.name, e.kind))
        .collect();
    assert_eq!(
        names,
        vec![("b".to_string(), Kind::Dir), ("f".to_string(), Kind::File)]
    );
    assert_eq!(v.rmdir("/a"), Err(Errno::Enotempty));
    assert_eq!(v.rmdir("/a/f"), Err(Errno::Enotdir));
    assert_eq!(v.unlink("/a/b"), Err(Errno::Eisdir));
    assert_eq!(v.readdir("/a/f"), Err(Errno::Enotdir));
    v.unlink("/a/f").unwrap();
    v.rmdir("/a/b").unwrap();
    v.rmdir("/a").unwrap();
    assert!(v.readdir("/").unwrap().is_empty());
    assert_eq!(v.rmdir("/"), Err(Errno::Ebusy));
}

#[test]
fn rename_follows_linux_rules() {
    let v = vfs();
    v.mkdir("/d", 0o755).unwrap();
    v.mkdir("/d/sub", 0o755).unwrap();
    v.mkdir("/e", 0o755).unwrap();
    v.write_file("/f", b"1").unwrap();
    v.write_file("/g", b"2").unwrap();
    v.rename("/f", "/g").unwrap();
    assert_eq!(v.read_file("/g").unwrap(), b"1", "a file replaces a file");
    assert_eq!(v.rename("/g", "/d"), Err(Errno::Eisdir));
    assert_eq!(v.rename("/d", "/g"), Err(Errno::Enotdir));
    assert_eq!(
        v.rename("/d", "/d/sub/x"),
        Err(Errno::Einval),
        "into its own subtree"
    );
    v.rename("/e", "/d/sub").unwrap();
    assert_eq!(v.stat("/e"), Err(Errno::Enoent));
    assert_eq!(
        v.stat("/d/sub").unwrap().kind,
        Kind::Dir,
        "an empty directory is replaced"
    );
    v.write_file("/d/sub/inner", b"x").unwrap();
    v.mkdir("/e", 0o755).unwrap();
    assert_eq!(v.rename("/e", "/d/sub"), Err(Errno::Enotempty));
    v.rename("/g", "/g").unwrap();
    assert_eq!(v.rename("/nothing", "/x"), Err(Errno::Enoent));
}

#[test]
fn paths_dots_and_limits() {
    let v = vfs();
    v.mkdir("/a", 0o755).unwrap();
    v.write_file("/a/f", b"x").unwrap();
    assert_eq!(v.read_file("/a/./f").unwrap(), b"x");
    assert_eq!(v.read_file("/a/../a/f").unwrap(), b"x");
    assert_eq!(
        v.read_file("/../../a/f").unwrap(),
        b"x",
        ".. never climbs above the root"
    );
    assert_eq!(v.read_file("a//f").unwrap(), b"x");
    assert_eq!(v.stat("/a/").unwrap().kind, Kind::Dir);
    assert_eq!(v.stat(""), Err(Errno::Enoent));
    let long = "x".repeat(256);
    assert_eq!(v.stat(&long), Err(Errno::Enametoolong));
}

#[test]
fn symlinks() {
    let v = vfs();
    v.mkdir("/d", 0o755).unwrap();
    v.write_file("/d/target", b"T").unwrap();
    v.symlink("target", "/d/rel").unwrap();
    v.symlink("/d/target", "/abs").unwrap();
    v.symlink("/d", "/dirlink").unwrap();
    v.symlink("/loop2", "/loop1").unwrap();
    v.symlink("/loop1", "/loop2").unwrap();
    assert_eq!(v.read_file("/d/rel").unwrap(), b"T");
    assert_eq!(v.read_file("/abs").unwrap(), b"T");
    assert_eq!(v.read_file("/dirlink/target").unwrap(), b"T");
    assert_eq!(v.stat("/loop1"), Err(Errno::Eloop));
    assert_eq!(v.lstat("/abs").unwrap().kind, Kind::Symlink);
    assert_eq!(v.stat("/abs").unwrap().kind, Kind::File);
    assert_eq!(v.readlink("/d/rel").unwrap(), "target");
    assert_eq!(v.readlink("/d/target"), Err(Errno::Einval));
    assert_eq!(v.open("/abs", O_RDONLY | O_NOFOLLOW, 0), Err(Errno::Eloop));
    v.unlink("/abs").unwrap();
    assert_eq!(
        v.read_file("/d/target").unwrap(),
        b"T",
        "unlink removes the link, not the target"
    );
    v.symlink("../d/target", "/d/up").unwrap();
    assert_eq!(v.read_file("/d/up").unwrap(), b"T");
    assert_eq!(v.symlink("x", "/d/rel"), Err(Errno::Eexist));
}

/// A file system that refuses writes.
struct ReadOnly(RamFs);

impl FileSystem for ReadOnly {
    fn root(&self) -> u64 {
        self.0.root()
    }
    fn read_only(&self) -> bool {
        true
    }
    fn lookup(&self, d: u64, n: &str) -> Result<u64, Errno> {
        self.0.lookup(d, n)
    }
    fn stat(&self, i: u64) -> Result<kiln_vfs::Stat, Errno> {
        self.0.stat(i)
    }
    fn create(&self, d: u64, n: &str, k: NewNode, m: u32) -> Result<u64, Errno> {
        self.0.create(d, n, k, m)
    }
    fn unlink(&self, d: u64, n: &str) -> Result<(), Errno> {
        self.0.unlink(d, n)
    }
    fn rmdir(&self, d: u64, n: &str) -> Result<(), Errno> {
        self.0.rmdir(d, n)
    }
    fn rename(&self, a: u64, b: &str, c: u64, d: &str) -> Result<(), Errno> {
        self.0.rename(a, b, c, d)
    }
    fn read(&self, i: u64, o: u64, b: &mut [u8]) -> Result<usize, Errno> {
        self.0.read(i, o, b)
    }
    fn write(&self, i: u64, o: u64, b: &[u8]) -> Result<usize, Errno> {
        self.0.write(i, o, b)
    }
    fn truncate(&self, i: u64, s: u64) -> Result<(), Errno> {
        self.0.truncate(i, s)
    }
    fn readdir(&self, i: u64) -> Result<Vec<kiln_vfs::DirEntry>, Errno> {
        self.0.readdir(i)
    }
    fn readlink(&self, i: u64) -> Result<String, Errno> {
        self.0.readlink(i)
    }
}

#[test]
fn mounts() {
    let v = vfs();
    v.mkdir("/mnt", 0o755).unwrap();
    v.mkdir("/ro", 0o755).unwrap();
    v.write_file("/top", b"root fs").unwrap();
    let data = RamFs::new();
    data.create(data.root(), "inside", NewNode::File, 0o644)
        .unwrap();
    v.mount("/mnt", Arc::new(data)).unwrap();
    assert!(
        v.readdir("/mnt")
            .unwrap()
            .iter()
            .any(|e| e.name == "inside")
    );
    v.write_file("/mnt/new", b"on the mount").unwrap();
    assert_eq!(
        v.read_file("/mnt/../top").unwrap(),
        b"root fs",
        ".. leaves the mount"
    );
    assert_eq!(v.rename("/mnt/new", "/moved"), Err(Errno::Exdev));
    assert_eq!(v.rmdir("/mnt"), Err(Errno::Ebusy));
    let ro = RamFs::new();
    ro.create(ro.root(), "file", NewNode::File, 0o644).unwrap();
    v.mount("/ro", Arc::new(ReadOnly(ro))).unwrap();
    assert_eq!(v.write_file("/ro/file", b"x"), Err(Errno::Erofs));
    assert_eq!(v.mkdir("/ro/d", 0o755), Err(Errno::Erofs));
    assert_eq!(v.unlink("/ro/file"), Err(Errno::Erofs));
    assert!(v.open("/ro/file", O_RDONLY, 0).is_ok());
    assert_eq!(v.mount("/top", Arc::new(RamFs::new())), Err(Errno::Enotdir));
}

#[test]
fn ramfs_capacity_is_enforced() {
    let v = Vfs::new(Arc::new(RamFs::with_capacity(10)));
    let fd = v.open("/f", O_WRONLY | O_CREAT, 0).unwrap();
    assert_eq!(v.write(fd, b"0123456789").unwrap(), 10);
    assert_eq!(v.write(fd, b"x"), Err(Errno::Enospc));
    v.ftruncate(fd, 2).unwrap();
    v.lseek(fd, 2, Whence::Set).unwrap();
    assert_eq!(
        v.write(fd, b"abc").unwrap(),
        3,
        "truncation gave the space back"
    );
}

/// What an operation returned on the VFS, and on the host.
type Outcome = Result<Vec<u8>, Errno>;
type HostOutcome = Result<Vec<u8>, Option<Errno>>;

/// Random operations on the VFS and on a host directory, compared result by
/// result (success or errno) and tree by tree.
#[test]
fn differential_against_the_host_file_system() {
    let names = ["a", "b", "c"];
    for seed in 1..=60u64 {
        let host = tempfile::tempdir().unwrap();
        let v = vfs();
        let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut next = |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        for step in 0..300 {
            let depth = 1 + next(3) as usize;
            let rel: Vec<&str> = (0..depth).map(|_| names[next(3) as usize]).collect();
            let path = format!("/{}", rel.join("/"));
            let rel2: Vec<&str> = (0..1 + next(3) as usize)
                .map(|_| names[next(3) as usize])
                .collect();
            let path2 = format!("/{}", rel2.join("/"));
            let hp = |p: &str| host.path().join(&p[1..]);
            let errno = |e: std::io::Error| Errno::from_code(e.raw_os_error().unwrap_or(0));
            let op = next(7);
            let (ours, theirs): (Outcome, HostOutcome) = match op {
                0 => (
                    v.mkdir(&path, 0o755).map(|_| vec![]),
                    std::fs::create_dir(hp(&path))
                        .map(|_| vec![])
                        .map_err(errno),
                ),
                1 => {
                    let data = format!("{step}").into_bytes();
                    (
                        v.write_file(&path, &data).map(|_| vec![]),
                        std::fs::write(hp(&path), &data)
                            .map(|_| vec![])
                            .map_err(errno),
                    )
                }
                2 => (v.read_file(&path), std::fs::read(hp(&path)).map_err(errno)),
                3 => (
                    v.unlink(&path).map(|_| vec![]),
                    std::fs::remove_file(hp(&path))
                        .map(|_| vec![])
                        .map_err(errno),
                ),
                4 => (
                    v.rmdir(&path).map(|_| vec![]),
                    std::fs::remove_dir(hp(&path))
                        .map(|_| vec![])
                        .map_err(errno),
                ),
                5 => (
                    v.rename(&path, &path2).map(|_| vec![]),
                    std::fs::rename(hp(&path), hp(&path2))
                        .map(|_| vec![])
                        .map_err(errno),
                ),
                _ => (
                    v.stat(&path).map(|s| vec![s.kind as u8]),
                    std::fs::metadata(hp(&path))
                        .map(|m| {
                            vec![if m.is_dir() {
                                Kind::Dir as u8
                            } else {
                                Kind::File as u8
                            }]
                        })
                        .map_err(errno),
                ),
            };
            let ours = ours.map_err(Some);
            assert_eq!(
                ours, theirs,
                "seed {seed} step {step}: op {op} on {path} (-> {path2})"
            );
        }
        // The final trees agree.
        fn walk_host(dir: &std::path::Path, prefix: &str, out: &mut Vec<String>) {
            let mut entries: Vec<_> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap())
                .collect();
            entries.sort_by_key(|e| e.file_name());
            for e in entries {
                let name = format!("{prefix}/{}", e.file_name().to_string_lossy());
                let is_dir = e.file_type().unwrap().is_dir();
                out.push(format!("{name}{}", if is_dir { "/" } else { "" }));
                if is_dir {
                    walk_host(&e.path(), &name, out);
                }
            }
        }
        fn walk_vfs(v: &Vfs, dir: &str, out: &mut Vec<String>) {
            for e in v.readdir(if dir.is_empty() { "/" } else { dir }).unwrap() {
                let name = format!("{dir}/{}", e.name);
                out.push(format!(
                    "{name}{}",
                    if e.kind == Kind::Dir { "/" } else { "" }
                ));
                if e.kind == Kind::Dir {
                    walk_vfs(v, &name, out);
                }
            }
        }
        let (mut a, mut b) = (Vec::new(), Vec::new());
        walk_host(host.path(), "", &mut a);
        walk_vfs(&v, "", &mut b);
        assert_eq!(b, a, "seed {seed}: trees differ");
    }
}
