//! File formats: the pyarrow-written verl Parquet fixtures against their JSONL twins, and error
//! messages that name the file, the row and the field. Fixtures come from
//! `tests/fixtures/make_verl_parquet.py`; expected values below are copied from that script.

use std::io::Write;
use std::path::{Path, PathBuf};

use rlpo_data::{
    load_jsonl, load_parquet, load_samples, DataConfig, Error, FieldNames, Message, Prompt, Sample,
    SourceKind,
};
use serde_json::json;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn defaults() -> FieldNames {
    FieldNames::default()
}

fn user(text: &str) -> Message {
    Message {
        role: "user".into(),
        content: text.into(),
    }
}

#[test]
fn verl_parquet_matches_the_script() {
    let s = load_parquet(&fixture("verl_chat.parquet"), &defaults(), true, None).unwrap();
    assert_eq!(s.len(), 5);
    assert_eq!(
        s[0].prompt,
        Prompt::Chat(vec![user(
            "Natalia sold 48 clips in April and half as many in May. How many clips did she sell altogether?"
        )])
    );
    let Prompt::Chat(msgs) = &s[1].prompt else {
        panic!("row 1 should be chat: {:?}", s[1].prompt)
    };
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[0].role, "system");
    assert_eq!(
        msgs[0].content,
        "Please reason step by step, and put your final answer within \\boxed{}."
    );
    assert_eq!(
        s[3].prompt.flat_text(),
        "Compute $\\dbinom{8}{4}$. Unicode: π ≈ 3.14159, ünïcödé."
    );
    assert_eq!(
        s[4].prompt.flat_text(),
        "Line one\nline two with \"quotes\" and a tab\there."
    );
    let answers: Vec<_> = s.iter().map(|x| x.answer.as_deref().unwrap()).collect();
    assert_eq!(answers, ["72", "10", "12", "70", "-3"]);
    assert_eq!(s[3].data_source.as_deref(), Some("lighteval/MATH"));
    let diffs: Vec<_> = s.iter().map(|x| x.difficulty.unwrap()).collect();
    assert_eq!(diffs, [1.0, 2.5, 0.5, 4.0, 3.0]);
    assert_eq!(
        s[2].metadata,
        json!({"split": "train", "index": 2, "difficulty": 0.5})
    );
    // Row indices continue across row groups (the file has two rows per group).
    assert_eq!(s[4].id, "verl_chat.parquet:4");
}

#[test]
fn parquet_and_jsonl_load_to_the_same_samples() {
    let pq = load_parquet(&fixture("verl_chat.parquet"), &defaults(), true, None).unwrap();
    let verl = load_jsonl(&fixture("verl_chat.jsonl"), &defaults(), true, None).unwrap();
    let simple = load_jsonl(&fixture("simple_chat.jsonl"), &defaults(), true, None).unwrap();
    assert_eq!(pq.len(), verl.len());
    assert_eq!(pq.len(), simple.len());
    let strip_id = |v: &[Sample]| -> Vec<Sample> {
        v.iter()
            .cloned()
            .map(|mut s| {
                s.id.clear();
                s
            })
            .collect()
    };
    // Same layout in both formats: everything but the id (which names the file) is identical.
    assert_eq!(strip_id(&pq), strip_id(&verl));
    // The simple layout carries only prompts and answers.
    for (a, b) in pq.iter().zip(&simple) {
        assert_eq!(a.prompt, b.prompt);
        assert_eq!(a.answer, b.answer);
        assert_eq!(b.data_source, None);
    }
    assert_eq!(
        verl[1].id, "verl_chat.jsonl:2",
        "JSONL ids use 1-based lines"
    );
}

#[test]
fn plain_string_prompt_and_struct_ground_truth() {
    let s = load_parquet(&fixture("verl_text.parquet"), &defaults(), true, None).unwrap();
    assert_eq!(
        s[0].prompt,
        Prompt::Text("What is 3 * 4? Answer with just the number.".into())
    );
    assert_eq!(s[1].answer.as_deref(), Some("7"));

    let s = load_parquet(&fixture("verl_countdown.parquet"), &defaults(), true, None).unwrap();
    let truth: serde_json::Value = serde_json::from_str(s[0].answer.as_deref().unwrap()).unwrap();
    assert_eq!(truth, json!({"target": 46, "numbers": [3, 7, 25]}));
    // ...and merged into the metadata, where the countdown verifier reads numbers and target.
    assert_eq!(s[0].metadata, json!({"target": 46, "numbers": [3, 7, 25]}));
}

#[test]
fn missing_parquet_column_names_file_row_and_field() {
    let path = fixture("verl_missing_column.parquet");
    let mut fields = defaults();
    fields.answer = Some("reward_model.ground_truth".into());
    let err = load_parquet(&path, &fields, true, None).unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Field {
                row: rlpo_data::RowRef::Row(0),
                ..
            }
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("verl_missing_column.parquet"), "{msg}");
    assert!(msg.contains("row 0"), "{msg}");
    assert!(msg.contains("`reward_model.ground_truth`"), "{msg}");
    assert!(msg.contains("missing"), "{msg}");

    // Auto-detected answer: the message says which fields were tried.
    let msg = load_parquet(&path, &defaults(), true, None)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("row 0: field `answer`") && msg.contains("reward_model.ground_truth"),
        "{msg}"
    );

    // Without requiring answers the same file loads.
    let s = load_parquet(&path, &defaults(), false, None).unwrap();
    assert_eq!(s.len(), 3);
    assert!(s.iter().all(|x| x.answer.is_none()));
}

