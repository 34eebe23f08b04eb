//! The data-parallel training step through the real binary, on CPU over loopback (Gloo): N ranks
//! must train like one process on the same global batch.
//!
//! - 2 ranks vs 1 process, same recipe and global batch (4 prompts x G = 4 of the tiny model), 3
//!   steps, for GRPO (ranks started with a torchrun-style environment set here), DAPO (refill and
//!   truncation across ranks) + cross-group D³S, HAPO (adaptive temperature from global entropy
//!   quantiles) and RMT mid-training (NTP loss, budgets): the same rewards, advantages, selected
//!   rows and kept tokens every step (the plan log of `RLPO_TEST_PLAN_LOG`, exact), metrics within
//!   1e-5 relative, and final weights within 1e-5 relative (whole model; see `assert_weights`);
//!   the same for SmolLM2-135M, 2 steps;
//! - bit-exact resume with 2 ranks and `max_staleness = 1`: 6 straight steps vs 3, a failure
//!   injected at step 4, `--resume auto`, 3 more (weights, optimizer state and metrics); the same
//!   checkpoint resumed by 1 process: a warning, equal up to reduction order; a
//!   failure on one rank only: rank 0's emergency checkpoint, and the resume matches;
//! - a rank killed mid-step: the other exits non-zero naming it, well within the collective
//!   timeout, and every checkpoint still verifies;
//! - Ctrl-C at the launcher, and an interrupt delivered to one rank only: both ranks stop at the
//!   same step boundary and exit 0 with a verified checkpoint;
//! - the venv's torchrun (when present) trains; `rlpo check --nproc-per-node 2` prints each rank's
//!   plan.

