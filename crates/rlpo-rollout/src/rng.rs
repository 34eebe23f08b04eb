//! Reproducible per-row randomness: a counter-based generator built on SplitMix64's mixer.
//!
//! Every generated token needs exactly one uniform number (inverse-CDF sampling, see
//! [`crate::sampler`]). The uniform for token `t` of a row is a pure function of
//! `(run seed, training step, prompt index, sample index, t)`, so the tokens a row produces do not
//! depend on which worker ran it, on the batch it shared, on the order rows finished in, or on the
//! platform: the same seed gives the same tokens everywhere. Implemented in-crate (not `rand`)
//! so dependency upgrades cannot change a recorded run; the mixer is the output function of
//! SplitMix64 (Steele, Lea & Flood 2014; Vigna's `splitmix64.c`), a strong 64-bit bijection.

pub(crate) const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// Domain tag so rollout streams never coincide with other users of the same run seed
/// (the data crate derives its shuffles from the same seed).
const ROLLOUT_DOMAIN: u64 = 0x524F_4C4C; // "ROLL"

/// SplitMix64's output function: a bijective 64-bit mixer.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Which training step a generation belongs to; combined with a row's prompt and sample index it
/// seeds that row's generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RolloutSeed {
    /// The run's seed (`[run] seed` in the recipe).
    pub run_seed: u64,
    /// Training step (or any counter that must give fresh samples each time).
    pub step: u64,
}

impl RolloutSeed {
    /// Seed for `run_seed` at `step`.
    pub fn new(run_seed: u64, step: u64) -> Self {
        RolloutSeed { run_seed, step }
    }

    /// The generator of row `(prompt_index, sample_index)`. `prompt_index` should be the prompt's
    /// global index within the step (not its position inside one worker's job) so that the
    /// split of prompts across workers cannot change the samples.
    pub fn row(&self, prompt_index: u64, sample_index: u64) -> RowRng {
        // Chained mixing, not XOR of raw values, so (1, 0) and (0, 1) do not collide.
        let mut k = mix64(self.run_seed ^ ROLLOUT_DOMAIN);
        for v in [self.step, prompt_index, sample_index] {
            k = mix64(k.wrapping_add(v).wrapping_add(GOLDEN_GAMMA));
        }
        RowRng { key: k }
    }
}

/// Counter-based generator of one row: draw `t` is `mix64(key + (t + 1) * gamma)`, i.e. the
/// SplitMix64 stream started at `key`, addressable at any position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowRng {
    /// The row's key (stream start).
    pub key: u64,
}

impl RowRng {
    /// 64 random bits for token position `t`.
    pub fn bits(&self, t: u64) -> u64 {
        mix64(self.key.wrapping_add(t.wrapping_add(1).wrapping_mul(GOLDEN_GAMMA)))
    }

    /// Uniform `f64` in `[0, 1)` with 53 random bits, for token position `t`.
    pub fn uniform(&self, t: u64) -> f64 {
        (self.bits(t) >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_reference_values() {
        // First outputs of Vigna's splitmix64.c seeded with 0 (state += gamma; mix): known values.
        let r = RowRng { key: 0 };
        assert_eq!(r.bits(0), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.bits(1), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn rows_and_steps_get_distinct_streams() {
        let s = RolloutSeed::new(7, 3);
        let keys = [s.row(0, 0).key, s.row(0, 1).key, s.row(1, 0).key, RolloutSeed::new(7, 4).row(0, 0).key,
            RolloutSeed::new(8, 3).row(0, 0).key];
        for i in 0..keys.len() {
            for j in i + 1..keys.len() {
                assert_ne!(keys[i], keys[j], "{i} {j}");
            }
        }
        assert_eq!(s.row(5, 2), RolloutSeed::new(7, 3).row(5, 2));
    }

    #[test]
    fn uniforms_are_uniform() {
        let r = RolloutSeed::new(1, 2).row(3, 4);
        let n = 100_000;
        let mut bins = [0usize; 10];
        for t in 0..n {
            let u = r.uniform(t);
            assert!((0.0..1.0).contains(&u));
            bins[(u * 10.0) as usize] += 1;
        }
        // chi-square with 9 dof; 27.88 is the 0.999 quantile.
        let e = n as f64 / 10.0;
        let chi2: f64 = bins.iter().map(|&o| (o as f64 - e).powi(2) / e).sum();
        assert!(chi2 < 27.88, "{chi2} {bins:?}");
    }
}
