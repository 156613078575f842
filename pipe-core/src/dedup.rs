//! Duplicate suppression: bounded least-recently-seen windows, and the reliable-UDP
//! receive window.
//!
//! - [`Dedup`] (`enable_msg_ids`): an id is (sender IP, optionally port, payload length,
//!   SipHash-1-3 of the payload). A false duplicate needs a 64-bit hash collision between two
//!   same-length payloads from one sender inside the window. Unlike P2PD, the window evicts the
//!   least recently seen id instead of clearing everything when full, so it is exact for the
//!   last `max_msg_ids` distinct messages.
//! - [`StampWindow`] (`relay_stamp`): the same LRU window over (origin, message id) stamps.
//! - [`RecvWindow`] (`reliable_udp`): per sender, a sliding window over sequence numbers
//!   (RFC 4303 §3.4.3), in a sender table evicting the least recently heard sender; sequence
//!   numbers far from a sender's window (P2PD picks them at random) go to a bounded FIFO set.

use std::collections::hash_map::Entry;
use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};
use std::net::{IpAddr, SocketAddr};

use crate::conf::DedupKey;

/// A bounded map that evicts the least recently touched key.
#[derive(Debug)]
pub(crate) struct Lru<K, V, S = RandomState> {
    cap: usize,
    /// Key → value and the stamp of its latest touch.
    map: HashMap<K, (V, u64), S>,
    /// Touches in order; entries whose stamp is stale are skipped on eviction.
    order: VecDeque<(K, u64)>,
    stamp: u64,
}

impl<K: Hash + Eq + Copy, V, S: BuildHasher + Default> Lru<K, V, S> {
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            cap: cap.max(1),
            map: HashMap::with_hasher(S::default()),
            order: VecDeque::new(),
            stamp: 0,
        }
    }

    /// Touch `k`, inserting `make()` if it is absent (evicting the least recently touched key
    /// past the cap). True if it was absent.
    pub(crate) fn touch(&mut self, k: K, make: impl FnOnce() -> V) -> bool {
        self.stamp += 1;
        let stamp = self.stamp;
        let fresh = match self.map.entry(k) {
            Entry::Occupied(mut o) => {
                o.get_mut().1 = stamp;
                false
            }
            Entry::Vacant(v) => {
                v.insert((make(), stamp));
                true
            }
        };
        self.order.push_back((k, stamp));
        if fresh && self.map.len() > self.cap {
            self.evict_one();
        }
        if self.order.len() > 2 * self.cap + 16 {
            self.compact();
        }
        fresh
    }

    pub(crate) fn get_mut(&mut self, k: &K) -> Option<&mut V> {
        self.map.get_mut(k).map(|(v, _)| v)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &V> {
        self.map.values().map(|(v, _)| v)
    }

    fn evict_one(&mut self) {
        while let Some((key, stamp)) = self.order.pop_front() {
            // One lookup: the key's entry, removed if this touch is its latest.
            if let Entry::Occupied(o) = self.map.entry(key) {
                if o.get().1 == stamp {
                    o.remove();
                    return;
                }
            }
        }
    }

    fn compact(&mut self) {
        let map = &self.map;
        self.order
            .retain(|(k, s)| map.get(k).is_some_and(|(_, t)| t == s));
    }

    pub(crate) fn within_caps(&self) -> bool {
        self.map.len() <= self.cap && self.order.len() <= 2 * self.cap + 16
    }
}

/// A message's identity. `digest` is a keyed hash of the other fields and the payload, so
/// the window's map uses it as the key's hash as it is ([`DigestHasher`]): one SipHash per
/// message, not two, and a peer cannot aim keys at one bucket without the secret key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key {
    ip: IpAddr,
    port: u16,
    len: u32,
    digest: u64,
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.digest);
    }
}

