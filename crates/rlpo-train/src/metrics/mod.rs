//! Metrics of one training step and the sinks they go to: TensorBoard event files, a JSONL file
//! with the same numbers, and a console progress bar. Names are `section/name`
//! (`reward/mean`, `actor/pg_loss`, `select/kept_tokens`, `timing/rollout_s`, ...).

pub mod tensorboard;

use crate::error::{io, Result};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

/// Everything logged for one step.
#[derive(Debug, Default, Clone)]
pub struct StepMetrics {
    /// 1-based training step.
    pub step: u64,
    /// Scalars by name.
    pub scalars: BTreeMap<String, f64>,
    /// Value lists shown as histograms (rewards, advantages, entropies, lengths).
    pub histograms: BTreeMap<String, Vec<f64>>,
    /// Sample completions: `(tag, markdown text)`.
    pub texts: Vec<(String, String)>,
}

impl StepMetrics {
    /// Set a scalar.
    pub fn set(&mut self, name: &str, v: f64) {
        self.scalars.insert(name.to_string(), v);
    }
    /// A scalar's value, if set.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.scalars.get(name).copied()
    }
}

/// Where metrics go. An open edge: users may add their own sink.
pub trait MetricSink {
    /// Record one step.
    fn record(&mut self, m: &StepMetrics) -> Result<()>;
    /// Flush and close (end of run).
    fn finish(&mut self) -> Result<()> {
        Ok(())
    }
}

/// `metrics.jsonl`: one line per step, `{"step": n, "metrics": {...}}` (scalars only).
#[derive(Debug)]
pub struct JsonlSink {
    file: std::fs::File,
    path: std::path::PathBuf,
}

impl JsonlSink {
    /// Append to `path` (created if missing).
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(|e| io(path, e))?;
        Ok(JsonlSink { file, path: path.to_path_buf() })
    }
}

impl MetricSink for JsonlSink {
    fn record(&mut self, m: &StepMetrics) -> Result<()> {
        // Non-finite numbers are written as null: JSON has no NaN, and a silent 0 would lie.
        let metrics: serde_json::Map<String, serde_json::Value> = m
            .scalars
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Number::from_f64(*v).map_or(serde_json::Value::Null, serde_json::Value::Number)))
            .collect();
        let line = serde_json::json!({"step": m.step, "metrics": metrics});
        writeln!(self.file, "{line}").and_then(|_| self.file.flush()).map_err(|e| io(&self.path, e))
    }
}

/// TensorBoard event files under a log directory.
#[derive(Debug)]
pub struct TensorBoardSink {
    writer: tensorboard::EventWriter,
}

impl TensorBoardSink {
    /// Create a writer in `dir`.
    pub fn create(dir: &Path) -> Result<Self> {
        Ok(TensorBoardSink { writer: tensorboard::EventWriter::create(dir).map_err(|e| io(dir, e))? })
    }
}

impl MetricSink for TensorBoardSink {
    fn record(&mut self, m: &StepMetrics) -> Result<()> {
        let path = self.writer.path.clone();
        let step = m.step as i64;
        let w = &mut self.writer;
        let res = (|| {
            for (k, v) in &m.scalars {
                if v.is_finite() {
                    w.scalar(k, *v, step)?;
                }
            }
            for (k, vs) in &m.histograms {
                w.histogram(k, vs, step)?;
            }
            for (k, t) in &m.texts {
                w.text(k, t, step)?;
            }
            w.flush()
        })();
        res.map_err(|e| io(path, e))
    }
    fn finish(&mut self) -> Result<()> {
        let path = self.writer.path.clone();
        self.writer.flush().map_err(|e| io(path, e))
    }
}

/// Console progress bar with ETA and the key numbers.
#[derive(Debug)]
pub struct ConsoleSink {
    bar: indicatif::ProgressBar,
}

impl ConsoleSink {
    /// A bar for `total` steps starting after `done` steps.
    pub fn new(total: u64, done: u64) -> Self {
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} eta {eta} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_position(done);
        ConsoleSink { bar }
    }
}

impl MetricSink for ConsoleSink {
    fn record(&mut self, m: &StepMetrics) -> Result<()> {
        let f = |k: &str| m.get(k).map_or("-".to_string(), |v| format!("{v:.3}"));
        let msg = format!(
            "reward {} | pass {} | len {} | kept tok {} | {}s/step",
            f("reward/mean"),
            f("reward/pass_rate"),
            f("response/length_mean"),
            f("select/kept_token_frac"),
            m.get("timing/step_s").map_or("-".into(), |v| format!("{v:.1}"))
        );
        let msg = match m.get("eval/pass@1") {
            Some(p) => format!("{msg} | eval pass@1 {p:.3}"),
            None => msg,
        };
        self.bar.set_position(m.step);
        self.bar.set_message(msg.clone());
        if !self.bar.is_hidden() {
            return Ok(());
        }
        // No terminal (CI, pipes): one plain line per step instead of a redrawn bar.
        eprintln!("step {} {msg}", m.step);
        Ok(())
    }
    fn finish(&mut self) -> Result<()> {
        self.bar.finish();
        Ok(())
    }
}
