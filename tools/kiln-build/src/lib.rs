//! # kiln-build — from an app directory to a bootable image
//!
//! - [`manifest`]: `Kiln.toml`, what Cargo cannot say about an image
//!   (memory, platform, timeout, arguments, log level); unknown keys and
//!   bad values are errors naming the key and the file.
//! - [`recipe`]: the one place that knows how a guest is compiled and
//!   linked on the host triple (docs/adr/0001): the `guest` profile,
//!   `--cfg kiln_guest`, static relocation, no start files or libc, the
//!   linker script `platform/hal/kiln.ld`, and the staleness check that
//!   lets `kiln run` skip Cargo when nothing changed.
//! - [`rootfs`]: packs a host directory into the cpio initrd the guest
//!   mounts as `/`.

//!
//! Neighbours: the `kiln` CLI drives it; `kiln-abi` gives the constants
//! the link recipe shares with the supervisor. It never runs images.

#![forbid(unsafe_code)]

pub mod manifest;
pub mod recipe;
pub mod rootfs;

pub use manifest::{Manifest, ManifestError, Platform};
pub use recipe::{
    BuildError, BuiltImage, GuestTarget, ImageKind, build, image_kind, image_path_if_fresh,
};
