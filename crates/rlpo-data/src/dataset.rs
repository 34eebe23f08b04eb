//! An in-memory dataset that hands out batches in a seeded order, epoch after epoch, and can be
//! stopped and resumed exactly through a serialisable [`DataCursor`].
//!
//! Epoch `e`'s order is a Fisher–Yates permutation drawn from `derive_seed(seed, SHUFFLE, e)`
//! (identity when `shuffle = false`). The order is a pure function of `(seed, epoch, len)`, so a
//! cursor only needs `(epoch, index)` to rebuild the exact state; the other cursor fields detect a
//! cursor applied to the wrong dataset. A batch that runs past the end of an epoch continues
//! with the next epoch's order, so every batch is full and no sample is skipped.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::DataConfig;
use crate::error::{Error, Result};
use crate::load::load_samples;
use crate::rng::{derive_seed, domain, SplitMix64};
use crate::sample::Sample;

/// Position in a [`Dataset`]'s stream of samples; store it in checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataCursor {
    /// Epoch of the next sample (0-based).
    pub epoch: u64,
    /// Position of the next sample within that epoch's order.
    pub index: usize,
    /// Shuffle seed the order was drawn with.
    pub seed: u64,
    /// Whether the order is shuffled.
    pub shuffle: bool,
    /// Number of samples.
    pub len: usize,
    /// FNV-1a hash of ids, prompts and answers, so that resuming on an edited file fails loudly
    /// instead of silently replaying a different stream.
    pub fingerprint: u64,
}

/// Samples plus a seeded, resumable iteration order.
#[derive(Debug, Clone)]
pub struct Dataset {
    samples: Vec<Sample>,
    shuffle: bool,
    seed: u64,
    fingerprint: u64,
    epoch: u64,
    index: usize,
    order: Vec<usize>,
}

impl Dataset {
    /// Wraps samples; errors if there are none.
    pub fn new(samples: Vec<Sample>, shuffle: bool, seed: u64, what: &str) -> Result<Self> {
        if samples.is_empty() {
            return Err(Error::Empty {
                what: what.to_string(),
            });
        }
        let fingerprint = fingerprint(&samples);
        let mut ds = Self {
            samples,
            shuffle,
            seed,
            fingerprint,
            epoch: 0,
            index: 0,
            order: Vec::new(),
        };
        ds.order = ds.epoch_order(0);
        Ok(ds)
    }

    /// Validates `cfg`, loads its samples (relative paths against `base_dir`) and wraps them.
    pub fn from_config(cfg: &DataConfig, base_dir: &Path) -> Result<Self> {
        let samples = load_samples(cfg, base_dir)?;
        let what = match &cfg.path {
            Some(p) => p.display().to_string(),
            None => format!("synthetic {}", cfg.synthetic_or_default().task_name()),
        };
        Self::new(samples, cfg.shuffle, cfg.seed, &what)
    }

    /// Number of samples (at least 1).
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Always `false`: construction rejects empty datasets. Present for API symmetry.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// All samples in load order (not shuffled); indices returned by [`Self::next_indices`] and
    /// the curriculum refer to this order.
    pub fn samples(&self) -> &[Sample] {
        &self.samples
    }

    /// Sample at a load-order index.
    pub fn get(&self, index: usize) -> Option<&Sample> {
        self.samples.get(index)
    }

    /// Current epoch (0-based), i.e. the epoch of the next sample.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The load-order indices of epoch `epoch`'s iteration order.
    pub fn epoch_order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.samples.len()).collect();
        if self.shuffle {
            SplitMix64::new(derive_seed(self.seed, domain::SHUFFLE, epoch)).shuffle(&mut order);
        }
        order
    }

    /// The next `n` load-order indices, advancing the cursor (across epochs if needed).
    pub fn next_indices(&mut self, n: usize) -> Vec<usize> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            if self.index == self.order.len() {
                self.epoch += 1;
                self.index = 0;
                self.order = self.epoch_order(self.epoch);
            }
            let take = (n - out.len()).min(self.order.len() - self.index);
            out.extend_from_slice(&self.order[self.index..self.index + take]);
            self.index += take;
        }
        out
    }

    /// The next `n` samples (cloned), advancing the cursor.
    pub fn next_batch(&mut self, n: usize) -> Vec<Sample> {
        self.next_indices(n)
            .into_iter()
            .map(|i| self.samples[i].clone())
            .collect()
    }

    /// Where the stream stands now; restoring it replays exactly the batches that would follow.
    pub fn cursor(&self) -> DataCursor {
        DataCursor {
            epoch: self.epoch,
            index: self.index,
            seed: self.seed,
            shuffle: self.shuffle,
            len: self.samples.len(),
            fingerprint: self.fingerprint,
        }
    }

    /// Moves to a saved position. Fails, leaving the dataset unchanged, if the cursor was saved
    /// for a dataset with another size, contents, seed or shuffle setting.
    pub fn restore(&mut self, cursor: &DataCursor) -> Result<()> {
        let mismatch = |what: &str, saved: String, now: String| Error::CursorMismatch {
            reason: format!("{what} is {now}, the cursor was saved with {saved}"),
        };
        if cursor.len != self.samples.len() {
            return Err(mismatch(
                "the sample count",
                cursor.len.to_string(),
                self.len().to_string(),
            ));
        }
        if cursor.fingerprint != self.fingerprint {
            return Err(mismatch(
                "the content fingerprint",
                format!("{:016x}", cursor.fingerprint),
                format!("{:016x} (the data changed)", self.fingerprint),
            ));
        }
        if cursor.seed != self.seed {
            return Err(mismatch(
                "data.seed",
                cursor.seed.to_string(),
                self.seed.to_string(),
            ));
        }
        if cursor.shuffle != self.shuffle {
            return Err(mismatch(
                "data.shuffle",
                cursor.shuffle.to_string(),
                self.shuffle.to_string(),
            ));
        }
        if cursor.index > self.samples.len() {
            return Err(Error::CursorMismatch {
                reason: format!(
                    "index {} is past the end ({} samples)",
                    cursor.index,
                    self.len()
                ),
            });
        }
        self.epoch = cursor.epoch;
        self.index = cursor.index;
        self.order = self.epoch_order(cursor.epoch);
        Ok(())
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a (64-bit) step over `bytes`.
fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// FNV-1a over each sample's id, prompt text and answer, each followed by a `0xff` separator (not
/// valid UTF-8, so field boundaries cannot be forged by content). Stable across platforms and
/// Rust versions, unlike `DefaultHasher`.
fn fingerprint(samples: &[Sample]) -> u64 {
    let mut h = FNV_OFFSET;
    for s in samples {
        let prompt = s.prompt.flat_text();
        for field in [
            s.id.as_str(),
            prompt.as_str(),
            s.answer.as_deref().unwrap_or(""),
        ] {
            h = fnv1a(fnv1a(h, field.as_bytes()), &[0xff]);
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::Prompt;

    #[test]
    fn fnv1a_reference_values() {
        // From Noll's FNV test vectors.
        assert_eq!(fnv1a(FNV_OFFSET, b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(FNV_OFFSET, b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(FNV_OFFSET, b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn fingerprint_sees_prompt_changes() {
        let mk = |t: &str| Sample {
            id: "x".into(),
            prompt: Prompt::Text(t.into()),
            answer: None,
            data_source: None,
            difficulty: None,
            metadata: serde_json::Value::Null,
        };
        assert_ne!(fingerprint(&[mk("a")]), fingerprint(&[mk("b")]));
        assert_eq!(fingerprint(&[mk("a")]), fingerprint(&[mk("a")]));
    }
}
