//! [`RewardLog`]: where reward functions report what the run log should show: every line an
//! external plugin writes to stderr (prefixed `[name] `), and every restart, timeout and protocol
//! violation. The trainer either drains it once per step or installs a sink that forwards each line
//! as it arrives (`rlpo train` writes them to `<run>/reward.log`).
//!
//! Independently of draining, the last [`TAIL_LINES`] lines are kept for [`RewardLog::tail`], so
//! an error that stops the run can quote what a plugin last wrote to stderr.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Lines kept when nobody drains the log; older lines are dropped (and counted) beyond this, so a
/// chatty plugin cannot grow memory without bound.
pub const MAX_BUFFERED_LINES: usize = 10_000;

/// Lines kept for [`RewardLog::tail`], whether or not the log is drained or forwarded.
pub const TAIL_LINES: usize = 256;

type Sink = Arc<dyn Fn(&str) + Send + Sync>;

#[derive(Default)]
struct Inner {
    lines: Mutex<VecDeque<String>>,
    dropped: AtomicU64,
    sink: Mutex<Option<Sink>>,
    recent: Mutex<VecDeque<String>>,
}

/// A cheap-to-clone, thread-safe log shared by a reward set and its plugins.
#[derive(Clone, Default)]
pub struct RewardLog {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RewardLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RewardLog").finish_non_exhaustive()
    }
}

impl RewardLog {
    /// An empty log that buffers lines until drained.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one line: forwarded to the sink if one is set, buffered otherwise. A sink must not
    /// push to this log itself.
    pub fn push(&self, line: impl Into<String>) {
        let line = line.into();
        {
            let mut recent = self.inner.recent.lock().unwrap_or_else(PoisonError::into_inner);
            if recent.len() >= TAIL_LINES {
                recent.pop_front();
            }
            recent.push_back(line.clone());
        }
        // The sink lock is held until the line is forwarded or buffered, so `set_sink` cannot
        // slip in between and strand a line in the buffer; it also keeps forwarded lines in order.
        let sink = self.inner.sink.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(sink) = sink.as_ref() {
            sink(&line);
            return;
        }
        let mut lines = self.inner.lines.lock().unwrap_or_else(PoisonError::into_inner);
        if lines.len() >= MAX_BUFFERED_LINES {
            lines.pop_front();
            self.inner.dropped.fetch_add(1, Ordering::Relaxed);
        }
        lines.push_back(line);
    }

    /// Takes every buffered line, oldest first. If lines were dropped for space, the first
    /// returned line says how many.
    pub fn drain(&self) -> Vec<String> {
        let mut lines = self.inner.lines.lock().unwrap_or_else(PoisonError::into_inner);
        let dropped = self.inner.dropped.swap(0, Ordering::Relaxed);
        let mut out = Vec::with_capacity(lines.len() + 1);
        if dropped > 0 {
            out.push(format!("[rlpo-reward] {dropped} earlier log lines were dropped (log not drained)"));
        }
        out.extend(lines.drain(..));
        out
    }

    /// Forwards every future line to `sink` instead of buffering it (e.g. into the run log).
    /// Lines buffered so far (a plugin's start-up output) are forwarded first, in order, so the
    /// sink sees everything exactly once.
    pub fn set_sink(&self, sink: impl Fn(&str) + Send + Sync + 'static) {
        let sink: Sink = Arc::new(sink);
        // Holding the sink lock while flushing the buffer makes a concurrent `push` wait, so no
        // line can overtake the buffered ones.
        let mut slot = self.inner.sink.lock().unwrap_or_else(PoisonError::into_inner);
        for line in self.drain() {
            sink(&line);
        }
        *slot = Some(sink);
    }

    /// The last `n` lines (at most [`TAIL_LINES`]) that start with `prefix`, oldest first; drained
    /// or forwarded lines included.
    pub fn tail(&self, prefix: &str, n: usize) -> Vec<String> {
        let recent = self.inner.recent.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out: Vec<String> = recent.iter().rev().filter(|l| l.starts_with(prefix)).take(n).cloned().collect();
        out.reverse();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_drains_and_bounds() {
        let log = RewardLog::new();
        for i in 0..MAX_BUFFERED_LINES + 5 {
            log.clone().push(format!("line {i}"));
        }
        let lines = log.drain();
        assert_eq!(lines.len(), MAX_BUFFERED_LINES + 1);
        assert!(lines[0].contains("5 earlier log lines were dropped"));
        assert_eq!(lines[1], "line 5");
        assert!(log.drain().is_empty());
    }

    #[test]
    fn sink_forwards() {
        let log = RewardLog::new();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        log.set_sink(move |l| s.lock().expect("test lock").push(l.to_owned()));
        log.push("hello");
        assert_eq!(*seen.lock().expect("test lock"), ["hello"]);
        assert!(log.drain().is_empty());
    }

    #[test]
    fn sink_receives_buffered_lines_first() {
        let log = RewardLog::new();
        log.push("early 1");
        log.push("early 2");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        log.set_sink(move |l| s.lock().expect("test lock").push(l.to_owned()));
        log.push("late");
        assert_eq!(*seen.lock().expect("test lock"), ["early 1", "early 2", "late"]);
    }

    #[test]
    fn tail_keeps_the_last_lines_of_a_prefix_even_when_drained() {
        let log = RewardLog::new();
        for i in 0..TAIL_LINES + 10 {
            log.push(format!("[{}] line {i}", if i % 2 == 0 { "a" } else { "b" }));
        }
        let _ = log.drain();
        let last = TAIL_LINES + 9; // odd: written by b
        assert_eq!(log.tail("[b] ", 2), [format!("[b] line {}", last - 2), format!("[b] line {last}")]);
        assert_eq!(log.tail("[a] ", 1), [format!("[a] line {}", last - 1)]);
        assert!(log.tail("[c] ", 5).is_empty());
        assert_eq!(log.tail("", TAIL_LINES * 2).len(), TAIL_LINES);
    }
}
