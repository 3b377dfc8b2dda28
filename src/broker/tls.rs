//! How partlog reaches the broker: plain TCP or TLS (`[broker.tls]`), for
//! every connection it opens — the client library's (administration,
//! producers, readers) and its own [`super::protocol::metadata::MetadataConnection`].
//!
//! The client library reads the CA and client files itself on every
//! connection; [`Transport::new`] reads them first, so that a file it could
//! not use stops partlog at start-up with the key and file named (through
//! [`super::Broker::check`]) instead of failing each connection later.

use std::sync::Arc;

use rabbitmq_stream_client::TlsConfiguration;
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig};
use tokio_rustls::TlsConnector;

use crate::config::BrokerTlsConfig;
use crate::error::{Error, Reason, Result};
use crate::pem::{read_certificates, read_private_key, root_store};
use crate::tls_stream::MaybeTls;

/// TLS settings of every broker connection.
pub struct BrokerTls {
    /// For the client library's connections.
    library: TlsConfiguration,
    /// For partlog's own connections.
    connector: TlsConnector,
    /// `broker.tls.server_name`, when set.
    server_name: Option<String>,
}

impl std::fmt::Debug for BrokerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl BrokerTls {
    fn load(config: &BrokerTlsConfig) -> std::result::Result<BrokerTls, String> {
        let ca = std::path::Path::new(&config.ca_file);
        let roots = root_store("broker.tls.ca_file", ca)?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS set-up: {e}"))?
            .with_root_certificates(roots);
        let mut library = TlsConfiguration::builder().add_root_certificates(ca);
        let config_for_partlog = if config.cert_file.is_empty() {
            builder.with_no_client_auth()
        } else {
            let (cert, key) = (&config.cert_file, &config.key_file);
            let certs = read_certificates("broker.tls.cert_file", cert.as_ref())?;
            let private_key = read_private_key("broker.tls.key_file", key.as_ref())?;
            // The client library reads PKCS#8 keys only.
            if !matches!(private_key, PrivateKeyDer::Pkcs8(_)) {
                return Err(format!(
                    "broker.tls.key_file {key}: holds a PKCS#1 or SEC1 key; partlog needs \
                     PKCS#8 (BEGIN PRIVATE KEY): convert it with `openssl pkcs8 -topk8 \
                     -nocrypt -in {key} -out key.pk8.pem`"
                ));
            }
            library = library.add_client_certificates_keys(cert, key);
            builder
                .with_client_auth_cert(certs, private_key)
                .map_err(|e| {
                    format!(
                        "broker.tls.cert_file {cert} and broker.tls.key_file {key} do not make \
                         a certificate: {e}"
                    )
                })?
        };
        let server_name = (!config.server_name.is_empty()).then(|| config.server_name.clone());
        if let Some(name) = &server_name {
            ServerName::try_from(name.as_str()).map_err(|_| {
                format!("broker.tls.server_name {name:?} is not a DNS name or IP address")
            })?;
        }
        Ok(BrokerTls {
            library: library.build().map_err(|e| format!("broker.tls: {e}"))?,
            connector: TlsConnector::from(Arc::new(config_for_partlog)),
            server_name,
        })
    }

    /// The name a node's certificate must carry when partlog connects to
    /// `host`.
    fn server_name(&self, host: &str) -> Result<ServerName<'static>> {
        let name = self.server_name.as_deref().unwrap_or(host);
        ServerName::try_from(name.to_owned()).map_err(|_| {
            Error::new(
                Reason::ConfigurationInvalid,
                format!(
                    "broker host {name:?} is no TLS server name (a DNS name or IP address); set \
                 broker.tls.server_name"
                ),
            )
        })
    }
}

/// Plain or TLS, or why neither: `[broker.tls]` named files partlog could
/// not use (every connection then fails with FAILED_PRECONDITION saying so).
pub struct Transport(std::result::Result<Option<Arc<BrokerTls>>, Error>);

impl Transport {
    pub fn new(config: &BrokerTlsConfig) -> Transport {
        if !config.enabled {
            return Transport(Ok(None));
        }
        Transport(
            BrokerTls::load(config)
                .map(|tls| Some(Arc::new(tls)))
                .map_err(|why| Error::new(Reason::ConfigurationInvalid, why)),
        )
    }

    /// The TLS settings; `None` for plain connections.
    pub fn tls(&self) -> Result<Option<Arc<BrokerTls>>> {
        self.0.clone()
    }

