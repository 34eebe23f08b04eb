//! Property test of recipe validation: every numeric key of three recipes that between them turn
//! every section on (`recipe_numbers_{a,b,c}.toml`, resolved so that defaults are spelled out)
//! is set, one at a time, to boundary values (0, ±1, -0.0, tiny, huge, i64::MAX, NaN, ±inf, the
//! base value, a float where an integer belongs). A value must be accepted exactly when it lies in
//! the key's range, as written in the table below (the same ranges as docs/recipes.md, with the
//! base recipes' other values held fixed), and a rejection must name the key. A numeric key that
//! the table does not know fails the test, so a new key cannot skip validation.

use rlpo_train::Recipe;
use std::path::Path;

const BASES: [(&str, &str); 3] = [
    ("a", include_str!("recipe_numbers_a.toml")),
    ("b", include_str!("recipe_numbers_b.toml")),
    ("c", include_str!("recipe_numbers_c.toml")),
];

/// One step of a path into the recipe table.
#[derive(Clone, Debug)]
enum Seg {
    Key(String),
    Idx(usize),
}

/// Every integer or float leaf of `v` (arrays included), as `(dotted key, path, value)`.
fn leaves(key: &str, path: &mut Vec<Seg>, v: &toml::Value, out: &mut Vec<(String, Vec<Seg>, toml::Value)>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                path.push(Seg::Key(k.clone()));
                leaves(&if key.is_empty() { k.clone() } else { format!("{key}.{k}") }, path, v, out);
                path.pop();
            }
        }
        toml::Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                path.push(Seg::Idx(i));
                leaves(&format!("{key}[{i}]"), path, v, out);
                path.pop();
            }
        }
        toml::Value::Integer(_) | toml::Value::Float(_) => out.push((key.to_string(), path.clone(), v.clone())),
        _ => {}
    }
}

fn set(root: &mut toml::Value, path: &[Seg], value: toml::Value) {
    let mut node = root;
    for seg in path {
        node = match seg {
            Seg::Key(k) => node.get_mut(k.as_str()).expect("path exists"),
            Seg::Idx(i) => node.get_mut(*i).expect("path exists"),
        };
    }
    *node = value;
}

/// The range of a key: a predicate on floats (integers are accepted there too, as their value) or
/// on integers (floats are type errors).
enum Range {
    F(fn(f64) -> bool),
    I(fn(i64) -> bool),
}

fn finite(x: f64) -> bool {
    x.is_finite()
}
fn non_negative(x: f64) -> bool {
    x.is_finite() && x >= 0.0
}
fn positive(x: f64) -> bool {
    x.is_finite() && x > 0.0
}
fn unit_closed(x: f64) -> bool {
    (0.0..=1.0).contains(&x)
}
fn unit_open_top(x: f64) -> bool {
    (0.0..1.0).contains(&x)
}
fn unit_open_bottom(x: f64) -> bool {
    x > 0.0 && x <= 1.0
}
fn any_u64(n: i64) -> bool {
    n >= 0
}
fn at_least_one(n: i64) -> bool {
    n >= 1
}
fn seconds(x: f64) -> bool {
    x > 0.0 && x <= 86_400.0
}

