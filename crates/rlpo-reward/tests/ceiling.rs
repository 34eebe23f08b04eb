//! Failed rewards never pass for numbers, and a run cannot absorb them without limit:
//! - an ok output with a non-finite value or part is a failure of that sample under every policy;
//! - under `zero` / `drop_group` the failure ceiling stops scoring with
//!   [`RewardError::FailureCeiling`] once more than `max_failure_fraction · failure_window` of
//!   the last `failure_window` samples failed, naming the function and quoting its log;
//! - a plugin that gave up stops the run at once, with its traceback in the message (a real
//!   plugin process that passes the start-up handshake and then dies on every request).

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use rlpo_reward::{build, parse_reward_config, OnError, RewardError, RewardFn, RewardInput, RewardOutput, RewardSet, RewardStatus};

/// Fails (status error) the samples whose response is "bad"; otherwise reward 1.
struct FailsBad;

impl RewardFn for FailsBad {
    fn score(&self, batch: &[RewardInput]) -> Vec<RewardOutput> {
        batch.iter().map(|i| if i.response == "bad" { RewardOutput::error("bad sample") } else { RewardOutput::ok(1.0) }).collect()
    }
}

/// Returns "ok" outputs whose value (or part) is not finite for responses "nan", "inf", "part".
struct NonFinite;

impl RewardFn for NonFinite {
    fn score(&self, batch: &[RewardInput]) -> Vec<RewardOutput> {
        batch
            .iter()
            .map(|i| match i.response.as_str() {
                "nan" => RewardOutput::ok(f64::NAN),
                "inf" => RewardOutput::ok(f64::NEG_INFINITY),
                "part" => RewardOutput::with_parts(0.5, [("p".to_owned(), f64::INFINITY)].into()),
                "huge" => RewardOutput::ok(f64::MAX),
                _ => RewardOutput::ok(0.25),
            })
            .collect()
    }
}

fn batch(responses: &[&str]) -> Vec<RewardInput> {
    responses.iter().map(|r| RewardInput::new(*r, Some("x"))).collect()
}

#[test]
fn non_finite_values_are_failures_under_every_policy() {
    let responses = ["fine", "nan", "inf", "part", "fine", "fine"];
    for policy in [OnError::Abort, OnError::Zero, OnError::DropGroup] {
        let mut set = RewardSet::new(policy);
        set.add("nf", 1.0, Box::new(NonFinite)).expect("add");
        let scored = set.score_unchecked(&batch(&responses)).expect("scores");
        for (k, o) in scored.outputs.iter().enumerate() {
            if (1..=3).contains(&k) {
                assert!(matches!(&o.status, RewardStatus::Error(m) if m.contains("non-finite")), "{policy:?} {k}: {o:?}");
                assert!(o.value.is_nan(), "{o:?}");
            } else {
                assert_eq!((o.value, o.is_ok()), (0.25, true), "{o:?}");
            }
        }
        match (policy, set.score_all(&batch(&responses))) {
            (OnError::Abort, Err(RewardError::Aborted { index: 1, fn_name, cause })) => {
                assert_eq!(fn_name, "nf");
                assert!(cause.contains("non-finite value (NaN"), "{cause}");
            }
            (OnError::Zero, Ok(s)) => assert_eq!(s.values(), [0.25, 0.0, 0.0, 0.0, 0.25, 0.25]),
            (OnError::DropGroup, Ok(s)) => assert_eq!(s.groups_to_drop(3).expect("groups"), [0, 1]),
            (p, other) => panic!("{p:?}: {other:?}"),
        }
        assert!(set.log().drain().iter().any(|l| l.starts_with("[nf] sample 1: nf: returned a non-finite value")));
    }
}

#[test]
fn a_weighted_total_that_overflows_is_a_failure() {
    let mut set = RewardSet::new(OnError::Zero);
    set.add("nf", 2.0, Box::new(NonFinite)).expect("add");
    let scored = set.score_all(&batch(&["huge", "fine"])).expect("below the ceiling");
    assert!(matches!(&scored.outputs[0].status, RewardStatus::Error(m) if m.contains("overflowed")), "{:?}", scored.outputs[0]);
    assert_eq!(scored.values(), [0.0, 0.5]);
}

