//! Issue 17 (the first hour with your own data), through the real binary on tiny-qwen2:
//! `rlpo check` exits non-zero after the whole report on a missing model and on a reward command
//! that does not start (and `--no-plugins` skips starting it), `data.prompt_format` chat vs raw as
//! `check` prints it, `rlpo reward test` exits non-zero when a sample errors (`--allow-errors`
//! exits 0), the "cannot learn" warnings and metrics (`reward/frac_zero_std`, every reward failed,
//! a pass rate that ignores a format bonus), `checkpoint.save_optimizer = false` (no optimizer
//! file; resume refused naming `--init-from` with the invoked binary; nothing of the run changed),
//! `--init-from` (a new run from the checkpoint's weights with a new learning rate) and a refused
//! start that leaves no run directory behind.

mod common;
use common::*;
use std::path::{Path, PathBuf};

/// The venv's python (has no third-party needs here, but is what setup.sh guarantees).
fn python() -> String {
    repo_root().join(".venv/bin/python").display().to_string()
}

/// A plugin that answers the handshake, then an error for responses containing `ERR`, else 1.
fn plugin(dir: &Path) -> PathBuf {
    let p = dir.join("plug.py");
    std::fs::write(
        &p,
        r#"import json, sys
for line in sys.stdin:
    req = json.loads(line)
    if req.get("handshake"):
        out = {"id": req["id"], "ready": True}
    elif "ERR" in req["response"] or "ALWAYS_FAIL" in sys.argv:
        out = {"id": req["id"], "error": "asked to fail"}
    else:
        out = {"id": req["id"], "reward": 1.0}
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()
"#,
    )
    .unwrap();
    p
}

/// `tiny_recipe` with its `[reward]` section replaced by `reward` (TOML text, `[reward]` included).
fn recipe_with_reward(root: &Path, name: &str, steps: u64, save_every: u64, reward: &str) -> PathBuf {
    let path = tiny_recipe(root, name, steps, save_every);
    let text = read(&path);
    let start = text.find("[reward]").unwrap();
    let end = text.find("[optim]").unwrap();
    std::fs::write(&path, format!("{}{reward}\n{}", &text[..start], &text[end..])).unwrap();
    path
}

fn external(cmd: &[&str], extra: &str) -> String {
    let cmd: Vec<String> = cmd.iter().map(|c| format!("{c:?}")).collect();
    format!("[reward]\n{extra}\n[[reward.fns]]\nkind = \"external\"\nname = \"plug\"\ncommand = [{}]\n", cmd.join(", "))
}

