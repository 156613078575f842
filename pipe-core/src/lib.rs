//! # pipe-core: the sans-IO pipe engine
//!
//! A pipe is one API over TCP and UDP, IPv4 and IPv6, clients and servers. This crate is its
//! pure state machine: message ids and dedup, subscriptions and bounded queues, reliable-UDP
//! acks and retries, linking pipes into relays, TCP framing, the pipe lifecycle, and a STUN
//! codec with client and server agents ([`stun`]). It performs no I/O, reads no clock and
//! spawns nothing; the drivers (pipe-tokio, pipe-smol, or your own loop) own the sockets.
//!
//! ## The contract
//!
//! - **Inputs** are `handle_*` calls on [`Engine`], each carrying `now`: a datagram, stream
//!   bytes of a connection (always consumed whole: a partial frame is buffered), the peer
//!   closing or resetting, a timeout. **Commands** (`send`, `subscribe`, `link`, `close` ...)
//!   also take `now` where time matters.
//! - **Outputs** are drained after *every* input or command, in this order:
//!   [`Engine::poll_transmit`] (or per socket: [`Engine::poll_dirty`] +
//!   [`Engine::poll_transmit_for`]) until `None`, then [`Engine::poll_event`] until `None`,
//!   then [`Engine::poll_timeout`] to know when to call [`Engine::handle_timeout`]. While
//!   output is queued, `poll_timeout` returns the latest `now` it was given.
//! - **Time and randomness are arguments.** Same seed and inputs give the same outputs.
//! - **Borrow in, own out:** inputs are `&[u8]`, outputs are [`bytes::Bytes`].
//! - **No user code runs inside the engine:** callbacks belong to the driver, which learns
//!   about messages from [`Event::Message`].
//! - **Errors** are typed per operation and split by fault ([`error`]). Hostile peer input
//!   is never an `Err` and never a panic: it is dropped and counted in [`Stats`], or it ends
//!   that connection with an [`EndReason`].
//! - **Every queue and table has a cap** with an explicit overflow policy and a counter
//!   (see [`Conf`] and the `MAX_*` constants).
//!
//! ## Embedding it in any executor, or none
//!
//! A UDP client driven by blocking `std::net` sockets (a runnable copy of this loop is the
//! test `conformance-tests/tests/embed_blocking.rs`):
//!
//! ```no_run
//! use std::net::UdpSocket;
//! use std::time::{Duration, Instant};
//! use pipe_core::{Conf, Engine, Event, SubId};
//!
//! # fn main() -> std::io::Result<()> {
//! let socket = UdpSocket::bind("127.0.0.1:0")?;
//! let server = "127.0.0.1:3478".parse().unwrap();
//! let mut engine = Engine::new(42);
//! let pipe = engine
//!     .open_udp(Instant::now(), socket.local_addr()?, Some(server), Conf::default(), false)
//!     .expect("valid conf");
//! engine.send(Instant::now(), pipe, b"hello", None).expect("queued");
//! let mut buf = [0u8; 65_536];
//! loop {
//!     // 1. Put the engine's transmits on the wire.
//!     while let Some(t) = engine.poll_transmit() {
//!         socket.send_to(&t.payload, t.dst)?;
//!     }
//!     // 2. Act on its events.
//!     while let Some(event) = engine.poll_event() {
//!         if let Event::Readable { pipe } = event {
//!             while let Ok(Some(msg)) = engine.recv(pipe, SubId::ALL) {
//!                 println!("{} bytes from {}", msg.data.len(), msg.from);
//!                 return Ok(());
//!             }
//!         }
//!     }
//!     // 3. Sleep until input or the engine's next deadline.
//!     let now = Instant::now();
//!     let wait = engine.poll_timeout().map_or(Duration::from_secs(1), |t| t.saturating_duration_since(now));
//!     socket.set_read_timeout(Some(wait.max(Duration::from_millis(1))))?;
//!     match socket.recv_from(&mut buf) {
//!         Ok((n, from)) => engine.handle_datagram(Instant::now(), pipe, from, &buf[..n]),
//!         Err(_) => engine.handle_timeout(Instant::now()),
//!     }
//! }
//! # }
//! ```
//!
//! ## Modules
//!
//! - [`addr`]: protocols, families, destinations (`SocketAddr` everywhere, scope ids kept).
//! - [`conf`]: P2PD's `NET_CONF`, typed and validated per pipe.
//! - [`connect_plan`]: Happy Eyeballs (RFC 8305): the order and timing of connection attempts.
//! - [`Engine`]: the pipes of one group; the inbound pipeline is reliable-UDP control →
//!   relay stamp → dedup → links → callback event → subscriptions.
//! - [`rudp`]: P2PD's reliable-UDP wire format.
//! - [`relay`]: the origin stamp and hop limit of relayed messages (`Conf::relay_stamp`).
//! - [`stun`]: RFC 8489 Binding codec, client and server agents.
//! - [`rng`]: the seeded generator.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod addr;
pub mod conf;
pub mod connect_plan;
mod dedup;
mod engine;
pub mod error;
mod event;
mod framing;
pub mod idmap;
pub mod relay;
pub mod rng;
pub mod rudp;
pub mod stun;
mod sub;
pub mod tls;

pub use addr::{Dest, Family, Host, Proto};
pub use conf::{Conf, DedupKey, Framing};
pub use connect_plan::{AttemptError, ConnectFailed, ConnectPlan, PlanOutcome};
pub use dedup::{sender_cap, MAX_RELIABLE_SENDERS};
pub use engine::{
    ConnTotals, Engine, Kind, State, Stats, DIRECT_MIN, MAX_EVENTS, MAX_LINKS, MAX_SUBSCRIPTIONS,
    MAX_UDP_V4, MAX_UDP_V6,
};
pub use error::{
    AcceptError, ConfError, DestError, IoError, LinkError, RecvError, SendError, SubscribeError,
};
pub use event::{
    EndReason, Event, LinkId, LinkTarget, Message, MessageId, Outcome, PipeId, SubId, TargetToken,
    Transmit,
};
pub use sub::Filter;
pub use tls::{Tls, TlsClient, TlsError, TlsServer};

/// The certificate, key and name types TLS configs take (rustls's `pki_types`).
pub mod rustls_types {
    pub use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
}
pub use tls::rustls;
