//! Configuration: a TOML file (see `config/partlog.toml`) whose every key can
//! be overridden by an environment variable `PARTLOG_<SECTION>_<KEY>`, e.g.
//! `PARTLOG_BROKER_HOST` or `PARTLOG_LIMITS_MAX_VALUE_BYTES`.
//!
//! Precedence: built-in defaults < file < environment. The result is checked
//! once at start-up by [`Config::validate`]; a bad value stops the server with
//! a message naming the key.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

const ENV_PREFIX: &str = "PARTLOG_";

/// Values of `auth.client_cert_principal`.
pub const CLIENT_CERT_PRINCIPALS: [&str; 4] = ["none", "subject_cn", "san_dns", "san_uri"];

/// Largest number of partitions a super stream may have.
pub const MAX_PARTITIONS: u32 = 256;

/// Space a publish frame needs around one record's value: frame header,
/// AMQP sections, the key and headers allowance.
const FRAME_OVERHEAD_BYTES: u64 = 64 * 1024;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub broker: BrokerConfig,
    pub limits: Limits,
    pub offsets: OffsetsConfig,
    pub auth: AuthConfig,
    pub metrics: MetricsConfig,
    pub console: ConsoleConfig,
    pub log: LogConfig,
}

/// `[metrics]`: Prometheus metrics on a listener of their own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address of the HTTP listener serving `/metrics`; empty: no metrics
    /// listener (and no lag refresh).
    pub listen: String,
    /// How often the lag gauges of the groups this instance knows are
    /// refreshed.
    pub lag_refresh_ms: u64,
    /// Most partitions whose lag one refresh asks the broker about; groups
    /// beyond it are refreshed in later rounds, in turn.
    pub lag_max_partitions: u32,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: "127.0.0.1:9464".into(),
            lag_refresh_ms: 15_000,
            lag_max_partitions: 1_000,
        }
    }
}

impl MetricsConfig {
    pub fn enabled(&self) -> bool {
        !self.listen.is_empty()
    }

    /// The listen address, `None` when metrics are off.
    pub fn listen_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        if !self.enabled() {
            return Ok(None);
        }
        self.listen.parse().map(Some).map_err(|e| {
            ConfigError(format!(
                "metrics.listen = {:?} is not an address like 127.0.0.1:9464 (or empty for no \
                 metrics): {e}",
                self.listen
            ))
        })
    }

    pub fn lag_refresh(&self) -> Duration {
        Duration::from_millis(self.lag_refresh_ms)
    }
}

/// `[console]`: the web console on a listener of its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Address of the console's HTTP listener (HTTPS with `server.tls`);
    /// empty: no console (the default).
    pub listen: String,
    /// How often the console samples records/s and groups' lag for its
    /// charts; it keeps the last 360 samples of each.
    pub sample_interval_ms: u64,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            listen: String::new(),
            sample_interval_ms: 10_000,
        }
    }
}

impl ConsoleConfig {
    /// The listen address, `None` when the console is off.
    pub fn listen_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        if self.listen.is_empty() {
            return Ok(None);
        }
        self.listen.parse().map(Some).map_err(|e| {
            ConfigError(format!(
                "console.listen = {:?} is not an address like 127.0.0.1:8080 (or empty for no \
                 console): {e}",
                self.listen
            ))
        })
    }

    pub fn sample_interval(&self) -> Duration {
        Duration::from_millis(self.sample_interval_ms)
    }
}

/// `[log]`: how `partlog serve` writes its log (the filter is `PARTLOG_LOG`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
}

/// `log.format`: lines for people, or one JSON object per line for
/// collectors.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OffsetsConfig {
    /// Directory of the sled offset store; one per partlog process.
    pub data_dir: String,
    /// Where a group starts in a partition it has never committed.
    pub fallback: Fallback,
}

/// Where a consumer group starts in a partition it has never committed
/// (`offsets.fallback`: "first", "last" or "next").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fallback {
    /// The oldest retained record.
    First,
    /// The last chunk of records.
    Last,
    /// Only records written from now on.
    Next,
}

impl Default for OffsetsConfig {
    fn default() -> Self {
        OffsetsConfig {
            data_dir: "data/offsets".into(),
            fallback: Fallback::First,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address the gRPC server listens on.
    pub listen: String,
    /// Longest time a graceful shutdown waits for in-flight calls.
    pub shutdown_timeout_ms: u64,
    /// Connections open at once at most; more wait in the listen backlog.
    pub max_connections: u64,
    /// Calls (HTTP/2 streams) one connection may have open at once.
    pub max_concurrent_streams: u64,
    /// A connection without a call for this long is closed.
    pub idle_timeout_ms: u64,
    /// With authentication: a connection that made no authenticated call
    /// within this long is closed.
    pub unauthenticated_timeout_ms: u64,
    /// HTTP/2 pings to each client this often; one unanswered within
    /// `keepalive_timeout_ms` closes the connection (a vanished client).
    pub keepalive_interval_ms: u64,
    pub keepalive_timeout_ms: u64,
    /// TLS on the listener; off while `cert_file` is empty.
    pub tls: ServerTlsConfig,
}

/// `[server.tls]`: PEM files, re-read on SIGHUP and when they change.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerTlsConfig {
    /// The server's certificate chain, leaf first; set with `key_file`.
    pub cert_file: String,
    /// The certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: String,
    /// CA certificates that sign client certificates: when set, every
    /// client must present one (mutual TLS).
    pub client_ca_file: String,
}

impl ServerTlsConfig {
    pub fn enabled(&self) -> bool {
        !self.cert_file.is_empty()
    }
}

/// `[auth]`: who may call, and what they may do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// The principals file (names, token hashes, permissions); empty: no
    /// authentication, every caller may do everything.
    pub tokens_file: String,
    /// With mutual TLS: what of a client certificate names its principal
    /// when the call carries no token: "none", "subject_cn", "san_dns" or
    /// "san_uri".
    pub client_cert_principal: String,
    /// Server reflection: "authenticated" (any principal) or "open".
    pub reflection: String,
    /// Calls one principal may start per second (a second's worth at
    /// once); 0: no limit.
    pub calls_per_second: u64,
    /// Bytes of keys, values and headers one principal may publish per
    /// second; 0: no limit.
    pub publish_bytes_per_second: u64,
    /// With tokens, a listener (gRPC without TLS, or metrics) beyond
    /// loopback is refused at start-up unless this is true.
    pub allow_plaintext: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            tokens_file: String::new(),
            client_cert_principal: "none".into(),
            reflection: "authenticated".into(),
            calls_per_second: 0,
            publish_bytes_per_second: 0,
            allow_plaintext: false,
        }
    }
}

