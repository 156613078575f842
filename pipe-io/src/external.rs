//! A route's external address, by STUN.
//!
//! P2PD asked 215 servers per source IP on every default pipe. Here the lookup is explicit,
//! bounded (at most `parallel` servers asked at a time, from a short list), the first answer
//! that a second server agrees with wins (or the only answer, with a single server),
//! results are cached per route for `ttl`, the whole lookup is bounded by `timeout`, and it
//! is cancelled by dropping its future. Offline (no route to any server) it fails at once with
//! [`ExternalError::Unreachable`], and the route stays usable for local pipes.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_lite::future;
use pipe_core::stun::{StunClient, StunClientConfig, StunEvent, Transport};
use pipe_core::{Conf, Family, Proto};

use crate::builder::entropy;
use crate::route::Route;
use crate::runtime::{Readiness, Runtime, UdpIo};
use crate::socket::bind_socket;

/// How to look up an external address.
#[derive(Debug, Clone)]
pub struct ExternalConf {
    /// STUN servers to ask, in order. Only those of the route's family are used.
    pub servers: Vec<SocketAddr>,
    /// Servers asked at a time. Default 3.
    pub parallel: usize,
    /// Bound on the whole lookup. Default 3 s.
    pub timeout: Duration,
    /// How long a cached answer is used. Default 5 minutes.
    pub ttl: Duration,
    /// First STUN retransmission timeout (doubling). Default 500 ms, as RFC 8489.
    pub rto: Duration,
}

impl ExternalConf {
    /// Ask `servers` with the defaults.
    pub fn new(servers: Vec<SocketAddr>) -> Self {
        Self {
            servers,
            parallel: 3,
            timeout: Duration::from_secs(3),
            ttl: Duration::from_secs(300),
            rto: Duration::from_millis(500),
        }
    }
}

/// Why no external address was found.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExternalError {
    /// No server of the route's family was given.
    #[error("no STUN server of the route's family")]
    NoServers,
    /// Every server was unreachable (offline, or no route from this address).
    #[error("no STUN server is reachable from {from}: {last}")]
    Unreachable {
        /// The local address used.
        from: SocketAddr,
        /// The last error.
        last: std::io::Error,
    },
    /// No agreeing answer before the deadline.
    #[error("no agreeing STUN answer within {0:?}")]
    Timeout(Duration),
    /// Every server answered with an error or an unusable response.
    #[error("every STUN server failed")]
    AllFailed,
    /// The local socket could not be made.
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
}

/// A route's identity in the cache: its interface and NIC address.
type RouteKey = (Option<String>, IpAddr);

/// External addresses cached per route (by interface and NIC address), with a TTL.
#[derive(Debug, Default)]
pub struct ExternalCache {
    entries: Mutex<HashMap<RouteKey, (IpAddr, Instant)>>,
}

impl ExternalCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// The route with its external address: from the cache while fresh, else looked up.
    pub async fn resolve<R: Runtime>(
        &self,
        rt: &R,
        route: &Route,
        conf: &ExternalConf,
    ) -> Result<Route, ExternalError> {
        let key = (route.interface().map(str::to_owned), route.nic());
        let now = rt.now();
        if let Some((ip, at)) = self
            .entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            if now.duration_since(*at) < conf.ttl {
                return Ok(route.with_external(*ip));
            }
        }
        let mapped = external_address(rt, route, conf).await?;
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, (mapped.ip(), rt.now()));
        Ok(route.with_external(mapped.ip()))
    }

    /// Forget every cached answer.
    pub fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}

/// Ask STUN servers how the world sees `route` (uncached). Returns the mapped address.
pub async fn external_address<R: Runtime>(
    rt: &R,
    route: &Route,
    conf: &ExternalConf,
) -> Result<SocketAddr, ExternalError> {
    let servers: Vec<SocketAddr> = conf
        .servers
        .iter()
        .copied()
        .filter(|s| Family::of_addr(s) == route.family())
        .collect();
    if servers.is_empty() {
        return Err(ExternalError::NoServers);
    }
    let socket = bind_socket(Proto::Udp, route.bind_addr(0), &Conf::default())?;
    let socket = rt.udp(socket.into())?;
    let local = socket.local_addr()?;
    let mut stun_conf = StunClientConfig::default();
    stun_conf.rto = conf.rto;
    let mut client = StunClient::new(stun_conf, entropy());
    let deadline = rt.now() + conf.timeout;

    let mut next = 0; // next server to ask
    let mut active = HashMap::new(); // server -> its transaction
    let mut unreachable = 0;
    let mut last_err = None;
    let mut answers: Vec<SocketAddr> = Vec::new();
    let mut buf = [0u8; 1500];
    loop {
        while active.len() < conf.parallel.max(1) && next < servers.len() {
            if let Ok(id) = client.start_binding(rt.now(), servers[next], Transport::Udp) {
                active.insert(servers[next], id);
            }
            next += 1;
        }
        // Send what the agent queued; a server we cannot even send to is out.
        while let Some(t) = client.poll_transmit() {
            match socket.try_send_to(&t.payload, t.dest) {
                Err(e) if e.kind() != ErrorKind::WouldBlock => {
                    if let Some(id) = active.remove(&t.dest) {
                        client.cancel(id);
                    }
                    unreachable += 1;
                    last_err = Some(e);
                }
                _ => {}
            }
        }
        while let Some(ev) = client.poll_event() {
            let id = match &ev {
                StunEvent::Success { id, .. }
                | StunEvent::ErrorResponse { id, .. }
                | StunEvent::InvalidResponse { id }
                | StunEvent::Timeout { id } => *id,
                _ => continue,
            };
            active.retain(|_, t| *t != id);
            if let StunEvent::Success { mapped, .. } = ev {
                if servers.len() == 1 || answers.contains(&mapped) {
                    return Ok(mapped);
                }
                answers.push(mapped);
            }
        }
        if unreachable >= servers.len() {
            return Err(ExternalError::Unreachable {
                from: local,
                last: last_err.unwrap_or_else(|| ErrorKind::NetworkUnreachable.into()),
            });
        }
        if active.is_empty() && next >= servers.len() {
            // Everything answered or failed: a single answer is the best there is.
            return answers.first().copied().ok_or(ExternalError::AllFailed);
        }
        let now = rt.now();
        if now >= deadline {
            return answers
                .first()
                .copied()
                .ok_or(ExternalError::Timeout(conf.timeout));
        }
        match socket.try_recv_from(&mut buf) {
            Ok((n, from)) => {
                client.handle_input(rt.now(), from, &buf[..n]);
                continue;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) if crate::socket::is_transient_udp_error(&e) => continue,
            Err(e) => return Err(ExternalError::Io(e)),
        }
        let wake = client.poll_timeout().map_or(deadline, |t| t.min(deadline));
        let timer = rt.sleep_until(wake);
        let timed_out = future::or(
            async {
                let _ = socket.readable().await;
                false
            },
            async {
                timer.await;
                true
            },
        )
        .await;
        if timed_out {
            client.handle_timeout(rt.now());
        }
    }
}
