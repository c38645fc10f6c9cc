//! PVH boot information (Xen's `hvm_start_info`, version 1).
//!
//! A PVH loader enters the image's 32-bit entry point (named by an ELF note
//! of type [`XEN_ELFNOTE_PHYS32_ENTRY`]) with `ebx` holding the physical
//! address of a [`StartInfo`]. Hosts build one with linux-loader; guests
//! read it through these definitions.

/// ELF note type that names the PVH 32-bit entry point.
pub const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

/// `StartInfo::magic` value.
pub const START_INFO_MAGIC: u32 = 0x336e_c578;

/// Memory-map entry type of usable RAM.
pub const MEMMAP_TYPE_RAM: u32 = 1;

/// `hvm_start_info` as the loader writes it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StartInfo {
    /// Must be [`START_INFO_MAGIC`].
    pub magic: u32,
    /// Structure version (0 has no memory map, 1 has).
    pub version: u32,
    /// Flags (unused by Kiln).
    pub flags: u32,
    /// Number of modules.
    pub nr_modules: u32,
    /// Physical address of the module list.
    pub modlist_paddr: u64,
    /// Physical address of the NUL-terminated command line, or 0.
    pub cmdline_paddr: u64,
    /// Physical address of the ACPI RSDP, or 0.
    pub rsdp_paddr: u64,
    /// Physical address of the memory map (version 1).
    pub memmap_paddr: u64,
    /// Number of [`MemmapEntry`] records.
    pub memmap_entries: u32,
    /// Reserved.
    pub reserved: u32,
}

/// One memory-map entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemmapEntry {
    /// Start address.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// [`MEMMAP_TYPE_RAM`] or another E820 type.
    pub kind: u32,
    /// Reserved.
    pub reserved: u32,
}

/// One entry of the module list (`hvm_modlist_entry`): an initrd.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ModlistEntry {
    /// Physical address of the module.
    pub paddr: u64,
    /// Its size in bytes.
    pub size: u64,
    /// Physical address of its command line, or 0.
    pub cmdline_paddr: u64,
    /// Reserved.
    pub reserved: u64,
}

/// Memory-map entry type of reserved memory (e.g. where the initrd lies).
pub const MEMMAP_TYPE_RESERVED: u32 = 2;

/// Longest command line Kiln hosts pass (bytes, without the NUL).
pub const CMDLINE_MAX_BYTES: usize = 4095;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_match_the_xen_abi() {
        assert_eq!(core::mem::size_of::<StartInfo>(), 56);
        assert_eq!(core::mem::offset_of!(StartInfo, cmdline_paddr), 24);
        assert_eq!(core::mem::offset_of!(StartInfo, memmap_paddr), 40);
        assert_eq!(core::mem::offset_of!(StartInfo, memmap_entries), 48);
        assert_eq!(core::mem::size_of::<MemmapEntry>(), 24);
    }
}