mod common;
use common::*;
use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The tiny test recipe: 4 prompts x 4 responses per step, 8 new tokens, one thread per rank,
/// a checkpoint every `save_every` steps (and at the end). `body` adds sections; a `[data]` in
/// it replaces the synthetic data.
fn recipe(root: &Path, file: &str, model: &Path, steps: u64, save_every: u64, body: &str) -> PathBuf {
    let data = if body.contains("[data]") { "" } else { "[data]\nsource = \"synthetic\"\n" };
    let text = format!(
        r#"
[run]
name = "unset"
seed = 3
threads = 1
[model]
path = "{model}"
{data}
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
total_steps = {steps}
prompts_per_step = 4
[checkpoint]
root = "{root}"
save_every = {save_every}
keep_last = 100
save_final = false
[metrics]
console = false
tensorboard = false
{body}
"#,
        model = model.display(),
        root = root.display()
    );
    let path = root.join(format!("{file}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// How the ranks of a run are started.
#[derive(Clone, Copy, PartialEq)]
enum Launch {
    One,
    NprocPerNode2,
    /// Two processes with torchrun's variables set here.
    TorchrunEnv2,
}

/// Train `recipe` as run `name` (extra `--set`s in `sets`), with the plan log on; panics unless
/// every process succeeds. Returns the run directory.
fn train(recipe: &Path, name: &str, launch: Launch, sets: &[&str]) -> PathBuf {
    let root = recipe.parent().unwrap();
    let mut args: Vec<String> = vec!["train".into(), recipe.display().to_string(), "--set".into(), format!("run.name={name}")];
    for s in sets {
        args.extend(["--set".into(), s.to_string()]);
    }
    let plan = root.join(format!("{name}.plan.jsonl"));
    let cmd = || {
        let mut c = rlpo();
        c.args(&args).env("RLPO_TEST_PLAN_LOG", &plan).current_dir(root);
        c
    };
    match launch {
        Launch::One => {
            run_ok(&mut cmd());
        }
        Launch::NprocPerNode2 => {
            run_ok(cmd().args(["--nproc-per-node", "2"]));
        }
        Launch::TorchrunEnv2 => {
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
            let mut ranks: Vec<_> = (0..2)
                .map(|r| {
                    let mut c = cmd();
                    c.env("RANK", r.to_string())
                        .env("LOCAL_RANK", r.to_string())
                        .env("WORLD_SIZE", "2")
                        .env("LOCAL_WORLD_SIZE", "2")
                        .env("MASTER_ADDR", "127.0.0.1")
                        .env("MASTER_PORT", &port);
                    spawn_logged(&mut c, &root.join(format!("{name}.rank{r}")))
                })
                .collect();
            for (r, child) in ranks.iter_mut().enumerate() {
                let status = wait_exit(child, 600);
                let err = read(&root.join(format!("{name}.rank{r}.err")));
                assert!(status.success(), "rank {r}: {status}\n{err}");
            }
        }
    }
    root.join(name)
}

/// The plan log of a run: one JSON object per step.
fn plan_log(run: &Path) -> Vec<serde_json::Value> {
    let path = run.with_extension("plan.jsonl");
    read(&path).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Every step selected the same rows and tokens from the same rewards and advantages.
fn assert_same_plans(a: &Path, b: &Path, steps: usize) {
    let (pa, pb) = (plan_log(a), plan_log(b));
    assert_eq!(pa.len(), steps, "{}: plan log", a.display());
    assert_eq!(pb.len(), steps, "{}: plan log", b.display());
    for (x, y) in pa.iter().zip(&pb) {
        for k in ["rewards", "advantages", "kept_rows", "width", "kept_cells"] {
            assert_eq!(x[k], y[k], "step {}: {k} differ", x["step"]);
        }
        assert!(x["kept_cells"].as_array().is_some_and(|c| !c.is_empty()), "step {}: nothing trained", x["step"]);
    }
}

/// Metrics that measure rounding itself: the learner's log-probs against the rollout's for the
/// same tokens and weights (different kernels), ~1e-7 to 1e-6 in both runs.
const ROUNDING_METRICS: [&str; 3] = ["actor/rollout_logprob_gap", "rollout/mismatch_kl", "rollout/mismatch_max"];

/// Metrics of every step agree within 1e-5 relative (with an absolute floor of 1e-6 for losses
/// that are sums of cancelling terms); [`ROUNDING_METRICS`] within 1e-5 absolute (they are zero
/// up to f32 rounding in both runs).
fn assert_close_metrics(a: &Path, b: &Path, steps: usize) {
    let (la, lb) = (metric_lines(a), metric_lines(b));
    assert_eq!(la.len(), steps);
    assert_eq!(lb.len(), steps);
    for (x, y) in la.iter().zip(&lb) {
        assert_eq!(x["step"], y["step"]);
        let (ma, mb): (BTreeMap<_, _>, BTreeMap<_, _>) = (comparable(x).into_iter().collect(), comparable(y).into_iter().collect());
        assert_eq!(ma.keys().collect::<Vec<_>>(), mb.keys().collect::<Vec<_>>(), "step {}: metric names", x["step"]);
        for (k, va) in &ma {
            let vb = &mb[k];
            match (va.as_f64(), vb.as_f64()) {
                (Some(p), Some(q)) => {
                    let tol = if ROUNDING_METRICS.contains(&k.as_str()) { 1e-5 } else { 1e-5 * p.abs().max(q.abs()) + 1e-6 };
                    assert!((p - q).abs() <= tol, "step {}: {k} = {p} vs {q}", x["step"]);
                }
                _ => assert_eq!(va, vb, "step {}: {k}", x["step"]),
            }
        }
    }
}

fn tensors(path: &Path) -> BTreeMap<String, tch::Tensor> {
    tch::Tensor::read_safetensors(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).into_iter().map(|(k, t)| (k, t.to_kind(tch::Kind::Double))).collect()
}

fn norm(t: &tch::Tensor) -> f64 {
    t.square().sum(tch::Kind::Double).double_value(&[]).sqrt()
}

/// The final weights of both runs (checkpoint `step`) agree within 1e-5 relative over the whole
/// model, and every tensor within 1e-4 of its norm: a tensor whose gradient were not reduced
/// would differ by about half its update (~1e-2 of its norm here). Per tensor the bound is looser
/// than 1e-5 because AdamW divides by √v: elements whose true gradient is zero or tiny (Qwen2's
/// key biases: softmax does not see them; rare token embeddings) move by lr-sized steps driven
/// by rounding, which the order of the sum over ranks changes. Also checks the weights moved.
fn assert_weights(a: &Path, b: &Path, step: u64, init: &Path) {
    let file = |run: &Path| run.join(format!("checkpoints/step-{step:06}/model/model.safetensors"));
    let (wa, wb, w0) = (tensors(&file(a)), tensors(&file(b)), tensors(init));
    assert_eq!(wa.keys().collect::<Vec<_>>(), wb.keys().collect::<Vec<_>>());
    let (mut diff, mut total, mut moved) = (0.0, 0.0, 0.0);
    for (k, x) in &wa {
        let d = norm(&(x - &wb[k]));
        assert!(d <= 1e-4 * norm(x), "{k}: |a - b| = {d:e}, |a| = {:e}", norm(x));
        diff += d * d;
        total += norm(x).powi(2);
        moved += norm(&(x - &w0[k])).powi(2);
    }
    let rel = (diff / total).sqrt();
    assert!(rel <= 1e-5, "whole model: relative difference {rel:e}");
    assert!((moved / total).sqrt() > 1e-3, "the runs did not train: relative update {:e}", (moved / total).sqrt());
}

/// 2 ranks (`launch`) against 1 process on `body`, 3 steps.
fn check_equal(name: &str, body: &str, launch: Launch) {
    let tmp = tempfile::tempdir().unwrap();
    let model = fixture("tiny-qwen2");
    let r = recipe(tmp.path(), name, &model, 3, 0, body);
    let one = train(&r, "one", Launch::One, &[]);
    let two = train(&r, "two", launch, &[]);
    assert_same_plans(&one, &two, 3);
    assert_close_metrics(&one, &two, 3);
    assert_weights(&one, &two, 3, &model.join("model.safetensors"));
    let st: serde_json::Value = serde_json::from_str(&read(&two.join("checkpoints/step-000003/trainer_state.json"))).unwrap();
    assert_eq!(st["world_size"], 2);
}

#[test]
fn grpo_two_ranks_from_a_torchrun_environment_equal_one_process() {
    check_equal("grpo", "", Launch::TorchrunEnv2);
}

/// `data.too_long = "skip"` and `[eval]` with 2 ranks: the skip decision is taken on the whole
/// generation batch (the same prompts and skip count as one process, though each rank renders only
/// its part), and every rank evaluates with the same weights while rank 0 alone writes `eval/`
/// (the step-0 evaluation included).
#[test]
fn skipped_long_prompts_and_eval_two_ranks_equal_one_process() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("rows.jsonl");
    let mut text = String::new();
    for i in 0..14 {
        // Rows 2, 5 and 9 do not fit the 512-token context.
        let prompt = if [2, 5, 9].contains(&i) { "many words ".repeat(1500) } else { format!("What is {i} + 1?") };
        text += &serde_json::json!({"prompt": prompt, "answer": (i + 1).to_string()}).to_string();
        text.push('\n');
    }
    std::fs::write(&data, text).unwrap();
    let body = format!(
        r#"
[data]
source = "jsonl"
path = "{}"
too_long = "skip"
[eval]
every = 2
problems = 2
samples = 2
[eval.data]
source = "synthetic"
seed = 1
"#,
        data.display()
    );
    let model = fixture("tiny-qwen2");
    let r = recipe(tmp.path(), "skip_eval", &model, 3, 0, &body);
    let one = train(&r, "one", Launch::One, &[]);
    let two = train(&r, "two", Launch::NprocPerNode2, &[]);
    assert_same_plans(&one, &two, 3);
    // Step 0 (the initial policy's evaluation) and steps 1-3.
    assert_close_metrics(&one, &two, 4);
    assert_weights(&one, &two, 3, &model.join("model.safetensors"));
    let lines = metric_lines(&two);
    let skipped: f64 = lines.iter().filter_map(|l| l["metrics"]["data/skipped_too_long"].as_f64()).sum();
    assert!(skipped >= 2.0, "the long rows were skipped: {skipped}");
    for step in [0, 2, 3] {
        assert!(lines[step]["metrics"]["eval/reward_mean"].is_number(), "step {step}: no eval metrics");
        for run in [&one, &two] {
            assert!(run.join(format!("eval/step-{step:06}.summary.json")).is_file(), "{}: step {step}", run.display());
        }
    }
    assert!(lines[1]["metrics"].get("eval/reward_mean").is_none(), "no evaluation after step 1");
}

/// Dynamic sampling with one batch of B prompts per generation batch, so a dropped group
/// triggers a refill: the kept groups of a step then alternate between the ranks in the global
/// order, and the surplus is cut across ranks. Cross-group D³S pools every group's advantages.
#[test]
fn dapo_d3s_two_ranks_equal_one_process() {
    let body = r#"
[algorithm.dapo.overlong]
cache_len = 4
[algorithm.dapo.filter_groups]
metric = "score"
max_num_gen_batches = 5
gen_batch_factor = 1.0
on_exhausted = "train_available"
[algorithm.d3s]
level = "cross_group"
samples_init = 2
samples_final = 4
token_keep_init = 0.5
token_keep_final = 1.0
[loss]
clip_high = 0.28
"#;
    check_equal("dapo", body, Launch::NprocPerNode2);
}

#[test]
fn hapo_two_ranks_equal_one_process() {
    let body = r#"
[algorithm]
advantage = "hapo"
[algorithm.hapo]
adaptive_temperature = true
quantile = 0.8
tau = 0.05
alpha = 1.0
beta = 1.0
fallback_threshold = 5.0
[loss]
clip_low = 0.2
clip_high = 0.28
dual_clip = 10.0
"#;
    check_equal("hapo", body, Launch::NprocPerNode2);
}

#[test]
fn rmt_mid_training_two_ranks_equal_one_process() {
    let body = r#"
[data]
source = "text"
path = "builtin:tiny"
require_answer = false
[algorithm.rmt]
budget_init = 8
budget_min = 2
rollout_cap = 0.5
answer_tokens = 2
ntp_weight = 0.1
"#;
    check_equal("rmt", body, Launch::NprocPerNode2);
}

/// SmolLM2-135M-Instruct, 2 steps of 2 prompts x 2 responses of 4 tokens (short: two loads of
/// the model per run).
#[test]
fn smollm2_two_ranks_equal_one_process() {
    let model = repo_root().join(".cache/models/SmolLM2-135M-Instruct");
    if !model.join("config.json").exists() {
        panic!("{} missing: run scripts/setup.sh", model.display());
    }
    let tmp = tempfile::tempdir().unwrap();
    let r = recipe(tmp.path(), "smol", &model, 2, 0, "");
    let sets = ["trainer.prompts_per_step=2", "rollout.group_size=2", "rollout.max_new_tokens=4"];
    let one = train(&r, "one", Launch::One, &sets);
    let two = train(&r, "two", Launch::NprocPerNode2, &sets);
    assert_same_plans(&one, &two, 2);
    assert_close_metrics(&one, &two, 2);
    assert_weights(&one, &two, 2, &model.join("model.safetensors"));
}

/// 2 ranks with `max_staleness = 1` (the prefetched rollout is spread over the ranks: the
/// checkpoint gathers it whole, and each rank takes its part back): 6 straight steps vs 3, a
/// failure at step 4, `--resume auto`, 3 more. Bit for bit.
#[test]
fn two_rank_resume_is_bit_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let r = recipe(tmp.path(), "resume", &fixture("tiny-qwen2"), 6, 3, "");
    let sets = ["trainer.max_staleness=1"];
    let straight = train(&r, "straight", Launch::NprocPerNode2, &sets);
    // The split run: step 4 fails on both ranks as its rollout starts; step 3 is saved.
    let mut first = rlpo();
    first.args(["train", &r.display().to_string(), "--set", "run.name=split", "--set", sets[0], "--nproc-per-node", "2"]);
    let out = first.env("RLPO_TEST_FAULT", "4:rollout").current_dir(tmp.path()).output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("[rank 0] error: step 4 failed") && err.contains("injected rollout failure"), "{err}");
    let split = tmp.path().join("split");
    assert_eq!(checkpoint_names(&split), ["step-000003"], "{err}");
    assert_eq!(metric_steps(&split), [1, 2, 3]);
    let again = train(&r, "split", Launch::NprocPerNode2, &sets);
    assert_eq!(metric_steps(&again), [1, 2, 3, 4, 5, 6]);
    for f in ["model/model.safetensors", "optimizer.safetensors"] {
        let path = |run: &Path| run.join("checkpoints/step-000006").join(f);
        assert!(std::fs::read(path(&straight)).unwrap() == std::fs::read(path(&split)).unwrap(), "{f} differs after the resume");
    }
    let (a, b) = (metric_lines(&straight), metric_lines(&split));
    for (x, y) in a.iter().zip(&b) {
        let drop_comm = |v: Vec<(String, serde_json::Value)>| v.into_iter().collect::<BTreeMap<_, _>>();
        assert_eq!(drop_comm(comparable(x)), drop_comm(comparable(y)), "metrics of step {}", x["step"]);
    }
    let staleness: Vec<f64> = a.iter().map(|l| l["metrics"]["train/staleness"].as_f64().unwrap()).collect();
    assert_eq!(staleness, [0.0, 1.0, 1.0, 1.0, 1.0, 1.0], "the prefetch overlapped the updates");
    // The same step-3 checkpoint resumed by one process: allowed with a warning, and equal to
    // the 2-rank continuation up to reduction order (the prefetched rollout was saved whole).
    let ckpt = split.join("checkpoints/step-000003");
    let out = run_ok(rlpo().args(["train", &r.display().to_string(), "--set", "run.name=split", "--set", sets[0], "--resume"]).arg(&ckpt).current_dir(tmp.path()));
    let err = text(&out.stderr);
    assert!(err.contains("was trained by 2 rank(s), this run has 1") && err.contains("up to floating-point reduction order"), "{err}");
    assert_weights(&straight, &split, 6, &fixture("tiny-qwen2").join("model.safetensors"));
}

/// A step that fails on rank 1 alone (its rollout, as a decode error would): rank 0's next
/// collective reports rank 1's error, and rank 0 writes the emergency checkpoint of the last
/// completed step, from which the run continues exactly as an uninterrupted one.
#[test]
fn a_failure_on_one_rank_leaves_rank_0_s_emergency_checkpoint_and_resume_matches() {
    let tmp = tempfile::tempdir().unwrap();
    let r = recipe(tmp.path(), "fail1", &fixture("tiny-qwen2"), 4, 0, "");
    let straight = train(&r, "straight", Launch::NprocPerNode2, &[]);
    let mut cmd = rlpo();
    cmd.args(["train", &r.display().to_string(), "--set", "run.name=failed", "--nproc-per-node", "2"]);
    let out = cmd.env("RLPO_TEST_FAULT", "3:rollout").env("RLPO_TEST_FAULT_RANK", "1").current_dir(tmp.path()).output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("[rank 1] error: step 3 failed: rollout: model call failed: injected rollout failure at step 3"), "{err}");
    assert!(err.contains("[rank 0] error: step 3 failed: distributed: rank 0:") && err.contains("rank 1 failed: step 3 failed"), "rank 0 reports rank 1's cause:\n{err}");
    assert!(err.contains("[rank 0] checkpoint of the last completed step saved:") && err.contains("step-000002 (step 2)"), "{err}");
    let failed = tmp.path().join("failed");
    assert_eq!(checkpoint_names(&failed), ["step-000002"], "{err}");
    let again = train(&r, "failed", Launch::NprocPerNode2, &[]);
    assert_eq!(metric_steps(&again), [1, 2, 3, 4]);
    let path = |run: &Path| run.join("checkpoints/step-000004/model/model.safetensors");
    assert!(std::fs::read(path(&straight)).unwrap() == std::fs::read(path(&again)).unwrap(), "weights differ after the resume");
}

