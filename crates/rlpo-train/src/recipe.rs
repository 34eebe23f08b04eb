//! The recipe: one TOML file, one section per concern. Each crate owns its section's struct
//! (`[rollout]` = `rlpo_rollout::SamplingParams`, `[algorithm]`/`[loss]` = `rlpo_algo`,
//! `[reward]` = `rlpo_reward`, `[data]` = `rlpo_data`); the trainer-owned sections live here.
//! Unknown keys are rejected (with file, line and key), `--set section.key=value` overrides are
//! applied before parsing, and the resolved recipe is written into the run directory.

use crate::error::{invalid, io, Result, TrainError};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The CPU quickstart recipe, embedded so `rlpo train` works with no argument.
pub const QUICKSTART: &str = include_str!("../../../recipes/quickstart.toml");

/// `[run]`: naming and seeding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    /// Run name; the run directory is `<checkpoint.root>/<name>`: one plain directory name (no
    /// `/`, `\\`, `..`, not empty). Default "run".
    pub name: String,
    /// Master seed of the rollout rows (with the step, prompt and sample index) and of torch.
    /// The data order has its own `[data] seed`. Default 0.
    pub seed: u64,
    /// LibTorch intra-op threads for the learner; 0 = all cores. Default 0.
    pub threads: usize,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig { name: "run".into(), seed: 0, threads: 0 }
    }
}

/// `[model]`: what to train and where.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelSection {
    /// HF model directory (config.json, safetensors, tokenizer.json). Like every path in a recipe,
    /// a relative path is relative to the working directory rlpo runs in (not the recipe file).
    pub path: PathBuf,
    /// Device of the learner and the colocated rollout: `cpu`, `cuda`, `cuda:N`. Default `cpu`.
    pub device: String,
    /// Parameter dtype: `f32`, `bf16`, `f16`. Default `f32`.
    pub dtype: String,
    /// Optional system message prepended to every chat prompt.
    pub system_prompt: Option<String>,
    /// Device of the rollout when it differs from the learner's (`cuda:1`, `cpu`); unset = the
    /// learner's. A separate device runs the rollout on worker threads with their own copy of
    /// the weights, synced after every update.
    pub rollout_device: Option<String>,
    /// Parameter dtype of the rollout copy; unset = `dtype`.
    pub rollout_dtype: Option<String>,
}

impl Default for ModelSection {
    fn default() -> Self {
        ModelSection {
            path: PathBuf::new(),
            device: "cpu".into(),
            dtype: "f32".into(),
            system_prompt: None,
            rollout_device: None,
            rollout_dtype: None,
        }
    }
}

/// `[optim]`: AdamW and the learning-rate schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimConfig {
    /// Peak learning rate. Default 1e-6.
    pub lr: f64,
    /// AdamW β₁. Default 0.9.
    pub beta1: f64,
    /// AdamW β₂. Default 0.999.
    pub beta2: f64,
    /// AdamW ε. Default 1e-8.
    pub eps: f64,
    /// Decoupled weight decay. Default 0.01.
    pub weight_decay: f64,
    /// Clip the global gradient norm to this value; 0 = off. Default 1.0.
    pub grad_clip: f64,
    /// Linear warm-up length in optimizer steps. Default 0.
    pub warmup_steps: u64,
    /// After warm-up: `constant` or `cosine` (to `min_lr_ratio · lr` at the last step). Default constant.
    pub schedule: LrSchedule,
    /// Floor of the cosine schedule as a fraction of `lr`. Default 0.0.
    pub min_lr_ratio: f64,
    /// Update with LibTorch's fused multi-tensor AdamW kernel (`_fused_adamw_`); false = the same
    /// arithmetic one parameter at a time (see `optim.rs`). Default true.
    pub fused: bool,
}

/// Learning-rate shape after warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LrSchedule {
    /// Stay at `lr`.
    Constant,
    /// Cosine decay to `min_lr_ratio · lr`.
    Cosine,
}

impl Default for OptimConfig {
    fn default() -> Self {
        OptimConfig {
            lr: 1e-6,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
            grad_clip: 1.0,
            warmup_steps: 0,
            schedule: LrSchedule::Constant,
            min_lr_ratio: 0.0,
            fused: true,
        }
    }
}

