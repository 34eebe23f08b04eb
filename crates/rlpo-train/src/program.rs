//! The name the `rlpo` binary was invoked by (`argv[0]` as typed: `rlpo` when installed on PATH,
//! `target/release/rlpo` or `./rlpo` otherwise), so that every hint the library puts in a
//! message (`rlpo check lists every such row`, the resume command) can be pasted as printed.
//! The binary sets it once at start-up; library users and tests get `rlpo`.

use std::sync::OnceLock;

static PROGRAM: OnceLock<String> = OnceLock::new();

/// Record the invoked name (first call wins).
pub fn set_name(name: &str) {
    let _ = PROGRAM.set(name.to_string());
}

/// The invoked name, or `rlpo` when none was recorded.
pub fn name() -> &'static str {
    PROGRAM.get().map_or("rlpo", String::as_str)
}

/// `argv[0]` as the user typed it, for [`set_name`]: the whole word (a path stays a path, so the
/// hint runs the same binary), `rlpo` when it is empty or not UTF-8.
pub fn from_argv0(argv0: Option<std::ffi::OsString>) -> String {
    argv0.and_then(|a| a.into_string().ok()).filter(|a| !a.trim().is_empty()).unwrap_or_else(|| "rlpo".to_string())
}
