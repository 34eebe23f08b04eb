//! External plugins as real child processes (`python3 tests/plugins/*.py`, stdlib only): a good
//! plugin, one that crashes mid-batch, one that hangs, one that prints invalid JSON, one that
//! answers out of order. Each sample's reward is its own `metadata.k`, so a lost or swapped
//! answer cannot go unnoticed. In the hang tests only the hanging sample has a 1 s timeout
//! (`timeout_of`); every other sample, there and in the other tests, has a generous 10 s that only
//! matters if something is wrong (a loaded CI machine that is slow to start or restart Python then
//! cannot time out an innocent sample), so nothing here can hang.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rlpo_reward::external::{ExternalOptions, ExternalReward};
use rlpo_reward::log::RewardLog;
use rlpo_reward::metrics::RewardCounters;
use rlpo_reward::{RewardFn, RewardInput, RewardOutput, RewardStatus};

fn script(name: &str) -> String {
    format!("{}/tests/plugins/{name}.py", env!("CARGO_MANIFEST_DIR"))
}

fn opts(name: &str, args: &[&str], concurrency: usize) -> ExternalOptions {
    let mut command = vec!["python3".to_owned(), script(name)];
    command.extend(args.iter().map(|a| a.to_string()));
    let mut o = ExternalOptions::new(name, command);
    o.timeout = Duration::from_secs(10);
    if name == "hang" {
        o.timeout_of = Some(|s| (s.response == "hang").then_some(Duration::from_secs(1)));
    }
    o.concurrency = concurrency;
    o.backoff = Duration::from_millis(10);
    o
}

fn start(o: ExternalOptions) -> (ExternalReward, RewardLog, Arc<RewardCounters>) {
    let log = RewardLog::new();
    let counters = Arc::new(RewardCounters::default());
    let p = ExternalReward::start(o, log.clone(), counters.clone()).expect("python3 starts");
    (p, log, counters)
}

/// Samples with `metadata.k = k` and the given responses (`None`: an ordinary response).
fn samples(n: usize, special: &[(usize, &str)]) -> Vec<RewardInput> {
    (0..n)
        .map(|k| {
            let response = special.iter().find(|(i, _)| *i == k).map_or("fine", |(_, r)| r);
            let mut s = RewardInput::new(response, Some("x"));
            s.metadata = serde_json::json!({ "k": k });
            s.response_len = 10 + k;
            s
        })
        .collect()
}

/// Every ok output carries its own sample's `k`: nothing mis-assigned.
fn assert_no_misassignment(out: &[RewardOutput]) {
    for (k, o) in out.iter().enumerate() {
        if o.is_ok() {
            assert_eq!(o.value, k as f64, "sample {k} got another sample's answer: {o:?}");
        } else {
            assert!(o.value.is_nan(), "failed sample {k} must not carry a value: {o:?}");
        }
    }
}

fn error_text(o: &RewardOutput) -> &str {
    match &o.status {
        RewardStatus::Error(m) => m,
        other => panic!("expected an error status, got {other:?}"),
    }
}

/// The log's lines once one satisfies `want`, waiting up to 10 s: the plugin's stderr is read by
/// its own thread, so a line it wrote before its answers can reach the log after them.
fn lines_until(log: &RewardLog, want: impl Fn(&str) -> bool) -> Vec<String> {
    let until = std::time::Instant::now() + Duration::from_secs(10);
    let mut lines = log.drain();
    while !lines.iter().any(|l| want(l)) && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
        lines.extend(log.drain());
    }
    lines
}

#[test]
fn good_plugin_scores_every_sample_with_parts_and_stderr_in_the_log() {
    let (p, log, counters) = start(opts("good", &[], 8));
    let batch = samples(50, &[(7, "error")]);
    let out = p.score(&batch);
    assert_eq!(out.len(), 50);
    assert_no_misassignment(&out);
    for (k, o) in out.iter().enumerate() {
        if k == 7 {
            assert!(error_text(o).contains("cannot score this one"), "{o:?}");
            continue;
        }
        assert!(o.is_ok(), "{k}: {o:?}");
        assert_eq!(o.parts.get("k"), Some(&(k as f64)));
        assert_eq!(o.parts.get("len"), Some(&((10 + k) as f64)));
    }
    // A second batch reuses the same process.
    let out2 = p.score(&samples(5, &[]));
    assert!(out2.iter().all(RewardOutput::is_ok));
    assert_eq!(counters.snapshot().restarts, 0);
    let lines = lines_until(&log, |l| l.starts_with("[good] ready pid="));
    let ready = lines.iter().find(|l| l.starts_with("[good] ready pid=")).expect("stderr captured with prefix");
    // Dropping the reward function ends the plugin process.
    let pid: u32 = ready.trim_start_matches("[good] ready pid=").parse().expect("pid");
    drop(p);
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "plugin {pid} still running after drop");
}