/// `[trainer]`: batch arithmetic and loop control.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainerConfig {
    /// Training steps (one rollout + its updates each). Default 100.
    pub total_steps: u64,
    /// Prompts per training step, B (each gets `rollout.group_size` responses). Default 8.
    pub prompts_per_step: usize,
    /// Rows (responses) per optimizer step; 0 = all rows of the step (one update). Default 0.
    pub mini_batch_rows: usize,
    /// Rows per forward/backward pass (gradient accumulation); 0 = the whole mini-batch. Default 0.
    pub micro_batch_rows: usize,
    /// Passes over each step's data. Default 1.
    pub ppo_epochs: usize,
    /// `0` = on-policy (rollout waits for the update). `1`: the rollout of step t+1 runs on the
    /// rollout workers while step t trains (data one step stale), with ratios taken against the
    /// generating policy. Default 0.
    pub max_staleness: u64,
    /// Old log-probs: `auto` takes them for free where that is exact (see [`OldLogprobs::Auto`]);
    /// `always` recomputes them with a no-grad forward. Default auto.
    pub old_logprobs: OldLogprobs,
    /// Decode path of the rollout: `auto` (host kernels on CPU, LibTorch on GPUs), `host`
    /// (packed weights and Rust kernels, CPU only, ~2.7x faster decode there) or `torch`
    /// (the learner's own `CausalLm`). Default auto.
    pub rollout_decoder: RolloutDecoder,
    /// Stop after this many non-finite losses/gradients in a row (each one skips its update). Default 3.
    pub max_nonfinite_in_a_row: u32,
    /// Positions per chunk when projecting hidden states to the vocabulary (bounds memory). Default 1024.
    pub logit_chunk_positions: i64,
    /// Keep only each decoder layer's input in the update's forward and recompute the layer in
    /// the backward (activation checkpointing): activations shrink from every layer's
    /// intermediates to one `[rows, T, D]` tensor per layer, for about one extra forward of
    /// compute. Gradients are unchanged. Default false.
    pub activation_checkpointing: bool,
}

/// Where `old_logp` comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OldLogprobs {
    /// On-policy data with one optimizer step per training step: the learner's own log-probs,
    /// detached (exact, no extra forward). On-policy with several optimizer steps: the rollout's
    /// recorded log-probs when it ran the learner's kernels (`rollout_decoder = "torch"`), else
    /// a recomputing forward. Stale data (`max_staleness >= 1`): the rollout's log-probs, i.e.
    /// the ratio is taken against the policy that generated the data.
    Auto,
    /// Always recompute with the learner.
    Always,
}

/// Which kernels decode the rollout (`trainer.rollout_decoder`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RolloutDecoder {
    /// `host` on CPU, `torch` elsewhere.
    #[default]
    Auto,
    /// Packed host weights + Rust kernels (`rlpo_rollout::HostWeights`); CPU only.
    Host,
    /// The learner's `CausalLm` forward (LibTorch).
    Torch,
}

impl Default for TrainerConfig {
    fn default() -> Self {
        TrainerConfig {
            total_steps: 100,
            prompts_per_step: 8,
            mini_batch_rows: 0,
            micro_batch_rows: 0,
            ppo_epochs: 1,
            max_staleness: 0,
            old_logprobs: OldLogprobs::Auto,
            rollout_decoder: RolloutDecoder::Auto,
            max_nonfinite_in_a_row: 3,
            logit_chunk_positions: 1024,
            activation_checkpointing: false,
        }
    }
}

/// `[checkpoint]`: where outputs go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CheckpointConfig {
    /// Root of run directories. Default `checkpoints`.
    pub root: PathBuf,
    /// Write the final policy as an HF directory `<run>/final`. Default true.
    pub save_final: bool,
    /// Save a full checkpoint every this many steps (and always at the end and on Ctrl-C); 0 =
    /// only at the end. Default 10.
    pub save_every: u64,
    /// Keep the newest N checkpoints. Default 2.
    pub keep_last: usize,
    /// Also keep every checkpoint whose step is a multiple of this; 0 = off. Default 0.
    pub keep_every: u64,
    /// Save a full checkpoint when the run reaches `trainer.total_steps` (a stopped run always
    /// saves one). false = only `save_every` checkpoints, e.g. for throwaway benchmark runs whose
    /// checkpoint (weights, fp32 masters, AdamW moments) would take longer to write than the
    /// run. Default true.
    pub save_at_end: bool,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig { root: "checkpoints".into(), save_final: true, save_every: 10, keep_last: 2, keep_every: 0, save_at_end: true }
    }
}

