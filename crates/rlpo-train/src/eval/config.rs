//! What an evaluation runs on: the recipe's `[eval]` section (evaluation during training), the
//! `--data SPEC` strings of `rlpo eval`, the k values, and the evaluation seed.

use crate::error::{invalid, Result};
use rlpo_data::{DataConfig, SourceKind};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// `[eval]`: evaluation on held-out problems during training (absent = off). Runs before the
/// first step (logged as step 0), then after every `every` steps and after the last one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    /// The held-out problems, with the keys of `[data]` (`[eval.data]`). Required: evaluating on
    /// the training data is refused (see [`EvalConfig::validate`]).
    pub data: DataConfig,
    /// Evaluate every this many training steps. Default 10.
    #[serde(default = "default_every")]
    pub every: u64,
    /// Problems per evaluation: the first N of the held-out data's order. Default 32.
    #[serde(default = "default_problems")]
    pub problems: usize,
    /// Samples per problem, n. Default 8.
    #[serde(default = "default_samples")]
    pub samples: usize,
    /// k values of pass@k and maj@k, each in `1..=samples`; empty = 1, 2, 4, ... and n. Default empty.
    #[serde(default)]
    pub k: Vec<usize>,
    /// Token limit per sample; unset = `rollout.max_new_tokens`.
    #[serde(default)]
    pub max_new_tokens: Option<usize>,
    /// Sampling temperature; unset = `rollout.temperature` (HAPO's adaptive temperature is never
    /// used for evaluation: it depends on the training step's statistics).
    #[serde(default)]
    pub temperature: Option<f64>,
}

fn default_every() -> u64 {
    10
}
fn default_problems() -> usize {
    32
}
fn default_samples() -> usize {
    8
}

impl EvalConfig {
    /// Range checks; errors name `eval.<key>`. `train_data` is the recipe's `[data]`.
    pub fn validate(&self, train_data: &DataConfig) -> Result<()> {
        if self.every == 0 {
            return Err(invalid("eval.every", "must be >= 1 (remove [eval] to turn evaluation off)"));
        }
        if self.problems == 0 {
            return Err(invalid("eval.problems", "must be >= 1"));
        }
        if self.samples == 0 {
            return Err(invalid("eval.samples", "must be >= 1"));
        }
        ks_or_default(&self.k, self.samples).map_err(|m| invalid("eval.k", m))?;
        if self.max_new_tokens == Some(0) {
            return Err(invalid("eval.max_new_tokens", "must be >= 1"));
        }
        if let Some(t) = self.temperature {
            if !(t.is_finite() && t > 0.0) {
                return Err(invalid("eval.temperature", format!("must be > 0, got {t}")));
            }
        }
        self.data.validate().map_err(|e| invalid("eval.data", e.to_string()))?;
        if self.data.source == SourceKind::Text {
            return Err(invalid("eval.data.source", "\"text\" has no answers to verify; use jsonl, parquet or synthetic"));
        }
        if &self.data == train_data {
            return Err(invalid(
                "eval.data",
                "is the training data ([data]); evaluate on held-out problems (another file, or another seed for a synthetic task)",
            ));
        }
        Ok(())
    }
}

