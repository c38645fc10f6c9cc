//! Boot information: the PVH start info, read once and validated.
//!
//! The loader leaves a [`kiln_abi::pvh::StartInfo`] somewhere in low
//! memory. [`read`] copies what Kiln needs (the RAM ranges and the command
//! line) into [`BootInfo`] before any allocator could reuse that memory,
//! and rejects anything implausible with a [`BootInfoError`].

use kiln_abi::pvh::{self, MemmapEntry, StartInfo};

/// Most memory-map entries kept.
pub const MAX_RAM_RANGES: usize = 32;

/// One range of usable RAM.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RamRange {
    /// First byte.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
}

/// What the guest learned from its loader.
#[derive(Clone, Debug)]
pub struct BootInfo {
    /// Usable RAM ranges (memory-map type 1), in loader order.
    pub ram: [RamRange; MAX_RAM_RANGES],
    /// Entries of `ram` in use.
    pub ram_count: usize,
    /// The command line (bytes, no NUL).
    pub cmdline: [u8; pvh::CMDLINE_MAX_BYTES],
    /// Bytes of `cmdline` in use.
    pub cmdline_len: usize,
    /// Modules (initrds): physical address and size.
    pub modules: [RamRange; MAX_MODULES],
    /// Entries of `modules` in use.
    pub module_count: usize,
}

/// Most modules kept.
pub const MAX_MODULES: usize = 4;

/// The modules the loader passed (initrds), readable for the whole run.
static MODULES: spin::Once<alloc::vec::Vec<&'static [u8]>> = spin::Once::new();

/// linuxu host volumes: (channel fd, guest directory), from the
/// `volume=FD:GUEST` options the CLI passes.
static VOLUMES: spin::Once<alloc::vec::Vec<(u64, alloc::string::String)>> = spin::Once::new();

/// The parsed command line, for libraries that read kernel options.
static CMDLINE: spin::Once<kiln_abi::cmdline::Cmdline> = spin::Once::new();

/// Records the command line (once, before `main`).
#[cfg(kiln_guest)]
pub(crate) fn publish_cmdline(cmdline: &kiln_abi::cmdline::Cmdline) {
    CMDLINE.call_once(|| cmdline.clone());
}

/// The value of kernel option `key` (`key=value` before `--`; the last
/// one wins; `Some("")` for a bare `key`), e.g. the network's `ip=`.
pub fn option(key: &str) -> Option<&'static str> {
    CMDLINE.get().and_then(|c| c.option(key))
}

/// The host volumes of a linuxu process (empty on VMs, whose volumes are
/// virtio devices).
pub fn linuxu_volumes() -> &'static [(u64, alloc::string::String)] {
    VOLUMES.get().map_or(&[], |v| v.as_slice())
}

/// Records the `volume=FD:GUEST` options among `tokens` (once).
#[cfg(all(kiln_guest, kiln_linuxu))]
pub(crate) fn publish_linuxu_volumes<'a>(tokens: impl Iterator<Item = &'a str>) {
    VOLUMES.call_once(|| {
        tokens
            .take_while(|t| *t != "--")
            .filter_map(|t| t.strip_prefix("volume="))
            .filter_map(|v| v.split_once(':'))
            .filter_map(|(fd, guest)| Some((fd.parse().ok()?, alloc::string::String::from(guest))))
            .collect()
    });
}

/// The boot modules (initrds) the loader passed, in order.
pub fn modules() -> &'static [&'static [u8]] {
    MODULES.get().map_or(&[], |m| m.as_slice())
}

/// Makes the modules of `ranges` available to [`modules`] (once).
#[cfg(kiln_guest)]
pub(crate) fn publish_modules(ranges: &[RamRange]) {
    MODULES.call_once(|| {
        ranges
            .iter()
            .filter(|r| readable(r.start, r.len.max(1), 1) || cfg!(kiln_linuxu))
            .map(|r| {
                // SAFETY: the range is a module the loader placed in RAM it
                // marked reserved (or the linuxu entry mapped read-only),
                // kept out of every allocator (memory::init reserves it),
                // never written, and alive for the whole run.
                unsafe { core::slice::from_raw_parts(r.start as *const u8, r.len as usize) }
            })
            .collect()
    });
}

