//! Which part of a sample's reward says whether the answer is right (`reward.correctness`).
//!
//! The total reward mixes a verifier with bonuses and penalties (format, overlong, length), so
//! "reward > 0" is not correctness: a wrong answer with a format bonus scores 0.1. The DAPO
//! filter's `acc` and the `reward/pass_rate` metric read the verifier's own part instead:
//!
//! | correctness part | a sample is right when |
//! | --- | --- |
//! | a `math`, `countdown` or `match` function | its value equals the function's `correct` |
//! | a `format` function | its value equals `matched` |
//! | an `external` function, or `name/part` (a part a plugin reports) | the value is > 0 |
//!
//! Default: the first `math` / `countdown` / `match` / `external` function, else the first
//! `format` function, skipping any that gives right and wrong answers the same value; a recipe
//! with only shaping functions (`overlong`, `length`) has none.

use crate::config::{FnConfig, RewardConfig};
use crate::error::{RewardError, Result};
use crate::types::RewardOutput;

const KEY: &str = "reward.correctness";

/// How a part's value becomes right / wrong.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Rule {
    /// Right when the value equals the function's "correct" value.
    Equals(f64),
    /// Right when the value is > 0.
    Positive,
}

/// The correctness part of a recipe and how to read it.
#[derive(Debug, Clone, PartialEq)]
pub struct Correctness {
    part: String,
    rule: Rule,
}

fn equals(name: &str, right: f64, others: &[f64]) -> Result<Rule> {
    if others.contains(&right) {
        return Err(RewardError::config(
            KEY,
            format!("{name:?} gives the same value ({right}) to right and wrong answers, so it cannot say which is right"),
        ));
    }
    Ok(Rule::Equals(right))
}

fn rule_of(fc: &FnConfig, name: &str) -> Result<Option<Rule>> {
    Ok(Some(match fc {
        FnConfig::Math(c) => equals(name, c.correct, &[c.incorrect, c.no_answer.unwrap_or(c.incorrect)])?,
        FnConfig::Countdown(c) => equals(name, c.correct, &[c.incorrect, c.no_answer.unwrap_or(c.incorrect)])?,
        FnConfig::Match(c) => equals(name, c.correct, &[c.incorrect])?,
        FnConfig::Format(c) => equals(name, c.matched, &[c.unmatched])?,
        FnConfig::External(_) => Rule::Positive,
        FnConfig::Overlong(_) | FnConfig::Length(_) => return Ok(None),
    }))
}

impl Correctness {
    /// The correctness part of `cfg` (named by `reward.correctness`, or the default), `None`
    /// when the recipe has no verifier. Errors name `reward.correctness`.
    pub fn from_config(cfg: &RewardConfig) -> Result<Option<Self>> {
        let by_name = |n: &str| cfg.fns.iter().find(|f| f.name_and_weight().0 == n);
        if let Some(part) = &cfg.correctness {
            let (fn_name, sub) = match part.split_once('/') {
                Some((f, p)) => (f, Some(p)),
                None => (part.as_str(), None),
            };
            let Some(fc) = by_name(fn_name) else {
                let names: Vec<&str> = cfg.fns.iter().map(|f| f.name_and_weight().0).collect();
                return Err(RewardError::config(KEY, format!("{part:?}: no [[reward.fns]] entry is named {fn_name:?} (have {names:?})")));
            };
            let rule = match sub {
                Some("") => return Err(RewardError::config(KEY, format!("{part:?}: empty part name after '/'"))),
                Some(_) => Rule::Positive,
                None => rule_of(fc, fn_name)?.ok_or_else(|| {
                    RewardError::config(KEY, format!("{part:?} is a `{}` function (reward shaping), not a verifier", fc.kind()))
                })?,
            };
            return Ok(Some(Correctness { part: part.clone(), rule }));
        }
        // Default: verifiers first, then format checks; a function that gives right and wrong
        // answers the same value cannot be the default (naming it explicitly is an error).
        let verifier = |f: &&FnConfig| matches!(f, FnConfig::Math(_) | FnConfig::Countdown(_) | FnConfig::Match(_) | FnConfig::External(_));
        let format = |f: &&FnConfig| matches!(f, FnConfig::Format(_));
        for fc in cfg.fns.iter().filter(verifier).chain(cfg.fns.iter().filter(format)) {
            let name = fc.name_and_weight().0;
            if let Ok(Some(rule)) = rule_of(fc, name) {
                return Ok(Some(Correctness { part: name.to_string(), rule }));
            }
        }
        Ok(None)
    }

    /// The part read (`math`, `gsm8k_py/correct`, ...).
    pub fn part(&self) -> &str {
        &self.part
    }

