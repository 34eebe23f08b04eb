//! Reward plugins under faults, through the `rlpo` binary with real plugin processes
//! (`tests/plugins/judge.py`, protocol 2; tiny-qwen2, 2 prompts × 4 responses per step):
//! - Ctrl-C from the terminal (SIGINT to rlpo's whole process group) with a slow plugin: the
//!   plugin, in its own group, is not hit; the step finishes, a checkpoint is saved, exit 0, no
//!   plugin process is left, and the resumed run's metrics equal an uninterrupted run's;
//! - a forking plugin (started through `sh -c`) that hangs once: the timeout kills its whole
//!   process group, so after the run no process carrying its marker is left;
//! - a plugin that passes the handshake and then dies on every request, under `on_error = "zero"`:
//!   the run stops at the failure ceiling, non-zero exit, its traceback on the console and in
//!   `<run>/reward.log`; one that cannot start at all: a load error quoting its stderr;
//! - `drop_group` drops exactly the groups with a failed reward (`filter/dropped_groups`).

mod common;
use common::*;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

fn plugin(name: &str) -> PathBuf {
    repo_root().join("crates/rlpo-cli/tests/plugins").join(name)
}

/// A recipe `<root>/<name>.toml`: tiny-qwen2, `steps` steps of 2 prompts × 4 responses, no
/// periodic checkpoints, and `reward` as its `[reward]` section.
fn recipe(root: &Path, name: &str, steps: u64, reward: &str) -> PathBuf {
    let text = format!(
        r#"
[run]
name = "{name}"
seed = 3
threads = 1
[model]
path = "{model}"
[data]
source = "synthetic"
[rollout]
group_size = 4
max_new_tokens = 8
threads_per_worker = 1
{reward}
[optim]
lr = 1e-3
[trainer]
total_steps = {steps}
prompts_per_step = 2
[checkpoint]
root = "{root}"
save_every = 0
keep_last = 100
save_final = false
[metrics]
console = false
tensorboard = false
"#,
        model = fixture("tiny-qwen2").display(),
        root = root.display()
    );
    let path = root.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// A `[reward]` section with one external `judge` plugin: `args` after the script, extra keys.
fn judge(policy: &str, args: &[&str], extra: &str) -> String {
    let mut cmd = vec!["python3".to_string(), plugin("judge.py").display().to_string()];
    cmd.extend(args.iter().map(|s| s.to_string()));
    let cmd: Vec<String> = cmd.iter().map(|s| format!("{s:?}")).collect();
    format!("[reward]\non_error = \"{policy}\"\n[[reward.fns]]\nkind = \"external\"\nname = \"judge\"\ncommand = [{}]\nbackoff_s = 0.01\n{extra}\n", cmd.join(", "))
}

/// Live (non-zombie) processes whose command line contains `marker`.
fn with_marker(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if e.file_name().to_string_lossy().parse::<u32>().is_err() {
            continue;
        }
        let cmd = String::from_utf8_lossy(&std::fs::read(e.path().join("cmdline")).unwrap_or_default()).replace('\0', " ");
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let zombie = stat.rsplit(')').next().is_some_and(|r| r.trim_start().starts_with('Z'));
        if !zombie && cmd.contains(marker) {
            found.push(format!("{} {cmd}", e.file_name().to_string_lossy()));
        }
    }
    found
}

