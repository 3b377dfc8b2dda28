//! Test harness: a real partlog process against the real broker.
//!
//! The broker is the one `scripts/rabbitmq.sh start` runs (or whatever
//! `PARTLOG_BROKER_HOST`/`PARTLOG_BROKER_PORT` name). Nothing here skips
//! when the broker is missing: partlog then never reports SERVING and the
//! test fails with partlog's own log.

#![allow(dead_code)] // Each test binary uses a different part of the harness.

pub mod principals;
pub mod python;
pub mod resize;
pub mod webdriver;

use std::collections::{BTreeSet, HashMap};
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use partlog::proto::part_log_client::PartLogClient;
use partlog::proto::{self, CreateStreamRequest, PublishRecord};
use rabbitmq_stream_client::Environment;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

pub fn broker_host() -> String {
    std::env::var("PARTLOG_BROKER_HOST").unwrap_or_else(|_| "localhost".into())
}

pub fn broker_port() -> u16 {
    std::env::var("PARTLOG_BROKER_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(5552)
}

/// A partlog server process, killed when dropped.
pub struct Partlog {
    child: Child,
    /// Where it listens, as it logged it (empty until then).
    pub addr: String,
    /// Where it serves `/metrics`, as it logged it (empty until then, and
    /// when metrics are off).
    pub metrics_addr: String,
    /// Where it serves the web console, as it logged it (empty until then,
    /// and when the console is off).
    pub console_addr: String,
    log_path: std::path::PathBuf,
    _dir: tempfile::TempDir,
    /// How the harness reaches a partlog with TLS (health checks included).
    tls: Option<ClientTlsConfig>,
}

impl Partlog {
    /// Starts partlog with extra `PARTLOG_*` settings and waits until its
    /// health check says SERVING. It listens on a port of its own choosing
    /// (`127.0.0.1:0`), metrics too, and logs which ones.
    pub async fn start_with(settings: &[(&str, &str)]) -> Partlog {
        let mut server = Partlog::spawn_with(settings);
        server.wait_for(Some(ServingStatus::Serving)).await;
        server
    }

    /// Starts partlog with TLS on its listener (`settings` name the files)
    /// and waits for SERVING, reaching it with `tls` (CA and, for mutual
    /// TLS, a client identity).
    pub async fn start_tls(settings: &[(&str, &str)], tls: ClientTlsConfig) -> Partlog {
        let mut server = Partlog::spawn_with(settings);
        server.tls = Some(tls.domain_name("localhost"));
        server.wait_for(Some(ServingStatus::Serving)).await;
        server
    }

    /// Starts partlog and waits until it answers health checks at all.
    pub async fn start_unready(settings: &[(&str, &str)]) -> Partlog {
        let mut server = Partlog::spawn_with(settings);
        server.wait_for(None).await;
        server
    }

    fn spawn_with(settings: &[(&str, &str)]) -> Partlog {
        let dir = tempfile::tempdir().expect("temp dir");
        let log_path = dir.path().join("partlog.log");
        let log = std::fs::File::create(&log_path).expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_partlog"));
        command
            .arg("serve")
            .env("PARTLOG_SERVER_LISTEN", "127.0.0.1:0")
            .env("PARTLOG_METRICS_LISTEN", "127.0.0.1:0")
            .env("PARTLOG_OFFSETS_DATA_DIR", dir.path().join("offsets"))
            .env("PARTLOG_LOG", "info,partlog=debug")
            .stdout(Stdio::null())
            .stderr(log);
        for (key, value) in settings {
            command.env(key, value);
        }
        let child = command.spawn().expect("start partlog");
        Partlog {
            child,
            addr: String::new(),
            metrics_addr: String::new(),
            console_addr: String::new(),
            log_path,
            _dir: dir,
            tls: None,
        }
    }

    /// Runs partlog expecting it to stop by itself (a start-up failure);
    /// returns its exit status and log.
    pub fn run_to_exit(settings: &[(&str, &str)]) -> (std::process::ExitStatus, String) {
        let mut server = Partlog::spawn_with(settings);
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                return (status, server.log());
            }
            assert!(
                Instant::now() < deadline,
                "partlog kept running:\n{}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub async fn start() -> Partlog {
        Partlog::start_with(&[]).await
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// A connection as the harness makes it (TLS when partlog has it).
    pub async fn channel(&self) -> Result<Channel, tonic::transport::Error> {
        let mut endpoint = Endpoint::from_shared(self.url()).expect("partlog's url");
        if let Some(tls) = &self.tls {
            endpoint = endpoint.tls_config(tls.clone())?;
        }
        endpoint.connect().await
    }

    pub fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log_path) {
            let _ = f.read_to_string(&mut text);
        }
        text
    }

    pub async fn client(&self) -> PartLogClient<Channel> {
        PartLogClient::connect(self.url())
            .await
            .expect("connect to partlog")
            .max_decoding_message_size(64 * 1024 * 1024)
            .max_encoding_message_size(64 * 1024 * 1024)
    }

    pub async fn health(&self, service: &str) -> Option<ServingStatus> {
        let channel = self.channel().await.ok()?;
        let mut client = HealthClient::new(channel);
        let response = client
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .ok()?;
        ServingStatus::try_from(response.into_inner().status).ok()
    }

    /// Waits for health `wanted`, or for any answer when `None`.
    async fn wait_for(&mut self, wanted: Option<ServingStatus>) {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "partlog exited with {status} during start-up:\n{}",
                    self.log()
                );
            }
            if self.addr.is_empty() {
                self.addr = self.logged_address("partlog listening").unwrap_or_default();
                self.metrics_addr = self.logged_address("metrics listening").unwrap_or_default();
                self.console_addr = self.logged_address("console listening").unwrap_or_default();
            }
            let status = match self.addr.is_empty() {
                true => None,
                false => self.health("").await,
            };
            if status.is_some() && (wanted.is_none() || status == wanted) {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "partlog did not report {wanted:?} within {STARTUP_TIMEOUT:?}; is the broker \
                     running (scripts/rabbitmq.sh start)? partlog's log:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The address of the log line "`message` local=ADDR" (text), or
    /// `{"message": message, "local": ADDR}` (JSON).
    fn logged_address(&self, message: &str) -> Option<String> {
        let log = self.log();
        let line = log.lines().find(|l| l.contains(message))?;
        if line.starts_with('{') {
            let line: serde_json::Value = serde_json::from_str(line).ok()?;
            return Some(line["local"].as_str()?.to_owned());
        }
        let addr = line.split("local=").nth(1)?.split_whitespace().next()?;
        Some(addr.to_owned())
    }

    /// `GET /metrics`: the metrics in the Prometheus text format.
    pub async fn metrics(&self) -> String {
        assert!(
            !self.metrics_addr.is_empty(),
            "partlog logged no metrics address:\n{}",
            self.log()
        );
        let answer = http_get(&self.metrics_addr, "/metrics").await;
        let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
        assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
        body.to_owned()
    }

    /// kill -9: no shutdown, no flushing.
    pub fn kill(&mut self) {
        self.child.kill().expect("kill partlog");
        let _ = self.child.wait();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory of the partlog process in KiB.
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid())
    }

    /// Starts sampling the process's resident memory (every 10 ms, on a
    /// thread of its own, so that a busy runtime cannot skip samples) until
    /// [`RssPeak::peak_kib`].
    pub fn sample_rss(&self) -> RssPeak {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let pid = self.pid();
        let thread = std::thread::spawn({
            let stop = stop.clone();
            move || {
                let mut peak = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    peak = peak.max(rss_kib(pid));
                    std::thread::sleep(Duration::from_millis(10));
                }
                peak.max(rss_kib(pid))
            }
        });
        RssPeak { stop, thread }
    }

    /// Sends SIGHUP: partlog reloads its security files.
    pub fn hangup(&self) {
        let sent = Command::new("kill")
            .args(["-HUP", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -HUP failed");
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM failed");
        self.child.wait().expect("wait for partlog")
    }
}

/// Resident memory of process `pid` in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS line")
}

