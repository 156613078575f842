//! Network interfaces, enumerated once and shared.
//!
//! [`interfaces`] lists every interface with its addresses (prefix lengths, and for IPv6
//! link-local addresses the scope id that sockets need). The list is read on first use and
//! cached for the process; [`refresh_interfaces`] reads it again after a network change.
//! [`default_ip`] asks the OS which source address its default route would use, by
//! `connect()`ing a UDP socket (which sends no packet) and reading the local address; with no
//! default route (offline), the default is the loopback address, so pipes still work locally.

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};

use pipe_core::addr::{loopback, unspecified};
use pipe_core::Family;

use crate::route::Route;

/// One address of an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IfAddress {
    /// The address.
    pub ip: IpAddr,
    /// Its prefix length.
    pub prefix: u8,
    /// The IPv6 scope id a socket must carry to use it (the interface index for link-local
    /// addresses, 0 otherwise).
    pub scope_id: u32,
}

impl IfAddress {
    /// True for IPv6 link-local (fe80::/10) and IPv4 link-local (169.254/16) addresses.
    pub fn is_link_local(&self) -> bool {
        match self.ip {
            IpAddr::V4(v4) => v4.is_link_local(),
            IpAddr::V6(v6) => v6.is_unicast_link_local(),
        }
    }
}

/// A network interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// Its name, e.g. `eth0`.
    pub name: String,
    /// Its index (0 if the OS gave none).
    pub index: u32,
    /// Operationally up.
    pub up: bool,
    /// A loopback interface.
    pub loopback: bool,
    /// Its addresses, IPv4 first, in the order the OS lists them.
    pub addrs: Vec<IfAddress>,
}

impl Interface {
    /// The interface's routes of `family`: one per address, link-local ones carrying their
    /// scope id. Routes have no external address until one is looked up.
    pub fn routes(&self, family: Family) -> Vec<Route> {
        self.addrs
            .iter()
            .filter(|a| Family::of(a.ip) == family)
            .map(|a| Route::new(Some(self.name.clone()), self.index, a.ip, a.scope_id))
            .collect()
    }

    /// Every route of the interface, IPv4 first.
    pub fn all_routes(&self) -> Vec<Route> {
        let mut r = self.routes(Family::V4);
        r.extend(self.routes(Family::V6));
        r
    }

    /// True if the interface owns `ip`.
    pub fn has(&self, ip: IpAddr) -> bool {
        self.addrs.iter().any(|a| a.ip == ip)
    }
}

static CACHE: Mutex<Option<Arc<Vec<Interface>>>> = Mutex::new(None);

/// Every interface, read once per process and shared.
pub fn interfaces() -> io::Result<Arc<Vec<Interface>>> {
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(list) = cache.as_ref() {
        return Ok(list.clone());
    }
    let list = Arc::new(enumerate()?);
    *cache = Some(list.clone());
    Ok(list)
}

/// Read the interfaces again (after a network change) and replace the shared list.
pub fn refresh_interfaces() -> io::Result<Arc<Vec<Interface>>> {
    let list = Arc::new(enumerate()?);
    *CACHE.lock().unwrap_or_else(|p| p.into_inner()) = Some(list.clone());
    Ok(list)
}

fn enumerate() -> io::Result<Vec<Interface>> {
    let mut out: Vec<Interface> = Vec::new();
    for raw in if_addrs::get_if_addrs()? {
        let index = raw.index.unwrap_or(0);
        let (ip, prefix) = match &raw.addr {
            if_addrs::IfAddr::V4(a) => (IpAddr::V4(a.ip), a.prefixlen),
            if_addrs::IfAddr::V6(a) => (IpAddr::V6(a.ip), a.prefixlen),
        };
        let scope_id = match ip {
            IpAddr::V6(v6) if v6.is_unicast_link_local() => index,
            _ => 0,
        };
        let addr = IfAddress {
            ip,
            prefix,
            scope_id,
        };
        match out.iter_mut().find(|i| i.name == raw.name) {
            Some(i) => {
                i.addrs.push(addr);
                i.up |= raw.is_oper_up();
            }
            None => out.push(Interface {
                name: raw.name.clone(),
                index,
                up: raw.is_oper_up() || raw.is_loopback(),
                loopback: raw.is_loopback(),
                addrs: vec![addr],
            }),
        }
    }
    for i in &mut out {
        i.addrs.sort_by_key(|a| matches!(a.ip, IpAddr::V6(_)));
    }
    Ok(out)
}

/// The source address the OS would use for `family` on its default route, or `None` when
/// there is no default route. A UDP `connect()` picks the route; no packet is sent.
pub fn default_ip(family: Family) -> Option<IpAddr> {
    // Documentation addresses (RFC 5737, RFC 3849): never contacted.
    let probe: SocketAddr = match family {
        Family::V4 => "192.0.2.1:9".parse().ok()?,
        Family::V6 => "[2001:db8::1]:9".parse().ok()?,
    };
    let socket = UdpSocket::bind(SocketAddr::new(unspecified(family), 0)).ok()?;
    socket.connect(probe).ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}

/// The default route of `family`: the interface and address of the OS default route, or
/// the loopback route when there is none (offline), so local pipes always have a route.
pub fn default_route(family: Family) -> Route {
    let ip = default_ip(family);
    if let (Some(ip), Ok(list)) = (ip, interfaces()) {
        if let Some(i) = list.iter().find(|i| i.has(ip)) {
            if let Some(r) = i.routes(family).into_iter().find(|r| r.nic() == ip) {
                return r;
            }
        }
        return Route::new(None, 0, ip, 0);
    }
    Route::loopback(family)
}

/// The loopback interface's address of a family.
pub fn loopback_ip(family: Family) -> IpAddr {
    loopback(family)
}
