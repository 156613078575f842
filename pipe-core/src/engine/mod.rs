//! The engine: every pipe of one driver-side group (a client, or a server and its
//! connections), driven by `handle_*` inputs and drained with `poll_*`.
//!
//! Method kinds, as in quinn-proto:
//! - **open**: `open_udp`, `open_tcp`, `open_listener`, `handle_accepted` register a socket the
//!   driver has bound or connected.
//! - **inputs**: `handle_datagram`, `handle_stream`, `handle_peer_closed`, `handle_error`,
//!   `handle_timeout`. Each takes `now`.
//! - **commands**: `send`, `send_reliable`, `subscribe`, `unsubscribe`, `recv`, `link`,
//!   `unlink`, `pop_accepted`, `set_callbacks`, `close`.
//! - **outputs**, drained after every input or command in this order: `poll_transmit` (or
//!   `poll_transmit_for` per socket), then `poll_event`, then `poll_timeout`.

mod half;
mod inbound;
mod splice;
mod state;
mod subs;

use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

pub use state::{ConnTotals, Kind, State, Stats};
use state::{Link, Mark, PipeState, Target};

use crate::framing::Session;
use crate::tls::{Tls, TlsSession};
use rustls::pki_types::ServerName;

use crate::addr::{same_endpoint, Family};
use crate::conf::Conf;
use crate::error::{AcceptError, ConfError, LinkError, RecvError, SendError, SubscribeError};
use crate::event::{
    EndReason, Event, LinkId, LinkTarget, Message, MessageId, Outcome, PipeId, SubId, TargetToken,
    Transmit,
};
use crate::rng::Rng;
use crate::rudp;
use crate::sub::{Filter, Queue, Subscription};

/// Most subscriptions per pipe.
pub const MAX_SUBSCRIPTIONS: usize = 256;
/// Most links per pipe.
pub const MAX_LINKS: usize = 64;
/// Most queued events; past it, `Message` and `Forward` events are dropped and counted (the others are
/// bounded by the number of pipes, those forgotten with events still queued among them, and
/// reliable sends).
pub const MAX_EVENTS: usize = 1 << 16;
/// Smallest message a raw TCP send writes from the caller's buffer after waiting for the
/// bytes queued ahead of it, instead of copying it behind them
/// ([`Engine::send_waits_for_direct`]).
pub const DIRECT_MIN: usize = 16 * 1024;
/// Largest UDP payload on IPv4 (65,535 − 20 − 8).
pub const MAX_UDP_V4: usize = 65_507;
/// Largest UDP payload on IPv6 (65,535 − 8).
pub const MAX_UDP_V6: usize = 65_527;
/// Internal transmits (ACKs, forwards, retransmits) may fill a pipe's outbound buffer to this
/// many times `max_out_bytes` before they are dropped and counted.
const INTERNAL_OUT_FACTOR: usize = 4;
/// Most transmits queued per pipe: the byte caps alone would let zero-length payloads pile up.
const MAX_OUT_TRANSMITS: usize = 1 << 16;
/// Largest emptied outbound buffer (in transmits: a `VecDeque`'s first allocation) the
/// engine keeps as its one spare.
const SPARE_OUT: usize = 4;
/// The timer-set key of a pipe's deadline entry (reliable sequence numbers are never 0).
const DEADLINE: u64 = 0;

/// The engine's pipes: the first one's state inline (a client group's only pipe costs no
/// allocation of its own), a listener's connections boxed in the map.
type Pipes = crate::idmap::IdTable<PipeId, PipeState, Box<PipeState>>;

/// The sans-IO engine. See the module documentation for the method kinds and drain order.
#[derive(Debug)]
pub struct Engine {
    pipes: Pipes,
    next_id: std::num::NonZeroU64,
    dirty: VecDeque<PipeId>,
    events: VecDeque<Event>,
    timers: BTreeSet<(Instant, PipeId, u64)>,
    now: Option<Instant>,
    rng: Rng,
    scratch: Vec<Bytes>,
    /// The links a message goes through (`inbound.rs`, `sinks`): kept, empty, between
    /// messages so that a linked pipe's message allocates no list.
    hops: Vec<(LinkId, Target, Option<SocketAddr>)>,
    /// One emptied outbound buffer of at most `SPARE_OUT` transmits (`after_write`), given
    /// to the next pipe that queues one (`push_out`): idle pipes keep none of their own.
    spare_out: VecDeque<Transmit>,
    /// The same for the lists of messages waiting for their callbacks (`subs.rs`).
    spare_held: VecDeque<crate::sub::Held>,
    next_token: u64,
    /// Relay stamps (`Conf::relay_stamp`): this engine's origin (drawn when first needed)
    /// and the id of the next message it stamps.
    relay_origin: Option<u64>,
    relay_next_id: u64,
}

impl Engine {
    /// An engine with no pipes. `seed` feeds reliable-UDP sequence numbers (mixed with each
    /// pipe's `Conf::seed`).
    pub fn new(seed: u64) -> Self {
        Self {
            pipes: Default::default(),
            next_id: std::num::NonZeroU64::MIN,
            dirty: VecDeque::new(),
            events: VecDeque::new(),
            timers: BTreeSet::new(),
            now: None,
            rng: Rng::new(seed),
            scratch: Vec::new(),
            hops: Vec::new(),
            spare_out: VecDeque::new(),
            spare_held: VecDeque::new(),
            next_token: 1,
            relay_origin: None,
            relay_next_id: 0,
        }
    }

    // ---- open -------------------------------------------------------------------------

    /// Register a bound UDP socket. A pipe with a destination and no callbacks starts
    /// subscribed to every message ([`SubId::ALL`]).
    pub fn open_udp(
        &mut self,
        now: Instant,
        local: SocketAddr,
        dest: Option<SocketAddr>,
        conf: impl Into<Arc<Conf>>,
        callbacks: bool,
    ) -> Result<PipeId, ConfError> {
        let sub_all = dest.is_some() && !callbacks;
        self.open(now, Kind::Udp, local, dest, conf, callbacks, sub_all)
    }

    /// Register a connected TCP client socket.
    pub fn open_tcp(
        &mut self,
        now: Instant,
        local: SocketAddr,
        peer: SocketAddr,
        conf: impl Into<Arc<Conf>>,
        callbacks: bool,
    ) -> Result<PipeId, ConfError> {
        self.open(
            now,
            Kind::TcpClient,
            local,
            Some(peer),
            conf,
            callbacks,
            !callbacks,
        )
    }

    /// Register a listening TCP socket.
    pub fn open_listener(
        &mut self,
        now: Instant,
        local: SocketAddr,
        conf: impl Into<Arc<Conf>>,
        callbacks: bool,
    ) -> Result<PipeId, ConfError> {
        self.open(now, Kind::TcpListener, local, None, conf, callbacks, false)
    }

    /// Register a connection `listener` accepted. It inherits the listener's conf. When the
    /// listener has no message callbacks it starts with a fallback [`SubId::ALL`]
    /// subscription that takes every message no link and no callback takes, so a connection
    /// handed out by [`Engine::pop_accepted`] loses nothing that arrived before: while that
    /// queue is full the connection's reading pauses (nothing is dropped; bounded by the
    /// queue caps and the server's budget); otherwise it starts unsubscribed. Fails when
    /// the listener is closed or at `max_connections`: close the socket.
    pub fn handle_accepted(
        &mut self,
        now: Instant,
        listener: PipeId,
        local: SocketAddr,
        peer: SocketAddr,
    ) -> Result<PipeId, AcceptError> {
        let Some(l) = self.pipes.get_likely_first(&listener) else {
            return Err(AcceptError::Closed);
        };
        if l.kind != Kind::TcpListener || !l.is_open() {
            return Err(AcceptError::Closed);
        }
        if l.ls().children.len() >= l.conf.max_connections {
            return Err(AcceptError::TooManyConnections(l.conf.max_connections));
        }
        // At the cap of handshakes in progress the oldest one gives way: a flood of stalled
        // handshakes then cannot lock a genuine client out (it would have to outpace every
        // new connection), and the count never passes the cap.
        let mut evict = None;
        let session = match &l.conf.tls {
            Some(Tls::Server { config }) => {
                if l.ls().handshakes.len() >= l.conf.max_handshakes {
                    evict = l.ls().handshakes.first().copied();
                }
                let s = TlsSession::server(config.clone()).map_err(|_| AcceptError::Closed)?;
                Session::Tls(Box::new(s))
            }
            _ => Session::Plain,
        };
        let tls = !session.is_plain();
        let (conf, parent_callbacks) = (Arc::clone(&l.conf), l.callbacks);
        if let Some(old) = evict {
            self.tick(now);
            self.end(
                old,
                State::Closing,
                EndReason::Tls(crate::tls::TlsError::HandshakeEvicted),
            );
            if let Some(l) = self.pipes.get_mut_likely_first(&listener) {
                l.stats.rare().handshakes_evicted += 1;
            }
        }

        let id = self.insert(
            now,
            Kind::TcpConn { listener },
            local,
            Some(peer),
            conf,
            (false, !parent_callbacks),
            session,
        );
        if let Some(c) = self.pipes.get_mut(&id) {
            c.parent_callbacks = parent_callbacks;
            c.fallback_all = !parent_callbacks;
            c.in_accept_q = true;
            c.t.counted_handshake = tls;
        }
        let Some(l) = self.pipes.get_mut_likely_first(&listener) else {
            return Err(AcceptError::Closed);
        };
        if tls {
            l.ls_mut().handshakes.insert(id);
        }
        l.ls_mut().children.insert(id);
        if let Some(t) = l.rare_opt().and_then(|r| r.totals.as_deref_mut()) {
            t.accepted += 1;
        }
        l.ls_mut().accept_q.push_back(id);
        let mut evicted = None;
        if l.ls().accept_q.len() > l.conf.accept_backlog {
            evicted = l.ls_mut().accept_q.pop_front();
            l.stats.rare().accept_dropped += 1;
        }
        if let Some(old) = evicted {
            if let Some(o) = self.pipes.get_mut(&old) {
                o.in_accept_q = false;
                // It can no longer be accepted: nobody will read its fallback queue.
                if std::mem::take(&mut o.fallback_all) {
                    if let Some(i) = o.subs.iter().position(|s| s.id == SubId::ALL) {
                        let dropped = o.subs.remove(i).queue.len();
                        o.stats.rare().unclaimed += dropped as u64;
                    }
                }
            }
            self.settle(old);
            // Out of the queue nobody will take it: a FIN it got there now ends it.
            self.check_half(old);
            self.maybe_remove(old);
        }
        self.events
            .push_back(Event::Accepted { listener, conn: id });
        Ok(id)
    }

