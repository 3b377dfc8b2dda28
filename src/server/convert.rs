//! Conversions between `partlog.v1` messages and the core's types, and the
//! one place where core errors become gRPC statuses.

use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::broker::{Stored, StreamSettings};
use crate::error::{Error, Kind, Reason};
use crate::log::{
    Appended, AssignmentState, ClientInput, ConsumeEvent, ConsumeOpen, Credit, EpochMarker,
    ListStreams, OffsetSource, Output, PartitionDescription, PartitionMembers, PartitionOffsets,
    Source, StartPosition, StreamDescription, StreamPage,
};
use crate::offsets::Committed;
use crate::proto;
use crate::proto::start_position::Position;
use crate::record::{NewRecord, StoredRecord};
use crate::validate;

/// The status code of each error kind.
pub fn code(kind: Kind) -> Code {
    match kind {
        Kind::InvalidArgument => Code::InvalidArgument,
        Kind::NotFound => Code::NotFound,
        Kind::AlreadyExists => Code::AlreadyExists,
        Kind::FailedPrecondition => Code::FailedPrecondition,
        Kind::ResourceExhausted => Code::ResourceExhausted,
        Kind::Unavailable => Code::Unavailable,
        Kind::DataLoss => Code::DataLoss,
        Kind::Internal => Code::Internal,
        Kind::Unauthenticated => Code::Unauthenticated,
        Kind::PermissionDenied => Code::PermissionDenied,
        Kind::Unimplemented => Code::Unimplemented,
    }
}

/// `ErrorInfo.domain` of partlog's errors.
pub const ERROR_DOMAIN: &str = "partlog";

/// The status of `error`: its kind's code, its message, and the details a
/// program acts on — `ErrorInfo` (domain "partlog", the reason, and the
/// field in its metadata), `BadRequest` naming the field for
/// INVALID_ARGUMENT, `RetryInfo` when waiting helps.
pub fn status(error: Error) -> Status {
    let mut metadata = std::collections::HashMap::new();
    if let Some(field) = error.field_path() {
        metadata.insert("field".to_owned(), field.to_owned());
    }
    let mut details = ErrorDetails::with_error_info(error.reason().name(), ERROR_DOMAIN, metadata);
    if let Some(delay) = error.retry_delay() {
        details.set_retry_info(Some(delay));
    }
    if let Some(field) = error.field_path() {
        details.add_bad_request_violation(field, error.message());
    }
    Status::with_error_details(code(error.kind()), error.message(), details)
}

pub fn partition_members(row: PartitionMembers) -> proto::PartitionMembers {
    proto::PartitionMembers {
        partition: row.partition,
        members: row
            .members
            .into_iter()
            .map(|m| proto::GroupMember {
                member: m.member.unwrap_or_default(),
                connection: m.connection,
                active: m.active,
            })
            .collect(),
    }
}

/// Sizes of a chunk's Bloom filter RabbitMQ takes.
const FILTER_SIZE_BYTES: std::ops::RangeInclusive<u32> = 16..=255;

/// `max_chunk_records` settings partlog takes: one record per chunk up to
/// more than a frame of small records holds.
const MAX_CHUNK_RECORDS: std::ops::RangeInclusive<u32> = 1..=10_000;

pub fn stream_settings(request: &proto::CreateStreamRequest) -> Result<StreamSettings, Error> {
    let retention = request.retention.unwrap_or_default();
    let max_age = retention
        .max_age
        .map(|d| {
            duration(d).map_err(|why| {
                Error::field(
                    Reason::ValueOutOfRange,
                    "retention.max_age",
                    format!("retention.max_age {why}"),
                )
            })
        })
        .transpose()?;
    let nonzero = |v: u64| (v > 0).then_some(v);
    within(
        "filter_size_bytes",
        request.filter_size_bytes,
        &FILTER_SIZE_BYTES,
        " (the broker's Bloom filter sizes)",
    )?;
    within(
        "max_chunk_records",
        request.max_chunk_records,
        &MAX_CHUNK_RECORDS,
        "",
    )?;
    Ok(StreamSettings {
        max_chunk_records: request.max_chunk_records,
        max_age,
        max_bytes: nonzero(retention.max_bytes),
        max_segment_bytes: nonzero(retention.max_segment_bytes),
        replicas: request.replicas,
        filter_size_bytes: request.filter_size_bytes,
    })
}

