//! A plain-bytes sanity check of an image before linux-loader loads it.
//!
//! linux-loader's errors are correct but terse ("Invalid entry address");
//! this names the actual problem — a truncated file, a PIE or shared
//! object, another architecture, a segment outside guest memory — so the
//! user learns what to fix. It reads only the ELF and program headers.

use crate::VmmError;

const PT_LOAD: u32 = 1;

fn u16_at(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(o..o + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], o: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(o..o + 8)?.try_into().ok()?))
}

/// Checks `image` is a complete x86_64 executable ELF whose loadable
/// segments fit below `memory_bytes`.
pub fn check(image: &[u8], memory_bytes: u64) -> Result<(), VmmError> {
    let bad = |why: String| VmmError::BadImage(why);
    if image.len() < 64 || &image[..4] != b"\x7fELF" {
        return Err(bad("it does not start with an ELF header".into()));
    }
    if image[4] != 2 || image[5] != 1 {
        return Err(bad("it is not a 64-bit little-endian ELF".into()));
    }
    let kind = u16_at(image, 16).unwrap_or(0);
    if kind != 2 {
        return Err(bad(format!(
            "it is an ELF of type {kind} (3 = shared object or PIE), not a statically linked executable"
        )));
    }
    let machine = u16_at(image, 18).unwrap_or(0);
    if machine != 0x3e {
        return Err(bad(format!("it is for machine {machine:#x}, not x86_64")));
    }
    let truncated = |needed: u64| {
        bad(format!(
            "the file is truncated: it has {} bytes but its headers need {needed}",
            image.len()
        ))
    };
    let phoff = u64_at(image, 32).unwrap_or(0);
    let phentsize = u64::from(u16_at(image, 54).unwrap_or(0));
    let phnum = u64::from(u16_at(image, 56).unwrap_or(0));
    if phentsize < 56 {
        return Err(bad(format!("program header size {phentsize} is too small")));
    }
    let table_end = phoff.saturating_add(phentsize.saturating_mul(phnum));
    if table_end > image.len() as u64 {
        return Err(truncated(table_end));
    }
    let mut needed = 0u64;
    for i in 0..phnum {
        let o = (phoff + i * phentsize) as usize;
        if u32_at(image, o) != Some(PT_LOAD) {
            continue;
        }
        let offset = u64_at(image, o + 8).unwrap_or(0);
        let paddr = u64_at(image, o + 24).unwrap_or(0);
        let filesz = u64_at(image, o + 32).unwrap_or(0);
        let memsz = u64_at(image, o + 40).unwrap_or(0);
        let file_end = offset.saturating_add(filesz);
        if file_end > image.len() as u64 {
            return Err(truncated(file_end));
        }
        needed = needed.max(paddr.saturating_add(memsz));
        if paddr < kiln_abi::IMAGE_BASE {
            return Err(bad(format!(
                "a segment loads at {paddr:#x}, below the Kiln image base {:#x}",
                kiln_abi::IMAGE_BASE
            )));
        }
    }
    if needed > memory_bytes {
        return Err(VmmError::ImageTooLarge {
            needed_bytes: needed,
            memory_bytes,
        });
    }
    Ok(())
}

/// End of the highest loadable segment (for placing modules after it).
pub fn image_end(image: &[u8]) -> Option<u64> {
    let phoff = u64_at(image, 32)?;
    let phentsize = u64::from(u16_at(image, 54)?);
    let phnum = u64::from(u16_at(image, 56)?);
    (0..phnum)
        .filter_map(|i| {
            let o = usize::try_from(phoff + i * phentsize).ok()?;
            if u32_at(image, o)? != PT_LOAD {
                return None;
            }
            Some(u64_at(image, o + 24)?.saturating_add(u64_at(image, o + 40)?))
        })
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF header + one PT_LOAD, patched by each test.
    fn elf(paddr: u64, filesz: u64, memsz: u64, total_len: usize) -> Vec<u8> {
        let mut b = vec![0u8; total_len.max(120)];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[5] = 1;
        b[16..18].copy_from_slice(&2u16.to_le_bytes());
        b[18..20].copy_from_slice(&0x3eu16.to_le_bytes());
        b[32..40].copy_from_slice(&64u64.to_le_bytes());
        b[54..56].copy_from_slice(&56u16.to_le_bytes());
        b[56..58].copy_from_slice(&1u16.to_le_bytes());
        b[64..68].copy_from_slice(&PT_LOAD.to_le_bytes());
        b[72..80].copy_from_slice(&0u64.to_le_bytes());
        b[88..96].copy_from_slice(&paddr.to_le_bytes());
        b[96..104].copy_from_slice(&filesz.to_le_bytes());
        b[104..112].copy_from_slice(&memsz.to_le_bytes());
        b.truncate(total_len.max(120));
        b
    }

    fn message(r: Result<(), VmmError>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn a_good_header_passes() {
        assert!(check(&elf(0x10_0000, 120, 0x1000, 120), 2 << 20).is_ok());
    }

    #[test]
    fn truncation_is_named() {
        let m = message(check(&elf(0x10_0000, 5000, 5000, 200), 2 << 20));
        assert!(m.contains("truncated") && m.contains("5000"), "{m}");
        let mut b = elf(0x10_0000, 10, 10, 120);
        b[56..58].copy_from_slice(&9u16.to_le_bytes());
        assert!(message(check(&b, 2 << 20)).contains("truncated"));
    }

    #[test]
    fn pie_and_foreign_machines_are_named() {
        let mut b = elf(0x10_0000, 10, 10, 120);
        b[16] = 3;
        assert!(message(check(&b, 2 << 20)).contains("shared object or PIE"));
        let mut b = elf(0x10_0000, 10, 10, 120);
        b[18] = 0xb7;
        assert!(message(check(&b, 2 << 20)).contains("not x86_64"));
    }

    #[test]
    fn segments_must_fit_memory_and_sit_above_the_base() {
        assert!(matches!(
            check(&elf(0x10_0000, 10, 4 << 20, 120), 2 << 20),
            Err(VmmError::ImageTooLarge { .. })
        ));
        assert!(
            message(check(&elf(0x1000, 10, 10, 120), 2 << 20))
                .contains("below the Kiln image base")
        );
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x1234_5678u32;
        for len in [0usize, 1, 4, 63, 64, 65, 119, 200] {
            for _ in 0..200 {
                let mut b: Vec<u8> = (0..len)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 17;
                        seed ^= seed << 5;
                        seed as u8
                    })
                    .collect();
                if len >= 4 {
                    b[..4].copy_from_slice(b"\x7fELF");
                }
                let _ = check(&b, 2 << 20);
            }
        }
    }
}
