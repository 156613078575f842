//! Sans-IO STUN Binding responder.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use bytes::Bytes;

use super::attr::Attribute;
use super::codec::{decode, Class, DecodeError, EncodeOptions, Message, Method};

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
    /// SOFTWARE to include in answers. Default none.
    pub software: Option<String>,
    /// Include RESPONSE-ORIGIN = the local address (RFC 5780). Default off.
    pub response_origin: bool,
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
        }
    }
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
    /// 420 error responses sent.
    pub answered_unknown_attribute: u64,
    /// Bytes of all responses.
    pub bytes_out: u64,
    /// Dropped: blocked source port, or an unspecified, multicast or broadcast source address.
    pub dropped_blocked_source: u64,
    /// Dropped: not STUN at all (short, top bits, magic cookie).
    pub dropped_not_stun: u64,
    /// Dropped: STUN header but malformed (length, attributes, fingerprint).
    pub dropped_malformed: u64,
    /// Dropped: a response or an indication.
    pub dropped_not_request: u64,
    /// Dropped: a request for a method other than Binding.
    pub dropped_unsupported_method: u64,
    /// Dropped: the source's token bucket is empty.
    pub dropped_rate_limited: u64,
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
/// [`StunServer::handle`] takes one received datagram and returns the answer to send back to the
/// sender from the same local address, or `None`. There is no queue and no timer: the server
/// keeps only a bounded table of per-source token buckets, refilled from the `now` it is given.
///
/// It answers only well-formed Binding requests, with XOR-MAPPED-ADDRESS alone (32 B for IPv4,
/// 44 B for IPv6), plus FINGERPRINT only if the request carried one, RESPONSE-ORIGIN and SOFTWARE
/// only when configured. A request with unknown comprehension-required attributes gets a 420
/// with UNKNOWN-ATTRIBUTES and an empty reason phrase (which keeps it ≤ 1.5× the request).
/// CHANGE-REQUEST is not honoured (the attribute is understood, the answer comes from `local`).
/// Everything else is dropped silently and counted in [`StunServer::stats`].
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
    /// `from` from `local`, if any. IPv4-mapped IPv6 sources are answered as IPv4.
    pub fn handle(
        &mut self,
        now: Instant,
        local: SocketAddr,
        from: SocketAddr,
        data: &[u8],
    ) -> Option<Bytes> {
        self.stats.received += 1;
        self.stats.bytes_in += data.len() as u64;
        let from = SocketAddr::new(from.ip().to_canonical(), from.port());
        if self.blocked(&from) {
            self.stats.dropped_blocked_source += 1;
            return None;
        }
        let request = match decode(data) {
            Ok(msg) => msg,
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
        if request.class != Class::Request {
            self.stats.dropped_not_request += 1;
            return None;
        }
        if request.method != Method::Binding {
            self.stats.dropped_unsupported_method += 1;
            return None;
        }
        if !self.take_token(now, from.ip()) {
            self.stats.dropped_rate_limited += 1;
            return None;
        }
        let unknown = request.unknown_comprehension_required();
        let id = request.transaction_id;
        let mut response = if unknown.is_empty() {
            self.stats.answered += 1;
            let mut msg = Message::new(Class::Success, Method::Binding, id);
            msg.attributes.push(Attribute::XorMappedAddress(from));
            if self.conf.response_origin {
                msg.attributes.push(Attribute::ResponseOrigin(local));
            }
            msg
        } else {
            self.stats.answered_unknown_attribute += 1;
            let mut msg = Message::new(Class::Error, Method::Binding, id);
            msg.attributes.push(Attribute::ErrorCode {
                code: 420,
                reason: String::new(),
            });
            msg.attributes.push(Attribute::UnknownAttributes(unknown));
            msg
        };
        if let Some(software) = &self.conf.software {
            response
                .attributes
                .push(Attribute::Software(software.clone()));
        }
        let opts = EncodeOptions {
            integrity_key: None,
            fingerprint: request.has_fingerprint(),
        };
        let out = response.encode_with(&opts);
        self.stats.bytes_out += out.len() as u64;
        Some(out)
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
