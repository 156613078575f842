//! Sans-IO NAT behaviour discovery (RFC 5780 §4.3–4.6) and P2PD's NAT classes.

use std::fmt;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::attr::Attribute;
use super::client::{IdGen, StunClient, StunClientConfig, StunEvent, StunTransmit, Transport};
use super::codec::{decode, Class, Message, Method, TransactionId};

/// Requests carry this SOFTWARE value as padding: a request of at least 52 bytes lets a
/// server that keeps answers ≤ 2× its requests (ours) send XOR-MAPPED-ADDRESS, OTHER-ADDRESS
/// and RESPONSE-ORIGIN, even for IPv6. SOFTWARE is comprehension-optional, so no server
/// refuses it (a PADDING attribute would get a 420 from servers without RFC 5780).
const PAD: &str = "pipes NAT behaviour discovery";

/// How a [`NatDiscovery`] runs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct NatConfig {
    /// RFC 5780 STUN servers (with OTHER-ADDRESS), in order. Duplicates are asked once.
    pub servers: Vec<SocketAddr>,
    /// Servers raced for the first test; the first to answer with OTHER-ADDRESS is used for
    /// the rest, a server that fails is replaced by the next one. Default 3.
    pub parallel: usize,
    /// Hard bound on the whole discovery, from [`NatDiscovery::start`]. Default 6 s.
    pub timeout: Duration,
    /// Each test's retransmissions: default RTO 250 ms doubling, 4 sends, last wait 4 × RTO:
    /// sends at 0, 0.25, 0.75, 1.75 s, given up at 2.75 s. A test counts as unanswered
    /// (filtered) only after all of them.
    pub stun: StunClientConfig,
    /// Test hairpinning (a request from the mapping socket to its own mapped address).
    /// Default on.
    pub hairpin: bool,
}

impl NatConfig {
    /// Discover with `servers` and the defaults.
    pub fn new(servers: Vec<SocketAddr>) -> Self {
        let stun = StunClientConfig {
            rto: Duration::from_millis(250),
            max_sends: 4,
            last_wait: 4,
            ..StunClientConfig::default()
        };
        Self {
            servers,
            parallel: 3,
            timeout: Duration::from_secs(6),
            stun,
            hairpin: true,
        }
    }

    /// How long one test waits before it counts as unanswered.
    pub fn test_time(&self) -> Duration {
        let c = &self.stun;
        let mut total = Duration::ZERO;
        for sends in 1..=c.max_sends.max(1) {
            total += if sends >= c.max_sends {
                c.rto.saturating_mul(c.last_wait)
            } else {
                c.rto
                    .saturating_mul(1u32.checked_shl(sends - 1).unwrap_or(u32::MAX))
            };
        }
        total
    }
}

/// The two local sockets discovery uses: mapping tests and hairpinning on one, filtering tests
/// (which only ever send to the server's primary address) on the other, so the mapping tests'
/// sends to the server's other address cannot open the NAT's filter for the filtering tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NatSocket {
    /// Tests I, II, III (RFC 5780 §4.3) and the hairpin probe.
    Mapping,
    /// Tests I, II, III of §4.4 (CHANGE-REQUEST).
    Filtering,
}

/// A datagram to send from one of the two sockets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatTransmit {
    /// Which socket sends it.
    pub socket: NatSocket,
    /// Where to.
    pub dest: SocketAddr,
    /// The bytes.
    pub payload: Bytes,
}

/// Mapping behaviour (RFC 4787 §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mapping {
    /// No NAT: the mapped address is the local address.
    NoNat,
    /// The same mapping whatever the destination.
    EndpointIndependent,
    /// A new mapping per destination IP.
    AddressDependent,
    /// A new mapping per destination IP and port.
    AddressAndPortDependent,
    /// Not determined (a test went unanswered).
    Unknown,
}

/// Filtering behaviour (RFC 4787 §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Filtering {
    /// Anyone may send to a mapping.
    EndpointIndependent,
    /// Only IPs the mapping has sent to.
    AddressDependent,
    /// Only IP and port pairs the mapping has sent to.
    AddressAndPortDependent,
    /// Not determined (the server did not honour CHANGE-REQUEST, or no answer at all).
    Unknown,
}

