//! `rlpo reward test`: score hand-written samples with a recipe's reward setup and print a table,
//! so a reward can be checked before spending GPU time. The CLI calls [`reward_test_table`].

use std::fmt::Write as _;
use std::path::Path;

use crate::builder::build;
use crate::config::{OnError, RewardConfig};
use crate::error::{RewardError, Result};
use crate::metrics::RewardMetrics;
use crate::samples::load_samples;
use crate::set::ScoredBatch;
use crate::types::{RewardInput, RewardStatus};

/// Characters of each response shown in the table.
const RESPONSE_CHARS: usize = 40;

/// Reads only the `[reward]` table of a recipe; other sections are ignored.
pub fn load_reward_config(recipe_path: &Path) -> Result<RewardConfig> {
    let text = std::fs::read_to_string(recipe_path)
        .map_err(|source| RewardError::Io { path: recipe_path.to_owned(), source })?;
    parse_reward_config(&text, recipe_path)
}

/// Parses the `[reward]` table out of recipe TOML text; `path` is for messages.
pub fn parse_reward_config(text: &str, path: &Path) -> Result<RewardConfig> {
    let recipe_err = |msg: String| RewardError::Recipe { path: path.to_owned(), msg };
    let mut table: toml::Table = toml::from_str(text).map_err(|e| recipe_err(e.to_string()))?;
    let section = table.remove("reward").ok_or_else(|| recipe_err("has no [reward] section".into()))?;
    section.try_into().map_err(|e: toml::de::Error| recipe_err(format!("[reward]: {}", e.message())))
}

/// What `rlpo reward test` prints and whether every sample scored.
#[derive(Debug, Clone)]
pub struct RewardTest {
    /// The printable table (see [`reward_test_table`]).
    pub table: String,
    /// Samples scored.
    pub samples: usize,
    /// Samples with at least one failed function (error or timeout).
    pub failed: usize,
}

/// Scores the samples of `samples_path` with the reward setup of `recipe_path` and returns a
/// printable table: one row per sample (total, each part, response excerpt, status) and a summary
/// line (mean over ok samples, error and timeout counts, what the policy would do). Failures do
/// not stop the table; they are shown.
pub fn reward_test_table(recipe_path: &Path, samples_path: &Path) -> Result<String> {
    reward_test(recipe_path, samples_path).map(|t| t.table)
}

/// [`reward_test_table`] with the count of samples that failed, so the CLI can exit non-zero.
pub fn reward_test(recipe_path: &Path, samples_path: &Path) -> Result<RewardTest> {
    let cfg = load_reward_config(recipe_path)?;
    let samples = load_samples(samples_path)?;
    let set = build(&cfg)?;
    let scored = set.score_unchecked(&samples)?;
    let names: Vec<&str> = set.fns().into_iter().map(|(n, _)| n).collect();
    let mut out = render_table(&samples, &scored, &names, &set.metrics());
    let log = set.log().drain();
    if !log.is_empty() {
        out.push_str("\nreward log:\n");
        for line in log {
            let _ = writeln!(out, "  {line}");
        }
    }
    let failed = scored.outputs.iter().filter(|o| !o.is_ok()).count();
    Ok(RewardTest { table: out, samples: scored.outputs.len(), failed })
}

/// Column order: each function's part, then its sub-parts (`name/...`) sorted.
fn columns(scored: &ScoredBatch, names: &[&str]) -> Vec<String> {
    let mut cols = Vec::new();
    for name in names {
        cols.push((*name).to_owned());
        let prefix = format!("{name}/");
        let mut subs: Vec<String> = scored
            .outputs
            .iter()
            .flat_map(|o| o.parts.keys())
            .filter(|k| k.starts_with(&prefix))
            .cloned()
            .collect();
        subs.sort();
        subs.dedup();
        cols.extend(subs);
    }
    cols
}

fn num(x: Option<f64>) -> String {
    match x {
        Some(v) if v.is_finite() => format!("{v:.4}"),
        _ => "-".into(),
    }
}

fn excerpt(s: &str) -> String {
    let flat: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).take(RESPONSE_CHARS).collect();
    if s.chars().count() > RESPONSE_CHARS { format!("{flat}…") } else { flat }
}

/// Renders the table for already-scored samples.
pub fn render_table(samples: &[RewardInput], scored: &ScoredBatch, names: &[&str], metrics: &RewardMetrics) -> String {
    let cols = columns(scored, names);
    let mut header = vec!["#".to_owned(), "value".to_owned()];
    header.extend(cols.iter().cloned());
    header.push("response".into());
    header.push("status".into());
    let mut rows = vec![header];
    for (i, (o, s)) in scored.outputs.iter().zip(samples).enumerate() {
        let mut row = vec![i.to_string(), num(Some(o.value).filter(|_| o.is_ok()))];
        row.extend(cols.iter().map(|c| num(o.parts.get(c).copied())));
        row.push(excerpt(&s.response));
        row.push(o.status.to_string());
        rows.push(row);
    }
    let ncol = rows[0].len();
    let widths: Vec<usize> = (0..ncol).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            let pad = widths[c] - cell.chars().count();
            // Numbers right-aligned, text left-aligned; the last column is not padded.
            if c + 1 == ncol {
                line.push_str(cell);
            } else if c < ncol - 2 {
                let _ = write!(line, "{}{cell}  ", " ".repeat(pad));
            } else {
                let _ = write!(line, "{cell}{}  ", " ".repeat(pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out.push_str(&summary(scored, metrics));
    out
}

fn summary(scored: &ScoredBatch, metrics: &RewardMetrics) -> String {
    let ok: Vec<f64> = scored.outputs.iter().filter(|o| o.status == RewardStatus::Ok).map(|o| o.value).collect();
    let mean = if ok.is_empty() { "-".into() } else { format!("{:.4}", ok.iter().sum::<f64>() / ok.len() as f64) };
    let mut s = format!(
        "{} samples: mean {mean} over {} ok; errors {}, timeouts {}, restarts {}",
        scored.outputs.len(),
        ok.len(),
        scored.errors(),
        scored.timeouts(),
        metrics.restarts
    );
    if let Some(first) = scored.failures.first() {
        let policy = match scored.on_error {
            OnError::Abort => format!("training would stop at sample {}", first.index),
            OnError::Zero => "failed samples would score 0 (and be counted)".into(),
            OnError::DropGroup => "groups containing failed samples would be dropped".into(),
        };
        let _ = write!(s, " (on_error = \"{}\": {policy})", scored.on_error.as_str());
    }
    s.push('\n');
    s
}
