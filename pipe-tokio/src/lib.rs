//! pipes on tokio.
//!
//! ```no_run
//! use pipe_tokio::{pipe_open, Proto};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let server = pipe_tokio::builder(Proto::Tcp)
//!     .on_message(|msg, pipe| async move {
//!         let _ = pipe.send_to(&msg.data, msg.from).await;
//!     })
//!     .open()
//!     .await?;
//! let client = pipe_open(Proto::Tcp, server.local_addr().unwrap()).await?;
//! client.send(b"test msg.").await?;
//! let echo = client.recv().await?.expect("echo within recv_timeout");
//! assert_eq!(&echo.data[..], b"test msg.");
//! client.close().await;
//! server.close().await;
//! # Ok(()) }
//! ```
//!
//! Pipes spawn their I/O tasks on the tokio runtime current when they are opened, so open
//! them from inside a runtime (current-thread or multi-thread).
#![deny(missing_docs)]

use std::io;
use std::net::SocketAddr;
use std::time::Instant;

pub use pipe_io::*;

/// The tokio runtime for pipes: tasks go to the runtime current at open time.
#[derive(Debug, Clone)]
pub struct Tokio(tokio::runtime::Handle);

impl Tokio {
    /// The runtime of the calling task. Panics outside a tokio runtime, like `tokio::spawn`.
    pub fn current() -> Self {
        Self(tokio::runtime::Handle::current())
    }
}

pipe_io::driver_api!(Tokio, Tokio::current());

impl Runtime for Tokio {
    type Udp = Udp;
    type Tcp = Tcp;
    type Listener = Listener;

    fn spawn(&self, future: BoxFuture<()>) {
        self.0.spawn(future);
    }

    fn spawn_unboxed<F>(&self, future: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.0.spawn(future);
    }

    /// tokio's clock, so that `tokio::time::pause()` and `#[tokio::test(start_paused = true)]`
    /// move the engine's deadlines with the timers (the same instant as `std`'s otherwise).
    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }

    fn sleep_until(&self, deadline: Instant) -> BoxFuture<()> {
        // Enter the handle: a pipe may be awaited from another runtime's thread, where
        // `tokio::time` finds no runtime in context and panics.
        let _guard = self.0.enter();
        Box::pin(tokio::time::sleep_until(deadline.into()))
    }

    fn udp(&self, socket: std::net::UdpSocket) -> io::Result<Udp> {
        let _guard = self.0.enter();
        tokio::net::UdpSocket::from_std(socket).map(Udp)
    }

    fn tcp(&self, stream: std::net::TcpStream) -> io::Result<Tcp> {
        let _guard = self.0.enter();
        tokio::net::TcpStream::from_std(stream).map(Tcp)
    }

    fn listener(&self, listener: std::net::TcpListener) -> io::Result<Listener> {
        let _guard = self.0.enter();
        tokio::net::TcpListener::from_std(listener).map(Listener)
    }

    fn resolve(&self, host: String, port: u16) -> BoxFuture<io::Result<Vec<SocketAddr>>> {
        // On the pipe's runtime: the caller may be polling from another executor.
        let lookup = self.0.spawn(async move {
            tokio::net::lookup_host((host.as_str(), port))
                .await
                .map(|a| a.collect())
        });
        Box::pin(async move {
            lookup
                .await
                .map_err(|e| io::Error::other(format!("resolver task failed: {e}")))?
        })
    }
}

/// A tokio UDP socket.
#[derive(Debug)]
pub struct Udp(tokio::net::UdpSocket);

/// A tokio TCP stream.
#[derive(Debug)]
pub struct Tcp(tokio::net::TcpStream);

/// A tokio TCP listener.
#[derive(Debug)]
pub struct Listener(tokio::net::TcpListener);

// Readability is polled, not awaited through `readable()`: one task waits on a socket's
// readability at a time (the `Readiness` contract), so tokio's one reader waker per socket
// serves, and every idle connection's task is 160 bytes smaller than with the `readable()`
// future (which carries a waiter node). Writability has several waiters (the I/O task, a
// sender waiting for room): it keeps the future.
//
// tokio keeps one reader waker per socket and replaces it without waking the old one, and a
// `try_read` that finds nothing clears the readiness it polls: so a client's `recv` may take
// readability over from the pipe's I/O task and give it back (`READ_HANDOFF`).
impl pipe_io::Readiness for Udp {
    fn readable(&self) -> impl std::future::Future<Output = io::Result<()>> + Send {
        std::future::poll_fn(move |cx| pipe_io::Readiness::poll_read_handoff(self, cx))
    }
    async fn writable(&self) -> io::Result<()> {
        self.0.writable().await
    }
    const READ_HANDOFF: bool = true;
    fn poll_read_handoff(
        &self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        self.0.poll_recv_ready(cx)
    }
}

impl pipe_io::Readiness for Tcp {
    fn readable(&self) -> impl std::future::Future<Output = io::Result<()>> + Send {
        std::future::poll_fn(move |cx| pipe_io::Readiness::poll_read_handoff(self, cx))
    }
    async fn writable(&self) -> io::Result<()> {
        self.0.writable().await
    }
    const READ_HANDOFF: bool = true;
    fn poll_read_handoff(
        &self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        self.0.poll_read_ready(cx)
    }
}