/// How mapped ports relate to local ports and to each other (P2PD's "delta").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PortDelta {
    /// Every mapping kept its local port.
    Equal,
    /// Mapped ports are local ports plus a constant: the NAT preserves the distance between
    /// local ports.
    Preserving(i32),
    /// Consecutive new mappings are a constant distance apart, whatever the local port.
    Independent(i32),
    /// No pattern.
    Random,
    /// Too few mappings seen to tell.
    Unknown,
}

/// P2PD's NAT classes (`nat_utils.py`), derived from the behaviours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NatClass {
    /// No NAT, no filtering (P2PD 1).
    OpenInternet,
    /// No NAT, but unsolicited traffic is filtered (P2PD 2).
    SymmetricUdpFirewall,
    /// Endpoint-independent mapping and filtering (P2PD 3).
    FullCone,
    /// Endpoint-independent mapping, address-dependent filtering (P2PD 4).
    Restricted,
    /// Endpoint-independent mapping, address-and-port-dependent filtering (P2PD 5; Linux's
    /// masquerade).
    PortRestricted,
    /// A mapping per destination (P2PD 6).
    Symmetric,
    /// No answer to UDP at all (P2PD 7).
    Blocked,
}

impl NatClass {
    /// P2PD's number for the class.
    pub fn p2pd_code(self) -> u8 {
        match self {
            NatClass::OpenInternet => 1,
            NatClass::SymmetricUdpFirewall => 2,
            NatClass::FullCone => 3,
            NatClass::Restricted => 4,
            NatClass::PortRestricted => 5,
            NatClass::Symmetric => 6,
            NatClass::Blocked => 7,
        }
    }

    /// The class of a mapping and filtering behaviour. Unknown behaviours give the more
    /// restrictive class: a peer planning hole punching on it errs on the safe side.
    pub fn of(mapping: Mapping, filtering: Filtering) -> Self {
        match (mapping, filtering) {
            (Mapping::NoNat, Filtering::EndpointIndependent) => NatClass::OpenInternet,
            (Mapping::NoNat, _) => NatClass::SymmetricUdpFirewall,
            (Mapping::EndpointIndependent, Filtering::EndpointIndependent) => NatClass::FullCone,
            (Mapping::EndpointIndependent, Filtering::AddressDependent) => NatClass::Restricted,
            (Mapping::EndpointIndependent, _) => NatClass::PortRestricted,
            _ => NatClass::Symmetric,
        }
    }
}

impl fmt::Display for NatClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NatClass::OpenInternet => "open internet",
            NatClass::SymmetricUdpFirewall => "symmetric UDP firewall",
            NatClass::FullCone => "full cone",
            NatClass::Restricted => "restricted",
            NatClass::PortRestricted => "port restricted",
            NatClass::Symmetric => "symmetric",
            NatClass::Blocked => "blocked",
        })
    }
}

/// What discovery found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NatReport {
    /// The RFC 5780 server the tests ran against (`None` when blocked).
    pub server: Option<SocketAddr>,
    /// Its OTHER-ADDRESS.
    pub other: Option<SocketAddr>,
    /// The mapping socket's local address, as given to `start`.
    pub local: SocketAddr,
    /// Its mapped address (test I).
    pub mapped: Option<SocketAddr>,
    /// Mapping behaviour.
    pub mapping: Mapping,
    /// Filtering behaviour.
    pub filtering: Filtering,
    /// Whether test I's mapping kept the local port (`None` when blocked).
    pub port_preserved: Option<bool>,
    /// The relation between the mappings seen (each new mapping: local port → mapped port).
    pub delta: PortDelta,
    /// Each distinct mapping seen, in order: (local port, mapped port).
    pub mappings: Vec<(u16, u16)>,
    /// Whether a datagram to our own mapped address came back (`None`: not tested).
    pub hairpin: Option<bool>,
    /// P2PD's class.
    pub class: NatClass,
}

/// Why discovery gave no report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NatError {
    /// The server list is empty.
    #[error("no STUN server given")]
    NoServers,
    /// Nothing could be sent to any server (offline, or no route).
    #[error("no STUN server is reachable ({0:?})")]
    Unreachable(ErrorKind),
    /// Servers answered, but none with OTHER-ADDRESS (no RFC 5780 support).
    #[error("no server supports RFC 5780 behaviour discovery (answered: {answered:?})")]
    NoBehaviourDiscovery {
        /// The servers that answered without OTHER-ADDRESS, and the address they saw.
        answered: Vec<(SocketAddr, SocketAddr)>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cand {
    NotAsked,
    Asking(TransactionId),
    Plain(SocketAddr),
    Failed { unreachable: bool },
}

/// One test of the second phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Test {
    Pending(TransactionId),
    /// Answered: the mapped address (and, for change tests, whether the origin was right).
    Answered {
        mapped: SocketAddr,
        honoured: bool,
    },
    Unanswered,
}