/// The launcher's line `rlpo launch: rank R pid P`.
fn rank_pid(stderr: &str, rank: usize) -> Option<u32> {
    let tag = format!("rlpo launch: rank {rank} pid ");
    stderr.lines().find_map(|l| l.strip_prefix(&tag)).and_then(|rest| rest.split_whitespace().next()?.trim_end_matches(',').parse().ok())
}

/// A long run under the launcher with a checkpoint every step; returns the child, the stderr log
/// and the run directory once `ready` steps are saved.
fn long_run(root: &Path, name: &str, ready: u64, timeout_s: &str) -> (std::process::Child, PathBuf, PathBuf) {
    let r = recipe(root, name, &fixture("tiny-qwen2"), 400, 1, "");
    let log = root.join(format!("{name}.launch"));
    let mut cmd = rlpo();
    cmd.args(["train", &r.display().to_string(), "--set", &format!("run.name={name}"), "--nproc-per-node", "2"])
        .env("RLPO_DIST_TIMEOUT_S", timeout_s)
        .current_dir(root)
        .process_group(0);
    let mut child = spawn_logged(&mut cmd, &log);
    let run = root.join(name);
    let want = run.join(format!("checkpoints/step-{ready:06}"));
    wait_until(&mut child, 300, "the first checkpoints", || want.exists());
    (child, log.with_extension("err"), run)
}

