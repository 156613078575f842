//! pipes on smol: async-io sockets and timers, so any executor that polls async-io futures
//! runs them (smol's, async-executor's, async-std's).
//!
//! ```no_run
//! use pipe_smol::{pipe_open, Proto};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! smol::block_on(async {
//!     let server = pipe_smol::builder(Proto::Udp)
//!         .on_message(|msg, pipe| async move {
//!             let _ = pipe.send_to(&msg.data, msg.from).await;
//!         })
//!         .open()
//!         .await?;
//!     let client = pipe_open(Proto::Udp, server.local_addr().unwrap()).await?;
//!     client.send(b"ping").await?;
//!     assert_eq!(&client.recv().await?.expect("echo").data[..], b"ping");
//!     Ok(())
//! })
//! # }
//! ```
//!
//! Background tasks (one I/O task per socket, one callback worker per busy pipe) go to smol's
//! global executor by default (`smol::spawn`; its thread count is `SMOL_THREADS`), or to any
//! executor you hand in with [`Smol::with_spawner`]: your own `smol::Executor`, or
//! `async_std::task::spawn`. DNS runs on smol's blocking pool.
#![deny(missing_docs)]

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs, UdpSocket};
use std::sync::Arc;
use std::time::Instant;

use async_io::{Async, Timer};
pub use pipe_io::*;

type Spawner = Arc<dyn Fn(BoxFuture<()>) + Send + Sync>;

/// The async-io runtime for pipes.
#[derive(Clone)]
pub struct Smol {
    spawn: Spawner,
}

impl fmt::Debug for Smol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Smol")
    }
}

impl Default for Smol {
    fn default() -> Self {
        Self::with_spawner(|fut| smol::spawn(fut).detach())
    }
}

impl Smol {
    /// Spawn background tasks with `spawn` (for example onto your own `smol::Executor`, or
    /// `async_std::task::spawn`).
    pub fn with_spawner(spawn: impl Fn(BoxFuture<()>) + Send + Sync + 'static) -> Self {
        Self {
            spawn: Arc::new(spawn),
        }
    }
}

pipe_io::driver_api!(Smol, Smol::default());

impl Runtime for Smol {
    type Udp = Udp;
    type Tcp = Tcp;
    type Listener = Listener;

    fn sleep_until(&self, deadline: Instant) -> BoxFuture<()> {
        Box::pin(async move {
            Timer::at(deadline).await;
        })
    }

    fn spawn(&self, future: BoxFuture<()>) {
        (self.spawn)(future);
    }

    fn udp(&self, socket: UdpSocket) -> io::Result<Udp> {
        Async::new(socket).map(Udp)
    }

    fn tcp(&self, stream: TcpStream) -> io::Result<Tcp> {
        Async::new(stream).map(Tcp)
    }

    fn listener(&self, listener: TcpListener) -> io::Result<Listener> {
        Async::new(listener).map(Listener)
    }

    fn resolve(&self, host: String, port: u16) -> BoxFuture<io::Result<Vec<SocketAddr>>> {
        Box::pin(smol::unblock(move || {
            Ok((host.as_str(), port).to_socket_addrs()?.collect())
        }))
    }
}

/// An async-io UDP socket.
#[derive(Debug)]
pub struct Udp(Async<UdpSocket>);

/// An async-io TCP stream.
#[derive(Debug)]
pub struct Tcp(Async<TcpStream>);

/// An async-io TCP listener.
#[derive(Debug)]
pub struct Listener(Async<TcpListener>);

// Readability is polled, not awaited through `readable()`: one task waits on a socket's
// readability at a time (the `Readiness` contract), so async-io's one direct waker per
// socket serves, and every idle connection's task is smaller than with the `readable()`
// future. Writability has several waiters (the I/O task, a sender waiting for room): it
// keeps the future.
//
// A client's `recv` may take reading over from the pipe's I/O task (`READ_HANDOFF`).
// `poll_readable` wakes the waker it replaces, so pipe-io keeps one waker of its own on the
// socket, which passes wake-ups to whoever reads (`HANDOFF_WAKES_REPLACED`).
impl pipe_io::Readiness for Udp {
    fn readable(&self) -> impl std::future::Future<Output = io::Result<()>> + Send {
        std::future::poll_fn(move |cx| self.0.poll_readable(cx))
    }
    async fn writable(&self) -> io::Result<()> {
        self.0.writable().await
    }
    const READ_HANDOFF: bool = true;
    const HANDOFF_WAKES_REPLACED: bool = true;
    fn poll_read_handoff(
        &self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        self.0.poll_readable(cx)
    }
}

impl pipe_io::Readiness for Tcp {
    fn readable(&self) -> impl std::future::Future<Output = io::Result<()>> + Send {
        std::future::poll_fn(move |cx| self.0.poll_readable(cx))
    }
    async fn writable(&self) -> io::Result<()> {
        self.0.writable().await
    }
    const READ_HANDOFF: bool = true;
    const HANDOFF_WAKES_REPLACED: bool = true;
    fn poll_read_handoff(
        &self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        self.0.poll_readable(cx)
    }
}

impl UdpIo for Udp {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.get_ref().local_addr()
    }
    fn try_recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.0.get_ref().recv_from(buf)
    }
    fn try_send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        self.0.get_ref().send_to(buf, to)
    }
}

impl TcpIo for Tcp {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.get_ref().local_addr()
    }
    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&mut self.0.get_ref()).read(buf)
    }
    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        (&mut self.0.get_ref()).write(buf)
    }
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.0.get_ref().peer_addr()
    }
    fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.0.get_ref().take_error()
    }
    fn shutdown_write(&self) -> io::Result<()> {
        self.0.get_ref().shutdown(std::net::Shutdown::Write)
    }
    // Zero-copy relaying: async-io keeps no readiness of its own (`readable()` and
    // `writable()` wait for a fresh event), so the call is made directly.
    #[cfg(target_os = "linux")]
    fn try_splice_to_pipe(&self, pipe: &KernelPipe, len: usize) -> io::Result<usize> {
        use std::os::fd::AsFd;
        pipe.fill_from(self.0.as_fd(), len)
    }
    #[cfg(target_os = "linux")]
    fn try_splice_from_pipe(&self, pipe: &KernelPipe, len: usize) -> io::Result<usize> {
        use std::os::fd::AsFd;
        pipe.drain_to(self.0.as_fd(), len)
    }
}

impl ListenerIo for Listener {
    type Stream = Tcp;
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.get_ref().local_addr()
    }
    async fn accept(&self) -> io::Result<(Tcp, SocketAddr)> {
        self.0.accept().await.map(|(s, a)| (Tcp(s), a))
    }
}