/// `[metrics]`: what is logged where.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// TensorBoard event files under `<run>/tensorboard`. Default true.
    pub tensorboard: bool,
    /// One JSON line per step in `<run>/metrics.jsonl`. Default true.
    pub jsonl: bool,
    /// Console progress bar. Default true.
    pub console: bool,
    /// Sample completions logged as text every step. Default 2.
    pub text_samples: usize,
    /// Log `actor/entropy`, the current policy's entropy on loss tokens (an extra pass over the
    /// vocabulary in the update; `rollout/entropy_mean` is free). Default false.
    pub actor_entropy: bool,
    /// Rewrite `<run>/report.html` (`rlpo report`) every this many steps and at the end of the
    /// run; 0 = never during training. Default 10.
    pub report_every: u64,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { tensorboard: true, jsonl: true, console: true, text_samples: 2, actor_entropy: false, report_every: 10 }
    }
}

/// A whole recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// `[run]`.
    #[serde(default)]
    pub run: RunConfig,
    /// `[model]`.
    pub model: ModelSection,
    /// `[data]`.
    #[serde(default)]
    pub data: rlpo_data::DataConfig,
    /// `[rollout]`.
    #[serde(default)]
    pub rollout: rlpo_rollout::SamplingParams,
    /// `[reward]`.
    pub reward: rlpo_reward::RewardConfig,
    /// `[algorithm]`.
    #[serde(default)]
    pub algorithm: rlpo_algo::AlgorithmConfig,
    /// `[loss]`.
    #[serde(default)]
    pub loss: rlpo_algo::LossConfig,
    /// `[optim]`.
    #[serde(default)]
    pub optim: OptimConfig,
    /// `[trainer]`.
    #[serde(default)]
    pub trainer: TrainerConfig,
    /// `[checkpoint]`.
    #[serde(default)]
    pub checkpoint: CheckpointConfig,
    /// `[metrics]`.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// `[eval]`: evaluation on held-out problems during training; absent = off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval: Option<crate::eval::EvalConfig>,
}

impl Recipe {
    /// Load `path` (or the embedded quickstart when `None`), apply `--set` overrides, validate.
    pub fn load(path: Option<&Path>, overrides: &[String]) -> Result<Recipe> {
        let (text, origin) = match path {
            Some(p) => (std::fs::read_to_string(p).map_err(|e| io(p, e))?, p.to_path_buf()),
            None => (QUICKSTART.to_string(), PathBuf::from("<embedded recipes/quickstart.toml>")),
        };
        Recipe::from_toml(&text, &origin, overrides)
    }

    /// Parse recipe text; `origin` names the file in errors.
    pub fn from_toml(text: &str, origin: &Path, overrides: &[String]) -> Result<Recipe> {
        let err = |msg: String| TrainError::Recipe { path: origin.to_path_buf(), msg };
        let recipe: Recipe = if overrides.is_empty() {
            // Parse the text directly so toml's errors keep line and column numbers.
            toml::from_str(text).map_err(|e| err(e.to_string()))?
        } else {
            let mut table: toml::Table = toml::from_str(text).map_err(|e| err(e.to_string()))?;
            for o in overrides {
                crate::overrides::apply(&mut table, o)?;
            }
            Recipe::deserialize(toml::Value::Table(table)).map_err(|e| err(format!("after --set: {e}")))?
        };
        recipe.validate()?;
        Ok(recipe)
    }