/// The k values: `ks` checked against `n`, or the default 1, 2, 4, ..., n when empty.
pub fn ks_or_default(ks: &[usize], n: usize) -> std::result::Result<Vec<usize>, String> {
    if ks.is_empty() {
        let mut out: Vec<usize> = std::iter::successors(Some(1usize), |k| k.checked_mul(2)).take_while(|&k| k < n).collect();
        out.push(n);
        return Ok(out);
    }
    if let Some(bad) = ks.iter().find(|&&k| k == 0 || k > n) {
        return Err(format!("{bad} is outside 1..={n} (the samples per problem)"));
    }
    let mut out = ks.to_vec();
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Parse `--k`: `all` (1..=n), or comma-separated values and ranges (`1,2,4`, `1-16`); empty =
/// the default of [`ks_or_default`].
pub fn parse_ks(spec: &str, n: usize) -> std::result::Result<Vec<usize>, String> {
    let spec = spec.trim();
    if spec == "all" {
        return Ok((1..=n).collect());
    }
    let mut ks = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let num = |s: &str| s.trim().parse::<usize>().map_err(|_| format!("--k: {s:?} is not a number (use e.g. 1,2,4 or 1-16 or all)"));
        match part.split_once('-') {
            Some((a, b)) => ks.extend(num(a)?..=num(b)?),
            None => ks.push(num(part)?),
        }
    }
    ks_or_default(&ks, n).map_err(|m| format!("--k: {m}"))
}

/// A `--data SPEC` as a `[data]` section: a `.jsonl` / `.parquet` file (default field names), or
/// `synthetic:arithmetic` / `synthetic:countdown`, whose task options come from `recipe_data`
/// when the recipe uses the same task (so the quickstart's digit range and prompt carry over).
/// `recipe` is the recipe's own `[data]`. `seed` overrides the data seed (a synthetic task is
/// generated from it unless its own `seed` is set).
pub fn data_from_spec(spec: &str, recipe_data: &DataConfig, seed: Option<u64>) -> std::result::Result<DataConfig, String> {
    let mut cfg = if spec == "recipe" {
        recipe_data.clone()
    } else if let Some(task) = spec.strip_prefix("synthetic:") {
        let same = recipe_data.source == SourceKind::Synthetic && recipe_data.synthetic_or_default().task_name() == task;
        let synthetic = if same {
            recipe_data.synthetic_or_default()
        } else {
            let t = toml::Table::from_iter([("task".to_string(), toml::Value::String(task.to_string()))]);
            rlpo_data::SyntheticConfig::deserialize(toml::Value::Table(t)).map_err(|_| format!("--data {spec}: unknown synthetic task {task:?} (arithmetic or countdown)"))?
        };
        DataConfig { source: SourceKind::Synthetic, synthetic: Some(synthetic), seed: recipe_data.seed, ..DataConfig::default() }
    } else {
        let path = PathBuf::from(spec);
        let source = match path.extension().and_then(|e| e.to_str()) {
            Some("jsonl") | Some("json") => SourceKind::Jsonl,
            Some("parquet") => SourceKind::Parquet,
            _ => return Err(format!("--data {spec}: expected a .jsonl or .parquet file, synthetic:arithmetic, synthetic:countdown or recipe")),
        };
        DataConfig { source, path: Some(path), ..DataConfig::default() }
    };
    if let Some(s) = seed {
        cfg.seed = s;
    }
    cfg.validate().map_err(|e| format!("--data {spec}: {e}"))?;
    Ok(cfg)
}

