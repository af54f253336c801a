//! Configuration: a TOML file (every setting) overlaid by command-line flags.
//!
//! [`Config`] is the single source of truth the library runs from; `main.rs` builds it with
//! [`Cli::load`] and the tests build it directly. Defaults give a new user a working broker on
//! `127.0.0.1:1883` with no file at all.

mod cli;
mod limits;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::storage::{StoreKind, SyncMode};

pub use cli::{Cli, Command, PasswdArgs};
pub use limits::Limits;

/// The address a broker started with no configuration listens on.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:1883";

/// Everything the broker needs to run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// TCP listeners (`[[listener]]` tables).
    #[serde(rename = "listener")]
    pub listeners: Vec<ListenerConfig>,
    pub limits: Limits,
    /// Where durable state lives. The directory is created and locked so two brokers never share
    /// it. Without one, state is kept in memory only (as mosquitto without `persistence`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    pub storage: StorageConfig,
    pub log: LogConfig,
    /// Authentication and access control for listeners without an `auth` table of their own.
    pub auth: AuthConfig,
    /// Seconds between `$SYS` updates (mosquitto's `sys_interval`); 0 publishes none.
    pub sys_interval: u32,
    /// The HTTP listener for metrics, the admin API and the dashboard.
    pub http: HttpConfig,
}

/// The HTTP listener: `/metrics`, `/healthz`, `/readyz`, the JSON admin API under `/api/` and the
/// dashboard at `/`. Off unless `bind` is set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind: Option<SocketAddr>,
    /// Bearer token every request must carry (`Authorization: Bearer ...`). Required when `bind`
    /// is not a loopback address; without one, loopback requests need none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// The `$SYS` interval a broker starts with, as mosquitto's.
pub const DEFAULT_SYS_INTERVAL: u32 = 10;

/// How durable state is kept (used when `data_dir` is set).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// `redb` (default), `sled` (cargo feature `sled`) or `memory` (nothing on disk).
    pub backend: StoreKind,
    /// `always`: an acknowledgement waits until what it acknowledges is on disk (group commit).
    /// `periodic`: changes are committed at once and made durable every `sync_interval_ms`.
    pub sync: SyncMode,
    /// In `periodic` mode, the longest time a committed change waits to become durable.
    pub sync_interval_ms: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            backend: StoreKind::Redb,
            sync: SyncMode::Periodic,
            sync_interval_ms: 1000,
        }
    }
}

impl StorageConfig {
    /// The backend actually used: without a data directory, nothing can be on disk.
    pub fn effective_backend(&self, data_dir: Option<&Path>) -> StoreKind {
        if data_dir.is_none() {
            StoreKind::Memory
        } else {
            self.backend
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listeners: vec![ListenerConfig::default()],
            limits: Limits::default(),
            data_dir: None,
            storage: StorageConfig::default(),
            log: LogConfig::default(),
            auth: AuthConfig::default(),
            sys_interval: DEFAULT_SYS_INTERVAL,
            http: HttpConfig::default(),
        }
    }
}

/// One listening socket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListenerConfig {
    /// Address and port; port 0 picks a free port (tests use this).
    pub bind: SocketAddr,
    /// Connections open at once on this listener, at most; 0 = no limit of its own.
    pub max_connections: usize,
    /// This listener's own authentication and access control, replacing `[auth]` entirely for its
    /// clients (mosquitto's `per_listener_settings`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthConfig>,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        ListenerConfig {
            bind: default_listen(),
            max_connections: 0,
            auth: None,
        }
    }
}

impl ListenerConfig {
    /// A listener on `bind` with no limit of its own.
    pub fn tcp(bind: SocketAddr) -> Self {
        ListenerConfig {
            bind,
            max_connections: 0,
            auth: None,
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 1883))
}

/// Who may connect and what they may do, with mosquitto's names and file formats.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Whether clients without a username may connect. Unset: allowed until a password file or a
    /// listener `auth` table is configured anywhere, refused after that (mosquitto 2's rule).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_anonymous: Option<bool>,
    /// `mosquitto_passwd` file (`user:hash` lines; `$7$`, `$6$` and `$argon2id$` hashes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// mosquitto ACL file (`user`, `topic`, `pattern` lines). Unset: every client may publish
    /// and subscribe to everything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acl_file: Option<PathBuf>,
}

