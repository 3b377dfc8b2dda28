//! The listener's security as [`super::run`] wires it: TLS ([`super::tls`]),
//! authentication and authorization ([`super::auth`]), and their reloading
//! ([`super::reload`]).

use std::net::SocketAddr;
use std::sync::Arc;

use futures::Stream;
use tokio::net::TcpListener;

use super::auth::{AuthLayer, Authenticator};
use super::reload::{self, Reload};
use super::tls::{self, ServerIo, ServerTls};
use crate::config::Config;

pub struct Security {
    tls: Option<Arc<ServerTls>>,
    authenticator: Option<Arc<Authenticator>>,
    layer: AuthLayer,
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
                tracing::warn!(
                    "bearer tokens reach {listen} in plain text; set server.tls.cert_file and \
                     server.tls.key_file"
                );
            }
        }
        Ok(Security {
            tls,
            authenticator,
            layer,
        })
    }

    /// The tower layer that authenticates every call.
    pub fn layer(&self) -> AuthLayer {
        self.layer.clone()
    }

    /// The listener's connections, through TLS when configured.
    pub fn incoming(
        &self,
        listener: TcpListener,
    ) -> impl Stream<Item = std::io::Result<ServerIo>> + Send + 'static {
        tls::incoming(listener, self.tls.clone())
    }

    /// Reloads certificates and principals on SIGHUP and on file changes
    /// until the returned guard is dropped.
    pub fn watch(&self) -> Watcher {
        let mut items: Vec<Arc<dyn Reload>> = Vec::new();
        if let Some(tls) = &self.tls {
            items.push(tls.clone());
        }
        if let Some(authenticator) = &self.authenticator {
            items.push(authenticator.clone());
        }
        Watcher(reload::spawn(items))
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
