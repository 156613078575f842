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

    /// The same route with `external` as its external address.
    pub fn with_external(&self, external: IpAddr) -> Self {
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