#[test]
fn check_fails_on_a_missing_model_and_a_broken_plugin_and_prints_the_prompt_format() {
    let tmp = tempfile::tempdir().unwrap();
    // A model directory that does not exist: the plan is printed, then a non-zero exit naming it.
    let r = tiny_recipe(tmp.path(), "nomodel", 1, 1);
    let out = rlpo().arg("check").arg(&r).args(["--set", "model.path=/nonexistent/model"]).output().unwrap();
    let (o, e) = (text(&out.stdout), text(&out.stderr));
    assert!(!out.status.success(), "{o}{e}");
    assert!(o.contains("prompts/step") && !o.contains("\nok\n"), "{o}");
    assert!(e.contains("problem: model.path: /nonexistent/model is not a directory"), "{e}");

    // A typo in the reward command: started once, fails, named by its recipe key.
    let plug = plugin(tmp.path());
    let bad = recipe_with_reward(tmp.path(), "badplug", 1, 1, &external(&["pyhton3-typo", &plug.display().to_string()], ""));
    let out = rlpo().arg("check").arg(&bad).output().unwrap();
    let (o, e) = (text(&out.stdout), text(&out.stderr));
    assert!(!out.status.success(), "{o}{e}");
    assert!(o.contains("plugin         plug `pyhton3-typo") && o.contains("FAILED to start"), "{o}");
    assert!(e.contains("problem: reward.fns[0].command:"), "{e}");
    // --no-plugins skips starting it: the rest is fine.
    let out = rlpo().arg("check").arg(&bad).arg("--no-plugins").output().unwrap();
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains("not started (--no-plugins)"));
    // A working plugin answers its handshake.
    let good = recipe_with_reward(tmp.path(), "goodplug", 1, 1, &external(&[&python(), &plug.display().to_string()], ""));
    let out = rlpo().arg("check").arg(&good).output().unwrap();
    let o = text(&out.stdout);
    assert!(out.status.success() && o.contains("handshake answered") && o.trim_end().ends_with("ok"), "{o}{}", text(&out.stderr));
    // The recipe's spellings, not Rust's (`advantage = grpo`, not `Grpo`), and the checkpoint size.
    assert!(o.contains("algorithm      advantage = grpo, loss.base = ") && !o.contains("Grpo"), "{o}");
    assert!(o.contains("checkpoints    ~") && o.contains("optimizer "), "{o}");

    // String prompts go through the chat template by default; `raw` feeds them as they are.
    let data = tmp.path().join("d.jsonl");
    std::fs::write(&data, "{\"prompt\": \"What is 2+2?\", \"answer\": \"4\"}\n").unwrap();
    let set = |fmt: Option<&str>| {
        let mut c = rlpo();
        c.arg("check").arg(&r).args(["--set", "data.source=jsonl", "--set"]).arg(format!("data.path={}", data.display()));
        c.args(["--set", "model.system_prompt=Be brief."]);
        if let Some(f) = fmt {
            c.args(["--set", &format!("data.prompt_format={f}")]);
        }
        let out = c.output().unwrap();
        assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
        text(&out.stdout)
    };
    let chat = set(None);
    assert!(chat.contains("prompts        chat (string prompts -> system message"), "{chat}");
    assert!(chat.contains("  | <|im_start|>system\n  | Be brief.<|im_end|>\n  | <|im_start|>user\n  | What is 2+2?<|im_end|>\n  | <|im_start|>assistant\n"), "{chat}");
    let raw = set(Some("raw"));
    assert!(raw.contains("prompts        raw (") && raw.contains("example prompt (sample") && raw.contains("  | What is 2+2?\n"), "{raw}");
    assert!(!raw.contains("<|im_start|>") && raw.contains("warning: model.system_prompt is not used"), "{raw}");
    // The lengths are measured on what the model sees: the template adds tokens.
    let len = |s: &str| -> usize {
        let l = s.lines().find_map(|l| l.strip_prefix("prompt length  ")).unwrap();
        l.split_whitespace().next().unwrap().parse().unwrap()
    };
    assert!(len(&chat) > len(&raw) + 5, "{} vs {}", len(&chat), len(&raw));
}

