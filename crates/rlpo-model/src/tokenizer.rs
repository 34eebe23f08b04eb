//! Tokenizer (`tokenizer.json` through the `tokenizers` crate), chat template and end-of-sequence
//! ids of a model directory.
//!
//! EOS ids are the union of `generation_config.json` and `config.json` `eos_token_id` (int or list),
//! falling back to the tokenizer's `eos_token`.

use crate::chat_template::{ChatMessage, ChatTemplate};
use crate::config::ids_of;
use crate::error::{ModelError, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// Everything needed to turn chats into ids and ids into text.
#[derive(Debug)]
pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
    template: Option<ChatTemplate>,
    /// Token ids that end a response.
    pub eos_ids: Vec<i64>,
    /// Padding id (pad token, else first EOS).
    pub pad_id: i64,
}

fn read_json(path: &Path) -> Result<Option<Value>> {
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
    serde_json::from_str(&text).map(Some).map_err(|e| ModelError::config(path, e.to_string()))
}

/// `bos_token` etc. may be a string or `{"content": "..."}`.
fn token_string(v: &Value) -> Option<String> {
    v.as_str().map(str::to_string).or_else(|| v.get("content").and_then(Value::as_str).map(str::to_string))
}

impl TextTokenizer {
    /// Load from a model directory.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let tok_path = dir.join("tokenizer.json");
        if !tok_path.exists() {
            return Err(ModelError::MissingFile { path: tok_path, what: "tokenizer" });
        }
        let inner = tokenizers::Tokenizer::from_file(&tok_path)
            .map_err(|e| ModelError::Tokenizer(format!("{}: {e}", tok_path.display())))?;
        let tok_cfg = read_json(&dir.join("tokenizer_config.json"))?.unwrap_or(Value::Null);
        let mut special = BTreeMap::new();
        for key in ["bos_token", "eos_token", "pad_token", "unk_token"] {
            if let Some(s) = tok_cfg.get(key).and_then(token_string) {
                special.insert(key.to_string(), s);
            }
        }
        let jinja = dir.join("chat_template.jinja");
        let source = if jinja.exists() {
            Some(std::fs::read_to_string(&jinja).map_err(|e| ModelError::io(&jinja, e))?)
        } else {
            match tok_cfg.get("chat_template") {
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Array(list)) => list
                    .iter()
                    .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                    .and_then(|t| t.get("template"))
                    .and_then(Value::as_str)
                    .map(str::to_string),
                _ => None,
            }
        };
        let template = source.map(|s| ChatTemplate::new(&s, special.clone())).transpose()?;

        let mut eos_ids = Vec::new();
        for file in ["generation_config.json", "config.json"] {
            if let Some(v) = read_json(&dir.join(file))? {
                for id in ids_of(v.get("eos_token_id")) {
                    if !eos_ids.contains(&id) {
                        eos_ids.push(id);
                    }
                }
            }
        }
        let id_of = |s: &String| inner.token_to_id(s).map(i64::from);
        if eos_ids.is_empty() {
            eos_ids.extend(special.get("eos_token").and_then(id_of));
        }
        let pad_id = special.get("pad_token").and_then(id_of).or(eos_ids.first().copied()).unwrap_or(0);
        Ok(TextTokenizer { inner, template, eos_ids, pad_id })
    }

    /// Token ids of `text`; `add_special_tokens` applies the tokenizer's post-processor (BOS etc.).
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<i64>> {
        let enc = self.inner.encode(text, add_special_tokens).map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().iter().map(|&i| i as i64).collect())
    }

    /// Text of `ids`.
    pub fn decode(&self, ids: &[i64], skip_special_tokens: bool) -> Result<String> {
        let ids: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
        self.inner.decode(&ids, skip_special_tokens).map_err(|e| ModelError::Tokenizer(e.to_string()))
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Whether the model directory has a chat template.
    pub fn has_chat_template(&self) -> bool {
        self.template.is_some()
    }

    /// Render `messages` with the chat template.
    pub fn apply_chat_template(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        let t = self.template.as_ref().ok_or_else(|| {
            ModelError::Template("this model has no chat template (chat_template.jinja or tokenizer_config.json)".into())
        })?;
        t.render(messages, add_generation_prompt)
    }

    /// Render and tokenize a chat (special tokens come from the template text, none are added).
    pub fn encode_chat(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<Vec<i64>> {
        self.encode(&self.apply_chat_template(messages, add_generation_prompt)?, false)
    }

    /// Whether `id` ends a response.
    pub fn is_eos(&self, id: i64) -> bool {
        self.eos_ids.contains(&id)
    }
}
