//! The console's JSON API under `/api/`. Every route is one or two calls of
//! partlog's own gRPC service, made in process through the gRPC listener's
//! layers with the `authorization` header the page sends (the tab's
//! token): what a token may see and do here is exactly what it may through
//! the API, refused calls included, and the audit log names the browser's
//! address. A gRPC status becomes `{"code", "message", "reason"}` (the
//! reason from a google.rpc.ErrorInfo detail, when there is one) with the
//! fitting HTTP status.
//!
//! Routes (names in the path are percent-encoded):
//!
//! | route | calls |
//! |---|---|
//! | `GET /api/streams[?prefix=P]` | ListStreams (+ records/s from the history) |
//! | `POST /api/streams` `{"stream", "partitions"}` | CreateStream |
//! | `GET /api/streams/S` | DescribeStream, ListGroups (+ rates) |
//! | `DELETE /api/streams/S?confirm=S` | DeleteStream |
//! | `POST /api/streams/S/resize` `{"partitions"}` | ResizeStream |
//! | `GET /api/streams/S/groups/G` | GetOffsets, DescribeGroup (+ the lag history) |
//! | `POST /api/streams/S/groups/G/reset` `{"to", "value", "partitions"}` | ResetOffsets |
//! | `GET /api/streams/S/partitions/P/records?offset=N` or `?time=MS` | Read (Subscribe at the time finds its offset) |
//! | `GET /api/streams/S/partitions/P/tail[?offset=N]` | Subscribe, as newline-delimited JSON |
//!
//! Requests with a body must say `content-type: application/json`, which
//! a page of another origin cannot send without the browser asking first
//! (and the console does not answer CORS), and a request the browser marks
//! `sec-fetch-site: cross-site` is refused: without authentication another
//! site must not drive the console through an operator's browser.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use futures::StreamExt;
use http_body_util::{BodyExt, Limited, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};
use tonic::{Code, Status};
use tonic_types::StatusExt;

use super::history::{Rates, SharedHistory};
use super::{whole, Body};
use crate::proto::start_position::Position;
use crate::proto::{self, code_name};
use crate::server::{console_call, InProcessClient};
use crate::sync::lock;

/// Streams one page of the streams list shows.
const STREAMS_PAGE: i32 = 1000;
/// Records one Read of the records page returns at most, and by default.
const MAX_RECORDS: u32 = 500;
const DEFAULT_RECORDS: u32 = 50;
/// Bytes of keys, values and headers one records page holds at most.
const RECORDS_PAGE_BYTES: u32 = 1024 * 1024;
/// How long a read from a time waits for the first record at or after it.
const TIME_LOOKUP_WAIT: Duration = Duration::from_secs(3);
/// Largest request body (a create or reset).
const MAX_BODY_BYTES: usize = 64 * 1024;
const JSON: &str = "application/json";

/// The routes, over the in-process client and the history.
pub(crate) struct Api {
    client: InProcessClient,
    history: SharedHistory,
    sample_interval: Duration,
}

/// A request the console answers without success: a gRPC status, or its
/// own refusal of a request it cannot make sense of.
#[derive(Debug)]
struct Refusal {
    code: Code,
    message: String,
    reason: Option<String>,
}

impl From<Status> for Refusal {
    fn from(status: Status) -> Refusal {
        Refusal {
            code: status.code(),
            reason: status.get_details_error_info().map(|info| info.reason),
            message: status.message().to_owned(),
        }
    }
}

fn bad_request(message: impl Into<String>) -> Refusal {
    Refusal {
        code: Code::InvalidArgument,
        message: message.into(),
        reason: None,
    }
}

/// The HTTP status that says what a gRPC code says.
fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::InvalidArgument | Code::OutOfRange | Code::FailedPrecondition => {
            StatusCode::BAD_REQUEST
        }
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Cancelled | Code::Unknown | Code::Internal | Code::DataLoss => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

impl Refusal {
    fn json(&self) -> Value {
        let mut error = json!({"code": code_name(self.code), "message": self.message});
        if let Some(reason) = &self.reason {
            error["reason"] = json!(reason);
        }
        error
    }
}

type Answer = Result<Response<Body>, Refusal>;

fn ok(value: Value) -> Answer {
    Ok(whole(StatusCode::OK, JSON, value.to_string()))
}