#[test]
fn ceiling_trips_once_more_than_the_fraction_of_the_window_failed() {
    for policy in [OnError::Zero, OnError::DropGroup] {
        let mut set = RewardSet::new(policy);
        set.add("ok", 1.0, Box::new(NonFinite)).expect("add");
        set.add("flaky", 1.0, Box::new(FailsBad)).expect("add");
        set.set_failure_ceiling(0.5, 8);
        set.log().push("[flaky] something went wrong");
        // 4 of 8 failed: exactly the fraction, not more.
        set.score_all(&batch(&["bad", "fine", "bad", "fine"])).expect("2 of 4");
        set.score_all(&batch(&["bad", "fine", "bad", "fine"])).expect("4 of 8");
        // Sliding: "bad, fine" leaves the window as "bad, fine" enters: still 4 of 8.
        set.score_all(&batch(&["bad", "fine"])).expect("4 of 8");
        // "bad, fine" leaves, "bad, bad" enters: 5 of the last 8.
        let err = set.score_all(&batch(&["bad", "bad"])).expect_err("5 of the last 8");
        let RewardError::FailureCeiling { fn_name, what, stderr } = &err else { panic!("{err:?}") };
        assert_eq!(fn_name, "flaky");
        assert!(what.contains("5 of the last 8 samples failed") && what.contains("reward.max_failure_fraction = 0.5"), "{what}");
        assert!(what.contains("latest: error: bad sample"), "{what}");
        assert_eq!(stderr, &["[flaky] something went wrong"]);
        let msg = err.to_string();
        assert!(msg.contains("`flaky`") && msg.contains("\n  [flaky] something went wrong"), "{msg}");
    }
}

#[test]
fn abort_is_not_subject_to_the_ceiling_and_ok_runs_never_trip_it() {
    let mut set = RewardSet::new(OnError::Abort);
    set.add("flaky", 1.0, Box::new(FailsBad)).expect("add");
    set.set_failure_ceiling(0.0, 1);
    assert!(matches!(set.score_all(&batch(&["bad"])), Err(RewardError::Aborted { .. })));
    let mut set = RewardSet::new(OnError::Zero);
    set.add("flaky", 1.0, Box::new(FailsBad)).expect("add");
    set.set_failure_ceiling(0.0, 4);
    for _ in 0..10 {
        set.score_all(&batch(&["fine"; 7])).expect("no failures");
    }
}

/// Gives up after its first batch.
struct GivesUp(AtomicUsize);

impl RewardFn for GivesUp {
    fn score(&self, batch: &[RewardInput]) -> Vec<RewardOutput> {
        self.0.fetch_add(1, Ordering::SeqCst);
        vec![RewardOutput::error("down"); batch.len()]
    }
    fn gave_up(&self) -> Option<String> {
        (self.0.load(Ordering::SeqCst) > 0).then(|| "judge: gave up after 3 restarts".to_owned())
    }
}

#[test]
fn a_function_that_gave_up_stops_the_run_even_below_the_fraction() {
    let mut set = RewardSet::new(OnError::Zero);
    set.add("judge", 1.0, Box::new(GivesUp(AtomicUsize::new(0)))).expect("add");
    set.set_failure_ceiling(1.0, 1000); // the fraction alone would never stop it
    let err = set.score_all(&batch(&["a", "b"])).expect_err("gave up");
    assert!(matches!(&err, RewardError::FailureCeiling { fn_name, what, .. } if fn_name == "judge" && what.contains("gave up after 3 restarts")), "{err}");
}

#[test]
fn real_plugin_that_dies_on_every_request_stops_at_the_ceiling_with_its_traceback() {
    let script = format!("{}/tests/plugins/crash.py", env!("CARGO_MANIFEST_DIR"));
    let toml = format!(
        "[reward]\non_error = \"zero\"\n[[reward.fns]]\nkind = \"external\"\nname = \"judge\"\ncommand = [\"python3\", \"{script}\", \"--die-on-request\"]\nmax_restarts = 1\nbackoff_s = 0.01\n"
    );
    let set = build(&parse_reward_config(&toml, Path::new("r.toml")).expect("parses")).expect("passes the handshake");
    let err = set.score_all(&batch(&["a", "b", "c", "d"])).expect_err("plugin gave up");
    let msg = err.to_string();
    assert!(msg.contains("`judge`") && msg.contains("gave up after 1 consecutive restarts"), "{msg}");
    assert!(msg.contains("[judge] RuntimeError: scoring backend is gone"), "the traceback is quoted: {msg}");
    assert_eq!(set.metrics().errors, 4, "the failures are counted before stopping");
}
