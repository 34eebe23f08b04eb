//! `<run>/.lock`: at most one trainer per run directory.
//!
//! The lock is an advisory `flock` on `<run>/.lock` (std's `File::try_lock`), held for the life
//! of the [`RunLock`]; the file records the holder's pid, host and start time for the message a
//! second trainer gets. The kernel releases the lock when its holder dies, however it dies, so
//! a lock file left by a killed process is stale by construction: the next trainer takes it
//! over and says whose it was. The file is emptied, not removed, on a clean exit (removing it
//! would let two later trainers lock two different files under the same name).

use crate::error::{io, Result, TrainError};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The held lock of a run directory; released (and the file emptied) on drop.
#[derive(Debug)]
pub struct RunLock {
    file: File,
    path: PathBuf,
}

fn holder_text(text: &str) -> String {
    let field = |k: &str| text.lines().find_map(|l| l.strip_prefix(k).map(str::trim)).filter(|v| !v.is_empty());
    match (field("pid "), field("host ")) {
        (Some(pid), Some(host)) => format!("pid {pid} on {host}"),
        (Some(pid), None) => format!("pid {pid}"),
        _ => "a process that has not written its pid yet".into(),
    }
}

impl RunLock {
    /// Lock `run_dir` (created if missing). Returns the lock and, when the file named a previous
    /// holder that is gone, a note saying the stale lock was taken over. A second trainer gets
    /// an error naming the holder's pid.
    pub fn acquire(run_dir: &Path) -> Result<(RunLock, Option<String>)> {
        std::fs::create_dir_all(run_dir).map_err(|e| io(run_dir, e))?;
        let path = run_dir.join(".lock");
        let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(|e| io(&path, e))?;
        let mut previous = String::new();
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                file.read_to_string(&mut previous).ok();
                return Err(TrainError::Aborted(format!(
                    "{} is in use: another `rlpo train` ({}) holds {}; refusing to train the same run twice (stop it, or use another run.name)",
                    run_dir.display(),
                    holder_text(&previous),
                    path.display()
                )));
            }
            Err(TryLockError::Error(e)) => return Err(io(&path, e)),
        }
        file.read_to_string(&mut previous).map_err(|e| io(&path, e))?;
        let note = (!previous.trim().is_empty()).then(|| {
            format!("taking over the stale lock {} of {} (no longer running)", path.display(), holder_text(&previous))
        });
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let text = format!("pid {}\nhost {}\nstarted {started}\n", std::process::id(), host.trim());
        file.set_len(0)
            .and_then(|_| file.rewind())
            .and_then(|_| file.write_all(text.as_bytes()))
            .and_then(|_| file.sync_all())
            .map_err(|e| io(&path, e))?;
        Ok((RunLock { file, path }, note))
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // Still locked here: nobody else can be reading or writing it.
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_and_a_stale_one_taken_over() {
        let tmp = tempfile::tempdir().unwrap();
        let run = tmp.path().join("run");
        let (held, note) = RunLock::acquire(&run).unwrap();
        assert!(note.is_none());
        // flock locks belong to the open file: a second open in the same process conflicts too.
        let e = RunLock::acquire(&run).unwrap_err().to_string();
        assert!(e.contains(&format!("pid {}", std::process::id())) && e.contains("refusing"), "{e}");
        drop(held);
        assert_eq!(std::fs::read_to_string(run.join(".lock")).unwrap(), "", "emptied on release");
        // A file naming a process that is gone (no flock held): taken over, with a note.
        std::fs::write(run.join(".lock"), "pid 999999\nhost elsewhere\n").unwrap();
        let (_held, note) = RunLock::acquire(&run).unwrap();
        let note = note.expect("stale lock noted");
        assert!(note.contains("pid 999999 on elsewhere"), "{note}");
        assert!(std::fs::read_to_string(run.join(".lock")).unwrap().starts_with(&format!("pid {}\n", std::process::id())));
    }
}
