//! TLS on the gRPC listener (`[server.tls]`), with optional mutual TLS.
//!
//! partlog terminates TLS itself (tokio-rustls) instead of through tonic's
//! `ServerTlsConfig` so that certificates can be replaced while it runs:
//! every new connection takes the [`ServerTls`]'s current rustls
//! configuration, which [`ServerTls::reload`] swaps (on SIGHUP or a file
//! change, see [`super::reload`]); connections already open keep theirs.
//!
//! [`super::connections`] accepts the connections and runs their
//! handshakes with [`ServerTls::acceptor`]; after a reload, it closes the
//! connections whose client certificate the new CAs no longer verify
//! ([`ServerTls::verifies`]).

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::{CertificateDer, UnixTime};
use tokio_rustls::rustls::server::danger::ClientCertVerifier;
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

use crate::config::ServerTlsConfig;
use crate::pem::{read_certificates, read_private_key, root_store};
use crate::tls_stream::MaybeTls;

/// An accepted connection: plain TCP or TLS over TCP.
pub type ServerIo = MaybeTls<tokio_rustls::server::TlsStream<TcpStream>>;

/// The listener's TLS configuration, replaceable while partlog runs.
pub struct ServerTls {
    files: TlsFiles,
    current: RwLock<Arc<Loaded>>,
}

/// One version of the files: the configuration new connections take, and
/// with mutual TLS the verifier of client certificates in it.
struct Loaded {
    config: Arc<ServerConfig>,
    clients: Option<Arc<dyn ClientCertVerifier>>,
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
        let current = RwLock::new(Arc::new(files.load()?));
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
        let loaded = Arc::new(self.files.load()?);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = loaded;
        Ok(())
    }

    fn current(&self) -> Arc<Loaded> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Runs handshakes with the current certificates.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current().config.clone())
    }

    /// Runs handshakes with the current certificates for an HTTP/1.1
    /// listener (the console): ALPN selects http/1.1, not gRPC's h2.
    pub fn http1_acceptor(&self) -> TlsAcceptor {
        let mut config = ServerConfig::clone(&self.current().config);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        TlsAcceptor::from(Arc::new(config))
    }

    /// Whether the current client CAs verify `chain` (leaf first) now;
    /// true without mutual TLS.
    pub fn verifies(&self, chain: &[CertificateDer<'static>]) -> bool {
        let Some(verifier) = self.current().clients.clone() else {
            return true;
        };
        let Some((leaf, intermediates)) = chain.split_first() else {
            return false;
        };
        verifier
            .verify_client_cert(leaf, intermediates, UnixTime::now())
            .is_ok()
    }
}

impl TlsFiles {
    fn load(&self) -> Result<Loaded, String> {
        let certs = read_certificates("server.tls.cert_file", &self.cert)?;
        let key = read_private_key("server.tls.key_file", &self.key)?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS set-up: {e}"))?;
        let clients = match &self.client_ca {
            None => None,
            Some(path) => {
                let roots = root_store("server.tls.client_ca_file", path)?;
                let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .map_err(|e| format!("server.tls.client_ca_file {}: {e}", path.display()))?;
                Some(verifier)
            }
        };
        let builder = match &clients {
            None => builder.with_no_client_auth(),
            Some(verifier) => builder.with_client_cert_verifier(verifier.clone()),
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
        Ok(Loaded {
            config: Arc::new(config),
            clients,
        })
    }
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
        assert_eq!(tls.current().config.alpn_protocols, [b"h2".to_vec()]);
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