/// The seed of evaluation rows: derived from the run seed in a domain of its own, so evaluation
/// never draws the uniforms of a training rollout (which use the run seed itself).
pub fn eval_seed(run_seed: u64) -> rlpo_rollout::RolloutSeed {
    const EVAL_DOMAIN: u64 = 0x4556_414C; // "EVAL"
    rlpo_rollout::RolloutSeed::new(rlpo_rollout::rng::mix64(run_seed ^ EVAL_DOMAIN), 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn k_lists() {
        assert_eq!(ks_or_default(&[], 16).unwrap(), [1, 2, 4, 8, 16]);
        assert_eq!(ks_or_default(&[], 12).unwrap(), [1, 2, 4, 8, 12]);
        assert_eq!(ks_or_default(&[], 1).unwrap(), [1]);
        assert_eq!(ks_or_default(&[4, 1, 4], 4).unwrap(), [1, 4]);
        assert!(ks_or_default(&[5], 4).unwrap_err().contains("1..=4"));
        assert_eq!(parse_ks("all", 3).unwrap(), [1, 2, 3]);
        assert_eq!(parse_ks("1-4,8", 8).unwrap(), [1, 2, 3, 4, 8]);
        assert_eq!(parse_ks("", 8).unwrap(), [1, 2, 4, 8]);
        assert!(parse_ks("1,x", 8).unwrap_err().contains("\"x\""));
    }

    #[test]
    fn specs() {
        let recipe = DataConfig {
            synthetic: Some(toml::from_str("task = \"arithmetic\"\nmax_digits = 1\nmin_digits = 1").unwrap()),
            ..DataConfig::default()
        };
        let d = data_from_spec("synthetic:arithmetic", &recipe, Some(5)).unwrap();
        assert_eq!((d.seed, d.synthetic.clone()), (5, recipe.synthetic.clone()));
        let d = data_from_spec("synthetic:countdown", &recipe, None).unwrap();
        assert_eq!(d.synthetic.unwrap().task_name(), "countdown");
        assert!(data_from_spec("synthetic:chess", &recipe, None).unwrap_err().contains("chess"));
        let d = data_from_spec("held_out.jsonl", &recipe, None).unwrap();
        assert_eq!((d.source, d.path.unwrap()), (SourceKind::Jsonl, PathBuf::from("held_out.jsonl")));
        assert!(data_from_spec("x.csv", &recipe, None).unwrap_err().contains("x.csv"));
        assert_eq!(data_from_spec("recipe", &recipe, None).unwrap(), recipe);
    }

    #[test]
    fn a_recipe_with_eval_round_trips_and_set_can_add_it() {
        use crate::recipe::{Recipe, QUICKSTART};
        let p = std::path::Path::new("q.toml");
        let text = format!("{QUICKSTART}\n[eval]\nevery = 3\nk = [1, 4]\n[eval.data]\nseed = 1\n");
        let r = Recipe::from_toml(&text, p, &[]).unwrap();
        let back = Recipe::from_toml(&r.to_toml(), p, &[]).unwrap();
        assert_eq!(r, back, "recipe.resolved.toml must parse back to the same recipe");
        assert_eq!(back.eval.as_ref().map(|e| (e.every, e.k.clone())), Some((3, vec![1, 4])));
        let set = Recipe::from_toml(QUICKSTART, p, &["eval.data.seed=2".into(), "eval.every=5".into()]).unwrap();
        assert_eq!(set.eval.map(|e| (e.every, e.data.seed)), Some((5, 2)));
        assert!(Recipe::from_toml(QUICKSTART, p, &[]).unwrap().eval.is_none());
        let e = Recipe::from_toml(QUICKSTART, p, &["eval.every=5".into()]).unwrap_err().to_string();
        assert!(e.contains("data"), "[eval] without data is refused: {e}");
    }

    #[test]
    fn eval_section_is_checked() {
        let train = DataConfig::default();
        let held_out = DataConfig { seed: 1, ..DataConfig::default() };
        let ok: EvalConfig = toml::from_str("[data]\nseed = 1\n").unwrap();
        assert_eq!((ok.every, ok.problems, ok.samples), (10, 32, 8));
        ok.validate(&train).unwrap();
        let same = EvalConfig { data: train.clone(), ..ok.clone() };
        assert!(same.validate(&train).unwrap_err().to_string().contains("eval.data"));
        let bad_k = EvalConfig { data: held_out.clone(), k: vec![9], ..ok.clone() };
        assert!(bad_k.validate(&train).unwrap_err().to_string().contains("eval.k"));
        let every0 = EvalConfig { every: 0, ..ok.clone() };
        assert!(every0.validate(&train).unwrap_err().to_string().contains("eval.every"));
        assert!(toml::from_str::<EvalConfig>("every = 2\n").unwrap_err().to_string().contains("data"));
        assert!(toml::from_str::<EvalConfig>("[data]\n[x]\n").is_err());
    }
}
