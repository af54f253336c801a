//! Authentication and access control, compatible with mosquitto's security files: who may connect
//! (`allow_anonymous`, `password_file`) and what each client may publish and receive (`acl_file`).
//!
//! [`Security`] is built once from the configuration: one [`AuthScope`] for `[auth]` and one for
//! each listener with an `auth` table of its own (mosquitto's per_listener_settings). Each
//! listener's connections get a [`Gate`]: they hand it the CONNECT's credentials and get back the
//! client's [`Access`] (its ACL view, which the sans-IO session checks) or a refusal with the
//! delay the per-address backoff imposes. Files are read at start and by [`Security::reload`]
//! (for SIGHUP); a reload that fails keeps what was in force.

mod acl;
mod ip;
pub mod passwd;
mod password;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use thiserror::Error;
use tokio::sync::Semaphore;
use tracing::{error, info};

pub use acl::{Access, AclError, AclRules, AclSource};
pub use ip::{Admission, ConnectionRate, FailureBackoff};
pub use password::{
    DEFAULT_ITERATIONS, HashError, PasswordFile, PasswordFileError, PasswordHash, SALT_LEN,
};

use crate::codec::ReasonCode;
use crate::config::{AuthConfig, Config};

/// Why the security files could not be loaded.
#[derive(Debug, Error)]
pub enum AuthError {
    #[error(transparent)]
    Password(#[from] PasswordFileError),
    #[error(transparent)]
    Acl(#[from] AclError),
}

/// The auth settings and loaded files that apply to some listeners.
#[derive(Debug)]
pub struct AuthScope {
    allow_anonymous: bool,
    password_path: Option<PathBuf>,
    passwords: RwLock<Arc<PasswordFile>>,
    acl: Option<Arc<AclSource>>,
}

impl AuthScope {
    /// Loads the files `config` names; `allow_anonymous` is already resolved.
    pub fn load(config: &AuthConfig, allow_anonymous: bool) -> Result<AuthScope, AuthError> {
        let passwords = match &config.password_file {
            Some(path) => PasswordFile::load(path)?,
            None => PasswordFile::default(),
        };
        let acl = config
            .acl_file
            .as_deref()
            .map(AclSource::load)
            .transpose()?
            .map(Arc::new);
        Ok(AuthScope {
            allow_anonymous,
            password_path: config.password_file.clone(),
            passwords: RwLock::new(Arc::new(passwords)),
            acl,
        })
    }

    /// Re-reads the password and ACL files. Each file is replaced only if it loads.
    pub fn reload(&self) -> Result<(), AuthError> {
        let mut result = Ok(());
        if let Some(path) = &self.password_path {
            match PasswordFile::load(path) {
                Ok(file) => *self.passwords.write() = Arc::new(file),
                Err(e) => result = Err(e.into()),
            }
        }
        if let Some(acl) = &self.acl
            && let Err(e) = acl.reload()
        {
            result = result.and(Err(e.into()));
        }
        result
    }

    /// The access of a client that passed authentication.
    fn access(&self, username: Option<&str>, client_id: &Arc<str>) -> Access {
        match &self.acl {
            Some(source) => {
                Access::restricted(source.clone(), username.map(Arc::from), client_id.clone())
            }
            None => Access::unrestricted(),
        }
    }
}

/// Password checks running at once, at most: argon2id takes tens of milliseconds and megabytes
/// each, so a burst of logins must queue rather than take every blocking thread.
fn verify_slots() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// State every listener shares.
#[derive(Debug)]
struct Shared {
    backoff: FailureBackoff,
    verifying: Semaphore,
    /// Checked for unknown users, so a refusal takes as long whether or not the user exists.
    decoy: PasswordHash,
}

/// Every auth scope of a server.
#[derive(Debug)]
pub struct Security {
    global: Arc<AuthScope>,
    /// One per listener, in config order: the global scope or the listener's own.
    listeners: Vec<Arc<AuthScope>>,
    shared: Arc<Shared>,
}

impl Security {
    /// Loads every password and ACL file the configuration names.
    pub fn load(config: &Config) -> Result<Security, AuthError> {
        let (global_config, global_anonymous) = (
            config.auth.clone(),
            config
                .auth
                .allow_anonymous
                .unwrap_or_else(|| config.anonymous_by_default()),
        );
        let global = Arc::new(AuthScope::load(&global_config, global_anonymous)?);
        let mut listeners = Vec::with_capacity(config.listeners.len());
        for (index, listener) in config.listeners.iter().enumerate() {
            let scope = match &listener.auth {
                None => global.clone(),
                Some(_) => {
                    let (auth, anonymous) = config.listener_auth(index);
                    Arc::new(AuthScope::load(&auth, anonymous)?)
                }
            };
            listeners.push(scope);
        }
        // Any hash works as a decoy: it only has to cost what a real check costs.
        let decoy = PasswordHash::Pbkdf2Sha512 {
            iterations: DEFAULT_ITERATIONS,
            salt: vec![0; SALT_LEN],
            hash: [0; 64],
        };
        Ok(Security {
            global,
            listeners,
            shared: Arc::new(Shared {
                backoff: FailureBackoff::default(),
                verifying: Semaphore::new(verify_slots()),
                decoy,
            }),
        })
    }

    /// The gate for the listener at `index` in the configuration.
    pub fn gate(&self, index: usize) -> Gate {
        Gate {
            scope: self.listeners.get(index).unwrap_or(&self.global).clone(),
            shared: self.shared.clone(),
        }
    }

    /// Re-reads every password and ACL file (SIGHUP). A file that fails to load is logged and the
    /// version in force stays; the first error is returned.
    pub fn reload(&self) -> Result<(), AuthError> {
        let mut result = Ok(());
        let mut scopes: Vec<&Arc<AuthScope>> = vec![&self.global];
        for scope in &self.listeners {
            if !scopes.iter().any(|s| Arc::ptr_eq(s, scope)) {
                scopes.push(scope);
            }
        }
        for scope in scopes {
            if let Err(e) = scope.reload() {
                error!("Reloading security files failed, keeping the previous ones: {e}");
                result = result.and(Err(e));
            }
        }
        if result.is_ok() {
            info!("Security files reloaded.");
        }
        result
    }
}

/// The credentials of a CONNECT.
#[derive(Debug, Clone, Copy)]
pub struct Credentials<'a> {
    pub username: Option<&'a str>,
    pub password: Option<&'a [u8]>,
    /// The username comes from a verified client certificate (`use_identity_as_username`): it is
    /// authenticated already, and no password is checked (as mosquitto does).
    pub certified: bool,
}

/// A refused login.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// 0x86 Bad User Name or Password (3.1.1: 4) when credentials were given and not accepted;
    /// 0x87 Not Authorized (3.1.1: 5) for an anonymous client where those are not allowed.
    pub reason: ReasonCode,
    /// How long to hold the connection before sending the refusal (per-address backoff).
    pub delay: Duration,
    /// For the log line.
    pub why: &'static str,
}