/// Logging settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A `tracing` filter: `info`, `debug`, or per module as `starling=debug,info`.
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".to_owned(),
            format: LogFormat::Text,
        }
    }
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Why a configuration could not be loaded.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Reads a TOML config file; keys it leaves out keep their defaults.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_toml(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })
    }

    /// Parses TOML text.
    pub fn from_toml(text: &str) -> Result<Config, toml::de::Error> {
        toml::from_str(text)
    }

    /// The configuration as TOML, as `--print-config` shows it.
    pub fn to_toml(&self) -> String {
        // Serializing plain structs of strings and numbers cannot fail; keep a readable fallback
        // anyway rather than a panic.
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot print config: {e}\n"))
    }

    /// `allow_anonymous` where it is not set: mosquitto 2 refuses anonymous clients once any
    /// password file or listener auth is configured, so adding auth never leaves a door open.
    pub fn anonymous_by_default(&self) -> bool {
        self.auth.password_file.is_none() && self.listeners.iter().all(|l| l.auth.is_none())
    }

    /// The auth settings that apply to the listener at `index`, with `allow_anonymous` resolved.
    pub fn listener_auth(&self, index: usize) -> (AuthConfig, bool) {
        let auth = self
            .listeners
            .get(index)
            .and_then(|l| l.auth.clone())
            .unwrap_or_else(|| self.auth.clone());
        let anonymous = auth
            .allow_anonymous
            .unwrap_or_else(|| self.anonymous_by_default());
        (auth, anonymous)
    }

    /// Checks what serde cannot: values that parse but make no sense together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.listeners.is_empty() {
            return Err(ConfigError::Invalid(
                "no listener configured: add a [[listener]] table or pass --listen".into(),
            ));
        }
        let limits = &self.limits;
        if limits.max_packet_size != 0 && limits.max_packet_size < 64 {
            return Err(ConfigError::Invalid(format!(
                "limits.max_packet_size = {} is too small to carry a CONNECT; use 0 or at least 64",
                limits.max_packet_size
            )));
        }
        if limits.max_packet_size > crate::codec::MAX_PACKET_SIZE {
            return Err(ConfigError::Invalid(format!(
                "limits.max_packet_size = {} is above the protocol's maximum of {}",
                limits.max_packet_size,
                crate::codec::MAX_PACKET_SIZE
            )));
        }
        if limits.max_keepalive == 0 {
            return Err(ConfigError::Invalid(
                "limits.max_keepalive = 0 would refuse every client; the largest is 65535".into(),
            ));
        }
        if self.storage.sync_interval_ms == 0 {
            return Err(ConfigError::Invalid(
                "storage.sync_interval_ms must be at least 1; use sync = \"always\" to make \
                 every acknowledgement wait for the disk"
                    .into(),
            ));
        }
        if limits.connect_timeout == 0 {
            return Err(ConfigError::Invalid(
                "limits.connect_timeout must be at least 1 second".into(),
            ));
        }
        if let Some(token) = &self.http.token
            && token.trim().is_empty()
        {
            return Err(ConfigError::Invalid(
                "http.token is empty; remove it or set a secret".into(),
            ));
        }
        if let Some(bind) = self.http.bind
            && !bind.ip().is_loopback()
            && self.http.token.is_none()
        {
            return Err(ConfigError::Invalid(format!(
                "http.bind = \"{bind}\" is reachable from other machines: set http.token so the \
                 admin API is not open to them"
            )));
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| ConfigError::Invalid(format!("log.level = {:?}: {e}", self.log.level)))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_gives_the_defaults() {
        let config = Config::from_toml("").expect("empty TOML parses");
        assert_eq!(config, Config::default());
        assert_eq!(config.listeners[0].bind.to_string(), DEFAULT_LISTEN);
        config.validate().expect("defaults are valid");
    }

    #[test]
    fn printed_config_parses_back_to_the_same_config() {
        let mut config = Config::default();
        config.limits.max_inflight_messages = 5;
        config
            .listeners
            .push(ListenerConfig::tcp("0.0.0.0:1884".parse().expect("addr")));
        config.data_dir = Some(PathBuf::from("/var/lib/starling"));
        let text = config.to_toml();
        assert_eq!(Config::from_toml(&text).expect("round trip"), config);
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        let err = Config::from_toml("[limits]\nmax_inflight = 3\n").expect_err("unknown key");
        assert!(err.to_string().contains("max_inflight"), "{err}");
    }

    /// config/starling.toml is the operator's reference: it must parse to the defaults and name
    /// every key the broker knows.
    #[test]
    fn the_example_file_documents_every_key_with_its_default() {
        let example = include_str!("../../config/starling.toml");
        let parsed = Config::from_toml(example).expect("example parses");
        assert_eq!(parsed, Config::default());
        let auth = AuthConfig {
            allow_anonymous: Some(false),
            password_file: Some(PathBuf::from("/x")),
            acl_file: Some(PathBuf::from("/x")),
        };
        let full = Config {
            data_dir: Some(PathBuf::from("/x")),
            http: HttpConfig {
                bind: Some("127.0.0.1:8080".parse().expect("addr")),
                token: Some("x".into()),
            },
            listeners: vec![ListenerConfig {
                auth: Some(auth.clone()),
                ..ListenerConfig::default()
            }],
            auth,
            ..Config::default()
        };
        for line in full.to_toml().lines() {
            if let Some((key, _)) = line.split_once(" = ") {
                assert!(
                    example.contains(&format!("{key} = ")),
                    "config/starling.toml does not document `{key}`"
                );
            }
        }
    }

    #[test]
    fn nonsense_values_are_refused() {
        let mut config = Config::default();
        config.limits.max_packet_size = 10;
        assert!(config.validate().is_err());
        let mut config = Config::default();
        config.listeners.clear();
        assert!(config.validate().is_err());
        let mut config = Config::default();
        config.log.level = "loud=?=".into();
        assert!(config.validate().is_err());
    }

    #[test]
    fn an_http_listener_beyond_loopback_needs_a_token() {
        let mut config = Config::default();
        config.http.bind = Some("127.0.0.1:8080".parse().expect("addr"));
        config.validate().expect("loopback without a token is fine");
        config.http.bind = Some("0.0.0.0:8080".parse().expect("addr"));
        let err = config
            .validate()
            .expect_err("open to the network without a token");
        assert!(err.to_string().contains("http.token"), "{err}");
        config.http.token = Some("s3cret".into());
        config.validate().expect("with a token");
        config.http.token = Some("  ".into());
        assert!(config.validate().is_err(), "a blank token is no token");
    }
}
