//! smoltcp's view of a [`NetDevice`]: one frame per token, copied through
//! two scratch buffers (the driver owns its DMA buffers).

use alloc::boxed::Box;
use alloc::vec::Vec;

use kiln_netdev::{MAX_FRAME_BYTES, NetDevice};
use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

/// A [`NetDevice`] with the buffers smoltcp's tokens use.
pub(crate) struct Adapter {
    pub(crate) dev: Box<dyn NetDevice>,
    rx: Vec<u8>,
    tx: Vec<u8>,
}

impl Adapter {
    pub(crate) fn new(dev: Box<dyn NetDevice>) -> Self {
        Self {
            dev,
            rx: alloc::vec![0; MAX_FRAME_BYTES + 4],
            tx: alloc::vec![0; MAX_FRAME_BYTES + 4],
        }
    }
}

pub(crate) struct Rx<'a> {
    frame: &'a [u8],
}

pub(crate) struct Tx<'a> {
    dev: &'a mut dyn NetDevice,
    buf: &'a mut [u8],
}

impl phy::Device for Adapter {
    type RxToken<'a> = Rx<'a>;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _: Instant) -> Option<(Rx<'_>, Tx<'_>)> {
        let Self { dev, rx, tx } = self;
        let len = dev.receive(rx)?;
        Some((
            Rx { frame: &rx[..len] },
            Tx {
                dev: dev.as_mut(),
                buf: tx,
            },
        ))
    }

    fn transmit(&mut self, _: Instant) -> Option<Tx<'_>> {
        Some(Tx {
            dev: self.dev.as_mut(),
            buf: &mut self.tx,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = MAX_FRAME_BYTES;
        if self.dev.checksum_offload() {
            // The device checksums what we send; received frames are
            // still verified.
            caps.checksum.tcp = smoltcp::phy::Checksum::Rx;
            caps.checksum.udp = smoltcp::phy::Checksum::Rx;
        }
        caps
    }
}

impl phy::RxToken for Rx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.frame)
    }
}

impl phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let len = len.min(self.buf.len());
        let frame = &mut self.buf[..len];
        let r = f(frame);
        self.dev.transmit(frame);
        r
    }
}
