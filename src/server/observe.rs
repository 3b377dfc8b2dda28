//! One span and the RPC metrics per call: a tower layer in front of every
//! service, outside authentication, so that refused calls count and log
//! like the others.
//!
//! The span (`rpc`, INFO) carries the method and the peer's address from
//! the start, and the stream (and group) the request names once a handler
//! has decoded it ([`record_target`], called where every handler starts:
//! the authorization check). It is entered while the call's future runs
//! and while its response body is polled, so that every log line of a
//! call, streaming calls included, carries it; work a call hands to a task
//! of its own carries it when that task is spawned in it.
//!
//! Metrics: `partlog_rpc_in_flight` while the call runs; when it ends —
//! its response's `grpc-status`, in the headers of a trailers-only answer
//! or in the trailers after the last message, or CANCELLED when the client
//! went away before — `partlog_rpc_requests_total{method,code}` and
//! `partlog_rpc_duration_seconds{method}`, and a log line at the end of
//! the call: DEBUG for OK and the client's errors, WARN for UNAVAILABLE,
//! ERROR for partlog's own faults (INTERNAL, UNKNOWN, DATA_LOSS).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::LazyLock;
use std::task::{Context, Poll};
use std::time::Instant;

use http_body::{Body, Frame, SizeHint};
use prost::Message as _;
use tonic::codegen::http;
use tonic::{Code, Status};
use tracing::field;
use tracing::Instrument;

use super::auth::principals::Resource;
use super::auth::rpcs::Need;
use super::connections::{CallOnConnection, ConnectionInfo};
use super::convert::status;
use crate::error::{Error, Reason};
use crate::proto::code_name;
use crate::telemetry::{metrics, MethodLabel, RpcLabels};

/// tonic's answer to a path that names no method partlog serves has no
/// details; every error partlog answers carries an ErrorInfo reason.
fn explain_unimplemented(headers: &mut http::HeaderMap) {
    if headers.contains_key("grpc-status-details-bin") {
        return;
    }
    let why = "partlog serves no such method: reflection (`grpcurl list`) or \
               proto/partlog/v1/partlog.proto name the methods of this partlog";
    // Only a status that cannot be encoded fails; the plain one stays.
    let _ = status(Error::new(Reason::MethodUnknown, why)).add_header(headers);
}

/// The `method` label of a path that names no method partlog serves:
/// label values stay bounded whatever clients send.
const UNKNOWN_METHOD: &str = "unknown";

/// The methods of every service on the listener, by path
/// (`/partlog.v1.PartLog/Publish` → `partlog.v1.PartLog/Publish`), read
/// from the services' descriptors: a new RPC is labelled without a change
/// here.
static METHODS: LazyLock<HashMap<String, &'static str>> = LazyLock::new(|| {
    let sets = [
        crate::proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ];
    let mut methods = HashMap::new();
    for set in sets {
        let set = prost_types::FileDescriptorSet::decode(set)
            .expect("the descriptors compiled into partlog decode");
        for file in set.file {
            for service in &file.service {
                for method in &service.method {
                    let name = format!("{}.{}/{}", file.package(), service.name(), method.name());
                    // Once per method of the process: label values live as
                    // long as the registry that holds them.
                    let label: &'static str = Box::leak(name.into_boxed_str());
                    methods.insert(format!("/{label}"), label);
                }
            }
        }
    }
    methods
});

fn method_label(path: &str) -> &'static str {
    METHODS.get(path).copied().unwrap_or(UNKNOWN_METHOD)
}

