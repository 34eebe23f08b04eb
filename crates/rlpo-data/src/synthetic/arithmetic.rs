//! Integer arithmetic: `a op b [op c [op d]]` with `+ - *`, usual precedence (`*` before `+ -`).
//!
//! Each sample draws a digit count `d` (every operand has exactly `d` digits; single-digit operands
//! are 1..=9 so that `* 0` never trivialises a problem) and an operator count `k`; its difficulty
//! is `d + k - 1`, from 1 (`7 + 5`) to 5 (`123 * 456 - 789 + 321`). Values fit in `i64`: at most
//! four 3-digit operands, |value| < 10^12.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{check_range, check_template, key_err, Instance};
use crate::error::Result;
use crate::rng::SplitMix64;

/// An arithmetic operator. Recipes spell them `"+"`, `"-"`, `"*"` (`"x"` and `"×"` are accepted
/// for `*`); prompts always show the ASCII form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Operator {
    /// Addition.
    #[serde(rename = "+")]
    Add,
    /// Subtraction.
    #[serde(rename = "-", alias = "−")]
    Sub,
    /// Multiplication.
    #[serde(rename = "*", alias = "x", alias = "×")]
    Mul,
}

impl Operator {
    /// The symbol shown in prompts.
    pub fn symbol(self) -> &'static str {
        match self {
            Operator::Add => "+",
            Operator::Sub => "-",
            Operator::Mul => "*",
        }
    }
}

/// Default prompt: the wording of the CPU quickstart.
pub const DEFAULT_ARITHMETIC_TEMPLATE: &str = "What is {expression}? Answer with just the number.";

/// `[data.synthetic]` with `task = "arithmetic"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArithmeticConfig {
    /// Number of samples (default 1000).
    pub size: usize,
    /// Generation seed; unset: `[data] seed`.
    pub seed: Option<u64>,
    /// Prompt as one user chat message (default `true`) or as plain text.
    pub chat: bool,
    /// Prompt text; `{expression}` is replaced by the expression, e.g. `7 + 5`.
    pub prompt_template: String,
    /// Fewest digits per operand, 1..=3 (default 1).
    pub min_digits: u32,
    /// Most digits per operand, `min_digits..=3` (default 1).
    pub max_digits: u32,
    /// Fewest operators per expression, 1..=3 (default 1).
    pub min_operators: u32,
    /// Most operators per expression, `min_operators..=3` (default 1).
    pub max_operators: u32,
    /// Operators to draw from, uniformly (default all three).
    pub operators: Vec<Operator>,
    /// Allow negative answers (default `false`: expressions with a negative value are redrawn,
    /// which keeps the single-digit quickstart within what a tiny model can learn quickly).
    pub allow_negative: bool,
}

impl Default for ArithmeticConfig {
    fn default() -> Self {
        Self {
            size: 1000,
            seed: None,
            chat: true,
            prompt_template: DEFAULT_ARITHMETIC_TEMPLATE.into(),
            min_digits: 1,
            max_digits: 1,
            min_operators: 1,
            max_operators: 1,
            operators: vec![Operator::Add, Operator::Sub, Operator::Mul],
            allow_negative: false,
        }
    }
}

/// Redraws allowed before giving up on a non-negative expression. The worst allowed setting
/// (`operators = ["-"]`, three 3-digit subtractions) succeeds with probability > 1 % per draw, so
/// hitting this cap is practically impossible; it only guards against an infinite loop.
const MAX_TRIES: usize = 100_000;

impl ArithmeticConfig {
    pub(crate) fn validate(&self) -> Result<()> {
        check_range("digits", self.min_digits, self.max_digits, 1, 3)?;
        check_range("operators", self.min_operators, self.max_operators, 1, 3)?;
        if self.operators.is_empty() {
            return Err(key_err(
                "operators",
                "must list at least one of \"+\", \"-\", \"*\"",
            ));
        }
        check_template(&self.prompt_template, &["{expression}"])
    }

    pub(crate) fn instance(&self, rng: &mut SplitMix64, index: usize) -> Result<Instance> {
        for _ in 0..MAX_TRIES {
            let digits = rng.range_inclusive(self.min_digits.into(), self.max_digits.into()) as u32;
            let n_ops =
                rng.range_inclusive(self.min_operators.into(), self.max_operators.into()) as usize;
            let (lo, hi) = if digits == 1 {
                (1, 9)
            } else {
                (10u64.pow(digits - 1), 10u64.pow(digits) - 1)
            };
            let operands: Vec<i64> = (0..=n_ops)
                .map(|_| rng.range_inclusive(lo, hi) as i64)
                .collect();
            let ops: Vec<Operator> = (0..n_ops)
                .map(|_| self.operators[rng.below(self.operators.len() as u64) as usize])
                .collect();
            let value = evaluate(&operands, &ops);
            if value < 0 && !self.allow_negative {
                continue;
            }
            let expression = render(&operands, &ops);
            return Ok(Instance {
                fills: vec![("{expression}", expression.clone())],
                answer: value.to_string(),
                difficulty: f64::from(digits) + n_ops as f64 - 1.0,
                metadata: json!({
                    "expression": expression,
                    "digits": digits,
                    "operators": n_ops,
                }),
            });
        }
        Err(key_err(
            "operators",
            format!(
                "no non-negative expression after {MAX_TRIES} draws for sample {index}; \
                     set allow_negative = true or add \"+\" / \"*\""
            ),
        ))
    }
}

/// Value with `*` binding tighter than `+ -`, left to right otherwise.
fn evaluate(operands: &[i64], ops: &[Operator]) -> i64 {
    let mut total = 0i64;
    let mut sign = 1i64;
    let mut term = operands[0];
    for (op, &x) in ops.iter().zip(&operands[1..]) {
        match op {
            Operator::Mul => term *= x,
            Operator::Add | Operator::Sub => {
                total += sign * term;
                sign = if *op == Operator::Add { 1 } else { -1 };
                term = x;
            }
        }
    }
    total + sign * term
}

fn render(operands: &[i64], ops: &[Operator]) -> String {
    let mut s = operands[0].to_string();
    for (op, x) in ops.iter().zip(&operands[1..]) {
        s.push_str(&format!(" {} {x}", op.symbol()));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use Operator::*;

    #[test]
    fn precedence_by_hand() {
        assert_eq!(evaluate(&[7, 5], &[Add]), 12);
        assert_eq!(evaluate(&[2, 3, 4], &[Add, Mul]), 14);
        assert_eq!(evaluate(&[2, 3, 4], &[Mul, Sub]), 2);
        assert_eq!(evaluate(&[9, 2, 3, 4], &[Sub, Mul, Add]), 7);
        assert_eq!(evaluate(&[1, 9], &[Sub]), -8);
        assert_eq!(render(&[9, 2, 3], &[Sub, Mul]), "9 - 2 * 3");
    }
}