    /// Validate `conf` (unless it is [`Conf::shared_default`], known valid), then
    /// [`Engine::insert`].
    #[allow(clippy::too_many_arguments)]
    fn open(
        &mut self,
        now: Instant,
        kind: Kind,
        local: SocketAddr,
        dest: Option<SocketAddr>,
        conf: impl Into<Arc<Conf>>,
        callbacks: bool,
        sub_all: bool,
    ) -> Result<PipeId, ConfError> {
        let conf = conf.into();
        Conf::validate_shared(&conf, kind.proto())?;
        let incompatible = |why| ConfError::Incompatible { key: "tls", why };
        let session = match (&conf.tls, kind) {
            (None, _) => Session::Plain,
            (Some(Tls::Client { config, name }), Kind::TcpClient) => {
                let name = match (name, dest) {
                    (Some(n), _) => n.clone(),
                    (None, Some(d)) => ServerName::IpAddress(d.ip().into()),
                    (None, None) => return Err(incompatible("a TLS client needs a destination")),
                };
                let s = TlsSession::client(config.clone(), name)
                    .map_err(|_| incompatible("the TLS client config was refused by rustls"))?;
                Session::Tls(Box::new(s))
            }
            (Some(Tls::Server { .. }), Kind::TcpListener) => Session::Plain,
            (Some(Tls::Client { .. }), _) => {
                return Err(incompatible(
                    "a TLS client config is for pipes that connect",
                ))
            }
            (Some(Tls::Server { .. }), _) => {
                return Err(incompatible("a TLS server config is for TCP listeners"))
            }
        };
        Ok(self.insert(now, kind, local, dest, conf, (callbacks, sub_all), session))
    }

    /// Send what the pipe's TLS session has for the socket (handshake records, alerts,
    /// `close_notify`, application data it buffered during the handshake).
    fn flush_tls(&mut self, pipe: PipeId) {
        let Some(p) = self.pipes.get_mut(&pipe) else {
            return;
        };
        let (Some(t), Some(dst)) = (p.session.tls(), p.dest) else {
            return;
        };
        if let Some(bytes) = t.take_outgoing() {
            self.push_out(pipe, dst, bytes);
        }
    }

    /// The ALPN protocol a TLS pipe agreed on (after its handshake).
    pub fn alpn(&mut self, pipe: PipeId) -> Option<Vec<u8>> {
        let p = self.pipes.get_mut(&pipe)?;
        p.session.tls()?.alpn().map(<[u8]>::to_vec)
    }

    /// A TLS pipe finished its handshake: it is up, and no longer counts against its
    /// server's handshakes in progress.
    pub(crate) fn handshake_done(&mut self, pipe: PipeId) {
        self.uncount_handshake(pipe);
        self.events.push_back(Event::Up { pipe });
    }

