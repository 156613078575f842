//! Sans-IO external-address lookup: ask a list of STUN servers, a few at a time, until enough
//! of them agree on our address.

use std::fmt;
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::client::{
    ClientStats, IdGen, StunClient, StunClientConfig, StunEvent, StunTransmit, Transport,
};
use super::codec::TransactionId;

/// Cap on [`LookupConfig::parallel`]: servers asked at a time.
pub const MAX_PARALLEL: usize = 64;

/// How an [`ExternalLookup`] asks its servers.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LookupConfig {
    /// STUN servers to ask, in order. Duplicates are asked once.
    pub servers: Vec<SocketAddr>,
    /// Servers asked at a time (1..=[`MAX_PARALLEL`]; out-of-range values are clamped).
    /// Default 3.
    pub parallel: usize,
    /// Servers that must report the same IP address for it to win at once. Capped at the
    /// number of servers, so a single server's answer is enough. Default 2.
    pub agree: usize,
    /// Bound on the whole lookup, from [`ExternalLookup::start`]. Default 3 s.
    pub timeout: Duration,
    /// How long one server is waited for before the next one is asked in its place. `None`
    /// (the default) gives each server its share of `timeout`: `timeout` divided by the
    /// number of rounds (`servers / parallel`, rounded up), but at least one `stun.rto`.
    /// Either way a server is also abandoned when its transaction times out (RFC 8489:
    /// 39.5 s with the defaults).
    pub server_timeout: Option<Duration>,
    /// The Binding transactions: retransmission timeout (`rto`, default 500 ms, doubling),
    /// sends (`max_sends`, 7) and last wait (`last_wait`, 16 × RTO). Only UDP is used.
    pub stun: StunClientConfig,
}

impl LookupConfig {
    /// Ask `servers` with the defaults.
    pub fn new(servers: Vec<SocketAddr>) -> Self {
        Self {
            servers,
            parallel: 3,
            agree: 2,
            timeout: Duration::from_secs(3),
            server_timeout: None,
            stun: StunClientConfig::default(),
        }
    }
}

/// What went wrong with one server.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerFailure {
    /// The request could not be sent (reported by the driver with
    /// [`ExternalLookup::handle_unreachable`]): offline, or no route to it.
    Unreachable(ErrorKind),
    /// The server answered with an ERROR-CODE.
    ErrorResponse {
        /// The code, e.g. 400.
        code: u16,
        /// The reason phrase.
        reason: String,
    },
    /// The server answered with a response we cannot use (no mapped address, unknown
    /// comprehension-required attributes).
    InvalidResponse,
    /// No answer after its retransmissions, within its time: abandoned for the next server.
    NoAnswer,
    /// Still asked, unanswered, when the lookup's deadline came.
    Pending,
    /// Never asked: the deadline came first.
    NotAsked,
}

impl fmt::Display for ServerFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unreachable(kind) => write!(f, "unreachable ({kind})"),
            Self::ErrorResponse { code, reason } => write!(f, "error {code} {reason}"),
            Self::InvalidResponse => f.write_str("unusable response"),
            Self::NoAnswer => f.write_str("no answer"),
            Self::Pending => f.write_str("no answer yet"),
            Self::NotAsked => f.write_str("not asked"),
        }
    }
}

/// One server and how it failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerError {
    /// The server.
    pub server: SocketAddr,
    /// How it failed.
    pub failure: ServerFailure,
}

/// Why a lookup found no address. Every variant but `NoServers` lists each server (in the
/// configured order) with how it failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LookupError {
    /// The server list is empty.
    #[error("no STUN server given")]
    NoServers,
    /// No request could be sent to any server (offline, or no route from this address).
    #[error("no STUN server is reachable: {}", List(.servers))]
    Unreachable {
        /// Every server, each [`ServerFailure::Unreachable`].
        servers: Vec<ServerError>,
    },
    /// Every server failed (error, unusable response, no answer, unreachable) and none
    /// answered.
    #[error("every STUN server failed: {}", List(.servers))]
    AllFailed {
        /// Every server with its failure.
        servers: Vec<ServerError>,
    },
    /// No answer before the lookup's deadline.
    #[error("no STUN answer within {after:?}: {}", List(.servers))]
    Timeout {
        /// The configured timeout.
        after: Duration,
        /// Every server with its failure ([`ServerFailure::Pending`] or
        /// [`ServerFailure::NotAsked`] for those the deadline cut short).
        servers: Vec<ServerError>,
    },
}

