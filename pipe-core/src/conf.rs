//! Per-pipe configuration: P2PD's `NET_CONF`, typed, validated, and passed by value.
//!
//! Every key of P2PD's `NET_CONF` is here with P2PD's default (durations are `Duration`, not
//! seconds), except `loop`, which is the driver crate you pick (pipe-tokio or pipe-smol).
//! Unlike P2PD, every key reaches the pipe it was given to: there is no global conf.
//! `max_qsize` defaults to 1024 (P2PD: 0 = unbounded): pass 0 to opt into unbounded queues.
//! The keys after `send_retry` are this project's additions (DESIGN.md §5).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;

use crate::error::ConfError;

/// [`Conf::shared_default`], made on first use.
static SHARED_DEFAULT: OnceLock<Arc<Conf>> = OnceLock::new();

/// How a TCP byte stream is cut into messages.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Framing {
    /// Each read is one message, as P2PD does: chunks may merge or split.
    #[default]
    Raw,
    /// A 4-byte big-endian length, then that many bytes. A declared length over `max` ends the
    /// connection before anything is allocated for it.
    LengthPrefixed {
        /// The largest payload accepted or sent.
        max: usize,
    },
    /// Messages end with `delim` (not part of the message). More than `max` bytes without a
    /// delimiter ends the connection.
    Delimited {
        /// The delimiter, e.g. `b"\n"`.
        delim: Bytes,
        /// The largest message accepted or sent, delimiter excluded.
        max: usize,
    },
}

/// What identifies a duplicate when `enable_msg_ids` is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DedupKey {
    /// Sender IP and payload, as P2PD: the same payload from two ports of one host is a duplicate.
    #[default]
    Ip,
    /// Sender IP, port and payload.
    IpPort,
}

