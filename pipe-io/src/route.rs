//! Routes: where a pipe lives.
//!
//! A [`Route`] is an immutable value: an interface, an address family, the NIC address pipes
//! bind to, and optionally the external address the world sees (from STUN). Opening a pipe on
//! a route binds to its NIC address and never changes the route, so one route serves any
//! number of pipes (P2PD wrote each socket's port back into the route, which broke the second
//! pipe). Building a route with an external address gives a new value.

use std::fmt;
use std::net::{IpAddr, SocketAddr, SocketAddrV6};

use pipe_core::addr::{loopback, unspecified};
use pipe_core::Family;

/// An interface, a family, a NIC address and an optional external address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Route {
    interface: Option<String>,
    index: u32,
    nic: IpAddr,
    scope_id: u32,
    external: Option<IpAddr>,
    bind_device: bool,
}

impl Route {
    /// A route on interface `interface` (index `index`) with NIC address `nic`; `scope_id` is
    /// needed for IPv6 link-local addresses.
    pub fn new(interface: Option<String>, index: u32, nic: IpAddr, scope_id: u32) -> Self {
        Self {
            interface,
            index,
            nic,
            scope_id,
            external: None,
            bind_device: false,
        }
    }

    /// The loopback route of a family (needs no network).
    pub fn loopback(family: Family) -> Self {
        Self::new(None, 0, loopback(family), 0)
    }

    /// The any-address route of a family: bind `0.0.0.0` / `::`, every interface.
    pub fn any(family: Family) -> Self {
        Self::new(None, 0, unspecified(family), 0)
    }

    /// A route for a local address, with the interface that owns it if it is known.
    pub fn from_ip(ip: IpAddr) -> Self {
        if let Ok(list) = crate::iface::interfaces() {
            if let Some(i) = list.iter().find(|i| i.has(ip)) {
                if let Some(r) = i.routes(Family::of(ip)).into_iter().find(|r| r.nic == ip) {
                    return r;
                }
            }
        }
        Self::new(None, 0, ip, 0)
    }

    /// The same route with `external` as its external address: the address the world
    /// reaches this route at. It is checked ([`check_external`]): an unspecified, loopback,
    /// multicast, broadcast, private, shared (carrier-grade NAT), link-local, documentation
    /// or otherwise reserved address is refused with [`ExternalAddrError`], since no peer on
    /// the internet could reach it (P2PD accepted `0.0.0.0`).
    pub fn with_external(&self, external: IpAddr) -> Result<Self, ExternalAddrError> {
        check_external(external)?;
        Ok(self.with_observed_external(external))
    }

    /// The external address a STUN server observed, unchecked: a server on a LAN or on
    /// loopback (tests) legitimately reports a private or loopback address.
    pub(crate) fn with_observed_external(&self, external: IpAddr) -> Self {
        Self {
            external: Some(external),
            ..self.clone()
        }
    }

    /// The same route, also binding sockets to its interface with SO_BINDTODEVICE (Linux;
    /// usually needs CAP_NET_RAW). Where the OS refuses, opening fails with
    /// `OpenError::BindDevice` instead of silently ignoring it (as P2PD did).
    pub fn with_bind_device(&self) -> Self {
        Self {
            bind_device: true,
            ..self.clone()
        }
    }

    /// The interface name, if known.
    pub fn interface(&self) -> Option<&str> {
        self.interface.as_deref()
    }

    /// The interface index (0 if unknown).
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The family.
    pub fn family(&self) -> Family {
        Family::of(self.nic)
    }

    /// The NIC address pipes bind to.
    pub fn nic(&self) -> IpAddr {
        self.nic
    }

    /// The IPv6 scope id (0 for global addresses and IPv4).
    pub fn scope_id(&self) -> u32 {
        self.scope_id
    }

    /// The external address, if one was looked up or given.
    pub fn external(&self) -> Option<IpAddr> {
        self.external
    }

    /// Whether sockets are bound to the interface device too.
    pub fn binds_device(&self) -> bool {
        self.bind_device
    }

    /// The socket address a pipe on this route binds (`port` 0 = any free port).
    pub fn bind_addr(&self, port: u16) -> SocketAddr {
        match self.nic {
            IpAddr::V6(ip) => SocketAddr::V6(SocketAddrV6::new(ip, port, 0, self.scope_id)),
            ip => SocketAddr::new(ip, port),
        }
    }
}

/// What kind of address [`Route::with_external`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NotExternal {
    /// `0.0.0.0` or `::`.
    Unspecified,
    /// `127.0.0.0/8` or `::1`.
    Loopback,
    /// Multicast (`224.0.0.0/4`, `ff00::/8`).
    Multicast,
    /// `255.255.255.255`.
    Broadcast,
    /// RFC 1918 (`10/8`, `172.16/12`, `192.168/16`) or an IPv6 unique local address (`fc00::/7`).
    Private,
    /// RFC 6598 shared address space (`100.64/10`): behind a carrier-grade NAT.
    Shared,
    /// Link-local (`169.254/16`, `fe80::/10`).
    LinkLocal,
    /// Documentation ranges (`192.0.2/24`, `198.51.100/24`, `203.0.113/24`, `2001:db8::/32`).
    Documentation,
    /// Another reserved range (`0/8`, `240/4`, benchmarking `198.18/15`, IETF `192.0.0/24`,
    /// discard-only `100::/64`).
    Reserved,
}