/// The hasher of [`Key`]s: their digest, already keyed and uniform.
#[derive(Debug, Default, Clone, Copy)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not reached (`Key` writes one u64); a plain fold keeps it a correct hasher.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// The dedup window of one pipe.
#[derive(Debug)]
pub(crate) struct Dedup {
    keying: DedupKey,
    /// The secret key of the digests (SipHash-1-3, random per window).
    keys: RandomState,
    window: Lru<Key, (), BuildHasherDefault<DigestHasher>>,
}

impl Dedup {
    pub(crate) fn new(cap: usize, keying: DedupKey) -> Self {
        Self {
            keying,
            keys: RandomState::new(),
            window: Lru::new(cap),
        }
    }

    /// True if the message is new (and remembers it); false for a duplicate (refreshed).
    pub(crate) fn check(&mut self, from: &SocketAddr, data: &[u8]) -> bool {
        let ip = from.ip().to_canonical();
        let port = match self.keying {
            DedupKey::Ip => 0,
            DedupKey::IpPort => from.port(),
        };
        // The sender in one word (IPv4: address and port) or two (IPv6: address, then
        // port), a fixed length for each family so the payload that follows needs no length
        // prefix, then the payload: at most three writes into the hasher instead of six.
        let mut h = self.keys.build_hasher();
        let [p0, p1] = port.to_be_bytes();
        match ip {
            IpAddr::V4(v4) => {
                let [a, b, c, d] = v4.octets();
                h.write_u64(u64::from_be_bytes([0, 4, a, b, c, d, p0, p1]));
            }
            IpAddr::V6(v6) => {
                h.write_u128(v6.to_bits());
                h.write_u64(u64::from_be_bytes([0, 6, 0, 0, 0, 0, p0, p1]));
            }
        }
        h.write(data);
        let key = Key {
            ip,
            port,
            len: u32::try_from(data.len()).unwrap_or(u32::MAX),
            digest: h.finish(),
        };
        self.window.touch(key, || ())
    }

    pub(crate) fn within_caps(&self) -> bool {
        self.window.within_caps()
    }
}

/// The (origin, message id) window of a stamping pipe: LRU, `max_msg_ids` stamps.
#[derive(Debug)]
pub(crate) struct StampWindow(Lru<(u64, u64), ()>);

impl StampWindow {
    pub(crate) fn new(cap: usize) -> Self {
        Self(Lru::new(cap))
    }

    /// True if the stamp is new (and remembers it); false for one already seen (refreshed).
    pub(crate) fn check(&mut self, origin: u64, id: u64) -> bool {
        self.0.touch((origin, id), || ())
    }

    pub(crate) fn within_caps(&self) -> bool {
        self.0.within_caps()
    }
}

/// A bounded FIFO set, for reliable-UDP sequence numbers already delivered.
#[derive(Debug)]
pub(crate) struct SeenSet<K: Hash + Eq + Copy> {
    cap: usize,
    set: HashSet<K>,
    order: VecDeque<K>,
}

impl<K: Hash + Eq + Copy> SeenSet<K> {
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            cap: cap.max(1),
            set: Default::default(),
            order: VecDeque::new(),
        }
    }

    /// True if `k` was not in the window (and inserts it).
    pub(crate) fn insert(&mut self, k: K) -> bool {
        if !self.set.insert(k) {
            return false;
        }
        self.order.push_back(k);
        if self.order.len() > self.cap {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }

    pub(crate) fn within_caps(&self) -> bool {
        self.order.len() <= self.cap && self.set.len() == self.order.len()
    }
}

/// Most senders a reliable pipe keeps a sliding window for (the least recently heard is
/// evicted). Fewer when `reliable_window` is large: see [`sender_cap`].
pub const MAX_RELIABLE_SENDERS: usize = 1024;
/// Bits of sliding windows a reliable pipe may hold in all: 2^24 bits (2 MiB).
const WINDOW_BITS_BUDGET: usize = 1 << 24;
/// Sequence numbers closer than this to a sender's highest are sequential (ours: a random
/// start, then +1); farther ones are random (P2PD's) and go to the FIFO set.
const NEAR: u64 = 1 << 32;

