//! The listener's security as [`super::run`] wires it: its connections
//! within their limits ([`super::connections`]), TLS ([`super::tls`]),
//! authentication and authorization ([`super::auth`]), and their reloading
//! ([`super::reload`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use futures::Stream;
use tokio::net::TcpListener;

use super::auth::{AuthLayer, Authenticator};
use super::connections::{self, Connection, Connections};
use super::reload::{self, Reload};
use super::tls::ServerTls;
use crate::config::Config;

pub struct Security {
    tls: Option<Arc<ServerTls>>,
    authenticator: Option<Arc<Authenticator>>,
    layer: AuthLayer,
    connections: Arc<Connections>,
}

impl Security {
    /// Reads certificates and the principals file; an error names the key
    /// and file at fault. Logs what protects `listen`, and warns when
    /// that is too little for an address beyond loopback.
    pub fn load(config: &Config, listen: SocketAddr) -> Result<Security, String> {
        let tls = ServerTls::load(&config.server.tls)?.map(Arc::new);
        let authenticator = Authenticator::load(&config.auth)?.map(Arc::new);
        let layer = AuthLayer::new(authenticator.clone(), &config.auth);
        let mutual = tls.as_ref().is_some_and(|t| t.mutual());
        tracing::info!(
            tls = tls.is_some(),
            mutual_tls = mutual,
            authentication = authenticator.is_some(),
            reflection = if authenticator.is_some() {
                config.auth.reflection.as_str()
            } else {
                "open"
            },
            "security"
        );
        if !listen.ip().is_loopback() {
            if authenticator.is_none() {
                tracing::warn!(
                    "partlog accepts calls from anyone who reaches {listen}: writes, deletes and \
                     offset resets included. Set auth.tokens_file (and server.tls) to require \
                     credentials"
                );
            } else if tls.is_none() {
                let why = format!(
                    "bearer tokens would reach {listen} in plain text; set server.tls.cert_file \
                     and server.tls.key_file, listen on loopback, or set auth.allow_plaintext = \
                     true (e.g. behind a proxy that terminates TLS)"
                );
                if !config.auth.allow_plaintext {
                    return Err(why);
                }
                tracing::warn!("{why}");
            }
        }
        if authenticator.is_some() {
            warn_if_others_may_read(&config.auth.tokens_file);
        }
        let limits = connections::Limits::new(&config.server, authenticator.is_some());
        let connections = Connections::new(limits, tls.clone());
        Ok(Security {
            tls,
            authenticator,
            layer,
            connections,
        })
    }

    /// The listener's TLS, as reloaded; `None` without `server.tls`.
    pub fn tls(&self) -> Option<Arc<ServerTls>> {
        self.tls.clone()
    }

    /// The tower layer that authenticates every call.
    pub fn layer(&self) -> AuthLayer {
        self.layer.clone()
    }

    /// The listener's connections, within their limits, through TLS when
    /// configured.
    pub fn incoming(
        &self,
        listener: TcpListener,
    ) -> impl Stream<Item = std::io::Result<Connection>> + Send + 'static {
        self.connections.incoming(listener)
    }

    /// Reloads certificates and principals on SIGHUP and on file changes
    /// until the returned guard is dropped.
    pub fn watch(&self) -> Watcher {
        let mut items: Vec<Arc<dyn Reload>> = Vec::new();
        if let Some(tls) = &self.tls {
            items.push(Arc::new(ListenerTls {
                tls: tls.clone(),
                connections: self.connections.clone(),
            }));
        }
        if let Some(authenticator) = &self.authenticator {
            items.push(authenticator.clone());
        }
        Watcher(reload::spawn(items))
    }
}

/// Warns when the principals file is readable or writable by others than
/// its owner and group: its hashes let anyone who reads it try tokens
/// offline, and anyone who writes it grant themselves anything.
fn warn_if_others_may_read(file: &str) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(file) {
        let mode = meta.permissions().mode();
        if mode & 0o006 != 0 {
            tracing::warn!(
                file,
                mode = format!("{:o}", mode & 0o777),
                "the principals file is readable or writable by other users; chmod o-rw it"
            );
        }
    }
}

/// The listener's certificates as they are reloaded: new connections take
/// them, and open connections whose client certificate the new client CAs
/// no longer verify are closed (a CA removed from
/// `server.tls.client_ca_file` reaches connections already open).
struct ListenerTls {
    tls: Arc<ServerTls>,
    connections: Arc<Connections>,
}

impl Reload for ListenerTls {
    fn what(&self) -> &'static str {
        "server TLS certificates"
    }

    fn files(&self) -> Vec<PathBuf> {
        self.tls.files()
    }

    fn reload(&self) -> Result<(), String> {
        self.tls.reload()?;
        self.connections
            .recheck_certificates(|chain| self.tls.verifies(chain));
        Ok(())
    }
}

/// Stops reloading when dropped.
pub struct Watcher(Option<tokio::task::JoinHandle<()>>);

impl Drop for Watcher {
    fn drop(&mut self) {
        if let Some(task) = &self.0 {
            task.abort();
        }
    }
}
