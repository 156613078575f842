//! Typed errors, one enum per operation, split by fault.
//!
//! Caller misuse (a bad argument, an unknown subscription, a send after close) is an `Err`.
//! Hostile or broken peer input is never an `Err` of an API call: it is dropped and counted in
//! [`crate::Stats`], or ends that connection with an [`crate::EndReason`].

use std::time::Duration;

use crate::addr::Family;

/// A destination could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DestError {
    /// Port 0 is not a destination.
    #[error("port 0 is not a valid destination port")]
    PortZero,
    /// The text has no `:port`.
    #[error("destination has no port")]
    MissingPort,
    /// The port is not a number in 1..=65535.
    #[error("bad port {0:?}")]
    BadPort(String),
    /// The IPv6 scope is not a number, or was given with an IPv4 address.
    #[error("bad IPv6 scope id {0:?} (use the interface index)")]
    BadScope(String),
    /// The host is neither an IP literal nor a valid DNS name.
    #[error("bad host name {0:?}")]
    BadHostName(String),
    /// The text is not a destination at all.
    #[error("malformed destination {0:?}")]
    Malformed(String),
}

/// A [`crate::Conf`] value is out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfError {
    /// A duration that must be positive is zero.
    #[error("{key} must be greater than zero")]
    ZeroDuration {
        /// The conf key.
        key: &'static str,
    },
    /// A duration is longer than the key allows.
    #[error("{key} must be at most {max:?}")]
    DurationTooLong {
        /// The conf key.
        key: &'static str,
        /// The largest allowed value.
        max: Duration,
    },
    /// A size or count is outside its range.
    #[error("{key} = {value} is outside {min}..={max}")]
    OutOfRange {
        /// The conf key.
        key: &'static str,
        /// The value given.
        value: i64,
        /// The smallest allowed value.
        min: i64,
        /// The largest allowed value.
        max: i64,
    },
    /// A delimiter for [`crate::Framing::Delimited`] is empty.
    #[error("the framing delimiter must not be empty")]
    EmptyDelimiter,
    /// The key names a feature that this build does not provide yet.
    #[error("{key} is not supported yet: {why}")]
    Unsupported {
        /// The conf key.
        key: &'static str,
        /// Why, and what to use instead.
        why: &'static str,
    },
    /// The key cannot be used with the rest of the conf or with this kind of pipe.
    #[error("{key} cannot be used here: {why}")]
    Incompatible {
        /// The conf key.
        key: &'static str,
        /// Why, and what to use instead.
        why: &'static str,
    },
}

/// A send was refused. Nothing was queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The pipe is closed (locally, by the peer, or its server closed).
    #[error("pipe is closed")]
    Closed,
    /// No destination was given and the pipe has none (a server).
    #[error("no destination: this pipe has no default destination, pass one")]
    NoDestination,
    /// The destination's family differs from the pipe's socket.
    #[error("destination is {dest:?} but the pipe's socket is {local:?}")]
    FamilyMismatch {
        /// The family of the pipe's socket.
        local: Family,
        /// The family of the destination.
        dest: Family,
    },
    /// The destination port is 0.
    #[error("destination port 0")]
    PortZero,
    /// The payload is larger than the protocol or framing allows.
    #[error("message of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Payload length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A TCP pipe sends only to its peer; this names another address.
    #[error("a TCP pipe sends only to its peer, not {0}")]
    NotConnectedTo(std::net::SocketAddr),
    /// The payload contains the framing delimiter, so the peer would split it.
    #[error("message contains the framing delimiter")]
    ContainsDelimiter,
    /// The pipe's outbound buffer is full: wait until it drains (the drivers do) and retry.
    #[error("outbound buffer full")]
    WouldBlock,
    /// A reliable send was asked of a pipe that is not in reliable-UDP mode.
    #[error("reliable send needs a UDP pipe with `reliable_udp` set")]
    NotReliable,
    /// Too many reliable sends are waiting for an acknowledgement.
    #[error("{0} reliable sends are already outstanding")]
    TooManyOutstanding(usize),
    /// The operation is not possible on this kind of pipe (for example a send on a TCP listener).
    #[error("not supported on a {0}")]
    WrongKind(&'static str),
    /// The socket refused the bytes (reported by a driver; the environment's fault).
    #[error("socket error ({kind:?}): {message}")]
    Io {
        /// The OS error kind.
        kind: std::io::ErrorKind,
        /// The OS error text.
        message: String,
    },
}

impl From<std::io::Error> for SendError {
    fn from(e: std::io::Error) -> Self {
        SendError::Io {
            kind: e.kind(),
            message: e.to_string(),
        }
    }
}

/// A receive could not be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecvError {
    /// The subscription does not exist on this pipe.
    #[error("not subscribed")]
    NotSubscribed,
    /// The pipe is closed and that subscription's queue is drained.
    #[error("pipe is closed")]
    Closed,
}

/// A subscription could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubscribeError {
    /// The byte regex does not compile (or is too large).
    #[error("bad pattern: {0}")]
    BadPattern(String),
    /// The pipe already has the maximum number of subscriptions.
    #[error("too many subscriptions (max {0})")]
    TooMany(usize),
    /// The pipe is closed.
    #[error("pipe is closed")]
    Closed,
    /// The pipe cannot receive (a TCP listener: subscribe on its connections).
    #[error("a {0} has no messages to subscribe to")]
    WrongKind(&'static str),
}

/// A link could not be made or removed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// A pipe cannot be linked to itself: it would send its input back to its own peer.
    #[error("a pipe cannot be linked to itself")]
    SelfLink,
    /// One of the two pipes is closed.
    #[error("pipe is closed")]
    Closed,
    /// The pipe already has the maximum number of links.
    #[error("too many links (max {0})")]
    TooMany(usize),
    /// No such link on this pipe.
    #[error("no such link")]
    NotLinked,
    /// The target cannot send (a TCP listener: link its connections instead).
    #[error("a {0} cannot be a link target")]
    WrongKind(&'static str),
}

/// A connection could not be registered with its listener.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AcceptError {
    /// The listener already has `max_connections` live connections: close this one.
    #[error("connection limit of {0} reached")]
    TooManyConnections(usize),
    /// The listener is closed (or is not a listener).
    #[error("listener is closed")]
    Closed,
}
