//! Property tests over random operation sequences on a three-host world (noq's
//! `random_interaction`): open/close pipes, send, send_reliable, subscribe/unsubscribe, recv,
//! link/unlink, inject random datagrams and stream chunks, advance time, drop and duplicate
//! datagrams, change the loss rate. After every step:
//! - no panic; every engine `within_caps` and `poll_timeout` advances (checked by the world);
//! - dedup is exact inside its window: a 4-entry LRU model predicts every drop of the model pipe;
//! - no pipe with dedup on delivers one (sender, payload) twice;
//! - no reliable send ends twice, and no pipe is up or ends twice;
//! - every operation's result is the one a small model predicts: `send` is `Closed` once the
//!   pipe ended, `WrongKind` on the listener, `NoDestination` on the pipe without one, else
//!   `Ok`; `send_reliable` is `Closed`, `TooManyOutstanding(n)` with the model's count, or an
//!   id not outstanding; `subscribe` is `WrongKind` / `Closed` / `Ok`; `link` is `SelfLink`,
//!   `WrongKind` to the listener, `Closed` when either end ended, else `Ok`;
//! - an `Acked` reliable send was delivered, byte for byte and from the sender's address, by
//!   the peer host's engine before the ACK came back;
//! - time advances: `Advance` moves the clock by a non-zero duration (everything due on the
//!   way is handled step by step), TCP pipes have an idle deadline, and a pipe that ends with
//!   `IdleTimeout` received no byte during the `idle_timeout` before its end.
//!
//! After the operations: the world goes idle within 10,000 steps and every reliable send has
//! ended Acked or Unconfirmed. The property counts the cases in which an `Acked` send was
//! checked against the peer's deliveries and an idle end was checked, prints the counts and
//! asserts they are a large fraction of the cases.

mod world;

use std::cell::Cell;
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use pipe_core::{
    Conf, DedupKey, EndReason, Event, Filter, Framing, LinkError, LinkId, LinkTarget, MessageId,
    Outcome, PipeId, SendError, State, SubId, SubscribeError,
};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use world::{Net, World};

const H: usize = 3;
const ATTACKER: &str = "10.66.0.1:666";
/// The TCP pipes' idle deadline.
const IDLE: Duration = Duration::from_millis(900);

fn addr(h: usize, port: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, h as u8 + 1], port))
}