/// Why the boot information could not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootInfoError {
    /// The start-info address is null, unaligned or outside the identity map.
    BadAddress(u64),
    /// The start info does not carry the PVH magic value.
    BadMagic(u32),
    /// The start info has no memory map (version 0, or no entries).
    NoMemoryMap,
    /// The command line is longer than Kiln accepts or not UTF-8.
    BadCmdline,
}

impl core::fmt::Display for BootInfoError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::BadAddress(a) => write!(f, "PVH start info at {a:#x} is not readable"),
            Self::BadMagic(m) => write!(
                f,
                "PVH start info magic is {m:#x}, expected {:#x}",
                pvh::START_INFO_MAGIC
            ),
            Self::NoMemoryMap => {
                f.write_str("PVH start info has no memory map (version 1 required)")
            }
            Self::BadCmdline => write!(
                f,
                "command line is not UTF-8 or longer than {} bytes",
                pvh::CMDLINE_MAX_BYTES
            ),
        }
    }
}

impl BootInfo {
    /// The RAM ranges.
    pub fn ram(&self) -> &[RamRange] {
        &self.ram[..self.ram_count]
    }

    /// The modules.
    pub fn module_ranges(&self) -> &[RamRange] {
        &self.modules[..self.module_count]
    }

    /// The command line as text.
    pub fn cmdline(&self) -> &str {
        core::str::from_utf8(&self.cmdline[..self.cmdline_len]).unwrap_or("")
    }
}

/// Whether `[addr, addr + len)` can be read through the boot identity map
/// (not the unmapped null page, not the supervisor).
fn readable(addr: u64, len: u64, align: u64) -> bool {
    let Some(end) = addr.checked_add(len) else {
        return false;
    };
    let sup_start = kiln_abi::IMAGE_BASE;
    let sup_end = sup_start + kiln_abi::SUP_PAGES * kiln_abi::PAGE_SIZE;
    addr >= kiln_abi::PAGE_SIZE
        && addr.is_multiple_of(align)
        && end <= kiln_abi::IDENTITY_MAP_BYTES
        && (end <= sup_start || addr >= sup_end)
}

/// Reads `T` at guest-physical `addr` after checking it is readable.
fn read_phys<T: Copy>(addr: u64) -> Result<T, BootInfoError> {
    // Loaders need not align the records: QEMU's PVH option ROM puts its
    // module list at a 4-byte boundary (regression: fsdemo on qemu).
    if !readable(addr, core::mem::size_of::<T>() as u64, 1) {
        return Err(BootInfoError::BadAddress(addr));
    }
    // SAFETY: the range is inside the identity map (virtual == physical),
    // mapped user-readable (not the null page, not the supervisor), read
    // unaligned, and T is plain old data (start-info records of u32/u64).
    Ok(unsafe { core::ptr::read_unaligned(addr as *const T) })
}

