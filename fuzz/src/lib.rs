//! The fuzz harnesses: one function per cargo-fuzz target, each taking the raw input and
//! panicking on a broken property. The targets in `fuzz_targets/` are one line each, and
//! `pipe-core/tests/fuzz_corpus.rs` includes this file as a module and replays every file under
//! `fuzz/seeds/<target>/` through the same function, so the seeds run in every `cargo test`.
//!
//! Only pipe-core's public API is used. No crate-level attributes here: this file is also a
//! module of a pipe-core test.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use arbitrary::{Result, Unstructured};
use bytes::Bytes;
use pipe_core::rudp::{self, Frame, FrameError};
use pipe_core::stun::{decode, Attribute, Message as StunMessage};
use pipe_core::{
    Conf, DedupKey, EndReason, Engine, Event, Filter, Framing, LinkId, LinkTarget, MessageId,
    PipeId, Proto, SubId, TargetToken, Transmit,
};

/// A harness: takes the raw fuzz input, panics on a broken property.
pub type Harness = fn(&[u8]);

/// Every target: its name (the directory under `fuzz/seeds/`) and its harness.
pub const TARGETS: &[(&str, Harness)] = &[
    ("stun_decode", stun_decode),
    ("rudp_decode", rudp_decode),
    ("deframer", deframer),
    ("engine_ops", engine_ops),
];

/// The one reading of the clock: every other instant is an offset from it.
#[allow(clippy::disallowed_methods)]
fn t0() -> Instant {
    Instant::now()
}

