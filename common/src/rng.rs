//! SplitMix64: a tiny seedable generator, so synthetic data, folds and training sample
//! order are pure functions of their seed on every platform.

/// A SplitMix64 generator.
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [a, b).
    pub fn range(&mut self, a: f64, b: f64) -> f64 {
        a + (b - a) * self.unit()
    }

    /// Uniform in 0..n.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// A generator for one item of a stream: a pure function of (seed, a, b), so any
    /// position of a sampler can be recomputed without replaying the ones before it.
    pub fn for_item(seed: u64, a: u64, b: u64) -> Rng {
        let mut r = Rng(seed ^ 0xA076_1D64_78BD_642F);
        let x = r.next_u64() ^ a.wrapping_mul(0xE703_7ED1_A0B4_28DB);
        let mut r = Rng(x);
        Rng(r.next_u64() ^ b.wrapping_mul(0x8EBC_6AF0_9C88_C6E3))
    }

    /// Fisher-Yates shuffle.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i + 1));
        }
    }
}
