//! Random bytes for `/dev/urandom` and `getrandom`.
//!
//! [`fill`] uses the CPU's `RDRAND` instruction, which runs at CPL3 (so it
//! works on every platform, linuxu included) and draws from the on-chip
//! DRBG. Where the CPU lacks it (CPUID.1:ECX bit 30) or it keeps failing,
//! the bytes come from a SplitMix64 stream seeded by the time-stamp
//! counter: unpredictable enough for hash seeds, **not** for keys;
//! [`hardware_backed`] says which one is in use.

use core::sync::atomic::{AtomicU64, Ordering};

/// Whether the CPU has RDRAND.
pub fn hardware_backed() -> bool {
    // CPUID leaf 1 exists on every x86-64 CPU.
    let leaf = core::arch::x86_64::__cpuid(1);
    leaf.ecx & (1 << 30) != 0
}

/// One RDRAND draw. Calling it is `unsafe` (a target-feature function):
/// the caller must have checked that the CPU has RDRAND.
#[target_feature(enable = "rdrand")]
fn rdrand64() -> Option<u64> {
    let mut value = 0u64;
    // RDRAND may transiently fail; Intel advises ten retries.
    for _ in 0..10 {
        if core::arch::x86_64::_rdrand64_step(&mut value) == 1 {
            return Some(value);
        }
    }
    None
}

static FALLBACK_STATE: AtomicU64 = AtomicU64::new(0);

fn splitmix64() -> u64 {
    let seed = crate::time::rdtsc() | 1;
    // The first call mixes in the TSC; later ones advance the stream.
    let _ = FALLBACK_STATE.compare_exchange(0, seed, Ordering::Relaxed, Ordering::Relaxed);
    let mut z = FALLBACK_STATE
        .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
        .wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn next_u64(hardware: bool) -> u64 {
    if hardware {
        // SAFETY: `hardware` is `hardware_backed()`, the CPUID check that
        // the CPU has RDRAND.
        if let Some(v) = unsafe { rdrand64() } {
            return v;
        }
    }
    splitmix64()
}

/// Fills `buf` with random bytes.
pub fn fill(buf: &mut [u8]) {
    let hardware = hardware_backed();
    for chunk in buf.chunks_mut(8) {
        let bytes = next_u64(hardware).to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_every_length_and_differs_between_calls() {
        for len in [0usize, 1, 7, 8, 9, 64] {
            let mut a = [0u8; 64];
            let a = &mut a[..len];
            fill(a);
            assert_eq!(a.len(), len);
        }
        let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
        fill(&mut a);
        fill(&mut b);
        assert_ne!(a, b, "two 32-byte draws must differ");
        assert_ne!(a, [0u8; 32]);
    }

    #[test]
    fn fallback_stream_is_not_constant() {
        let (x, y) = (splitmix64(), splitmix64());
        assert_ne!(x, y);
    }
}