fn sa(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

// ---- stun_decode ----------------------------------------------------------------------------

fn without_fingerprint_value(m: &StunMessage) -> StunMessage {
    let mut m = m.clone();
    for a in &mut m.attributes {
        if let Attribute::Fingerprint(v) = a {
            *v = 0;
        }
    }
    m
}

/// Decode arbitrary bytes; whatever decodes must re-encode to a fixed point that decodes to the
/// same attributes (FINGERPRINT is recomputed, so only its value may change). The same property
/// runs under proptest in `pipe-core/tests/stun_vectors.rs` (`roundtrip`): keep them in step.
pub fn stun_decode(data: &[u8]) {
    let _ = StunMessage::verify_integrity(data, b"key");
    let Ok(m1) = decode(data) else { return };
    let b1 = m1.encode();
    let m2 = decode(&b1).expect("re-encoded message must decode");
    let b2 = m2.encode();
    assert_eq!(b1, b2, "encode∘decode is not a fixed point");
    assert_eq!(decode(&b2).as_ref(), Ok(&m2));
    assert_eq!(
        without_fingerprint_value(&m1),
        without_fingerprint_value(&m2)
    );
}

// ---- rudp_decode ----------------------------------------------------------------------------

/// `rudp::decode` on arbitrary bytes: every outcome is the one the wire format says, and what
/// decodes re-encodes to the same bytes. Then the same datagram, twice, into a reliable-UDP
/// pipe: data is acked twice and delivered once, plain data delivered twice, a stray ACK and
/// a malformed datagram counted and dropped; the pipe keeps working either way.
pub fn rudp_decode(data: &[u8]) {
    let decoded = rudp::decode(data);
    match decoded {
        Ok(Frame::Data { seq, payload }) => {
            assert_eq!(&rudp::encode(seq, rudp::FLAG_DATA, payload)[..], data);
        }
        Ok(Frame::Ack { seq }) => assert_eq!(&rudp::encode(seq, rudp::FLAG_ACK, &[])[..], data),
        Ok(Frame::Plain { payload }) => {
            assert_eq!(data[rudp::HEADER - 1], rudp::FLAG_PLAIN);
            assert_eq!(payload, &data[rudp::HEADER..]);
        }
        Err(FrameError::Short) => assert!(data.len() < rudp::HEADER),
        Err(FrameError::AckWithPayload) => {
            assert!(data[rudp::HEADER - 1] == rudp::FLAG_ACK && data.len() > rudp::HEADER);
        }
        Err(FrameError::UnknownFlag(f)) => {
            assert_eq!(data[rudp::HEADER - 1], f);
            assert!(f > rudp::FLAG_PLAIN);
        }
    }

    let now = t0();
    let (me, peer) = (sa("127.0.0.1:1000"), sa("127.0.0.1:2000"));
    let mut e = Engine::new(1);
    let conf = Conf {
        reliable_udp: true,
        reliable_window: 4,
        ..Conf::default()
    };
    let p = e
        .open_udp(now, me, Some(peer), conf, false)
        .expect("open a reliable UDP pipe");
    drain(&mut e);
    for _ in 0..2 {
        e.handle_datagram(now, p, peer, data);
        assert!(e.within_caps());
    }
    let acks: Vec<Transmit> = std::iter::from_fn(|| e.poll_transmit()).collect();
    let msgs: Vec<Bytes> =
        std::iter::from_fn(|| e.recv(p, SubId::ALL).ok().flatten().map(|m| m.data)).collect();
    let stats = e.stats(p).expect("the pipe is open");
    match decoded {
        Ok(Frame::Data { seq, payload }) => {
            assert_eq!(
                msgs,
                vec![Bytes::copy_from_slice(payload)],
                "delivered once"
            );
            assert_eq!(acks.len(), 2, "every copy is acked");
            for a in &acks {
                assert_eq!(a.dst, peer);
                assert_eq!(a.payload, rudp::encode(seq, rudp::FLAG_ACK, &[]));
            }
            assert_eq!(stats.reliable_repeats, 1);
        }
        Ok(Frame::Plain { payload }) => {
            assert_eq!(msgs, vec![Bytes::copy_from_slice(payload); 2]);
            assert!(acks.is_empty());
        }
        Ok(Frame::Ack { .. }) => {
            assert!(msgs.is_empty() && acks.is_empty());
            assert_eq!(stats.stray_acks, 2);
        }
        Err(_) => {
            assert!(msgs.is_empty() && acks.is_empty());
            assert_eq!(stats.malformed, 2);
        }
    }
    // Still working: a reliable send is acked by the peer's ACK.
    let id = e
        .send_reliable(now, p, b"after", None)
        .expect("send_reliable");
    let out = e.poll_transmit().expect("the reliable frame");
    let Ok(Frame::Data { seq, payload }) = rudp::decode(&out.payload) else {
        panic!("not a data frame");
    };
    assert_eq!((MessageId(seq), payload), (id, &b"after"[..]));
    e.handle_datagram(now, p, peer, &rudp::encode(seq, rudp::FLAG_ACK, &[]));
    let acked = std::iter::from_fn(|| e.poll_event()).any(|ev| {
        matches!(ev, Event::Reliable { id: i, outcome: pipe_core::Outcome::Acked, .. } if i == id)
    });
    assert!(acked, "the ACK was not taken");
}

// ---- deframer -------------------------------------------------------------------------------

/// What a framing must make of a whole byte stream, however it is cut: the frames, and whether
/// the stream breaks the limit (then the frames are those before the first bad one).
fn reference_frames(framing: &Framing, wire: &[u8]) -> (Vec<Bytes>, bool) {
    let mut out = Vec::new();
    let mut rest = wire;
    match framing {
        Framing::Raw => (vec![Bytes::copy_from_slice(wire)], false),
        Framing::LengthPrefixed { max } => {
            while let Some(h) = rest.get(..4) {
                let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
                if len > *max {
                    return (out, true);
                }
                let Some(body) = rest.get(4..4 + len) else {
                    break;
                };
                out.push(Bytes::copy_from_slice(body));
                rest = &rest[4 + len..];
            }
            (out, false)
        }
        Framing::Delimited { delim, max } => {
            while let Some(i) = rest.windows(delim.len()).position(|w| w == &delim[..]) {
                if i > *max {
                    return (out, true);
                }
                out.push(Bytes::copy_from_slice(&rest[..i]));
                rest = &rest[i + delim.len()..];
            }
            // An unfinished tail may still end in a delimiter within the limit.
            (out, rest.len() >= max + delim.len())
        }
    }
}

/// A framing (raw, length-prefixed or delimited, with a small limit so that inputs reach it),
/// then a byte stream cut into arbitrary reads, fed to a TCP pipe through `handle_stream` or
/// `handle_stream_bytes`. The messages must be exactly the reference's, in order; a stream over
/// the limit must end the pipe with `FrameTooLarge` (and nothing else may end it); the pipe
/// stays within its caps after every read.
pub fn deframer(data: &[u8]) {
    let _ = deframer_inner(&mut Unstructured::new(data));
}

fn deframer_inner(u: &mut Unstructured<'_>) -> Result<()> {
    let max = if u.arbitrary::<bool>()? {
        u.int_in_range(1..=16)?
    } else {
        u.int_in_range(1..=2048)?
    };
    let framing = match u.int_in_range(0..=2)? {
        0 => Framing::Raw,
        1 => Framing::LengthPrefixed { max },
        _ => {
            let n = u.int_in_range(1..=4)?;
            Framing::Delimited {
                delim: Bytes::copy_from_slice(u.bytes(n)?),
                max,
            }
        }
    };
    let mut reads: Vec<(&[u8], bool)> = Vec::new();
    while !u.is_empty() {
        let n = u.int_in_range(0..=64)?.min(u.len());
        let owned = u.arbitrary::<bool>()?;
        reads.push((u.bytes(n)?, owned));
    }
    let wire = reads
        .iter()
        .flat_map(|(r, _)| r.iter().copied())
        .collect::<Vec<u8>>();

    let now = t0();
    let mut e = Engine::new(1);
    let conf = Conf {
        framing: framing.clone(),
        max_qsize: 0,
        max_queue_bytes: 0,
        ..Conf::default()
    };
    let p = e
        .open_tcp(now, sa("127.0.0.1:1000"), sa("127.0.0.1:2000"), conf, false)
        .expect("a valid framing");
    for (r, owned) in &reads {
        if *owned {
            e.handle_stream_bytes(now, p, Bytes::copy_from_slice(r));
        } else {
            e.handle_stream(now, p, r);
        }
        assert!(e.within_caps());
    }
    let mut ended = None;
    while let Some(ev) = e.poll_event() {
        if let Event::End { reason, .. } = ev {
            assert!(ended.is_none(), "ended twice");
            ended = Some(reason);
        }
    }
    let got: Vec<Bytes> =
        std::iter::from_fn(|| e.recv(p, SubId::ALL).ok().flatten().map(|m| m.data)).collect();
    let (want, too_large) = reference_frames(&framing, &wire);
    if matches!(framing, Framing::Raw) {
        // Raw: one message per non-empty read; together they are the stream.
        assert_eq!(got.concat(), wire);
        assert_eq!(
            got.len(),
            reads.iter().filter(|(r, _)| !r.is_empty()).count()
        );
        assert_eq!(ended, None);
        return Ok(());
    }
    assert_eq!(
        got,
        want,
        "{framing:?}, reads {:?}",
        reads.iter().map(|(r, _)| r.len()).collect::<Vec<_>>()
    );
    match ended {
        None => assert!(!too_large, "over the limit but not ended"),
        Some(EndReason::FrameTooLarge { len, max: m }) => {
            assert!(
                too_large,
                "ended with FrameTooLarge({len}) within the limit"
            );
            assert_eq!(m, max);
            assert!(len > max, "reported length {len} is within the limit {max}");
        }
        Some(other) => panic!("ended with {other:?}"),
    }
    Ok(())
}

// ---- engine_ops -----------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PKind {
    Udp,
    Tcp,
    Listener,
    Conn,
}

