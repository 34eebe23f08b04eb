//! `--nproc-per-node N`: start N ranks of this same command on this node, without Python.
//!
//! Each rank is this binary re-executed with the same arguments minus `--nproc-per-node`, and
//! torchrun's variables set (`RANK` = `LOCAL_RANK` = i, `WORLD_SIZE` = `LOCAL_WORLD_SIZE` = N,
//! `MASTER_ADDR` = 127.0.0.1, `MASTER_PORT` from the environment or a free port). The launcher:
//! - prefixes every output line of rank i with `[rank i] ` (stdout to stdout, stderr to stderr);
//! - forwards SIGINT/SIGTERM to every rank (the ranks run in their own process groups, so a
//!   terminal's Ctrl-C reaches them once, through here: one interrupt = stop after the step);
//! - when a rank fails (non-zero exit or a signal), names it, gives the others the collective
//!   timeout plus [`GRACE`] to stop on their own (they normally do within seconds, naming the
//!   rank), then kills what is left (whole process groups: reward plugins too);
//! - exits with the first failing rank's code (128 + signal for a signal), 0 when all succeed.
//!   A rank that finishes early with 0 is not a failure, nor is one that the forwarded interrupt
//!   ended (no handler of its own): the launcher then exits 130.
//!
//! The ranks die with the launcher (PR_SET_PDEATHSIG = SIGTERM), so nothing is left running if
//! the launcher itself is killed.

use anyhow::{bail, Context, Result};
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Extra time the launcher allows the surviving ranks after the collective timeout.
pub const GRACE: Duration = Duration::from_secs(10);

/// The launcher's flag, removed from the ranks' command lines.
const FLAG: &str = "--nproc-per-node";

/// Start `nproc` local ranks of the current command and supervise them; returns the exit code.
pub fn launch(nproc: usize) -> Result<i32> {
    if nproc == 0 {
        bail!("{FLAG} must be at least 1");
    }
    for var in ["RANK", "SLURM_PROCID"] {
        if std::env::var_os(var).is_some() && std::env::var("WORLD_SIZE").or_else(|_| std::env::var("SLURM_NTASKS")).is_ok_and(|w| w != "1") {
            bail!("{FLAG} inside an already launched process ({var} is set): use either the launcher (torchrun, srun) or {FLAG}, not both");
        }
    }
    let timeout = rlpo_train::dist::timeout_from_env()?;
    let args = child_args(std::env::args_os().skip(1).collect())?;
    let exe = std::env::current_exe().context("locating the rlpo binary to re-execute")?;
    let port = match std::env::var("MASTER_PORT") {
        Ok(p) => p,
        Err(_) => free_port()?.to_string(),
    };
    // Pids of the ranks not yet reaped (None once reaped: a reaped pid may be reused). Set up
    // before any rank exists: a signal arriving now finds an empty list.
    let pids: Pids = Arc::default();
    let forward = pids.clone();
    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = interrupted.clone();
    ctrlc::set_handler(move || {
        flag.store(true, Ordering::SeqCst);
        eprintln!("rlpo launch: interrupt: forwarding it to every rank");
        for pid in lock(&forward).iter().flatten() {
            signal(*pid, libc::SIGINT);
        }
    })?;
    eprintln!("rlpo launch: {nproc} rank(s) on this node, rendezvous at 127.0.0.1:{port}, collective timeout {} s", timeout.as_secs_f64());
    let mut children = Vec::new();
    let mut pumps = Vec::new();
    for rank in 0..nproc {
        let mut cmd = Command::new(&exe);
        cmd.args(&args)
            .env("RANK", rank.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("WORLD_SIZE", nproc.to_string())
            .env("LOCAL_WORLD_SIZE", nproc.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", &port)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        die_with_parent(&mut cmd);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                kill_all(&mut children);
                return Err(e).with_context(|| format!("starting rank {rank} ({})", exe.display()));
            }
        };
        lock(&pids).push(Some(child.id() as i32));
        eprintln!("rlpo launch: rank {rank} pid {}", child.id());
        pumps.push(pump(child.stdout.take().expect("piped"), rank, false));
        pumps.push(pump(child.stderr.take().expect("piped"), rank, true));
        children.push(child);
    }
    let code = supervise(&mut children, &pids, &interrupted, timeout + GRACE);
    for p in pumps {
        let _ = p.join();
    }
    Ok(code)
}

/// The ranks' arguments: ours without `--nproc-per-node N` / `--nproc-per-node=N`.
fn child_args(args: Vec<OsString>) -> Result<Vec<OsString>> {
    let mut out = Vec::with_capacity(args.len());
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.to_str() {
            Some(s) if s == FLAG => {
                it.next().with_context(|| format!("{FLAG} needs a value"))?;
            }
            Some(s) if s.starts_with(&format!("{FLAG}=")) => {}
            _ => out.push(a),
        }
    }
    Ok(out)
}

