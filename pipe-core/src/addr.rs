//! Addressing: protocols, families and destinations.
//!
//! `SocketAddr` is used everywhere, never text. IPv6 scope ids are kept, compressed and
//! exploded IPv6 literals parse to the same value, and an IPv4-mapped IPv6 address compares
//! equal to its IPv4 form wherever the core compares addresses ([`same_ip`], [`same_endpoint`]).

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6};

use crate::error::DestError;

/// Transport protocol of a pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    /// A TCP stream (client, server, or a connection the server accepted).
    Tcp,
    /// UDP datagrams.
    Udp,
}

/// Address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// The family of an IP address (an IPv4-mapped IPv6 address is `V6`: that is the socket it needs).
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// The family of a socket address.
    pub fn of_addr(addr: &SocketAddr) -> Self {
        Self::of(addr.ip())
    }
}

/// The host part of a destination: an IP literal or a name to resolve.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// An IP address (with its IPv6 scope id, if any, carried by [`Dest::scope_id`]).
    Ip(IpAddr),
    /// A DNS name, already checked for syntax.
    Name(String),
}

/// Where a client pipe sends by default: a host and a non-zero port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Dest {
    host: Host,
    port: u16,
    scope_id: u32,
}

impl Dest {
    /// A destination from a host text and a port. The host may be an IPv4 literal, an IPv6
    /// literal (bracketed or not, with an optional numeric `%scope`), or a DNS name.
    pub fn new(host: &str, port: u16) -> Result<Self, DestError> {
        if port == 0 {
            return Err(DestError::PortZero);
        }
        let host = host.trim();
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if let Some((ip, scope)) = parse_ip_with_scope(bare)? {
            return Ok(Self {
                host: Host::Ip(ip),
                port,
                scope_id: scope,
            });
        }
        check_name(bare)?;
        Ok(Self {
            host: Host::Name(bare.to_ascii_lowercase()),
            port,
            scope_id: 0,
        })
    }

    /// Parse `host:port`, `[v6]:port` or `[v6%scope]:port`.
    pub fn parse(text: &str) -> Result<Self, DestError> {
        let text = text.trim();
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (h, p) = rest.split_once("]:").ok_or(DestError::MissingPort)?;
            (h, p)
        } else {
            let (h, p) = text.rsplit_once(':').ok_or(DestError::MissingPort)?;
            if h.contains(':') {
                // An unbracketed IPv6 literal with a port is ambiguous.
                return Err(DestError::Malformed(text.to_owned()));
            }
            (h, p)
        };
        let port: u16 = port
            .parse()
            .map_err(|_| DestError::BadPort(port.to_owned()))?;
        Self::new(host, port)
    }

    /// The host.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The port (never 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The IPv6 scope id given with the literal (0 if none).
    pub fn scope_id(&self) -> u32 {
        self.scope_id
    }

    /// The socket address, if the host is an IP literal (no resolution needed).
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        match self.host {
            Host::Ip(IpAddr::V6(ip)) => Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                self.port,
                0,
                self.scope_id,
            ))),
            Host::Ip(ip) => Some(SocketAddr::new(ip, self.port)),
            Host::Name(_) => None,
        }
    }
}

impl TryFrom<SocketAddr> for Dest {
    type Error = DestError;
    fn try_from(addr: SocketAddr) -> Result<Self, DestError> {
        if addr.port() == 0 {
            return Err(DestError::PortZero);
        }
        let scope_id = match addr {
            SocketAddr::V6(v6) => v6.scope_id(),
            SocketAddr::V4(_) => 0,
        };
        Ok(Self {
            host: Host::Ip(addr.ip()),
            port: addr.port(),
            scope_id,
        })
    }
}

impl TryFrom<(&str, u16)> for Dest {
    type Error = DestError;
    fn try_from((host, port): (&str, u16)) -> Result<Self, DestError> {
        Self::new(host, port)
    }
}

impl TryFrom<(IpAddr, u16)> for Dest {
    type Error = DestError;
    fn try_from((ip, port): (IpAddr, u16)) -> Result<Self, DestError> {
        Self::try_from(SocketAddr::new(ip, port))
    }
}

impl TryFrom<&str> for Dest {
    type Error = DestError;
    fn try_from(text: &str) -> Result<Self, DestError> {
        Self::parse(text)
    }
}

impl fmt::Display for Dest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::Ip(IpAddr::V6(ip)) if self.scope_id != 0 => {
                write!(f, "[{ip}%{}]:{}", self.scope_id, self.port)
            }
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]:{}", self.port),
            Host::Ip(ip) => write!(f, "{ip}:{}", self.port),
            Host::Name(n) => write!(f, "{n}:{}", self.port),
        }
    }
}

/// The IP in canonical form: an IPv4-mapped IPv6 address becomes IPv4.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// True when two IPs are the same host (IPv4-mapped IPv6 equals its IPv4 form).
pub fn same_ip(a: IpAddr, b: IpAddr) -> bool {
    a.to_canonical() == b.to_canonical()
}

/// True when two socket addresses are the same endpoint: same canonical IP and port.
/// Scope ids and flow info are ignored: they select a path, not a peer.
pub fn same_endpoint(a: &SocketAddr, b: &SocketAddr) -> bool {
    a.port() == b.port() && same_ip(a.ip(), b.ip())
}

fn parse_ip_with_scope(text: &str) -> Result<Option<(IpAddr, u32)>, DestError> {
    let (ip_text, scope) = match text.split_once('%') {
        Some((ip, scope)) => {
            let scope: u32 = scope
                .parse()
                .map_err(|_| DestError::BadScope(scope.to_owned()))?;
            (ip, scope)
        }
        None => (text, 0),
    };
    if let Ok(ip) = ip_text.parse::<IpAddr>() {
        if scope != 0 && !matches!(ip, IpAddr::V6(_)) {
            return Err(DestError::BadScope(text.to_owned()));
        }
        return Ok(Some((ip, scope)));
    }
    if scope != 0 || ip_text.contains(':') {
        return Err(DestError::Malformed(text.to_owned()));
    }
    Ok(None)
}

fn check_name(name: &str) -> Result<(), DestError> {
    let bad = || DestError::BadHostName(name.to_owned());
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if trimmed.is_empty() || trimmed.len() > 253 {
        return Err(bad());
    }
    for label in trimmed.split('.') {
        let ok_chars = label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if label.is_empty() || label.len() > 63 || !ok_chars || label.starts_with('-') {
            return Err(bad());
        }
    }
    // A name made of digits and dots only is a malformed IPv4 literal, not a name.
    if trimmed.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(bad());
    }
    Ok(())
}

/// The unspecified address of a family (`0.0.0.0` or `::`).
pub fn unspecified(family: Family) -> IpAddr {
    match family {
        Family::V4 => IpAddr::from([0, 0, 0, 0]),
        Family::V6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

/// The loopback address of a family (`127.0.0.1` or `::1`).
pub fn loopback(family: Family) -> IpAddr {
    match family {
        Family::V4 => IpAddr::from([127, 0, 0, 1]),
        Family::V6 => IpAddr::V6(Ipv6Addr::LOCALHOST),
    }
}