#[derive(Debug)]
struct Tests {
    server: SocketAddr,
    other: SocketAddr,
    x1: SocketAddr,
    end: Instant,
    /// Mapping socket: to (A2, P1) and (A2, P2).
    ii: Test,
    iii: Test,
    /// Filtering socket: plain to (A1, P1), change IP and port, change port.
    f_i: Test,
    f_both: Test,
    f_port: Test,
    hairpin: Option<Hairpin>,
}

#[derive(Debug)]
struct Hairpin {
    id: TransactionId,
    payload: Bytes,
    sends_left: u32,
    next: Instant,
    give_up: Instant,
    seen: bool,
    expired: bool,
}

#[derive(Debug)]
enum Phase {
    Idle,
    Race,
    Tests(Box<Tests>),
    Done,
}

/// NAT behaviour discovery as a sans-IO agent (RFC 5780 §4.3, §4.4, plus P2PD's port delta,
/// hairpinning and class).
///
/// Two phases. First the servers are raced (at most `parallel` at a time, a failing one
/// replaced by the next) with test I from the mapping socket; the first answer carrying
/// OTHER-ADDRESS (A2:P2) picks the server (A1:P1). Then, all at once: tests II (to A2:P1) and
/// III (to A2:P2) from the mapping socket; from the filtering socket a plain request and
/// CHANGE-REQUESTs for "IP and port" and "port" to A1:P1; and a hairpin probe from the mapping
/// socket to its own mapped address. Each test retransmits on the `stun` schedule and counts
/// as unanswered only after its last wait (2.75 s by default). The report comes as soon as
/// every test has an outcome, at most one test time after the first phase (≈ 5.5 s in all
/// with the defaults), and never later than `timeout` (6 s).
///
/// Drive it like [`ExternalLookup`](super::ExternalLookup): `start`, then after every input
/// drain [`poll_transmit`](Self::poll_transmit) (each to its [`NatSocket`]), check
/// [`poll_result`](Self::poll_result), sleep until input or
/// [`poll_timeout`](Self::poll_timeout).
#[derive(Debug)]
pub struct NatDiscovery {
    conf: NatConfig,
    servers: Vec<SocketAddr>,
    cands: Vec<Cand>,
    next: usize,
    parallel: usize,
    m: StunClient,
    f: StunClient,
    probe_ids: IdGen,
    locals: Option<(SocketAddr, SocketAddr)>,
    deadline: Option<Instant>,
    phase: Phase,
    mappings: Vec<(u16, u16)>,
    hairpin_out: Vec<NatTransmit>,
    last_now: Option<Instant>,
    unreachable: Option<ErrorKind>,
    result: Option<Result<NatReport, NatError>>,
}

impl NatDiscovery {
    /// Discovery with transaction ids from `seed` (deterministic: tests).
    pub fn new(conf: NatConfig, seed: u64) -> Self {
        let mut key = [0; 32];
        crate::rng::Rng::new(seed).fill(&mut key);
        Self::with_key(conf, key)
    }

    /// Discovery with transaction ids keyed by `key`: take it from the OS's CSPRNG.
    pub fn with_key(conf: NatConfig, key: [u8; 32]) -> Self {
        let mut servers: Vec<SocketAddr> = Vec::new();
        for s in &conf.servers {
            if !servers.contains(s) {
                servers.push(*s);
            }
        }
        let parallel = conf.parallel.clamp(1, super::MAX_PARALLEL);
        let mut stun = conf.stun.clone();
        stun.max_transactions = stun.max_transactions.max(parallel + 4);
        let derive = |tag: u8| {
            let mut k = key;
            k[31] ^= tag;
            k
        };
        Self {
            cands: vec![Cand::NotAsked; servers.len()],
            servers,
            next: 0,
            parallel,
            m: StunClient::with_key(stun.clone(), derive(1)),
            f: StunClient::with_key(stun, derive(2)),
            probe_ids: IdGen::from_key(derive(3)),
            locals: None,
            deadline: None,
            phase: Phase::Idle,
            mappings: Vec::new(),
            hairpin_out: Vec::new(),
            last_now: None,
            unreachable: None,
            result: None,
            conf,
        }
    }