#[test]
fn bad_parquet_row_names_file_row_and_field() {
    let err = load_parquet(&fixture("verl_bad_row.parquet"), &defaults(), true, None).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("verl_bad_row.parquet: row 3: field `prompt[0].content`"),
        "{msg}"
    );
    // Rows before the bad one are fine: limiting to 3 rows loads.
    assert_eq!(
        load_parquet(&fixture("verl_bad_row.parquet"), &defaults(), true, Some(3))
            .unwrap()
            .len(),
        3
    );
}

fn write_tmp(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::File::create(&path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    path
}

#[test]
fn jsonl_errors_name_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let good = r#"{"prompt": "What is 1 + 1?", "answer": "2"}"#;

    // Malformed JSON on line 3 (line 2 is blank and still counted).
    let p = write_tmp(
        &dir,
        "broken.jsonl",
        &format!("{good}\n\n{{\"prompt\": \"x\", \"answer\": }}\n"),
    );
    let msg = load_jsonl(&p, &defaults(), true, None)
        .unwrap_err()
        .to_string();
    assert!(
        msg.ends_with("broken.jsonl: line 3: malformed JSON: expected value at column 27"),
        "{msg}"
    );

    // A line that is JSON but not an object.
    let p = write_tmp(&dir, "array.jsonl", &format!("{good}\n[1, 2]\n"));
    let msg = load_jsonl(&p, &defaults(), true, None)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("array.jsonl: line 2") && msg.contains("JSON object"),
        "{msg}"
    );

    // Missing prompt on line 2.
    let p = write_tmp(
        &dir,
        "noprompt.jsonl",
        &format!("{good}\n{{\"question\": \"hi\", \"answer\": \"1\"}}\n"),
    );
    let msg = load_jsonl(&p, &defaults(), true, None)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("noprompt.jsonl: line 2: field `prompt`: missing"),
        "{msg}"
    );
    assert!(
        msg.contains("question"),
        "lists the keys the row has: {msg}"
    );

    // Wrong types: a number prompt, a message without a role, a non-numeric difficulty.
    let p = write_tmp(&dir, "types.jsonl", "{\"prompt\": 5, \"answer\": \"1\"}\n");
    let msg = load_jsonl(&p, &defaults(), true, None)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("line 1: field `prompt`: expected a string or a list"),
        "{msg}"
    );
    let p = write_tmp(
        &dir,
        "role.jsonl",
        "{\"messages\": [{\"content\": \"hi\"}], \"answer\": \"1\"}\n",
    );
    let msg = load_jsonl(&p, &defaults(), true, None)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("line 1: field `messages[0].role`: missing"),
        "{msg}"
    );
    let p = write_tmp(
        &dir,
        "diff.jsonl",
        "{\"prompt\": \"hi\", \"answer\": \"1\", \"difficulty\": \"hard\"}\n",
    );
    let msg = load_jsonl(&p, &defaults(), true, None)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("field `difficulty`: expected a finite number, found the string \"hard\""),
        "{msg}"
    );

    // Missing file.
    let msg = load_jsonl(&dir.path().join("nope.jsonl"), &defaults(), true, None)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("nope.jsonl"), "{msg}");
}

#[test]
fn configurable_field_names_and_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_tmp(
        &dir,
        "custom.jsonl",
        "{\"q\": {\"text\": \"2+2?\"}, \"sol\": 4, \"meta\": {\"lvl\": \"3\"}, \"uid\": 17}\n",
    );
    let fields = FieldNames {
        prompt: "q.text".into(),
        answer: Some("sol".into()),
        difficulty: Some("meta.lvl".into()),
        metadata: "meta".into(),
        id: Some("uid".into()),
        ..FieldNames::default()
    };
    let s = load_jsonl(&p, &fields, true, None).unwrap();
    assert_eq!(s[0].prompt, Prompt::Text("2+2?".into()));
    assert_eq!(
        s[0].answer.as_deref(),
        Some("4"),
        "numeric answers become their JSON text"
    );
    assert_eq!(
        s[0].difficulty,
        Some(3.0),
        "numeric strings are accepted as difficulty"
    );
    assert_eq!(s[0].id, "17");
    assert_eq!(s[0].metadata, json!({"lvl": "3"}));
}

#[test]
fn config_loads_relative_paths_and_limits_rows() {
    let cfg = DataConfig {
        source: SourceKind::Parquet,
        path: Some("tests/fixtures/verl_chat.parquet".into()),
        max_samples: Some(2),
        ..DataConfig::default()
    };
    let s = load_samples(&cfg, Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap();
    assert_eq!(s.len(), 2);
    assert_eq!(s[1].answer.as_deref(), Some("10"));
}
