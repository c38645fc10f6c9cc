//! Guest-physical memory layout of the embedded VMM.
//!
//! ```text
//! 0x0000_0000  page 0 (unmapped by the guest: null page)
//! 0x0000_6000  PVH start info (56 bytes), then the memory map
//! 0x0000_7000  command line (up to 4095 bytes + NUL)
//! 0x0009_fc00  end of low RAM
//! 0x0010_0000  the image (IMAGE_BASE), then free RAM up to the end of memory
//! ```

/// Where the PVH start info goes.
pub const START_INFO_ADDR: u64 = 0x6000;
/// Where the memory map goes (right after the start info).
pub const MEMMAP_ADDR: u64 = START_INFO_ADDR + 64;
/// Where the module list goes (one entry: the initrd).
pub const MODLIST_ADDR: u64 = 0x6800;
/// Where the command line goes.
pub const CMDLINE_ADDR: u64 = 0x7000;
/// End of the low RAM range.
pub const LOW_RAM_END: u64 = 0x9_fc00;
/// The smallest guest memory the VMM accepts: the image base plus 128 KiB.
/// Whether an image fits is the guest's to say (it reports "give the guest
/// more memory with -m" and exits with `OUT_OF_MEMORY`).
pub const MIN_MEMORY_BYTES: u64 = kiln_abi::IMAGE_BASE + (128 << 10);
/// The largest guest memory (below the 32-bit MMIO hole).
pub const MAX_MEMORY_BYTES: u64 = 3 << 30;

/// RAM ranges `(start, len)` for a guest of `memory_bytes`.
pub fn ram_ranges(memory_bytes: u64) -> Vec<(u64, u64)> {
    let mut ranges = vec![(0, LOW_RAM_END.min(memory_bytes))];
    if memory_bytes > kiln_abi::IMAGE_BASE {
        ranges.push((kiln_abi::IMAGE_BASE, memory_bytes - kiln_abi::IMAGE_BASE));
    }
    ranges
}

/// Where an initrd of `size` bytes goes: the top of the memory the guest
/// can read (its identity map ends at 1 GiB), page aligned.
pub fn initrd_addr(memory_bytes: u64, size: u64) -> Option<u64> {
    let top = memory_bytes.min(kiln_abi::IDENTITY_MAP_BYTES);
    top.checked_sub(size)
        .map(|a| a / kiln_abi::PAGE_SIZE * kiln_abi::PAGE_SIZE)
}

/// The module-list entry for an initrd at `addr` of `size` bytes.
pub fn modlist_bytes(addr: u64, size: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(32);
    for v in [addr, size, 0, 0] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// The PVH start info and memory map, as bytes to write at
/// [`START_INFO_ADDR`]; `initrd` is `(addr, size)` of a module, whose pages
/// the map marks reserved.
pub fn start_info_bytes(
    memory_bytes: u64,
    cmdline_present: bool,
    initrd: Option<(u64, u64)>,
) -> Vec<u8> {
    let mut ranges: Vec<(u64, u64, u32)> = ram_ranges(memory_bytes)
        .into_iter()
        .map(|(s, l)| (s, l, kiln_abi::pvh::MEMMAP_TYPE_RAM))
        .collect();
    if let Some((addr, size)) = initrd {
        let end = (addr + size).next_multiple_of(kiln_abi::PAGE_SIZE);
        if let Some(high) = ranges.last_mut() {
            // The initrd sits at the top of the high range (or below 1 GiB).
            let high_end = high.0 + high.1;
            high.1 = addr - high.0;
            ranges.push((addr, end - addr, kiln_abi::pvh::MEMMAP_TYPE_RESERVED));
            if high_end > end {
                ranges.push((end, high_end - end, kiln_abi::pvh::MEMMAP_TYPE_RAM));
            }
        }
    }
    let mut out = Vec::with_capacity(64 + ranges.len() * 24);
    out.extend_from_slice(&kiln_abi::pvh::START_INFO_MAGIC.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes()); // version
    out.extend_from_slice(&0u32.to_le_bytes()); // flags
    out.extend_from_slice(&u32::from(initrd.is_some()).to_le_bytes()); // nr_modules
    let modlist = if initrd.is_some() { MODLIST_ADDR } else { 0 };
    out.extend_from_slice(&modlist.to_le_bytes());
    let cmdline = if cmdline_present { CMDLINE_ADDR } else { 0 };
    out.extend_from_slice(&cmdline.to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes()); // rsdp_paddr
    out.extend_from_slice(&MEMMAP_ADDR.to_le_bytes());
    out.extend_from_slice(&(ranges.len() as u32).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes()); // reserved
    out.resize((MEMMAP_ADDR - START_INFO_ADDR) as usize, 0);
    for (start, len, kind) in ranges {
        out.extend_from_slice(&start.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&kind.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
    }
    debug_assert!(START_INFO_ADDR + out.len() as u64 <= MODLIST_ADDR);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_info_matches_the_abi_layout() {
        let bytes = start_info_bytes(16 << 20, true, None);
        let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap());
        assert_eq!(u32_at(0), kiln_abi::pvh::START_INFO_MAGIC);
        assert_eq!(u32_at(4), 1);
        assert_eq!(
            u64_at(core::mem::offset_of!(
                kiln_abi::pvh::StartInfo,
                cmdline_paddr
            )),
            CMDLINE_ADDR
        );
        assert_eq!(
            u64_at(core::mem::offset_of!(
                kiln_abi::pvh::StartInfo,
                memmap_paddr
            )),
            MEMMAP_ADDR
        );
        assert_eq!(
            u32_at(core::mem::offset_of!(
                kiln_abi::pvh::StartInfo,
                memmap_entries
            )),
            2
        );
        let e = (MEMMAP_ADDR - START_INFO_ADDR) as usize + 24;
        assert_eq!(u64_at(e), 0x10_0000);
        assert_eq!(u64_at(e + 8), (16 << 20) - 0x10_0000);
        const { assert!(MEMMAP_ADDR + 2 * 24 <= CMDLINE_ADDR) };
    }

    #[test]
    fn an_initrd_is_reserved_at_the_top() {
        let addr = initrd_addr(16 << 20, 10_000).unwrap();
        assert_eq!(addr, (16 << 20) - 12_288);
        let bytes = start_info_bytes(16 << 20, true, Some((addr, 10_000)));
        let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap());
        assert_eq!(u32_at(12), 1, "one module");
        assert_eq!(u64_at(16), MODLIST_ADDR);
        assert_eq!(u32_at(48), 3, "low RAM, high RAM, reserved initrd");
        let third = (MEMMAP_ADDR - START_INFO_ADDR) as usize + 48;
        assert_eq!(u64_at(third), addr);
        assert_eq!(u32_at(third + 16), kiln_abi::pvh::MEMMAP_TYPE_RESERVED);
        assert_eq!(
            initrd_addr(2 << 30, 4096),
            Some((1 << 30) - 4096),
            "stays readable below 1 GiB"
        );
        assert_eq!(initrd_addr(4096, 8192), None);
    }

    #[test]
    fn small_memory_has_low_and_high_ranges() {
        assert_eq!(
            ram_ranges(2 << 20),
            vec![(0, LOW_RAM_END), (0x10_0000, 0x10_0000)]
        );
    }
}