    fn uncount_handshake(&mut self, pipe: PipeId) {
        let Some(p) = self.pipes.get_mut(&pipe) else {
            return;
        };
        if !std::mem::take(&mut p.t.counted_handshake) {
            return;
        }
        if let Kind::TcpConn { listener } = p.kind {
            if let Some(l) = self.pipes.get_mut_likely_first(&listener) {
                l.ls_mut().handshakes.remove(&pipe);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn insert(
        &mut self,
        now: Instant,
        kind: Kind,
        local: SocketAddr,
        dest: Option<SocketAddr>,
        conf: Arc<Conf>,
        (callbacks, sub_all): (bool, bool),
        session: Session,
    ) -> PipeId {
        self.tick(now);
        let id = PipeId(self.next_id);
        self.next_id = self.next_id.saturating_add(1);
        let seq_seed = self.rng.next_u64() ^ conf.seed;
        let tls = !session.is_plain();
        // Into the table first, then filled in there: a client's state is the table's inline
        // entry, and each move of it is a 384-byte copy.
        self.pipes
            .insert(id, PipeState::new(kind, local, dest, conf, seq_seed, now));
        if let Some(p) = self.pipes.get_mut(&id) {
            p.callbacks = callbacks;
            if sub_all {
                let queue = Queue::new(p.conf.max_qsize, p.conf.max_queue_bytes);
                // Exactly one: a first push would allocate room for four (352 bytes, not 88).
                p.subs = vec![Subscription {
                    id: SubId::ALL,
                    filter: Filter::all(),
                    queue,
                    handler: false,
                }];
            }
            p.session = session;
        }
        if tls {
            // Up once the handshake is done; a client speaks first.
            self.flush_tls(id);
        } else {
            self.events.push_back(Event::Up { pipe: id });
        }
        self.rearm(id);
        id
    }

    // ---- inputs -----------------------------------------------------------------------

    /// The peer closed (`reset = false`: FIN) or reset the connection.
    pub fn handle_peer_closed(&mut self, now: Instant, pipe: PipeId, reset: bool) {
        self.tick(now);
        let truncated = self
            .pipes
            .get_mut(&pipe)
            .and_then(|p| p.session.tls())
            .is_some_and(|t| !t.peer_closed);
        let reason = if reset {
            EndReason::Reset
        } else if truncated {
            EndReason::Tls(crate::tls::TlsError::Truncated)
        } else {
            // A FIN closes the read side only (half-close, `half.rs`).
            return self.peer_fin(pipe);
        };
        self.end(pipe, State::PeerClosed, reason);
    }

    /// The pipe's socket failed with an error the driver cannot recover from.
    /// Nothing queued for its socket can be written any more: it is dropped and counted.
    pub fn handle_error(&mut self, now: Instant, pipe: PipeId, error: crate::error::IoError) {
        self.tick(now);
        self.end(pipe, State::PeerClosed, EndReason::Error(error));
        self.discard_out(pipe);
    }

    /// Time passed: retransmit reliable sends that are due, and end those out of tries.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.tick(now);
        while let Some(&(at, pipe, seq)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            if seq == DEADLINE {
                self.fire_deadline(now, pipe);
                continue;
            }
            let Some(p) = self.pipes.get_mut(&pipe) else {
                continue;
            };
            let Some(rel) = p.rare.as_deref_mut().and_then(|r| r.rel.as_deref_mut()) else {
                continue;
            };
            let Some(pending) = rel.outstanding.get_mut(&seq) else {
                continue;
            };
            if pending.tries_left == 0 {
                rel.outstanding.remove(&seq);
                self.finish_reliable(pipe, seq, Outcome::Unconfirmed);
                self.maybe_remove(pipe);
                continue;
            }
            pending.tries_left -= 1;
            pending.deadline = now + p.conf.retry_interval;
            let (dest, frame, deadline) = (pending.dest, pending.frame.clone(), pending.deadline);
            p.stats.rare().retransmits += 1;
            self.timers.insert((deadline, pipe, seq));
            self.push_internal(pipe, dest, frame);
        }
    }

    // ---- commands ---------------------------------------------------------------------

    /// Queue `data` for sending: to `dest`, or the pipe's default destination. TCP pipes send
    /// to their peer (a `dest` naming another address is refused).
    pub fn send(
        &mut self,
        now: Instant,
        pipe: PipeId,
        data: &[u8],
        dest: Option<SocketAddr>,
    ) -> Result<(), SendError> {
        self.tick(now);
        let p = self.pipes.get_mut(&pipe).ok_or(SendError::Closed)?;
        if !p.can_write() {
            return Err(SendError::Closed);
        }
        // Backpressure: a message that does not fit beside what is queued waits; one larger
        // than the whole buffer is taken only when nothing is queued, so the buffer holds at
        // most `max_out_bytes`, or one message.
        let queued = p.queued_out();
        let fits = queued + data.len() <= p.conf.max_out_bytes || queued == 0;
        if !fits || p.out.len() >= MAX_OUT_TRANSMITS {
            return Err(SendError::WouldBlock);
        }
        let (dst, payload) = Self::frame_out(p, data, None, dest)?;
        p.stats.sent += 1;
        // Empty: TLS holds it until its handshake is done (or an empty raw send).
        if !(payload.is_empty() && p.kind.is_stream()) {
            self.push_out(pipe, dst, payload);
        }
        self.settle(pipe);
        Ok(())
    }

    /// The driver wrote `len` bytes for `pipe` straight from the caller's buffer (after
    /// [`Engine::can_send_direct`]): count them as output and as activity. `now` is called
    /// only when the pipe has an idle deadline, so a driver reads no clock for pipes without.
    pub fn note_direct_send(&mut self, pipe: PipeId, len: usize, now: impl FnOnce() -> Instant) {
        if let Some(p) = self.pipes.get_mut(&pipe) {
            p.stats.bytes_out += len as u64;
            p.stats.sent += 1;
            if p.conf.idle_timeout.is_some() {
                p.t.last_activity = p.t.last_activity.max(p.t.mark(now()));
            }
        }
    }

    /// Whether a driver may write `data` for `pipe` straight from the caller's buffer, and
    /// where to: `Some(dst)` when nothing is queued for the pipe's socket and the pipe adds
    /// nothing to the bytes (a TCP pipe with `Framing::Raw` over the plain session, or a UDP
    /// pipe not in reliable mode). The driver then writes `data` to `dst` and queues with
    /// [`Engine::send`] whatever the socket did not take (a TCP remainder, or a datagram the
    /// socket refused with `WouldBlock`). `None`: use `send`. Errors are those `send` gives.
    pub fn can_send_direct(
        &self,
        pipe: PipeId,
        data_len: usize,
        dest: Option<SocketAddr>,
    ) -> Result<Option<SocketAddr>, SendError> {
        let p = self.pipes.get(&pipe).ok_or(SendError::Closed)?;
        if !p.can_write() {
            return Err(SendError::Closed);
        }
        if !p.out_idle() {
            return Ok(None);
        }
        match p.kind {
            Kind::TcpListener => Err(SendError::WrongKind(p.kind.name())),
            Kind::Udp if p.conf.reliable_udp => Ok(None),
            Kind::Udp => {
                let dst = udp_dest(p, dest)?;
                check_udp_size(p, dst, data_len)?;
                Ok(Some(dst))
            }
            Kind::TcpClient | Kind::TcpConn { .. } => {
                let peer = p.dest.ok_or(SendError::NoDestination)?;
                if let Some(d) = dest {
                    if !same_endpoint(&d, &peer) {
                        return Err(SendError::NotConnectedTo(d));
                    }
                }
                let raw = p.session.is_plain() && p.deframer.is_none();
                Ok(raw.then_some(peer))
            }
        }
    }

    /// Whether a send of `len` bytes should first wait for the pipe's queued output to drain
    /// and then go to the socket from the caller's buffer ([`Engine::can_send_direct`]),
    /// rather than be copied into the queue behind it: a raw TCP pipe (no framing, no TLS)
    /// that may write, with bytes queued (not spliced ones), and a message of at least
    /// [`DIRECT_MIN`] bytes. A bulk sender otherwise copies nearly every byte into the queue
    /// while the socket's buffer is full (`std::io::BufWriter` lets a write as large as its
    /// buffer bypass it for the same reason). The driver waits at most once per message.
    pub fn send_waits_for_direct(&self, pipe: PipeId, len: usize) -> bool {
        len >= DIRECT_MIN
            && self.pipes.get(&pipe).is_some_and(|p| {
                matches!(p.kind, Kind::TcpClient | Kind::TcpConn { .. })
                    && p.can_write()
                    && p.session.is_plain()
                    && p.deframer.is_none()
                    && !p.out.is_empty()
                    && !p.splice_busy
            })
    }

    /// Send `data` reliably (UDP pipes with `Conf::reliable_udp`): up to `1 + send_retry`
    /// transmissions `retry_interval` apart, then one more interval for a late ACK. The
    /// outcome arrives as [`Event::Reliable`].
    pub fn send_reliable(
        &mut self,
        now: Instant,
        pipe: PipeId,
        data: &[u8],
        dest: Option<SocketAddr>,
    ) -> Result<MessageId, SendError> {
        self.tick(now);
        let p = self.pipes.get_mut(&pipe).ok_or(SendError::Closed)?;
        if !p.is_open() {
            return Err(SendError::Closed);
        }
        let Some(rel) = p.rel_mut() else {
            return Err(SendError::NotReliable);
        };
        let waiting = rel.outstanding.len() + rel.outcomes.len();
        if waiting >= p.conf.max_reliable_outstanding {
            return Err(SendError::TooManyOutstanding(waiting));
        }
        if p.out_bytes >= p.conf.max_out_bytes {
            return Err(SendError::WouldBlock);
        }
        let dst = udp_dest(p, dest)?;
        check_udp_size(p, dst, data.len())?;
        let rel = (p.rare.as_deref_mut().and_then(|r| r.rel.as_deref_mut()))
            .ok_or(SendError::NotReliable)?;
        let mut seq = rel.next_seq;
        while seq == 0 || rel.outstanding.contains_key(&seq) {
            seq = seq.wrapping_add(1);
        }
        rel.next_seq = seq.wrapping_add(1);
        let frame = rudp::encode(seq, rudp::FLAG_DATA, data);
        let deadline = now + p.conf.retry_interval;
        rel.outstanding.insert(
            seq,
            rudp::Pending {
                dest: dst,
                frame: frame.clone(),
                tries_left: p.conf.reliable_tries() - 1,
                deadline,
                forgotten: false,
            },
        );
        self.timers.insert((deadline, pipe, seq));
        p.stats.sent += 1;
        self.push_out(pipe, dst, frame);
        self.settle(pipe);
        Ok(MessageId(seq))
    }

    /// The outcome of a reliable send, once it has one (taken: asked again, `None`).
    pub fn take_outcome(&mut self, pipe: PipeId, id: MessageId) -> Option<Outcome> {
        let rel = self.pipes.get_mut(&pipe)?.rel_mut()?;
        let i = rel.outcomes.iter().position(|(m, _)| *m == id)?;
        let (_, o) = rel.outcomes.swap_remove(i);
        if rel.outcomes.is_empty() {
            rel.outcomes = Vec::new();
            self.maybe_remove(pipe);
        }
        Some(o)
    }

    /// Nobody waits for this reliable send's outcome any more: drop it now, or when it
    /// arrives. Outcomes count against `max_reliable_outstanding` until taken or forgotten.
    pub fn forget_outcome(&mut self, pipe: PipeId, id: MessageId) {
        if self.take_outcome(pipe, id).is_some() {
            return;
        }
        if let Some(p) = self.pipes.get_mut(&pipe) {
            if let Some(pending) = p.rel_mut().and_then(|r| r.outstanding.get_mut(&id.0)) {
                pending.forgotten = true;
            }
        }
    }

    /// The driver finished running callbacks for a message of `len` bytes that came with
    /// [`Event::Message`]: the pipe holds it no longer.
    pub fn handle_callback_done(&mut self, pipe: PipeId, len: usize) {
        let Some(p) = self.pipes.get_mut(&pipe) else {
            return;
        };
        p.t.held_bytes = p.t.held_bytes.saturating_sub(len);
        p.t.held_jobs = p.t.held_jobs.saturating_sub(1);
        // Its subscriptions get it now: callback, then subscriptions (`subs.rs`).
        self.callbacks_finished(pipe);
        self.settle(pipe);
        if self
            .pipes
            .get(&pipe)
            .is_some_and(|p| p.is_open() && !p.half.read_closed)
        {
            // The common case: no FIN waits for the jobs to finish, and an open pipe stays.
            return;
        }
        self.check_half(pipe);
        self.maybe_remove(pipe);
    }

    /// Subscribe to messages matching `filter`. Subscribing a filter equal to an existing one
    /// returns the existing subscription; the all-messages filter is always [`SubId::ALL`].
    pub fn subscribe(&mut self, pipe: PipeId, filter: Filter) -> Result<SubId, SubscribeError> {
        let p = self.pipes.get_mut(&pipe).ok_or(SubscribeError::Closed)?;
        if p.kind == Kind::TcpListener {
            return Err(SubscribeError::WrongKind(p.kind.name()));
        }
        if !p.is_open() {
            return Err(SubscribeError::Closed);
        }
        if let Some(s) = p.subs.iter().find(|s| s.filter.same_as(&filter)) {
            let id = s.id;
            if id == SubId::ALL && std::mem::take(&mut p.fallback_all) {
                // Asked for: the fallback becomes an ordinary subscription (which may
                // resume a connection its full fallback paused).
                self.settle(pipe);
            }
            return Ok(id);
        }
        if p.subs.len() >= MAX_SUBSCRIPTIONS {
            return Err(SubscribeError::TooMany(MAX_SUBSCRIPTIONS));
        }
        let id = if filter.is_all() {
            SubId::ALL
        } else {
            p.next_sub += 1;
            SubId(p.next_sub - 1)
        };
        let queue = Queue::new(p.conf.max_qsize, p.conf.max_queue_bytes);
        p.subs.push(Subscription {
            id,
            filter,
            queue,
            handler: false,
        });
        Ok(id)
    }

    /// The subscription whose filter equals `filter`, if any.
    pub fn find_subscription(&self, pipe: PipeId, filter: &Filter) -> Option<SubId> {
        let p = self.pipes.get(&pipe)?;
        p.subs
            .iter()
            .find(|s| s.filter.same_as(filter))
            .map(|s| s.id)
    }

    /// Remove a subscription and drop its queued messages.
    pub fn unsubscribe(&mut self, pipe: PipeId, sub: SubId) -> Result<(), RecvError> {
        let p = self.pipes.get_mut(&pipe).ok_or(RecvError::NotSubscribed)?;
        let before = p.subs.len();
        p.subs.retain(|s| s.id != sub);
        if p.subs.len() == before {
            return Err(RecvError::NotSubscribed);
        }
        if sub == SubId::ALL {
            p.fallback_all = false;
        }
        self.settle(pipe);
        self.maybe_remove(pipe);
        Ok(())
    }

    /// Take the oldest message of a subscription: `Ok(None)` when its queue is empty and the
    /// pipe is open, `Err(Closed)` once the pipe has ended and the queue is drained.
    pub fn recv(&mut self, pipe: PipeId, sub: SubId) -> Result<Option<Message>, RecvError> {
        let p = self.pipes.get_mut(&pipe).ok_or(RecvError::Closed)?;
        // After the peer's FIN nothing more arrives: a drained queue says so.
        let open = p.is_open() && !p.half.read_closed;
        // Messages still with their callbacks will reach the queue (`subs.rs`).
        let open = open || !p.held.is_empty();
        let s = p.sub_mut(sub).ok_or(RecvError::NotSubscribed)?;
        match s.queue.pop() {
            Some(m) => {
                if !p.settled() {
                    self.settle(pipe);
                }
                if !open {
                    self.maybe_remove(pipe);
                }
                Ok(Some(m))
            }
            None if open => Ok(None),
            None => Err(RecvError::Closed),
        }
    }

    /// A `recv` on `pipe` waits until `deadline` (a caller's `recv_timeout`): the engine's
    /// timer covers it, so the driver needs no timer per `recv`. When the earliest such
    /// deadline passes the engine emits [`Event::RecvDue`] (readers compare the clock with
    /// their own deadline and wait on, or give up). Only the earliest deadline is kept, and an
    /// earlier one left by a `recv` that already returned only costs one early wake: a reader
    /// woken before its own deadline calls this again. It holds in every state: a closed pipe
    /// may still hold messages for its callbacks, which `recv` waits for.
    pub fn recv_wait(&mut self, pipe: PipeId, deadline: Instant) {
        let Some(p) = self.pipes.get_mut(&pipe) else {
            return;
        };
        let due = p.t.mark(deadline);
        p.t.recv_due = match p.t.recv_due {
            Mark::NONE => due,
            d => d.min(due),
        };
        // A deadline armed at or before this one fires first, and its firing arms the next
        // one, this among them (`fire_deadline`): nothing to recompute. The common case of a
        // `recv` after `recv`, each a deadline later than the last; every change that makes
        // another deadline earlier re-arms itself.
        if p.t.armed != Mark::NONE && p.t.armed <= due {
            return;
        }
        self.rearm(pipe);
    }

    /// Tell the engine whether the driver has message callbacks for `pipe`, so that it emits
    /// [`Event::Message`]. A listener's flag also covers its connections.
    pub fn set_callbacks(&mut self, pipe: PipeId, on: bool) {
        self.user_acts(pipe);
        let Some(p) = self.pipes.get_mut(&pipe) else {
            return;
        };
        p.callbacks = on;
        let children = if p.kind == Kind::TcpListener {
            p.ls().children.iter().copied().collect()
        } else {
            Vec::new()
        };
        for c in children {
            if let Some(c) = self.pipes.get_mut(&c) {
                c.parent_callbacks = on;
            }
        }
    }

    /// Link `pipe` to `target`: every message `pipe` receives (after dedup) is also sent
    /// through the target to `dest` (or the target's default destination). With `from`, only
    /// messages from that sender (port 0 = any port) are forwarded. Forwarded messages leave
    /// through the target's socket and never enter its own inbound pipeline, so links cannot
    /// loop inside the process.
    pub fn link(
        &mut self,
        pipe: PipeId,
        target: LinkTarget,
        dest: Option<SocketAddr>,
        from: Option<SocketAddr>,
    ) -> Result<LinkId, LinkError> {
        let (kind, open) = match target {
            LinkTarget::Local(t) if t == pipe => return Err(LinkError::SelfLink),
            LinkTarget::Local(t) => match self.pipes.get(&t) {
                Some(tp) => (tp.kind, tp.is_open()),
                None => return Err(LinkError::Closed),
            },
            LinkTarget::External { kind, open } => (kind, open),
        };
        if !open {
            return Err(LinkError::Closed);
        }
        if kind == Kind::TcpListener {
            return Err(LinkError::WrongKind(kind.name()));
        }
        let p = self.pipes.get_mut(&pipe).ok_or(LinkError::Closed)?;
        if !p.is_open() {
            return Err(LinkError::Closed);
        }
        if p.rare().links.len() >= MAX_LINKS {
            return Err(LinkError::TooMany(MAX_LINKS));
        }
        let target = match target {
            LinkTarget::Local(t) => Target::Local(t),
            LinkTarget::External { .. } => {
                self.next_token += 1;
                Target::External(TargetToken(self.next_token - 1))
            }
        };
        let r = p.rare_mut();
        let id = LinkId(r.next_link);
        r.next_link += 1;
        r.links.push(Link {
            id,
            target,
            dest,
            from,
            paired: false,
        });
        if let Target::Local(t) = target {
            self.pair_local(pipe, id, t);
        }
        Ok(id)
    }

    /// The token of a link to another engine's pipe (`None` for a local link or no link).
    pub fn link_token(&self, pipe: PipeId, link: LinkId) -> Option<TargetToken> {
        let p = self.pipes.get(&pipe)?;
        match p.rare().links.iter().find(|l| l.id == link)?.target {
            Target::External(t) => Some(t),
            Target::Local(_) => None,
        }
    }

    /// Remove a link. A link to another engine's pipe emits [`Event::Unlinked`].
    pub fn unlink(&mut self, pipe: PipeId, link: LinkId) -> Result<(), LinkError> {
        let p = self.pipes.get_mut(&pipe).ok_or(LinkError::NotLinked)?;
        let r = p.rare_opt().ok_or(LinkError::NotLinked)?;
        let i = r
            .links
            .iter()
            .position(|l| l.id == link)
            .ok_or(LinkError::NotLinked)?;
        let l = r.links.remove(i);
        match l.target {
            Target::External(target) => {
                self.events
                    .push_back(Event::Unlinked { pipe, link, target });
            }
            // It may have waited for that target: it reads again unless another is full.
            Target::Local(_) => {
                if !self.still_blocked(pipe) {
                    self.settle(pipe);
                }
            }
        }
        Ok(())
    }

    /// The driver's result of an [`Event::Forward`]: a delivered forward counts in
    /// [`Stats::forwarded`], a failed one in [`Stats::forward_failed`]; a target that is
    /// closed is unlinked. Counted when the driver says, not when the forward was emitted.
    pub fn handle_forward_result(
        &mut self,
        pipe: PipeId,
        link: LinkId,
        result: Result<(), SendError>,
    ) {
        let Some(p) = self.pipes.get_mut(&pipe) else {
            return;
        };
        match result {
            Ok(()) => p.stats.forwarded += 1,
            Err(e) => {
                p.stats.rare().forward_failed += 1;
                if e == SendError::Closed {
                    let _ = self.unlink(pipe, link);
                }
            }
        }
    }

    /// The listener's connections are served by `accept()` from the start (a driver says so
    /// for a listener with no message or end callbacks, which nothing else could serve): a
    /// connection whose peer's FIN comes before the first `accept()` call stays writable for
    /// the user who will take it, as after that call (`half.rs`). A no-op for other pipes.
    pub fn serve_by_accept(&mut self, listener: PipeId) {
        if let Some(l) = self.pipes.get_mut_likely_first(&listener) {
            if l.kind == Kind::TcpListener {
                l.ls_mut().accepting = true;
            }
        }
    }

    /// The next accepted connection not yet handed out, in accept order: `Ok(None)` when
    /// none is waiting, `Err(Closed)` once the listener is closed and the queue is drained,
    /// `Err(NotListener)` at once for a pipe that is not a TCP listener.
    pub fn pop_accepted(&mut self, listener: PipeId) -> Result<Option<PipeId>, RecvError> {
        let l = self
            .pipes
            .get_mut_likely_first(&listener)
            .ok_or(RecvError::Closed)?;
        if l.kind != Kind::TcpListener {
            return Err(RecvError::NotListener(l.kind.name()));
        }
        let open = l.is_open();
        // From now on the listener is served by `accept()`: a connection whose peer sends its
        // FIN while queued stays writable for the user who will take it (`half.rs`).
        l.ls_mut().accepting = true;
        match l.ls_mut().accept_q.pop_front() {
            Some(c) => {
                if let Some(cp) = self.pipes.get_mut(&c) {
                    cp.in_accept_q = false;
                    // Handed to a user, like a `TcpStream`: its peer's FIN (before or after
                    // this) ends reading, not writing, until the user acts (`half.rs`).
                    cp.half.undecided = true;
                }
                // A connection that ended while queued is released once handed out.
                self.maybe_remove(c);
                Ok(Some(c))
            }
            None if open => Ok(None),
            None => Err(RecvError::Closed),
        }
    }

    /// Live (not ended) connections of a listener, in accept order.
    pub fn connections(&self, listener: PipeId) -> Vec<PipeId> {
        let Some(l) = self.pipes.get_likely_first(&listener) else {
            return Vec::new();
        };
        l.ls()
            .children
            .iter()
            .copied()
            .filter(|c| self.pipes.get(c).is_some_and(|p| p.is_open()))
            .collect()
    }

    /// The user gave the pipe up (its last owning handle went): close it, and drop the
    /// messages its subscriptions still hold (counted in [`Stats::queue_dropped`]), since
    /// nobody will read them; the engine can then forget it once its output is flushed.
    pub fn abandon(&mut self, now: Instant, pipe: PipeId) {
        self.close(now, pipe);
        let Some(p) = self.pipes.get_mut(&pipe) else {
            return;
        };
        let mut dropped = 0;
        for s in &mut p.subs {
            while s.queue.pop().is_some() {
                dropped += 1;
            }
        }
        p.stats.rare().queue_dropped += dropped;
        self.settle(pipe);
        self.maybe_remove(pipe);
    }

    /// Close a pipe. A listener closes its connections first (each ends with
    /// [`EndReason::ServerClosed`]), then itself. Idempotent. Reliable sends still waiting end
    /// `Unconfirmed`.
    pub fn close(&mut self, now: Instant, pipe: PipeId) {
        self.tick(now);
        let children = match self.pipes.get(&pipe) {
            Some(p) if p.kind == Kind::TcpListener => p.ls().children.iter().copied().collect(),
            _ => Vec::new(),
        };
        for c in children {
            self.end(c, State::Closing, EndReason::ServerClosed);
        }
        self.end(pipe, State::Closing, EndReason::Local);
    }

    // ---- outputs ----------------------------------------------------------------------

    /// The next transmit of any pipe, pipes in the order they queued output.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        while let Some(id) = self.dirty.pop_front() {
            let Some(p) = self.pipes.get_mut(&id) else {
                continue;
            };
            p.in_dirty = false;
            if let Some(t) = self.poll_transmit_for(id) {
                if let Some(p) = self.pipes.get_mut(&id) {
                    if !p.out.is_empty() && !p.in_dirty {
                        p.in_dirty = true;
                        self.dirty.push_front(id);
                    }
                }
                return Some(t);
            }
        }
        None
    }

