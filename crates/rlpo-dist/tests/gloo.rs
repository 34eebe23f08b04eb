//! c10d Gloo through the shim with real processes over loopback: every collective with known
//! results on 2 and 3 ranks, a rank killed inside a collective, a rank stopped (SIGSTOP) past the
//! timeout. Each test re-executes this binary once per rank (see `common`).

mod common;

use common::{as_rank, spawn};
use rlpo_dist::{Comm, DistError, ReduceOp};
use std::time::{Duration, Instant};
use tch::{Device, Kind, Tensor};

fn vals<T>(t: &Tensor) -> Vec<T>
where
    for<'a> Vec<T>: TryFrom<&'a Tensor, Error = tch::TchError>,
{
    Vec::<T>::try_from(&t.flatten(0, -1)).unwrap()
}

/// Every collective, each checked against values computed here from the rank numbers alone.
fn every_collective(comm: &Comm) {
    let (r, w) = (comm.rank() as i64, comm.world() as i64);
    // all-reduce sum / max, f32 / f64 / i64
    let mut t = Tensor::from_slice(&[(r + 1) as f32, -(r as f32), 0.5]);
    comm.all_reduce("f32 sum", &mut t, ReduceOp::Sum).unwrap();
    assert_eq!(vals::<f32>(&t), [(w * (w + 1) / 2) as f32, -((w * (w - 1) / 2) as f32), 0.5 * w as f32]);
    let mut t = Tensor::from_slice(&[r as f64 * 1.5, -(r as f64)]);
    comm.all_reduce("f64 max", &mut t, ReduceOp::Max).unwrap();
    assert_eq!(vals::<f64>(&t), [(w - 1) as f64 * 1.5, 0.0]);
    let mut t = Tensor::from_slice(&[1i64 << 40, r]);
    comm.all_reduce("i64 sum", &mut t, ReduceOp::Sum).unwrap();
    assert_eq!(vals::<i64>(&t), [w << 40, w * (w - 1) / 2]);
    // a large buffer (many chunks of the ring)
    let n = 1 << 20;
    let mut big = Tensor::arange(n, (Kind::Float, Device::Cpu)) * (r + 1);
    comm.all_reduce("large f32 sum", &mut big, ReduceOp::Sum).unwrap();
    let got = vals::<f32>(&big);
    let s = (w * (w + 1) / 2) as f32;
    for i in [0usize, 1, 12345, n as usize - 1] {
        assert_eq!(got[i], i as f32 * s, "element {i}");
    }
    // all-gather: output i is rank i's input
    let mine = Tensor::from_slice(&[r * 10, r * 10 + 1, r * 10 + 2]).reshape([3, 1]);
    let all = comm.all_gather("i64 rows", &mine).unwrap();
    assert_eq!(all.len(), w as usize);
    for (i, t) in all.iter().enumerate() {
        let i = i as i64;
        assert_eq!(t.size(), [3, 1]);
        assert_eq!(vals::<i64>(t), [i * 10, i * 10 + 1, i * 10 + 2]);
    }
    // broadcast from the last rank, then from rank 0
    for root in [w - 1, 0] {
        let mut t = Tensor::from_slice(&[r as f64, 7.0 * r as f64]);
        comm.broadcast("f64 pair", &mut t, root as usize).unwrap();
        assert_eq!(vals::<f64>(&t), [root as f64, 7.0 * root as f64]);
    }
    comm.barrier("end").unwrap();
    // A bad call is refused before any communication, and the communicator stays usable.
    let mut strided = Tensor::zeros([4, 4], (Kind::Float, Device::Cpu)).transpose(0, 1);
    let e = comm.all_reduce("strided", &mut strided, ReduceOp::Sum).unwrap_err();
    assert!(matches!(e, DistError::Invalid { .. }) && e.to_string().contains("not contiguous"), "{e}");
    let e = comm.broadcast("x", &mut Tensor::zeros([1], (Kind::Float, Device::Cpu)), w as usize).unwrap_err();
    assert!(e.to_string().contains("is not a rank"), "{e}");
    comm.barrier("after refusals").unwrap();
    println!("RANK_OK {r}");
}

fn run_collectives(name: &str, world: usize) {
    if let Some((_, comm)) = as_rank() {
        every_collective(&comm);
        return;
    }
    let mut ranks = spawn(name, world, &[]);
    let codes = ranks.wait_all(Duration::from_secs(120));
    let out = ranks.transcript();
    assert!(codes.iter().all(|c| *c == Some(0)), "exit codes {codes:?}\n{out}");
    for r in 0..world {
        assert!(ranks.of(r).iter().any(|l| l.ends_with(&format!("RANK_OK {r}"))), "rank {r} did not finish:\n{out}");
    }
}

#[test]
fn collectives_with_2_ranks() {
    run_collectives("collectives_with_2_ranks", 2);
}

#[test]
fn collectives_with_3_ranks() {
    run_collectives("collectives_with_3_ranks", 3);
}