    /// Start: `mapping` and `filtering` are the two sockets' local addresses, with the real
    /// IP (not the any-address: the "no NAT" test compares the mapped address with it).
    /// Calling it again does nothing.
    pub fn start(&mut self, now: Instant, mapping: SocketAddr, filtering: SocketAddr) {
        if !matches!(self.phase, Phase::Idle) {
            return;
        }
        self.last_now = Some(now);
        self.locals = Some((mapping, filtering));
        self.deadline = Some(after(now, self.conf.timeout));
        if self.servers.is_empty() {
            self.finish(Err(NatError::NoServers));
            return;
        }
        self.phase = Phase::Race;
        self.advance(now);
    }

    /// Feed a datagram received on `socket` from `from`.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        socket: NatSocket,
        from: SocketAddr,
        data: &[u8],
    ) {
        self.last_now = Some(now);
        if !self.running() {
            return;
        }
        match socket {
            NatSocket::Mapping => {
                if let Phase::Tests(t) = &mut self.phase {
                    if let Some(h) = &mut t.hairpin {
                        if let Ok(msg) = decode(data) {
                            if msg.class == Class::Request && msg.transaction_id == h.id {
                                h.seen = true;
                            }
                        }
                    }
                }
                self.m.handle_input(now, from, data)
            }
            NatSocket::Filtering => self.f.handle_input(now, from, data),
        }
        self.advance(now);
    }

    /// The driver could not send to `dest` from `socket` (a hard error, not `WouldBlock`).
    pub fn handle_unreachable(
        &mut self,
        now: Instant,
        socket: NatSocket,
        dest: SocketAddr,
        kind: ErrorKind,
    ) {
        self.last_now = Some(now);
        if !self.running() {
            return;
        }
        if matches!(self.phase, Phase::Race) && socket == NatSocket::Mapping {
            if let Some(i) = self.servers.iter().position(|s| *s == dest) {
                if let Cand::Asking(id) = self.cands[i] {
                    self.m.cancel(id);
                    self.cands[i] = Cand::Failed { unreachable: true };
                    self.unreachable = Some(kind);
                }
            }
        }
        self.advance(now);
    }

    /// Advance timers to `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.last_now = Some(now);
        if !self.running() {
            return;
        }
        self.m.handle_timeout(now);
        self.f.handle_timeout(now);
        self.advance(now);
    }

    /// The next datagram to send, and from which socket.
    pub fn poll_transmit(&mut self) -> Option<NatTransmit> {
        if !self.running() {
            return None;
        }
        if let Some(t) = self.m.poll_transmit() {
            return Some(wrap(NatSocket::Mapping, t));
        }
        if let Some(t) = self.f.poll_transmit() {
            return Some(wrap(NatSocket::Filtering, t));
        }
        self.hairpin_out.pop()
    }

    /// When to call [`handle_timeout`](Self::handle_timeout); `None` before `start` and once
    /// finished.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if !self.running() {
            return None;
        }
        let mut next = self.deadline?;
        for t in [self.m.poll_timeout(), self.f.poll_timeout()]
            .into_iter()
            .flatten()
        {
            next = next.min(t);
        }
        if let Phase::Tests(t) = &self.phase {
            next = next.min(t.end);
            if let Some(h) = t.hairpin.as_ref().filter(|h| !h.seen && !h.expired) {
                next = next.min(if h.sends_left > 0 { h.next } else { h.give_up });
            }
        }
        if !self.hairpin_out.is_empty() {
            next = next.min(self.last_now.unwrap_or(next));
        }
        Some(next)
    }

    /// The outcome, once.
    pub fn poll_result(&mut self) -> Option<Result<NatReport, NatError>> {
        self.result.take()
    }

    /// Whether discovery has ended.
    pub fn is_finished(&self) -> bool {
        matches!(self.phase, Phase::Done)
    }

    fn running(&self) -> bool {
        matches!(self.phase, Phase::Race | Phase::Tests(_))
    }

    fn advance(&mut self, now: Instant) {
        if matches!(self.phase, Phase::Race) {
            self.race(now);
        }
        if let Phase::Tests(_) = self.phase {
            self.tests(now);
        }
    }

    fn race(&mut self, now: Instant) {
        while let Some(event) = self.m.poll_event() {
            let (id, outcome) = match event {
                StunEvent::Success {
                    id,
                    mapped,
                    other_address,
                    ..
                } => (id, Some((mapped, other_address))),
                StunEvent::ErrorResponse { id, .. }
                | StunEvent::InvalidResponse { id }
                | StunEvent::Timeout { id } => (id, None),
            };
            let Some(i) = self.cands.iter().position(|c| *c == Cand::Asking(id)) else {
                continue;
            };
            match outcome {
                Some((mapped, Some(other))) if other.ip() != self.servers[i].ip() => {
                    self.begin_tests(now, self.servers[i], other, mapped);
                    return;
                }
                Some((mapped, _)) => self.cands[i] = Cand::Plain(mapped),
                None => self.cands[i] = Cand::Failed { unreachable: false },
            }
        }
        let test_time = self.conf.test_time();
        let late = self
            .deadline
            .is_some_and(|d| now >= d || now + test_time > d);
        if self.deadline.is_some_and(|d| now >= d) {
            self.end_race();
            return;
        }
        let asking = |c: &[Cand]| c.iter().filter(|c| matches!(c, Cand::Asking(_))).count();
        while !late && asking(&self.cands) < self.parallel && self.next < self.servers.len() {
            let i = self.next;
            self.next += 1;
            let pad = vec![Attribute::Software(PAD.into())];
            match self
                .m
                .start_binding_with(now, self.servers[i], Transport::Udp, pad, false)
            {
                Ok(id) => self.cands[i] = Cand::Asking(id),
                Err(_) => self.cands[i] = Cand::Failed { unreachable: false },
            }
        }
        if asking(&self.cands) == 0 && (late || self.next >= self.servers.len()) {
            self.end_race();
        }
    }

    /// The race ended without an RFC 5780 server.
    fn end_race(&mut self) {
        let answered: Vec<(SocketAddr, SocketAddr)> = self
            .servers
            .iter()
            .zip(&self.cands)
            .filter_map(|(s, c)| match c {
                Cand::Plain(m) => Some((*s, *m)),
                _ => None,
            })
            .collect();
        let all_unreachable = self
            .cands
            .iter()
            .all(|c| *c == Cand::Failed { unreachable: true });
        let result = if !answered.is_empty() {
            Err(NatError::NoBehaviourDiscovery { answered })
        } else if all_unreachable {
            Err(NatError::Unreachable(
                self.unreachable.unwrap_or(ErrorKind::NetworkUnreachable),
            ))
        } else {
            let local = self
                .locals
                .map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |l| l.0);
            Ok(NatReport {
                server: None,
                other: None,
                local,
                mapped: None,
                mapping: Mapping::Unknown,
                filtering: Filtering::Unknown,
                port_preserved: None,
                delta: PortDelta::Unknown,
                mappings: Vec::new(),
                hairpin: None,
                class: NatClass::Blocked,
            })
        };
        self.finish(result);
    }

    fn begin_tests(&mut self, now: Instant, server: SocketAddr, other: SocketAddr, x1: SocketAddr) {
        for c in &mut self.cands {
            if let Cand::Asking(id) = *c {
                self.m.cancel(id);
                *c = Cand::NotAsked;
            }
        }
        let local_m = self.locals.map_or(x1, |l| l.0);
        self.note_mapping(local_m.port(), x1);
        let a2p1 = SocketAddr::new(other.ip(), server.port());
        let pad = || vec![Attribute::Software(PAD.into())];
        let change = |ip: bool, port: bool| {
            vec![
                Attribute::ChangeRequest {
                    change_ip: ip,
                    change_port: port,
                },
                Attribute::Software(PAD.into()),
            ]
        };
        let start = |c: &mut StunClient, dest, attrs, any| match c.start_binding_with(
            now,
            dest,
            Transport::Udp,
            attrs,
            any,
        ) {
            Ok(id) => Test::Pending(id),
            Err(_) => Test::Unanswered,
        };
        let ii = start(&mut self.m, a2p1, pad(), false);
        let iii = start(&mut self.m, other, pad(), false);
        let f_i = start(&mut self.f, server, pad(), false);
        let f_both = start(&mut self.f, server, change(true, true), true);
        let f_port = start(&mut self.f, server, change(false, true), true);
        let end = after(now, self.conf.test_time());
        let end = self.deadline.map_or(end, |d| end.min(d));
        let hairpin = (self.conf.hairpin && x1 != local_m).then(|| {
            let id = self.probe_ids.next();
            let mut probe = Message::new(Class::Request, Method::Binding, id);
            probe.attributes.push(Attribute::Software(PAD.into()));
            Hairpin {
                id,
                payload: probe.encode(),
                sends_left: 3,
                next: now,
                give_up: after(now, self.conf.stun.rto * 2 + Duration::from_secs(1)).min(end),
                seen: false,
                expired: false,
            }
        });
        log::debug!("nat discovery: testing against {server} (other {other}), mapped {x1}");
        self.phase = Phase::Tests(Box::new(Tests {
            server,
            other,
            x1,
            end,
            ii,
            iii,
            f_i,
            f_both,
            f_port,
            hairpin,
        }));
    }

    fn note_mapping(&mut self, local: u16, mapped: SocketAddr) {
        let entry = (local, mapped.port());
        if !self.mappings.contains(&entry) {
            self.mappings.push(entry);
        }
    }

    fn tests(&mut self, now: Instant) {
        let Phase::Tests(t) = &mut self.phase else {
            return;
        };
        let (local_m, local_f) = self.locals.unwrap_or((t.x1, t.x1));
        let mut new_mappings = Vec::new();
        let expect_both = t.other;
        let expect_port = SocketAddr::new(t.server.ip(), t.other.port());
        for (client, socket) in [
            (&mut self.m, NatSocket::Mapping),
            (&mut self.f, NatSocket::Filtering),
        ] {
            while let Some(event) = client.poll_event() {
                let (id, outcome) = match event {
                    StunEvent::Success {
                        id,
                        mapped,
                        response_origin,
                        ..
                    } => (id, Some((mapped, response_origin))),
                    StunEvent::ErrorResponse { id, .. }
                    | StunEvent::InvalidResponse { id }
                    | StunEvent::Timeout { id } => (id, None),
                };
                let tests: [(&mut Test, Option<SocketAddr>); 5] = [
                    (&mut t.ii, None),
                    (&mut t.iii, None),
                    (&mut t.f_i, None),
                    (&mut t.f_both, Some(expect_both)),
                    (&mut t.f_port, Some(expect_port)),
                ];
                for (i, (test, expect)) in tests.into_iter().enumerate() {
                    let on_m = i < 2;
                    if on_m != (socket == NatSocket::Mapping) || *test != Test::Pending(id) {
                        continue;
                    }
                    *test = match outcome {
                        Some((mapped, origin)) => {
                            let honoured = match (expect, origin) {
                                (Some(e), Some(o)) => o == e,
                                _ => true,
                            };
                            let local = if on_m { local_m } else { local_f };
                            if i != 3 && i != 4 {
                                new_mappings.push((local.port(), mapped));
                            }
                            Test::Answered { mapped, honoured }
                        }
                        None => Test::Unanswered,
                    };
                }
            }
        }
        for (local, mapped) in new_mappings {
            let entry = (local, mapped.port());
            if !self.mappings.contains(&entry) {
                self.mappings.push(entry);
            }
        }
        if let Some(h) = &mut t.hairpin {
            h.expired |= now >= h.give_up;
            if !h.seen && h.sends_left > 0 && now >= h.next {
                h.sends_left -= 1;
                h.next = after(now, self.conf.stun.rto);
                self.hairpin_out.push(NatTransmit {
                    socket: NatSocket::Mapping,
                    dest: t.x1,
                    payload: h.payload.clone(),
                });
            }
        }
        // Once "IP and port" is answered the filtering is known: no need to wait on "port".
        let both_done = matches!(t.f_both, Test::Answered { honoured: true, .. });
        let filtering_pending = matches!(t.f_both, Test::Pending(_))
            || (!both_done && matches!(t.f_port, Test::Pending(_)))
            || matches!(t.f_i, Test::Pending(_));
        let mapping_pending = matches!(t.ii, Test::Pending(_)) || matches!(t.iii, Test::Pending(_));
        let hairpin_pending = t.hairpin.as_ref().is_some_and(|h| !h.seen && !h.expired);
        let done = !filtering_pending && !mapping_pending && !hairpin_pending;
        if done || now >= t.end {
            self.report();
        }
    }

    fn report(&mut self) {
        let Phase::Tests(t) = std::mem::replace(&mut self.phase, Phase::Done) else {
            return;
        };
        let (local_m, _) = self.locals.unwrap_or((t.x1, t.x1));
        let mapped = |x: Test| match x {
            Test::Answered { mapped, .. } => Some(mapped),
            _ => None,
        };
        let mapping = if canon(t.x1) == canon(local_m) {
            Mapping::NoNat
        } else {
            match (mapped(t.ii), mapped(t.iii)) {
                (Some(x2), _) if canon(x2) == canon(t.x1) => Mapping::EndpointIndependent,
                (Some(x2), Some(x3)) if canon(x2) == canon(x3) => Mapping::AddressDependent,
                (Some(_), Some(_)) => Mapping::AddressAndPortDependent,
                _ => Mapping::Unknown,
            }
        };
        let answered = |x: Test| match x {
            Test::Answered { honoured, .. } => Some(honoured),
            _ => None,
        };
        let filtering = match (answered(t.f_i), answered(t.f_both), answered(t.f_port)) {
            (_, Some(true), _) => Filtering::EndpointIndependent,
            (_, Some(false), _) | (_, _, Some(false)) => Filtering::Unknown,
            (_, None, Some(true)) => Filtering::AddressDependent,
            (Some(_), None, None) => Filtering::AddressAndPortDependent,
            (None, None, None) => Filtering::Unknown,
        };
        let hairpin = t.hairpin.as_ref().map(|h| h.seen).or_else(|| {
            // No NAT: the probe was not needed; a datagram to ourselves always arrives.
            (self.conf.hairpin && t.x1 == local_m).then_some(true)
        });
        let delta = delta_of(&self.mappings);
        let report = NatReport {
            server: Some(t.server),
            other: Some(t.other),
            local: local_m,
            mapped: Some(t.x1),
            mapping,
            filtering,
            port_preserved: Some(t.x1.port() == local_m.port()),
            delta,
            mappings: self.mappings.clone(),
            hairpin,
            class: NatClass::of(mapping, filtering),
        };
        self.finish(Ok(report));
    }

    fn finish(&mut self, result: Result<NatReport, NatError>) {
        match &result {
            Ok(r) => log::debug!("nat discovery: {r:?}"),
            Err(e) => log::debug!("nat discovery: {e}"),
        }
        for c in &self.cands {
            if let Cand::Asking(id) = c {
                self.m.cancel(*id);
            }
        }
        while self.m.poll_transmit().is_some() {}
        while self.f.poll_transmit().is_some() {}
        self.hairpin_out.clear();
        self.phase = Phase::Done;
        self.result = Some(result);
    }
}

