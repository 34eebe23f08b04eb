//! Loading hand-written samples for `rlpo reward test`: one JSON object per line with `response`
//! (required), `prompt`, `ground_truth` (or `answer`; string or number), `metadata`, and optional
//! `response_len` / `max_len` in tokens. Other keys are ignored, so dataset rows can be reused.
//! Without `response_len`, the response's character count stands in (there is no tokenizer here).

use std::path::Path;

use serde::Deserialize;

use crate::error::{RewardError, Result};
use crate::types::RewardInput;

#[derive(Deserialize)]
struct Row {
    #[serde(default)]
    prompt: String,
    response: String,
    ground_truth: Option<serde_json::Value>,
    answer: Option<serde_json::Value>,
    #[serde(default)]
    metadata: serde_json::Value,
    response_len: Option<usize>,
    #[serde(default)]
    max_len: usize,
}

fn text_of(v: &serde_json::Value) -> std::result::Result<Option<String>, String> {
    match v {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::String(s) => Ok(Some(s.clone())),
        serde_json::Value::Number(n) => Ok(Some(n.to_string())),
        other => Err(format!("ground_truth/answer must be a string or number, got {other}")),
    }
}

/// Parses JSONL text; `path` is only used in error messages. Blank lines are skipped.
pub fn parse_samples(text: &str, path: &Path) -> Result<Vec<RewardInput>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let err = |msg: String| RewardError::Samples { path: path.to_owned(), line: i + 1, msg };
        let row: Row = serde_json::from_str(line).map_err(|e| err(e.to_string()))?;
        let gt = match (&row.ground_truth, &row.answer) {
            (Some(g), _) if !g.is_null() => text_of(g),
            (_, Some(a)) => text_of(a),
            _ => Ok(None),
        }
        .map_err(err)?;
        out.push(RewardInput {
            response_len: row.response_len.unwrap_or_else(|| row.response.chars().count()),
            prompt: row.prompt,
            response: row.response,
            ground_truth: gt,
            metadata: row.metadata,
            max_len: row.max_len,
        });
    }
    Ok(out)
}

/// Reads and parses a samples JSONL file.
pub fn load_samples(path: &Path) -> Result<Vec<RewardInput>> {
    let text = std::fs::read_to_string(path).map_err(|source| RewardError::Io { path: path.to_owned(), source })?;
    parse_samples(&text, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows() {
        let text = r#"{"prompt": "p", "response": "r", "ground_truth": "4", "metadata": {"k": 1}, "response_len": 7, "max_len": 9}

{"response": "héllo", "answer": 72, "extra": true}
{"response": "x", "ground_truth": null, "answer": "5"}
{"response": "x"}"#;
        let s = parse_samples(text, Path::new("t.jsonl")).expect("valid");
        assert_eq!(s.len(), 4);
        assert_eq!((s[0].ground_truth.as_deref(), s[0].response_len, s[0].max_len), (Some("4"), 7, 9));
        assert_eq!(s[0].metadata["k"], 1);
        assert_eq!((s[1].ground_truth.as_deref(), s[1].response_len), (Some("72"), 5));
        assert_eq!(s[2].ground_truth.as_deref(), Some("5"));
        assert_eq!(s[3].ground_truth, None);
    }

    #[test]
    fn errors_name_the_line() {
        let e = parse_samples("{\"response\": \"a\"}\n{\"prompt\": \"no response\"}", Path::new("s.jsonl"))
            .expect_err("missing response");
        assert!(e.to_string().starts_with("s.jsonl:2:"), "{e}");
        let e = parse_samples("{\"response\": \"a\", \"answer\": [1]}", Path::new("s.jsonl")).expect_err("bad answer");
        assert!(e.to_string().contains("string or number"), "{e}");
    }
}
