//! The smoltcp device of the stack: two in-memory frame queues.
//!
//! Guest frames that passed the stack's filter are queued on `rx` before
//! `Interface::poll`; everything smoltcp emits lands on `tx`, which the stack flushes to
//! the guest socket in a batch. Buffers are recycled so the steady state allocates
//! nothing per frame.

use std::collections::VecDeque;

use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

use crate::FRAME_MAX_BYTES;

/// Frames smoltcp may queue for the guest before `transmit` reports the device busy
/// (smoltcp then keeps its data and retries: this is the backpressure towards smoltcp).
pub(crate) const TX_SOFT_LIMIT_FRAMES: usize = 1024;
/// Beyond this many queued frames, replies and UDP datagrams are dropped.
pub(crate) const TX_HARD_LIMIT_FRAMES: usize = 4096;
/// Recycled buffers kept per direction.
const POOL_BUFFERS: usize = 1024;

/// The in-memory device between the stack and smoltcp.
#[derive(Default)]
pub(crate) struct FrameQueue {
    /// Guest frames for smoltcp, in order.
    pub(crate) rx: VecDeque<Vec<u8>>,
    /// Frames for the guest, in order.
    pub(crate) tx: VecDeque<Vec<u8>>,
    rx_pool: Vec<Vec<u8>>,
    tx_pool: Vec<Vec<u8>>,
}

impl FrameQueue {
    /// A buffer for one received guest frame.
    pub(crate) fn rx_buffer(&mut self) -> Vec<u8> {
        self.rx_pool.pop().unwrap_or_default()
    }

    /// Returns a guest frame's buffer for reuse.
    pub(crate) fn recycle_rx(&mut self, buffer: Vec<u8>) {
        recycle(&mut self.rx_pool, buffer);
    }

    /// Returns a sent frame's buffer for reuse.
    pub(crate) fn recycle_tx(&mut self, buffer: Vec<u8>) {
        recycle(&mut self.tx_pool, buffer);
    }

    /// A zeroed buffer of `len` bytes for a frame to the guest.
    pub(crate) fn tx_buffer(&mut self, len: usize) -> Vec<u8> {
        take_zeroed(&mut self.tx_pool, len)
    }

    /// Queues a frame built outside smoltcp for the guest; drops it if the queue is over
    /// its hard limit (the guest is not reading).
    pub(crate) fn push_tx(&mut self, frame: Vec<u8>) -> bool {
        if self.tx.len() >= TX_HARD_LIMIT_FRAMES {
            self.recycle_tx(frame);
            return false;
        }
        self.tx.push_back(frame);
        true
    }

    /// Whether smoltcp is currently told the device is busy.
    pub(crate) fn tx_busy(&self) -> bool {
        self.tx.len() >= TX_SOFT_LIMIT_FRAMES
    }
}

fn recycle(pool: &mut Vec<Vec<u8>>, mut buffer: Vec<u8>) {
    if pool.len() < POOL_BUFFERS && buffer.capacity() <= 2 * FRAME_MAX_BYTES {
        buffer.clear();
        pool.push(buffer);
    }
}

fn take_zeroed(pool: &mut Vec<Vec<u8>>, len: usize) -> Vec<u8> {
    let mut buffer = pool.pop().unwrap_or_default();
    buffer.clear();
    buffer.resize(len, 0);
    buffer
}

/// A received frame handed to smoltcp.
pub(crate) struct RxFrame<'a> {
    frame: Vec<u8>,
    pool: &'a mut Vec<Vec<u8>>,
}

impl phy::RxToken for RxFrame<'_> {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        let result = f(&self.frame);
        recycle(self.pool, self.frame);
        result
    }
}

/// Room for one frame from smoltcp.
pub(crate) struct TxFrame<'a> {
    queue: &'a mut VecDeque<Vec<u8>>,
    pool: &'a mut Vec<Vec<u8>>,
}

impl phy::TxToken for TxFrame<'_> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let mut frame = take_zeroed(self.pool, len);
        let result = f(&mut frame);
        if self.queue.len() < TX_HARD_LIMIT_FRAMES {
            self.queue.push_back(frame);
        } else {
            recycle(self.pool, frame);
        }
        result
    }
}

impl phy::Device for FrameQueue {
    type RxToken<'a> = RxFrame<'a>;
    type TxToken<'a> = TxFrame<'a>;

    fn receive(&mut self, _timestamp: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let frame = self.rx.pop_front()?;
        Some((
            RxFrame {
                frame,
                pool: &mut self.rx_pool,
            },
            TxFrame {
                queue: &mut self.tx,
                pool: &mut self.tx_pool,
            },
        ))
    }

    fn transmit(&mut self, _timestamp: Instant) -> Option<Self::TxToken<'_>> {
        if self.tx_busy() {
            return None;
        }
        Some(TxFrame {
            queue: &mut self.tx,
            pool: &mut self.tx_pool,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = FRAME_MAX_BYTES;
        caps
    }
}
