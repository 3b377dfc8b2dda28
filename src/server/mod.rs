//! The gRPC edge: `partlog.v1.PartLog`, `grpc.health.v1.Health` and server
//! reflection on one listener.
//!
//! The service methods only translate between protobuf and the core
//! ([`crate::log`]); [`convert`] holds the translations and the single
//! mapping from core errors to status codes. [`run`] owns the process
//! lifetime: it serves until the shutdown future resolves, then stops
//! accepting calls, lets in-flight calls finish, flushes producers and
//! closes broker connections, all within the configured shutdown timeout.
//!
//! Security is wired in by [`security`]: connections come through [`tls`],
//! every call passes the [`auth`] layer, and each PartLog handler starts
//! with [`auth::authorize`] (per message for PublishStream).

pub mod auth;
pub mod convert;
pub mod reload;
pub mod security;
pub mod tls;

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::net::TcpListener;
use tonic::server::NamedService;
use tonic::{Request, Response, Status, Streaming};
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::broker::{Backoff, Broker};
use crate::config::Config;
use crate::error::Error;
use crate::log::{PartitionedLog, ReadRequest, SubmittedBatch};
use crate::offsets::OffsetStore;
use crate::proto;
use crate::proto::part_log_server::{PartLog, PartLogServer};
use crate::subscription::Fallback;
use convert::status;

/// How often health looks whether the broker still answers.
const HEALTH_INTERVAL: Duration = Duration::from_secs(1);

