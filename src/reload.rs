//! SIGHUP: re-read the configuration and apply what can change while connections stay up.
//!
//! [`Reload::run`] is the one place a reload happens; the signal handler ([`hangups`]) calls it.
//! Reloaded: the log level, the limits (those fixed at CONNECT, such as windows and the maximum
//! packet size, apply to new connections), and the password and ACL files (re-read from the paths
//! in force). Everything else in the file (listeners, the data directory and store, the log format,
//! `sys_interval`, the HTTP listener, `max_connections`, `max_connection_rate`, auth file paths) is
//! compared with what runs and, when it differs, logged as needing a restart.

use std::net::SocketAddr;
use std::sync::Arc;

use tracing::{error, info, warn};

use crate::auth::Security;
use crate::broker::Broker;
use crate::config::{Config, ConfigError, Limits};
use crate::transport::tls::TlsAcceptor;

/// Re-reads the configuration (the file, with the command-line flags applied again).
pub type LoadConfig = Box<dyn Fn() -> Result<Config, ConfigError> + Send + Sync>;

/// Sets the log filter (a `tracing` filter string), for the binary's subscriber.
pub type SetLogLevel = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// How the running binary reloads; tests and embedders without a config file have none.
pub struct Reloader {
    pub load: LoadConfig,
    pub set_log_level: Option<SetLogLevel>,
}

/// Everything a reload touches.
pub struct Reload {
    pub reloader: Option<Reloader>,
    /// The configuration in force: what ran at start, with reloaded parts replaced.
    pub current: Config,
    pub broker: Arc<Broker>,
    pub security: Arc<Security>,
    /// The TLS listeners, whose certificate files every reload reads again.
    pub tls: Vec<(SocketAddr, Arc<TlsAcceptor>)>,
}

impl Reload {
    /// Re-reads the configuration and applies what can change; logs what cannot.
    pub fn run(&mut self) {
        info!("Reloading config.");
        let Some(reloader) = &self.reloader else {
            info!(
                "No config file to re-read: reloading certificates, password and ACL files only."
            );
            reload_tls(&self.tls);
            let _ = self.security.reload();
            return;
        };
        let new = match (reloader.load)() {
            Ok(new) => new,
            Err(e) => {
                error!("Reload failed, keeping the running configuration: {e}");
                // The files that configuration names are still read again; each keeps its
                // previous contents if it fails too.
                reload_tls(&self.tls);
                let _ = self.security.reload();
                return;
            }
        };

        if new.log.level != self.current.log.level {
            match &reloader.set_log_level {
                Some(set) => match set(&new.log.level) {
                    Ok(()) => {
                        info!("Log level is now {:?}.", new.log.level);
                        self.current.log.level = new.log.level.clone();
                    }
                    Err(e) => error!("Log level {:?} not applied: {e}", new.log.level),
                },
                None => warn!("log.level cannot be changed in this process."),
            }
        }

        let limits = reloadable_limits(&self.current.limits, &new.limits);
        if limits != self.current.limits {
            info!(
                "Limits reloaded: {} (values fixed at CONNECT apply to new connections).",
                changed_keys(&self.current.limits, &limits).join(", ")
            );
            self.broker.set_limits(limits.clone());
            self.current.limits = limits;
        }

        // The files the scopes were built from are re-read; their paths and the anonymous
        // settings were resolved at start.
        let auth_changed = new.auth != self.current.auth
            || new.listeners.iter().map(|l| &l.auth).ne(self
                .current
                .listeners
                .iter()
                .map(|l| &l.auth));
        if auth_changed {
            warn!(
                "The auth settings changed (file paths, allow_anonymous, per-listener auth): a \
                 restart applies them; re-reading the files in force."
            );
        }
        // A failure is logged there, and the files in force stay.
        let _ = self.security.reload();

        reload_tls(&self.tls);

        let fixed = [
            ("listener", new.listeners != self.current.listeners),
            ("data_dir", new.data_dir != self.current.data_dir),
            ("storage", new.storage != self.current.storage),
            ("log.format", new.log.format != self.current.log.format),
            (
                "sys_interval",
                new.sys_interval != self.current.sys_interval,
            ),
            ("http", new.http != self.current.http),
            (
                "limits.max_connections",
                new.limits.max_connections != self.current.limits.max_connections,
            ),
            (
                "limits.max_connection_rate",
                new.limits.max_connection_rate != self.current.limits.max_connection_rate,
            ),
        ];
        for (key, changed) in fixed {
            if changed {
                warn!(
                    "{key} changed in the config file: it cannot be reloaded, restart to apply it."
                );
            }
        }
    }
}

/// The new limits, except those the running server cannot change (its connection semaphores and
/// rate table were sized at start).
fn reloadable_limits(current: &Limits, new: &Limits) -> Limits {
    Limits {
        max_connections: current.max_connections,
        max_connection_rate: current.max_connection_rate,
        ..new.clone()
    }
}

/// The keys whose values differ between two limit sets, as `key = value` of the new one.
fn changed_keys(old: &Limits, new: &Limits) -> Vec<String> {
    let (serde_json::Value::Object(old), serde_json::Value::Object(new)) =
        (serde_json::json!(old), serde_json::json!(new))
    else {
        return Vec::new();
    };
    new.iter()
        .filter(|(key, value)| old.get(*key) != Some(value))
        .map(|(key, value)| format!("{key} = {value}"))
        .collect()
}

/// Reads every TLS listener's files again. New handshakes use the new certificates; running
/// connections keep theirs; a listener whose files fail keeps its old ones.
fn reload_tls(listeners: &[(SocketAddr, Arc<TlsAcceptor>)]) {
    for (addr, acceptor) in listeners {
        match acceptor.reload() {
            Ok(()) => info!("SIGHUP: reloaded the certificates of listener {addr}."),
            Err(e) => {
                error!("Listener {addr} keeps its previous certificates, the new ones failed: {e}")
            }
        }
    }
}

/// SIGHUP, as a stream of reload requests. Listening also keeps SIGHUP from ending the process.
pub struct Hangups {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

/// Starts listening for SIGHUP.
pub fn hangups() -> Hangups {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let signal = signal(SignalKind::hangup())
            .map_err(|e| error!("cannot listen for SIGHUP, the configuration will not reload: {e}"))
            .ok();
        Hangups { signal }
    }
    #[cfg(not(unix))]
    Hangups {}
}

impl Hangups {
    /// Completes at the next SIGHUP; never where there is none.
    pub async fn next(&mut self) {
        #[cfg(unix)]
        if let Some(signal) = &mut self.signal
            && signal.recv().await.is_some()
        {
            return;
        }
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_limits_stay_and_the_rest_changes() {
        let current = Limits::default();
        let new = Limits {
            max_queued_messages: 5,
            max_connections: 10,
            max_connection_rate: 3,
            ..Limits::default()
        };
        let applied = reloadable_limits(&current, &new);
        assert_eq!(applied.max_queued_messages, 5);
        assert_eq!(applied.max_connections, 0);
        assert_eq!(applied.max_connection_rate, 0);
        assert_eq!(
            changed_keys(&current, &applied),
            vec!["max_queued_messages = 5"]
        );
    }
}
