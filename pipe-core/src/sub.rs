//! Subscriptions: which messages a pipe queues, and the bounded queues themselves.

use std::collections::VecDeque;
use std::net::SocketAddr;

use regex::bytes::{Regex, RegexBuilder};

use crate::addr::same_ip;
use crate::error::SubscribeError;
use crate::event::Message;

/// What a subscription matches: a byte regex searched anywhere in the payload (P2PD's
/// `re.findall` semantics: any match counts; anchor with `^`/`$`) and/or a sender address
/// (port 0 = any port of that IP). An empty filter matches every message.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pattern: Option<Regex>,
    addr: Option<SocketAddr>,
}

/// Largest compiled regex accepted, so a subscription cannot eat unbounded memory.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

impl Filter {
    /// Every message (P2PD's `SUB_ALL`).
    pub fn all() -> Self {
        Self::default()
    }

    /// Messages whose payload matches `pattern` somewhere. An empty pattern matches all.
    pub fn pattern(pattern: &str) -> Result<Self, SubscribeError> {
        Self::all().with_pattern(pattern)
    }

    /// Messages from `addr` (port 0 = any port of that IP).
    pub fn from_addr(addr: SocketAddr) -> Self {
        Self::all().with_addr(addr)
    }

    /// Add a payload pattern.
    pub fn with_pattern(mut self, pattern: &str) -> Result<Self, SubscribeError> {
        self.pattern = if pattern.is_empty() {
            None
        } else {
            Some(
                RegexBuilder::new(pattern)
                    .size_limit(REGEX_SIZE_LIMIT)
                    .build()
                    .map_err(|e| SubscribeError::BadPattern(e.to_string()))?,
            )
        };
        Ok(self)
    }

    /// Add a sender address.
    pub fn with_addr(mut self, addr: SocketAddr) -> Self {
        self.addr = Some(addr);
        self
    }

    /// True for the filter that matches everything.
    pub fn is_all(&self) -> bool {
        self.pattern.is_none() && self.addr.is_none()
    }

    /// Does `msg` match?
    pub fn matches(&self, msg: &Message) -> bool {
        self.matches_parts(&msg.data, &msg.from)
    }

    pub(crate) fn matches_parts(&self, data: &[u8], from: &SocketAddr) -> bool {
        if let Some(want) = &self.addr {
            if !same_ip(want.ip(), from.ip()) || (want.port() != 0 && want.port() != from.port()) {
                return false;
            }
        }
        match &self.pattern {
            Some(re) => re.is_match(data),
            None => true,
        }
    }

    /// Two filters are the same subscription when their pattern text and address are equal
    /// (addresses compared as endpoints, so `::1` and `0:0:0:0:0:0:0:1` are one).
    pub fn same_as(&self, other: &Filter) -> bool {
        let pat = |f: &Filter| f.pattern.as_ref().map(|r| r.as_str().to_owned());
        let addr_eq = match (&self.addr, &other.addr) {
            (None, None) => true,
            (Some(a), Some(b)) => a.port() == b.port() && same_ip(a.ip(), b.ip()),
            _ => false,
        };
        addr_eq && pat(self) == pat(other)
    }
}

/// A bounded FIFO of messages: count cap and byte cap (0 = no cap), drop-oldest on overflow.
#[derive(Debug, Default)]
pub(crate) struct Queue {
    items: VecDeque<Message>,
    bytes: usize,
    max_len: usize,
    max_bytes: usize,
    pub(crate) dropped: u64,
}

impl Queue {
    pub(crate) fn new(max_len: usize, max_bytes: usize) -> Self {
        Self {
            max_len,
            max_bytes,
            ..Self::default()
        }
    }

    pub(crate) fn push(&mut self, msg: Message) {
        let len = msg.data.len();
        if self.max_bytes != 0 && len > self.max_bytes {
            self.dropped += 1;
            return;
        }
        while (self.max_len != 0 && self.items.len() >= self.max_len)
            || (self.max_bytes != 0 && self.bytes + len > self.max_bytes)
        {
            let Some(old) = self.items.pop_front() else {
                break;
            };
            self.bytes -= old.data.len();
            self.dropped += 1;
        }
        self.bytes += len;
        self.items.push_back(msg);
    }

    pub(crate) fn pop(&mut self) -> Option<Message> {
        let msg = self.items.pop_front()?;
        self.bytes -= msg.data.len();
        Some(msg)
    }

    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Whether one more message of `len` bytes would make the queue drop its oldest.
    pub(crate) fn would_drop(&self, len: usize) -> bool {
        (self.max_len != 0 && self.items.len() + 1 > self.max_len)
            || (self.max_bytes != 0 && self.bytes + len > self.max_bytes)
    }

    pub(crate) fn within_caps(&self) -> bool {
        (self.max_len == 0 || self.items.len() <= self.max_len)
            && (self.max_bytes == 0 || self.bytes <= self.max_bytes)
    }
}

#[derive(Debug)]
pub(crate) struct Subscription {
    pub(crate) id: crate::event::SubId,
    pub(crate) filter: Filter,
    pub(crate) queue: Queue,
    /// Matching messages go to the driver's handler ([`crate::Event::SubMessage`]), not
    /// to the queue.
    pub(crate) handler: bool,
}

/// A message waiting for its callbacks before it is offered to the subscriptions
/// (`engine/subs.rs`).
#[derive(Debug)]
pub(crate) struct Held {
    /// Its callbacks have not finished (false: it waits only for those ahead of it).
    pub(crate) waits: bool,
    /// A link or a callback took it (for the fallback subscription and `unclaimed`).
    pub(crate) claimed: bool,
    /// `None` when the pipe had no subscription when it arrived.
    pub(crate) msg: Option<Message>,
}
