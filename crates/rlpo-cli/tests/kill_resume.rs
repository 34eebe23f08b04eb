//! SIGKILL while a checkpoint is being published: `rlpo train` (tiny recipe, a checkpoint every
//! step) pauses through the test hook after writing step 2's checkpoint completely under its
//! temporary name and before the rename; the test kills it (SIGKILL). `rlpo train --resume auto`
//! then removes the partial directory (saying so), resumes from step 1 (the last published checkpoint)
//! and finishes — with step 2 recomputed bit-identically to the killed attempt's step 2.
//! (One flipped byte in a published checkpoint: crates/rlpo-train/tests/resume.rs.)

mod common;
use common::*;
use std::os::unix::process::ExitStatusExt;

#[test]
fn sigkill_mid_publish_resumes_from_the_last_complete_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = tiny_recipe(tmp.path(), "killed", 4, 1);
    let run = tmp.path().join("killed");
    let hook = tmp.path().join("hook");
    std::fs::create_dir_all(&hook).unwrap();
    let mut child = spawn_logged(
        rlpo().arg("train").arg(&recipe).env("RLPO_TEST_PAUSE_BEFORE_RENAME", &hook).env("RLPO_TEST_PAUSE_AT_STEP", "2"),
        &tmp.path().join("first"),
    );
    let marker = hook.join("paused");
    wait_until(&mut child, 300, "the pause before publishing step 2", || marker.exists());
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(9), "{status}");

    // On disk: step 1 published, step 2 complete but only under its temporary name.
    let partial = std::path::PathBuf::from(read(&marker));
    assert_eq!(partial, run.join("checkpoints/.step-000002.tmp"));
    assert!(partial.join("manifest.json").is_file() && partial.join("optimizer.safetensors").is_file());
    assert_eq!(checkpoint_names(&run), [".step-000002.tmp", "step-000001"]);
    let killed = metric_lines(&run);
    assert_eq!(killed.iter().map(|l| l["step"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 2]);
    let rollout_rows = || -> Vec<serde_json::Value> { read(&run.join("rollouts.jsonl")).lines().map(|l| serde_json::from_str(l).unwrap()).collect() };
    let killed_rows = rollout_rows();

    let out = run_ok(rlpo().args(["train".as_ref(), recipe.as_os_str(), "--resume".as_ref(), "auto".as_ref()]));
    let err = text(&out.stderr);
    assert!(err.contains("removed partial checkpoint") && err.contains(".step-000002.tmp"), "{err}");
    assert!(err.contains(&format!("resumed from {} (step 1)", run.join("checkpoints/step-000001").display())), "{err}");
    assert!(err.contains("dropped 1 line(s)"), "{err}");
    // The resumed run logged steps 2..4 once each after the kept step 1.
    let lines = metric_lines(&run);
    assert_eq!(lines.iter().map(|l| l["step"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 2, 3, 4]);
    assert_eq!(comparable(&lines[1]), comparable(&killed[1]), "step 2 after resume differs from the killed attempt's step 2");
    // rollouts.jsonl too: the killed attempt's step-2 rows were dropped and logged again, identical.
    let rows = rollout_rows();
    let steps: Vec<u64> = rows.iter().map(|r| r["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, [1, 2, 3, 4].iter().flat_map(|&s| [s; 8]).collect::<Vec<_>>(), "2 groups x 4 rows per step, once each");
    assert_eq!(rows[..16], killed_rows[..], "steps 1-2 of rollouts.jsonl after resume differ from the killed attempt");
    // Every step got its checkpoint; the partial directory was replaced, not counted.
    assert_eq!(checkpoint_names(&run), ["step-000001", "step-000002", "step-000003", "step-000004"]);
    for n in 1..=4 {
        rlpo_train::checkpoint::verify(&run.join(format!("checkpoints/step-{n:06}"))).unwrap();
    }
    let st = rlpo_train::checkpoint::read_state(&run.join("checkpoints/step-000004")).unwrap();
    assert_eq!(st.step, 4);
    assert_eq!(Some(st.version as f64), lines[3]["metrics"]["train/policy_version"].as_f64());
}
