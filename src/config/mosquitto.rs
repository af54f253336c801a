//! Reads a mosquitto 2 `mosquitto.conf` into a [`Config`], so an operator can switch brokers
//! without rewriting their configuration first.
//!
//! Directives Starling has an equivalent for are translated with mosquitto's semantics (the
//! default listener, `per_listener_settings`, mosquitto 2's `allow_anonymous` default); the
//! others are returned as warnings, once per directive, and never stop the broker. A value that
//! cannot be read (a bad number or boolean) is an error naming the file and line.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use super::{AuthConfig, Config, ConfigError, ListenerConfig, ListenerProtocol, TlsConfig};

/// A configuration read from a mosquitto.conf, with what could not be carried over.
#[derive(Debug)]
pub struct Translated {
    pub config: Config,
    /// One line per unsupported directive or setting, to be logged as warnings.
    pub warnings: Vec<String>,
}

/// Reads and translates the mosquitto.conf at `path`.
pub fn from_file(path: &Path) -> Result<Translated, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text, path)
}

/// Whether `path` names a mosquitto.conf (by its `.conf` extension) rather than a TOML file.
pub fn is_mosquitto_conf(path: &Path) -> bool {
    path.extension().is_some_and(|ext| ext == "conf")
}

/// A listener being read: mosquitto's default listener (settings before any `listener` line)
/// or one opened by a `listener` line.
#[derive(Default)]
struct Pending {
    port: Option<u16>,
    host: Option<String>,
    protocol: ListenerProtocol,
    max_connections: usize,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    require_certificate: bool,
    use_identity_as_username: bool,
    auth: AuthConfig,
    /// Whether any listener setting was given (for the default listener: whether it exists).
    used: bool,
}

struct Reader<'a> {
    path: &'a Path,
    config: Config,
    default_listener: Pending,
    listeners: Vec<Pending>,
    per_listener_settings: bool,
    /// Whether an auth directive was read: `per_listener_settings` must come before any.
    auth_seen: bool,
    persistence: bool,
    persistence_location: Option<PathBuf>,
    log_level: Option<u8>,
    warnings: Vec<String>,
    warned: HashSet<String>,
}

/// `log_type` names in order of verbosity, as `tracing` levels.
const LEVELS: [&str; 5] = ["off", "error", "warn", "info", "debug"];

/// Translates mosquitto.conf `text`; `path` names the file in errors.
pub fn parse(text: &str, path: &Path) -> Result<Translated, ConfigError> {
    let mut reader = Reader {
        path,
        config: Config::default(),
        default_listener: Pending::default(),
        listeners: Vec::new(),
        per_listener_settings: false,
        auth_seen: false,
        persistence: false,
        persistence_location: None,
        log_level: None,
        warnings: Vec::new(),
        warned: HashSet::new(),
    };
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (directive, value) = match line.split_once(char::is_whitespace) {
            Some((directive, value)) => (directive, value.trim()),
            None => (line, ""),
        };
        reader
            .directive(directive, value, index + 1)
            .map_err(|message| ConfigError::Mosquitto {
                path: path.to_owned(),
                line: index + 1,
                message,
            })?;
    }
    reader.finish()
}

