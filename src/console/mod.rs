//! The web console (`console.listen`): a single page (`assets/`, built into
//! the binary) and its JSON API ([`api`]) on an HTTP/1.1 listener of its
//! own, HTTPS with the certificate of `server.tls` when that is set.
//!
//! Why not the gRPC port: browsers cannot make gRPC calls (HTTP/2 trailers),
//! gRPC-Web would need a protobuf runtime in the page, and a listener of
//! its own leaves the data-plane port's protocol and mutual TLS policy
//! untouched and can be bound to an operator network.
//!
//! The API calls partlog's own gRPC service in process, with the token the
//! page sends, so that authentication, permissions, rate limits and the
//! audit log are the API's by construction. [`history`] keeps the last
//! hour of records/s and lag in memory for the charts.
//!
//! Lifetime: [`Console`] serves until dropped (as the metrics listener);
//! dropping it stops accepting and ends open connections.

pub(crate) mod api;
pub(crate) mod history;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use crate::server::tls::ServerTls;
use api::Api;

/// A client that has not sent its request's headers by then is dropped.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A TLS handshake that takes longer is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed accept (e.g. out of file descriptors) before the
/// next.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);
/// Connections served at once; more are closed at once. A few browser
/// tabs of operators need a few dozen (live tails hold one each).
const MAX_CONNECTIONS: usize = 256;

/// Every answer's body: whole, or a stream (the live tail).
pub(crate) type Body = BoxBody<Bytes, Infallible>;

/// The page, its script and its style, as built into the binary.
const ASSETS: [(&str, &str, &str); 3] = [
    (
        "/",
        "text/html; charset=utf-8",
        include_str!("assets/index.html"),
    ),
    (
        "/console.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/console.js"),
    ),
    (
        "/console.css",
        "text/css; charset=utf-8",
        include_str!("assets/console.css"),
    ),
];

/// Only the console's own files run and are fetched: no inline script, no
/// other origin, no framing.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// Serves the console until dropped.
pub struct Console {
    task: JoinHandle<()>,
}

impl Console {
    /// Serves on `listener`, through TLS when `tls` is set; logs `console
    /// listening local=ADDR`.
    pub(crate) fn start(
        listener: TcpListener,
        tls: Option<Arc<ServerTls>>,
        api: Api,
    ) -> std::io::Result<Console> {
        let local = listener.local_addr()?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        tracing::info!(%local, scheme, "console listening");
        Ok(Console {
            task: tokio::spawn(accept(listener, tls, Arc::new(api))),
        })
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        // The accept task owns the connections' tasks: aborting it ends them.
        self.task.abort();
    }
}

async fn accept(listener: TcpListener, tls: Option<Arc<ServerTls>>, api: Arc<Api>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) if connections.len() < MAX_CONNECTIONS => {
                    connections.spawn(connection(stream, peer, tls.clone(), api.clone()));
                }
                Ok((_, peer)) => {
                    tracing::warn!(%peer, "console connection refused: {MAX_CONNECTIONS} are open");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "console listener cannot accept a connection");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<Arc<ServerTls>>,
    api: Arc<Api>,
) {
    let Some(tls) = tls else {
        return serve(stream, peer, api).await;
    };
    let handshake = tls.http1_acceptor().accept(stream);
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
        Ok(Ok(stream)) => serve(stream, peer, api).await,
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "console TLS handshake failed"),
        Err(_) => tracing::debug!(%peer, "console TLS handshake timed out"),
    }
}

async fn serve(
    stream: impl AsyncRead + AsyncWrite + Unpin + Send + 'static,
    peer: SocketAddr,
    api: Arc<Api>,
) {
    let answer = hyper::service::service_fn(move |request: Request<Incoming>| {
        let api = api.clone();
        async move { Ok::<_, Infallible>(secured(answer(&api, request, peer).await)) }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), answer)
        .await;
    if let Err(e) = served {
        tracing::debug!(%peer, error = %e, "console connection failed");
    }
}

async fn answer(api: &Api, request: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    let path = request.uri().path();
    if path.starts_with("/api/") {
        return api.answer(request, peer).await;
    }
    let Some((_, content_type, text)) = ASSETS.iter().find(|(at, _, _)| *at == path) else {
        return whole(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found\n",
        );
    };
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        let mut response = whole(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "use GET\n",
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    whole(StatusCode::OK, content_type, *text)
}

/// A whole answer of `text`.
pub(crate) fn whole(
    status: StatusCode,
    content_type: &'static str,
    text: impl Into<Bytes>,
) -> Response<Body> {
    let mut response = Response::new(Full::new(text.into()).boxed());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Every answer: never cached (it may hold records, and the page must
/// match the binary), never sniffed or framed, and no referrer.
fn secured(mut response: Response<Body>) -> Response<Body> {
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CACHE_CONTROL, "no-store"),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}