#[test]
fn a_rank_killed_mid_step_stops_the_other_naming_it_and_checkpoints_stay_intact() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut child, err, run) = long_run(tmp.path(), "kill", 2, "60");
    let pid = rank_pid(&read(&err), 1).expect("rank 1's pid in the launcher's output");
    signal(pid, "KILL");
    let killed = Instant::now();
    let status = wait_exit(&mut child, 200);
    let took = killed.elapsed();
    let err = read(&err);
    assert_eq!(status.code(), Some(137), "the launcher exits with the killed rank's code:\n{err}");
    assert!(err.contains("rlpo launch: rank 1") && err.contains("killed by signal 9"), "{err}");
    assert!(err.contains("[rank 0] error:") && err.contains("rank 1 stopped responding"), "rank 0 names rank 1:\n{err}");
    // A dead peer closes its sockets: seen at once, plus the heartbeat window; far below the
    // 60 s collective timeout.
    assert!(took < Duration::from_secs(45), "took {took:?}:\n{err}");
    let names = checkpoint_names(&run);
    let complete: Vec<&String> = names.iter().filter(|n| n.starts_with("step-")).collect();
    assert!(complete.len() >= 2, "{names:?}");
    for n in complete {
        rlpo_train::checkpoint::verify(&run.join("checkpoints").join(n)).unwrap_or_else(|e| panic!("{n}: {e}"));
    }
}

