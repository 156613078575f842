//! Sans-IO STUN Binding client.

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use hmac::{Hmac, Mac};
use sha1::Sha1;

use super::attr::Attribute;
use super::codec::{
    decode, peek_transaction_id, Class, EncodeOptions, Message, Method, TransactionId,
};
use crate::rng::Rng;

/// Transaction ids: HMAC-SHA1(key, counter), the first 96 bits. With a 256-bit key from the
/// OS's CSPRNG (pipe-io uses `getrandom`) this is a cryptographic generator (a PRF in counter
/// mode), so ids cannot be guessed from earlier ones, while pipe-core itself stays free of
/// system calls and deterministic under a seed in tests.
#[derive(Clone)]
pub(crate) struct IdGen {
    key: [u8; 32],
    counter: u64,
}

impl fmt::Debug for IdGen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdGen").finish_non_exhaustive()
    }
}

impl IdGen {
    pub(crate) fn from_seed(seed: u64) -> Self {
        let mut key = [0; 32];
        Rng::new(seed).fill(&mut key);
        Self::from_key(key)
    }

    pub(crate) fn from_key(key: [u8; 32]) -> Self {
        Self { key, counter: 0 }
    }

    pub(crate) fn next(&mut self) -> TransactionId {
        self.counter = self.counter.wrapping_add(1);
        // HMAC takes keys of any length, so this cannot fail.
        let mut mac =
            <Hmac<Sha1> as Mac>::new_from_slice(&self.key).expect("HMAC accepts any key length");
        mac.update(&self.counter.to_be_bytes());
        let out = mac.finalize().into_bytes();
        let mut id = [0; 12];
        id.copy_from_slice(&out[..12]);
        TransactionId(id)
    }
}

/// Cap on each output queue; on overflow the oldest entry is dropped and counted.
const MAX_QUEUED: usize = 256;

/// The transport a transaction runs over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// UDP: retransmitted with exponential backoff (RFC 8489 §6.2.1).
    Udp,
    /// TCP or TLS: sent once, the stream is reliable (RFC 8489 §6.2.2).
    Tcp,
}

/// Client settings. Defaults follow RFC 8489 §6.2.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StunClientConfig {
    /// Initial retransmission timeout (UDP), doubled after each send. Default 500 ms.
    pub rto: Duration,
    /// Rc: total sends of a UDP request. Default 7.
    pub max_sends: u32,
    /// Rm: the wait after the last UDP send, in multiples of `rto`. Default 16.
    pub last_wait: u32,
    /// Transaction timeout over TCP. Default 39.5 s.
    pub tcp_timeout: Duration,
    /// Outstanding transactions allowed per server. Default 10.
    pub max_outstanding_per_server: usize,
    /// Outstanding transactions allowed in total. Default 64.
    pub max_transactions: usize,
    /// Append FINGERPRINT to requests. Default off (a bare 20-byte request).
    pub fingerprint: bool,
}

impl Default for StunClientConfig {
    fn default() -> Self {
        Self {
            rto: Duration::from_millis(500),
            max_sends: 7,
            last_wait: 16,
            tcp_timeout: Duration::from_millis(39_500),
            max_outstanding_per_server: 10,
            max_transactions: 64,
            fingerprint: false,
        }
    }
}

/// Caller errors from [`StunClient::start_binding`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StunClientError {
    /// `max_outstanding_per_server` transactions to this server are already in flight.
    #[error("{max} transactions to {server} already outstanding")]
    TooManyOutstanding {
        /// The server.
        server: SocketAddr,
        /// The configured cap.
        max: usize,
    },
    /// `max_transactions` transactions are already in flight.
    #[error("transaction table full ({max})")]
    TableFull {
        /// The configured cap.
        max: usize,
    },
}

/// A datagram (or stream write) to send.
#[derive(Clone, PartialEq, Eq)]
pub struct StunTransmit {
    /// Where to send it.
    pub dest: SocketAddr,
    /// Which transport the transaction uses.
    pub transport: Transport,
    /// The encoded request.
    pub payload: Bytes,
}

impl fmt::Debug for StunTransmit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StunTransmit")
            .field("dest", &self.dest)
            .field("transport", &self.transport)
            .field("len", &self.payload.len())
            .finish()
    }
}

/// The outcome of a transaction; exactly one per started (and not cancelled) transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StunEvent {
    /// A success response.
    Success {
        /// The transaction.
        id: TransactionId,
        /// Our address as the server saw it (XOR-MAPPED-ADDRESS, else MAPPED-ADDRESS).
        mapped: SocketAddr,
        /// OTHER-ADDRESS (RFC 5780), if the server sent it.
        other_address: Option<SocketAddr>,
        /// RESPONSE-ORIGIN (RFC 5780), if the server sent it.
        response_origin: Option<SocketAddr>,
    },
    /// An error response.
    ErrorResponse {
        /// The transaction.
        id: TransactionId,
        /// The ERROR-CODE, e.g. 420.
        code: u16,
        /// The reason phrase.
        reason: String,
    },
    /// A matching response we cannot use (no mapped address, no ERROR-CODE, or unknown
    /// comprehension-required attributes): the transaction failed.
    InvalidResponse {
        /// The transaction.
        id: TransactionId,
    },
    /// No response in time (39.5 s with the defaults).
    Timeout {
        /// The transaction.
        id: TransactionId,
    },
}

