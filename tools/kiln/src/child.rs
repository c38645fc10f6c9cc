//! Waiting for a guest that runs as a child process (qemu, linuxu).

use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::Context;

/// Waits for `child` to end; kills it when `timeout` (counted from
/// `started`) expires first and returns `None` then.
pub fn wait_or_kill(
    child: &mut Child,
    started: Instant,
    timeout: Option<Duration>,
) -> anyhow::Result<Option<ExitStatus>> {
    loop {
        if let Some(status) = child.try_wait().context("waiting for the guest process")? {
            return Ok(Some(status));
        }
        if let Some(limit) = timeout
            && started.elapsed() >= limit
        {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}
