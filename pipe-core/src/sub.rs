//! Subscriptions: which messages a pipe queues, and the bounded queues themselves.

use std::collections::VecDeque;
use std::net::SocketAddr;

use memchr::memmem;
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
    /// The pattern when it is a plain literal, anchored at either end or not: matched
    /// without the regex engine (it gives the same answer; its search costs several times
    /// more on a short message).
    literal: Option<Literal>,
    addr: Option<SocketAddr>,
}

/// A pattern made only of literal characters, with an optional `^` before and `$` after.
/// Without the multi-line flag (which needs `(?m)`, not a literal) `^` is the start of the
/// payload and `$` its end, so each is a plain comparison of bytes.
#[derive(Debug, Clone)]
enum Literal {
    /// `lit`: anywhere.
    Anywhere(Box<memmem::Finder<'static>>),
    /// `^lit`.
    Prefix(Box<[u8]>),
    /// `lit$`.
    Suffix(Box<[u8]>),
    /// `^lit$`.
    Whole(Box<[u8]>),
}

impl Literal {
    /// The literal form of `pattern`, if it has one: every character between the anchors
    /// is one `regex::escape` leaves alone (no meta character, no escape), so it matches
    /// itself (its UTF-8 bytes), case-sensitively.
    fn of(pattern: &str) -> Option<Self> {
        let (start, rest) = match pattern.strip_prefix('^') {
            Some(rest) => (true, rest),
            None => (false, pattern),
        };
        let (end, text) = match rest.strip_suffix('$') {
            Some(text) => (true, text),
            None => (false, rest),
        };
        if regex::escape(text) != text {
            return None;
        }
        let bytes: Box<[u8]> = text.as_bytes().into();
        Some(match (start, end) {
            (false, false) => Literal::Anywhere(Box::new(memmem::Finder::new(text).into_owned())),
            (true, false) => Literal::Prefix(bytes),
            (false, true) => Literal::Suffix(bytes),
            (true, true) => Literal::Whole(bytes),
        })
    }

    fn matches(&self, data: &[u8]) -> bool {
        match self {
            Literal::Anywhere(f) => f.find(data).is_some(),
            Literal::Prefix(lit) => data.starts_with(lit),
            Literal::Suffix(lit) => data.ends_with(lit),
            Literal::Whole(lit) => data == &lit[..],
        }
    }
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
        // After the build: a pattern the regex refuses (too large) is refused either way.
        self.literal = self.pattern.as_ref().and_then(|_| Literal::of(pattern));
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

    #[inline]
    pub(crate) fn matches_parts(&self, data: &[u8], from: &SocketAddr) -> bool {
        if let Some(want) = &self.addr {
            if !same_ip(want.ip(), from.ip()) || (want.port() != 0 && want.port() != from.port()) {
                return false;
            }
        }
        self.pattern.is_none() || self.matches_payload(data)
    }

    /// The payload part of a filter with a pattern (apart: the search's code would make
    /// every filter's check pay for its registers).
    #[inline(never)]
    fn matches_payload(&self, data: &[u8]) -> bool {
        match (&self.literal, &self.pattern) {
            (Some(lit), _) => lit.matches(data),
            (None, Some(re)) => re.is_match(data),
            (None, None) => true,
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

    #[inline]
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use proptest::strategy::Just;

    use super::*;

    fn from() -> SocketAddr {
        "10.0.0.2:2000".parse().unwrap()
    }

    /// Which form `Literal::of` gives: `'*'` anywhere, `'<'` prefix, `'>'` suffix, `'='` whole;
    /// `'-'` none (the regex decides).
    fn form(pattern: &str) -> char {
        match Literal::of(pattern) {
            Some(Literal::Anywhere(_)) => '*',
            Some(Literal::Prefix(_)) => '<',
            Some(Literal::Suffix(_)) => '>',
            Some(Literal::Whole(_)) => '=',
            None => '-',
        }
    }

    #[test]
    fn only_plain_text_between_the_anchors_is_a_literal() {
        for (p, want) in [
            ("ping", '*'),
            ("^ping", '<'),
            ("pong$", '>'),
            ("^ping$", '='),
            ("^", '<'),
            ("$", '>'),
            ("^$", '='),
            ("a b\n", '*'),
            ("héllo", '*'),
            ("p.ng", '-'),
            ("pi*", '-'),
            ("(?i)ping", '-'),
            ("ping\\$", '-'),
            ("\\^ping", '-'),
            ("^^", '-'),
            ("$$", '-'),
            ("a$b", '-'),
            ("a^b", '-'),
            ("[p]", '-'),
            ("p|q", '-'),
            ("a{2}", '-'),
            ("#", '-'),
            ("a-b", '-'),
        ] {
            assert_eq!(form(p), want, "{p:?}");
        }
        // The empty pattern is no pattern at all (every message).
        assert!(Filter::pattern("").unwrap().is_all());
    }

    #[test]
    fn a_literal_matches_as_its_regex_does() {
        let hay: [&[u8]; 9] = [
            b"",
            b"ping",
            b"xpingx",
            b"pin",
            b"pong",
            b"ping pong",
            b"pong\n",
            b"PING",
            b"\xffping\xff",
        ];
        for p in [
            "ping", "^ping", "pong$", "^ping$", "^pong", "ping$", "^", "$", "^$", "g", "^p", "g$",
        ] {
            let f = Filter::pattern(p).unwrap();
            assert_ne!(form(p), '-', "{p:?}");
            let re = Regex::new(p).unwrap();
            for h in hay {
                assert_eq!(
                    f.matches_parts(h, &from()),
                    re.is_match(h),
                    "{p:?} on {h:?}"
                );
            }
        }
    }

    #[test]
    fn a_literal_still_needs_its_address() {
        let f = Filter::pattern("ping")
            .unwrap()
            .with_addr("10.0.0.3:0".parse().unwrap());
        assert!(!f.matches_parts(b"ping", &from()));
        assert!(f.matches_parts(b"ping", &"10.0.0.3:1".parse().unwrap()));
        assert!(!f.matches_parts(b"pong", &"10.0.0.3:1".parse().unwrap()));
    }

    fn text() -> impl Strategy<Value = String> {
        let c = prop_oneof![
            Just('a'),
            Just('b'),
            Just('^'),
            Just('$'),
            Just('.'),
            Just('\n'),
            Just('é'),
            Just('\\'),
        ];
        proptest::collection::vec(c, 0..5).prop_map(|v| v.into_iter().collect())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        /// Every pattern over a small alphabet with anchors, meta characters, a newline and a
        /// two-byte character matches every payload as the regex does, literal or not.
        #[test]
        fn filters_match_as_the_regex(pattern in text(), hay in text(), cut in 0usize..3) {
            let Ok(re) = Regex::new(&pattern) else { return Ok(()) };
            let f = Filter::pattern(&pattern).unwrap();
            // Also cut into a two-byte character (not UTF-8): bytes are bytes.
            let bytes = hay.as_bytes();
            let hay = &bytes[..bytes.len().saturating_sub(cut)];
            prop_assert_eq!(f.matches_parts(hay, &from()), pattern.is_empty() || re.is_match(hay));
        }
    }
}
