//! Nothing lost when a step fails or is cut, through the real binary (tiny recipe):
//! - a rollout failure injected at step 3 (`RLPO_TEST_FAULT`, an error and a panic):
//!   exit code 1, the message names the cause, a verified checkpoint of step 2 exists although
//!   `save_every = 0`, and the printed resume command finishes the run with final weights and
//!   optimizer state bitwise equal to an uninterrupted run's (also with `max_staleness = 1`,
//!   where the checkpoint holds step 3's prefetched rollout);
//! - Ctrl-C during a DAPO refill that cannot end on its own (a reward plugin answering a
//!   constant once a flag file exists; `max_staleness = 1`, so the step's first batch was
//!   prefetched): the step is cut, step 1 is saved with its prefetched rollout, exit 0; the
//!   printed resume command (flag removed) continues to the end;
//! - two trainers on one run: the second is refused naming the first's pid; after the first is
//!   SIGKILLed its stale lock is taken over (with a note) and the run resumes.

mod common;
use common::*;

#[test]
fn rollout_failure_saves_the_last_completed_step_and_resume_matches_an_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    let stale = ["--set", "trainer.max_staleness=1"];
    for (name, sets) in [("straight", &[][..]), ("straight_stale", &stale[..])] {
        run_ok(rlpo().arg("train").arg(tiny_recipe(tmp.path(), name, 4, 0)).args(sets).current_dir(tmp.path()));
    }
    // The third case prefetches step 3's rollout during step 2: the checkpoint must hold it.
    for (name, fault, sets, cause, reference) in [
        ("fail_error", "3:rollout", &[][..], "rollout: model call failed: injected rollout failure at step 3", "straight"),
        ("fail_panic", "3:rollout:panic", &[][..], "panicked: injected rollout failure at step 3", "straight"),
        ("fail_stale", "3:rollout", &stale[..], "rollout: model call failed: injected rollout failure at step 3", "straight_stale"),
    ] {
        let recipe = tiny_recipe(tmp.path(), name, 4, 0);
        let run = tmp.path().join(name);
        let out = rlpo().arg("train").arg(&recipe).args(sets).current_dir(tmp.path()).env("RLPO_TEST_FAULT", fault).output().unwrap();
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {err}");
        assert!(err.contains(&format!("error: step 3 failed: {cause}")), "{name}: {err}");
        // save_every = 0: the only checkpoint is the emergency one, of the last completed step.
        assert_eq!(checkpoint_names(&run), ["step-000002"], "{name}: {err}");
        let ckpt = run.join("checkpoints/step-000002");
        rlpo_train::checkpoint::verify(&ckpt).unwrap();
        let st = rlpo_train::checkpoint::read_state(&ckpt).unwrap();
        assert_eq!(st.step, 2);
        assert_eq!(st.prefetched.is_some_and(|p| p.batch.is_some()), !sets.is_empty(), "{name}: prefetched rollout");
        assert!(err.contains(&format!("checkpoint of the last completed step saved: {} (step 2)", ckpt.display())), "{name}: {err}");
        assert_eq!(metric_steps(&run), [1, 2]);

        let err2 = run_resume_command(&err, tmp.path());
        assert!(err2.contains(&format!("resumed from {} (step 2)", ckpt.display())), "{name}: {err2}");
        assert_eq!(metric_steps(&run), [1, 2, 3, 4]);
        let (got, want) = (run.join("checkpoints/step-000004"), tmp.path().join(reference).join("checkpoints/step-000004"));
        assert_same_tensors(&got.join("model/model.safetensors"), &want.join("model/model.safetensors"));
        assert_same_tensors(&got.join("optimizer.safetensors"), &want.join("optimizer.safetensors"));
    }
}

/// A failure after step 3's optimizer update: the weights are no longer step 2's, so nothing
/// newer than the last checkpoint (step 2, `save_every = 1`) can be written, and the message says
/// so. A failure after step 3 completed (a metrics sink, say): step 3 itself is saved.
#[test]
fn failures_after_the_update_and_after_the_step_save_what_is_consistent() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = tiny_recipe(tmp.path(), "late", 4, 1);
    let run = tmp.path().join("late");
    let out = rlpo().arg("train").arg(&recipe).current_dir(tmp.path()).env("RLPO_TEST_FAULT", "3:update").output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("error: step 3 failed: injected update failure at step 3"), "{err}");
    assert!(err.contains("note: step 3 had applied 1 optimizer update(s) when it failed: the model no longer holds the weights of step 2"), "{err}");
    let step2 = run.join("checkpoints/step-000002");
    assert!(err.contains(&format!("the last checkpoint is {} (step 2)", step2.display())), "{err}");
    assert_eq!(checkpoint_names(&run), ["step-000001", "step-000002"]);
    rlpo_train::checkpoint::verify(&step2).unwrap();

    let recipe = tiny_recipe(tmp.path(), "after", 4, 0);
    let run = tmp.path().join("after");
    let out = rlpo().arg("train").arg(&recipe).current_dir(tmp.path()).env("RLPO_TEST_FAULT", "3:after").output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let step3 = run.join("checkpoints/step-000003");
    assert!(err.contains(&format!("checkpoint of the last completed step saved: {} (step 3)", step3.display())), "{err}");
    assert_eq!(checkpoint_names(&run), ["step-000003"]);
    assert_eq!(rlpo_train::checkpoint::read_state(&step3).unwrap().step, 3);
    let err2 = run_resume_command(&err, tmp.path());
    assert!(err2.contains("(step 3)"), "{err2}");
    assert_eq!(metric_steps(&run), [1, 2, 3, 4]);
}

