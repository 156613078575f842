//! The state of one pipe inside the engine.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::addr::Proto;
use crate::conf::Conf;
use crate::dedup::{Dedup, RecvWindow, StampWindow};
use crate::event::{LinkId, PipeId, SubId, TargetToken, Transmit};
use crate::framing::{Deframer, Session};
use crate::rudp::Pending;
use crate::sub::Subscription;

/// What a pipe is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A UDP socket, with or without a default destination.
    Udp,
    /// A TCP connection this side opened.
    TcpClient,
    /// A TCP listener.
    TcpListener,
    /// A TCP connection accepted by a listener.
    TcpConn {
        /// The listener that accepted it.
        listener: PipeId,
    },
}

impl Kind {
    /// The protocol.
    pub fn proto(self) -> Proto {
        match self {
            Kind::Udp => Proto::Udp,
            _ => Proto::Tcp,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Udp => "UDP pipe",
            Kind::TcpClient => "TCP client",
            Kind::TcpListener => "TCP listener",
            Kind::TcpConn { .. } => "TCP connection",
        }
    }

    pub(crate) fn is_conn(self) -> bool {
        matches!(self, Kind::TcpConn { .. })
    }

    pub(crate) fn is_stream(self) -> bool {
        matches!(self, Kind::TcpClient | Kind::TcpConn { .. })
    }
}

/// Lifecycle of a pipe: `Open → PeerClosed | Closing → Closed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Sending and receiving.
    Open,
    /// The peer closed or reset; queued messages can still be received, sends fail.
    PeerClosed,
    /// Closed locally; transmits queued before the close are still handed out.
    Closing,
    /// Done.
    Closed,
}

/// Counters of one pipe. Every message that does not reach a queue or callback is in one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Messages that entered the pipeline (after reliable-UDP control, before dedup).
    pub received: u64,
    /// Dropped by dedup: `enable_msg_ids`, or a relay stamp (origin, id) already seen.
    pub duplicates: u64,
    /// Messages queued, counting each subscription they were queued on.
    pub queued: u64,
    /// Messages dropped from full subscription queues (drop-oldest).
    pub queue_dropped: u64,
    /// Messages that matched no subscription and had no callback to go to.
    pub unclaimed: u64,
    /// Message and forward events dropped because the engine's event queue was full (a dropped
    /// forward also counts in `forward_failed`).
    pub events_dropped: u64,
    /// Messages forwarded through links.
    pub forwarded: u64,
    /// Forwards that failed (target closed, full or wrong family).
    pub forward_failed: u64,
    /// Reliable-UDP datagrams that were not valid frames, and messages with a relay stamp
    /// header cut short.
    pub malformed: u64,
    /// Reliable-UDP retransmissions received again (inside the window) and dropped.
    pub reliable_repeats: u64,
    /// ACKs for nothing outstanding, or from the wrong address.
    pub stray_acks: u64,
    /// Reliable sends acknowledged.
    pub acked: u64,
    /// Reliable sends that ended unconfirmed.
    pub unconfirmed: u64,
    /// Retransmissions made.
    pub retransmits: u64,
    /// Internal transmits (ACKs, forwards) dropped because the outbound buffer was over its hard cap.
    pub out_dropped: u64,
    /// Accepted connections dropped from the accept queue (still served) because it was full.
    pub accept_dropped: u64,
    /// Datagrams or bytes that arrived for a pipe that cannot take them (closed, listener).
    pub ignored: u64,
    /// Bytes received from the socket.
    pub bytes_in: u64,
    /// Bytes written to the socket.
    pub bytes_out: u64,
    /// Messages written to the socket (datagrams, or sends on a stream).
    pub sent: u64,
    /// Bytes dropped unsent when the pipe ended (close deadline, or a stalled peer).
    pub unsent_dropped: u64,
    /// Datagrams the OS refused to send after they were queued (counted, not retried).
    pub send_failed: u64,
    /// Times the pipe stopped reading because of a cap (see [`crate::Event::Pause`]).
    pub paused: u64,
    /// A TLS listener: handshakes ended to make room at `max_handshakes` (oldest first).
    pub handshakes_evicted: u64,
    /// Stamped messages (`Conf::relay_stamp`) delivered locally but not forwarded through the
    /// pipe's links because they had no hops left.
    pub hop_limited: u64,
    /// Reliable-UDP data frames more than `reliable_window` below their sender's highest
    /// sequence number: dropped and not acknowledged (the sender ends them `Unconfirmed`).
    pub reliable_too_old: u64,
    /// Bytes read from the socket and moved to the link's target in the kernel
    /// (zero-copy relaying, [`crate::Conf::zero_copy`]); also counted in `bytes_in`.
    pub spliced_in: u64,
    /// Bytes written to the socket straight from a linked pipe's socket in the kernel (zero
    /// copy); also counted in `bytes_out`.
    pub spliced_out: u64,
}