/// An optional setting `field` of a request, refused outside `allowed`;
/// `why` ends the message.
fn within(
    field: &str,
    value: Option<u32>,
    allowed: &std::ops::RangeInclusive<u32>,
    why: &str,
) -> Result<(), Error> {
    match value {
        Some(value) if !allowed.contains(&value) => Err(Error::field(
            Reason::ValueOutOfRange,
            field,
            format!(
                "{field} is {value}; {}..={} is allowed{why}",
                allowed.start(),
                allowed.end()
            ),
        )),
        _ => Ok(()),
    }
}

/// A protobuf duration as a non-negative `Duration`.
pub fn duration(d: prost_types::Duration) -> Result<Duration, String> {
    if d.seconds < 0 || d.nanos < 0 || d.nanos >= 1_000_000_000 {
        return Err(format!(
            "must be a non-negative duration, got {}s {}ns",
            d.seconds, d.nanos
        ));
    }
    Ok(Duration::new(d.seconds as u64, d.nanos as u32))
}

pub fn new_record(record: proto::PublishRecord) -> NewRecord {
    NewRecord {
        key: record.key,
        value: record.value,
        headers: record.headers.into_iter().collect(),
        sequence: (record.sequence > 0).then_some(record.sequence),
        filter: (!record.filter.is_empty()).then_some(record.filter),
    }
}

/// A record's place among its source's outputs.
pub fn output(record: &proto::PublishRecord) -> Output {
    Output {
        source_offset: record.source_offset,
        index: record.output_index,
    }
}

pub fn source(source: proto::Source) -> Source {
    Source {
        group: source.group,
        stream: source.stream,
        partition: source.partition,
        commit_offset: source.commit_offset,
    }
}

pub fn source_commit(commit: crate::error::Result<Committed>) -> proto::SourceCommit {
    match commit {
        Ok(committed) => proto::SourceCommit {
            committed: Some(committed.offset),
            ignored_lower: committed.ignored_lower,
            error: None,
        },
        Err(e) => proto::SourceCommit {
            committed: None,
            ignored_lower: false,
            error: Some(record_error(&e)),
        },
    }
}

fn record_error(e: &Error) -> proto::RecordError {
    proto::RecordError {
        code: code(e.kind()) as i32,
        message: e.message().to_owned(),
        reason: e.reason().name().to_owned(),
    }
}

pub fn publish_result(appended: Appended) -> proto::PublishResult {
    let (duplicate, error) = match appended.result {
        Ok(stored) => (stored == Stored::Duplicate, None),
        Err(e) => (false, Some(record_error(&e))),
    };
    proto::PublishResult {
        partition: appended.partition,
        error,
        duplicate,
        sequence: appended.sequence.unwrap_or(0),
    }
}

pub fn record(record: StoredRecord) -> proto::Record {
    proto::Record {
        partition: record.partition,
        offset: record.offset,
        key: record.key,
        value: record.value,
        headers: record.headers.into_iter().collect(),
        filter: record.filter,
        timestamp: Some(timestamp(record.timestamp_ms)),
    }
}

/// Milliseconds since the Unix epoch as a protobuf timestamp.
fn timestamp(ms: impl Into<i128>) -> prost_types::Timestamp {
    let ms: i128 = ms.into();
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000) as i64,
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

/// A start position; `field` names it in errors.
pub fn start_position(position: proto::StartPosition, field: &str) -> Result<StartPosition, Error> {
    Ok(match position.position {
        None => {
            return Err(Error::field(
                Reason::PositionInvalid,
                field,
                format!(
                "{field} names no position; set committed, first, last, next, offset or timestamp"
            ),
            ))
        }
        Some(Position::Committed(_)) => StartPosition::Committed,
        Some(Position::First(_)) => StartPosition::First,
        Some(Position::Last(_)) => StartPosition::Last,
        Some(Position::Next(_)) => StartPosition::Next,
        Some(Position::Offset(offset)) => StartPosition::Offset(offset),
        Some(Position::Timestamp(ts)) => {
            if !(0..1_000_000_000).contains(&ts.nanos) {
                return Err(Error::field(
                    Reason::PositionInvalid,
                    format!("{field}.timestamp"),
                    format!("{field}.timestamp has nanos {} outside 0..1e9", ts.nanos),
                ));
            }
            let ms = ts
                .seconds
                .checked_mul(1000)
                .and_then(|ms| ms.checked_add(i64::from(ts.nanos / 1_000_000)))
                .ok_or_else(|| {
                    Error::field(
                        Reason::PositionInvalid,
                        format!("{field}.timestamp"),
                        format!("{field}.timestamp is out of range"),
                    )
                })?;
            StartPosition::Timestamp(ms)
        }
    })
}

