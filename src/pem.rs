//! Reading PEM files (certificates, private keys, CA bundles) with errors
//! that name the configuration key and the file, and never quote a key.

use std::path::Path;

use tokio_rustls::rustls::pki_types::pem::{self, PemObject};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::RootCertStore;

/// Every certificate of a PEM file; an error names `key` and the file.
pub fn read_certificates(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let display = path.display();
    let bytes = std::fs::read(path).map_err(|e| format!("{key} {display}: cannot read it: {e}"))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{key} {display}: not a PEM certificate file: {e}"))?;
    if certs.is_empty() {
        return Err(format!(
            "{key} {display}: holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
        ));
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1). Errors say what
/// is wrong without quoting the file: it holds a secret.
pub fn read_private_key(key: &str, path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let display = path.display();
    let bytes = std::fs::read(path).map_err(|e| format!("{key} {display}: cannot read it: {e}"))?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
        let why = match e {
            pem::Error::NoItemsFound => {
                "holds no PEM private key (PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)"
            }
            _ => "is not a readable PEM private key",
        };
        format!("{key} {display}: {why}")
    })
}

/// The certificates of a PEM file as trust anchors.
pub fn root_store(key: &str, path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in read_certificates(key, path)? {
        roots
            .add(cert)
            .map_err(|e| format!("{key} {}: unusable CA certificate: {e}", path.display()))?;
    }
    Ok(roots)
}
