//! The `[reward]` section end to end: parsing (unknown keys rejected), building (errors name the
//! key), weighted combination with separate parts, the three failure policies (with real plugin
//! processes), counters. Expected totals are worked out by hand in the comments.

use std::path::Path;

use rlpo_reward::{
    build, parse_reward_config, OnError, RewardError, RewardFn, RewardInput, RewardOutput, RewardSet, RewardStatus,
};

fn plugin(name: &str) -> String {
    format!("{}/tests/plugins/{name}.py", env!("CARGO_MANIFEST_DIR"))
}

fn cfg(toml: &str) -> rlpo_reward::RewardConfig {
    parse_reward_config(toml, Path::new("recipe.toml")).expect("valid [reward]")
}

fn cfg_err(toml: &str) -> String {
    parse_reward_config(toml, Path::new("recipe.toml")).expect_err("invalid [reward]").to_string()
}

fn build_err(toml: &str) -> String {
    build(&cfg(toml)).expect_err("build fails").to_string()
}

fn input(response: &str, gt: &str, len: usize) -> RewardInput {
    RewardInput { response_len: len, ..RewardInput::new(response, Some(gt)) }
}

#[test]
fn weighted_parts_from_a_full_recipe() {
    let recipe = r#"
        [model]
        path = "ignored"
        [algo]
        whatever = { nested = true }

        [reward]
        [[reward.fns]]
        kind = "math"
        incorrect = -1.0
        [[reward.fns]]
        kind = "format"
        weight = 0.5
        [[reward.fns]]
        kind = "overlong"
        max_len = 10
        cache_len = 4
    "#;
    let set = build(&cfg(recipe)).expect("builds");
    assert_eq!(set.on_error(), OnError::Abort);
    assert_eq!(set.fns(), [("math", 1.0), ("format", 0.5), ("overlong", 1.0)]);
    let batch = [
        input(r"<think>r</think> \boxed{4}", "4", 8), // 1·1 + 0.5·1 + 1·(−0.5) = 1.0
        input(r"\boxed{5}", "4", 5),                  // 1·(−1) + 0.5·0 + 0 = −1.0
        input("<think>r</think> 4", "4", 11),         // 1 + 0.5 − 1 = 0.5
    ];
    let scored = set.score_all(&batch).expect("no failures");
    assert_eq!(scored.values(), [1.0, -1.0, 0.5]);
    let p = &scored.outputs[0].parts;
    assert_eq!((p["math"], p["format"], p["overlong"]), (1.0, 1.0, -0.5));
    assert_eq!(scored.outputs[1].parts["math"], -1.0);
    let means = scored.part_means();
    assert_eq!(means["math"], 1.0 / 3.0);
    assert_eq!(means["overlong"], -0.5);
    assert_eq!(set.metrics().samples, 3);
    assert_eq!(scored.groups_to_drop(3).expect("G divides"), Vec::<usize>::new());
}

#[test]
fn dapo_and_rmt_worked_examples_through_the_set() {
    // algorithms.md §2.6 item 1: correct answer of length 8 with L_max 10, L_cache 4 → 1 − 0.5.
    let dapo = build(&cfg(
        "[reward]\n[[reward.fns]]\nkind = \"math\"\nincorrect = -1.0\n\
         [[reward.fns]]\nkind = \"overlong\"\nmax_len = 10\ncache_len = 4\n",
    ))
    .expect("builds");
    assert_eq!(dapo.score_all(&[input(r"\boxed{3}", "3", 8)]).expect("ok").values(), [0.5]);
    // §5.6 item 2 with w = 0.5: (1 − w)·match + w·r_len, B = 100.
    let rmt = build(&cfg(
        "[reward]\n[[reward.fns]]\nkind = \"match\"\nweight = 0.5\n\
         [[reward.fns]]\nkind = \"length\"\nweight = 0.5\nbudget = 100\n",
    ))
    .expect("builds");
    let batch = [
        input("<think>t</think> cat", "cat", 100),
        input("<think>t</think> cat", "cat", 150),
        input("<think>t</think> dog", "cat", 100),
        input("<think>t</think> cat", "cat", 300),
    ];
    assert_eq!(rmt.score_all(&batch).expect("ok").values(), [1.0, 0.75, 0.5, 0.5]);
}

#[test]
fn unknown_keys_and_kinds_are_rejected() {
    let e = cfg_err("[reward]\n[[reward.fns]]\nkind = \"math\"\nwieght = 2.0\n");
    assert!(e.contains("wieght"), "{e}");
    let e = cfg_err("[reward]\n[[reward.fns]]\nkind = \"maths\"\n");
    assert!(e.contains("maths"), "{e}");
    let e = cfg_err("[reward]\non_eror = \"zero\"\n[[reward.fns]]\nkind = \"math\"\n");
    assert!(e.contains("on_eror"), "{e}");
    let e = cfg_err("[reward]\non_error = \"ignore\"\n[[reward.fns]]\nkind = \"math\"\n");
    assert!(e.contains("ignore"), "{e}");
    let e = cfg_err("[reward]\n[[reward.fns]]\nkind = \"overlong\"\n");
    assert!(e.contains("cache_len"), "{e}");
    let e = cfg_err("[reward]\n[[reward.fns]]\nkind = \"math\"\nextract = \"first_number\"\n");
    assert!(e.contains("first_number"), "{e}");
    let e = cfg_err("[model]\npath = 1\n");
    assert!(e.contains("no [reward] section"), "{e}");
    let e = cfg_err("[reward\n");
    assert!(e.starts_with("recipe recipe.toml"), "{e}");
    // Integers are accepted where floats are expected.
    assert_eq!(cfg("[reward]\n[[reward.fns]]\nkind = \"math\"\nweight = 2\n").fns.len(), 1);
}

