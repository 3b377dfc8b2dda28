//! The listener's limits (issue 17): out of file descriptors partlog backs
//! off instead of spinning; connections beyond `server.max_connections`
//! wait; connections without an authenticated call, or without calls, are
//! closed; one connection's calls are bounded; per-principal rates answer
//! RESOURCE_EXHAUSTED with RetryInfo.

mod common;

use std::time::{Duration, Instant};

use common::principals::{as_principal, everything, new_token, principal, PrincipalsFile};
use common::Partlog;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tonic::Code;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_types::StatusExt;

/// File descriptors `pid` holds now.
fn descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read the process's descriptors")
        .count()
}

/// CPU time `pid` used so far (user and system), in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    // After the command name (in parentheses): state is field 3, utime 14, stime 15.
    let after = stat.rsplit_once(')').expect("stat format").1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Sets `pid`'s soft descriptor limit with prlimit(1) (the hard limit
/// stays: raising the soft one again needs no privilege).
fn limit_descriptors(pid: u32, limit: usize) {
    let status = std::process::Command::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg(format!("--nofile={limit}:"))
        .status()
        .expect("run prlimit (util-linux)");
    assert!(status.success(), "prlimit failed");
}

/// `n` TCP connections to `addr` that send nothing, opened one after the
/// other (opened together, they overflow the kernel's queue of half-open
/// connections, whose victims look open to this client for ever).
async fn silent_connections(addr: &str, n: usize) -> Vec<TcpStream> {
    let mut connections = Vec::with_capacity(n);
    for _ in 0..n {
        connections.push(TcpStream::connect(addr).await.expect("connect"));
    }
    connections
}

/// Whether partlog closed `connection` (it reads as ended, or fails).
async fn closed_within(connection: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, connection.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            // HTTP/2 settings or a GOAWAY: read on until the end.
            Ok(Ok(_)) => {}
        }
    }
}

