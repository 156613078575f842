//! Duplicate suppression: a bounded least-recently-seen window of message ids.
//!
//! An id is (sender IP, optionally port, payload length, SipHash-1-3 of the payload). A false
//! duplicate needs a 64-bit hash collision between two same-length payloads from one sender
//! inside the window. Unlike P2PD, the window evicts the least recently seen id instead of
//! clearing everything when full, so it is exact for the last `max_msg_ids` distinct messages.

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};

use crate::conf::DedupKey;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    ip: IpAddr,
    port: u16,
    len: u32,
    digest: u64,
}

/// The dedup window of one pipe.
#[derive(Debug)]
pub(crate) struct Dedup {
    cap: usize,
    keying: DedupKey,
    /// Key → stamp of its latest sighting.
    seen: HashMap<Key, u64>,
    /// Sightings in order; entries whose stamp is stale are skipped on eviction.
    order: VecDeque<(Key, u64)>,
    stamp: u64,
}

impl Dedup {
    pub(crate) fn new(cap: usize, keying: DedupKey) -> Self {
        Self {
            cap: cap.max(1),
            keying,
            seen: HashMap::new(),
            order: VecDeque::new(),
            stamp: 0,
        }
    }

    /// True if the message is new (and remembers it); false for a duplicate (refreshed).
    pub(crate) fn check(&mut self, from: &SocketAddr, data: &[u8]) -> bool {
        let mut h = std::hash::DefaultHasher::new();
        data.hash(&mut h);
        let key = Key {
            ip: from.ip().to_canonical(),
            port: match self.keying {
                DedupKey::Ip => 0,
                DedupKey::IpPort => from.port(),
            },
            len: u32::try_from(data.len()).unwrap_or(u32::MAX),
            digest: h.finish(),
        };
        self.stamp += 1;
        let stamp = self.stamp;
        let fresh = self.seen.insert(key, stamp).is_none();
        self.order.push_back((key, stamp));
        if fresh && self.seen.len() > self.cap {
            self.evict_one();
        }
        if self.order.len() > 2 * self.cap + 16 {
            self.compact();
        }
        fresh
    }

    fn evict_one(&mut self) {
        while let Some((key, stamp)) = self.order.pop_front() {
            if self.seen.get(&key) == Some(&stamp) {
                self.seen.remove(&key);
                return;
            }
        }
    }

    fn compact(&mut self) {
        let seen = &self.seen;
        self.order.retain(|(k, s)| seen.get(k) == Some(s));
    }

    pub(crate) fn within_caps(&self) -> bool {
        self.seen.len() <= self.cap && self.order.len() <= 2 * self.cap + 16
    }
}

/// A bounded FIFO set, for reliable-UDP sequence numbers already delivered.
#[derive(Debug)]
pub(crate) struct SeenSet<K: Hash + Eq + Copy> {
    cap: usize,
    set: std::collections::HashSet<K>,
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

    pub(crate) fn len(&self) -> usize {
        self.order.len()
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
}
