//! HF chat templates rendered with minijinja, configured like transformers' jinja2 environment
//! (`trim_blocks`, `lstrip_blocks`, loop controls, `raise_exception`, a Python-compatible `tojson`,
//! and Python string methods such as `.strip()` / `.startswith()` through minijinja-contrib).
//!
//! The template comes from `chat_template.jinja` or `tokenizer_config.json` (`chat_template`, a
//! string or a list of named templates, where `default` is used).

use crate::error::{ModelError, Result};
use minijinja::{Environment, ErrorKind, Value};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One chat message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

impl ChatMessage {
    /// A message with `role` and `content`.
    pub fn new(role: &str, content: &str) -> Self {
        ChatMessage { role: role.into(), content: content.into() }
    }
}

/// A compiled chat template plus the special-token strings it may reference.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    /// `bos_token`, `eos_token`, ... made available to the template.
    pub special_tokens: BTreeMap<String, String>,
}

fn raise_exception(msg: String) -> std::result::Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
}

/// Python `json.dumps(x, ensure_ascii=False)` spelling: `", "` and `": "` separators.
fn tojson(value: Value, indent: Option<usize>) -> std::result::Result<Value, minijinja::Error> {
    let json: serde_json::Value =
        serde_json::to_value(&value).map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
    let mut out = String::new();
    write_json(&json, indent, 0, &mut out);
    Ok(Value::from_safe_string(out))
}

fn write_json(v: &serde_json::Value, indent: Option<usize>, depth: usize, out: &mut String) {
    use serde_json::Value as J;
    let newline = |out: &mut String, d: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * d));
        }
    };
    let item_sep = if indent.is_some() { "," } else { ", " };
    match v {
        J::Array(items) if !items.is_empty() => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, depth + 1);
                write_json(item, indent, depth + 1, out);
            }
            newline(out, depth);
            out.push(']');
        }
        J::Object(map) if !map.is_empty() => {
            out.push('{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, depth + 1);
                out.push_str(&serde_json::to_string(k).unwrap_or_default());
                out.push_str(": ");
                write_json(item, indent, depth + 1, out);
            }
            newline(out, depth);
            out.push('}');
        }
        other => out.push_str(&other.to_string()),
    }
}

impl ChatTemplate {
    /// Compile `source`.
    pub fn new(source: &str, special_tokens: BTreeMap<String, String>) -> Result<Self> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_filter("tojson", tojson);
        env.add_template_owned("chat", source.to_string()).map_err(|e| ModelError::Template(format!("compile: {e:#}")))?;
        Ok(ChatTemplate { env, special_tokens })
    }

    /// Render `messages`; `add_generation_prompt` appends the assistant header.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        let tmpl = self.env.get_template("chat").map_err(|e| ModelError::Template(e.to_string()))?;
        let mut ctx: BTreeMap<String, Value> =
            self.special_tokens.iter().map(|(k, v)| (k.clone(), Value::from(v.clone()))).collect();
        ctx.insert("messages".into(), Value::from_serialize(messages));
        ctx.insert("add_generation_prompt".into(), Value::from(add_generation_prompt));
        tmpl.render(ctx).map_err(|e| ModelError::Template(format!("render: {e:#}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raise_exception_surfaces_as_error() {
        let t = ChatTemplate::new("{% if messages[0].role != 'user' %}{{ raise_exception('first must be user') }}{% endif %}ok", BTreeMap::new()).unwrap();
        assert_eq!(t.render(&[ChatMessage::new("user", "hi")], false).unwrap(), "ok");
        let e = t.render(&[ChatMessage::new("assistant", "hi")], false).unwrap_err().to_string();
        assert!(e.contains("first must be user"), "{e}");
    }

    #[test]
    fn python_string_methods_and_tojson() {
        let t = ChatTemplate::new("{{ messages[0].content.strip() }}|{{ {'a': [1, 2]} | tojson }}", BTreeMap::new()).unwrap();
        assert_eq!(t.render(&[ChatMessage::new("user", "  x  ")], false).unwrap(), r#"x|{"a": [1, 2]}"#);
    }
}
