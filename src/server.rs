//! Listeners, the accept loops, and orderly shutdown.
//!
//! [`Server::bind`] opens every listener first, so a test (or an operator) learns the real
//! addresses before any client connects; [`Server::run`] serves until its shutdown future
//! completes, then stops accepting, asks every connected client to leave (5.0: DISCONNECT 0x8B)
//! and waits for the connection tasks to finish. Every task is tracked: none is detached.
//! While it runs, SIGHUP reloads what can change (see [`crate::reload`]), TLS certificates
//! included; the `$SYS` tree and the HTTP listener run as tasks of their own.

use std::fs::File;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use thiserror::Error;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::auth::{Admission, AuthError, ConnectionRate, Gate, Security};
use crate::broker::{Broker, Housekeeping};
use crate::codec::ReasonCode;
use crate::config::{Config, ListenerConfig};
use crate::connection;
use crate::http::{BrokerInfo, HttpListener};
use crate::metrics::RefusalReason;
use crate::reload::{self, Hangups, Reload, Reloader};
use crate::storage::{self, Store, StoreError, StoreKind, StoreWriter};
use crate::transport::Acceptor;
use crate::transport::tls::TlsError;

/// How long shutdown waits for connections to say goodbye.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Pause after an accept error (such as running out of file descriptors) before trying again.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// Why the server could not start.
#[derive(Debug, Error)]
pub enum RunError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot use data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "data directory {0} is in use by another broker (it holds the lock on {0}/starling.lock)"
    )]
    DataDirLocked(PathBuf),
    #[error("cannot load the session store: {0}")]
    Store(StoreError),
    #[error("cannot load the security files: {0}")]
    Auth(#[from] AuthError),
    #[error("listener {addr}: {source}")]
    Tls {
        addr: SocketAddr,
        source: Box<TlsError>,
    },
}

/// A bound, not yet running, broker.
pub struct Server {
    config: Config,
    broker: Arc<Broker>,
    housekeeping: Housekeeping,
    listeners: Vec<(ListenerConfig, Acceptor, TcpListener)>,
    security: Arc<Security>,
    /// Taken at bind, before anyone learns the addresses, so a SIGHUP never finds the default
    /// action (ending the process) in place.
    hangups: Hangups,
    http: Option<HttpListener>,
    reloader: Option<Reloader>,
    /// Held for the server's lifetime: the lock that keeps a second broker out of the data dir.
    _data_dir_lock: Option<File>,
}

impl Server {
    /// Opens the data directory, the store the configuration names (nothing on disk without a
    /// data directory) and every listener, and rebuilds the broker's state from the store.
    pub async fn bind(config: Config) -> Result<Server, RunError> {
        let data_dir_lock = config.data_dir.as_deref().map(lock_data_dir).transpose()?;
        let kind = config.storage.effective_backend(config.data_dir.as_deref());
        let store = match kind {
            StoreKind::Memory => None,
            kind => {
                let dir = config.data_dir.as_deref();
                let store = storage::open(kind, dir).map_err(RunError::Store)?;
                info!(
                    "Using the {kind:?} store in {} (sync {:?}).",
                    dir.map_or_else(String::new, |d| d.display().to_string()),
                    config.storage.sync
                );
                Some(store)
            }
        };
        if store.is_none() {
            info!("No data directory: sessions and retained messages are kept in memory only.");
        }
        Server::bind_inner(config, store, data_dir_lock).await
    }

    /// Like [`Server::bind`], with durable changes going to `store` (tests pass a
    /// [`crate::storage::MemoryStore`] to restart a server in-process), whose contents are loaded
    /// first to rebuild the broker's state.
    pub async fn bind_with_store(
        config: Config,
        store: Option<Arc<dyn Store>>,
    ) -> Result<Server, RunError> {
        let data_dir_lock = config.data_dir.as_deref().map(lock_data_dir).transpose()?;
        Server::bind_inner(config, store, data_dir_lock).await
    }