#[derive(Debug, Clone)]
enum Op {
    /// Plain send on a pipe of host `h` (`sel` picks it) with a unique payload.
    Send {
        h: usize,
        sel: usize,
        len: usize,
    },
    /// Reliable send on host `h`'s reliable pipe.
    SendReliable {
        h: usize,
        len: usize,
    },
    /// A payload from a 6-symbol alphabet to the dedup-model pipe, through the network or injected.
    SendModel {
        src: u8,
        sym: u8,
    },
    Subscribe {
        h: usize,
        sel: usize,
        filter: u8,
    },
    Unsubscribe {
        h: usize,
        sel: usize,
        idx: usize,
    },
    Recv {
        h: usize,
        sel: usize,
        idx: usize,
    },
    Link {
        h: usize,
        from: usize,
        to: usize,
        external: bool,
    },
    Unlink {
        h: usize,
        sel: usize,
        idx: usize,
    },
    Close {
        h: usize,
        sel: usize,
    },
    Reopen {
        h: usize,
        slot: usize,
    },
    Connect,
    Reset {
        idx: usize,
        client: bool,
    },
    InjectDatagram {
        h: usize,
        sel: usize,
        peer: bool,
        bytes: Vec<u8>,
    },
    InjectStream {
        idx: usize,
        client: bool,
        bytes: Vec<u8>,
    },
    Advance {
        ms: u16,
    },
    Drop,
    Dup,
    Loss {
        percent: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let h = 0..H;
    let sel = 0..8usize;
    prop_oneof![
        12 => (h.clone(), sel.clone(), 0..40usize).prop_map(|(h, sel, len)| Op::Send { h, sel, len }),
        10 => (h.clone(), 0..40usize).prop_map(|(h, len)| Op::SendReliable { h, len }),
        12 => (0..4u8, 0..6u8).prop_map(|(src, sym)| Op::SendModel { src, sym }),
        3 => (h.clone(), sel.clone(), 0..8u8).prop_map(|(h, sel, filter)| Op::Subscribe { h, sel, filter }),
        2 => (h.clone(), sel.clone(), 0..4usize).prop_map(|(h, sel, idx)| Op::Unsubscribe { h, sel, idx }),
        3 => (h.clone(), sel.clone(), 0..4usize).prop_map(|(h, sel, idx)| Op::Recv { h, sel, idx }),
        4 => (h.clone(), sel.clone(), sel.clone(), any::<bool>()).prop_map(|(h, from, to, external)| Op::Link { h, from, to, external }),
        1 => (h.clone(), sel.clone(), 0..4usize).prop_map(|(h, sel, idx)| Op::Unlink { h, sel, idx }),
        1 => (h.clone(), sel.clone()).prop_map(|(h, sel)| Op::Close { h, sel }),
        2 => (h.clone(), 0..4usize).prop_map(|(h, slot)| Op::Reopen { h, slot }),
        2 => Just(Op::Connect),
        1 => (0..4usize, any::<bool>()).prop_map(|(idx, client)| Op::Reset { idx, client }),
        3 => (h.clone(), sel.clone(), any::<bool>(), prop::collection::vec(any::<u8>(), 0..32))
            .prop_map(|(h, sel, peer, bytes)| Op::InjectDatagram { h, sel, peer, bytes }),
        2 => (0..4usize, any::<bool>(), prop::collection::vec(any::<u8>(), 0..24))
            .prop_map(|(idx, client, bytes)| Op::InjectStream { idx, client, bytes }),
        10 => (1..400u16).prop_map(|ms| Op::Advance { ms }),
        2 => Just(Op::Drop),
        2 => Just(Op::Dup),
        1 => (0..=30u8).prop_map(|percent| Op::Loss { percent }),
    ]
}

#[derive(Debug, Clone)]
struct Setup {
    seed: u64,
    send_retry: u32,
    model_key: DedupKey,
    per_pipe_drain: bool,
    delay_ms: u64,
    jitter_ms: u64,
    max_chunk: usize,
    loss_percent: u8,
    dup_percent: u8,
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        any::<u64>(),
        0..=7u32,
        any::<bool>(),
        any::<bool>(),
        0..20u64,
        0..80u64,
        1..64usize,
        0..=30u8,
        0..=10u8,
    )
        .prop_map(
            |(
                seed,
                send_retry,
                ip_port,
                per_pipe_drain,
                delay_ms,
                jitter_ms,
                max_chunk,
                loss_percent,
                dup_percent,
            )| Setup {
                seed,
                send_retry,
                model_key: if ip_port {
                    DedupKey::IpPort
                } else {
                    DedupKey::Ip
                },
                per_pipe_drain,
                delay_ms,
                jitter_ms,
                max_chunk,
                loss_percent,
                dup_percent,
            },
        )
}

/// The dedup window as a plain LRU list, to check the engine's against.
struct LruModel {
    cap: usize,
    key: DedupKey,
    keys: VecDeque<(IpAddr, u16, Bytes)>,
}

impl LruModel {
    fn check(&mut self, from: SocketAddr, data: &Bytes) -> bool {
        let port = if self.key == DedupKey::IpPort {
            from.port()
        } else {
            0
        };
        let k = (from.ip().to_canonical(), port, data.clone());
        if let Some(i) = self.keys.iter().position(|x| *x == k) {
            let k = self.keys.remove(i).unwrap();
            self.keys.push_back(k);
            return false;
        }
        self.keys.push_back(k);
        if self.keys.len() > self.cap {
            self.keys.pop_front();
        }
        true
    }
}

/// One TCP connection host 0 → host 1.
struct Tcp {
    client: PipeId,
    conn: Option<PipeId>,
}

