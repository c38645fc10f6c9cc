//! TCP: [`TcpListener`] and [`TcpStream`] on the shared stack.

use alloc::vec::Vec;
use core::net::SocketAddrV4;

use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp::{self, State};
use smoltcp::wire::IpEndpoint;

use crate::{Net, NetError, SocketId, to_addr};

/// Connections a listener holds before they are accepted, unless told
/// otherwise (more SYNs are refused with a reset).
pub const DEFAULT_BACKLOG: usize = 256;
/// Sockets kept listening on a port (more are added as connections
/// arrive, between one received frame and the next).
pub const IDLE_LISTENERS: usize = 2;

/// A listening port's sockets.
pub(crate) struct Listening {
    /// Listening, or holding a connection not yet accepted.
    pub(crate) handles: Vec<SocketHandle>,
    /// Most connections waiting to be accepted.
    pub(crate) backlog: usize,
}

/// Whether a backlog socket holds a connection to hand out.
pub(crate) fn accept_ready(sock: &tcp::Socket<'_>) -> bool {
    !matches!(sock.state(), State::Listen | State::SynReceived)
}

/// A listening TCP port.
pub struct TcpListener {
    net: Net,
    port: u16,
    nonblocking: bool,
    timeout_us: Option<u64>,
}

impl Net {
    /// Listens on `port` with [`DEFAULT_BACKLOG`] pending connections.
    pub fn listen_tcp(&self, port: u16) -> Result<TcpListener, NetError> {
        self.listen_tcp_backlog(port, DEFAULT_BACKLOG)
    }

    /// Listens on `port`; up to `backlog` (at least 1) connections can be
    /// completed before they are accepted.
    pub fn listen_tcp_backlog(&self, port: u16, backlog: usize) -> Result<TcpListener, NetError> {
        if port == 0 {
            return Err(NetError::InvalidInput);
        }
        self.with(|s| {
            if s.listeners.contains_key(&port) {
                return Err(NetError::AddrInUse);
            }
            let mut handles = Vec::new();
            for _ in 0..IDLE_LISTENERS {
                let made = s.new_tcp().and_then(|h| {
                    match s.sockets.get_mut::<tcp::Socket>(h).listen(port) {
                        Ok(()) => Ok(h),
                        Err(_) => {
                            s.sockets.remove(h);
                            Err(NetError::InvalidInput)
                        }
                    }
                });
                match made {
                    Ok(h) => handles.push(h),
                    Err(e) => {
                        for h in handles {
                            s.sockets.remove(h);
                        }
                        return Err(e);
                    }
                }
            }
            s.listeners.insert(
                port,
                Listening {
                    handles,
                    backlog: backlog.max(1),
                },
            );
            Ok(())
        })?;
        Ok(TcpListener {
            net: self.clone(),
            port,
            nonblocking: false,
            timeout_us: None,
        })
    }

    /// Connects to `addr`, waiting at most `timeout_us` for the handshake.
    pub fn connect_tcp(&self, addr: SocketAddrV4, timeout_us: u64) -> Result<TcpStream, NetError> {
        if addr.port() == 0 {
            return Err(NetError::InvalidInput);
        }
        let handle = self.with(|s| {
            let port = s.ephemeral_port()?;
            let h = s.new_tcp()?;
            let Stack { iface, sockets, .. } = s;
            let remote = IpEndpoint::new((*addr.ip()).into(), addr.port());
            match sockets
                .get_mut::<tcp::Socket>(h)
                .connect(iface.context(), remote, port)
            {
                Ok(()) => Ok(h),
                Err(_) => {
                    sockets.remove(h);
                    Err(NetError::Unreachable)
                }
            }
        })?;
        let r = self.block(Some(timeout_us), false, |s, waker| {
            let sock = s.sockets.get_mut::<tcp::Socket>(handle);
            match sock.state() {
                State::SynSent | State::SynReceived => {
                    sock.register_send_waker(waker);
                    None
                }
                State::Closed => Some(Err(NetError::ConnectionRefused)),
                _ => Some(Ok(())),
            }
        });
        match r {
            Ok(()) => Ok(TcpStream::new(self.clone(), handle)),
            Err(e) => {
                self.with(|s| {
                    s.sockets.get_mut::<tcp::Socket>(handle).abort();
                    s.close_later(handle);
                });
                Err(e)
            }
        }
    }
}

use crate::Stack;

impl TcpListener {
    /// Waits for the next connection.
    pub fn accept(&self) -> Result<TcpStream, NetError> {
        let port = self.port;
        let handle = self
            .net
            .block(self.timeout_us, self.nonblocking, |s, waker| {
                let Stack {
                    listeners, sockets, ..
                } = s;
                let Some(listening) = listeners.get_mut(&port) else {
                    return Some(Err(NetError::NotConnected));
                };
                let ready = listening
                    .handles
                    .iter()
                    .position(|h| accept_ready(sockets.get::<tcp::Socket>(*h)));
                if let Some(i) = ready {
                    // The stack's next poll puts a listening socket back.
                    return Some(Ok(listening.handles.swap_remove(i)));
                }
                for h in &listening.handles {
                    sockets
                        .get_mut::<tcp::Socket>(*h)
                        .register_recv_waker(waker);
                }
                None
            })?;
        Ok(TcpStream::new(self.net.clone(), handle))
    }