/// The delta rule over the distinct mappings seen, in order.
fn delta_of(mappings: &[(u16, u16)]) -> PortDelta {
    if mappings.is_empty() {
        return PortDelta::Unknown;
    }
    if mappings.iter().all(|(l, m)| l == m) {
        return PortDelta::Equal;
    }
    let offsets: Vec<i32> = mappings
        .iter()
        .map(|(l, m)| i32::from(*m) - i32::from(*l))
        .collect();
    let distinct_locals = {
        let mut l: Vec<u16> = mappings.iter().map(|(l, _)| *l).collect();
        l.sort_unstable();
        l.dedup();
        l.len()
    };
    if distinct_locals >= 2 && offsets.iter().all(|o| *o == offsets[0]) {
        return PortDelta::Preserving(offsets[0]);
    }
    let deltas: Vec<i32> = mappings
        .windows(2)
        .map(|w| i32::from(w[1].1) - i32::from(w[0].1))
        .collect();
    match deltas.as_slice() {
        [] | [_] => PortDelta::Unknown,
        [d, rest @ ..] if rest.iter().all(|x| x == d) => PortDelta::Independent(*d),
        _ => PortDelta::Random,
    }
}

fn canon(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

fn wrap(socket: NatSocket, t: StunTransmit) -> NatTransmit {
    NatTransmit {
        socket,
        dest: t.dest,
        payload: t.payload,
    }
}

/// `now + d`, saturating at `now` + a day for absurd configured durations.
fn after(now: Instant, d: Duration) -> Instant {
    let day = Duration::from_secs(86_400);
    now.checked_add(d.min(day)).unwrap_or(now)
}
