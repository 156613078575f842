//! An in-memory world of pipe-core engines: no sockets, no threads, no wall clock.
//!
//! Like quinn's `Pair` and str0m's netem, the world is itself sans-IO: N hosts, each one
//! [`Engine`]; a virtual clock advanced to `min(next poll_timeout, next delivery)`; a seeded
//! network ([`pipe_core::rng::Rng`]) with loss, duplication, fixed delay and jitter (which
//! reorders) for UDP, and for TCP a lossless ordered byte pipe per direction that hands the
//! receiver chunks of random size down to 1 byte.
//!
//! The world is the driver: it drains `poll_transmit` and `poll_event` after every input,
//! routes UDP transmits by destination address to the pipe bound there and TCP transmits to the
//! other end of their connection, turns an `End` of a TCP pipe into a FIN for its peer, calls
//! `send` on the target of an `Event::Forward`, records every event per host, and checks after
//! every step that `poll_timeout` advanced and (optionally) that every engine is within its caps.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pipe_core::rng::Rng;
use pipe_core::{
    AcceptError, Conf, Engine, Event, Kind, LinkError, LinkId, LinkTarget, MessageId, PipeId,
    Proto, SendError, State, TargetToken, Transmit,
};

/// Network knobs (UDP: all of them; TCP: `delay` and `max_chunk`, TCP itself never loses).
#[derive(Debug, Clone)]
pub struct Net {
    /// Probability that a datagram is lost.
    pub loss: f64,
    /// Probability that a datagram is delivered twice.
    pub dup: f64,
    /// One-way delay of every delivery.
    pub delay: Duration,
    /// Extra random delay in `0..jitter` per datagram: reorders datagrams.
    pub jitter: Duration,
    /// Largest TCP chunk handed to `handle_stream`; sizes are uniform in `1..=max_chunk`.
    pub max_chunk: usize,
}

impl Default for Net {
    fn default() -> Self {
        Self {
            loss: 0.0,
            dup: 0.0,
            delay: Duration::from_millis(1),
            jitter: Duration::ZERO,
            max_chunk: 1500,
        }
    }
}

/// Code run by the world for every event of a host (after it is recorded): an echo server, a
/// consumer draining its queue, ... It drives the host's engine like a driver would.
pub type App = Box<dyn FnMut(&mut Engine, Instant, &Event)>;

/// One host: an engine, its recorded events, and an optional app.
pub struct Host {
    /// The engine.
    pub engine: Engine,
    /// Every event the host's engine emitted, with the virtual time it was drained.
    pub events: Vec<(Instant, Event)>,
    /// Pipes opened or accepted on this host.
    pub pipes: Vec<PipeId>,
    app: Option<App>,
    draining: Option<PipeId>,
}

/// One input the network hands to an engine, recorded when [`World::record`] is set.
#[derive(Debug, Clone)]
pub struct Rec {
    /// When.
    pub at: Instant,
    /// Which host.
    pub host: usize,
    /// Which pipe.
    pub pipe: PipeId,
    /// The sender (UDP) or connection peer (TCP).
    pub from: SocketAddr,
    /// The datagram or stream chunk.
    pub data: Bytes,
    /// True for a datagram, false for a stream chunk.
    pub datagram: bool,
    /// Increase of the pipe's `Stats::received` during this input.
    pub received: u64,
    /// Increase of the pipe's `Stats::duplicates` during this input.
    pub duplicates: u64,
}

/// What the network did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counters {
    /// UDP transmits handed to the network.
    pub datagrams_sent: u64,
    /// Lost by the loss knob (or `drop_next_datagram`).
    pub lost: u64,
    /// Extra copies made by the dup knob (or `dup_random_datagram`).
    pub duplicated: u64,
    /// Datagrams to an address nobody is bound to, or TCP bytes of an unknown connection.
    pub unroutable: u64,
    /// Datagrams handed to `handle_datagram`.
    pub datagrams_delivered: u64,
    /// TCP transmits handed to the network.
    pub segments_sent: u64,
    /// Chunks handed to `handle_stream`.
    pub chunks_delivered: u64,
    /// `Event::Forward` handled by sending through the target.
    pub forwards: u64,
    /// `Event::Forward` whose send failed (or whose token is unknown).
    pub forward_errors: u64,
}