/// Totals over a TCP listener's connections, the ended ones included
/// ([`crate::Engine::conn_totals`]). Each connection's own figures are in its [`Stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnTotals {
    /// Connections the listener registered (refused ones are not counted).
    pub accepted: u64,
    /// Of those, connections that have ended.
    pub ended: u64,
    /// Bytes received from their sockets.
    pub bytes_in: u64,
    /// Bytes written to their sockets.
    pub bytes_out: u64,
    /// Messages that entered their inbound pipelines.
    pub received: u64,
    /// Messages written to their sockets.
    pub sent: u64,
    /// Bytes their sockets' reads moved to a link's target in the kernel (zero copy).
    pub spliced_in: u64,
    /// Bytes written to their sockets from a linked pipe's socket in the kernel (zero copy).
    pub spliced_out: u64,
}

impl ConnTotals {
    /// Add one connection's counters.
    pub(crate) fn add(&mut self, s: &Stats) {
        self.bytes_in += s.bytes_in;
        self.bytes_out += s.bytes_out;
        self.received += s.received;
        self.sent += s.sent;
        self.spliced_in += s.spliced_in;
        self.spliced_out += s.spliced_out;
    }
}

/// A pipe's counters as the engine keeps them: the ones every busy pipe moves inline, the
/// rest (errors, drops, reliable UDP, TLS) in a box made the first time one of them moves, so
/// an idle connection carries 56 bytes of counters instead of a 208-byte `Stats`.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) received: u64,
    pub(crate) queued: u64,
    pub(crate) forwarded: u64,
    pub(crate) bytes_in: u64,
    pub(crate) bytes_out: u64,
    pub(crate) sent: u64,
    rare: Option<Box<Stats>>,
}

impl Counters {
    /// The counters that move rarely, made on first use.
    pub(crate) fn rare(&mut self) -> &mut Stats {
        self.rare.get_or_insert_with(Box::default)
    }

    /// All counters as the public `Stats`.
    pub(crate) fn snapshot(&self) -> Stats {
        let mut s = self.rare.as_deref().copied().unwrap_or_default();
        s.received = self.received;
        s.queued = self.queued;
        s.forwarded = self.forwarded;
        s.bytes_in = self.bytes_in;
        s.bytes_out = self.bytes_out;
        s.sent = self.sent;
        s
    }
}

#[derive(Debug)]
pub(crate) struct Link {
    pub(crate) id: LinkId,
    pub(crate) target: Target,
    pub(crate) dest: Option<SocketAddr>,
    pub(crate) from: Option<SocketAddr>,
    /// The target links back to this pipe (a relay pair): the peer's FIN, or this pipe's end,
    /// shuts the target's write side after what was forwarded (half-close propagation).
    pub(crate) paired: bool,
}

/// Half-close state of a stream pipe (all false for the others).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Half {
    /// The peer sent its FIN (or TLS `close_notify`): nothing more will be read.
    pub(crate) read_closed: bool,
    /// The local side shut its write side: sends fail; the FIN follows the queued bytes.
    pub(crate) write_shut: bool,
    /// `Event::WriteShut` was emitted (the driver shut the socket's write side).
    pub(crate) fin_out: bool,
    /// Stream mode: after the peer's FIN the pipe stays writable until it is shut down or
    /// closed locally (like a `TcpStream`), instead of ending once idle.
    pub(crate) keep_writable: bool,
    /// A connection `accept()` handed out, held by its user like a `TcpStream` until the
    /// user acts on it in P2PD's way (a callback edit, a wait for its end: see
    /// [`Engine::user_acts`]): the peer's FIN ends its reading, not its writing.
    ///
    /// [`Engine::user_acts`]: crate::Engine::user_acts
    pub(crate) undecided: bool,
}

/// Where a link goes, as the engine knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    Local(PipeId),
    External(TargetToken),
}

