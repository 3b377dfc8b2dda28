//! The web console in a real browser: headless Chromium (scripts/browser.sh)
//! through chromedriver, against a real partlog with tokens and the real
//! broker. Every step asserts on what the page shows; what the page does is
//! checked through the gRPC API.
//!
//! The test writes screenshots of the streams, group and records pages to
//! docs/console/ when `PARTLOG_README_BLESS=1` (the README shows them), and
//! to target/console-screenshots/ otherwise.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use common::principals::{as_principal, everything, new_token, principal, PrincipalsFile};
use common::webdriver::Browser;
use common::{unique_stream, Partlog};
use partlog::proto::part_log_client::PartLogClient;
use partlog::proto::{self, CommitRequest, GetOffsetsRequest, PublishRecord, PublishRequest};
use serde_json::json;
use tonic::transport::Channel;

/// The console's samples in the test: a lag chart gets points quickly.
const SAMPLE_INTERVAL_MS: &str = "300";
/// How often the test's publisher writes a batch.
const PUBLISH_EVERY: Duration = Duration::from_millis(100);

/// Where the screenshots go; see the module docs.
fn screenshot_dir() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = match std::env::var_os("PARTLOG_README_BLESS") {
        Some(_) => root.join("docs/console"),
        None => root.join("target/console-screenshots"),
    };
    std::fs::create_dir_all(&dir).expect("screenshot directory");
    dir
}