/// Ctrl-C at the launcher's process group (as a terminal sends it): every rank gets it once,
/// both stop at the same step boundary, exit 0, and the checkpoint of that step verifies.
#[test]
fn ctrl_c_at_the_launcher_stops_both_ranks_at_the_same_step() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut child, err, run) = long_run(tmp.path(), "sigint", 1, "60");
    let st = Command::new("kill").args(["-s", "INT", "--", &format!("-{}", child.id())]).status().unwrap();
    assert!(st.success());
    let status = wait_exit(&mut child, 300);
    let err = read(&err);
    assert_eq!(status.code(), Some(0), "{err}");
    for r in [0, 1] {
        assert_eq!(err.matches(&format!("[rank {r}] interrupt: finishing the current step")).count(), 1, "{err}");
    }
    assert!(!err.contains("second interrupt"), "{err}");
    assert_stopped_together(&err, &run);
}

/// An interrupt delivered to rank 1 alone (`kill -INT`): the stop flags are max-reduced at the
/// step boundary, so rank 0 stops at the same step instead of waiting in a collective.
#[test]
fn an_interrupt_seen_by_one_rank_stops_both() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut child, err_log, run) = long_run(tmp.path(), "one-sigint", 1, "60");
    let pid = rank_pid(&read(&err_log), 1).expect("rank 1's pid");
    signal(pid, "INT");
    let status = wait_exit(&mut child, 300);
    let err = read(&err_log);
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(err.contains("[rank 1] interrupt: finishing the current step") && !err.contains("[rank 0] interrupt"), "{err}");
    assert_stopped_together(&err, &run);
}

