//! Device interrupts: IOAPIC lines routed to upcall handlers.
//!
//! [`register`] routes interrupt line `line` (an IOAPIC pin: COM1 is 4) to
//! vector `FIRST_DEVICE_VECTOR + line` on this CPU, edge-triggered, and
//! runs `handler` for it like any upcall (interrupts off, must not block;
//! the supervisor acknowledges the local APIC). The IOAPIC's registers are
//! mapped once into the map window ([`IOAPIC_WINDOW_PAGE`]).
//!
//! Available on VMs with an IOAPIC (the embedded VMM's, QEMU microvm's);
//! on linuxu the only device "interrupt" is `SIGIO` from the network
//! channel, delivered on line [`kiln_abi::LINUXU_NET_IRQ`].
//!
//! [`post_wake`]/[`take_wake`]: a handler that wakes a waiting thread
//! posts a wake-up, which the supervisor's halt checks, so an interrupt
//! arriving just before a halt does not leave the CPU asleep.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::upcall::{self, Handler};

/// First vector used for device lines (after the timer's).
pub const FIRST_DEVICE_VECTOR: u8 = kiln_abi::upcall::TIMER_VECTOR + 1;
/// Lines that can be routed (vectors up to the spurious one, exclusive).
pub const LINES: u8 = kiln_abi::upcall::VECTORS - 1 - FIRST_DEVICE_VECTOR;
/// Map-window page that holds the IOAPIC registers (the window's first
/// slot is kept for the HAL and tests; thread stacks start after it).
pub const IOAPIC_WINDOW_PAGE: u64 = 7;

/// Why a line could not be routed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IrqError {
    /// No device interrupts on this platform (linuxu).
    Unsupported,
    /// No IOAPIC answers at its address.
    NoController,
    /// The line number is beyond the ones this HAL routes.
    BadLine(u8),
    /// The line's vector already has a handler.
    Busy(u8),
}

impl core::fmt::Display for IrqError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Unsupported => f.write_str("this platform has no device interrupts"),
            Self::NoController => f.write_str("no IOAPIC answers at its address"),
            Self::BadLine(l) => write!(f, "interrupt line {l} is out of range (0..{LINES})"),
            Self::Busy(l) => write!(f, "interrupt line {l} already has a handler"),
        }
    }
}

/// Virtual address of the mapped IOAPIC (0 = not mapped yet).
static IOAPIC_VA: AtomicU64 = AtomicU64::new(0);

fn ioapic() -> Result<u64, IrqError> {
    if cfg!(kiln_linuxu) {
        return Err(IrqError::Unsupported);
    }
    let va = IOAPIC_VA.load(Ordering::SeqCst);
    if va != 0 {
        return Ok(va);
    }
    let va = kiln_abi::MAP_WINDOW_BASE + IOAPIC_WINDOW_PAGE * 4096;
    match crate::sc::map(va, kiln_abi::IOAPIC_BASE, kiln_abi::sc::MAP_WRITE) {
        Ok(()) => {}
        Err(e) if e.0 == kiln_abi::sc::errno::EEXIST => {}
        Err(_) => return Err(IrqError::NoController),
    }
    IOAPIC_VA.store(va, Ordering::SeqCst);
    if read(va, 0x01) == u32::MAX {
        return Err(IrqError::NoController);
    }
    Ok(va)
}

/// Reads IOAPIC register `reg`.
fn read(va: u64, reg: u32) -> u32 {
    // SAFETY: `va` maps the IOAPIC's register page (device memory, not
    // memory Rust owns); IOREGSEL is at +0x00 and IOWIN at +0x10, both
    // 32-bit registers accessed with 32-bit volatile operations.
    unsafe {
        core::ptr::write_volatile(va as *mut u32, reg);
        core::ptr::read_volatile((va + 0x10) as *const u32)
    }
}

/// Writes IOAPIC register `reg`.
fn write(va: u64, reg: u32, value: u32) {
    // SAFETY: as in `read`.
    unsafe {
        core::ptr::write_volatile(va as *mut u32, reg);
        core::ptr::write_volatile((va + 0x10) as *mut u32, value);
    }
}

/// Routes `line` to `handler`; returns the vector it uses.
pub fn register(line: u8, handler: Handler) -> Result<u8, IrqError> {
    if line >= LINES {
        return Err(IrqError::BadLine(line));
    }
    if cfg!(kiln_linuxu) {
        // linuxu's "interrupts" are signals (SIGIO for the network
        // channel): there is no controller to program.
        let vector = FIRST_DEVICE_VECTOR + line;
        upcall::register(vector, handler).map_err(|_| IrqError::Busy(line))?;
        return Ok(vector);
    }
    let va = ioapic()?;
    // A software-disabled local APIC accepts no interrupts at all.
    crate::platform::x2apic::configure().map_err(|_| IrqError::NoController)?;
    let vector = FIRST_DEVICE_VECTOR + line;
    upcall::register(vector, handler).map_err(|_| IrqError::Busy(line))?;
    let reg = 0x10 + 2 * u32::from(line);
    write(va, reg + 1, 0); // destination: APIC 0
    write(va, reg, u32::from(vector)); // fixed, physical, edge, high, unmasked
    Ok(vector)
}

/// Masks `line` and removes its handler.
pub fn unregister(line: u8) {
    if line >= LINES {
        return;
    }
    if let Ok(va) = ioapic() {
        write(va, 0x10 + 2 * u32::from(line), 1 << 16);
    }
    upcall::unregister(FIRST_DEVICE_VECTOR + line);
}

/// The "wake-up pending" flag the supervisor's halt checks (PVH images:
/// the `kiln_wake_pending` byte in the supervisor's user data; elsewhere
/// a plain static).
#[cfg(all(kiln_guest, not(kiln_linuxu)))]
fn wake_flag() -> &'static core::sync::atomic::AtomicU8 {
    unsafe extern "C" {
        /// Defined in supervisor.S (user-writable bss); read by `sc_halt`.
        static kiln_wake_pending: core::sync::atomic::AtomicU8;
    }
    // SAFETY: the symbol is one byte of zero-initialised, user-writable
    // memory that lives for the whole run; AtomicU8 has the layout of u8,
    // and the supervisor only reads it.
    unsafe { &kiln_wake_pending }
}

#[cfg(not(all(kiln_guest, not(kiln_linuxu))))]
fn wake_flag() -> &'static core::sync::atomic::AtomicU8 {
    static FLAG: core::sync::atomic::AtomicU8 = core::sync::atomic::AtomicU8::new(0);
    &FLAG
}

/// Posts a wake-up (from an interrupt handler): the next halt returns at
/// once instead of sleeping, so an interrupt that lands between a waiter's
/// last check and its halt is not lost.
pub fn post_wake() {
    wake_flag().store(1, Ordering::SeqCst);
}

/// Whether a wake-up is posted (without clearing it).
pub fn wake_posted() -> bool {
    wake_flag().load(Ordering::SeqCst) != 0
}

/// Clears the posted wake-up; returns whether one was pending. Call it
/// before checking for work, then halt only if there is none.
pub fn take_wake() -> bool {
    wake_flag().swap(0, Ordering::SeqCst) != 0
}
