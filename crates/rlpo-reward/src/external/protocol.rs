//! The JSON-lines wire format spoken with external reward plugins (documented for plugin authors
//! in `reward_fns/README.md`).
//!
//! Request (one line on the plugin's stdin per sample):
//! `{"id": 7, "prompt": "...", "response": "...", "ground_truth": "..." | null, "metadata": {...},
//!   "response_len": 123, "max_len": 2048}`
//!
//! Answer (one line on the plugin's stdout per request, any order):
//! `{"id": 7, "reward": 1.0, "parts": {"correct": 1.0}}` or `{"id": 7, "error": "why"}`.
//!
//! Start-up handshake (protocol 2): the first line each new instance receives is a request with
//! empty texts and a `handshake` object, `{"id": 0, "handshake": {"protocol": 2, "name": ...,
//! "concurrency": 16}, "prompt": "", ...}`. Any answer to it proves the plugin is up (so a
//! protocol-1 plugin that answers every request works unchanged); a protocol-2 plugin answers
//! `{"id": 0, "ready": true, "workers": 4}` to say how many requests it works on at once.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::types::RewardInput;

/// Longest excerpt of an offending line quoted in error messages and logs.
const EXCERPT_CHARS: usize = 120;

#[derive(Serialize)]
struct Request<'a> {
    id: u64,
    #[serde(flatten)]
    input: &'a RewardInput,
}

/// Version of the protocol rlpo speaks, sent in the handshake.
pub const PROTOCOL_VERSION: u32 = 2;

#[derive(Serialize)]
struct Handshake<'a> {
    protocol: u32,
    name: &'a str,
    concurrency: usize,
}

#[derive(Serialize)]
struct HandshakeRequest<'a> {
    id: u64,
    handshake: Handshake<'a>,
    #[serde(flatten)]
    input: &'a RewardInput,
}

/// The start-up handshake line for plugin `name` under `id`: a request with empty texts, so a
/// plugin that answers every request answers it too, plus the `handshake` object.
pub fn handshake_line(id: u64, name: &str, concurrency: usize) -> String {
    let input = RewardInput::default();
    let req = HandshakeRequest { id, handshake: Handshake { protocol: PROTOCOL_VERSION, name, concurrency }, input: &input };
    let mut line = serde_json::to_string(&req).unwrap_or_else(|_| format!("{{\"id\":{id},\"handshake\":{{}}}}"));
    line.push('\n');
    line
}

/// The request line for `input` under `id`, newline-terminated.
pub fn request_line(id: u64, input: &RewardInput) -> String {
    // Serialising plain strings, numbers and a `serde_json::Value` cannot fail; the fallback
    // keeps that an invariant rather than a panic and would surface as a plugin-side error.
    let mut line = serde_json::to_string(&Request { id, input }).unwrap_or_else(|e| {
        format!("{{\"id\":{id},\"serialization_error\":{:?}}}", e.to_string())
    });
    line.push('\n');
    line
}

/// What one line of plugin output means.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplyLine {
    /// A well-formed answer for request `id`: the reward and its parts, or the error to report.
    Answer {
        /// The request id echoed by the plugin.
        id: u64,
        /// `Ok((reward, parts))` or `Err(message)` (the plugin's `error`, or what was malformed).
        result: Result<(f64, BTreeMap<String, f64>), String>,
    },
    /// `{"id": N, "ready": true, "workers": W}`: a protocol-2 plugin's answer to the handshake.
    Ready {
        /// The handshake's id.
        id: u64,
        /// Requests the plugin works on at once, if it said (`workers`, a positive integer).
        workers: Option<usize>,
    },
    /// A line that cannot be attributed to a request (not JSON, not an object, no integer `id`).
    Garbage(String),
    /// A blank line; ignored.
    Blank,
}

/// A short, single-line quote of `line` for messages.
pub fn excerpt(line: &str) -> String {
    let mut s: String = line.chars().take(EXCERPT_CHARS).collect();
    if line.chars().count() > EXCERPT_CHARS {
        s.push('…');
    }
    s.replace('\n', "\\n")
}

/// Interprets one line of plugin stdout.
pub fn parse_reply(line: &str) -> ReplyLine {
    let line = line.trim();
    if line.is_empty() {
        return ReplyLine::Blank;
    }
    let value: serde_json::Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => return ReplyLine::Garbage(format!("not JSON ({e}): {}", excerpt(line))),
    };
    let Some(obj) = value.as_object() else {
        return ReplyLine::Garbage(format!("not a JSON object: {}", excerpt(line)));
    };
    let Some(id) = obj.get("id").and_then(serde_json::Value::as_u64) else {
        return ReplyLine::Garbage(format!("no integer `id`: {}", excerpt(line)));
    };
    if obj.get("ready") == Some(&serde_json::Value::Bool(true)) {
        let workers = obj.get("workers").and_then(serde_json::Value::as_u64).filter(|&w| w >= 1);
        return ReplyLine::Ready { id, workers: workers.map(|w| usize::try_from(w).unwrap_or(usize::MAX)) };
    }
    ReplyLine::Answer { id, result: answer_body(obj) }
}