/// A listener's entrance: checks credentials against its scope.
#[derive(Debug, Clone)]
pub struct Gate {
    scope: Arc<AuthScope>,
    shared: Arc<Shared>,
}

impl Gate {
    /// Authenticates a client; on success returns its access rights.
    ///
    /// Following mosquitto 2: without a username the client is anonymous (allowed or not by
    /// `allow_anonymous`); with one, a configured password file must hold the user and a matching
    /// password; without a password file a username is taken as given when anonymous clients
    /// are allowed, and refused otherwise.
    pub async fn authenticate(
        &self,
        peer: SocketAddr,
        credentials: Credentials<'_>,
        client_id: &Arc<str>,
    ) -> Result<Access, Refusal> {
        let scope = &self.scope;
        let Some(username) = credentials.username else {
            return if scope.allow_anonymous {
                Ok(scope.access(None, client_id))
            } else {
                Err(self.refuse(
                    peer.ip(),
                    ReasonCode::NotAuthorized,
                    "anonymous clients are not allowed",
                ))
            };
        };
        if credentials.certified {
            return Ok(scope.access(Some(username), client_id));
        }
        if scope.password_path.is_none() {
            return if scope.allow_anonymous {
                Ok(scope.access(Some(username), client_id))
            } else {
                Err(self.refuse(
                    peer.ip(),
                    ReasonCode::BadUserNameOrPassword,
                    "no password file to check the username against",
                ))
            };
        }
        let passwords = scope.passwords.read().clone();
        let password = credentials.password.map(<[u8]>::to_vec);
        let user = username.to_owned();
        let shared = self.shared.clone();
        let verified = {
            // The semaphore is never closed, so acquiring fails only if it were; refuse then.
            let Ok(_slot) = self.shared.verifying.acquire().await else {
                return Err(self.refuse(peer.ip(), ReasonCode::ServerUnavailable, "shutting down"));
            };
            tokio::task::spawn_blocking(move || {
                let (hash, known) = match passwords.get(&user) {
                    Some(hash) => (hash, true),
                    None => (&shared.decoy, false),
                };
                let matches = hash.verify(password.as_deref().unwrap_or_default());
                known && password.is_some() && matches
            })
            .await
        };
        match verified {
            Ok(true) => {
                self.shared.backoff.succeeded(peer.ip());
                Ok(scope.access(Some(username), client_id))
            }
            Ok(false) => Err(self.refuse(
                peer.ip(),
                ReasonCode::BadUserNameOrPassword,
                "bad username or password",
            )),
            Err(e) => {
                error!("password check failed to run: {e}");
                Err(self.refuse(peer.ip(), ReasonCode::ServerUnavailable, "internal error"))
            }
        }
    }

    fn refuse(&self, ip: IpAddr, reason: ReasonCode, why: &'static str) -> Refusal {
        let delay = self
            .shared
            .backoff
            .failed(ip, tokio::time::Instant::now().into_std());
        Refusal { reason, delay, why }
    }
}