async fn save_screenshot(browser: &Browser, name: &str) {
    let png = browser.screenshot().await;
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    let path = screenshot_dir().join(name);
    std::fs::write(&path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Publishes a small JSON order to each of `stream`'s `partitions` every
/// [`PUBLISH_EVERY`] until aborted.
fn spawn_publisher(
    mut client: PartLogClient<Channel>,
    token: String,
    stream: String,
    partitions: u32,
) -> tokio::task::JoinHandle<()> {
    // A customer whose key routes to each partition.
    let customers: Vec<String> = (0..partitions)
        .map(|p| {
            (0..)
                .map(|i| format!("customer-{i}"))
                .find(|key| partlog::routing::partition_for_key(key, partitions) == p)
                .expect("a key for every partition")
        })
        .collect();
    tokio::spawn(async move {
        for n in 0u64.. {
            let records = customers
                .iter()
                .map(|customer| PublishRecord {
                    key: customer.clone(),
                    value: json!({"order": n, "customer": customer, "items": [{"sku": "A-1", "qty": n % 3 + 1}]})
                        .to_string()
                        .into(),
                    headers: [("source".to_owned(), "console-test".to_owned())].into(),
                    ..Default::default()
                })
                .collect();
            let request = PublishRequest {
                stream: stream.clone(),
                records,
                ..Default::default()
            };
            client
                .publish(as_principal(&token, request))
                .await
                .expect("publish");
            tokio::time::sleep(PUBLISH_EVERY).await;
        }
    })
}

async fn offsets(
    client: &mut PartLogClient<Channel>,
    token: &str,
    stream: &str,
    group: &str,
) -> Vec<proto::PartitionOffsets> {
    let request = GetOffsetsRequest {
        group: group.into(),
        stream: stream.into(),
    };
    client
        .get_offsets(as_principal(token, request))
        .await
        .expect("GetOffsets")
        .into_inner()
        .partitions
}

/// A number the page shows, `None` for "–" or nothing.
fn shown_number(text: Option<String>) -> Option<f64> {
    text?.trim().parse().ok()
}

#[tokio::test]
async fn the_console_in_a_browser() {
    let admin = new_token();
    let wrong = new_token();
    let principals = PrincipalsFile::new(&principal("operator", &admin, &[everything()]));
    let server = Partlog::start_with(&[
        ("PARTLOG_AUTH_TOKENS_FILE", principals.path().as_str()),
        ("PARTLOG_CONSOLE_LISTEN", "127.0.0.1:0"),
        ("PARTLOG_CONSOLE_SAMPLE_INTERVAL_MS", SAMPLE_INTERVAL_MS),
    ])
    .await;
    assert!(
        !server.console_addr.is_empty(),
        "partlog logged no console address:\n{}",
        server.log()
    );
    let console = format!("http://{}/", server.console_addr);
    let mut client = server.client().await;
    let stream = unique_stream("console");
    let group = "billing";
    client
        .create_stream(as_principal(
            &admin,
            proto::CreateStreamRequest {
                stream: stream.clone(),
                partitions: 3,
                ..Default::default()
            },
        ))
        .await
        .expect("create stream");

    let browser = Browser::start(1280, 900).await;
    browser.goto(&console).await;

    // (a) A wrong token is refused: the message says so, and no data shows.
    browser.type_into("#token-input", &wrong).await;
    browser.click("#token-save").await;
    let refused = browser
        .wait_for("the refusal of a wrong token", || async {
            browser
                .text("#error")
                .await
                .filter(|t| t.contains("refused: UNAUTHENTICATED"))
        })
        .await;
    assert!(!refused.contains(&wrong), "the message repeats the token");
    assert!(browser.find("#streams-table").await.is_none(), "data shown");
    let kept = browser
        .script("return [sessionStorage.getItem('partlog.token'), localStorage.length, document.cookie, location.href]", json!([]))
        .await;
    assert_eq!(kept[0], json!(wrong), "the token is kept in the tab");
    assert_eq!((&kept[1], &kept[2]), (&json!(0), &json!("")), "{kept}");
    assert!(!kept[3].as_str().unwrap().contains(&wrong), "{kept}");

    // (b) With the right token the stream list shows the stream.
    browser.type_into("#token-input", &admin).await;
    browser.click("#token-save").await;
    let row = format!("tr[data-stream='{stream}']");
    browser.element(&row).await;
    assert_eq!(browser.text("#error").await.as_deref(), Some(""));

    // (c) Publishing makes the stream's in-rate move.
    let publisher = spawn_publisher(server.client().await, admin.clone(), stream.clone(), 3);
    browser.type_into("#streams-prefix", &stream).await;
    let rate_in = format!("{row} .rate-in");
    let rate = browser
        .wait_for("an in-rate above 0", || async {
            shown_number(browser.text(&rate_in).await).filter(|r| *r > 0.0)
        })
        .await;
    assert!(rate > 0.0);
    save_screenshot(&browser, "streams.png").await;

    // (d) A group that committed and then stalled while records keep
    // coming shows lag, and its chart a line of several samples (partition
    // p committed 5 * p records short of its tail, so the lines differ).
    let tails = offsets(&mut client, &admin, &stream, group).await;
    let committed: BTreeMap<u32, u64> = tails
        .iter()
        .filter_map(|p| {
            Some((
                p.partition,
                p.tail?.saturating_sub(5 * u64::from(p.partition)),
            ))
        })
        .collect();
    assert_eq!(committed.len(), 3, "every partition has records: {tails:?}");
    let commit = CommitRequest {
        group: group.into(),
        stream: stream.clone(),
        offsets: committed.into_iter().collect(),
    };
    client
        .commit(as_principal(&admin, commit))
        .await
        .expect("commit");
    browser.goto(&format!("{console}#/streams/{stream}")).await;
    browser.click(&format!("a[data-group='{group}']")).await;
    browser
        .wait_for("lag above 0 in the group's table", || async {
            shown_number(browser.text("#offsets-table tr[data-partition] .lag").await)
                .filter(|lag| *lag > 0.0)
        })
        .await;
    let points = browser
        .wait_for("a lag chart of two points or more", || async {
            let points = browser
                .script(
                    "const c = document.querySelector('#lag-chart'); \
                     return c ? Number(c.getAttribute('data-points')) : 0",
                    json!([]),
                )
                .await;
            points.as_u64().filter(|p| *p >= 2)
        })
        .await;
    assert!(points >= 2);
    let lines = browser
        .script(
            "return document.querySelectorAll('#lag-chart polyline').length",
            json!([]),
        )
        .await;
    assert_eq!(lines, json!(3), "a line per partition");
    // Enough samples for the screenshot's chart to show the lag growing.
    browser
        .wait_for("a lag chart of ten points", || async {
            let points = browser
                .script(
                    "return Number(document.querySelector('#lag-chart').getAttribute('data-points'))",
                    json!([]),
                )
                .await;
            points.as_u64().filter(|p| *p >= 10)
        })
        .await;
    save_screenshot(&browser, "group.png").await;

    // (e) Resetting the group's offsets through the page, confirmed,
    // changes what GetOffsets answers: to FIRST, nothing is committed.
    let before = offsets(&mut client, &admin, &stream, group).await;
    assert!(before.iter().all(|p| p.committed.is_some()), "{before:?}");
    browser
        .script(
            "document.querySelector('#reset-to').value = 'first'",
            json!([]),
        )
        .await;
    browser.click("#reset-submit").await;
    browser
        .wait_for("the reset's confirmation", || async {
            browser
                .text("#confirm-text")
                .await
                .filter(|t| t.contains(group) && t.contains("first"))
        })
        .await;
    let unchanged = offsets(&mut client, &admin, &stream, group).await;
    assert!(
        unchanged.iter().all(|p| p.committed.is_some()),
        "reset before it was confirmed: {unchanged:?}"
    );
    browser.click("#confirm-ok").await;
    browser
        .wait_for("the reset's result", || async {
            browser
                .text("#reset-done")
                .await
                .filter(|t| t.starts_with("Reset to first"))
        })
        .await;
    let after = offsets(&mut client, &admin, &stream, group).await;
    assert!(after.iter().all(|p| p.committed.is_none()), "{after:?}");

    // A member of the group joins: the group page names it, active, on
    // every partition (DescribeGroup: the broker's view of all instances).
    let subscription = client
        .subscribe(as_principal(
            &admin,
            proto::SubscribeRequest {
                stream: stream.clone(),
                group: group.into(),
                ..Default::default()
            },
        ))
        .await
        .expect("Subscribe")
        .into_inner();
    browser
        .goto(&format!("{console}#/streams/{stream}/groups/{group}"))
        .await;
    let member = format!("● {}#", server.addr);
    browser
        .wait_for("the member, active, on every partition", || async {
            let shown = browser
                .script(
                    "return [...document.querySelectorAll('#offsets-table td.member')]\
                     .map((td) => td.textContent)",
                    json!([]),
                )
                .await;
            let cells: Vec<String> = serde_json::from_value(shown).unwrap_or_default();
            (cells.len() == 3 && cells.iter().all(|c| c.starts_with(&member))).then_some(())
        })
        .await;
    drop(subscription);

    // Growing the stream through its page, confirmed, while records keep
    // coming: the partitions table and the growths show it, and the
    // records page shows partition 0's epoch marker where it is.
    browser.goto(&format!("{console}#/streams/{stream}")).await;
    browser.type_into("#grow-partitions", "4").await;
    browser.click("#grow-submit").await;
    browser
        .wait_for("the growth's confirmation", || async {
            browser
                .text("#confirm-text")
                .await
                .filter(|t| t.contains("4 partitions"))
        })
        .await;
    browser.click("#confirm-ok").await;
    browser
        .wait_for("the growth's result", || async {
            browser
                .text("#grow-done")
                .await
                .filter(|t| t == "Grown to 4 partitions.")
        })
        .await;
    browser
        .wait_for("the growth in the stream's page", || async {
            let rows = browser
                .script(
                    "return document.querySelectorAll('#partitions-table tr[data-partition]').length",
                    json!([]),
                )
                .await;
            let grew = browser.text("#epochs-table td.grew").await;
            (rows == json!(4) && grew.as_deref() == Some("3 → 4")).then_some(())
        })
        .await;
    let described = client
        .describe_stream(as_principal(
            &admin,
            proto::DescribeStreamRequest {
                stream: stream.clone(),
            },
        ))
        .await
        .expect("describe")
        .into_inner()
        .stream
        .unwrap();
    let marker = described.epochs[0].marker_offsets[0];
    browser
        .goto(&format!("{console}#/streams/{stream}/records/0"))
        .await;
    browser
        .type_into("#records-at", &marker.saturating_sub(2).to_string())
        .await;
    browser.click("#records-read").await;
    browser
        .element(&format!("#records-table tr[data-marker='{marker}']"))
        .await;

    // The records page: a page of a partition's records, values as
    // pretty-printed JSON, and a live tail that pauses.
    browser
        .goto(&format!("{console}#/streams/{stream}/records/0"))
        .await;
    browser
        .element("#records-table tr[data-offset] td.value.json")
        .await;
    browser.click("#tail-toggle").await;
    browser
        .wait_for("records in the live tail", || async {
            browser.find("#tail-table tbody tr[data-offset]").await
        })
        .await;
    browser.click("#tail-toggle").await;
    assert_eq!(browser.text("#tail-state").await.as_deref(), Some("paused"));
    browser.script("window.scrollTo(0, 0)", json!([])).await;
    save_screenshot(&browser, "records.png").await;

    // A narrow window: the page still fits its width (tables scroll within).
    browser.resize(400, 900).await;
    browser.goto(&format!("{console}#/streams")).await;
    browser.element(&row).await;
    let overflow = browser
        .script(
            "return document.documentElement.scrollWidth - window.innerWidth",
            json!([]),
        )
        .await;
    assert!(
        overflow.as_i64().unwrap() <= 0,
        "the page is wider than the window: {overflow}"
    );

    publisher.abort();
    drop(browser);
    client
        .delete_stream(as_principal(
            &admin,
            proto::DeleteStreamRequest {
                stream: stream.clone(),
            },
        ))
        .await
        .expect("delete stream");
    let log = server.log();
    for token in [&admin, &wrong] {
        assert!(!log.contains(token.as_str()), "partlog logged a token");
    }
    // Console calls are the API's: the refused one is in the audit log.
    assert!(log.contains("call refused"), "{log}");
}

/// With `server.tls` the console is HTTPS with the server's certificate (a
/// client that trusts the CA gets the page and the API over HTTP/1.1), and
/// it answers nothing in clear.
#[tokio::test]
async fn the_console_serves_https_with_the_servers_certificate() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

    let pki = common::TestPki::new("partlog console CA");
    let issued = pki.server();
    let (cert, key) = (
        issued.cert.display().to_string(),
        issued.key.display().to_string(),
    );
    let client_tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(pki.ca_pem()))
        .domain_name("localhost");
    let server = Partlog::start_tls(
        &[
            ("PARTLOG_SERVER_TLS_CERT_FILE", cert.as_str()),
            ("PARTLOG_SERVER_TLS_KEY_FILE", key.as_str()),
            ("PARTLOG_CONSOLE_LISTEN", "127.0.0.1:0"),
        ],
        client_tls,
    )
    .await;
    assert!(!server.console_addr.is_empty(), "{}", server.log());

    let mut roots = rustls::RootCertStore::empty();
    let ca = CertificateDer::from_pem_slice(pki.ca_pem().as_bytes()).expect("CA PEM");
    roots.add(ca).expect("CA");
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let get = |path: &'static str| {
        let connector = connector.clone();
        let addr = server.console_addr.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect(&addr)
                .await
                .expect("connect");
            let name = ServerName::try_from("localhost").unwrap();
            let mut tls = connector.connect(name, tcp).await.expect("TLS handshake");
            let request =
                format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n");
            tls.write_all(request.as_bytes()).await.unwrap();
            let mut answer = Vec::new();
            // A server that closes without close_notify ends the read with an
            // error after the whole answer; the answer is what counts.
            let _ = tls.read_to_end(&mut answer).await;
            String::from_utf8_lossy(&answer).into_owned()
        }
    };
    let page = get("/").await;
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("console.js"), "{page}");
    let streams = get("/api/streams").await;
    assert!(streams.starts_with("HTTP/1.1 200"), "{streams}");
    assert!(streams.contains("\"streams\""), "{streams}");

    // In clear the listener answers no HTTP: a TLS server reads the request
    // as a broken handshake and closes.
    let mut clear = tokio::net::TcpStream::connect(&server.console_addr)
        .await
        .expect("connect");
    clear
        .write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), clear.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the console keeps a clear connection open");
    assert!(
        !answer.starts_with(b"HTTP/"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
}
