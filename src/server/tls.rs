//! TLS on the gRPC listener (`[server.tls]`), with optional mutual TLS.
//!
//! partlog terminates TLS itself (tokio-rustls) instead of through tonic's
//! `ServerTlsConfig` so that certificates can be replaced while it runs:
//! every new connection takes the [`ServerTls`]'s current rustls
//! configuration, which [`ServerTls::reload`] swaps (on SIGHUP or a file
//! change, see [`super::reload`]); connections already open keep theirs.
//!
//! [`incoming`] turns the listener into the connections tonic serves, plain
//! or TLS, each with a [`ConnectionInfo`] in its requests' extensions: the
//! peer's address and, with mutual TLS, its verified certificate chain.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;
use tonic::transport::server::{Connected, TcpIncoming};

use crate::config::ServerTlsConfig;
use crate::pem::{read_certificates, read_private_key, root_store};
use crate::tls_stream::MaybeTls;

/// A client that has not finished its TLS handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The listener's TLS configuration, replaceable while partlog runs.
pub struct ServerTls {
    files: TlsFiles,
    current: RwLock<Arc<ServerConfig>>,
}

/// Where the certificates come from.
#[derive(Debug, Clone)]
struct TlsFiles {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
}

impl ServerTls {
    /// Reads the files of `[server.tls]`; `None` when TLS is off. The error
    /// names the key and file at fault, never what a key file holds.
    pub fn load(config: &ServerTlsConfig) -> Result<Option<ServerTls>, String> {
        if !config.enabled() {
            return Ok(None);
        }
        let files = TlsFiles {
            cert: config.cert_file.clone().into(),
            key: config.key_file.clone().into(),
            client_ca: (!config.client_ca_file.is_empty())
                .then(|| config.client_ca_file.clone().into()),
        };
        let current = RwLock::new(Arc::new(files.server_config()?));
        Ok(Some(ServerTls { files, current }))
    }

    /// True when clients must present a certificate.
    pub fn mutual(&self) -> bool {
        self.files.client_ca.is_some()
    }

    /// The files a change of which calls for [`ServerTls::reload`].
    pub fn files(&self) -> Vec<PathBuf> {
        let files = &self.files;
        [
            Some(&files.cert),
            Some(&files.key),
            files.client_ca.as_ref(),
        ]
        .into_iter()
        .flatten()
        .cloned()
        .collect()
    }

    /// Reads the files again; new connections use them from now on. On an
    /// error the previous configuration stays.
    pub fn reload(&self) -> Result<(), String> {
        let config = Arc::new(self.files.server_config()?);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = config;
        Ok(())
    }

    fn current(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current())
    }
}

impl TlsFiles {
    fn server_config(&self) -> Result<ServerConfig, String> {
        let certs = read_certificates("server.tls.cert_file", &self.cert)?;
        let key = read_private_key("server.tls.key_file", &self.key)?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS set-up: {e}"))?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let roots = root_store("server.tls.client_ca_file", path)?;
                let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .map_err(|e| format!("server.tls.client_ca_file {}: {e}", path.display()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_single_cert(certs, key).map_err(|e| {
            format!(
                "server.tls.cert_file {} and server.tls.key_file {} do not make a \
                 certificate: {e}",
                self.cert.display(),
                self.key.display()
            )
        })?;
        // gRPC is HTTP/2 only; clients such as grpc-go refuse a TLS server
        // that does not select h2 through ALPN.
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(config)
    }
}

/// A connection as tonic serves it: plain TCP or TLS over TCP.
pub type ServerIo = MaybeTls<tokio_rustls::server::TlsStream<TcpStream>>;

/// What partlog knows of a connection; in every request's extensions.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    pub remote_addr: Option<SocketAddr>,
    /// The client's certificate chain (leaf first), verified against
    /// `server.tls.client_ca_file`; `None` without mutual TLS.
    pub peer_certificates: Option<Arc<Vec<CertificateDer<'static>>>>,
}

impl Connected for ServerIo {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> ConnectionInfo {
        match self {
            MaybeTls::Plain(tcp) => ConnectionInfo {
                remote_addr: tcp.peer_addr().ok(),
                peer_certificates: None,
            },
            MaybeTls::Tls(tls) => {
                let (tcp, session) = tls.get_ref();
                ConnectionInfo {
                    remote_addr: tcp.peer_addr().ok(),
                    peer_certificates: session
                        .peer_certificates()
                        .map(|certs| Arc::new(certs.to_vec())),
                }
            }
        }
    }
}

/// The connections of `listener` (TCP_NODELAY set), through TLS when `tls`
/// is given. Handshakes run concurrently, so a slow or silent client holds
/// up no other; one that fails or takes longer than `HANDSHAKE_TIMEOUT` is
/// dropped (logged at debug: a plain-text client, a port scanner, a client
/// without a certificate under mutual TLS).
pub fn incoming(
    listener: TcpListener,
    tls: Option<Arc<ServerTls>>,
) -> impl Stream<Item = io::Result<ServerIo>> + Send + 'static {
    // Without TCP_NODELAY a response's trailers wait for the client's
    // delayed acknowledgement of its body: ~40 ms per call.
    let tcp = TcpIncoming::from(listener).with_nodelay(Some(true));
    match tls {
        None => tcp.map(|tcp| tcp.map(MaybeTls::Plain)).left_stream(),
        Some(tls) => tls_incoming(tcp, tls).right_stream(),
    }
}

