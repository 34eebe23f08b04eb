//! [`RewardLog`]: where reward functions report what the run log should show: every line an
//! external plugin writes to stderr (prefixed `[name] `), and every restart, timeout and protocol
//! violation. The trainer either drains it once per step or installs a sink that forwards each line
//! as it arrives.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Lines kept when nobody drains the log; older lines are dropped (and counted) beyond this, so a
/// chatty plugin cannot grow memory without bound.
pub const MAX_BUFFERED_LINES: usize = 10_000;

type Sink = Arc<dyn Fn(&str) + Send + Sync>;

#[derive(Default)]
struct Inner {
    lines: Mutex<VecDeque<String>>,
    dropped: AtomicU64,
    sink: Mutex<Option<Sink>>,
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

    /// Records one line: forwarded to the sink if one is set, buffered otherwise.
    pub fn push(&self, line: impl Into<String>) {
        let line = line.into();
        let sink = self.inner.sink.lock().unwrap_or_else(PoisonError::into_inner).clone();
        if let Some(sink) = sink {
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
    /// Lines already buffered stay until drained.
    pub fn set_sink(&self, sink: impl Fn(&str) + Send + Sync + 'static) {
        *self.inner.sink.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(sink));
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
}
