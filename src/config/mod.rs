//! Configuration: a TOML file (every setting) overlaid by command-line flags.
//!
//! [`Config`] is the single source of truth the library runs from; `main.rs` builds it with
//! [`Cli::load`] and the tests build it directly. Defaults give a new user a working broker on
//! `127.0.0.1:1883` with no file at all.

mod cli;
mod limits;
pub mod mosquitto;

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
    /// MQTT straight on the byte stream, or inside WebSocket frames (for browsers).
    pub protocol: ListenerProtocol,
    /// With a `[listener.tls]` table the listener speaks TLS: `mqtt` becomes MQTT over TLS
    /// (port 8883 by convention), `websockets` becomes secure WebSocket (`wss`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// This listener's own authentication and access control, replacing `[auth]` entirely for its
    /// clients (mosquitto's `per_listener_settings`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthConfig>,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        ListenerConfig::tcp(default_listen())
    }
}

impl ListenerConfig {
    /// A plain MQTT listener on `bind` with no limit of its own.
    pub fn tcp(bind: SocketAddr) -> Self {
        ListenerConfig {
            bind,
            max_connections: 0,
            protocol: ListenerProtocol::Mqtt,
            tls: None,
            auth: None,
        }
    }

    /// How the listener is named in logs: `mqtt`, `mqtt+tls`, `websockets`, `websockets+tls`.
    pub fn kind(&self) -> &'static str {
        match (self.protocol, self.tls.is_some()) {
            (ListenerProtocol::Mqtt, false) => "mqtt",
            (ListenerProtocol::Mqtt, true) => "mqtt+tls",
            (ListenerProtocol::Websockets, false) => "websockets",
            (ListenerProtocol::Websockets, true) => "websockets+tls",
        }
    }
}

/// What a listener carries MQTT in; mosquitto's names for its `protocol` option.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ListenerProtocol {
    /// MQTT directly on TCP (or TLS).
    #[default]
    Mqtt,
    /// MQTT in binary WebSocket frames, on the paths `/mqtt` and `/`.
    Websockets,
}