    /// The next pipe with queued transmits, each reported once until it queues more (a driver
    /// with one writer per socket drains it with [`Engine::poll_transmit_for`]).
    pub fn poll_dirty(&mut self) -> Option<PipeId> {
        while let Some(id) = self.dirty.pop_front() {
            if let Some(p) = self.pipes.get_mut(&id) {
                p.in_dirty = false;
                if !p.out.is_empty() {
                    return Some(id);
                }
            }
        }
        None
    }

    /// The next transmit of one pipe (a driver with one writer per socket uses this).
    /// The driver takes it as written.
    pub fn poll_transmit_for(&mut self, pipe: PipeId) -> Option<Transmit> {
        let p = self.pipes.get_mut(&pipe)?;
        let t = p.out.pop_front()?;
        p.out_bytes -= t.payload.len();
        p.stats.bytes_out += t.payload.len() as u64;
        if !t.payload.is_empty() {
            // Taken as written at the engine's time: bytes out are idle activity, as they are
            // through `advance_transmit`.
            if let Some(now) = self.now {
                p.t.last_activity = p.t.last_activity.max(p.t.mark(now));
            }
        }
        self.after_write(pipe);
        Some(t)
    }

    /// The next bytes to write for `pipe` and where to, left queued until the driver says
    /// how much it wrote ([`Engine::advance_transmit`]) or that the OS refused a datagram
    /// ([`Engine::drop_transmit`]). A driver that writes this way keeps nothing queued of
    /// its own, so the engine sees every byte's progress (write-stall and close deadlines).
    pub fn peek_transmit(&self, pipe: PipeId) -> Option<(&Bytes, SocketAddr)> {
        let p = self.pipes.get(&pipe)?;
        if p.splice_busy {
            // Spliced bytes are on their way to the socket: nothing may land inside them.
            return None;
        }
        let t = p.out.front()?;
        Some((&t.payload, t.dst))
    }