/// Records the stream (and group) a call's request names in the call's
/// span, each once: a call can need several permissions on one stream
/// (Consume: `read` and `group`), and a field recorded twice is printed
/// twice.
pub fn record_target(needs: &[Need<'_>]) {
    let span = tracing::Span::current();
    let stream = needs.first().map(|need| match need.resource {
        Resource::Stream(stream) | Resource::Group { stream, .. } => stream,
    });
    let group = needs.iter().find_map(|need| match need.resource {
        Resource::Group { group, .. } => Some(group),
        Resource::Stream(_) => None,
    });
    if let Some(stream) = stream {
        span.record("stream", stream);
    }
    if let Some(group) = group {
        span.record("group", group);
    }
}

/// The layer; see the module docs.
#[derive(Clone, Default)]
pub struct ObserveLayer;

impl<S> tower_layer::Layer<S> for ObserveLayer {
    type Service = Observed<S>;

    fn layer(&self, inner: S) -> Observed<S> {
        Observed { inner }
    }
}

/// A service with [`ObserveLayer`] in front.
#[derive(Clone)]
pub struct Observed<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S, B, ResBody> tower_service::Service<http::Request<B>> for Observed<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    ResBody: Body + Unpin + Send + 'static,
{
    type Response = http::Response<ObservedBody<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = method_label(request.uri().path());
        let connection = request.extensions().get::<ConnectionInfo>();
        let peer = connection.and_then(|c| c.remote_addr);
        // The connection is not idle while the call runs.
        let on_connection = connection.map(|c| c.call());
        let span = tracing::info_span!(
            "rpc",
            method,
            peer = field::display(peer.map_or_else(|| "-".to_owned(), |p| p.to_string())),
            stream = field::Empty,
            group = field::Empty,
            principal = field::Empty,
        );
        let mut call = Call::start(method, span.clone(), on_connection);
        // The service that was made ready is the one that is called.
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        // In the span: inner layers may log before their future runs.
        let answered = span.in_scope(|| inner.call(request));
        Box::pin(
            async move {
                let (mut parts, body) = answered.await?.into_parts();
                // A trailers-only answer (an error before any message) has
                // its status in the headers.
                call.status = Status::from_header_map(&parts.headers);
                if call.status.as_ref().map(Status::code) == Some(Code::Unimplemented) {
                    explain_unimplemented(&mut parts.headers);
                }
                if body.is_end_stream() {
                    call.finish();
                }
                Ok(http::Response::from_parts(
                    parts,
                    ObservedBody { inner: body, call },
                ))
            }
            .instrument(span),
        )
    }
}

/// One call's metrics and end-of-call line; finished once, at the latest
/// when dropped.
struct Call {
    method: &'static str,
    started: Instant,
    span: tracing::Span,
    /// The status the response carries, once seen.
    status: Option<Status>,
    finished: bool,
    /// Counts the call on its connection while it lives.
    _on_connection: Option<CallOnConnection>,
}

impl Call {
    fn start(
        method: &'static str,
        span: tracing::Span,
        on_connection: Option<CallOnConnection>,
    ) -> Call {
        metrics()
            .rpc_in_flight
            .get_or_create(&MethodLabel { method })
            .inc();
        Call {
            method,
            started: Instant::now(),
            span,
            status: None,
            finished: false,
            _on_connection: on_connection,
        }
    }

    /// Counts the call with its status; a call that ends without one was
    /// abandoned by its client (CANCELLED).
    fn finish(&mut self) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        let took = self.started.elapsed();
        let method = self.method;
        let status = self
            .status
            .take()
            .unwrap_or_else(|| Status::cancelled("the client went away before the answer"));
        let code = status.code();
        let m = metrics();
        m.rpc_duration
            .get_or_create(&MethodLabel { method })
            .observe(took.as_secs_f64());
        m.rpc_requests
            .get_or_create(&RpcLabels {
                method,
                code: code_name(code),
            })
            .inc();
        // Last: a scrape that no longer sees the call in flight sees it
        // counted.
        m.rpc_in_flight.get_or_create(&MethodLabel { method }).dec();
        let _entered = self.span.enter();
        let code = code_name(code);
        // Milliseconds to the microsecond.
        let ms = took.as_micros() as f64 / 1000.0;
        let error = status.message();
        match status.code() {
            Code::Ok => tracing::debug!(code, ms, "call finished"),
            Code::Internal | Code::Unknown | Code::DataLoss => {
                tracing::error!(code, ms, error, "call failed")
            }
            Code::Unavailable => tracing::warn!(code, ms, error, "call failed"),
            _ => tracing::debug!(code, ms, error, "call failed"),
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.finish();
    }
}

/// A response body that enters the call's span while polled and finishes
/// the call at its trailers, its end, or its drop.
pub struct ObservedBody<B> {
    inner: B,
    call: Call,
}

impl<B: Body + Unpin> Body for ObservedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let polled = {
            let _entered = this.call.span.enter();
            Pin::new(&mut this.inner).poll_frame(cx)
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    this.call.status = Status::from_header_map(trailers);
                    this.call.finish();
                }
            }
            Poll::Ready(None) => this.call.finish(),
            Poll::Ready(Some(Err(_))) | Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_come_from_the_descriptors_and_strangers_share_one_label() {
        assert_eq!(
            method_label("/partlog.v1.PartLog/Publish"),
            "partlog.v1.PartLog/Publish"
        );
        assert_eq!(
            method_label("/grpc.health.v1.Health/Check"),
            "grpc.health.v1.Health/Check"
        );
        assert_eq!(
            method_label("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"),
            "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
        );
        assert_eq!(method_label("/partlog.v1.PartLog/Nope"), UNKNOWN_METHOD);
        assert_eq!(method_label("/x"), UNKNOWN_METHOD);
    }
}