/// Copy `from` line by line to our stdout or stderr, each line prefixed with the rank.
fn pump(from: impl Read + Send + 'static, rank: usize, stderr: bool) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(from);
        let mut line = Vec::new();
        let prefix = format!("[rank {rank}] ");
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    if !line.ends_with(b"\n") {
                        line.push(b'\n');
                    }
                    // One write per line under the stream's lock: lines of different ranks
                    // never interleave.
                    let _ = if stderr {
                        let mut e = std::io::stderr().lock();
                        e.write_all(prefix.as_bytes()).and_then(|_| e.write_all(&line))
                    } else {
                        let mut o = std::io::stdout().lock();
                        o.write_all(prefix.as_bytes()).and_then(|_| o.write_all(&line)).and_then(|_| o.flush())
                    };
                }
            }
        }
    })
}

type Pids = Arc<Mutex<Vec<Option<i32>>>>;

fn lock(p: &Pids) -> std::sync::MutexGuard<'_, Vec<Option<i32>>> {
    p.lock().unwrap_or_else(|e| e.into_inner())
}

/// Wait for every rank; after the first failure, kill what is still running `grace` later.
fn supervise(children: &mut [Child], pids: &Pids, interrupted: &AtomicBool, grace: Duration) -> i32 {
    let n = children.len();
    let mut codes: Vec<Option<i32>> = vec![None; n];
    let mut any_interrupted = false;
    let mut first_failure: Option<(usize, i32)> = None;
    let mut deadline: Option<Instant> = None;
    while codes.iter().any(Option::is_none) {
        for (rank, child) in children.iter_mut().enumerate() {
            if codes[rank].is_some() {
                continue;
            }
            // Reap under the lock, so the signal forwarder never sees a reaped pid.
            let status = {
                let mut p = lock(pids);
                let Ok(Some(status)) = child.try_wait() else { continue };
                p[rank] = None;
                status
            };
            let (code, how) = match (status.code(), status.signal()) {
                (Some(c), _) => (c, format!("exited with code {c}")),
                (None, Some(s)) => (128 + s, format!("was killed by signal {s} ({})", signal_name(s))),
                _ => (1, "ended".to_string()),
            };
            codes[rank] = Some(code);
            let by_interrupt = interrupted.load(Ordering::SeqCst) && matches!(status.signal(), Some(libc::SIGINT));
            if code == 0 || by_interrupt {
                any_interrupted |= by_interrupt;
                eprintln!("rlpo launch: rank {rank} {}", if by_interrupt { "stopped by the interrupt" } else { "finished" });
            } else if first_failure.is_none() {
                first_failure = Some((rank, code));
                deadline = Some(Instant::now() + grace);
                let left = codes.iter().filter(|c| c.is_none()).count();
                eprintln!(
                    "rlpo launch: rank {rank} (pid {}) {how}; the other {left} rank(s) stop at their next collective (killed in {:.0} s otherwise)",
                    child.id(),
                    grace.as_secs_f64()
                );
            }
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let (bad, _) = first_failure.expect("a deadline follows a failure");
            for (rank, child) in children.iter_mut().enumerate() {
                if codes[rank].is_none() {
                    eprintln!("rlpo launch: rank {rank} still running {:.0} s after rank {bad} failed: killing it", grace.as_secs_f64());
                    let mut p = lock(pids);
                    kill_group(child);
                    p[rank] = None;
                    codes[rank] = Some(128 + libc::SIGKILL);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    match first_failure {
        Some((rank, code)) => {
            eprintln!("rlpo launch: failed (rank {rank} first, exit code {code}); exit codes by rank: {codes:?}");
            code
        }
        None if any_interrupted => 130,
        None => 0,
    }
}

fn kill_all(children: &mut [Child]) {
    for c in children {
        kill_group(c);
    }
}

/// SIGKILL the rank's whole process group (it leads its own), then reap it.
fn kill_group(child: &mut Child) {
    signal(-(child.id() as i32), libc::SIGKILL);
    let _ = child.wait();
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port for MASTER_PORT")?;
    Ok(l.local_addr()?.port())
}

fn signal_name(s: i32) -> &'static str {
    match s {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        _ => "signal",
    }
}

/// Send `sig` to `pid` (a negative pid: its process group).
#[allow(unsafe_code)]
fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) has no memory effects in this process; a stale pid only yields ESRCH
    // (the ranks are our children and are reaped by us, so their pids are not reused meanwhile).
    unsafe {
        libc::kill(pid, sig);
    }
}

/// Make the rank receive SIGTERM when the launcher dies (even by SIGKILL).
#[allow(unsafe_code)]
fn die_with_parent(cmd: &mut Command) {
    let parent = std::process::id() as i32;
    // SAFETY: the closure runs in the forked child before exec and calls only prctl(2),
    // getppid(2) and _exit(2), all async-signal-safe; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            // The launcher may have died between fork and prctl.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn the_flag_and_its_value_are_removed() {
        assert_eq!(child_args(args(&["train", "r.toml", "--nproc-per-node", "2", "--set", "a=1"])).unwrap(), args(&["train", "r.toml", "--set", "a=1"]));
        assert_eq!(child_args(args(&["train", "--nproc-per-node=4"])).unwrap(), args(&["train"]));
        assert!(child_args(args(&["train", "--nproc-per-node"])).is_err());
    }
}
