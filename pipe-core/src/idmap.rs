//! A hash map for the small integer keys pipes assign themselves (pipe ids, link tokens):
//! one multiply per word. SipHash's flood resistance buys nothing here, since peers never
//! choose these keys; the engine's pipe table and the drivers' per-pipe tables use it.
//!
//! [`IdTable`] is the tables a pipe group keeps per pipe: its first entry is held inline,
//! so a client group (one pipe, for its whole life) allocates no table at all.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};

/// The hasher of [`IdMap`]: a rotate, an xor and a multiply per word.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// A `HashMap` keyed by ids pipes assign themselves (never by peers).
pub type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// A table of one pipe group's pipes by id: the first entry inline, the others in an
/// [`IdMap`]. A group is a client alone or a listener with its connections, so a client's
/// table never allocates (each hash table's first insert allocated, and a client's open and
/// close paid that twice, engine and driver), and finding a client's pipe hashes nothing.
/// A listener stays inline and its connections go to the map. Iteration order is
/// unspecified, as a `HashMap`'s.
///
/// `S` is how the map holds a value: the value itself, or a `Box<V>` for large values
/// (the engine's pipe state), so that the inline entry needs no allocation of its own while
/// a listener's map of thousands of connections moves and over-allocates pointers only.
#[derive(Debug)]
pub struct IdTable<K, V, S = V> {
    first: Option<(K, V)>,
    rest: IdMap<K, S>,
}

/// How [`IdTable`]'s map holds a value: as itself or boxed.
pub trait Stored<V>: std::borrow::BorrowMut<V> {
    /// Wrap a value to go in the map.
    fn wrap(v: V) -> Self;
    /// The value back out of the map.
    fn unwrap(self) -> V;
}

impl<V> Stored<V> for V {
    fn wrap(v: V) -> Self {
        v
    }
    fn unwrap(self) -> V {
        self
    }
}

impl<V> Stored<V> for Box<V> {
    fn wrap(v: V) -> Self {
        Box::new(v)
    }
    fn unwrap(self) -> V {
        *self
    }
}

impl<K, V, S> Default for IdTable<K, V, S> {
    fn default() -> Self {
        Self {
            first: None,
            rest: IdMap::default(),
        }
    }
}

impl<K: Copy + Eq + Hash, V, S: Stored<V>> IdTable<K, V, S> {
    /// The value for `k`. A table with entries in its map (a listener's) looks there first:
    /// most lookups are of its connections.
    #[inline]
    pub fn get(&self, k: &K) -> Option<&V> {
        if !self.rest.is_empty() {
            if let Some(v) = self.rest.get(k) {
                return Some(v.borrow());
            }
        }
        match &self.first {
            Some((f, v)) if f == k => Some(v),
            _ => None,
        }
    }

    /// The value for `k`, mutably (looked up as [`IdTable::get`] does).
    #[inline]
    pub fn get_mut(&mut self, k: &K) -> Option<&mut V> {
        if !self.rest.is_empty() {
            if let Some(v) = self.rest.get_mut(k) {
                return Some(v.borrow_mut());
            }
        }
        match &mut self.first {
            Some((f, v)) if f == k => Some(v),
            _ => None,
        }
    }

    /// [`IdTable::get`] for a key that is most likely the inline entry's (a listener's,
    /// looked up from one of its connections): its key is compared before the map is
    /// hashed, where `get` would probe the map first and miss.
    #[inline]
    pub fn get_likely_first(&self, k: &K) -> Option<&V> {
        match &self.first {
            Some((f, v)) if f == k => Some(v),
            _ if self.rest.is_empty() => None,
            _ => self.rest.get(k).map(|v| v.borrow()),
        }
    }

    /// [`IdTable::get_likely_first`], mutably.
    #[inline]
    pub fn get_mut_likely_first(&mut self, k: &K) -> Option<&mut V> {
        match &mut self.first {
            Some((f, v)) if f == k => Some(v),
            _ if self.rest.is_empty() => None,
            _ => self.rest.get_mut(k).map(|v| v.borrow_mut()),
        }
    }

    /// Whether `k` has a value.
    pub fn contains_key(&self, k: &K) -> bool {
        self.get(k).is_some()
    }

    /// Set the value for `k`, returning the one it replaced (as `HashMap::insert`).
    #[inline]
    pub fn insert(&mut self, k: K, v: V) -> Option<V> {
        match &mut self.first {
            Some((f, old)) if *f == k => return Some(std::mem::replace(old, v)),
            None if !self.rest.contains_key(&k) => {
                self.first = Some((k, v));
                return None;
            }
            _ => {}
        }
        self.rest.insert(k, S::wrap(v)).map(S::unwrap)
    }

    /// Remove and return the value for `k`.
    pub fn remove(&mut self, k: &K) -> Option<V> {
        if matches!(&self.first, Some((f, _)) if f == k) {
            return self.first.take().map(|(_, v)| v);
        }
        self.rest.remove(k).map(S::unwrap)
    }