fn tls_incoming(
    tcp: TcpIncoming,
    tls: Arc<ServerTls>,
) -> impl Stream<Item = io::Result<ServerIo>> + Send + 'static {
    type Handshakes = JoinSet<(Option<SocketAddr>, Result<ServerIo, String>)>;
    let state = (tcp, Handshakes::new(), tls);
    futures::stream::unfold(state, |(mut tcp, mut handshakes, tls)| async move {
        loop {
            tokio::select! {
                accepted = tcp.next() => match accepted {
                    None => return None,
                    Some(Err(e)) => return Some((Err(e), (tcp, handshakes, tls))),
                    Some(Ok(stream)) => {
                        let acceptor = tls.acceptor();
                        handshakes.spawn(async move {
                            let peer = stream.peer_addr().ok();
                            let handshake = tokio::time::timeout(
                                HANDSHAKE_TIMEOUT,
                                acceptor.accept(stream),
                            );
                            let result = match handshake.await {
                                Ok(Ok(tls)) => Ok(MaybeTls::Tls(Box::new(tls))),
                                Ok(Err(e)) => Err(e.to_string()),
                                Err(_) => Err(format!("no handshake within {HANDSHAKE_TIMEOUT:?}")),
                            };
                            (peer, result)
                        });
                    }
                },
                Some(done) = handshakes.join_next(), if !handshakes.is_empty() => match done {
                    Ok((_, Ok(io))) => return Some((Ok(io), (tcp, handshakes, tls))),
                    Ok((peer, Err(why))) => {
                        tracing::debug!(?peer, %why, "TLS handshake failed");
                    }
                    Err(e) => tracing::warn!(%e, "TLS handshake task failed"),
                },
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::path::Path;

    fn pem_file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    fn config(cert: &Path, key: &Path, client_ca: Option<&Path>) -> ServerTlsConfig {
        ServerTlsConfig {
            cert_file: cert.display().to_string(),
            key_file: key.display().to_string(),
            client_ca_file: client_ca
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        }
    }

    fn self_signed(name: &str) -> rcgen::CertifiedKey<rcgen::KeyPair> {
        rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap()
    }

    #[test]
    fn good_files_load_and_reload() {
        let pair = self_signed("localhost");
        let cert = pem_file(&pair.cert.pem());
        let key = pem_file(&pair.signing_key.serialize_pem());
        let tls = ServerTls::load(&config(cert.path(), key.path(), Some(cert.path())))
            .unwrap()
            .unwrap();
        assert!(tls.mutual());
        assert_eq!(tls.files().len(), 3);
        let before = tls.current();
        tls.reload().unwrap();
        assert!(!Arc::ptr_eq(&before, &tls.current()));
        assert_eq!(tls.current().alpn_protocols, [b"h2".to_vec()]);
    }

    #[test]
    fn bad_files_are_named_and_key_material_is_never_quoted() {
        let pair = self_signed("localhost");
        let other = self_signed("localhost");
        let cert = pem_file(&pair.cert.pem());
        let key_pem = pair.signing_key.serialize_pem();
        let key = pem_file(&key_pem);
        let other_key = pem_file(&other.signing_key.serialize_pem());
        let garbage = pem_file("not a certificate\n");
        // A key file whose base64 is damaged: the message must not quote it.
        let broken_key = pem_file(&key_pem.replace('A', "*"));
        let missing = Path::new("/no/such/cert.pem");

        let cases = [
            (
                config(missing, key.path(), None),
                "server.tls.cert_file /no/such/cert.pem",
            ),
            (
                config(garbage.path(), key.path(), None),
                "holds no PEM certificate",
            ),
            (
                config(cert.path(), garbage.path(), None),
                "holds no PEM private key",
            ),
            (
                config(cert.path(), broken_key.path(), None),
                "server.tls.key_file",
            ),
            (
                config(cert.path(), other_key.path(), None),
                "do not make a certificate",
            ),
            (
                config(cert.path(), key.path(), Some(garbage.path())),
                "server.tls.client_ca_file",
            ),
        ];
        for (config, expected) in cases {
            let Err(err) = ServerTls::load(&config) else {
                panic!("{config:?} loaded");
            };
            assert!(err.contains(expected), "{config:?}: {err}");
            for line in key_pem.lines().filter(|l| !l.starts_with("-----")) {
                assert!(!err.contains(line), "{err} quotes the key");
            }
        }

        let tls = ServerTls::load(&config(cert.path(), key.path(), None))
            .unwrap()
            .unwrap();
        std::fs::write(key.path(), "gone").unwrap();
        // The previous configuration stays in use.
        let before = tls.current();
        assert!(tls.reload().is_err());
        assert!(Arc::ptr_eq(&before, &tls.current()));
    }

    #[test]
    fn no_certificate_means_no_tls() {
        assert!(ServerTls::load(&ServerTlsConfig::default())
            .unwrap()
            .is_none());
    }
}
