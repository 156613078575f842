//! The runtime seam: what pipe-io needs from an async runtime, quinn-style.
//!
//! A driver crate (pipe-tokio, pipe-smol) implements [`Runtime`] and the three socket traits
//! for its own types. Sockets are readiness-based: an operation is tried first and, on
//! `WouldBlock`, the caller waits for readiness and tries again. Every method takes `&self` so
//! that any task may try a write while the socket's own task reads.

use std::fmt::Debug;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Instant;

pub use crate::splice::KernelPipe;

/// A boxed future, as the seam returns them.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// An async runtime: clock, timers, task spawning, socket registration and DNS.
pub trait Runtime: Clone + Send + Sync + Debug + 'static {
    /// A UDP socket registered with the runtime.
    type Udp: UdpIo;
    /// A TCP stream registered with the runtime.
    type Tcp: TcpIo;
    /// A TCP listener registered with the runtime.
    type Listener: ListenerIo<Stream = Self::Tcp>;

    /// The runtime's clock (the monotonic system clock unless a runtime mocks time).
    fn now(&self) -> Instant {
        Instant::now()
    }
    /// A future that completes at `deadline`.
    fn sleep_until(&self, deadline: Instant) -> BoxFuture<()>;
    /// Run `future` in the background.
    fn spawn(&self, future: BoxFuture<()>);
    /// Run `future` in the background without boxing it first, where the runtime's tasks
    /// can hold it inline (tokio's do: one allocation per pipe task instead of two). The
    /// default boxes it and calls [`Runtime::spawn`].
    fn spawn_unboxed<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
        Self: Sized,
    {
        self.spawn(Box::pin(future));
    }
    /// Register a non-blocking UDP socket.
    fn udp(&self, socket: std::net::UdpSocket) -> io::Result<Self::Udp>;
    /// Register a non-blocking TCP stream (connected, or with a connect in progress).
    fn tcp(&self, stream: std::net::TcpStream) -> io::Result<Self::Tcp>;
    /// Register a non-blocking listening TCP socket.
    fn listener(&self, listener: std::net::TcpListener) -> io::Result<Self::Listener>;
    /// Resolve `host:port` (unbounded: the caller applies `dns_timeout`).
    fn resolve(&self, host: String, port: u16) -> BoxFuture<io::Result<Vec<SocketAddr>>>;
}

/// Readiness shared by all socket types.
pub trait Readiness: Send + Sync + 'static {
    /// Completes when the socket may be readable (or has an error pending).
    ///
    /// One task at a time waits on a socket's readability (its pipe's I/O task, or the one
    /// task that owns a helper socket), so an implementation may keep a single waker per
    /// socket: tokio's `poll_read_ready`, async-io's `poll_readable`. Writability may have
    /// several waiters at once.
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send;
    /// Completes when the socket may be writable (or has an error pending).
    fn writable(&self) -> impl Future<Output = io::Result<()>> + Send;

    /// `true` if [`poll_read_handoff`](Self::poll_read_handoff) is implemented: then a
    /// client pipe's `recv` reads its socket itself while it waits, instead of being woken by
    /// the pipe's I/O task (one task hop less per message), and hands the socket's
    /// readability back to the I/O task when it returns.
    const READ_HANDOFF: bool = false;

    /// `true` if [`poll_read_handoff`](Self::poll_read_handoff) wakes the waker it replaces
    /// (async-io's `poll_readable`). The driver then registers one waker of its own per
    /// socket for good (the pipe's entry), which passes each wake-up to whoever holds reading
    /// (the I/O task or a `recv`), so the socket's waker is never replaced; and a `recv` reads
    /// only once readiness says so (a read that finds nothing costs a system call there).
    /// Such a runtime wakes that waker only for readiness, and a wake-up counts as a
    /// readiness event even when the next poll answers `Pending`: async-io does that for an
    /// event delivered in the reactor tick during which the waker was registered (it asks
    /// epoll again), which with an executor on two threads is most events.
    const HANDOFF_WAKES_REPLACED: bool = false;

    /// Poll readability, keeping `cx`'s waker as the socket's one read waker in place of the
    /// one there. Either without waking the one it replaces (tokio's `poll_read_ready` and
    /// `poll_recv_ready`; readiness then kept as `try_read` leaves it: `Ready` while data may
    /// be there, until a read said `WouldBlock`), or, with
    /// [`HANDOFF_WAKES_REPLACED`](Self::HANDOFF_WAKES_REPLACED), waking it (async-io's
    /// `poll_readable`: `Ready` once per readiness event). Only called when
    /// [`READ_HANDOFF`](Self::READ_HANDOFF) is `true`.
    fn poll_read_handoff(
        &self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        let _ = cx;
        std::task::Poll::Ready(Err(io::ErrorKind::Unsupported.into()))
    }
}