impl LookupError {
    /// Each server with how it failed (empty for `NoServers`).
    pub fn servers(&self) -> &[ServerError] {
        match self {
            Self::NoServers => &[],
            Self::Unreachable { servers }
            | Self::AllFailed { servers }
            | Self::Timeout { servers, .. } => servers,
        }
    }
}

struct List<'a>(&'a [ServerError]);

impl fmt::Display for List<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{} {}", e.server, e.failure)?;
        }
        Ok(())
    }
}

/// Where one server stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Slot {
    NotAsked,
    Asking { id: TransactionId, give_up: Instant },
    Answered(SocketAddr),
    Failed(ServerFailure),
}

/// The external-address lookup as a sans-IO agent.
///
/// The policy: servers are asked in order, at most `parallel` at a time; when one answers,
/// fails or is abandoned (no answer within its time), the next one is asked in its place. The
/// first IP address reported by `agree` servers wins (ports are not compared: behind a NAT
/// that maps per destination they differ, and the lookup's socket is throwaway). When every
/// server is done, or the deadline comes, the best answer there is wins (the IP reported by
/// the most servers, the earliest on a tie); with no answer at all the lookup fails with a
/// [`LookupError`] that says how each server failed.
///
/// Drive it like the rest of pipe-core: call [`start`](Self::start), then after every input
/// (`start`, `handle_datagram`, `handle_unreachable`, `handle_timeout`) drain
/// [`poll_transmit`](Self::poll_transmit) to the socket, check
/// [`poll_result`](Self::poll_result), and sleep until input or
/// [`poll_timeout`](Self::poll_timeout). Dropping the agent cancels the lookup.
#[derive(Debug)]
pub struct ExternalLookup {
    conf: LookupConfig,
    servers: Vec<SocketAddr>,
    slots: Vec<Slot>,
    /// Answers in arrival order: (server index, mapped address).
    answers: Vec<(usize, SocketAddr)>,
    client: StunClient,
    parallel: usize,
    agree: usize,
    server_timeout: Duration,
    next: usize,
    deadline: Option<Instant>,
    result: Option<Result<SocketAddr, LookupError>>,
    finished: bool,
}

impl ExternalLookup {
    /// A lookup over `conf.servers`; transaction ids come from a generator seeded with `seed`
    /// (seed it from a real entropy source). Nothing happens before [`start`](Self::start).
    pub fn new(conf: LookupConfig, seed: u64) -> Self {
        Self::build(conf, IdGen::from_seed(seed))
    }

    /// A lookup whose transaction ids are keyed by `key` (see [`StunClient::with_key`]): take
    /// it from the OS's CSPRNG.
    pub fn with_key(conf: LookupConfig, key: [u8; 32]) -> Self {
        Self::build(conf, IdGen::from_key(key))
    }

    fn build(conf: LookupConfig, ids: IdGen) -> Self {
        let mut servers: Vec<SocketAddr> = Vec::with_capacity(conf.servers.len());
        for s in &conf.servers {
            if !servers.contains(s) {
                servers.push(*s);
            }
        }
        let parallel = conf.parallel.clamp(1, MAX_PARALLEL);
        let agree = conf.agree.clamp(1, servers.len().max(1));
        let rounds = servers.len().div_ceil(parallel).max(1);
        let rounds = u32::try_from(rounds).unwrap_or(u32::MAX);
        let server_timeout = conf
            .server_timeout
            .unwrap_or_else(|| (conf.timeout / rounds).max(conf.stun.rto));
        let mut stun = conf.stun.clone();
        stun.max_transactions = stun.max_transactions.max(parallel);
        Self {
            slots: vec![Slot::NotAsked; servers.len()],
            servers,
            answers: Vec::new(),
            client: StunClient::with_ids(stun, ids),
            parallel,
            agree,
            server_timeout,
            next: 0,
            deadline: None,
            result: None,
            finished: false,
            conf,
        }
    }

    /// Start asking: the deadline is `now + timeout`; the first requests are queued at once.
    /// Calling it again does nothing.
    pub fn start(&mut self, now: Instant) {
        if self.deadline.is_some() || self.finished {
            return;
        }
        self.deadline = Some(after(now, self.conf.timeout));
        if self.servers.is_empty() {
            self.finish(Err(LookupError::NoServers));
            return;
        }
        self.advance(now);
    }