#[test]
fn reward_test_exits_non_zero_when_a_sample_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let plug = plugin(tmp.path());
    let r = recipe_with_reward(tmp.path(), "rt", 1, 1, &external(&[&python(), &plug.display().to_string()], "on_error = \"zero\""));
    let samples = tmp.path().join("s.jsonl");
    std::fs::write(&samples, "{\"response\": \"fine\"}\n{\"response\": \"ERR here\"}\n").unwrap();
    let out = rlpo().args(["reward", "test", "--recipe"]).arg(&r).arg("--samples").arg(&samples).output().unwrap();
    let (o, e) = (text(&out.stdout), text(&out.stderr));
    assert!(!out.status.success(), "{o}{e}");
    assert!(o.contains("asked to fail") || o.contains("error"), "the table is printed first: {o}");
    assert!(e.contains("1 of 2 sample(s) failed to score") && e.contains("--allow-errors"), "{e}");
    let out = rlpo().args(["reward", "test", "--allow-errors", "--recipe"]).arg(&r).arg("--samples").arg(&samples).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Every sample fine: exit 0.
    std::fs::write(&samples, "{\"response\": \"fine\"}\n").unwrap();
    let out = rlpo().args(["reward", "test", "--recipe"]).arg(&r).arg("--samples").arg(&samples).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn runs_that_cannot_learn_warn_and_pass_rate_ignores_a_format_bonus() {
    let tmp = tempfile::tempdir().unwrap();
    // A random tiny model never answers the synthetic arithmetic; every response gets the
    // format bonus (the pattern matches anything). Correctness is the math verifier.
    let reward = "[reward]\ncorrectness = \"math\"\n[[reward.fns]]\nkind = \"math\"\ncorrect = 1.0\nincorrect = 0.0\n\
                  [[reward.fns]]\nkind = \"format\"\npattern = '(?s).*'\nmatched = 1.0\nunmatched = 0.0\nweight = 0.1\n";
    let r = recipe_with_reward(tmp.path(), "bonus", 2, 100, reward);
    let out = run_ok(rlpo().arg("train").arg(&r));
    let e = text(&out.stderr);
    let lines = metric_lines(&tmp.path().join("bonus"));
    assert_eq!(lines.len(), 2);
    for l in &lines {
        let m = &l["metrics"];
        // Oracle: 0.1 per row from the bonus, 0 from the verifier.
        assert!((m["reward/mean"].as_f64().unwrap() - 0.1).abs() < 1e-9, "{m}");
        assert_eq!(m["reward/pass_rate"].as_f64(), Some(0.0), "pass rate is the verifier's, not reward > 0");
        assert_eq!(m["reward/bonus_only_frac"].as_f64(), Some(1.0));
        assert_eq!(m["reward/frac_zero_std"].as_f64(), Some(1.0), "every group has equal rewards");
        assert_eq!(m["reward/failed_frac"].as_f64(), Some(0.0));
    }
    assert!(e.contains("warning: step 1: every group's responses got the same reward (reward/frac_zero_std = 1"), "{e}");
    assert!(e.contains("warning: step 2: no response is correct (reward/pass_rate = 0) but 100% have a positive reward"), "{e}");

    // Every reward fails (kept as 0 under on_error = "zero", no ceiling): a different warning.
    let plug = plugin(tmp.path());
    let r = recipe_with_reward(
        tmp.path(),
        "allfail",
        1,
        100,
        &external(&[&python(), &plug.display().to_string(), "ALWAYS_FAIL"], "on_error = \"zero\"\nmax_failure_fraction = 1.0"),
    );
    let out = run_ok(rlpo().arg("train").arg(&r));
    let e = text(&out.stderr);
    assert!(e.contains("warning: step 1: every reward failed (reward/failed_frac = 1)") && e.contains("reward.log"), "{e}");
    let m = &metric_lines(&tmp.path().join("allfail"))[0]["metrics"];
    assert_eq!(m["reward/failed_frac"].as_f64(), Some(1.0), "{m}");
}