/// Counters of dropped input and notable actions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientStats {
    /// Datagrams that failed to decode.
    pub dropped_malformed: u64,
    /// Well-formed messages that are not Binding responses.
    pub dropped_not_response: u64,
    /// Responses whose id matches no in-flight transaction (late, duplicate or forged).
    pub dropped_unknown_transaction: u64,
    /// Responses with a known id from an address other than the server's.
    pub dropped_wrong_source: u64,
    /// Queued transmits or events dropped because a queue was full.
    pub dropped_queue_overflow: u64,
    /// Retransmissions sent.
    pub retransmits: u64,
    /// Transactions that timed out.
    pub timeouts: u64,
}

#[derive(Debug)]
struct Transaction {
    id: TransactionId,
    server: SocketAddr,
    transport: Transport,
    request: Bytes,
    sends: u32,
    deadline: Instant,
    /// Accept the response from any address (CHANGE-REQUEST answers come from elsewhere).
    any_source: bool,
}

impl Transaction {
    fn transmit(&self) -> StunTransmit {
        StunTransmit {
            dest: self.server,
            transport: self.transport,
            payload: self.request.clone(),
        }
    }
}

/// A sans-IO STUN Binding client.
///
/// Drive it like the rest of pipe-core: after every input (`start_binding`, `handle_input`,
/// `handle_timeout`, `cancel`) drain [`StunClient::poll_transmit`] to the network and
/// [`StunClient::poll_event`] to the application, then arm a timer for
/// [`StunClient::poll_timeout`].
#[derive(Debug)]
pub struct StunClient {
    conf: StunClientConfig,
    ids: IdGen,
    transactions: Vec<Transaction>,
    transmits: VecDeque<StunTransmit>,
    events: VecDeque<StunEvent>,
    stats: ClientStats,
    last_now: Option<Instant>,
}

impl StunClient {
    /// A client whose transaction ids come from a generator seeded with `seed`: deterministic,
    /// for tests. A 64-bit seed is not a secret worth the name; real clients use
    /// [`StunClient::with_key`] (RFC 8489 wants ids that off-path attackers cannot guess).
    pub fn new(conf: StunClientConfig, seed: u64) -> Self {
        Self::with_ids(conf, IdGen::from_seed(seed))
    }

    /// A client whose transaction ids are HMAC-SHA1(`key`, counter): cryptographically random
    /// when `key` comes from the OS's CSPRNG (`getrandom`), as pipe-io's drivers do.
    pub fn with_key(conf: StunClientConfig, key: [u8; 32]) -> Self {
        Self::with_ids(conf, IdGen::from_key(key))
    }

    pub(crate) fn with_ids(conf: StunClientConfig, ids: IdGen) -> Self {
        Self {
            conf,
            ids,
            transactions: Vec::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: ClientStats::default(),
            last_now: None,
        }
    }

    /// Start a Binding transaction to `server`; the first request is queued at once.
    pub fn start_binding(
        &mut self,
        now: Instant,
        server: SocketAddr,
        transport: Transport,
    ) -> Result<TransactionId, StunClientError> {
        self.start_binding_with(now, server, transport, Vec::new(), false)
    }

    /// [`StunClient::start_binding`] with `attributes` in the request (CHANGE-REQUEST,
    /// PADDING, SOFTWARE, ...), and, with `any_source`, a response accepted from any address
    /// (a CHANGE-REQUEST is answered from the server's other address or port; check
    /// `response_origin` in the event).
    pub fn start_binding_with(
        &mut self,
        now: Instant,
        server: SocketAddr,
        transport: Transport,
        attributes: Vec<Attribute>,
        any_source: bool,
    ) -> Result<TransactionId, StunClientError> {
        self.last_now = Some(now);
        let max = self.conf.max_outstanding_per_server;
        if self
            .transactions
            .iter()
            .filter(|tx| tx.server == server)
            .count()
            >= max
        {
            return Err(StunClientError::TooManyOutstanding { server, max });
        }
        if self.transactions.len() >= self.conf.max_transactions {
            return Err(StunClientError::TableFull {
                max: self.conf.max_transactions,
            });
        }
        let id = loop {
            let id = self.ids.next();
            if !self.transactions.iter().any(|tx| tx.id == id) {
                break id;
            }
        };
        let opts = EncodeOptions {
            integrity_key: None,
            fingerprint: self.conf.fingerprint,
        };
        let mut message = Message::binding_request(id);
        message.attributes = attributes;
        let request = message.encode_with(&opts);
        let wait = match transport {
            Transport::Udp => self.udp_wait(1),
            Transport::Tcp => self.conf.tcp_timeout,
        };
        let tx = Transaction {
            id,
            server,
            transport,
            request,
            sends: 1,
            deadline: after(now, wait),
            any_source,
        };
        self.push_transmit(tx.transmit());
        self.transactions.push(tx);
        log::trace!("stun: binding {id} to {server} over {transport:?}");
        Ok(id)
    }