#[derive(Debug)]
struct PInfo {
    id: PipeId,
    kind: PKind,
    local: SocketAddr,
    dest: Option<SocketAddr>,
    subs: Vec<SubId>,
    links: Vec<LinkId>,
}

/// The fuzzer's driver: one engine, the pipes it opened, a network of transmits in flight, and
/// the bookkeeping for the checks.
struct Ops {
    e: Engine,
    now: Instant,
    pipes: Vec<PInfo>,
    next_port: u16,
    wire: VecDeque<Transmit>,
    up: BTreeSet<PipeId>,
    ended: BTreeSet<PipeId>,
    reliable_sent: BTreeSet<(PipeId, MessageId)>,
    reliable_done: BTreeSet<(PipeId, MessageId)>,
    /// `handle_timeout` ran in this step: no timer at or before `now` may be left.
    timers_ran: bool,
    /// Keep TCP sends within `MAX_UDP_V4` bytes (see the known finding in `step`).
    clamp_tcp_sends: bool,
    /// The driver's handle on each external link target: the engine's token → index in
    /// `pipes`, until `Unlinked`.
    tokens: BTreeMap<TargetToken, usize>,
}

/// Most transmits the fuzz network holds; more are lost (as on a real network).
const WIRE_CAP: usize = 1024;
/// Outside addresses: a stranger, and one that no pipe has.
const STRANGERS: [&str; 3] = ["10.9.9.9:9", "[::1]:7", "127.0.0.1:9"];

