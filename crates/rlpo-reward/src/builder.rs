//! From the `[reward]` recipe section to a ready [`RewardSet`]: validates every value, compiles
//! patterns, starts external plugins. Errors name the recipe key (`reward.fns[2].cache_len`).
//! [`validate`] runs the same checks without starting any plugin process (for `rlpo check`).

use std::time::Duration;

use crate::ceiling::MAX_FAILURE_WINDOW;
use crate::config::{FnConfig, RewardConfig};
use crate::countdown::{CountdownReward, Limits};
use crate::error::{RewardError, Result};
use crate::exact::MatchReward;
use crate::external::{ExternalOptions, ExternalReward, MAX_CONCURRENCY};
use crate::format::{FormatReward, DEFAULT_FORMAT_PATTERN};
use crate::length::{OverlongReward, TriangularLengthReward};
use crate::math::MathReward;
use crate::set::RewardSet;
use crate::types::RewardFn;

/// Builds the reward set of a recipe. External plugins are started here, so a wrong command fails
/// at load time.
pub fn build(cfg: &RewardConfig) -> Result<RewardSet> {
    build_with(cfg, true)
}

/// Every check of [`build`] (values, names, regexes, plugin options) without starting external
/// plugins: their programs are neither run nor looked up, since `rlpo check` may run on another
/// machine than the training. Errors name the recipe key, as [`build`]'s do.
pub fn validate(cfg: &RewardConfig) -> Result<()> {
    build_with(cfg, false).map(|_| ())
}

/// Stands in for an external plugin in [`validate`]; never asked to score.
struct NotStarted;

impl RewardFn for NotStarted {
    fn score(&self, batch: &[crate::types::RewardInput]) -> Vec<crate::types::RewardOutput> {
        batch.iter().map(|_| crate::types::RewardOutput::error("external plugin not started (validation only)")).collect()
    }
}

fn build_with(cfg: &RewardConfig, start_plugins: bool) -> Result<RewardSet> {
    if cfg.fns.is_empty() {
        return Err(RewardError::config("reward.fns", "is empty; add at least one [[reward.fns]] entry"));
    }
    let f = cfg.max_failure_fraction;
    if !(0.0..=1.0).contains(&f) {
        return Err(RewardError::config("reward.max_failure_fraction", format!("must be in [0, 1] (1 = never stop), got {f}")));
    }
    if cfg.failure_window == 0 || cfg.failure_window > MAX_FAILURE_WINDOW {
        return Err(RewardError::config(
            "reward.failure_window",
            format!("must be 1..={MAX_FAILURE_WINDOW} samples, got {}", cfg.failure_window),
        ));
    }
    let mut set = RewardSet::new(cfg.on_error);
    set.set_failure_ceiling(f, cfg.failure_window);
    for (i, fc) in cfg.fns.iter().enumerate() {
        let key = format!("reward.fns[{i}]");
        let (name, weight) = fc.name_and_weight();
        if !weight.is_finite() {
            return Err(RewardError::config(format!("{key}.weight"), format!("must be a finite number, got {weight}")));
        }
        if name.is_empty() || name.contains('/') {
            return Err(RewardError::config(format!("{key}.name"), format!("{name:?} must be non-empty without '/'")));
        }
        if set.fns().iter().any(|(n, _)| *n == name) {
            return Err(RewardError::config(
                format!("{key}.name"),
                format!("{name:?} is already used by another entry; set a distinct `name`"),
            ));
        }
        let f = build_one(fc, name, &key, &set, start_plugins)?;
        set.add(name, weight, f)?;
    }
    // `reward.correctness` must name a verifier (checked here so `rlpo check` reports it).
    crate::Correctness::from_config(cfg)?;
    Ok(set)
}

fn finite(key: &str, field: &str, x: f64) -> Result<f64> {
    if x.is_finite() {
        Ok(x)
    } else {
        Err(RewardError::config(format!("{key}.{field}"), format!("must be a finite number, got {x}")))
    }
}