#[test]
fn out_of_order_answers_are_matched_by_id() {
    let (p, _log, _) = start(opts("shuffle", &[], 8));
    let out = p.score(&samples(40, &[]));
    assert!(out.iter().all(RewardOutput::is_ok), "{out:?}");
    assert_no_misassignment(&out);
}

#[test]
fn crash_mid_batch_fails_only_the_sample_in_flight_and_restarts() {
    let (p, log, counters) = start(opts("crash", &[], 1));
    let out = p.score(&samples(10, &[(4, "crash")]));
    assert_no_misassignment(&out);
    assert!(error_text(&out[4]).contains("exited"), "{:?}", out[4]);
    assert!(out.iter().enumerate().all(|(k, o)| k == 4 || o.is_ok()), "{out:?}");
    assert_eq!(counters.snapshot().restarts, 1);
    let lines = lines_until(&log, |l| l == "[crash] crashing now");
    assert!(lines.iter().any(|l| l == "[crash] crashing now"), "{lines:?}");
}

#[test]
fn crash_with_pipelining_isolates_the_culprit() {
    let (p, log, counters) = start(opts("crash", &[], 4));
    let out = p.score(&samples(20, &[(5, "crash"), (12, "crash")]));
    assert_eq!(out.len(), 20);
    assert_no_misassignment(&out);
    for k in [5, 12] {
        assert!(error_text(&out[k]).contains("exited"), "{k}: {:?}", out[k]);
    }
    // The requests in flight beside a crashing one were re-sent alone and scored.
    assert!(out.iter().enumerate().all(|(k, o)| k == 5 || k == 12 || o.is_ok()), "{out:?}");
    // Per crashing sample: one crash with others in flight, one crash alone.
    assert_eq!(counters.snapshot().restarts, 4);
    let lines = log.drain();
    // Each line says what happened: the samples in flight together are re-sent one at a time,
    // then the culprit alone fails; no line lists an empty set of failed samples.
    assert!(lines.iter().any(|l| l.contains("in flight together: re-sending them one at a time")), "{lines:#?}");
    assert!(lines.iter().any(|l| l.contains("sample(s) [5] fail (each was alone in flight); re-sending samples [6, 7, 8] one at a time")), "{lines:#?}");
    assert!(!lines.iter().any(|l| l.contains("[]")), "{lines:#?}");
}

#[test]
fn exit_between_batches_is_noticed_and_restarted() {
    let (p, log, counters) = start(opts("crash", &["--exit-after", "3"], 4));
    assert!(p.score(&samples(3, &[])).iter().all(RewardOutput::is_ok));
    std::thread::sleep(Duration::from_millis(300)); // let it exit while idle
    let out = p.score(&samples(3, &[]));
    assert!(out.iter().all(RewardOutput::is_ok), "{out:?}");
    assert_no_misassignment(&out);
    assert_eq!(counters.snapshot().restarts, 1);
    assert!(log.drain().iter().any(|l| l.contains("with no request in flight")));
}

#[test]
fn plugin_that_always_dies_gives_up_after_max_restarts() {
    let mut o = opts("crash", &["--die-on-request"], 2);
    o.max_restarts = 2;
    let (p, log, counters) = start(o);
    let t = Instant::now();
    let out = p.score(&samples(10, &[]));
    assert!(out.iter().all(|o| !o.is_ok() && o.value.is_nan()), "{out:?}");
    assert!(error_text(&out[9]).contains("gave up after 2 consecutive restarts"), "{:?}", out[9]);
    assert_eq!(counters.snapshot().restarts, 2);
    // Later batches fail at once, without new restarts.
    let out = p.score(&samples(3, &[]));
    assert!(out.iter().all(|o| error_text(o).contains("gave up")));
    assert_eq!(counters.snapshot().restarts, 2);
    assert!(t.elapsed() < Duration::from_secs(10), "took {:?}", t.elapsed());
    let lines = log.drain();
    assert!(lines.iter().any(|l| l.contains("gave up")));
    assert!(lines.iter().any(|l| l == "[crash] RuntimeError: scoring backend is gone"), "traceback in the log: {lines:?}");
    assert!(p.gave_up().is_some_and(|m| m.contains("gave up")));
}