/// TLS settings of one listener (`[listener.tls]`), named as in mosquitto. Files are PEM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The server certificate, followed by any intermediate certificates.
    pub cert_file: PathBuf,
    /// The private key of the server certificate (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// CA certificates that client certificates must chain to. Without
    /// `require_certificate`, a client may still connect without a certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Refuse clients that present no valid certificate (mutual TLS); needs `ca_file`.
    #[serde(default)]
    pub require_certificate: bool,
    /// The client certificate's Common Name (or, without one, its first DNS or email SAN) is
    /// the client's username, whatever CONNECT says; needs `require_certificate`.
    #[serde(default)]
    pub use_identity_as_username: bool,
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
    #[error("{}:{line}: {message}", path.display())]
    Mosquitto {
        path: PathBuf,
        line: usize,
        message: String,
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
        for listener in &self.listeners {
            if let Some(tls) = &listener.tls {
                validate_tls(listener.bind, tls)?;
            }
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

/// Checks a listener's TLS settings fit together, then loads its files as the listener would,
/// so `--check-config` catches a missing or broken certificate before the broker starts.
fn validate_tls(bind: SocketAddr, tls: &TlsConfig) -> Result<(), ConfigError> {
    if tls.require_certificate && tls.ca_file.is_none() {
        return Err(ConfigError::Invalid(format!(
            "listener {bind}: tls.require_certificate needs tls.ca_file, the CA that client \
             certificates are checked against"
        )));
    }
    if tls.use_identity_as_username && !tls.require_certificate {
        return Err(ConfigError::Invalid(format!(
            "listener {bind}: tls.use_identity_as_username needs tls.require_certificate = true"
        )));
    }
    crate::transport::tls::server_config(tls)
        .map(drop)
        .map_err(|e| ConfigError::Invalid(format!("listener {bind}: {e}")))
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
        let tls_listener = ListenerConfig {
            tls: Some(TlsConfig {
                cert_file: PathBuf::from("/x"),
                key_file: PathBuf::from("/x"),
                ca_file: Some(PathBuf::from("/x")),
                require_certificate: true,
                use_identity_as_username: true,
            }),
            auth: Some(auth.clone()),
            ..ListenerConfig::default()
        };
        let full = Config {
            data_dir: Some(PathBuf::from("/x")),
            http: HttpConfig {
                bind: Some("127.0.0.1:8080".parse().expect("addr")),
                token: Some("x".into()),
            },
            listeners: vec![tls_listener],
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
    fn listener_protocol_and_tls_parse_with_mosquitto_names() {
        let config = Config::from_toml(
            "[[listener]]\nbind = \"0.0.0.0:8084\"\nprotocol = \"websockets\"\n\
             [listener.tls]\ncert_file = \"/etc/s/server.crt\"\nkey_file = \"/etc/s/server.key\"\n",
        )
        .expect("parses");
        let listener = &config.listeners[0];
        assert_eq!(listener.protocol, ListenerProtocol::Websockets);
        assert_eq!(listener.kind(), "websockets+tls");
        let tls = listener.tls.as_ref().expect("tls table");
        assert_eq!(tls.key_file, PathBuf::from("/etc/s/server.key"));
        assert_eq!(tls.ca_file, None);
        assert!(!tls.require_certificate && !tls.use_identity_as_username);
        assert_eq!(
            Config::from_toml(&config.to_toml()).expect("round trip"),
            config
        );

        let err = Config::from_toml("[[listener]]\nprotocol = \"ws\"\n").expect_err("bad name");
        assert!(err.to_string().contains("websockets"), "{err}");
        let err = Config::from_toml(
            "[[listener]]\n[listener.tls]\ncert_file = \"a\"\nkey_file = \"b\"\ncafile = \"c\"\n",
        )
        .expect_err("unknown tls key");
        assert!(err.to_string().contains("cafile"), "{err}");
    }

    #[test]
    fn tls_settings_that_cannot_work_are_refused_naming_the_problem() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let (cert_file, key_file) = (dir.path().join("s.crt"), dir.path().join("s.key"));
        std::fs::write(&cert_file, cert.pem()).expect("write");
        std::fs::write(&key_file, key.serialize_pem()).expect("write");
        let with_tls = |tls: TlsConfig| Config {
            listeners: vec![ListenerConfig {
                tls: Some(tls),
                ..ListenerConfig::default()
            }],
            ..Config::default()
        };
        let good = TlsConfig {
            cert_file: cert_file.clone(),
            key_file: key_file.clone(),
            ca_file: None,
            require_certificate: false,
            use_identity_as_username: false,
        };
        with_tls(good.clone())
            .validate()
            .expect("a certificate and its key");
        with_tls(TlsConfig {
            ca_file: Some(cert_file.clone()),
            require_certificate: true,
            use_identity_as_username: true,
            ..good.clone()
        })
        .validate()
        .expect("mutual TLS with identities");

        let refused = |tls: TlsConfig, needle: &str| {
            let err = with_tls(tls).validate().expect_err("refused").to_string();
            assert!(err.contains(needle), "{needle:?} not in {err:?}");
        };
        refused(
            TlsConfig {
                require_certificate: true,
                ..good.clone()
            },
            "needs tls.ca_file",
        );
        refused(
            TlsConfig {
                ca_file: Some(cert_file.clone()),
                use_identity_as_username: true,
                ..good.clone()
            },
            "needs tls.require_certificate",
        );
        refused(
            TlsConfig {
                key_file: dir.path().join("missing.key"),
                ..good.clone()
            },
            "missing.key",
        );
        refused(
            TlsConfig {
                ca_file: Some(key_file.clone()),
                ..good.clone()
            },
            "tls.ca_file",
        );
        let other = rcgen::KeyPair::generate().expect("key");
        let other_file = dir.path().join("other.key");
        std::fs::write(&other_file, other.serialize_pem()).expect("write");
        refused(
            TlsConfig {
                key_file: other_file,
                ..good
            },
            "s.crt",
        );
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
