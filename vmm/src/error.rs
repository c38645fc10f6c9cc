//! [`VmmError`]: why a VM could not be built or run.

use std::io;

/// Why the VMM could not build or run the guest.
///
/// Each message names the cause and, where there is one, the fix. Guest
/// misbehaviour (crashes, timeouts) is not an error but an
/// [`crate::Ending`].
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    /// /dev/kvm is not usable.
    #[error(
        "{device} is not accessible ({cause}): enable KVM on this host and add yourself to group `kvm`, or run with --platform linuxu (or qemu)", device = crate::kvm_device().display(), cause = .0
    )]
    KvmUnavailable(kvm_ioctls::Error),
    /// A disk image cannot be served.
    #[error(transparent)]
    Disk(#[from] crate::virtio::block::BlockError),
    /// A volume cannot be shared.
    #[error(transparent)]
    Volume(#[from] crate::virtio::fs9p::VolumeError),
    /// The user-mode network cannot start (a forwarded port in use...).
    #[error(transparent)]
    UserNet(#[from] kiln_user_net::UserNetError),
    /// A TAP device cannot be used.
    #[error(transparent)]
    Tap(#[from] crate::tap::TapError),
    /// The network device's backend could not be set up.
    #[error("cannot set up the network device: {0}")]
    NetDevice(io::Error),
    /// More devices than virtio slots.
    #[error("{count} disks, volumes and network devices were given but this VMM serves at most {max}: drop some --disk or -v", max = kiln_abi::VIRTIO_MMIO_SLOTS)]
    TooManyDevices {
        /// How many were given.
        count: usize,
    },
    /// A KVM call failed.
    #[error("KVM refused to {what}: {cause}")]
    Kvm {
        /// The step that failed.
        what: &'static str,
        /// The error KVM returned.
        cause: kvm_ioctls::Error,
    },
    /// The memory size is outside what the VMM supports.
    #[error("guest memory of {requested_bytes} bytes is not supported: use -m between {min} KiB and {max} MiB", min = crate::MIN_MEMORY_BYTES / 1024, max = crate::MAX_MEMORY_BYTES >> 20)]
    BadMemorySize {
        /// What was asked for.
        requested_bytes: u64,
    },
    /// Guest memory could not be allocated.
    #[error("cannot allocate {bytes} bytes of guest memory: {detail}")]
    GuestMemory {
        /// Size asked for.
        bytes: u64,
        /// What vm-memory said.
        detail: String,
    },
    /// The image is not a loadable ELF.
    #[error("the image is not a bootable ELF ({0}): build it with `kiln build`")]
    BadImage(String),
    /// The ELF has no PVH entry note.
    #[error(
        "the image has no PVH entry note (Xen note type 18): it is not a Kiln image; build it with `kiln build`"
    )]
    NoPvhEntry,
    /// The image does not fit in guest memory.
    #[error(
        "the image needs {needed_bytes} bytes of guest memory but the guest has {memory_bytes}: raise -m"
    )]
    ImageTooLarge {
        /// End address of the loaded image.
        needed_bytes: u64,
        /// Configured memory.
        memory_bytes: u64,
    },
    /// The initrd does not fit above the image in guest memory.
    #[error(
        "the initrd of {size_bytes} bytes does not fit in {memory_bytes} bytes of guest memory above the image: raise -m or shrink the rootfs"
    )]
    InitrdTooLarge {
        /// Its size.
        size_bytes: u64,
        /// Configured memory.
        memory_bytes: u64,
    },
    /// The command line is too long for the boot protocol.
    #[error("the guest command line is {len} bytes; at most {max} fit: pass fewer or shorter arguments", max = kiln_abi::pvh::CMDLINE_MAX_BYTES)]
    CmdlineTooLong {
        /// Its length.
        len: usize,
    },
    /// The command line contains a NUL byte.
    #[error("the guest command line contains a NUL byte, which the boot protocol cannot carry")]
    CmdlineNul,
    /// The vCPU thread could not start.
    #[error("cannot start the vCPU thread: {0}")]
    Thread(io::Error),
    /// The vCPU thread panicked (a VMM bug).
    #[error("the vCPU thread panicked (a Kiln bug; please report it)")]
    VcpuPanicked,
    /// Writing to guest memory failed.
    #[error("cannot write {what} into guest memory: {detail}")]
    GuestWrite {
        /// What was being written.
        what: &'static str,
        /// What vm-memory said.
        detail: String,
    },
    /// KVM_RUN failed for a reason other than a signal.
    #[error("running the vCPU failed: {0}")]
    Run(kvm_ioctls::Error),
}