#[test]
fn weights_only_checkpoints_refuse_resume_and_init_from_starts_a_new_run() {
    let tmp = tempfile::tempdir().unwrap();
    let r = tiny_recipe(tmp.path(), "wo", 2, 1);
    let run = tmp.path().join("wo");
    let out = run_ok(rlpo().arg("train").arg(&r).args(["--set", "checkpoint.save_optimizer=false"]));
    // save_final = false: the end-of-run line does not list a final/ that was not written.
    let end = text(&out.stderr).lines().find(|l| l.starts_with("run directory: ")).map(str::to_string).unwrap_or_default();
    assert!(end.contains("metrics.jsonl") && end.contains("checkpoints/") && !end.contains("final/"), "{end}");
    let ckpts = checkpoint_names(&run);
    assert_eq!(ckpts, ["step-000001", "step-000002"]);
    for c in &ckpts {
        let d = run.join("checkpoints").join(c);
        assert!(d.join("model/config.json").is_file() && !d.join("optimizer.safetensors").exists(), "{c}");
    }
    // The checkpoint verifies and says what it is.
    let out = rlpo().arg("inspect").arg(&run).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let o = text(&out.stdout);
    assert!(o.contains("optimizer state not saved"), "{o}");
    // The recipe summary shows the values training used, not `(default)`.
    assert!(!o.contains("(default)") && o.contains("loss.agg") && o.contains("token_mean") && o.contains("loss.clip"), "{o}");
    // Resume is refused before anything is written, naming --init-from with the binary as invoked.
    let before = (read(&run.join("metrics.jsonl")), checkpoint_names(&run));
    let out = rlpo().arg("train").arg(&r).args(["--set", "checkpoint.save_optimizer=false", "--set", "trainer.total_steps=3"]).output().unwrap();
    let e = text(&out.stderr);
    assert!(!out.status.success(), "{e}");
    assert!(e.contains("cannot continue bit-exactly"), "{e}");
    assert!(e.contains(&format!("{} train", env!("CARGO_BIN_EXE_rlpo"))) && e.contains("--init-from"), "{e}");
    assert_eq!((read(&run.join("metrics.jsonl")), checkpoint_names(&run)), before, "a refused resume changes nothing");

    // A changed learning rate on a full checkpoint is refused the same way.
    let full = tiny_recipe(tmp.path(), "full", 1, 1);
    run_ok(rlpo().arg("train").arg(&full));
    let out = rlpo().arg("train").arg(&full).args(["--set", "optim.lr=5e-4", "--set", "trainer.total_steps=2"]).output().unwrap();
    let e = text(&out.stderr);
    assert!(!out.status.success() && e.contains("optim.lr") && e.contains("--init-from"), "{e}");

    // --init-from: a new run from the weights-only checkpoint, with a new learning rate. Its
    // first rollouts differ from a fresh run's with the same seed (other weights), and its
    // optimizer starts fresh (step 1 logs the new lr, policy version 1).
    let mut init = rlpo();
    init.arg("train").arg(&r).arg("--init-from").arg(&run).args(["--set", "run.name=from_wo", "--set", "optim.lr=5e-4", "--set", "trainer.total_steps=1"]);
    let e = text(&run_ok(&mut init).stderr);
    assert!(e.contains(&format!("init: weights from {}", run.join("checkpoints/step-000002/model").display())), "{e}");
    let mut fresh = rlpo();
    fresh.arg("train").arg(&r).args(["--set", "run.name=fresh", "--set", "optim.lr=5e-4", "--set", "trainer.total_steps=1"]);
    run_ok(&mut fresh);
    let m = &metric_lines(&tmp.path().join("from_wo"))[0]["metrics"];
    assert_eq!(m["optim/lr"].as_f64(), Some(5e-4), "{m}");
    assert_eq!(m["train/policy_version"].as_f64(), Some(1.0), "{m}");
    let responses = |name: &str| -> Vec<String> {
        read(&tmp.path().join(name).join("rollouts.jsonl"))
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["response"].as_str().unwrap().to_string())
            .collect()
    };
    let (a, b) = (responses("from_wo"), responses("fresh"));
    assert_eq!(a.len(), b.len());
    assert_ne!(a, b, "--init-from took no weights");
    // The first run's rollouts at step 1 are the fresh run's (same seed, same weights).
    let first: Vec<String> = read(&run.join("rollouts.jsonl"))
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["step"] == 1)
        .map(|v| v["response"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(first, b, "the oracle: same seed and weights give the same rollouts");
    // --init-from on a run that already has checkpoints is refused.
    let out = rlpo().arg("train").arg(&r).arg("--init-from").arg(&run).output().unwrap();
    assert!(!out.status.success() && text(&out.stderr).contains("--init-from starts a new run"), "{}", text(&out.stderr));
}

#[test]
fn a_refused_start_leaves_no_run_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let r = recipe_with_reward(tmp.path(), "refused", 1, 1, &external(&["pyhton3-typo", "x.py"], ""));
    let out = rlpo().arg("train").arg(&r).output().unwrap();
    assert!(!out.status.success(), "{}", text(&out.stderr));
    assert!(!tmp.path().join("refused").exists(), "{}", text(&out.stderr));
    // --init-from a path that is not a checkpoint: refused before anything is written.
    let r = tiny_recipe(tmp.path(), "noinit", 1, 1);
    let out = rlpo().arg("train").arg(&r).arg("--init-from").arg(tmp.path().join("nothing")).output().unwrap();
    assert!(!out.status.success() && text(&out.stderr).contains("--init-from"), "{}", text(&out.stderr));
    assert!(!tmp.path().join("noinit").exists());
}

#[test]
fn tensorboard_command_finds_the_venvs_tensorboard() {
    // Neither on PATH nor an active venv: found next to the binary (`<repo>/.venv/bin`).
    let tmp = tempfile::tempdir().unwrap();
    let out = rlpo()
        .arg("tensorboard")
        .arg(tmp.path())
        .args(["--", "--version_tb"])
        .env_remove("VIRTUAL_ENV")
        .env_remove("RLPO_TENSORBOARD")
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    let (o, e) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{o}{e}");
    assert!(e.contains(&format!("starting {}", repo_root().join(".venv/bin/tensorboard").display())), "{e}");
    assert!(e.contains("has no tensorboard/ directory"), "{e}");
    // TensorBoard itself answered (its version), not rlpo.
    assert!(o.trim().split('.').next().is_some_and(|major| major.parse::<u32>().is_ok_and(|m| m >= 2)), "{o}");
}
