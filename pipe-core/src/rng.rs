//! A tiny seeded generator (SplitMix64). The core never reads a thread RNG: every seed comes
//! from `Conf` or a constructor, so the same seed and inputs give the same outputs.

/// Deterministic 64-bit generator. Not cryptographic: use it for sequence numbers, jitter and
/// test networks, and feed real entropy in through the seed where unpredictability matters
/// (STUN transaction ids, reliable-UDP sequence starts).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Fill `out` with random bytes.
    pub fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }

    /// A value in `0..n` (`n > 0`), by multiply-shift (bias below 2^-32 for small `n`).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// True with probability `p` (0.0..=1.0): never at 0, always at 1.
    pub fn chance(&mut self, p: f64) -> bool {
        // A draw in [0, 1); `>=`, so that p = 1 holds for a draw of 0 too.
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 >= 1.0 - p
    }
}