    /// In non-blocking mode `accept` returns [`NetError::WouldBlock`]
    /// instead of waiting.
    pub fn set_nonblocking(&mut self, nonblocking: bool) {
        self.nonblocking = nonblocking;
    }

    /// Makes `accept` give up after `timeout_us` (`None`: wait forever).
    pub fn set_timeout_us(&mut self, timeout_us: Option<u64>) {
        self.timeout_us = timeout_us;
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its identity for [`Net::poll`].
    pub fn id(&self) -> SocketId {
        SocketId::Listener(self.port)
    }
}

impl Drop for TcpListener {
    fn drop(&mut self) {
        let port = self.port;
        self.net.with(|s| {
            let handles = s.listeners.remove(&port).map(|l| l.handles);
            for h in handles.unwrap_or_default() {
                s.sockets.get_mut::<tcp::Socket>(h).abort();
                s.close_later(h);
            }
        });
    }
}

/// A TCP connection.
pub struct TcpStream {
    net: Net,
    handle: SocketHandle,
    nonblocking: bool,
    read_timeout_us: Option<u64>,
    write_timeout_us: Option<u64>,
}

impl TcpStream {
    fn new(net: Net, handle: SocketHandle) -> Self {
        Self {
            net,
            handle,
            nonblocking: false,
            read_timeout_us: None,
            write_timeout_us: None,
        }
    }

    /// Reads what has arrived (waiting for something); `Ok(0)` at the end
    /// of the stream (the peer closed, or the connection was reset).
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize, NetError> {
        if buf.is_empty() {
            return Ok(0);
        }
        let h = self.handle;
        self.net
            .block(self.read_timeout_us, self.nonblocking, |s, waker| {
                let sock = s.sockets.get_mut::<tcp::Socket>(h);
                if sock.can_recv() {
                    return Some(sock.recv_slice(buf).map_err(|_| NetError::NotConnected));
                }
                if !sock.may_recv() {
                    return Some(Ok(0));
                }
                sock.register_recv_waker(waker);
                None
            })
    }

    /// Queues some of `buf` for sending (waiting for buffer space); returns
    /// how much. [`NetError::NotConnected`] once this direction is closed.
    pub fn write(&mut self, buf: &[u8]) -> Result<usize, NetError> {
        if buf.is_empty() {
            return Ok(0);
        }
        let h = self.handle;
        self.net
            .block(self.write_timeout_us, self.nonblocking, |s, waker| {
                let sock = s.sockets.get_mut::<tcp::Socket>(h);
                if !sock.may_send() {
                    return Some(Err(NetError::NotConnected));
                }
                if sock.can_send() {
                    return Some(sock.send_slice(buf).map_err(|_| NetError::NotConnected));
                }
                sock.register_send_waker(waker);
                None
            })
    }

    /// Writes all of `buf` (in blocking mode; a non-blocking stream may
    /// stop with [`NetError::WouldBlock`] part-way).
    pub fn write_all(&mut self, mut buf: &[u8]) -> Result<(), NetError> {
        while !buf.is_empty() {
            let n = self.write(buf)?;
            buf = &buf[n..];
        }
        Ok(())
    }

    /// Closes the sending direction (FIN); reading goes on.
    pub fn shutdown_write(&mut self) {
        let h = self.handle;
        self.net
            .with(|s| s.sockets.get_mut::<tcp::Socket>(h).close());
    }

    /// Resets the connection (RST) instead of closing it gracefully.
    pub fn abort(self) {
        let h = self.handle;
        self.net
            .with(|s| s.sockets.get_mut::<tcp::Socket>(h).abort());
    }

    /// In non-blocking mode reads and writes return
    /// [`NetError::WouldBlock`] instead of waiting.
    pub fn set_nonblocking(&mut self, nonblocking: bool) {
        self.nonblocking = nonblocking;
    }

    /// Makes reads give up after `timeout_us` (`None`: wait forever).
    pub fn set_read_timeout_us(&mut self, timeout_us: Option<u64>) {
        self.read_timeout_us = timeout_us;
    }

    /// Makes writes give up after `timeout_us` (`None`: wait forever).
    pub fn set_write_timeout_us(&mut self, timeout_us: Option<u64>) {
        self.write_timeout_us = timeout_us;
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> Option<SocketAddrV4> {
        let h = self.handle;
        self.net.with(|s| {
            s.sockets
                .get::<tcp::Socket>(h)
                .remote_endpoint()
                .map(to_addr)
        })
    }

    /// This end's address.
    pub fn local_addr(&self) -> Option<SocketAddrV4> {
        let h = self.handle;
        self.net.with(|s| {
            s.sockets
                .get::<tcp::Socket>(h)
                .local_endpoint()
                .map(to_addr)
        })
    }

    /// Its identity for [`Net::poll`].
    pub fn id(&self) -> SocketId {
        SocketId::Socket(self.handle)
    }
}

impl Drop for TcpStream {
    fn drop(&mut self) {
        let h = self.handle;
        self.net.with(|s| s.close_later(h));
    }
}