impl Reader<'_> {
    /// The listener the current line configures.
    fn listener(&mut self) -> &mut Pending {
        match self.listeners.last_mut() {
            Some(listener) => listener,
            None => {
                self.default_listener.used = true;
                &mut self.default_listener
            }
        }
    }

    /// Where auth directives go: the current listener with `per_listener_settings`, else global.
    fn auth(&mut self) -> &mut AuthConfig {
        self.auth_seen = true;
        if self.per_listener_settings {
            &mut self.listener().auth
        } else {
            &mut self.config.auth
        }
    }

    fn warn_once(&mut self, directive: &str, message: String) {
        if self.warned.insert(directive.to_owned()) {
            self.warnings.push(message);
        }
    }

    fn directive(&mut self, directive: &str, value: &str, line: usize) -> Result<(), String> {
        let limits = &mut self.config.limits;
        match directive {
            "listener" => {
                let mut words = value.split_whitespace();
                let port = number(directive, words.next().unwrap_or(""))?;
                let host = words.next().map(str::to_owned);
                self.listeners.push(Pending {
                    port: Some(port),
                    host,
                    used: true,
                    ..Pending::default()
                });
            }
            "port" => self.listener().port = Some(number(directive, value)?),
            "bind_address" => self.listener().host = Some(text(directive, value)?.to_owned()),
            "protocol" => {
                self.listener().protocol = match value {
                    "mqtt" => ListenerProtocol::Mqtt,
                    "websockets" => ListenerProtocol::Websockets,
                    other => return Err(format!("protocol {other:?}: use mqtt or websockets")),
                }
            }
            "max_connections" => {
                let max: i64 = number(directive, value)?;
                self.listener().max_connections = if max < 0 {
                    0
                } else {
                    usize::try_from(max).map_err(|e| format!("max_connections: {e}"))?
                };
            }
            "certfile" => self.listener().cert_file = Some(text(directive, value)?.into()),
            "keyfile" => self.listener().key_file = Some(text(directive, value)?.into()),
            "cafile" => self.listener().ca_file = Some(text(directive, value)?.into()),
            "require_certificate" => {
                self.listener().require_certificate = boolean(directive, value)?
            }
            "use_identity_as_username" => {
                self.listener().use_identity_as_username = boolean(directive, value)?
            }
            "per_listener_settings" => {
                self.per_listener_settings = boolean(directive, value)?;
                if self.per_listener_settings && self.auth_seen {
                    return Err("per_listener_settings must come before allow_anonymous, \
                                password_file and acl_file, as in mosquitto"
                        .into());
                }
            }
            "allow_anonymous" => self.auth().allow_anonymous = Some(boolean(directive, value)?),
            "password_file" => self.auth().password_file = Some(text(directive, value)?.into()),
            "acl_file" => self.auth().acl_file = Some(text(directive, value)?.into()),
            "persistence" => self.persistence = boolean(directive, value)?,
            "persistence_location" => {
                self.persistence_location = Some(text(directive, value)?.into())
            }
            "autosave_interval" => {
                let seconds: u64 = number(directive, value)?;
                if seconds == 0 {
                    self.warn_once(
                        directive,
                        format!(
                            "line {line}: autosave_interval 0 (save only on changes or at exit) \
                             has no equivalent; keeping storage.sync_interval_ms = {}",
                            self.config.storage.sync_interval_ms
                        ),
                    );
                } else {
                    self.config.storage.sync_interval_ms = seconds.saturating_mul(1000);
                }
            }
            "sys_interval" => self.config.sys_interval = number(directive, value)?,
            "max_inflight_messages" => limits.max_inflight_messages = number(directive, value)?,
            "max_queued_messages" => limits.max_queued_messages = number(directive, value)?,
            "max_queued_bytes" => limits.max_queued_bytes = number(directive, value)?,
            "max_packet_size" => limits.max_packet_size = number(directive, value)?,
            "max_keepalive" => limits.max_keepalive = number(directive, value)?,
            "max_topic_alias" => limits.max_topic_alias = number(directive, value)?,
            "persistent_client_expiration" => {
                limits.persistent_client_expiration = duration(value)?
            }
            "queue_qos0_messages" => limits.queue_qos0_messages = boolean(directive, value)?,
            "retain_available" => limits.retain_available = boolean(directive, value)?,
            "allow_zero_length_clientid" => {
                limits.allow_zero_length_clientid = boolean(directive, value)?
            }
            "log_type" => {
                let level = match value {
                    "none" => 0,
                    "error" => 1,
                    "warning" => 2,
                    "notice" | "information" | "subscribe" | "unsubscribe" | "websockets" => 3,
                    "debug" | "internal" | "all" => 4,
                    other => return Err(format!("log_type {other:?} is not a mosquitto log type")),
                };
                self.log_level = Some(self.log_level.map_or(level, |l| l.max(level)));
            }
            "log_dest" => {
                if !matches!(value, "stdout" | "stderr") {
                    self.warn_once(
                        directive,
                        format!(
                            "line {line}: log_dest {value} is not supported; Starling logs to \
                             standard output"
                        ),
                    );
                }
            }
            other => self.warn_once(
                other,
                format!(
                    "line {line}: mosquitto.conf directive `{other}` is not supported; ignored"
                ),
            ),
        }
        Ok(())
    }

    fn finish(mut self) -> Result<Translated, ConfigError> {
        let invalid =
            |message: String| ConfigError::Invalid(format!("{}: {message}", self.path.display()));
        // mosquitto appends the default listener after the `listener` lines.
        let mut pending = std::mem::take(&mut self.listeners);
        let default_listener = std::mem::take(&mut self.default_listener);
        if default_listener.used {
            pending.push(default_listener);
        }
        // With no listener at all, mosquitto 2 runs "local only": loopback port 1883, and
        // anonymous clients allowed whatever the file says.
        let local_only = pending.is_empty();
        let mut listeners = Vec::with_capacity(pending.len());
        for p in pending {
            let port = p.port.unwrap_or(1883);
            let bind = resolve(p.host.as_deref(), port).map_err(&invalid)?;
            let tls = match (p.cert_file, p.key_file) {
                (Some(cert_file), Some(key_file)) => Some(TlsConfig {
                    cert_file,
                    key_file,
                    ca_file: p.ca_file,
                    require_certificate: p.require_certificate,
                    use_identity_as_username: p.use_identity_as_username,
                }),
                (None, None) if p.ca_file.is_none() => None,
                _ => {
                    return Err(invalid(format!(
                        "listener {port}: TLS needs both certfile and keyfile"
                    )));
                }
            };
            let auth = self.per_listener_settings.then(|| AuthConfig {
                // mosquitto 2 refuses anonymous clients unless told otherwise.
                allow_anonymous: Some(p.auth.allow_anonymous.unwrap_or(false)),
                ..p.auth
            });
            listeners.push(ListenerConfig {
                bind,
                max_connections: p.max_connections,
                protocol: p.protocol,
                tls,
                auth,
            });
        }
        if local_only {
            listeners.push(ListenerConfig::default());
            self.config.auth.allow_anonymous = Some(true);
        } else if !self.per_listener_settings {
            let anonymous = self.config.auth.allow_anonymous.unwrap_or(false);
            self.config.auth.allow_anonymous = Some(anonymous);
        }
        self.config.listeners = listeners;
        if self.persistence {
            // mosquitto writes into the working directory when no location is given.
            self.config.data_dir = Some(
                self.persistence_location
                    .take()
                    .unwrap_or_else(|| PathBuf::from(".")),
            );
        }
        if let Some(level) = self.log_level {
            self.config.log.level = LEVELS[usize::from(level)].to_owned();
        }
        Ok(Translated {
            config: self.config,
            warnings: self.warnings,
        })
    }
}