/// What only a listener keeps, boxed so that each of its connections does not carry it.
#[derive(Debug, Default)]
pub(crate) struct Listening {
    /// Live connections, in accept order (ids grow).
    pub(crate) children: BTreeSet<PipeId>,
    pub(crate) accept_q: VecDeque<PipeId>,
    /// Connections in a TLS handshake, oldest first.
    pub(crate) handshakes: BTreeSet<PipeId>,
    /// The bytes all its connections hold, and whether that is over its budget.
    pub(crate) budget_used: usize,
    pub(crate) over_budget: bool,
    /// Connections paused while it was over budget.
    pub(crate) paused_children: BTreeSet<PipeId>,
    /// `accept()` was called: its queued connections wait for a user who may answer.
    pub(crate) accepting: bool,
}

static NOT_LISTENING: Listening = Listening {
    children: BTreeSet::new(),
    accept_q: VecDeque::new(),
    handshakes: BTreeSet::new(),
    budget_used: 0,
    over_budget: false,
    paused_children: BTreeSet::new(),
    accepting: false,
};

/// What few pipes have: links, reliable-UDP state, relay stamps, a listener's state. Every
/// pipe carries one pointer for all of it, allocated the first time the pipe needs any of it
/// (an idle accepted connection then fits a 400-byte malloc chunk instead of a 528-byte one).
#[derive(Debug)]
pub(crate) struct Rare {
    pub(crate) links: Vec<Link>,
    /// Pipes of this engine whose local links into this stream pipe found it full, and which
    /// pause until it drains below `max_out_bytes` (or ends).
    pub(crate) link_waiters: Vec<PipeId>,
    pub(crate) next_link: u64,
    /// Reliable-UDP sends (reliable UDP pipes only).
    pub(crate) rel: Option<Box<Reliable>>,
    /// Reliable-UDP receive window (reliable UDP pipes).
    pub(crate) seen: Option<Box<RecvWindow>>,
    /// The (origin, message id) window of a stamping pipe (`Conf::relay_stamp`).
    pub(crate) stamps: Option<Box<StampWindow>>,
    /// A listener: the counters of its connections already forgotten, and how many it had.
    pub(crate) totals: Option<Box<ConnTotals>>,
    /// A listener's own state; `None` for every other pipe (see [`PipeState::ls`]).
    listening: Option<Box<Listening>>,
}

impl Rare {
    const fn new() -> Self {
        Self {
            links: Vec::new(),
            link_waiters: Vec::new(),
            next_link: 1,
            rel: None,
            seen: None,
            stamps: None,
            totals: None,
            listening: None,
        }
    }
}

static NO_RARE: Rare = Rare::new();

#[derive(Debug)]
pub(crate) struct PipeState {
    pub(crate) kind: Kind,
    pub(crate) local: SocketAddr,
    pub(crate) dest: Option<SocketAddr>,
    pub(crate) conf: Arc<Conf>,
    pub(crate) state: State,
    pub(crate) callbacks: bool,
    pub(crate) parent_callbacks: bool,
    pub(crate) subs: Vec<Subscription>,
    /// Messages waiting for their callbacks before the subscriptions get them (`subs.rs`).
    pub(crate) held: VecDeque<crate::sub::Held>,
    pub(crate) next_sub: u64,
    /// The [`SubId::ALL`] subscription is the fallback an accepted connection starts with when
    /// its listener has no message callbacks: it takes only messages that no link and no
    /// callback took (so `accept()` loses no bytes, and a linked connection queues nothing).
    /// Subscribing to everything makes it an ordinary subscription.
    pub(crate) fallback_all: bool,
    pub(crate) readable_pending: bool,
    pub(crate) dedup: Option<Box<Dedup>>,
    /// Links, reliable UDP, relay stamps, a listener's state ([`PipeState::rare`]).
    pub(crate) rare: Option<Box<Rare>>,
    pub(crate) session: Session,
    /// `None` for datagrams and for `Framing::Raw` streams.
    pub(crate) deframer: Option<Box<Deframer>>,
    pub(crate) out: VecDeque<Transmit>,
    pub(crate) out_bytes: usize,
    pub(crate) in_dirty: bool,
    /// The socket is reserved for bytes spliced into it (`engine/splice.rs`): the queue waits.
    pub(crate) splice_busy: bool,
    pub(crate) in_accept_q: bool,
    pub(crate) stats: Counters,
    pub(crate) half: Half,
    pub(crate) t: Timing,
}

