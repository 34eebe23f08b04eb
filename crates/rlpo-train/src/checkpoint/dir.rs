//! The `checkpoints/` directory of a run: listing, leftovers of interrupted writes, pruning and
//! the choice of `--resume auto`.
//!
//! - Leftovers (`.step-NNNNNN.tmp`: a write interrupted before its rename; `.step-NNNNNN.old`:
//!   a replacement interrupted between its two renames) are cleaned at the start of a run, under
//!   the run lock: `.tmp` is removed, `.old` is removed when `step-NNNNNN` exists and renamed back
//!   to it otherwise (it was the published version).
//! - Pruning (`keep_last`, `keep_every`) counts only checkpoints of the run's lineage
//!   ([`super::lineage`]) that verify, newest first; the one just written always counts and is
//!   never deleted. Other checkpoints (another branch, another run, unreadable) are left alone.
//!   Each checkpoint is hashed at most once per process ([`Verified`]).
//! - `--resume auto` tries checkpoints of the branch that started last first, newest step first,
//!   and says which ones it skipped and why.

use super::lineage::{self, Segment};
use super::manifest;
use crate::error::{io, Result};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Complete checkpoints (`step-NNNNNN`) under `root`, newest step first.
pub fn list(root: &Path) -> Vec<(u64, PathBuf)> {
    let mut out: Vec<(u64, PathBuf)> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let step = name.strip_prefix("step-")?.parse::<u64>().ok()?;
            Some((step, e.path()))
        })
        .collect();
    out.sort_by_key(|e| std::cmp::Reverse(e.0));
    out
}

/// Leftovers of interrupted writes under `root` (`.step-NNNNNN.tmp` and `.step-NNNNNN.old`).
pub fn partial(root: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with(".step-") && (n.ends_with(".tmp") || n.ends_with(".old"))
        })
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

/// Remove (or restore, see the module docs) the leftovers under `root`; returns one message per
/// directory handled. Call only while holding the run lock: another trainer's `.tmp` is live.
pub fn clean_leftovers(root: &Path) -> Result<Vec<String>> {
    let mut msgs = Vec::new();
    let leftovers = partial(root);
    // `.old` first: restoring one may be the only published copy of its step.
    for p in leftovers.iter().filter(|p| p.to_string_lossy().ends_with(".old")) {
        let name = p.file_name().unwrap_or_default().to_string_lossy().into_owned();
        let published = root.join(name.trim_start_matches('.').trim_end_matches(".old"));
        if published.exists() {
            std::fs::remove_dir_all(p).map_err(|e| io(p, e))?;
            msgs.push(format!("removed {} (the previous version of {}, replaced before an interruption)", p.display(), published.display()));
        } else {
            std::fs::rename(p, &published).map_err(|e| io(p, e))?;
            msgs.push(format!("restored {} from {} (interrupted while it was being replaced)", published.display(), p.display()));
        }
    }
    for p in leftovers.iter().filter(|p| p.to_string_lossy().ends_with(".tmp")) {
        std::fs::remove_dir_all(p).map_err(|e| io(p, e))?;
        msgs.push(format!("removed partial checkpoint {} (its write was interrupted before it was published; it is never resumed from)", p.display()));
    }
    Ok(msgs)
}

/// The lineage a checkpoint recorded (`None` when its `trainer_state.json` is unreadable).
pub fn read_lineage(dir: &Path) -> Option<Vec<Segment>> {
    let text = std::fs::read_to_string(dir.join("trainer_state.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    match v.get("lineage") {
        None | Some(serde_json::Value::Null) => Some(Vec::new()),
        Some(l) => serde_json::from_value(l.clone()).ok(),
    }
}

/// Checkpoints known to verify in this process, by directory, with the sha256 of the
/// `manifest.json` they verified against (a replaced checkpoint is verified again).
#[derive(Debug, Default)]
pub struct Verified(BTreeMap<PathBuf, Vec<u8>>);

fn manifest_digest(dir: &Path) -> Option<Vec<u8>> {
    std::fs::read(dir.join("manifest.json")).ok().map(|b| Sha256::digest(&b).to_vec())
}

/// One key per directory however it was named (relative, absolute, via `..`).
fn key(dir: &Path) -> PathBuf {
    dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf())
}

impl Verified {
    /// Record `dir` as verified (just written or just verified).
    pub fn record(&mut self, dir: &Path) {
        if let Some(d) = manifest_digest(dir) {
            self.0.insert(key(dir), d);
        }
    }

    /// Whether `dir` verifies: from the record, else by hashing it once.
    pub fn check(&mut self, dir: &Path) -> std::result::Result<(), String> {
        let digest = manifest_digest(dir);
        if digest.is_some() && self.0.get(&key(dir)) == digest.as_ref() {
            return Ok(());
        }
        manifest::verify(dir).map_err(|e| e.to_string())?;
        self.record(dir);
        Ok(())
    }
}