/// The socket address of a listener: all IPv4 addresses without a host, as mosquitto binds all.
fn resolve(host: Option<&str>, port: u16) -> Result<SocketAddr, String> {
    let Some(host) = host else {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port));
    };
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve listener address {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("listener address {host} resolves to nothing"))
}

fn text<'v>(directive: &str, value: &'v str) -> Result<&'v str, String> {
    if value.is_empty() {
        Err(format!("{directive} needs a value"))
    } else {
        Ok(value)
    }
}

fn number<T: std::str::FromStr>(directive: &str, value: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    value
        .parse()
        .map_err(|e| format!("{directive} {value:?}: not a valid number ({e})"))
}

/// mosquitto's booleans: `true`/`false`, also `1`/`0`.
fn boolean(directive: &str, value: &str) -> Result<bool, String> {
    match value {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        other => Err(format!("{directive} {other:?}: use true or false")),
    }
}

/// mosquitto's expiration durations: a number and a unit, `h`, `d`, `w`, `m` (30 days) or `y`.
fn duration(value: &str) -> Result<u32, String> {
    let bad = || {
        format!(
            "persistent_client_expiration {value:?}: use a number and a unit h, d, w, m or y \
             (such as 2d)"
        )
    };
    let split = value.len().checked_sub(1).ok_or_else(bad)?;
    let (count, unit) = value.split_at_checked(split).ok_or_else(bad)?;
    let seconds: u32 = match unit {
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        "m" => 30 * 86_400,
        "y" => 365 * 86_400,
        _ => return Err(bad()),
    };
    let count: u32 = count.parse().map_err(|_| bad())?;
    if count == 0 {
        return Err(bad());
    }
    count.checked_mul(seconds).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Translated {
        parse(text, Path::new("test.conf")).expect("parses")
    }

    fn refused(text: &str) -> String {
        parse(text, Path::new("/etc/m.conf"))
            .expect_err("refused")
            .to_string()
    }

    #[test]
    fn no_listener_means_local_only_with_anonymous_clients() {
        let t = read("# nothing\n\n");
        assert_eq!(t.config.listeners, vec![ListenerConfig::default()]);
        assert_eq!(t.config.listeners[0].bind.to_string(), "127.0.0.1:1883");
        assert_eq!(t.config.auth.allow_anonymous, Some(true));
        assert!(t.warnings.is_empty());
    }

    #[test]
    fn listeners_bind_all_addresses_unless_given_one() {
        let t = read(
            "listener 1884\nlistener 8080 127.0.0.1\nprotocol websockets\nmax_connections 5\n\
             listener 1885 localhost\nmax_connections -1\n",
        );
        let l = &t.config.listeners;
        assert_eq!(l.len(), 3);
        assert_eq!(l[0].bind.to_string(), "0.0.0.0:1884");
        assert_eq!(l[0].protocol, ListenerProtocol::Mqtt);
        assert_eq!(l[1].bind.to_string(), "127.0.0.1:8080");
        assert_eq!(l[1].protocol, ListenerProtocol::Websockets);
        assert_eq!(l[1].max_connections, 5);
        assert!(l[2].bind.ip().is_loopback(), "{}", l[2].bind);
        assert_eq!(l[2].max_connections, 0);
        // Listeners are configured, so anonymous clients are refused unless allowed.
        assert_eq!(t.config.auth.allow_anonymous, Some(false));
    }

    #[test]
    fn port_and_bind_address_make_the_default_listener_after_the_others() {
        let t = read("port 1999\nbind_address 127.0.0.2\nlistener 2000\n");
        let binds: Vec<String> = t
            .config
            .listeners
            .iter()
            .map(|l| l.bind.to_string())
            .collect();
        assert_eq!(binds, ["0.0.0.0:2000", "127.0.0.2:1999"]);
        let t = read("max_connections 3\n");
        assert_eq!(t.config.listeners[0].bind.to_string(), "0.0.0.0:1883");
        assert_eq!(t.config.listeners[0].max_connections, 3);
    }

    #[test]
    fn tls_directives_apply_to_their_listener() {
        let t = read(
            "listener 1883\nlistener 8883\ncertfile /s/server.crt\nkeyfile /s/server.key\n\
             cafile /s/ca.crt\nrequire_certificate true\nuse_identity_as_username true\n",
        );
        assert_eq!(t.config.listeners[0].tls, None);
        let tls = t.config.listeners[1].tls.as_ref().expect("tls");
        assert_eq!(tls.cert_file, PathBuf::from("/s/server.crt"));
        assert_eq!(tls.key_file, PathBuf::from("/s/server.key"));
        assert_eq!(tls.ca_file, Some(PathBuf::from("/s/ca.crt")));
        assert!(tls.require_certificate && tls.use_identity_as_username);
        let err = refused("listener 8883\ncertfile /s/server.crt\n");
        assert!(
            err.contains("keyfile") && err.contains("/etc/m.conf"),
            "{err}"
        );
    }

    #[test]
    fn without_per_listener_settings_auth_is_global_wherever_it_is() {
        let t = read(
            "listener 1883\npassword_file /p\nlistener 1884\nacl_file /a\nallow_anonymous true\n",
        );
        assert!(t.config.listeners.iter().all(|l| l.auth.is_none()));
        assert_eq!(
            t.config.auth,
            AuthConfig {
                allow_anonymous: Some(true),
                password_file: Some("/p".into()),
                acl_file: Some("/a".into()),
            }
        );
    }

    #[test]
    fn with_per_listener_settings_auth_belongs_to_the_listener() {
        let t = read(
            "per_listener_settings true\nlistener 1883\npassword_file /p\nacl_file /a\n\
             listener 1884\nallow_anonymous true\n",
        );
        let l = &t.config.listeners;
        assert_eq!(
            l[0].auth,
            Some(AuthConfig {
                allow_anonymous: Some(false),
                password_file: Some("/p".into()),
                acl_file: Some("/a".into()),
            })
        );
        assert_eq!(
            l[1].auth,
            Some(AuthConfig {
                allow_anonymous: Some(true),
                ..AuthConfig::default()
            })
        );
        assert_eq!(t.config.auth, AuthConfig::default());
    }

    #[test]
    fn persistence_sets_the_data_directory() {
        let t = read("persistence_location /var/lib/m/\nautosave_interval 60\n");
        assert_eq!(t.config.data_dir, None, "persistence is off by default");
        assert_eq!(t.config.storage.sync_interval_ms, 60_000);
        let t = read("persistence true\npersistence_location /var/lib/m/\n");
        assert_eq!(t.config.data_dir, Some(PathBuf::from("/var/lib/m/")));
        let t = read("persistence true\n");
        assert_eq!(t.config.data_dir, Some(PathBuf::from(".")));
        let t = read("autosave_interval 0\n");
        assert_eq!(t.config.storage.sync_interval_ms, 1000);
        assert_eq!(t.warnings.len(), 1, "{:?}", t.warnings);
    }

    #[test]
    fn limits_carry_over() {
        let t = read(
            "max_inflight_messages 5\nmax_queued_messages 50\nmax_queued_bytes 4096\n\
             max_packet_size 2048\nmax_keepalive 120\npersistent_client_expiration 2d\n\
             queue_qos0_messages true\nretain_available false\n\
             allow_zero_length_clientid false\nmax_topic_alias 3\nsys_interval 30\n",
        );
        assert_eq!(t.config.sys_interval, 30);
        let limits = &t.config.limits;
        assert_eq!(limits.max_inflight_messages, 5);
        assert_eq!(limits.max_queued_messages, 50);
        assert_eq!(limits.max_queued_bytes, 4096);
        assert_eq!(limits.max_packet_size, 2048);
        assert_eq!(limits.max_keepalive, 120);
        assert_eq!(limits.persistent_client_expiration, 2 * 86_400);
        assert!(limits.queue_qos0_messages);
        assert!(!limits.retain_available);
        assert!(!limits.allow_zero_length_clientid);
        assert_eq!(limits.max_topic_alias, 3);
        t.config.validate().expect("valid");
    }

    #[test]
    fn expiration_durations_use_mosquitto_units() {
        assert_eq!(duration("1h"), Ok(3600));
        assert_eq!(duration("3w"), Ok(21 * 86_400));
        assert_eq!(duration("1m"), Ok(30 * 86_400));
        assert_eq!(duration("1y"), Ok(365 * 86_400));
        for bad in ["", "h", "10", "0d", "2x", "-1d", "99999999y"] {
            assert!(duration(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn log_type_gives_the_most_verbose_level() {
        assert_eq!(read("").config.log.level, "info");
        assert_eq!(read("log_type error\n").config.log.level, "error");
        let t = read("log_type warning\nlog_type debug\nlog_type error\n");
        assert_eq!(t.config.log.level, "debug");
        assert_eq!(read("log_type none\n").config.log.level, "off");
        let t = read("log_dest stdout\nlog_dest syslog\nlog_dest file /var/log/m.log\n");
        assert_eq!(t.warnings.len(), 1, "{:?}", t.warnings);
        assert!(t.warnings[0].contains("syslog"), "{:?}", t.warnings);
        assert!(refused("log_type loud\n").contains("/etc/m.conf:1:"));
    }

    #[test]
    fn unknown_directives_are_listed_once_each() {
        let t = read("pid_file /x\nuser mosquitto\npid_file /y\nlistener 1883\n");
        assert_eq!(t.warnings.len(), 2, "{:?}", t.warnings);
        assert!(t.warnings[0].contains("`pid_file`") && t.warnings[0].contains("line 1"));
        assert!(t.warnings[1].contains("`user`"));
        assert_eq!(t.config.listeners.len(), 1);
    }

    #[test]
    fn malformed_values_are_refused_with_file_and_line() {
        for (text, line) in [
            ("listener 1883\n\nmax_inflight_messages lots\n", 3),
            ("listener 99999\n", 1),
            ("# c\nallow_anonymous yes\n", 2),
            ("persistent_client_expiration 3\n", 1),
            ("listener 1883\nprotocol ws\n", 2),
            ("password_file\n", 1),
            ("max_keepalive -5\n", 1),
            ("acl_file /a\nper_listener_settings true\n", 2),
        ] {
            let err = refused(text);
            assert!(
                err.contains(&format!("/etc/m.conf:{line}:")),
                "{text:?}: {err}"
            );
        }
    }
}
