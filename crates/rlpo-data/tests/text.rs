//! Raw-text corpora for RMT mid-training: `.txt`, JSONL with a text field, and the built-in corpus.

use std::path::Path;

use rlpo_data::{load_samples, DataConfig, Dataset, Prompt, SourceKind, TextConfig, TextSplit};

fn text_cfg(path: &str) -> DataConfig {
    DataConfig {
        source: SourceKind::Text,
        path: Some(path.into()),
        ..DataConfig::default()
    }
}

#[test]
fn txt_documents_split_on_blank_lines_or_lines() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("c.txt"),
        "First doc,\nsecond line.\n\nSecond doc.\n\n\nThird.\n",
    )
    .unwrap();

    let docs = load_samples(&text_cfg("c.txt"), dir.path()).unwrap();
    let texts: Vec<String> = docs.iter().map(|d| d.prompt.flat_text()).collect();
    assert_eq!(texts, ["First doc,\nsecond line.", "Second doc.", "Third."]);
    assert_eq!(docs[1].id, "c.txt:4");
    assert!(docs
        .iter()
        .all(|d| d.answer.is_none() && matches!(d.prompt, Prompt::Text(_))));

    let mut cfg = text_cfg("c.txt");
    cfg.text = Some(TextConfig {
        split: TextSplit::Lines,
    });
    let lines = load_samples(&cfg, dir.path()).unwrap();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[1].prompt.flat_text(), "second line.");
}

#[test]
fn jsonl_corpus_reads_the_text_field() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("c.jsonl"),
        "{\"text\": \"alpha\"}\n{\"body\": {\"t\": \"beta\"}, \"text\": \"gamma\"}\n",
    )
    .unwrap();
    let docs = load_samples(&text_cfg("c.jsonl"), dir.path()).unwrap();
    assert_eq!(
        docs.iter()
            .map(|d| d.prompt.flat_text())
            .collect::<Vec<_>>(),
        ["alpha", "gamma"]
    );

    let mut cfg = text_cfg("c.jsonl");
    cfg.fields.text = "body.t".into();
    let err = load_samples(&cfg, dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("c.jsonl: line 1: field `body.t`: missing"),
        "{err}"
    );
}

#[test]
fn builtin_corpus_needs_no_files() {
    let mut ds =
        Dataset::from_config(&text_cfg("builtin:tiny"), Path::new("/nonexistent")).unwrap();
    assert_eq!(ds.len(), 10);
    let batch = ds.next_batch(3);
    assert!(batch.iter().all(|d| d.prompt.flat_text().len() > 100));
    assert!(ds
        .samples()
        .iter()
        .any(|d| d.prompt.flat_text().contains("Seven plus five is twelve")));
}

#[test]
fn text_source_requires_a_path() {
    let cfg = DataConfig {
        source: SourceKind::Text,
        ..DataConfig::default()
    };
    let err = cfg.validate().unwrap_err().to_string();
    assert!(
        err.contains("`data.path`") && err.contains("builtin:tiny"),
        "{err}"
    );
}
