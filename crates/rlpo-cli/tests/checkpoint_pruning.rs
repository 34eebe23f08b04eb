//! Pruning and `--resume auto` after a branch, through the real binary (tiny recipe, a
//! checkpoint every step):
//! - resume from an older checkpoint with `keep_last = 1`: the checkpoint written after the
//!   resume survives (before lineages, the abandoned branch's newer step-4 was kept in its
//!   place); the abandoned checkpoint is left alone, and `--resume auto` then continues the new
//!   branch, saying why it does not take the higher step;
//! - a corrupt newest checkpoint: auto-resume announces which one it skips, why, and what it
//!   falls back to; pruning with `keep_last = 1` keeps the verified checkpoint it writes.

mod common;
use common::*;

fn train(recipe: &std::path::Path, extra: &[&str]) -> String {
    let mut cmd = rlpo();
    cmd.arg("train").arg(recipe);
    for s in extra {
        cmd.args(["--set", s]);
    }
    text(&run_ok(cmd.current_dir(recipe.parent().unwrap())).stderr)
}

#[test]
fn resume_from_an_older_checkpoint_with_keep_last_one_keeps_the_new_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = tiny_recipe(tmp.path(), "branch", 4, 1);
    let run = tmp.path().join("branch");
    train(&recipe, &[]);
    assert_eq!(checkpoint_names(&run), ["step-000001", "step-000002", "step-000003", "step-000004"]);
    let old4 = read(&run.join("checkpoints/step-000004/trainer_state.json"));

    // Branch from step 2, stop at 3 (a safe change), keep one checkpoint.
    let step2 = run.join("checkpoints/step-000002");
    let mut cmd = rlpo();
    cmd.arg("train").arg(&recipe).args(["--resume".as_ref(), step2.as_os_str()]);
    cmd.args(["--set", "checkpoint.keep_last=1", "--set", "trainer.total_steps=3"]);
    let err = text(&run_ok(cmd.current_dir(tmp.path())).stderr);
    assert!(err.contains("trainer.total_steps changed from 4 to 3 since the checkpoint (step 2)"), "{err}");
    // The new step 3 survives; steps 1-2 (its ancestors beyond keep_last) are pruned; the
    // abandoned branch's step 4 is not this lineage's to count or delete.
    assert_eq!(checkpoint_names(&run), ["step-000003", "step-000004"]);
    let step3 = run.join("checkpoints/step-000003");
    rlpo_train::checkpoint::verify(&step3).unwrap();
    assert_eq!(rlpo_train::checkpoint::read_state(&step3).unwrap().lineage.len(), 2, "written by the branch");
    assert_eq!(read(&run.join("checkpoints/step-000004/trainer_state.json")), old4);

    // Auto-resume continues the branch (step 3), not the abandoned higher step, and says so.
    let err = train(&recipe, &["checkpoint.keep_last=1"]);
    assert!(err.contains(&format!("resumed from {} (step 3)", step3.display())), "{err}");
    assert!(err.contains(&format!("not resuming {} (step 4)", run.join("checkpoints/step-000004").display())), "{err}");
    assert_eq!(checkpoint_names(&run), ["step-000004"]);
    let st = rlpo_train::checkpoint::read_state(&run.join("checkpoints/step-000004")).unwrap();
    assert_eq!(st.lineage.len(), 3, "the abandoned step 4 was replaced by the branch's");
}

#[test]
fn corrupt_newest_checkpoint_is_announced_and_pruning_keeps_a_verified_one() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = tiny_recipe(tmp.path(), "corrupt", 4, 2);
    let run = tmp.path().join("corrupt");
    train(&recipe, &[]);
    assert_eq!(checkpoint_names(&run), ["step-000002", "step-000004"]);
    let newest = run.join("checkpoints/step-000004");
    let w = newest.join("optimizer.safetensors");
    let mut bytes = std::fs::read(&w).unwrap();
    let n = bytes.len();
    bytes[n - 5] ^= 0x10;
    std::fs::write(&w, bytes).unwrap();

    // keep_last = 1, a checkpoint every step, stop at 3 (all safe changes).
    let err = train(&recipe, &["checkpoint.keep_last=1", "checkpoint.save_every=1", "trainer.total_steps=3"]);
    assert!(err.contains(&format!("warning: skipping checkpoint {}: {}: size or sha256 differs", newest.display(), w.display())), "{err}");
    let step2 = run.join("checkpoints/step-000002");
    assert!(err.contains(&format!("auto-resume falls back to {} (step 2): the newer checkpoint(s) {} do not verify", step2.display(), newest.display())), "{err}");
    assert!(err.contains(&format!("resumed from {} (step 2)", step2.display())), "{err}");
    // The checkpoint just written is kept (the unverifiable step 4 is neither counted nor
    // deleted); its verified ancestor beyond keep_last is pruned.
    assert_eq!(checkpoint_names(&run), ["step-000003", "step-000004"]);
    rlpo_train::checkpoint::verify(&run.join("checkpoints/step-000003")).unwrap();
    assert!(rlpo_train::checkpoint::verify(&newest).is_err());

    // The next auto-resume takes step 3 and replaces the corrupt step 4.
    let err = train(&recipe, &["checkpoint.keep_last=1", "checkpoint.save_every=1"]);
    assert!(err.contains("(step 3)"), "{err}");
    assert_eq!(checkpoint_names(&run), ["step-000004"]);
    rlpo_train::checkpoint::verify(&newest).unwrap();
}
