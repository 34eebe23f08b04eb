//! Parquet reading through the `parquet` crate's row (record) API, without Arrow.
//!
//! Each row is converted to a JSON object (structs become objects, lists arrays, maps objects) and
//! then goes through the same field mapping as JSONL, which is what makes a pyarrow-written verl
//! file and its JSONL export load to identical samples. Rows are 0-based in errors, as pyarrow and
//! pandas index them. Only Snappy (pyarrow's default) and uncompressed pages are readable unless the
//! crate is built with the `zstd`, `lz4` or `gzip` feature.

use std::fs::File;
use std::path::Path;

use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::{Field, Row};
use serde_json::{Map, Number, Value};

use crate::config::FieldNames;
use crate::error::{Error, Result, RowRef};
use crate::fields::{sample_from_row, RowCtx};
use crate::sample::Sample;

/// Calls `f(row_index, object)` for each row of a Parquet file, stopping after `limit` rows.
pub(crate) fn for_each_row(
    path: &Path,
    limit: Option<usize>,
    mut f: impl FnMut(usize, Value) -> Result<()>,
) -> Result<()> {
    let pq_err = |source| Error::Parquet {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let reader = SerializedFileReader::new(file).map_err(pq_err)?;
    let rows = reader.get_row_iter(None).map_err(pq_err)?;
    for (index, row) in rows.enumerate() {
        if limit.is_some_and(|l| index >= l) {
            break;
        }
        f(index, row_to_json(&row.map_err(pq_err)?))?;
    }
    Ok(())
}

/// Loads prompt samples from a Parquet file in verl's layout (or any layout the fields describe).
pub fn load_parquet(
    path: &Path,
    fields: &FieldNames,
    require_answer: bool,
    limit: Option<usize>,
) -> Result<Vec<Sample>> {
    let mut out = Vec::new();
    for_each_row(path, limit, |index, row| {
        let ctx = RowCtx {
            path,
            row: RowRef::Row(index),
        };
        out.push(sample_from_row(&row, fields, require_answer, &ctx)?);
        Ok(())
    })?;
    Ok(out)
}

/// A record as a JSON object, columns in schema order.
pub(crate) fn row_to_json(row: &Row) -> Value {
    let map: Map<String, Value> = row
        .get_column_iter()
        .map(|(k, v)| (k.clone(), field_to_json(v)))
        .collect();
    Value::Object(map)
}

fn float(x: f64) -> Value {
    Number::from_f64(x)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}

fn field_to_json(field: &Field) -> Value {
    match field {
        Field::Null => Value::Null,
        Field::Bool(b) => Value::Bool(*b),
        Field::Byte(n) => (*n).into(),
        Field::Short(n) => (*n).into(),
        Field::Int(n) => (*n).into(),
        Field::Long(n) => (*n).into(),
        Field::UByte(n) => (*n).into(),
        Field::UShort(n) => (*n).into(),
        Field::UInt(n) => (*n).into(),
        Field::ULong(n) => (*n).into(),
        Field::Float16(x) => float(f64::from(*x)),
        Field::Float(x) => float(f64::from(*x)),
        Field::Double(x) => float(*x),
        Field::Str(s) => Value::String(s.clone()),
        // Binary columns holding text (some writers omit the UTF-8 annotation) stay readable.
        Field::Bytes(b) => match std::str::from_utf8(b.data()) {
            Ok(s) => Value::String(s.to_string()),
            Err(_) => Value::String(field.to_string()),
        },
        Field::Group(row) => row_to_json(row),
        Field::ListInternal(list) => {
            Value::Array(list.elements().iter().map(field_to_json).collect())
        }
        Field::MapInternal(map) => Value::Object(
            map.entries()
                .iter()
                .map(|(k, v)| {
                    let key = match k {
                        Field::Str(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (key, field_to_json(v))
                })
                .collect(),
        ),
        // Decimals, dates, times: their display form; prompt datasets rarely carry them.
        other => Value::String(other.to_string()),
    }
}
