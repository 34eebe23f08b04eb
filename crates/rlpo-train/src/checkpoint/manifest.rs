//! `manifest.json` of a checkpoint: the step and the size and sha256 of every other file, and
//! [`verify`], which checks a checkpoint directory against it.
//!
//! Verification is complete, not just "every listed file matches": the manifest must list the
//! files every checkpoint has ([`REQUIRED`], and [`REQUIRED_MODEL`] with at least one
//! `model/*.safetensors`, or a LoRA checkpoint's adapter files, `super::lora::REQUIRED`; the
//! optimizer state unless the trainer state says it was not saved), the
//! directory must hold exactly the listed files (a missing or an unlisted file is named), the
//! manifest's step must match the directory name `step-NNNNNN` (when it has that form) and
//! `trainer_state.json`'s step. Sizes are compared before anything is hashed, and hashing streams
//! each file through a 1 MiB buffer, so memory stays bounded for any checkpoint size.

use crate::error::{io, Result, TrainError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::cell::Cell;
use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Files every checkpoint lists in its manifest (besides the policy's files, and
/// `optimizer.safetensors` unless `trainer_state.json` says `optimizer_saved: false`).
pub const REQUIRED: &[&str] = &["trainer_state.json", "recipe.resolved.toml"];

/// The policy's files a full-training checkpoint lists (besides `model/*.safetensors`).
pub const REQUIRED_MODEL: &[&str] = &["model/config.json"];

/// One file of a checkpoint as recorded in `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// Path relative to the checkpoint directory.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Lower-case hex sha256.
    pub sha256: String,
}

/// `manifest.json`: every file of a checkpoint except itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The checkpoint's step.
    pub step: u64,
    /// Files, sorted by path.
    pub files: Vec<ManifestEntry>,
}

fn bad(path: &Path, msg: impl std::fmt::Display) -> TrainError {
    TrainError::Aborted(format!("{}: {msg}", path.display()))
}

/// Read and parse `<dir>/manifest.json`.
pub fn read_manifest(dir: &Path) -> Result<Manifest> {
    let mpath = dir.join("manifest.json");
    let text = std::fs::read_to_string(&mpath).map_err(|e| io(&mpath, e))?;
    serde_json::from_str(&text).map_err(|e| bad(&mpath, format!("unreadable manifest: {e}")))
}

thread_local! {
    static FILES_HASHED: Cell<u64> = const { Cell::new(0) };
}

/// Files hashed by [`hash_file`] on the calling thread so far (tests check that a resume hashes
/// each file once).
pub fn files_hashed_on_this_thread() -> u64 {
    FILES_HASHED.with(Cell::get)
}

/// Size and lower-case hex sha256 of `path`, read through a fixed 1 MiB buffer.
pub fn hash_file(path: &Path) -> Result<(u64, String)> {
    let mut f = std::fs::File::open(path).map_err(|e| io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io(path, e)),
        };
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    FILES_HASHED.with(|c| c.set(c.get() + 1));
    Ok((size, hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()))
}

/// Every file under `dir`, as paths relative to `dir` with `/` separators, sorted.
pub fn files_under(dir: &Path) -> Result<Vec<String>> {
    fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) -> Result<()> {
        for entry in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
            let p = entry.map_err(|e| io(dir, e))?.path();
            if p.is_dir() {
                walk(&p, base, out)?;
            } else {
                let rel: PathBuf = p.strip_prefix(base).unwrap_or(&p).to_path_buf();
                out.push(rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect::<Vec<_>>().join("/"));
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out)?;
    out.sort();
    Ok(out)
}

/// The manifest of the checkpoint being written in `dir` at `step`: every file but
/// `manifest.json`, hashed.
pub fn build(dir: &Path, step: u64) -> Result<Manifest> {
    let mut files = Vec::new();
    for rel in files_under(dir)?.into_iter().filter(|f| f != "manifest.json") {
        let (size, sha256) = hash_file(&dir.join(&rel))?;
        files.push(ManifestEntry { path: rel, size, sha256 });
    }
    Ok(Manifest { step, files })
}

/// The step in a directory name `step-NNNNNN`, if it has that form.
pub fn step_of_name(dir: &Path) -> Option<u64> {
    dir.file_name()?.to_str()?.strip_prefix("step-")?.parse().ok()
}

