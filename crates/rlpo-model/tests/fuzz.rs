//! Fuzzers of the model directory parsers: damaged safetensors files (mutations aimed at the JSON
//! header and the 8-byte length in front of it, truncations, random bytes) must fail to load with
//! an error, never panic; damaged chat templates must compile and render or fail with an error.
//! Bounded case counts; the model is tiny-qwen2 from `scripts/setup.sh`.

#[path = "../../../build_support/mutate.rs"]
mod mutate;
mod common;

use proptest::prelude::*;
use rlpo_model::{CausalLm, ChatMessage, ChatTemplate, LoadOptions};
use std::collections::BTreeMap;
use std::path::Path;

/// A copy of the tiny model directory with `weights` as its model.safetensors.
fn load_with(weights: &[u8]) {
    let src = common::fixtures().join("tiny-qwen2");
    let dir = tempfile::tempdir().expect("tempdir");
    for f in ["config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"] {
        std::fs::copy(src.join(f), dir.path().join(f)).expect("copy");
    }
    std::fs::write(dir.path().join("model.safetensors"), weights).expect("write");
    let _ = CausalLm::load(dir.path(), &LoadOptions::default());
}

fn weights() -> Vec<u8> {
    std::fs::read(common::fixtures().join("tiny-qwen2").join("model.safetensors")).expect("fixture weights")
}

/// Mutates only the first `8 + header` bytes (length prefix and JSON header), keeping the data.
fn mutate_header(w: &[u8], ops: &[mutate::Op]) -> Vec<u8> {
    let n = u64::from_le_bytes(w[..8].try_into().expect("8 bytes")) as usize;
    let head = mutate::apply(&w[..8 + n], ops);
    let mut out = head;
    out.extend_from_slice(&w[8 + n..]);
    out
}

fn template_seeds() -> Vec<String> {
    let tiny = std::fs::read_to_string(common::fixtures().join("tiny-qwen2").join("chat_template.jinja")).expect("template");
    vec![
        tiny,
        "{% for m in messages %}<|{{ m.role }}|>{{ m.content | trim }}{% if not loop.last %}\n{% endif %}{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}".into(),
        "{{ bos_token }}{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('no system') }}{% endif %}{{ m.content | tojson }}{% endfor %}".into(),
    ]
}

fn render(source: &str) {
    let specials = BTreeMap::from([("bos_token".to_owned(), "<s>".to_owned()), ("eos_token".to_owned(), "</s>".to_owned())]);
    if let Ok(t) = ChatTemplate::new(source, specials) {
        let msgs = [ChatMessage::new("system", "be brief"), ChatMessage::new("user", "What is 2+2? \"quoted\" {{ x }}")];
        let _ = t.render(&msgs, true);
        let _ = t.render(&msgs[1..], false);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn safetensors_with_a_damaged_header(ops in mutate::ops(6)) {
        load_with(&mutate_header(&weights(), &ops));
    }

    #[test]
    fn safetensors_damaged_anywhere(ops in mutate::ops(4)) {
        load_with(&mutate::apply(&weights(), &ops));
    }

    #[test]
    fn safetensors_from_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        load_with(&bytes);
    }

    #[test]
    fn chat_templates_mutated(seed in 0usize..3, ops in mutate::ops(8)) {
        render(&String::from_utf8_lossy(&mutate::apply(template_seeds()[seed].as_bytes(), &ops)));
    }
}

#[test]
fn the_seeds_are_valid() {
    let dir = common::fixtures().join("tiny-qwen2");
    CausalLm::load(Path::new(&dir), &LoadOptions::default()).expect("seed weights load");
    for (i, s) in template_seeds().iter().enumerate() {
        let t = ChatTemplate::new(s, BTreeMap::new()).unwrap_or_else(|e| panic!("template {i}: {e}"));
        if i < 2 {
            t.render(&[ChatMessage::new("user", "hi")], true).unwrap_or_else(|e| panic!("template {i}: {e}"));
        }
    }
}