    /// Cross-section checks that need no files: ranges, batch arithmetic, option combinations.
    pub fn validate(&self) -> Result<()> {
        let g = self.rollout.group_size;
        self.rollout.validate()?;
        // Sizes first: the batch arithmetic below multiplies them.
        crate::recipe_ranges::validate(self)?;
        rlpo_algo::validate_sections(&self.algorithm, &self.loss, g)?;
        self.validate_algorithm_vs_reward()?;
        self.data.validate()?;
        if self.model.path.as_os_str().is_empty() {
            return Err(invalid("model.path", "is required (an HF model directory)"));
        }
        rlpo_model::parse_dtype(&self.model.dtype).map_err(|e| invalid("model.dtype", e.to_string()))?;
        let hapo_temp = self.algorithm.hapo.as_ref().filter(|h| h.adaptive_temperature);
        match (&self.rollout.adaptive_temperature, hapo_temp) {
            (Some(_), None) => {
                return Err(invalid(
                    "rollout.adaptive_temperature",
                    "needs [algorithm.hapo] with adaptive_temperature = true (HAPO's entropy statistics drive it)",
                ))
            }
            (Some(a), Some(h)) if (a.tau - h.tau).abs() > 1e-12 => {
                return Err(invalid(
                    "rollout.adaptive_temperature.tau",
                    format!("{} differs from algorithm.hapo.tau = {} (set one; the trainer uses algorithm.hapo.tau)", a.tau, h.tau),
                ))
            }
            _ => {}
        }
        if let Some(dt) = &self.model.rollout_dtype {
            rlpo_model::parse_dtype(dt).map_err(|e| invalid("model.rollout_dtype", e.to_string()))?;
        }
        let t = &self.trainer;
        if t.max_staleness > 1 {
            return Err(invalid(
                "trainer.max_staleness",
                format!("must be 0 (on-policy) or 1 (the next step's rollout overlaps this step's update), got {}", t.max_staleness),
            ));
        }
        if g < 2 {
            return Err(invalid(
                "rollout.group_size",
                format!("GRPO-family advantages compare responses within a group: need >= 2, got {g}"),
            ));
        }
        if t.prompts_per_step == 0 {
            return Err(invalid("trainer.prompts_per_step", "must be >= 1"));
        }
        if t.total_steps == 0 {
            return Err(invalid("trainer.total_steps", "must be >= 1"));
        }
        if t.ppo_epochs == 0 {
            return Err(invalid("trainer.ppo_epochs", "must be >= 1"));
        }
        let rows = t.prompts_per_step * g;
        let mini = self.mini_batch_rows();
        if mini > rows || !rows.is_multiple_of(mini) {
            return Err(invalid(
                "trainer.mini_batch_rows",
                format!("must divide the {rows} rows of a step (prompts_per_step {} x group_size {g}), got {mini}", t.prompts_per_step),
            ));
        }
        let micro = self.micro_batch_rows();
        if micro > mini || !mini.is_multiple_of(micro) {
            return Err(invalid("trainer.micro_batch_rows", format!("must divide mini_batch_rows ({mini}), got {micro}")));
        }
        // The [reward] section's values (names, regexes, plugin options), without starting plugins.
        rlpo_reward::validate(&self.reward)?;
        if let Some(e) = &self.eval {
            e.validate(&self.data)?;
        }
        Ok(())
    }

    /// `[algorithm]` choices that depend on `[reward]`: DAPO's `acc` needs a verifier, and the
    /// overlong penalty must not be added twice.
    fn validate_algorithm_vs_reward(&self) -> Result<()> {
        let acc = self.algorithm.dapo.filter_groups.as_ref().is_some_and(|f| f.metric == rlpo_algo::config::FilterMetric::Acc);
        if acc && rlpo_reward::Correctness::from_config(&self.reward)?.is_none() {
            return Err(invalid(
                "algorithm.dapo.filter_groups.metric",
                "= \"acc\" needs a verifier's correctness, but [reward] has only shaping functions: add a verifier, \
                 name the part with reward.correctness, or use metric = \"score\"",
            ));
        }
        let reward_overlong = self.reward.fns.iter().any(|f| matches!(f, rlpo_reward::FnConfig::Overlong(_)));
        if self.algorithm.dapo.overlong.is_some() && reward_overlong {
            return Err(invalid(
                "algorithm.dapo.overlong",
                "and a [[reward.fns]] entry of kind = \"overlong\" would both add the overlong penalty: keep one",
            ));
        }
        Ok(())
    }

    /// Rows per optimizer step.
    pub fn mini_batch_rows(&self) -> usize {
        let rows = self.trainer.prompts_per_step * self.rollout.group_size;
        if self.trainer.mini_batch_rows == 0 { rows } else { self.trainer.mini_batch_rows }
    }

    /// Rows per forward/backward.
    pub fn micro_batch_rows(&self) -> usize {
        if self.trainer.micro_batch_rows == 0 { self.mini_batch_rows() } else { self.trainer.micro_batch_rows }
    }

    /// Optimizer steps per training step.
    pub fn optimizer_steps_per_step(&self) -> usize {
        self.trainer.prompts_per_step * self.rollout.group_size / self.mini_batch_rows() * self.trainer.ppo_epochs
    }

    /// The run directory.
    pub fn run_dir(&self) -> PathBuf {
        self.checkpoint.root.join(&self.run.name)
    }

    /// The resolved recipe as TOML (every default spelled out).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# could not serialise the recipe: {e}\n"))
    }
}