/// What pruning keeps: the newest `keep_last` verified checkpoints of the lineage (`written`,
/// just written, always counts) and multiples of `keep_every`.
pub struct PruneRule<'a> {
    /// The lineage of the state just saved.
    pub lineage: &'a [Segment],
    /// Its step.
    pub step: u64,
    /// The checkpoint just written.
    pub written: &'a Path,
    /// `checkpoint.keep_last` (at least 1 is kept).
    pub keep_last: usize,
    /// `checkpoint.keep_every` (0 = off).
    pub keep_every: u64,
}

/// Apply `rule` to `root`; returns the directories removed.
pub fn prune(root: &Path, rule: &PruneRule<'_>, verified: &mut Verified) -> Result<Vec<PathBuf>> {
    let mut kept_verified = 0usize;
    let mut removed = Vec::new();
    for (step, dir) in list(root) {
        let ours = dir == rule.written;
        if !ours {
            let Some(l) = read_lineage(&dir) else { continue };
            if !lineage::is_ancestor(&l, step, rule.lineage, rule.step) {
                continue;
            }
        }
        if kept_verified < rule.keep_last.max(1) {
            // Within the window: count it only if it verifies; an unverifiable one is kept.
            if ours || verified.check(&dir).is_ok() {
                kept_verified += 1;
            }
            continue;
        }
        if rule.keep_every > 0 && step % rule.keep_every == 0 {
            continue;
        }
        std::fs::remove_dir_all(&dir).map_err(|e| io(&dir, e))?;
        removed.push(dir);
    }
    Ok(removed)
}

/// The choice of `--resume auto` and what the user must hear about it.
#[derive(Debug, Default)]
pub struct AutoChoice {
    /// The checkpoint to resume (verified), if any.
    pub chosen: Option<PathBuf>,
    /// Warnings: checkpoints skipped (which, why), newer ones not resumed, the fallback.
    pub notes: Vec<String>,
}

/// Pick the checkpoint `--resume auto` continues (see the module docs): verified, from the
/// branch that started last, newest step first.
pub fn select_auto(root: &Path) -> AutoChoice {
    let mut candidates: Vec<(u64, u64, PathBuf)> = list(root)
        .into_iter()
        // Unreadable state first: it is tried (and reported) before anything older.
        .map(|(step, dir)| (read_lineage(&dir).map_or(u64::MAX, |l| lineage::started_ms(&l)), step, dir))
        .collect();
    candidates.sort_by_key(|c| std::cmp::Reverse((c.0, c.1)));
    let mut out = AutoChoice::default();
    let mut skipped = Vec::new();
    for (_, step, dir) in &candidates {
        match manifest::verify(dir) {
            Ok(_) => {
                out.chosen = Some(dir.clone());
                for (_, s, other) in candidates.iter().filter(|(_, s, d)| s > step && !skipped.contains(d)) {
                    out.notes.push(format!(
                        "note: not resuming {} (step {s}): it belongs to an older branch of this run, abandoned by a later resume from an earlier checkpoint; resume it explicitly with --resume {}",
                        other.display(),
                        other.display()
                    ));
                }
                if !skipped.is_empty() {
                    out.notes.push(format!(
                        "auto-resume falls back to {} (step {step}): the newer checkpoint(s) {} do not verify (see above)",
                        dir.display(),
                        skipped.iter().map(|d: &PathBuf| d.display().to_string()).collect::<Vec<_>>().join(", ")
                    ));
                }
                return out;
            }
            Err(e) => {
                out.notes.push(format!("warning: skipping checkpoint {}: {e}", dir.display()));
                skipped.push(dir.clone());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftovers_are_removed_or_restored() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        for d in ["step-000002", ".step-000002.old", ".step-000003.tmp", ".step-000004.old", ".step-000004.tmp"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
            std::fs::write(root.join(d).join("marker"), d).unwrap();
        }
        let msgs = clean_leftovers(root).unwrap();
        assert_eq!(msgs.len(), 4, "{msgs:?}");
        assert!(msgs.iter().any(|m| m.contains("restored") && m.contains("step-000004")), "{msgs:?}");
        assert!(msgs.iter().any(|m| m.contains("removed partial checkpoint") && m.contains(".step-000003.tmp")), "{msgs:?}");
        let names: Vec<String> = {
            let mut v: Vec<String> = std::fs::read_dir(root).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
            v.sort();
            v
        };
        assert_eq!(names, ["step-000002", "step-000004"]);
        // The restored step is the `.old` one; the published step 2 was left as it was.
        assert_eq!(std::fs::read_to_string(root.join("step-000004/marker")).unwrap(), ".step-000004.old");
        assert_eq!(std::fs::read_to_string(root.join("step-000002/marker")).unwrap(), "step-000002");
    }
}