    /// 1.0 (right) or 0.0 (wrong) per output. A sample whose reward failed (`on_error = "zero"`)
    /// counts as wrong; a successful sample without the part is an error naming it.
    pub fn flags(&self, outputs: &[RewardOutput]) -> Result<Vec<f64>> {
        outputs
            .iter()
            .enumerate()
            .map(|(i, o)| {
                if !o.is_ok() {
                    return Ok(0.0);
                }
                let v = *o.parts.get(&self.part).ok_or_else(|| {
                    let have: Vec<&String> = o.parts.keys().collect();
                    RewardError::config(KEY, format!("sample {i} has no part {:?} (its parts: {have:?})", self.part))
                })?;
                let right = match self.rule {
                    Rule::Equals(c) => v == c,
                    Rule::Positive => v > 0.0,
                };
                Ok(if right { 1.0 } else { 0.0 })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{build, parse_reward_config, RewardInput};
    use std::path::Path;

    fn cfg(text: &str) -> RewardConfig {
        parse_reward_config(text, Path::new("recipe.toml")).unwrap()
    }

    /// Math + format bonus: a wrong answer with the right format scores 0.1 > 0, yet is wrong.
    #[test]
    fn math_with_a_format_bonus() {
        let c = cfg("[reward]\n[[reward.fns]]\nkind = \"format\"\nweight = 0.1\n[[reward.fns]]\nkind = \"math\"\n");
        let corr = Correctness::from_config(&c).unwrap().unwrap();
        assert_eq!(corr.part(), "math", "the verifier, not the first function");
        let set = build(&c).unwrap();
        let inputs = [
            RewardInput::new("<think>2+2</think> \\boxed{4}", Some("4")),
            RewardInput::new("<think>2+2</think> \\boxed{5}", Some("4")),
        ];
        let scored = set.score_all(&inputs).unwrap();
        assert!(scored.values().iter().all(|&v| v > 0.0), "{:?}", scored.values());
        assert_eq!(corr.flags(&scored.outputs).unwrap(), vec![1.0, 0.0]);
    }

    #[test]
    fn named_parts_defaults_and_errors() {
        let two_formats = "[reward]\n[[reward.fns]]\nkind = \"format\"\nname = \"a\"\n[[reward.fns]]\nkind = \"format\"\nname = \"b\"\nmatched = 2.0\n";
        assert_eq!(Correctness::from_config(&cfg(two_formats)).unwrap().unwrap().part(), "a");
        let named = two_formats.replace("[reward]\n", "[reward]\ncorrectness = \"b\"\n");
        let corr = Correctness::from_config(&cfg(&named)).unwrap().unwrap();
        let out = |v: f64| RewardOutput::with_parts(v, [("b".to_string(), v)].into());
        assert_eq!(corr.flags(&[out(2.0), out(0.0)]).unwrap(), vec![1.0, 0.0]);
        // A part a plugin reports: right when > 0.
        let plugin = "[reward]\ncorrectness = \"p/correct\"\n[[reward.fns]]\nkind = \"external\"\nname = \"p\"\ncommand = [\"x\"]\n";
        let corr = Correctness::from_config(&cfg(plugin)).unwrap().unwrap();
        let o = RewardOutput::with_parts(0.3, [("p".to_string(), 0.3), ("p/correct".to_string(), 1.0)].into());
        assert_eq!(corr.flags(&[o, RewardOutput::error("boom")]).unwrap(), vec![1.0, 0.0]);
        let missing = corr.flags(&[RewardOutput::with_parts(1.0, Default::default())]).unwrap_err().to_string();
        assert!(missing.contains("reward.correctness") && missing.contains("p/correct"), "{missing}");
        // Shaping only: no correctness. Naming a shaping function or a missing one: an error.
        let shaping = "[reward]\n[[reward.fns]]\nkind = \"overlong\"\ncache_len = 4\n";
        assert!(Correctness::from_config(&cfg(shaping)).unwrap().is_none());
        let e = Correctness::from_config(&cfg(&shaping.replace("[reward]\n", "[reward]\ncorrectness = \"overlong\"\n"))).unwrap_err();
        assert!(e.to_string().contains("not a verifier"), "{e}");
        let e = Correctness::from_config(&cfg(&shaping.replace("[reward]\n", "[reward]\ncorrectness = \"nope\"\n"))).unwrap_err();
        assert!(e.to_string().contains("reward.correctness") && e.to_string().contains("nope"), "{e}");
        let same = "[reward]\n[[reward.fns]]\nkind = \"format\"\nmatched = 1.0\nunmatched = 1.0\n";
        assert!(Correctness::from_config(&cfg(same)).unwrap().is_none(), "a constant function is no default");
        let named = same.replace("[reward]\n", "[reward]\ncorrectness = \"format\"\n");
        assert!(Correctness::from_config(&cfg(&named)).unwrap_err().to_string().contains("cannot say"));
    }
}
