//! The guest build recipe: how an app crate becomes a bootable image.
//!
//! A guest is compiled for the host triple (`x86_64-unknown-linux-gnu`,
//! the only standard library on these machines) with:
//!
//! - `--profile guest` (workspace `Cargo.toml`: panic = abort, size
//!   optimisation, fat LTO, stripped);
//! - `--cfg kiln_guest`, which switches on the guest-only code of
//!   `platform/` (supervisor, entry, `mem*`, panic handler);
//! - static relocation and `-nostartfiles -nostdlib -static -no-pie`;
//! - the linker script `platform/hal/kiln.ld` (image at 1 MiB, supervisor
//!   first, `SUP_PAGES` from `kiln-abi`), `--gc-sections`, unpadded
//!   segments (`-n`);
//! - an explicit `--target`, so these flags reach only guest code and not
//!   build scripts or proc macros, and a separate target directory
//!   (`target/guest`), so host builds keep their own artifacts.
//!
//! [`build`] skips Cargo when the image is newer than every file of every
//! local package the app depends on.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

/// The triple guests are compiled for.
pub const GUEST_TRIPLE: &str = "x86_64-unknown-linux-gnu";

/// The linker script, kept beside the supervisor it lays out.
pub const LINKER_SCRIPT: &str = include_str!("../../../platform/hal/kiln.ld");

/// Why an image could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The app directory has no Cargo.toml.
    #[error("{dir} has no Cargo.toml: a Kiln app is a Cargo package with a Kiln.toml beside it")]
    NoCargoManifest {
        /// The directory.
        dir: PathBuf,
    },
    /// Cargo could not be started.
    #[error("cannot run cargo ({cause}): is the Rust toolchain installed and on PATH?")]
    CargoMissing {
        /// Why.
        cause: std::io::Error,
    },
    /// `cargo metadata` failed or said something unexpected.
    #[error("cargo metadata failed for {dir}: {detail}")]
    Metadata {
        /// The app directory.
        dir: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// The package has no binary target to boot.
    #[error(
        "package `{package}` has no binary target: an image needs a src/main.rs using kiln_rt::main!"
    )]
    NoBinary {
        /// The package.
        package: String,
    },
    /// Compilation failed (Cargo printed why).
    #[error("building `{package}` failed (see the compiler output above)")]
    Compile {
        /// The package.
        package: String,
    },
    /// A file could not be written.
    #[error("cannot write {path}: {cause}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        cause: std::io::Error,
    },
}

/// A built (or already fresh) image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuiltImage {
    /// Path of the ELF image.
    pub path: PathBuf,
    /// The app's package name.
    pub package: String,
    /// Whether Cargo ran.
    pub rebuilt: bool,
}

