//! The `starling` binary: flags and config in, [`starling::run`] out.

use anyhow::Context;
use clap::Parser;
use starling::config::{Cli, LogFormat};
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = cli.load()?;
    if cli.print_config {
        print!("{}", config.to_toml());
        return Ok(());
    }
    if cli.check_config {
        println!("configuration is valid");
        return Ok(());
    }
    init_logging(&config.log.level, config.log.format)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("starling-worker")
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(async {
        let server = starling::Server::bind(config).await?;
        for addr in server.local_addrs() {
            println!("starling {} listening on {addr}", env!("CARGO_PKG_VERSION"));
        }
        server.run(shutdown_signal()).await?;
        Ok(())
    })
}

fn init_logging(level: &str, format: LogFormat) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(level).with_context(|| format!("log level {level:?}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!("cannot listen for SIGINT: {e}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
