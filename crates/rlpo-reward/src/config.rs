//! The `[reward]` recipe section as serde structs. Unknown keys are errors everywhere
//! (`deny_unknown_fields`), so a typo never silently falls back to a default.
//!
//! ```toml
//! [reward]
//! on_error = "abort"            # "abort" (default) | "zero" | "drop_group"
//! max_failure_fraction = 0.5    # zero/drop_group: stop when more of the last
//! failure_window = 256          #   failure_window samples than this failed
//!
//! [[reward.fns]]
//! kind = "math"                 # math | countdown | format | overlong | length | match | external
//! weight = 1.0
//! extract = "auto"
//!
//! [[reward.fns]]
//! kind = "external"
//! name = "gsm8k_py"
//! command = ["python3", "reward_fns/gsm8k_reward.py"]
//! timeout_s = 10.0
//! concurrency = 16
//! startup_timeout_s = 60.0
//! pass_env = ["HF_HOME"]        # besides PATH, HOME, LANG, LC_*, TMPDIR
//! ```

use serde::{Deserialize, Serialize};

use crate::math::ExtractMode;

/// What happens when a reward cannot be computed for a sample (error or timeout).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Stop: scoring returns an error naming the sample and the cause.
    #[default]
    Abort,
    /// The sample's reward becomes 0; its status stays error/timeout and it is counted.
    Zero,
    /// The sample's value stays NaN and the trainer drops every group containing a failure
    /// ([`crate::ScoredBatch::groups_to_drop`]).
    DropGroup,
}

impl OnError {
    /// The recipe spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Abort => "abort",
            Self::Zero => "zero",
            Self::DropGroup => "drop_group",
        }
    }
}

/// The `[reward]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewardConfig {
    /// Failure policy for all reward functions.
    #[serde(default)]
    pub on_error: OnError,
    /// The reward functions; the total reward is `Σ weight · value`.
    pub fns: Vec<FnConfig>,
    /// The part that says whether an answer is right (the DAPO filter's `acc`, the
    /// `reward/pass_rate` metric): a function's name, or `name/part` for a part a plugin reports.
    /// Default: the first verifier (`math`, `countdown`, `match`, `external`), else the first
    /// `format` function. See [`crate::Correctness`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correctness: Option<String>,
    /// Under `zero` / `drop_group`: the run stops when more than this fraction of the last
    /// `failure_window` samples failed (0..=1; 1 never stops). Default 0.5.
    #[serde(default = "default_max_failure_fraction")]
    pub max_failure_fraction: f64,
    /// Samples the failure ceiling looks back over (1..=2^20). Default 256.
    #[serde(default = "default_failure_window")]
    pub failure_window: usize,
}

fn default_max_failure_fraction() -> f64 {
    crate::ceiling::DEFAULT_MAX_FAILURE_FRACTION
}

fn default_failure_window() -> usize {
    crate::ceiling::DEFAULT_FAILURE_WINDOW
}

/// One `[[reward.fns]]` entry, selected by `kind` (deserialized by [`crate::tagged`], so that a
/// bad value names its key).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FnConfig {
    /// Math answer verifier.
    Math(MathConfig),
    /// Countdown expression verifier.
    Countdown(CountdownConfig),
    /// Regex format check.
    Format(FormatConfig),
    /// DAPO overlong shaping.
    Overlong(OverlongConfig),
    /// RMT triangular length reward.
    Length(LengthConfig),
    /// Exact match after `</think>` (RMT matching reward).
    Match(MatchConfig),
    /// External plugin over JSON lines.
    External(ExternalConfig),
}

/// The `kind` spellings.
const KINDS: &[&str] = &["math", "countdown", "format", "overlong", "length", "match", "external"];

impl<'de> Deserialize<'de> for FnConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use crate::tagged::{split, variant};
        let (kind, rest) = split(d, "kind")?;
        Ok(match kind.as_str() {
            "math" => Self::Math(variant(rest, "kind", &kind)?),
            "countdown" => Self::Countdown(variant(rest, "kind", &kind)?),
            "format" => Self::Format(variant(rest, "kind", &kind)?),
            "overlong" => Self::Overlong(variant(rest, "kind", &kind)?),
            "length" => Self::Length(variant(rest, "kind", &kind)?),
            "match" => Self::Match(variant(rest, "kind", &kind)?),
            "external" => Self::External(variant(rest, "kind", &kind)?),
            other => return Err(serde::de::Error::unknown_variant(other, KINDS)),
        })
    }
}

impl FnConfig {
    /// The recipe spelling of the kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Math(_) => "math",
            Self::Countdown(_) => "countdown",
            Self::Format(_) => "format",
            Self::Overlong(_) => "overlong",
            Self::Length(_) => "length",
            Self::Match(_) => "match",
            Self::External(_) => "external",
        }
    }

    /// `(name, weight)`; the name defaults to the kind.
    pub fn name_and_weight(&self) -> (&str, f64) {
        let (name, weight) = match self {
            Self::Math(c) => (&c.name, c.weight),
            Self::Countdown(c) => (&c.name, c.weight),
            Self::Format(c) => (&c.name, c.weight),
            Self::Overlong(c) => (&c.name, c.weight),
            Self::Length(c) => (&c.name, c.weight),
            Self::Match(c) => (&c.name, c.weight),
            Self::External(c) => (&c.name, c.weight),
        };
        (name.as_deref().unwrap_or(self.kind()), weight)
    }
}