/// What `cargo metadata` told about an app.
struct AppInfo {
    package: String,
    /// `name@version`, unambiguous even when a dependency shares the name.
    package_spec: String,
    bin: String,
    target_dir: PathBuf,
    /// Directories of the local (path) packages in the app's dependency graph.
    local_package_dirs: Vec<PathBuf>,
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

fn app_info(dir: &Path) -> Result<AppInfo, BuildError> {
    let manifest = dir.join("Cargo.toml");
    if !manifest.is_file() {
        return Err(BuildError::NoCargoManifest {
            dir: dir.to_path_buf(),
        });
    }
    let meta_err = |detail: String| BuildError::Metadata {
        dir: dir.to_path_buf(),
        detail,
    };
    let out = cargo()
        .args(["metadata", "--format-version", "1", "--manifest-path"])
        .arg(&manifest)
        .output()
        .map_err(|cause| BuildError::CargoMissing { cause })?;
    if !out.status.success() {
        return Err(meta_err(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    let meta: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| meta_err(e.to_string()))?;
    let manifest = manifest
        .canonicalize()
        .map_err(|e| meta_err(e.to_string()))?;
    let packages = meta["packages"]
        .as_array()
        .ok_or_else(|| meta_err("no packages".into()))?;
    let pkg = packages
        .iter()
        .find(|p| p["manifest_path"].as_str().map(Path::new) == Some(manifest.as_path()))
        .ok_or_else(|| meta_err(format!("no package for {}", manifest.display())))?;
    let package = pkg["name"].as_str().unwrap_or_default().to_string();
    let package_spec = format!("{package}@{}", pkg["version"].as_str().unwrap_or_default());
    let bin = pkg["targets"]
        .as_array()
        .and_then(|ts| {
            ts.iter().find(|t| {
                t["kind"]
                    .as_array()
                    .is_some_and(|k| k.iter().any(|k| k == "bin"))
            })
        })
        .and_then(|t| t["name"].as_str())
        .ok_or_else(|| BuildError::NoBinary {
            package: package.clone(),
        })?
        .to_string();
    let target_dir = PathBuf::from(
        meta["target_directory"]
            .as_str()
            .ok_or_else(|| meta_err("no target_directory".into()))?,
    );
    // The local packages the app depends on (transitively), from the
    // resolved graph: only their sources can make the image stale.
    let nodes = meta["resolve"]["nodes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut reachable = std::collections::BTreeSet::new();
    let mut todo = vec![pkg["id"].as_str().unwrap_or_default().to_string()];
    while let Some(id) = todo.pop() {
        if !reachable.insert(id.clone()) {
            continue;
        }
        if let Some(node) = nodes.iter().find(|n| n["id"].as_str() == Some(id.as_str())) {
            let deps = node["dependencies"].as_array().cloned().unwrap_or_default();
            todo.extend(deps.iter().filter_map(|d| d.as_str().map(str::to_string)));
        }
    }
    let local_package_dirs = packages
        .iter()
        .filter(|p| p["source"].is_null())
        .filter(|p| p["id"].as_str().is_some_and(|id| reachable.contains(id)))
        .filter_map(|p| p["manifest_path"].as_str())
        .filter_map(|m| Path::new(m).parent().map(Path::to_path_buf))
        .collect();
    Ok(AppInfo {
        package,
        package_spec,
        bin,
        target_dir,
        local_package_dirs,
    })
}

/// Newest modification time of the source files under `dir` (skipping
/// `target` and hidden directories).
fn newest_source_mtime(dir: &Path) -> Option<SystemTime> {
    let mut newest = None;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let path = entry.path();
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                if name != "target" && !name.to_string_lossy().starts_with('.') {
                    stack.push(path);
                }
            } else if let Ok(m) = meta.modified() {
                newest = newest.max(Some(m));
            }
        }
    }
    newest
}

/// What kind of image a build produces.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GuestTarget {
    /// A PVH ELF for virtual machines (kvm, qemu).
    #[default]
    Pvh,
    /// A static Linux executable (linuxu).
    Linuxu,
}

impl From<crate::Platform> for GuestTarget {
    fn from(p: crate::Platform) -> Self {
        match p {
            crate::Platform::Kvm | crate::Platform::Qemu => Self::Pvh,
            crate::Platform::Linuxu => Self::Linuxu,
        }
    }
}

fn guest_dir(target_dir: &Path, target: GuestTarget) -> PathBuf {
    target_dir.join(match target {
        GuestTarget::Pvh => "guest",
        GuestTarget::Linuxu => "guest-linuxu",
    })
}

fn image_file(info: &AppInfo, target: GuestTarget) -> PathBuf {
    guest_dir(&info.target_dir, target)
        .join(GUEST_TRIPLE)
        .join("guest")
        .join(&info.bin)
}

/// Writes the linker script where the link step reads it; returns whether it changed.
fn install_linker_script(target_dir: &Path) -> Result<PathBuf, BuildError> {
    let dir = guest_dir(target_dir, GuestTarget::Pvh);
    let path = dir.join("kiln.ld");
    if std::fs::read_to_string(&path).ok().as_deref() != Some(LINKER_SCRIPT) {
        std::fs::create_dir_all(&dir).map_err(|cause| BuildError::Write {
            path: dir.clone(),
            cause,
        })?;
        std::fs::write(&path, LINKER_SCRIPT).map_err(|cause| BuildError::Write {
            path: path.clone(),
            cause,
        })?;
    }
    Ok(path)
}