    async fn bind_inner(
        config: Config,
        store: Option<Arc<dyn Store>>,
        data_dir_lock: Option<File>,
    ) -> Result<Server, RunError> {
        let security = Arc::new(Security::load(&config)?);
        let mut listeners = Vec::with_capacity(config.listeners.len());
        for listener in &config.listeners {
            let acceptor =
                Acceptor::new(listener, config.limits.max_packet_size()).map_err(|source| {
                    RunError::Tls {
                        addr: listener.bind,
                        source: Box::new(source),
                    }
                })?;
            let socket =
                TcpListener::bind(listener.bind)
                    .await
                    .map_err(|source| RunError::Bind {
                        addr: listener.bind,
                        source,
                    })?;
            listeners.push((listener.clone(), acceptor, socket));
        }
        let http = HttpListener::bind(&config)
            .await
            .map_err(|source| RunError::Bind {
                addr: config.http.bind.unwrap_or_else(|| ([0, 0, 0, 0], 0).into()),
                source,
            })?;
        let snapshot = match &store {
            // Blocking the runtime here is fine: nothing else runs before the broker starts.
            Some(store) => Some(store.load().map_err(RunError::Store)?),
            None => None,
        };
        let writer = match store {
            Some(store) => {
                let interval = Duration::from_millis(config.storage.sync_interval_ms);
                let writer = StoreWriter::start(store, config.storage.sync, interval)
                    .map_err(|e| RunError::Store(StoreError::Unavailable(e.to_string())))?;
                Some(Arc::new(writer))
            }
            None => None,
        };
        let (timers, timer_rx) = mpsc::unbounded_channel();
        let broker = Arc::new(Broker::new(config.limits.clone(), timers, writer));
        if let Some(snapshot) = snapshot {
            let sessions = snapshot.sessions.len();
            let queued: usize = snapshot.sessions.iter().map(|s| s.queue.len()).sum();
            let retained = snapshot.retained.len();
            broker.restore(snapshot, tokio::time::Instant::now().into_std());
            info!(
                "Restored {sessions} sessions, {queued} queued or in-flight messages and \
                 {retained} retained messages from the store."
            );
        }
        Ok(Server {
            broker,
            housekeeping: Housekeeping::new(timer_rx),
            listeners,
            security,
            hangups: reload::hangups(),
            http,
            reloader: None,
            config,
            _data_dir_lock: data_dir_lock,
        })
    }

    /// The HTTP listener's address (port 0 resolved), if `[http] bind` is set.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().and_then(|http| http.local_addr().ok())
    }

    /// How SIGHUP re-reads the configuration (the binary sets this; without it a SIGHUP re-reads
    /// the password and ACL files only).
    pub fn set_reloader(&mut self, reloader: Reloader) {
        self.reloader = Some(reloader);
    }

    /// The addresses actually bound (port 0 resolved).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|(_, _, socket)| socket.local_addr().ok())
            .collect()
    }

    /// The shared broker state, for inspection.
    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// The password and ACL files in force; call [`Security::reload`] to re-read them (SIGHUP).
    pub fn security(&self) -> &Arc<Security> {
        &self.security
    }

    /// Serves until `shutdown` completes, then shuts down in order.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
        let started = tokio::time::Instant::now().into_std();
        let local_addrs = self.local_addrs();
        let Server {
            config,
            broker,
            housekeeping,
            listeners,
            security,
            mut hangups,
            http,
            reloader,
            _data_dir_lock,
        } = self;
        let rate = ConnectionRate::new(config.limits.max_connection_rate).map(Arc::new);
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let total = limit(config.limits.max_connections);
        let handshake_timeout = Duration::from_secs(u64::from(config.limits.connect_timeout));

        tasks.spawn(housekeeping.run(broker.clone(), stop.clone().cancelled_owned()));
        let mut tls = Vec::new();
        for (index, (listener, acceptor, socket)) in listeners.into_iter().enumerate() {
            let addr = socket.local_addr().unwrap_or(listener.bind);
            info!("Opening listener on {addr} ({}).", listener.kind());
            if let Some(acceptor) = acceptor.tls() {
                tls.push((addr, acceptor.clone()));
            }
            let accept = AcceptLoop {
                socket,
                acceptor: Arc::new(acceptor),
                handshake_timeout,
                sockets: broker.metrics().listener(addr.to_string()),
                broker: broker.clone(),
                tasks: tasks.clone(),
                stop: stop.clone(),
                total: total.clone(),
                own: limit(listener.max_connections),
                gate: security.gate(index),
                rate: rate.clone(),
            };
            tasks.spawn(accept.run());
        }
        if config.sys_interval != 0 {
            let interval = Duration::from_secs(u64::from(config.sys_interval));
            tasks.spawn(crate::sys::run(broker.clone(), interval, stop.clone()));
        }
        if let Some(http) = http {
            let info = BrokerInfo {
                started,
                listeners: local_addrs,
                config: config.clone(),
            };
            http.spawn(broker.clone(), info, &tasks, stop.clone());
        }

        let mut reload = Reload {
            reloader,
            current: config,
            broker: broker.clone(),
            security,
            tls,
        };
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                () = hangups.next() => reload.run(),
            }
        }
        info!("Shutting down: no new connections; asking clients to leave.");
        stop.cancel();
        broker.close_all(ReasonCode::ServerShuttingDown);
        tasks.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, tasks.wait())
            .await
            .is_err()
        {
            warn!("some connections did not close within {SHUTDOWN_GRACE:?}");
        }
        broker.close_store();
        info!("Stopped.");
        Ok(())
    }
}

