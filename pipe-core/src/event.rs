//! Identifiers and the outputs of the engine: transmits, events and received messages.

use std::fmt;
use std::net::SocketAddr;

use bytes::Bytes;

use crate::addr::Proto;

/// A pipe inside one [`crate::Engine`]. Ids are never reused by the same engine. Never
/// zero, so an `Option<PipeId>` is one word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PipeId(pub(crate) std::num::NonZeroU64);

impl PipeId {
    /// The raw value, for logs and driver-side maps.
    pub fn as_u64(self) -> u64 {
        self.0.get()
    }
}

impl fmt::Display for PipeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pipe#{}", self.0)
    }
}

/// A subscription on one pipe. [`SubId::ALL`] is the default subscription to every message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubId(pub(crate) u64);

impl SubId {
    /// The subscription to every message (P2PD's `SUB_ALL`).
    pub const ALL: SubId = SubId(0);
}

/// A link from one pipe to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkId(pub(crate) u64);

/// A reliable send, identified by its wire sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(pub u64);

/// A received message: the payload (one datagram, one TCP frame, or one TCP read with
/// `Framing::Raw`) and the sender.
#[derive(Clone, PartialEq, Eq)]
pub struct Message {
    /// The payload.
    pub data: Bytes,
    /// Who sent it (for TCP: the connection's peer).
    pub from: SocketAddr,
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("len", &self.data.len())
            .field("from", &self.from)
            .finish()
    }
}

/// Bytes to put on a socket. For TCP, `payload` is already framed and goes to the pipe's
/// connection; for UDP it is one datagram to `dst`.
#[derive(Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The pipe whose socket sends it.
    pub pipe: PipeId,
    /// Protocol of that socket.
    pub proto: Proto,
    /// The local address of that socket.
    pub src: SocketAddr,
    /// The destination (for TCP, the connected peer).
    pub dst: SocketAddr,
    /// The bytes.
    pub payload: Bytes,
}

impl fmt::Debug for Transmit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transmit")
            .field("pipe", &self.pipe)
            .field("proto", &self.proto)
            .field("src", &self.src)
            .field("dst", &self.dst)
            .field("len", &self.payload.len())
            .finish()
    }
}

/// Why a pipe ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EndReason {
    /// Closed by the local user.
    Local,
    /// Its TCP server was closed.
    ServerClosed,
    /// The peer closed the connection (FIN).
    PeerClosed,
    /// The connection was reset (RST) or failed with an I/O error.
    Reset,
    /// The peer declared or sent a frame over the framing limit.
    FrameTooLarge {
        /// The declared (or buffered) length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The socket failed: the OS error, kept whole (kind, OS code, source).
    Error(crate::error::IoError),
    /// No bytes either way for [`crate::Conf::idle_timeout`].
    IdleTimeout,
    /// An accepted connection sent no complete message within
    /// [`crate::Conf::first_message_timeout`].
    FirstMessageTimeout,
    /// Outbound bytes made no progress for [`crate::Conf::write_stall_timeout`]: the peer
    /// stopped reading. The bytes still queued were dropped.
    WriteStalled {
        /// Bytes dropped unsent.
        unsent: usize,
    },
    /// TLS failed (a certificate refused, a handshake too slow, an alert) or the peer
    /// truncated the connection without `close_notify`.
    Tls(crate::tls::TlsError),
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndReason::Local => f.write_str("closed locally"),
            EndReason::ServerClosed => f.write_str("its server was closed"),
            EndReason::PeerClosed => f.write_str("the peer closed the connection"),
            EndReason::Reset => f.write_str("the connection was reset"),
            EndReason::FrameTooLarge { len, max } => {
                write!(f, "a frame of {len} bytes is over the limit of {max}")
            }
            EndReason::Error(e) => write!(f, "socket error: {e}"),
            EndReason::IdleTimeout => f.write_str("idle timeout"),
            EndReason::FirstMessageTimeout => f.write_str("no first message in time"),
            EndReason::WriteStalled { unsent } => {
                write!(f, "the peer stopped reading ({unsent} bytes unsent)")
            }
            EndReason::Tls(e) => write!(f, "{e}"),
        }
    }
}

/// Outcome of a reliable send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The peer acknowledged it.
    Acked,
    /// Every try went unacknowledged. The peer may still have it (the ACKs may have been lost).
    Unconfirmed,
}

/// Where a link sends what its pipe receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkTarget {
    /// Another pipe of the same engine: the engine sends through it itself.
    Local(PipeId),
    /// A pipe of another engine (another group). The driver says what it is and whether it
    /// is open, so the engine applies the same checks as to a local target; the engine
    /// allocates a [`TargetToken`] for it ([`crate::Engine::link_token`]) and emits
    /// [`Event::Forward`] for each message, whose result the driver reports with
    /// [`crate::Engine::handle_forward_result`].
    External {
        /// What the target is.
        kind: crate::Kind,
        /// Whether the target is open.
        open: bool,
    },
}