/// The reward, parts and error of an answer object whose `id` is known.
fn answer_body(obj: &serde_json::Map<String, serde_json::Value>) -> Result<(f64, BTreeMap<String, f64>), String> {
    match obj.get("error") {
        None | Some(serde_json::Value::Null) => {}
        Some(serde_json::Value::String(msg)) => return Err(format!("plugin error: {msg}")),
        Some(other) => return Err(format!("plugin error: {other}")),
    }
    let reward = match obj.get("reward") {
        None | Some(serde_json::Value::Null) => return Err("answer has no `reward`".into()),
        Some(v) => v.as_f64().ok_or_else(|| format!("`reward` is not a number: {}", excerpt(&v.to_string())))?,
    };
    if !reward.is_finite() {
        return Err(format!("`reward` is not finite: {reward}"));
    }
    let mut parts = BTreeMap::new();
    match obj.get("parts") {
        None | Some(serde_json::Value::Null) => {}
        Some(serde_json::Value::Object(map)) => {
            for (k, v) in map {
                let x = v.as_f64().filter(|x| x.is_finite());
                let x = x.ok_or_else(|| format!("part `{k}` is not a finite number: {v}"))?;
                parts.insert(k.clone(), x);
            }
        }
        Some(other) => return Err(format!("`parts` is not an object: {}", excerpt(&other.to_string()))),
    }
    Ok((reward, parts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_has_id_and_all_fields() {
        let mut input = RewardInput::new("resp \"quoted\"\n", Some("42"));
        input.metadata = serde_json::json!({"k": 1});
        input.response_len = 5;
        input.max_len = 9;
        let line = request_line(3, &input);
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
        let v: serde_json::Value = serde_json::from_str(&line).expect("valid JSON");
        assert_eq!(v["id"], 3);
        assert_eq!(v["response"], "resp \"quoted\"\n");
        assert_eq!(v["ground_truth"], "42");
        assert_eq!(v["metadata"]["k"], 1);
        assert_eq!((v["response_len"].as_u64(), v["max_len"].as_u64()), (Some(5), Some(9)));
    }

    #[test]
    fn replies() {
        let ok = parse_reply(r#"{"id": 4, "reward": 1, "parts": {"a": 0.5}}"#);
        let parts = BTreeMap::from([("a".to_owned(), 0.5)]);
        assert_eq!(ok, ReplyLine::Answer { id: 4, result: Ok((1.0, parts)) });
        let err = parse_reply(r#"{"id": 4, "error": "boom", "reward": 1}"#);
        assert_eq!(err, ReplyLine::Answer { id: 4, result: Err("plugin error: boom".into()) });
        for bad in [r#"{"id": 4}"#, r#"{"id": 4, "reward": "1"}"#, r#"{"id": 4, "reward": 1, "parts": [1]}"#,
                    r#"{"id": 4, "reward": 1, "parts": {"a": "x"}}"#] {
            assert!(matches!(parse_reply(bad), ReplyLine::Answer { id: 4, result: Err(_) }), "{bad}");
        }
        for garbage in ["hello", "[1]", r#"{"reward": 1}"#, r#"{"id": -1, "reward": 1}"#, r#"{"id": "4", "reward": 1}"#,
                        r#"{"id": 4, "reward": NaN}"#] {
            assert!(matches!(parse_reply(garbage), ReplyLine::Garbage(_)), "{garbage}");
        }
        assert_eq!(parse_reply("  \r"), ReplyLine::Blank);
        assert_eq!(parse_reply(r#"{"id": 0, "ready": true, "workers": 4}"#), ReplyLine::Ready { id: 0, workers: Some(4) });
        assert_eq!(parse_reply(r#"{"id": 0, "ready": true, "workers": 0}"#), ReplyLine::Ready { id: 0, workers: None });
        assert_eq!(parse_reply(r#"{"id": 0, "ready": true}"#), ReplyLine::Ready { id: 0, workers: None });
    }

    #[test]
    fn handshake_is_a_request_with_empty_texts() {
        let line = handshake_line(9, "judge", 16);
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
        let v: serde_json::Value = serde_json::from_str(&line).expect("valid JSON");
        assert_eq!(v["id"], 9);
        assert_eq!(v["handshake"], serde_json::json!({"protocol": 2, "name": "judge", "concurrency": 16}));
        assert_eq!((v["prompt"].as_str(), v["response"].as_str()), (Some(""), Some("")));
        assert!(v["ground_truth"].is_null() && v["metadata"].is_null());
    }
}
