//! The `[data]` recipe section: which source to read, how to map its fields, shuffling and seeds.
//!
//! Every struct denies unknown keys, so a typo such as `shufle = false` fails when the recipe is
//! parsed, naming the key. [`DataConfig::validate`] then checks values and combinations serde cannot
//! (a `path` for a synthetic source, digits out of range, ...) and names the offending recipe key.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::synthetic::SyntheticConfig;

/// Which kind of data source `[data]` describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// JSON Lines, one object per line (verl layout or `{"prompt"|"messages", "answer"}`).
    Jsonl,
    /// Apache Parquet in verl's layout (as written by pyarrow / HF datasets).
    Parquet,
    /// A built-in generated task (`[data.synthetic]`); needs no files. The default, so that an
    /// absent `[data]` section gives the CPU quickstart's single-digit arithmetic.
    #[default]
    Synthetic,
    /// A raw-text corpus for RMT mid-training: `.txt`, JSONL with a text field, or `builtin:tiny`.
    Text,
}

impl SourceKind {
    /// The lowercase name used in recipes.
    pub fn name(self) -> &'static str {
        match self {
            SourceKind::Jsonl => "jsonl",
            SourceKind::Parquet => "parquet",
            SourceKind::Synthetic => "synthetic",
            SourceKind::Text => "text",
        }
    }
}

/// What the trainer does with a prompt longer than the model's context (`data.too_long`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TooLong {
    /// Stop with an error naming the row (the default: a dataset that does not fit the model is
    /// a mistake to fix, and `rlpo check` finds every such row before training).
    #[default]
    Error,
    /// Skip the row, draw the next one instead, and count it (`data/skipped_too_long`).
    Skip,
}

impl TooLong {
    /// The recipe spelling.
    pub fn name(self) -> &'static str {
        match self {
            TooLong::Error => "error",
            TooLong::Skip => "skip",
        }
    }
}

/// The `[data]` recipe section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// Source kind: `"jsonl"`, `"parquet"`, `"synthetic"` (default) or `"text"`.
    pub source: SourceKind,
    /// Data file for `jsonl`, `parquet` and `text` sources. Relative paths are resolved against the
    /// directory the caller passes to [`crate::load_samples`] (the trainer uses the working
    /// directory). For `text`, `builtin:tiny` selects the small corpus shipped in this crate.
    pub path: Option<PathBuf>,
    /// Shuffle the sample order, with a fresh permutation each epoch (default `true`).
    pub shuffle: bool,
    /// Seed for shuffling and, unless `[data.synthetic] seed` is set, for synthetic generation.
    pub seed: u64,
    /// Keep only the first N rows of the file (in file order, before shuffling). `None`: all rows.
    pub max_samples: Option<usize>,
    /// Fail on a row without an answer (default `true`: RL with a verifier needs one). Set to
    /// `false` for reward functions that ignore the reference answer.
    pub require_answer: bool,
    /// A prompt with at least as many tokens as the model's context (`max_position_embeddings`),
    /// chat template included: `"error"` (default) stops naming the row, `"skip"` skips it.
    pub too_long: TooLong,
    /// Field names for file sources.
    pub fields: FieldNames,
    /// Options for `source = "synthetic"`; absent means single-digit arithmetic with defaults.
    pub synthetic: Option<SyntheticConfig>,
    /// Options for `source = "text"`.
    pub text: Option<TextConfig>,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            source: SourceKind::default(),
            path: None,
            shuffle: true,
            seed: 0,
            max_samples: None,
            require_answer: true,
            too_long: TooLong::default(),
            fields: FieldNames::default(),
            synthetic: None,
            text: None,
        }
    }
}

/// Where each [`crate::Sample`] field is read from in a row: dotted paths into nested objects
/// (`reward_model.ground_truth`); a numeric segment indexes a list (`messages.0.content`).
/// Defaults read both verl's layout and the simple `{"prompt"|"messages", "answer"}` layout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FieldNames {
    /// Prompt field: a string or a list of `{role, content}` messages (default `prompt`).
    pub prompt: String,
    /// Used when the prompt field is absent from a row: a list of messages (default `messages`).
    pub messages: String,
    /// Reference answer. Unset: `answer`, then `reward_model.ground_truth`, whichever a row has.
    /// A row without an answer is an error unless `data.require_answer = false`.
    pub answer: Option<String>,
    /// Dataset name for reward routing (default `data_source`); optional in rows.
    pub data_source: String,
    /// Numeric difficulty. Unset: `difficulty`, then `extra_info.difficulty`, optional in rows.
    /// Set: only this path, and a row without it is an error.
    pub difficulty: Option<String>,
    /// Object copied into `Sample::metadata` (default `extra_info`); optional in rows.
    pub metadata: String,
    /// Sample id (string or integer). Unset: `<file name>:<line or row>`.
    pub id: Option<String>,
    /// Document text for `source = "text"` with a JSONL file (default `text`).
    pub text: String,
}

impl Default for FieldNames {
    fn default() -> Self {
        Self {
            prompt: "prompt".into(),
            messages: "messages".into(),
            answer: None,
            data_source: "data_source".into(),
            difficulty: None,
            metadata: "extra_info".into(),
            id: None,
            text: "text".into(),
        }
    }
}

