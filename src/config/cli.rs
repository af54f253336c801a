//! Command-line flags. Flags override the config file; with neither, the defaults apply.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use super::{Config, ConfigError, ListenerConfig, mosquitto};
use crate::storage::{StoreKind, SyncMode};

/// Starling, an MQTT 3.1 / 3.1.1 / 5.0 broker.
#[derive(Debug, Parser)]
#[command(name = "starling", version, about, long_about = None)]
pub struct Cli {
    /// TOML config file; every setting can be given there (see config/starling.toml). A name
    /// ending in `.conf` is read as a mosquitto.conf.
    #[arg(short = 'c', long, value_name = "FILE", env = "STARLING_CONFIG")]
    pub config: Option<PathBuf>,

    /// A mosquitto 2 mosquitto.conf to read instead of a TOML file, whatever its name.
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    pub mosquitto_config: Option<PathBuf>,

    /// Address to listen on for MQTT over TCP; repeat for several. Replaces the file's listeners.
    #[arg(short = 'l', long = "listen", value_name = "ADDR")]
    pub listen: Vec<SocketAddr>,

    /// Directory for durable state (created and locked at start). Without it, nothing is
    /// written to disk.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Store backend for the data directory.
    #[arg(long, value_enum, value_name = "BACKEND")]
    pub store: Option<StoreKind>,

    /// When acknowledged messages reach the disk: `always` (acks wait for it) or `periodic`.
    #[arg(long, value_enum, value_name = "MODE")]
    pub sync: Option<SyncMode>,

    /// Serve metrics, the admin API and the dashboard over HTTP on ADDR (replaces http.bind).
    #[arg(long = "http", value_name = "ADDR")]
    pub http: Option<SocketAddr>,

    /// Log filter: error, warn, info, debug, trace, or per module (starling=debug,info).
    #[arg(long, value_name = "LEVEL", env = "STARLING_LOG")]
    pub log_level: Option<String>,

    /// Load and validate the configuration, then exit: 0 if valid.
    #[arg(long)]
    pub check_config: bool,

    /// Print the effective configuration as TOML, then exit.
    #[arg(long)]
    pub print_config: bool,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Tools besides running the broker.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or edit a password file (mosquitto_passwd format, `$7$` hashes).
    Passwd(PasswdArgs),
}

/// `starling passwd [-c] [-b] [-D] <file> <user> [password]`, as mosquitto_passwd.
#[derive(Debug, Args)]
pub struct PasswdArgs {
    /// Create a new file, replacing an existing one.
    #[arg(short = 'c', conflicts_with = "delete")]
    pub create: bool,
    /// Take the password from the command line (visible in the process list: scripts only).
    #[arg(short = 'b')]
    pub batch: bool,
    /// Delete the user.
    #[arg(short = 'D')]
    pub delete: bool,
    /// The password file.
    pub file: PathBuf,
    /// The username (no ':').
    pub username: String,
    /// The password, with -b. Without -b it is asked twice without echo (or read as one line
    /// from standard input when that is not a terminal).
    pub password: Option<String>,
}

impl PasswdArgs {
    pub fn request(&self) -> crate::auth::passwd::PasswdRequest {
        crate::auth::passwd::PasswdRequest {
            create: self.create,
            batch: self.batch,
            delete: self.delete,
            file: self.file.clone(),
            username: self.username.clone(),
            password: self.password.clone(),
        }
    }
}

impl Cli {
    /// The effective configuration: defaults, then the file, then the flags; validated.
    pub fn load(&self) -> Result<Config, ConfigError> {
        self.load_with_warnings().map(|(config, _)| config)
    }

