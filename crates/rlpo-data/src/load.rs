//! Dispatch from a validated [`DataConfig`] to the matching reader or generator: everything at
//! once ([`load_samples`], what the trainer's in-memory dataset holds) or one row at a time
//! ([`for_each_sample`], bounded memory for scans of large files such as `rlpo check`'s).

use std::path::{Path, PathBuf};

use crate::config::{DataConfig, SourceKind, BUILTIN_TINY};
use crate::error::{Result, RowRef};
use crate::fields::{sample_from_row, RowCtx};
use crate::jsonl::{for_each_object, load_jsonl};
use crate::parquet::{for_each_row, load_parquet};
use crate::sample::Sample;
use crate::text::{builtin_tiny, load_text};

/// Validates `cfg` and loads all its samples in file (or generation) order, truncated to
/// `max_samples`. Relative paths are resolved against `base_dir`.
pub fn load_samples(cfg: &DataConfig, base_dir: &Path) -> Result<Vec<Sample>> {
    cfg.validate()?;
    let resolve = |p: &PathBuf| {
        if p.is_absolute() {
            p.clone()
        } else {
            base_dir.join(p)
        }
    };
    let limit = cfg.max_samples;
    let mut samples = match cfg.source {
        SourceKind::Synthetic => cfg.synthetic_or_default().generate(cfg.seed)?,
        SourceKind::Jsonl => {
            let path = resolve(cfg.path.as_ref().expect("validated"));
            load_jsonl(&path, &cfg.fields, cfg.require_answer, limit)?
        }
        SourceKind::Parquet => {
            let path = resolve(cfg.path.as_ref().expect("validated"));
            load_parquet(&path, &cfg.fields, cfg.require_answer, limit)?
        }
        SourceKind::Text => {
            let path = cfg.path.as_ref().expect("validated");
            if path.as_os_str() == BUILTIN_TINY {
                builtin_tiny()
            } else {
                let split = cfg.text.clone().unwrap_or_default().split;
                load_text(&resolve(path), &cfg.fields, split, limit)?
            }
        }
    };
    // Readers stop early on their own; this covers synthetic sets and the built-in corpus.
    if let Some(n) = limit {
        samples.truncate(n);
    }
    Ok(samples)
}

/// Calls `f(row, sample)` for every sample of `cfg` in file order (up to `max_samples`), reading
/// JSONL and Parquet files one row at a time, so memory stays bounded however large the file.
/// `row` is the 1-based line of a JSONL file, the 0-based row of a Parquet file, or the index of
/// a generated or text sample. Stops at the first error, of the reader or of `f`.
pub fn for_each_sample(
    cfg: &DataConfig,
    base_dir: &Path,
    mut f: impl FnMut(RowRef, crate::sample::Sample) -> Result<()>,
) -> Result<()> {
    cfg.validate()?;
    let resolve = |p: &PathBuf| if p.is_absolute() { p.clone() } else { base_dir.join(p) };
    let (fields, require, limit) = (&cfg.fields, cfg.require_answer, cfg.max_samples);
    match cfg.source {
        SourceKind::Jsonl => {
            let path = resolve(cfg.path.as_ref().expect("validated"));
            for_each_object(&path, limit, |line, row| {
                let ctx = RowCtx { path: &path, row: RowRef::Line(line) };
                f(RowRef::Line(line), sample_from_row(&row, fields, require, &ctx)?)
            })
        }
        SourceKind::Parquet => {
            let path = resolve(cfg.path.as_ref().expect("validated"));
            for_each_row(&path, limit, |index, row| {
                let ctx = RowCtx { path: &path, row: RowRef::Row(index) };
                f(RowRef::Row(index), sample_from_row(&row, fields, require, &ctx)?)
            })
        }
        // Generated sets and text corpora are small (or cut into documents as a whole).
        SourceKind::Synthetic | SourceKind::Text => {
            for (i, s) in load_samples(cfg, base_dir)?.into_iter().enumerate() {
                f(RowRef::Row(i), s)?;
            }
            Ok(())
        }
    }
}
