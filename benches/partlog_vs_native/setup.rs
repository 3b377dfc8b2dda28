//! What a run stands on: the broker, a partlog server process, clients of
//! both, and fresh super streams.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use partlog::proto::part_log_client::PartLogClient;
use partlog::proto::{CreateStreamRequest, DeleteStreamRequest, DescribeStreamRequest};
use rabbitmq_stream_client::{Client, ClientOptions, Environment};
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T> = std::result::Result<T, Error>;

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// gRPC messages of up to this size: a Read answers up to 4 MiB.
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// The broker's stream endpoint and, when it runs on this machine, its
/// process.
pub struct Broker {
    pub host: String,
    pub port: u16,
    /// The process serving the stream port, when local; looked up again
    /// when it ends (the broker was restarted).
    pid: Mutex<Option<u32>>,
    local: bool,
    pub version: String,
}

impl Broker {
    /// `--broker host:port`, or the local broker that scripts/rabbitmq.sh
    /// starts or reuses.
    pub async fn connect(address: Option<&str>) -> Result<Broker> {
        let (host, port) = match address {
            Some(address) => {
                let (host, port) = address
                    .rsplit_once(':')
                    .ok_or_else(|| format!("--broker {address:?}: expected HOST:PORT"))?;
                (host.to_owned(), port.parse()?)
            }
            None => {
                let status = Command::new(Path::new(REPO).join("scripts/rabbitmq.sh"))
                    .arg("start")
                    .status()?;
                if !status.success() {
                    return Err("scripts/rabbitmq.sh start failed".into());
                }
                ("localhost".to_owned(), 5552)
            }
        };
        let client = Client::connect(ClientOptions::builder().host(&host).port(port).build())
            .await
            .map_err(|e| format!("cannot reach the broker at {host}:{port}: {e}"))?;
        let version = client
            .server_properties()
            .await
            .get("version")
            .cloned()
            .unwrap_or_else(|| "unknown".into());
        let _ = client.close().await;
        let local = matches!(host.as_str(), "localhost" | "127.0.0.1" | "::1");
        let broker = Broker {
            host,
            port,
            pid: Mutex::new(None),
            local,
            version,
        };
        broker.pid();
        Ok(broker)
    }

    /// The broker's process, if it runs on this machine.
    pub fn pid(&self) -> Option<u32> {
        if !self.local {
            return None;
        }
        let mut pid = self.pid.lock().unwrap();
        let running = pid.is_some_and(|p| std::path::Path::new(&format!("/proc/{p}")).exists());
        if !running {
            *pid = crate::procfs::listener_pid(self.port);
        }
        *pid
    }

    pub async fn environment(&self) -> Result<Environment> {
        Ok(Environment::builder()
            .host(&self.host)
            .port(self.port)
            .build()
            .await?)
    }

    /// A connection of its own for one administrative step: the client
    /// library's frame decoder can fail on long-lived connections, so none
    /// is kept.
    pub async fn admin_client(&self) -> Result<Client> {
        Ok(Client::connect(
            ClientOptions::builder()
                .host(&self.host)
                .port(self.port)
                .build(),
        )
        .await?)
    }

    /// The offset a named consumer stored on a partition stream, if any.
    pub async fn stored_offset(&self, name: &str, partition_stream: &str) -> Result<Option<u64>> {
        let client = self.admin_client().await?;
        let offset = client.query_offset(name.to_owned(), partition_stream).await;
        let _ = client.close().await;
        Ok(offset.ok())
    }
}

/// Settings of a stream a line creates beyond its partitions.
#[derive(Debug, Clone, Copy, Default)]
pub struct StreamSettings {
    pub max_chunk_records: Option<u32>,
    pub filter_size_bytes: Option<u32>,
}

/// The partlog server under test: started here (release build, its own
/// offset store and port) or given with --partlog.
pub struct Partlog {
    pub url: String,
    pub pid: Option<u32>,
    /// Where its `/metrics` are served; `None`: unknown (a --partlog
    /// without --partlog-metrics).
    pub metrics_addr: Option<String>,
    child: Option<Child>,
    log_path: Option<PathBuf>,
    _dir: Option<tempfile::TempDir>,
}