#[test]
fn hang_times_out_that_sample_and_restarts() {
    let (p, log, counters) = start(opts("hang", &[], 1));
    let t = Instant::now();
    let out = p.score(&samples(6, &[(2, "hang")]));
    let took = t.elapsed();
    assert_eq!(out[2].status, RewardStatus::Timeout);
    assert!(out[2].value.is_nan());
    assert!(out.iter().enumerate().all(|(k, o)| k == 2 || o.is_ok()), "{out:?}");
    assert_no_misassignment(&out);
    assert_eq!(counters.snapshot().restarts, 1);
    assert!(took >= Duration::from_secs(1) && took < Duration::from_secs(5), "took {took:?}");
    assert!(log.drain().iter().any(|l| l.contains("[2] timed out")));
}

#[test]
fn hang_with_pipelining_resends_the_innocent_requests() {
    let (p, _log, counters) = start(opts("hang", &[], 4));
    let t = Instant::now();
    let out = p.score(&samples(12, &[(3, "hang")]));
    assert!(t.elapsed() < Duration::from_secs(6), "took {:?}", t.elapsed());
    assert_eq!(out[3].status, RewardStatus::Timeout);
    assert_no_misassignment(&out);
    for (k, o) in out.iter().enumerate() {
        assert!(o.is_ok() || o.status == RewardStatus::Timeout, "{k}: {o:?}");
    }
    assert!(out.iter().filter(|o| o.is_ok()).count() >= 8, "{out:?}");
    assert!(counters.snapshot().restarts >= 1);
}

#[test]
fn invalid_output_fails_the_right_samples_and_keeps_the_plugin() {
    let special = [(1, "bad"), (3, "badreward"), (5, "noid"), (7, "nan"), (9, "blank")];
    let (p, log, counters) = start(opts("invalid", &[], 1));
    let out = p.score(&samples(11, &special));
    assert_no_misassignment(&out);
    assert!(error_text(&out[1]).contains("not an answer"), "{:?}", out[1]);
    assert!(error_text(&out[3]).contains("not a number"), "{:?}", out[3]);
    assert!(error_text(&out[5]).contains("no integer `id`"), "{:?}", out[5]);
    assert!(error_text(&out[7]).contains("not JSON"), "{:?}", out[7]);
    for k in [0, 2, 4, 6, 8, 9, 10] {
        assert!(out[k].is_ok(), "{k}: {:?}", out[k]);
    }
    assert_eq!(counters.snapshot().restarts, 0);
    assert!(log.drain().iter().any(|l| l.starts_with("[invalid] protocol error")));
}

#[test]
fn plugin_dead_at_start_is_a_start_error_quoting_its_stderr() {
    let o = opts("crash", &["--at-start"], 2);
    let err = ExternalReward::start(o, RewardLog::new(), Arc::default()).expect_err("dies before the handshake");
    let msg = err.to_string();
    assert!(msg.contains("`crash`") && msg.contains("exited during the start-up handshake"), "{msg}");
    assert!(msg.contains("exit status: 3") && msg.contains("[crash] fatal: cannot load the checker"), "{msg}");
}

#[test]
fn slow_start_past_startup_timeout_is_a_start_error() {
    let mut o = opts("probe", &["--slow-start", "30"], 2);
    o.startup_timeout = Duration::from_millis(500);
    let t = Instant::now();
    let err = ExternalReward::start(o, RewardLog::new(), Arc::default()).expect_err("never ready");
    assert!(t.elapsed() < Duration::from_secs(5), "took {:?}", t.elapsed());
    assert!(err.to_string().contains("did not answer the start-up handshake within 500ms"), "{err}");
    // Within its start-up time the same plugin is fine.
    let mut o = opts("probe", &["--slow-start", "0.3"], 2);
    o.startup_timeout = Duration::from_secs(20);
    let (p, _, _) = start(o);
    assert!(p.score(&samples(3, &[])).iter().all(RewardOutput::is_ok));
}

#[test]
fn protocol_1_plugin_passes_the_handshake_unchanged() {
    let (p, _log, counters) = start(opts("v1", &[], 4));
    let out = p.score(&[RewardInput::new("the answer is 42", Some("42")), RewardInput::new("7", Some("8"))]);
    assert_eq!(out.iter().map(|o| o.value).collect::<Vec<_>>(), [1.0, 0.0], "{out:?}");
    assert_eq!(counters.snapshot().restarts, 0);
}

