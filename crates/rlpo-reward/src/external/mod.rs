//! External reward functions in any language (`kind = "external"`): a long-lived child process
//! started from the recipe's `command`, speaking JSON lines (see [`protocol`] and
//! `reward_fns/README.md`).
//!
//! Failure handling, all of it visible (status, counters, log), none of it silent:
//!
//! | event | affected samples | plugin |
//! | --- | --- | --- |
//! | answer with `error`, or malformed `reward`/`parts` | that sample: `error` | kept |
//! | stdout line without a usable `id` (not JSON, debug print) | every request in flight: `error` | kept |
//! | no answer to the start-up handshake within `startup_timeout_s`, or exit before it | at load: an error quoting its stderr; on a restart: counts as a failed restart | killed |
//! | no answer within `timeout_s` of the plugin taking the request | that sample: `timeout`; other in-flight requests are re-sent | killed, restarted |
//! | plugin exits / crashes (or closes stdin) | the request alone in flight: `error`; several in flight: re-sent one at a time, so only the culprit fails | restarted |
//! | more than `max_restarts` consecutive restarts without one good answer | all remaining: `error` | given up for good |
//!
//! Restarts wait `backoff · 2^(k−1)` (capped at 5 s) before the k-th consecutive attempt.
//!
//! "Taking" a request: the plugin declares in its handshake answer how many requests it works on
//! at once (`workers`, default 1); a request's clock starts when fewer than `workers` requests
//! written before it are still unanswered, i.e. when the plugin is free to work on it. Time a
//! request spends queued behind others (in rlpo or in the pipe) does not count against it.
//!
//! Every instance runs in its own process group with an allow-listed environment; killing it
//! kills the group (see [`process`]).

mod handshake;
mod process;
pub mod protocol;
mod session;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crossbeam::channel::{self, Receiver, Sender};

use crate::error::{RewardError, Result};
use crate::log::RewardLog;
use crate::metrics::RewardCounters;
use crate::types::{RewardFn, RewardInput, RewardOutput};
use process::{Event, PluginProcess};

/// Longest wait between restart attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Largest accepted `concurrency`: more requests in flight than this buys nothing and only hides a
/// typo (a plugin with that many workers would not be one process).
pub const MAX_CONCURRENCY: usize = 1024;

pub use process::{kill_all_groups, plugin_env, DEFAULT_ENV};

/// Settings of one external plugin.
#[derive(Debug, Clone)]
pub struct ExternalOptions {
    /// Name used in logs, statuses and metrics.
    pub name: String,
    /// Program and arguments, e.g. `["python3", "reward_fns/gsm8k_reward.py"]`.
    pub command: Vec<String>,
    /// Per-request time limit, counted from the moment the plugin can take the request (see
    /// the module docs).
    pub timeout: Duration,
    /// A sample's own time limit where this returns one, `timeout` elsewhere (not a recipe key:
    /// for callers that know a sample is slow, and for the hang tests, which give only the
    /// hanging sample a short limit so that a loaded machine cannot time the others out).
    pub timeout_of: Option<fn(&RewardInput) -> Option<Duration>>,
    /// Time a new instance has to answer the start-up handshake.
    pub startup_timeout: Duration,
    /// Maximum requests in flight at once (1..=[`MAX_CONCURRENCY`]). More than one lets a
    /// sequential plugin read the next request while it answers the current one; a parallel
    /// plugin can use it for real.
    pub concurrency: usize,
    /// Consecutive restarts allowed without a good answer in between.
    pub max_restarts: u32,
    /// Wait before the first restart; doubles per consecutive restart.
    pub backoff: Duration,
    /// Variables of rlpo's environment passed on besides [`DEFAULT_ENV`].
    pub pass_env: Vec<String>,
}

