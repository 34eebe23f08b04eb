//! Raw-text corpora for RMT mid-training: each document becomes a [`Sample`] whose prompt is
//! `Prompt::Text(document)` with no answer; the trainer tokenizes and picks positions itself.
//!
//! Formats, chosen by file extension:
//! - `.jsonl`: one object per line; the text is read from `fields.text` (default `text`).
//! - anything else (`.txt`): documents separated by blank lines (default), or one per line with
//!   `[data.text] split = "lines"`. Lines inside a document are joined with `\n`.
//! - `builtin:tiny`: ten short paragraphs (arithmetic facts and plain English) shipped in the
//!   crate, so CPU tests and the quickstart need no download.

use std::path::Path;

use serde_json::Value;

use crate::config::{FieldNames, TextSplit};
use crate::error::{Error, Result, RowRef};
use crate::fields::{lookup, type_name, RowCtx};
use crate::jsonl::for_each_object;
use crate::sample::{Prompt, Sample};

/// The built-in corpus (`path = "builtin:tiny"`), blank-line separated.
pub const TINY_CORPUS: &str = include_str!("../corpus/tiny.txt");

fn doc_sample(id: String, text: String) -> Sample {
    Sample {
        id,
        prompt: Prompt::Text(text),
        answer: None,
        data_source: None,
        difficulty: None,
        metadata: Value::Null,
    }
}

/// Splits text into documents; returns `(1-based first line, document)` pairs.
pub fn split_documents(text: &str, split: TextSplit) -> Vec<(usize, String)> {
    let mut docs = Vec::new();
    let mut current: Option<(usize, Vec<&str>)> = None;
    for (i, line) in text.lines().enumerate() {
        // Strip a byte-order mark and Windows line ends so they never reach the tokenizer.
        let line = if i == 0 {
            line.trim_start_matches('\u{feff}')
        } else {
            line
        };
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            if let Some((start, lines)) = current.take() {
                docs.push((start, lines.join("\n")));
            }
            continue;
        }
        match split {
            TextSplit::Lines => docs.push((i + 1, line.to_string())),
            TextSplit::BlankLines => current
                .get_or_insert_with(|| (i + 1, Vec::new()))
                .1
                .push(line),
        }
    }
    if let Some((start, lines)) = current {
        docs.push((start, lines.join("\n")));
    }
    docs
}

/// Documents of the built-in corpus, ids `builtin:tiny:<line>`.
pub fn builtin_tiny() -> Vec<Sample> {
    split_documents(TINY_CORPUS, TextSplit::BlankLines)
        .into_iter()
        .map(|(line, doc)| doc_sample(format!("builtin:tiny:{line}"), doc))
        .collect()
}

/// Loads a text corpus from `.txt` or `.jsonl`; ids are `<file name>:<line>`.
pub fn load_text(
    path: &Path,
    fields: &FieldNames,
    split: TextSplit,
    limit: Option<usize>,
) -> Result<Vec<Sample>> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("jsonl"))
    {
        let mut out = Vec::new();
        for_each_object(path, limit, |line, row| {
            let ctx = RowCtx {
                path,
                row: RowRef::Line(line),
            };
            match lookup(&row, &fields.text) {
                Some(Value::String(s)) => out.push(doc_sample(format!("{name}:{line}"), s.clone())),
                Some(other) => {
                    return Err(ctx.err(
                        &fields.text,
                        format!("expected a string, found {}", type_name(other)),
                    ))
                }
                None => return Err(ctx.err(&fields.text, "missing")),
            }
            Ok(())
        })?;
        return Ok(out);
    }
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        Error::MalformedRow {
            path: path.to_path_buf(),
            row: RowRef::Line(good.iter().filter(|&&b| b == b'\n').count() + 1),
            reason: format!("invalid UTF-8: {}", e.utf8_error()),
        }
    })?;
    let docs = split_documents(&text, split);
    let take = limit.unwrap_or(usize::MAX);
    Ok(docs
        .into_iter()
        .take(take)
        .map(|(line, doc)| doc_sample(format!("{name}:{line}"), doc))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_line_and_line_splitting() {
        let text = "a b\nc\n\n\n  \nd\r\ne\n";
        assert_eq!(
            split_documents(text, TextSplit::BlankLines),
            vec![(1, "a b\nc".to_string()), (6, "d\ne".to_string())]
        );
        assert_eq!(
            split_documents(text, TextSplit::Lines),
            vec![
                (1, "a b".into()),
                (2, "c".into()),
                (6, "d".into()),
                (7, "e".into())
            ]
        );
    }

    #[test]
    fn builtin_corpus_has_ten_paragraphs() {
        let docs = builtin_tiny();
        assert_eq!(docs.len(), 10);
        assert!(docs[0].prompt.flat_text().starts_with("Addition combines"));
        assert_eq!(docs[1].id, "builtin:tiny:3");
    }
}
