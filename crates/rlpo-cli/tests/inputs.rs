//! Bad inputs get a clear error and harm nothing, through the `rlpo` binary:
//! - a prompt longer than the model's context at row 520: `rlpo check` (which reads every row)
//!   names the row; the trainer stops naming the sample (`data.too_long = "error"`) or skips and
//!   counts such prompts (`"skip"`);
//! - `run.name` with a path in it is refused before anything is written; `--resume never` on a run
//!   with checkpoints refuses before writing anything; the absolute run directory is printed;
//! - `rlpo export --overwrite` into a cloned model repository replaces only the model files
//!   (`.git`, README and other files stay), never touches a sibling it did not create, and
//!   `--out .`, `--out ..` and paths inside the checkpoint are refused.

mod common;
use common::*;
use std::path::{Path, PathBuf};

/// A JSONL file with `n` short prompts, except the 1-based lines in `long`, whose prompt has
/// about 1500 tokens (tiny-qwen2's context is 512).
fn jsonl(path: &Path, n: usize, long: &[usize]) {
    let mut text = String::new();
    for line in 1..=n {
        let prompt = if long.contains(&line) { "many words ".repeat(1500) } else { format!("What is {line} + 1?") };
        text += &serde_json::json!({"prompt": prompt, "answer": (line + 1).to_string()}).to_string();
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
}

/// A tiny recipe reading `data` (JSONL), under `root`.
fn recipe(root: &Path, name: &str, data: &Path, steps: u64) -> PathBuf {
    let text = format!(
        r#"
[run]
name = "{name}"
threads = 1
[model]
path = "{model}"
[data]
source = "jsonl"
path = "{data}"
[rollout]
group_size = 2
max_new_tokens = 4
threads_per_worker = 1
[reward]
[[reward.fns]]
kind = "format"
pattern = '[0-9]'
[trainer]
total_steps = {steps}
prompts_per_step = 2
[checkpoint]
root = "{root}"
save_every = 0
save_final = false
[metrics]
console = false
tensorboard = false
"#,
        model = fixture("tiny-qwen2").display(),
        data = data.display(),
        root = root.display()
    );
    let path = root.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn check_names_an_overlong_prompt_at_row_520_and_the_trainer_follows_too_long() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("rows.jsonl");
    jsonl(&data, 530, &[520]);
    let r = recipe(tmp.path(), "check", &data, 1);
    let out = rlpo().arg("check").arg(&r).output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("data.too_long") && err.contains("1 of 530 prompts do not fit the model's context of 512 tokens"), "{err}");
    assert!(err.contains("line 520 (`rows.jsonl:520`"), "names the row: {err}");
    // Skipping is a warning, and the prompt length is over all rows.
    let out = run_ok(rlpo().arg("check").arg(&r).args(["--set", "data.too_long=skip"]));
    let report = text(&out.stdout);
    assert!(report.contains("longest of all 530 prompts"), "{report}");
    assert!(report.contains("warning:") && report.contains("line 520") && report.contains("will be skipped"), "{report}");

    // The trainer: every row but line 3 is too long.
    let data = tmp.path().join("long.jsonl");
    jsonl(&data, 6, &[1, 2, 4, 5, 6]);
    let r = recipe(tmp.path(), "long", &data, 2);
    let out = rlpo().arg("train").arg(&r).output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("prompt of sample `long.jsonl:") && err.contains("the model's context is 512"), "{err}");
    assert!(metric_steps(&tmp.path().join("long")).is_empty());
    let out = run_ok(rlpo().arg("train").arg(&r).args(["--set", "data.too_long=skip", "--set", "run.name=skip"]));
    let lines = metric_lines(&tmp.path().join("skip"));
    assert_eq!(lines.len(), 2, "{}", text(&out.stderr));
    let skipped: f64 = lines.iter().map(|l| l["metrics"]["data/skipped_too_long"].as_f64().unwrap()).sum();
    // Four prompts that fit, one per epoch of six rows: at least 15 skips.
    assert!(skipped >= 15.0, "skipped {skipped}");
    // Nothing fits: a clear error instead of an endless search.
    let data = tmp.path().join("all.jsonl");
    jsonl(&data, 3, &[1, 2, 3]);
    let r = recipe(tmp.path(), "all", &data, 1);
    let out = rlpo().arg("train").arg(&r).args(["--set", "data.too_long=skip"]).output().unwrap();
    assert!(text(&out.stderr).contains("all 3 prompts of the dataset are longer than the model's context (512 tokens)"), "{}", text(&out.stderr));
}