/// Check a checkpoint directory against its manifest (see the module docs for what is checked);
/// `Err` names the file or the mismatch.
pub fn verify(dir: &Path) -> Result<()> {
    verify_manifest(dir).map(|_| ())
}

/// [`verify`], returning the verified manifest.
pub fn verify_manifest(dir: &Path) -> Result<Manifest> {
    let manifest = read_manifest(dir)?;
    let mpath = dir.join("manifest.json");
    if let Some(step) = step_of_name(dir) {
        if step != manifest.step {
            return Err(bad(&mpath, format!("records step {}, the directory is step {step}", manifest.step)));
        }
    }
    let listed: BTreeSet<&str> = manifest.files.iter().map(|f| f.path.as_str()).collect();
    if listed.len() != manifest.files.len() {
        return Err(bad(&mpath, "lists a file twice"));
    }
    // A LoRA checkpoint holds its adapters and the base's reference instead of `model/`.
    let lora = listed.iter().any(|p| p.starts_with(&format!("{}/", super::lora::ADAPTER_DIR)));
    let model_files = if lora { super::lora::REQUIRED } else { REQUIRED_MODEL };
    if let Some(missing) = REQUIRED.iter().chain(model_files).find(|r| !listed.contains(**r)) {
        return Err(bad(&mpath, format!("does not list {missing} (incomplete manifest)")));
    }
    if !lora && !listed.iter().any(|p| p.starts_with("model/") && p.ends_with(".safetensors")) {
        return Err(bad(&mpath, "lists no model/*.safetensors (incomplete manifest)"));
    }
    let on_disk = files_under(dir)?;
    let on_disk: BTreeSet<&str> = on_disk.iter().map(String::as_str).filter(|f| *f != "manifest.json").collect();
    if let Some(extra) = on_disk.difference(&listed).next() {
        return Err(bad(&dir.join(extra), "is not listed in manifest.json"));
    }
    if let Some(missing) = listed.difference(&on_disk).next() {
        return Err(bad(&dir.join(missing), "is listed in manifest.json but missing"));
    }
    // Sizes first: a truncated file is reported without hashing anything.
    for f in &manifest.files {
        let p = dir.join(&f.path);
        let size = std::fs::metadata(&p).map_err(|e| io(&p, e))?.len();
        if size != f.size {
            return Err(bad(&p, format!("is {size} bytes, manifest.json says {}", f.size)));
        }
    }
    for f in &manifest.files {
        let p = dir.join(&f.path);
        let (size, sha) = hash_file(&p)?;
        if size != f.size || sha != f.sha256 {
            return Err(bad(&p, "size or sha256 differs from manifest.json"));
        }
    }
    let spath = dir.join("trainer_state.json");
    let text = std::fs::read_to_string(&spath).map_err(|e| io(&spath, e))?;
    let state: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(&spath, e))?;
    match state.get("step").and_then(serde_json::Value::as_u64) {
        Some(s) if s == manifest.step => {}
        Some(s) => return Err(bad(&spath, format!("records step {s}, manifest.json step {}", manifest.step))),
        None => return Err(bad(&spath, "has no step")),
    }
    // A weights-only checkpoint (`checkpoint.save_optimizer = false`) says so in its state.
    let weights_only = state.get("optimizer_saved").and_then(serde_json::Value::as_bool) == Some(false);
    if !weights_only && !listed.contains("optimizer.safetensors") {
        return Err(bad(&mpath, "does not list optimizer.safetensors (incomplete manifest)"));
    }
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A checkpoint-shaped directory with small files and its manifest.
    fn fake(dir: &Path, step: u64) {
        for (rel, body) in [
            ("model/config.json", "{}".to_string()),
            ("model/model.safetensors", "weights".repeat(100)),
            ("optimizer.safetensors", "moments".into()),
            ("trainer_state.json", format!("{{\"format\": 1, \"step\": {step}}}")),
            ("recipe.resolved.toml", "".into()),
        ] {
            let p = dir.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, body).unwrap();
        }
        write(dir, &build(dir, step).unwrap());
    }

    fn write(dir: &Path, m: &Manifest) {
        std::fs::write(dir.join("manifest.json"), serde_json::to_string_pretty(m).unwrap()).unwrap();
    }

    fn err(dir: &Path) -> String {
        verify(dir).unwrap_err().to_string()
    }

    /// The streamed hash equals coreutils' `sha256sum` on sizes around the 1 MiB buffer.
    #[test]
    fn streaming_hash_matches_sha256sum() {
        let tmp = tempfile::tempdir().unwrap();
        for n in [0usize, 1, (1 << 20) - 1, 1 << 20, (1 << 20) + 1, 3 * (1 << 20) + 7] {
            let p = tmp.path().join(format!("f{n}"));
            let bytes: Vec<u8> = (0..n).map(|i| (i * 31 % 251) as u8).collect();
            std::fs::write(&p, &bytes).unwrap();
            let out = std::process::Command::new("sha256sum").arg(&p).output().expect("sha256sum (coreutils)");
            let want = String::from_utf8(out.stdout).unwrap().split_whitespace().next().unwrap().to_string();
            let before = files_hashed_on_this_thread();
            assert_eq!(hash_file(&p).unwrap(), (n as u64, want), "{n} bytes");
            assert_eq!(files_hashed_on_this_thread(), before + 1);
        }
    }

    #[test]
    fn verify_checks_the_complete_file_list_and_the_step() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("step-000003");
        fake(&dir, 3);
        let m = verify_manifest(&dir).unwrap();
        assert_eq!(m.step, 3);
        assert_eq!(m.files.len(), 5);

        // An unlisted file, then a listed file that is missing.
        std::fs::write(dir.join("model/extra.bin"), "x").unwrap();
        assert!(err(&dir).contains("model/extra.bin: is not listed"), "{}", err(&dir));
        std::fs::remove_file(dir.join("model/extra.bin")).unwrap();
        let body = std::fs::read(dir.join("optimizer.safetensors")).unwrap();
        std::fs::remove_file(dir.join("optimizer.safetensors")).unwrap();
        assert!(err(&dir).contains("optimizer.safetensors: is listed in manifest.json but missing"), "{}", err(&dir));
        std::fs::write(dir.join("optimizer.safetensors"), &body).unwrap();
        verify(&dir).unwrap();

        // A manifest that lost an entry together with its file still fails: the list is incomplete.
        let mut short = read_manifest(&dir).unwrap();
        short.files.retain(|f| f.path != "optimizer.safetensors");
        write(&dir, &short);
        std::fs::remove_file(dir.join("optimizer.safetensors")).unwrap();
        assert!(err(&dir).contains("does not list optimizer.safetensors"), "{}", err(&dir));
        std::fs::write(dir.join("optimizer.safetensors"), &body).unwrap();
        let mut no_weights = m.clone();
        no_weights.files.retain(|f| f.path != "model/model.safetensors");
        write(&dir, &no_weights);
        std::fs::remove_file(dir.join("model/model.safetensors")).unwrap();
        assert!(err(&dir).contains("no model/*.safetensors"), "{}", err(&dir));
        fake(&dir, 3);

        // Steps: manifest vs directory name, manifest vs trainer_state.json.
        let mut other = m.clone();
        other.step = 4;
        write(&dir, &other);
        assert!(err(&dir).contains("records step 4, the directory is step 3"), "{}", err(&dir));
        let renamed = tmp.path().join("copied");
        std::fs::rename(&dir, &renamed).unwrap();
        assert!(err(&renamed).contains("trainer_state.json: records step 3, manifest.json step 4"), "{}", err(&renamed));
        write(&renamed, &m);
        verify(&renamed).unwrap();

        // A truncated file is found by its size, a flipped byte by its hash.
        let w = renamed.join("model/model.safetensors");
        let mut bytes = std::fs::read(&w).unwrap();
        bytes.pop();
        std::fs::write(&w, &bytes).unwrap();
        assert!(err(&renamed).contains("is 699 bytes, manifest.json says 700"), "{}", err(&renamed));
        bytes.push(b's' ^ 1);
        std::fs::write(&w, &bytes).unwrap();
        assert!(err(&renamed).contains("model/model.safetensors: size or sha256 differs"), "{}", err(&renamed));
    }
}