/// Child side of the fault tests: `RLPO_DIST_TEST_PARK` parks (sleeps) instead of joining;
/// the others enter an all-reduce and report how it ended.
fn fault_child(comm: Comm) {
    let park: usize = std::env::var("RLPO_DIST_TEST_PARK").unwrap().parse().unwrap();
    comm.barrier("start").unwrap();
    if comm.rank() == park {
        if std::env::var_os("RLPO_DIST_TEST_FAIL").is_some() {
            // Leave with an error of its own, as the trainer does on a failed step.
            std::thread::sleep(Duration::from_millis(500));
            comm.report_failure("synthetic reward error");
            drop(comm);
            println!("LEFT");
            std::process::exit(3);
        }
        println!("PARKED pid={}", std::process::id());
        std::thread::sleep(Duration::from_secs(120));
        return;
    }
    println!("ENTERING");
    let t0 = Instant::now();
    let mut t = Tensor::ones([8], (Kind::Float, Device::Cpu));
    match comm.all_reduce("probe", &mut t, ReduceOp::Sum) {
        Ok(()) => println!("UNEXPECTED_OK"),
        Err(e) => {
            let dead = match &e {
                DistError::Collective { dead_ranks, .. } => format!("{dead_ranks:?}"),
                _ => "not-a-collective-error".into(),
            };
            println!("FAULT dead={dead} after_ms={} msg={e}", t0.elapsed().as_millis());
        }
    }
}

#[test]
fn killed_rank_is_named_by_the_others() {
    if let Some((_, comm)) = as_rank() {
        fault_child(comm);
        return;
    }
    let mut ranks = spawn("killed_rank_is_named_by_the_others", 3, &[("RLPO_DIST_TEST_PARK", "2".into()), ("RLPO_DIST_TEST_TIMEOUT_MS", "60000".into())]);
    ranks.wait_line(2, "PARKED", Duration::from_secs(60));
    ranks.wait_line(0, "ENTERING", Duration::from_secs(30));
    ranks.wait_line(1, "ENTERING", Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(300));
    let killed = Instant::now();
    ranks.children[2].kill().unwrap();
    // Well within the 60 s collective timeout: the peers see the closed connections at once.
    let codes = ranks.wait_all(Duration::from_secs(40));
    let out = ranks.transcript();
    eprintln!("{out}");
    for r in [0, 1] {
        let line = ranks.of(r).into_iter().find(|l| l.contains("FAULT")).unwrap_or_else(|| panic!("rank {r} reported no fault:\n{out}"));
        assert!(line.contains("dead=[2]") && line.contains("rank 2 stopped responding"), "rank {r}: {line}");
        assert_eq!(codes[r], Some(0), "{out}");
    }
    eprintln!("survivors done {:?} after the kill", killed.elapsed());
}

#[test]
fn stopped_rank_times_out_and_is_named() {
    if let Some((_, comm)) = as_rank() {
        fault_child(comm);
        return;
    }
    let mut ranks = spawn("stopped_rank_times_out_and_is_named", 2, &[("RLPO_DIST_TEST_PARK", "1".into()), ("RLPO_DIST_TEST_TIMEOUT_MS", "3000".into())]);
    ranks.wait_line(1, "PARKED", Duration::from_secs(60));
    let pid = ranks.children[1].id().to_string();
    assert!(std::process::Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());
    let t0 = ranks.wait_line(0, "ENTERING", Duration::from_secs(30));
    let end = ranks.wait_line(0, "FAULT", Duration::from_secs(40));
    let _ = ranks.children[1].kill();
    let codes = ranks.wait_all(Duration::from_secs(20));
    let out = ranks.transcript();
    eprintln!("{out}");
    let line = ranks.of(0).into_iter().find(|l| l.contains("FAULT")).unwrap();
    assert!(line.contains("dead=[1]") && line.contains("rank 1 stopped responding"), "{line}");
    // The 3 s collective timeout, then the heartbeat window: not the 120 s the peer sleeps.
    let took = end - t0;
    assert!(took >= Duration::from_millis(2900) && took < Duration::from_secs(20), "{took:?}");
    assert_eq!(codes[0], Some(0), "{out}");
}

#[test]
fn failing_rank_0_is_reported_to_the_others() {
    if let Some((_, comm)) = as_rank() {
        fault_child(comm);
        return;
    }
    let mut ranks = spawn(
        "failing_rank_0_is_reported_to_the_others",
        3,
        &[("RLPO_DIST_TEST_PARK", "0".into()), ("RLPO_DIST_TEST_FAIL", "1".into()), ("RLPO_DIST_TEST_TIMEOUT_MS", "60000".into())],
    );
    let codes = ranks.wait_all(Duration::from_secs(60));
    let out = ranks.transcript();
    eprintln!("{out}");
    assert_eq!(codes[0], Some(3), "{out}");
    // Rank 0 hosts the store: it stays up until both survivors have read the cause.
    for r in [1, 2] {
        let line = ranks.of(r).into_iter().find(|l| l.contains("FAULT")).unwrap_or_else(|| panic!("rank {r}: no fault\n{out}"));
        assert!(line.contains("dead=[0]") && line.contains("rank 0 failed: synthetic reward error"), "rank {r}: {line}");
        assert_eq!(codes[r], Some(0), "{out}");
    }
}

#[test]
fn a_missing_rank_fails_the_rendezvous_after_the_timeout() {
    if as_rank().is_some() {
        return;
    }
    let port = common::free_port();
    let env = rlpo_dist::LaunchEnv {
        rank: 0,
        world: 2,
        local_rank: 0,
        local_world: 2,
        master_addr: "127.0.0.1".into(),
        master_port: port,
        source: rlpo_dist::LaunchSource::Torchrun,
        external_store: false,
        attempt: 0,
    };
    let t0 = Instant::now();
    let opts = rlpo_dist::CommOptions { timeout: Duration::from_secs(2), cuda_device: None };
    let e = Comm::init(&env, &opts).err().expect("rank 1 never comes");
    let msg = e.to_string();
    assert!(matches!(e, DistError::Init { .. }), "{msg}");
    assert!(msg.contains(&format!("rank 0 of 2: rendezvous at 127.0.0.1:{port} failed")) && msg.contains("1/2 clients joined"), "{msg}");
    assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());
}
