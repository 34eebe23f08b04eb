//! Implementing [`RewardFn`] in Rust and combining it with built-ins in a [`RewardSet`].
//!
//! Run: `cargo run -p rlpo-reward --example custom_reward`
//!
//! The custom reward here is a keyword check: 1 if the response mentions every keyword listed in
//! `metadata.keywords`, else 0. A sample without keywords is an *error* (a data problem), not a 0:
//! a failed reward must never pass for a real value.

use std::collections::BTreeMap;

use rlpo_reward::math::{ExtractMode, MathReward};
use rlpo_reward::{OnError, RewardFn, RewardInput, RewardOutput, RewardSet, RewardStatus};

/// Rewards responses that mention every keyword of the sample.
struct KeywordReward {
    /// Compare case-insensitively.
    ignore_case: bool,
}

impl RewardFn for KeywordReward {
    fn score(&self, batch: &[RewardInput]) -> Vec<RewardOutput> {
        // One output per input, in order: the contract every RewardFn must keep.
        batch
            .iter()
            .map(|s| {
                let Some(words) = s.metadata.get("keywords").and_then(|k| k.as_array()) else {
                    return RewardOutput::error("metadata.keywords is missing");
                };
                let text = if self.ignore_case { s.response.to_lowercase() } else { s.response.clone() };
                let mut found = 0usize;
                for w in words {
                    let Some(w) = w.as_str() else { return RewardOutput::error(format!("keyword {w} is not a string")) };
                    let w = if self.ignore_case { w.to_lowercase() } else { w.to_owned() };
                    found += usize::from(text.contains(&w));
                }
                // Parts are optional; they show up as `keywords/found` in metrics and tables.
                let parts = BTreeMap::from([("found".to_owned(), found as f64)]);
                RewardOutput::with_parts(if found == words.len() { 1.0 } else { 0.0 }, parts)
            })
            .collect()
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut set = RewardSet::new(OnError::Zero);
    set.add("math", 1.0, Box::new(MathReward { mode: ExtractMode::Auto, ..MathReward::default() }))?;
    set.add("keywords", 0.2, Box::new(KeywordReward { ignore_case: true }))?;

    let sample = |response: &str, keywords: serde_json::Value| RewardInput {
        metadata: serde_json::json!({ "keywords": keywords }),
        ..RewardInput::new(response, Some("12"))
    };
    let batch = vec![
        sample("Apples plus pears: \\boxed{12}", serde_json::json!(["apples", "pears"])),
        sample("Apples only: 12", serde_json::json!(["apples", "pears"])),
        sample("\\boxed{13}", serde_json::json!([])),
        RewardInput::new("\\boxed{12}", Some("12")), // no keywords: error, scored 0 under "zero"
    ];
    let scored = set.score_all(&batch)?;
    for (i, o) in scored.outputs.iter().enumerate() {
        let status = match &o.status {
            RewardStatus::Ok => "ok".to_owned(),
            other => other.to_string(),
        };
        println!("sample {i}: total {:.2}  parts {:?}  status {status}", o.value, o.parts);
    }
    println!("metrics: {:?}", set.metrics().scalars());
    Ok(())
}
