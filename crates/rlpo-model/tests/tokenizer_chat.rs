//! Tokenizer ids and chat template renderings are identical to transformers' for SmolLM2 and for the
//! tiny Qwen-style `<|im_start|>` tokenizer (24 tricky strings, 4 conversations each).

mod common;
use common::*;
use rlpo_model::{ChatMessage, TextTokenizer};
use serde_json::Value;

fn reference() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("smollm2_reference.json")).unwrap()).unwrap()
}

fn check_ids(tok: &TextTokenizer, cases: &Value) -> usize {
    let cases = cases.as_array().unwrap();
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let want: Vec<i64> = case["ids"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
        assert_eq!(tok.encode(text, true).unwrap(), want, "text {text:?}");
    }
    cases.len()
}

#[test]
fn smollm2_and_tiny_tokenizers_match_transformers() {
    let r = reference();
    let smol = TextTokenizer::from_dir(&smollm2_dir()).unwrap();
    let n = check_ids(&smol, &r["tokenize"]);
    assert!(n >= 20);
    let tiny = TextTokenizer::from_dir(&fixtures().join("tokenizer")).unwrap();
    check_ids(&tiny, &r["tokenize_tiny"]);
    for case in r["decode"].as_array().unwrap() {
        let ids: Vec<i64> = case["ids"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
        assert_eq!(smol.decode(&ids, false).unwrap(), case["text"].as_str().unwrap());
    }
    assert_eq!(smol.eos_ids, vec![2]);
}

fn check_chat(tok: &TextTokenizer, cases: &Value) {
    for case in cases.as_array().unwrap() {
        let messages: Vec<ChatMessage> = serde_json::from_value(case["messages"].clone()).unwrap();
        let add = case["add_generation_prompt"].as_bool().unwrap();
        assert_eq!(tok.apply_chat_template(&messages, add).unwrap(), case["text"].as_str().unwrap(), "{messages:?}");
    }
}

#[test]
fn chat_templates_are_byte_identical_to_transformers() {
    let r = reference();
    check_chat(&TextTokenizer::from_dir(&smollm2_dir()).unwrap(), &r["chat_smollm2"]);
    let tiny = TextTokenizer::from_dir(&fixtures().join("tokenizer")).unwrap();
    check_chat(&tiny, &r["chat_qwen_style"]);
    // The Qwen-style template raises on an unknown role: that must be an error, not a panic.
    let e = tiny.apply_chat_template(&[ChatMessage::new("tool", "x")], true).unwrap_err().to_string();
    assert!(e.contains("unsupported role: tool"), "{e}");
}

#[test]
fn smollm2_chat_prompt_ids_match() {
    let r = reference();
    let smol = TextTokenizer::from_dir(&smollm2_dir()).unwrap();
    for (p, ids) in r["prompts"].as_array().unwrap().iter().zip(r["prompt_ids"].as_array().unwrap()) {
        let want: Vec<i64> = ids.as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
        let got = smol.encode_chat(&[ChatMessage::new("user", p.as_str().unwrap())], true).unwrap();
        assert_eq!(got, want);
    }
}