/// How many senders a reliable pipe with `window` keeps: [`MAX_RELIABLE_SENDERS`], or fewer
/// (at least 16) so that the windows stay within 2 MiB.
pub fn sender_cap(window: usize) -> usize {
    (WINDOW_BITS_BUDGET / window.max(1)).clamp(16, MAX_RELIABLE_SENDERS)
}

/// What the receive window says about a data frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seq {
    /// Not seen before: deliver.
    Fresh,
    /// Seen before: drop (and ACK again).
    Repeat,
    /// More than the window below the sender's highest: drop, never deliver.
    TooOld,
}

/// One sender's sliding window: the highest sequence number and a ring bitmap of the
/// `window` below it (bit of `s` at `s mod ring`).
#[derive(Debug)]
struct SenderWindow {
    highest: u64,
    bits: Box<[u64]>,
    /// A second sequence number near the first was seen: the sender counts up (ours), so a
    /// number far below the window is too old rather than a random P2PD one.
    sequential: bool,
}

impl SenderWindow {
    fn new(seq: u64, words: usize) -> Self {
        let mut w = Self {
            highest: seq,
            bits: vec![0u64; words].into_boxed_slice(),
            sequential: false,
        };
        w.set(seq);
        w
    }

    fn ring(&self) -> u64 {
        self.bits.len() as u64 * 64
    }

    fn index(&self, seq: u64) -> (usize, u64) {
        let i = seq % self.ring();
        ((i / 64) as usize, 1u64 << (i % 64))
    }

    fn get(&self, seq: u64) -> bool {
        let (w, m) = self.index(seq);
        self.bits[w] & m != 0
    }

    fn set(&mut self, seq: u64) {
        let (w, m) = self.index(seq);
        self.bits[w] |= m;
    }

    /// Move the highest up by `d` (> 0), clearing the bits of the numbers it passes.
    fn advance(&mut self, d: u64) {
        let ring = self.ring();
        if d >= ring {
            self.bits.fill(0);
        } else {
            // Clear ring positions highest+1 ..= highest+d, a word at a time.
            let mut i = self.highest.wrapping_add(1) % ring;
            let mut left = d;
            while left > 0 {
                let bit = i % 64;
                let n = (64 - bit).min(left).min(ring - i);
                let mask = if n == 64 {
                    u64::MAX
                } else {
                    ((1u64 << n) - 1) << bit
                };
                self.bits[(i / 64) as usize] &= !mask;
                left -= n;
                i = (i + n) % ring;
            }
        }
        self.highest = self.highest.wrapping_add(d);
    }
}

/// The reliable-UDP receive window of one pipe. Memory: at most [`sender_cap`] senders, each
/// `ceil(window / 64)` words, plus a FIFO set of `window` (sender, seq) pairs.
#[derive(Debug)]
pub(crate) struct RecvWindow {
    window: u64,
    words: usize,
    senders: Lru<SocketAddr, SenderWindow>,
    /// Sequence numbers far from their sender's window (random ones), FIFO.
    far: SeenSet<(SocketAddr, u64)>,
}

impl RecvWindow {
    pub(crate) fn new(window: usize) -> Self {
        let window = window.max(1);
        Self {
            window: window as u64,
            words: window.div_ceil(64),
            senders: Lru::new(sender_cap(window)),
            far: SeenSet::new(window),
        }
    }

