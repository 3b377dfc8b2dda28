//! The `partlog` binary: `partlog serve [--config FILE]`, and the client
//! subcommands of [`partlog::cli`].

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use partlog::config::Config;
use partlog::telemetry::logging::{self, ErrorChain};

#[derive(Parser)]
#[command(
    name = "partlog",
    version,
    about = "A keyed, partitioned, ordered log over RabbitMQ streams"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Global options of the client subcommands, anywhere on the line.
    #[command(flatten)]
    client: partlog::cli::Common,
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One crypto provider for every TLS connection of the process (partlog's,
    // tonic's and the broker client library's), whatever features the
    // dependencies enable.
    let _ = tokio_rustls::rustls::crypto::aws_lc_rs::default_provider().install_default();
    match cli.command {
        Command::Serve { config } => serve(config),
        Command::Client(command) => {
            logging::init_client();
            partlog::cli::run(*command, &cli.client)
        }
    }
}

fn serve(config_path: Option<PathBuf>) -> ExitCode {
    let env: HashMap<String, String> = std::env::vars().collect();
    let config = match Config::load(config_path.as_deref(), &env) {
        Ok(config) => config,
        Err(e) => {
            // Before the log exists: its format is part of the configuration.
            eprintln!("partlog: {e}");
            return ExitCode::from(2);
        }
    };
    logging::init(config.log.format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(error = %ErrorChain(&e), "cannot start the async runtime");
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
            // In the log's format, so that a collector sees why partlog stopped.
            tracing::error!(error = %ErrorChain(&e), "partlog stopped");
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

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Clap checks a command line's definition (unique argument names,
    /// valid `requires`) only when it is built: every subcommand here.
    #[test]
    fn the_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
