//! Sans-IO STUN Binding responder.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use bytes::Bytes;

use super::attr::{attr_type, Attribute};
use super::codec::{
    decode_any_cookie, Class, DecodeError, EncodeOptions, Message, Method, HEADER_LEN, MAGIC_COOKIE,
};

const NANOS_PER_TOKEN: u64 = 1_000_000_000;

/// Server settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StunServerConfig {
    /// Answers a source may get back to back. Default 20.
    pub burst: u32,
    /// Sustained answers per second per source. Default 10.
    pub rate_per_sec: u32,
    /// Sources tracked at once; the oldest entry is evicted beyond it. Default 4096.
    pub max_sources: usize,
    /// Source ports never answered (reflection targets: echo, chargen, DNS, NTP, ...).
    /// Default {0, 17, 19, 53, 111, 123, 137, 138, 161, 389, 500}.
    pub blocked_ports: Vec<u16>,
    /// SOFTWARE to include in answers when the size budget allows. Default none.
    pub software: Option<String>,
    /// Include RESPONSE-ORIGIN (RFC 5780) when the size budget allows. Default off; always on
    /// with `alternate`.
    pub response_origin: bool,
    /// RFC 5780 behaviour discovery: the server's primary address `A:p` and alternate `B:q`.
    /// The driver holds sockets on `A:p`, `A:q`, `B:p` and `B:q`, passes each request with the
    /// address it arrived on, and sends each [`Reply`] from [`Reply::from`]. Default none:
    /// CHANGE-REQUEST asking for a change is answered with 420 (RFC 5780 §6.1).
    pub alternate: Option<(SocketAddr, SocketAddr)>,
}

impl Default for StunServerConfig {
    fn default() -> Self {
        Self {
            burst: 20,
            rate_per_sec: 10,
            max_sources: 4096,
            blocked_ports: vec![0, 17, 19, 53, 111, 123, 137, 138, 161, 389, 500],
            software: None,
            response_origin: false,
            alternate: None,
        }
    }
}

/// An answer: send `payload` from the local socket `from` to `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The local address to send from: where the request arrived, or with CHANGE-REQUEST one
    /// of the server's other three addresses.
    pub from: SocketAddr,
    /// The destination: the request's source, or its IP with RESPONSE-PORT's port.
    pub to: SocketAddr,
    /// The encoded response.
    pub payload: Bytes,
}

/// What the server did with its input.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerStats {
    /// Datagrams handled.
    pub received: u64,
    /// Bytes of datagrams handled.
    pub bytes_in: u64,
    /// Success responses sent.
    pub answered: u64,
    /// Of `answered`: classic RFC 3489 requests (no magic cookie).
    pub answered_classic: u64,
    /// Of `answered`: sent from another address or port (CHANGE-REQUEST).
    pub answered_changed: u64,
    /// Of `answered`: sent to another port (RESPONSE-PORT).
    pub answered_response_port: u64,
    /// 420 error responses sent.
    pub answered_unknown_attribute: u64,
    /// Bytes of all responses.
    pub bytes_out: u64,
    /// Dropped: blocked source port (or RESPONSE-PORT), or an unspecified, multicast or
    /// broadcast source address.
    pub dropped_blocked_source: u64,
    /// Dropped: not STUN at all (short, top bits).
    pub dropped_not_stun: u64,
    /// Dropped: STUN header but malformed (length, attributes, fingerprint).
    pub dropped_malformed: u64,
    /// Dropped: a response or an indication.
    pub dropped_not_request: u64,
    /// Dropped: a request for a method other than Binding.
    pub dropped_unsupported_method: u64,
    /// Dropped: the source's token bucket is empty.
    pub dropped_rate_limited: u64,
    /// Dropped: arrived on an address that is none of the four of `alternate`.
    pub dropped_unknown_local: u64,
    /// Source entries evicted because the table was full.
    pub sources_evicted: u64,
}