#[test]
fn requests_queued_behind_a_slow_sequential_plugin_do_not_time_out() {
    // 8 requests in flight at once, 0.4 s each, one at a time: the last answer comes after 3.2 s,
    // far past the 1.5 s timeout counted from writing it; counted from when the plugin could take
    // it (the previous answer), none times out.
    let mut o = opts("probe", &["--sleep", "0.4"], 8);
    o.timeout = Duration::from_millis(1500);
    let (p, _log, counters) = start(o);
    let t = Instant::now();
    let out = p.score(&samples(8, &[]));
    assert!(t.elapsed() >= Duration::from_millis(3200), "sequential: took {:?}", t.elapsed());
    assert!(out.iter().all(RewardOutput::is_ok), "{out:?}");
    assert_no_misassignment(&out);
    assert_eq!(counters.snapshot().restarts, 0);
}

/// Processes (not zombies) whose command line contains `marker`.
fn live_with_marker(marker: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let zombie = stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z'));
        if !zombie && String::from_utf8_lossy(&cmdline).contains(marker) {
            pids.push(pid);
        }
    }
    pids
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| !stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')))
}

/// Polls `cond` for up to 5 s (SIGKILL is delivered asynchronously).
fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

#[test]
fn timeout_and_drop_kill_the_plugins_whole_process_group() {
    // Started through `sh -c`, the plugin forks two children and starts an `sh -c` grandchild;
    // every one of them carries the marker in its command line.
    let marker = format!("rlpo-fork-marker-{}", std::process::id());
    let cmd = format!("python3 {} --fork {marker}", script("probe"));
    let mut o = ExternalOptions::new("fork", vec!["sh".into(), "-c".into(), cmd]);
    o.timeout = Duration::from_secs(1);
    o.backoff = Duration::from_millis(10);
    let (p, log, counters) = start(o);
    let first: Vec<u32> = log
        .tail("[fork] children: ", 1)
        .first()
        .expect("children reported")
        .trim_start_matches("[fork] children: ")
        .split(' ')
        .map(|s| s.parse().expect("pid"))
        .collect();
    assert_eq!(first.len(), 3);
    assert!(first.iter().all(|&pid| alive(pid)));
    let out = p.score(&samples(4, &[(1, "hang")]));
    assert_eq!(out[1].status, RewardStatus::Timeout);
    assert!(out.iter().enumerate().all(|(k, o)| k == 1 || o.is_ok()), "{out:?}");
    assert_eq!(counters.snapshot().restarts, 1);
    // The timed-out instance's children are gone, though only the restarted one was asked to stop.
    assert!(eventually(|| first.iter().all(|&pid| !alive(pid))), "left behind: {:?}", live_with_marker(&marker));
    assert!(!live_with_marker(&marker).is_empty(), "the restarted instance runs");
    drop(p);
    assert!(eventually(|| live_with_marker(&marker).is_empty()), "left after drop: {:?}", live_with_marker(&marker));
}

#[test]
fn environment_is_an_allow_list() {
    // cargo sets CARGO_PKG_NAME for test processes: withheld unless the recipe names it.
    let probe = ["--env", "PATH", "--env", "CARGO_PKG_NAME"];
    assert!(std::env::var_os("CARGO_PKG_NAME").is_some());
    let (p, _, _) = start(opts("probe", &probe, 1));
    let out = p.score(&samples(1, &[]));
    assert_eq!((out[0].parts["env_PATH"], out[0].parts["env_CARGO_PKG_NAME"]), (1.0, 0.0), "{out:?}");
    let mut o = opts("probe", &probe, 1);
    o.pass_env = vec!["CARGO_PKG_NAME".into()];
    let (p, _, _) = start(o);
    let out = p.score(&samples(1, &[]));
    assert_eq!((out[0].parts["env_PATH"], out[0].parts["env_CARGO_PKG_NAME"]), (1.0, 1.0), "{out:?}");
}

#[test]
fn missing_program_is_a_start_error() {
    let o = ExternalOptions::new("nope", vec!["/nonexistent/rlpo-plugin".into()]);
    let err = ExternalReward::start(o, RewardLog::new(), Arc::default()).expect_err("cannot start");
    let msg = err.to_string();
    assert!(msg.contains("`nope`") && msg.contains("/nonexistent/rlpo-plugin"), "{msg}");
}