impl ExternalOptions {
    /// Defaults: 30 s timeout, 60 s to start, 16 in flight, 3 restarts, 0.5 s back-off, the
    /// default environment only.
    pub fn new(name: impl Into<String>, command: Vec<String>) -> Self {
        Self {
            name: name.into(),
            command,
            timeout: Duration::from_secs(30),
            timeout_of: None,
            startup_timeout: Duration::from_secs(60),
            concurrency: 16,
            max_restarts: 3,
            backoff: Duration::from_millis(500),
            pass_env: Vec::new(),
        }
    }

    /// Spawns one instance (not yet handshaken).
    fn spawn(&self, generation: u64, events: Sender<Event>, log: &RewardLog) -> std::io::Result<PluginProcess> {
        PluginProcess::spawn(&self.name, &self.command, &self.pass_env, generation, events, log)
    }
}

/// Mutable plugin state, behind one lock: a plugin scores one batch at a time.
struct State {
    proc: Option<PluginProcess>,
    next_generation: u64,
    next_id: u64,
    events_tx: Sender<Event>,
    events_rx: Receiver<Event>,
    /// Requests the current instance works on at once (its handshake's `workers`, default 1).
    workers: usize,
    /// Restarts since the last good answer.
    consecutive_failures: u32,
    /// Set once the restart budget is spent; every later sample fails with this message.
    gave_up: Option<String>,
    /// The current instance is being taken down; its EOF is awaited.
    dying: Option<session::Dying>,
}

/// An external reward plugin; implements [`RewardFn`].
pub struct ExternalReward {
    opts: ExternalOptions,
    log: RewardLog,
    counters: Arc<RewardCounters>,
    state: Mutex<State>,
}

impl std::fmt::Debug for ExternalReward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalReward").field("opts", &self.opts).finish_non_exhaustive()
    }
}

impl ExternalReward {
    /// Starts the plugin now and waits for its start-up handshake, so that a wrong command, a
    /// script that dies on start-up or one that never becomes ready fails when the recipe is
    /// loaded (quoting the plugin's stderr) rather than at the first training step.
    pub fn start(opts: ExternalOptions, log: RewardLog, counters: Arc<RewardCounters>) -> Result<Self> {
        if opts.command.is_empty() {
            return Err(RewardError::config(format!("{}.command", opts.name), "must not be empty"));
        }
        let opts = ExternalOptions { concurrency: opts.concurrency.clamp(1, MAX_CONCURRENCY), ..opts };
        let (events_tx, events_rx) = channel::unbounded();
        let mut proc = opts
            .spawn(0, events_tx.clone(), &log)
            .map_err(|source| RewardError::Spawn { name: opts.name.clone(), command: opts.command.clone(), source })?;
        let workers = match handshake::run(&mut proc, &opts, 0, &events_rx, &log) {
            Ok(w) => w,
            Err(reason) => {
                proc.kill();
                proc.flush_stderr(Duration::from_secs(1));
                let stderr = log.tail(&format!("[{}] ", opts.name), 20);
                return Err(RewardError::Startup { name: opts.name.clone(), command: opts.command.clone(), reason, stderr });
            }
        };
        let state = State {
            proc: Some(proc),
            next_generation: 1,
            next_id: 1,
            events_tx,
            events_rx,
            workers,
            consecutive_failures: 0,
            gave_up: None,
            dying: None,
        };
        Ok(Self { opts, log, counters, state: Mutex::new(state) })
    }

    /// The plugin's settings.
    pub fn options(&self) -> &ExternalOptions {
        &self.opts
    }
}

impl RewardFn for ExternalReward {
    fn score(&self, batch: &[RewardInput]) -> Vec<RewardOutput> {
        if batch.is_empty() {
            return Vec::new();
        }
        // A panic elsewhere while holding the lock leaves the state usable (at worst a dead
        // process that the session restarts), so poisoning is not fatal.
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        session::Session::new(&self.opts, &self.log, &self.counters, &mut state, batch).run()
    }

    fn gave_up(&self) -> Option<String> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).gave_up.clone()
    }
}