/// Rate-limit key: an IPv4 address, or an IPv6 /64 (one host can hold a whole /64).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum SourceKey {
    V4(u32),
    V6(u64),
}

impl SourceKey {
    fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => SourceKey::V4(v4.into()),
            IpAddr::V6(v6) => SourceKey::V6((u128::from(v6) >> 64) as u64),
        }
    }
}

/// Token bucket in nano-tokens so slow refill rates lose no fractions.
#[derive(Debug)]
struct Bucket {
    nanotokens: u64,
    last: Instant,
}

/// Sans-IO STUN Binding responder, built not to be an amplifier.
///
/// [`StunServer::handle_request`] takes one received datagram and returns the [`Reply`] to
/// send, or `None`. There is no queue and no timer: the server keeps only a bounded table of
/// per-source token buckets, refilled from the `now` it is given. One server behind several
/// sockets (RFC 5780's four) shares that table, so the rate limits hold per source across them.
///
/// It answers only well-formed Binding requests:
/// - RFC 5389/8489 requests with XOR-MAPPED-ADDRESS, then, as the size budget allows,
///   OTHER-ADDRESS (with `alternate`), RESPONSE-ORIGIN, SOFTWARE; FINGERPRINT if the request
///   carried one.
/// - Classic RFC 3489 requests (any magic-cookie field, RFC 8489 §11): the field is copied,
///   MAPPED-ADDRESS replaces XOR-MAPPED-ADDRESS, then CHANGED-ADDRESS (with `alternate`) and
///   SOURCE-ADDRESS as the budget allows. RESPONSE-ADDRESS is ignored (never a reflector).
/// - CHANGE-REQUEST is honoured with `alternate` (the reply leaves from the other IP, port or
///   both); without it a request asking for a change gets 420. RESPONSE-PORT sends the reply
///   to that port of the source's IP (blocked ports excepted). PADDING is ignored.
///
/// The size budget: an answer is at most twice its request, except that the mapped address
/// is always sent (a bare 20-byte IPv6 request gets 44 bytes, as before). A client that wants
/// every attribute pads its request (PADDING, or a comprehension-optional SOFTWARE). A request
/// with unknown comprehension-required attributes gets a 420 with UNKNOWN-ATTRIBUTES and an
/// empty reason phrase (≤ 1.5× the request). Everything else is dropped silently and counted
/// in [`StunServer::stats`].
#[derive(Debug)]
pub struct StunServer {
    conf: StunServerConfig,
    buckets: BTreeMap<SourceKey, Bucket>,
    /// Insertion order of `buckets`, for eviction; holds each key exactly once.
    order: VecDeque<SourceKey>,
    stats: ServerStats,
}

impl StunServer {
    /// A responder with `conf`.
    pub fn new(conf: StunServerConfig) -> Self {
        Self {
            conf,
            buckets: BTreeMap::new(),
            order: VecDeque::new(),
            stats: ServerStats::default(),
        }
    }

    /// Handle one datagram that arrived on `local` from `from`; returns the answer to send to
    /// `from` from `local`, if any: for single-socket servers. A reply that would leave from
    /// another socket or go to another port (CHANGE-REQUEST, RESPONSE-PORT) is not returned;
    /// use [`StunServer::handle_request`] to serve those.
    pub fn handle(
        &mut self,
        now: Instant,
        local: SocketAddr,
        from: SocketAddr,
        data: &[u8],
    ) -> Option<Bytes> {
        let from = canonical(from);
        let reply = self.handle_request(now, local, from, data)?;
        (reply.from == local && reply.to == from).then_some(reply.payload)
    }