    /// Feed a datagram received from `from` on the lookup's socket. Anything but a matching
    /// Binding response from the server it was sent to is dropped and counted in
    /// [`stats`](Self::stats), as is everything after the lookup finished.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        self.client.handle_input(now, from, data);
        if self.running() {
            self.advance(now);
        }
    }

    /// The driver could not send to `server` (a hard error, not `WouldBlock`): that server
    /// fails with [`ServerFailure::Unreachable`] and the next one is asked.
    pub fn handle_unreachable(&mut self, now: Instant, server: SocketAddr, kind: ErrorKind) {
        if !self.running() {
            return;
        }
        if let Some(i) = self.servers.iter().position(|s| *s == server) {
            if let Slot::Asking { id, .. } = self.slots[i] {
                self.client.cancel(id);
                self.slots[i] = Slot::Failed(ServerFailure::Unreachable(kind));
            }
        }
        self.advance(now);
    }

    /// Advance timers to `now`: retransmit, abandon servers whose time is up, end the lookup at
    /// its deadline.
    pub fn handle_timeout(&mut self, now: Instant) {
        if !self.running() {
            return;
        }
        if self.deadline.is_some_and(|d| now < d) {
            // Abandon first, so a server whose time is up is not retransmitted to.
            self.abandon_expired(now);
            self.client.handle_timeout(now);
        }
        self.advance(now);
    }

    /// The next Binding request to send (UDP).
    pub fn poll_transmit(&mut self) -> Option<StunTransmit> {
        if !self.running() {
            return None;
        }
        self.client.poll_transmit()
    }

    /// When to call [`handle_timeout`](Self::handle_timeout): the earliest retransmission,
    /// abandonment or the deadline; the time of the last input while a request is still
    /// queued; `None` before `start` and once finished.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if !self.running() {
            return None;
        }
        let deadline = self.deadline?;
        let give_ups = self.slots.iter().filter_map(|s| match s {
            Slot::Asking { give_up, .. } => Some(*give_up),
            _ => None,
        });
        let next = give_ups.fold(deadline, Instant::min);
        Some(self.client.poll_timeout().map_or(next, |t| t.min(next)))
    }

    /// The outcome, once: `Ok` with our address as the winning server saw it, or why none was
    /// found.
    pub fn poll_result(&mut self) -> Option<Result<SocketAddr, LookupError>> {
        self.result.take()
    }

    /// Whether the lookup has ended (its result may already have been taken).
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// The answers so far, in arrival order: (server, mapped address).
    pub fn answers(&self) -> impl Iterator<Item = (SocketAddr, SocketAddr)> + '_ {
        self.answers.iter().map(|&(i, m)| (self.servers[i], m))
    }

    /// Servers being asked right now.
    pub fn in_flight(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| matches!(s, Slot::Asking { .. }))
            .count()
    }

    /// How long each server is waited for before the next is asked in its place.
    pub fn server_timeout(&self) -> Duration {
        self.server_timeout
    }

    /// Counters of dropped input (malformed, not a response, unknown transaction, wrong
    /// source) and retransmissions.
    pub fn stats(&self) -> ClientStats {
        self.client.stats()
    }

    fn running(&self) -> bool {
        self.deadline.is_some() && !self.finished
    }

    /// Take the client's outcomes, enforce the deadline, ask the next servers, and finish when
    /// there is nothing left to wait for.
    fn advance(&mut self, now: Instant) {
        while let Some(event) = self.client.poll_event() {
            self.on_event(event);
            if self.finished {
                return;
            }
        }
        if self.deadline.is_some_and(|d| now >= d) {
            let best = self.best();
            self.finish(best.ok_or_else(|| LookupError::Timeout {
                after: self.conf.timeout,
                servers: self.failures(),
            }));
            return;
        }
        self.abandon_expired(now);
        while self.in_flight() < self.parallel && self.next < self.servers.len() {
            let i = self.next;
            self.next += 1;
            match self
                .client
                .start_binding(now, self.servers[i], Transport::Udp)
            {
                Ok(id) => {
                    self.slots[i] = Slot::Asking {
                        id,
                        give_up: after(now, self.server_timeout),
                    }
                }
                // Not reachable with deduplicated servers and the table sized to `parallel`;
                // if it were, the server counts as unanswered rather than blocking the rest.
                Err(_) => self.slots[i] = Slot::Failed(ServerFailure::NoAnswer),
            }
        }
        if self.in_flight() == 0 && self.next >= self.servers.len() {
            let result = match self.best() {
                Some(addr) => Ok(addr),
                None => {
                    let servers = self.failures();
                    if servers
                        .iter()
                        .all(|e| matches!(e.failure, ServerFailure::Unreachable(_)))
                    {
                        Err(LookupError::Unreachable { servers })
                    } else {
                        Err(LookupError::AllFailed { servers })
                    }
                }
            };
            self.finish(result);
        }
    }

    fn on_event(&mut self, event: StunEvent) {
        let (id, outcome) = match event {
            StunEvent::Success { id, mapped, .. } => (id, Ok(mapped)),
            StunEvent::ErrorResponse { id, code, reason } => {
                (id, Err(ServerFailure::ErrorResponse { code, reason }))
            }
            StunEvent::InvalidResponse { id } => (id, Err(ServerFailure::InvalidResponse)),
            StunEvent::Timeout { id } => (id, Err(ServerFailure::NoAnswer)),
        };
        let Some(i) = self
            .slots
            .iter()
            .position(|s| matches!(s, Slot::Asking { id: t, .. } if *t == id))
        else {
            return;
        };
        match outcome {
            Ok(mapped) => {
                self.slots[i] = Slot::Answered(mapped);
                self.answers.push((i, mapped));
                let ip = canonical(mapped.ip());
                let votes = self
                    .answers
                    .iter()
                    .filter(|(_, m)| canonical(m.ip()) == ip)
                    .count();
                if votes >= self.agree {
                    let first = self.first_with(ip);
                    self.finish(Ok(first));
                }
            }
            Err(failure) => self.slots[i] = Slot::Failed(failure),
        }
    }

    fn abandon_expired(&mut self, now: Instant) {
        for slot in &mut self.slots {
            if let Slot::Asking { id, give_up } = *slot {
                if give_up <= now {
                    self.client.cancel(id);
                    log::trace!("stun lookup: abandoning transaction {id}");
                    *slot = Slot::Failed(ServerFailure::NoAnswer);
                }
            }
        }
    }

    /// The IP reported by the most servers (the earliest on a tie), as first reported.
    fn best(&self) -> Option<SocketAddr> {
        let mut best: Option<(usize, IpAddr)> = None;
        for (_, m) in &self.answers {
            let ip = canonical(m.ip());
            let votes = self
                .answers
                .iter()
                .filter(|(_, o)| canonical(o.ip()) == ip)
                .count();
            if best.is_none_or(|(v, _)| votes > v) {
                best = Some((votes, ip));
            }
        }
        best.map(|(_, ip)| self.first_with(ip))
    }

    fn first_with(&self, ip: IpAddr) -> SocketAddr {
        self.answers
            .iter()
            .map(|(_, m)| *m)
            .find(|m| canonical(m.ip()) == ip)
            .unwrap_or_else(|| SocketAddr::new(ip, 0))
    }

    fn failures(&self) -> Vec<ServerError> {
        self.servers
            .iter()
            .zip(&self.slots)
            .filter_map(|(server, slot)| {
                let failure = match slot {
                    Slot::NotAsked => ServerFailure::NotAsked,
                    Slot::Asking { .. } => ServerFailure::Pending,
                    Slot::Answered(_) => return None,
                    Slot::Failed(f) => f.clone(),
                };
                Some(ServerError {
                    server: *server,
                    failure,
                })
            })
            .collect()
    }

    /// End the lookup: cancel what is in flight (its queued requests go too).
    fn finish(&mut self, result: Result<SocketAddr, LookupError>) {
        for slot in &self.slots {
            if let Slot::Asking { id, .. } = slot {
                self.client.cancel(*id);
            }
        }
        match &result {
            Ok(addr) => log::debug!("stun lookup: external address {addr}"),
            Err(e) => log::debug!("stun lookup: {e}"),
        }
        self.finished = true;
        self.result = Some(result);
    }
}

/// IPv4-mapped IPv6 compares as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// `now + d`, saturating at `now` + a day for absurd configured durations.
fn after(now: Instant, d: Duration) -> Instant {
    let day = Duration::from_secs(86_400);
    now.checked_add(d.min(day)).unwrap_or(now)
}
