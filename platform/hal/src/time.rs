//! Time: a monotonic clock and sleeping.
//!
//! [`now_ns`] counts nanoseconds since an arbitrary point at boot. On PVH it
//! reads the TSC (unprivileged, no exit) scaled by its frequency, taken
//! from the hypervisor timing leaf `0x4000_0010` (the embedded VMM sets
//! it), else CPUID leaf `0x15`, else measured once against the local-APIC
//! timer. On linuxu it is `clock_gettime(CLOCK_MONOTONIC)`.
//!
//! [`sleep_us`] halts with the one-shot timer armed for the time left
//! (atomically: `Platform::halt_for_us`) until the deadline has passed, so
//! it never returns early; it falls back to polling the clock when another
//! handler owns the timer vector.
//!
//! Limits: no wall clock yet (RTC/kvmclock); one timer user at a time.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::platform::{Current, Platform};

/// Nanoseconds since boot (monotonic).
pub fn now_ns() -> u64 {
    Current::monotonic_ns()
}

/// Nanoseconds since the Unix epoch (UTC): the wall clock, if the
/// platform has one (the CMOS RTC on VMs, read once and then advanced with
/// the monotonic clock; `CLOCK_REALTIME` on linuxu).
pub fn wall_clock_ns() -> Option<u64> {
    Current::wall_clock_ns()
}

/// Wall-clock offset: Unix-epoch ns at monotonic 0 (0 = not read yet).
static WALL_OFFSET_NS: AtomicU64 = AtomicU64::new(0);

/// The RTC's time, read once (PVH).
pub(crate) fn rtc_wall_clock_ns() -> Option<u64> {
    let mut offset = WALL_OFFSET_NS.load(Ordering::Relaxed);
    if offset == 0 {
        let secs = read_rtc_unix_secs()?;
        offset = (secs * 1_000_000_000).saturating_sub(now_ns());
        WALL_OFFSET_NS.store(offset, Ordering::Relaxed);
    }
    Some(offset + now_ns())
}

/// Reads the CMOS RTC: waits out an update, reads until two reads agree.
fn read_rtc_unix_secs() -> Option<u64> {
    use crate::arch::x86_64::{inb, outb};
    use kiln_abi::port::{CMOS_DATA, CMOS_INDEX};
    use kiln_abi::rtc::*;
    let reg = |r: u8| {
        outb(CMOS_INDEX, r);
        inb(CMOS_DATA)
    };
    if reg(REG_STATUS_A) == 0xff && reg(REG_STATUS_B) == 0xff {
        return None; // nothing answers: no RTC (the bus floats high)
    }
    let snapshot = || {
        for _ in 0..1000 {
            if reg(REG_STATUS_A) & 0x80 == 0 {
                break;
            }
        }
        [
            REG_SECONDS,
            REG_MINUTES,
            REG_HOURS,
            REG_DAY,
            REG_MONTH,
            REG_YEAR,
            REG_CENTURY,
        ]
        .map(reg)
    };
    let mut raw = snapshot();
    for _ in 0..5 {
        let again = snapshot();
        if again == raw {
            break;
        }
        raw = again;
    }
    let status_b = reg(REG_STATUS_B);
    if raw.iter().all(|b| *b == 0xff) {
        return None; // no RTC answers
    }
    let value = |b: u8| {
        if status_b & 0x04 != 0 {
            u32::from(b)
        } else {
            from_bcd(b)
        }
    };
    let mut hour = value(raw[2] & 0x7f);
    if status_b & 0x02 == 0 && raw[2] & 0x80 != 0 {
        hour = (hour % 12) + 12; // 12-hour mode, PM
    }
    let century = match value(raw[6]) {
        c @ 19..=29 => c,
        _ => 20,
    };
    DateTime {
        year: i64::from(century * 100 + value(raw[5])),
        month: value(raw[4]),
        day: value(raw[3]),
        hour,
        minute: value(raw[1]),
        second: value(raw[0]),
    }
    .to_unix()
}

/// Microseconds since boot (monotonic).
pub fn now_us() -> u64 {
    now_ns() / 1000
}

/// The timer only has to end the halt.
fn on_timer(_: &mut crate::upcall::UpcallFrame) {}

