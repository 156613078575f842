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

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    /// The error and its causes as a reporter prints them (`a: b: c`).
    fn chain(e: &(dyn std::error::Error + 'static)) -> String {
        let mut out = e.to_string();
        let mut cur = e.source();
        while let Some(s) = cur {
            out.push_str(": ");
            out.push_str(&s.to_string());
            cur = s.source();
        }
        out
    }

    #[test]
    fn each_cause_is_printed_once() {
        let addr: SocketAddr = "192.0.2.1:80".parse().unwrap();
        let os = || io::Error::from_raw_os_error(99); // EADDRNOTAVAIL
        let text = os().to_string();
        let cases = [
            OpenError::Resolve {
                host: "example.invalid".into(),
                source: os(),
            },
            OpenError::Bind { addr, source: os() },
            OpenError::BindDevice {
                device: "eth9".into(),
                source: os(),
            },
            OpenError::Connect {
                addr,
                source: os(),
                socket: None,
            },
            OpenError::Io(os()),
        ];
        for e in cases {
            let own = e.to_string();
            assert!(!own.contains(&text), "{own:?} prints its cause");
            let source = e.source().expect("the cause is the source");
            let io = source.downcast_ref::<io::Error>().expect("an io::Error");
            assert_eq!(io.raw_os_error(), Some(99));
            assert_eq!(chain(&e).matches(&text).count(), 1, "{}", chain(&e));
        }
        let conf = OpenError::from(ConfError::EmptyDelimiter);
        assert_eq!(chain(&conf).matches("delimiter").count(), 1);
        let dest = OpenError::from(DestError::PortZero);
        assert_eq!(chain(&dest).matches("port 0").count(), 1);
    }

    #[test]
    fn open_errors_become_io_errors_of_the_right_kind() {
        use io::ErrorKind as K;
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let bind = io::Error::from(OpenError::Bind {
            addr,
            source: io::Error::from_raw_os_error(98), // EADDRINUSE
        });
        assert_eq!(bind.kind(), K::AddrInUse);
        // The OpenError rides along, with its address and the OS error.
        let inner = bind.get_ref().unwrap().downcast_ref::<OpenError>().unwrap();
        assert!(matches!(inner, OpenError::Bind { addr: a, .. } if *a == addr));
        let io_back = io::Error::from(OpenError::Io(io::Error::from_raw_os_error(24)));
        assert_eq!(
            io_back.raw_os_error(),
            Some(24),
            "a bare Io error is given back"
        );
        let cases = [
            (
                OpenError::ConnectRefused { addr, socket: None },
                K::ConnectionRefused,
            ),
            (
                OpenError::ConnectTimeout {
                    addr,
                    after: Duration::from_secs(2),
                    socket: None,
                },
                K::TimedOut,
            ),
            (
                OpenError::ResolveTimeout {
                    host: "slow.example".into(),
                    after: Duration::from_secs(5),
                },
                K::TimedOut,
            ),
            (
                OpenError::NoAddress {
                    host: "v4only.example".into(),
                    family: Family::V6,
                },
                K::AddrNotAvailable,
            ),
            (OpenError::SockOnly, K::InvalidInput),
            (OpenError::from(DestError::PortZero), K::InvalidInput),
            (
                OpenError::Tls(pipe_core::TlsError::HandshakeTimeout),
                K::InvalidData,
            ),
        ];
        for (e, kind) in cases {
            let text = e.to_string();
            let io = io::Error::from(e);
            assert_eq!(io.kind(), kind, "{text}");
            assert_eq!(io.to_string(), text);
        }
    }
}
