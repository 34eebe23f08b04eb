//! Dispatch from a validated [`DataConfig`] to the matching reader or generator.

use std::path::{Path, PathBuf};

use crate::config::{DataConfig, SourceKind, BUILTIN_TINY};
use crate::error::Result;
use crate::jsonl::load_jsonl;
use crate::parquet::load_parquet;
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