struct Sim {
    w: World,
    /// Per host, the UDP slots: 0 = ring pipe `u` (dedup), 1 = reliable ring pipe `r` (dedup),
    /// 2 = host 0: the dedup-model pipe `m`; hosts 1, 2: the feeder `x` of `m` (no dedup).
    slots: Vec<Vec<PipeId>>,
    listener: PipeId,
    tcp: Vec<Tcp>,
    subs: HashMap<(usize, PipeId), Vec<SubId>>,
    links: HashMap<(usize, PipeId), Vec<LinkId>>,
    model_pipe: PipeId,
    model: LruModel,
    log_seen: usize,
    ev_seen: Vec<usize>,
    delivered: HashSet<(usize, PipeId, IpAddr, Bytes)>,
    reliable_sent: HashSet<(usize, MessageId)>,
    reliable_done: HashSet<(usize, MessageId)>,
    /// Per (host, pipe): reliable sends without an outcome, with their payloads.
    outstanding: HashMap<(usize, PipeId), HashMap<MessageId, Bytes>>,
    /// Every message event: (host, pipe, sender, payload).
    messages: HashSet<(usize, SocketAddr, Bytes)>,
    acked_checked: u64,
    idle_checked: u64,
    /// Per TCP pipe: its `bytes_in` and when it last grew.
    last_input: HashMap<(usize, PipeId), (u64, std::time::Instant)>,
    start: std::time::Instant,
    ups: HashSet<(usize, PipeId)>,
    ended: HashSet<(usize, PipeId)>,
    counter: u64,
    conf_u: Conf,
    conf_r: Conf,
    conf_tcp: Conf,
}

impl Sim {
    fn new(s: &Setup) -> Self {
        let net = Net {
            loss: f64::from(s.loss_percent) / 100.0,
            dup: f64::from(s.dup_percent) / 100.0,
            delay: Duration::from_millis(s.delay_ms),
            jitter: Duration::from_millis(s.jitter_ms),
            max_chunk: s.max_chunk,
        };
        let mut w = World::new(s.seed, net);
        let now0 = w.now();
        w.record = true;
        w.per_pipe_drain = s.per_pipe_drain;
        let conf_u = Conf {
            enable_msg_ids: true,
            max_qsize: 16,
            ..Conf::default()
        };
        let conf_r = Conf {
            reliable_udp: true,
            send_retry: s.send_retry,
            retry_interval: Duration::from_millis(50),
            max_reliable_outstanding: 8,
            ..conf_u.clone()
        };
        let conf_m = Conf {
            max_msg_ids: 4,
            dedup_key: s.model_key,
            ..conf_u.clone()
        };
        let conf_tcp = Conf {
            framing: Framing::LengthPrefixed { max: 64 },
            idle_timeout: Some(IDLE),
            max_connections: 3,
            accept_backlog: 2,
            ..conf_u.clone()
        };
        let mut slots = Vec::new();
        for h in 0..H {
            w.add_host();
            let next = (h + 1) % H;
            let u = w.open_udp(
                h,
                addr(h, 1000),
                Some(addr(next, 1000)),
                conf_u.clone(),
                true,
            );
            let r = w.open_udp(
                h,
                addr(h, 3000),
                Some(addr(next, 3000)),
                conf_r.clone(),
                true,
            );
            let third = if h == 0 {
                w.open_udp(0, addr(0, 4000), None, conf_m.clone(), true)
            } else {
                w.open_udp(h, addr(h, 5000), Some(addr(0, 4000)), Conf::default(), true)
            };
            slots.push(vec![u, r, third]);
        }
        let listener = w.listen(1, addr(1, 80), conf_tcp.clone(), true);
        let model_pipe = slots[0][2];
        let mut sim = Sim {
            w,
            slots,
            listener,
            tcp: Vec::new(),
            subs: HashMap::new(),
            links: HashMap::new(),
            model_pipe,
            model: LruModel {
                cap: 4,
                key: s.model_key,
                keys: VecDeque::new(),
            },
            log_seen: 0,
            ev_seen: vec![0; H],
            delivered: HashSet::new(),
            reliable_sent: HashSet::new(),
            reliable_done: HashSet::new(),
            outstanding: HashMap::new(),
            messages: HashSet::new(),
            acked_checked: 0,
            idle_checked: 0,
            last_input: HashMap::new(),
            start: now0,
            ups: HashSet::new(),
            ended: HashSet::new(),
            counter: 0,
            conf_u,
            conf_r,
            conf_tcp,
        };
        for h in 0..H {
            for p in sim.slots[h].clone() {
                sim.w.engine_mut(h).subscribe(p, Filter::all()).unwrap();
            }
        }
        sim
    }

    /// Every pipe of host `h` the ops can pick: the UDP slots, then TCP pipes on that host.
    fn pipes(&self, h: usize) -> Vec<PipeId> {
        let mut v = self.slots[h].clone();
        match h {
            0 => v.extend(self.tcp.iter().map(|t| t.client)),
            1 => {
                v.push(self.listener);
                v.extend(self.tcp.iter().filter_map(|t| t.conn));
            }
            _ => {}
        }
        v
    }