enum Delivery {
    Datagram {
        host: usize,
        pipe: PipeId,
        from: SocketAddr,
        data: Bytes,
    },
    Stream {
        conn: usize,
        dir: usize,
    },
}

/// One direction of a TCP connection: bytes from `ends[dir]` to `ends[1 - dir]`.
#[derive(Default)]
struct Dir {
    bytes: VecDeque<u8>,
    fin: bool,
    rst: bool,
    scheduled: bool,
    closed: bool,
}

struct Conn {
    /// (host, pipe, local address) of both ends: 0 = client, 1 = accepted connection.
    ends: [(usize, PipeId, SocketAddr); 2],
    dirs: [Dir; 2],
}

/// The world.
pub struct World {
    /// The hosts, indexed by the id `add_host` returned.
    pub hosts: Vec<Host>,
    /// Network knobs; may be changed between steps.
    pub net: Net,
    /// Network counters.
    pub counters: Counters,
    /// Steps taken (each delivers one item or fires the due timeouts).
    pub steps: u64,
    /// Check `Engine::within_caps` for every engine after every step.
    pub check_caps: bool,
    /// Record every network input in `log`.
    pub record: bool,
    /// The recorded inputs.
    pub log: Vec<Rec>,
    /// Drain transmits with `poll_dirty` + `poll_transmit_for` instead of `poll_transmit`.
    pub per_pipe_drain: bool,
    rng: Rng,
    base: Instant,
    now: Instant,
    queue: BTreeMap<(Instant, u64), Delivery>,
    qseq: u64,
    udp: HashMap<SocketAddr, (usize, PipeId)>,
    tcp: HashMap<(usize, PipeId), (usize, usize)>,
    listeners: HashMap<(usize, PipeId), SocketAddr>,
    conns: Vec<Conn>,
    /// Per host: the world's handle on each external link target.
    tokens: HashMap<(usize, TargetToken), PipeId>,
}

/// A fresh base instant for a world or a test (tests may read the clock; the core may not).
#[allow(clippy::disallowed_methods)]
pub fn base_instant() -> Instant {
    Instant::now()
}

impl World {
    /// An empty world with a seeded network.
    pub fn new(seed: u64, net: Net) -> Self {
        let now = base_instant();
        Self {
            hosts: Vec::new(),
            net,
            counters: Counters::default(),
            steps: 0,
            check_caps: true,
            record: false,
            log: Vec::new(),
            per_pipe_drain: false,
            rng: Rng::new(seed),
            base: now,
            now,
            queue: BTreeMap::new(),
            qseq: 0,
            udp: HashMap::new(),
            tcp: HashMap::new(),
            listeners: HashMap::new(),
            conns: Vec::new(),
            tokens: HashMap::new(),
        }
    }

    /// Add a host; its engine is seeded from the world's RNG.
    pub fn add_host(&mut self) -> usize {
        let seed = self.rng.next_u64();
        self.hosts.push(Host {
            engine: Engine::new(seed),
            events: Vec::new(),
            pipes: Vec::new(),
            app: None,
            draining: None,
        });
        self.hosts.len() - 1
    }

    /// The virtual clock.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// A host's engine.
    pub fn engine(&self, h: usize) -> &Engine {
        &self.hosts[h].engine
    }

    /// A host's engine, to call commands directly (use [`World::now`] as the time).
    pub fn engine_mut(&mut self, h: usize) -> &mut Engine {
        &mut self.hosts[h].engine
    }