/// Configuration of one pipe. Build with `Conf::default()` and struct update syntax.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conf {
    /// Bound on one DNS resolution. P2PD: 2 s.
    pub dns_timeout: Duration,
    /// Wrap TCP in TLS. With `tls` unset, pipe-io fills in a client config verified against
    /// the OS's roots (a server needs `tls` with its certificate). See [`crate::tls`].
    pub use_ssl: bool,
    /// Bound on the TLS handshake: past it the pipe ends with
    /// [`crate::TlsError::HandshakeTimeout`]. P2PD: 4 s (and unused there).
    pub ssl_handshake: Duration,
    /// The TLS configuration of a TCP pipe ([`crate::Tls::Client`] to connect,
    /// [`crate::Tls::Server`] for a listener); `Some` turns TLS on.
    pub tls: Option<crate::tls::Tls>,
    /// A TLS server's handshakes in progress; a new connection past it ends the oldest
    /// handshake (`TlsError::HandshakeEvicted`). Default 1,024.
    pub max_handshakes: usize,
    /// The `protocol` argument of `socket(2)`. P2PD: 0.
    pub sock_proto: i32,
    /// Default wait of `recv` when no timeout is passed. P2PD: 2 s.
    pub recv_timeout: Duration,
    /// Bound on a TCP connect (all Happy Eyeballs attempts together). P2PD: 2 s.
    pub con_timeout: Duration,
    /// Happy Eyeballs (RFC 8305 §5 "Connection Attempt Delay"): when a name resolves to
    /// several addresses, the next connection attempt starts this long after the last one
    /// unless it failed first ([`crate::connect_plan`]). Default 250 ms; 10 ms ..= 10 s.
    pub attempt_delay: Duration,
    /// Messages held per subscription queue; the oldest is dropped when full. 0 = unbounded.
    pub max_qsize: usize,
    /// Drop duplicate messages (keyed by [`DedupKey`]).
    pub enable_msg_ids: bool,
    /// How many message ids the dedup window remembers (least recently seen evicted). P2PD: 1000.
    pub max_msg_ids: usize,
    /// Set SO_REUSEADDR and SO_REUSEPORT before binding.
    pub reuse_addr: bool,
    /// Set SO_BROADCAST.
    pub broadcast: bool,
    /// Size of the read buffer: the largest TCP chunk read at once. P2PD: 64 KiB.
    pub reader_limit: usize,
    /// Return the configured socket instead of a pipe: use the driver's `open_socket`. A pipe
    /// opened with this set is refused, so the flag is never silently ignored.
    pub sock_only: bool,
    /// Close the socket when opening fails. P2PD: true. With false the driver hands it back.
    pub do_close: bool,
    /// SO_LINGER: `None` leaves it off, `Some(d)` enables it with `d` (0 = reset on close).
    pub linger: Option<Duration>,
    /// Extra transmissions of a reliable send: tries = 1 + `send_retry`. P2PD: 2 (dead there).
    pub send_retry: u32,
    /// How TCP bytes become messages.
    pub framing: Framing,
    /// Bytes held per subscription queue (the oldest messages are dropped past it). 0 = unbounded.
    pub max_queue_bytes: usize,
    /// What makes two messages duplicates.
    pub dedup_key: DedupKey,
    /// Wait between reliable-UDP transmissions, and after the last one. P2PD: 3 s.
    pub retry_interval: Duration,
    /// Frame every datagram of this UDP pipe in P2PD's reliable-UDP format, so that
    /// `send_reliable` works and plain sends stay unmangled for the peer.
    pub reliable_udp: bool,
    /// Reliable sends waiting for an ACK, per pipe. P2PD: 1000.
    pub max_reliable_outstanding: usize,
    /// Width of the per-sender sliding window of reliable-UDP sequence numbers (repeats inside
    /// it are dropped, older ones are too old), and size of the FIFO set that holds random
    /// (P2PD) sequence numbers. Default 1024.
    pub reliable_window: usize,
    /// Live connections per TCP server; more are closed at once.
    pub max_connections: usize,
    /// Accepted connections waiting for `accept()`; the oldest is dropped from the accept
    /// queue (not closed) when full.
    pub accept_backlog: usize,
    /// Bytes queued for the socket before `send` waits (the write buffer, for backpressure).
    pub max_out_bytes: usize,
    /// Seed for sequence numbers. Drivers fill it with fresh entropy when left at 0.
    pub seed: u64,
    /// No bytes either way for this long ends the pipe with [`crate::EndReason::IdleTimeout`].
    /// `None`: never (P2PD). Not applied to listeners. [`Conf::server`]: 30 s.
    pub idle_timeout: Option<Duration>,
    /// An accepted connection with no complete message this long after its accept ends with
    /// [`crate::EndReason::FirstMessageTimeout`] (slowloris). `None`: never (P2PD).
    /// [`Conf::server`]: 10 s.
    pub first_message_timeout: Option<Duration>,
    /// Outbound bytes queued with no write progress for this long end the pipe with
    /// [`crate::EndReason::WriteStalled`] (a peer that stopped reading). `None`: never
    /// (P2PD). [`Conf::server`]: 30 s.
    pub write_stall_timeout: Option<Duration>,
    /// After the pipe ends, how long the bytes queued before the end may take to leave. What
    /// is left then is dropped, counted in [`crate::Stats::unsent_dropped`] and reported in
    /// [`crate::Event::Released`]. Default 2 s.
    pub close_timeout: Duration,
    /// Per pipe: bytes of received messages handed to callbacks and not yet finished. At the
    /// cap the pipe stops reading until callbacks catch up. Default 1 MiB.
    pub max_callback_bytes: usize,
    /// Per pipe: messages handed to callbacks and not yet finished (the count cap beside
    /// `max_callback_bytes`). Default 256.
    pub max_callback_jobs: usize,
    /// A TCP server's memory budget: bytes held for all its connections (messages waiting for
    /// callbacks, subscription queues, outbound buffers). Over it, every connection that holds
    /// bytes stops reading until the total falls back under it. Default 32 MiB.
    pub max_server_bytes: usize,
    /// Stamp what this pipe's links forward with an origin, a message id and a hop limit
    /// ([`crate::relay`]), and drop stamped messages seen before (a window of `max_msg_ids`
    /// stamps, whatever `enable_msg_ids` says). This changes the bytes on the wire: only for
    /// relays of this project (P2PD peers would get the 21-byte header in their payload).
    /// TCP pipes need non-Raw framing. Default false.
    pub relay_stamp: bool,
    /// With `relay_stamp`: how many relays an unstamped message entering this pipe may pass
    /// through, this one included (1..=64). Default 8.
    pub relay_hops: u8,
    /// Zero-copy relaying: two raw TCP pipes linked both ways, with nothing in pipes needing
    /// to see the bytes (no TLS, no framing, no subscription but a connection's fallback, no
    /// message callbacks, no dedup or stamps), move the bytes between their sockets in the
    /// kernel (Linux `splice(2)` through a pipe) instead of copying them through user space
    /// ([`crate::Engine::splice_source`]). Both pipes must allow it. Where the runtime cannot
    /// splice, the copying path is used. Off: always copy. Default true.
    pub zero_copy: bool,
}

