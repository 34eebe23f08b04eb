//! The failure ceiling: under `on_error = "zero"` or `"drop_group"` a run tolerates failed
//! rewards, but not without limit. [`FailureWindow`] remembers which of the last
//! `reward.failure_window` scored samples failed (and in which functions); once more than
//! `reward.max_failure_fraction × failure_window` of them failed, [`FailureWindow::record`] says
//! so and the reward set stops the run with [`crate::RewardError::FailureCeiling`].
//!
//! Counting failures among the last W samples (rather than a rate over however many samples were
//! seen) makes the rule the same on the first step and the thousandth: a plugin that fails every
//! sample trips it after `⌊fraction · W⌋ + 1` samples, a flaky one only when its failures bunch up.

use std::collections::VecDeque;

/// Default `reward.max_failure_fraction`.
pub const DEFAULT_MAX_FAILURE_FRACTION: f64 = 0.5;
/// Default `reward.failure_window` (samples).
pub const DEFAULT_FAILURE_WINDOW: usize = 256;
/// Largest accepted `reward.failure_window`.
pub const MAX_FAILURE_WINDOW: usize = 1 << 20;

/// Bit of function `i` in a sample's failure mask (functions past 63 share the last bit).
pub(crate) fn fn_bit(i: usize) -> u64 {
    1u64 << i.min(63)
}

/// Sliding window over the most recent samples' failure masks (bit `i`: function `i` failed).
#[derive(Debug)]
pub struct FailureWindow {
    window: usize,
    max_fraction: f64,
    masks: VecDeque<u64>,
    failed: usize,
}

/// Why the ceiling tripped: how many of the window's samples failed, and the function that
/// failed most often among them.
#[derive(Debug, Clone, PartialEq)]
pub struct Tripped {
    /// Failed samples among the last `window`.
    pub failed: usize,
    /// Samples in the window (fewer than `window` early in a run).
    pub seen: usize,
    /// Index of the function with the most failures in the window.
    pub worst_fn: usize,
}

impl FailureWindow {
    /// A window of the last `window` samples that trips above `max_fraction · window` failures.
    pub fn new(window: usize, max_fraction: f64) -> Self {
        Self { window: window.max(1), max_fraction, masks: VecDeque::new(), failed: 0 }
    }

    /// The window length in samples.
    pub fn window(&self) -> usize {
        self.window
    }

    /// The tolerated fraction.
    pub fn max_fraction(&self) -> f64 {
        self.max_fraction
    }

    /// Adds one batch's per-sample failure masks (0 = ok) and reports whether the ceiling is
    /// now exceeded.
    pub fn record(&mut self, masks: impl IntoIterator<Item = u64>) -> Option<Tripped> {
        for m in masks {
            if self.masks.len() == self.window {
                if let Some(old) = self.masks.pop_front() {
                    self.failed -= usize::from(old != 0);
                }
            }
            self.failed += usize::from(m != 0);
            self.masks.push_back(m);
        }
        if (self.failed as f64) <= self.max_fraction * self.window as f64 {
            return None;
        }
        let worst_fn = (0..64)
            .max_by_key(|&b| (self.masks.iter().filter(|&&m| m & (1 << b) != 0).count(), std::cmp::Reverse(b)))
            .unwrap_or(0);
        Some(Tripped { failed: self.failed, seen: self.masks.len(), worst_fn })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trips_after_more_than_fraction_times_window_failures() {
        // Window 10, fraction 0.5: the 6th failure among the last 10 samples trips it.
        let mut w = FailureWindow::new(10, 0.5);
        assert_eq!(w.record([1, 1, 1, 1, 1]), None);
        let t = w.record([0b10]).expect("6 of 6 failed, more than 5");
        assert_eq!((t.failed, t.seen), (6, 6));
        assert_eq!(t.worst_fn, 0, "function 0 failed 5 times, function 1 once");
    }

    #[test]
    fn old_failures_leave_the_window() {
        let mut w = FailureWindow::new(4, 0.5);
        assert_eq!(w.record([1, 1, 0, 0]), None); // 2 of 4: not more than 2
        assert_eq!(w.record([0, 0]), None); // the two failures slid out
        assert_eq!(w.record([2, 0]), None); // 1 of 4
        let t = w.record([2, 2]).expect("3 of the last 4 failed");
        assert_eq!((t.failed, t.seen, t.worst_fn), (3, 4, 1));
    }

    #[test]
    fn fraction_one_never_trips_and_zero_trips_on_the_first_failure() {
        let mut never = FailureWindow::new(3, 1.0);
        assert_eq!(never.record([1; 100]), None);
        let mut strict = FailureWindow::new(3, 0.0);
        assert_eq!(strict.record([0, 0, 0]), None);
        assert!(strict.record([4]).is_some());
    }

    #[test]
    fn functions_past_63_share_the_last_bit() {
        assert_eq!(fn_bit(0), 1);
        assert_eq!(fn_bit(63), 1 << 63);
        assert_eq!(fn_bit(200), 1 << 63);
    }
}
