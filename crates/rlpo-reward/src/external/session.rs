//! Scoring one batch through an external plugin: keep up to `concurrency` requests in flight,
//! match answers to samples by `id`, enforce deadlines, and turn every crash, hang or protocol
//! violation into an explicit per-sample status (see the table in the module docs of
//! [`super`]). Every sample leaves with exactly one output; none is dropped or swapped, because
//! an answer is accepted only for an `id` that is in flight, and each `id` is used once.
//!
//! Crash isolation: when the plugin dies with several requests in flight, the culprit is unknown,
//! so those requests become *suspects* and are re-sent one at a time, each alone in flight. A
//! request that is alone in flight when the plugin dies is the culprit and gets status `error`;
//! the innocent ones are scored normally.
//!
//! Deadlines: a request's clock starts when the plugin can take it, i.e. when fewer than the
//! instance's `workers` requests written before it are unanswered ([`Session::start_clocks`]).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crossbeam::channel::RecvTimeoutError;

use super::handshake;
use super::process::Event;
use super::protocol::{request_line, ReplyLine};
use super::{ExternalOptions, State, MAX_BACKOFF};
use crate::log::RewardLog;
use crate::metrics::RewardCounters;
use crate::types::{RewardInput, RewardOutput};

/// How long to wait for the stdout EOF of a killed instance before giving up on its last output.
const EXIT_WAIT: Duration = Duration::from_secs(2);

/// Why the current instance is being taken down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DeathCause {
    /// Killed because a request timed out: the other in-flight requests are innocent and re-sent.
    Timeout,
    /// Its stdin broke (it stopped reading or died): treated like a crash.
    Broken,
}

/// An instance that was killed or broke and whose EOF is awaited (so that answers it wrote
/// before dying are still used).
#[derive(Debug, Clone, Copy)]
pub(super) struct Dying {
    cause: DeathCause,
    wait_until: Instant,
}

pub(super) struct Session<'a> {
    opts: &'a ExternalOptions,
    log: &'a RewardLog,
    counters: &'a RewardCounters,
    st: &'a mut State,
    batch: &'a [RewardInput],
    out: Vec<Option<RewardOutput>>,
    queue: VecDeque<usize>,
    /// Samples that were in flight during a crash; re-sent one at a time.
    suspects: VecDeque<usize>,
    /// Requests written and not yet answered, by id (ids grow in the order of writing).
    inflight: HashMap<u64, Inflight>,
}

/// A request in flight.
#[derive(Debug, Clone, Copy)]
struct Inflight {
    /// Sample index in the batch.
    idx: usize,
    /// When it times out; `None` while the plugin is still busy with earlier requests.
    deadline: Option<Instant>,
    /// Sent with nothing else in flight (crash isolation).
    alone: bool,
}

impl<'a> Session<'a> {
    pub(super) fn new(
        opts: &'a ExternalOptions,
        log: &'a RewardLog,
        counters: &'a RewardCounters,
        st: &'a mut State,
        batch: &'a [RewardInput],
    ) -> Self {
        Self {
            opts,
            log,
            counters,
            st,
            batch,
            out: vec![None; batch.len()],
            queue: (0..batch.len()).collect(),
            suspects: VecDeque::new(),
            inflight: HashMap::with_capacity(opts.concurrency),
        }
    }

    pub(super) fn run(mut self) -> Vec<RewardOutput> {
        // Output that arrived between batches: late answers (ignored) or an exit while idle.
        while let Ok(ev) = self.st.events_rx.try_recv() {
            self.handle(ev);
        }
        while !(self.queue.is_empty() && self.suspects.is_empty() && self.inflight.is_empty()) {
            if self.st.dying.is_none() {
                if self.st.proc.is_none() && !self.ensure_process() {
                    let msg = self.st.gave_up.clone().unwrap_or_default();
                    self.fail_all(&msg);
                    break;
                }
                self.fill();
            }
            self.start_clocks();
            let wake = self.next_wake().unwrap_or_else(|| Instant::now() + self.opts.timeout);
            match self.st.events_rx.recv_deadline(wake) {
                Ok(ev) => {
                    self.handle(ev);
                    while let Ok(ev) = self.st.events_rx.try_recv() {
                        self.handle(ev);
                    }
                }
                // Disconnected cannot happen (State holds a sender); treat it like a timeout.
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {}
            }
            self.check_deadlines();
            self.check_dying();
        }
        let name = &self.opts.name;
        self.out
            .into_iter()
            .map(|o| o.unwrap_or_else(|| RewardOutput::error(format!("{name}: internal error, no result recorded"))))
            .collect()
    }

    fn current_generation(&self) -> Option<u64> {
        self.st.proc.as_ref().map(|p| p.generation)
    }

    fn say(&self, msg: impl std::fmt::Display) {
        self.log.push(format!("[{}] {msg}", self.opts.name));
    }