/// The engine's name for the target of a link to another engine. Unique per engine, never
/// reused; the driver maps it to its handle on the target until [`Event::Unlinked`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TargetToken(pub u64);

/// Something the driver must act on or report. Drain with [`crate::Engine::poll_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The pipe can send: UDP bound, TCP connected or accepted, listener listening. Once per pipe.
    Up {
        /// The pipe.
        pipe: PipeId,
    },
    /// A TCP listener accepted a connection, now a pipe of its own.
    Accepted {
        /// The listener.
        listener: PipeId,
        /// The new connection pipe.
        conn: PipeId,
    },
    /// A message for the pipe's message callbacks (only emitted while the pipe, or its
    /// listener, has callbacks; see [`crate::Engine::set_callbacks`]).
    Message {
        /// The pipe it arrived on.
        pipe: PipeId,
        /// The message.
        msg: Message,
    },
    /// A message for the handler of a subscription made with
    /// [`crate::Engine::subscribe_handler`] (instead of queueing it there). Emitted after the
    /// message's callbacks finished; report the handler done with
    /// [`crate::Engine::handle_handler_done`].
    SubMessage {
        /// The pipe it arrived on.
        pipe: PipeId,
        /// The subscription.
        sub: SubId,
        /// The message.
        msg: Message,
    },
    /// One or more subscription queues of the pipe gained messages since the last such event.
    Readable {
        /// The pipe.
        pipe: PipeId,
    },
    /// The earliest deadline a `recv` of the pipe waits to ([`crate::Engine::recv_wait`])
    /// passed: readers should look at the clock.
    RecvDue {
        /// The pipe.
        pipe: PipeId,
    },
    /// A message to send through a pipe the driver owns (a link to [`LinkTarget::External`]).
    Forward {
        /// The pipe the message arrived on.
        from: PipeId,
        /// The link.
        link: LinkId,
        /// The target.
        target: TargetToken,
        /// Destination override, or `None` for the target's default destination.
        dest: Option<SocketAddr>,
        /// The payload.
        data: Bytes,
    },
    /// A link to another engine's pipe is gone (unlinked, its pipe ended, or its target was
    /// closed): the driver drops its handle on the target.
    Unlinked {
        /// The pipe the link was on.
        pipe: PipeId,
        /// The link.
        link: LinkId,
        /// Its target.
        target: TargetToken,
    },
    /// A reliable send finished. The outcome is also kept for
    /// [`crate::Engine::take_outcome`] until taken or forgotten.
    Reliable {
        /// The pipe.
        pipe: PipeId,
        /// Which send.
        id: MessageId,
        /// How it ended.
        outcome: Outcome,
    },
    /// The pipe ended. Once per pipe. Its socket stays open until [`Event::Released`], so
    /// the transmits queued before the end can still leave.
    End {
        /// The pipe.
        pipe: PipeId,
        /// Why.
        reason: EndReason,
    },
    /// The pipe's socket is no longer needed: the pipe ended and everything queued for it was
    /// written, or dropped at [`crate::Conf::close_timeout`]. The driver closes the socket
    /// and forgets it. Once per pipe, after its `End`.
    Released {
        /// The pipe.
        pipe: PipeId,
        /// Bytes dropped unsent (also in [`crate::Stats::unsent_dropped`]).
        unsent: usize,
    },
    /// The pipe's write side is shut ([`crate::Engine::shutdown_write`]) and everything queued
    /// before was written: the driver shuts the socket's write side now (`shutdown(Write)`,
    /// a FIN). The pipe still reads. Once per pipe.
    WriteShut {
        /// The pipe.
        pipe: PipeId,
    },
    /// The peer of a pipe linked both ways with another engine's pipe sent its FIN (or the
    /// pipe ended): shut the target's write side, after the [`Event::Forward`]s emitted
    /// before this event (half-close propagation through a relay).
    ForwardShutdown {
        /// The pipe whose read side closed.
        from: PipeId,
        /// The link.
        link: LinkId,
        /// The target.
        target: TargetToken,
    },
    /// The pipe holds as much as its caps allow (messages waiting for callbacks, or its
    /// server's memory budget): stop reading its socket until [`Event::Resume`].
    Pause {
        /// The pipe.
        pipe: PipeId,
    },
    /// A paused pipe may read again.
    Resume {
        /// The pipe.
        pipe: PipeId,
    },
}