/// The `partlog.v1.PartLog` implementation over a shared core.
pub struct PartLogService {
    log: Arc<PartitionedLog>,
}

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl PartLog for PartLogService {
    async fn create_stream(
        &self,
        request: Request<proto::CreateStreamRequest>,
    ) -> Result<Response<proto::CreateStreamResponse>, Status> {
        auth::authorize(&request)?;
        let request = request.into_inner();
        let settings = convert::stream_settings(&request).map_err(status)?;
        let description = self
            .log
            .create_stream(&request.stream, request.partitions, &settings)
            .await
            .map_err(status)?;
        Ok(Response::new(proto::CreateStreamResponse {
            stream: Some(convert::stream_description(description)),
        }))
    }

    async fn delete_stream(
        &self,
        request: Request<proto::DeleteStreamRequest>,
    ) -> Result<Response<proto::DeleteStreamResponse>, Status> {
        auth::authorize(&request)?;
        self.log
            .delete_stream(&request.into_inner().stream)
            .await
            .map_err(status)?;
        Ok(Response::new(proto::DeleteStreamResponse {}))
    }

    async fn describe_stream(
        &self,
        request: Request<proto::DescribeStreamRequest>,
    ) -> Result<Response<proto::DescribeStreamResponse>, Status> {
        auth::authorize(&request)?;
        let description = self
            .log
            .describe_stream(&request.into_inner().stream)
            .await
            .map_err(status)?;
        Ok(Response::new(proto::DescribeStreamResponse {
            stream: Some(convert::stream_description(description)),
        }))
    }

    async fn publish(
        &self,
        request: Request<proto::PublishRequest>,
    ) -> Result<Response<proto::PublishResponse>, Status> {
        auth::authorize(&request)?;
        let request = request.into_inner();
        let submitted = submit(
            &self.log,
            request.stream,
            request.producer_id,
            request.records,
        )
        .await?;
        let results = submitted.outcome(&self.log).await;
        Ok(Response::new(proto::PublishResponse {
            results: results.into_iter().map(convert::publish_result).collect(),
        }))
    }

    type PublishStreamStream = ResponseStream<proto::PublishStreamResponse>;

    async fn publish_stream(
        &self,
        request: Request<Streaming<proto::PublishStreamRequest>>,
    ) -> Result<Response<Self::PublishStreamStream>, Status> {
        let caller = auth::caller(request.extensions())?;
        let batches = request.into_inner();
        let log = self.log.clone();
        // Batches are queued on the producers one after the other, in the
        // order they arrive, and their confirms awaited concurrently, up to
        // PUBLISH_STREAM_PIPELINE at once; answers keep the batches' order.
        let answers = batches
            .then(move |batch| {
                let log = log.clone();
                let caller = caller.clone();
                async move {
                    let submitted = match batch.and_then(|b| caller.check(&b).map(|()| b)) {
                        Ok(b) => submit(&log, b.stream, b.producer_id, b.records).await,
                        Err(status) => Err(status),
                    };
                    (log, submitted)
                }
            })
            .map(|(log, submitted)| async move {
                let results = submitted?.outcome(&log).await;
                Ok(proto::PublishStreamResponse {
                    results: results.into_iter().map(convert::publish_result).collect(),
                })
            })
            .buffered(PUBLISH_STREAM_PIPELINE);
        // The first failed batch ends the call with its status.
        let answers = answers.scan(false, |failed, answer: Result<_, Status>| {
            let item = (!*failed).then(|| {
                *failed = answer.is_err();
                answer
            });
            futures::future::ready(item)
        });
        Ok(Response::new(Box::pin(answers)))
    }

    async fn read(
        &self,
        request: Request<proto::ReadRequest>,
    ) -> Result<Response<proto::ReadResponse>, Status> {
        auth::authorize(&request)?;
        let request = request.into_inner();
        let max_wait = request
            .max_wait
            .map(convert::duration)
            .transpose()
            .map_err(|why| Status::invalid_argument(format!("max_wait {why}")))?
            .unwrap_or_default();
        let from = request.offset;
        let records = self
            .log
            .read(ReadRequest {
                stream: request.stream,
                partition: request.partition,
                offset: from,
                max_records: request.max_records,
                max_bytes: request.max_bytes,
                max_wait,
            })
            .await
            .map_err(status)?;
        let next_offset = records.last().map_or(from, |r| r.offset + 1);
        Ok(Response::new(proto::ReadResponse {
            records: records.into_iter().map(convert::record).collect(),
            next_offset,
        }))
    }

    type SubscribeStream = ResponseStream<proto::SubscribeResponse>;

    async fn subscribe(
        &self,
        request: Request<proto::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        auth::authorize(&request)?;
        let request = request.into_inner();
        let start = request
            .start
            .map(|s| convert::start_position(s, "start"))
            .transpose()
            .map_err(status)?;
        let group = Some(request.group.as_str()).filter(|g| !g.is_empty());
        let subscription = self
            .log
            .subscribe(
                &request.stream,
                group,
                &request.partitions,
                start,
                request.window,
            )
            .await
            .map_err(status)?;
        let events = tokio_stream::wrappers::ReceiverStream::new(subscription.into_receiver());
        Ok(Response::new(Box::pin(tokio_stream::StreamExt::map(
            events,
            |event| event.map(convert::subscription_event).map_err(status),
        ))))
    }

    async fn commit(
        &self,
        request: Request<proto::CommitRequest>,
    ) -> Result<Response<proto::CommitResponse>, Status> {
        auth::authorize(&request)?;
        let request = request.into_inner();
        let offsets = request.offsets.into_iter().collect();
        let results = self
            .log
            .commit(&request.stream, &request.group, &offsets)
            .await
            .map_err(status)?;
        Ok(Response::new(proto::CommitResponse {
            results: results.into_iter().map(convert::commit_result).collect(),
        }))
    }

    async fn reset_offsets(
        &self,
        request: Request<proto::ResetOffsetsRequest>,
    ) -> Result<Response<proto::ResetOffsetsResponse>, Status> {
        auth::authorize(&request)?;
        let request = request.into_inner();
        let to = request
            .to
            .ok_or_else(|| {
                Status::invalid_argument("to is required: FIRST, LAST, an offset or a timestamp")
            })
            .and_then(|to| convert::start_position(to, "to").map_err(status))?;
        let results = self
            .log
            .reset_offsets(&request.stream, &request.group, &request.partitions, to)
            .await
            .map_err(status)?;
        Ok(Response::new(proto::ResetOffsetsResponse {
            results: results.into_iter().map(convert::reset_result).collect(),
        }))
    }

    async fn get_offsets(
        &self,
        request: Request<proto::GetOffsetsRequest>,
    ) -> Result<Response<proto::GetOffsetsResponse>, Status> {
        auth::authorize(&request)?;
        let request = request.into_inner();
        let rows = self
            .log
            .get_offsets(&request.stream, &request.group)
            .await
            .map_err(status)?;
        Ok(Response::new(proto::GetOffsetsResponse {
            partitions: rows.into_iter().map(convert::partition_offsets).collect(),
        }))
    }

    async fn list_groups(
        &self,
        request: Request<proto::ListGroupsRequest>,
    ) -> Result<Response<proto::ListGroupsResponse>, Status> {
        auth::authorize(&request)?;
        let groups = self
            .log
            .list_groups(&request.into_inner().stream)
            .await
            .map_err(status)?;
        Ok(Response::new(proto::ListGroupsResponse { groups }))
    }
}

