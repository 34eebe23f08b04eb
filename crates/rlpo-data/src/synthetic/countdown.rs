//! Countdown: combine all given numbers, each exactly once, with `+ - * /` to reach a target
//! (the TinyZero / verl countdown task).
//!
//! Solvable by construction: draw the numbers, then repeatedly merge two random pool entries with a
//! random operator whose result is a positive integer (`a - b` only when `a > b`, `a / b` only when
//! `b` divides `a`) until one value is left; that value is the target and the merge tree is a
//! witness solution. Draws whose target falls outside `[min_target, max_target]` are redrawn.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{check_range, check_template, key_err, Instance};
use crate::error::Result;
use crate::rng::SplitMix64;

/// Default prompt, close to TinyZero's so that its `<answer>` extraction convention carries over.
pub const DEFAULT_COUNTDOWN_TEMPLATE: &str =
    "Using the numbers {numbers}, create an equation that \
equals {target}. You can use +, -, * and / and must use each number exactly once. Give the final \
equation inside <answer> </answer> tags, for example <answer>(1 + 2) * 3</answer>.";

/// `[data.synthetic]` with `task = "countdown"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CountdownConfig {
    /// Number of samples (default 1000).
    pub size: usize,
    /// Generation seed; unset: `[data] seed`.
    pub seed: Option<u64>,
    /// Prompt as one user chat message (default `true`) or as plain text.
    pub chat: bool,
    /// Prompt text; `{numbers}` becomes `[3, 7, 25]` and `{target}` the target.
    pub prompt_template: String,
    /// Fewest numbers per instance, 2..=6 (default 3).
    pub min_numbers: u32,
    /// Most numbers per instance, `min_numbers..=6` (default 4).
    pub max_numbers: u32,
    /// Numbers are drawn uniformly from `1..=max_number` (default 100, at most 10 000).
    pub max_number: u32,
    /// Smallest accepted target (default 1).
    pub min_target: u32,
    /// Largest accepted target (default 100).
    pub max_target: u32,
}

impl Default for CountdownConfig {
    fn default() -> Self {
        Self {
            size: 1000,
            seed: None,
            chat: true,
            prompt_template: DEFAULT_COUNTDOWN_TEMPLATE.into(),
            min_numbers: 3,
            max_numbers: 4,
            max_number: 100,
            min_target: 1,
            max_target: 100,
        }
    }
}

/// Redraws before declaring the target range unreachable for this configuration.
const MAX_TRIES: usize = 100_000;

impl CountdownConfig {
    pub(crate) fn validate(&self) -> Result<()> {
        check_range("numbers", self.min_numbers, self.max_numbers, 2, 6)?;
        if !(1..=10_000).contains(&self.max_number) {
            return Err(key_err(
                "max_number",
                format!("must be in 1..=10000, got {}", self.max_number),
            ));
        }
        check_range("target", self.min_target, self.max_target, 1, u32::MAX)?;
        check_template(&self.prompt_template, &["{numbers}", "{target}"])
    }

    pub(crate) fn instance(&self, rng: &mut SplitMix64, index: usize) -> Result<Instance> {
        for _ in 0..MAX_TRIES {
            let n = rng.range_inclusive(self.min_numbers.into(), self.max_numbers.into()) as usize;
            let numbers: Vec<i64> = (0..n)
                .map(|_| rng.range_inclusive(1, self.max_number.into()) as i64)
                .collect();
            let (target, solution) = build(&numbers, rng);
            if target < i64::from(self.min_target) || target > i64::from(self.max_target) {
                continue;
            }
            let shown = format!(
                "[{}]",
                numbers
                    .iter()
                    .map(i64::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            return Ok(Instance {
                fills: vec![("{numbers}", shown), ("{target}", target.to_string())],
                answer: target.to_string(),
                difficulty: n as f64,
                metadata: json!({ "numbers": numbers, "target": target, "solution": solution }),
            });
        }
        Err(key_err(
            "max_target",
            format!(
                "no instance with a target in {}..={} after {MAX_TRIES} draws for sample \
                     {index}; widen min_target/max_target",
                self.min_target, self.max_target
            ),
        ))
    }
}

/// Merges the numbers into one value by a random expression tree; returns the value and the
/// expression text (outer parentheses stripped).
fn build(numbers: &[i64], rng: &mut SplitMix64) -> (i64, String) {
    let mut pool: Vec<(i64, String)> = numbers.iter().map(|&x| (x, x.to_string())).collect();
    while pool.len() > 1 {
        let i = rng.below(pool.len() as u64) as usize;
        let a = pool.swap_remove(i);
        let j = rng.below(pool.len() as u64) as usize;
        let b = pool.swap_remove(j);
        // Larger operand first so that `-` and `/` can give positive integers.
        let (hi, lo) = if a.0 >= b.0 { (a, b) } else { (b, a) };
        // Checked ops: with 6 numbers up to 10 000 a product can exceed i64; such merges are
        // simply not offered.
        let mut ops: Vec<(char, i64)> = Vec::with_capacity(4);
        if let Some(v) = hi.0.checked_add(lo.0) {
            ops.push(('+', v));
        }
        if let Some(v) = hi.0.checked_mul(lo.0) {
            ops.push(('*', v));
        }
        if hi.0 > lo.0 {
            ops.push(('-', hi.0 - lo.0));
        }
        if hi.0 % lo.0 == 0 {
            ops.push(('/', hi.0 / lo.0));
        }
        // `-` or `/` is always possible when `+` and `*` overflow (hi > lo, or hi == lo divides).
        let (op, value) = ops[rng.below(ops.len() as u64) as usize];
        pool.push((value, format!("({} {op} {})", hi.1, lo.1)));
    }
    let (value, expr) = pool.pop().expect("at least one number");
    let expr = expr
        .strip_prefix('(')
        .and_then(|e| e.strip_suffix(')'))
        .map(str::to_string);
    (value, expr.unwrap_or_else(|| value.to_string()))
}
