//! # kiln-hal — the one place guest code touches the machine
//!
//! Kiln guests run every line of Rust at CPL3 (docs/adr/0002). This crate
//! owns the small assembly supervisor that runs at CPL0 and offers safe
//! functions over it:
//!
//! - [`platform`]: the seam — the [`platform::Platform`] trait with its
//!   PVH (supervisor) and linuxu (Linux process, [`linuxu`]) implementations.
//! - [`sc`]: privileged calls — [`sc::exit`], [`sc::halt`], [`sc::map`] /
//!   [`sc::unmap`] (W^X enforced by the supervisor), [`sc::apic_write`].
//! - [`upcall`]: exception and interrupt delivery to CPL3 handlers, the
//!   fault hook the runtime installs, and [`upcall::resume`].
//! - [`console`]: the boot console — one hostcall per buffer on the
//!   embedded VMM, COM1 on other VMs, stdout on linuxu.
//! - [`timer`]: a one-shot timer interrupt (x2APIC, or `setitimer`).
//! - [`time`]: the monotonic clock (TSC, or `clock_gettime`) and sleeping.
//! - [`context`]: the context switch and the preemption stub threads use.
//! - [`irq`]: device interrupts (IOAPIC lines) routed to handlers.
//! - [`paging`]: W^X for the image and guard pages under the stacks.
//! - [`mem`]: the `memcpy` family the host-triple `core` links against.
//! - [`provoke`]: deliberate CPU exceptions for tests of the fault paths;
//!   `selftest` (guest builds): in-guest tests of every supervisor path.
//!
//! Neighbours: `kiln-abi` (numbers and layouts shared with hosts) below,
//! `kiln-rt` (entry, memory, heap, panic, printing) above. Nothing else in a
//! guest may use `unsafe`; this crate and `kiln-rt` are the audit surface
//! (docs/unsafe.md).
//!
//! Guest-only items (the supervisor, `mem*`, the upcall entry symbol) are
//! compiled only under `--cfg kiln_guest`, which `kiln build` sets; a plain
//! host build type-checks the safe API and runs its unit tests.
//!
//! Limits: x86_64 only, one CPU, the identity map covers the first GiB;
//! the timer is not calibrated yet (KVM's 1 GHz APIC bus is assumed).
#![no_std]

extern crate alloc;

pub mod arch;
pub mod console;
pub mod context;
pub mod irq;
pub mod linuxu;
pub mod mem;
pub mod mmio;

pub mod paging;
pub mod platform;
pub mod provoke;
pub mod random;

pub mod sc;
pub mod selftest;
pub mod time;
pub mod timer;
pub mod upcall;

pub use kiln_abi as abi;