    /// `n` bytes of the transmit [`Engine::peek_transmit`] gave were written (a datagram is
    /// written whole or not at all).
    pub fn advance_transmit(&mut self, now: Instant, pipe: PipeId, n: usize) {
        self.tick(now);
        let Some(p) = self.pipes.get_mut(&pipe) else {
            return;
        };
        let Some(front) = p.out.front_mut() else {
            return;
        };
        let whole = n >= front.payload.len() || front.proto == crate::addr::Proto::Udp;
        let n = if whole { front.payload.len() } else { n };
        if whole {
            p.out.pop_front();
        } else {
            front.payload = front.payload.slice(n..);
        }
        p.out_bytes -= n;
        p.stats.bytes_out += n as u64;
        if n > 0 {
            p.t.last_activity = p.t.mark(now);
            p.t.stall_since = p.t.mark(now);
        }
        self.after_write(pipe);
    }

    /// The OS refused the datagram [`Engine::peek_transmit`] gave: drop it and count it in
    /// [`Stats::send_failed`]; the pipe lives on.
    pub fn drop_transmit(&mut self, now: Instant, pipe: PipeId) {
        self.tick(now);
        let Some(p) = self.pipes.get_mut(&pipe) else {
            return;
        };
        if let Some(t) = p.out.pop_front() {
            p.out_bytes -= t.payload.len();
            p.stats.rare().send_failed += 1;
        }
        self.after_write(pipe);
    }

    fn after_write(&mut self, pipe: PipeId) {
        let Some(p) = self.pipes.get_mut(&pipe) else {
            return;
        };
        if p.out.is_empty() {
            // An idle pipe keeps no outbound buffer (about 400 bytes per idle connection).
            // A small one becomes the engine's spare, for the next pipe that queues a
            // transmit: a pipe that sends one message at a time allocates none.
            let out = std::mem::take(&mut p.out);
            if out.capacity() <= SPARE_OUT && self.spare_out.capacity() == 0 {
                self.spare_out = out;
            }
            if !p.splice_busy {
                p.t.stall_since = Mark::NONE;
            }
        }
        let done = p.out_idle() && p.state != State::Open;
        if done && p.state == State::Closing {
            p.state = State::Closed;
        }
        if !p.rare().link_waiters.is_empty() {
            self.release_link_waiters(pipe);
            self.settle(pipe);
        } else if !p.settled() {
            self.settle(pipe);
        }
        self.maybe_fin(pipe);
        if done {
            self.maybe_remove(pipe);
        }
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        let e = self.events.pop_front()?;
        if let Event::Readable { pipe } = e {
            if let Some(p) = self.pipes.get_mut(&pipe) {
                p.readable_pending = false;
            }
        }
        Some(e)
    }

