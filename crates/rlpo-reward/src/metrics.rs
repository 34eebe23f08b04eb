//! Failure counters exposed as metrics: `reward/samples`, `reward/errors`, `reward/timeouts`,
//! `reward/restarts`. They are cumulative since the reward set was built, so a metric sink can
//! log them as monotonically increasing scalars and nothing is lost between steps.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Shared, lock-free counters (one per [`crate::RewardSet`], shared with its plugins).
#[derive(Debug, Default)]
pub struct RewardCounters {
    samples: AtomicU64,
    errors: AtomicU64,
    timeouts: AtomicU64,
    restarts: AtomicU64,
}

impl RewardCounters {
    /// Adds `n` scored samples.
    pub fn add_samples(&self, n: u64) {
        self.samples.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds `n` per-function error outputs.
    pub fn add_errors(&self, n: u64) {
        self.errors.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds `n` per-function timeouts.
    pub fn add_timeouts(&self, n: u64) {
        self.timeouts.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts one plugin restart.
    pub fn add_restart(&self) {
        self.restarts.fetch_add(1, Ordering::Relaxed);
    }

    /// A consistent-enough copy for logging.
    pub fn snapshot(&self) -> RewardMetrics {
        RewardMetrics {
            samples: self.samples.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            timeouts: self.timeouts.load(Ordering::Relaxed),
            restarts: self.restarts.load(Ordering::Relaxed),
        }
    }
}

/// A snapshot of [`RewardCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RewardMetrics {
    /// Samples scored (each counted once, however many functions scored it).
    pub samples: u64,
    /// Outputs with status `error`, counted per (sample, reward function).
    pub errors: u64,
    /// Outputs with status `timeout`, counted per (sample, reward function).
    pub timeouts: u64,
    /// External plugin restarts after a crash, a hang or a failed start.
    pub restarts: u64,
}

impl RewardMetrics {
    /// The counters as named scalars for a metric sink.
    pub fn scalars(&self) -> [(&'static str, f64); 4] {
        [
            ("reward/samples", self.samples as f64),
            ("reward/errors", self.errors as f64),
            ("reward/timeouts", self.timeouts as f64),
            ("reward/restarts", self.restarts as f64),
        ]
    }
}