/// Every file under `dir` with its contents, sorted (a snapshot to compare).
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.strip_prefix(dir).unwrap().to_path_buf(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn bad_run_names_and_resume_never_write_nothing_and_the_run_dir_is_absolute() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let r = tiny_recipe(&root, "ok", 1, 1);
    for bad in ["../escape", "a/b", "", ".."] {
        let out = rlpo().arg("train").arg(&r).args(["--set", &format!("run.name={bad}")]).current_dir(&root).output().unwrap();
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{bad:?}: {err}");
        assert!(err.contains("run.name"), "{bad:?}: {err}");
    }
    assert!(!tmp.path().join("escape").exists() && !root.join("a").exists());
    assert_eq!(std::fs::read_dir(&root).unwrap().count(), 1, "only the recipe");

    // A relative checkpoint.root: the absolute run directory is printed.
    let out = run_ok(rlpo().arg("train").arg(&r).args(["--set", "checkpoint.root=rel"]).current_dir(&root));
    let abs = root.canonicalize().unwrap().join("rel/ok");
    assert!(text(&out.stderr).contains(&format!("-> {}", abs.display())), "{}", text(&out.stderr));
    let before = snapshot(&abs);
    assert!(before.iter().any(|(p, _)| p.starts_with("checkpoints")));
    // `--resume never` on it: refused, and not one byte written (not even the resolved recipe,
    // which this --set would change).
    let out = rlpo()
        .arg("train")
        .arg(&r)
        .args(["--set", "checkpoint.root=rel", "--set", "optim.lr=0.5", "--resume", "never"])
        .current_dir(&root)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("already has checkpoints"), "{}", text(&out.stderr));
    assert_eq!(snapshot(&abs), before, "--resume never wrote into the run directory");
}

#[test]
fn export_overwrite_replaces_only_model_files_and_refuses_dangerous_outs() {
    let tmp = tempfile::tempdir().unwrap();
    let r = tiny_recipe(tmp.path(), "exp", 1, 1);
    run_ok(rlpo().arg("train").arg(&r));
    let run = tmp.path().join("exp");
    let ckpt = run.join("checkpoints/step-000001");
    let export = |out: &Path, extra: &[&str], cwd: &Path| {
        rlpo().arg("export").arg(&ckpt).arg("--out").arg(out).args(extra).current_dir(cwd).output().unwrap()
    };

    // A cloned model repository: git metadata, a README, notes, and an old sharded model.
    let repo = tmp.path().join("repo");
    let out = export(&repo, &[], tmp.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    std::fs::create_dir_all(repo.join(".git/objects/ab")).unwrap();
    std::fs::write(repo.join(".git/HEAD"), "ref: refs/heads/main\n").unwrap();
    std::fs::write(repo.join(".git/objects/ab/cdef"), [7u8; 100]).unwrap();
    std::fs::write(repo.join("README.md"), "# my model\n").unwrap();
    std::fs::write(repo.join("notes.txt"), "keep me").unwrap();
    std::fs::write(repo.join("model-00001-of-00002.safetensors"), "old shard").unwrap();
    std::fs::write(repo.join("model-00002-of-00002.safetensors"), "old shard").unwrap();
    let index = serde_json::json!({"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}});
    std::fs::write(repo.join("model.safetensors.index.json"), index.to_string()).unwrap();
    // The temporary name the old code used (and deleted): someone else's directory now.
    let foreign = tmp.path().join("repo.tmp-save");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("precious"), "x").unwrap();
    let git_before = snapshot(&repo.join(".git"));

    let out = export(&repo, &["--overwrite", "--dtype", "bf16"], tmp.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(snapshot(&repo.join(".git")), git_before, ".git changed");
    assert_eq!(read(&repo.join("README.md")), "# my model\n");
    assert_eq!(read(&repo.join("notes.txt")), "keep me");
    assert!(read(&repo.join("config.json")).contains("\"torch_dtype\": \"bfloat16\""));
    for stale in ["model.safetensors.index.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"] {
        assert!(!repo.join(stale).exists(), "{stale} would shadow the new weights");
    }
    assert!(repo.join("model.safetensors").is_file() && repo.join("tokenizer.json").is_file());
    assert_eq!(read(&foreign.join("precious")), "x", "a sibling rlpo did not create was touched");
    let leftovers: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".export-"))
        .collect();
    assert!(leftovers.is_empty(), "staging directories left: {leftovers:?}");
    // The model loads and was not damaged by the overwrite.
    let out = run_ok(rlpo().args(["generate", "--model"]).arg(&repo).args(["--max-new-tokens", "2", "--prompt", "hi", "--dtype", "bf16"]));
    assert!(out.status.success());

    // Refused: the working directory (a model directory, with --overwrite), its parent, inside
    // the checkpoint (even when it does not exist yet), and a directory holding the checkpoint.
    let sub = repo.join("sub");
    std::fs::create_dir(&sub).unwrap();
    let cases: [(&Path, &Path, &str); 4] = [
        (Path::new("."), &repo, "working directory"),
        (Path::new(".."), &sub, "working directory"),
        (&ckpt.join("model/new"), tmp.path(), "inside the checkpoint"),
        (&run, tmp.path(), "inside the checkpoint"),
    ];
    for (out_dir, cwd, why) in cases {
        let before = snapshot(tmp.path());
        let out = export(out_dir, &["--overwrite"], cwd);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{}: {err}", out_dir.display());
        assert!(err.contains(why), "{}: {err}", out_dir.display());
        assert_eq!(snapshot(tmp.path()), before, "{} changed files", out_dir.display());
    }
}
