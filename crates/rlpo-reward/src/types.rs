//! The data that flows through every reward function: one [`RewardInput`] per sampled response in,
//! one [`RewardOutput`] per response out.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// One sampled response to score.
///
/// This is also the body of an external plugin request (plus an `id`), so the field names are part
/// of the JSON-lines protocol documented in `reward_fns/README.md`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RewardInput {
    /// The prompt text the response answers (after the chat template, as the model saw it).
    pub prompt: String,
    /// The decoded response text.
    pub response: String,
    /// The reference answer, if the dataset has one.
    pub ground_truth: Option<String>,
    /// Free-form per-sample data from the dataset or the trainer (e.g. countdown `numbers` and
    /// `target`, an RMT `budget`). `null` when there is none.
    #[serde(default)]
    pub metadata: serde_json::Value,
    /// Response length in tokens, including EOS (the `|y|` of DAPO overlong shaping).
    pub response_len: usize,
    /// The generation limit in tokens that applied to this response (DAPO `L_max`).
    pub max_len: usize,
}

impl RewardInput {
    /// An input with only a response and a ground truth; lengths zero, metadata `null`.
    /// Handy in tests and examples.
    pub fn new(response: impl Into<String>, ground_truth: Option<&str>) -> Self {
        Self {
            response: response.into(),
            ground_truth: ground_truth.map(str::to_owned),
            ..Self::default()
        }
    }
}

/// Whether a reward was actually computed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RewardStatus {
    /// The value is a real reward.
    Ok,
    /// The reward could not be computed; the message says why.
    Error(String),
    /// The reward function did not answer within its time limit.
    Timeout,
}

impl RewardStatus {
    /// True for [`RewardStatus::Ok`].
    pub fn is_ok(&self) -> bool {
        matches!(self, Self::Ok)
    }
}

impl fmt::Display for RewardStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ok => f.write_str("ok"),
            Self::Error(msg) => write!(f, "error: {msg}"),
            Self::Timeout => f.write_str("timeout"),
        }
    }
}

/// How a verifier read the answer it judged. Never changes a score: it is there for majority
/// votes (`rlpo eval`'s maj@k compares [`AnswerInfo::answer`]) and for verifier audits
/// (`rlpo eval --audit` lists correct judgements that rest on a weak signal, see
/// [`AnswerInfo::weak`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnswerInfo {
    /// The answer judged, in the normal form the verifier compares (`7/2` for `3.5`, a countdown
    /// expression without spaces), so equal answers have equal text.
    pub answer: String,
    /// The rule that found it: `boxed`, `hashes`, `last_number`, `answer_tag`.
    pub rule: String,
    /// Found in the answer form the verifier asks for: an explicit marker (`\boxed{}`, `####`,
    /// `<answer>`), or for the `last_number` mode a response that is only the number. `false` when
    /// a fallback rule picked it out of free text.
    pub canonical: bool,
    /// The distinct candidate answers the response offers under the rule that found the answer
    /// (every `\boxed{}`, every `####` line, every number for the last-number rule, every
    /// `<answer>`/`\boxed{}` for countdown), normalised, in order of appearance, at most
    /// [`AnswerInfo::MAX_CANDIDATES`]. More than one: the response is ambiguous.
    pub candidates: Vec<String>,
    /// Whether the verifier judged the answer correct.
    pub correct: bool,
}

impl AnswerInfo {
    /// Cap on [`AnswerInfo::candidates`] (a long response can hold hundreds of numbers).
    pub const MAX_CANDIDATES: usize = 8;

    /// A correct judgement on a weak signal: no canonical answer form, or candidates that disagree.
    pub fn weak(&self) -> bool {
        self.correct && (!self.canonical || self.candidates.len() > 1)
    }
}

/// Distinct values of `items` in order of first appearance, at most [`AnswerInfo::MAX_CANDIDATES`].
pub(crate) fn distinct_candidates(items: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for it in items {
        if out.len() == AnswerInfo::MAX_CANDIDATES {
            break;
        }
        if !out.contains(&it) {
            out.push(it);
        }
    }
    out
}

/// The score of one response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RewardOutput {
    /// The reward. `NaN` when `status` is not `Ok` (so that a failure can never pass for a real
    /// value), except under `on_error = "zero"`, which sets 0 and keeps the failed status.
    pub value: f64,
    /// Named components, e.g. `math`, `format`, `overlong` for a combined reward, or whatever a
    /// plugin reports. Parts are unweighted.
    pub parts: BTreeMap<String, f64>,
    /// Whether `value` is a real reward.
    pub status: RewardStatus,
    /// How verifiers read the answer, named like `parts`: a function reports its own under `""`,
    /// a [`crate::RewardSet`] renames it to the function's name. Empty for rewards that do not
    /// extract an answer (format, length) and for plugins.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub answers: BTreeMap<String, AnswerInfo>,
}

impl RewardOutput {
    /// A successful reward with no parts.
    pub fn ok(value: f64) -> Self {
        Self { value, parts: BTreeMap::new(), status: RewardStatus::Ok, answers: BTreeMap::new() }
    }

    /// A successful reward with named parts.
    pub fn with_parts(value: f64, parts: BTreeMap<String, f64>) -> Self {
        Self { value, parts, status: RewardStatus::Ok, answers: BTreeMap::new() }
    }

    /// A failed reward; the value is `NaN`.
    pub fn error(msg: impl Into<String>) -> Self {
        Self { value: f64::NAN, parts: BTreeMap::new(), status: RewardStatus::Error(msg.into()), answers: BTreeMap::new() }
    }

    /// A reward that timed out; the value is `NaN`.
    pub fn timeout() -> Self {
        Self { value: f64::NAN, parts: BTreeMap::new(), status: RewardStatus::Timeout, answers: BTreeMap::new() }
    }

    /// This output with the verifier's own [`AnswerInfo`] (key `""`).
    #[must_use]
    pub fn with_answer(mut self, info: AnswerInfo) -> Self {
        self.answers.insert(String::new(), info);
        self
    }

    /// True when the status is `Ok`.
    pub fn is_ok(&self) -> bool {
        self.status.is_ok()
    }
}

/// A reward function: scores a batch of responses.
///
/// Implement this to add a reward in Rust (see `examples/custom_reward.rs`); use the `external`
/// kind for any other language. Contract:
///
/// - return exactly one output per input, in input order (a wrong count is a hard error);
/// - never panic on odd input: report per-sample problems with [`RewardOutput::error`];
/// - a value of a failed sample is never read as a reward, so put `NaN` there (the constructors do);
/// - an ok output must carry a finite value and finite parts: anything else is turned into a
///   failure of that sample (`returned a non-finite value`), never into a number.
///
/// `Send + Sync` because a [`crate::RewardSet`] scores its functions on parallel threads.
pub trait RewardFn: Send + Sync {
    /// Scores `batch`, one output per input.
    fn score(&self, batch: &[RewardInput]) -> Vec<RewardOutput>;

    /// `Some(reason)` once the function can never score again (an external plugin that used up
    /// its restarts). Under `on_error = "zero"` / `"drop_group"` the reward set then stops the run
    /// instead of failing every later sample. Default: never.
    fn gave_up(&self) -> Option<String> {
        None
    }
}
