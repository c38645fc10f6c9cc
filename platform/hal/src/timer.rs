//! A one-shot timer interrupt, the seed of the clock and scheduler work.
//!
//! [`oneshot_us`] raises vector [`kiln_abi::upcall::TIMER_VECTOR`] once,
//! after about the given time: through the x2APIC timer on PVH (in
//! TSC-deadline mode where the CPU has it and publishes the TSC frequency,
//! else one-shot count mode), through `setitimer` and `SIGALRM` on linuxu. Register a handler with
//! [`crate::upcall::register`] first.

use crate::platform::{Current, Platform};
use crate::sc::ScError;

/// Arms the one-shot timer. Errors: `ENODEV` when the CPU has no x2APIC.
pub fn oneshot_us(us: u64) -> Result<(), ScError> {
    Current::timer_oneshot_us(us)
}

/// The timer mode in use on PVH ("tsc-deadline" or "one-shot"; "unset"
/// before the first arm, and always on linuxu).
pub fn mode() -> &'static str {
    if cfg!(kiln_linuxu) {
        "setitimer"
    } else {
        crate::platform::x2apic::mode_name()
    }
}
