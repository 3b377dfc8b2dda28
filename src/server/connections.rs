//! The listener's connections, within limits.
//!
//! [`Connections::incoming`] accepts TCP connections — at most
//! `server.max_connections` open at once (beyond that the kernel's backlog
//! holds new ones until one closes), backing off and saying so when
//! accepting fails (out of file descriptors: retrying at once would spin)
//! — and hands them to tonic, through TLS when configured. Each
//! [`Connection`] carries its [`ConnectionState`] (peer, client
//! certificate, calls) into every request's extensions, and a watchdog
//! closes it:
//!
//! - when it made no authenticated call within
//!   `server.unauthenticated_timeout_ms` (with authentication on): a client
//!   without credentials holds no descriptor for long, whatever it sends;
//! - when it held no call for `server.idle_timeout_ms`;
//! - after a reload of `server.tls.client_ca_file`, when its client
//!   certificate no longer verifies ([`Connections::recheck_certificates`]).
//!
//! Closing makes the connection read as ended: hyper then closes it and its
//! calls end with it.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::task::AtomicWaker;
use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tonic::transport::server::Connected;

use super::tls::{ServerIo, ServerTls};
use crate::config::ServerConfig;
use crate::sync::lock;
use crate::tls_stream::MaybeTls;

/// A client that has not finished its TLS handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest pause between attempts when accepting fails.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Accept failures are logged at most this often (with their count).
const ACCEPT_LOG_EVERY: Duration = Duration::from_secs(10);

/// The limits of [`Connections`], from `[server]`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub idle_timeout: Duration,
    /// `None` without authentication.
    pub unauthenticated_timeout: Option<Duration>,
}

impl Limits {
    pub fn new(server: &ServerConfig, authenticating: bool) -> Limits {
        Limits {
            max_connections: server.max_connections as usize,
            idle_timeout: Duration::from_millis(server.idle_timeout_ms),
            unauthenticated_timeout: authenticating
                .then(|| Duration::from_millis(server.unauthenticated_timeout_ms)),
        }
    }
}

/// The listener's open connections; one per server.
pub struct Connections {
    limits: Limits,
    tls: Option<Arc<ServerTls>>,
    permits: Arc<Semaphore>,
    open: Mutex<Vec<Weak<ConnectionState>>>,
}

/// What partlog knows of one connection; its requests carry it
/// ([`ConnectionInfo`]).
#[derive(Debug)]
pub struct ConnectionState {
    pub remote_addr: Option<SocketAddr>,
    /// The client's certificate chain (leaf first), verified against
    /// `server.tls.client_ca_file`; `None` without mutual TLS.
    pub peer_certificates: Option<Arc<Vec<CertificateDer<'static>>>>,
    opened: Instant,
    authenticated: AtomicBool,
    /// Calls running on it.
    calls: AtomicUsize,
    /// When its last call ended (or it opened).
    last_call: Mutex<Instant>,
    closed: AtomicBool,
    /// The connection's reader, woken when it is closed.
    reader: AtomicWaker,
}

/// A connection's state in its requests' extensions.
pub type ConnectionInfo = Arc<ConnectionState>;

impl ConnectionState {
    fn new(
        remote_addr: Option<SocketAddr>,
        peer_certificates: Option<Arc<Vec<CertificateDer<'static>>>>,
    ) -> ConnectionState {
        let now = Instant::now();
        ConnectionState {
            remote_addr,
            peer_certificates,
            opened: now,
            authenticated: AtomicBool::new(false),
            calls: AtomicUsize::new(0),
            last_call: Mutex::new(now),
            closed: AtomicBool::new(false),
            reader: AtomicWaker::new(),
        }
    }

    /// The connection of a console call: the browser's, as the audit log
    /// names it, without a client certificate (console callers prove who
    /// they are with a token).
    pub fn of_browser(remote_addr: SocketAddr) -> ConnectionInfo {
        Arc::new(ConnectionState::new(Some(remote_addr), None))
    }

    /// A call on it authenticated: it may stay past the unauthenticated
    /// timeout.
    pub fn authenticated(&self) {
        self.authenticated.store(true, Ordering::Release);
    }

    /// A call begins; it ends when the guard is dropped.
    pub fn call(self: &Arc<Self>) -> CallOnConnection {
        self.calls.fetch_add(1, Ordering::AcqRel);
        CallOnConnection(self.clone())
    }

    /// Ends the connection: it reads as ended from now on.
    fn close(&self, why: &str) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            tracing::debug!(peer = ?self.remote_addr, why, "closing a connection");
            self.reader.wake();
        }
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Why the watchdog closes it now, or when to look again.
    fn verdict(&self, limits: &Limits, now: Instant) -> Result<Instant, &'static str> {
        let mut next = now + limits.idle_timeout;
        if let Some(timeout) = limits.unauthenticated_timeout {
            if !self.authenticated.load(Ordering::Acquire) {
                let deadline = self.opened + timeout;
                if now >= deadline {
                    return Err("it made no authenticated call in time");
                }
                next = next.min(deadline);
            }
        }
        if self.calls.load(Ordering::Acquire) == 0 {
            let deadline = *lock(&self.last_call) + limits.idle_timeout;
            if now >= deadline {
                return Err("it was idle");
            }
            next = next.min(deadline);
        }
        Ok(next)
    }
}