/// What a route names: a stream, and in it a group or a partition.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Streams,
    Stream(String),
    Resize(String),
    Group(String, String),
    Reset(String, String),
    Records(String, u32),
    Tail(String, u32),
}

impl Route {
    /// The route of `path` (below `/api/`), names percent-decoded.
    fn of(path: &str) -> Option<Route> {
        let names: Vec<String> = path
            .strip_prefix("/api/")?
            .split('/')
            .map(percent_decode)
            .collect::<Option<_>>()?;
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let partition = |p: &str| p.parse::<u32>().ok();
        Some(match names.as_slice() {
            ["streams"] => Route::Streams,
            ["streams", s] => Route::Stream(s.to_string()),
            ["streams", s, "resize"] => Route::Resize(s.to_string()),
            ["streams", s, "groups", g] => Route::Group(s.to_string(), g.to_string()),
            ["streams", s, "groups", g, "reset"] => Route::Reset(s.to_string(), g.to_string()),
            ["streams", s, "partitions", p, "records"] => {
                Route::Records(s.to_string(), partition(p)?)
            }
            ["streams", s, "partitions", p, "tail"] => Route::Tail(s.to_string(), partition(p)?),
            _ => return None,
        })
    }
}

/// `%XX` escapes decoded; `None` for a broken escape or bytes that are
/// not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&byte, after)) = rest.split_first() {
        if byte == b'%' {
            let hex = std::str::from_utf8(after.get(..2)?).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &after[2..];
        } else {
            bytes.push(byte);
            rest = after;
        }
    }
    String::from_utf8(bytes).ok()
}

/// The query's `name=value` pairs, values percent-decoded.
fn query(request: &Request<Incoming>) -> Result<BTreeMap<String, String>, Refusal> {
    let mut pairs = BTreeMap::new();
    for pair in request.uri().query().unwrap_or("").split('&') {
        if pair.is_empty() {
            continue;
        }
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(&value.replace('+', " "))
            .ok_or_else(|| bad_request(format!("query parameter {name} is not encoded right")))?;
        pairs.insert(name.to_owned(), value);
    }
    Ok(pairs)
}

fn number<T: std::str::FromStr>(
    query: &BTreeMap<String, String>,
    name: &str,
) -> Result<Option<T>, Refusal> {
    query
        .get(name)
        .map(|value| {
            value
                .parse()
                .map_err(|_| bad_request(format!("{name} must be a number, not {value:?}")))
        })
        .transpose()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    stream: String,
    partitions: u32,
}

#[derive(Deserialize)]
struct ResizeBody {
    partitions: u32,
}

/// Where a reset moves the group: `to` is `first`, `last`, `offset` or
/// `timestamp` (with `value`, an offset or milliseconds since the epoch).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResetBody {
    to: String,
    value: Option<u64>,
    #[serde(default)]
    partitions: Vec<u32>,
}

impl Api {
    pub(crate) fn new(
        client: InProcessClient,
        history: SharedHistory,
        sample_interval: Duration,
    ) -> Api {
        Api {
            client,
            history,
            sample_interval,
        }
    }