impl AuthConfig {
    pub fn enabled(&self) -> bool {
        !self.tokens_file.is_empty()
    }
}

/// A secret configuration value (a password): `Debug` never shows it, so
/// neither does any struct that holds one, nor a log line that prints such
/// a struct.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(value: &str) -> Result<Secret, Self::Err> {
        Ok(Secret::new(value))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// Host of any node of the RabbitMQ cluster (stream protocol).
    pub host: String,
    /// Stream protocol port of that node.
    pub port: u16,
    /// More nodes of the same cluster, "host:port", to administer through
    /// when `host:port` does not answer (in this order). Nodes the
    /// cluster's metadata names are added as partlog learns them.
    pub other_nodes: Vec<String>,
    pub user: String,
    /// Never logged (see [`Secret`]); `password_file` is the safer source.
    pub password: Secret,
    /// A file whose content (without a trailing newline) is the password;
    /// replaces `password`, read at start-up.
    pub password_file: String,
    pub vhost: String,
    /// Largest frame partlog sends; must not exceed the broker's
    /// `stream.frame_max`.
    pub max_frame_bytes: u32,
    /// Stream protocol heartbeat; a dead connection is noticed after about
    /// twice this.
    pub heartbeat_secs: u32,
    /// How long a broker operation (connect, create, metadata) may take
    /// before it fails with UNAVAILABLE.
    pub request_timeout_ms: u64,
    /// How long published records may wait for the broker's confirms before
    /// they fail with UNAVAILABLE (stored or not: retry idempotently).
    pub confirm_timeout_ms: u64,
    /// How long an instance routes records over a stream's partition list
    /// it read from the broker before it reads it again: the write fence
    /// of ResizeStream waits this long (and a quarter more) so that no
    /// instance still routes over the old count. The same on every
    /// instance of a cluster.
    pub routing_lease_ms: u64,
    /// TLS to the broker's stream TLS port, for every connection.
    pub tls: BrokerTlsConfig,
    /// The management HTTP API (RabbitMQ's management plugin), which
    /// ListStreams asks for the super streams (the stream protocol cannot
    /// list them): `http://host:port` or `https://host:port` (verified with
    /// `broker.tls.ca_file`). Empty: `broker.host` on port 15672 (15671,
    /// https, with `broker.tls.enabled`).
    pub management_url: String,
}

/// Where the broker's management HTTP API listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagementAddress {
    pub https: bool,
    pub host: String,
    pub port: u16,
}

/// `[broker.tls]`: TLS for every connection to the broker.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerTlsConfig {
    /// Connect with TLS (to the nodes' stream TLS port, usually 5551).
    pub enabled: bool,
    /// CA certificates that sign the nodes' certificates (required: partlog
    /// never connects without verifying the broker).
    pub ca_file: String,
    /// A client certificate for brokers that ask for one; set with
    /// `key_file`.
    pub cert_file: String,
    /// The client certificate's private key, PKCS#8.
    pub key_file: String,
    /// The name every node's certificate must carry; empty: the host partlog
    /// connects to (`broker.host`, `other_nodes`, or as the node advertises
    /// itself).
    pub server_name: String,
}

impl BrokerConfig {
    /// The management API's address: whether it speaks https, host and
    /// port; `Err` says what is wrong with `management_url`.
    pub fn management(&self) -> Result<ManagementAddress, String> {
        if self.management_url.is_empty() {
            let (https, port) = if self.tls.enabled {
                (true, 15671)
            } else {
                (false, 15672)
            };
            return Ok(ManagementAddress {
                https,
                host: self.host.clone(),
                port,
            });
        }
        let url = self.management_url.trim_end_matches('/');
        let (https, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(format!("{url:?} is not an http:// or https:// URL"));
        };
        if rest.contains('/') || rest.contains('@') {
            return Err(format!("{url:?}: give scheme, host and port only"));
        }
        let default_port = if https { 443 } else { 80 };
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) => {
                let port = port
                    .parse()
                    .map_err(|_| format!("{url:?} has a bad port"))?;
                (host, port)
            }
            None => (rest, default_port),
        };
        if host.is_empty() {
            return Err(format!("{url:?} names no host"));
        }
        Ok(ManagementAddress {
            https,
            host: host.to_owned(),
            port,
        })
    }

    /// Every configured node as (host, port): `host:port` first, then
    /// `other_nodes` (entries that do not parse are left out; validation
    /// rejects them).
    pub fn nodes(&self) -> Vec<(String, u16)> {
        std::iter::once((self.host.clone(), self.port))
            .chain(self.other_nodes.iter().filter_map(|n| parse_node(n).ok()))
            .collect()
    }
}