    /// A host's recorded events.
    pub fn events(&self, h: usize) -> &[(Instant, Event)] {
        &self.hosts[h].events
    }

    /// Run `app` for every event of host `h` from now on.
    pub fn set_app(&mut self, h: usize, app: App) {
        self.hosts[h].app = Some(app);
    }

    /// The world's random generator (for tests that pick things at random).
    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    // ---- opening --------------------------------------------------------------------

    /// Open a UDP pipe bound to `local` (datagrams to `local` reach it).
    pub fn open_udp(
        &mut self,
        h: usize,
        local: SocketAddr,
        dest: Option<SocketAddr>,
        conf: Conf,
        callbacks: bool,
    ) -> PipeId {
        let now = self.now;
        let id = self.hosts[h]
            .engine
            .open_udp(now, local, dest, conf, callbacks)
            .expect("open_udp");
        let old = self.udp.insert(local, (h, id));
        assert!(old.is_none(), "{local} bound twice");
        self.hosts[h].pipes.push(id);
        id
    }

    /// Open two UDP pipes on hosts `a` and `b`, each with the other as destination.
    pub fn udp_pair(
        &mut self,
        a: usize,
        a_addr: SocketAddr,
        b: usize,
        b_addr: SocketAddr,
        conf: Conf,
    ) -> (PipeId, PipeId) {
        let pa = self.open_udp(a, a_addr, Some(b_addr), conf.clone(), false);
        let pb = self.open_udp(b, b_addr, Some(a_addr), conf, false);
        (pa, pb)
    }

    /// Open a TCP listener on `local`.
    pub fn listen(&mut self, h: usize, local: SocketAddr, conf: Conf, callbacks: bool) -> PipeId {
        let now = self.now;
        let id = self.hosts[h]
            .engine
            .open_listener(now, local, conf, callbacks)
            .expect("open_listener");
        self.hosts[h].pipes.push(id);
        self.listeners.insert((h, id), local);
        id
    }

    /// Connect a TCP client on host `c` (bound to `client_local`) to `listener` on host `s`:
    /// `open_tcp` on the client, `handle_accepted` on the server. When the server refuses the
    /// connection, the client pipe is reset and the error returned.
    pub fn connect(
        &mut self,
        c: usize,
        client_local: SocketAddr,
        s: usize,
        listener: PipeId,
        conf: Conf,
    ) -> Result<(PipeId, PipeId), (PipeId, AcceptError)> {
        let now = self.now;
        let server_addr = self.listeners[&(s, listener)];
        let client = self.hosts[c]
            .engine
            .open_tcp(now, client_local, server_addr, conf, false)
            .expect("open_tcp");
        self.hosts[c].pipes.push(client);
        match self.hosts[s]
            .engine
            .handle_accepted(now, listener, server_addr, client_local)
        {
            Ok(conn) => {
                self.hosts[s].pipes.push(conn);
                let idx = self.conns.len();
                self.conns.push(Conn {
                    ends: [(c, client, client_local), (s, conn, server_addr)],
                    dirs: [Dir::default(), Dir::default()],
                });
                self.tcp.insert((c, client), (idx, 0));
                self.tcp.insert((s, conn), (idx, 1));
                Ok((client, conn))
            }
            Err(e) => {
                self.hosts[c].engine.handle_peer_closed(now, client, true);
                Err((client, e))
            }
        }
    }

    /// Link `from` to `to` (both of host `h`) as pipes of two engines would be linked: through
    /// `LinkTarget::External`, the world playing the driver that sends each `Event::Forward`
    /// through the target and reports the result.
    pub fn link_external(
        &mut self,
        h: usize,
        from: PipeId,
        to: PipeId,
    ) -> Result<LinkId, LinkError> {
        let e = &mut self.hosts[h].engine;
        let target = LinkTarget::External {
            kind: e.kind(to).unwrap_or(Kind::Udp),
            open: e.state(to) == Some(State::Open),
        };
        let link = e.link(from, target, None, None)?;
        let token = e
            .link_token(from, link)
            .expect("an external link has a token");
        self.tokens.insert((h, token), to);
        Ok(link)
    }

