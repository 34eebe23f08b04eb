//! Cases for the length rewards; expected values come from algorithms.md §2.6 item 1 and §5.6
//! item 2 or are worked out by hand.

use super::*;
use crate::types::RewardStatus;

fn input(len: usize, max_len: usize, metadata: serde_json::Value) -> RewardInput {
    RewardInput { response_len: len, max_len, metadata, ..RewardInput::default() }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

/// (max_len in config, cache_len, factor, |y|, max_len in input, expected R)
type OverlongCase = (Option<usize>, usize, f64, usize, usize, f64);

#[test]
fn overlong_cases() {
    let null = serde_json::Value::Null;
    let cases: &[OverlongCase] = &[
        // §2.6 item 1, L_max = 20480, L_cache = 4096.
        (Some(20480), 4096, 1.0, 16384, 0, 0.0),
        (Some(20480), 4096, 1.0, 17408, 0, -0.25),
        (Some(20480), 4096, 1.0, 18432, 0, -0.5),
        (Some(20480), 4096, 1.0, 20480, 0, -1.0),
        // Small scale, L_max = 10, L_cache = 4.
        (Some(10), 4, 1.0, 5, 0, 0.0),
        (Some(10), 4, 1.0, 6, 0, 0.0),
        (Some(10), 4, 1.0, 7, 0, -0.25),
        (Some(10), 4, 1.0, 8, 0, -0.5),
        (Some(10), 4, 1.0, 9, 0, -0.75),
        (Some(10), 4, 1.0, 10, 0, -1.0),
        (Some(10), 4, 1.0, 11, 0, -1.0),
        (Some(10), 4, 1.0, 1_000_000, 0, -1.0),
        (Some(10), 4, 1.0, 0, 0, 0.0),
        // Limit from the sample when the recipe leaves it out; the recipe wins when both are set.
        (None, 4, 1.0, 8, 10, -0.5),
        (None, 4, 1.0, 6, 10, 0.0),
        (Some(20), 4, 1.0, 8, 10, 0.0),
        (Some(10), 4, 1.0, 8, 20, -0.5),
        // Factor scales the penalty.
        (Some(10), 4, 0.5, 8, 0, -0.25),
        (Some(10), 4, 2.0, 11, 0, -2.0),
        (Some(10), 4, 0.0, 11, 0, 0.0),
        // Buffer equal to the limit: the penalty starts at the first token.
        (Some(4), 4, 1.0, 0, 0, 0.0),
        (Some(4), 4, 1.0, 1, 0, -0.25),
        (Some(4), 4, 1.0, 4, 0, -1.0),
        // Buffer of one token: a cliff at L_max.
        (Some(10), 1, 1.0, 9, 0, 0.0),
        (Some(10), 1, 1.0, 10, 0, -1.0),
        // Non-dyadic fractions.
        (Some(12), 3, 1.0, 10, 0, -1.0 / 3.0),
        (Some(12), 3, 1.0, 11, 0, -2.0 / 3.0),
        (Some(4096), 1024, 1.0, 3073, 0, -1.0 / 1024.0),
        (Some(4096), 1024, 1.0, 3072, 0, 0.0),
        (Some(4096), 1024, 1.0, 4095, 0, -1023.0 / 1024.0),
    ];
    assert!(cases.len() >= 30);
    for &(max_len, cache_len, factor, len, in_max, want) in cases {
        let f = OverlongReward { max_len, cache_len, factor };
        let out = f.score_one(&input(len, in_max, null.clone()));
        assert!(out.is_ok(), "{max_len:?}/{cache_len} len {len}: {out:?}");
        assert!(close(out.value, want), "{max_len:?}/{cache_len}×{factor} len {len}: got {}, want {want}", out.value);
    }
}

#[test]
fn overlong_errors_are_loud() {
    let null = serde_json::Value::Null;
    let no_limit = OverlongReward { max_len: None, cache_len: 4, factor: 1.0 };
    assert!(matches!(no_limit.score_one(&input(3, 0, null.clone())).status, RewardStatus::Error(_)));
    // Buffer larger than the sample's limit.
    assert!(matches!(no_limit.score_one(&input(3, 3, null.clone())).status, RewardStatus::Error(_)));
    let zero = OverlongReward { max_len: Some(10), cache_len: 0, factor: 1.0 };
    assert!(zero.score_one(&input(3, 0, null)).value.is_nan());
}

#[test]
fn triangular_cases() {
    use serde_json::json;
    // (r_max, budget in config, metadata, response_len, expected)
    let cases: Vec<(f64, Option<usize>, serde_json::Value, usize, f64)> = vec![
        // §5.6 item 2, B = 100, r_max = 1.
        (1.0, Some(100), json!(null), 0, 0.0),
        (1.0, Some(100), json!(null), 50, 0.5),
        (1.0, Some(100), json!(null), 100, 1.0),
        (1.0, Some(100), json!(null), 150, 0.5),
        (1.0, Some(100), json!(null), 200, 0.0),
        (1.0, Some(100), json!(null), 250, 0.0),
        (1.0, Some(100), json!(null), 1, 0.01),
        (1.0, Some(100), json!(null), 99, 0.99),
        (1.0, Some(100), json!(null), 101, 0.99),
        (1.0, Some(100), json!(null), 199, 0.01),
        (1.0, Some(100), json!(null), 201, 0.0),
        (1.0, Some(100), json!(null), usize::MAX, 0.0),
        // r_max scales.
        (2.0, Some(100), json!(null), 100, 2.0),
        (0.5, Some(100), json!(null), 150, 0.25),
        (-1.0, Some(100), json!(null), 50, -0.5),
        // Budget 1 (RMT's floor B_min).
        (1.0, Some(1), json!(null), 0, 0.0),
        (1.0, Some(1), json!(null), 1, 1.0),
        (1.0, Some(1), json!(null), 2, 0.0),
        // Odd budget.
        (1.0, Some(3), json!(null), 1, 1.0 / 3.0),
        (1.0, Some(3), json!(null), 4, 2.0 / 3.0),
        (1.0, Some(3), json!(null), 6, 0.0),
        // Per-sample budget from metadata (B_t of the RMT schedule, §5.6 item 1 values).
        (1.0, None, json!({"budget": 800}), 400, 0.5),
        (1.0, None, json!({"budget": 357}), 357, 1.0),
        (1.0, None, json!({"budget": 160}), 240, 0.5),
        (1.0, None, json!({"budget": 160}), 400, 0.0),
        // The recipe budget wins over metadata.
        (1.0, Some(100), json!({"budget": 10}), 50, 0.5),
        // think_len (tokens inside <think>) takes precedence over the whole response length.
        (1.0, Some(100), json!({"think_len": 100}), 500, 1.0),
        (1.0, Some(100), json!({"think_len": 0}), 100, 0.0),
        (1.0, None, json!({"budget": 100, "think_len": 150}), 10, 0.5),
        (1.0, Some(100), json!({"think_len": null}), 50, 0.5),
    ];
    assert!(cases.len() >= 30);
    for (r_max, budget, meta, len, want) in cases {
        let f = TriangularLengthReward { r_max, budget };
        let out = f.score_one(&input(len, 0, meta.clone()));
        assert!(out.is_ok(), "{budget:?} {meta} len {len}: {out:?}");
        assert!(close(out.value, want), "{budget:?} {meta} len {len}: got {}, want {want}", out.value);
    }
}

#[test]
fn triangular_errors_are_loud() {
    use serde_json::json;
    let from_meta = TriangularLengthReward { r_max: 1.0, budget: None };
    for meta in [json!(null), json!({"budget": 0}), json!({"budget": -5}), json!({"budget": "100"}), json!({"budget": 1.5})] {
        let out = from_meta.score_one(&input(10, 0, meta.clone()));
        assert!(matches!(out.status, RewardStatus::Error(_)), "{meta}: {out:?}");
        assert!(out.value.is_nan());
    }
    let fixed = TriangularLengthReward { r_max: 1.0, budget: Some(10) };
    let out = fixed.score_one(&input(10, 0, json!({"think_len": "many"})));
    assert!(matches!(out.status, RewardStatus::Error(_)));
}

#[test]
fn rmt_composite_worked_example() {
    // §5.6 item 2, w = 0.5: (match, ℓ) → (1 − w)·match + w·r_len.
    let f = TriangularLengthReward { r_max: 1.0, budget: Some(100) };
    for (m, len, want) in [(1.0, 100, 1.0), (1.0, 150, 0.75), (0.0, 100, 0.5), (1.0, 300, 0.5)] {
        let r_len = f.score_one(&input(len, 0, serde_json::Value::Null)).value;
        assert!(close(0.5 * m + 0.5 * r_len, want), "match {m}, len {len}");
    }
}
