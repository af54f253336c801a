//! Password files in `mosquitto_passwd`'s format: one `username:hash` line per user.
//!
//! The hash formats, as mosquitto 2 defines them (src/password_mosq.c, src/security_default.c):
//! - `$7$<iterations>$<base64 salt>$<base64 hash>`: PBKDF2-HMAC-SHA512 over the password and the
//!   raw salt bytes, 64 bytes of output. `mosquitto_passwd` writes 101 iterations and a 12-byte
//!   salt.
//! - `$6$<base64 salt>$<base64 hash>`: one SHA-512 of the password bytes followed by the raw salt
//!   bytes (`sha512(password || salt)`), the format before mosquitto 2.
//! - `$argon2id$v=19$m=..,t=..,p=..$<salt>$<hash>`: a PHC string (mosquitto 2.1).
//!
//! Base64 is the standard alphabet; padding is optional when reading and written as mosquitto
//! writes it. Lines starting with `#` and lines without `:` are skipped, as mosquitto does; a line
//! whose hash cannot be read is skipped with a warning, so one bad entry locks out one user only.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;
use thiserror::Error;
use tracing::warn;

/// Iterations `mosquitto_passwd` uses for new `$7$` hashes (PW_DEFAULT_ITERATIONS).
pub const DEFAULT_ITERATIONS: u32 = 101;

/// Salt bytes for new hashes (mosquitto's SALT_LEN).
pub const SALT_LEN: usize = 12;

/// SHA-512 output, the stored hash length of `$6$` and `$7$`.
const HASH_LEN: usize = 64;

/// Standard base64; reads with or without padding, writes with it (as OpenSSL's BIO does).
const B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a hash string was not understood.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum HashError {
    #[error("unknown hash type (expected $7$, $6$ or $argon2id$)")]
    UnknownType,
    #[error("missing field")]
    MissingField,
    #[error("invalid iteration count")]
    Iterations,
    #[error("salt is not valid base64 or is empty")]
    Salt,
    #[error("hash is not 64 bytes of base64")]
    Hash,
    #[error("invalid argon2id PHC string: {0}")]
    Argon2(String),
}

/// A stored password hash.
#[derive(Clone, PartialEq, Eq)]
pub enum PasswordHash {
    /// `$6$`: sha512(password || salt).
    Sha512 { salt: Vec<u8>, hash: [u8; HASH_LEN] },
    /// `$7$`: PBKDF2-HMAC-SHA512.
    Pbkdf2Sha512 {
        iterations: u32,
        salt: Vec<u8>,
        hash: [u8; HASH_LEN],
    },
    /// `$argon2id$`: the whole PHC string, checked by the argon2 crate.
    Argon2id(String),
}

impl fmt::Debug for PasswordHash {
    // Hashes stay out of logs and panics.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self {
            PasswordHash::Sha512 { .. } => "$6$",
            PasswordHash::Pbkdf2Sha512 { .. } => "$7$",
            PasswordHash::Argon2id(_) => "$argon2id$",
        };
        write!(f, "PasswordHash({kind}..)")
    }
}

impl PasswordHash {
    /// Parses the hash part of a password file line.
    pub fn parse(text: &str) -> Result<PasswordHash, HashError> {
        if text.starts_with("$argon2id$") {
            argon2::PasswordHash::new(text).map_err(|e| HashError::Argon2(e.to_string()))?;
            return Ok(PasswordHash::Argon2id(text.to_owned()));
        }
        let mut fields = text.split('$');
        if fields.next() != Some("") {
            return Err(HashError::UnknownType);
        }
        let kind = fields.next().ok_or(HashError::UnknownType)?;
        let iterations = match kind {
            "6" => None,
            "7" => Some(
                fields
                    .next()
                    .ok_or(HashError::MissingField)?
                    .parse::<u32>()
                    .ok()
                    .filter(|&n| n >= 1)
                    .ok_or(HashError::Iterations)?,
            ),
            _ => return Err(HashError::UnknownType),
        };
        let salt = B64
            .decode(fields.next().ok_or(HashError::MissingField)?)
            .ok()
            .filter(|s| !s.is_empty())
            .ok_or(HashError::Salt)?;
        let hash: [u8; HASH_LEN] = B64
            .decode(fields.next().ok_or(HashError::MissingField)?)
            .ok()
            .and_then(|h| h.try_into().ok())
            .ok_or(HashError::Hash)?;
        if fields.next().is_some() {
            return Err(HashError::Hash);
        }
        Ok(match iterations {
            None => PasswordHash::Sha512 { salt, hash },
            Some(iterations) => PasswordHash::Pbkdf2Sha512 {
                iterations,
                salt,
                hash,
            },
        })
    }