/// The most resident memory a process had while sampled.
pub struct RssPeak {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl RssPeak {
    /// Stops sampling; the peak in KiB.
    pub fn peak_kib(self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().expect("the sampling thread")
    }
}

impl Drop for Partlog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How long memory is watched after a load: partlog's readers go on
/// reading after the last publish was confirmed, so what they buffer shows
/// only once they reached the partitions' tails (or their bound).
pub const AFTER_THE_TAIL: Duration = Duration::from_secs(3);

/// How much partlog's resident memory grew, in MiB, above what it had
/// before `load`: its peak over the [`AFTER_THE_TAIL`] after the load (not
/// during it, when the write path's own passing buffers count too).
pub async fn peak_growth_mib(server: &Partlog, load: impl std::future::Future<Output = ()>) -> u64 {
    let baseline = server.rss_kib();
    load.await;
    let sampling = server.sample_rss();
    tokio::time::sleep(AFTER_THE_TAIL).await;
    sampling.peak_kib().saturating_sub(baseline) / 1024
}

/// A plain HTTP/1.1 GET of `path` on `addr`; the whole answer, head and
/// body.
pub async fn http_get(addr: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    let request = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer
}

/// A stream name no other test (or earlier run) uses.
pub fn unique_stream(prefix: &str) -> String {
    format!("{prefix}-{:08x}", rand::random::<u32>())
}

pub async fn create_stream(client: &mut PartLogClient<Channel>, stream: &str, partitions: u32) {
    client
        .create_stream(CreateStreamRequest {
            stream: stream.into(),
            partitions,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("create {stream}: {e}"));
}

pub fn record(key: &str, value: impl Into<Vec<u8>>) -> PublishRecord {
    PublishRecord {
        key: key.into(),
        value: value.into().into(),
        headers: HashMap::new(),
        ..Default::default()
    }
}

/// Publishes and asserts every record was confirmed; returns partitions.
pub async fn publish_ok(
    client: &mut PartLogClient<Channel>,
    stream: &str,
    records: Vec<PublishRecord>,
) -> Vec<u32> {
    let count = records.len();
    let results = client
        .publish(proto::PublishRequest {
            stream: stream.into(),
            records,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("publish to {stream}: {e}"))
        .into_inner()
        .results;
    assert_eq!(results.len(), count);
    results
        .into_iter()
        .map(|r| {
            assert!(r.error.is_none(), "record not stored: {:?}", r.error);
            r.partition
        })
        .collect()
}

/// Reads a whole partition from offset 0 through partlog, retrying
/// UNAVAILABLE for up to 30 s as a client should (e.g. while a cluster
/// elects a new partition leader).
pub async fn read_all(
    client: &mut PartLogClient<Channel>,
    stream: &str,
    partition: u32,
) -> Vec<proto::Record> {
    let mut records = Vec::new();
    let mut offset = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let request = proto::ReadRequest {
            stream: stream.into(),
            partition,
            offset,
            max_records: 1000,
            ..Default::default()
        };
        let response = match client.read(request).await {
            Ok(response) => response.into_inner(),
            Err(e) if e.code() == tonic::Code::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Err(e) => panic!("read {stream}/{partition}@{offset}: {e}"),
        };
        if response.records.is_empty() {
            return records;
        }
        offset = response.next_offset;
        records.extend(response.records);
    }
}

pub async fn native_environment() -> Environment {
    Environment::builder()
        .host(&broker_host())
        .port(broker_port())
        .build()
        .await
        .expect("native client connects to the broker")
}

/// A client writing batches with a producer id and sequences 1, 2, ...,
/// retrying each batch until every record of it is acknowledged, until
/// stopped: the idempotent publisher the failure tests run against partlog.
pub struct IdempotentPublisher {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    acknowledged: std::sync::Arc<std::sync::Mutex<Vec<(Instant, u64)>>>,
    last_failure: std::sync::Arc<std::sync::Mutex<Option<String>>>,
    task: tokio::task::JoinHandle<u64>,
}

impl IdempotentPublisher {
    /// `record(sequence)` gives each record's key and value.
    pub fn spawn(
        mut client: PartLogClient<Channel>,
        stream: &str,
        producer_id: &str,
        batch: u64,
        record: impl Fn(u64) -> (String, Vec<u8>) + Send + 'static,
    ) -> IdempotentPublisher {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let acknowledged = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let last_failure = std::sync::Arc::new(std::sync::Mutex::new(None));
        let (stream, producer_id) = (stream.to_owned(), producer_id.to_owned());
        let task = tokio::spawn({
            let (stop, acknowledged) = (stop.clone(), acknowledged.clone());
            let last_failure = last_failure.clone();
            async move {
                let (mut next, mut failed_attempts) = (1u64, 0u64);
                while !stop.load(Ordering::Relaxed) {
                    let records = (next..next + batch)
                        .map(|sequence| {
                            let (key, value) = record(sequence);
                            PublishRecord {
                                key,
                                value: value.into(),
                                sequence,
                                ..Default::default()
                            }
                        })
                        .collect();
                    let request = proto::PublishRequest {
                        stream: stream.clone(),
                        records,
                        producer_id: producer_id.clone(),
                        ..Default::default()
                    };
                    match client.publish(request).await {
                        Ok(r) if r.get_ref().results.iter().all(|r| r.error.is_none()) => {
                            let now = Instant::now();
                            acknowledged
                                .lock()
                                .unwrap()
                                .extend((next..next + batch).map(|s| (now, s)));
                            next += batch;
                        }
                        failed => {
                            let why = match failed {
                                Ok(r) => r.into_inner().results.into_iter().find_map(|r| r.error),
                                Err(status) => Some(proto::RecordError {
                                    code: status.code() as i32,
                                    message: status.message().to_owned(),
                                    reason: String::new(),
                                }),
                            };
                            *last_failure.lock().unwrap() = why
                                .map(|e| format!("{:?}: {}", tonic::Code::from(e.code), e.message));
                            failed_attempts += 1;
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
                failed_attempts
            }
        });
        IdempotentPublisher {
            stop,
            acknowledged,
            last_failure,
            task,
        }
    }

    /// Why the last failed attempt failed: its status or first record error.
    pub fn last_failure(&self) -> Option<String> {
        self.last_failure.lock().unwrap().clone()
    }

    /// Acknowledged sequences with the time each was acknowledged.
    pub fn acknowledged(&self) -> Vec<(Instant, u64)> {
        self.acknowledged.lock().unwrap().clone()
    }

    /// Stops after the batch in flight; returns the failed attempts.
    pub async fn stop(self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.task.await.expect("publisher task")
    }
}

/// Runs `scripts/rabbitmq.sh ARGS` (with `PARTLOG_NODE` = `node` when
/// given) and asserts it succeeded: how failure tests take the broker away.
pub fn broker_script(args: &[&str], node: Option<&str>) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/rabbitmq.sh");
    let mut command = Command::new(script);
    command.args(args);
    if let Some(node) = node {
        command.env("PARTLOG_NODE", node);
    }
    let status = command.status().expect("run the broker script");
    assert!(status.success(), "scripts/rabbitmq.sh {args:?} failed");
}

/// What a group member's subscriber saw, in order: the events of one
/// Subscribe call, recorded by a background task.
pub struct MemberEvents {
    pub name: String,
    /// Each event with when it arrived.
    events: std::sync::Arc<std::sync::Mutex<Vec<(Instant, proto::subscribe_response::Event)>>>,
    /// Ends only when the call does, with how it ended.
    task: Option<tokio::task::JoinHandle<String>>,
}

impl MemberEvents {
    /// Subscribes to every partition of `stream` as a member of `group`
    /// and records what arrives until dropped.
    pub async fn join(
        client: &mut PartLogClient<Channel>,
        name: &str,
        stream: &str,
        group: &str,
    ) -> MemberEvents {
        let mut responses = client
            .subscribe(proto::SubscribeRequest {
                stream: stream.into(),
                group: group.into(),
                window: 100,
                ..Default::default()
            })
            .await
            .expect("subscribe")
            .into_inner();
        let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let events = events.clone();
            async move {
                loop {
                    match responses.message().await {
                        Ok(Some(message)) => {
                            let event = message.event.expect("event");
                            events.lock().unwrap().push((Instant::now(), event))
                        }
                        Ok(None) => return "partlog ended the call".to_owned(),
                        Err(status) => return format!("the call failed: {status}"),
                    }
                }
            }
        });
        MemberEvents {
            name: name.into(),
            events,
            task: Some(task),
        }
    }

    /// Stops recording, failing the test when the recording task panicked
    /// or the call ended before: a member stays in its group through
    /// broker trouble (partlog tells it INACTIVE and ACTIVE), it is never
    /// dropped.
    pub async fn stop(mut self) {
        let task = self.task.take().expect("stopped once");
        if let Some(ended) = stop_task(task).await {
            panic!("member {}'s Subscribe call ended: {ended}", self.name);
        }
    }

    pub fn events(&self) -> Vec<proto::subscribe_response::Event> {
        self.timed_events().into_iter().map(|(_, e)| e).collect()
    }

    /// The events with when each arrived.
    pub fn timed_events(&self) -> Vec<(Instant, proto::subscribe_response::Event)> {
        self.events.lock().unwrap().clone()
    }

    /// Partitions this member was told it holds (ACTIVE, no INACTIVE since).
    pub fn held(&self) -> BTreeSet<u32> {
        assignment_view(&self.events()).0
    }

    /// Values of the records delivered to this member.
    pub fn values(&self) -> Vec<Vec<u8>> {
        use proto::subscribe_response::Event;
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Record(r) => Some(r.value.to_vec()),
                Event::Assignment(_) | Event::Skipped(_) | Event::EpochMarker(_) => None,
            })
            .collect()
    }
}

