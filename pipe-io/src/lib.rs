//! # pipe-io: the runtime-generic half of pipes
//!
//! Everything a pipe needs that is I/O but not specific to one runtime: socket setup with
//! socket2 ([`socket`]), interfaces and routes ([`iface`], [`route`]), the STUN lookup of a
//! route's external address ([`external`]), DNS bounded by `dns_timeout`, the async [`Pipe`]
//! handle, its per-socket I/O tasks, and callback dispatch. Protocol logic lives in
//! [`pipe_core`]; this crate only moves bytes between sockets and the engine and turns engine
//! events into wake-ups and callbacks.
//!
//! Use it through a driver crate: `pipe-tokio` or `pipe-smol` implement [`Runtime`] for their
//! runtime and re-export this API with `pipe_open`, `builder` and a `Pipe` alias (see
//! [`driver_api!`]). A new runtime needs only the [`Runtime`] trait and the three socket traits.
//!
//! ## Semantics in brief (DESIGN.md §5)
//!
//! - Opening returns `Result<Pipe, OpenError>`: resolve, connect-refused, connect-timeout, bind,
//!   family mismatch and bad destination are distinct variants.
//! - `send` writes from the caller's buffer when it can and waits while the pipe's outbound
//!   buffer is full (backpressure); errors are typed ([`SendError`]).
//! - `recv` returns `Ok(Some(msg))`, `Ok(None)` on timeout (the pipe's own `recv_timeout` by
//!   default), `Err(NotSubscribed)` at once for an unknown subscription, `Err(Closed)` once the
//!   pipe is closed and drained, or after a TCP peer's FIN once drained. It keeps P2PD's
//!   `recv_timeout`; `recv_timeout(Duration::MAX)` and [`Pipe::messages`] (a `Stream`) wait
//!   with no deadline.
//! - Callbacks of a pipe run in order, one at a time; a panicking callback is caught and the
//!   pipe goes on; a callback may send, recv, link or close its own pipe.
//! - Up and end callbacks fire exactly once per pipe; an end callback added after the end fires
//!   at once.
//! - `close` is idempotent, closes a server's connections first, and returns once the socket is
//!   closed; dropping the last handle returned by opening closes the pipe too.
//! - A TCP peer's FIN closes the read side only: a pipe with an answer left (a callback still
//!   running, a stream, a relay partner) still sends it. [`Pipe::shutdown`] half-closes (queued
//!   bytes, then the FIN); [`Pipe::into_stream`] makes a TCP pipe a byte stream
//!   ([`PipeStream`]: tokio's or futures-io's `AsyncRead` + `AsyncWrite`).
#![deny(missing_docs)]

mod buffers;
mod builder;
mod callbacks;
mod error;
pub mod external;
mod group;
mod happy_eyeballs;
pub mod iface;
pub mod listen_all;
mod logs;
pub mod nat;
mod pipe;
pub mod route;
pub mod runtime;
pub mod socket;
mod splice;
mod stream;
mod sub_handler;
mod tasks;
pub mod tls;

pub use builder::{ExistingSocket, IntoDest, PipeBuilder};
pub use callbacks::CallbackId;
pub use error::{KeptSocket, OpenError};
pub use external::{external_address, ExternalCache, ExternalConf, ExternalError};
pub use iface::{default_route, interfaces, refresh_interfaces, IfAddress, Interface};
pub use listen_all::{Listen, ListenAll};
pub use nat::{discover_nat, DiscoverError};
pub use pipe::Pipe;
pub use pipe_core::stun::{Filtering, Mapping, NatClass, NatConfig, NatReport, PortDelta};
pub use route::{check_external, ExternalAddrError, NotExternal, Route};
pub use runtime::{BoxFuture, KernelPipe, ListenerIo, Readiness, Runtime, TcpIo, UdpIo};
pub use stream::{Messages, PipeStream, StreamError};

pub use pipe_core;
pub use pipe_core::{
    Conf, DedupKey, Dest, EndReason, Family, Filter, Framing, Kind, LinkError, LinkId, Message,
    Outcome, PipeId, Proto, RecvError, SendError, Stats, SubId, SubscribeError, Tls, TlsClient,
    TlsError, TlsServer,
};