    // ---- commands at the world's time ----------------------------------------------

    /// `Engine::send` at the world's time.
    pub fn send(
        &mut self,
        h: usize,
        pipe: PipeId,
        data: &[u8],
        dest: Option<SocketAddr>,
    ) -> Result<(), SendError> {
        let now = self.now;
        self.hosts[h].engine.send(now, pipe, data, dest)
    }

    /// `Engine::send_reliable` at the world's time.
    pub fn send_reliable(
        &mut self,
        h: usize,
        pipe: PipeId,
        data: &[u8],
        dest: Option<SocketAddr>,
    ) -> Result<MessageId, SendError> {
        let now = self.now;
        self.hosts[h].engine.send_reliable(now, pipe, data, dest)
    }

    /// `Engine::close` at the world's time (a TCP peer sees a FIN after the queued bytes).
    pub fn close(&mut self, h: usize, pipe: PipeId) {
        let now = self.now;
        self.hosts[h].engine.close(now, pipe);
    }

    /// Abort a TCP pipe: close it locally and reset the peer (queued bytes are discarded).
    pub fn reset(&mut self, h: usize, pipe: PipeId) {
        if let Some(&(c, side)) = self.tcp.get(&(h, pipe)) {
            let d = &mut self.conns[c].dirs[side];
            d.bytes.clear();
            d.rst = true;
            self.schedule_stream(c, side, self.now);
        }
        self.close(h, pipe);
    }

    /// Hand a datagram to a pipe now, bypassing the network.
    pub fn inject_datagram(&mut self, h: usize, pipe: PipeId, from: SocketAddr, data: &[u8]) {
        let now = self.now;
        self.input_datagram(now, h, pipe, from, Bytes::copy_from_slice(data));
    }

    /// Hand stream bytes to a TCP pipe now, bypassing the network.
    pub fn inject_stream(&mut self, h: usize, pipe: PipeId, data: &[u8]) {
        let now = self.now;
        let from = self.hosts[h]
            .engine
            .dest(pipe)
            .unwrap_or_else(|| "0.0.0.0:9".parse().unwrap());
        self.input_stream(now, h, pipe, from, Bytes::copy_from_slice(data));
    }

    /// Lose the earliest datagram in flight. False if none.
    pub fn drop_next_datagram(&mut self) -> bool {
        let key = self
            .queue
            .iter()
            .find(|(_, d)| matches!(d, Delivery::Datagram { .. }))
            .map(|(k, _)| *k);
        let Some(key) = key else { return false };
        self.queue.remove(&key);
        self.counters.lost += 1;
        true
    }

    /// Deliver a random datagram in flight once more, a little later. False if none.
    pub fn dup_random_datagram(&mut self) -> bool {
        let grams: Vec<_> = self
            .queue
            .iter()
            .filter_map(|(k, d)| match d {
                Delivery::Datagram {
                    host,
                    pipe,
                    from,
                    data,
                } => Some((*k, *host, *pipe, *from, data.clone())),
                Delivery::Stream { .. } => None,
            })
            .collect();
        if grams.is_empty() {
            return false;
        }
        let (k, host, pipe, from, data) =
            grams[self.rng.below(grams.len() as u64) as usize].clone();
        let at = k.0 + Duration::from_micros(self.rng.below(1000));
        self.push(
            at,
            Delivery::Datagram {
                host,
                pipe,
                from,
                data,
            },
        );
        self.counters.duplicated += 1;
        true
    }

    /// Datagrams and stream deliveries in flight.
    pub fn in_flight(&self) -> usize {
        self.queue.len()
    }

    // ---- running --------------------------------------------------------------------