    /// Answers a request below `/api/` from the browser at `peer`.
    pub(crate) async fn answer(
        &self,
        request: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<Body> {
        self.route(request, peer).await.unwrap_or_else(|refusal| {
            whole(http_status(refusal.code), JSON, refusal.json().to_string())
        })
    }

    async fn route(&self, request: Request<Incoming>, peer: SocketAddr) -> Answer {
        let cross_site = request
            .headers()
            .get("sec-fetch-site")
            .is_some_and(|site| site == "cross-site");
        if cross_site {
            return Err(Refusal {
                code: Code::PermissionDenied,
                message: "the console answers its own page only".into(),
                reason: None,
            });
        }
        let route =
            Route::of(request.uri().path()).ok_or_else(|| not_found(request.uri().path()))?;
        let call = Caller {
            authorization: request.headers().get(header::AUTHORIZATION).cloned(),
            peer,
        };
        let query = query(&request)?;
        let mut client = self.client.clone();
        match (request.method().clone(), route) {
            (Method::GET, Route::Streams) => {
                let prefix = query.get("prefix").cloned().unwrap_or_default();
                self.streams(&mut client, &call, prefix).await
            }
            (Method::POST, Route::Streams) => {
                let body: CreateBody = json_body(request).await?;
                let created = client
                    .create_stream(call.of(proto::CreateStreamRequest {
                        stream: body.stream,
                        partitions: body.partitions,
                        ..Default::default()
                    }))
                    .await?
                    .into_inner();
                ok(json!({"stream": created.stream.map(description)}))
            }
            (Method::GET, Route::Stream(stream)) => self.stream(&mut client, &call, stream).await,
            (Method::DELETE, Route::Stream(stream)) => {
                if query.get("confirm") != Some(&stream) {
                    return Err(bad_request(
                        "deleting a stream needs confirm=<the stream's name>",
                    ));
                }
                client
                    .delete_stream(call.of(proto::DeleteStreamRequest { stream }))
                    .await?;
                ok(json!({}))
            }
            (Method::POST, Route::Resize(stream)) => {
                let body: ResizeBody = json_body(request).await?;
                let resized = client
                    .resize_stream(call.of(proto::ResizeStreamRequest {
                        stream,
                        partitions: body.partitions,
                    }))
                    .await?
                    .into_inner();
                ok(json!({"stream": resized.stream.map(description)}))
            }
            (Method::GET, Route::Group(stream, group)) => {
                self.group(&mut client, &call, stream, group).await
            }
            (Method::POST, Route::Reset(stream, group)) => {
                let body: ResetBody = json_body(request).await?;
                let to = reset_position(&body)?;
                let reset = client
                    .reset_offsets(call.of(proto::ResetOffsetsRequest {
                        group,
                        stream,
                        partitions: body.partitions,
                        to: Some(proto::StartPosition { position: Some(to) }),
                    }))
                    .await?
                    .into_inner();
                let results: Vec<Value> = reset
                    .results
                    .iter()
                    .map(|r| json!({"partition": r.partition, "committed": r.committed}))
                    .collect();
                ok(json!({"results": results}))
            }
            (Method::GET, Route::Records(stream, partition)) => {
                records(&mut client, &call, stream, partition, &query).await
            }
            (Method::GET, Route::Tail(stream, partition)) => {
                tail(&mut client, &call, stream, partition, &query).await
            }
            (method, _) => Err(Refusal {
                code: Code::Unimplemented,
                message: format!("{method} is not a method of {}", request.uri().path()),
                reason: None,
            }),
        }
    }

    async fn streams(&self, client: &mut InProcessClient, call: &Caller, prefix: String) -> Answer {
        let page = client
            .list_streams(call.of(proto::ListStreamsRequest {
                prefix,
                page_size: STREAMS_PAGE,
                ..Default::default()
            }))
            .await?
            .into_inner();
        let history = lock(&self.history);
        let streams: Vec<Value> = page
            .streams
            .iter()
            .map(|s| {
                let rates = history
                    .rates(&s.stream)
                    .and_then(|r| r.last())
                    .map(|(_, r)| *r);
                json!({
                    "stream": s.stream,
                    "partitions": s.partitions,
                    "rates": rates,
                })
            })
            .collect();
        ok(json!({"streams": streams, "more": !page.next_page_token.is_empty()}))
    }

    async fn stream(&self, client: &mut InProcessClient, call: &Caller, stream: String) -> Answer {
        let described = client
            .describe_stream(call.of(proto::DescribeStreamRequest {
                stream: stream.clone(),
            }))
            .await?
            .into_inner();
        let groups = client
            .list_groups(call.of(proto::ListGroupsRequest {
                stream: stream.clone(),
            }))
            .await?
            .into_inner()
            .groups;
        let history = lock(&self.history);
        let rates: Vec<Value> = history
            .rates(&stream)
            .into_iter()
            .flat_map(|ring| ring.iter())
            .map(
                |(
                    at,
                    Rates {
                        records_in,
                        records_out,
                    },
                )| {
                    json!({"at_ms": at, "records_in": records_in, "records_out": records_out})
                },
            )
            .collect();
        ok(json!({
            "stream": described.stream.map(description),
            "groups": groups,
            "rates": rates,
        }))
    }

    async fn group(
        &self,
        client: &mut InProcessClient,
        call: &Caller,
        stream: String,
        group: String,
    ) -> Answer {
        let offsets = client
            .get_offsets(call.of(proto::GetOffsetsRequest {
                group: group.clone(),
                stream: stream.clone(),
            }))
            .await?
            .into_inner();
        // Members on every instance, from the broker's management API; the
        // page shows offsets without them when that cannot answer.
        let described = client
            .describe_group(call.of(proto::DescribeGroupRequest {
                group: group.clone(),
                stream: stream.clone(),
            }))
            .await
            .map(|answer| answer.into_inner().partitions);
        let members = |partition: u32| -> Value {
            let Ok(described) = &described else {
                return Value::Null;
            };
            described
                .iter()
                .filter(|row| row.partition == partition)
                .flat_map(|row| &row.members)
                .map(
                    |m| json!({"member": m.member, "connection": m.connection, "active": m.active}),
                )
                .collect()
        };
        let partitions: Vec<Value> = offsets
            .partitions
            .iter()
            .map(|p| {
                let source = proto::OffsetSource::try_from(p.committed_source)
                    .map(|s| s.as_str_name().trim_start_matches("OFFSET_SOURCE_"))
                    .unwrap_or("UNSPECIFIED");
                json!({
                    "partition": p.partition,
                    "committed": p.committed,
                    "committed_source": source,
                    "first": p.first,
                    "tail": p.tail,
                    "lag": p.lag,
                    "active_member": p.active_member,
                    "members": members(p.partition),
                })
            })
            .collect();
        // GetOffsets answered: the caller may see this group's lag.
        let history = lock(&self.history);
        let lag: Vec<Value> = history
            .lag(&(stream, group))
            .into_iter()
            .flat_map(|ring| ring.iter())
            .map(|(at, lags)| json!({"at_ms": at, "lag": lags}))
            .collect();
        ok(json!({
            "partitions": partitions,
            "members_error": described.err().map(|status| status.message().to_owned()),
            "lag_history": lag,
            "sample_interval_ms": self.sample_interval.as_millis() as u64,
        }))
    }
}

fn not_found(path: &str) -> Refusal {
    Refusal {
        code: Code::NotFound,
        message: format!("the console has no API at {path}"),
        reason: None,
    }
}

/// Who a console call is made for: the page's `authorization` header, and
/// the browser's address.
struct Caller {
    authorization: Option<HeaderValue>,
    peer: SocketAddr,
}

impl Caller {
    fn of<T>(&self, message: T) -> tonic::Request<T> {
        console_call(message, self.authorization.as_ref(), self.peer)
    }
}

async fn json_body<T: serde::de::DeserializeOwned>(
    request: Request<Incoming>,
) -> Result<T, Refusal> {
    let is_json = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|t| t.to_str().ok())
        .is_some_and(|t| t.split(';').next() == Some(JSON));
    if !is_json {
        return Err(bad_request(
            "send the request as content-type: application/json",
        ));
    }
    let bytes = Limited::new(request.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|e| bad_request(format!("the request body cannot be read: {e}")))?
        .to_bytes();
    serde_json::from_slice(&bytes).map_err(|e| bad_request(format!("the request body: {e}")))
}

