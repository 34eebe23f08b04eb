//! Turning one decoded row (a JSON object, whether it came from JSONL or Parquet) into a [`Sample`],
//! following the configured [`FieldNames`].
//!
//! Both file formats go through this one function so that a Parquet file and the equivalent JSONL
//! file are guaranteed to load to the same samples, and report errors the same way.

use std::path::Path;

use serde_json::Value;

use crate::config::FieldNames;
use crate::error::{Error, Result, RowRef};
use crate::sample::{Message, Prompt, Sample};

/// Fallback paths for the answer when `fields.answer` is unset: simple layout, then verl's.
const AUTO_ANSWER: [&str; 2] = ["answer", "reward_model.ground_truth"];
/// Fallback paths for the difficulty when `fields.difficulty` is unset.
const AUTO_DIFFICULTY: [&str; 2] = ["difficulty", "extra_info.difficulty"];

/// Follows a dotted path through nested objects; a numeric segment indexes a list. JSON `null`
/// (a Parquet null) counts as absent.
pub fn lookup<'v>(value: &'v Value, path: &str) -> Option<&'v Value> {
    let mut cur = value;
    for seg in path.split('.') {
        cur = match cur {
            Value::Object(map) => map.get(seg)?,
            Value::Array(items) => items.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    (!cur.is_null()).then_some(cur)
}

/// Where the row came from, for ids and error messages.
pub(crate) struct RowCtx<'a> {
    pub path: &'a Path,
    pub row: RowRef,
}

impl RowCtx<'_> {
    pub(crate) fn err(&self, field: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::Field {
            path: self.path.to_path_buf(),
            row: self.row,
            field: field.into(),
            reason: reason.into(),
        }
    }

    fn default_id(&self) -> String {
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        match self.row {
            RowRef::Line(n) | RowRef::Row(n) => format!("{name}:{n}"),
        }
    }
}

/// Short description of a JSON value's type, for "expected X, found Y" messages.
pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn keys_of(row: &Value) -> String {
    match row {
        Value::Object(map) => map
            .keys()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(", "),
        _ => String::new(),
    }
}

/// Builds a [`Sample`] from one row. `require_answer` makes a row without an answer an error
/// (with the answer path configured or auto-detected alike).
pub(crate) fn sample_from_row(
    row: &Value,
    fields: &FieldNames,
    require_answer: bool,
    ctx: &RowCtx<'_>,
) -> Result<Sample> {
    let prompt = match (lookup(row, &fields.prompt), lookup(row, &fields.messages)) {
        (Some(v), _) => parse_prompt(v, &fields.prompt, ctx)?,
        (None, Some(v)) => parse_prompt(v, &fields.messages, ctx)?,
        (None, None) => {
            return Err(ctx.err(
                &fields.prompt,
                format!(
                    "missing (also tried `{}`); the row has: {}",
                    fields.messages,
                    keys_of(row)
                ),
            ))
        }
    };

    let answer_value = match &fields.answer {
        Some(path) => lookup(row, path),
        None => AUTO_ANSWER.iter().find_map(|p| lookup(row, p)),
    };
    let answer = answer_value.map(value_text);
    if answer.is_none() && require_answer {
        let (field, tried) = match &fields.answer {
            Some(p) => (p.clone(), String::new()),
            None => (
                AUTO_ANSWER[0].to_string(),
                format!(" (also tried `{}`)", AUTO_ANSWER[1]),
            ),
        };
        return Err(ctx.err(
            field,
            format!(
                "missing{tried}; the row has: {} (set data.require_answer = false if answers \
                     are not needed)",
                keys_of(row)
            ),
        ));
    }

    let difficulty = match &fields.difficulty {
        Some(path) => match lookup(row, path) {
            Some(v) => Some(number(v, path, ctx)?),
            None => return Err(ctx.err(path, format!("missing; the row has: {}", keys_of(row)))),
        },
        None => AUTO_DIFFICULTY
            .iter()
            .find_map(|p| lookup(row, p).map(|v| (p, v)))
            .map(|(p, v)| number(v, p, ctx))
            .transpose()?,
    };

    let data_source = lookup(row, &fields.data_source).map(value_text);

    let id = match &fields.id {
        Some(path) => match lookup(row, path) {
            Some(v) => value_text(v),
            None => return Err(ctx.err(path, "missing (configured as data.fields.id)")),
        },
        None => ctx.default_id(),
    };

    let mut metadata = lookup(row, &fields.metadata)
        .cloned()
        .unwrap_or(Value::Null);
    // Structured ground truths (TinyZero/verl countdown: `{"target", "numbers"}`) are also merged
    // into the metadata, where verifiers look for per-sample task data; existing keys win.
    if let Some(Value::Object(truth)) = answer_value {
        if metadata.is_null() {
            metadata = Value::Object(Default::default());
        }
        if let Value::Object(meta) = &mut metadata {
            for (k, v) in truth {
                meta.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
    }

    Ok(Sample {
        id,
        prompt,
        answer,
        data_source,
        difficulty,
        metadata,
    })
}

/// A prompt is a string or a non-empty list of `{role, content}` objects (extra keys, such as
/// `name`, are ignored).
fn parse_prompt(v: &Value, field: &str, ctx: &RowCtx<'_>) -> Result<Prompt> {
    match v {
        Value::String(s) => Ok(Prompt::Text(s.clone())),
        Value::Array(items) if items.is_empty() => Err(ctx.err(field, "empty message list")),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let part = |key: &str| -> Result<String> {
                    match m.get(key) {
                        Some(Value::String(s)) => Ok(s.clone()),
                        Some(other) => Err(ctx.err(
                            format!("{field}[{i}].{key}"),
                            format!("expected a string, found {}", type_name(other)),
                        )),
                        None => Err(ctx.err(format!("{field}[{i}].{key}"), "missing")),
                    }
                };
                if !m.is_object() {
                    return Err(ctx.err(
                        format!("{field}[{i}]"),
                        format!(
                            "expected a {{role, content}} object, found {}",
                            type_name(m)
                        ),
                    ));
                }
                Ok(Message {
                    role: part("role")?,
                    content: part("content")?,
                })
            })
            .collect::<Result<Vec<_>>>()
            .map(Prompt::Chat),
        other => Err(ctx.err(
            field,
            format!(
                "expected a string or a list of {{role, content}} messages, found {}",
                type_name(other)
            ),
        )),
    }
}

/// Strings as they are; numbers and booleans as their JSON text; objects and lists as compact
/// JSON (e.g. a countdown ground truth `{"numbers":[...],"target":24}`) for the verifier to parse.
fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A finite number, or a string that parses as one (some datasets store levels as `"3"`).
fn number(v: &Value, field: &str, ctx: &RowCtx<'_>) -> Result<f64> {
    let parsed = match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    match parsed {
        Some(x) if x.is_finite() => Ok(x),
        _ => Err(ctx.err(
            field,
            format!("expected a finite number, found {}", describe(v)),
        )),
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::String(s) => format!("the string {s:?}"),
        other => type_name(other).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lookup_follows_dots_and_indices() {
        let row = json!({"a": {"b": [10, {"c": "x"}]}, "n": null});
        assert_eq!(lookup(&row, "a.b.0"), Some(&json!(10)));
        assert_eq!(lookup(&row, "a.b.1.c"), Some(&json!("x")));
        assert_eq!(lookup(&row, "a.z"), None);
        assert_eq!(lookup(&row, "n"), None);
    }
}
