//! The `/metrics` listener (`metrics.listen`): HTTP/1.1, `GET /metrics`
//! answers every metric in the Prometheus text format; anything else is
//! 404 (or 405 for another method on `/metrics`).
//!
//! Lifetime: [`MetricsServer`] serves until dropped; dropping it stops
//! accepting and ends open connections (the server drops it once partlog
//! has shut down). No authentication: the listener belongs on loopback or
//! a network only the scraper reaches.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::encoding::prometheus_text::CONTENT_TYPE as PROMETHEUS_TEXT;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use super::metrics;

/// A client that has not sent its request's headers by then is dropped.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed accept (e.g. out of file descriptors) before the
/// next.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// Serves `/metrics` until dropped.
pub struct MetricsServer {
    local: SocketAddr,
    task: JoinHandle<()>,
}

impl MetricsServer {
    /// Serves on `listener`; logs `metrics listening local=ADDR`.
    pub fn start(listener: TcpListener) -> std::io::Result<MetricsServer> {
        let local = listener.local_addr()?;
        tracing::info!(%local, "metrics listening");
        Ok(MetricsServer {
            local,
            task: tokio::spawn(accept(listener)),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        // The accept task owns the connections' tasks: aborting it ends them.
        self.task.abort();
    }
}

async fn accept(listener: TcpListener) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve(stream));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics listener cannot accept a connection");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve(stream: TcpStream) {
    let answer = hyper::service::service_fn(|request: Request<Incoming>| async move {
        Ok::<_, Infallible>(answer(&request))
    });
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), answer)
        .await;
    if let Err(e) = served {
        tracing::debug!(error = %e, "metrics connection failed");
    }
}

fn answer<B>(request: &Request<B>) -> Response<Full<Bytes>> {
    if request.uri().path() != "/metrics" {
        return plain(
            StatusCode::NOT_FOUND,
            "partlog serves its metrics at /metrics\n",
        );
    }
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let mut response = Response::new(Full::new(Bytes::from(metrics().encode())));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(PROMETHEUS_TEXT));
    response
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: SocketAddr, request: &str) -> String {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        answer
    }

    #[tokio::test]
    async fn metrics_are_served_at_their_path_only_until_dropped() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = MetricsServer::start(listener).unwrap();
        let addr = server.local_addr();
        let ok = get(
            addr,
            "GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        )
        .await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("text/plain; version=0.0.4"), "{ok}");
        assert!(ok.contains("# TYPE partlog_broker_up gauge"), "{ok}");
        let missing = get(
            addr,
            "GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        )
        .await;
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
        let post = get(
            addr,
            "POST /metrics HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        )
        .await;
        assert!(post.starts_with("HTTP/1.1 405"), "{post}");

        drop(server);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(TcpStream::connect(addr).await.is_err(), "still listening");
    }
}
