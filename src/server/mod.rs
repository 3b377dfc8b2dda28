//! The gRPC edge: `partlog.v1.PartLog`, `grpc.health.v1.Health` and server
//! reflection on one listener.
//!
//! Security is wired in by [`security`]: connections come through [`tls`],
//! every call passes the [`auth`] layer, and each PartLog handler starts
//! with [`auth::authorize`] (per message for the client-streaming calls).
//!
//! The service methods only translate between protobuf and the core
//! ([`crate::log`]); [`convert`] holds the translations and the single
//! mapping from core errors to status codes. [`run`] owns the process
//! lifetime: it serves until the shutdown future resolves, then stops
//! accepting calls, lets in-flight calls finish, flushes producers and
//! closes broker connections, all within the configured shutdown timeout.
//!
//! Every call passes [`observe`] first (its span and the RPC metrics);
//! [`run`] also serves the metrics (`metrics.listen`) and refreshes the lag
//! gauges while it serves, and the web console (`console.listen`,
//! [`crate::console`]), whose calls come through the same layers in
//! process ([`InProcessClient`]).

mod audit;
pub(crate) mod auth;
mod connections;
pub(crate) mod convert;
pub(crate) mod observe;
mod reload;
mod security;
mod service;
pub(crate) mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::codegen::http;
use tonic::server::NamedService;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::broker::{Backoff, Broker};
use crate::config::Config;
use crate::console::api::Api;
use crate::console::history::{self, Sampling};
use crate::console::Console;
use crate::error::{Error, Kind};
use crate::log::lag::Gauges;
use crate::log::PartitionedLog;
use crate::offsets::OffsetStore;
use crate::proto;
use crate::proto::part_log_client::PartLogClient;
use crate::proto::part_log_server::PartLogServer;
use crate::telemetry::exporter::MetricsServer;
use security::Security;
use service::PartLogService;

/// partlog's own PartLog service as the console calls it, in process:
/// behind the layers of the gRPC listener (observe, authentication), so
/// that its calls are the API's calls.
pub(crate) type InProcessClient =
    PartLogClient<observe::Observed<auth::AuthService<PartLogServer<PartLogService>>>>;

/// How often health looks whether the broker still answers.
const HEALTH_INTERVAL: Duration = Duration::from_secs(1);

/// HTTP/2 flow control windows: what a client may send on one call and on
/// one connection before partlog reads it.
const HTTP2_STREAM_WINDOW: u32 = 4 * 1024 * 1024;
const HTTP2_CONNECTION_WINDOW: u32 = 8 * 1024 * 1024;
/// Largest HTTP/2 frame partlog takes.
const HTTP2_MAX_FRAME: u32 = 1024 * 1024;

/// A failure that stops the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot listen on {0}: {1}")]
    Bind(String, std::io::Error),
    #[error("cannot listen on metrics.listen {0}: {1}")]
    MetricsBind(String, std::io::Error),
    #[error("the broker cannot be used: {0}")]
    Broker(Error),
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error(transparent)]
    Offsets(#[from] crate::offsets::OpenError),
    #[error("{0}")]
    Security(String),
}

/// Binds `server.listen`. (Port 0 picks a free port; partlog logs the one
/// it got as `partlog listening local=…`.)
pub async fn bind(config: &Config) -> Result<TcpListener, ServeError> {
    let addr = config.listen_addr()?;
    TcpListener::bind(addr)
        .await
        .map_err(|e| ServeError::Bind(config.server.listen.clone(), e))
}

