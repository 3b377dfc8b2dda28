//! The `partlog` binary: `partlog serve [--config FILE]`, and the client
//! subcommands of [`partlog::cli`].

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use partlog::config::Config;

#[derive(Parser)]
#[command(
    name = "partlog",
    version,
    about = "A keyed, partitioned, ordered log over RabbitMQ streams"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve partlog.v1.PartLog, health and reflection over gRPC.
    Serve {
        /// TOML configuration file; PARTLOG_<SECTION>_<KEY> variables override it.
        #[arg(long, env = "PARTLOG_CONFIG")]
        config: Option<PathBuf>,
    },
    #[command(flatten)]
    Client(Box<partlog::cli::Command>),
}

/// The log filter without `PARTLOG_LOG`. The client library's dispatcher
/// warns "Stream closed" on every connection that closes, also when partlog
/// closes it; partlog logs broken connections itself, with context.
const DEFAULT_LOG_FILTER: &str = "info,rabbitmq_stream_client::client::dispatcher=error";

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One crypto provider for every TLS connection of the process (partlog's,
    // tonic's and the broker client library's), whatever features the
    // dependencies enable.
    let _ = tokio_rustls::rustls::crypto::aws_lc_rs::default_provider().install_default();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(colour_logs())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PARTLOG_LOG")
                .unwrap_or_else(|_| DEFAULT_LOG_FILTER.into()),
        )
        .init();
    match cli.command {
        Command::Serve { config } => serve(config),
        Command::Client(command) => partlog::cli::run(*command),
    }
}

/// Colour only for a person at a terminal, and not when `NO_COLOR` asks
/// for none (<https://no-color.org>): log files and collectors get plain text.
fn colour_logs() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

fn serve(config_path: Option<PathBuf>) -> ExitCode {
    let env: HashMap<String, String> = std::env::vars().collect();
    let config = match Config::load(config_path.as_deref(), &env) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("partlog: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("partlog: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let served = runtime.block_on(async {
        let listener = partlog::server::bind(&config).await?;
        partlog::server::run(config, listener, shutdown_signal()).await
    });
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("partlog: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            tracing::warn!("cannot watch SIGTERM ({e}); only Ctrl-C stops partlog gracefully");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
