//! docs/quickstart-own-data.md, run as written: every fenced block tagged `bash walkthrough` is
//! extracted and executed in order with bash, in one scratch directory, on the tiny random
//! tiny-qwen2 (`MODEL`), with `rlpo` installed by `scripts/install.sh` (linked to this build's
//! binary) and the project venv's `python` on PATH. A block tagged `interrupt` is the doc's
//! "press Ctrl-C": it runs in its own process group (as a terminal's foreground job), and after its
//! first step SIGINT goes to that group. Besides each block's exit status the test checks what the
//! doc promises: the prompt rlpo logged for a string row is byte for byte what transformers'
//! `apply_chat_template` renders for that model (system prompt + user message), `check` names
//! the prompt format, the Ctrl-C leaves a checkpoint and a resume hint naming `rlpo`, the resume
//! completes every step exactly once, and `--init-from` starts a new run with the new learning
//! rate.

mod common;
use common::*;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `(tags after "bash", body)` of every ```` ```bash walkthrough ```` block, in order.
fn blocks(doc: &str) -> Vec<(Vec<String>, String)> {
    let mut out = Vec::new();
    let mut cur: Option<(Vec<String>, String)> = None;
    for line in doc.lines() {
        match cur.as_mut() {
            None => {
                let Some(info) = line.strip_prefix("```bash") else { continue };
                let tags: Vec<String> = info.split_whitespace().map(String::from).collect();
                if tags.first().map(String::as_str) == Some("walkthrough") {
                    cur = Some((tags[1..].to_vec(), String::new()));
                }
            }
            Some((_, body)) if line.trim_end() == "```" => {
                let _ = body;
                out.push(cur.take().expect("open block"));
            }
            Some((_, body)) => {
                body.push_str(line);
                body.push('\n');
            }
        }
    }
    assert!(cur.is_none(), "unterminated block in the walkthrough");
    out
}

fn bash(body: &str, dir: &Path, path: &str, model: &Path) -> Command {
    let mut c = Command::new("bash");
    c.args(["-euo", "pipefail", "-c", body]).current_dir(dir).env("PATH", path).env("MODEL", model);
    c
}