    /// Sends samples: a suspect alone when there are suspects, else queued samples until
    /// `concurrency` are in flight.
    fn fill(&mut self) {
        if !self.suspects.is_empty() {
            if self.inflight.is_empty() {
                if let Some(idx) = self.suspects.pop_front() {
                    self.send(idx, true);
                }
            }
            return;
        }
        while self.inflight.len() < self.opts.concurrency {
            let Some(idx) = self.queue.pop_front() else { return };
            if !self.send(idx, self.opts.concurrency == 1) {
                return;
            }
        }
    }

    /// Writes one request; on a closed stdin puts the sample back and takes the instance down.
    fn send(&mut self, idx: usize, alone: bool) -> bool {
        let id = self.st.next_id;
        self.st.next_id += 1;
        let sent = self.st.proc.as_ref().is_some_and(|p| p.send(request_line(id, &self.batch[idx])));
        if !sent {
            if alone { self.suspects.push_front(idx) } else { self.queue.push_front(idx) }
            self.say("plugin stdin is closed; treating it as a crash");
            self.begin_dying(DeathCause::Broken);
            return false;
        }
        self.inflight.insert(id, Inflight { idx, deadline: None, alone });
        true
    }

    /// The time limit of sample `idx` (`timeout_of`, else `timeout`).
    fn timeout(&self, idx: usize) -> Duration {
        self.opts.timeout_of.and_then(|f| f(&self.batch[idx])).unwrap_or(self.opts.timeout)
    }

    /// Starts the clock of each of the `workers` oldest unanswered requests that has none yet:
    /// the plugin is working on those (or free to), the others still wait behind them.
    fn start_clocks(&mut self) {
        let mut ids: Vec<u64> = self.inflight.keys().copied().collect();
        ids.sort_unstable();
        let now = Instant::now();
        for id in ids.into_iter().take(self.st.workers) {
            let Some(idx) = self.inflight.get(&id).map(|r| r.idx) else { continue };
            let limit = self.timeout(idx);
            if let Some(r) = self.inflight.get_mut(&id) {
                r.deadline.get_or_insert(now + limit);
            }
        }
    }

    fn next_wake(&self) -> Option<Instant> {
        let deadlines = self.inflight.values().filter_map(|r| r.deadline);
        deadlines.chain(self.st.dying.map(|d| d.wait_until)).min()
    }

    fn handle(&mut self, ev: Event) {
        let current = self.current_generation();
        match ev {
            Event::Reply { generation, line } if Some(generation) == current => self.on_line(line),
            Event::Exited { generation } if Some(generation) == current => self.on_exit(),
            // Output of an instance that has already been replaced.
            Event::Reply { .. } | Event::Exited { .. } => {}
        }
    }

    fn on_line(&mut self, line: ReplyLine) {
        match line {
            ReplyLine::Blank => {}
            ReplyLine::Answer { id, result } => {
                let Some(Inflight { idx, .. }) = self.inflight.remove(&id) else {
                    self.say(format!("ignoring answer for id {id}: not in flight (late, duplicate or unknown)"));
                    return;
                };
                // Any attributable answer proves the instance works: the restart budget refills.
                self.st.consecutive_failures = 0;
                self.out[idx] = Some(match result {
                    Ok((value, parts)) => RewardOutput::with_parts(value, parts),
                    Err(msg) => RewardOutput::error(format!("{}: {msg}", self.opts.name)),
                });
            }
            ReplyLine::Ready { id, .. } => {
                // A handshake answer where a score was expected: that request cannot be scored.
                let Some(Inflight { idx, .. }) = self.inflight.remove(&id) else {
                    self.say(format!("ignoring a `ready` line for id {id}: not in flight"));
                    return;
                };
                self.say(format!("protocol error: `ready` answer to scoring request {id} (sample {idx})"));
                self.out[idx] = Some(RewardOutput::error(format!("{}: plugin answered `ready` instead of a reward", self.opts.name)));
            }
            ReplyLine::Garbage(msg) => {
                let samples = self.inflight_samples();
                self.say(format!("protocol error, line without a usable id ({msg}); failing samples {samples:?} in flight"));
                let err = format!("{}: plugin wrote a line that is not an answer while this request was in flight: {msg}", self.opts.name);
                for (_, r) in self.inflight.drain() {
                    self.out[r.idx] = Some(RewardOutput::error(err.clone()));
                }
            }
        }
    }

    fn inflight_samples(&self) -> Vec<usize> {
        let mut v: Vec<usize> = self.inflight.values().map(|r| r.idx).collect();
        v.sort_unstable();
        v
    }