    fn pick(&self, h: usize, sel: usize) -> PipeId {
        let v = self.pipes(h);
        v[sel % v.len()]
    }

    /// Whether the model saw the pipe end.
    fn ended(&self, h: usize, p: PipeId) -> bool {
        self.ended.contains(&(h, p))
    }

    fn payload(&mut self, tag: u8, len: usize) -> Vec<u8> {
        self.counter += 1;
        let mut v = format!("{}{}|", tag as char, self.counter).into_bytes();
        v.resize(v.len().max(len), b'.');
        v
    }

    fn apply(&mut self, op: &Op) {
        let now = self.w.now();
        match op.clone() {
            Op::Send { h, sel, len } => {
                let p = self.pick(h, sel);
                let data = self.payload(b'U', len);
                let got = self.w.send(h, p, &data, None);
                let want = if self.ended(h, p) {
                    Err(SendError::Closed)
                } else if h == 1 && p == self.listener {
                    Err(SendError::WrongKind("TCP listener"))
                } else if h == 0 && p == self.model_pipe {
                    Err(SendError::NoDestination)
                } else {
                    Ok(())
                };
                assert_eq!(got, want, "send on {p} of host {h}");
            }
            Op::SendReliable { h, len } => {
                let r = self.slots[h][1];
                let data = self.payload(b'R', len);
                let got = self.w.send_reliable(h, r, &data, None);
                let waiting = self.outstanding.get(&(h, r)).map_or(0, |o| o.len());
                if self.ended(h, r) {
                    assert_eq!(got, Err(SendError::Closed));
                } else if waiting >= self.conf_r.max_reliable_outstanding {
                    assert_eq!(got, Err(SendError::TooManyOutstanding(waiting)));
                } else {
                    let id = got.expect("the model predicts the reliable send is taken");
                    assert!(
                        self.reliable_sent.insert((h, id)),
                        "a MessageId reused while outstanding"
                    );
                    self.outstanding
                        .entry((h, r))
                        .or_default()
                        .insert(id, Bytes::from(data));
                }
            }
            Op::SendModel { src, sym } => {
                let data = [b'a' + sym];
                match src {
                    0 | 1 => {
                        let h = 1 + src as usize;
                        let x = self.slots[h][2];
                        let _ = self.w.send(h, x, &data, None);
                    }
                    2 => self
                        .w
                        .inject_datagram(0, self.model_pipe, addr(1, 5001), &data),
                    _ => self.w.inject_datagram(
                        0,
                        self.model_pipe,
                        "[::ffff:10.0.0.3]:5000".parse().unwrap(),
                        &data,
                    ),
                }
            }
            Op::Subscribe { h, sel, filter } => {
                let p = self.pick(h, sel);
                let f = match filter {
                    0 => Filter::all(),
                    1 => Filter::pattern("^R").unwrap(),
                    2 => Filter::pattern(r"\d\|").unwrap(),
                    3 => Filter::pattern("^[a-c]$").unwrap(),
                    4 => Filter::from_addr(addr((h + 2) % H, 0)),
                    5 => Filter::from_addr(addr((h + 2) % H, 1000)),
                    6 => Filter::pattern("U").unwrap().with_addr(addr(0, 0)),
                    _ => Filter::from_addr(ATTACKER.parse().unwrap()),
                };
                let known = self.w.engine(h).state(p).is_some();
                let got = self.w.engine_mut(h).subscribe(p, f);
                if h == 1 && p == self.listener && known {
                    assert_eq!(got, Err(SubscribeError::WrongKind("TCP listener")));
                } else if self.ended(h, p) {
                    assert_eq!(got, Err(SubscribeError::Closed));
                } else {
                    let id = got.expect("the model predicts the subscription is made");
                    let subs = self.subs.entry((h, p)).or_default();
                    if !subs.contains(&id) {
                        subs.push(id);
                    }
                }
            }
            Op::Unsubscribe { h, sel, idx } => {
                let p = self.pick(h, sel);
                let subs = self.subs.entry((h, p)).or_default();
                if !subs.is_empty() {
                    let s = subs.remove(idx % subs.len());
                    let _ = self.w.engine_mut(h).unsubscribe(p, s);
                }
            }
            Op::Recv { h, sel, idx } => {
                let p = self.pick(h, sel);
                let subs = self.subs.get(&(h, p)).cloned().unwrap_or_default();
                let s = if subs.is_empty() {
                    SubId::ALL
                } else {
                    subs[idx % subs.len()]
                };
                let _ = self.w.engine_mut(h).recv(p, s);
            }
            Op::Link {
                h,
                from,
                to,
                external,
            } => {
                let (a, b) = (self.pick(h, from), self.pick(h, to));
                let is_listener = |p: PipeId| h == 1 && p == self.listener;
                let want = if a == b && !external {
                    Err(LinkError::SelfLink)
                } else if self.ended(h, b) {
                    Err(LinkError::Closed)
                } else if is_listener(b) {
                    Err(LinkError::WrongKind("TCP listener"))
                } else if self.ended(h, a) {
                    Err(LinkError::Closed)
                } else {
                    Ok(())
                };
                let linked = if external {
                    self.w.link_external(h, a, b)
                } else {
                    self.w
                        .engine_mut(h)
                        .link(a, LinkTarget::Local(b), None, None)
                };
                assert_eq!(
                    linked.as_ref().map(|_| ()),
                    want.as_ref().map(|_| ()),
                    "link {a} -> {b} (external: {external}) on host {h}"
                );
                if let Ok(l) = linked {
                    self.links.entry((h, a)).or_default().push(l);
                }
            }
            Op::Unlink { h, sel, idx } => {
                let p = self.pick(h, sel);
                let links = self.links.entry((h, p)).or_default();
                if !links.is_empty() {
                    let l = links.remove(idx % links.len());
                    let _ = self.w.engine_mut(h).unlink(p, l);
                }
            }
            Op::Close { h, sel } => {
                let p = self.pick(h, sel);
                if p != self.model_pipe {
                    self.w.close(h, p);
                }
            }
            Op::Reopen { h, slot } => {
                self.w.flush();
                if slot < 3 {
                    let old = self.slots[h][slot];
                    if old == self.model_pipe || self.w.engine(h).state(old) == Some(State::Open) {
                        return;
                    }
                    let next = (h + 1) % H;
                    let p = match slot {
                        0 => self.w.open_udp(
                            h,
                            addr(h, 1000),
                            Some(addr(next, 1000)),
                            self.conf_u.clone(),
                            true,
                        ),
                        1 => self.w.open_udp(
                            h,
                            addr(h, 3000),
                            Some(addr(next, 3000)),
                            self.conf_r.clone(),
                            true,
                        ),
                        _ => self.w.open_udp(
                            h,
                            addr(h, 5000),
                            Some(addr(0, 4000)),
                            Conf::default(),
                            true,
                        ),
                    };
                    self.w.engine_mut(h).subscribe(p, Filter::all()).unwrap();
                    self.slots[h][slot] = p;
                } else if self.w.engine(1).state(self.listener) != Some(State::Open) {
                    self.listener = self.w.listen(1, addr(1, 80), self.conf_tcp.clone(), true);
                }
            }
            Op::Connect => {
                if self.tcp.len() >= 8 {
                    return;
                }
                let local = addr(0, 6000 + self.tcp.len() as u16);
                let conf = self.conf_tcp.clone();
                match self.w.connect(0, local, 1, self.listener, conf) {
                    Ok((client, conn)) => {
                        self.w.engine_mut(1).subscribe(conn, Filter::all()).unwrap();
                        self.tcp.push(Tcp {
                            client,
                            conn: Some(conn),
                        });
                    }
                    Err((client, _)) => self.tcp.push(Tcp { client, conn: None }),
                }
            }
            Op::Reset { idx, client } => {
                if self.tcp.is_empty() {
                    return;
                }
                let t = &self.tcp[idx % self.tcp.len()];
                match (client, t.conn) {
                    (true, _) => {
                        let c = t.client;
                        self.w.reset(0, c);
                    }
                    (false, Some(conn)) => self.w.reset(1, conn),
                    (false, None) => {}
                }
            }
            Op::InjectDatagram {
                h,
                sel,
                peer,
                bytes,
            } => {
                let p = self.pick(h, sel);
                let from = if peer {
                    addr((h + 2) % H, 3000)
                } else {
                    ATTACKER.parse().unwrap()
                };
                if p == self.model_pipe {
                    return; // only alphabet payloads reach the model pipe
                }
                self.w.inject_datagram(h, p, from, &bytes);
            }
            Op::InjectStream { idx, client, bytes } => {
                if self.tcp.is_empty() {
                    return;
                }
                let t = &self.tcp[idx % self.tcp.len()];
                match (client, t.conn) {
                    (true, _) => {
                        let c = t.client;
                        self.w.inject_stream(0, c, &bytes);
                    }
                    (false, Some(conn)) => self.w.inject_stream(1, conn, &bytes),
                    (false, None) => {}
                }
            }
            Op::Advance { ms } => {
                let until = now + Duration::from_millis(u64::from(ms));
                for _ in 0..2_000 {
                    self.w.flush();
                    match self.w.next_time() {
                        Some(t) if t <= until => {
                            self.w.step();
                            self.check();
                        }
                        _ => break,
                    }
                }
                // Nothing is due before `until` any more: the clock moves there.
                let left = until.saturating_duration_since(self.w.now());
                if self.w.next_time().is_none_or(|t| t > until) {
                    assert!(self.w.advance(left, 1));
                    assert_eq!(self.w.now(), until);
                }
            }
            Op::Drop => {
                self.w.drop_next_datagram();
            }
            Op::Dup => {
                self.w.dup_random_datagram();
            }
            Op::Loss { percent } => self.w.net.loss = f64::from(percent) / 100.0,
        }
        self.w.flush();
        self.w.assert_caps();
        self.check();
    }

