//! Typed errors, one enum per operation, split by fault.
//!
//! Caller misuse (a bad argument, an unknown subscription, a send after close) is an `Err`.
//! Hostile or broken peer input is never an `Err` of an API call: it is dropped and counted in
//! [`crate::Stats`], or ends that connection with an [`crate::EndReason`].

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use crate::addr::Family;

/// An OS error kept whole (its [`io::ErrorKind`], OS code and source), shared so that the
/// errors and end reasons holding it stay `Clone`.
///
/// Two are equal when their kinds and OS codes are equal and, for errors without an OS
/// code, their texts. `Display` and `source()` are the wrapped error's own, so it prints
/// once in an error chain. Get a `std::io::Error` back with [`IoError::into_io`] (or
/// `io::Error::from`).
#[derive(Debug, Clone)]
pub struct IoError(Arc<io::Error>);

impl IoError {
    /// Wrap an OS error.
    pub fn new(e: io::Error) -> Self {
        IoError(Arc::new(e))
    }

    /// The error's kind.
    pub fn kind(&self) -> io::ErrorKind {
        self.0.kind()
    }

    /// The OS error code, if the error came from the OS.
    pub fn raw_os_error(&self) -> Option<i32> {
        self.0.raw_os_error()
    }

    /// The wrapped error.
    pub fn get_ref(&self) -> &io::Error {
        &self.0
    }

    /// The wrapped error itself when this is its only holder; otherwise an equal one (the
    /// same OS code, or the same kind and text).
    pub fn into_io(self) -> io::Error {
        match Arc::try_unwrap(self.0) {
            Ok(e) => e,
            Err(shared) => match shared.raw_os_error() {
                Some(code) => io::Error::from_raw_os_error(code),
                None => io::Error::new(shared.kind(), shared.to_string()),
            },
        }
    }
}

impl PartialEq for IoError {
    fn eq(&self, other: &Self) -> bool {
        if Arc::ptr_eq(&self.0, &other.0) {
            return true;
        }
        self.kind() == other.kind()
            && self.raw_os_error() == other.raw_os_error()
            && (self.raw_os_error().is_some() || self.0.to_string() == other.0.to_string())
    }
}

impl Eq for IoError {}

impl fmt::Display for IoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for IoError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl From<io::Error> for IoError {
    fn from(e: io::Error) -> Self {
        IoError::new(e)
    }
}

impl From<IoError> for io::Error {
    fn from(e: IoError) -> Self {
        e.into_io()
    }
}

/// A driver's description of a failure that has no OS error: `ErrorKind::Other`.
impl From<&str> for IoError {
    fn from(text: &str) -> Self {
        IoError::new(io::Error::other(text.to_owned()))
    }
}

/// A driver's description of a failure that has no OS error: `ErrorKind::Other`.
impl From<String> for IoError {
    fn from(text: String) -> Self {
        IoError::new(io::Error::other(text))
    }
}

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
    /// The payload is larger than the protocol, the framing or the OS allows.
    #[error("message of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Payload length.
        len: usize,
        /// The limit: the framing's, the protocol's (65,507 bytes of UDP payload on IPv4,
        /// 65,527 on IPv6), or the largest datagram the OS takes on that route (its MTU when
        /// the socket does not fragment) when the OS refused the datagram.
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
    /// The socket refused the bytes (reported by a driver; the environment's fault). The
    /// OS error is kept whole: its kind, OS code and text are the `source()`.
    #[error("the socket refused the send")]
    Io(#[source] IoError),
}

impl From<io::Error> for SendError {
    fn from(e: io::Error) -> Self {
        SendError::Io(IoError::new(e))
    }
}