    /// Like [`Cli::load`], also returning what a mosquitto.conf held that Starling does not
    /// support, for the caller to log once logging is set up.
    pub fn load_with_warnings(&self) -> Result<(Config, Vec<String>), ConfigError> {
        let mosquitto_conf = self.mosquitto_config.as_ref().or(self
            .config
            .as_ref()
            .filter(|path| mosquitto::is_mosquitto_conf(path)));
        let (mut config, warnings) = match (mosquitto_conf, &self.config) {
            (Some(path), _) => {
                let translated = mosquitto::from_file(path)?;
                (translated.config, translated.warnings)
            }
            (None, Some(path)) => (Config::from_file(path)?, Vec::new()),
            (None, None) => (Config::default(), Vec::new()),
        };
        if !self.listen.is_empty() {
            config.listeners = self
                .listen
                .iter()
                .copied()
                .map(ListenerConfig::tcp)
                .collect();
        }
        if let Some(dir) = &self.data_dir {
            config.data_dir = Some(dir.clone());
        }
        if let Some(store) = self.store {
            config.storage.backend = store;
        }
        if let Some(sync) = self.sync {
            config.storage.sync = sync;
        }
        if let Some(addr) = self.http {
            config.http.bind = Some(addr);
        }
        if let Some(level) = &self.log_level {
            config.log.level = level.clone();
        }
        config.validate()?;
        Ok((config, warnings))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("starling").chain(args.iter().copied()))
            .expect("valid flags")
    }

    #[test]
    fn no_flags_means_the_default_listener() {
        let config = parse(&[]).load().expect("defaults load");
        assert_eq!(config, Config::default());
    }

    #[test]
    fn listen_flags_replace_the_file_listeners() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("starling.toml");
        std::fs::write(
            &path,
            "[[listener]]\nbind = \"127.0.0.1:2000\"\n[limits]\nmax_queued_messages = 7\n",
        )
        .expect("write config");
        let path_str = path.to_str().expect("utf-8 path");
        let from_file = parse(&["-c", path_str]).load().expect("file loads");
        assert_eq!(from_file.listeners[0].bind.port(), 2000);
        assert_eq!(from_file.limits.max_queued_messages, 7);

        let overridden = parse(&[
            "-c",
            path_str,
            "-l",
            "127.0.0.1:3000",
            "-l",
            "127.0.0.2:3001",
        ])
        .load()
        .expect("flags override");
        let ports: Vec<u16> = overridden.listeners.iter().map(|l| l.bind.port()).collect();
        assert_eq!(ports, vec![3000, 3001]);
        assert_eq!(overridden.limits.max_queued_messages, 7, "file values stay");
    }

    #[test]
    fn a_conf_extension_or_the_flag_reads_a_mosquitto_conf() {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = "listener 2001 127.0.0.1\nmax_queued_messages 9\npid_file /run/x.pid\n";
        let conf = dir.path().join("mosquitto.conf");
        let other = dir.path().join("broker-settings");
        std::fs::write(&conf, text).expect("write");
        std::fs::write(&other, text).expect("write");
        for args in [
            ["-c", conf.to_str().expect("utf-8")],
            ["--mosquitto-config", other.to_str().expect("utf-8")],
        ] {
            let (config, warnings) = parse(&args).load_with_warnings().expect("loads");
            assert_eq!(config.listeners[0].bind.to_string(), "127.0.0.1:2001");
            assert_eq!(config.limits.max_queued_messages, 9);
            assert_eq!(warnings.len(), 1, "{warnings:?}");
            assert!(warnings[0].contains("pid_file"), "{warnings:?}");
        }
        // Without the extension or the flag, the same text is TOML, and not valid TOML.
        assert!(
            parse(&["-c", other.to_str().expect("utf-8")])
                .load()
                .is_err()
        );
    }

    #[test]
    fn passwd_takes_mosquitto_passwd_arguments() {
        let cli = parse(&["passwd", "-c", "-b", "/tmp/pw", "alice", "secret"]);
        let Some(Command::Passwd(args)) = cli.command else {
            panic!("passwd subcommand");
        };
        let request = args.request();
        assert!(request.create && request.batch && !request.delete);
        assert_eq!(request.username, "alice");
        assert_eq!(request.password.as_deref(), Some("secret"));
        assert!(
            Cli::try_parse_from(["starling", "passwd", "-c", "-D", "/tmp/pw", "alice"]).is_err()
        );
    }

    #[test]
    fn a_missing_file_is_an_error_naming_it() {
        let err = parse(&["-c", "/nonexistent/starling.toml"])
            .load()
            .expect_err("missing file");
        assert!(
            err.to_string().contains("/nonexistent/starling.toml"),
            "{err}"
        );
    }
}