    /// Classify (and remember) `seq` from `from` (an address in canonical form).
    pub(crate) fn check(&mut self, from: SocketAddr, seq: u64) -> Seq {
        let words = self.words;
        if self.senders.touch(from, || SenderWindow::new(seq, words)) {
            // A new (or evicted and back) sender: its first number may be a random one seen
            // before, so the FIFO set has the last word.
            return self.far_check(from, seq);
        }
        let window = self.window;
        let Some(w) = self.senders.get_mut(&from) else {
            return Seq::Fresh;
        };
        let up = seq.wrapping_sub(w.highest);
        let down = w.highest.wrapping_sub(seq);
        if up == 0 {
            return Seq::Repeat;
        }
        if up < NEAR {
            w.sequential = true;
            w.advance(up);
            w.set(seq);
            return Seq::Fresh;
        }
        if down < window {
            w.sequential = true;
            if w.get(seq) {
                return Seq::Repeat;
            }
            w.set(seq);
            return Seq::Fresh;
        }
        if down < NEAR && w.sequential {
            return Seq::TooOld;
        }
        self.far_check(from, seq)
    }

    fn far_check(&mut self, from: SocketAddr, seq: u64) -> Seq {
        if self.far.insert((from, seq)) {
            Seq::Fresh
        } else {
            Seq::Repeat
        }
    }

    #[cfg(test)]
    fn senders(&self) -> usize {
        self.senders.len()
    }