    /// Handle one datagram that arrived on `local` from `from`; returns what to send, from
    /// which local address, to where. IPv4-mapped IPv6 sources are answered as IPv4.
    pub fn handle_request(
        &mut self,
        now: Instant,
        local: SocketAddr,
        from: SocketAddr,
        data: &[u8],
    ) -> Option<Reply> {
        self.stats.received += 1;
        self.stats.bytes_in += data.len() as u64;
        let from = canonical(from);
        let local = canonical(local);
        if self.blocked(&from) {
            self.stats.dropped_blocked_source += 1;
            return None;
        }
        let (request, cookie) = match decode_any_cookie(data) {
            Ok(decoded) => decoded,
            Err(e) => {
                log::trace!(
                    "stun server: dropping {} bytes from {from}: {e}",
                    data.len()
                );
                match e {
                    DecodeError::TooShort { .. }
                    | DecodeError::NotStun
                    | DecodeError::BadMagicCookie => self.stats.dropped_not_stun += 1,
                    _ => self.stats.dropped_malformed += 1,
                }
                return None;
            }
        };
        let classic = cookie != MAGIC_COOKIE;
        if request.class != Class::Request {
            self.stats.dropped_not_request += 1;
            return None;
        }
        if request.method != Method::Binding {
            self.stats.dropped_unsupported_method += 1;
            return None;
        }
        let four = match self.conf.alternate {
            Some((primary, alternate)) => {
                let (primary, alternate) = (canonical(primary), canonical(alternate));
                let ip_ok = local.ip() == primary.ip() || local.ip() == alternate.ip();
                let port_ok = local.port() == primary.port() || local.port() == alternate.port();
                if !(ip_ok && port_ok) {
                    self.stats.dropped_unknown_local += 1;
                    return None;
                }
                Some((primary, alternate))
            }
            None => None,
        };
        let mut change = (false, false);
        let mut response_port = None;
        for attr in &request.attributes {
            match attr {
                Attribute::ChangeRequest {
                    change_ip,
                    change_port,
                } => change = (*change_ip, *change_port),
                Attribute::ResponsePort(p) if !classic => response_port = Some(*p),
                _ => {}
            }
        }
        let to = match response_port {
            Some(port) => SocketAddr::new(from.ip(), port),
            None => from,
        };
        if self.blocked(&to) {
            self.stats.dropped_blocked_source += 1;
            return None;
        }
        if !self.take_token(now, from.ip()) {
            self.stats.dropped_rate_limited += 1;
            return None;
        }
        let mut unknown = request.unknown_comprehension_required();
        // Understood and deliberately ignored: PADDING, and RFC 3489's RESPONSE-ADDRESS.
        unknown.retain(|t| *t != attr_type::PADDING && *t != attr_type::RESPONSE_ADDRESS);
        if four.is_none() && (change.0 || change.1) {
            unknown.push(attr_type::CHANGE_REQUEST);
        }
        let id = request.transaction_id;
        let fingerprint = request.has_fingerprint() && !classic;
        let budget = data.len() * 2;
        let (response, reply_from) = if unknown.is_empty() {
            // The other address as seen from `local`, and the address the reply leaves from.
            let (other, source) = match four {
                Some((primary, alternate)) => {
                    let other_ip = if local.ip() == primary.ip() {
                        alternate.ip()
                    } else {
                        primary.ip()
                    };
                    let other_port = if local.port() == primary.port() {
                        alternate.port()
                    } else {
                        primary.port()
                    };
                    let source = SocketAddr::new(
                        if change.0 { other_ip } else { local.ip() },
                        if change.1 { other_port } else { local.port() },
                    );
                    (Some(SocketAddr::new(other_ip, other_port)), source)
                }
                None => (None, local),
            };
            let mut msg = Message::new(Class::Success, Method::Binding, id);
            let mut size = HEADER_LEN + if fingerprint { 8 } else { 0 };
            let mut add = |msg: &mut Message, attr: Attribute, always: bool| {
                let len = attr_len(&attr);
                if always || size + len <= budget {
                    size += len;
                    msg.attributes.push(attr);
                }
            };
            if classic {
                add(&mut msg, Attribute::MappedAddress(from), true);
                if let Some(other) = other {
                    add(&mut msg, Attribute::ChangedAddress(other), false);
                }
                add(&mut msg, Attribute::SourceAddress(source), false);
            } else {
                add(&mut msg, Attribute::XorMappedAddress(from), true);
                if let Some(other) = other {
                    add(&mut msg, Attribute::OtherAddress(other), false);
                }
                if self.conf.response_origin || four.is_some() {
                    add(&mut msg, Attribute::ResponseOrigin(source), false);
                }
            }
            if let Some(software) = &self.conf.software {
                add(&mut msg, Attribute::Software(software.clone()), false);
            }
            self.stats.answered += 1;
            self.stats.answered_classic += u64::from(classic);
            self.stats.answered_changed += u64::from(source != local);
            self.stats.answered_response_port += u64::from(to != from);
            (msg, source)
        } else {
            self.stats.answered_unknown_attribute += 1;
            let mut msg = Message::new(Class::Error, Method::Binding, id);
            msg.attributes.push(Attribute::ErrorCode {
                code: 420,
                reason: String::new(),
            });
            msg.attributes.push(Attribute::UnknownAttributes(unknown));
            (msg, local)
        };
        let opts = EncodeOptions {
            integrity_key: None,
            fingerprint,
        };
        let payload = response.encode_with_cookie(&opts, cookie);
        self.stats.bytes_out += payload.len() as u64;
        Some(Reply {
            from: reply_from,
            to,
            payload,
        })
    }