    /// The invariants that must hold after every step.
    fn check(&mut self) {
        // When each TCP pipe last took bytes in (its `bytes_in` grew).
        let now = self.w.now();
        for h in 0..2 {
            for p in self.pipes(h).into_iter().skip(3) {
                let bytes_in = self.w.engine(h).stats(p).map(|s| s.bytes_in);
                let e = self.last_input.entry((h, p)).or_insert((0, now));
                if let Some(b) = bytes_in {
                    if b > e.0 {
                        *e = (b, now);
                    }
                }
            }
        }
        // Dedup exact inside its window, against the LRU model.
        let log = &self.w.log[self.log_seen..];
        for r in log {
            if r.host == 0 && r.pipe == self.model_pipe {
                assert_eq!(
                    r.received, 1,
                    "the model pipe takes every datagram into its pipeline"
                );
                let fresh = self.model.check(r.from, &r.data);
                assert_eq!(
                    r.duplicates == 0,
                    fresh,
                    "dedup disagrees with the LRU model on {:?} from {}",
                    r.data,
                    r.from
                );
            }
        }
        self.log_seen = self.w.log.len();
        for h in 0..H {
            let events = &self.w.events(h)[self.ev_seen[h]..];
            for (at, e) in events {
                match e {
                    Event::Up { pipe } => {
                        assert!(self.ups.insert((h, *pipe)), "Up twice for {pipe}")
                    }
                    Event::End { pipe, reason } => {
                        assert!(self.ended.insert((h, *pipe)), "End twice for {pipe}");
                        if *reason == EndReason::IdleTimeout {
                            // No byte arrived during the idle time before the end.
                            let last = self.last_input.get(&(h, *pipe)).map(|x| x.1);
                            assert!(
                                last.is_some_and(|t| t + IDLE <= *at),
                                "{pipe} idled out at +{:?}, its last input at +{:?}",
                                *at - self.start,
                                last.map(|t| t - self.start)
                            );
                            assert!(self
                                .w
                                .engine(h)
                                .conf(*pipe)
                                .is_none_or(|c| c.idle_timeout == Some(IDLE)));
                            self.idle_checked += 1;
                        }
                    }
                    Event::Reliable { pipe, id, outcome } => {
                        assert!(
                            self.reliable_sent.contains(&(h, *id)),
                            "outcome for an unknown send"
                        );
                        assert!(
                            self.reliable_done.insert((h, *id)),
                            "a reliable send ended twice"
                        );
                        let data = self
                            .outstanding
                            .get_mut(&(h, *pipe))
                            .and_then(|o| o.remove(id))
                            .expect("the outcome of an outstanding send of this pipe");
                        if *outcome == Outcome::Acked {
                            // The peer host's engine delivered it, intact, from this pipe.
                            let next = (h + 1) % H;
                            assert!(
                                self.messages.contains(&(next, addr(h, 3000), data.clone())),
                                "Acked, but host {next} never delivered {data:?}"
                            );
                            self.acked_checked += 1;
                        }
                    }
                    Event::Message { pipe, msg } => {
                        self.messages.insert((h, msg.from, msg.data.clone()));
                        let dedup = self
                            .w
                            .engine(h)
                            .conf(*pipe)
                            .is_some_and(|c| c.enable_msg_ids);
                        if dedup && *pipe != self.model_pipe {
                            let key = (h, *pipe, msg.from.ip().to_canonical(), msg.data.clone());
                            assert!(
                                self.delivered.insert(key),
                                "{pipe} on host {h} delivered {:?} from {} twice",
                                msg.data,
                                msg.from
                            );
                        }
                    }
                    _ => {}
                }
            }
            self.ev_seen[h] = self.w.events(h).len();
        }
    }

