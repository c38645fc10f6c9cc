//! linuxu's network device: Ethernet frames as datagrams on a socket.
//!
//! The `kiln` CLI runs the same user-mode network backend as the embedded
//! VMM (`kiln-user-net`) — or opens a TAP device — and passes the guest's
//! end at fd [`kiln_abi::LINUXU_NET_FD`] with the `netchan=FD` option. The
//! runtime made it non-blocking with `SIGIO` as its interrupt (line
//! [`kiln_abi::LINUXU_NET_IRQ`]) before the sandbox closed; `read` and
//! `write` on it are all the sandbox allows.

use kiln_rt::hal::linuxu;
use kiln_rt::thread::Event;

use crate::NetDevice;

/// The MAC address of the linuxu guest (as the VMM's default).
pub const MAC: [u8; 6] = kiln_abi::net::GUEST_MAC;

static EVENT: spin::Once<Option<Event>> = spin::Once::new();

fn on_sigio(_: &mut kiln_rt::hal::upcall::UpcallFrame) {
    if let Some(Some(e)) = EVENT.get() {
        e.signal();
    }
}

/// Why the channel could not be opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelError {
    /// No `netchan=` option: the CLI gave this process no network.
    NotGiven,
    /// No event or interrupt line for it.
    NoWakeup,
}

impl core::fmt::Display for ChannelError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NotGiven => f.write_str("no network channel was given (netchan= option)"),
            Self::NoWakeup => f.write_str("cannot route the network channel's SIGIO"),
        }
    }
}

/// The linuxu network channel.
pub struct Channel {
    fd: u64,
    event: &'static Event,
}

impl Channel {
    /// Opens the channel the CLI passed (`netchan=FD`).
    pub fn open() -> Result<Self, ChannelError> {
        let fd = kiln_rt::boot::option("netchan")
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or(ChannelError::NotGiven)?;
        let event = EVENT
            .call_once(|| Event::new().ok())
            .as_ref()
            .ok_or(ChannelError::NoWakeup)?;
        kiln_rt::hal::irq::register(kiln_abi::LINUXU_NET_IRQ, on_sigio)
            .map_err(|_| ChannelError::NoWakeup)?;
        Ok(Self { fd, event })
    }
}

impl NetDevice for Channel {
    fn mac(&self) -> [u8; 6] {
        MAC
    }

    fn receive(&mut self, buf: &mut [u8]) -> Option<usize> {
        linuxu::channel_recv(self.fd, buf).ok().flatten()
    }

    fn transmit(&mut self, frame: &[u8]) -> bool {
        linuxu::channel_send(self.fd, frame)
    }

    fn flush(&mut self) {}

    fn arm_wakeup(&mut self) -> bool {
        // SIGIO is always on; a frame already queued raised it (or will).
        true
    }

    fn disarm_wakeup(&mut self) {}

    fn wakeup(&self) -> &'static Event {
        self.event
    }
}