impl UdpIo for Udp {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
    fn try_recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.0.try_recv_from(buf)
    }
    fn try_recv_from_now(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        // As `Tcp::try_read_now`: when tokio's readiness says no, ask the socket (once: a
        // `WouldBlock` from the socket itself is the answer).
        let mut asked = false;
        let sock = &self.0;
        match sock.try_io(tokio::io::Interest::READABLE, || {
            asked = true;
            recv_from_now(sock, buf)
        }) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && !asked => recv_from_now(sock, buf),
            other => other,
        }
    }
    fn try_send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        match self.0.try_send_to(buf, to) {
            // tokio answers WouldBlock without a syscall while it has not seen the socket
            // writable yet (always, right after registration): try once for real, so the OS's
            // verdict (EACCES, ENETUNREACH ...) reaches this send instead of a deferred flush.
            // A real WouldBlock leaves tokio's readiness as it was, so waiting stays correct.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                socket2::SockRef::from(&self.0).send_to(buf, &to.into())
            }
            other => other,
        }
    }
}

/// `try_read` that also clears tokio's read readiness after a read that filled less than
/// its buffer, which emptied the socket's receive queue: the next read waits for the reactor
/// instead of a `recv` that would only say `EAGAIN` (tokio's own `AsyncRead` does the same).
/// The read runs inside `try_io`, which clears only the readiness it saw before the read:
/// bytes that came during or after it moved the readiness on (a new edge), and stay. A
/// short read reports `WouldBlock` to `try_io` to get the clear, and its count is kept
/// aside. Edge-triggered reactors only (epoll, kqueue): elsewhere readiness is kept.
/// `asked`: set when the socket itself was asked (tokio's readiness said ready).
fn read_clearing(
    sock: &tokio::net::TcpStream,
    buf: &mut [u8],
    asked: &mut bool,
) -> io::Result<usize> {
    let len = buf.len();
    let mut short = None;
    let res = sock.try_io(tokio::io::Interest::READABLE, || {
        *asked = true;
        let n = read_now(sock, buf)?;
        if cfg!(unix) && n > 0 && n < len {
            short = Some(n);
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    });
    match (res, short) {
        (Err(_), Some(n)) => Ok(n),
        (res, _) => res,
    }
}

/// One `read(2)` on a tokio TCP stream, whatever tokio's readiness says.
fn read_now(sock: &tokio::net::TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    let raw = socket2::SockRef::from(sock);
    let mut s: &socket2::Socket = &raw;
    io::Read::read(&mut s, buf)
}

/// One `recvfrom(2)` on a tokio UDP socket, whatever tokio's readiness says.
#[allow(unsafe_code)] // socket2's recv_from takes `MaybeUninit` bytes; std has no borrowed form
fn recv_from_now(sock: &tokio::net::UdpSocket, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
    // SAFETY: `u8` and `MaybeUninit<u8>` have the same layout, and `recvfrom(2)` only writes
    // initialized bytes into the buffer, so `buf` stays initialized.
    let uninit = unsafe { &mut *(buf as *mut [u8] as *mut [std::mem::MaybeUninit<u8>]) };
    let (n, from) = socket2::SockRef::from(sock).recv_from(uninit)?;
    let from = from
        .as_socket()
        .ok_or_else(|| io::Error::other("a datagram from a non-IP address"))?;
    Ok((n, from))
}

impl TcpIo for Tcp {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        read_clearing(&self.0, buf, &mut false)
    }
    fn try_read_now(&self, buf: &mut [u8]) -> io::Result<usize> {
        let mut asked = false;
        match read_clearing(&self.0, buf, &mut asked) {
            // tokio's readiness said no without asking: ask the socket. A WouldBlock here
            // leaves tokio's readiness as it was (already clear), so waiting stays correct.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && !asked => read_now(&self.0, buf),
            other => other,
        }
    }
    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.0.peer_addr()
    }
    fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.0.take_error()
    }
    fn shutdown_write(&self) -> io::Result<()> {
        // tokio's own shutdown needs `&mut` and a poll; the syscall is the same.
        socket2::SockRef::from(&self.0).shutdown(std::net::Shutdown::Write)
    }
    // Zero-copy relaying: through `try_io`, so that a `WouldBlock` clears tokio's cached
    // readiness (else `readable()` / `writable()` would return at once, forever).
    #[cfg(target_os = "linux")]
    fn try_splice_to_pipe(&self, pipe: &KernelPipe, len: usize) -> io::Result<usize> {
        use std::os::fd::AsFd;
        self.0.try_io(tokio::io::Interest::READABLE, || {
            pipe.fill_from(self.0.as_fd(), len)
        })
    }
    #[cfg(target_os = "linux")]
    fn try_splice_from_pipe(&self, pipe: &KernelPipe, len: usize) -> io::Result<usize> {
        use std::os::fd::AsFd;
        self.0.try_io(tokio::io::Interest::WRITABLE, || {
            pipe.drain_to(self.0.as_fd(), len)
        })
    }
}

impl ListenerIo for Listener {
    type Stream = Tcp;
    async fn accept(&self) -> io::Result<(Tcp, SocketAddr)> {
        let (s, a) = self.0.accept().await?;
        Ok((Tcp(s), a))
    }
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}
