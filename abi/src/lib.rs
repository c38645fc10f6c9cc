//! # kiln-abi — the contract between a Kiln guest and whatever runs it
//!
//! Everything a guest image and a host (the embedded VMM in `vmm/`, the
//! `kiln` CLI, QEMU wiring) must agree on lives here and nowhere else:
//!
//! - [`port`]: the I/O ports a guest uses (COM1, the exit port, the Kiln
//!   hostcall port) and the port-I/O permission set the supervisor opens.
//! - [`exit`]: the exit-status values with a fixed meaning (panic, CPU
//!   fault, ...) and the host-side codes for endings the guest cannot
//!   report itself (timeout, triple fault).
//! - [`sc`]: supervisor-call numbers and their error values (DESIGN.md §3.2).
//! - [`upcall`]: the frame the supervisor hands to the CPL3 exception and
//!   interrupt handler.
//! - [`pvh`]: the PVH `hvm_start_info` layout a guest reads at boot.
//! - [`cmdline`]: how kernel options and application arguments travel in
//!   the one command-line string a boot protocol offers.
//!
//! The crate is `no_std` (with `alloc` for the command line) so guests and
//! hosts compile the very same definitions. It holds data layouts and pure
//! functions only; it never touches hardware.
//!
//! Limits: one CPU (the upcall frame is a single per-CPU slot); the layouts
//! are Kiln-internal and carry no version number yet.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod cmdline;
pub mod exit;
pub mod net;
pub mod port;
pub mod pvh;
pub mod rtc;
pub mod sc;
pub mod upcall;

/// Guest-physical address where every Kiln image is linked and loaded (1 MiB).
pub const IMAGE_BASE: u64 = 0x10_0000;

/// Size of one small page.
pub const PAGE_SIZE: u64 = 4096;

/// Guest memory the boot page tables identity-map (the first GiB).
///
/// Memory above it is not used by the guest yet.
pub const IDENTITY_MAP_BYTES: u64 = 1 << 30;

/// Start of the window in which `sc::MAP` may place pages (1 GiB).
pub const MAP_WINDOW_BASE: u64 = 1 << 30;

/// Size of that window (2 MiB, one page table's reach).
pub const MAP_WINDOW_BYTES: u64 = 2 << 20;

/// Pages the supervisor occupies from [`IMAGE_BASE`] on, mapped
/// supervisor-only; the link recipe checks the supervisor fits.
pub const SUP_PAGES: u64 = 16;

/// ELF note type (name "Kiln") that marks a linuxu executable.
pub const LINUXU_NOTE_TYPE: u32 = 1;

/// Guest-physical base of the IOAPIC's registers (MMIO).
pub const IOAPIC_BASE: u64 = 0xfec0_0000;

/// Guest-physical base of the virtio-mmio devices (4 KiB each, one after
/// another; a slot without a device reads as zero, so its magic is not
/// "virt"). The embedded VMM puts `--disk` here.
pub const VIRTIO_MMIO_BASE: u64 = 0xd000_0000;

/// Virtio-mmio slots the guest probes (disks, volumes and the network
/// device share them).
pub const VIRTIO_MMIO_SLOTS: u64 = 4;

/// Where QEMU's microvm machine puts its virtio-mmio transports (512
/// bytes apart; an unused one has device ID 0).
pub const QEMU_MICROVM_VIRTIO_BASE: u64 = 0xfeb0_0000;
/// Spacing of QEMU microvm's virtio-mmio transports.
pub const QEMU_MICROVM_VIRTIO_STRIDE: u64 = 0x200;
/// How many transports QEMU microvm has.
pub const QEMU_MICROVM_VIRTIO_COUNT: u64 = 24;

/// The IOAPIC pin of virtio-mmio slot 0 (slot `n` uses pin 5 + n).
pub const VIRTIO_FIRST_IRQ: u8 = 5;

/// linuxu: the first file descriptor of a host volume's 9P channel (the
/// CLI passes volume `i` at fd `3 + i`; the sandbox lets `read` use only
/// these).
pub const LINUXU_VOLUME_FIRST_FD: u64 = 3;
/// linuxu: most host volumes.
pub const LINUXU_MAX_VOLUMES: u64 = 4;
/// linuxu: the file descriptor of the network channel (one Ethernet
/// frame per datagram each way; after the volumes' fds).
pub const LINUXU_NET_FD: u64 = LINUXU_VOLUME_FIRST_FD + LINUXU_MAX_VOLUMES;
/// linuxu: the interrupt line `SIGIO` from the network channel raises.
pub const LINUXU_NET_IRQ: u8 = VIRTIO_FIRST_IRQ;

/// The IOAPIC pin COM1 interrupts on.
pub const COM1_IRQ: u8 = 4;

/// Guest-physical base of the local APIC's registers in xAPIC mode.
pub const XAPIC_BASE: u64 = 0xfee0_0000;

/// Map-window address where the runtime maps the xAPIC registers (CPUs
/// without x2APIC).
pub const XAPIC_WINDOW_VA: u64 = MAP_WINDOW_BASE + 6 * PAGE_SIZE;

/// The xAPIC timer's initial-count register at [`XAPIC_WINDOW_VA`]: the
/// only address `sc::HALT_FOR` accepts besides the timer MSRs.
pub const XAPIC_TIMER_INITIAL_VA: u64 = XAPIC_WINDOW_VA + 0x380;
