//! JSON Lines reading: one JSON object per line; blank lines are skipped; errors carry the
//! 1-based line number.
//!
//! Lines are read as bytes and decoded per line, so an invalid UTF-8 sequence is reported with its
//! line instead of as an anonymous I/O error.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use serde_json::Value;

use crate::config::FieldNames;
use crate::error::{Error, Result, RowRef};
use crate::fields::{sample_from_row, type_name, RowCtx};
use crate::sample::Sample;

/// Calls `f(line_number, object)` for each non-blank line of a JSONL file, stopping after `limit`
/// objects. Every line must be a JSON object.
pub(crate) fn for_each_object(
    path: &Path,
    limit: Option<usize>,
    mut f: impl FnMut(usize, Value) -> Result<()>,
) -> Result<()> {
    let io_err = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut reader = BufReader::new(File::open(path).map_err(io_err)?);
    let mut buf = Vec::new();
    let mut line_no = 0usize;
    let mut seen = 0usize;
    loop {
        if limit.is_some_and(|l| seen >= l) {
            return Ok(());
        }
        buf.clear();
        if reader.read_until(b'\n', &mut buf).map_err(io_err)? == 0 {
            return Ok(());
        }
        line_no += 1;
        let malformed = |reason: String| Error::MalformedRow {
            path: path.to_path_buf(),
            row: RowRef::Line(line_no),
            reason,
        };
        let text =
            std::str::from_utf8(&buf).map_err(|e| malformed(format!("invalid UTF-8: {e}")))?;
        // A UTF-8 byte-order mark (Windows editors) is not JSON whitespace.
        let text = if line_no == 1 {
            text.trim_start_matches('\u{feff}')
        } else {
            text
        };
        if text.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(text).map_err(|e| malformed(json_reason(&e)))?;
        if !value.is_object() {
            return Err(malformed(format!(
                "expected a JSON object, found {}",
                type_name(&value)
            )));
        }
        seen += 1;
        f(line_no, value)?;
    }
}

/// serde_json's message with its "at line 1 column N" (the line is always 1: we parse one line at a
/// time) shortened to "at column N", so that the only line number in the error is the file's.
fn json_reason(e: &serde_json::Error) -> String {
    let full = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    match full.strip_suffix(&suffix) {
        Some(msg) => format!("{msg} at column {}", e.column()),
        None => full,
    }
}

/// Loads prompt samples from a JSONL file (verl layout or `{"prompt"|"messages", "answer"}`).
pub fn load_jsonl(
    path: &Path,
    fields: &FieldNames,
    require_answer: bool,
    limit: Option<usize>,
) -> Result<Vec<Sample>> {
    let mut out = Vec::new();
    for_each_object(path, limit, |line, row| {
        let ctx = RowCtx {
            path,
            row: RowRef::Line(line),
        };
        out.push(sample_from_row(&row, fields, require_answer, &ctx)?);
        Ok(())
    })?;
    Ok(out)
}