/// Implement [`Readiness`] for newtypes whose field `.0` has async `readable()` and
/// `writable()` methods (tokio's and async-io's socket types both do).
#[macro_export]
macro_rules! delegate_readiness {
    ($($t:ty),+) => {$(
        impl $crate::Readiness for $t {
            async fn readable(&self) -> ::std::io::Result<()> {
                self.0.readable().await
            }
            async fn writable(&self) -> ::std::io::Result<()> {
                self.0.writable().await
            }
        }
    )+};
}

/// A registered UDP socket.
pub trait UdpIo: Readiness {
    /// The local address.
    fn local_addr(&self) -> io::Result<SocketAddr>;
    /// Receive one datagram without waiting (`WouldBlock` when none is queued).
    fn try_recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)>;
    /// [`try_recv_from`](Self::try_recv_from), asking the socket even when the runtime has
    /// not seen it readable since its last `WouldBlock` (see [`TcpIo::try_read_now`]).
    fn try_recv_from_now(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.try_recv_from(buf)
    }
    /// Send one datagram without waiting.
    fn try_send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize>;
}

/// A registered TCP stream.
pub trait TcpIo: Readiness {
    /// The local address.
    fn local_addr(&self) -> io::Result<SocketAddr>;
    /// Read without waiting; `Ok(0)` is end of stream.
    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize>;
    /// [`try_read`](Self::try_read), asking the socket even when the runtime has not seen
    /// it readable since its last `WouldBlock` (tokio answers those without a system call).
    /// A client's `recv` reads this way once before it waits: the answer is often there
    /// already, and the runtime's word on it costs a round of its reactor.
    fn try_read_now(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.try_read(buf)
    }
    /// Write without waiting.
    fn try_write(&self, buf: &[u8]) -> io::Result<usize>;
    /// The connected peer.
    fn peer_addr(&self) -> io::Result<SocketAddr>;
    /// The pending socket error (`SO_ERROR`), used after a non-blocking connect.
    fn take_error(&self) -> io::Result<Option<io::Error>>;
    /// Shut the write side (`shutdown(SHUT_WR)`: a FIN after the bytes written); reading
    /// goes on. Used for half-close. The default reports `Unsupported`: the driver then
    /// leaves the FIN to the socket's close.
    fn shutdown_write(&self) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }
    /// Zero-copy relaying: move up to `len` bytes from this socket into the kernel pipe
    /// without waiting ([`KernelPipe::fill_from`] on the socket's descriptor). `Ok(0)` is end
    /// of stream; `WouldBlock` when nothing is readable (the driver is only asked with an
    /// empty kernel pipe, so that means the socket: clear the runtime's read readiness, as
    /// `try_read` does). The default reports `Unsupported`: the driver then copies.
    fn try_splice_to_pipe(&self, pipe: &KernelPipe, len: usize) -> io::Result<usize> {
        let _ = (pipe, len);
        Err(io::ErrorKind::Unsupported.into())
    }
    /// Zero-copy relaying: move up to `len` bytes from the kernel pipe into this socket
    /// without waiting ([`KernelPipe::drain_to`]). `WouldBlock` when the socket is full (the
    /// driver never asks with an empty kernel pipe). The default reports `Unsupported`.
    fn try_splice_from_pipe(&self, pipe: &KernelPipe, len: usize) -> io::Result<usize> {
        let _ = (pipe, len);
        Err(io::ErrorKind::Unsupported.into())
    }
}

/// A registered TCP listener.
pub trait ListenerIo: Send + Sync + 'static {
    /// The stream type it accepts.
    type Stream: TcpIo;
    /// Accept the next connection.
    fn accept(&self) -> impl Future<Output = io::Result<(Self::Stream, SocketAddr)>> + Send;
    /// The local address.
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

/// The typed API of a driver crate for its runtime `$rt`, made with `$ambient` (an expression
/// giving the runtime to open pipes on): `Pipe`, `builder(proto)` and `pipe_open(proto, dest)`.
#[macro_export]
macro_rules! driver_api {
    ($rt:ty, $ambient:expr) => {
        /// A pipe on this driver's runtime.
        pub type Pipe = $crate::Pipe<$rt>;

        /// A builder for a pipe on this driver's runtime: route, existing socket, callbacks, conf.
        pub fn builder(proto: $crate::Proto) -> $crate::PipeBuilder<$rt> {
            $crate::PipeBuilder::new($ambient, proto)
        }

        /// Open a pipe: a client of `dest`, or with `()` as `dest`, a server.
        pub async fn pipe_open(
            proto: $crate::Proto,
            dest: impl $crate::IntoDest,
        ) -> Result<Pipe, $crate::OpenError> {
            builder(proto).dest(dest).open().await
        }
    };
}
