//! The `starling` binary: flags and config in, [`starling::run`] out.

use anyhow::Context;
use clap::Parser;
use starling::config::{Cli, Command, LogFormat};
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::Passwd(args)) = &cli.command {
        return starling::auth::passwd::run(&args.request());
    }
    let (config, warnings) = cli.load_with_warnings()?;
    if cli.print_config || cli.check_config {
        for warning in &warnings {
            eprintln!("warning: {warning}");
        }
        if cli.print_config {
            print!("{}", config.to_toml());
        } else {
            println!("configuration is valid");
        }
        return Ok(());
    }
    init_logging(&config.log.level, config.log.format)?;
    for warning in &warnings {
        tracing::warn!("{warning}");
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all().thread_name("starling-worker");
    // Run woken connections in the order their sockets became ready: with tokio's LIFO slot, the
    // last of several sockets readied in one poll runs first, so a PUBLISH on one connection
    // overtook a SUBSCRIBE sent just before it on another (ARCHITECTURE.md, "Cross-connection
    // order"). Needs `--cfg tokio_unstable`, which .cargo/config.toml sets.
    #[cfg(tokio_unstable)]
    builder.disable_lifo_slot();
    let runtime = builder.build().context("cannot start the tokio runtime")?;
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