/// Sleeps at least `us` microseconds.
pub fn sleep_us(us: u64) {
    let deadline = now_ns().saturating_add(us.saturating_mul(1000));
    let vector = kiln_abi::upcall::TIMER_VECTOR;
    let owned = crate::upcall::register(vector, on_timer).is_ok();
    loop {
        let now = now_ns();
        if now >= deadline {
            break;
        }
        if owned {
            Current::halt_for_us((deadline - now).div_ceil(1000));
        } else {
            core::hint::spin_loop();
        }
    }
    if owned {
        crate::upcall::unregister(vector);
    }
}

/// Sleeps at least `ms` milliseconds.
pub fn sleep_ms(ms: u64) {
    sleep_us(ms.saturating_mul(1000));
}

/// TSC ticks per millisecond (0 until known), and the TSC at calibration.
static TSC_PER_MS: AtomicU64 = AtomicU64::new(0);
static TSC_ORIGIN: AtomicU64 = AtomicU64::new(0);

/// Reads the time-stamp counter.
pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: rdtsc is unprivileged (CR4.TSD is clear) and only reads.
    unsafe {
        core::arch::asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    };
    u64::from(hi) << 32 | u64::from(lo)
}

fn cpuid(leaf: u32) -> (u32, u32, u32, u32) {
    let r = core::arch::x86_64::__cpuid_count(leaf, 0);
    (r.eax, r.ebx, r.ecx, r.edx)
}

/// TSC ticks per millisecond as CPUID publishes them (cached), if it does.
pub(crate) fn tsc_per_ms_published() -> Option<u64> {
    static CACHED: AtomicU64 = AtomicU64::new(u64::MAX);
    match CACHED.load(Ordering::Relaxed) {
        u64::MAX => {
            let v = tsc_per_ms_from_cpuid();
            CACHED.store(v.unwrap_or(0), Ordering::Relaxed);
            v
        }
        0 => None,
        v => Some(v),
    }
}

/// TSC ticks per millisecond from CPUID, if it says.
fn tsc_per_ms_from_cpuid() -> Option<u64> {
    let (hv_max, ..) = cpuid(0x4000_0000);
    if (0x4000_0010..0x5000_0000).contains(&hv_max) {
        let (khz, ..) = cpuid(0x4000_0010);
        if khz != 0 {
            return Some(u64::from(khz));
        }
    }
    let (max, ..) = cpuid(0);
    if max >= 0x15 {
        let (den, num, crystal_hz, _) = cpuid(0x15);
        if den != 0 && num != 0 && crystal_hz != 0 {
            return Some(u64::from(crystal_hz) * u64::from(num) / u64::from(den) / 1000);
        }
    }
    None
}

/// TSC ticks per millisecond measured against the local-APIC timer.
///
/// Two one-shots (1 ms and 5 ms) are timed and the slope taken, so the
/// fixed cost of delivering the interrupt cancels out (under QEMU it adds
/// a good fraction of a millisecond).
fn tsc_per_ms_measured() -> u64 {
    static FIRED: AtomicBool = AtomicBool::new(false);
    fn fired(_: &mut crate::upcall::UpcallFrame) {
        FIRED.store(true, Ordering::SeqCst);
    }
    let vector = kiln_abi::upcall::TIMER_VECTOR;
    if crate::upcall::register(vector, fired).is_err() {
        return 1_000_000; // assume 1 GHz rather than hang
    }
    let time_one_shot = |ms: u64| {
        FIRED.store(false, Ordering::SeqCst);
        let start = rdtsc();
        let armed = crate::timer::oneshot_us(ms * 1000).is_ok();
        while armed && !FIRED.load(Ordering::SeqCst) && rdtsc() - start < 20_000_000_000 {
            core::hint::spin_loop();
        }
        rdtsc() - start
    };
    let short = time_one_shot(1);
    let long = time_one_shot(5);
    crate::upcall::unregister(vector);
    (long.saturating_sub(short) / 4).max(1)
}

/// Monotonic nanoseconds from the TSC (PVH).
pub(crate) fn tsc_monotonic_ns() -> u64 {
    let mut per_ms = TSC_PER_MS.load(Ordering::Relaxed);
    if per_ms == 0 {
        TSC_ORIGIN.store(rdtsc(), Ordering::SeqCst);
        per_ms = tsc_per_ms_published().unwrap_or_else(tsc_per_ms_measured);
        TSC_PER_MS.store(per_ms, Ordering::SeqCst);
    }
    let ticks = rdtsc().wrapping_sub(TSC_ORIGIN.load(Ordering::Relaxed));
    (u128::from(ticks) * 1_000_000 / u128::from(per_ms)) as u64
}