    /// When to call [`Engine::handle_timeout`] next: the latest `now` seen while output is
    /// still queued, else the earliest retransmission deadline, else `None`.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if !self.events.is_empty()
            || self
                .dirty
                .iter()
                .any(|id| self.pipes.get(id).is_some_and(|p| !p.out.is_empty()))
        {
            return self.now;
        }
        self.timers.first().map(|t| t.0)
    }

    // ---- queries ----------------------------------------------------------------------

    /// The pipe's lifecycle state; `None` once the engine has forgotten it (ended and drained).
    pub fn state(&self, pipe: PipeId) -> Option<State> {
        self.pipes.get(&pipe).map(|p| p.state)
    }

    /// What the pipe is.
    pub fn kind(&self, pipe: PipeId) -> Option<Kind> {
        self.pipes.get(&pipe).map(|p| p.kind)
    }

    /// The pipe's local address.
    pub fn local_addr(&self, pipe: PipeId) -> Option<SocketAddr> {
        self.pipes.get(&pipe).map(|p| p.local)
    }

    /// The pipe's default destination (a UDP client's dest, a TCP connection's peer).
    pub fn dest(&self, pipe: PipeId) -> Option<SocketAddr> {
        self.pipes.get(&pipe).and_then(|p| p.dest)
    }

    /// The pipe's conf.
    pub fn conf(&self, pipe: PipeId) -> Option<&Conf> {
        self.pipes.get(&pipe).map(|p| &*p.conf)
    }

    /// The pipe's counters.
    pub fn stats(&self, pipe: PipeId) -> Option<Stats> {
        self.pipes.get(&pipe).map(|p| p.stats.snapshot())
    }

    /// A TCP listener's totals over its connections, live and ended (`None` for other
    /// pipes). Costs one pass over the connections the engine still holds; the forgotten
    /// ones were added up when they went.
    pub fn conn_totals(&self, listener: PipeId) -> Option<ConnTotals> {
        let l = self.pipes.get_likely_first(&listener)?;
        let mut t = **l.rare().totals.as_ref()?;
        for c in &l.ls().children {
            if let Some(cp) = self.pipes.get(c) {
                t.add(&cp.stats.snapshot());
            }
        }
        Some(t)
    }

    /// Messages waiting in a subscription.
    pub fn queue_len(&self, pipe: PipeId, sub: SubId) -> Option<usize> {
        let p = self.pipes.get(&pipe)?;
        p.subs.iter().find(|s| s.id == sub).map(|s| s.queue.len())
    }

    /// Bytes waiting to go out, what counts against `max_out_bytes`: those queued for the
    /// pipe's socket, and a TLS pipe's plaintext sent during its handshake (encrypted and
    /// queued when the handshake is done; [`Engine::peek_transmit`] has nothing until then).
    pub fn out_bytes(&self, pipe: PipeId) -> usize {
        self.pipes.get(&pipe).map_or(0, |p| p.queued_out())
    }

    /// Pipes the engine still holds.
    pub fn pipe_count(&self) -> usize {
        self.pipes.len()
    }

    /// True when every queue and table is within its cap (checked by the property tests
    /// after every step).
    pub fn within_caps(&self) -> bool {
        // Lifecycle events are never dropped, and a forgotten pipe's last ones (End,
        // Released) stay queued until the driver polls them: each pipe with events queued
        // counts, known or not.
        let forgotten: std::collections::HashSet<PipeId> = self
            .events
            .iter()
            .map(event_pipe)
            .filter(|p| !self.pipes.contains_key(p))
            .collect();
        self.events.len()
            <= MAX_EVENTS + 4 * (self.pipes.len() + forgotten.len()) + self.timers.len()
            && self.dirty.len() <= self.pipes.len()
            // The spare buffers hold nothing and stay small.
            && self.spare_out.is_empty()
            && self.spare_out.capacity() <= SPARE_OUT
            && self.spare_held.is_empty()
            && self.spare_held.capacity() <= subs::SPARE_HELD
            && self.pipes.iter().all(|(&id, p)| {
                // One message larger than the buffer may be queued alone (see `send`).
                let largest = p.out.iter().map(|t| t.payload.len()).max().unwrap_or(0);
                // A stream pipe takes whole every read its local sources forwarded before
                // they paused (`forward_local`): one read each, by the driver's contract. A
                // read is re-framed frame by frame, and a TLS target makes each frame a
                // record (22 bytes more): a 1-byte delimited frame grows 23 times.
                let sources = if p.kind.is_stream() {
                    self.pipes
                        .values()
                        .filter(|s| {
                            s.rare()
                                .links
                                .iter()
                                .any(|l| matches!(l.target, Target::Local(t) if t == id))
                        })
                        .count()
                } else {
                    0
                };
                let internal_cap = p.conf.max_out_bytes * INTERNAL_OUT_FACTOR
                    + MAX_UDP_V6
                    + 64
                    + largest
                    + sources * 23 * p.conf.reader_limit.max(1 << 14);
                p.subs.len() <= MAX_SUBSCRIPTIONS
                    && p.rare().links.len() <= MAX_LINKS
                    && p.subs.iter().all(|s| s.queue.within_caps())
                    && p.dedup.as_ref().is_none_or(|d| d.within_caps())
                    && p.out_bytes <= internal_cap + p.conf.max_out_bytes
                    && p.out.len() <= MAX_OUT_TRANSMITS
                    && p.rare()
                        .rel
                        .as_ref()
                        .is_none_or(|r| r.outstanding.len() <= p.conf.max_reliable_outstanding)
                    && p.rare().seen.as_ref().is_none_or(|s| s.within_caps())
                    && p.rare().stamps.as_ref().is_none_or(|s| s.within_caps())
                    && p.ls().accept_q.len() <= p.conf.accept_backlog
                    && p.ls().children.len() <= p.conf.max_connections
                    && p.ls().handshakes.len() <= p.conf.max_handshakes
                    && p.deframer
                        .as_ref()
                        .is_none_or(|d| d.buffered() <= d.max_buffered())
            })
    }

    // ---- helpers ----------------------------------------------------------------------

    fn tick(&mut self, now: Instant) {
        if self.now.is_none_or(|n| now > n) {
            self.now = Some(now);
        }
    }

    /// End a pipe once: emit `End`, fail outstanding reliable sends, leave `state`.
    fn end(&mut self, pipe: PipeId, state: State, reason: EndReason) {
        let Some(p) = self.pipes.get_mut(&pipe) else {
            return;
        };
        if p.state != State::Open {
            return;
        }
        if state == State::Closing {
            // A clean TLS end: close_notify goes out with the rest of the queue.
            if let Some(t) = p.session.tls() {
                t.close_notify();
                self.flush_tls(pipe);
            }
        }
        self.uncount_handshake(pipe);
        let Some(p) = self.pipes.get_mut(&pipe) else {
            return;
        };
        p.state = if state == State::Closing && p.out_idle() {
            State::Closed
        } else {
            state
        };
        p.t.ended = p.t.mark_opt(self.now);
        if !p.rare().link_waiters.is_empty() {
            // It takes no more forwards: the pipes waiting to forward into it read again.
            self.release_link_waiters(pipe);
        }
        let Some(p) = self.pipes.get_mut(&pipe) else {
            return;
        };
        if let Kind::TcpConn { listener } = p.kind {
            if let Some(t) = self
                .pipes
                .get_mut(&listener)
                .and_then(|l| l.rare_opt()?.totals.as_deref_mut())
            {
                t.ended += 1;
            }
        }
        let Some(p) = self.pipes.get_mut(&pipe) else {
            return;
        };
        let outstanding = p
            .rel_mut()
            .map(|r| std::mem::take(&mut r.outstanding))
            .unwrap_or_default();
        for (seq, pending) in &outstanding {
            self.timers.remove(&(pending.deadline, pipe, *seq));
        }
        for (seq, pending) in outstanding {
            self.outcome(pipe, seq, pending.forgotten, Outcome::Unconfirmed);
        }
        self.events.push_back(Event::End { pipe, reason });
        // A relay partner's write side ends with this pipe, after what was forwarded.
        self.propagate_shutdown(pipe);
        // Nothing more arrives to forward: the driver's handles on external targets go.
        if let Some(p) = self.pipes.get_mut(&pipe) {
            let links = p
                .rare_opt()
                .map(|r| std::mem::take(&mut r.links))
                .unwrap_or_default();
            for l in links {
                if let Target::External(target) = l.target {
                    self.events.push_back(Event::Unlinked {
                        pipe,
                        link: l.id,
                        target,
                    });
                }
            }
        }
        self.rearm(pipe);
        self.maybe_remove(pipe);
    }

    /// A reliable send finished: count it, keep the outcome for the waiter, emit the event.
    pub(crate) fn finish_reliable(&mut self, pipe: PipeId, seq: u64, outcome: Outcome) {
        let forgotten = self
            .pipes
            .get(&pipe)
            .and_then(|p| p.rare().rel.as_ref()?.outstanding.get(&seq))
            .is_some_and(|o| o.forgotten);
        if let Some(rel) = self.pipes.get_mut(&pipe).and_then(|p| p.rel_mut()) {
            rel.outstanding.remove(&seq);
        }
        self.outcome(pipe, seq, forgotten, outcome);
    }

    fn outcome(&mut self, pipe: PipeId, seq: u64, forgotten: bool, outcome: Outcome) {
        let Some(p) = self.pipes.get_mut(&pipe) else {
            return;
        };
        match outcome {
            Outcome::Acked => p.stats.rare().acked += 1,
            Outcome::Unconfirmed => p.stats.rare().unconfirmed += 1,
        }
        if let (false, Some(rel)) = (forgotten, p.rel_mut()) {
            rel.outcomes.push((MessageId(seq), outcome));
        }
        self.events.push_back(Event::Reliable {
            pipe,
            id: MessageId(seq),
            outcome,
        });
    }

    /// Arm the pipe's deadline entry if its earliest deadline is earlier than the armed one.
    /// Deadlines that move later (activity) are found when the entry fires and re-armed.
    fn rearm(&mut self, pipe: PipeId) {
        let Some(p) = self.pipes.get_mut(&pipe) else {
            return;
        };
        let Some(at) = next_deadline(p) else {
            return;
        };
        // The entry's instant is the mark's, so that `armed` finds it again (they differ
        // only for a deadline some 292 years away).
        let mark = p.t.mark(at);
        if p.t.armed != Mark::NONE && p.t.armed <= mark {
            return;
        }
        if let Some(old) = p.t.rearm(mark) {
            self.timers.remove(&(old, pipe, DEADLINE));
        }
        if let Some(at) = p.t.at(mark) {
            self.timers.insert((at, pipe, DEADLINE));
        }
    }

    /// The pipe's deadline entry fired: end it if a deadline passed, else re-arm.
    fn fire_deadline(&mut self, now: Instant, pipe: PipeId) {
        let Some(p) = self.pipes.get_mut(&pipe) else {
            return;
        };
        p.t.armed = Mark::NONE;
        if p.t.at(p.t.recv_due).is_some_and(|d| d <= now) {
            p.t.recv_due = Mark::NONE;
            self.events.push_back(Event::RecvDue { pipe });
        }
        let c = &p.conf;
        let passed = |since: Option<Instant>, limit: Option<std::time::Duration>| matches!((since, limit), (Some(s), Some(l)) if s + l <= now);
        if p.is_open() {
            let reason =
                if p.session.handshaking() && passed(Some(p.t.opened), Some(c.ssl_handshake)) {
                    Some(EndReason::Tls(crate::tls::TlsError::HandshakeTimeout))
                } else if p.kind.is_conn()
                    && !p.t.got_message
                    && passed(Some(p.t.opened), c.first_message_timeout)
                {
                    Some(EndReason::FirstMessageTimeout)
                } else if passed(p.t.at(p.t.stall_since), c.write_stall_timeout) {
                    Some(EndReason::WriteStalled {
                        unsent: p.out_bytes,
                    })
                } else if p.kind != Kind::TcpListener
                    && passed(Some(p.t.last_activity()), c.idle_timeout)
                {
                    Some(EndReason::IdleTimeout)
                } else {
                    None
                };
            if let Some(reason) = reason {
                let stalled = matches!(reason, EndReason::WriteStalled { .. });
                log::debug!("{pipe}: {reason}");
                self.end(pipe, State::Closing, reason);
                if stalled {
                    self.discard_out(pipe);
                }
                return;
            }
        } else if !p.out_idle() && passed(p.t.at(p.t.ended), Some(c.close_timeout)) {
            log::debug!("{pipe}: {} bytes unsent at the close deadline", p.out_bytes);
            self.discard_out(pipe);
            return;
        }
        self.rearm(pipe);
    }

    /// Drop what is queued for an ended pipe's socket, counted, and release it.
    fn discard_out(&mut self, pipe: PipeId) {
        let Some(p) = self.pipes.get_mut(&pipe) else {
            return;
        };
        let unsent = std::mem::take(&mut p.out_bytes);
        p.out = VecDeque::new();
        // Bytes spliced for it are the driver's to count (`Engine::splice_end`).
        p.splice_busy = false;
        p.stats.rare().unsent_dropped += unsent as u64;
        p.t.stall_since = Mark::NONE;
        if p.state == State::Closing {
            p.state = State::Closed;
        }
        self.release(pipe, unsent);
        self.settle(pipe);
        self.maybe_remove(pipe);
    }

    /// Emit `Released` once, when the pipe ended and nothing is left to write.
    fn release(&mut self, pipe: PipeId, unsent: usize) {
        let Some(p) = self.pipes.get_mut(&pipe) else {
            return;
        };
        if p.t.released || p.state == State::Open || !p.out_idle() {
            return;
        }
        p.t.released = true;
        if let Some(at) = p.t.rearm(Mark::NONE) {
            self.timers.remove(&(at, pipe, DEADLINE));
        }
        // A `recv` may still wait for messages held by callbacks.
        self.rearm(pipe);
        self.events.push_back(Event::Released { pipe, unsent });
    }

    /// `source` just forwarded into `target`: if that filled it, `source` waits on it (its
    /// reading pauses at its next `settle`).
    pub(crate) fn wait_if_full(&mut self, source: PipeId, target: PipeId) {
        let Some(tp) = self.pipes.get_mut(&target).filter(|tp| tp.link_full()) else {
            return;
        };
        if !tp.rare().link_waiters.contains(&source) {
            tp.rare_mut().link_waiters.push(source);
        }
        if let Some(s) = self.pipes.get_mut(&source) {
            s.t.link_blocked = true;
        }
    }

    /// Whether `source` must still wait for a full stream target of its local links (it
    /// then waits on each); false once none is full, and its reading may resume.
    fn still_blocked(&mut self, source: PipeId) -> bool {
        let targets: Vec<PipeId> = match self.pipes.get(&source) {
            Some(s) => s
                .rare()
                .links
                .iter()
                .filter_map(|l| match l.target {
                    Target::Local(t) => Some(t),
                    Target::External(_) => None,
                })
                .collect(),
            None => return false,
        };
        let mut blocked = false;
        for t in targets {
            if self.pipes.get(&t).is_some_and(|tp| tp.link_full()) {
                self.wait_if_full(source, t);
                blocked = true;
            }
        }
        if let Some(s) = self.pipes.get_mut(&source) {
            s.t.link_blocked = blocked;
        }
        blocked
    }

    /// A stream pipe drained below its buffer, or can no longer write: the pipes waiting to
    /// forward into it look again (each still waits on any other full target), and resume
    /// reading if none is full.
    pub(crate) fn release_link_waiters(&mut self, target: PipeId) {
        let Some(tp) = self.pipes.get_mut(&target) else {
            return;
        };
        if tp.rare().link_waiters.is_empty() || tp.link_full() {
            return;
        }
        for s in std::mem::take(&mut tp.rare_mut().link_waiters) {
            if !self.still_blocked(s) {
                self.settle(s);
            }
        }
    }

    /// Recount the bytes the pipe holds into its server's budget, and pause or resume it.
    pub(crate) fn settle(&mut self, pipe: PipeId) {
        let Some(p) = self.pipes.get_mut(&pipe) else {
            return;
        };
        let own = p.over_own_caps();
        let Kind::TcpConn { listener } = p.kind else {
            // No server budget: only the pipe's own caps (one lookup on the hot path). What
            // it holds is not counted: `t.mem` is read only for a connection (its listener's
            // budget), so the sum over its queues is not made per message.
            if own != p.t.paused {
                self.set_paused(pipe, own, None);
            }
            return;
        };
        let held = p.held();
        let old = std::mem::replace(&mut p.t.mem, held);
        if held == old && own == p.t.paused && !p.t.paused {
            // Nothing this pipe holds changed: its standing against the budget did not
            // either (a budget crossing is handled where it happens, for every holder).
            return;
        }
        let paused = p.t.paused;
        self.settle_budget(pipe, listener, own, (old, held), paused);
    }

    /// The rest of [`Engine::settle`] for a connection whose held bytes or pause changed:
    /// its listener's budget, and its pause. Apart, so that the common path stays short.
    #[inline(never)]
    fn settle_budget(
        &mut self,
        pipe: PipeId,
        listener: PipeId,
        own: bool,
        (old, held): (usize, usize),
        paused: bool,
    ) {
        // `crossed`: the budget's use crossed its limit, which `budget_changed` acts on (one
        // lookup of the listener when it did not, the common case).
        let (over, crossed) = match self.pipes.get_mut_likely_first(&listener) {
            Some(l) => {
                if held != old {
                    l.ls_mut().budget_used = (l.ls().budget_used + held).saturating_sub(old);
                }
                let over = l.ls().budget_used >= l.conf.max_server_bytes;
                (over, held != old && over != l.ls().over_budget)
            }
            None => (false, false),
        };
        if crossed {
            self.budget_changed(listener);
        }
        // A crossing sets every pipe it touches to this same rule (`mem` is `held` already)
        // and leaves the others as they were, so `paused` is still the pipe's standing
        // unless this changes it.
        let pause = own || (over && held > 0);
        if pause != paused {
            self.set_paused(pipe, pause, Some(listener));
        }
    }

    /// A server's budget use changed. Crossing the budget pauses every connection that
    /// holds bytes (one that holds none may still read, so a well-behaved client is served);
    /// falling back under it resumes those not over their own caps. Each crossing costs one
    /// pass over the connections; between crossings nothing is scanned.
    fn budget_changed(&mut self, listener: PipeId) {
        let Some(l) = self.pipes.get_mut_likely_first(&listener) else {
            return;
        };
        let over = l.ls().budget_used >= l.conf.max_server_bytes;
        if over == l.ls().over_budget {
            return;
        }
        l.ls_mut().over_budget = over;
        let affected: Vec<PipeId> = if over {
            l.ls().children.iter().copied().collect()
        } else {
            std::mem::take(&mut l.ls_mut().paused_children)
                .into_iter()
                .collect()
        };
        for c in affected {
            let Some(cp) = self.pipes.get(&c) else {
                continue;
            };
            let pause = cp.over_own_caps() || (over && cp.t.mem > 0);
            self.set_paused(c, pause, Some(listener));
        }
    }

    fn set_paused(&mut self, pipe: PipeId, pause: bool, listener: Option<PipeId>) {
        let Some(p) = self.pipes.get_mut(&pipe) else {
            return;
        };
        if p.t.paused == pause {
            return;
        }
        p.t.paused = pause;
        if pause {
            p.stats.rare().paused += 1;
            self.events.push_back(Event::Pause { pipe });
            if let Some(l) = listener.and_then(|l| self.pipes.get_mut_likely_first(&l)) {
                l.ls_mut().paused_children.insert(pipe);
            }
        } else {
            self.events.push_back(Event::Resume { pipe });
            if let Some(l) = listener.and_then(|l| self.pipes.get_mut_likely_first(&l)) {
                l.ls_mut().paused_children.remove(&pipe);
            }
        }
    }

    /// Forget a pipe that nobody can read from or send through any more.
    fn maybe_remove(&mut self, pipe: PipeId) {
        self.release(pipe, 0);
        let Some(p) = self.pipes.get(&pipe) else {
            return;
        };
        if !p.is_spent() {
            return;
        }
        let parent = match p.kind {
            Kind::TcpConn { listener } => Some(listener),
            _ => None,
        };
        if p.in_dirty {
            // Drained with `poll_transmit_for` only: drop the stale entry.
            self.dirty.retain(|d| *d != pipe);
        }
        let mem = p.t.mem;
        // The listener's totals take the connection's counts; its state is then dropped in
        // place (a 384-byte move out of the table for every connection otherwise).
        let counts = parent
            .and_then(|l| self.pipes.get_likely_first(&l))
            .and_then(|lp| lp.rare.as_deref())
            .is_some_and(|r| r.totals.is_some())
            .then(|| p.stats.snapshot());
        self.pipes.discard(&pipe);
        if let Some(l) = parent {
            if let Some(lp) = self.pipes.get_mut_likely_first(&l) {
                if let (Some(t), Some(c)) =
                    (lp.rare_opt().and_then(|r| r.totals.as_deref_mut()), counts)
                {
                    t.add(&c);
                }
                lp.ls_mut().children.remove(&pipe);
                lp.ls_mut().budget_used = lp.ls().budget_used.saturating_sub(mem);
                lp.ls_mut().paused_children.remove(&pipe);
            }
            self.budget_changed(l);
            self.maybe_remove(l);
        }
    }

    /// Frame a user payload for `p`'s socket and pick the destination. `shared`: `data` as a
    /// `Bytes` already (a forwarded message), which becomes the transmit itself when nothing
    /// is added to it (plain UDP, a plain raw stream) instead of a copy of it.
    fn frame_out(
        p: &mut PipeState,
        data: &[u8],
        shared: Option<&Bytes>,
        dest: Option<SocketAddr>,
    ) -> Result<(SocketAddr, Bytes), SendError> {
        match p.kind {
            Kind::TcpListener => Err(SendError::WrongKind(p.kind.name())),
            Kind::TcpClient | Kind::TcpConn { .. } => {
                let peer = p.dest.ok_or(SendError::NoDestination)?;
                if let Some(d) = dest {
                    if !same_endpoint(&d, &peer) {
                        return Err(SendError::NotConnectedTo(d));
                    }
                }
                let out = match &p.deframer {
                    Some(deframer) => {
                        let framed = deframer.frame(data)?;
                        p.session.outbound(framed)?
                    }
                    None => match shared {
                        Some(b) if p.session.is_plain() => b.clone(),
                        _ => p.session.outbound_slice(data)?,
                    },
                };
                Ok((peer, out))
            }
            Kind::Udp => {
                let dst = udp_dest(p, dest)?;
                check_udp_size(p, dst, data.len())?;
                let payload = if p.conf.reliable_udp {
                    rudp::encode(0, rudp::FLAG_PLAIN, data)
                } else {
                    shared.map_or_else(|| Bytes::copy_from_slice(data), Bytes::clone)
                };
                Ok((dst, payload))
            }
        }
    }

    fn push_out(&mut self, pipe: PipeId, dst: SocketAddr, payload: Bytes) {
        let Some(p) = self.pipes.get_mut(&pipe) else {
            return;
        };
        let stall_starts = p.out.is_empty() && p.conf.write_stall_timeout.is_some();
        if p.out.is_empty() {
            p.t.stall_since = p.t.mark_opt(self.now);
        }
        p.out_bytes += payload.len();
        if p.out.capacity() == 0 {
            p.out = std::mem::take(&mut self.spare_out);
        }
        p.out.push_back(Transmit {
            pipe,
            proto: p.kind.proto(),
            src: p.local,
            dst,
            payload,
        });
        if !p.in_dirty {
            p.in_dirty = true;
            self.dirty.push_back(pipe);
        }
        if stall_starts {
            self.rearm(pipe);
        }
    }

    /// Queue an engine-made transmit (ACK, forward, retransmit), dropping it past the hard cap.
    fn push_internal(&mut self, pipe: PipeId, dst: SocketAddr, payload: Bytes) -> bool {
        let Some(p) = self.pipes.get_mut(&pipe) else {
            return false;
        };
        if p.out_bytes + payload.len() > p.conf.max_out_bytes * INTERNAL_OUT_FACTOR + MAX_UDP_V6
            || p.out.len() >= MAX_OUT_TRANSMITS
        {
            p.stats.rare().out_dropped += 1;
            return false;
        }
        self.push_out(pipe, dst, payload);
        true
    }
}