impl BrokerConfig {
    /// Replaces `password` by the content of `password_file`, if set.
    fn read_password_file(&mut self) -> Result<(), ConfigError> {
        if self.password_file.is_empty() {
            return Ok(());
        }
        if self.password != BrokerConfig::default().password {
            return Err(ConfigError(
                "broker.password and broker.password_file are both set; keep one".into(),
            ));
        }
        let path = &self.password_file;
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError(format!(
                "broker.password_file {path:?}: cannot read it: {e}"
            ))
        })?;
        // Editors and `echo` end files with a newline that is no part of it.
        let password = text.strip_suffix('\n').unwrap_or(&text);
        let password = password.strip_suffix('\r').unwrap_or(password);
        if password.is_empty() {
            return Err(ConfigError(format!(
                "broker.password_file {path:?} is empty"
            )));
        }
        self.password = Secret::new(password);
        Ok(())
    }
}

/// "host:port" → (host, port).
fn parse_node(node: &str) -> Result<(String, u16), String> {
    let (host, port) = node
        .rsplit_once(':')
        .ok_or("is not host:port (e.g. rabbit-2:5552)")?;
    if host.is_empty() {
        return Err("has no host (expected host:port, e.g. rabbit-2:5552)".into());
    }
    let port = port
        .parse()
        .map_err(|_| format!("has no valid port ({port:?}; expected 1-65535)"))?;
    if port == 0 {
        return Err("has port 0 (expected 1-65535)".into());
    }
    Ok((host.to_owned(), port))
}

/// Request limits; a request over a limit fails before anything is written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest record value.
    pub max_value_bytes: u64,
    /// Most records in one Publish.
    pub max_batch_records: u64,
    /// Largest Publish batch: keys, values and headers summed.
    pub max_batch_bytes: u64,
    /// Most records one Read returns.
    pub max_read_records: u32,
    /// Longest wait a Read may ask for.
    pub max_read_wait_ms: u64,
    /// Most bytes of keys, values and headers one Read returns (the first
    /// record always comes, whatever its size).
    pub max_read_bytes: u32,
    /// Records buffered per subscriber when Subscribe names no window.
    pub default_window: u32,
    /// Largest window a subscriber may ask for.
    pub max_window: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:50051".into(),
            shutdown_timeout_ms: 30_000,
            max_connections: 1024,
            max_concurrent_streams: 200,
            idle_timeout_ms: 300_000,
            unauthenticated_timeout_ms: 10_000,
            keepalive_interval_ms: 30_000,
            keepalive_timeout_ms: 20_000,
            tls: ServerTlsConfig::default(),
        }
    }
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            host: "localhost".into(),
            port: 5552,
            other_nodes: Vec::new(),
            user: "guest".into(),
            password: Secret::new("guest"),
            password_file: String::new(),
            vhost: "/".into(),
            max_frame_bytes: 4 * 1024 * 1024,
            heartbeat_secs: 60,
            request_timeout_ms: 10_000,
            confirm_timeout_ms: 30_000,
            routing_lease_ms: 2_000,
            tls: BrokerTlsConfig::default(),
            management_url: String::new(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_value_bytes: 1024 * 1024,
            max_batch_records: 10_000,
            max_batch_bytes: 16 * 1024 * 1024,
            max_read_records: 10_000,
            max_read_wait_ms: 60_000,
            max_read_bytes: 4 * 1024 * 1024,
            default_window: 1_000,
            max_window: 10_000,
        }
    }
}

/// A configuration that cannot be used, with the key at fault.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(String);