impl fmt::Display for NotExternal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NotExternal::Unspecified => "unspecified",
            NotExternal::Loopback => "loopback",
            NotExternal::Multicast => "multicast",
            NotExternal::Broadcast => "broadcast",
            NotExternal::Private => "private",
            NotExternal::Shared => "shared (carrier-grade NAT)",
            NotExternal::LinkLocal => "link-local",
            NotExternal::Documentation => "documentation",
            NotExternal::Reserved => "reserved",
        })
    }
}

/// [`Route::with_external`] was given an address no peer could reach it at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{addr} is not an external address: it is {kind}")]
pub struct ExternalAddrError {
    /// The address refused.
    pub addr: IpAddr,
    /// Why.
    pub kind: NotExternal,
}

/// Check that `ip` can be an external address (a globally reachable unicast address). An
/// IPv4-mapped IPv6 address is checked as its IPv4 form.
pub fn check_external(ip: IpAddr) -> Result<(), ExternalAddrError> {
    let kind = match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            if v4.is_unspecified() {
                Some(NotExternal::Unspecified)
            } else if v4.is_loopback() {
                Some(NotExternal::Loopback)
            } else if v4.is_multicast() {
                Some(NotExternal::Multicast)
            } else if v4.is_broadcast() {
                Some(NotExternal::Broadcast)
            } else if v4.is_private() {
                Some(NotExternal::Private)
            } else if a == 100 && (b & 0xc0) == 64 {
                Some(NotExternal::Shared)
            } else if v4.is_link_local() {
                Some(NotExternal::LinkLocal)
            } else if v4.is_documentation() {
                Some(NotExternal::Documentation)
            } else if a == 0
                || a >= 240
                || (a == 198 && (b & 0xfe) == 18)
                || (a, b, c) == (192, 0, 0)
            {
                Some(NotExternal::Reserved)
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            if v6.is_unspecified() {
                Some(NotExternal::Unspecified)
            } else if v6.is_loopback() {
                Some(NotExternal::Loopback)
            } else if v6.is_multicast() {
                Some(NotExternal::Multicast)
            } else if (s[0] & 0xfe00) == 0xfc00 {
                Some(NotExternal::Private)
            } else if (s[0] & 0xffc0) == 0xfe80 {
                Some(NotExternal::LinkLocal)
            } else if s[0] == 0x2001 && s[1] == 0x0db8 {
                Some(NotExternal::Documentation)
            } else if s[..4] == [0x100, 0, 0, 0] {
                Some(NotExternal::Reserved)
            } else {
                None
            }
        }
    };
    match kind {
        Some(kind) => Err(ExternalAddrError { addr: ip, kind }),
        None => Ok(()),
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.interface {
            Some(i) => write!(f, "{i} ")?,
            None => f.write_str("- ")?,
        }
        match (self.nic, self.scope_id) {
            (IpAddr::V6(ip), s) if s != 0 => write!(f, "{ip}%{s}")?,
            (ip, _) => write!(f, "{ip}")?,
        }
        if let Some(e) = self.external {
            write!(f, " ext {e}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn external_addresses_are_checked() {
        let r = Route::loopback(Family::V4);
        for (ip, kind) in [
            ("0.0.0.0", NotExternal::Unspecified),
            ("::", NotExternal::Unspecified),
            ("127.0.0.1", NotExternal::Loopback),
            ("::1", NotExternal::Loopback),
            ("::ffff:127.0.0.1", NotExternal::Loopback),
            ("224.0.0.1", NotExternal::Multicast),
            ("ff02::1", NotExternal::Multicast),
            ("255.255.255.255", NotExternal::Broadcast),
            ("10.1.2.3", NotExternal::Private),
            ("172.16.0.1", NotExternal::Private),
            ("192.168.1.1", NotExternal::Private),
            ("fd00::1", NotExternal::Private),
            ("100.64.0.1", NotExternal::Shared),
            ("169.254.1.1", NotExternal::LinkLocal),
            ("fe80::1", NotExternal::LinkLocal),
            ("192.0.2.1", NotExternal::Documentation),
            ("203.0.113.9", NotExternal::Documentation),
            ("2001:db8::1", NotExternal::Documentation),
            ("240.0.0.1", NotExternal::Reserved),
            ("198.18.0.1", NotExternal::Reserved),
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(
                r.with_external(ip),
                Err(ExternalAddrError { addr: ip, kind }),
                "{ip}"
            );
        }
        for ip in ["8.8.8.8", "100.128.0.1", "172.32.0.1", "2606:4700::1111"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(r.with_external(ip).unwrap().external(), Some(ip));
        }
        let e = r.with_external("0.0.0.0".parse().unwrap()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "0.0.0.0 is not an external address: it is unspecified"
        );
    }
}
