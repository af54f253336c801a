//! External tools (mosquitto's clients and broker, Python paho-mqtt): finding them, and the rule
//! for when one is missing. Without `STARLING_REQUIRE_INTEROP=1` a test whose tool is missing
//! prints a loud SKIPPED line and passes; with it (CI sets it), a missing tool is a failure.

use std::io::Write;
use std::path::{Path, PathBuf};

pub fn interop_required() -> bool {
    std::env::var("STARLING_REQUIRE_INTEROP").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Whether a test may go on. When its tool is missing: fails if interop is required, otherwise
/// prints a SKIPPED line straight to stderr (past the test harness's output capture, so it shows
/// for a passing test) and returns false.
pub fn tool_available(found: bool, missing: &str, install: &str) -> bool {
    if found {
        return true;
    }
    if interop_required() {
        panic!("{missing}; {install} (STARLING_REQUIRE_INTEROP is set, so this is a failure)");
    }
    let _ = writeln!(
        std::io::stderr(),
        "\n*** SKIPPED: {missing}; {install} or set STARLING_REQUIRE_INTEROP=1 to make this a \
         failure ***\n"
    );
    false
}

pub fn on_path(program: &str) -> bool {
    find_program(program, &[]).is_some()
}

/// Where `program` is: on PATH, or else in one of `extra` directories (daemons live in sbin,
/// which a user's PATH may lack).
pub fn find_program(program: &str, extra: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(extra.iter().map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

#[cfg(unix)]
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable(path: &Path) -> bool {
    path.is_file()
}