impl Config {
    /// Defaults, then `file` if given, then `PARTLOG_*` variables of `env`.
    pub fn load(file: Option<&Path>, env: &HashMap<String, String>) -> Result<Config, ConfigError> {
        let mut table = toml::Table::try_from(Config::default())
            .map_err(|e| ConfigError(format!("cannot serialize defaults: {e}")))?;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
            let from_file: toml::Table = text
                .parse()
                .map_err(|e| ConfigError(syntax_error(path, &text, &e)))?;
            merge(&mut table, from_file, (path, &text))?;
        }
        apply_env(&mut table, env)?;
        let mut config: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e| ConfigError(e.to_string()))?;
        config.validate()?;
        config.broker.read_password_file()?;
        Ok(config)
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.server.listen.parse().map_err(|e| {
            ConfigError(format!(
                "server.listen = {:?} is not an address like 127.0.0.1:50051: {e}",
                self.server.listen
            ))
        })
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        self.metrics.listen_addr()?;
        self.console.listen_addr()?;
        let l = &self.limits;
        let b = &self.broker;
        let positive = [
            ("server.max_connections", self.server.max_connections),
            (
                "server.max_concurrent_streams",
                self.server.max_concurrent_streams,
            ),
            ("server.idle_timeout_ms", self.server.idle_timeout_ms),
            (
                "server.unauthenticated_timeout_ms",
                self.server.unauthenticated_timeout_ms,
            ),
            (
                "server.keepalive_interval_ms",
                self.server.keepalive_interval_ms,
            ),
            (
                "server.keepalive_timeout_ms",
                self.server.keepalive_timeout_ms,
            ),
            ("limits.max_value_bytes", l.max_value_bytes),
            ("limits.max_batch_records", l.max_batch_records),
            ("limits.max_batch_bytes", l.max_batch_bytes),
            ("limits.max_read_records", u64::from(l.max_read_records)),
            ("limits.max_read_bytes", u64::from(l.max_read_bytes)),
            ("broker.request_timeout_ms", b.request_timeout_ms),
            ("broker.confirm_timeout_ms", b.confirm_timeout_ms),
            ("broker.routing_lease_ms", b.routing_lease_ms),
            ("limits.default_window", u64::from(l.default_window)),
            ("limits.max_window", u64::from(l.max_window)),
            ("metrics.lag_refresh_ms", self.metrics.lag_refresh_ms),
            (
                "metrics.lag_max_partitions",
                u64::from(self.metrics.lag_max_partitions),
            ),
            (
                "console.sample_interval_ms",
                self.console.sample_interval_ms,
            ),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(ConfigError(format!("{key} must be greater than 0")));
            }
        }
        if b.host.is_empty() {
            return Err(ConfigError("broker.host must not be empty".into()));
        }
        b.management()
            .map_err(|why| ConfigError(format!("broker.management_url: {why}")))?;
        for node in &b.other_nodes {
            parse_node(node)
                .map_err(|why| ConfigError(format!("broker.other_nodes: {node:?} {why}")))?;
        }
        if l.max_value_bytes + FRAME_OVERHEAD_BYTES > u64::from(b.max_frame_bytes) {
            return Err(ConfigError(format!(
                "limits.max_value_bytes ({}) plus {} bytes of record overhead exceeds \
                 broker.max_frame_bytes ({}); raise broker.max_frame_bytes (and the broker's \
                 stream.frame_max) or lower limits.max_value_bytes",
                l.max_value_bytes, FRAME_OVERHEAD_BYTES, b.max_frame_bytes
            )));
        }
        if l.default_window > l.max_window {
            return Err(ConfigError(format!(
                "limits.default_window ({}) exceeds limits.max_window ({})",
                l.default_window, l.max_window
            )));
        }
        if self.offsets.data_dir.is_empty() {
            return Err(ConfigError("offsets.data_dir must not be empty".into()));
        }
        if l.max_value_bytes > l.max_batch_bytes {
            return Err(ConfigError(format!(
                "limits.max_value_bytes ({}) exceeds limits.max_batch_bytes ({})",
                l.max_value_bytes, l.max_batch_bytes
            )));
        }
        self.validate_security()
    }

    /// The TLS and authentication keys: combinations that cannot work, or
    /// that would silently be less secure than they look.
    fn validate_security(&self) -> Result<(), ConfigError> {
        let tls = &self.server.tls;
        if tls.cert_file.is_empty() != tls.key_file.is_empty() {
            return Err(ConfigError(
                "server.tls.cert_file and server.tls.key_file must be set together".into(),
            ));
        }
        if !tls.client_ca_file.is_empty() && !tls.enabled() {
            return Err(ConfigError(
                "server.tls.client_ca_file (mutual TLS) needs server.tls.cert_file and \
                 server.tls.key_file"
                    .into(),
            ));
        }
        let auth = &self.auth;
        if !CLIENT_CERT_PRINCIPALS.contains(&auth.client_cert_principal.as_str()) {
            return Err(ConfigError(format!(
                "auth.client_cert_principal = {:?}; use one of {}",
                auth.client_cert_principal,
                CLIENT_CERT_PRINCIPALS.join(", ")
            )));
        }
        if auth.client_cert_principal != "none" {
            if tls.client_ca_file.is_empty() {
                return Err(ConfigError(format!(
                    "auth.client_cert_principal = {:?} needs verified client certificates: \
                     set server.tls.client_ca_file",
                    auth.client_cert_principal
                )));
            }
            if !auth.enabled() {
                return Err(ConfigError(
                    "auth.client_cert_principal names principals of auth.tokens_file, \
                     which is not set"
                        .into(),
                ));
            }
        }
        if !["open", "authenticated"].contains(&auth.reflection.as_str()) {
            return Err(ConfigError(format!(
                "auth.reflection = {:?}; use \"open\" or \"authenticated\"",
                auth.reflection
            )));
        }
        let broker = &self.broker.tls;
        if broker.enabled && broker.ca_file.is_empty() {
            return Err(ConfigError(
                "broker.tls.enabled needs broker.tls.ca_file: partlog verifies the broker's \
                 certificate (for a public CA, name the system bundle, e.g. \
                 /etc/ssl/certs/ca-certificates.crt)"
                    .into(),
            ));
        }
        if broker.cert_file.is_empty() != broker.key_file.is_empty() {
            return Err(ConfigError(
                "broker.tls.cert_file and broker.tls.key_file must be set together".into(),
            ));
        }
        let unused = [
            ("broker.tls.ca_file", &broker.ca_file),
            ("broker.tls.cert_file", &broker.cert_file),
            ("broker.tls.server_name", &broker.server_name),
        ];
        if let Some((key, _)) = unused.iter().find(|(_, v)| !v.is_empty()) {
            if !broker.enabled {
                return Err(ConfigError(format!(
                    "{key} is set but broker.tls.enabled is false; enable TLS or remove it"
                )));
            }
        }
        Ok(())
    }

    /// Largest gRPC message the server accepts: a full batch plus protobuf
    /// framing, so that over-limit batches reach partlog's own checks and get
    /// its precise error instead of a transport error.
    pub fn max_grpc_message_bytes(&self) -> usize {
        usize::try_from(self.limits.max_batch_bytes.saturating_mul(2)).unwrap_or(usize::MAX)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.broker.request_timeout_ms)
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_millis(self.server.shutdown_timeout_ms)
    }
}