/// Out of file descriptors (its limit lowered under it), partlog's accept
/// loop used to spin at 100 % of a core, silently. It backs off and says
/// so, and serves again once descriptors are free.
#[tokio::test]
async fn out_of_descriptors_partlog_backs_off_and_recovers() {
    let server = Partlog::start().await;
    let pid = server.pid();
    let held = descriptors(pid);
    limit_descriptors(pid, held + 8);
    let connections = silent_connections(&server.addr, 60).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = cpu_ticks(pid);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let used = cpu_ticks(pid) - before;
    // 100 ticks a second: spinning would use about 300.
    assert!(
        used < 60,
        "partlog used {used} ticks of CPU in 3 s while out of descriptors"
    );
    assert!(
        server
            .log()
            .contains("cannot accept connections (out of file descriptors?"),
        "{}",
        server.log()
    );
    drop(connections);
    limit_descriptors(pid, held + 1000);
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.health("").await.is_none() {
        assert!(
            Instant::now() < deadline,
            "partlog serves no new connection"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// 2 000 connections that never authenticate: partlog holds at most
/// `server.max_connections` of them at once (the others wait in the listen
/// backlog), and closes each after `server.unauthenticated_timeout_ms`.
#[tokio::test]
async fn idle_unauthenticated_connections_are_bounded_and_closed() {
    let token = new_token();
    let file = PrincipalsFile::new(&principal("admin", &token, &[everything()]));
    let server = Partlog::start_with(&[
        ("PARTLOG_AUTH_TOKENS_FILE", &file.path()),
        ("PARTLOG_SERVER_MAX_CONNECTIONS", "200"),
        ("PARTLOG_SERVER_UNAUTHENTICATED_TIMEOUT_MS", "1000"),
    ])
    .await;
    let pid = server.pid();
    let baseline = descriptors(pid);
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let sampling = tokio::spawn(async move {
        let mut most = 0;
        while stopped.try_recv().is_err() {
            most = most.max(descriptors(pid));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        most
    });
    // In waves of 500: more than max_connections, fewer than the listen
    // backlog holds.
    for _ in 0..4 {
        let mut connections = silent_connections(&server.addr, 500).await;
        for connection in &mut connections {
            assert!(
                closed_within(connection, Duration::from_secs(30)).await,
                "an unauthenticated connection stayed open"
            );
        }
    }
    let _ = stop.send(());
    let most = sampling.await.unwrap();
    assert!(
        most <= baseline + 200 + 10,
        "partlog held {most} descriptors (baseline {baseline}, max_connections 200)"
    );
    // An authenticated client is served meanwhile.
    let mut client = server.client().await;
    let request = as_principal(&token, partlog::proto::ListGroupsRequest::default());
    let status = client.list_groups(request).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
}

/// A connection without calls for `server.idle_timeout_ms` is closed.
#[tokio::test]
async fn an_idle_connection_is_closed() {
    let server = Partlog::start_with(&[("PARTLOG_SERVER_IDLE_TIMEOUT_MS", "1000")]).await;
    let mut connection = TcpStream::connect(&server.addr).await.unwrap();
    let started = Instant::now();
    assert!(closed_within(&mut connection, Duration::from_secs(10)).await);
    assert!(started.elapsed() >= Duration::from_millis(900));
}

/// 5 000 health streams on one connection: partlog serves at most
/// `server.max_concurrent_streams` of them at once (tonic set no limit, and
/// hyper's default of 200 was lost).
#[tokio::test]
async fn calls_on_one_connection_are_bounded() {
    let server = Partlog::start_with(&[("PARTLOG_SERVER_MAX_CONCURRENT_STREAMS", "50")]).await;
    let channel = server.channel().await.unwrap();
    let mut watches = Vec::new();
    for _ in 0..5000 {
        let mut health = HealthClient::new(channel.clone());
        watches.push(tokio::spawn(async move {
            let request = HealthCheckRequest {
                service: String::new(),
            };
            if let Ok(response) = health.watch(request).await {
                let mut stream = response.into_inner();
                while let Ok(Some(_)) = stream.message().await {}
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let metrics = server.metrics().await;
    let in_flight: f64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("partlog_rpc_in_flight{method=\"grpc.health.v1.Health/Watch\"} ")
        })
        .expect("health watches in flight")
        .parse()
        .unwrap();
    assert!(
        (1.0..=50.0).contains(&in_flight),
        "{in_flight} health streams open on one connection, at most 50 allowed"
    );
    for watch in watches {
        watch.abort();
    }
}

/// Beyond `auth.calls_per_second`, a principal's calls are answered
/// RESOURCE_EXHAUSTED with a RetryInfo saying when to retry; another
/// principal is not held up.
#[tokio::test]
async fn a_principal_beyond_its_rate_is_told_when_to_retry() {
    let (fast, other) = (new_token(), new_token());
    let file = PrincipalsFile::new(
        &(principal("fast", &fast, &[everything()]) + &principal("other", &other, &[everything()])),
    );
    let server = Partlog::start_with(&[
        ("PARTLOG_AUTH_TOKENS_FILE", &file.path()),
        ("PARTLOG_AUTH_CALLS_PER_SECOND", "3"),
    ])
    .await;
    let mut client = server.client().await;
    let describe = |token: &str| {
        as_principal(
            token,
            partlog::proto::DescribeStreamRequest {
                stream: "nosuch-rate".into(),
            },
        )
    };
    let mut codes = Vec::new();
    let mut exhausted = None;
    for _ in 0..5 {
        let status = client.describe_stream(describe(&fast)).await.unwrap_err();
        codes.push(status.code());
        if status.code() == Code::ResourceExhausted {
            exhausted = Some(status);
        }
    }
    assert_eq!(&codes[..3], [Code::NotFound; 3], "{codes:?}");
    let exhausted = exhausted.expect("a call beyond the rate");
    let retry = exhausted
        .get_details_retry_info()
        .and_then(|r| r.retry_delay)
        .expect("a RetryInfo with a delay");
    assert!(retry <= Duration::from_secs(1), "{retry:?}");
    let status = client.describe_stream(describe(&other)).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "another principal is served");
    tokio::time::sleep(retry).await;
    let status = client.describe_stream(describe(&fast)).await.unwrap_err();
    assert_eq!(
        status.code(),
        Code::NotFound,
        "served again after the delay"
    );
}
