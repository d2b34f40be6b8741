//! A small seeded generator for test data (splitmix64), fresh per run.

use std::time::{SystemTime, UNIX_EPOCH};

/// A seeded pseudo-random generator. [`Rng::fresh`] seeds from `AIHAL_TEST_SEED` when set,
/// else from the clock, so every run draws new data; the seed is in every failure message.
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
    seed: u64,
}

impl Rng {
    /// A generator with a fixed seed.
    pub fn new(seed: u64) -> Self {
        Self { state: seed, seed }
    }

    /// A generator seeded from `AIHAL_TEST_SEED`, or from the clock.
    pub fn fresh() -> Self {
        let seed = std::env::var("AIHAL_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0x5eed, |d| d.as_nanos() as u64)
            });
        Self::new(seed)
    }

    /// The seed, to replay a failure with `AIHAL_TEST_SEED`.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        let unit = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * unit
    }

    /// `n` values uniform in `[-scale, scale)`, none of them zero.
    pub fn values(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|_| {
                let v = self.uniform(-scale, scale);
                if v == 0.0 {
                    scale / 3.0
                } else {
                    v
                }
            })
            .collect()
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}