#[test]
fn build_errors_name_the_key() {
    let cases = [
        ("[reward]\nfns = []\n", "`reward.fns`"),
        ("[reward]\n[[reward.fns]]\nkind = \"math\"\n[[reward.fns]]\nkind = \"overlong\"\ncache_len = 0\n", "`reward.fns[1].cache_len`"),
        ("[reward]\n[[reward.fns]]\nkind = \"overlong\"\ncache_len = 8\nmax_len = 4\n", "`reward.fns[0].cache_len`"),
        ("[reward]\n[[reward.fns]]\nkind = \"math\"\n[[reward.fns]]\nkind = \"math\"\n", "`reward.fns[1].name`"),
        ("[reward]\n[[reward.fns]]\nkind = \"format\"\npattern = \"(\"\n", "`reward.fns[0].pattern`"),
        ("[reward]\n[[reward.fns]]\nkind = \"length\"\nbudget = 0\n", "`reward.fns[0].budget`"),
        ("[reward]\n[[reward.fns]]\nkind = \"math\"\nweight = nan\n", "`reward.fns[0].weight`"),
        ("[reward]\n[[reward.fns]]\nkind = \"math\"\nname = \"a/b\"\n", "`reward.fns[0].name`"),
        ("[reward]\n[[reward.fns]]\nkind = \"external\"\ncommand = []\n", "`reward.fns[0].command`"),
        ("[reward]\n[[reward.fns]]\nkind = \"external\"\ncommand = [\"python3\"]\ntimeout_s = 0\n", "`reward.fns[0].timeout_s`"),
        ("[reward]\n[[reward.fns]]\nkind = \"external\"\ncommand = [\"python3\"]\nconcurrency = 0\n", "`reward.fns[0].concurrency`"),
        ("[reward]\n[[reward.fns]]\nkind = \"countdown\"\nmax_expr_len = 0\n", "`reward.fns[0].max_expr_len`"),
    ];
    for (toml, key) in cases {
        let e = build_err(toml);
        assert!(e.contains(key), "{toml}\n→ {e}");
    }
    let e = build_err("[reward]\n[[reward.fns]]\nkind = \"external\"\nname = \"judge\"\ncommand = [\"/no/such/plugin\"]\n");
    assert!(e.contains("`judge`") && e.contains("/no/such/plugin"), "{e}");
}

/// A math entry plus a plugin that reports an error for response "error" (sample 2), under `policy`.
fn failing_set(policy: &str) -> RewardSet {
    let toml = format!(
        "[reward]\non_error = \"{policy}\"\n[[reward.fns]]\nkind = \"math\"\n\
         [[reward.fns]]\nkind = \"external\"\nname = \"judge\"\ncommand = [\"python3\", \"{}\"]\ntimeout_s = 10\n",
        plugin("good")
    );
    build(&cfg(&toml)).expect("builds")
}

fn four_samples() -> Vec<RewardInput> {
    (0..4)
        .map(|k| {
            let mut s = input(if k == 2 { "error" } else { r"\boxed{1}" }, "1", 1);
            s.metadata = serde_json::json!({ "k": k });
            s
        })
        .collect()
}

#[test]
fn abort_names_the_sample_and_the_cause() {
    let set = failing_set("abort");
    let err = set.score_all(&four_samples()).expect_err("abort");
    match &err {
        RewardError::Aborted { index, fn_name, cause } => {
            assert_eq!((*index, fn_name.as_str()), (2, "judge"));
            assert!(cause.contains("cannot score this one"), "{cause}");
        }
        other => panic!("wrong error {other:?}"),
    }
    assert!(err.to_string().contains("sample 2"), "{err}");
    assert_eq!(set.metrics().errors, 1);
}

#[test]
fn zero_keeps_the_failed_status_and_counts_it() {
    let set = failing_set("zero");
    let scored = set.score_all(&four_samples()).expect("zero policy continues");
    // Totals: math 1 + judge k for ok samples; the failed one is 0.
    assert_eq!(scored.values(), [1.0, 2.0, 0.0, 4.0]);
    assert!(matches!(&scored.outputs[2].status, RewardStatus::Error(m) if m.contains("judge")));
    assert_eq!(scored.outputs[2].parts.get("math"), Some(&0.0)); // "error" has no number: math scores 0
    assert_eq!(scored.outputs[2].parts.get("judge"), None);
    assert_eq!(scored.outputs[1].parts.get("judge/k"), Some(&1.0));
    assert_eq!((scored.errors(), scored.timeouts()), (1, 0));
    assert_eq!(scored.groups_to_drop(2).expect("G divides"), Vec::<usize>::new());
    let m = set.metrics();
    assert_eq!((m.samples, m.errors, m.timeouts), (4, 1, 0));
    assert_eq!(m.scalars()[1], ("reward/errors", 1.0));
}