fn reset_position(body: &ResetBody) -> Result<Position, Refusal> {
    let value = || {
        body.value
            .ok_or_else(|| bad_request(format!("a reset to {} needs a value", body.to)))
    };
    Ok(match body.to.as_str() {
        "first" => Position::First(proto::start_position::First {}),
        "last" => Position::Last(proto::start_position::Last {}),
        "offset" => Position::Offset(value()?),
        "timestamp" => Position::Timestamp(timestamp(value()?)),
        other => {
            return Err(bad_request(format!(
                "to must be first, last, offset or timestamp, not {other:?}"
            )))
        }
    })
}

/// Milliseconds since the epoch as a protobuf timestamp.
fn timestamp(millis: u64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: (millis / 1000) as i64,
        nanos: ((millis % 1000) * 1_000_000) as i32,
    }
}

fn description(stream: proto::StreamDescription) -> Value {
    let partitions: Vec<Value> = stream
        .partitions
        .iter()
        .map(|p| {
            json!({
                "index": p.index,
                "partition_stream": p.partition_stream,
                "leader": p.leader,
                "replicas": p.replicas,
                "first": p.first,
                "tail": p.tail,
            })
        })
        .collect();
    let epochs: Vec<Value> = stream
        .epochs
        .iter()
        .map(|e| {
            let at_ms = e
                .resized_at
                .map(|t| t.seconds * 1000 + i64::from(t.nanos / 1_000_000));
            json!({
                "from_partitions": e.from_partitions,
                "to_partitions": e.to_partitions,
                "resized_at_ms": at_ms,
                "marker_offsets": e.marker_offsets,
            })
        })
        .collect();
    json!({
        "stream": stream.stream,
        "partitions": partitions,
        "max_chunk_records": stream.max_chunk_records,
        "epochs": epochs,
    })
}

