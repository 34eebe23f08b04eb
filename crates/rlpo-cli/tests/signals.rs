//! Ctrl-C through the binary, on the embedded quickstart recipe made tiny with `--set`:
//! - SIGINT after the first step: the step in flight finishes, a verified checkpoint is saved,
//!   the exit code is 0 and stderr says how to resume; running exactly that command continues
//!   from the checkpoint to `trainer.total_steps`.
//! - SIGINT then SIGTERM while a checkpoint is being written (held by the test hook): the
//!   process exits at once with 130, the last complete checkpoint is untouched and no new one is
//!   published; `--resume auto` continues from the untouched one.

mod common;
use common::*;
use std::path::Path;
use std::time::{Duration, Instant};

/// `--set` overrides that make the quickstart tiny and keep its outputs under `root`.
fn tiny_quickstart(root: &Path, name: &str, total_steps: u64, save_every: u64) -> Vec<String> {
    [
        format!("model.path={}", fixture("tiny-qwen2").display()),
        format!("checkpoint.root={}", root.display()),
        format!("run.name={name}"),
        "run.threads=1".into(),
        format!("trainer.total_steps={total_steps}"),
        "trainer.prompts_per_step=2".into(),
        "rollout.group_size=4".into(),
        "rollout.max_new_tokens=8".into(),
        "rollout.threads_per_worker=1".into(),
        "algorithm.d3s.samples_init=2".into(),
        "algorithm.d3s.samples_final=4".into(),
        format!("checkpoint.save_every={save_every}"),
        "checkpoint.keep_last=100".into(),
        "checkpoint.save_final=false".into(),
        "metrics.console=false".into(),
        "metrics.tensorboard=false".into(),
    ]
    .into_iter()
    .flat_map(|s| ["--set".to_string(), s])
    .collect()
}

#[test]
fn sigint_saves_a_checkpoint_and_the_printed_command_resumes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("sig");
    let args = tiny_quickstart(tmp.path(), "sig", 6, 0);
    let log = tmp.path().join("first");
    let mut child = spawn_logged(rlpo().arg("train").args(&args).current_dir(tmp.path()), &log);
    wait_until(&mut child, 300, "the first step in metrics.jsonl", || !metric_steps(&run).is_empty());
    signal(child.id(), "INT");
    let status = wait_exit(&mut child, 300);
    let err = read(&log.with_extension("err"));
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(err.contains("interrupt: finishing the current step"), "{err}");
    let steps = metric_steps(&run);
    let k = *steps.last().unwrap();
    assert!((1..6).contains(&k), "stopped at step {k}: {steps:?}\n{err}");
    assert_eq!(steps, (1..=k).collect::<Vec<_>>());
    let ckpt = run.join(format!("checkpoints/step-{k:06}"));
    rlpo_train::checkpoint::verify(&ckpt).unwrap_or_else(|e| panic!("checkpoint at the stop: {e}\n{err}"));
    assert!(err.contains(&format!("stopped at step {k} of 6; checkpoint saved: {}", ckpt.display())), "{err}");
    // Run the printed resume command as printed.
    let cmd = err.lines().find_map(|l| l.strip_prefix("resume with: ")).unwrap_or_else(|| panic!("no resume hint:\n{err}"));
    let cmd = cmd.split(" (--resume").next().unwrap();
    let words: Vec<&str> = cmd.split_whitespace().collect();
    // The hint names the binary as it was invoked (here by its absolute path).
    assert_eq!(&words[..2], [env!("CARGO_BIN_EXE_rlpo"), "train"], "{cmd}");
    let out = run_ok(rlpo().args(&words[1..]).current_dir(tmp.path()));
    let err2 = text(&out.stderr);
    assert!(err2.contains(&format!("resumed from {} (step {k})", ckpt.display())), "{err2}");
    assert_eq!(metric_steps(&run), (1..=6).collect::<Vec<_>>());
    rlpo_train::checkpoint::verify(&run.join("checkpoints/step-000006")).unwrap();
}

#[test]
fn second_signal_exits_at_once_and_leaves_the_last_checkpoint_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("twice");
    let hook = tmp.path().join("hook");
    std::fs::create_dir_all(&hook).unwrap();
    let args = tiny_quickstart(tmp.path(), "twice", 50, 1);
    let log = tmp.path().join("first");
    let mut child = spawn_logged(
        rlpo()
            .arg("train")
            .args(&args)
            .current_dir(tmp.path())
            .env("RLPO_TEST_PAUSE_BEFORE_RENAME", &hook)
            .env("RLPO_TEST_PAUSE_AT_STEP", "2"),
        &log,
    );
    wait_until(&mut child, 300, "the pause while writing step 2", || hook.join("paused").exists());
    let step1 = run.join("checkpoints/step-000001");
    let manifest_before = read(&step1.join("manifest.json"));
    rlpo_train::checkpoint::verify(&step1).unwrap();
    signal(child.id(), "INT");
    wait_until(&mut child, 60, "the first interrupt's message", || read(&log.with_extension("err")).contains("interrupt: finishing"));
    let t0 = Instant::now();
    signal(child.id(), "TERM");
    let status = wait_exit(&mut child, 60);
    let err = read(&log.with_extension("err"));
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(t0.elapsed() < Duration::from_secs(10), "second signal took {:?}", t0.elapsed());
    assert!(err.contains("second interrupt: exiting immediately"), "{err}");
    assert_eq!(checkpoint_names(&run), [".step-000002.tmp", "step-000001"]);
    assert_eq!(read(&step1.join("manifest.json")), manifest_before);
    rlpo_train::checkpoint::verify(&step1).unwrap();

    let mut resume_args = args.clone();
    resume_args.extend(["--set".into(), "trainer.total_steps=3".into()]);
    let out = run_ok(rlpo().arg("train").args(&resume_args).current_dir(tmp.path()));
    let err2 = text(&out.stderr);
    assert!(err2.contains(".step-000002.tmp") && err2.contains(&format!("resumed from {} (step 1)", step1.display())), "{err2}");
    assert_eq!(metric_steps(&run), [1, 2, 3]);
    assert_eq!(checkpoint_names(&run), ["step-000001", "step-000002", "step-000003"]);
}