#[test]
fn drop_group_marks_the_whole_group() {
    let set = failing_set("drop_group");
    let scored = set.score_all(&four_samples()).expect("drop_group continues");
    assert!(scored.outputs[2].value.is_nan());
    assert_eq!(scored.groups_to_drop(2).expect("G divides"), [1]);
    assert_eq!(scored.keep_mask(2).expect("G divides"), [true, true, false, false]);
    assert_eq!(scored.groups_to_drop(4).expect("G divides"), [0]);
    assert!(scored.groups_to_drop(3).is_err());
}

#[test]
fn timeout_under_zero_is_counted_as_timeout() {
    let toml = format!(
        "[reward]\non_error = \"zero\"\n[[reward.fns]]\nkind = \"external\"\nname = \"slow\"\n\
         command = [\"python3\", \"{}\"]\ntimeout_s = 1\nconcurrency = 1\n",
        plugin("hang")
    );
    let set = build(&cfg(&toml)).expect("builds");
    let mut batch = four_samples();
    batch[1].response = "hang".into();
    let scored = set.score_all(&batch).expect("zero policy continues");
    assert_eq!(scored.outputs[1].status, RewardStatus::Timeout);
    assert_eq!(scored.values(), [0.0, 0.0, 2.0, 3.0]);
    let m = set.metrics();
    assert_eq!((m.timeouts, m.errors, m.restarts), (1, 0, 1));
}

struct Panics;
impl RewardFn for Panics {
    fn score(&self, _: &[RewardInput]) -> Vec<RewardOutput> {
        panic!("bug in a custom reward")
    }
}

struct WrongCount;
impl RewardFn for WrongCount {
    fn score(&self, _: &[RewardInput]) -> Vec<RewardOutput> {
        vec![RewardOutput::ok(1.0)]
    }
}

#[test]
fn custom_fns_that_break_the_contract_are_caught() {
    let mut set = RewardSet::new(OnError::Zero);
    set.add("panics", 1.0, Box::new(Panics)).expect("add");
    let scored = set.score_all(&[input("x", "1", 1), input("y", "1", 1)]).expect("zero policy");
    assert!(scored.outputs.iter().all(|o| matches!(&o.status, RewardStatus::Error(m) if m.contains("bug in a custom reward"))));
    assert!(set.log().drain().iter().any(|l| l.contains("panicked")));

    let mut set = RewardSet::new(OnError::Zero);
    set.add("short", 1.0, Box::new(WrongCount)).expect("add");
    let err = set.score_all(&[input("x", "1", 1), input("y", "1", 1)]).expect_err("wrong count");
    assert!(matches!(err, RewardError::OutputCount { expected: 2, got: 1, .. }), "{err}");
    assert!(set.add("short", 1.0, Box::new(WrongCount)).is_err(), "duplicate name");
    assert!(set.add("w", f64::INFINITY, Box::new(WrongCount)).is_err(), "infinite weight");
}

/// Fails every sample with a fixed status.
struct Fails(RewardStatus);
impl RewardFn for Fails {
    fn score(&self, batch: &[RewardInput]) -> Vec<RewardOutput> {
        batch.iter().map(|_| RewardOutput { value: f64::NAN, parts: Default::default(), status: self.0.clone(), answers: Default::default() }).collect()
    }
}

#[test]
fn combined_status_lists_every_failure() {
    let mut set = RewardSet::new(OnError::DropGroup);
    set.add("a", 1.0, Box::new(Fails(RewardStatus::Timeout))).expect("add");
    set.add("b", 1.0, Box::new(Fails(RewardStatus::Error("broken".into())))).expect("add");
    let scored = set.score_all(&[input("x", "1", 1)]).expect("drop_group continues");
    assert_eq!(scored.outputs[0].status, RewardStatus::Error("a: timeout; b: broken".into()));
    assert_eq!((scored.errors(), scored.timeouts()), (1, 1));

    let mut set = RewardSet::new(OnError::Abort);
    set.add("a", 1.0, Box::new(Fails(RewardStatus::Timeout))).expect("add");
    set.add("b", 1.0, Box::new(Fails(RewardStatus::Timeout))).expect("add");
    let scored = set.score_unchecked(&[input("x", "1", 1)]).expect("unchecked never aborts");
    assert_eq!(scored.outputs[0].status, RewardStatus::Timeout);
    let err = set.score_all(&[input("x", "1", 1)]).expect_err("abort");
    assert_eq!(err.to_string().split(" (on_error").next(), Some("reward for sample 0 failed in `a`: timeout"));
    assert_eq!(set.metrics().timeouts, 4);
}