/// A session event as `Subscribe` answers: a response per record.
pub fn subscribe_responses(event: ConsumeEvent) -> Vec<proto::SubscribeResponse> {
    use proto::subscribe_response::Event;
    let wrap = |event| proto::SubscribeResponse { event: Some(event) };
    match event {
        ConsumeEvent::Records(records) => records
            .into_iter()
            .map(|r| wrap(Event::Record(record(r))))
            .collect(),
        ConsumeEvent::Assignment {
            partition,
            state,
            next_offset,
        } => vec![wrap(Event::Assignment(assignment(
            partition,
            state,
            next_offset,
        )))],
        ConsumeEvent::Skipped {
            partition,
            next_offset,
        } => vec![wrap(Event::Skipped(proto::Skipped {
            partition,
            next_offset,
        }))],
        ConsumeEvent::EpochMarker(marker) => vec![wrap(Event::EpochMarker(epoch_marker(marker)))],
        // A Subscribe session takes no commits.
        ConsumeEvent::CommitAck { .. } => Vec::new(),
    }
}

/// A session event as `Consume` answers: a response per record.
pub fn consume_responses(event: ConsumeEvent) -> Vec<proto::ConsumeResponse> {
    use proto::consume_response::Event;
    let wrap = |event| proto::ConsumeResponse { event: Some(event) };
    match event {
        ConsumeEvent::Records(records) => records
            .into_iter()
            .map(|r| wrap(Event::Record(record(r))))
            .collect(),
        ConsumeEvent::Assignment {
            partition,
            state,
            next_offset,
        } => vec![wrap(Event::Assignment(assignment(
            partition,
            state,
            next_offset,
        )))],
        ConsumeEvent::Skipped {
            partition,
            next_offset,
        } => vec![wrap(Event::Skipped(proto::Skipped {
            partition,
            next_offset,
        }))],
        ConsumeEvent::EpochMarker(marker) => vec![wrap(Event::EpochMarker(epoch_marker(marker)))],
        ConsumeEvent::CommitAck {
            partition,
            offset,
            result,
        } => {
            let ack = match result {
                Ok(committed) => proto::CommitAck {
                    partition,
                    offset,
                    committed: Some(committed.offset),
                    ignored_lower: committed.ignored_lower,
                    error: None,
                },
                Err(e) => proto::CommitAck {
                    partition,
                    offset,
                    committed: None,
                    ignored_lower: false,
                    error: Some(proto::CommitError {
                        code: code(e.kind()) as i32,
                        message: e.message().to_owned(),
                        reason: e.reason().name().to_owned(),
                    }),
                },
            };
            vec![wrap(Event::Commit(ack))]
        }
    }
}

fn assignment(
    partition: u32,
    state: AssignmentState,
    next_offset: Option<u64>,
) -> proto::Assignment {
    proto::Assignment {
        partition,
        state: match state {
            AssignmentState::Active => proto::AssignmentState::Active,
            AssignmentState::Inactive => proto::AssignmentState::Inactive,
            AssignmentState::Reattached => proto::AssignmentState::Reattached,
        } as i32,
        next_offset,
    }
}

