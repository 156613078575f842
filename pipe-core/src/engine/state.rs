//! The state of one pipe inside the engine.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;

use crate::addr::Proto;
use crate::conf::Conf;
use crate::dedup::{Dedup, SeenSet};
use crate::event::{LinkId, LinkTarget, PipeId, SubId, Transmit};
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
    /// Dropped by dedup.
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
    /// Reliable-UDP datagrams that were not valid frames.
    pub malformed: u64,
    /// Reliable-UDP retransmissions received again and dropped.
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
}

#[derive(Debug)]
pub(crate) struct Link {
    pub(crate) id: LinkId,
    pub(crate) target: LinkTarget,
    pub(crate) dest: Option<SocketAddr>,
    pub(crate) from: Option<SocketAddr>,
}

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
    pub(crate) next_sub: u64,
    pub(crate) readable_pending: bool,
    pub(crate) dedup: Option<Box<Dedup>>,
    pub(crate) links: Vec<Link>,
    pub(crate) next_link: u64,
    pub(crate) session: Session,
    /// `None` for datagrams and for `Framing::Raw` streams.
    pub(crate) deframer: Option<Box<Deframer>>,
    pub(crate) out: VecDeque<Transmit>,
    pub(crate) out_bytes: usize,
    pub(crate) in_dirty: bool,
    pub(crate) next_seq: u64,
    pub(crate) outstanding: BTreeMap<u64, Pending>,
    pub(crate) seen: Option<Box<SeenSet<(SocketAddr, u64)>>>,
    pub(crate) children: Vec<PipeId>,
    pub(crate) accept_q: VecDeque<PipeId>,
    pub(crate) in_accept_q: bool,
    pub(crate) stats: Box<Stats>,
}

impl PipeState {
    pub(crate) fn new(
        kind: Kind,
        local: SocketAddr,
        dest: Option<SocketAddr>,
        conf: Arc<Conf>,
        seq_seed: u64,
    ) -> Self {
        let dedup = conf
            .enable_msg_ids
            .then(|| Box::new(Dedup::new(conf.max_msg_ids, conf.dedup_key)));
        // `Framing::Raw` needs no deframer: each read is a message as it stands.
        let deframer = (kind.is_stream() && conf.framing != crate::conf::Framing::Raw)
            .then(|| Box::new(Deframer::new(conf.framing.clone())));
        let seen = (kind == Kind::Udp && conf.reliable_udp)
            .then(|| Box::new(SeenSet::new(conf.reliable_window)));
        Self {
            kind,
            local,
            dest,
            conf,
            state: State::Open,
            callbacks: false,
            parent_callbacks: false,
            subs: Vec::new(),
            next_sub: 1,
            readable_pending: false,
            dedup,
            links: Vec::new(),
            next_link: 1,
            session: Session::Plain,
            deframer,
            out: VecDeque::new(),
            out_bytes: 0,
            in_dirty: false,
            next_seq: seq_seed.max(1),
            outstanding: BTreeMap::new(),
            seen,
            children: Vec::new(),
            accept_q: VecDeque::new(),
            in_accept_q: false,
            stats: Box::default(),
        }
    }

    pub(crate) fn is_open(&self) -> bool {
        self.state == State::Open
    }

    pub(crate) fn sub_mut(&mut self, id: SubId) -> Option<&mut Subscription> {
        self.subs.iter_mut().find(|s| s.id == id)
    }

    /// Nothing left that a user could still read or the driver still send.
    pub(crate) fn is_spent(&self) -> bool {
        matches!(self.state, State::Closed | State::PeerClosed)
            && self.out.is_empty()
            && !self.in_accept_q
            && self.children.is_empty()
            && self.accept_q.is_empty()
            && self.subs.iter().all(|s| s.queue.is_empty())
    }
}