    /// The current instance's stdout closed: settle the requests still in flight and drop it.
    fn on_exit(&mut self) {
        let Some(mut proc) = self.st.proc.take() else { return };
        let status = proc.status_text();
        let samples = self.inflight_samples();
        match self.st.dying.take().map(|d| d.cause) {
            Some(DeathCause::Timeout) => {
                // Killed by us for another request's timeout: re-send these, in sample order.
                for &idx in samples.iter().rev() {
                    self.queue.push_front(idx);
                }
                self.inflight.clear();
                if !samples.is_empty() {
                    self.say(format!("re-sending samples {samples:?} to the restarted plugin"));
                }
            }
            cause => {
                let what = if cause.is_some() { "stopped reading stdin" } else { "exited" };
                let err = format!("{}: plugin {what} ({status}) while scoring this sample", self.opts.name);
                let mut entries: Vec<(usize, bool)> = self.inflight.drain().map(|(_, r)| (r.idx, r.alone)).collect();
                entries.sort_unstable();
                let mut culprits = Vec::new();
                for (idx, alone) in entries {
                    if alone {
                        culprits.push(idx);
                        self.out[idx] = Some(RewardOutput::error(err.clone()));
                    } else {
                        self.suspects.push_back(idx);
                    }
                }
                let suspects: Vec<usize> = self.suspects.iter().copied().collect();
                let msg = match (culprits.is_empty(), suspects.is_empty()) {
                    (true, true) => format!("plugin {what} ({status}) with no request in flight"),
                    (false, true) => format!("plugin {what} ({status}) while scoring sample(s) {culprits:?}, each alone in flight: they fail (status error)"),
                    (true, false) => format!(
                        "plugin {what} ({status}) with samples {suspects:?} in flight together: re-sending them one at a time to find the culprit"
                    ),
                    (false, false) => format!(
                        "plugin {what} ({status}); sample(s) {culprits:?} fail (each was alone in flight); re-sending samples {suspects:?} one at a time"
                    ),
                };
                self.say(msg);
            }
        }
        self.st.consecutive_failures += 1;
    }

    /// Kills the instance and waits (bounded) for its EOF.
    fn begin_dying(&mut self, cause: DeathCause) {
        if let Some(p) = self.st.proc.as_mut() {
            p.kill();
        }
        self.st.dying = Some(Dying { cause, wait_until: Instant::now() + EXIT_WAIT });
    }

    /// A killed instance whose stdout never closed (a grandchild holds it): stop waiting.
    fn check_dying(&mut self) {
        if self.st.dying.is_some_and(|d| Instant::now() >= d.wait_until) {
            self.say("killed plugin did not close stdout; abandoning it");
            self.on_exit();
        }
    }

    fn check_deadlines(&mut self) {
        let now = Instant::now();
        let mut expired: Vec<(u64, usize)> = self
            .inflight
            .iter()
            .filter(|(_, r)| r.deadline.is_some_and(|d| d <= now))
            .map(|(&id, r)| (id, r.idx))
            .collect();
        if expired.is_empty() {
            return;
        }
        expired.sort_unstable_by_key(|&(_, idx)| idx);
        for &(id, idx) in &expired {
            self.inflight.remove(&id);
            self.out[idx] = Some(RewardOutput::timeout());
        }
        let samples: Vec<usize> = expired.iter().map(|&(_, i)| i).collect();
        self.say(format!(
            "samples {samples:?} timed out after {:?} (counted from when the plugin could take them); killing the plugin",
            self.timeout(samples[0])
        ));
        if self.st.dying.is_none() {
            self.begin_dying(DeathCause::Timeout);
        }
    }

    /// Starts a new instance after a death, with back-off, within the restart budget.
    fn ensure_process(&mut self) -> bool {
        loop {
            if self.st.gave_up.is_some() {
                return false;
            }
            let k = self.st.consecutive_failures;
            if k > self.opts.max_restarts {
                let msg = format!(
                    "{}: plugin gave up after {} consecutive restarts without a good answer (max_restarts = {})",
                    self.opts.name, self.opts.max_restarts, self.opts.max_restarts
                );
                self.say(&msg);
                self.st.gave_up = Some(msg);
                return false;
            }
            if k > 0 {
                let wait = self.opts.backoff.saturating_mul(1 << (k - 1).min(16)).min(MAX_BACKOFF);
                std::thread::sleep(wait);
            }
            let generation = self.st.next_generation;
            self.st.next_generation += 1;
            self.counters.add_restart();
            let started = self.opts.spawn(generation, self.st.events_tx.clone(), self.log).map_err(|e| e.to_string());
            let id = self.st.next_id;
            self.st.next_id += 1;
            let ready = started.and_then(|mut p| match handshake::run(&mut p, self.opts, id, &self.st.events_rx, self.log) {
                Ok(workers) => Ok((p, workers)),
                Err(why) => {
                    p.kill();
                    Err(why)
                }
            });
            match ready {
                Ok((p, workers)) => {
                    self.say(format!("restarted plugin (restart {k} of at most {})", self.opts.max_restarts));
                    self.st.proc = Some(p);
                    self.st.workers = workers;
                    return true;
                }
                Err(e) => {
                    self.say(format!("restart failed: {e}"));
                    self.st.consecutive_failures += 1;
                }
            }
        }
    }

    fn fail_all(&mut self, msg: &str) {
        let inflight = self.inflight.drain().map(|(_, r)| r.idx);
        for idx in self.queue.drain(..).chain(self.suspects.drain(..)).chain(inflight) {
            self.out[idx] = Some(RewardOutput::error(msg));
        }
    }
}
