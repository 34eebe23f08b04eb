//! One running instance of an external plugin and its three helper threads:
//!
//! - a **writer** owns the child's stdin and writes request lines it receives over a channel, so
//!   the scoring thread never blocks on a full pipe when the plugin stops reading (a hung plugin is
//!   caught by the request timeout instead);
//! - a **reader** parses stdout lines into [`Event::Reply`] and sends [`Event::Exited`] at EOF;
//! - a **stderr** thread forwards each stderr line to the [`RewardLog`] as `[name] line`.
//!
//! Events carry the instance's generation number so that output of an instance that has been
//! replaced is recognised and ignored.
//!
//! The child is the leader of its own process group (`setpgid(0, 0)` in the child, through
//! [`CommandExt::process_group`]): a Ctrl-C typed at the terminal signals rlpo's foreground group
//! only, so rlpo saves and then stops its plugins itself; and killing the instance
//! ([`PluginProcess::kill`], drop) signals the whole group, so `sh -c` children and pool workers
//! never outlive it. Its environment is an allow-list (see [`plugin_env`]).

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam::channel::{self, Receiver, Sender};

use super::protocol::{parse_reply, ReplyLine};
use crate::log::RewardLog;

/// Longest stdout/stderr line read (bytes); longer lines are cut, so a runaway plugin cannot
/// exhaust memory. A cut stdout line fails to parse and is reported.
const MAX_LINE_BYTES: u64 = 16 << 20;

/// What the helper threads report to the scoring thread.
#[derive(Debug)]
pub enum Event {
    /// One parsed line of stdout.
    Reply {
        /// Generation of the instance that wrote it.
        generation: u64,
        /// The parsed line.
        line: ReplyLine,
    },
    /// stdout reached EOF: the instance exited (or closed stdout).
    Exited {
        /// Generation of the instance.
        generation: u64,
    },
}

/// Process groups of the plugin instances alive in this process, and whether
/// [`kill_all_groups`] has run (after which no plugin may start).
struct Live {
    groups: std::collections::BTreeSet<u32>,
    closed: bool,
}

static LIVE: std::sync::Mutex<Live> = std::sync::Mutex::new(Live { groups: std::collections::BTreeSet::new(), closed: false });

fn live() -> std::sync::MutexGuard<'static, Live> {
    LIVE.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// SIGKILL to the process group of every plugin instance still alive, for an exit that skips
/// destructors (`std::process::exit` on a second Ctrl-C): the plugins are in their own process
/// groups, so the terminal's signal does not reach them, and nothing else would stop them.
/// Afterwards no plugin can start (a restart racing with the exit would be orphaned): spawning
/// holds the same lock, so every instance is either killed here or never started.
pub fn kill_all_groups() {
    let mut live = live();
    live.closed = true;
    for &pgid in &live.groups {
        kill_group(pgid);
    }
}

/// Variables every plugin gets from rlpo's environment (when set): what a program needs to find
/// its interpreter, its home, a temporary directory and the locale. `LC_*` is a prefix.
pub const DEFAULT_ENV: &[&str] = &["PATH", "HOME", "LANG", "LC_*", "TMPDIR"];

/// The plugin's environment: the variables of `from` named by [`DEFAULT_ENV`] or `pass`, and
/// nothing else, so that tokens, `CUDA_VISIBLE_DEVICES` and the like do not leak into it.
pub fn plugin_env(from: impl IntoIterator<Item = (OsString, OsString)>, pass: &[String]) -> Vec<(OsString, OsString)> {
    let allowed = |name: &str| {
        DEFAULT_ENV.iter().any(|d| match d.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => name == *d,
        }) || pass.iter().any(|p| p == name)
    };
    from.into_iter().filter(|(k, _)| k.to_str().is_some_and(allowed)).collect()
}

/// A spawned plugin instance.
pub struct PluginProcess {
    child: Child,
    /// Generation number of this instance.
    pub generation: u64,
    stdin: Option<Sender<String>>,
    stderr_thread: Option<JoinHandle<()>>,
}

