//! Starling: a multi-core MQTT 3.1, 3.1.1 and 5.0 broker for IoT fleets.
//!
//! Start with ARCHITECTURE.md. The binary (`src/main.rs`) parses flags and calls [`run`]; everything
//! else is this library, so tests start the real server in-process with [`Server::bind`] on port 0.

pub mod auth;
pub mod broker;
pub mod codec;
pub mod config;
pub mod connection;
pub mod http;
pub mod message;
pub mod metrics;
pub mod reload;
pub mod retained;
pub mod router;
pub mod server;
pub mod session;
pub mod storage;
pub mod sys;
pub mod topic;
pub mod transport;

pub use config::Config;
pub use server::{RunError, Server};

/// Binds every listener in `config` and serves until `shutdown` completes.
pub async fn run(
    config: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), RunError> {
    Server::bind(config).await?.run(shutdown).await
}