/// One call on a connection, counted while it lives.
pub struct CallOnConnection(Arc<ConnectionState>);

impl Drop for CallOnConnection {
    fn drop(&mut self) {
        *lock(&self.0.last_call) = Instant::now();
        self.0.calls.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Connections {
    pub fn new(limits: Limits, tls: Option<Arc<ServerTls>>) -> Arc<Connections> {
        Arc::new(Connections {
            permits: Arc::new(Semaphore::new(limits.max_connections.max(1))),
            limits,
            tls,
            open: Mutex::new(Vec::new()),
        })
    }

    /// The listener's connections, for tonic (TCP_NODELAY set: without it
    /// a response's trailers wait ~40 ms for the client's delayed
    /// acknowledgement). TLS handshakes run concurrently, so a slow or
    /// silent client holds up no other; one that fails or takes longer than
    /// `HANDSHAKE_TIMEOUT` is dropped (logged at debug: a plain-text
    /// client, a port scanner, a client without a certificate under mutual
    /// TLS).
    pub fn incoming(
        self: &Arc<Self>,
        listener: TcpListener,
    ) -> impl Stream<Item = io::Result<Connection>> + Send + 'static {
        type Handshakes = JoinSet<Option<Connection>>;
        let state = (
            self.clone(),
            listener,
            Handshakes::new(),
            Failures::default(),
        );
        futures::stream::unfold(
            state,
            |(connections, listener, mut handshakes, mut failures)| async move {
                loop {
                    tokio::select! {
                        accepted = connections.accept(&listener, &mut failures) => {
                            let (tcp, permit) = accepted;
                            let Some(tls) = connections.tls.clone() else {
                                let io = MaybeTls::Plain(tcp);
                                let connection = connections.admit(io, permit);
                                return Some((Ok(connection), (connections, listener, handshakes, failures)));
                            };
                            let acceptor = tls.acceptor();
                            let connections = connections.clone();
                            handshakes.spawn(async move {
                                let peer = tcp.peer_addr().ok();
                                let handshake = tokio::time::timeout(
                                    HANDSHAKE_TIMEOUT,
                                    acceptor.accept(tcp),
                                );
                                match handshake.await {
                                    Ok(Ok(tls)) => {
                                        let io = MaybeTls::Tls(Box::new(tls));
                                        Some(connections.admit(io, permit))
                                    }
                                    Ok(Err(e)) => {
                                        tracing::debug!(?peer, %e, "TLS handshake failed");
                                        None
                                    }
                                    Err(_) => {
                                        tracing::debug!(?peer, "no TLS handshake within {HANDSHAKE_TIMEOUT:?}");
                                        None
                                    }
                                }
                            });
                        }
                        Some(done) = handshakes.join_next(), if !handshakes.is_empty() => match done {
                            Ok(Some(connection)) => {
                                return Some((Ok(connection), (connections, listener, handshakes, failures)));
                            }
                            Ok(None) => {}
                            Err(e) => tracing::warn!(%e, "TLS handshake task failed"),
                        },
                    }
                }
            },
        )
    }

    /// The next TCP connection, with its permit: waits for one while
    /// `max_connections` are open, and backs off while accepting fails.
    async fn accept(
        &self,
        listener: &TcpListener,
        failures: &mut Failures,
    ) -> (tokio::net::TcpStream, OwnedSemaphorePermit) {
        let permits = self.permits.clone();
        let permit = match permits.acquire_owned().await {
            Ok(permit) => permit,
            // Never closed: this object holds the semaphore.
            Err(_) => return std::future::pending().await,
        };
        loop {
            match listener.accept().await {
                Ok((tcp, _)) => {
                    failures.succeeded();
                    let _ = tcp.set_nodelay(true);
                    return (tcp, permit);
                }
                Err(e) => tokio::time::sleep(failures.failed(&e)).await,
            }
        }
    }

    /// A new connection, registered and watched.
    fn admit(self: &Arc<Self>, io: ServerIo, permit: OwnedSemaphorePermit) -> Connection {
        let (remote_addr, peer_certificates) = match &io {
            MaybeTls::Plain(tcp) => (tcp.peer_addr().ok(), None),
            MaybeTls::Tls(tls) => {
                let (tcp, session) = tls.get_ref();
                let chain = session
                    .peer_certificates()
                    .map(|certs| Arc::new(certs.to_vec()));
                (tcp.peer_addr().ok(), chain)
            }
        };
        let state = Arc::new(ConnectionState::new(remote_addr, peer_certificates));
        {
            let mut open = lock(&self.open);
            open.retain(|c| c.strong_count() > 0);
            open.push(Arc::downgrade(&state));
        }
        tokio::spawn(watch(Arc::downgrade(&state), self.limits));
        Connection {
            io,
            state,
            _permit: permit,
        }
    }

    /// Closes the connections whose client certificate `verifies` no
    /// longer accepts (after `server.tls.client_ca_file` was reloaded).
    pub fn recheck_certificates(&self, verifies: impl Fn(&[CertificateDer<'static>]) -> bool) {
        let open: Vec<Arc<ConnectionState>> =
            lock(&self.open).iter().filter_map(Weak::upgrade).collect();
        let mut closed = 0;
        for connection in open {
            if let Some(chain) = &connection.peer_certificates {
                if !verifies(chain) {
                    connection.close("its client certificate is no longer trusted");
                    closed += 1;
                }
            }
        }
        if closed > 0 {
            tracing::info!(
                closed,
                "closed connections whose client certificate the reloaded CAs do not trust"
            );
        }
    }
}

/// Closes the connection when it breaks a limit; ends with it.
async fn watch(connection: Weak<ConnectionState>, limits: Limits) {
    loop {
        let verdict = {
            let Some(connection) = connection.upgrade() else {
                return;
            };
            if connection.is_closed() {
                return;
            }
            match connection.verdict(&limits, Instant::now()) {
                Ok(next) => next,
                Err(why) => {
                    connection.close(why);
                    return;
                }
            }
        };
        tokio::time::sleep_until(verdict).await;
    }
}

/// Accept failures in a row: the pause before the next attempt, and
/// rate-limited logging.
#[derive(Default)]
struct Failures {
    in_a_row: u32,
    unlogged: u64,
    logged: Option<Instant>,
}

impl Failures {
    fn failed(&mut self, error: &io::Error) -> Duration {
        self.in_a_row = self.in_a_row.saturating_add(1);
        self.unlogged = self.unlogged.saturating_add(1);
        let pause = Duration::from_millis(10)
            .saturating_mul(2u32.saturating_pow(self.in_a_row.min(7)))
            .min(ACCEPT_BACKOFF_MAX);
        if self
            .logged
            .is_none_or(|at| at.elapsed() >= ACCEPT_LOG_EVERY)
        {
            tracing::warn!(
                error = %error,
                failures = self.unlogged,
                "cannot accept connections (out of file descriptors? see server.max_connections \
                 and the process's descriptor limit); retrying in {pause:?}"
            );
            self.logged = Some(Instant::now());
            self.unlogged = 0;
        }
        pause
    }

    fn succeeded(&mut self) {
        self.in_a_row = 0;
    }
}

/// A connection as tonic serves it; reads as ended once closed.
pub struct Connection {
    io: ServerIo,
    state: Arc<ConnectionState>,
    /// Its place among `server.max_connections`.
    _permit: OwnedSemaphorePermit,
}

impl Connected for Connection {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> ConnectionInfo {
        self.state.clone()
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.state.reader.register(cx.waker());
        if this.state.is_closed() {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.state.is_closed() {
            return Poll::Ready(Err(io::ErrorKind::ConnectionAborted.into()));
        }
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.state.is_closed() {
            return Poll::Ready(Err(io::ErrorKind::ConnectionAborted.into()));
        }
        Pin::new(&mut this.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(unauthenticated: Option<u64>) -> Limits {
        Limits {
            max_connections: 10,
            idle_timeout: Duration::from_secs(60),
            unauthenticated_timeout: unauthenticated.map(Duration::from_secs),
        }
    }

    #[test]
    fn a_connection_without_an_authenticated_call_goes_after_its_grace() {
        let state = Arc::new(ConnectionState::new(None, None));
        let limits = limits(Some(10));
        let start = state.opened;
        assert_eq!(
            state.verdict(&limits, start),
            Ok(start + Duration::from_secs(10))
        );
        let _call = state.call();
        assert_eq!(
            state.verdict(&limits, start + Duration::from_secs(10)),
            Err("it made no authenticated call in time"),
            "a call does not make it authenticated"
        );
        state.authenticated();
        assert!(state
            .verdict(&limits, start + Duration::from_secs(10))
            .is_ok());
    }

    #[test]
    fn a_connection_without_calls_goes_when_idle() {
        let state = Arc::new(ConnectionState::new(None, None));
        let limits = limits(None);
        let start = state.opened;
        let idle = start + Duration::from_secs(60);
        assert_eq!(state.verdict(&limits, idle), Err("it was idle"));
        let call = state.call();
        assert!(state.verdict(&limits, idle).is_ok(), "a call keeps it");
        drop(call);
        let after = *lock(&state.last_call);
        assert_eq!(
            state.verdict(&limits, after),
            Ok(after + Duration::from_secs(60))
        );
    }

    #[test]
    fn accept_failures_back_off_up_to_a_second() {
        let mut failures = Failures::default();
        let error = io::Error::from_raw_os_error(24); // EMFILE
        let pauses: Vec<Duration> = (0..10).map(|_| failures.failed(&error)).collect();
        assert_eq!(pauses[0], Duration::from_millis(20));
        assert!(pauses.windows(2).all(|w| w[0] <= w[1]), "{pauses:?}");
        assert_eq!(*pauses.last().unwrap(), ACCEPT_BACKOFF_MAX);
        failures.succeeded();
        assert_eq!(failures.failed(&error), Duration::from_millis(20));
    }
}