    /// Counters for every outcome.
    pub fn stats(&self) -> ServerStats {
        self.stats
    }

    /// Sources currently tracked by the rate limiter.
    pub fn tracked_sources(&self) -> usize {
        self.buckets.len()
    }

    fn blocked(&self, from: &SocketAddr) -> bool {
        let ip = from.ip();
        let bad_ip = ip.is_unspecified()
            || ip.is_multicast()
            || matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
        bad_ip || self.conf.blocked_ports.contains(&from.port())
    }

    fn take_token(&mut self, now: Instant, ip: IpAddr) -> bool {
        let key = SourceKey::of(ip);
        let capacity = u64::from(self.conf.burst).saturating_mul(NANOS_PER_TOKEN);
        if !self.buckets.contains_key(&key) {
            if self.conf.max_sources == 0 {
                return false;
            }
            while self.buckets.len() >= self.conf.max_sources {
                let Some(old) = self.order.pop_front() else {
                    break;
                };
                self.buckets.remove(&old);
                self.stats.sources_evicted += 1;
            }
            self.buckets.insert(
                key,
                Bucket {
                    nanotokens: capacity,
                    last: now,
                },
            );
            self.order.push_back(key);
        }
        let Some(bucket) = self.buckets.get_mut(&key) else {
            return false;
        };
        let elapsed = now.saturating_duration_since(bucket.last).as_nanos();
        let refill = elapsed.saturating_mul(u128::from(self.conf.rate_per_sec));
        let refill = u64::try_from(refill).unwrap_or(u64::MAX);
        bucket.nanotokens = bucket.nanotokens.saturating_add(refill).min(capacity);
        bucket.last = bucket.last.max(now);
        if bucket.nanotokens >= NANOS_PER_TOKEN {
            bucket.nanotokens -= NANOS_PER_TOKEN;
            true
        } else {
            false
        }
    }
}

fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// Encoded size of an attribute: header, value, padding.
fn attr_len(attr: &Attribute) -> usize {
    let value = match attr {
        Attribute::MappedAddress(a)
        | Attribute::XorMappedAddress(a)
        | Attribute::ResponseOrigin(a)
        | Attribute::OtherAddress(a)
        | Attribute::SourceAddress(a)
        | Attribute::ChangedAddress(a) => {
            if a.is_ipv4() {
                8
            } else {
                20
            }
        }
        Attribute::Software(s) => s.len().div_ceil(4) * 4,
        _ => 4,
    };
    4 + value
}
