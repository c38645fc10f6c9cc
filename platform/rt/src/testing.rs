//! The runtime's side of in-guest tests: the [`kiln_ktest::Env`] a runner
//! hands to tests, backed by the frame allocator.

use kiln_ktest::Env;

/// Fresh zeroed memory for a test: whole frames, never freed.
fn memory(bytes: usize) -> Option<&'static mut [u8]> {
    let frames = bytes.div_ceil(4096).max(1);
    let start = crate::memory::alloc_frames(frames).ok()?;
    // SAFETY: the frames were just allocated for this caller alone and are
    // never freed; they are RAM mapped read-write (identity map on PVH, the
    // RAM memfd on linuxu); page alignment satisfies u8.
    let slice = unsafe { core::slice::from_raw_parts_mut(start as usize as *mut u8, bytes) };
    slice.fill(0);
    Some(slice)
}

fn words(words: usize) -> Option<&'static mut [u64]> {
    let frames = (words * 8).div_ceil(4096).max(1);
    let start = crate::memory::alloc_frames(frames).ok()?;
    // SAFETY: as in `memory`; frames are page aligned, so u64-aligned.
    let slice = unsafe { core::slice::from_raw_parts_mut(start as usize as *mut u64, words) };
    slice.fill(0);
    Some(slice)
}

/// The environment in-guest tests run with on this platform.
pub fn env() -> Env {
    Env {
        memory,
        words,
        platform: <kiln_hal::platform::Current as kiln_hal::platform::Platform>::NAME,
    }
}

/// Prints for `kiln_ktest::run`.
pub fn print(args: core::fmt::Arguments<'_>) {
    crate::print!("{args}");
}

/// In-guest tests of the runtime: frames and the global heap.
pub mod ktests {
    use alloc::boxed::Box;
    use alloc::collections::BTreeMap;
    use alloc::string::String;
    use alloc::vec::Vec;

    use kiln_ktest::{Env, Outcome, Suite, check, check_eq, test};

    fn frames_are_distinct_and_come_back(_: &mut Env) -> Outcome {
        let before = crate::memory::stats().free_frames;
        let a = crate::memory::alloc_frames(3);
        let b = crate::memory::alloc_frames(1);
        check!(a.is_ok() && b.is_ok(), "allocation failed: {a:?} {b:?}");
        let (a, b) = (a.unwrap_or(0), b.unwrap_or(0));
        check!(a % 4096 == 0 && b % 4096 == 0, "frames not page aligned");
        check!(b >= a + 3 * 4096 || b + 4096 <= a, "frames overlap");
        check!(crate::memory::free_frames(a, 3).is_ok());
        check!(crate::memory::free_frames(b, 1).is_ok());
        check!(
            crate::memory::free_frames(b, 1).is_err(),
            "double free accepted"
        );
        check_eq!(crate::memory::stats().free_frames, before);
        Ok(())
    }

    fn frame_exhaustion_is_an_error(_: &mut Env) -> Outcome {
        let too_many = crate::memory::stats().free_frames + 1;
        let r = crate::memory::alloc_frames(too_many);
        check!(r.is_err(), "allocated {too_many} frames with fewer free");
        Ok(())
    }

    fn heap_serves_collections(_: &mut Env) -> Outcome {
        let mut map = BTreeMap::new();
        for i in 0..1000u32 {
            map.insert(i, String::from("kiln") + &alloc::format!("{i}"));
        }
        check_eq!(map.get(&999).map(String::as_str), Some("kiln999"));
        let v: Vec<u64> = (0..100_000).collect();
        check_eq!(v.iter().sum::<u64>(), 4_999_950_000);
        let boxed: Box<[u8]> = alloc::vec![7u8; 1 << 20].into_boxed_slice();
        check!(boxed.iter().all(|b| *b == 7));
        Ok(())
    }

    fn heap_exhaustion_is_reported_not_hung(_: &mut Env) -> Outcome {
        let mut v: Vec<u8> = Vec::new();
        let r = v.try_reserve(1 << 40);
        check!(r.is_err(), "reserved 1 TiB");
        Ok(())
    }

    /// The suite.
    pub const SUITE: Suite = &[
        test!(frames_are_distinct_and_come_back),
        test!(frame_exhaustion_is_an_error),
        test!(heap_serves_collections),
        test!(heap_exhaustion_is_reported_not_hung),
    ];
}