impl Default for Conf {
    fn default() -> Self {
        Self {
            dns_timeout: Duration::from_secs(2),
            use_ssl: false,
            ssl_handshake: Duration::from_secs(4),
            tls: None,
            max_handshakes: 1024,
            sock_proto: 0,
            recv_timeout: Duration::from_secs(2),
            con_timeout: Duration::from_secs(2),
            attempt_delay: crate::connect_plan::DEFAULT_ATTEMPT_DELAY,
            max_qsize: 1024,
            enable_msg_ids: false,
            max_msg_ids: 1000,
            reuse_addr: false,
            broadcast: false,
            reader_limit: 1 << 16,
            sock_only: false,
            do_close: true,
            linger: None,
            send_retry: 2,
            framing: Framing::Raw,
            max_queue_bytes: 16 << 20,
            dedup_key: DedupKey::Ip,
            retry_interval: Duration::from_secs(3),
            reliable_udp: false,
            max_reliable_outstanding: 1000,
            reliable_window: 1024,
            max_connections: 65_536,
            accept_backlog: 1024,
            max_out_bytes: 256 << 10,
            seed: 0,
            idle_timeout: None,
            first_message_timeout: None,
            write_stall_timeout: None,
            close_timeout: Duration::from_secs(2),
            max_callback_bytes: 1 << 20,
            max_callback_jobs: 256,
            max_server_bytes: 32 << 20,
            relay_stamp: false,
            relay_hops: 8,
            zero_copy: true,
        }
    }
}

/// The idle timeout [`Conf::server`] sets: quinn's `max_idle_timeout` default.
pub const SERVER_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// The first-message timeout [`Conf::server`] sets (s2n-quic's handshake bound; hyper's
/// header-read timeout is 30 s).
pub const SERVER_FIRST_MESSAGE_TIMEOUT: Duration = Duration::from_secs(10);
/// The write-stall timeout [`Conf::server`] sets.
pub const SERVER_WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest declared frame any framing may accept: 64 MiB.
pub const MAX_FRAME: usize = 64 << 20;

impl Conf {
    /// The defaults for a server facing untrusted peers: [`Conf::default`] plus an idle
    /// timeout ([`SERVER_IDLE_TIMEOUT`]), a first-message timeout
    /// ([`SERVER_FIRST_MESSAGE_TIMEOUT`]) and a write-stall timeout
    /// ([`SERVER_WRITE_STALL_TIMEOUT`]). `Conf::default()` keeps P2PD's behaviour: no
    /// deadline on a quiet peer.
    pub fn server() -> Self {
        Self {
            idle_timeout: Some(SERVER_IDLE_TIMEOUT),
            first_message_timeout: Some(SERVER_FIRST_MESSAGE_TIMEOUT),
            write_stall_timeout: Some(SERVER_WRITE_STALL_TIMEOUT),
            ..Self::default()
        }
    }

    /// `Conf::default()`, made once per process and shared. A pipe opened with it (the
    /// drivers' builders start from it) copies no conf and validates none: it is known
    /// valid for every protocol (a unit test holds that). An `Arc` is never changed in
    /// place while shared (`Arc::make_mut` copies), so the shared one stays the default.
    pub fn shared_default() -> Arc<Conf> {
        Arc::clone(SHARED_DEFAULT.get_or_init(|| Arc::new(Conf::default())))
    }

    /// Whether `conf` is [`Conf::shared_default`] itself (not merely equal to it).
    pub fn is_shared_default(conf: &Arc<Conf>) -> bool {
        SHARED_DEFAULT.get().is_some_and(|d| Arc::ptr_eq(conf, d))
    }