/// Serves on `listener` until `shutdown` resolves, then shuts down
/// gracefully: no new calls, in-flight calls finish, producers flush, the
/// offset store is flushed and broker connections close, all within
/// `server.shutdown_timeout_ms`.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let local = listener
        .local_addr()
        .map_err(|e| ServeError::Bind(config.server.listen.clone(), e))?;
    let security = Security::load(&config, local).map_err(ServeError::Security)?;
    let metrics = serve_metrics(&config).await?;
    let log = open_log(&config, local).await?;
    let _lag = metrics.as_ref().map(|_| {
        let every = config.metrics.lag_refresh();
        let max_partitions = config.metrics.lag_max_partitions as usize;
        crate::log::lag::spawn(log.clone(), every, max_partitions, Gauges::default())
    });
    let (reporter, health) = tonic_health::server::health_reporter();
    let health_task = tokio::spawn(report_health(log.clone(), reporter));
    let max_message = config.max_grpc_message_bytes();
    let partlog = PartLogServer::new(PartLogService::new(log.clone()))
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(max_message);
    let _console = serve_console(&config, &security, &log, partlog.clone()).await?;
    let server = &config.server;
    let millis = Duration::from_millis;
    let router = tonic::transport::Server::builder()
        .max_concurrent_streams(u32::try_from(server.max_concurrent_streams).unwrap_or(u32::MAX))
        .http2_keepalive_interval(Some(millis(server.keepalive_interval_ms)))
        .http2_keepalive_timeout(Some(millis(server.keepalive_timeout_ms)))
        .initial_stream_window_size(HTTP2_STREAM_WINDOW)
        .initial_connection_window_size(HTTP2_CONNECTION_WINDOW)
        .max_frame_size(HTTP2_MAX_FRAME)
        .layer(observe::ObserveLayer)
        .layer(security.layer())
        .add_service(health)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .add_service(partlog);

    tracing::info!(%local, "partlog listening");
    let _reloading = security.watch();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = router.serve_with_incoming_shutdown(security.incoming(listener), async {
        let _ = stopped.await;
    });
    let result = serve(server, stop, shutdown, &log, config.shutdown_timeout()).await;
    health_task.abort();
    result
}

/// The `/metrics` listener, when `metrics.listen` names one; it serves
/// until dropped.
async fn serve_metrics(config: &Config) -> Result<Option<MetricsServer>, ServeError> {
    let Some(addr) = config.metrics.listen_addr()? else {
        tracing::info!("metrics off (metrics.listen is empty)");
        return Ok(None);
    };
    let bind_error = |e| ServeError::MetricsBind(config.metrics.listen.clone(), e);
    let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
    let server = MetricsServer::start(listener).map_err(bind_error)?;
    if !addr.ip().is_loopback() && config.auth.enabled() {
        let why = format!(
            "metrics.listen {addr} answers anyone who reaches it, without authentication or \
             TLS, and its labels name streams, groups and principals; listen on loopback, or \
             set auth.allow_plaintext = true to allow it"
        );
        if !config.auth.allow_plaintext {
            return Err(ServeError::Security(why));
        }
        tracing::warn!("{why}");
    }
    Ok(Some(server))
}

/// The web console, when `console.listen` names an address, and the
/// sampling of its history; both run until dropped.
async fn serve_console(
    config: &Config,
    security: &Security,
    log: &Arc<PartitionedLog>,
    partlog: PartLogServer<PartLogService>,
) -> Result<Option<(Console, Sampling)>, ServeError> {
    let Some(addr) = config.console.listen_addr()? else {
        tracing::info!("console off (console.listen is empty)");
        return Ok(None);
    };
    let tls = security.tls();
    if tls.is_none() && !addr.ip().is_loopback() {
        let why = format!(
            "console.listen {addr} serves plain HTTP beyond loopback: the tokens typed into \
             the console would cross the network in plain text; set server.tls (the console \
             then serves HTTPS with its certificate) or listen on loopback"
        );
        if config.auth.enabled() && !config.auth.allow_plaintext {
            return Err(ServeError::Security(format!(
                "{why}, or set auth.allow_plaintext = true"
            )));
        }
        tracing::warn!("{why}");
    }
    let bind_error = |e| ServeError::Bind(format!("console.listen {}", config.console.listen), e);
    let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
    let max_message = config.max_grpc_message_bytes();
    use tower_layer::Layer as _;
    let in_process = observe::ObserveLayer.layer(security.layer().layer(partlog));
    let client = InProcessClient::new(in_process)
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(max_message);
    let history = history::SharedHistory::default();
    let every = config.console.sample_interval();
    let max_partitions = config.metrics.lag_max_partitions as usize;
    let sampling = history::sample(log.clone(), history.clone(), every, max_partitions);
    let api = Api::new(client, history, every);
    let console = Console::start(listener, tls, api).map_err(bind_error)?;
    Ok(Some((console, sampling)))
}