    /// A new `$7$` hash with a random salt, as `mosquitto_passwd` makes them.
    pub fn new_pbkdf2(password: &[u8], iterations: u32) -> Result<PasswordHash, getrandom::Error> {
        let mut salt = vec![0u8; SALT_LEN];
        getrandom::fill(&mut salt)?;
        Ok(PasswordHash::pbkdf2_with_salt(password, iterations, salt))
    }

    fn pbkdf2_with_salt(password: &[u8], iterations: u32, salt: Vec<u8>) -> PasswordHash {
        let mut hash = [0u8; HASH_LEN];
        pbkdf2::pbkdf2_hmac::<Sha512>(password, &salt, iterations, &mut hash);
        PasswordHash::Pbkdf2Sha512 {
            iterations,
            salt,
            hash,
        }
    }

    /// Whether `password` matches, compared in constant time. CPU-heavy for `$7$` with many
    /// iterations and for argon2id: call it off the async workers.
    pub fn verify(&self, password: &[u8]) -> bool {
        match self {
            PasswordHash::Sha512 { salt, hash } => {
                let computed = Sha512::new()
                    .chain_update(password)
                    .chain_update(salt)
                    .finalize();
                computed.as_slice().ct_eq(hash).into()
            }
            PasswordHash::Pbkdf2Sha512 {
                iterations,
                salt,
                hash,
            } => {
                let mut computed = [0u8; HASH_LEN];
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, *iterations, &mut computed);
                computed.ct_eq(hash).into()
            }
            PasswordHash::Argon2id(phc) => {
                use argon2::PasswordVerifier;
                // The crate compares the output in constant time.
                argon2::Argon2::default()
                    .verify_password(password, phc.as_str())
                    .is_ok()
            }
        }
    }
}

impl fmt::Display for PasswordHash {
    /// The form written to a password file.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PasswordHash::Sha512 { salt, hash } => {
                write!(f, "$6${}${}", B64.encode(salt), B64.encode(hash))
            }
            PasswordHash::Pbkdf2Sha512 {
                iterations,
                salt,
                hash,
            } => write!(
                f,
                "$7${iterations}${}${}",
                B64.encode(salt),
                B64.encode(hash)
            ),
            PasswordHash::Argon2id(phc) => f.write_str(phc),
        }
    }
}

/// Why a password file could not be loaded.
#[derive(Debug, Error)]
#[error("cannot read password file {path}: {source}")]
pub struct PasswordFileError {
    pub path: std::path::PathBuf,
    pub source: std::io::Error,
}

/// The users of a password file.
#[derive(Debug, Default)]
pub struct PasswordFile {
    users: HashMap<String, PasswordHash>,
}