/// TSC ticks per millisecond in use (0 before the clock was first read).
pub fn tsc_per_ms() -> u64 {
    TSC_PER_MS.load(Ordering::Relaxed)
}

/// In-guest tests of the clock and sleeping.
pub mod ktests {
    use kiln_ktest::{Env, Outcome, Suite, check, test};

    use super::{now_ns, sleep_ms, sleep_us};

    fn clock_is_monotonic_and_advances(_: &mut Env) -> Outcome {
        let mut last = now_ns();
        for _ in 0..10_000 {
            let t = now_ns();
            check!(t >= last, "clock went back from {last} to {t}");
            last = t;
        }
        let before = now_ns();
        sleep_us(200);
        let slept = now_ns() - before;
        check!(slept >= 200_000, "a 200 us sleep took {slept} ns");
        Ok(())
    }

    fn sleep_10ms_waits_at_least_10ms(_: &mut Env) -> Outcome {
        let before = now_ns();
        sleep_ms(10);
        let ms = (now_ns() - before) as f64 / 1e6;
        // The bound above only catches gross errors (wrong units, a
        // missed wake-up): a loaded host may delay the guest, and timings
        // are measured in bench/, not asserted here.
        check!((10.0..200.0).contains(&ms), "a 10 ms sleep took {ms:.3} ms");
        Ok(())
    }

    fn sleep_1ms_waits_at_least_1ms(_: &mut Env) -> Outcome {
        let before = now_ns();
        sleep_ms(1);
        let ms = (now_ns() - before) as f64 / 1e6;
        check!((1.0..200.0).contains(&ms), "a 1 ms sleep took {ms:.3} ms");
        Ok(())
    }

    fn zero_sleep_returns_at_once(_: &mut Env) -> Outcome {
        let before = now_ns();
        sleep_us(0);
        let us = (now_ns() - before) / 1000;
        check!(us < 100_000, "a zero sleep took {us} us");
        Ok(())
    }

    fn tsc_frequency_is_plausible(_: &mut Env) -> Outcome {
        let _ = now_ns();
        let per_ms = super::tsc_per_ms();
        check!(
            (100_000..10_000_000).contains(&per_ms),
            "TSC runs at {per_ms} kHz"
        );
        Ok(())
    }

    fn wall_clock_is_plausible_and_advances(_: &mut Env) -> Outcome {
        let Some(first) = super::wall_clock_ns() else {
            check!(false, "the platform has no wall clock");
            return Ok(());
        };
        // 2020-01-01 .. 2100-01-01
        check!(
            (1_577_836_800_000_000_000..4_102_444_800_000_000_000).contains(&first),
            "wall clock reads {first} ns"
        );
        sleep_ms(2);
        let second = super::wall_clock_ns().unwrap_or(0);
        check!(
            second >= first + 2_000_000,
            "the wall clock did not advance with time"
        );
        Ok(())
    }

    fn timer_uses_tsc_deadline_where_available(_: &mut Env) -> Outcome {
        sleep_us(100); // arms the timer at least once
        let has_deadline = core::arch::x86_64::__cpuid(1).ecx & (1 << 24) != 0;
        let has_x2apic = core::arch::x86_64::__cpuid(1).ecx & (1 << 21) != 0;
        let expected = if !has_x2apic {
            "xapic-one-shot"
        } else if has_deadline && super::tsc_per_ms_published().is_some() {
            "tsc-deadline"
        } else {
            "one-shot"
        };
        check!(
            crate::timer::mode() == expected,
            "timer mode {}, expected {expected}",
            crate::timer::mode()
        );
        Ok(())
    }

    /// The suite.
    pub const SUITE: Suite = &[
        test!(timer_uses_tsc_deadline_where_available, requires = "pvh"),
        test!(wall_clock_is_plausible_and_advances),
        test!(clock_is_monotonic_and_advances),
        test!(sleep_10ms_waits_at_least_10ms),
        test!(sleep_1ms_waits_at_least_1ms),
        test!(zero_sleep_returns_at_once),
        test!(tsc_frequency_is_plausible, requires = "pvh"),
    ];
}
