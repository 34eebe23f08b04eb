//! Ctrl-C while a rollout is generating, through the binary (tiny recipe, 4 steps): the test hook
//! `RLPO_TEST_PAUSE_IN_ROLLOUT=K:DIR` holds the K-th rollout of the process right after its
//! prefill; SIGINT goes to rlpo's whole process group (as a terminal's Ctrl-C does), then the
//! rollout is released. The step in flight finishes, its checkpoint is saved, the exit code is 0,
//! and the printed resume command finishes the run with metrics, final weights and optimizer state
//! bitwise equal to an uninterrupted run's:
//! - the synchronous rollout of step 2 (rollout 2), on the trainer's thread;
//! - with `max_staleness = 1`, the rollout prefetched for step 2 (rollout 2), held on a rollout
//!   worker while step 1 trains: the checkpoint holds it (or, when the signal lands after step 1,
//!   the one of step 3) finished.

mod common;
use common::*;
use std::os::unix::process::CommandExt;

fn interrupt_in_rollout_then_resume(name: &str, sets: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let reference = format!("{name}_straight");
    run_ok(rlpo().arg("train").arg(tiny_recipe(tmp.path(), &reference, 4, 0)).args(sets).current_dir(tmp.path()));

    let recipe = tiny_recipe(tmp.path(), name, 4, 0);
    let run = tmp.path().join(name);
    let hook = tmp.path().join(format!("{name}_hook"));
    std::fs::create_dir_all(&hook).unwrap();
    let log = tmp.path().join(name).with_extension("log");
    let mut child = spawn_logged(
        rlpo()
            .arg("train")
            .arg(&recipe)
            .args(sets)
            .current_dir(tmp.path())
            .env("RLPO_TEST_PAUSE_IN_ROLLOUT", format!("2:{}", hook.display()))
            .process_group(0),
        &log,
    );
    let err_path = log.with_extension("err");
    wait_until(&mut child, 300, "rollout 2 to pause", || hook.join("paused").exists());
    // A terminal's Ctrl-C: SIGINT to the foreground process group.
    let st = std::process::Command::new("kill").args(["-INT", "--", &format!("-{}", child.id())]).status().unwrap();
    assert!(st.success());
    wait_until(&mut child, 60, "the interrupt message", || read(&err_path).contains("interrupt: finishing the current step"));
    std::fs::write(hook.join("go"), "").unwrap();
    let status = wait_exit(&mut child, 300);
    let err = read(&err_path);
    assert_eq!(status.code(), Some(0), "{name}: {err}");
    let steps = metric_steps(&run);
    let k = *steps.last().unwrap_or_else(|| panic!("{name}: no step logged\n{err}"));
    eprintln!("{name}: stopped at step {k}");
    let stale = !sets.is_empty();
    // Synchronous: the held rollout is step 2's own. Prefetched: step 2's data, held while step 1
    // trains (the signal lands in step 1, or in step 2 waiting for it).
    let allowed: &[u64] = if stale { &[1, 2] } else { &[2] };
    assert!(allowed.contains(&k), "{name}: stopped at step {k}\n{err}");
    assert_eq!(steps, (1..=k).collect::<Vec<_>>());
    let ckpt = run.join(format!("checkpoints/step-{k:06}"));
    assert!(err.contains(&format!("stopped at step {k} of 4; checkpoint saved: {}", ckpt.display())), "{name}: {err}");
    assert_eq!(checkpoint_names(&run), [format!("step-{k:06}")]);
    rlpo_train::checkpoint::verify(&ckpt).unwrap();
    let st = rlpo_train::checkpoint::read_state(&ckpt).unwrap();
    assert_eq!(st.step, k);
    if stale {
        let p = st.prefetched.unwrap_or_else(|| panic!("{name}: the prefetched rollout is not in the checkpoint"));
        assert_eq!(p.step, k, "the prefetched rollout feeds step {}", k + 1);
        assert!(p.batch.is_some_and(|b| b.groups.len() == 2), "{name}: the prefetched rollout is saved finished");
    } else {
        assert!(st.prefetched.is_none());
    }

    let err2 = run_resume_command(&err, tmp.path());
    assert!(err2.contains(&format!("resumed from {} (step {k})", ckpt.display())), "{name}: {err2}");
    assert_eq!(metric_steps(&run), [1, 2, 3, 4]);
    let (got, want) = (metric_lines(&run), metric_lines(&tmp.path().join(&reference)));
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(comparable(g), comparable(w), "{name}: metrics of step {} differ from the uninterrupted run", g["step"]);
    }
    let (got, want) = (run.join("checkpoints/step-000004"), tmp.path().join(&reference).join("checkpoints/step-000004"));
    assert_same_tensors(&got.join("model/model.safetensors"), &want.join("model/model.safetensors"));
    assert_same_tensors(&got.join("optimizer.safetensors"), &want.join("optimizer.safetensors"));
}

#[test]
fn ctrl_c_inside_a_rollout_finishes_the_step_and_resume_equals_an_uninterrupted_run() {
    interrupt_in_rollout_then_resume("sync_rollout", &[]);
}

#[test]
fn ctrl_c_with_a_prefetched_rollout_in_flight_saves_it_and_resume_equals_an_uninterrupted_run() {
    interrupt_in_rollout_then_resume("prefetch_rollout", &["--set", "trainer.max_staleness=1"]);
}