impl Ops {
    fn pick<'a>(&'a self, u: &mut Unstructured<'_>) -> Result<Option<&'a PInfo>> {
        if self.pipes.is_empty() {
            return Ok(None);
        }
        let i = u.choose_index(self.pipes.len())?;
        Ok(Some(&self.pipes[i]))
    }

    /// An address: one of a pipe's, or a stranger's.
    fn addr(&self, u: &mut Unstructured<'_>) -> Result<SocketAddr> {
        if !self.pipes.is_empty() && u.arbitrary::<bool>()? {
            let i = u.choose_index(self.pipes.len())?;
            return Ok(self.pipes[i].local);
        }
        Ok(sa(STRANGERS[u.choose_index(STRANGERS.len())?]))
    }

    fn fresh_local(&mut self) -> SocketAddr {
        self.next_port = self.next_port.wrapping_add(1).max(1000);
        SocketAddr::from(([127, 0, 0, 1], self.next_port))
    }

    fn payload(u: &mut Unstructured<'_>) -> Result<Vec<u8>> {
        let len = match u.int_in_range(0..=9)? {
            0 => 0,
            1..=7 => u.int_in_range(1..=64)?,
            8 => u.int_in_range(65..=2000)?,
            _ => u.int_in_range(60_000..=70_000)?,
        };
        let fill = u.arbitrary::<u8>()?;
        let mut v = vec![fill; len];
        let head = u.bytes(len.min(16).min(u.len()))?;
        v[..head.len()].copy_from_slice(head);
        Ok(v)
    }

    /// A valid conf with small limits, so that the fuzzer reaches them (1 in 16 is invalid:
    /// opening must refuse it).
    fn conf(u: &mut Unstructured<'_>, tcp: bool) -> Result<Conf> {
        if u.ratio(1, 16)? {
            return Ok(Conf {
                max_connections: 0,
                ..Conf::default()
            });
        }
        let framing = if !tcp {
            Framing::Raw
        } else {
            match u.int_in_range(0..=3)? {
                0 | 1 => Framing::Raw,
                2 => Framing::LengthPrefixed {
                    max: *u.choose(&[1, 8, 1500])?,
                },
                _ => Framing::Delimited {
                    delim: Bytes::from_static(u.choose(&[&b"\n"[..], b"\r\n", b"<>"])?),
                    max: *u.choose(&[1, 8, 1500])?,
                },
            }
        };
        Ok(Conf {
            max_qsize: *u.choose(&[0, 1, 2, 16])?,
            max_queue_bytes: *u.choose(&[0, 64, 1 << 16])?,
            enable_msg_ids: u.arbitrary()?,
            max_msg_ids: *u.choose(&[1, 4, 1000])?,
            dedup_key: if u.arbitrary()? {
                DedupKey::Ip
            } else {
                DedupKey::IpPort
            },
            send_retry: u.int_in_range(0..=3)?,
            retry_interval: Duration::from_millis(*u.choose(&[1, 10, 100, 3000])?),
            reliable_udp: !tcp && u.arbitrary()?,
            max_reliable_outstanding: *u.choose(&[1, 4, 1000])?,
            reliable_window: *u.choose(&[1, 4, 1024])?,
            max_connections: *u.choose(&[1, 2, 8])?,
            accept_backlog: *u.choose(&[1, 2, 8])?,
            max_out_bytes: *u.choose(&[1, 64, 4096, 256 << 10])?,
            framing,
            seed: u.arbitrary()?,
            ..Conf::default()
        })
    }