/// The first request of a `Consume` call.
pub fn consume_open(request: proto::ConsumeRequest) -> Result<ConsumeOpen, Error> {
    let Some(open) = request.open else {
        return Err(Error::field(
            Reason::RequestOutOfOrder,
            "open",
            "the first request of a Consume call sets open (stream, group, partitions, start)",
        ));
    };
    if !request.commits.is_empty() {
        return Err(Error::field(
            Reason::RequestOutOfOrder,
            "commits",
            "the first request of a Consume call carries no commits: nothing was received yet",
        ));
    }
    Ok(ConsumeOpen {
        start: open
            .start
            .map(|s| start_position(s, "open.start"))
            .transpose()?,
        group: Some(open.group).filter(|g| !g.is_empty()),
        filter: validate::record_filter("open.filters", open.filters, open.include_unfiltered)?,
        stream: open.stream,
        partitions: open.partitions,
        credit: Credit {
            records: Some(u64::from(request.credit_records)),
            bytes: (request.credit_bytes > 0).then_some(request.credit_bytes),
        },
    })
}

/// A later request of a `Consume` call: its credit, then its commits.
pub fn consume_inputs(request: proto::ConsumeRequest) -> Result<Vec<ClientInput>, Error> {
    if request.open.is_some() {
        return Err(Error::field(
            Reason::RequestOutOfOrder,
            "open",
            "open is set in a later request; a Consume call opens once, in its first request",
        ));
    }
    let mut inputs = Vec::new();
    if request.credit_records > 0 || request.credit_bytes > 0 {
        inputs.push(ClientInput::Credit {
            records: u64::from(request.credit_records),
            bytes: request.credit_bytes,
        });
    }
    if !request.commits.is_empty() {
        inputs.push(ClientInput::Commits(request.commits.into_iter().collect()));
    }
    Ok(inputs)
}

pub fn commit_result(committed: Committed) -> proto::CommitResult {
    proto::CommitResult {
        partition: committed.partition,
        committed: Some(committed.offset),
        ignored_lower: committed.ignored_lower,
    }
}

pub fn reset_result((partition, committed): (u32, Option<u64>)) -> proto::CommitResult {
    proto::CommitResult {
        partition,
        committed,
        ignored_lower: false,
    }
}

pub fn partition_offsets(row: PartitionOffsets) -> proto::PartitionOffsets {
    proto::PartitionOffsets {
        partition: row.partition,
        committed: row.committed.offset,
        committed_source: match row.committed.source {
            None => proto::OffsetSource::Unspecified,
            Some(OffsetSource::Local) => proto::OffsetSource::Local,
            Some(OffsetSource::Broker) => proto::OffsetSource::Broker,
        } as i32,
        first: row.first,
        tail: row.tail,
        lag: row.lag,
        active_member: row.active_member.unwrap_or_default(),
        epoch_markers: row.epoch_markers,
    }
}

pub fn epoch_marker(marker: EpochMarker) -> proto::EpochMarker {
    proto::EpochMarker {
        partition: marker.partition,
        offset: marker.offset,
        from_partitions: marker.change.from,
        to_partitions: marker.change.to,
    }
}

/// A ListStreams request; a negative page size is refused.
pub fn list_streams(request: proto::ListStreamsRequest) -> Result<ListStreams, Error> {
    let page_size = u32::try_from(request.page_size).map_err(|_| {
        Error::field(
            Reason::ValueOutOfRange,
            "page_size",
            format!(
                "page_size is {}; it must not be negative",
                request.page_size
            ),
        )
    })?;
    Ok(ListStreams {
        prefix: request.prefix,
        page_size,
        page_token: request.page_token,
    })
}

pub fn stream_page(page: StreamPage) -> proto::ListStreamsResponse {
    proto::ListStreamsResponse {
        streams: page
            .streams
            .into_iter()
            .map(|s| proto::StreamSummary {
                stream: s.stream,
                partitions: s.partitions,
            })
            .collect(),
        next_page_token: page.next_page_token.unwrap_or_default(),
    }
}

pub fn stream_description(description: StreamDescription) -> proto::StreamDescription {
    proto::StreamDescription {
        stream: description.stream,
        partitions: description
            .partitions
            .into_iter()
            .map(partition_description)
            .collect(),
        max_chunk_records: description.max_chunk_records,
        epochs: description
            .epochs
            .into_iter()
            .map(|epoch| proto::Epoch {
                from_partitions: epoch.from,
                to_partitions: epoch.to,
                resized_at: Some(timestamp(epoch.at_ms)),
                marker_offsets: epoch.markers,
            })
            .collect(),
    }
}

