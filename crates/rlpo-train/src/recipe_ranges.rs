//! Ranges of the recipe's numeric keys that the owning sections do not check themselves: the
//! trainer's sections (`[run]`, `[optim]`, `[trainer]`, `[checkpoint]`) and upper bounds on
//! sizes in `[rollout]` that would overflow the step arithmetic or ask for absurd allocations.
//! `[algorithm]`, `[loss]`, `[data]` and `[reward]` validate their own values (every error names
//! the key); `tests/recipe_numbers.rs` feeds boundary values (0, -1, NaN, ±inf, huge) to every
//! numeric key of a recipe with all sections on and checks each is accepted exactly when it is
//! in the documented range (docs/recipes.md).
//!
//! Also `run.name`: one plain directory name (the run directory is `<checkpoint.root>/<name>`).

use crate::error::{invalid, Result};
use crate::recipe::Recipe;

/// Largest `run.threads` / `rollout.threads_per_worker`.
pub const MAX_THREADS: usize = 4096;
/// Largest `rollout.workers`.
pub const MAX_WORKERS: usize = 1024;
/// Largest `rollout.group_size`.
pub const MAX_GROUP_SIZE: usize = 65_536;
/// Largest number of rollout rows per step (`prompts_per_step × group_size`).
pub const MAX_ROWS_PER_STEP: usize = 1 << 20;
/// Largest `rollout.max_new_tokens`.
pub const MAX_NEW_TOKENS: usize = 1 << 24;
/// Largest `trainer.total_steps`.
pub const MAX_TOTAL_STEPS: u64 = 1_000_000_000;
/// Largest `trainer.ppo_epochs`.
pub const MAX_PPO_EPOCHS: usize = 1000;
/// Largest `trainer.logit_chunk_positions`.
pub const MAX_LOGIT_CHUNK: i64 = 1 << 30;
/// Largest `trainer.max_nonfinite_in_a_row` and `checkpoint.keep_last`.
pub const MAX_COUNT: u64 = 1 << 20;

fn finite_at_least(key: &str, v: f64, min: f64, strict: bool) -> Result<()> {
    let ok = v.is_finite() && if strict { v > min } else { v >= min };
    if ok {
        Ok(())
    } else {
        Err(invalid(key, format!("must be a finite number {} {min}, got {v}", if strict { ">" } else { ">=" })))
    }
}

fn in_unit(key: &str, v: f64, hi_closed: bool) -> Result<()> {
    if v.is_finite() && v >= 0.0 && (v < 1.0 || (hi_closed && v == 1.0)) {
        Ok(())
    } else {
        Err(invalid(key, format!("must be in [0, 1{}, got {v}", if hi_closed { "]" } else { ")" })))
    }
}

fn at_most<T: PartialOrd + std::fmt::Display>(key: &str, v: T, lo: T, hi: T) -> Result<()> {
    if v >= lo && v <= hi {
        Ok(())
    } else {
        Err(invalid(key, format!("must be in {lo}..={hi}, got {v}")))
    }
}

/// `run.name`: not empty, not `.` or `..`, no path separator or NUL, no surrounding whitespace.
pub fn validate_run_name(name: &str) -> Result<()> {
    let bad = name.is_empty()
        || name == "."
        || name == ".."
        || name.contains(['/', '\\', '\0'])
        || name.trim() != name;
    if bad {
        return Err(invalid(
            "run.name",
            format!("{name:?} must be one plain directory name (no `/`, `\\`, `..`, not empty): the run directory is <checkpoint.root>/<run.name>"),
        ));
    }
    Ok(())
}

/// The checks of this module (see the module docs).
pub fn validate(r: &Recipe) -> Result<()> {
    validate_run_name(&r.run.name)?;
    at_most("run.threads", r.run.threads, 0, MAX_THREADS)?;

    let o = &r.optim;
    finite_at_least("optim.lr", o.lr, 0.0, true)?;
    in_unit("optim.beta1", o.beta1, false)?;
    in_unit("optim.beta2", o.beta2, false)?;
    finite_at_least("optim.eps", o.eps, 0.0, true)?;
    finite_at_least("optim.weight_decay", o.weight_decay, 0.0, false)?;
    finite_at_least("optim.grad_clip", o.grad_clip, 0.0, false)?;
    in_unit("optim.min_lr_ratio", o.min_lr_ratio, true)?;

    let p = &r.rollout;
    at_most("rollout.group_size", p.group_size, 0, MAX_GROUP_SIZE)?;
    at_most("rollout.max_new_tokens", p.max_new_tokens, 0, MAX_NEW_TOKENS)?;
    at_most("rollout.workers", p.workers, 0, MAX_WORKERS)?;
    at_most("rollout.threads_per_worker", p.threads_per_worker, 0, MAX_THREADS)?;
    if let Some((i, id)) = p.stop_token_ids.iter().enumerate().find(|(_, id)| **id < 0) {
        return Err(invalid(&format!("rollout.stop_token_ids[{i}]"), format!("token ids are >= 0, got {id}")));
    }

    let t = &r.trainer;
    at_most("trainer.total_steps", t.total_steps, 1, MAX_TOTAL_STEPS)?;
    at_most("trainer.prompts_per_step", t.prompts_per_step, 1, MAX_ROWS_PER_STEP)?;
    if t.prompts_per_step.saturating_mul(p.group_size) > MAX_ROWS_PER_STEP {
        return Err(invalid(
            "trainer.prompts_per_step",
            format!("{} x rollout.group_size {} is more than {MAX_ROWS_PER_STEP} rows per step", t.prompts_per_step, p.group_size),
        ));
    }
    at_most("trainer.ppo_epochs", t.ppo_epochs, 1, MAX_PPO_EPOCHS)?;
    at_most("trainer.max_nonfinite_in_a_row", u64::from(t.max_nonfinite_in_a_row), 1, MAX_COUNT)?;
    at_most("trainer.logit_chunk_positions", t.logit_chunk_positions, 1, MAX_LOGIT_CHUNK)?;

    at_most("checkpoint.keep_last", r.checkpoint.keep_last as u64, 1, MAX_COUNT)?;
    if let Some(f) = &r.algorithm.dapo.filter_groups {
        // 0 would mean "refill forever": a step whose groups all have equal rewards never ends.
        at_most("algorithm.dapo.filter_groups.max_num_gen_batches", f.max_num_gen_batches, 1, i64::from(u32::MAX))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_names() {
        for ok in ["run", "qwen-0.5b_grpo.v2", "a..b", "日本"] {
            validate_run_name(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in ["", ".", "..", "../x", "a/b", "/abs", "a\\b", " run", "run\n", "a\0b"] {
            let e = validate_run_name(bad).expect_err(bad).to_string();
            assert!(e.contains("run.name"), "{e}");
        }
    }
}