fn one() -> f64 {
    1.0
}

/// `kind = "math"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MathConfig {
    /// Part name (default `math`).
    pub name: Option<String>,
    /// Weight in the total (default 1).
    #[serde(default = "one")]
    pub weight: f64,
    /// `auto` | `boxed` | `hashes` | `last_number` (default `auto`).
    #[serde(default)]
    pub extract: ExtractMode,
    /// Value for a correct answer (default 1).
    #[serde(default = "one")]
    pub correct: f64,
    /// Value for a wrong answer (default 0; DAPO uses -1).
    #[serde(default)]
    pub incorrect: f64,
    /// Value when no answer is found (default: `incorrect`).
    pub no_answer: Option<f64>,
}

/// `kind = "countdown"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CountdownConfig {
    /// Part name (default `countdown`).
    pub name: Option<String>,
    /// Weight in the total (default 1).
    #[serde(default = "one")]
    pub weight: f64,
    /// Value for a correct expression (default 1).
    #[serde(default = "one")]
    pub correct: f64,
    /// Value for a wrong or invalid expression (default 0).
    #[serde(default)]
    pub incorrect: f64,
    /// Value when there is no `<answer>`/`\boxed{}` (default: `incorrect`).
    pub no_answer: Option<f64>,
    /// Require every number exactly once (default false: at most once).
    #[serde(default)]
    pub use_all: bool,
    /// Longest accepted expression in bytes (default 256).
    pub max_expr_len: Option<usize>,
}

/// `kind = "format"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FormatConfig {
    /// Part name (default `format`).
    pub name: Option<String>,
    /// Weight in the total (default 1).
    #[serde(default = "one")]
    pub weight: f64,
    /// Regular expression (Rust `regex` syntax); default `<think>...</think>` then an answer.
    pub pattern: Option<String>,
    /// Value when the pattern matches (default 1).
    #[serde(default = "one")]
    pub matched: f64,
    /// Value when it does not (default 0).
    #[serde(default)]
    pub unmatched: f64,
}

/// `kind = "overlong"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverlongConfig {
    /// Part name (default `overlong`).
    pub name: Option<String>,
    /// Weight in the total (default 1; DAPO adds the penalty to the correctness reward).
    #[serde(default = "one")]
    pub weight: f64,
    /// `L_max`; default: each sample's generation limit.
    pub max_len: Option<usize>,
    /// `L_cache`, the soft-penalty buffer (required, ≥ 1).
    pub cache_len: usize,
    /// Penalty factor (default 1).
    #[serde(default = "one")]
    pub factor: f64,
}

/// `kind = "length"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LengthConfig {
    /// Part name (default `length`).
    pub name: Option<String>,
    /// Weight in the total (default 1; RMT: `w`).
    #[serde(default = "one")]
    pub weight: f64,
    /// Peak value at `ℓ = B` (default 1).
    #[serde(default = "one")]
    pub r_max: f64,
    /// Fixed budget `B`; default: `metadata.budget` per sample.
    pub budget: Option<usize>,
}

/// `kind = "match"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    /// Part name (default `match`).
    pub name: Option<String>,
    /// Weight in the total (default 1; RMT: `1 − w`).
    #[serde(default = "one")]
    pub weight: f64,
    /// Value on an exact match (default 1).
    #[serde(default = "one")]
    pub correct: f64,
    /// Value otherwise (default 0).
    #[serde(default)]
    pub incorrect: f64,
}

/// `kind = "external"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalConfig {
    /// Part name, log prefix (default `external`).
    pub name: Option<String>,
    /// Weight in the total (default 1).
    #[serde(default = "one")]
    pub weight: f64,
    /// Program and arguments, e.g. `["python3", "reward_fns/gsm8k_reward.py"]` (required).
    pub command: Vec<String>,
    /// Per-request timeout in seconds (default 30), counted from when the plugin can take the
    /// request (see `reward_fns/README.md`).
    pub timeout_s: Option<f64>,
    /// Time for the plugin to start and answer the start-up handshake, seconds (default 60).
    pub startup_timeout_s: Option<f64>,
    /// Maximum requests in flight (default 16, at most 1024).
    pub concurrency: Option<usize>,
    /// Consecutive restarts allowed without a good answer (default 3).
    pub max_restarts: Option<u32>,
    /// First restart back-off in seconds, doubling per consecutive restart (default 0.5).
    pub backoff_s: Option<f64>,
    /// Environment variables passed to the plugin besides `PATH`, `HOME`, `LANG`, `LC_*` and
    /// `TMPDIR`; every other variable of rlpo's environment is withheld (default none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pass_env: Vec<String>,
}