impl PasswordFile {
    /// Reads and parses a password file.
    pub fn load(path: &Path) -> Result<PasswordFile, PasswordFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| PasswordFileError {
            path: path.to_owned(),
            source,
        })?;
        Ok(PasswordFile::parse(&text, &path.display().to_string()))
    }

    /// Parses password file text; `origin` names the file in warnings.
    pub fn parse(text: &str, origin: &str) -> PasswordFile {
        let mut users = HashMap::new();
        for (number, line) in text.lines().enumerate() {
            let Some((user, hash)) = split_line(line) else {
                continue;
            };
            match PasswordHash::parse(hash) {
                Ok(hash) => {
                    users.insert(user.to_owned(), hash);
                }
                Err(e) => warn!(
                    "Invalid password hash for user {user} in {origin} line {}: {e}; \
                     ignoring the entry.",
                    number + 1
                ),
            }
        }
        PasswordFile { users }
    }

    /// The hash stored for `user`.
    pub fn get(&self, user: &str) -> Option<&PasswordHash> {
        self.users.get(user)
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

/// The user and hash of a password file line, or `None` for comments and lines without `:`.
/// As mosquitto: the username ends at the first `:`, the hash at the next, both trimmed.
pub fn split_line(line: &str) -> Option<(&str, &str)> {
    if line.starts_with('#') {
        return None;
    }
    let (user, rest) = line.split_once(':')?;
    let hash = rest.split(':').next().unwrap_or_default();
    let (user, hash) = (user.trim(), hash.trim());
    (!user.is_empty() && !hash.is_empty()).then_some((user, hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Computed independently: Python's hashlib (sha512, pbkdf2_hmac) and the reference argon2
    // command-line tool (`argon2 saltysalt1234 -id -t 2 -m 12 -p 1 -e`).
    const SHA512: &str = "$6$AQIDBAUGBwgJCgsM$k4h6DJTPKKgPqwiLW87w0j5t6eo2nkDOCc72xNQ6goxbMrAMEDvsnYteF9SSd1cyXtc8SuF5I0GVPt7YRi6Wdw==";
    const PBKDF2: &str = "$7$1000$FBUWFxgZGhscHR4f$tpHPin6q51margSOVBCk5Qb2OBJ+SV6D+rRPuuua5wvCbJiFf0JvdZKY5rgcZUCQxzejIqgNg/9W6JmqWoSrnw==";
    const ARGON2ID: &str = "$argon2id$v=19$m=4096,t=2,p=1$c2FsdHlzYWx0MTIzNA$Jirt5oiH+j1SrHS1OQKKryF1xZJkGwoPCycDLj0x+ZU";

    #[test]
    fn each_format_verifies_its_password_and_only_that() {
        for (text, right) in [
            (SHA512, "correct horse"),
            (PBKDF2, "battery staple"),
            (ARGON2ID, "tr0ub4dor"),
        ] {
            let hash = PasswordHash::parse(text).expect(text);
            assert!(hash.verify(right.as_bytes()), "{text}");
            assert!(!hash.verify(b"wrong"), "{text}");
            assert!(!hash.verify(b""), "{text}");
            assert_eq!(hash.to_string(), text, "written back unchanged");
        }
        match PasswordHash::parse(PBKDF2).expect("parses") {
            PasswordHash::Pbkdf2Sha512 {
                iterations, salt, ..
            } => {
                assert_eq!(iterations, 1000, "iterations come from the line");
                assert_eq!(salt, (20u8..32).collect::<Vec<_>>());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn new_hashes_are_mosquittos_defaults_and_salted() {
        let a = PasswordHash::new_pbkdf2(b"pw", DEFAULT_ITERATIONS).expect("random");
        let b = PasswordHash::new_pbkdf2(b"pw", DEFAULT_ITERATIONS).expect("random");
        assert_ne!(a, b, "a fresh salt each time");
        let text = a.to_string();
        assert!(text.starts_with("$7$101$"), "{text}");
        let salt_b64 = text.split('$').nth(3).expect("salt field");
        assert_eq!(salt_b64.len(), 16, "12 bytes of salt");
        let reparsed = PasswordHash::parse(&text).expect("parses");
        assert!(reparsed.verify(b"pw") && !reparsed.verify(b"pW"));
    }

    #[test]
    fn malformed_hashes_are_refused_with_a_reason() {
        let cases = [
            ("plain", HashError::UnknownType),
            ("$5$abc$def", HashError::UnknownType),
            ("$7$0$AQIDBAUGBwgJCgsM$aGFzaA==", HashError::Iterations),
            ("$7$x$AQIDBAUGBwgJCgsM$aGFzaA==", HashError::Iterations),
            ("$7$101", HashError::MissingField),
            ("$6$!!!$aGFzaA==", HashError::Salt),
            ("$6$$aGFzaA==", HashError::Salt),
            ("$6$AQIDBAUGBwgJCgsM$aGFzaA==", HashError::Hash),
        ];
        for (text, want) in cases {
            assert_eq!(PasswordHash::parse(text), Err(want), "{text}");
        }
        assert!(matches!(
            PasswordHash::parse("$argon2id$v=19$garbage"),
            Err(HashError::Argon2(_))
        ));
    }

    #[test]
    fn file_lines_are_read_as_mosquitto_reads_them() {
        let text = format!(
            "# comment\n\nno colon here\n alice : {SHA512} \nbob:{PBKDF2}:trailing\n\
             carol:$9$bad\ndave:\n"
        );
        let file = PasswordFile::parse(&text, "test");
        assert_eq!(file.len(), 2);
        assert!(file.get("alice").expect("alice").verify(b"correct horse"));
        assert!(file.get("bob").expect("bob").verify(b"battery staple"));
        assert!(file.get("carol").is_none(), "bad hash skipped");
        assert!(file.get("dave").is_none(), "no hash");
    }
}
