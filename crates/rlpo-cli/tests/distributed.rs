//! Multi-process rlpo through the real binary, over loopback (Gloo on CPU):
//! - `rlpo debug dist-selftest` (every operation of the step's `Dist` seam, checked against
//!   values computed from the rank numbers) under `--nproc-per-node` with 2 and 3 ranks, under a
//!   torchrun-style environment set by the test, and under the venv's torchrun when present;
//! - a rank killed inside a collective: the others fail at once naming it, the launcher names
//!   it and exits non-zero; a rank stopped (SIGSTOP) past the collective timeout: the other
//!   fails naming it, and the launcher kills it after the grace period; nothing hangs;
//! - `rlpo train --nproc-per-node 2` on a tiny recipe (phase 1: both ranks rendezvous and pass
//!   a barrier, rank 0 trains, rank 1 exits 0), and Ctrl-C at the launcher's process group
//!   reaching the training rank exactly once.

mod common;
use common::*;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn assert_selftest_ok(out: &str, world: usize, prefixed: bool) {
    for r in 0..world {
        let line = format!("dist-selftest rank {r} of {world}: ok");
        let line = if prefixed { format!("[rank {r}] {line}") } else { line };
        assert!(out.lines().any(|l| l.starts_with(&line)), "no {line:?} in:\n{out}");
    }
}

#[test]
fn dist_selftest_under_the_launcher_with_2_and_3_ranks() {
    for world in [2, 3] {
        let out = run_ok(rlpo().args(["debug", "dist-selftest", "--nproc-per-node", &world.to_string()]));
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert_selftest_ok(&stdout, world, true);
        for r in 0..world {
            assert!(stderr.contains(&format!("rlpo launch: rank {r} pid ")), "{stderr}");
        }
    }
}

#[test]
fn dist_selftest_with_a_torchrun_style_environment_set_here() {
    let port = free_port().to_string();
    let tmp = tempfile::tempdir().unwrap();
    let mut ranks: Vec<_> = (0..2)
        .map(|r| {
            let mut cmd = rlpo();
            cmd.args(["debug", "dist-selftest"])
                .env("RANK", r.to_string())
                .env("LOCAL_RANK", r.to_string())
                .env("WORLD_SIZE", "2")
                .env("LOCAL_WORLD_SIZE", "2")
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", &port);
            spawn_logged(&mut cmd, &tmp.path().join(format!("rank{r}")))
        })
        .collect();
    for (r, child) in ranks.iter_mut().enumerate() {
        let status = wait_exit(child, 120);
        let log = tmp.path().join(format!("rank{r}"));
        let (out, err) = (read(&log.with_extension("out")), read(&log.with_extension("err")));
        assert!(status.success(), "rank {r}: {status}\n{out}\n{err}");
        assert!(out.starts_with(&format!("dist-selftest rank {r} of 2: ok")), "{out}");
    }
}

#[test]
fn dist_selftest_under_the_venvs_torchrun() {
    let torchrun = repo_root().join(".venv/bin/torchrun");
    if !torchrun.exists() {
        eprintln!("skipped: no {} (scripts/setup.sh installs torch, which provides it)", torchrun.display());
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("torchrun");
    let port = free_port().to_string();
    let mut cmd = Command::new(&torchrun);
    cmd.args(["--nproc-per-node", "2", "--master-port", &port, "--no-python", env!("CARGO_BIN_EXE_rlpo"), "debug", "dist-selftest"]);
    let mut child = spawn_logged(&mut cmd, &log);
    let status = wait_exit(&mut child, 180);
    let (out, err) = (read(&log.with_extension("out")), read(&log.with_extension("err")));
    assert!(status.success(), "torchrun: {status}\n{out}\n{err}");
    assert_selftest_ok(&out, 2, false);
}

/// Spawn `dist-selftest` with a parked rank under the launcher; returns the child and its log.
fn parked(tmp: &Path, world: usize, park: usize, timeout_s: u64) -> (std::process::Child, std::path::PathBuf) {
    let log = tmp.join("launch");
    let mut cmd = rlpo();
    cmd.args(["debug", "dist-selftest", "--nproc-per-node", &world.to_string(), "--park-rank", &park.to_string()])
        .env("RLPO_DIST_TIMEOUT_S", timeout_s.to_string());
    let mut child = spawn_logged(&mut cmd, &log);
    let err = log.with_extension("err");
    wait_until(&mut child, 120, "every rank at the last all-reduce", || {
        let e = read(&err);
        e.contains(&format!("[rank {park}] rank {park} parked (pid ")) && (0..world).filter(|&r| r != park).all(|r| e.contains(&format!("[rank {r}] rank {r}: entering")))
    });
    (child, log)
}

fn parked_pid(err: &str, park: usize) -> u32 {
    let tag = format!("rank {park} parked (pid ");
    let at = err.find(&tag).unwrap() + tag.len();
    err[at..].split(')').next().unwrap().parse().unwrap()
}

#[test]
fn a_killed_rank_is_named_by_the_others_and_by_the_launcher() {
    let tmp = tempfile::tempdir().unwrap();
    // A 60 s collective timeout: the survivors must not need it (closed connections are seen at once).
    let (mut child, log) = parked(tmp.path(), 3, 1, 60);
    std::thread::sleep(Duration::from_millis(300));
    let pid = parked_pid(&read(&log.with_extension("err")), 1);
    signal(pid, "KILL");
    let t0 = Instant::now();
    let status = wait_exit(&mut child, 60);
    let took = t0.elapsed();
    let err = read(&log.with_extension("err"));
    assert_eq!(status.code(), Some(128 + 9), "the launcher exits with the first failure (rank 1, SIGKILL):\n{err}");
    assert!(took < Duration::from_secs(30), "took {took:?}:\n{err}");
    assert!(err.contains(&format!("rlpo launch: rank 1 (pid {pid}) was killed by signal 9 (SIGKILL)")), "{err}");
    for r in [0, 2] {
        let want = format!("[rank {r}] error: distributed: rank {r}: all-reduce (sum) of `probe with a parked rank` failed: rank 1 stopped responding");
        assert!(err.contains(&want), "no {want:?} in:\n{err}");
    }
    assert!(!err.contains("killing it"), "the survivors stopped on their own:\n{err}");
}

#[test]
fn a_stopped_rank_times_out_and_the_launcher_kills_it_after_the_grace_period() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut child, log) = parked(tmp.path(), 2, 1, 3);
    let pid = parked_pid(&read(&log.with_extension("err")), 1);
    signal(pid, "STOP");
    let t0 = Instant::now();
    let status = wait_exit(&mut child, 90);
    let took = t0.elapsed();
    let err = read(&log.with_extension("err"));
    assert_eq!(status.code(), Some(1), "rank 0 fails first (exit 1):\n{err}");
    assert!(err.contains("[rank 0] error: distributed: rank 0: all-reduce (sum) of `probe with a parked rank` failed: rank 1 stopped responding"), "{err}");
    assert!(err.contains("Timed out waiting 3000ms"), "the collective timeout fired:\n{err}");
    assert!(err.contains("rlpo launch: rank 1 still running 13 s after rank 0 failed: killing it"), "{err}");
    // 3 s timeout + 3 s heartbeat window + 13 s grace, plus start-up slack; far from a hang.
    assert!(took < Duration::from_secs(60), "took {took:?}:\n{err}");
}