fn partition_description(partition: PartitionDescription) -> proto::PartitionDescription {
    proto::PartitionDescription {
        index: partition.index,
        partition_stream: partition.stream,
        leader: partition.leader.to_string(),
        replicas: partition.replicas.iter().map(ToString::to_string).collect(),
        first: partition.bounds.map(|b| b.first),
        tail: partition.bounds.map(|b| b.last),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_settings_out_of_range_are_refused_by_name() {
        let refused = |request: proto::CreateStreamRequest| {
            stream_settings(&request).unwrap_err().to_string()
        };
        let message = refused(proto::CreateStreamRequest {
            filter_size_bytes: Some(15),
            ..Default::default()
        });
        assert_eq!(
            message,
            "filter_size_bytes is 15; 16..=255 is allowed (the broker's Bloom filter sizes)"
        );
        let message = refused(proto::CreateStreamRequest {
            max_chunk_records: Some(10_001),
            ..Default::default()
        });
        assert_eq!(message, "max_chunk_records is 10001; 1..=10000 is allowed");
        let fine = proto::CreateStreamRequest {
            filter_size_bytes: Some(255),
            max_chunk_records: Some(1),
            ..Default::default()
        };
        let settings = stream_settings(&fine).unwrap();
        assert_eq!(settings.max_chunk_records, Some(1));
        assert_eq!(settings.filter_size_bytes, Some(255));
    }

    #[test]
    fn every_error_kind_has_its_own_code() {
        let mut pairs: Vec<(Kind, Code)> = Reason::ALL
            .iter()
            .map(|r| (r.kind(), code(r.kind())))
            .collect();
        pairs.sort_by_key(|(_, code)| *code as i32);
        pairs.dedup();
        let mut codes: Vec<Code> = pairs.iter().map(|(_, code)| *code).collect();
        codes.dedup();
        assert_eq!(
            codes.len(),
            pairs.len(),
            "two kinds share a code: {pairs:?}"
        );
        assert_eq!(pairs.len(), 11, "a kind without a reason: {pairs:?}");
    }

    #[test]
    fn a_status_carries_the_reason_the_field_and_when_to_retry() {
        let refused = status(Error::field(
            Reason::NameTooLong,
            "stream",
            "stream name is 300 bytes long",
        ));
        assert_eq!(refused.code(), Code::InvalidArgument);
        assert_eq!(refused.message(), "stream name is 300 bytes long");
        let info = refused.get_details_error_info().unwrap();
        assert_eq!(
            (info.reason.as_str(), info.domain.as_str()),
            ("NAME_TOO_LONG", ERROR_DOMAIN)
        );
        assert_eq!(info.metadata["field"], "stream");
        let violations = refused.get_details_bad_request().unwrap().field_violations;
        assert_eq!(violations[0].field, "stream");
        assert!(refused.get_details_retry_info().is_none());

        let unavailable = status(Error::new(Reason::BrokerUnavailable, "the broker is down"));
        assert_eq!(unavailable.code(), Code::Unavailable);
        assert!(unavailable.get_details_bad_request().is_none());
        let retry = unavailable.get_details_retry_info().unwrap();
        assert_eq!(retry.retry_delay, Some(Duration::from_secs(1)));
    }

    #[test]
    fn durations_reject_negative_values() {
        assert_eq!(
            duration(prost_types::Duration {
                seconds: 3,
                nanos: 5
            }),
            Ok(Duration::new(3, 5))
        );
        assert!(duration(prost_types::Duration {
            seconds: -1,
            nanos: 0
        })
        .is_err());
        assert!(duration(prost_types::Duration {
            seconds: 0,
            nanos: -1
        })
        .is_err());
    }

    #[test]
    fn timestamps_keep_milliseconds() {
        let proto = record(StoredRecord {
            partition: 0,
            offset: 0,
            key: String::new(),
            value: Vec::new().into(),
            headers: Default::default(),
            filter: String::new(),
            timestamp_ms: 1_700_000_000_123,
        });
        let ts = proto.timestamp.unwrap();
        assert_eq!((ts.seconds, ts.nanos), (1_700_000_000, 123_000_000));
    }
}
