//! `starling passwd`: creates and edits password files like `mosquitto_passwd`, writing `$7$`
//! hashes (PBKDF2-SHA512, 101 iterations, 12-byte random salt) that mosquitto 2 reads too.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use super::password::{DEFAULT_ITERATIONS, PasswordHash, split_line};

/// What `starling passwd` was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdRequest {
    /// Start a new file, replacing any existing one (`-c`).
    pub create: bool,
    /// Take the password from the command line (`-b`).
    pub batch: bool,
    /// Remove the user (`-D`).
    pub delete: bool,
    pub file: PathBuf,
    pub username: String,
    pub password: Option<String>,
}

/// Runs the command: reads the password if needed, then rewrites the file.
pub fn run(request: &PasswdRequest) -> anyhow::Result<()> {
    if request.create && request.delete {
        bail!("-c and -D cannot be used together");
    }
    if request.username.is_empty() || request.username.contains(':') {
        bail!("the username must be non-empty and must not contain ':'");
    }
    if request.password.is_some() && !request.batch {
        bail!("a password on the command line needs -b");
    }
    if request.batch && request.password.is_none() && !request.delete {
        bail!("-b needs the password as the last argument");
    }
    let existing = if request.create {
        String::new()
    } else {
        std::fs::read_to_string(&request.file).with_context(|| {
            format!(
                "cannot read {} (use -c to create it)",
                request.file.display()
            )
        })?
    };
    let hash = if request.delete {
        None
    } else {
        let password = match &request.password {
            Some(password) => password.clone(),
            None => read_password()?,
        };
        if password.is_empty() {
            bail!("empty password");
        }
        Some(
            PasswordHash::new_pbkdf2(password.as_bytes(), DEFAULT_ITERATIONS)
                .map_err(|e| anyhow::anyhow!("cannot get random bytes for the salt: {e}"))?,
        )
    };
    let updated = update(&existing, &request.username, hash.as_ref())?;
    write_file(&request.file, &updated)
}

/// The file text with `user` set to `hash`, or removed when `hash` is `None`. Other lines,
/// comments included, stay as they are.
pub fn update(text: &str, user: &str, hash: Option<&PasswordHash>) -> anyhow::Result<String> {
    let mut out = String::with_capacity(text.len() + 128);
    let mut found = false;
    for line in text.lines() {
        if split_line(line).is_some_and(|(name, _)| name == user) {
            if let (Some(hash), false) = (hash, found) {
                out.push_str(&format!("{user}:{hash}\n"));
            }
            found = true;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    match (hash, found) {
        (Some(hash), false) => out.push_str(&format!("{user}:{hash}\n")),
        (None, false) => bail!("user {user} is not in the password file"),
        _ => {}
    }
    Ok(out)
}

/// Asks twice without echo on a terminal; otherwise reads one line from standard input.
fn read_password() -> anyhow::Result<String> {
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ").context("cannot read the password")?;
        let second =
            rpassword::prompt_password("Reenter password: ").context("cannot read the password")?;
        if first != second {
            bail!("passwords do not match");
        }
        Ok(first)
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("cannot read the password from standard input")?;
        Ok(line.trim_end_matches(['\n', '\r']).to_owned())
    }
}

/// Replaces the file atomically (a temporary file renamed over it), readable by its owner only
/// when new, keeping an existing file's permissions.
fn write_file(path: &Path, text: &str) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .with_context(|| format!("{} is not a file name", path.display()))?;
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let result = (|| {
        let mut file = options.open(&tmp)?;
        if let Ok(meta) = std::fs::metadata(path) {
            file.set_permissions(meta.permissions())?;
        }
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::PasswordFile;

    fn hash(pw: &str) -> PasswordHash {
        PasswordHash::new_pbkdf2(pw.as_bytes(), DEFAULT_ITERATIONS).expect("random")
    }

    #[test]
    fn add_replace_and_delete_keep_other_lines() {
        let text = update("", "alice", Some(&hash("a1"))).expect("add");
        let text = update(&format!("# users\n{text}"), "bob", Some(&hash("b1"))).expect("add");
        let text = update(&text, "alice", Some(&hash("a2"))).expect("replace");
        let file = PasswordFile::parse(&text, "t");
        assert_eq!(file.len(), 2);
        assert!(file.get("alice").expect("alice").verify(b"a2"));
        assert!(file.get("bob").expect("bob").verify(b"b1"));
        assert!(text.starts_with("# users\n"));
        let text = update(&text, "alice", None).expect("delete");
        let file = PasswordFile::parse(&text, "t");
        assert!(file.get("alice").is_none() && file.get("bob").is_some());
        assert!(
            update(&text, "alice", None).is_err(),
            "deleting a missing user"
        );
    }

    #[test]
    fn the_command_writes_a_file_mosquitto_format() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("passwd");
        let request = |user: &str, pw: Option<&str>, create, delete| PasswdRequest {
            create,
            batch: pw.is_some(),
            delete,
            file: file.clone(),
            username: user.into(),
            password: pw.map(Into::into),
        };
        assert!(
            run(&request("alice", Some("pw"), false, false)).is_err(),
            "no file without -c"
        );
        run(&request("alice", Some("pw"), true, false)).expect("create");
        run(&request("bob", Some("pw2"), false, false)).expect("add");
        let text = std::fs::read_to_string(&file).expect("read");
        assert!(text.lines().all(|l| l.contains(":$7$101$")), "{text}");
        run(&request("alice", None, false, true)).expect("delete");
        let loaded = PasswordFile::load(&file).expect("loads");
        assert!(loaded.get("alice").is_none());
        assert!(loaded.get("bob").expect("bob").verify(b"pw2"));
        assert!(run(&request("a:b", Some("x"), false, false)).is_err());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&file).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
