//! Shared helpers for tests that drive the `rlpo` binary: fixture paths, a tiny recipe (random
//! tiny-qwen2 from scripts/setup.sh, built-in synthetic data, 8 new tokens), child processes with
//! their output in files, polling with deadlines, signals via `kill`, metrics.jsonl steps.
#![allow(dead_code, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

pub fn fixture(name: &str) -> PathBuf {
    let dir = repo_root().join(".cache/fixtures").join(name);
    assert!(dir.join("config.json").exists(), "fixture missing at {}: run scripts/setup.sh", dir.display());
    dir
}

pub fn rlpo() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rlpo"))
}

/// A recipe file `<root>/<name>.toml` training tiny-qwen2 for `total_steps` steps of 2 prompts ×
/// 4 responses, one thread, checkpoints every `save_every` steps (all kept) under `root`.
pub fn tiny_recipe(root: &Path, name: &str, total_steps: u64, save_every: u64) -> PathBuf {
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
[reward]
[[reward.fns]]
kind = "format"
pattern = '[0-9]'
matched = 1.0
unmatched = -1.0
[optim]
lr = 1e-3
[trainer]
total_steps = {total_steps}
prompts_per_step = 2
[checkpoint]
root = "{root}"
save_every = {save_every}
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

/// Run to completion; panics with both streams when it fails to start.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("start rlpo");
    assert!(out.status.success(), "rlpo failed ({}):\nstdout:\n{}\nstderr:\n{}", out.status, text(&out.stdout), text(&out.stderr));
    out
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Spawn with stdout/stderr going to `<log>.out` / `<log>.err`.
pub fn spawn_logged(cmd: &mut Command, log: &Path) -> Child {
    let out = std::fs::File::create(log.with_extension("out")).unwrap();
    let err = std::fs::File::create(log.with_extension("err")).unwrap();
    cmd.stdout(Stdio::from(out)).stderr(Stdio::from(err)).spawn().expect("spawn rlpo")
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Poll `cond` every 50 ms until it holds; panics with `what` after `secs` seconds, or when the
/// child exited before.
pub fn wait_until(child: &mut Child, secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("rlpo exited ({status}) while waiting for {what}");
        }
        if Instant::now() > deadline {
            child.kill().ok();
            panic!("timed out after {secs} s waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Wait for the child to exit, killing it after `secs` seconds.
pub fn wait_exit(child: &mut Child, secs: u64) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() > deadline {
            child.kill().ok();
            panic!("rlpo did not exit within {secs} s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Send `sig` (`INT`, `TERM`) to `pid` with kill(1).
pub fn signal(pid: u32, sig: &str) {
    let st = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status().expect("run kill");
    assert!(st.success(), "kill -{sig} {pid} failed");
}

/// Steps of `<run>/metrics.jsonl`, in file order.
pub fn metric_steps(run_dir: &Path) -> Vec<u64> {
    metric_lines(run_dir).iter().map(|v| v["step"].as_u64().expect("step")).collect()
}

/// Parsed lines of `<run>/metrics.jsonl` (complete lines only).
pub fn metric_lines(run_dir: &Path) -> Vec<serde_json::Value> {
    read(&run_dir.join("metrics.jsonl")).lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// Non-timing scalars of one metrics.jsonl line (these are deterministic on CPU).
pub fn comparable(line: &serde_json::Value) -> Vec<(String, serde_json::Value)> {
    line["metrics"]
        .as_object()
        .expect("metrics object")
        .iter()
        .filter(|(k, _)| !k.starts_with("timing/") && !k.starts_with("perf/"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Names of the entries of `<run>/checkpoints`, sorted.
pub fn checkpoint_names(run_dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(run_dir.join("checkpoints"))
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// The command after `resume with: ` in `err`, run from `dir` (must succeed); returns stderr.
pub fn run_resume_command(err: &str, dir: &Path) -> String {
    let cmd = err.lines().find_map(|l| l.strip_prefix("resume with: ")).unwrap_or_else(|| panic!("no resume hint:\n{err}"));
    let cmd = cmd.split(" (--resume").next().unwrap();
    let words: Vec<&str> = cmd.split_whitespace().collect();
    // The hint names the binary as it was invoked (here by its absolute path).
    assert_eq!(&words[..2], [env!("CARGO_BIN_EXE_rlpo"), "train"], "{cmd}");
    text(&run_ok(rlpo().args(&words[1..]).current_dir(dir)).stderr)
}

/// Tensors of a safetensors file, sorted by name.
pub fn tensors(path: &Path) -> Vec<(String, tch::Tensor)> {
    let mut v = tch::Tensor::read_safetensors(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Two safetensors files hold the same tensor names with bitwise equal values.
pub fn assert_same_tensors(a: &Path, b: &Path) {
    let (ta, tb) = (tensors(a), tensors(b));
    assert_eq!(ta.iter().map(|t| &t.0).collect::<Vec<_>>(), tb.iter().map(|t| &t.0).collect::<Vec<_>>());
    for ((name, x), (_, y)) in ta.iter().zip(&tb) {
        assert!(x.equal(y), "{name} differs between {} and {}", a.display(), b.display());
    }
}