impl Partlog {
    /// Starts partlog against `broker` with the routing lease
    /// `routing_lease_ms`.
    pub async fn start(broker: &Broker, routing_lease_ms: u64) -> Result<Partlog> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let metrics_addr = format!(
            "127.0.0.1:{}",
            TcpListener::bind("127.0.0.1:0")?.local_addr()?.port()
        );
        let dir = tempfile::tempdir()?;
        let log_path = dir.path().join("partlog.log");
        let child = Command::new(env!("CARGO_BIN_EXE_partlog"))
            .arg("serve")
            .env("PARTLOG_SERVER_LISTEN", format!("127.0.0.1:{port}"))
            .env("PARTLOG_METRICS_LISTEN", &metrics_addr)
            .env("PARTLOG_OFFSETS_DATA_DIR", dir.path().join("offsets"))
            .env("PARTLOG_BROKER_HOST", &broker.host)
            .env("PARTLOG_BROKER_PORT", broker.port.to_string())
            .env(
                "PARTLOG_BROKER_ROUTING_LEASE_MS",
                routing_lease_ms.to_string(),
            )
            // A plain log, so that warnings can be picked out of it.
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path)?)
            .spawn()?;
        let mut partlog = Partlog {
            url: format!("http://127.0.0.1:{port}"),
            pid: Some(child.id()),
            metrics_addr: Some(metrics_addr),
            child: Some(child),
            log_path: Some(log_path),
            _dir: Some(dir),
        };
        partlog.wait_serving().await?;
        Ok(partlog)
    }

    pub async fn existing(
        url: &str,
        pid: Option<u32>,
        metrics_addr: Option<String>,
    ) -> Result<Partlog> {
        let mut partlog = Partlog {
            url: url.to_owned(),
            pid,
            metrics_addr,
            child: None,
            log_path: None,
            _dir: None,
        };
        partlog.wait_serving().await?;
        Ok(partlog)
    }

    async fn wait_serving(&mut self) -> Result<()> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    return Err(
                        format!("partlog exited with {status}:\n{}", self.log_tail()).into(),
                    );
                }
            }
            if self.health().await == Some(ServingStatus::Serving) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "partlog at {} not SERVING within {STARTUP_TIMEOUT:?}:\n{}",
                    self.url,
                    self.log_tail()
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn health(&self) -> Option<ServingStatus> {
        let channel = Endpoint::from_shared(self.url.clone())
            .ok()?
            .connect()
            .await
            .ok()?;
        let response = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .ok()?;
        ServingStatus::try_from(response.into_inner().status).ok()
    }

    /// The value of a metric series partlog serves (`name{labels}`), summed
    /// when several lines match; `None` when its metrics are unknown.
    pub async fn metric(&self, series: &str) -> Result<Option<f64>> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let Some(addr) = &self.metrics_addr else {
            return Ok(None);
        };
        let mut connection = tokio::net::TcpStream::connect(addr).await?;
        let request = format!("GET /metrics HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
        connection.write_all(request.as_bytes()).await?;
        let mut answer = String::new();
        connection.read_to_string(&mut answer).await?;
        let value = answer
            .lines()
            .filter_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .map(|value| value.trim().parse::<f64>())
            .sum::<std::result::Result<f64, _>>()?;
        Ok(Some(value))
    }

    /// A client on a channel (HTTP/2 connection) of its own.
    pub async fn client(&self) -> Result<PartLogClient<Channel>> {
        let channel = Endpoint::from_shared(self.url.clone())?.connect().await?;
        Ok(PartLogClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE))
    }

    /// The last lines of the log of a partlog started here.
    pub fn log_tail(&self) -> String {
        let Some(path) = &self.log_path else {
            return "(partlog was not started by the bench; see its own log)".into();
        };
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Copies the log of a partlog started here to `to`.
    pub fn keep_log(&self, to: &Path) -> Option<PathBuf> {
        let from = self.log_path.as_ref()?;
        std::fs::copy(from, to).ok()?;
        Some(to.to_owned())
    }

    /// Warnings and errors partlog logged, for the report.
    pub fn warnings(&self) -> Vec<String> {
        let Some(path) = &self.log_path else {
            return Vec::new();
        };
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let mut lines: Vec<String> = text
            .lines()
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR ") || l.contains("panicked at"))
            .map(str::to_owned)
            .collect();
        lines.dedup();
        lines
    }

    /// SIGTERM, as an operator stops it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Partlog {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Fresh super streams: created and deleted through partlog (the broker
/// holds identical super streams whoever creates them; partlog's
/// CreateStream answers once every partition has its leader). Every name is
/// new, so no phase sees an earlier phase's records, offsets or consumers.
pub struct Streams {
    admin: PartLogClient<Channel>,
    prefix: String,
    next: AtomicU32,
    /// Created and not deleted yet.
    live: Mutex<BTreeSet<String>>,
    /// Failures that a retry got past, for the report.
    pub incidents: Mutex<Vec<String>>,
}

impl Streams {
    pub fn new(admin: PartLogClient<Channel>) -> Streams {
        Streams {
            admin,
            prefix: format!("bench-{:06x}", rand::random::<u32>() & 0xff_ffff),
            next: AtomicU32::new(0),
            live: Mutex::default(),
            incidents: Mutex::default(),
        }
    }

    /// Creates `<prefix>-<what>-<n>` with `partitions` partitions; returns
    /// its name and the stream ports of the partitions' leaders and replicas.
    /// A failed creation is cleaned up and tried once more under a new name.
    /// `settings` go into the CreateStream request.
    pub async fn create(
        &self,
        what: &str,
        partitions: u32,
        settings: StreamSettings,
    ) -> Result<(String, Vec<u16>)> {
        let first = match self.try_create(what, partitions, settings).await {
            Ok(created) => return Ok(created),
            Err((name, e)) => {
                // The broker may have created it even so.
                let _ = self.delete(&name).await;
                self.incidents
                    .lock()
                    .unwrap()
                    .push(format!("CreateStream {name} failed and was retried: {e}"));
                e
            }
        };
        match self.try_create(what, partitions, settings).await {
            Ok(created) => Ok(created),
            Err((name, e)) => {
                let _ = self.delete(&name).await;
                Err(format!("{e} (and before it: {first})").into())
            }
        }
    }

    async fn try_create(
        &self,
        what: &str,
        partitions: u32,
        settings: StreamSettings,
    ) -> std::result::Result<(String, Vec<u16>), (String, Error)> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let name = format!("{}-{what}-{n}", self.prefix);
        self.live.lock().unwrap().insert(name.clone());
        let described = async {
            let mut admin = self.admin.clone();
            admin
                .create_stream(CreateStreamRequest {
                    stream: name.clone(),
                    partitions,
                    max_chunk_records: settings.max_chunk_records,
                    filter_size_bytes: settings.filter_size_bytes,
                    ..Default::default()
                })
                .await
                .map_err(|e| format!("create {name}: {e}"))?;
            admin
                .describe_stream(DescribeStreamRequest {
                    stream: name.clone(),
                })
                .await?
                .into_inner()
                .stream
                .ok_or_else(|| -> Error { "DescribeStream without a stream".into() })
        }
        .await;
        let described = match described {
            Ok(d) => d,
            Err(e) => return Err((name, e)),
        };
        let mut ports: Vec<u16> = described
            .partitions
            .iter()
            .flat_map(|p| std::iter::once(&p.leader).chain(&p.replicas))
            .filter_map(|address| address.rsplit_once(':')?.1.parse().ok())
            .collect();
        ports.sort_unstable();
        ports.dedup();
        Ok((name, ports))
    }

    /// Deletes a stream; one that is gone already counts as deleted.
    pub async fn delete(&self, name: &str) -> Result<()> {
        let deleted = self
            .admin
            .clone()
            .delete_stream(DeleteStreamRequest {
                stream: name.to_owned(),
            })
            .await;
        match deleted {
            Ok(_) => {}
            Err(status) if status.code() == tonic::Code::NotFound => {}
            Err(status) => return Err(format!("delete {name}: {status}").into()),
        }
        self.live.lock().unwrap().remove(name);
        Ok(())
    }

    /// Deletes every stream a failed or interrupted measurement left; the
    /// broker's disk is shared. Returns the ones that could not be deleted.
    pub async fn delete_left_over(&self) -> Vec<String> {
        let names: Vec<String> = self.live.lock().unwrap().iter().cloned().collect();
        let mut left = Vec::new();
        for name in names {
            if self.delete(&name).await.is_err() {
                left.push(name);
            }
        }
        left
    }
}

/// The partition stream of partition `index` of a super stream.
pub fn partition_stream(stream: &str, index: u32) -> String {
    format!("{stream}-{index}")
}

/// The partition index of a partition stream of `stream`.
pub fn partition_index(stream: &str, partition_stream: &str) -> Option<u32> {
    partition_stream
        .strip_prefix(stream)?
        .strip_prefix('-')?
        .parse()
        .ok()
}
