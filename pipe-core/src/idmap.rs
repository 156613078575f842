//! A hash map for the small integer keys pipes assign themselves (pipe ids, link tokens):
//! one multiply per word. SipHash's flood resistance buys nothing here, since peers never
//! choose these keys; the engine's pipe table and the drivers' per-pipe tables use it.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

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

#[cfg(test)]
mod tests {
    use std::hash::{BuildHasher, Hash};

    use super::*;
    use crate::event::PipeId;

    fn hash(v: impl Hash) -> u64 {
        BuildHasherDefault::<IdHasher>::default().hash_one(v)
    }

    /// The table stays a hash table: distinct ids (and byte strings) hash apart. A hasher
    /// that gave every key one hash would keep the maps correct but make each lookup a scan
    /// (a server with 10,000 connections would search them all per message).
    #[test]
    fn distinct_keys_hash_apart() {
        let ids: std::collections::HashSet<u64> = (0..10_000u64).map(|i| hash(PipeId(i))).collect();
        assert_eq!(ids.len(), 10_000);
        assert_ne!(hash(b"ab".as_slice()), hash(b"ba".as_slice()));
        assert_ne!(hash(b"ab".as_slice()), hash(b"".as_slice()));
    }
}