/// Overlays `from`'s known sections and keys on `into`; unknown ones are an
/// error so that a typo does not silently keep a default.
/// The file a table came from: its path, and its text (to say on which
/// line a key is).
type Source<'a> = (&'a Path, &'a str);

fn merge(into: &mut toml::Table, from: toml::Table, source: Source) -> Result<(), ConfigError> {
    let path = source.0;
    for (section, value) in from {
        let Some(toml::Value::Table(target)) = into.get_mut(&section) else {
            return Err(ConfigError(format!(
                "{}: unknown section [{section}]",
                path.display()
            )));
        };
        let toml::Value::Table(values) = value else {
            return Err(ConfigError(format!(
                "{}: {section} must be a [section]",
                path.display()
            )));
        };
        merge_keys(target, values, &section, source)?;
    }
    Ok(())
}

/// Overlays the keys of one section (`[server]`) or subsection
/// (`[server.tls]`), named `prefix`.
fn merge_keys(
    target: &mut toml::Table,
    values: toml::Table,
    prefix: &str,
    source: Source,
) -> Result<(), ConfigError> {
    let path = source.0;
    for (key, value) in values {
        let name = format!("{prefix}.{key}");
        match (target.get_mut(&key), value) {
            (None, _) => {
                return Err(ConfigError(format!(
                    "{}: unknown key {name}",
                    path.display()
                )))
            }
            (Some(toml::Value::Table(sub)), toml::Value::Table(values)) => {
                merge_keys(sub, values, &name, source)?
            }
            (Some(toml::Value::Table(_)), _) => {
                return Err(ConfigError(format!(
                    "{}: {name} must be a [{name}] section",
                    path.display()
                )))
            }
            // A secret's value never reaches a message, also not through the
            // type check below (toml quotes the value it found).
            (Some(_), value) if is_secret(&key) && !value.is_str() => {
                let line = line_of(source.1, prefix, &key)
                    .map_or(String::new(), |line| format!("line {line}: "));
                return Err(ConfigError(format!(
                    "{}: {line}{name} must be a string (its value is not shown)",
                    path.display()
                )));
            }
            (Some(slot), value) => *slot = value,
        }
    }
    Ok(())
}

/// Applies `PARTLOG_<SECTION>_<KEY>` variables (`PARTLOG_<SECTION>_<SUB>_<KEY>`
/// for a subsection such as `[server.tls]`), parsed as the type of the key's
/// default. A variable that names a section but no key of it is rejected (a
/// typo must not silently keep a default); other `PARTLOG_*` variables
/// belong to other tools (the broker script, the test harness, the CLI).
fn apply_env(table: &mut toml::Table, env: &HashMap<String, String>) -> Result<(), ConfigError> {
    let mut known = Vec::new();
    let mut sections = Vec::new();
    for (section, values) in table.iter_mut() {
        let toml::Value::Table(values) = values else {
            continue;
        };
        let prefix = format!("{ENV_PREFIX}{section}").to_uppercase();
        sections.push(format!("{prefix}_"));
        apply_env_to(values, &prefix, env, &mut known)?;
    }
    let unknown = env
        .keys()
        .find(|var| sections.iter().any(|s| var.starts_with(s.as_str())) && !known.contains(var));
    if let Some(unknown) = unknown {
        return Err(ConfigError(format!(
            "unknown variable {unknown}; known ones are {}",
            known.join(", ")
        )));
    }
    Ok(())
}

/// Applies the variables of one (sub)section whose variables start with
/// `prefix`, and adds their names to `known`.
fn apply_env_to(
    values: &mut toml::Table,
    prefix: &str,
    env: &HashMap<String, String>,
    known: &mut Vec<String>,
) -> Result<(), ConfigError> {
    for (key, value) in values.iter_mut() {
        let var = format!("{prefix}_{key}").to_uppercase();
        if let toml::Value::Table(sub) = value {
            apply_env_to(sub, &var, env, known)?;
            continue;
        }
        if let Some(raw) = env.get(&var) {
            let shown = if is_secret(key) {
                "(not shown)".to_owned()
            } else {
                format!("{raw:?}")
            };
            *value = parse_like(value, raw)
                .map_err(|why| ConfigError(format!("{var}={shown}: {why}")))?;
        }
        known.push(var);
    }
    Ok(())
}

/// Keys whose values are secrets: errors about them name the key, never
/// the value (nor a line of the file that holds it).
const SECRET_KEYS: &[&str] = &["password"];

fn is_secret(key: &str) -> bool {
    SECRET_KEYS.contains(&key)
}