/// How a `.txt` corpus is cut into documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TextSplit {
    /// Documents are separated by one or more blank lines (paragraphs); the default, because it
    /// keeps multi-line prose together and still allows one-line documents.
    #[default]
    BlankLines,
    /// Every non-blank line is a document.
    Lines,
}

/// The `[data.text]` section.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TextConfig {
    /// Document boundaries in `.txt` files: `"blank_lines"` (default) or `"lines"`.
    pub split: TextSplit,
}

/// The path value that selects the corpus embedded in this crate.
pub const BUILTIN_TINY: &str = "builtin:tiny";

fn config_err(key: &str, reason: impl Into<String>) -> Error {
    Error::Config {
        key: key.into(),
        reason: reason.into(),
    }
}

impl DataConfig {
    /// Checks values and combinations; the error names the recipe key (`data.path`, ...).
    pub fn validate(&self) -> Result<()> {
        let src = self.source.name();
        match self.source {
            SourceKind::Jsonl | SourceKind::Parquet | SourceKind::Text => {
                if self.path.is_none() {
                    let hint = if self.source == SourceKind::Text {
                        format!(" (or \"{BUILTIN_TINY}\" for the built-in corpus)")
                    } else {
                        String::new()
                    };
                    return Err(config_err(
                        "data.path",
                        format!("required when data.source = \"{src}\"{hint}"),
                    ));
                }
            }
            SourceKind::Synthetic => {
                if self.path.is_some() {
                    return Err(config_err(
                        "data.path",
                        "not used by data.source = \"synthetic\"; set data.source to \"jsonl\", \
                         \"parquet\" or \"text\" to read a file",
                    ));
                }
            }
        }
        if self.synthetic.is_some() && self.source != SourceKind::Synthetic {
            return Err(config_err(
                "data.synthetic",
                format!("only used by data.source = \"synthetic\", but data.source = \"{src}\""),
            ));
        }
        if self.text.is_some() && self.source != SourceKind::Text {
            return Err(config_err(
                "data.text",
                format!("only used by data.source = \"text\", but data.source = \"{src}\""),
            ));
        }
        if self.max_samples == Some(0) {
            return Err(config_err(
                "data.max_samples",
                "must be at least 1 (omit it for all rows)",
            ));
        }
        self.fields.validate()?;
        if let Some(syn) = &self.synthetic {
            syn.validate()?;
        }
        Ok(())
    }

    /// The synthetic options in force (the section, or its defaults).
    pub fn synthetic_or_default(&self) -> SyntheticConfig {
        self.synthetic.clone().unwrap_or_default()
    }
}

impl FieldNames {
    /// Each configured path must be non-empty with no empty segments (`a..b`, `.a`).
    pub fn validate(&self) -> Result<()> {
        let required = [
            ("prompt", Some(&self.prompt)),
            ("messages", Some(&self.messages)),
            ("answer", self.answer.as_ref()),
            ("data_source", Some(&self.data_source)),
            ("difficulty", self.difficulty.as_ref()),
            ("metadata", Some(&self.metadata)),
            ("id", self.id.as_ref()),
            ("text", Some(&self.text)),
        ];
        for (name, path) in required {
            if let Some(p) = path {
                if p.is_empty() || p.split('.').any(str::is_empty) {
                    return Err(config_err(
                        &format!("data.fields.{name}"),
                        format!("`{p}` is not a field path (use names joined by dots)"),
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> std::result::Result<DataConfig, String> {
        #[derive(Deserialize)]
        struct Recipe {
            data: DataConfig,
        }
        toml::from_str::<Recipe>(s)
            .map(|r| r.data)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_the_quickstart() {
        let cfg = parse("[data]\n").unwrap();
        assert_eq!(cfg.source, SourceKind::Synthetic);
        assert!(cfg.shuffle);
        assert_eq!(cfg.too_long, TooLong::Error);
        cfg.validate().unwrap();
        assert_eq!(parse("[data]\ntoo_long = \"skip\"\n").unwrap().too_long, TooLong::Skip);
        let err = parse("[data]\ntoo_long = \"truncate\"\n").unwrap_err();
        assert!(err.contains("too_long") || err.contains("truncate"), "{err}");
    }

    #[test]
    fn unknown_key_is_named() {
        let err = parse("[data]\nshufle = false\n").unwrap_err();
        assert!(err.contains("shufle"), "{err}");
        let err = parse("[data.fields]\nanswr = \"x\"\n").unwrap_err();
        assert!(err.contains("answr"), "{err}");
    }

    #[test]
    fn validation_names_keys() {
        let cfg = parse("[data]\nsource = \"jsonl\"\n").unwrap();
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("`data.path`"), "{err}");

        let cfg = parse("[data]\npath = \"x.jsonl\"\n").unwrap();
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("`data.path`"));

        let cfg = parse(
            "[data]\nsource = \"jsonl\"\npath = \"a\"\n[data.synthetic]\ntask = \"countdown\"\n",
        )
        .unwrap();
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("`data.synthetic`"));

        let cfg =
            parse("[data]\nsource = \"jsonl\"\npath = \"a\"\n[data.fields]\nanswer = \"a..b\"\n")
                .unwrap();
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("`data.fields.answer`"));

        let cfg = parse("[data]\nmax_samples = 0\n").unwrap();
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("`data.max_samples`"));
    }
}