fn assert_stopped_together(err: &str, run: &Path) {
    let k = *metric_steps(run).last().expect("a step");
    assert!(k < 400, "stopped at {k}");
    assert!(err.contains(&format!("[rank 0] stopped at step {k} of 400")), "{err}");
    assert!(err.contains(&format!("[rank 1] rank 1: stopped at step {k} (rank 0 saved the checkpoint)")), "{err}");
    rlpo_train::checkpoint::verify(&run.join(format!("checkpoints/step-{k:06}"))).unwrap();
}

#[test]
fn the_venvs_torchrun_trains() {
    let torchrun = repo_root().join(".venv/bin/torchrun");
    if !torchrun.exists() {
        eprintln!("skipped: no {} (scripts/setup.sh installs torch, which provides it)", torchrun.display());
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let r = recipe(tmp.path(), "torchrun", &fixture("tiny-qwen2"), 2, 0, "");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
    let out: Output = Command::new(&torchrun)
        .args(["--nproc-per-node", "2", "--master-port", &port, "--no-python", env!("CARGO_BIN_EXE_rlpo"), "train"])
        .arg(&r)
        .args(["--set", "run.name=tr"])
        .current_dir(tmp.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\n{}", text(&out.stdout), text(&out.stderr));
    let run = tmp.path().join("tr");
    assert_eq!(metric_steps(&run), [1, 2]);
    let st: serde_json::Value = serde_json::from_str(&read(&run.join("checkpoints/step-000002/trainer_state.json"))).unwrap();
    assert_eq!(st["world_size"], 2);
}

#[test]
fn check_prints_the_plan_of_each_rank() {
    let tmp = tempfile::tempdir().unwrap();
    let r = recipe(tmp.path(), "check", &fixture("tiny-qwen2"), 2, 0, "");
    let out = run_ok(rlpo().args(["check", &r.display().to_string(), "--nproc-per-node", "2", "--set", "trainer.prompts_per_step=5"]));
    let o = text(&out.stdout);
    assert!(o.contains("ranks          2 (1 node(s) x 2)"), "{o}");
    assert!(o.contains("rank 0     prompts 0..3 of each generation batch (3 prompt(s), 12 rollouts)"), "{o}");
    assert!(o.contains("rank 1     prompts 3..5 of each generation batch (2 prompt(s), 8 rollouts)"), "{o}");
    assert!(o.contains("memory plan    per device (of one rank, 12 rows;"), "{o}");
    let bad = rlpo().args(["check", &r.display().to_string(), "--nproc-per-node", "8"]).output().unwrap();
    assert!(!bad.status.success());
    assert!(text(&bad.stderr).contains("trainer.prompts_per_step"), "{}", text(&bad.stderr));
}

/// `rlpo bench step --nproc-per-node 2` (what `scripts/bench_dp_step.sh` runs) trains with two
/// ranks and reports the time in collectives and their calls (not a timing check: the numbers are
/// only read for being there and positive).
#[test]
fn bench_step_with_two_ranks_reports_the_collectives() {
    let out = run_ok(rlpo().args(["bench", "step", "--model"]).arg(fixture("tiny-qwen2")).args([
        "--prompts",
        "2",
        "--group-size",
        "2",
        "--new-tokens",
        "4",
        "--steps",
        "1",
        "--nproc-per-node",
        "2",
    ]));
    let report = text(&out.stdout);
    assert!(report.contains("2 rank(s)"), "{report}");
    let row = |name: &str| -> f64 {
        let line = report.lines().map(|l| l.trim_start_matches("[rank 0] ")).find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no `{name}` row: {report}"));
        line[name.len()..].trim().parse().unwrap_or_else(|e| panic!("`{line}`: {e}"))
    };
    assert!(row("collectives") > 0.0 && row("coll. calls") > 0.0 && row("step") > 0.0, "{report}");
}
