//! A userspace IOAPIC (the split irqchip leaves it to the VMM).
//!
//! 24 pins, MMIO at [`kiln_abi::IOAPIC_BASE`]: the guest selects a register
//! through IOREGSEL (offset 0x00) and reads or writes it through IOWIN
//! (offset 0x10). A device raising a pin whose redirection entry is
//! unmasked delivers the entry's vector to the entry's destination APIC as
//! an MSI (`KVM_SIGNAL_MSI`), which the in-kernel local APIC takes.
//!
//! Limits: edge-triggered delivery only (level-triggered entries are
//! delivered as edges; no remote-IRR), physical destination mode, fixed
//! delivery mode.

use std::sync::{Arc, Mutex};

use kvm_bindings::kvm_msi;
use kvm_ioctls::VmFd;

/// Redirection entries.
pub const PINS: usize = 24;
/// IOREGSEL offset.
const IOREGSEL: u64 = 0x00;
/// IOWIN offset.
const IOWIN: u64 = 0x10;
/// Version register: 24 entries (max index 23), version 0x11.
const VERSION: u32 = ((PINS as u32 - 1) << 16) | 0x11;
/// Redirection entry bit: masked.
const MASKED: u64 = 1 << 16;

/// The IOAPIC's registers.
pub struct Ioapic {
    select: u32,
    id: u32,
    entries: [u64; PINS],
}

impl Default for Ioapic {
    fn default() -> Self {
        Self {
            select: 0,
            id: 0,
            entries: [MASKED; PINS],
        }
    }
}

/// An MSI to deliver: (address, data).
pub type Msi = (u32, u32);

impl Ioapic {
    /// An MMIO read at `offset` from the base.
    pub fn read(&self, offset: u64) -> u32 {
        match offset {
            IOREGSEL => self.select,
            IOWIN => match self.select {
                0x00 => self.id,
                0x01 => VERSION,
                0x02 => self.id,
                r @ 0x10..=0x3f => {
                    let entry = self.entries[((r - 0x10) / 2) as usize];
                    if r % 2 == 0 {
                        entry as u32
                    } else {
                        (entry >> 32) as u32
                    }
                }
                _ => 0,
            },
            _ => 0,
        }
    }

    /// An MMIO write at `offset` from the base.
    pub fn write(&mut self, offset: u64, value: u32) {
        match offset {
            IOREGSEL => self.select = value & 0xff,
            IOWIN => match self.select {
                0x00 => self.id = value & 0x0f00_0000,
                r @ 0x10..=0x3f => {
                    let e = &mut self.entries[((r - 0x10) / 2) as usize];
                    *e = if r % 2 == 0 {
                        (*e & !0xffff_ffff) | u64::from(value)
                    } else {
                        (*e & 0xffff_ffff) | (u64::from(value) << 32)
                    };
                }
                _ => {}
            },
            _ => {}
        }
    }

    /// The MSI that raising `pin` delivers, if the pin is routed.
    pub fn raise(&self, pin: usize) -> Option<Msi> {
        let entry = *self.entries.get(pin)?;
        if entry & MASKED != 0 {
            return None;
        }
        let vector = (entry & 0xff) as u32;
        let dest = ((entry >> 56) & 0xff) as u32;
        Some((0xfee0_0000 | (dest << 12), vector))
    }
}

/// One interrupt line into the IOAPIC, handed to a device as its trigger.
#[derive(Clone)]
pub struct IrqLine {
    pub ioapic: Arc<Mutex<Ioapic>>,
    pub vm: Arc<VmFd>,
    pub pin: usize,
}

impl vm_superio::Trigger for IrqLine {
    type E = std::io::Error;

    fn trigger(&self) -> std::io::Result<()> {
        let msi = self
            .ioapic
            .lock()
            .map_err(|_| std::io::Error::other("IOAPIC lock poisoned"))?
            .raise(self.pin);

        if let Some((address, data)) = msi {
            let msi = kvm_msi {
                address_lo: address,
                data,
                ..Default::default()
            };
            self.vm
                .signal_msi(msi)
                .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_entry(io: &mut Ioapic, pin: u32, value: u64) {
        io.write(IOREGSEL, 0x10 + 2 * pin);
        io.write(IOWIN, value as u32);
        io.write(IOREGSEL, 0x11 + 2 * pin);
        io.write(IOWIN, (value >> 32) as u32);
    }

    #[test]
    fn version_reports_24_pins() {
        let mut io = Ioapic::default();
        io.write(IOREGSEL, 1);
        assert_eq!(io.read(IOWIN) >> 16 & 0xff, 23);
    }

    #[test]
    fn pins_start_masked_and_route_when_programmed() {
        let mut io = Ioapic::default();
        assert_eq!(io.raise(4), None);
        write_entry(&mut io, 4, 37);
        assert_eq!(io.raise(4), Some((0xfee0_0000, 37)));
        write_entry(&mut io, 4, (2u64 << 56) | 40);
        assert_eq!(io.raise(4), Some((0xfee0_2000, 40)));
        io.write(IOREGSEL, 0x18);
        assert_eq!(io.read(IOWIN), 40);
        write_entry(&mut io, 4, MASKED | 40);
        assert_eq!(io.raise(4), None);
        assert_eq!(io.raise(99), None);
    }
}