impl PluginProcess {
    /// Starts `command` (program and arguments) and its helper threads.
    pub fn spawn(
        name: &str,
        command: &[String],
        pass_env: &[String],
        generation: u64,
        events: Sender<Event>,
        log: &RewardLog,
    ) -> std::io::Result<Self> {
        let (program, args) = command
            .split_first()
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty command"))?;
        // Held until the group is registered: see `kill_all_groups`.
        let mut registry = live();
        if registry.closed {
            return Err(std::io::Error::other("rlpo is exiting; no plugin is started"));
        }
        let mut child = Command::new(program)
            .args(args)
            .env_clear()
            .envs(plugin_env(std::env::vars_os(), pass_env))
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let pid = child.id();
        registry.groups.insert(pid);
        drop(registry);
        let threads = (|| {
            let missing = || std::io::Error::other("child pipe missing");
            let stdin = child.stdin.take().ok_or_else(missing)?;
            let stdout = child.stdout.take().ok_or_else(missing)?;
            let stderr = child.stderr.take().ok_or_else(missing)?;
            let (tx, rx) = channel::unbounded::<String>();
            thread::Builder::new().name(format!("reward-{name}-stdin")).spawn(move || write_loop(stdin, rx))?;
            thread::Builder::new()
                .name(format!("reward-{name}-stdout"))
                .spawn(move || read_loop(stdout, generation, events))?;
            let (prefix, log) = (format!("[{name}] "), log.clone());
            let stderr_thread = thread::Builder::new().name(format!("reward-{name}-stderr")).spawn(move || {
                for_each_line(stderr, |line| log.push(format!("{prefix}{}", line.trim_end())));
            })?;
            Ok((tx, stderr_thread))
        })();
        let (tx, stderr_thread) = match threads {
            Ok(t) => t,
            Err(e) => {
                // Never leave an instance nobody owns.
                kill_group(pid);
                let _ = child.kill();
                let _ = child.wait();
                live().groups.remove(&pid);
                return Err(e);
            }
        };
        Ok(Self { child, generation, stdin: Some(tx), stderr_thread: Some(stderr_thread) })
    }

    /// Waits (at most `limit`) until everything the instance wrote to stderr is in the log: after
    /// it died, so that an error can quote its last words.
    pub fn flush_stderr(&mut self, limit: Duration) {
        let until = Instant::now() + limit;
        while self.stderr_thread.as_ref().is_some_and(|t| !t.is_finished()) && Instant::now() < until {
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Queues one request line; `false` if the writer has stopped (stdin closed or broken).
    pub fn send(&self, line: String) -> bool {
        self.stdin.as_ref().is_some_and(|tx| tx.send(line).is_ok())
    }

    /// Sends SIGKILL to the plugin's whole process group (idempotent). Output already in the
    /// pipe is still read and reported.
    pub fn kill(&mut self) {
        kill_group(self.child.id());
        // An error here means the child has already exited, which is what we want.
        let _ = self.child.kill();
    }

    /// The exit status, if the child has exited.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The exit status in words; waits briefly because stdout EOF can precede the exit by a moment.
    pub fn status_text(&mut self) -> String {
        let until = Instant::now() + Duration::from_millis(200);
        loop {
            if let Some(s) = self.try_status() {
                return s.to_string();
            }
            if Instant::now() >= until {
                return "still running, stdout closed".into();
            }
            thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for PluginProcess {
    /// Closes stdin so a well-behaved plugin can exit by itself, gives it a moment, then kills
    /// its whole process group and reaps it, so neither the plugin nor anything it started
    /// outlives its reward set, and no zombie is left behind.
    fn drop(&mut self) {
        self.stdin.take();
        let grace = Instant::now() + Duration::from_millis(200);
        while Instant::now() < grace {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            thread::sleep(Duration::from_millis(5));
        }
        // Also when the leader exited by itself: children it left in the group go too. (The
        // group id cannot be reused while any member lives; once none is left this is a no-op.)
        kill_group(self.child.id());
        let _ = self.child.kill();
        let _ = self.child.wait();
        live().groups.remove(&self.child.id());
    }
}

/// SIGKILL to process group `pgid`; "no such group" (everything already gone) is fine.
fn kill_group(pgid: u32) {
    use nix::sys::signal::{killpg, Signal};
    use nix::unistd::Pid;
    if let Ok(pgid) = i32::try_from(pgid) {
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    }
}

/// Writes queued lines; flushes whenever the queue is momentarily empty (batches the syscalls
/// under load, keeps latency low when idle). Ends when the channel closes or a write fails.
fn write_loop(stdin: ChildStdin, rx: Receiver<String>) {
    let mut w = std::io::BufWriter::with_capacity(1 << 16, stdin);
    while let Ok(line) = rx.recv() {
        if w.write_all(line.as_bytes()).is_err() {
            return;
        }
        while let Ok(more) = rx.try_recv() {
            if w.write_all(more.as_bytes()).is_err() {
                return;
            }
        }
        if w.flush().is_err() {
            return;
        }
    }
}

fn read_loop(stdout: impl Read, generation: u64, events: Sender<Event>) {
    for_each_line(stdout, |line| {
        let line = parse_reply(line);
        // The scoring side may be gone (reward set dropped); nothing left to tell then.
        let _ = events.send(Event::Reply { generation, line });
    });
    let _ = events.send(Event::Exited { generation });
}

/// Calls `f` on each line (lossy UTF-8, at most [`MAX_LINE_BYTES`]) until EOF or a read error.
fn for_each_line(r: impl Read, mut f: impl FnMut(&str)) {
    let mut r = BufReader::with_capacity(1 << 16, r);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match (&mut r).take(MAX_LINE_BYTES).read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => f(&String::from_utf8_lossy(&buf)),
        }
    }
}