/// A page of a partition's records from `offset`, or from the first record
/// at or after `time` (milliseconds since the epoch): a Subscribe at that
/// time finds its offset, a Read returns the page.
async fn records(
    client: &mut InProcessClient,
    call: &Caller,
    stream: String,
    partition: u32,
    query: &BTreeMap<String, String>,
) -> Answer {
    let max_records = number::<u32>(query, "max")?
        .unwrap_or(DEFAULT_RECORDS)
        .clamp(1, MAX_RECORDS);
    let offset = match (
        number::<u64>(query, "offset")?,
        number::<u64>(query, "time")?,
    ) {
        (Some(offset), None) => offset,
        (None, Some(time)) => {
            let start = Position::Timestamp(timestamp(time));
            match first_offset_from(client, call, &stream, partition, start).await? {
                Some(offset) => offset,
                None => return ok(json!({"records": [], "markers": [], "next_offset": null})),
            }
        }
        _ => return Err(bad_request("name either offset or time")),
    };
    let read = client
        .read(call.of(proto::ReadRequest {
            stream,
            partition,
            offset,
            max_records,
            max_bytes: RECORDS_PAGE_BYTES,
            ..Default::default()
        }))
        .await?
        .into_inner();
    let records: Vec<Value> = read.records.into_iter().map(record).collect();
    let markers: Vec<Value> = read.markers.iter().map(marker).collect();
    ok(json!({"records": records, "markers": markers, "next_offset": read.next_offset}))
}

/// The offset of the first record a subscription of `partition` at `start`
/// gets within [`TIME_LOOKUP_WAIT`]; `None` when none comes.
async fn first_offset_from(
    client: &mut InProcessClient,
    call: &Caller,
    stream: &str,
    partition: u32,
    start: Position,
) -> Result<Option<u64>, Refusal> {
    let mut events = client
        .subscribe(call.of(proto::SubscribeRequest {
            stream: stream.to_owned(),
            partitions: vec![partition],
            start: Some(proto::StartPosition {
                position: Some(start),
            }),
            window: 1,
            ..Default::default()
        }))
        .await?
        .into_inner();
    let first = tokio::time::timeout(TIME_LOOKUP_WAIT, async {
        while let Some(event) = events.message().await? {
            if let Some(proto::subscribe_response::Event::Record(record)) = event.event {
                return Ok(Some(record.offset));
            }
        }
        Ok::<_, Status>(None)
    })
    .await;
    Ok(first.unwrap_or(Ok(None))?)
}

/// A live tail of one partition from `offset` (or from the next record
/// written): a line of JSON per event, `{"tailing": true}` once the
/// subscription runs, then `{"record": …}` per record and `{"marker": …}`
/// per epoch marker, and `{"error": …}` last if the subscription fails. It
/// ends when the page stops reading.
async fn tail(
    client: &mut InProcessClient,
    call: &Caller,
    stream: String,
    partition: u32,
    query: &BTreeMap<String, String>,
) -> Answer {
    let start = match number::<u64>(query, "offset")? {
        Some(offset) => Position::Offset(offset),
        None => Position::Next(proto::start_position::Next {}),
    };
    let events = client
        .subscribe(call.of(proto::SubscribeRequest {
            stream,
            partitions: vec![partition],
            start: Some(proto::StartPosition {
                position: Some(start),
            }),
            ..Default::default()
        }))
        .await?
        .into_inner();
    let lines = events.filter_map(|event| {
        let line = match event {
            Ok(proto::SubscribeResponse {
                event: Some(proto::subscribe_response::Event::Record(r)),
            }) => Some(json!({"record": record(r)})),
            Ok(proto::SubscribeResponse {
                event: Some(proto::subscribe_response::Event::EpochMarker(m)),
            }) => Some(json!({"marker": marker(&m)})),
            Ok(_) => None,
            Err(status) => Some(json!({"error": Refusal::from(status).json()})),
        };
        futures::future::ready(line)
    });
    let started = futures::stream::iter([json!({"tailing": true})]);
    let frames = started.chain(lines).map(|line| {
        let mut text = line.to_string();
        text.push('\n');
        Ok::<_, Infallible>(Frame::data(Bytes::from(text)))
    });
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(frames)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(response)
}

