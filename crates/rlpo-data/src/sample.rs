//! One training example as every source yields it: a prompt (chat messages or plain text), an
//! optional reference answer, and the metadata a reward function or curriculum may need.
//!
//! Prompts stay as messages here; the chat template and tokenizer live in `rlpo-model`, which turns
//! a [`Prompt`] into token ids (stage 0 of the training step).

use serde::{Deserialize, Serialize};

/// One chat message, as in HF / OpenAI chat format and verl's `prompt` column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user`, `assistant`, ... (passed to the chat template unchanged).
    pub role: String,
    /// Message text.
    pub content: String,
}

impl Message {
    /// A `user` message.
    pub fn user(content: impl Into<String>) -> Self {
        Self {
            role: "user".into(),
            content: content.into(),
        }
    }
}

/// A prompt: either a conversation to be chat-templated, or raw text used as is (base models,
/// RMT mid-training documents).
///
/// Serialises untagged, so it round-trips with the JSON shapes it is read from: a list of
/// `{role, content}` objects or a string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    /// Chat messages, in order.
    Chat(Vec<Message>),
    /// Plain text, fed to the tokenizer without a chat template.
    Text(String),
}

impl Prompt {
    /// All message contents (or the text) joined by newlines: for logging, hashing and tests.
    pub fn flat_text(&self) -> String {
        match self {
            Prompt::Chat(msgs) => msgs
                .iter()
                .map(|m| m.content.as_str())
                .collect::<Vec<_>>()
                .join("\n"),
            Prompt::Text(t) => t.clone(),
        }
    }
}

/// One dataset row, normalised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Stable identifier: the configured id field if any, otherwise `<file name>:<line|row>` or
    /// `<task>-<index>` for synthetic tasks.
    pub id: String,
    /// What the policy is asked.
    pub prompt: Prompt,
    /// Reference answer for the verifier (verl: `reward_model.ground_truth`). Non-string values are
    /// stored as compact JSON text, e.g. a countdown ground truth `{"numbers":[...],"target":24}`.
    pub answer: Option<String>,
    /// Dataset name used to route the reward function (verl's `data_source`), e.g. `openai/gsm8k`.
    pub data_source: Option<String>,
    /// Difficulty score used by curricula; larger is harder. Any scale (levels, pass rates
    /// inverted, entropies): tiers are cut at quantiles, so only the order matters.
    pub difficulty: Option<f64>,
    /// Free-form extra information: verl's `extra_info`, plus the keys of an object-valued ground
    /// truth (countdown `numbers`, `target`); synthetic tasks put their parameters here. `Null`
    /// when there is none.
    pub metadata: serde_json::Value,
}