    /// Drain every engine's output (transmits into the network, events to the recorder, the
    /// forwarder and the apps) until no engine has any left.
    pub fn flush(&mut self) {
        loop {
            let mut busy = false;
            for h in 0..self.hosts.len() {
                while let Some(t) = self.next_transmit(h) {
                    busy = true;
                    self.route(h, t);
                }
                while let Some(e) = self.hosts[h].engine.poll_event() {
                    busy = true;
                    if let Event::Reliable { pipe, id, .. } = &e {
                        // The world keeps the event log; the outcome slot is freed as a
                        // driver's waiter would free it.
                        self.hosts[h].engine.take_outcome(*pipe, *id);
                    }
                    self.on_event(h, e);
                }
            }
            if !busy {
                break;
            }
        }
    }

    /// When the next thing happens: a delivery or an engine timeout.
    pub fn next_time(&self) -> Option<Instant> {
        let net = self.queue.keys().next().map(|k| k.0);
        let timer = self
            .hosts
            .iter()
            .filter_map(|h| h.engine.poll_timeout())
            .min();
        match (net, timer) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// One step: flush, advance the clock to the next delivery or timeout, and handle it
    /// (one delivery, or every due timeout). False when the world is idle.
    pub fn step(&mut self) -> bool {
        self.flush();
        let net = self.queue.keys().next().map(|k| k.0);
        let timer = self
            .hosts
            .iter()
            .filter_map(|h| h.engine.poll_timeout())
            .min();
        let next = match (net, timer) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) => a,
            (None, Some(b)) => b,
            (None, None) => return false,
        };
        if next > self.now {
            self.now = next;
        }
        let now = self.now;
        self.steps += 1;
        if net.is_some_and(|n| n <= now && timer.is_none_or(|t| n <= t)) {
            let (_, d) = self.queue.pop_first().expect("a delivery is due");
            self.deliver(d);
            self.flush();
        } else {
            for h in 0..self.hosts.len() {
                if self.hosts[h]
                    .engine
                    .poll_timeout()
                    .is_some_and(|t| t <= now)
                {
                    self.hosts[h].engine.handle_timeout(now);
                }
            }
            self.flush();
            for (h, host) in self.hosts.iter().enumerate() {
                if let Some(t) = host.engine.poll_timeout() {
                    assert!(
                        t > now,
                        "host {h}: poll_timeout stuck at +{:?} after handle_timeout",
                        t - self.base
                    );
                }
            }
        }
        if self.check_caps {
            self.assert_caps();
        }
        true
    }

    /// Step until idle or `max_steps` steps; true if the world went idle.
    pub fn run_until_idle(&mut self, max_steps: u64) -> bool {
        for _ in 0..max_steps {
            if !self.step() {
                return true;
            }
        }
        self.flush();
        self.next_time().is_none()
    }

    /// Step through everything due up to `now + d` (at most `max_steps` steps), then set the
    /// clock to `now + d`. True if it got there within the step bound.
    pub fn advance(&mut self, d: Duration, max_steps: u64) -> bool {
        let until = self.now + d;
        for _ in 0..max_steps {
            self.flush();
            match self.next_time() {
                Some(t) if t <= until => {
                    self.step();
                }
                _ => {
                    self.now = self.now.max(until);
                    return true;
                }
            }
        }
        false
    }

    /// Panic unless every engine is within its caps.
    pub fn assert_caps(&self) {
        for (h, host) in self.hosts.iter().enumerate() {
            assert!(
                host.engine.within_caps(),
                "host {h}: engine over a cap after step {}",
                self.steps
            );
        }
    }

    /// Virtual time elapsed since the world was made.
    pub fn elapsed(&self) -> Duration {
        self.now - self.base
    }

    // ---- internals ------------------------------------------------------------------

    fn next_transmit(&mut self, h: usize) -> Option<Transmit> {
        if !self.per_pipe_drain {
            return self.hosts[h].engine.poll_transmit();
        }
        // A driver with one writer per socket: `poll_dirty` names a pipe, `poll_transmit_for`
        // drains it.
        let host = &mut self.hosts[h];
        loop {
            if let Some(p) = host.draining {
                if let Some(t) = host.engine.poll_transmit_for(p) {
                    return Some(t);
                }
            }
            host.draining = Some(host.engine.poll_dirty()?);
        }
    }

    fn push(&mut self, at: Instant, d: Delivery) {
        self.qseq += 1;
        self.queue.insert((at, self.qseq), d);
    }

    fn route(&mut self, h: usize, t: Transmit) {
        match t.proto {
            Proto::Udp => {
                self.counters.datagrams_sent += 1;
                if self.rng.chance(self.net.loss) {
                    self.counters.lost += 1;
                    return;
                }
                let Some(&(host, pipe)) = self.udp.get(&t.dst) else {
                    self.counters.unroutable += 1;
                    return;
                };
                let copies = if self.rng.chance(self.net.dup) { 2 } else { 1 };
                self.counters.duplicated += copies - 1;
                for _ in 0..copies {
                    let jitter = self.jitter();
                    let at = self.now + self.net.delay + jitter;
                    self.push(
                        at,
                        Delivery::Datagram {
                            host,
                            pipe,
                            from: t.src,
                            data: t.payload.clone(),
                        },
                    );
                }
            }
            Proto::Tcp => {
                self.counters.segments_sent += 1;
                let Some(&(c, side)) = self.tcp.get(&(h, t.pipe)) else {
                    self.counters.unroutable += 1;
                    return;
                };
                let d = &mut self.conns[c].dirs[side];
                if d.rst || d.fin {
                    self.counters.unroutable += 1;
                    return;
                }
                d.bytes.extend(t.payload.iter());
                let at = self.now + self.net.delay;
                self.schedule_stream(c, side, at);
            }
        }
    }

    fn jitter(&mut self) -> Duration {
        let j = self.net.jitter.as_nanos() as u64;
        if j == 0 {
            Duration::ZERO
        } else {
            Duration::from_nanos(self.rng.below(j))
        }
    }

    fn schedule_stream(&mut self, c: usize, dir: usize, at: Instant) {
        let d = &mut self.conns[c].dirs[dir];
        if d.scheduled || d.closed {
            return;
        }
        d.scheduled = true;
        self.push(at, Delivery::Stream { conn: c, dir });
    }

    fn on_event(&mut self, h: usize, e: Event) {
        let now = self.now;
        match &e {
            Event::Forward {
                from,
                link,
                target,
                dest,
                data,
            } => {
                let res = match self.tokens.get(&(h, *target)).copied() {
                    Some(tp) => self.hosts[h].engine.send(now, tp, data, *dest),
                    None => Err(SendError::Closed),
                };
                match res {
                    Ok(()) => self.counters.forwards += 1,
                    Err(_) => self.counters.forward_errors += 1,
                }
                self.hosts[h]
                    .engine
                    .handle_forward_result(*from, *link, res);
            }
            Event::Unlinked { target, .. } => {
                self.tokens.remove(&(h, *target));
            }
            Event::End { pipe, .. } => {
                if let Some(&(c, side)) = self.tcp.get(&(h, *pipe)) {
                    let d = &mut self.conns[c].dirs[side];
                    if !d.fin && !d.rst {
                        d.fin = true;
                        let at = now + self.net.delay;
                        self.schedule_stream(c, side, at);
                    }
                } else if let Some(local) = self.hosts[h].engine.local_addr(*pipe) {
                    if self.udp.get(&local) == Some(&(h, *pipe)) {
                        self.udp.remove(&local);
                    }
                } else {
                    self.udp.retain(|_, v| *v != (h, *pipe));
                }
            }
            _ => {}
        }
        self.hosts[h].events.push((now, e.clone()));
        if let Some(mut app) = self.hosts[h].app.take() {
            app(&mut self.hosts[h].engine, now, &e);
            self.hosts[h].app = Some(app);
        }
    }

    fn deliver(&mut self, d: Delivery) {
        let now = self.now;
        match d {
            Delivery::Datagram {
                host,
                pipe,
                from,
                data,
            } => {
                self.counters.datagrams_delivered += 1;
                self.input_datagram(now, host, pipe, from, data);
            }
            Delivery::Stream { conn, dir } => {
                let (to_host, to_pipe, _) = self.conns[conn].ends[1 - dir];
                let from = self.conns[conn].ends[dir].2;
                let max_chunk = self.net.max_chunk.max(1);
                let d = &mut self.conns[conn].dirs[dir];
                d.scheduled = false;
                if d.closed {
                    return;
                }
                if d.rst {
                    d.closed = true;
                    d.bytes.clear();
                    self.hosts[to_host]
                        .engine
                        .handle_peer_closed(now, to_pipe, true);
                    return;
                }
                if !d.bytes.is_empty() {
                    let most = d.bytes.len().min(max_chunk) as u64;
                    let n = 1 + self.rng.below(most) as usize;
                    let d = &mut self.conns[conn].dirs[dir];
                    let chunk: Vec<u8> = d.bytes.drain(..n).collect();
                    let more = !d.bytes.is_empty() || d.fin;
                    self.counters.chunks_delivered += 1;
                    self.input_stream(now, to_host, to_pipe, from, Bytes::from(chunk));
                    if more {
                        self.schedule_stream(conn, dir, now);
                    }
                } else if d.fin {
                    d.closed = true;
                    self.hosts[to_host]
                        .engine
                        .handle_peer_closed(now, to_pipe, false);
                }
            }
        }
    }

    fn input_datagram(
        &mut self,
        now: Instant,
        h: usize,
        pipe: PipeId,
        from: SocketAddr,
        data: Bytes,
    ) {
        let before = self.hosts[h].engine.stats(pipe);
        self.hosts[h].engine.handle_datagram(now, pipe, from, &data);
        self.note(now, h, pipe, from, data, true, before);
    }

    fn input_stream(
        &mut self,
        now: Instant,
        h: usize,
        pipe: PipeId,
        from: SocketAddr,
        data: Bytes,
    ) {
        let before = self.hosts[h].engine.stats(pipe);
        self.hosts[h].engine.handle_stream(now, pipe, &data);
        self.note(now, h, pipe, from, data, false, before);
    }

    #[allow(clippy::too_many_arguments)]
    fn note(
        &mut self,
        at: Instant,
        host: usize,
        pipe: PipeId,
        from: SocketAddr,
        data: Bytes,
        datagram: bool,
        before: Option<pipe_core::Stats>,
    ) {
        if !self.record {
            return;
        }
        let after = self.hosts[host].engine.stats(pipe);
        let (received, duplicates) = match (before, after) {
            (Some(b), Some(a)) => (a.received - b.received, a.duplicates - b.duplicates),
            _ => (0, 0),
        };
        self.log.push(Rec {
            at,
            host,
            pipe,
            from,
            data,
            datagram,
            received,
            duplicates,
        });
    }
}

/// Parse a socket address (test shorthand).
pub fn sa(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

/// The payloads of the `Event::Message` events of `pipe` recorded on host `h`.
pub fn message_events(w: &World, h: usize, pipe: PipeId) -> Vec<Bytes> {
    w.events(h)
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Message { pipe: p, msg } if *p == pipe => Some(msg.data.clone()),
            _ => None,
        })
        .collect()
}

/// Drain a subscription of `pipe` on host `h`, returning the payloads.
pub fn drain(w: &mut World, h: usize, pipe: PipeId, sub: pipe_core::SubId) -> Vec<Bytes> {
    let mut out = Vec::new();
    while let Ok(Some(m)) = w.engine_mut(h).recv(pipe, sub) {
        out.push(m.data);
    }
    out
}