fn marker(marker: &proto::EpochMarker) -> Value {
    json!({
        "offset": marker.offset,
        "from_partitions": marker.from_partitions,
        "to_partitions": marker.to_partitions,
    })
}

fn record(record: proto::Record) -> Value {
    let timestamp_ms = record
        .timestamp
        .map(|t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000);
    let (kind, text) = shown_value(&record.value);
    json!({
        "partition": record.partition,
        "offset": record.offset,
        "key": record.key,
        "headers": record.headers.into_iter().collect::<BTreeMap<_, _>>(),
        "timestamp_ms": timestamp_ms,
        "filter": record.filter,
        "value": {"kind": kind, "text": text},
    })
}

/// How the page shows a value: a JSON object or array pretty-printed,
/// other UTF-8 as text, anything else as hex.
fn shown_value(value: &[u8]) -> (&'static str, String) {
    let Ok(text) = std::str::from_utf8(value) else {
        let hex: Vec<String> = value.iter().map(|b| format!("{b:02x}")).collect();
        return ("hex", hex.join(" "));
    };
    match serde_json::from_str::<Value>(text) {
        Ok(json @ (Value::Object(_) | Value::Array(_))) => (
            "json",
            serde_json::to_string_pretty(&json).unwrap_or_else(|_| text.to_owned()),
        ),
        _ => ("text", text.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_decode_their_names() {
        assert_eq!(Route::of("/api/streams"), Some(Route::Streams));
        assert_eq!(
            Route::of("/api/streams/a%2Fb%20c"),
            Some(Route::Stream("a/b c".into()))
        );
        assert_eq!(
            Route::of("/api/streams/s/groups/g%C3%A9/reset"),
            Some(Route::Reset("s".into(), "gé".into()))
        );
        assert_eq!(
            Route::of("/api/streams/s/partitions/3/tail"),
            Some(Route::Tail("s".into(), 3))
        );
        assert_eq!(Route::of("/api/streams/s/partitions/x/records"), None);
        assert_eq!(Route::of("/api/streams/%zz"), None);
        assert_eq!(Route::of("/api/streams/%ff"), None, "not UTF-8");
        assert_eq!(Route::of("/api/other"), None);
    }

    #[test]
    fn values_show_as_json_text_or_hex() {
        assert_eq!(
            shown_value(br#"{"a":[1,2]}"#),
            ("json", "{\n  \"a\": [\n    1,\n    2\n  ]\n}".to_owned())
        );
        assert_eq!(shown_value(b"42"), ("text", "42".to_owned()));
        assert_eq!(shown_value(b"hello"), ("text", "hello".to_owned()));
        assert_eq!(
            shown_value(&[0xff, 0x00, 0x1a]),
            ("hex", "ff 00 1a".to_owned())
        );
    }

    #[test]
    fn statuses_keep_their_code_and_reason() {
        let status = Status::with_error_details(
            Code::NotFound,
            "no stream \"x\"",
            tonic_types::ErrorDetails::with_error_info("STREAM_NOT_FOUND", "partlog", []),
        );
        let refusal = Refusal::from(status);
        assert_eq!(http_status(refusal.code), StatusCode::NOT_FOUND);
        assert_eq!(
            refusal.json(),
            json!({"code": "NOT_FOUND", "message": "no stream \"x\"", "reason": "STREAM_NOT_FOUND"})
        );
        let plain = Refusal::from(Status::unauthenticated("no token"));
        assert_eq!(http_status(plain.code), StatusCode::UNAUTHORIZED);
        assert_eq!(
            plain.json(),
            json!({"code": "UNAUTHENTICATED", "message": "no token"})
        );
        assert_eq!(
            http_status(Code::ResourceExhausted),
            StatusCode::TOO_MANY_REQUESTS
        );
    }

    #[test]
    fn resets_name_a_position() {
        let body = |to: &str, value| ResetBody {
            to: to.into(),
            value,
            partitions: vec![],
        };
        assert!(matches!(
            reset_position(&body("first", None)),
            Ok(Position::First(_))
        ));
        assert!(matches!(
            reset_position(&body("offset", Some(7))),
            Ok(Position::Offset(7))
        ));
        let at = reset_position(&body("timestamp", Some(1_700_000_000_123))).unwrap();
        assert_eq!(
            at,
            Position::Timestamp(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 123_000_000
            })
        );
        assert!(reset_position(&body("offset", None)).is_err());
        assert!(reset_position(&body("middle", None)).is_err());
    }
}