/// Batches of one PublishStream call in flight at once.
const PUBLISH_STREAM_PIPELINE: usize = 32;

/// Publish and PublishStream share this: validates and queues a batch.
async fn submit(
    log: &PartitionedLog,
    stream: String,
    producer_id: String,
    records: Vec<proto::PublishRecord>,
) -> Result<SubmittedBatch, Status> {
    let records = records.into_iter().map(convert::new_record).collect();
    let producer_id = Some(producer_id.as_str()).filter(|p| !p.is_empty());
    log.submit(&stream, producer_id, records)
        .await
        .map_err(status)
}

/// A failure that stops the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot listen on {0}: {1}")]
    Bind(String, std::io::Error),
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

/// Serves until `shutdown` resolves, then shuts down gracefully.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let addr = config.listen_addr()?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| ServeError::Bind(config.server.listen.clone(), e))?;
    let local = listener
        .local_addr()
        .map_err(|e| ServeError::Bind(addr.to_string(), e))?;
    let security = security::Security::load(&config, local).map_err(ServeError::Security)?;

    let broker = Broker::new(config.broker.clone(), config.request_timeout());
    match broker.check().await {
        Ok(()) => tracing::info!(broker = %broker.admin_node(), "broker reachable"),
        // Transient: serve anyway, NOT_SERVING until the broker answers.
        Err(Error::Unavailable(why)) => tracing::warn!(%why, "broker not reachable yet"),
        Err(e) => return Err(ServeError::Broker(e)),
    }
    let store = OffsetStore::open(Path::new(&config.offsets.data_dir))?;
    let fallback = Fallback::parse(&config.offsets.fallback)
        .expect("the configuration validated offsets.fallback");
    let log = Arc::new(PartitionedLog::new(
        broker,
        config.limits.clone(),
        store,
        fallback,
        local.to_string(),
    ));

    let (reporter, health) = tonic_health::server::health_reporter();
    let health_task = tokio::spawn(report_health(log.clone(), reporter));
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let max_message = config.max_grpc_message_bytes();
    let service = PartLogServer::new(PartLogService { log: log.clone() })
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(max_message);

    tracing::info!(%local, "partlog listening");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let _reloading = security.watch();
    let server = tonic::transport::Server::builder()
        .layer(security.layer())
        .add_service(health)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(service)
        .serve_with_incoming_shutdown(security.incoming(listener), async {
            let _ = stop_rx.await;
        });
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => return result.map_err(ServeError::from),
        () = shutdown => tracing::info!("shutting down: no new calls, finishing in-flight ones"),
    }
    let _ = stop_tx.send(());
    log.begin_shutdown();
    let timeout = config.shutdown_timeout();
    let drained = tokio::time::timeout(timeout, async {
        let served = server.await;
        log.close().await;
        served
    })
    .await;
    health_task.abort();
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