    /// Remove the value for `k` and drop it where it is (a large value is not moved out
    /// to be dropped); whether there was one.
    pub fn discard(&mut self, k: &K) -> bool {
        if matches!(&self.first, Some((f, _)) if f == k) {
            self.first = None;
            return true;
        }
        self.rest.remove(k).is_some()
    }

    /// How many entries.
    pub fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.first
            .iter()
            .map(|(k, v)| (k, v))
            .chain(self.rest.iter().map(|(k, v)| (k, v.borrow())))
    }

    /// Every value, in no particular order.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.iter().map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use std::hash::{BuildHasher, Hash};

    use super::*;
    use crate::event::PipeId;

    fn pid(i: u64) -> PipeId {
        PipeId(std::num::NonZeroU64::new(i).expect("ids start at 1"))
    }

    fn hash(v: impl Hash) -> u64 {
        BuildHasherDefault::<IdHasher>::default().hash_one(v)
    }

    /// The table stays a hash table: distinct ids (and byte strings) hash apart. A hasher
    /// that gave every key one hash would keep the maps correct but make each lookup a scan
    /// (a server with 10,000 connections would search them all per message).
    #[test]
    fn distinct_keys_hash_apart() {
        let ids: std::collections::HashSet<u64> = (1..=10_000u64).map(|i| hash(pid(i))).collect();
        assert_eq!(ids.len(), 10_000);
        assert_ne!(hash(b"ab".as_slice()), hash(b"ba".as_slice()));
        assert_ne!(hash(b"ab".as_slice()), hash(b"".as_slice()));
    }

    /// The table answers as a `HashMap` would, over a long run of inserts (new and
    /// replacing), removes and discards (present and absent, the inline entry among them)
    /// and lookups, with few keys so that each path is hit many times; values held as
    /// themselves and boxed.
    #[test]
    fn table_matches_a_hash_map() {
        matches_a_hash_map::<u64>();
        matches_a_hash_map::<Box<u64>>();
    }

    fn matches_a_hash_map<S: Stored<u64>>() {
        let mut t: IdTable<u64, u64, S> = IdTable::default();
        let mut m: HashMap<u64, u64> = HashMap::new();
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        for step in 0..20_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let k = x % 6;
            match (x >> 8) % 4 {
                0 | 1 => assert_eq!(t.insert(k, step), m.insert(k, step), "insert {k}"),
                2 if step % 2 == 0 => assert_eq!(t.remove(&k), m.remove(&k), "remove {k}"),
                2 => assert_eq!(t.discard(&k), m.remove(&k).is_some(), "discard {k}"),
                _ => {
                    let v = if step % 2 == 0 {
                        t.get_mut(&k)
                    } else {
                        t.get_mut_likely_first(&k)
                    };
                    if let Some(v) = v {
                        *v += 1;
                    }
                    if let Some(v) = m.get_mut(&k) {
                        *v += 1;
                    }
                }
            }
            assert_eq!(t.len(), m.len());
            assert_eq!(t.is_empty(), m.is_empty());
            for k in 0..6 {
                assert_eq!(t.get(&k), m.get(&k));
                assert_eq!(t.get_likely_first(&k), m.get(&k));
                assert_eq!(t.contains_key(&k), m.contains_key(&k));
            }
            let mut a: Vec<_> = t.iter().map(|(k, v)| (*k, *v)).collect();
            let mut b: Vec<_> = m.iter().map(|(k, v)| (*k, *v)).collect();
            a.sort_unstable();
            b.sort_unstable();
            assert_eq!(a, b);
            assert_eq!(t.values().count(), m.len());
        }
    }

    /// A client's table (one entry, replaced, removed, inserted again) allocates nothing.
    #[test]
    fn one_entry_stays_inline() {
        let mut t: IdTable<PipeId, u64> = IdTable::default();
        for i in 1..4 {
            assert_eq!(t.insert(pid(i), i), None);
            assert_eq!(t.insert(pid(i), i + 10), Some(i));
            assert_eq!(t.rest.capacity(), 0);
            assert_eq!(t.remove(&pid(i)), Some(i + 10));
        }
        // A second entry goes to the map; removing the inline one leaves the map's alone.
        t.insert(pid(1), 1);
        t.insert(pid(2), 2);
        assert_eq!(t.rest.len(), 1);
        assert_eq!(t.remove(&pid(1)), Some(1));
        assert_eq!(t.get(&pid(2)), Some(&2));
        // The next new key takes the free inline place; a key in the map stays there.
        t.insert(pid(3), 3);
        assert!(matches!(t.first, Some((k, 3)) if k == pid(3)));
        assert_eq!(t.insert(pid(2), 20), Some(2));
        assert_eq!(t.rest.len(), 1);
    }
}