/// Polls for up to 5 s until no process carries `marker` (SIGKILL is asynchronous).
fn none_left(marker: &str) -> Vec<String> {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let left = with_marker(marker);
        if left.is_empty() || std::time::Instant::now() > until {
            return left;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn metric(line: &serde_json::Value, key: &str) -> f64 {
    line["metrics"][key].as_f64().unwrap_or_else(|| panic!("{key} missing: {line}"))
}

#[test]
fn sigint_to_the_process_group_with_a_slow_plugin_saves_and_the_resume_matches() {
    let tmp = tempfile::tempdir().unwrap();
    let marker = format!("rlpo-slow-judge-{}", std::process::id());
    let reward = judge("abort", &["--sleep", "0.05", "--marker", &marker], "");
    // The uninterrupted reference.
    let whole = recipe(tmp.path(), "whole", 4, &reward);
    run_ok(rlpo().arg("train").arg(&whole).current_dir(tmp.path()));
    let reference = metric_lines(&tmp.path().join("whole"));
    assert_eq!(reference.len(), 4);
    assert!(none_left(&marker).is_empty(), "plugin left after a normal exit: {:?}", with_marker(&marker));

    // The same run, with Ctrl-C typed at a terminal: SIGINT to rlpo's whole process group.
    let cut = recipe(tmp.path(), "cut", 4, &reward);
    let run = tmp.path().join("cut");
    let log = tmp.path().join("cut-first");
    let mut cmd = rlpo();
    cmd.arg("train").arg(&cut).current_dir(tmp.path()).process_group(0);
    let mut child = spawn_logged(&mut cmd, &log);
    wait_until(&mut child, 300, "the first step in metrics.jsonl", || !metric_steps(&run).is_empty());
    assert!(!with_marker(&marker).is_empty(), "the plugin runs");
    let st = std::process::Command::new("kill").args(["-INT", "--", &format!("-{}", child.id())]).status().unwrap();
    assert!(st.success());
    let status = wait_exit(&mut child, 300);
    let err = read(&log.with_extension("err"));
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(err.contains("interrupt: finishing the current step"), "{err}");
    // The plugin, in its own process group, never saw the SIGINT: no crash, no restart.
    let plugin_log = read(&run.join("reward.log"));
    assert!(!plugin_log.contains("exited") && !plugin_log.contains("restart"), "the plugin was hit by the SIGINT:\n{plugin_log}");
    assert!(!err.contains("reward:"), "no reward failures: {err}");
    let k = *metric_steps(&run).last().unwrap();
    assert!(k < 4, "stopped at step {k}");
    rlpo_train::checkpoint::verify(&run.join(format!("checkpoints/step-{k:06}"))).unwrap();
    assert!(none_left(&marker).is_empty(), "plugin left after Ctrl-C: {:?}", with_marker(&marker));

    // Resume to the end: every step's metrics equal the uninterrupted run's.
    let out = run_ok(rlpo().arg("train").arg(&cut).current_dir(tmp.path()));
    assert!(text(&out.stderr).contains(&format!("(step {k})")), "{}", text(&out.stderr));
    let resumed = metric_lines(&run);
    assert_eq!(resumed.len(), 4);
    for (a, b) in reference.iter().zip(&resumed) {
        assert_eq!(comparable(a), comparable(b), "step {}", a["step"]);
    }
    assert!(none_left(&marker).is_empty(), "{:?}", with_marker(&marker));
}

#[test]
fn a_second_interrupt_exits_at_once_and_takes_the_plugins_along() {
    let tmp = tempfile::tempdir().unwrap();
    let marker = format!("rlpo-second-judge-{}", std::process::id());
    // A very slow plugin with children: the first step cannot finish while the test runs.
    let r = recipe(tmp.path(), "second", 3, &judge("abort", &["--sleep", "30", "--fork", "--marker", &marker], ""));
    let log = tmp.path().join("second-log");
    let mut cmd = rlpo();
    cmd.arg("train").arg(&r).current_dir(tmp.path()).process_group(0);
    let mut child = spawn_logged(&mut cmd, &log);
    wait_until(&mut child, 300, "the plugin and its children", || with_marker(&marker).len() >= 4);
    let group = format!("-{}", child.id());
    assert!(std::process::Command::new("kill").args(["-INT", "--", &group]).status().unwrap().success());
    wait_until(&mut child, 60, "the first interrupt's message", || read(&log.with_extension("err")).contains("interrupt: finishing"));
    assert!(std::process::Command::new("kill").args(["-INT", "--", &group]).status().unwrap().success());
    let status = wait_exit(&mut child, 60);
    assert_eq!(status.code(), Some(130), "{}", read(&log.with_extension("err")));
    // exit() skipped every destructor; the plugin group was killed explicitly.
    assert!(none_left(&marker).is_empty(), "left behind: {:?}\n{}", with_marker(&marker), read(&log.with_extension("err")));
}

#[test]
fn a_forking_plugin_that_times_out_leaves_no_process_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let marker = format!("rlpo-fork-judge-{}", std::process::id());
    let hang = tmp.path().join("hang");
    std::fs::create_dir(&hang).unwrap();
    // Through `sh -c`, as a user might start it; the plugin forks two children and an `sh -c`
    // grandchild, all carrying the marker; its first instance never answers one request.
    let script = format!("python3 {} --fork --marker {marker} --hang-once {}", plugin("judge.py").display(), hang.display());
    let reward = format!(
        "[reward]\non_error = \"zero\"\n[[reward.fns]]\nkind = \"external\"\nname = \"judge\"\ncommand = [\"sh\", \"-c\", {script:?}]\ntimeout_s = 1.0\nbackoff_s = 0.01\n"
    );
    let r = recipe(tmp.path(), "fork", 2, &reward);
    let out = run_ok(rlpo().arg("train").arg(&r).current_dir(tmp.path()));
    assert!(hang.join("hung").exists(), "the plugin hung once");
    let lines = metric_lines(&tmp.path().join("fork"));
    assert_eq!(metric(&lines[1], "reward/timeouts"), 1.0, "{}", text(&out.stderr));
    assert_eq!(metric(&lines[1], "reward/restarts"), 1.0);
    let log = read(&tmp.path().join("fork/reward.log"));
    assert!(log.contains("timed out") && log.contains("restarted plugin"), "{log}");
    // The timed-out instance's group was killed at the timeout; the restarted one's at exit.
    // (Had the timeout killed only its leader, the first instance's children would remain.)
    assert!(none_left(&marker).is_empty(), "left behind: {:?}", with_marker(&marker));
}

#[test]
fn a_plugin_dead_from_the_start_stops_the_run_at_the_ceiling_with_its_stderr() {
    let tmp = tempfile::tempdir().unwrap();
    // Passes the start-up handshake, then dies with a traceback on every request.
    let r = recipe(tmp.path(), "dies", 5, &judge("zero", &["--die"], "max_restarts = 1"));
    let out = rlpo().arg("train").arg(&r).current_dir(tmp.path()).output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("reward failures hit the ceiling in `judge`") && err.contains("gave up"), "{err}");
    assert!(err.contains("[judge] RuntimeError: the scoring backend is unreachable"), "the traceback is shown: {err}");
    let log_path = tmp.path().join("dies/reward.log");
    assert!(err.contains(&log_path.display().to_string()), "points at reward.log: {err}");
    let log = read(&log_path);
    assert!(log.contains("Traceback (most recent call last)") && log.contains("gave up"), "{log}");
    assert!(metric_steps(&tmp.path().join("dies")).is_empty(), "no step may finish on made-up rewards");

    // One that answers every request with an error: the fraction ceiling (4 of 8) trips in step 1.
    let r = recipe(tmp.path(), "errs", 5, &judge("drop_group", &["--error-all"], "").replace(
        "on_error = \"drop_group\"",
        "on_error = \"drop_group\"\nmax_failure_fraction = 0.5\nfailure_window = 8",
    ));
    let out = rlpo().arg("train").arg(&r).current_dir(tmp.path()).output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("8 of the last 8 samples failed") && err.contains("latest: error: judge: plugin error: cannot judge this one"), "{err}");

    // One that cannot start at all: a load error quoting its stderr; nothing is trained.
    let dead = plugin("dead.py").display().to_string();
    let r = recipe(
        tmp.path(),
        "dead",
        5,
        &format!("[reward]\non_error = \"zero\"\n[[reward.fns]]\nkind = \"external\"\nname = \"judge\"\ncommand = [\"python3\", {dead:?}]\n"),
    );
    let out = rlpo().arg("train").arg(&r).current_dir(tmp.path()).output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("did not start") && err.contains("exited during the start-up handshake"), "{err}");
    assert!(err.contains("ModuleNotFoundError: No module named 'verifier'"), "{err}");
    assert!(!tmp.path().join("dead/checkpoints").exists());
}