    fn opened(&mut self, id: PipeId, kind: PKind, local: SocketAddr, dest: Option<SocketAddr>) {
        self.pipes.push(PInfo {
            id,
            kind,
            local,
            dest,
            subs: vec![SubId::ALL],
            links: Vec::new(),
        });
    }

    /// Drain transmits onto the wire and events into the checks.
    fn drain(&mut self, u: &mut Unstructured<'_>) -> Result<()> {
        let per_pipe = u.arbitrary::<bool>()?;
        // A `Forward` is sent as it is drained, which queues more transmits: drain until a
        // round brings no event (sends make no events, so two rounds do).
        for _ in 0..4 {
            if per_pipe {
                while let Some(p) = self.e.poll_dirty() {
                    while let Some(t) = self.e.poll_transmit_for(p) {
                        assert_eq!(t.pipe, p);
                        self.put_on_wire(t);
                    }
                }
            } else {
                while let Some(t) = self.e.poll_transmit() {
                    self.put_on_wire(t);
                }
            }
            let mut any = false;
            while let Some(ev) = self.e.poll_event() {
                any = true;
                self.event(ev);
            }
            if !any {
                break;
            }
        }
        if let Some(t) = self.e.poll_timeout() {
            // Nothing due is left behind: with every output drained, timers at or before the
            // engine's latest `now` have run (this driver never moves time backwards).
            assert!(
                t > self.now || !self.timers_ran,
                "a timer due at {t:?} did not run"
            );
        }
        Ok(())
    }

    fn put_on_wire(&mut self, t: Transmit) {
        if self.wire.len() < WIRE_CAP {
            self.wire.push_back(t);
        }
    }

    fn event(&mut self, ev: Event) {
        match ev {
            Event::Up { pipe } => assert!(self.up.insert(pipe), "{pipe:?} up twice"),
            Event::End { pipe, .. } => assert!(self.ended.insert(pipe), "{pipe:?} ended twice"),
            Event::Reliable { pipe, id, .. } => {
                assert!(
                    self.reliable_sent.contains(&(pipe, id)),
                    "an outcome for a send never made"
                );
                assert!(self.reliable_done.insert((pipe, id)), "{id:?} ended twice");
                // Taken as pipe-io's waiter takes it (or forgotten when not kept).
                self.e.take_outcome(pipe, id);
            }
            Event::Forward {
                from,
                link,
                target,
                dest,
                data,
            } => {
                // The driver sends through the target pipe and reports the result, as
                // pipe-io does.
                let res = match self.tokens.get(&target).and_then(|i| self.pipes.get(*i)) {
                    Some(t) => self.e.send(self.now, t.id, &data, dest),
                    None => Err(pipe_core::SendError::Closed),
                };
                self.e.handle_forward_result(from, link, res);
            }
            Event::Unlinked { target, .. } => {
                assert!(
                    self.tokens.remove(&target).is_some(),
                    "unknown token unlinked"
                );
            }
            _ => {}
        }
    }

    /// Deliver the next transmit in flight to the pipe it is addressed to, if any.
    fn deliver(&mut self, u: &mut Unstructured<'_>) -> Result<()> {
        let Some(t) = self.wire.pop_front() else {
            return Ok(());
        };
        if u.ratio(1, 8)? {
            self.wire.push_back(t.clone()); // duplicated, later
        }
        let to = self.pipes.iter().find(|p| match (t.proto, p.kind) {
            (Proto::Udp, PKind::Udp) => p.local == t.dst,
            (Proto::Tcp, PKind::Tcp | PKind::Conn) => p.local == t.dst && p.dest == Some(t.src),
            _ => false,
        });
        match to {
            Some(p) if p.kind == PKind::Udp => {
                let id = p.id;
                self.e.handle_datagram(self.now, id, t.src, &t.payload);
            }
            Some(p) => {
                let id = p.id;
                let cut = u.int_in_range(0..=t.payload.len())?;
                self.e.handle_stream(self.now, id, &t.payload[..cut]);
                self.e
                    .handle_stream_bytes(self.now, id, t.payload.slice(cut..));
            }
            None => {}
        }
        Ok(())
    }