fn limit(max: usize) -> Option<Arc<Semaphore>> {
    (max != 0).then(|| Arc::new(Semaphore::new(max)))
}

fn lock_data_dir(dir: &Path) -> Result<File, RunError> {
    let io_error = |source| RunError::DataDir {
        path: dir.to_owned(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io_error)?;
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("starling.lock"))
        .map_err(io_error)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(RunError::DataDirLocked(dir.to_owned())),
        Err(std::fs::TryLockError::Error(source)) => Err(io_error(source)),
    }
}

struct AcceptLoop {
    socket: TcpListener,
    acceptor: Arc<Acceptor>,
    /// How long the TLS handshake and WebSocket upgrade may take (`connect_timeout`).
    handshake_timeout: Duration,
    /// TCP connections accepted here (`mqtt_sockets_total`).
    sockets: Arc<AtomicU64>,
    broker: Arc<Broker>,
    tasks: TaskTracker,
    stop: CancellationToken,
    total: Option<Arc<Semaphore>>,
    own: Option<Arc<Semaphore>>,
    gate: Gate,
    rate: Option<Arc<ConnectionRate>>,
}

impl AcceptLoop {
    async fn run(self) {
        loop {
            // Cancellation-safe: `accept` loses no connection when the stop branch wins.
            let accepted = tokio::select! {
                () = self.stop.cancelled() => return,
                accepted = self.socket.accept() => accepted,
            };
            match accepted {
                Ok((tcp, peer)) => self.admit(tcp, peer),
                Err(e) => {
                    error!("accept failed: {e}; retrying in {ACCEPT_ERROR_BACKOFF:?}");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                }
            }
        }
    }

    fn admit(&self, tcp: TcpStream, peer: SocketAddr) {
        self.sockets.fetch_add(1, Ordering::Relaxed);
        if let Some(rate) = &self.rate
            && let Admission::Refused { first } =
                rate.admit(peer.ip(), tokio::time::Instant::now().into_std())
        {
            // One line per burst: a flood must not flood the log too.
            self.broker.metrics().refused(RefusalReason::RateLimited);
            if first {
                warn!(%peer, "connection refused: max_connection_rate exceeded for this address");
            }
            return;
        }
        let Some(permits) = self.permits() else {
            // Closing at once tells the client to retry elsewhere or later, as mosquitto does.
            self.broker.metrics().refused(RefusalReason::MaxConnections);
            info!("Client connection from {peer} denied: max_connections exceeded.");
            return;
        };
        if let Err(e) = tcp.set_nodelay(true) {
            warn!(%peer, "cannot set TCP_NODELAY: {e}");
        }
        let broker = self.broker.clone();
        let stop = self.stop.clone();
        let acceptor = self.acceptor.clone();
        let timeout = self.handshake_timeout;
        let gate = self.gate.clone();
        let tasks = self.tasks.clone();
        // The transport handshake runs as a task of its own, which then hands the connection to
        // its serving task: the handshake's state (rustls, the HTTP request, its timer) is gone
        // by then, so an idle connection does not carry it for its whole life.
        self.tasks.spawn(async move {
            let handshake = tokio::time::timeout(timeout, Box::pin(acceptor.accept(tcp)));
            let accepted = tokio::select! {
                () = stop.cancelled() => None,
                accepted = handshake => match accepted {
                    Ok(Ok(accepted)) => Some(accepted),
                    Ok(Err(e)) => {
                        info!(%peer, "connection closed before MQTT: {e}");
                        None
                    }
                    Err(_) => {
                        info!(%peer, "no TLS or WebSocket handshake within {}s, closing", timeout.as_secs());
                        None
                    }
                },
            };
            if let Some(accepted) = accepted {
                tasks.spawn(connection::serve(
                    accepted.stream,
                    peer,
                    accepted.identity,
                    broker,
                    gate,
                    stop,
                    permits,
                ));
            }
        });
    }

    fn permits(&self) -> Option<connection::Permits> {
        let take = |semaphore: &Option<Arc<Semaphore>>| match semaphore {
            None => Some(None),
            Some(semaphore) => semaphore.clone().try_acquire_owned().ok().map(Some),
        };
        let own = take(&self.own)?;
        let total = take(&self.total)?;
        Some([own, total])
    }
}
