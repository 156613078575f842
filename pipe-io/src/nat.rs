//! NAT behaviour discovery on a route: the async loop of pipe-core's [`NatDiscovery`].
//!
//! Two UDP sockets on the route (mapping tests and hairpinning on one, filtering tests on the
//! other), the agent's transmits sent from the socket each names, what arrives fed back, and
//! a sleep until its next deadline. Bounded by [`NatConfig::timeout`] (6 s by default);
//! cancelled by dropping the future.
//!
//! ```no_run
//! # async fn f<R: pipe_io::Runtime>(rt: R) -> Result<(), Box<dyn std::error::Error>> {
//! use pipe_io::{discover_nat, NatConfig, Route};
//! let conf = NatConfig::new(vec!["192.0.2.10:3478".parse()?]);
//! let report = discover_nat(&rt, &Route::any(pipe_io::Family::V4), &conf).await?;
//! println!("{:?} mapping, {:?} filtering: {}", report.mapping, report.filtering, report.class);
//! # Ok(()) }
//! ```

use std::io::{self, ErrorKind};
use std::net::{IpAddr, SocketAddr, UdpSocket};

use futures_lite::future;
use pipe_core::stun::{NatConfig, NatDiscovery, NatError, NatReport, NatSocket};
use pipe_core::{Conf, Family, Proto};

use crate::route::Route;
use crate::runtime::{Readiness, Runtime, UdpIo};
use crate::socket::bind_socket;

/// Why discovery gave no report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoverError {
    /// No server of the route's family was given.
    #[error("no STUN server of the route's family")]
    NoServers,
    /// The agent's verdict (no server reachable, none with RFC 5780).
    #[error(transparent)]
    Nat(#[from] NatError),
    /// A socket could not be made, or the OS's random generator failed.
    #[error("socket: {0}")]
    Io(#[from] io::Error),
}

/// A 256-bit key for STUN transaction ids from the OS's CSPRNG (`getrandom`: the system
/// call or device every Rust crypto crate ends up at, no user-space generator to seed).
/// The servers of `route`'s family, in order (a STUN client on one route asks only those).
pub(crate) fn servers_on(route: &Route, servers: &[SocketAddr]) -> Vec<SocketAddr> {
    servers
        .iter()
        .copied()
        .filter(|s| Family::of_addr(s) == route.family())
        .collect()
}

/// A UDP socket on `route`, any port, registered with `rt`.
pub(crate) fn udp_on<R: Runtime>(rt: &R, route: &Route) -> io::Result<R::Udp> {
    let socket = bind_socket(Proto::Udp, route.bind_addr(0), &Conf::default())?;
    rt.udp(socket.into())
}

pub(crate) fn stun_key() -> io::Result<[u8; 32]> {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| io::Error::other(e.to_string()))?;
    Ok(key)
}

/// Discover the NAT behaviour of `route` against `conf.servers` (those of the route's family):
/// mapping and filtering behaviour, port preservation and delta, hairpinning, and P2PD's
/// class. A firewall that drops all UDP gives a report with class
/// [`NatClass::Blocked`](pipe_core::stun::NatClass::Blocked), not an error.
pub async fn discover_nat<R: Runtime>(
    rt: &R,
    route: &Route,
    conf: &NatConfig,
) -> Result<NatReport, DiscoverError> {
    let servers = servers_on(route, &conf.servers);
    let Some(first) = servers.first().copied() else {
        return Err(DiscoverError::NoServers);
    };
    let open = |rt: &R| -> io::Result<(R::Udp, SocketAddr)> {
        let socket = udp_on(rt, route)?;
        let mut local = socket.local_addr()?;
        if local.ip().is_unspecified() {
            local.set_ip(source_ip(local.ip(), first));
        }
        Ok((socket, local))
    };
    let (m, m_local) = open(rt)?;
    let (f, f_local) = open(rt)?;
    let mut agent_conf = conf.clone();
    agent_conf.servers = servers;
    let mut agent = NatDiscovery::with_key(agent_conf, stun_key()?);
    agent.start(rt.now(), m_local, f_local);

    let mut buf = [0u8; 1500];
    loop {
        while let Some(t) = agent.poll_transmit() {
            let socket = match t.socket {
                NatSocket::Mapping => &m,
                NatSocket::Filtering => &f,
            };
            match socket.try_send_to(&t.payload, t.dest) {
                Err(e) if e.kind() != ErrorKind::WouldBlock => {
                    agent.handle_unreachable(rt.now(), t.socket, t.dest, e.kind())
                }
                // WouldBlock: the retransmission schedule sends it again.
                _ => {}
            }
        }
        if let Some(result) = agent.poll_result() {
            return result.map_err(DiscoverError::Nat);
        }
        let mut got = false;
        for (socket, which) in [(&m, NatSocket::Mapping), (&f, NatSocket::Filtering)] {
            match socket.try_recv_from(&mut buf) {
                Ok((n, from)) => {
                    agent.handle_datagram(rt.now(), which, from, &buf[..n]);
                    got = true;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) if crate::socket::is_transient_udp_error(&e) => got = true,
                Err(e) => return Err(DiscoverError::Io(e)),
            }
        }
        if got {
            continue;
        }
        let wake = agent
            .poll_timeout()
            .unwrap_or_else(|| rt.now() + conf.timeout);
        let timer = rt.sleep_until(wake);
        let timed_out = future::or(
            future::or(
                async {
                    let _ = m.readable().await;
                    false
                },
                async {
                    let _ = f.readable().await;
                    false
                },
            ),
            async {
                timer.await;
                true
            },
        )
        .await;
        if timed_out {
            agent.handle_timeout(rt.now());
        }
    }
}

/// The source IP the OS picks towards `dest` (UDP `connect`, no packet sent); `fallback` when
/// there is no route.
fn source_ip(fallback: IpAddr, dest: SocketAddr) -> IpAddr {
    let any: SocketAddr = match dest {
        SocketAddr::V4(_) => (IpAddr::from([0u8; 4]), 0).into(),
        SocketAddr::V6(_) => (IpAddr::from([0u16; 8]), 0).into(),
    };
    UdpSocket::bind(any)
        .and_then(|s| {
            s.connect(dest)?;
            s.local_addr()
        })
        .map_or(fallback, |a| a.ip())
}
