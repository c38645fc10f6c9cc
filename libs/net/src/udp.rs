//! UDP: [`UdpSocket`] on the shared stack.

use core::net::SocketAddrV4;

use smoltcp::iface::SocketHandle;
use smoltcp::socket::udp;
use smoltcp::wire::IpEndpoint;

use crate::{Net, NetError, SocketId, to_addr};

/// Datagrams each direction can hold.
const PACKETS: usize = 64;
/// Bytes each direction can hold.
const BYTES: usize = 64 * 1024;

/// A bound UDP socket.
pub struct UdpSocket {
    net: Net,
    handle: SocketHandle,
    port: u16,
    nonblocking: bool,
    timeout_us: Option<u64>,
}

impl Net {
    /// Binds a UDP socket to `port` (0: a free ephemeral port).
    pub fn bind_udp(&self, port: u16) -> Result<UdpSocket, NetError> {
        let (handle, port) = self.with(|s| {
            let port = if port == 0 { s.ephemeral_port()? } else { port };
            let taken = s.sockets.iter().any(|(_, sock)| {
                matches!(sock, smoltcp::socket::Socket::Udp(u) if u.endpoint().port == port)
            });
            if taken {
                return Err(NetError::AddrInUse);
            }
            let mut sock = udp::Socket::new(
                udp::PacketBuffer::new(
                    alloc::vec![udp::PacketMetadata::EMPTY; PACKETS],
                    alloc::vec![0; BYTES],
                ),
                udp::PacketBuffer::new(
                    alloc::vec![udp::PacketMetadata::EMPTY; PACKETS],
                    alloc::vec![0; BYTES],
                ),
            );
            sock.bind(port).map_err(|_| NetError::InvalidInput)?;
            Ok((s.sockets.add(sock), port))
        })?;
        Ok(UdpSocket {
            net: self.clone(),
            handle,
            port,
            nonblocking: false,
            timeout_us: None,
        })
    }
}

impl UdpSocket {
    /// Sends `data` as one datagram to `to` (waiting for buffer space).
    pub fn send_to(&self, data: &[u8], to: SocketAddrV4) -> Result<usize, NetError> {
        if data.len() > BYTES {
            return Err(NetError::InvalidInput);
        }
        let h = self.handle;
        let remote = IpEndpoint::new((*to.ip()).into(), to.port());
        self.net
            .block(self.timeout_us, self.nonblocking, |s, waker| {
                let sock = s.sockets.get_mut::<udp::Socket>(h);
                match sock.send_slice(data, remote) {
                    Ok(()) => Some(Ok(data.len())),
                    Err(udp::SendError::BufferFull) => {
                        sock.register_send_waker(waker);
                        None
                    }
                    Err(udp::SendError::Unaddressable) => Some(Err(NetError::Unreachable)),
                }
            })
    }

    /// Receives one datagram into `buf` (truncated if longer); returns its
    /// length and sender.
    pub fn recv_from(&self, buf: &mut [u8]) -> Result<(usize, SocketAddrV4), NetError> {
        let h = self.handle;
        self.net
            .block(self.timeout_us, self.nonblocking, |s, waker| {
                let sock = s.sockets.get_mut::<udp::Socket>(h);
                match sock.recv() {
                    Ok((data, meta)) => {
                        let n = data.len().min(buf.len());
                        buf[..n].copy_from_slice(&data[..n]);
                        Some(Ok((n, to_addr(meta.endpoint))))
                    }
                    Err(_) => {
                        sock.register_recv_waker(waker);
                        None
                    }
                }
            })
    }

    /// The port it is bound to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// In non-blocking mode calls return [`NetError::WouldBlock`] instead
    /// of waiting.
    pub fn set_nonblocking(&mut self, nonblocking: bool) {
        self.nonblocking = nonblocking;
    }

    /// Makes calls give up after `timeout_us` (`None`: wait forever).
    pub fn set_timeout_us(&mut self, timeout_us: Option<u64>) {
        self.timeout_us = timeout_us;
    }

    /// Its identity for [`Net::poll`].
    pub fn id(&self) -> SocketId {
        SocketId::Socket(self.handle)
    }
}

impl Drop for UdpSocket {
    fn drop(&mut self) {
        let h = self.handle;
        self.net.with(|s| {
            s.sockets.remove(h);
        });
    }
}