/// The sending side of a reliable UDP pipe.
#[derive(Debug, Default)]
pub(crate) struct Reliable {
    pub(crate) next_seq: u64,
    pub(crate) outstanding: BTreeMap<u64, Pending>,
    /// Reliable outcomes not yet taken by the driver.
    pub(crate) outcomes: Vec<(crate::event::MessageId, crate::event::Outcome)>,
}

/// An instant in 8 bytes instead of `Option<Instant>`'s 16: signed nanoseconds from the
/// pipe's [`Timing::opened`], or none. Exact for any instant within about 292 years of it;
/// further ones saturate there (a deadline that far away never fires either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Mark(i64);

impl Mark {
    /// No instant. The smallest mark: `max` with it gives the other.
    pub(crate) const NONE: Self = Self(i64::MIN);
}

/// Deadlines, memory accounting and release state of one pipe.
#[derive(Debug)]
pub(crate) struct Timing {
    pub(crate) opened: Instant,
    pub(crate) last_activity: Mark,
    pub(crate) got_message: bool,
    /// When the outbound queue last made progress (or became non-empty).
    pub(crate) stall_since: Mark,
    pub(crate) ended: Mark,
    /// The deadline entry in the engine's timer set (the instant of [`Timing::at`]).
    pub(crate) armed: Mark,
    pub(crate) released: bool,
    /// Bytes and count of messages handed to callbacks, not yet finished.
    pub(crate) held_bytes: usize,
    pub(crate) held_jobs: usize,
    /// Bytes this pipe holds as last counted into its server's budget (accepted connections
    /// only; 0 for every other pipe, which has no budget).
    pub(crate) mem: usize,
    pub(crate) paused: bool,
    /// A local link's stream target is full (`max_out_bytes`): reading pauses until it
    /// drains, ends, or the link goes (`engine/inbound.rs`, `forward_local`).
    pub(crate) link_blocked: bool,
    pub(crate) counted_handshake: bool,
    /// The earliest deadline of a waiting `recv` ([`super::Engine::recv_wait`]).
    pub(crate) recv_due: Mark,
}

impl Timing {
    fn new(now: Instant) -> Self {
        Self {
            opened: now,
            last_activity: Mark(0),
            got_message: false,
            stall_since: Mark::NONE,
            ended: Mark::NONE,
            armed: Mark::NONE,
            released: false,
            held_bytes: 0,
            held_jobs: 0,
            mem: 0,
            paused: false,
            link_blocked: false,
            counted_handshake: false,
            recv_due: Mark::NONE,
        }
    }

    /// `at` as a mark of this pipe.
    pub(crate) fn mark(&self, at: Instant) -> Mark {
        let nanos = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        match at.checked_duration_since(self.opened) {
            Some(after) => Mark(nanos(after)),
            // Never `NONE`: the most negative is `-i64::MAX`.
            None => Mark(-nanos(self.opened.duration_since(at))),
        }
    }

    /// [`Timing::mark`] of an optional instant.
    pub(crate) fn mark_opt(&self, at: Option<Instant>) -> Mark {
        at.map_or(Mark::NONE, |at| self.mark(at))
    }

    /// The instant of a mark of this pipe.
    pub(crate) fn at(&self, m: Mark) -> Option<Instant> {
        if m == Mark::NONE {
            return None;
        }
        let d = Duration::from_nanos(m.0.unsigned_abs());
        if m.0 >= 0 {
            self.opened.checked_add(d)
        } else {
            self.opened.checked_sub(d)
        }
    }

    /// Set the armed deadline's mark, and give the instant of the one it replaces.
    pub(crate) fn rearm(&mut self, mark: Mark) -> Option<Instant> {
        let old = std::mem::replace(&mut self.armed, mark);
        self.at(old)
    }

    /// When the pipe last sent or received.
    pub(crate) fn last_activity(&self) -> Instant {
        self.at(self.last_activity).unwrap_or(self.opened)
    }
}