fn build_one(fc: &FnConfig, name: &str, key: &str, set: &RewardSet, start_plugins: bool) -> Result<Box<dyn RewardFn>> {
    Ok(match fc {
        FnConfig::Math(c) => {
            let incorrect = finite(key, "incorrect", c.incorrect)?;
            Box::new(MathReward {
                mode: c.extract,
                correct: finite(key, "correct", c.correct)?,
                incorrect,
                no_answer: finite(key, "no_answer", c.no_answer.unwrap_or(incorrect))?,
            })
        }
        FnConfig::Countdown(c) => {
            let incorrect = finite(key, "incorrect", c.incorrect)?;
            let max_len = c.max_expr_len.unwrap_or(Limits::default().max_len);
            if max_len == 0 {
                return Err(RewardError::config(format!("{key}.max_expr_len"), "must be ≥ 1"));
            }
            Box::new(CountdownReward {
                correct: finite(key, "correct", c.correct)?,
                incorrect,
                no_answer: finite(key, "no_answer", c.no_answer.unwrap_or(incorrect))?,
                use_all: c.use_all,
                limits: Limits { max_len, ..Limits::default() },
            })
        }
        FnConfig::Format(c) => {
            let pattern = c.pattern.as_deref().unwrap_or(DEFAULT_FORMAT_PATTERN);
            let matched = finite(key, "matched", c.matched)?;
            let unmatched = finite(key, "unmatched", c.unmatched)?;
            Box::new(
                FormatReward::new(pattern, matched, unmatched)
                    .map_err(|e| RewardError::config(format!("{key}.pattern"), format!("invalid regex: {e}")))?,
            )
        }
        FnConfig::Overlong(c) => {
            if c.cache_len == 0 {
                return Err(RewardError::config(format!("{key}.cache_len"), "must be ≥ 1"));
            }
            if let Some(max) = c.max_len {
                if c.cache_len > max {
                    return Err(RewardError::config(
                        format!("{key}.cache_len"),
                        format!("{} is larger than max_len = {max}", c.cache_len),
                    ));
                }
            }
            Box::new(OverlongReward { max_len: c.max_len, cache_len: c.cache_len, factor: finite(key, "factor", c.factor)? })
        }
        FnConfig::Length(c) => {
            if c.budget == Some(0) {
                return Err(RewardError::config(format!("{key}.budget"), "must be ≥ 1"));
            }
            Box::new(TriangularLengthReward { r_max: finite(key, "r_max", c.r_max)?, budget: c.budget })
        }
        FnConfig::Match(c) => Box::new(MatchReward {
            correct: finite(key, "correct", c.correct)?,
            incorrect: finite(key, "incorrect", c.incorrect)?,
        }),
        FnConfig::External(c) => {
            let mut opts = ExternalOptions::new(name, c.command.clone());
            if c.command.is_empty() || c.command[0].is_empty() {
                return Err(RewardError::config(format!("{key}.command"), "must name a program, e.g. [\"python3\", \"reward_fns/gsm8k_reward.py\"]"));
            }
            if let Some(t) = c.timeout_s {
                opts.timeout = seconds(key, "timeout_s", t, false)?;
            }
            if let Some(t) = c.startup_timeout_s {
                opts.startup_timeout = seconds(key, "startup_timeout_s", t, false)?;
            }
            if let Some(n) = c.concurrency {
                if n == 0 || n > MAX_CONCURRENCY {
                    return Err(RewardError::config(
                        format!("{key}.concurrency"),
                        format!("must be 1..={MAX_CONCURRENCY} requests in flight, got {n}"),
                    ));
                }
                opts.concurrency = n;
            }
            for (j, name) in c.pass_env.iter().enumerate() {
                if name.is_empty() || name.contains(['=', '\0']) {
                    return Err(RewardError::config(
                        format!("{key}.pass_env[{j}]"),
                        format!("{name:?} is not an environment variable name"),
                    ));
                }
            }
            opts.pass_env = c.pass_env.clone();
            if let Some(r) = c.max_restarts {
                if r > 1000 {
                    return Err(RewardError::config(format!("{key}.max_restarts"), format!("must be 0..=1000, got {r}")));
                }
                opts.max_restarts = r;
            }
            if let Some(b) = c.backoff_s {
                opts.backoff = seconds(key, "backoff_s", b, true)?;
            }
            if !start_plugins {
                return Ok(Box::new(NotStarted));
            }
            Box::new(ExternalReward::start(opts, set.log().clone(), set.counters().clone())?)
        }
    })
}

