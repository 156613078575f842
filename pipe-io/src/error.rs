//! Errors of opening a pipe.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use pipe_core::{ConfError, DestError, Family};

/// Opening a pipe failed. Each cause is its own variant: never a silent `None`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// A conf value is invalid.
    #[error("invalid conf")]
    Conf(#[from] ConfError),
    /// The destination is malformed (port 0, bad host name ...).
    #[error("bad destination")]
    Dest(#[from] DestError),
    /// DNS failed for the host.
    #[error("could not resolve {host}")]
    Resolve {
        /// The host name.
        host: String,
        /// The resolver's error.
        source: io::Error,
    },
    /// DNS did not answer within `dns_timeout`.
    #[error("resolving {host} timed out after {after:?}")]
    ResolveTimeout {
        /// The host name.
        host: String,
        /// The timeout.
        after: Duration,
    },
    /// The host has no address of the family the pipe's route uses.
    #[error("{host} has no {family:?} address")]
    NoAddress {
        /// The host.
        host: String,
        /// The family wanted.
        family: Family,
    },
    /// The bind address and the destination are of different families.
    #[error("bind address {bind} and destination {dest} differ in address family")]
    FamilyMismatch {
        /// The local address.
        bind: SocketAddr,
        /// The destination.
        dest: SocketAddr,
    },
    /// Creating or binding the socket failed (address in use, not local ...).
    #[error("could not bind {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// Binding the socket to the route's interface (SO_BINDTODEVICE) failed: not permitted
    /// (it needs CAP_NET_RAW), no such device, or not supported on this OS.
    #[error("could not bind to device {device:?}")]
    BindDevice {
        /// The interface name.
        device: String,
        /// The OS error.
        source: io::Error,
    },
    /// The peer refused the TCP connection.
    #[error("connection to {addr} refused")]
    ConnectRefused {
        /// The peer.
        addr: SocketAddr,
        /// The bound socket, kept when `Conf::do_close` is false.
        socket: Option<KeptSocket>,
    },
    /// The TCP connection did not complete within `con_timeout`.
    #[error("connection to {addr} timed out after {after:?}")]
    ConnectTimeout {
        /// The peer.
        addr: SocketAddr,
        /// The timeout.
        after: Duration,
        /// The bound socket, kept when `Conf::do_close` is false.
        socket: Option<KeptSocket>,
    },
    /// The TCP connection failed otherwise (unreachable, reset ...).
    #[error("connection to {addr} failed")]
    Connect {
        /// The peer.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
        /// The bound socket, kept when `Conf::do_close` is false.
        socket: Option<KeptSocket>,
    },
    /// A name resolved to several addresses and every Happy Eyeballs (RFC 8305) attempt
    /// failed: `failed` lists each address tried, in the order the attempts started, with
    /// its error (and the addresses `con_timeout` left no time for). Printed once, in full;
    /// no kept socket (`Conf::do_close` applies to single-address connects).
    #[error("could not connect to {host}: {failed}")]
    AllAttemptsFailed {
        /// The host name.
        host: String,
        /// Every attempt and why it failed.
        failed: pipe_core::ConnectFailed<io::Error>,
    },
    /// The runtime could not register the socket, or another OS failure.
    #[error("socket error")]
    Io(#[from] io::Error),
    /// `Conf::sock_only` is set: call `open_socket` to get the socket instead of a pipe.
    #[error("conf.sock_only is set: use open_socket() to get the configured socket")]
    SockOnly,
    /// The existing socket given does not fit the pipe asked for.
    #[error("existing socket does not fit: {0}")]
    BadSocket(&'static str),
    /// The TLS handshake failed (a certificate refused, an alert, the deadline).
    #[error("TLS handshake failed: {0}")]
    Tls(pipe_core::TlsError),
}

/// A socket handed back by a failed open because `Conf::do_close` was false (P2PD uses this
/// for TCP hole punching: retry the connect from the same bound port).
#[derive(Debug)]
pub struct KeptSocket(pub socket2::Socket);

impl OpenError {
    /// The socket kept by a failed connect when `Conf::do_close` is false.
    pub fn into_socket(self) -> Option<socket2::Socket> {
        match self {
            OpenError::ConnectRefused { socket, .. }
            | OpenError::ConnectTimeout { socket, .. }
            | OpenError::Connect { socket, .. } => socket.map(|k| k.0),
            _ => None,
        }
    }
}

/// For code that speaks `std::io`. An OS failure keeps its kind (the whole `OpenError`, with
/// its address and the OS error as its `source()`, is the inner error); a bare
/// [`OpenError::Io`] gives back its own `io::Error`:
///
/// | `OpenError` | `io::ErrorKind` |
/// |---|---|
/// | `Io(e)` | `e` itself |
/// | `Resolve`, `Bind`, `BindDevice`, `Connect` | the OS error's kind |
/// | `ConnectRefused` | `ConnectionRefused` |
/// | `ConnectTimeout`, `ResolveTimeout` | `TimedOut` |
/// | `NoAddress` | `AddrNotAvailable` |
/// | `Conf`, `Dest`, `FamilyMismatch`, `BadSocket`, `SockOnly` | `InvalidInput` |
/// | `Tls` | `InvalidData` (as rustls's own streams report TLS failures) |
/// | any other | `Other` |
impl From<OpenError> for io::Error {
    fn from(e: OpenError) -> Self {
        use io::ErrorKind as K;
        let e = match e {
            OpenError::Io(inner) => return inner,
            other => other,
        };
        let kind = match &e {
            OpenError::Io(inner) => inner.kind(),
            OpenError::Resolve { source, .. }
            | OpenError::Bind { source, .. }
            | OpenError::BindDevice { source, .. }
            | OpenError::Connect { source, .. } => source.kind(),
            OpenError::ConnectRefused { .. } => K::ConnectionRefused,
            OpenError::ConnectTimeout { .. } | OpenError::ResolveTimeout { .. } => K::TimedOut,
            OpenError::NoAddress { .. } => K::AddrNotAvailable,
            OpenError::Conf(_)
            | OpenError::Dest(_)
            | OpenError::FamilyMismatch { .. }
            | OpenError::BadSocket(_)
            | OpenError::SockOnly => K::InvalidInput,
            OpenError::Tls(_) => K::InvalidData,
            #[allow(unreachable_patterns)]
            _ => K::Other,
        };
        io::Error::new(kind, e)
    }
}