impl PipeState {
    pub(crate) fn new(
        kind: Kind,
        local: SocketAddr,
        dest: Option<SocketAddr>,
        conf: Arc<Conf>,
        seq_seed: u64,
        now: Instant,
    ) -> Self {
        let rel = (kind == Kind::Udp && conf.reliable_udp).then(|| {
            Box::new(Reliable {
                next_seq: seq_seed.max(1),
                ..Reliable::default()
            })
        });
        let dedup = conf
            .enable_msg_ids
            .then(|| Box::new(Dedup::new(conf.max_msg_ids, conf.dedup_key)));
        // `Framing::Raw` needs no deframer: each read is a message as it stands.
        let deframer = (kind.is_stream() && conf.framing != crate::conf::Framing::Raw)
            .then(|| Box::new(Deframer::new(conf.framing.clone())));
        let seen = (kind == Kind::Udp && conf.reliable_udp)
            .then(|| Box::new(RecvWindow::new(conf.reliable_window)));
        let stamps = conf
            .relay_stamp
            .then(|| Box::new(StampWindow::new(conf.max_msg_ids)));
        let totals = (kind == Kind::TcpListener).then(Box::default);
        let rare = (rel.is_some() || stamps.is_some() || totals.is_some()).then(|| {
            Box::new(Rare {
                rel,
                seen,
                stamps,
                totals,
                ..Rare::new()
            })
        });
        Self {
            kind,
            local,
            dest,
            conf,
            state: State::Open,
            callbacks: false,
            parent_callbacks: false,
            subs: Vec::new(),
            held: VecDeque::new(),
            next_sub: 1,
            fallback_all: false,
            readable_pending: false,
            dedup,
            rare,
            session: Session::Plain,
            deframer,
            out: VecDeque::new(),
            out_bytes: 0,
            in_dirty: false,
            splice_busy: false,
            in_accept_q: false,
            stats: Counters::default(),
            half: Half::default(),
            t: Timing::new(now),
        }
    }

    pub(crate) fn is_open(&self) -> bool {
        self.state == State::Open
    }

    /// Open, and the write side not shut: sends are taken.
    pub(crate) fn can_write(&self) -> bool {
        self.state == State::Open && !self.half.write_shut
    }

    /// Nothing queued for the socket and no spliced bytes on their way to it.
    pub(crate) fn out_idle(&self) -> bool {
        self.out.is_empty() && !self.splice_busy
    }

    /// Links, reliable-UDP state, relay stamps, a listener's state: empty for most pipes (no
    /// allocation).
    pub(crate) fn rare(&self) -> &Rare {
        self.rare.as_deref().unwrap_or(&NO_RARE)
    }

    /// The same, made on first write.
    pub(crate) fn rare_mut(&mut self) -> &mut Rare {
        self.rare.get_or_insert_with(|| Box::new(Rare::new()))
    }

    /// The same if the pipe has it, without making it.
    pub(crate) fn rare_opt(&mut self) -> Option<&mut Rare> {
        self.rare.as_deref_mut()
    }

    /// A reliable UDP pipe's sending side.
    pub(crate) fn rel_mut(&mut self) -> Option<&mut Reliable> {
        self.rare_opt()?.rel.as_deref_mut()
    }

    /// A listener's state (empty for other pipes: no allocation).
    pub(crate) fn ls(&self) -> &Listening {
        self.rare().listening.as_deref().unwrap_or(&NOT_LISTENING)
    }

    /// A listener's state, made on first write.
    pub(crate) fn ls_mut(&mut self) -> &mut Listening {
        self.rare_mut().listening.get_or_insert_with(Box::default)
    }

    pub(crate) fn sub_mut(&mut self, id: SubId) -> Option<&mut Subscription> {
        self.subs.iter_mut().find(|s| s.id == id)
    }

    /// Nothing left that a user could still read or the driver still send.
    pub(crate) fn is_spent(&self) -> bool {
        matches!(self.state, State::Closed | State::PeerClosed)
            && self.out_idle()
            && !self.in_accept_q
            && self.ls().children.is_empty()
            && self.ls().accept_q.is_empty()
            && self.subs.iter().all(|s| s.queue.is_empty())
            && self
                .rare()
                .rel
                .as_ref()
                .is_none_or(|r| r.outcomes.is_empty())
            && self.t.held_jobs == 0
    }

    /// Bytes this pipe holds: messages waiting for callbacks, queued messages, outbound.
    pub(crate) fn held(&self) -> usize {
        self.t.held_bytes
            + self.queued_out()
            + self.subs.iter().map(|s| s.queue.bytes()).sum::<usize>()
    }

    /// Bytes waiting to go out: the transmit queue, and plaintext a TLS session took during
    /// its handshake (not in the queue until the handshake is done).
    pub(crate) fn queued_out(&self) -> usize {
        self.out_bytes + self.session.early()
    }