/// The documented range of `key` in base recipe `base` (the other keys at their base values).
fn range(base: &str, key: &str) -> Option<Range> {
    use Range::{F, I};
    // Keys whose range depends on the base.
    match (base, key) {
        // Base c: the rollout's tau must equal algorithm.hapo.tau (0.3).
        ("c", "algorithm.hapo.tau" | "rollout.adaptive_temperature.tau") => return Some(F(|x| x == 0.3)),
        // Base a: min 1, max 3 of each, within 1..=3.
        ("a", "data.synthetic.min_digits" | "data.synthetic.max_digits" | "data.synthetic.min_operators" | "data.synthetic.max_operators") => {
            return Some(I(|n| (1..=3).contains(&n)))
        }
        // Base c: numbers 3..=5 within 2..=6; targets 10..=1000 within 1..=u32::MAX.
        ("c", "data.synthetic.min_numbers") => return Some(I(|n| (2..=5).contains(&n))),
        ("c", "data.synthetic.max_numbers") => return Some(I(|n| (3..=6).contains(&n))),
        ("c", "data.synthetic.max_number") => return Some(I(|n| (1..=10_000).contains(&n))),
        ("c", "data.synthetic.min_target") => return Some(I(|n| (1..=1000).contains(&n))),
        ("c", "data.synthetic.max_target") => return Some(I(|n| (10..=u32::MAX as i64).contains(&n))),
        // Base a's reward.fns[3] is `overlong` (max_len 64, cache_len 16), [4] `length`, [6] `external`.
        ("a", "reward.fns[3].cache_len") => return Some(I(|n| (1..=64).contains(&n))),
        ("a", "reward.fns[3].max_len") => return Some(I(|n| n >= 16)),
        ("a", "reward.fns[4].budget") => return Some(I(at_least_one)),
        ("a", "reward.fns[1].max_expr_len") => return Some(I(at_least_one)),
        ("a", "reward.fns[6].timeout_s" | "reward.fns[6].startup_timeout_s") => return Some(F(seconds)),
        ("a", "reward.fns[6].backoff_s") => return Some(F(|x| (0.0..=86_400.0).contains(&x))),
        ("a", "reward.fns[6].concurrency") => return Some(I(|n| (1..=1024).contains(&n))),
        ("a", "reward.fns[6].max_restarts") => return Some(I(|n| (0..=1000).contains(&n))),
        _ => {}
    }
    if key.starts_with("reward.fns[") {
        // weight, correct, incorrect, no_answer, matched, unmatched, factor, r_max: any finite number.
        return Some(F(finite));
    }
    Some(match key {
        "run.seed" | "data.seed" | "optim.warmup_steps" | "checkpoint.save_every" | "checkpoint.keep_every" | "metrics.text_samples" | "metrics.report_every" => {
            I(any_u64)
        }
        "run.threads" | "rollout.threads_per_worker" => I(|n| (0..=4096).contains(&n)),
        "optim.lr" | "optim.eps" => F(positive),
        "optim.beta1" | "optim.beta2" => F(unit_open_top),
        "optim.weight_decay" | "optim.grad_clip" => F(non_negative),
        "optim.min_lr_ratio" => F(unit_closed),
        // Rows per step 2·G must split into mini-batches of 4 (micro 2); D³S keeps 4 of G.
        "rollout.group_size" => I(|n| (4..=65_536).contains(&n) && n % 2 == 0),
        "rollout.max_new_tokens" => I(|n| (1..=1 << 24).contains(&n)),
        "rollout.temperature" => F(positive),
        "rollout.top_k" => I(any_u64),
        "rollout.top_p" => F(unit_open_bottom),
        "rollout.min_p" | "rollout.compact_fraction" => F(unit_closed),
        "rollout.workers" => I(|n| (1..=1024).contains(&n)),
        "rollout.stop_token_ids[0]" => I(any_u64),
        "trainer.total_steps" => I(|n| (1..=1_000_000_000).contains(&n)),
        // 4·B rows ≤ 2^20.
        "trainer.prompts_per_step" => I(|n| (1..=1 << 18).contains(&n)),
        // 8 rows, micro-batches of 2: mini 0 (= all 8), 2, 4 or 8.
        "trainer.mini_batch_rows" => I(|n| [0, 2, 4, 8].contains(&n)),
        // Mini-batches of 4: micro 0 (= 4), 1, 2, 4.
        "trainer.micro_batch_rows" => I(|n| [0, 1, 2, 4].contains(&n)),
        "trainer.ppo_epochs" => I(|n| (1..=1000).contains(&n)),
        "trainer.max_staleness" => I(|n| n == 0 || n == 1),
        "trainer.max_nonfinite_in_a_row" => I(|n| (1..=1 << 20).contains(&n)),
        "trainer.logit_chunk_positions" => I(|n| (1..=1 << 30).contains(&n)),
        "checkpoint.keep_last" => I(|n| (1..=1 << 20).contains(&n)),
        "data.max_samples" => I(at_least_one),
        "rollout.device_sync_steps" => I(at_least_one),
        "data.synthetic.size" => I(|n| (1..=10_000_000).contains(&n)),
        "reward.max_failure_fraction" => F(unit_closed),
        "reward.failure_window" => I(|n| (1..=1 << 20).contains(&n)),
        "algorithm.adv_eps" => F(non_negative),
        // G = 4; a single row has no variance to maximise.
        "algorithm.d3s.samples_init" | "algorithm.d3s.samples_final" => I(|n| (2..=4).contains(&n)),
        "algorithm.d3s.token_keep_init" | "algorithm.d3s.token_keep_final" => F(unit_open_bottom),
        "algorithm.dapo.filter_groups.max_num_gen_batches" => I(|n| (1..=u32::MAX as i64).contains(&n)),
        "algorithm.dapo.filter_groups.gen_batch_factor" => F(|x| x.is_finite() && x >= 1.0),
        // TIS: a ratio cap of at least 1.
        "algorithm.rollout_correction.threshold" => F(|x| x.is_finite() && x >= 1.0),
        // max_len 64: 1 <= cache_len < max_len.
        "algorithm.dapo.overlong.cache_len" => I(|n| (1..64).contains(&n)),
        "algorithm.dapo.overlong.max_len" => I(|n| n > 16),
        "algorithm.dapo.overlong.penalty_factor" => F(non_negative),
        "algorithm.hapo.quantile" => F(unit_closed),
        "algorithm.hapo.tau" => F(unit_open_top),
        "algorithm.hapo.alpha" => F(non_negative),
        // beta > 1 would flip the sign of low-entropy tokens' advantages.
        "algorithm.hapo.beta" => F(unit_closed),
        // inf: never fall back.
        "algorithm.hapo.fallback_threshold" => F(|x| x > 0.0),
        // budget_min 4 <= budget_init 32.
        "algorithm.rmt.budget_init" => I(|n| n >= 4),
        "algorithm.rmt.budget_min" => I(|n| (1..=32).contains(&n)),
        "algorithm.rmt.budget_decay" => F(unit_open_bottom),
        // 0 < start (0.3) < end (0.7) < 1.
        "algorithm.rmt.curriculum_start" => F(|x| x > 0.0 && x < 0.7),
        "algorithm.rmt.curriculum_end" => F(|x| x > 0.3 && x < 1.0),
        "algorithm.rmt.ntp_weight" => F(non_negative),
        "algorithm.rmt.rollout_cap" => F(non_negative),
        "algorithm.rmt.answer_tokens" => I(any_u64),
        // 1 <= min_prefix (4) <= max_prefix (256); max_doc (512) > min_prefix.
        "algorithm.rmt.min_prefix_tokens" => I(|n| (1..=256).contains(&n)),
        "algorithm.rmt.max_prefix_tokens" => I(|n| n >= 4),
        "algorithm.rmt.max_doc_tokens" => I(|n| n > 4),
        // Each tier list must stay a distribution: only its base value fits.
        "algorithm.rmt.tiers_start[0]" => F(|x| x == 0.6),
        "algorithm.rmt.tiers_start[1]" | "algorithm.rmt.tiers_end[1]" => F(|x| x == 0.3),
        "algorithm.rmt.tiers_start[2]" | "algorithm.rmt.tiers_end[0]" => F(|x| x == 0.1),
        "algorithm.rmt.tiers_end[2]" => F(|x| x == 0.6),
        "loss.clip_low" => F(unit_open_top),
        "loss.clip_high" | "loss.kl_coef" => F(non_negative),
        // inf switches the dual clip off.
        "loss.dual_clip" => F(|x| x == f64::INFINITY || (x.is_finite() && x > 1.0)),
        "loss.norm_len" => I(at_least_one),
        _ => return None,
    })
}