    /// Abandon a transaction: no more sends, no event. Returns false if it was not in flight.
    pub fn cancel(&mut self, id: TransactionId) -> bool {
        let before = self.transactions.len();
        self.transactions.retain(|tx| tx.id != id);
        self.transmits
            .retain(|t| peek_transaction_id(&t.payload) != Some(id));
        before != self.transactions.len()
    }

    /// Feed a datagram (or one complete TCP frame) received from `from`. Only a Binding response
    /// whose id is in flight and which comes from that transaction's server is accepted;
    /// everything else is dropped and counted in [`StunClient::stats`].
    pub fn handle_input(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        self.last_now = Some(now);
        let msg = match decode(data) {
            Ok(msg) => msg,
            Err(e) => {
                log::trace!(
                    "stun: dropping {}-byte datagram from {from}: {e}",
                    data.len()
                );
                self.stats.dropped_malformed += 1;
                return;
            }
        };
        if !matches!(msg.class, Class::Success | Class::Error) || msg.method != Method::Binding {
            self.stats.dropped_not_response += 1;
            return;
        }
        let Some(pos) = self
            .transactions
            .iter()
            .position(|tx| tx.id == msg.transaction_id)
        else {
            self.stats.dropped_unknown_transaction += 1;
            return;
        };
        let tx = &self.transactions[pos];
        if tx.server != from && !tx.any_source {
            self.stats.dropped_wrong_source += 1;
            return;
        }
        let id = self.transactions.remove(pos).id;
        self.transmits
            .retain(|t| peek_transaction_id(&t.payload) != Some(id));
        let event = match (msg.class, msg.unknown_comprehension_required().is_empty()) {
            (_, false) => StunEvent::InvalidResponse { id },
            (Class::Success, true) => match msg.mapped_address() {
                Some(mapped) => StunEvent::Success {
                    id,
                    mapped,
                    other_address: msg.other_address(),
                    response_origin: msg.response_origin(),
                },
                None => StunEvent::InvalidResponse { id },
            },
            _ => match msg.error_code() {
                Some((code, reason)) => StunEvent::ErrorResponse {
                    id,
                    code,
                    reason: reason.to_owned(),
                },
                None => StunEvent::InvalidResponse { id },
            },
        };
        self.push_event(event);
    }

    /// Advance timers to `now`: retransmit due UDP requests, time out expired transactions.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.last_now = Some(now);
        let mut i = 0;
        while let Some(tx) = self.transactions.get(i) {
            if tx.deadline > now {
                i += 1;
                continue;
            }
            if tx.transport == Transport::Udp && tx.sends < self.conf.max_sends {
                let sends = tx.sends + 1;
                let deadline = after(now, self.udp_wait(sends));
                let tx = &mut self.transactions[i];
                tx.sends = sends;
                tx.deadline = deadline;
                log::trace!("stun: retransmit {} ({sends})", tx.id);
                let transmit = tx.transmit();
                self.push_transmit(transmit);
                self.stats.retransmits += 1;
                i += 1;
            } else {
                let id = self.transactions.remove(i).id;
                log::trace!("stun: binding {id} timed out");
                self.stats.timeouts += 1;
                self.push_event(StunEvent::Timeout { id });
            }
        }
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<StunTransmit> {
        self.transmits.pop_front()
    }

    /// The next transaction outcome.
    pub fn poll_event(&mut self) -> Option<StunEvent> {
        self.events.pop_front()
    }

    /// When to call [`StunClient::handle_timeout`]: the earliest deadline, or the time of the last
    /// input while output is still queued; `None` when idle.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if !self.transmits.is_empty() || !self.events.is_empty() {
            return self.last_now;
        }
        self.transactions.iter().map(|tx| tx.deadline).min()
    }

    /// Transactions in flight.
    pub fn outstanding(&self) -> usize {
        self.transactions.len()
    }

    /// Drop counters.
    pub fn stats(&self) -> ClientStats {
        self.stats
    }

    /// The wait after the `sends`-th UDP send: RTO × 2^(sends−1), or Rm × RTO after the last.
    fn udp_wait(&self, sends: u32) -> Duration {
        let factor = if sends >= self.conf.max_sends {
            self.conf.last_wait
        } else {
            1u32.checked_shl(sends - 1).unwrap_or(u32::MAX)
        };
        self.conf.rto.saturating_mul(factor)
    }

    fn push_transmit(&mut self, transmit: StunTransmit) {
        if self.transmits.len() >= MAX_QUEUED {
            self.transmits.pop_front();
            self.stats.dropped_queue_overflow += 1;
        }
        self.transmits.push_back(transmit);
    }

    fn push_event(&mut self, event: StunEvent) {
        if self.events.len() >= MAX_QUEUED {
            self.events.pop_front();
            self.stats.dropped_queue_overflow += 1;
        }
        self.events.push_back(event);
    }
}

/// `now + d`, saturating at `now` + a day for absurd configured durations.
fn after(now: Instant, d: Duration) -> Instant {
    let day = Duration::from_secs(86_400);
    now.checked_add(d.min(day)).unwrap_or(now)
}
