//! Fuzzers of the data readers: damaged JSONL files (mutations of the verl and simple layouts,
//! random bytes) and damaged Parquet files (mutations of the pyarrow-written fixtures) must load
//! or fail with an error, never panic. Bounded case counts.

#[path = "../../../build_support/mutate.rs"]
mod mutate;

use proptest::prelude::*;
use rlpo_data::{load_jsonl, load_parquet, FieldNames};
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn jsonl_seeds() -> Vec<Vec<u8>> {
    ["verl_chat.jsonl", "simple_chat.jsonl"].iter().map(|f| std::fs::read(fixture(f)).expect("fixture")).collect()
}

fn parquet_seeds() -> Vec<Vec<u8>> {
    ["verl_chat.parquet", "verl_countdown.parquet"].iter().map(|f| std::fs::read(fixture(f)).expect("fixture")).collect()
}

/// Writes `bytes` to a fresh file and loads it with both answer settings.
fn load(bytes: &[u8], ext: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(format!("fuzz.{ext}"));
    std::fs::write(&path, bytes).expect("write");
    for require_answer in [true, false] {
        let _ = match ext {
            "jsonl" => load_jsonl(&path, &FieldNames::default(), require_answer, None),
            _ => load_parquet(&path, &FieldNames::default(), require_answer, None),
        };
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_jsonl(seed in 0usize..2, ops in mutate::ops(16)) {
        load(&mutate::apply(&jsonl_seeds()[seed], &ops), "jsonl");
    }

    #[test]
    fn random_jsonl(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        load(&bytes, "jsonl");
    }

    #[test]
    fn mutated_parquet(seed in 0usize..2, ops in mutate::ops(6)) {
        load(&mutate::apply(&parquet_seeds()[seed], &ops), "parquet");
    }
}

#[test]
fn the_seeds_load() {
    for s in jsonl_seeds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("s.jsonl");
        std::fs::write(&p, s).expect("write");
        assert!(!load_jsonl(&p, &FieldNames::default(), true, None).expect("seed loads").is_empty());
    }
    for f in ["verl_chat.parquet", "verl_countdown.parquet"] {
        assert!(!load_parquet(&fixture(f), &FieldNames::default(), true, None).expect("seed loads").is_empty());
    }
}