const INTS: [i64; 21] = [
    -1, 0, 1, 2, 3, 4, 5, 6, 8, 16, 17, 63, 64, 1000, 65_536, 65_537, 1 << 20, (1 << 20) + 1, 1 << 30, 4_294_967_296, i64::MAX,
];
const FLOATS: [f64; 22] = [
    f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -1.0, -0.0, 0.0, 1e-300, 1e-6, 0.2, 0.3, 0.5, 0.6, 0.7, 0.99, 1.0, 1.5, 2.0, 3.0,
    86_400.0, 86_401.0, 1e300, f64::MAX,
];

/// The leaf name a rejection must mention: `reward.fns[3].cache_len` -> `cache_len`.
fn leaf(key: &str) -> &str {
    let last = key.rsplit('.').next().unwrap_or(key);
    last.split('[').next().unwrap_or(last)
}

/// Whether an error message names `key`: its leaf name, or for a cross-key constraint reported
/// at the other key, the words it uses for this one (D³S: "the group size G = 2").
fn names(msg: &str, key: &str) -> bool {
    msg.contains(leaf(key)) || (key == "rollout.group_size" && msg.contains("group size G"))
}

#[test]
fn every_numeric_key_accepts_exactly_its_range_and_names_itself_otherwise() {
    let mut unknown = Vec::new();
    let mut failures = Vec::new();
    let mut cases = 0;
    for (base, text) in BASES {
        let resolved = Recipe::from_toml(text, Path::new("base.toml"), &[]).unwrap_or_else(|e| panic!("base {base}: {e}")).to_toml();
        let root: toml::Value = toml::from_str(&resolved).expect("resolved recipe parses");
        let mut found = Vec::new();
        leaves("", &mut Vec::new(), &root, &mut found);
        for (key, path, orig) in found {
            let Some(r) = range(base, &key) else {
                unknown.push(format!("{base}:{key}"));
                continue;
            };
            let mut values: Vec<toml::Value> = vec![orig.clone()];
            values.extend(INTS.iter().map(|&n| toml::Value::Integer(n)));
            values.extend(FLOATS.iter().map(|&x| toml::Value::Float(x)));
            for v in values {
                let expect = match (&r, &v) {
                    (Range::F(p), toml::Value::Float(x)) => p(*x),
                    (Range::F(p), toml::Value::Integer(n)) => p(*n as f64),
                    (Range::I(p), toml::Value::Integer(n)) => p(*n),
                    (Range::I(_), _) => false,
                    (Range::F(_), _) => unreachable!("numbers only"),
                };
                let mut doc = root.clone();
                set(&mut doc, &path, v.clone());
                let text = toml::to_string(&doc).expect("serialises");
                cases += 1;
                match (expect, Recipe::from_toml(&text, Path::new("case.toml"), &[])) {
                    (true, Ok(_)) => {}
                    (false, Err(e)) if names(&e.to_string(), &key) => {}
                    (true, Err(e)) => failures.push(format!("{base}:{key} = {v}: rejected but in range: {e}")),
                    (false, Ok(_)) => failures.push(format!("{base}:{key} = {v}: accepted but out of range")),
                    (false, Err(e)) => failures.push(format!("{base}:{key} = {v}: rejected without naming `{}`: {e}", leaf(&key))),
                }
            }
        }
    }
    assert!(unknown.is_empty(), "numeric keys without a documented range (add them to `range` and docs/recipes.md): {unknown:?}");
    assert!(failures.is_empty(), "{} of {cases} cases wrong:\n{}", failures.len(), failures.join("\n"));
    assert!(cases > 2000, "only {cases} cases");
}