/// FNV-1a hash of the linker script.
fn script_hash() -> u32 {
    LINKER_SCRIPT.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// The flags of the linuxu recipe: a static executable entered at
/// `_start`, laid out by the default linker script.
pub fn linuxu_rustflags() -> Vec<String> {
    let mut flags: Vec<String> = [
        "--cfg",
        "kiln_guest",
        "--cfg",
        "kiln_linuxu",
        "-C",
        "relocation-model=static",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for a in [
        "-nostartfiles",
        "-nostdlib",
        "-static",
        "-no-pie",
        "-Wl,--gc-sections",
        "-Wl,--build-id=none",
    ] {
        flags.push("-C".into());
        flags.push(format!("link-arg={a}"));
    }
    flags
}

/// The flags of the PVH recipe, one per element.
pub fn rustflags(linker_script: &Path) -> Vec<String> {
    let mut flags: Vec<String> = ["--cfg", "kiln_guest", "-C", "relocation-model=static"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let link_args = [
        "-nostartfiles".to_string(),
        "-nostdlib".to_string(),
        "-static".to_string(),
        "-no-pie".to_string(),
        format!("-Wl,-T,{}", linker_script.display()),
        format!("-Wl,--defsym=SUP_PAGES={}", kiln_abi::SUP_PAGES),
        "-Wl,--gc-sections".to_string(),
        "-Wl,-n".to_string(),
        "-Wl,--build-id=none".to_string(),
        // Cargo does not track link-arg files; naming the script's hash in
        // the flags makes a changed script relink everything.
        format!("-Wl,--defsym=KILN_LD_HASH={:#x}", script_hash()),
    ];
    for a in link_args {
        flags.push("-C".into());
        flags.push(format!("link-arg={a}"));
    }
    flags
}

/// The image of the app in `dir` if it exists and is newer than all its sources.
pub fn image_path_if_fresh(dir: &Path, target: GuestTarget) -> Result<Option<PathBuf>, BuildError> {
    let info = app_info(dir)?;
    let image = image_file(&info, target);
    Ok(is_fresh(&info, &image, target).then_some(image))
}

fn is_fresh(info: &AppInfo, image: &Path, target: GuestTarget) -> bool {
    let Ok(built) = std::fs::metadata(image).and_then(|m| m.modified()) else {
        return false;
    };
    let installed = guest_dir(&info.target_dir, GuestTarget::Pvh).join("kiln.ld");
    if target == GuestTarget::Pvh
        && std::fs::read_to_string(installed).ok().as_deref() != Some(LINKER_SCRIPT)
    {
        return false;
    }
    info.local_package_dirs
        .iter()
        .filter_map(|d| newest_source_mtime(d))
        .all(|m| m <= built)
}

/// Builds the app in `dir` unless its image is fresh; `quiet` hides Cargo's output.
pub fn build(dir: &Path, target: GuestTarget, quiet: bool) -> Result<BuiltImage, BuildError> {
    let info = app_info(dir)?;
    let image = image_file(&info, target);
    if is_fresh(&info, &image, target) {
        return Ok(BuiltImage {
            path: image,
            package: info.package,
            rebuilt: false,
        });
    }
    let flags = match target {
        GuestTarget::Pvh => rustflags(&install_linker_script(&info.target_dir)?),
        GuestTarget::Linuxu => linuxu_rustflags(),
    };
    let mut cmd = cargo();
    cmd.args([
        "build",
        "--profile",
        "guest",
        "--target",
        GUEST_TRIPLE,
        "-p",
        &info.package_spec,
    ])
    .arg("--manifest-path")
    .arg(dir.join("Cargo.toml"))
    .arg("--target-dir")
    .arg(guest_dir(&info.target_dir, target))
    .env("CARGO_ENCODED_RUSTFLAGS", flags.join("\u{1f}"))
    .env_remove("RUSTFLAGS");
    if quiet {
        cmd.arg("--quiet");
    }
    let status = cmd
        .status()
        .map_err(|cause| BuildError::CargoMissing { cause })?;
    if !status.success() || !image.is_file() {
        return Err(BuildError::Compile {
            package: info.package,
        });
    }
    // Cargo may reuse an up-to-date binary with an older mtime; mark the
    // image as checked now so the freshness test above holds next time.
    if let Ok(f) = std::fs::File::options().append(true).open(&image) {
        let _ = f.set_modified(SystemTime::now());
    }
    Ok(BuiltImage {
        path: image,
        package: info.package,
        rebuilt: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_carry_the_recipe() {
        let f = rustflags(Path::new("/t/kiln.ld"));
        let joined = f.join(" ");
        assert!(joined.contains("--cfg kiln_guest"));
        assert!(joined.contains("link-arg=-Wl,-T,/t/kiln.ld"));
        assert!(joined.contains(&format!("SUP_PAGES={}", kiln_abi::SUP_PAGES)));
        assert!(joined.contains("relocation-model=static"));
    }

    #[test]
    fn linker_script_places_the_supervisor_at_the_image_base() {
        assert!(LINKER_SCRIPT.contains(&format!("{:#x}", kiln_abi::IMAGE_BASE)));
        assert!(LINKER_SCRIPT.contains("KEEP(*(.note.Xen))"));
    }

    #[test]
    fn newest_mtime_skips_target() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("target")).unwrap();
        std::fs::write(dir.path().join("a.rs"), "x").unwrap();
        let a = newest_source_mtime(dir.path()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(dir.path().join("target/b"), "x").unwrap();
        assert_eq!(newest_source_mtime(dir.path()), Some(a));
    }

    #[test]
    fn missing_cargo_manifest_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = build(dir.path(), GuestTarget::Pvh, true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("has no Cargo.toml"), "{e}");
    }
}

/// What a built Kiln image is, from its ELF notes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageKind {
    /// A PVH VM image (Xen note `XEN_ELFNOTE_PHYS32_ENTRY`): kvm, qemu.
    Pvh,
    /// A linuxu executable (note "Kiln", type [`kiln_abi::LINUXU_NOTE_TYPE`]).
    Linuxu,
}

/// The kind of Kiln image in ELF `bytes`, or `None` for anything else.
pub fn image_kind(bytes: &[u8]) -> Option<ImageKind> {
    let u16_at = |o: usize| {
        bytes
            .get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |o: usize| {
        bytes
            .get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |o: usize| {
        bytes
            .get(o..o + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    if !bytes.starts_with(b"\x7fELF") {
        return None;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(32), u16_at(54), u16_at(56)) else {
        return None;
    };
    for i in 0..usize::from(phnum) {
        let ph = phoff as usize + i * usize::from(phentsize);
        if u32_at(ph) != Some(4) {
            continue; // not PT_NOTE
        }
        let (Some(off), Some(size)) = (u64_at(ph + 8), u64_at(ph + 32)) else {
            continue;
        };
        let (mut at, end) = (off as usize, (off.saturating_add(size)) as usize);
        while at + 12 <= end {
            let (Some(namesz), Some(descsz), Some(kind)) =
                (u32_at(at), u32_at(at + 4), u32_at(at + 8))
            else {
                break;
            };
            let name = bytes.get(at + 12..at + 12 + namesz as usize);
            if kind == kiln_abi::pvh::XEN_ELFNOTE_PHYS32_ENTRY && name == Some(b"Xen\0".as_slice())
            {
                return Some(ImageKind::Pvh);
            }
            if kind == kiln_abi::LINUXU_NOTE_TYPE && name == Some(b"Kiln\0".as_slice()) {
                return Some(ImageKind::Linuxu);
            }
            at +=
                12 + (namesz as usize).next_multiple_of(4) + (descsz as usize).next_multiple_of(4);
        }
    }
    None
}