    pub(crate) fn within_caps(&self) -> bool {
        self.senders.within_caps()
            && self.senders.values().all(|w| w.bits.len() == self.words)
            && self.far.within_caps()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn run(cap: usize, seq: &[&str]) -> Vec<String> {
        let mut d = Dedup::new(cap, DedupKey::Ip);
        seq.iter()
            .filter(|m| d.check(&addr(1), m.as_bytes()))
            .map(|m| m.to_string())
            .collect()
    }

    #[test]
    fn p2pd_sequence_still_delivers_the_same() {
        assert_eq!(
            run(3, &["a", "a", "b", "a", "c", "d", "e", "a"]),
            ["a", "b", "c", "d", "e", "a"]
        );
    }

    #[test]
    fn lru_keeps_recently_seen_where_p2pd_cleared_all() {
        // P2PD clears its set once it holds more than max ids and re-delivers "a" here.
        assert_eq!(run(2, &["a", "b", "a", "c", "a"]), ["a", "b", "c"]);
    }

    #[test]
    fn ip_keying_ignores_port_and_ip_port_keying_does_not() {
        let mut ip = Dedup::new(10, DedupKey::Ip);
        assert!(ip.check(&addr(1), b"x"));
        assert!(!ip.check(&addr(2), b"x"));
        let mut ipp = Dedup::new(10, DedupKey::IpPort);
        assert!(ipp.check(&addr(1), b"x"));
        assert!(ipp.check(&addr(2), b"x"));
    }

    #[test]
    fn mapped_v6_is_the_same_sender_as_v4() {
        let mut d = Dedup::new(10, DedupKey::IpPort);
        assert!(d.check(&addr(5), b"x"));
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:5".parse().unwrap();
        assert!(!d.check(&mapped, b"x"));
    }

    #[test]
    fn window_stays_bounded_under_repeats() {
        let mut d = Dedup::new(4, DedupKey::Ip);
        for i in 0..10_000u32 {
            d.check(&addr(1), &(i % 7).to_be_bytes());
            assert!(d.within_caps());
        }
    }

    #[test]
    fn seen_set_is_fifo_bounded() {
        let mut s = SeenSet::new(2);
        assert!(s.insert(1));
        assert!(!s.insert(1));
        assert!(s.insert(2));
        assert!(s.insert(3));
        assert_eq!(s.len(), 2);
        assert!(s.insert(1), "1 fell out of the window");
    }

    fn peer(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    #[test]
    fn sliding_window_repeat_too_old_and_wrap() {
        let mut w = RecvWindow::new(100);
        let a = peer(1);
        let start = u64::MAX - 50; // wraps past 0 on the way
        for i in 0..300u64 {
            assert_eq!(w.check(a, start.wrapping_add(i)), Seq::Fresh, "{i}");
        }
        let top = start.wrapping_add(299);
        assert_eq!(w.check(a, top), Seq::Repeat);
        assert_eq!(
            w.check(a, top.wrapping_sub(99)),
            Seq::Repeat,
            "last in window"
        );
        assert_eq!(w.check(a, top.wrapping_sub(100)), Seq::TooOld, "first out");
        assert_eq!(w.check(a, start), Seq::TooOld);
        // A gap: skipped numbers are fresh once, in any order.
        assert_eq!(w.check(a, top.wrapping_add(10)), Seq::Fresh);
        assert_eq!(w.check(a, top.wrapping_add(5)), Seq::Fresh);
        assert_eq!(w.check(a, top.wrapping_add(5)), Seq::Repeat);
        assert_eq!(w.check(a, top.wrapping_add(1)), Seq::Fresh);
        // A jump larger than the ring clears it.
        assert_eq!(w.check(a, top.wrapping_add(10_000)), Seq::Fresh);
        assert_eq!(w.check(a, top.wrapping_add(9_999)), Seq::Fresh);
        assert_eq!(w.check(a, top.wrapping_add(10)), Seq::TooOld);
        assert!(w.within_caps());
    }

    #[test]
    fn advance_clears_exactly_the_passed_positions() {
        // Against a model: every number in the window answered right after random steps.
        let mut rng = crate::rng::Rng::new(3);
        for window in [1usize, 63, 64, 65, 200] {
            let mut w = RecvWindow::new(window);
            let mut seen = std::collections::BTreeSet::new();
            let mut top = 1_000u64;
            assert_eq!(w.check(peer(1), top), Seq::Fresh);
            assert_eq!(w.check(peer(1), top + 1), Seq::Fresh, "now sequential");
            seen.extend([top, top + 1]);
            top += 1;
            for _ in 0..2_000 {
                let s = if rng.chance(0.5) {
                    top + rng.below(3 * window as u64)
                } else {
                    top.saturating_sub(rng.below(2 * window as u64))
                };
                let want = if s + (window as u64) <= top {
                    Seq::TooOld
                } else if seen.contains(&s) {
                    Seq::Repeat
                } else {
                    Seq::Fresh
                };
                assert_eq!(
                    w.check(peer(1), s),
                    want,
                    "window {window}, {s} (top {top})"
                );
                if want == Seq::Fresh {
                    seen.insert(s);
                    top = top.max(s);
                }
            }
        }
    }

    #[test]
    fn random_p2pd_seqs_use_the_fifo_set() {
        let mut w = RecvWindow::new(8);
        let a = peer(1);
        let mut rng = crate::rng::Rng::new(9);
        let seqs: Vec<u64> = (0..8).map(|_| rng.next_u64() | 1).collect();
        for s in &seqs {
            assert_eq!(w.check(a, *s), Seq::Fresh);
        }
        for s in &seqs {
            assert_eq!(w.check(a, *s), Seq::Repeat, "never too old, never twice");
        }
        assert_eq!(w.far.len(), 8);
    }

    #[test]
    fn sender_table_evicts_the_least_recently_heard() {
        assert_eq!(sender_cap(1024), MAX_RELIABLE_SENDERS);
        assert_eq!(sender_cap(1 << 20), 16);
        let mut w = RecvWindow::new(1 << 20);
        for p in 0..16 {
            assert_eq!(w.check(peer(p), 5_000), Seq::Fresh);
            assert_eq!(w.check(peer(p), 5_001), Seq::Fresh);
        }
        assert_eq!(w.check(peer(0), 5_002), Seq::Fresh, "0 heard last");
        assert_eq!(w.check(peer(99), 1), Seq::Fresh, "a 17th sender evicts 1");
        assert_eq!(w.senders(), 16);
        assert!(w.within_caps());
        assert_eq!(w.check(peer(0), 5_001), Seq::Repeat, "0 kept its window");
        // Sender 1 starts over: 5_001 is news to its new window (and not in the FIFO set).
        assert_eq!(w.check(peer(1), 5_001), Seq::Fresh);
    }
}
