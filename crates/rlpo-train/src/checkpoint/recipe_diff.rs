//! Which recipe changes a resume accepts, and what a changed run length does.
//!
//! Everything that shapes training must match the checkpoint's `recipe.resolved.toml`; only the
//! run length, logging, checkpoint cadence and thread count may change. `trainer.total_steps` is
//! the horizon of every length-dependent schedule (the cosine learning rate, D³S progress
//! `step / total_steps`, RMT's budget decay and curriculum): after a resume with a new value they
//! all follow the new length from the resumed step on, together. [`length_change_note`] says
//! what that changes at the resumed step, so a jump in the schedules is announced, not silent.

use crate::optim::learning_rate;
use crate::recipe::Recipe;
use std::collections::BTreeMap;

/// Keys whose change is safe when resuming: run length, logging and checkpoint cadence.
pub const SAFE_TO_CHANGE: &[&str] = &["trainer.total_steps", "metrics.", "eval.", "checkpoint.save_every", "checkpoint.keep_last", "checkpoint.keep_every", "run.threads"];

fn flatten(prefix: &str, v: &toml::Value, out: &mut BTreeMap<String, String>) {
    match v {
        toml::Value::Table(t) => {
            for (k, x) in t {
                flatten(&if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") }, x, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

/// Keys that differ between the checkpoint's recipe and `now`, other than the safe ones.
pub fn recipe_differences(saved: &str, now: &str) -> Vec<String> {
    let parse = |s: &str| s.parse::<toml::Table>().map(toml::Value::Table).unwrap_or(toml::Value::Table(Default::default()));
    let (mut a, mut b) = (BTreeMap::new(), BTreeMap::new());
    flatten("", &parse(saved), &mut a);
    flatten("", &parse(now), &mut b);
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .filter(|k| !SAFE_TO_CHANGE.iter().any(|s| if s.ends_with('.') { k.starts_with(s) } else { k.as_str() == *s }))
        .map(|k| format!("{k}: {} -> {}", a.get(k).map_or("(unset)", String::as_str), b.get(k).map_or("(unset)", String::as_str)))
        .collect()
}

/// `trainer.total_steps` of a saved recipe, if it parses.
pub fn saved_total_steps(saved: &str) -> Option<u64> {
    let t = saved.parse::<toml::Table>().ok()?;
    t.get("trainer")?.get("total_steps")?.as_integer().map(|v| v as u64)
}

/// When `trainer.total_steps` changed from `old` to `now.trainer.total_steps` for a resume at
/// `step` (with `opt_step` optimizer steps taken): a message naming each schedule whose value at
/// the next step changes, old -> new; `None` when the length did not change.
pub fn length_change_note(now: &Recipe, old: u64, step: u64, opt_step: u64) -> Option<String> {
    let new = now.trainer.total_steps;
    if old == new {
        return None;
    }
    let per = now.optimizer_steps_per_step() as u64;
    let mut changes = Vec::new();
    let (lr_old, lr_new) = (learning_rate(&now.optim, opt_step, old * per), learning_rate(&now.optim, opt_step, new * per));
    if lr_old != lr_new {
        changes.push(format!("learning rate {lr_old:.3e} -> {lr_new:.3e}"));
    }
    let a = &now.algorithm;
    let progress = |total: u64| (step as f64 / total.max(1) as f64).min(1.0);
    if a.d3s.is_some() {
        changes.push(format!("D³S progress {:.3} -> {:.3}", progress(old), progress(new)));
    }
    if let Some(rmt) = &a.rmt {
        let (b_old, b_new) = (rlpo_algo::rmt::token_budget(step, old, rmt), rlpo_algo::rmt::token_budget(step, new, rmt));
        changes.push(format!("RMT budget {b_old} -> {b_new} tokens (its curriculum follows the new length too)"));
    }
    let what = if changes.is_empty() {
        "no schedule of this recipe depends on it".to_string()
    } else {
        format!("the schedules follow the new length from here on: {}", changes.join(", "))
    };
    Some(format!("trainer.total_steps changed from {old} to {new} since the checkpoint (step {step}): {what}"))
}
