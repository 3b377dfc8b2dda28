//! `partlog.v1.PartLog`: each method translates its request into a call of
//! the core ([`crate::log`]) and the answer back, through [`super::convert`].

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::audit;
use super::auth;
use super::auth::principals::Resource;
use super::auth::rpcs::Protected;
use super::connections::ConnectionInfo;
use super::convert::{self, status};
use crate::error::{Error, Reason};
use crate::log::{
    Appended, ConsumeEvent, ConsumeEvents, PartitionedLog, ProducerId, ReadRequest, Source,
    SourceCommits, SubmittedBatch,
};
use crate::proto;
use crate::proto::part_log_server::PartLog;
use crate::record::NewRecord;
use crate::validate;

/// The `partlog.v1.PartLog` implementation over a shared core.
pub struct PartLogService {
    log: Arc<PartitionedLog>,
}

impl PartLogService {
    pub fn new(log: Arc<PartitionedLog>) -> Self {
        PartLogService { log }
    }
}

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl PartLog for PartLogService {
    async fn create_stream(
        &self,
        request: Request<proto::CreateStreamRequest>,
    ) -> Result<Response<proto::CreateStreamResponse>, Status> {
        let audit = Audit::of("CreateStream", &request)?;
        let request = request.into_inner();
        let created = async {
            let settings = convert::stream_settings(&request).map_err(status)?;
            let description = self
                .log
                .create_stream(&request.stream, request.partitions, &settings)
                .await
                .map_err(status)?;
            Ok(Response::new(proto::CreateStreamResponse {
                stream: Some(convert::stream_description(description)),
            }))
        };
        audit.record(Resource::Stream(&request.stream), created.await)
    }

    async fn delete_stream(
        &self,
        request: Request<proto::DeleteStreamRequest>,
    ) -> Result<Response<proto::DeleteStreamResponse>, Status> {
        let audit = Audit::of("DeleteStream", &request)?;
        let stream = request.into_inner().stream;
        let deleted = self.log.delete_stream(&stream).await.map_err(status);
        let deleted = deleted.map(|()| Response::new(proto::DeleteStreamResponse {}));
        audit.record(Resource::Stream(&stream), deleted)
    }

    async fn resize_stream(
        &self,
        request: Request<proto::ResizeStreamRequest>,
    ) -> Result<Response<proto::ResizeStreamResponse>, Status> {
        let audit = Audit::of("ResizeStream", &request)?;
        let request = request.into_inner();
        let resized = self
            .log
            .resize_stream(&request.stream, request.partitions)
            .await
            .map_err(status)
            .map(|description| {
                Response::new(proto::ResizeStreamResponse {
                    stream: Some(convert::stream_description(description)),
                })
            });
        audit.record(Resource::Stream(&request.stream), resized)
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

    async fn list_streams(
        &self,
        request: Request<proto::ListStreamsRequest>,
    ) -> Result<Response<proto::ListStreamsResponse>, Status> {
        let caller = auth::authorize(&request)?;
        let request = convert::list_streams(request.into_inner()).map_err(status)?;
        let visible = |stream: &str| caller.sees_stream(stream);
        let page = self
            .log
            .list_streams(&request, &visible)
            .await
            .map_err(status)?;
        Ok(Response::new(convert::stream_page(page)))
    }

    async fn publish(
        &self,
        request: Request<proto::PublishRequest>,
    ) -> Result<Response<proto::PublishResponse>, Status> {
        let caller = auth::authorize(&request)?;
        let request = request.into_inner();
        let (submitted, source) = submit(
            &self.log,
            &caller,
            request.stream,
            request.producer_id,
            request.source,
            request.records,
        )
        .await?;
        let results = self.log.outcome(submitted).await;
        let mut commits = SourceCommits::default();
        Ok(Response::new(
            answer(&self.log, &mut commits, source, results).await,
        ))
    }

    type PublishStreamStream = ResponseStream<proto::PublishStreamResponse>;

    async fn publish_stream(
        &self,
        request: Request<Streaming<proto::PublishStreamRequest>>,
    ) -> Result<Response<Self::PublishStreamStream>, Status> {
        let caller = auth::caller(request.extensions())?;
        let batches = request.into_inner();
        let log = self.log.clone();
        let revoked_with = caller.clone();
        // Batches are queued on the producers one after the other, in the
        // order they arrive, and their confirms awaited concurrently, up to
        // PUBLISH_STREAM_PIPELINE at once; answers keep the batches' order.
        let answers = batches
            .then(move |batch| {
                let log = log.clone();
                let caller = caller.clone();
                async move {
                    // Each batch under the principals file as it is now.
                    let allowed = batch.and_then(|b| {
                        let caller = caller.current()?;
                        caller.check(&b)?;
                        Ok((caller, b))
                    });
                    let submitted = match allowed {
                        Ok((caller, b)) => {
                            submit(&log, &caller, b.stream, b.producer_id, b.source, b.records)
                                .await
                        }
                        Err(status) => Err(status),
                    };
                    (log, submitted)
                }
            })
            .map(|(log, submitted)| async move {
                let (submitted, source) = submitted?;
                let results = log.outcome(submitted).await;
                Ok((log, source, results))
            })
            .buffered(PUBLISH_STREAM_PIPELINE)
            // Answered (and sources committed) one batch at a time, in order.
            .then({
                let commits = Arc::new(tokio::sync::Mutex::new(SourceCommits::default()));
                move |answered: Result<_, Status>| {
                    let commits = commits.clone();
                    async move {
                        let (log, source, results) = answered?;
                        let mut commits = commits.lock().await;
                        let answer = answer(&log, &mut commits, source, results).await;
                        Ok(proto::PublishStreamResponse {
                            results: answer.results,
                            commit: answer.commit,
                        })
                    }
                }
            });
        // The first failed batch ends the call with its status.
        let answers = answers.scan(false, |failed, answer: Result<_, Status>| {
            let item = (!*failed).then(|| {
                *failed = answer.is_err();
                answer
            });
            futures::future::ready(item)
        });
        Ok(Response::new(auth::revocable(
            revoked_with,
            (),
            Box::pin(answers),
        )))
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
            .map_err(|why| {
                status(Error::field(
                    Reason::ValueOutOfRange,
                    "max_wait",
                    format!("max_wait {why}"),
                ))
            })?
            .unwrap_or_default();
        let filter =
            validate::record_filter("filters", request.filters, request.include_unfiltered)
                .map_err(status)?;
        let read = self
            .log
            .read(ReadRequest {
                stream: request.stream,
                partition: request.partition,
                offset: request.offset,
                max_records: request.max_records,
                max_bytes: request.max_bytes,
                max_wait,
                filter,
            })
            .await
            .map_err(status)?;
        Ok(Response::new(proto::ReadResponse {
            records: read.records.into_iter().map(convert::record).collect(),
            next_offset: read.next_offset,
            markers: read
                .markers
                .into_iter()
                .map(convert::epoch_marker)
                .collect(),
        }))
    }

    type SubscribeStream = ResponseStream<proto::SubscribeResponse>;

    async fn subscribe(
        &self,
        request: Request<proto::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let caller = auth::authorize(&request)?;
        let request = request.into_inner();
        let start = request
            .start
            .map(|s| convert::start_position(s, "start"))
            .transpose()
            .map_err(status)?;
        let group = Some(request.group.as_str()).filter(|g| !g.is_empty());
        let filter = validate::record_filter(
            "filters",
            request.filters.clone(),
            request.include_unfiltered,
        )
        .map_err(status)?;
        let events = self
            .log
            .subscribe(
                &request.stream,
                group,
                &request.partitions,
                start,
                request.window,
                filter,
            )
            .await
            .map_err(status)?;
        let responses = responses(events, convert::subscribe_responses);
        Ok(Response::new(auth::revocable(caller, request, responses)))
    }

    type ConsumeStream = ResponseStream<proto::ConsumeResponse>;

    async fn consume(
        &self,
        request: Request<Streaming<proto::ConsumeRequest>>,
    ) -> Result<Response<Self::ConsumeStream>, Status> {
        let caller = auth::caller(request.extensions())?;
        let mut requests = request.into_inner();
        let first = requests.message().await?.ok_or_else(|| {
            status(Error::field(
                Reason::FieldRequired,
                "open",
                "the Consume call sent no request",
            ))
        })?;
        // The first request names what the call reads; later ones act on it.
        caller.check(&first)?;
        let needs = first.clone();
        let open = convert::consume_open(first).map_err(status)?;
        // Later requests as the session's inputs; a bad one ends the call
        // with its status, a transport error with UNAVAILABLE.
        let inputs = requests.flat_map(|request| {
            let inputs = match request {
                Ok(request) => convert::consume_inputs(request).map_err(|e| vec![Err(e)]),
                Err(status) => Err(vec![Err(Error::new(
                    Reason::RequestStreamFailed,
                    format!("the client's request stream failed: {}", status.message()),
                ))]),
            };
            let inputs = match inputs {
                Ok(inputs) => inputs.into_iter().map(Ok).collect(),
                Err(failed) => failed,
            };
            futures::stream::iter(inputs)
        });
        let events = self
            .log
            .consume(open, Box::pin(inputs))
            .await
            .map_err(status)?;
        let responses = responses(events, convert::consume_responses);
        Ok(Response::new(auth::revocable(caller, needs, responses)))
    }

    async fn commit(
        &self,
        request: Request<proto::CommitRequest>,
    ) -> Result<Response<proto::CommitResponse>, Status> {
        let audit = Audit::of("Commit", &request)?;
        let request = request.into_inner();
        let offsets = request.offsets.into_iter().collect();
        let committed = self
            .log
            .commit(&request.stream, &request.group, &offsets)
            .await
            .map_err(status)
            .map(|results| {
                Response::new(proto::CommitResponse {
                    results: results.into_iter().map(convert::commit_result).collect(),
                })
            });
        let group = Resource::Group {
            stream: &request.stream,
            group: &request.group,
        };
        audit.record(group, committed)
    }

    async fn reset_offsets(
        &self,
        request: Request<proto::ResetOffsetsRequest>,
    ) -> Result<Response<proto::ResetOffsetsResponse>, Status> {
        let audit = Audit::of("ResetOffsets", &request)?;
        let request = request.into_inner();
        let reset = async {
            let to = request
                .to
                .ok_or_else(|| {
                    status(Error::field(
                        Reason::FieldRequired,
                        "to",
                        "to is required: FIRST, LAST, an offset or a timestamp",
                    ))
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
        };
        let group = Resource::Group {
            stream: &request.stream,
            group: &request.group,
        };
        audit.record(group, reset.await)
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

    async fn describe_group(
        &self,
        request: Request<proto::DescribeGroupRequest>,
    ) -> Result<Response<proto::DescribeGroupResponse>, Status> {
        auth::authorize(&request)?;
        let request = request.into_inner();
        let partitions = self
            .log
            .describe_group(&request.stream, &request.group)
            .await
            .map_err(status)?;
        Ok(Response::new(proto::DescribeGroupResponse {
            partitions: partitions
                .into_iter()
                .map(convert::partition_members)
                .collect(),
        }))
    }

    async fn list_groups(
        &self,
        request: Request<proto::ListGroupsRequest>,
    ) -> Result<Response<proto::ListGroupsResponse>, Status> {
        let caller = auth::authorize(&request)?;
        let stream = request.into_inner().stream;
        let mut groups = self.log.list_groups(&stream).await.map_err(status)?;
        groups.retain(|group| caller.sees_group(&stream, group));
        Ok(Response::new(proto::ListGroupsResponse { groups }))
    }
}

/// An administrative or data-changing call, authorized, whose outcome goes
/// to the audit log.
struct Audit {
    action: &'static str,
    caller: auth::Caller,
    peer: Option<std::net::SocketAddr>,
}

impl Audit {
    /// Authorizes `request` (a refusal is audited where it is made).
    fn of<T: Protected>(action: &'static str, request: &Request<T>) -> Result<Audit, Status> {
        let caller = auth::authorize(request)?;
        let peer = request
            .extensions()
            .get::<ConnectionInfo>()
            .and_then(|c| c.remote_addr);
        Ok(Audit {
            action,
            caller,
            peer,
        })
    }

    fn record<T>(self, resource: Resource<'_>, outcome: Result<T, Status>) -> Result<T, Status> {
        audit::record(audit::Entry {
            action: self.action,
            principal: self.caller.principal_name(),
            peer: self.peer,
            resource: &resource.to_string(),
            outcome: outcome.as_ref().map(|_| ()),
        });
        outcome
    }
}

/// A session's events as a call's responses: each event makes its
/// responses (a response per record), an error ends the call.
fn responses<T: Send + 'static>(
    events: ConsumeEvents,
    convert: fn(ConsumeEvent) -> Vec<T>,
) -> ResponseStream<T> {
    let events = tokio_stream::wrappers::ReceiverStream::new(events);
    Box::pin(events.flat_map(move |event| {
        let responses: Vec<Result<T, Status>> = match event {
            Ok(event) => convert(event).into_iter().map(Ok).collect(),
            Err(e) => vec![Err(status(e))],
        };
        futures::stream::iter(responses)
    }))
}

/// Batches of one PublishStream call in flight at once.
const PUBLISH_STREAM_PIPELINE: usize = 32;

/// Publish and PublishStream share this: validates and queues a batch. A
/// producer id, and a source's producer, belong to the caller's principal
/// (see [`crate::log::ProducerId`]).
async fn submit(
    log: &PartitionedLog,
    caller: &auth::Caller,
    stream: String,
    producer_id: String,
    source: Option<proto::Source>,
    records: Vec<proto::PublishRecord>,
) -> Result<(SubmittedBatch, Option<Source>), Status> {
    let owner = caller.principal_name();
    let Some(source) = source else {
        if let Some(index) = records
            .iter()
            .position(|r| r.source_offset > 0 || r.output_index > 0)
        {
            return Err(status(Error::field(
                Reason::FieldRequired,
                "source",
                format!(
                    "records[{index}] has a source_offset or output_index but the request has \
                     no source"
                ),
            )));
        }
        let records: Vec<_> = records.into_iter().map(convert::new_record).collect();
        caller.publishing(records.iter().map(NewRecord::size).sum())?;
        let producer = Some(producer_id.as_str())
            .filter(|p| !p.is_empty())
            .map(|id| ProducerId { id, owner });
        let submitted = log.submit(&stream, producer, records).await;
        return Ok((submitted.map_err(status)?, None));
    };
    if !producer_id.is_empty() {
        return Err(status(Error::field(
            Reason::SequenceInvalid,
            "producer_id",
            "source and producer_id exclude each other: a source's outputs are written through \
             a producer of its own",
        )));
    }
    let outputs: Vec<_> = records.iter().map(convert::output).collect();
    let records: Vec<_> = records.into_iter().map(convert::new_record).collect();
    caller.publishing(records.iter().map(NewRecord::size).sum())?;
    let source = convert::source(source);
    let submitted = log
        .submit_outputs(&stream, &source, owner, records, &outputs)
        .await
        .map_err(status)?;
    Ok((submitted, Some(source)))
}

/// A batch's answer: each record's result and, for a source with a
/// commit_offset, its commit ([`PartitionedLog::commit_source`]).
async fn answer(
    log: &PartitionedLog,
    commits: &mut SourceCommits,
    source: Option<Source>,
    results: Vec<Appended>,
) -> proto::PublishResponse {
    let commit = match &source {
        Some(source) => log.commit_source(commits, source, &results).await,
        None => None,
    };
    proto::PublishResponse {
        results: results.into_iter().map(convert::publish_result).collect(),
        commit: commit.map(convert::source_commit),
    }
}
