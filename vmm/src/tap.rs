//! TAP devices: `--net tap:NAME` attaches the guest to a host TAP
//! interface (full-speed, bridged setups; needs the device to exist and
//! be usable by this user, or CAP_NET_ADMIN).
//!
//! [`open`] opens `/dev/net/tun` and binds it to the named interface in
//! TAP mode without packet information, so each `read` is one Ethernet
//! frame and each `write` sends one. The descriptor is non-blocking.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

/// Why a TAP device could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// The interface name is empty or longer than 15 bytes.
    #[error("TAP interface name {0:?} is invalid: give 1 to 15 bytes, e.g. --net tap:kiln0")]
    BadName(String),
    /// /dev/net/tun could not be opened.
    #[error(
        "cannot open /dev/net/tun for TAP device {name}: {source} (load the tun module, or use the default user-mode network: -p HOST:GUEST)"
    )]
    Open {
        /// The interface.
        name: String,
        /// What the open returned.
        source: std::io::Error,
    },
    /// TUNSETIFF failed.
    #[error(
        "cannot attach to TAP device {name}: {source} (create it first: `ip tuntap add {name} mode tap user $USER && ip link set {name} up`)"
    )]
    Attach {
        /// The interface.
        name: String,
        /// What the ioctl returned.
        source: std::io::Error,
    },
}

/// `TUNSETIFF` = `_IOW('T', 202, int)`.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;

/// `struct ifreq` as TUNSETIFF reads it: the name, then the flags.
#[repr(C)]
struct IfReq {
    name: [u8; 16],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Opens TAP interface `name` (non-blocking; one frame per read/write).
pub fn open(name: &str) -> Result<File, TapError> {
    if name.is_empty() || name.len() > 15 || name.contains('\0') {
        return Err(TapError::BadName(name.into()));
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open("/dev/net/tun")
        .map_err(|source| TapError::Open {
            name: name.into(),
            source,
        })?;
    let mut req = IfReq {
        name: [0; 16],
        flags: IFF_TAP | IFF_NO_PI,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF reads (and may write back) a `struct ifreq`, whose
    // 40 bytes `req` provides with the name NUL-terminated (at most 15
    // bytes were copied into 16) and the flags at offset 16; the fd is
    // the tun device we just opened.
    let ret = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &mut req as *mut IfReq) };
    if ret < 0 {
        return Err(TapError::Attach {
            name: name.into(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_names_are_refused_before_any_system_call() {
        for bad in ["", "a-name-that-is-too-long", "a\0b"] {
            assert!(matches!(open(bad), Err(TapError::BadName(_))), "{bad:?}");
        }
    }

    #[test]
    fn attach_and_open_failures_name_the_interface_and_the_fix() {
        let attach = TapError::Attach {
            name: "kiln0".into(),
            source: std::io::Error::from_raw_os_error(libc::EPERM),
        }
        .to_string();
        assert!(attach.contains("kiln0"), "{attach}");
        assert!(attach.contains("ip tuntap add kiln0 mode tap"), "{attach}");
        let open = TapError::Open {
            name: "kiln0".into(),
            source: std::io::Error::from_raw_os_error(libc::ENOENT),
        }
        .to_string();
        assert!(
            open.contains("/dev/net/tun") && open.contains("-p HOST:GUEST"),
            "{open}"
        );
    }
}