/// For code that speaks `std::io`: an OS failure gives back its own `io::Error`; the other
/// refusals map to the nearest kind, with this error as the inner error:
///
/// | `SendError` | `io::ErrorKind` |
/// |---|---|
/// | `Io(e)` | `e`'s own (the original error) |
/// | `Closed` | `BrokenPipe` |
/// | `NoDestination` | `NotConnected` |
/// | `WouldBlock`, `TooManyOutstanding` | `WouldBlock` |
/// | `WrongKind`, `NotReliable` | `Unsupported` |
/// | the others (bad destination, too large, delimiter) | `InvalidInput` |
impl From<SendError> for io::Error {
    fn from(e: SendError) -> Self {
        use io::ErrorKind as K;
        let e = match e {
            SendError::Io(inner) => return inner.into_io(),
            other => other,
        };
        let kind = match &e {
            SendError::Io(_) => K::Other,
            SendError::Closed => K::BrokenPipe,
            SendError::NoDestination => K::NotConnected,
            SendError::WouldBlock => K::WouldBlock,
            SendError::TooLarge { .. } => K::InvalidInput,
            SendError::WrongKind(_) | SendError::NotReliable => K::Unsupported,
            SendError::TooManyOutstanding(_) => K::WouldBlock,
            SendError::FamilyMismatch { .. }
            | SendError::PortZero
            | SendError::NotConnectedTo(_)
            | SendError::ContainsDelimiter => K::InvalidInput,
        };
        io::Error::new(kind, e)
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
    /// `accept` was called on a pipe that is not a TCP listener (the kind it is).
    #[error("accept needs a TCP listener, and this pipe is a {0}")]
    NotListener(&'static str),
}

/// For code that speaks `std::io`, with this error as the inner error:
///
/// | `RecvError` | `io::ErrorKind` |
/// |---|---|
/// | `Closed` | `NotConnected` |
/// | `NotSubscribed`, `NotListener` | `InvalidInput` |
impl From<RecvError> for io::Error {
    fn from(e: RecvError) -> Self {
        let kind = match e {
            RecvError::Closed => io::ErrorKind::NotConnected,
            RecvError::NotSubscribed | RecvError::NotListener(_) => io::ErrorKind::InvalidInput,
        };
        io::Error::new(kind, e)
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn an_os_error_is_kept_whole_and_given_back() {
        let e = SendError::from(io::Error::from_raw_os_error(13));
        let SendError::Io(os) = &e else {
            panic!("{e:?}")
        };
        assert_eq!(os.kind(), io::ErrorKind::PermissionDenied);
        assert_eq!(os.raw_os_error(), Some(13));
        // Printed once: the send error names what failed, its source says why.
        assert_eq!(e.to_string(), "the socket refused the send");
        let source = e.source().expect("the OS error is the source");
        assert_eq!(
            source.to_string(),
            io::Error::from_raw_os_error(13).to_string()
        );
        assert!(source.source().is_none());
        // Clone and equality still work; a sole holder gives the original back.
        assert_eq!(e.clone(), e);
        let back = io::Error::from(e);
        assert_eq!(back.raw_os_error(), Some(13));
        assert_eq!(back.kind(), io::ErrorKind::PermissionDenied);
    }

    #[test]
    fn a_shared_os_error_converts_to_an_equal_one() {
        let os = IoError::new(io::Error::from_raw_os_error(104));
        let keep = os.clone();
        let back = os.into_io();
        assert_eq!(back.raw_os_error(), Some(104));
        assert_eq!(back.kind(), keep.kind());
        assert_eq!(IoError::new(back), keep);
    }

    #[test]
    fn io_errors_compare_by_kind_code_and_text() {
        let a = IoError::new(io::Error::from_raw_os_error(13));
        assert_eq!(a, IoError::new(io::Error::from_raw_os_error(13)));
        assert_ne!(a, IoError::new(io::Error::from_raw_os_error(1)));
        assert_eq!(IoError::from("gone"), IoError::from("gone".to_string()));
        assert_ne!(IoError::from("gone"), IoError::from("late"));
        assert_eq!(IoError::from("gone").kind(), io::ErrorKind::Other);
    }

    #[test]
    fn send_errors_map_to_io_kinds() {
        use io::ErrorKind as K;
        let cases = [
            (SendError::Closed, K::BrokenPipe),
            (SendError::NoDestination, K::NotConnected),
            (SendError::WouldBlock, K::WouldBlock),
            (SendError::TooLarge { len: 9, max: 8 }, K::InvalidInput),
            (SendError::ContainsDelimiter, K::InvalidInput),
            (SendError::PortZero, K::InvalidInput),
            (SendError::NotReliable, K::Unsupported),
            (SendError::WrongKind("TCP listener"), K::Unsupported),
        ];
        for (e, kind) in cases {
            let text = e.to_string();
            let io = io::Error::from(e.clone());
            assert_eq!(io.kind(), kind, "{e:?}");
            // The send error rides along: its text, and downcast back.
            assert_eq!(io.to_string(), text);
            let inner = io.get_ref().and_then(|i| i.downcast_ref::<SendError>());
            assert_eq!(inner, Some(&e));
        }
    }

    #[test]
    fn recv_errors_map_to_io_kinds() {
        let cases = [
            (RecvError::Closed, io::ErrorKind::NotConnected),
            (RecvError::NotSubscribed, io::ErrorKind::InvalidInput),
            (
                RecvError::NotListener("UDP pipe"),
                io::ErrorKind::InvalidInput,
            ),
        ];
        for (e, kind) in cases {
            let io = io::Error::from(e);
            assert_eq!(io.kind(), kind);
            assert_eq!(io.to_string(), e.to_string());
        }
    }
}