#[test]
fn train_with_nproc_per_node_2_gets_every_rank_through_init_and_a_barrier() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = tiny_recipe(tmp.path(), "dp", 2, 0);
    let out = run_ok(rlpo().arg("train").arg(&recipe).args(["--nproc-per-node", "2"]).current_dir(tmp.path()));
    let err = text(&out.stderr);
    assert!(err.contains("[rank 1] rank 1 of 2: rendezvous and barrier done"), "{err}");
    assert!(err.contains("[rank 0] rank 0 of 2: rendezvous and barrier done"), "{err}");
    let run = tmp.path().join("dp");
    assert_eq!(metric_steps(&run), [1, 2], "rank 0 trains the run:\n{err}");
    assert!(run.join("recipe.resolved.toml").exists());
}

#[test]
fn ctrl_c_at_the_launcher_reaches_the_training_rank_once() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = tiny_recipe(tmp.path(), "dpsig", 500, 0);
    let log = tmp.path().join("launch");
    let mut cmd = rlpo();
    // Its own process group, signalled as a whole, as a terminal's Ctrl-C does.
    cmd.arg("train").arg(&recipe).args(["--nproc-per-node", "2"]).current_dir(tmp.path()).process_group(0);
    let mut child = spawn_logged(&mut cmd, &log);
    let run = tmp.path().join("dpsig");
    // Rank 1 leaves after the barrier in phase 1: interrupt once it has, and rank 0 trains.
    let err = log.with_extension("err");
    wait_until(&mut child, 300, "rank 1 done and a first step", || read(&err).contains("rlpo launch: rank 1 finished") && !metric_steps(&run).is_empty());
    // `--`: a negative pid (a process group) must not be read as an option.
    let st = Command::new("kill").args(["-s", "INT", "--", &format!("-{}", child.id())]).status().unwrap();
    assert!(st.success());
    let status = wait_exit(&mut child, 300);
    let err = read(&err);
    assert_eq!(status.code(), Some(0), "{err}");
    assert_eq!(err.matches("[rank 0] interrupt: finishing the current step").count(), 1, "{err}");
    assert!(!err.contains("second interrupt"), "{err}");
    let k = *metric_steps(&run).last().unwrap();
    assert!(k < 500, "stopped at {k}");
    rlpo_train::checkpoint::verify(&run.join(format!("checkpoints/step-{k:06}"))).unwrap();
}

#[test]
fn ctrl_c_ends_ranks_without_a_handler_and_the_launcher_exits_130() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut child, log) = parked(tmp.path(), 2, 1, 60);
    signal(child.id(), "INT");
    let status = wait_exit(&mut child, 60);
    let err = read(&log.with_extension("err"));
    assert_eq!(status.code(), Some(130), "{err}");
    for r in [0, 1] {
        assert!(err.contains(&format!("rlpo launch: rank {r} stopped by the interrupt")), "{err}");
    }
    assert!(!err.contains("killing it"), "{err}");
}