    fn step(&mut self, u: &mut Unstructured<'_>) -> Result<()> {
        self.timers_ran = false;
        match u.int_in_range(0..=21)? {
            0 => {
                let local = self.fresh_local();
                let dest = if u.arbitrary()? {
                    Some(self.addr(u)?)
                } else {
                    None
                };
                let conf = Self::conf(u, false)?;
                if let Ok(id) = self.e.open_udp(self.now, local, dest, conf, u.arbitrary()?) {
                    self.opened(id, PKind::Udp, local, dest);
                }
            }
            1 => {
                let local = self.fresh_local();
                let peer = self.addr(u)?;
                let conf = Self::conf(u, true)?;
                if let Ok(id) = self.e.open_tcp(self.now, local, peer, conf, u.arbitrary()?) {
                    self.opened(id, PKind::Tcp, local, Some(peer));
                }
            }
            2 => {
                let local = self.fresh_local();
                let conf = Self::conf(u, true)?;
                if let Ok(id) = self.e.open_listener(self.now, local, conf, u.arbitrary()?) {
                    self.opened(id, PKind::Listener, local, None);
                }
            }
            3 => {
                // A connection to a listener: from one of our TCP clients (so the two talk)
                // or from a stranger.
                let Some(l) = self.pick(u)? else {
                    return Ok(());
                };
                let (lid, local) = (l.id, l.local);
                let peer = self.addr(u)?;
                if let Ok(id) = self.e.handle_accepted(self.now, lid, local, peer) {
                    self.opened(id, PKind::Conn, local, Some(peer));
                    self.pipes.last_mut().expect("just pushed").subs.clear();
                }
            }
            4 | 5 => {
                let Some(p) = self.pick(u)? else {
                    return Ok(());
                };
                let (id, stream) = (p.id, matches!(p.kind, PKind::Tcp | PKind::Conn));
                let dest = if u.ratio(1, 4)? {
                    Some(self.addr(u)?)
                } else {
                    None
                };
                let mut data = Self::payload(u)?;
                if stream && self.clamp_tcp_sends {
                    // Known finding (fuzz/known/engine_ops/): `send` admits one TCP message of
                    // any size while the outbound buffer is under `max_out_bytes`, but
                    // `within_caps` bounds that buffer for UDP's largest datagram, so one raw
                    // TCP send over ~64 KiB breaks it. Until the engine settles which is right,
                    // TCP sends stay within a datagram's size so fuzzing goes past it.
                    data.truncate(pipe_core::MAX_UDP_V4);
                }
                if u.arbitrary()? {
                    let _ = self.e.send(self.now, id, &data, dest);
                } else if let Ok(m) = self.e.send_reliable(self.now, id, &data, dest) {
                    assert!(self.reliable_sent.insert((id, m)), "{m:?} reused");
                }
            }
            6 => {
                let Some(p) = self.pick(u)? else {
                    return Ok(());
                };
                let id = p.id;
                let filter = match u.int_in_range(0..=3)? {
                    0 => Filter::all(),
                    1 => Filter::from_addr(self.addr(u)?),
                    2 => {
                        let pat = *u.choose(&["a", "^\\x00", "[0-9]+$", "(", "(?i)x|y"])?;
                        match Filter::pattern(pat) {
                            Ok(f) => f,
                            Err(_) => return Ok(()),
                        }
                    }
                    _ => {
                        let mut a = self.addr(u)?;
                        a.set_port(0);
                        Filter::from_addr(a)
                    }
                };
                if let Ok(s) = self.e.subscribe(id, filter) {
                    let p = self.pipes.iter_mut().find(|p| p.id == id).expect("known");
                    p.subs.push(s);
                }
            }
            7 | 8 => {
                let Some(p) = self.pick(u)? else {
                    return Ok(());
                };
                let id = p.id;
                // Mostly one of its own subscriptions; sometimes another pipe's.
                let subs = if p.subs.is_empty() || u.ratio(1, 8)? {
                    &self.pipes[u.choose_index(self.pipes.len())?].subs
                } else {
                    &p.subs
                };
                let Some(&sub) = subs.get(u.choose_index(subs.len().max(1))?) else {
                    return Ok(());
                };
                if u.arbitrary()? {
                    for _ in 0..u.int_in_range(1..=8)? {
                        if !matches!(self.e.recv(id, sub), Ok(Some(_))) {
                            break;
                        }
                    }
                } else {
                    let _ = self.e.unsubscribe(id, sub);
                }
            }
            9 => {
                let Some(p) = self.pick(u)? else {
                    return Ok(());
                };
                let id = p.id;
                let mut external = None;
                let target = if u.arbitrary()? {
                    match self.pick(u)? {
                        Some(t) => LinkTarget::Local(t.id),
                        None => return Ok(()),
                    }
                } else {
                    // A pipe "of another group": the driver says what it is.
                    let i = u.choose_index(self.pipes.len())?;
                    let tid = self.pipes[i].id;
                    external = Some(i);
                    LinkTarget::External {
                        kind: self.e.kind(tid).unwrap_or(pipe_core::Kind::Udp),
                        open: self.e.state(tid) == Some(pipe_core::State::Open),
                    }
                };
                let dest = if u.arbitrary()? {
                    Some(self.addr(u)?)
                } else {
                    None
                };
                let from = if u.ratio(1, 4)? {
                    Some(self.addr(u)?)
                } else {
                    None
                };
                if let Ok(l) = self.e.link(id, target, dest, from) {
                    if let (Some(i), Some(token)) = (external, self.e.link_token(id, l)) {
                        assert!(self.tokens.insert(token, i).is_none(), "a token reused");
                    }
                    let p = self.pipes.iter_mut().find(|p| p.id == id).expect("known");
                    p.links.push(l);
                }
            }
            10 => {
                let Some(p) = self.pick(u)? else {
                    return Ok(());
                };
                let id = p.id;
                let links = if p.links.is_empty() || u.ratio(1, 8)? {
                    &self.pipes[u.choose_index(self.pipes.len())?].links
                } else {
                    &p.links
                };
                let Some(&link) = links.get(u.choose_index(links.len().max(1))?) else {
                    return Ok(());
                };
                let _ = self.e.unlink(id, link);
            }
            11 => {
                let Some(p) = self.pick(u)? else {
                    return Ok(());
                };
                let id = p.id;
                self.e.close(self.now, id);
            }
            12 => {
                // A datagram from anyone: arbitrary bytes, or a reliable-UDP frame.
                let Some(p) = self.pick(u)? else {
                    return Ok(());
                };
                let id = p.id;
                let from = self.addr(u)?;
                let data = if u.arbitrary()? {
                    Self::payload(u)?
                } else {
                    let flag = u.int_in_range(0..=3)?;
                    let seq = u.arbitrary::<u8>()? as u64;
                    let body = Self::payload(u)?;
                    rudp::encode(seq, flag, &body).to_vec()
                };
                self.e.handle_datagram(self.now, id, from, &data);
            }
            13 => {
                let Some(p) = self.pick(u)? else {
                    return Ok(());
                };
                let id = p.id;
                let n = u.int_in_range(0..=32)?.min(u.len());
                let data = u.bytes(n)?;
                if u.arbitrary()? {
                    self.e.handle_stream(self.now, id, data);
                } else {
                    self.e
                        .handle_stream_bytes(self.now, id, Bytes::copy_from_slice(data));
                }
            }
            14 => {
                let ms = *u.choose(&[0u64, 1, 10, 100, 1000, 5000])?;
                self.now += Duration::from_millis(ms);
                if u.arbitrary()? {
                    if let Some(t) = self.e.poll_timeout() {
                        self.now = self.now.max(t);
                    }
                }
                self.e.handle_timeout(self.now);
                self.timers_ran = true;
            }
            15 => {
                for _ in 0..u.int_in_range(1..=8)? {
                    self.deliver(u)?;
                }
            }
            16 => {
                // Lose what is in flight.
                let n = u.int_in_range(0..=self.wire.len())?;
                self.wire.drain(..n);
            }
            17 => {
                let Some(p) = self.pick(u)? else {
                    return Ok(());
                };
                let id = p.id;
                if u.arbitrary()? {
                    self.e.handle_peer_closed(self.now, id, u.arbitrary()?);
                } else {
                    self.e.handle_error(self.now, id, "fuzz".into());
                }
            }
            18 => {
                let Some(p) = self.pick(u)? else {
                    return Ok(());
                };
                let id = p.id;
                while let Ok(Some(_)) = self.e.pop_accepted(id) {}
                let _ = self.e.connections(id);
            }
            19 => {
                let Some(p) = self.pick(u)? else {
                    return Ok(());
                };
                let id = p.id;
                self.e.set_callbacks(id, u.arbitrary()?);
            }
            20 => {
                // Read-only calls a driver makes.
                let Some(p) = self.pick(u)? else {
                    return Ok(());
                };
                let id = p.id;
                let _ = self
                    .e
                    .can_send_direct(id, u.int_in_range(0..=70_000)?, None);
                let _ = (self.e.state(id), self.e.kind(id), self.e.stats(id));
                let _ = (self.e.local_addr(id), self.e.dest(id), self.e.out_bytes(id));
                let _ = self.e.queue_len(id, SubId::ALL);
            }
            _ => {}
        }
        // Drain after most steps, as the contract says; sometimes let outputs pile up.
        if !u.ratio(1, 4)? {
            self.drain(u)?;
        }
        Ok(())
    }
}