/// Run the `interrupt` block: SIGINT to its process group once its first step is logged.
fn run_interrupted(body: &str, dir: &Path, path: &str, model: &Path) -> (i32, String) {
    use std::os::unix::process::CommandExt;
    let mut child = bash(body, dir, path, model).process_group(0).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let err = Arc::new(Mutex::new(String::new()));
    let reader = {
        let err = err.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut e = err.lock().unwrap();
                e.push_str(&line);
                e.push('\n');
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(300);
    while !err.lock().unwrap().lines().any(|l| l.starts_with("step 1 ")) {
        if let Some(st) = child.try_wait().unwrap() {
            panic!("the training block exited ({st}) before its first step:\n{}", err.lock().unwrap());
        }
        assert!(Instant::now() < deadline, "no first step within 300 s:\n{}", err.lock().unwrap());
        std::thread::sleep(Duration::from_millis(20));
    }
    // What a terminal's Ctrl-C does: SIGINT to the foreground process group. Sent with kill(2)
    // itself: procps-ng 4.0's kill(1) does not take `-INT -PGID` as a process group.
    assert_eq!(interrupt_group(child.id()), 0, "kill(-{}, SIGINT)", child.id());
    let status = wait_exit(&mut child, 300);
    reader.join().unwrap();
    let e = err.lock().unwrap().clone();
    (status.code().unwrap_or(-1), e)
}

/// SIGINT to the process group `pgid`; kill(2)'s return value.
#[allow(unsafe_code)]
fn interrupt_group(pgid: u32) -> i32 {
    let pgid = i32::try_from(pgid).expect("a pid fits i32");
    assert!(pgid > 1, "never signal every process");
    // SAFETY: kill(2) with a negative pid signals that process group only; no memory involved.
    unsafe { libc::kill(-pgid, libc::SIGINT) }
}

/// What transformers renders for each row of `train.jsonl` (string rows as system + user).
fn transformers_prompts(model: &Path, data: &Path, system: &str) -> Vec<String> {
    let script = r#"
import json, sys
from transformers import AutoTokenizer
tok = AutoTokenizer.from_pretrained(sys.argv[1])
out = []
for line in open(sys.argv[2]):
    row = json.loads(line)
    msgs = row.get("messages") or [{"role": "system", "content": sys.argv[3]}, {"role": "user", "content": row["prompt"]}]
    out.append(tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True))
print(json.dumps(out))
"#;
    let out = Command::new(repo_root().join(".venv/bin/python"))
        .args(["-c", script])
        .arg(model)
        .arg(data)
        .arg(system)
        .output()
        .expect("venv python");
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_own_data_walkthrough_runs_as_written() {
    let doc = std::fs::read_to_string(repo_root().join("docs/quickstart-own-data.md")).unwrap();
    let steps = blocks(&doc);
    assert!(steps.len() >= 8, "{} walkthrough blocks", steps.len());
    assert_eq!(steps.iter().filter(|(t, _)| t.iter().any(|x| x == "interrupt")).count(), 1);

    let tmp = tempfile::tempdir().unwrap();
    let (bin, work) = (tmp.path().join("bin"), tmp.path().join("work"));
    std::fs::create_dir_all(&work).unwrap();
    // Installed as the doc says, linked to this build's binary.
    let out = Command::new(repo_root().join("scripts/install.sh"))
        .args(["--no-build", "--prefix"])
        .arg(&bin)
        .arg("--binary")
        .arg(env!("CARGO_BIN_EXE_rlpo"))
        .output()
        .unwrap();
    assert!(out.status.success(), "install.sh: {}{}", text(&out.stdout), text(&out.stderr));
    let path = format!("{}:{}:{}", bin.display(), repo_root().join(".venv/bin").display(), std::env::var("PATH").unwrap_or_default());
    let model = fixture("tiny-qwen2");

    let mut outputs = Vec::new();
    for (tags, body) in &steps {
        let (code, out, err) = if tags.iter().any(|t| t == "interrupt") {
            let (code, err) = run_interrupted(body, &work, &path, &model);
            (code, String::new(), err)
        } else {
            let o = bash(body, &work, &path, &model).output().unwrap();
            (o.status.code().unwrap_or(-1), text(&o.stdout), text(&o.stderr))
        };
        assert_eq!(code, 0, "block failed:\n{body}\nstdout:\n{out}\nstderr:\n{err}");
        outputs.push((body.clone(), out, err));
    }
    let find = |needle: &str| outputs.iter().find(|(b, _, _)| b.contains(needle)).unwrap_or_else(|| panic!("no block runs {needle}"));

    // check: the prompt format and a rendered prompt, then ok.
    let (_, out, _) = find("rlpo check");
    assert!(out.contains("prompts        chat") && out.contains("plugin         my_reward") && out.trim_end().ends_with("ok"), "{out}");
    // reward test: the plugin's parts.
    let (_, out, _) = find("rlpo reward test");
    assert!(out.contains("my_reward/correct") && out.contains("3 samples"), "{out}");
    // Ctrl-C: a checkpoint and the resume command, spelled as invoked (`rlpo` from PATH).
    let (_, _, err) = find("--show-samples");
    assert!(err.contains("stopped at step") && err.contains("resume with: rlpo train my_run.toml"), "{err}");
    assert!(err.contains("── step 1 group 0 ── prompt:"), "--show-samples prints rollouts: {err}");
    let end = |err: &str| err.lines().find(|l| l.starts_with("run directory: ")).map(str::to_string).unwrap_or_default();
    assert!(!end(err).contains("final/"), "a stopped run wrote no final/: {}", end(err));
    let (_, _, err) = outputs.iter().find(|(b, _, _)| b.trim() == "rlpo train my_run.toml").expect("the resume block");
    assert!(err.contains("resumed from"), "{err}");
    assert!(end(err).contains("final/"), "the completed run wrote final/: {}", end(err));
    let run = work.join("checkpoints/my_run");
    assert_eq!(metric_steps(&run), (1..=8).collect::<Vec<_>>(), "every step once across the interruption");
    // inspect --samples: the rows of the newest logged step.
    let (_, out, _) = find("--samples last");
    assert!(out.contains("rows (") && out.contains("reward "), "{out}");

    // What the model saw is what transformers renders for this model.
    let want = transformers_prompts(&model, &work.join("train.jsonl"), "Solve the problem step by step.");
    let rows: Vec<serde_json::Value> = read(&run.join("rollouts.jsonl")).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(!rows.is_empty());
    let mut seen = std::collections::BTreeSet::new();
    for r in &rows {
        let p = r["prompt"].as_str().unwrap();
        let i = want.iter().position(|w| w == p).unwrap_or_else(|| panic!("logged prompt is not transformers' rendering:\n{p:?}\nwant one of {want:#?}"));
        seen.insert(i);
    }
    assert!(seen.iter().any(|&i| i < 3) && seen.contains(&3), "both a string row and the chat row were trained on: {seen:?}");
    assert!(want[0].contains("Solve the problem step by step.") && want[0].contains("<|im_start|>user\nTom has 3 apples"), "{}", want[0]);

    // --init-from: a new run with the new learning rate, from the first run's weights.
    let (_, _, err) = find("--init-from");
    assert!(err.contains("init: weights from") && err.contains("my_run/checkpoints/step-000008/model"), "{err}");
    let new_run = work.join("checkpoints/my_run_lr2");
    let lines = metric_lines(&new_run);
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["metrics"]["optim/lr"].as_f64(), Some(2e-6));
    // The export loads in transformers (the python block ran) and is an HF directory.
    assert!(work.join("my_model/config.json").is_file() && work.join("my_model/model.safetensors").is_file());
}