    /// Check every value; the first bad key is reported.
    pub fn validate(&self) -> Result<(), ConfError> {
        let hour = Duration::from_secs(3600);
        for (key, d) in [
            ("dns_timeout", self.dns_timeout),
            ("ssl_handshake", self.ssl_handshake),
            ("recv_timeout", self.recv_timeout),
            ("con_timeout", self.con_timeout),
            ("retry_interval", self.retry_interval),
            ("close_timeout", self.close_timeout),
        ] {
            if d.is_zero() {
                return Err(ConfError::ZeroDuration { key });
            }
            if d > hour {
                return Err(ConfError::DurationTooLong { key, max: hour });
            }
        }
        if !(Duration::from_millis(10)..=Duration::from_secs(10)).contains(&self.attempt_delay) {
            return Err(ConfError::OutOfRange {
                key: "attempt_delay",
                value: i64::try_from(self.attempt_delay.as_millis()).unwrap_or(i64::MAX),
                min: 10,
                max: 10_000,
            });
        }
        let day = Duration::from_secs(86_400);
        for (key, d) in [
            ("idle_timeout", self.idle_timeout),
            ("first_message_timeout", self.first_message_timeout),
            ("write_stall_timeout", self.write_stall_timeout),
        ] {
            match d {
                Some(d) if d.is_zero() => return Err(ConfError::ZeroDuration { key }),
                Some(d) if d > day => return Err(ConfError::DurationTooLong { key, max: day }),
                _ => {}
            }
        }
        if self.linger.is_some_and(|l| l > Duration::from_secs(65_535)) {
            return Err(ConfError::DurationTooLong {
                key: "linger",
                max: Duration::from_secs(65_535),
            });
        }
        range("sock_proto", i64::from(self.sock_proto), 0, 255)?;
        range("reader_limit", n(self.reader_limit), 512, 16 << 20)?;
        range("max_msg_ids", n(self.max_msg_ids), 1, 1 << 24)?;
        range("send_retry", i64::from(self.send_retry), 0, 100)?;
        range(
            "max_reliable_outstanding",
            n(self.max_reliable_outstanding),
            1,
            1 << 20,
        )?;
        range("reliable_window", n(self.reliable_window), 1, 1 << 20)?;
        range("max_connections", n(self.max_connections), 1, 1 << 24)?;
        range("accept_backlog", n(self.accept_backlog), 1, 1 << 20)?;
        range("max_out_bytes", n(self.max_out_bytes), 1, 1 << 30)?;
        range("max_callback_bytes", n(self.max_callback_bytes), 1, 1 << 30)?;
        range("max_callback_jobs", n(self.max_callback_jobs), 1, 1 << 20)?;
        range("max_server_bytes", n(self.max_server_bytes), 1, 1 << 40)?;
        range("relay_hops", i64::from(self.relay_hops), 1, 64)?;
        match &self.framing {
            Framing::Raw => {}
            Framing::LengthPrefixed { max } => range("framing.max", n(*max), 1, n(MAX_FRAME))?,
            Framing::Delimited { delim, max } => {
                if delim.is_empty() {
                    return Err(ConfError::EmptyDelimiter);
                }
                range("framing.delim", n(delim.len()), 1, 64)?;
                range("framing.max", n(*max), 1, n(MAX_FRAME))?;
            }
        }
        range("max_handshakes", n(self.max_handshakes), 1, 1 << 20)?;
        if self.use_ssl && self.tls.is_none() {
            return Err(ConfError::Incompatible {
                key: "use_ssl",
                why: "no TLS configuration: set `tls` (pipe-io fills in a client verified \
                      against the OS's roots; a server needs its certificate)",
            });
        }
        Ok(())
    }

    /// [`Conf::validate`], plus the checks that depend on the protocol of the pipe: a TCP pipe
    /// with `relay_stamp` needs message boundaries (non-Raw framing).
    pub fn validate_for(&self, proto: crate::addr::Proto) -> Result<(), ConfError> {
        self.validate()?;
        if proto == crate::addr::Proto::Tcp && self.relay_stamp && self.framing == Framing::Raw {
            return Err(ConfError::Incompatible {
                key: "relay_stamp",
                why: "a raw TCP stream has no message boundaries to stamp: use LengthPrefixed or Delimited framing",
            });
        }
        Ok(())
    }

    /// [`Conf::validate_for`], except for [`Conf::shared_default`] itself, which is known
    /// valid: what opening a pipe checks (the drivers' builders and the engine).
    pub fn validate_shared(conf: &Arc<Conf>, proto: crate::addr::Proto) -> Result<(), ConfError> {
        if Self::is_shared_default(conf) {
            return Ok(());
        }
        conf.validate_for(proto)
    }

    /// The retransmission count as tries: `1 + send_retry`.
    pub fn reliable_tries(&self) -> u32 {
        1 + self.send_retry
    }
}

fn range(key: &'static str, value: i64, min: i64, max: i64) -> Result<(), ConfError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(ConfError::OutOfRange {
            key,
            value,
            min,
            max,
        })
    }
}

fn n(x: usize) -> i64 {
    i64::try_from(x).unwrap_or(i64::MAX)
}