fn seconds(key: &str, field: &str, s: f64, zero_ok: bool) -> Result<Duration> {
    let ok = s.is_finite() && (s > 0.0 || (zero_ok && s == 0.0)) && s <= 86_400.0;
    if !ok {
        let range = if zero_ok { "0..=86400" } else { "a positive number up to 86400" };
        return Err(RewardError::config(format!("{key}.{field}"), format!("must be {range} seconds, got {s}")));
    }
    Ok(Duration::from_secs_f64(s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_reward_config;
    use std::path::Path;

    fn cfg(fns: &str) -> RewardConfig {
        parse_reward_config(&format!("[reward]\n{fns}"), Path::new("r.toml")).expect("parses")
    }

    #[test]
    fn validate_names_the_key_of_a_bad_value() {
        let bad_regex = cfg("[[reward.fns]]\nkind = \"math\"\n[[reward.fns]]\nkind = \"format\"\npattern = \"(<think>\"\n");
        let msg = validate(&bad_regex).expect_err("bad regex").to_string();
        assert!(msg.contains("reward.fns[1].pattern") && msg.contains("regex"), "{msg}");
        for bad in ["concurrency = 0", "concurrency = 1025", "startup_timeout_s = 0.0", "startup_timeout_s = nan",
                    "pass_env = [\"A=B\"]", "max_restarts = 100000"] {
            let key = bad.split(' ').next().expect("key");
            let c = cfg(&format!("[[reward.fns]]\nkind = \"external\"\ncommand = [\"python3\", \"x.py\"]\n{bad}\n"));
            let msg = validate(&c).expect_err(bad).to_string();
            assert!(msg.contains(&format!("reward.fns[0].{key}")), "{bad}: {msg}");
        }
        for (bad, key) in [("max_failure_fraction = 1.5", "reward.max_failure_fraction"), ("max_failure_fraction = -0.1", "reward.max_failure_fraction"),
                           ("max_failure_fraction = nan", "reward.max_failure_fraction"), ("failure_window = 0", "reward.failure_window")] {
            let c = cfg(&format!("{bad}\n[[reward.fns]]\nkind = \"math\"\n"));
            let msg = validate(&c).expect_err(bad).to_string();
            assert!(msg.contains(key), "{bad}: {msg}");
        }
        let empty_cmd = cfg("[[reward.fns]]\nkind = \"external\"\ncommand = []\n");
        assert!(validate(&empty_cmd).expect_err("empty").to_string().contains("reward.fns[0].command"));
        let dup = cfg("[[reward.fns]]\nkind = \"math\"\n[[reward.fns]]\nkind = \"math\"\n");
        assert!(validate(&dup).expect_err("duplicate").to_string().contains("reward.fns[1].name"));
        assert!(validate(&cfg("fns = []\n")).expect_err("empty").to_string().contains("reward.fns"));
    }

    #[test]
    fn validate_does_not_start_plugins() {
        // A program that does not exist: building starts it and fails, validating does not.
        let c = cfg("[[reward.fns]]\nkind = \"external\"\nname = \"p\"\ncommand = [\"/nonexistent/rlpo-plugin\"]\n[[reward.fns]]\nkind = \"math\"\n");
        validate(&c).expect("valid config; the plugin is not started");
        assert!(build(&c).is_err(), "build starts the plugin, which cannot run");
    }
}