/// A console call of `message` for the browser at `peer`: with the page's
/// `authorization` header as the call's metadata, which the
/// authentication layer checks as any call's, and the browser's address as
/// the call's peer (in the audit log).
pub(crate) fn console_call<T>(
    message: T,
    authorization: Option<&http::HeaderValue>,
    peer: SocketAddr,
) -> tonic::Request<T> {
    let mut headers = http::HeaderMap::new();
    if let Some(authorization) = authorization {
        headers.insert(http::header::AUTHORIZATION, authorization.clone());
    }
    let mut request = tonic::Request::new(message);
    *request.metadata_mut() = tonic::metadata::MetadataMap::from_headers(headers);
    request
        .extensions_mut()
        .insert(connections::ConnectionState::of_browser(peer));
    request
}

/// The broker handle, offset store and log of this process. A broker that
/// does not answer yet is no reason not to serve (health says NOT_SERVING
/// until it does); wrong credentials or frame size are.
async fn open_log(config: &Config, local: SocketAddr) -> Result<Arc<PartitionedLog>, ServeError> {
    if !config.broker.tls.enabled {
        let beyond_loopback = config.broker.nodes().into_iter().find(|(host, _)| {
            host != "localhost"
                && !host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        });
        if let Some((host, port)) = beyond_loopback {
            tracing::warn!(
                "the broker password goes to {host}:{port} in plain text (SASL PLAIN without \
                 TLS); set broker.tls.enabled and the nodes' TLS port"
            );
        }
    }
    let broker = Broker::new(config.broker.clone(), config.request_timeout());
    match broker.check().await {
        Ok(()) => tracing::info!(broker = %broker.admin_node(), "broker reachable"),
        Err(why) if why.kind() == Kind::Unavailable => {
            tracing::warn!(%why, "broker not reachable yet")
        }
        Err(e) => return Err(ServeError::Broker(e)),
    }
    let store = OffsetStore::open(Path::new(&config.offsets.data_dir))?;
    Ok(Arc::new(PartitionedLog::new(
        broker,
        config.limits.clone(),
        store,
        config.offsets.fallback,
        local.to_string(),
    )))
}

/// Reflection over partlog's and health's descriptors; served as v1 and,
/// for older clients, v1alpha.
fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
}

/// Serves until `shutdown`, then stops taking calls (`stop`), ends
/// subscriptions and drains: in-flight calls finish and the log closes,
/// within `timeout`.
async fn serve(
    server: impl Future<Output = Result<(), tonic::transport::Error>>,
    stop: tokio::sync::oneshot::Sender<()>,
    shutdown: impl Future<Output = ()> + Send,
    log: &PartitionedLog,
    timeout: Duration,
) -> Result<(), ServeError> {
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => return result.map_err(ServeError::from),
        () = shutdown => tracing::info!("shutting down: no new calls, finishing in-flight ones"),
    }
    let _ = stop.send(());
    log.begin_shutdown();
    let drained = tokio::time::timeout(timeout, async {
        let served = server.await;
        log.close().await;
        served
    })
    .await;
    match drained {
        Ok(result) => {
            tracing::info!("shutdown complete");
            result.map_err(ServeError::from)
        }
        Err(_) => {
            tracing::warn!(
                ?timeout,
                "shutdown timed out; unconfirmed publishes were failed"
            );
            Ok(())
        }
    }
}

/// Keeps the health status in step with the broker's reachability: looks
/// every [`HEALTH_INTERVAL`] while the broker answers, and reconnects with
/// capped exponential backoff while it does not.
async fn report_health(log: Arc<PartitionedLog>, reporter: HealthReporter) {
    let mut last = None;
    let mut backoff = Backoff::default();
    loop {
        let reachable = log.broker().is_reachable().await;
        crate::telemetry::broker_up(reachable);
        let status = if reachable {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        if last != Some(status) {
            tracing::info!(?status, "health");
            reporter.set_service_status("", status).await;
            reporter
                .set_service_status(
                    <PartLogServer<PartLogService> as NamedService>::NAME,
                    status,
                )
                .await;
            last = Some(status);
        }
        let pause = if reachable {
            backoff.reset();
            HEALTH_INTERVAL
        } else {
            backoff.next_delay()
        };
        tokio::time::sleep(pause).await;
    }
}