/// Reads and validates the start info at `start_info_pa`.
pub fn read(start_info_pa: u64) -> Result<BootInfo, BootInfoError> {
    let si: StartInfo = read_phys(start_info_pa)?;
    if si.magic != pvh::START_INFO_MAGIC {
        return Err(BootInfoError::BadMagic(si.magic));
    }
    if si.version < 1 || si.memmap_entries == 0 {
        return Err(BootInfoError::NoMemoryMap);
    }
    let mut info = BootInfo {
        ram: [RamRange::default(); MAX_RAM_RANGES],
        ram_count: 0,
        cmdline: [0; pvh::CMDLINE_MAX_BYTES],
        cmdline_len: 0,
        modules: [RamRange::default(); MAX_MODULES],
        module_count: 0,
    };
    let entry_size = core::mem::size_of::<pvh::ModlistEntry>() as u64;
    for i in 0..u64::from(si.nr_modules).min(MAX_MODULES as u64) {
        let m: pvh::ModlistEntry = read_phys(si.modlist_paddr + i * entry_size)?;
        if m.size > 0 {
            if !readable(m.paddr, m.size, 1) {
                return Err(BootInfoError::BadAddress(m.paddr));
            }
            info.modules[info.module_count] = RamRange {
                start: m.paddr,
                len: m.size,
            };
            info.module_count += 1;
        }
    }
    let entry_size = core::mem::size_of::<MemmapEntry>() as u64;
    for i in 0..u64::from(si.memmap_entries) {
        let e: MemmapEntry = read_phys(si.memmap_paddr + i * entry_size)?;
        if e.kind == pvh::MEMMAP_TYPE_RAM && e.size > 0 && info.ram_count < MAX_RAM_RANGES {
            info.ram[info.ram_count] = RamRange {
                start: e.addr,
                len: e.size,
            };
            info.ram_count += 1;
        }
    }
    if si.cmdline_paddr != 0 {
        let mut len = 0;
        loop {
            let b: u8 = read_phys(si.cmdline_paddr + len as u64)?;
            if b == 0 {
                break;
            }
            if len == pvh::CMDLINE_MAX_BYTES {
                return Err(BootInfoError::BadCmdline);
            }
            info.cmdline[len] = b;
            len += 1;
        }
        info.cmdline_len = len;
        core::str::from_utf8(&info.cmdline[..len]).map_err(|_| BootInfoError::BadCmdline)?;
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_supervisor_and_high_addresses_are_unreadable() {
        assert!(!readable(0, 8, 8));
        assert!(!readable(0x100, 8, 8));
        assert!(readable(0x7000, 56, 8));
        assert!(!readable(0x7001, 8, 8));
        assert!(!readable(kiln_abi::IMAGE_BASE + 0x100, 8, 8));
        assert!(!readable(kiln_abi::IMAGE_BASE - 4, 8, 4));
        assert!(!readable(kiln_abi::IDENTITY_MAP_BYTES - 4, 8, 4));
        assert!(!readable(u64::MAX - 2, 8, 1));
    }
}

/// A Linux process's `argv`, read from its initial stack (linuxu).
#[derive(Clone, Copy, Debug)]
pub struct Argv {
    argc: usize,
    argv: *const *const u8,
}

impl Argv {
    /// Wraps the argument vector found at the initial stack pointer.
    ///
    /// # Safety
    /// `sp` is the stack pointer a Linux process started with (pointing at
    /// `argc`, then `argv[argc]` and a NULL), and that stack is never
    /// unwound (the strings must live for `'static`).
    pub unsafe fn from_initial_stack(sp: *const u64) -> Self {
        // SAFETY: per the caller, sp points at argc followed by argv.
        unsafe {
            Self {
                argc: *sp as usize,
                argv: sp.add(1).cast(),
            }
        }
    }

    fn bytes(&self, i: usize) -> &'static [u8] {
        // SAFETY: i < argc; argv[i] is a NUL-terminated string on the
        // initial stack, alive for the whole process (see the constructor).
        unsafe {
            let p = *self.argv.add(i);
            let mut len = 0;
            while *p.add(len) != 0 {
                len += 1;
            }
            core::slice::from_raw_parts(p, len)
        }
    }

    /// The first argument that is not UTF-8, if any.
    pub fn invalid(&self) -> Option<usize> {
        (0..self.argc).find(|&i| core::str::from_utf8(self.bytes(i)).is_err())
    }

    /// The arguments (including `argv[0]`); non-UTF-8 ones read as "".
    pub fn iter(&self) -> impl Iterator<Item = &'static str> + '_ {
        (0..self.argc).map(|i| core::str::from_utf8(self.bytes(i)).unwrap_or(""))
    }
}