impl Drop for MemberEvents {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Fails the test at once when one of `tasks` ended, with its panic if it
/// panicked: a task that checks what it receives must not fail unseen
/// while the test waits for it until a deadline.
pub async fn fail_if_any_ended(tasks: &mut Vec<tokio::task::JoinHandle<()>>) {
    if let Some(ended) = tasks.iter().position(|t| t.is_finished()) {
        stop_task(tasks.swap_remove(ended)).await;
        panic!("a task ended before the test stopped it");
    }
}

/// Stops a task the test spawned and fails the test with the task's panic
/// if it panicked: the panic of a task that is only aborted is lost, and
/// the test passes without what the task checked. Returns the task's
/// output when it had ended by itself.
pub async fn stop_task<T>(task: tokio::task::JoinHandle<T>) -> Option<T> {
    task.abort();
    match task.await {
        Ok(output) => Some(output),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => None,
    }
}

/// Waits up to `within` for a task the test told to stop, then stops it
/// (see [`stop_task`]).
pub async fn stop_task_after<T>(
    mut task: tokio::task::JoinHandle<T>,
    within: Duration,
) -> Option<T> {
    match tokio::time::timeout(within, &mut task).await {
        Ok(Ok(output)) => Some(output),
        Ok(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Ok(Err(_)) => None,
        Err(_) => stop_task(task).await,
    }
}

/// Replays one group member's events: the partitions it holds at the end,
/// and every way the events contradict the broker's single active consumer
/// as a subscriber must see it — a record of a partition it was not told it
/// holds, ACTIVE while holding, INACTIVE while not holding, REATTACHED (a
/// group member's lost connection means INACTIVE, then ACTIVE when the
/// broker picks it again), or records going backwards or starting before
/// the ACTIVE event's `next_offset`.
pub fn assignment_view(
    events: &[proto::subscribe_response::Event],
) -> (BTreeSet<u32>, Vec<String>) {
    use proto::subscribe_response::Event;
    use proto::AssignmentState;
    let mut held = BTreeSet::new();
    let mut problems = Vec::new();
    // Per partition: the offset the next record must reach at least.
    let mut floor: HashMap<u32, u64> = HashMap::new();
    for (i, event) in events.iter().enumerate() {
        match event {
            Event::Record(r) => {
                if !held.contains(&r.partition) {
                    problems.push(format!(
                        "#{i}: record {}@{} of a partition not held",
                        r.partition, r.offset
                    ));
                }
                let at_least = floor.entry(r.partition).or_default();
                if r.offset < *at_least {
                    problems.push(format!(
                        "#{i}: record {}@{} before {}",
                        r.partition, r.offset, at_least
                    ));
                }
                *at_least = r.offset + 1;
            }
            Event::Assignment(a) => match a.state() {
                AssignmentState::Active => {
                    if !held.insert(a.partition) {
                        problems.push(format!("#{i}: ACTIVE for {} already held", a.partition));
                    }
                    floor.insert(a.partition, a.next_offset.unwrap_or(0));
                }
                AssignmentState::Inactive => {
                    if !held.remove(&a.partition) {
                        problems.push(format!("#{i}: INACTIVE for {} not held", a.partition));
                    }
                }
                other => problems.push(format!("#{i}: {other:?} for {}", a.partition)),
            },
            Event::Skipped(skipped) => problems.push(format!(
                "#{i}: skipped {}@{} without a filter",
                skipped.partition, skipped.next_offset
            )),
            Event::EpochMarker(marker) => {
                if !held.contains(&marker.partition) {
                    problems.push(format!(
                        "#{i}: epoch marker {}@{} of a partition not held",
                        marker.partition, marker.offset
                    ));
                }
            }
        }
    }
    (held, problems)
}

/// Waits up to `timeout` until every partition of `0..partitions` is held
/// by exactly one of `members`, then asserts that no member's events
/// contradict single active consumer. `context` goes into failure messages.
pub async fn assert_one_holder_each(
    members: &[&MemberEvents],
    partitions: u32,
    timeout: Duration,
    context: impl Fn() -> String,
) {
    let deadline = Instant::now() + timeout;
    loop {
        let holders: Vec<Vec<&str>> = (0..partitions)
            .map(|p| {
                members
                    .iter()
                    .filter(|m| m.held().contains(&p))
                    .map(|m| m.name.as_str())
                    .collect()
            })
            .collect();
        if holders.iter().all(|h| h.len() == 1) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "holders per partition after {timeout:?}: {holders:?}\n{}",
            context()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for member in members {
        let (_, problems) = assignment_view(&member.events());
        assert!(
            problems.is_empty(),
            "{}'s events contradict single active consumer:\n{}\n{}",
            member.name,
            problems.join("\n"),
            context()
        );
    }
}

/// A certificate authority made for one test, and the files it issues.
pub struct TestPki {
    ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    dir: tempfile::TempDir,
}

/// A certificate and its key, as PEM files.
pub struct Issued {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

impl Issued {
    /// The pair as a tonic client identity.
    pub fn identity(&self) -> tonic::transport::Identity {
        tonic::transport::Identity::from_pem(
            std::fs::read(&self.cert).unwrap(),
            std::fs::read(&self.key).unwrap(),
        )
    }
}

impl TestPki {
    pub fn new(name: &str) -> TestPki {
        let mut params = rcgen::CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let ca = rcgen::CertifiedIssuer::self_signed(params, key).unwrap();
        let pki = TestPki {
            ca,
            dir: tempfile::tempdir().unwrap(),
        };
        pki.write("ca.pem", &pki.ca.pem());
        pki
    }

    pub fn ca_file(&self) -> std::path::PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    /// Writes `content` into the PKI's directory; returns the path.
    pub fn write(&self, name: &str, content: &str) -> std::path::PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    /// A server certificate for localhost and 127.0.0.1.
    pub fn server(&self) -> Issued {
        self.issue(
            "server",
            "localhost",
            vec!["localhost".into(), "127.0.0.1".into()],
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate whose subject's common name is `name`.
    pub fn client(&self, name: &str) -> Issued {
        self.issue(
            &format!("client-{name}"),
            name,
            vec![],
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        )
    }

    fn issue(
        &self,
        file: &str,
        common_name: &str,
        names: Vec<String>,
        usage: rcgen::ExtendedKeyUsagePurpose,
    ) -> Issued {
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        params.extended_key_usages = vec![usage];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        Issued {
            cert: self.write(&format!("{file}.pem"), &cert.pem()),
            key: self.write(&format!("{file}.key"), &key.serialize_pem()),
        }
    }
}

/// The client TLS settings for a partlog whose certificate `pki` issued.
pub fn trusting(pki: &TestPki) -> ClientTlsConfig {
    ClientTlsConfig::new().ca_certificate(tonic::transport::Certificate::from_pem(pki.ca_pem()))
}

/// Generous bound for events that must come; a test fails, never hangs.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(60);

/// One Consume call: what the test sends and what partlog answers.
///
/// It keeps count of the credit it granted and of the records partlog
/// sent, and fails the test at the first record beyond the credit: every
/// test that consumes through it checks that partlog never exceeds it.
pub struct Member {
    requests: tokio::sync::mpsc::Sender<proto::ConsumeRequest>,
    responses: tonic::Streaming<proto::ConsumeResponse>,
    credit: CreditLedger,
}

/// What a Consume call granted and got, for the check that partlog stays
/// within the credit.
#[derive(Debug, Default)]
struct CreditLedger {
    records_granted: u64,
    records_delivered: u64,
    /// Byte credit, when the first request granted some (partlog limits
    /// bytes only then).
    bytes: Option<ByteLedger>,
}

#[derive(Debug, Default)]
struct ByteLedger {
    granted: u64,
    /// Grants, the first request's included.
    grants: u64,
    delivered: u64,
    largest_record: u64,
}

impl CreditLedger {
    fn granted(&mut self, request: &proto::ConsumeRequest) {
        self.records_granted += u64::from(request.credit_records);
        if request.open.is_some() && request.credit_bytes > 0 {
            self.bytes = Some(ByteLedger::default());
        }
        if let Some(bytes) = &mut self.bytes {
            if request.credit_bytes > 0 {
                bytes.granted += request.credit_bytes;
                bytes.grants += 1;
            }
        }
    }

    /// Counts a record partlog sent and asserts the credit allowed it.
    fn delivered(&mut self, record: &proto::Record) {
        self.records_delivered += 1;
        assert!(
            self.records_delivered <= self.records_granted,
            "partlog sent record {} of the call ({}@{}) with {} records of credit granted",
            self.records_delivered,
            record.partition,
            record.offset,
            self.records_granted
        );
        if let Some(bytes) = &mut self.bytes {
            // partlog sends a record while its byte credit is positive and
            // counts the credit a record takes it below as zero: each grant
            // can be overrun by less than one record, never more. (The
            // client cannot tell which grants partlog had when it sent the
            // record, so this bound counts every grant sent so far.)
            let allowance = bytes.granted + bytes.grants * bytes.largest_record;
            assert!(
                bytes.delivered < allowance,
                "partlog sent record {}@{} after {} bytes, with {} bytes of credit in {} grants \
                 (records of up to {} bytes)",
                record.partition,
                record.offset,
                bytes.delivered,
                bytes.granted,
                bytes.grants,
                bytes.largest_record
            );
            let size = record_bytes(record);
            bytes.delivered += size;
            bytes.largest_record = bytes.largest_record.max(size);
        }
    }
}

/// What a record costs of byte credit: its key, value and headers.
pub fn record_bytes(record: &proto::Record) -> u64 {
    let headers: usize = record.headers.iter().map(|(k, v)| k.len() + v.len()).sum();
    (record.key.len() + record.value.len() + headers) as u64
}

impl Member {
    pub async fn open(
        client: &mut PartLogClient<Channel>,
        stream: &str,
        group: &str,
        credit_records: u32,
    ) -> Member {
        let first = proto::ConsumeRequest {
            open: Some(proto::ConsumeOpen {
                stream: stream.into(),
                group: group.into(),
                ..Default::default()
            }),
            credit_records,
            ..Default::default()
        };
        Member::open_with(client, first).await
    }

    /// Opens the call with `first` as its first request.
    pub async fn open_with(
        client: &mut PartLogClient<Channel>,
        first: proto::ConsumeRequest,
    ) -> Member {
        let (requests, outgoing) = tokio::sync::mpsc::channel(64);
        let mut credit = CreditLedger::default();
        credit.granted(&first);
        requests.send(first).await.unwrap();
        let responses = client
            .consume(tokio_stream::wrappers::ReceiverStream::new(outgoing))
            .await
            .expect("consume")
            .into_inner();
        Member {
            requests,
            responses,
            credit,
        }
    }

    pub async fn send(&mut self, request: proto::ConsumeRequest) {
        // Counted before it leaves: partlog cannot use a grant earlier.
        self.credit.granted(&request);
        self.requests.send(request).await.expect("call open");
    }

    pub async fn credit(&mut self, records: u32) {
        self.send(proto::ConsumeRequest {
            credit_records: records,
            ..Default::default()
        })
        .await;
    }

    /// Grants `bytes` more bytes of credit.
    pub async fn credit_bytes(&mut self, bytes: u64) {
        self.send(proto::ConsumeRequest {
            credit_bytes: bytes,
            ..Default::default()
        })
        .await;
    }

    pub async fn commit(&mut self, offsets: std::collections::BTreeMap<u32, u64>) {
        self.send(proto::ConsumeRequest {
            commits: offsets.into_iter().collect(),
            ..Default::default()
        })
        .await;
    }

    /// Checks a record against the credit.
    fn received(
        &mut self,
        event: proto::consume_response::Event,
    ) -> proto::consume_response::Event {
        if let proto::consume_response::Event::Record(record) = &event {
            self.credit.delivered(record);
        }
        event
    }

    /// The next event, failing the test after [`EVENT_TIMEOUT`].
    pub async fn next(&mut self) -> proto::consume_response::Event {
        let event = tokio::time::timeout(EVENT_TIMEOUT, self.responses.message())
            .await
            .expect("an event within the timeout")
            .expect("call healthy")
            .expect("call open")
            .event
            .expect("event set");
        self.received(event)
    }

    /// The next event, or the status the call ended with, failing the
    /// test after [`EVENT_TIMEOUT`].
    pub async fn try_next(&mut self) -> Result<proto::consume_response::Event, tonic::Status> {
        let message = tokio::time::timeout(EVENT_TIMEOUT, self.responses.message())
            .await
            .expect("an event within the timeout")?;
        let event = message.expect("call open").event.expect("event set");
        Ok(self.received(event))
    }

    /// The next event if one comes within `wait`.
    pub async fn next_within(&mut self, wait: Duration) -> Option<proto::consume_response::Event> {
        let message = tokio::time::timeout(wait, self.responses.message()).await;
        let event = message
            .ok()
            .map(|m| m.expect("call healthy").expect("call open").event.unwrap())?;
        Some(self.received(event))
    }
}

/// How often a [`Regrant`] grants at most.
pub const GRANT_EVERY: Duration = Duration::from_millis(20);

/// Grants the records a member consumed back in batches, at most every
/// [`GRANT_EVERY`], as a consumer that batches its grants would. Between
/// grants the member's credit can run out and partlog must wait: a record
/// beyond the credit then fails the test ([`Member`] checks). (A member
/// that granted a record back for each record received could never tell:
/// its grants would always be ahead of what partlog sent.)
pub struct Regrant {
    owed: u32,
    next: tokio::time::Instant,
}

impl Default for Regrant {
    fn default() -> Regrant {
        Regrant {
            owed: 0,
            next: tokio::time::Instant::now() + GRANT_EVERY,
        }
    }
}

impl Regrant {
    /// Counts a record consumed: one record of credit owed.
    pub fn consumed(&mut self) {
        self.owed += 1;
    }

    /// Resolves when owed credit is due; never while nothing is owed.
    pub async fn due(&self) {
        if self.owed == 0 {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep_until(self.next).await;
    }

    /// Grants what is owed.
    pub async fn grant(&mut self, member: &mut Member) {
        member.credit(std::mem::take(&mut self.owed)).await;
        self.next = tokio::time::Instant::now() + GRANT_EVERY;
    }
}
