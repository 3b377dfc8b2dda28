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
    pub password: String,
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
}

impl BrokerConfig {
    /// Every configured node as (host, port): `host:port` first, then
    /// `other_nodes` (entries that do not parse are left out; validation
    /// rejects them).
    pub fn nodes(&self) -> Vec<(String, u16)> {
        std::iter::once((self.host.clone(), self.port))
            .chain(self.other_nodes.iter().filter_map(|n| parse_node(n).ok()))
            .collect()
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
            password: "guest".into(),
            vhost: "/".into(),
            max_frame_bytes: 4 * 1024 * 1024,
            heartbeat_secs: 60,
            request_timeout_ms: 10_000,
            confirm_timeout_ms: 30_000,
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
                .map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
            merge(&mut table, from_file, path)?;
        }
        apply_env(&mut table, env)?;
        let config: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e| ConfigError(e.to_string()))?;
        config.validate()?;
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
        let l = &self.limits;
        let b = &self.broker;
        let positive = [
            ("limits.max_value_bytes", l.max_value_bytes),
            ("limits.max_batch_records", l.max_batch_records),
            ("limits.max_batch_bytes", l.max_batch_bytes),
            ("limits.max_read_records", u64::from(l.max_read_records)),
            ("limits.max_read_bytes", u64::from(l.max_read_bytes)),
            ("broker.request_timeout_ms", b.request_timeout_ms),
            ("broker.confirm_timeout_ms", b.confirm_timeout_ms),
            ("limits.default_window", u64::from(l.default_window)),
            ("limits.max_window", u64::from(l.max_window)),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(ConfigError(format!("{key} must be greater than 0")));
            }
        }
        if b.host.is_empty() {
            return Err(ConfigError("broker.host must not be empty".into()));
        }
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
fn merge(into: &mut toml::Table, from: toml::Table, path: &Path) -> Result<(), ConfigError> {
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
        for (key, value) in values {
            if !target.contains_key(&key) {
                return Err(ConfigError(format!(
                    "{}: unknown key {section}.{key}",
                    path.display()
                )));
            }
            target.insert(key, value);
        }
    }
    Ok(())
}

/// Applies `PARTLOG_<SECTION>_<KEY>` variables, parsed as the type of the
/// key's default. A variable that names a section but no key of it is
/// rejected (a typo must not silently keep a default); other `PARTLOG_*`
/// variables belong to other tools (the broker script, the test harness).
fn apply_env(table: &mut toml::Table, env: &HashMap<String, String>) -> Result<(), ConfigError> {
    let mut known = Vec::new();
    let mut sections = Vec::new();
    for (section, values) in table.iter_mut() {
        let toml::Value::Table(values) = values else {
            continue;
        };
        sections.push(format!("{ENV_PREFIX}{section}_").to_uppercase());
        for (key, value) in values.iter_mut() {
            let var = format!("{ENV_PREFIX}{section}_{key}").to_uppercase();
            if let Some(raw) = env.get(&var) {
                *value = parse_like(value, raw)
                    .map_err(|why| ConfigError(format!("{var}={raw:?}: {why}")))?;
            }
            known.push(var);
        }
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
    fn values_that_cannot_fit_a_frame_are_rejected() {
        let err =
            Config::load(None, &env(&[("PARTLOG_BROKER_MAX_FRAME_BYTES", "1048576")])).unwrap_err();
        assert!(err.to_string().contains("broker.max_frame_bytes"), "{err}");
    }
}