/// A reward plugin: `id % 2` (every group of 4 consecutive rows varies), or 0 for every request
/// after the first 8 while the flag file exists (the DAPO filter then drops every group).
const PLUGIN: &str = r#"
import json, os, sys
flag = sys.argv[1]
for line in sys.stdin:
    req = json.loads(line)
    i = req["id"]
    reward = 0.0 if (i >= 8 and os.path.exists(flag)) else float(i % 2)
    sys.stdout.write(json.dumps({"id": i, "reward": reward}) + "\n")
    sys.stdout.flush()
"#;

#[test]
fn ctrl_c_cuts_an_endless_dapo_refill_saves_and_resume_continues() {
    let tmp = tempfile::tempdir().unwrap();
    let plugin = tmp.path().join("flagged.py");
    std::fs::write(&plugin, PLUGIN).unwrap();
    let flag = tmp.path().join("constant");
    std::fs::write(&flag, "").unwrap();
    let recipe = tmp.path().join("refill.toml");
    std::fs::write(
        &recipe,
        format!(
            r#"
[run]
name = "refill"
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
kind = "external"
command = ["python3", "{plugin}", "{flag}"]
[algorithm.dapo.filter_groups]
metric = "acc"
max_num_gen_batches = 1000000
gen_batch_factor = 1
on_exhausted = "train_available"
[optim]
lr = 1e-3
[trainer]
total_steps = 3
prompts_per_step = 2
max_staleness = 1
[checkpoint]
root = "{root}"
save_every = 0
save_final = false
[metrics]
console = false
tensorboard = false
"#,
            model = fixture("tiny-qwen2").display(),
            plugin = plugin.display(),
            flag = flag.display(),
            root = tmp.path().display()
        ),
    )
    .unwrap();
    let run = tmp.path().join("refill");
    let log = tmp.path().join("first");
    let mut child = spawn_logged(rlpo().arg("train").arg(&recipe).current_dir(tmp.path()), &log);
    let err_path = log.with_extension("err");
    wait_until(&mut child, 300, "step 2's refill to pass 10 generation batches", || {
        read(&err_path).contains("step 2: DAPO refill: 0 of 2 groups kept after 10 generation batches")
    });
    signal(child.id(), "INT");
    let status = wait_exit(&mut child, 120);
    let err = read(&err_path);
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(err.contains("interrupt: step 2 cut during its DAPO refill after"), "{err}");
    let ckpt = run.join("checkpoints/step-000001");
    assert!(err.contains(&format!("stopped at step 1 of 3; checkpoint saved: {}", ckpt.display())), "{err}");
    assert_eq!(checkpoint_names(&run), ["step-000001"]);
    rlpo_train::checkpoint::verify(&ckpt).unwrap();
    let st = rlpo_train::checkpoint::read_state(&ckpt).unwrap();
    assert_eq!(st.step, 1);
    let pre = st.prefetched.expect("step 2's prefetched rollout is in the checkpoint");
    assert_eq!(pre.step, 1);
    assert!(pre.batch.is_some_and(|b| b.groups.len() == 2));
    assert_eq!(metric_steps(&run), [1]);

    std::fs::remove_file(&flag).unwrap();
    let err2 = run_resume_command(&err, tmp.path());
    assert!(err2.contains(&format!("resumed from {} (step 1)", ckpt.display())), "{err2}");
    assert_eq!(metric_steps(&run), [1, 2, 3]);
    rlpo_train::checkpoint::verify(&run.join("checkpoints/step-000003")).unwrap();
}

#[test]
fn a_second_trainer_is_refused_and_a_dead_ones_lock_taken_over() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = tiny_recipe(tmp.path(), "locked", 3, 1);
    let run = tmp.path().join("locked");
    let hook = tmp.path().join("hook");
    std::fs::create_dir_all(&hook).unwrap();
    let mut first = spawn_logged(
        rlpo().arg("train").arg(&recipe).current_dir(tmp.path()).env("RLPO_TEST_PAUSE_BEFORE_RENAME", &hook).env("RLPO_TEST_PAUSE_AT_STEP", "2"),
        &tmp.path().join("first"),
    );
    wait_until(&mut first, 300, "the first trainer to pause while saving step 2", || hook.join("paused").exists());

    let out = rlpo().arg("train").arg(&recipe).current_dir(tmp.path()).output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("another `rlpo train` (pid {}", first.id())) && err.contains("refusing"), "{err}");
    // The refused trainer touched nothing: step 1 and the first trainer's write in progress.
    assert_eq!(checkpoint_names(&run), [".step-000002.tmp", "step-000001"]);
    assert_eq!(metric_steps(&run), [1, 2]);

    first.kill().unwrap();
    first.wait().unwrap();
    let out = run_ok(rlpo().arg("train").arg(&recipe).current_dir(tmp.path()));
    let err = text(&out.stderr);
    assert!(err.contains(&format!("taking over the stale lock {} of pid {}", run.join(".lock").display(), first.id())), "{err}");
    assert!(err.contains("removed partial checkpoint") && err.contains(".step-000002.tmp"), "{err}");
    assert!(err.contains("(step 1)"), "{err}");
    assert_eq!(metric_steps(&run), [1, 2, 3]);
    assert_eq!(read(&run.join(".lock")), "", "released at exit");
}