#[test]
fn drop_group_drops_exactly_the_groups_with_a_failed_reward() {
    let tmp = tempfile::tempdir().unwrap();
    // Requests arrive in sample order and are answered one by one; every 5th fails. Step 1:
    // requests 1-8, the 5th (sample 4, group 1) fails. Step 2: requests 9-16, the 10th (sample 1,
    // group 0) and 15th (sample 6, group 1) fail: both groups go and the step is skipped.
    let reward = judge("drop_group", &["--fail-every", "5"], "concurrency = 1").replace(
        "on_error = \"drop_group\"",
        "on_error = \"drop_group\"\nmax_failure_fraction = 1.0",
    );
    let r = recipe(tmp.path(), "drop", 2, &reward);
    let out = run_ok(rlpo().arg("train").arg(&r).current_dir(tmp.path()));
    let lines = metric_lines(&tmp.path().join("drop"));
    assert_eq!(lines.len(), 2, "{}", text(&out.stderr));
    assert_eq!(metric(&lines[0], "filter/dropped_groups"), 1.0);
    assert_eq!(metric(&lines[0], "select/rows"), 4.0, "one group of 4 rows trained");
    assert_eq!(metric(&lines[0], "reward/errors"), 1.0);
    assert_eq!(metric(&lines[1], "filter/dropped_groups"), 2.0);
    assert_eq!(metric(&lines[1], "select/skipped_step"), 1.0);
    // The console showed the failures with the newest log lines.
    assert!(text(&out.stderr).contains("reward: 1 of 8 samples failed in this batch"), "{}", text(&out.stderr));
}