/// Random sequences of engine operations (open UDP/TCP/listener, accept, send,
/// send_reliable, subscribe, recv, unsubscribe, link, unlink, close, datagrams and stream bytes
/// from anyone, peer close and errors, time passing, a lossy duplicating network between the
/// pipes). After every step: no panic and `within_caps`; no pipe up or ended twice; no reliable
/// send ends twice. At the end: with time run out, every reliable send has ended exactly once.
pub fn engine_ops(data: &[u8]) {
    run_engine_ops(data, true);
}

/// [`engine_ops`] with TCP sends of any size: fails on the known finding in
/// `fuzz/known/engine_ops/` (an ignored test in `pipe-core/tests/fuzz_corpus.rs` replays it).
pub fn engine_ops_unclamped(data: &[u8]) {
    run_engine_ops(data, false);
}

fn run_engine_ops(data: &[u8], clamp_tcp_sends: bool) {
    let mut u = Unstructured::new(data);
    let mut ops = Ops {
        e: Engine::new(u.arbitrary().unwrap_or(0)),
        now: t0(),
        pipes: Vec::new(),
        next_port: 1000,
        wire: VecDeque::new(),
        up: BTreeSet::new(),
        ended: BTreeSet::new(),
        reliable_sent: BTreeSet::new(),
        reliable_done: BTreeSet::new(),
        timers_ran: false,
        clamp_tcp_sends,
        tokens: BTreeMap::new(),
    };
    for _ in 0..4096 {
        if u.is_empty() || ops.step(&mut u).is_err() {
            break;
        }
        assert!(ops.e.within_caps(), "over a cap: {:#?}", ops.e);
    }
    // Run time out: drain, then jump to every timer until none is left.
    let mut rest = Unstructured::new(&[]);
    for _ in 0..100_000 {
        let _ = ops.drain(&mut rest);
        match ops.e.poll_timeout() {
            Some(t) => {
                ops.now = ops.now.max(t);
                ops.e.handle_timeout(ops.now);
                ops.timers_ran = true;
                assert!(ops.e.within_caps(), "over a cap: {:#?}", ops.e);
            }
            None => break,
        }
    }
    assert_eq!(ops.e.poll_timeout(), None, "timers never ran out");
    let missing: BTreeMap<_, _> = ops
        .reliable_sent
        .difference(&ops.reliable_done)
        .map(|(p, m)| (*p, *m))
        .collect();
    assert!(
        missing.is_empty(),
        "reliable sends that never ended: {missing:?}"
    );
}

/// Drain every output of `e`, discarding it.
fn drain(e: &mut Engine) {
    while e.poll_transmit().is_some() {}
    while e.poll_event().is_some() {}
}