    /// The client library's TLS settings and server name (`Disabled` for
    /// plain connections).
    pub fn library_settings(&self) -> Result<(TlsConfiguration, Option<String>)> {
        Ok(match self.tls()? {
            None => (TlsConfiguration::Disabled, None),
            Some(tls) => (tls.library.clone(), tls.server_name.clone()),
        })
    }
}

/// A connection of partlog's own to a node.
pub type BrokerStream = MaybeTls<tokio_rustls::client::TlsStream<TcpStream>>;

/// Connects to `host:port`, through TLS when `tls` is given (TCP_NODELAY
/// set: requests are small and answered one at a time).
pub async fn connect(host: &str, port: u16, tls: Option<&BrokerTls>) -> Result<BrokerStream> {
    let address = format!("{host}:{port}");
    let tcp = TcpStream::connect(&address).await.map_err(|e| {
        Error::new(
            Reason::BrokerUnavailable,
            format!("cannot connect to the broker at {address}: {e}"),
        )
    })?;
    tcp.set_nodelay(true).ok();
    let Some(tls) = tls else {
        return Ok(MaybeTls::Plain(tcp));
    };
    let stream = tls
        .connector
        .connect(tls.server_name(host)?, tcp)
        .await
        .map_err(|e| {
            // A refused certificate will be refused again: no retrying it.
            let refused = e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                .is_some_and(|e| matches!(e, rustls::Error::InvalidCertificate(_)));
            let why = format!("TLS with the broker at {address} failed: {e}");
            if refused {
                Error::new(
                    Reason::ConfigurationInvalid,
                    format!("{why}; check broker.tls.ca_file and broker.tls.server_name"),
                )
            } else {
                Error::new(Reason::BrokerUnavailable, why)
            }
        })?;
    Ok(MaybeTls::Tls(Box::new(stream)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    fn config(ca: &str, cert: &str, key: &str, server_name: &str) -> BrokerTlsConfig {
        BrokerTlsConfig {
            enabled: true,
            ca_file: ca.into(),
            cert_file: cert.into(),
            key_file: key.into(),
            server_name: server_name.into(),
        }
    }

    #[test]
    fn files_are_checked_before_any_connection() {
        let ca = rcgen::generate_simple_self_signed(vec!["rabbit".into()]).unwrap();
        let ca_file = file(&ca.cert.pem());
        let ca_path = ca_file.path().to_str().unwrap();
        let client_key = file(&ca.signing_key.serialize_pem());
        let key_path = client_key.path().to_str().unwrap();

        assert!(Transport::new(&BrokerTlsConfig::default())
            .tls()
            .unwrap()
            .is_none());
        let tls = Transport::new(&config(ca_path, ca_path, key_path, "rabbit"))
            .tls()
            .unwrap()
            .unwrap();
        assert_eq!(
            tls.server_name("10.0.0.1").unwrap(),
            ServerName::try_from("rabbit").unwrap()
        );
        let plain = Transport::new(&config(ca_path, "", "", ""))
            .tls()
            .unwrap()
            .unwrap();
        assert_eq!(
            plain.server_name("10.0.0.1").unwrap(),
            ServerName::try_from("10.0.0.1").unwrap()
        );

        // An RSA key in PKCS#1 form: the client library could not read it.
        let pkcs1 = "-----BEGIN RSA PRIVATE KEY-----\nMAA=\n-----END RSA PRIVATE KEY-----\n";
        let pkcs1_file = file(pkcs1);
        let cases = [
            (
                config("/no/ca.pem", "", "", ""),
                "broker.tls.ca_file /no/ca.pem",
            ),
            (config(key_path, "", "", ""), "holds no PEM certificate"),
            (config(ca_path, ca_path, ca_path, ""), "broker.tls.key_file"),
            (
                config(ca_path, ca_path, pkcs1_file.path().to_str().unwrap(), ""),
                "PKCS#8",
            ),
            (
                config(ca_path, "", "", "not a name!"),
                "broker.tls.server_name",
            ),
        ];
        for (config, expected) in cases {
            let Err(why) = Transport::new(&config).tls() else {
                panic!("{config:?} loaded");
            };
            assert_eq!(
                why.reason(),
                Reason::ConfigurationInvalid,
                "{config:?}: {why}"
            );
            assert!(why.message().contains(expected), "{config:?}: {why}");
        }
    }
}