    fn finish(&mut self) {
        for _ in 0..10_000 {
            if !self.w.step() {
                break;
            }
            self.check();
        }
        self.w.flush();
        assert_eq!(
            self.w.next_time(),
            None,
            "the world did not go idle within 10,000 steps"
        );
        self.check();
        let open: Vec<_> = self.reliable_sent.difference(&self.reliable_done).collect();
        assert!(open.is_empty(), "reliable sends never ended: {open:?}");
        if std::env::var_os("PROPS_STATS").is_some() {
            let mut st = (0u64, 0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
            for h in 0..H {
                for p in &self.w.hosts[h].pipes {
                    if let Some(s) = self.w.engine(h).stats(*p) {
                        st.0 += s.received;
                        st.1 += s.duplicates;
                        st.2 += s.forwarded;
                        st.3 += s.acked;
                        st.4 += s.unconfirmed;
                        st.5 += s.malformed;
                    }
                }
            }
            st.6 = self
                .w
                .events(0)
                .iter()
                .chain(self.w.events(1))
                .filter(|(_, e)| {
                    matches!(
                        e,
                        Event::End {
                            reason: pipe_core::EndReason::FrameTooLarge { .. },
                            ..
                        }
                    )
                })
                .count() as u64;
            eprintln!(
                "steps {} recv {} dup {} fwd {} acked {} unconf {} malformed {} frametoolarge {} model {} delivered {} tcp {}",
                self.w.steps, st.0, st.1, st.2, st.3, st.4, st.5, st.6,
                self.w.log.iter().filter(|r| r.pipe == self.model_pipe && r.host == 0).count(),
                self.delivered.len(), self.tcp.len()
            );
        }
    }
}

#[test]
fn random_interaction() {
    let (cases, acked, idle) = (Cell::new(0u32), Cell::new(0u32), Cell::new(0u32));
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let strategy = (setup(), prop::collection::vec(op(), 0..100));
    runner
        .run(&strategy, |(s, ops)| {
            let mut sim = Sim::new(&s);
            sim.check();
            for op in &ops {
                sim.apply(op);
            }
            sim.finish();
            cases.set(cases.get() + 1);
            acked.set(acked.get() + u32::from(sim.acked_checked > 0));
            idle.set(idle.get() + u32::from(sim.idle_checked > 0));
            Ok(())
        })
        .unwrap();
    let (cases, acked, idle) = (cases.get(), acked.get(), idle.get());
    eprintln!(
        "random_interaction: {cases} cases; an Acked send checked against the peer's \
         deliveries in {acked}, an idle end checked in {idle}"
    );
    assert!(
        acked * 100 >= cases * 60,
        "only {acked} of {cases} cases checked an Acked send"
    );
    assert!(
        idle * 100 >= cases * 30,
        "only {idle} of {cases} cases checked an idle end"
    );
}

/// A long run of the same machinery with heavier traffic, as a smoke test of the step bound.
#[test]
fn long_random_run_goes_idle() {
    let s = Setup {
        seed: 42,
        send_retry: 7,
        model_key: DedupKey::Ip,
        per_pipe_drain: true,
        delay_ms: 5,
        jitter_ms: 60,
        max_chunk: 3,
        loss_percent: 20,
        dup_percent: 5,
    };
    let mut sim = Sim::new(&s);
    let mut rng = pipe_core::rng::Rng::new(7);
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = op();
    for _ in 0..1_500 {
        let op = strategy.new_tree(&mut runner).unwrap().current();
        if matches!(op, Op::Close { .. }) && rng.below(4) != 0 {
            continue;
        }
        sim.apply(&op);
    }
    sim.finish();
}