fn udp_dest(p: &PipeState, dest: Option<SocketAddr>) -> Result<SocketAddr, SendError> {
    let dst = dest.or(p.dest).ok_or(SendError::NoDestination)?;
    if dst.port() == 0 {
        return Err(SendError::PortZero);
    }
    let (local, want) = (Family::of_addr(&p.local), Family::of_addr(&dst));
    if local != want {
        return Err(SendError::FamilyMismatch { local, dest: want });
    }
    Ok(dst)
}

fn check_udp_size(p: &PipeState, dst: SocketAddr, len: usize) -> Result<(), SendError> {
    let header = if p.conf.reliable_udp { rudp::HEADER } else { 0 };
    let max = match Family::of_addr(&dst) {
        Family::V4 => MAX_UDP_V4,
        Family::V6 => MAX_UDP_V6,
    } - header;
    if len > max {
        return Err(SendError::TooLarge { len, max });
    }
    Ok(())
}

/// The earliest deadline of a pipe: a waiting `recv`'s in any state, and idle, first message,
/// write stall while open; the close deadline while it flushes after its end.
fn next_deadline(p: &PipeState) -> Option<Instant> {
    match (own_deadline(p), p.t.at(p.t.recv_due)) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn own_deadline(p: &PipeState) -> Option<Instant> {
    let c = &p.conf;
    if p.t.released {
        return None;
    }
    if !p.is_open() {
        return if p.out_idle() {
            None
        } else {
            p.t.at(p.t.ended).map(|e| e + c.close_timeout)
        };
    }
    let handshake = p
        .session
        .handshaking()
        .then(|| p.t.opened + c.ssl_handshake);
    let first = (p.kind.is_conn() && !p.t.got_message)
        .then_some(c.first_message_timeout)
        .flatten()
        .map(|t| p.t.opened + t);
    let stall =
        p.t.at(p.t.stall_since)
            .zip(c.write_stall_timeout)
            .map(|(s, t)| s + t);
    let idle = (p.kind != Kind::TcpListener)
        .then_some(c.idle_timeout)
        .flatten()
        .map(|t| p.t.last_activity() + t);
    [handshake, first, stall, idle].into_iter().flatten().min()
}

/// The pipe an event is about: a listener's for `Accepted`, the sender's for forwards.
fn event_pipe(ev: &Event) -> PipeId {
    match ev {
        Event::Up { pipe }
        | Event::Message { pipe, .. }
        | Event::SubMessage { pipe, .. }
        | Event::Readable { pipe }
        | Event::RecvDue { pipe }
        | Event::Unlinked { pipe, .. }
        | Event::Reliable { pipe, .. }
        | Event::End { pipe, .. }
        | Event::Released { pipe, .. }
        | Event::WriteShut { pipe }
        | Event::Pause { pipe }
        | Event::Resume { pipe } => *pipe,
        Event::Accepted { listener, .. } => *listener,
        Event::Forward { from, .. } | Event::ForwardShutdown { from, .. } => *from,
    }
}
