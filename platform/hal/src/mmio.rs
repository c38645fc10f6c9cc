//! Device register pages (MMIO) for drivers.
//!
//! [`MmioPage::map`] maps one 4 KiB page of device registers at a
//! guest-physical address into a map-window page (writable, never
//! executable); [`MmioPage::read32`] and [`MmioPage::write32`] are the
//! only accesses, volatile and bounds-checked, so driver crates stay
//! free of `unsafe`. Window pages 8 and 9 are for devices
//! ([`FIRST_DEVICE_WINDOW_PAGE`]; the thread runtime keeps stack slots 0
//! and 1 for the HAL); 6 and 7 hold the xAPIC and IOAPIC.
//!
//! Limits: VMs only (linuxu has no devices: `ENODEV`); one page per device.

use crate::sc::ScError;
use kiln_abi::sc::errno;

/// The guest-physical address of virtio-mmio slot `slot`.
pub fn virtio_paddr(slot: u64) -> u64 {
    kiln_abi::VIRTIO_MMIO_BASE + slot * kiln_abi::PAGE_SIZE
}

/// Every place a virtio-mmio register block may be: the embedded VMM's
/// slots, then QEMU microvm's transports.
pub fn virtio_candidates() -> impl Iterator<Item = u64> {
    (0..VIRTIO_SLOTS).map(virtio_paddr).chain(
        (0..kiln_abi::QEMU_MICROVM_VIRTIO_COUNT)
            .map(|i| kiln_abi::QEMU_MICROVM_VIRTIO_BASE + i * kiln_abi::QEMU_MICROVM_VIRTIO_STRIDE),
    )
}

/// Virtio-mmio slots (and device window pages 8, 9, ...).
pub const VIRTIO_SLOTS: u64 = kiln_abi::VIRTIO_MMIO_SLOTS;

/// The first map-window page for device registers.
pub const FIRST_DEVICE_WINDOW_PAGE: u64 = 8;

/// One mapped page of device registers.
#[derive(Debug)]
pub struct MmioPage {
    va: u64,
}

impl MmioPage {
    /// Maps the registers at `paddr` (page-aligned) into device window
    /// page `index` (0-based from [`FIRST_DEVICE_WINDOW_PAGE`]; one index
    /// per device).
    pub fn map(index: u64, paddr: u64) -> Result<Self, ScError> {
        if cfg!(kiln_linuxu) {
            return Err(ScError(errno::ENODEV));
        }
        if index >= VIRTIO_SLOTS {
            // One page per virtio slot, then the threads' stack slots.
            return Err(ScError(errno::EINVAL));
        }
        let va =
            kiln_abi::MAP_WINDOW_BASE + (FIRST_DEVICE_WINDOW_PAGE + index) * kiln_abi::PAGE_SIZE;
        match crate::sc::map(va, paddr, kiln_abi::sc::MAP_WRITE) {
            Ok(()) => {}
            Err(e) if e.0 == errno::EEXIST => {
                crate::sc::unmap(va)?;
                crate::sc::map(va, paddr, kiln_abi::sc::MAP_WRITE)?;
            }
            Err(e) => return Err(e),
        }
        Ok(Self { va })
    }

    fn check(offset: u64) -> bool {
        offset.is_multiple_of(4) && offset < kiln_abi::PAGE_SIZE
    }

    /// Reads the 32-bit register at `offset` (all ones for a bad offset).
    pub fn read32(&self, offset: u64) -> u32 {
        if !Self::check(offset) {
            return u32::MAX;
        }
        // SAFETY: `va` maps a page of device registers (not memory Rust
        // owns) for as long as `self` lives; the offset is aligned and
        // inside the page.
        unsafe { core::ptr::read_volatile((self.va + offset) as *const u32) }
    }

    /// Reads the byte at `offset` (config spaces: QEMU refuses wider reads
    /// that run past a config space's end; all ones for a bad offset).
    pub fn read8(&self, offset: u64) -> u8 {
        if offset >= kiln_abi::PAGE_SIZE {
            return u8::MAX;
        }
        // SAFETY: as in `read32`; a byte access needs no alignment.
        unsafe { core::ptr::read_volatile((self.va + offset) as *const u8) }
    }

    /// Writes the 32-bit register at `offset` (ignored for a bad offset).
    pub fn write32(&self, offset: u64, value: u32) {
        if !Self::check(offset) {
            return;
        }
        // Descriptors and rings written before must be visible first.
        core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
        // SAFETY: as in `read32`.
        unsafe { core::ptr::write_volatile((self.va + offset) as *mut u32, value) }
    }
}

impl Drop for MmioPage {
    fn drop(&mut self) {
        let _ = crate::sc::unmap(self.va);
    }
}
