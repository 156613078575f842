//! A route's external address, by STUN.
//!
//! P2PD asked 215 servers per source IP on every default pipe. Here the lookup is explicit,
//! bounded (at most `parallel` servers asked at a time, from a short list; a server that
//! fails or stays silent for its share of `timeout` is replaced by the next one), the first IP
//! that a second server agrees with wins (or the only answer, with a single server), results
//! are cached per route for `ttl`, the whole lookup is bounded by `timeout`, and it is
//! cancelled by dropping its future. Offline (no route to any server) it fails at once with
//! [`ExternalError::Unreachable`], and the route stays usable for local pipes.
//!
//! The policy is pipe-core's sans-IO [`ExternalLookup`]; this module is its async loop, the
//! socket and the cache.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_lite::future;
use pipe_core::stun::{ExternalLookup, LookupConfig, LookupError};

use crate::route::Route;
use crate::runtime::{Readiness, Runtime, UdpIo};

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
    /// No answer before the deadline.
    #[error("no STUN answer within {0:?}")]
    Timeout(Duration),
    /// Every server failed before the deadline (an error or unusable response, no answer
    /// within its share of the timeout, or unreachable while others were not).
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
                return Ok(route.with_observed_external(*ip));
            }
        }
        let mapped = external_address(rt, route, conf).await?;
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, (mapped.ip(), rt.now()));
        Ok(route.with_observed_external(mapped.ip()))
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
///
/// The policy is pipe-core's [`ExternalLookup`]; this is its loop over one UDP socket on the
/// route: send what it queues, feed it what arrives, sleep until its next deadline.
pub async fn external_address<R: Runtime>(
    rt: &R,
    route: &Route,
    conf: &ExternalConf,
) -> Result<SocketAddr, ExternalError> {
    let servers = crate::nat::servers_on(route, &conf.servers);
    if servers.is_empty() {
        return Err(ExternalError::NoServers);
    }
    let socket = crate::nat::udp_on(rt, route)?;
    let local = socket.local_addr()?;
    let mut lookup_conf = LookupConfig::new(servers);
    lookup_conf.parallel = conf.parallel;
    lookup_conf.timeout = conf.timeout;
    lookup_conf.stun.rto = conf.rto;
    let mut lookup = ExternalLookup::with_key(lookup_conf, crate::nat::stun_key()?);
    lookup.start(rt.now());

    let mut last_err = None; // the last send error, for `Unreachable`
    let mut buf = [0u8; 1500];
    loop {
        // Send what the agent queued; a server we cannot even send to is out.
        while let Some(t) = lookup.poll_transmit() {
            match socket.try_send_to(&t.payload, t.dest) {
                Err(e) if e.kind() != ErrorKind::WouldBlock => {
                    lookup.handle_unreachable(rt.now(), t.dest, e.kind());
                    last_err = Some(e);
                }
                // WouldBlock: the agent's retransmission schedule sends it again.
                _ => {}
            }
        }
        if let Some(result) = lookup.poll_result() {
            return result.map_err(|e| match e {
                LookupError::Unreachable { .. } => ExternalError::Unreachable {
                    from: local,
                    last: last_err.unwrap_or_else(|| ErrorKind::NetworkUnreachable.into()),
                },
                LookupError::Timeout { .. } => ExternalError::Timeout(conf.timeout),
                LookupError::NoServers => ExternalError::NoServers,
                _ => ExternalError::AllFailed,
            });
        }
        match socket.try_recv_from(&mut buf) {
            Ok((n, from)) => {
                lookup.handle_datagram(rt.now(), from, &buf[..n]);
                continue;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) if crate::socket::is_transient_udp_error(&e) => continue,
            Err(e) => return Err(ExternalError::Io(e)),
        }
        // Running and unfinished, the agent always has a deadline.
        let wake = lookup
            .poll_timeout()
            .unwrap_or_else(|| rt.now() + conf.timeout);
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
            lookup.handle_timeout(rt.now());
        }
    }
}