/// The line of `text` that sets `key` in section `[section]` (as a
/// `key = ...` line under the section's header), counted from 1.
fn line_of(text: &str, section: &str, key: &str) -> Option<usize> {
    let mut current = String::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(header) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = header.trim().to_owned();
        } else if current == section {
            let assigns = line
                .strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='));
            if assigns {
                return Some(number + 1);
            }
        }
    }
    None
}

/// A TOML syntax error of the file at `path`: line, column and toml's
/// message, never the line itself (toml's rendering quotes it, and the line
/// may hold a password with a quote missing).
fn syntax_error(path: &Path, text: &str, error: &toml::de::Error) -> String {
    let at = error.span().map(|span| {
        let before = &text[..span.start.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        format!("line {line}, column {column}: ")
    });
    format!(
        "{}: {}{} (the line is not shown: it may hold a secret)",
        path.display(),
        at.unwrap_or_default(),
        error.message().trim_end()
    )
}

fn parse_like(default: &toml::Value, raw: &str) -> Result<toml::Value, String> {
    match default {
        toml::Value::Integer(_) => raw
            .trim()
            .parse::<i64>()
            .map(toml::Value::Integer)
            .map_err(|e| format!("expected an integer: {e}")),
        toml::Value::Boolean(_) => raw
            .trim()
            .parse::<bool>()
            .map(toml::Value::Boolean)
            .map_err(|e| format!("expected true or false: {e}")),
        // Lists come as comma-separated values.
        toml::Value::Array(_) => Ok(toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(|item| toml::Value::String(item.to_owned()))
                .collect(),
        )),
        _ => Ok(toml::Value::String(raw.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn defaults_are_valid() {
        let config = Config::load(None, &env(&[])).unwrap();
        assert_eq!(config, Config::default());
    }

    #[test]
    fn shipped_config_file_equals_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/partlog.toml");
        let config = Config::load(Some(&path), &env(&[])).unwrap();
        assert_eq!(config, Config::default());
    }

    #[test]
    fn file_then_environment_override_defaults() {
        let f =
            file("[broker]\nhost = \"rabbit-1\"\nport = 5553\n[limits]\nmax_batch_records = 5\n");
        let config = Config::load(
            Some(f.path()),
            &env(&[
                ("PARTLOG_BROKER_PORT", "6000"),
                ("PARTLOG_SERVER_LISTEN", "0.0.0.0:1"),
            ]),
        )
        .unwrap();
        assert_eq!(config.broker.host, "rabbit-1");
        assert_eq!(config.broker.port, 6000);
        assert_eq!(config.limits.max_batch_records, 5);
        assert_eq!(config.server.listen, "0.0.0.0:1");
    }

    #[test]
    fn unknown_keys_and_variables_are_rejected() {
        let f = file("[broker]\nhots = \"x\"\n");
        let err = Config::load(Some(f.path()), &env(&[])).unwrap_err();
        assert!(err.to_string().contains("broker.hots"), "{err}");

        let f = file("[brokers]\nhost = \"x\"\n");
        let err = Config::load(Some(f.path()), &env(&[])).unwrap_err();
        assert!(err.to_string().contains("[brokers]"), "{err}");

        let err = Config::load(None, &env(&[("PARTLOG_BROKER_HOTS", "x")])).unwrap_err();
        assert!(err.to_string().contains("PARTLOG_BROKER_HOTS"), "{err}");

        // Variables outside the configuration's sections belong to other tools.
        assert!(Config::load(None, &env(&[("PARTLOG_CACHE_DIR", "/tmp")])).is_ok());
    }

    #[test]
    fn bad_values_name_their_key() {
        let err = Config::load(None, &env(&[("PARTLOG_BROKER_PORT", "many")])).unwrap_err();
        assert!(err.to_string().contains("PARTLOG_BROKER_PORT"), "{err}");

        let err = Config::load(None, &env(&[("PARTLOG_BROKER_PORT", "70000")])).unwrap_err();
        assert!(err.to_string().contains("port"), "{err}");

        let err = Config::load(None, &env(&[("PARTLOG_SERVER_LISTEN", "nowhere")])).unwrap_err();
        assert!(err.to_string().contains("server.listen"), "{err}");

        let err =
            Config::load(None, &env(&[("PARTLOG_LIMITS_MAX_BATCH_RECORDS", "0")])).unwrap_err();
        assert!(
            err.to_string().contains("limits.max_batch_records"),
            "{err}"
        );
    }

    #[test]
    fn other_nodes_come_from_a_list_or_a_comma_separated_variable() {
        let f = file("[broker]\nother_nodes = [\"rabbit-2:5552\", \"10.0.0.3:5553\"]\n");
        let config = Config::load(Some(f.path()), &env(&[])).unwrap();
        assert_eq!(
            config.broker.nodes(),
            [
                ("localhost".to_owned(), 5552),
                ("rabbit-2".to_owned(), 5552),
                ("10.0.0.3".to_owned(), 5553)
            ]
        );

        let config = Config::load(
            Some(f.path()),
            &env(&[("PARTLOG_BROKER_OTHER_NODES", " b:1 ,c:2,")]),
        )
        .unwrap();
        assert_eq!(config.broker.other_nodes, ["b:1", "c:2"]);

        for bad in [
            "rabbit-2",
            ":5552",
            "rabbit-2:",
            "rabbit-2:0",
            "rabbit-2:99999",
        ] {
            let err = Config::load(None, &env(&[("PARTLOG_BROKER_OTHER_NODES", bad)])).unwrap_err();
            assert!(
                err.to_string().contains("broker.other_nodes"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn the_fallback_is_one_of_three_words() {
        let config = Config::load(None, &env(&[("PARTLOG_OFFSETS_FALLBACK", "next")])).unwrap();
        assert_eq!(config.offsets.fallback, Fallback::Next);
        let err = Config::load(None, &env(&[("PARTLOG_OFFSETS_FALLBACK", "middle")])).unwrap_err();
        let err = err.to_string();
        assert!(err.contains("fallback") && err.contains("`first`"), "{err}");
    }

    #[test]
    fn the_console_is_off_unless_it_has_an_address() {
        assert_eq!(Config::default().console.listen_addr().unwrap(), None);
        let config = Config::load(
            None,
            &env(&[
                ("PARTLOG_CONSOLE_LISTEN", "127.0.0.1:8080"),
                ("PARTLOG_CONSOLE_SAMPLE_INTERVAL_MS", "500"),
            ]),
        )
        .unwrap();
        assert_eq!(
            config.console.listen_addr().unwrap(),
            Some("127.0.0.1:8080".parse().unwrap())
        );
        assert_eq!(config.console.sample_interval(), Duration::from_millis(500));
        let err = Config::load(None, &env(&[("PARTLOG_CONSOLE_LISTEN", "8080")])).unwrap_err();
        assert!(err.to_string().contains("console.listen"), "{err}");
        let err =
            Config::load(None, &env(&[("PARTLOG_CONSOLE_SAMPLE_INTERVAL_MS", "0")])).unwrap_err();
        assert!(
            err.to_string().contains("console.sample_interval_ms"),
            "{err}"
        );
    }

    #[test]
    fn metrics_can_be_turned_off_and_logs_written_as_json() {
        let config = Config::load(
            None,
            &env(&[
                ("PARTLOG_METRICS_LISTEN", ""),
                ("PARTLOG_LOG_FORMAT", "json"),
                // The log filter, not a key of [log].
                ("PARTLOG_LOG", "debug"),
            ]),
        )
        .unwrap();
        assert!(!config.metrics.enabled());
        assert_eq!(config.metrics.listen_addr().unwrap(), None);
        assert_eq!(config.log.format, LogFormat::Json);
        let defaults = Config::default();
        assert_eq!(
            defaults.metrics.listen_addr().unwrap(),
            Some("127.0.0.1:9464".parse().unwrap())
        );
        assert_eq!(defaults.log.format, LogFormat::Text);

        let err = Config::load(None, &env(&[("PARTLOG_METRICS_LISTEN", "9464")])).unwrap_err();
        assert!(err.to_string().contains("metrics.listen"), "{err}");
        let err = Config::load(None, &env(&[("PARTLOG_LOG_FORMAT", "xml")])).unwrap_err();
        let err = err.to_string();
        assert!(err.contains("format") && err.contains("`json`"), "{err}");
        let err = Config::load(None, &env(&[("PARTLOG_METRICS_LAG_REFRESH_MS", "0")])).unwrap_err();
        assert!(err.to_string().contains("metrics.lag_refresh_ms"), "{err}");
    }

    #[test]
    fn values_that_cannot_fit_a_frame_are_rejected() {
        let err =
            Config::load(None, &env(&[("PARTLOG_BROKER_MAX_FRAME_BYTES", "1048576")])).unwrap_err();
        assert!(err.to_string().contains("broker.max_frame_bytes"), "{err}");
    }

    #[test]
    fn subsections_come_from_the_file_and_from_variables() {
        let f = file(
            "[server.tls]\ncert_file = \"/c.pem\"\nkey_file = \"/k.pem\"\n\
             [broker.tls]\nenabled = true\nca_file = \"/ca.pem\"\n",
        );
        let config = Config::load(
            Some(f.path()),
            &env(&[
                ("PARTLOG_SERVER_TLS_CLIENT_CA_FILE", "/clients.pem"),
                ("PARTLOG_BROKER_TLS_SERVER_NAME", "rabbit"),
                ("PARTLOG_AUTH_TOKENS_FILE", "/tokens.toml"),
            ]),
        )
        .unwrap();
        assert_eq!(config.server.tls.cert_file, "/c.pem");
        assert_eq!(config.server.tls.client_ca_file, "/clients.pem");
        assert!(config.broker.tls.enabled);
        assert_eq!(config.broker.tls.server_name, "rabbit");
        assert_eq!(config.auth.tokens_file, "/tokens.toml");

        let f = file("[server.tls]\ncert_fiel = \"x\"\n");
        let err = Config::load(Some(f.path()), &env(&[])).unwrap_err();
        assert!(err.to_string().contains("server.tls.cert_fiel"), "{err}");
        let f = file("[server]\ntls = \"on\"\n");
        let err = Config::load(Some(f.path()), &env(&[])).unwrap_err();
        assert!(err.to_string().contains("[server.tls]"), "{err}");
        let err = Config::load(None, &env(&[("PARTLOG_SERVER_TLS_CERT", "x")])).unwrap_err();
        assert!(err.to_string().contains("PARTLOG_SERVER_TLS_CERT"), "{err}");
    }

    #[test]
    fn security_settings_that_cannot_work_are_rejected() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[("PARTLOG_SERVER_TLS_CERT_FILE", "c")],
                "server.tls.key_file",
            ),
            (
                &[("PARTLOG_SERVER_TLS_CLIENT_CA_FILE", "ca")],
                "server.tls.client_ca_file",
            ),
            (
                &[("PARTLOG_AUTH_CLIENT_CERT_PRINCIPAL", "cn")],
                "auth.client_cert_principal",
            ),
            (
                &[
                    ("PARTLOG_AUTH_CLIENT_CERT_PRINCIPAL", "subject_cn"),
                    ("PARTLOG_AUTH_TOKENS_FILE", "t"),
                ],
                "server.tls.client_ca_file",
            ),
            (
                &[
                    ("PARTLOG_SERVER_TLS_CERT_FILE", "c"),
                    ("PARTLOG_SERVER_TLS_KEY_FILE", "k"),
                    ("PARTLOG_SERVER_TLS_CLIENT_CA_FILE", "ca"),
                    ("PARTLOG_AUTH_CLIENT_CERT_PRINCIPAL", "san_dns"),
                ],
                "auth.tokens_file",
            ),
            (&[("PARTLOG_AUTH_REFLECTION", "closed")], "auth.reflection"),
            (
                &[("PARTLOG_BROKER_TLS_ENABLED", "true")],
                "broker.tls.ca_file",
            ),
            (
                &[("PARTLOG_BROKER_TLS_CA_FILE", "ca")],
                "broker.tls.enabled",
            ),
            (
                &[
                    ("PARTLOG_BROKER_TLS_ENABLED", "true"),
                    ("PARTLOG_BROKER_TLS_CA_FILE", "ca"),
                    ("PARTLOG_BROKER_TLS_KEY_FILE", "k"),
                ],
                "broker.tls.cert_file",
            ),
        ];
        for (vars, key) in cases {
            let err = Config::load(None, &env(vars)).unwrap_err();
            assert!(err.to_string().contains(key), "{vars:?}: {err}");
        }
        let secure = env(&[
            ("PARTLOG_SERVER_TLS_CERT_FILE", "c"),
            ("PARTLOG_SERVER_TLS_KEY_FILE", "k"),
            ("PARTLOG_SERVER_TLS_CLIENT_CA_FILE", "ca"),
            ("PARTLOG_AUTH_TOKENS_FILE", "t"),
            ("PARTLOG_AUTH_CLIENT_CERT_PRINCIPAL", "subject_cn"),
            ("PARTLOG_AUTH_REFLECTION", "open"),
            ("PARTLOG_BROKER_TLS_ENABLED", "true"),
            ("PARTLOG_BROKER_TLS_CA_FILE", "ca"),
            ("PARTLOG_BROKER_TLS_SERVER_NAME", "rabbit"),
        ]);
        Config::load(None, &secure).unwrap();
    }

    /// Issue 17: a broken or mistyped password in the file never reaches
    /// the error (toml quotes the offending line, or the value it found).
    #[test]
    fn configuration_errors_never_show_the_password() {
        for text in [
            "[broker]\npassword = \"Hunter2-s3cret\n",
            "[broker]\npassword = 4242424242\n",
            "[broker]\npassword = [\"Hunter2-s3cret\"]\n",
            "[broker]\npassword = \"Hunter2-s3cret\"\nhost = \n",
            "[broker]\npassword = 'Hunter2-s3cret\nport = 1\n",
        ] {
            let f = file(text);
            let err = Config::load(Some(f.path()), &HashMap::new())
                .unwrap_err()
                .to_string();
            assert!(
                !err.contains("Hunter2") && !err.contains("4242424242"),
                "{err}"
            );
            assert!(err.contains("line "), "says where: {err}");
        }
        let f = file("[broker]\npassword = 4242424242\n");
        let err = Config::load(Some(f.path()), &HashMap::new()).unwrap_err();
        assert!(
            err.to_string().contains("broker.password must be a string"),
            "{err}"
        );
    }

    #[test]
    fn the_password_comes_from_its_file_and_is_never_printed() {
        let f = file("s3cret-from-file\n");
        let config = Config::load(
            None,
            &env(&[("PARTLOG_BROKER_PASSWORD_FILE", f.path().to_str().unwrap())]),
        )
        .unwrap();
        assert_eq!(config.broker.password.expose(), "s3cret-from-file");
        let printed = format!("{config:?} {:?}", config.broker);
        assert!(!printed.contains("s3cret"), "{printed}");
        assert!(printed.contains("<redacted>"), "{printed}");

        let config =
            Config::load(None, &env(&[("PARTLOG_BROKER_PASSWORD", "env-s3cret")])).unwrap();
        assert_eq!(config.broker.password.expose(), "env-s3cret");
        assert!(!format!("{config:?}").contains("env-s3cret"));

        let err = Config::load(
            None,
            &env(&[
                ("PARTLOG_BROKER_PASSWORD", "env-s3cret"),
                ("PARTLOG_BROKER_PASSWORD_FILE", f.path().to_str().unwrap()),
            ]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("both set"), "{err}");
        assert!(!err.to_string().contains("s3cret"), "{err}");

        let err = Config::load(
            None,
            &env(&[("PARTLOG_BROKER_PASSWORD_FILE", "/no/such/file")]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("/no/such/file"), "{err}");
        let empty = file("\n");
        let err = Config::load(
            None,
            &env(&[(
                "PARTLOG_BROKER_PASSWORD_FILE",
                empty.path().to_str().unwrap(),
            )]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("is empty"), "{err}");
    }
}