    /// A stream pipe whose queued output reached `max_out_bytes`, while it can still write:
    /// the pipes forwarding into it through local links wait.
    pub(crate) fn link_full(&self) -> bool {
        self.kind.is_stream() && self.can_write() && self.queued_out() >= self.conf.max_out_bytes
    }

    /// [`super::Engine::settle`] would change nothing: no server budget to count into (not a
    /// connection), and paused exactly when over its own caps. A caller holding the pipe
    /// checks this first and skips the second lookup.
    pub(crate) fn settled(&self) -> bool {
        !self.kind.is_conn() && self.over_own_caps() == self.t.paused
    }

    /// Over its own callback caps.
    pub(crate) fn over_own_caps(&self) -> bool {
        self.t.held_bytes >= self.conf.max_callback_bytes
            || self.t.held_jobs >= self.conf.max_callback_jobs
            || self.t.link_blocked
            || (self.half.keep_writable && self.stream_queue_full())
            || (self.fallback_all && self.fallback_full())
    }

    /// An accepted connection's fallback subscription (waiting for `accept()`) never drops:
    /// reading pauses while it could not take one more read, so no byte that arrived before
    /// the user subscribed is lost (the kernel's buffer and TCP's flow control hold the rest).
    fn fallback_full(&self) -> bool {
        let read = self.conf.reader_limit.max(1 << 14);
        self.subs
            .iter()
            .any(|s| s.id == crate::event::SubId::ALL && s.queue.would_drop(read))
    }

    /// Stream mode never drops bytes: reading pauses while a subscription queue could not
    /// take one more read (a read is at most `reader_limit` bytes, or one TLS read's
    /// plaintext), instead of letting the queue drop its oldest message.
    fn stream_queue_full(&self) -> bool {
        let read = self.conf.reader_limit.max(1 << 14);
        self.subs.iter().any(|s| s.queue.would_drop(read))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::disallowed_methods)] // a test's own base instant
    fn base() -> Instant {
        Instant::now() + Duration::from_secs(1_000_000)
    }

    #[test]
    fn marks_round_trip_before_and_after_opening() {
        let t = Timing::new(base());
        for d in [0, 1, 999, 1_000_000_007, 86_400_000_000_000 * 365] {
            let d = Duration::from_nanos(d);
            let later = t.opened + d;
            let earlier = t.opened - d;
            assert_eq!(t.at(t.mark(later)), Some(later), "{d:?} after");
            assert_eq!(t.at(t.mark(earlier)), Some(earlier), "{d:?} before");
            assert!(t.mark(earlier) <= t.mark(t.opened));
            assert!(t.mark(t.opened) <= t.mark(later));
        }
        assert!(t.mark(t.opened - Duration::from_nanos(1)) < t.mark(t.opened));
        assert!(t.mark(t.opened + Duration::from_nanos(1)) > t.mark(t.opened));
        assert_eq!(t.mark_opt(None), Mark::NONE);
        assert_eq!(t.at(Mark::NONE), None);
        assert_eq!(t.last_activity(), t.opened);
    }

    #[test]
    fn a_mark_out_of_range_saturates_and_is_never_none() {
        let t = Timing::new(base());
        let far = Duration::from_secs(400 * 365 * 86_400);
        let late = t.mark(t.opened + far);
        assert_eq!(late, Mark(i64::MAX));
        assert_eq!(
            t.at(late),
            Some(t.opened + Duration::from_nanos(i64::MAX as u64))
        );
        if let Some(early) = t.opened.checked_sub(far) {
            let m = t.mark(early);
            assert_ne!(m, Mark::NONE);
            assert_eq!(m, Mark(-i64::MAX));
            assert!(Mark::NONE < m);
        }
    }

    #[test]
    fn rearm_gives_the_replaced_instant() {
        let mut t = Timing::new(base());
        let at = t.opened + Duration::from_millis(1500);
        assert_eq!(t.rearm(t.mark(at)), None);
        assert_eq!(t.rearm(Mark::NONE), Some(at));
        assert_eq!(t.armed, Mark::NONE);
    }

    /// An idle accepted connection's state fits a 400-byte glibc chunk (a request of up to
    /// 392 bytes, plus 8 of header, rounded to 16). Growing past it costs every connection
    /// 16 bytes or more: move what few pipes use into [`Rare`].
    #[test]
    fn pipe_state_fits_its_malloc_chunk() {
        assert!(
            std::mem::size_of::<PipeState>() <= 392,
            "{}",
            std::mem::size_of::<PipeState>()
        );
    }
}
