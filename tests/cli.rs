//! The `partlog` client subcommands against a real partlog: exit codes and
//! messages, publish failures, `read --from-time`, `tail --commit` over many
//! records, and JSON output that `publish --format json` reads back.
//! (README.md's examples are run by tests/readme.rs.)

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::{unique_stream, Partlog};
use serde_json::Value;

/// What one CLI run did.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
            .collect()
    }
}

/// Runs `partlog ARGS` against `server` with `stdin` as standard input.
fn cli(server: &str, args: &[&str], stdin: &[u8]) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_partlog"))
        .args(args)
        .env("PARTLOG_SERVER", server)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run partlog");
    let mut input = child.stdin.take().expect("piped");
    let stdin = stdin.to_vec();
    // Written from a thread: a large input must not block reading the output.
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let output = child.wait_with_output().expect("wait for partlog");
    writer.join().expect("stdin writer");
    Run {
        code: output.status.code().expect("exited"),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn ok(server: &str, args: &[&str], stdin: &[u8]) -> Run {
    let run = cli(server, args, stdin);
    assert_eq!(run.code, 0, "partlog {args:?} failed: {run:?}");
    run
}

#[tokio::test]
async fn exit_codes_say_usage_error_or_failed_call() {
    let partlog = Partlog::start().await;
    let server = partlog.url();

    // 2: clap's usage errors and the CLI's own checks of values and input.
    for args in [
        &["tail", "s", "--from", "yesterday"][..],
        &["tail", "s", "--from", "committed"],
        &["tail", "s", "--commit"],
        &["commit", "s", "--group", "g", "0:1"],
        &["commit", "s", "--group", "g", "0=1", "0=2"],
        &["reset", "s", "--group", "g", "--to", "next"],
        &[
            "stream",
            "create",
            "s",
            "--partitions",
            "3",
            "--max-bytes",
            "lots",
        ],
        &["read", "s", "--partition", "0", "--from-time", "noon"],
        &["publish", "s", "--first-sequence", "3"],
        &["bogus"],
    ] {
        let run = cli(&server, args, b"");
        assert_eq!(run.code, 2, "partlog {args:?}: {run:?}");
        assert!(
            run.stderr.starts_with("error: "),
            "{args:?}: {}",
            run.stderr
        );
        assert!(run.stdout.is_empty(), "{args:?}: {}", run.stdout);
    }

    // 1: the call failed; the status code's name and partlog's message.
    let missing = unique_stream("cli-missing");
    let run = cli(&server, &["stream", "describe", &missing], b"");
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(
        run.stderr,
        format!("error: NOT_FOUND: stream {missing:?} does not exist\n")
    );
    let run = cli(&server, &["publish", &missing], b"k\tv\n");
    assert_eq!((run.code, run.stdout.as_str()), (1, ""), "{run:?}");
    assert!(run.stderr.starts_with("error: NOT_FOUND: "), "{run:?}");

    // Nothing listens on port 1.
    let run = cli("http://127.0.0.1:1", &["groups", "s"], b"");
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr
            .starts_with("error: UNAVAILABLE: cannot connect to partlog at 127.0.0.1:1: "),
        "{run:?}"
    );

    // A bad input line is a usage error naming the line; nothing was sent.
    let stream = unique_stream("cli-input");
    ok(
        &server,
        &["stream", "create", &stream, "--partitions", "1"],
        b"",
    );
    let run = cli(
        &server,
        &["publish", &stream, "--format", "json"],
        b"{\"key\": \"a\"}\n\n{\"key\": 7}\n",
    );
    assert_eq!(run.code, 2, "{run:?}");
    assert_eq!(
        run.stderr,
        "error: standard input line 3: key must be a string, not 7\n"
    );
    let read = ok(
        &server,
        &["read", &stream, "--partition", "0", "--json"],
        b"",
    );
    assert_eq!(
        read.stdout, "",
        "the batch before the bad line was not sent"
    );
    ok(&server, &["stream", "delete", &stream], b"");
}

#[tokio::test]
async fn a_batch_partlog_refuses_fails_publish_with_what_was_stored() {
    let partlog = Partlog::start_with(&[("PARTLOG_LIMITS_MAX_VALUE_BYTES", "8")]).await;
    let server = partlog.url();
    let stream = unique_stream("cli-refused");
    ok(
        &server,
        &["stream", "create", &stream, "--partitions", "2"],
        b"",
    );

    // One record per batch: the first two are stored, the third breaks the
    // value limit and ends the call, the fourth is never answered.
    let run = cli(
        &server,
        &["publish", &stream, "--batch", "1", "--json"],
        b"a\t1\nb\t2\nc\tmuch too long\nd\t4\n",
    );
    assert_eq!(run.code, 1, "{run:?}");
    let total = run.json_lines().pop().expect("a summary");
    assert_eq!(total["stored"], 2, "{run:?}");
    assert_eq!(total["failed"], 0, "{run:?}");
    assert!(
        run.stderr.starts_with("error: INVALID_ARGUMENT: "),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains(" not answered: they may or may not be stored"),
        "{}",
        run.stderr
    );
    ok(&server, &["stream", "delete", &stream], b"");
}

#[tokio::test]
async fn json_output_publishes_back_the_same_records() {
    let partlog = Partlog::start().await;
    let server = partlog.url();
    let (from, to) = (unique_stream("cli-from"), unique_stream("cli-to"));
    for stream in [&from, &to] {
        ok(
            &server,
            &["stream", "create", stream, "--partitions", "1"],
            b"",
        );
    }
    // Values that are not UTF-8, have control characters or are empty;
    // keys and headers with spaces and quotes.
    let mut input = Vec::new();
    for i in 0..300u32 {
        let value = match i % 3 {
            0 => serde_json::json!({ "base64": base64_of(&[0xff, 0, i as u8]) }),
            1 => serde_json::json!(format!("line\n\"{i}\"\t\u{1b}[0m")),
            _ => serde_json::json!(""),
        };
        let record = serde_json::json!({
            "key": format!("key {i}"),
            "value": value,
            "headers": { "n": i.to_string(), "quote": "\"" },
        });
        input.extend(record.to_string().into_bytes());
        input.push(b'\n');
    }
    ok(
        &server,
        &["publish", &from, "--format", "json", "--batch", "7"],
        &input,
    );

    let first = ok(&server, &["read", &from, "--partition", "0", "--json"], b"");
    ok(
        &server,
        &["publish", &to, "--format", "json"],
        first.stdout.as_bytes(),
    );
    let second = ok(&server, &["read", &to, "--partition", "0", "--json"], b"");

    let records = |run: &Run| -> Vec<Value> {
        run.json_lines()
            .into_iter()
            .map(|mut r| {
                // Where and when each copy was stored differ; nothing else.
                let object = r.as_object_mut().expect("an object");
                object.remove("timestamp");
                object.remove("offset");
                r
            })
            .collect()
    };
    assert_eq!(records(&first).len(), 300);
    assert_eq!(records(&first), records(&second));
    assert_eq!(
        first.json_lines()[0]["value"],
        serde_json::json!({ "base64": base64_of(&[0xff, 0, 0]) })
    );

    // Tables escape control characters: one line per record.
    let table = ok(
        &server,
        &["read", &to, "--partition", "0", "--max", "2"],
        b"",
    );
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", table.stdout);
    assert!(lines[1].ends_with("base64:/wAA"), "{}", lines[1]);
    assert!(
        lines[2].ends_with(r#"line\n"1"\t\u{1b}[0m"#),
        "{}",
        lines[2]
    );
    for stream in [&from, &to] {
        ok(&server, &["stream", "delete", stream], b"");
    }
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[tokio::test]
async fn read_from_a_time_starts_at_the_first_record_stored_at_or_after_it() {
    let partlog = Partlog::start().await;
    let server = partlog.url();
    let stream = unique_stream("cli-time");
    ok(
        &server,
        &["stream", "create", &stream, "--partitions", "1"],
        b"",
    );
    ok(&server, &["publish", &stream], b"a\n");
    ok(&server, &["publish", &stream], b"b\nc\n");
    let all = ok(
        &server,
        &["read", &stream, "--partition", "0", "--json"],
        b"",
    )
    .json_lines();
    assert_eq!(all.len(), 3);
    let time = |r: &Value| r["timestamp"].as_str().expect("a timestamp").to_owned();

    // From the second batch's time: its records, and any stored in the
    // same millisecond before them, in order to the end.
    let from_second = ok(
        &server,
        &[
            "read",
            &stream,
            "--partition",
            "0",
            "--json",
            "--from-time",
            &time(&all[1]),
        ],
        b"",
    )
    .json_lines();
    assert!(from_second.len() >= 2, "{from_second:?}");
    assert_eq!(from_second[..], all[all.len() - from_second.len()..]);
    assert!(from_second.iter().all(|r| time(r) >= time(&all[1])));

    // Before everything: all of them; after everything: none.
    let from_start = ok(
        &server,
        &[
            "read",
            &stream,
            "--partition",
            "0",
            "--json",
            "--from-time",
            "2000-01-01T00:00:00Z",
        ],
        b"",
    );
    assert_eq!(from_start.json_lines(), all);
    let from_future = ok(
        &server,
        &[
            "read",
            &stream,
            "--partition",
            "0",
            "--from-time",
            "2999-01-01T00:00:00+02:00",
        ],
        b"",
    );
    assert_eq!(from_future.stdout, "");
    ok(&server, &["stream", "delete", &stream], b"");
}

#[tokio::test]
async fn tail_commit_keeps_up_with_many_records_and_commits_the_last_printed() {
    let partlog = Partlog::start().await;
    let server = partlog.url();
    let stream = unique_stream("cli-tail");
    ok(
        &server,
        &["stream", "create", &stream, "--partitions", "3"],
        b"",
    );
    const RECORDS: usize = 20_000;
    let input: String = (0..RECORDS)
        .map(|i| format!("key-{}\t{}\n", i % 97, "v".repeat(200)))
        .collect();
    let published = ok(&server, &["publish", &stream, "--json"], input.as_bytes());
    let total = published.json_lines().pop().expect("a summary");
    assert_eq!(total["stored"], RECORDS);

    let max = RECORDS.to_string();
    let tailed = ok(
        &server,
        &[
            "tail", &stream, "--group", "g", "--commit", "--max", &max, "--window", "50", "--json",
        ],
        b"",
    );
    let mut last = [None; 3];
    let mut records = 0;
    for line in tailed.json_lines() {
        if let Some(offset) = line["offset"].as_u64() {
            let partition = line["partition"].as_u64().expect("a partition") as usize;
            assert!(last[partition] < Some(offset), "out of order: {line}");
            last[partition] = Some(offset);
            records += 1;
        }
    }
    assert_eq!(records, RECORDS);

    // The last commit left the group at the last record it printed.
    let offsets = ok(
        &server,
        &["offsets", &stream, "--group", "g", "--json"],
        b"",
    );
    for row in offsets.json_lines() {
        let partition = row["partition"].as_u64().expect("a partition") as usize;
        assert_eq!(row["committed"].as_u64(), last[partition], "{row}");
        assert_eq!(row["lag"], 0, "{row}");
        assert_eq!(row["source"], "LOCAL", "{row}");
    }
    let groups = ok(&server, &["groups", &stream, "--json"], b"");
    assert_eq!(groups.stdout, "{\"group\":\"g\"}\n");
    ok(&server, &["stream", "delete", &stream], b"");
}

/// Global options work anywhere on the line, as with kubectl or git:
/// before the subcommand, between, and after its arguments.
#[tokio::test]
async fn global_options_work_before_and_after_the_subcommand() {
    let partlog = Partlog::start().await;
    let server = partlog.url();
    let stream = unique_stream("cli-global");
    // PARTLOG_SERVER names a port nothing listens on: only --server reaches
    // partlog.
    let nowhere = "http://127.0.0.1:1";
    let created = ok(
        nowhere,
        &[
            "--server",
            &server,
            "--json",
            "stream",
            "create",
            &stream,
            "--partitions",
            "2",
        ],
        b"",
    );
    assert_eq!(created.json_lines().len(), 2, "{created:?}");
    let between = ok(
        nowhere,
        &["stream", "--server", &server, "describe", &stream],
        b"",
    );
    assert!(
        between.stdout.starts_with("PARTITION  STREAM"),
        "{between:?}"
    );
    let after = ok(
        nowhere,
        &["stream", "describe", &stream, "--server", &server, "--json"],
        b"",
    );
    assert_eq!(after.json_lines(), created.json_lines());
    ok(
        nowhere,
        &["--server", &server, "stream", "delete", &stream],
        b"",
    );
}

/// `partlog health` says whether partlog serves; exit 0 only when it does.
#[tokio::test]
async fn health_says_whether_partlog_serves() {
    let partlog = Partlog::start().await;
    let server = partlog.url();
    let serving = ok(&server, &["health", "--json"], b"");
    assert_eq!(
        serving.stdout,
        "{\"service\":\"partlog.v1.PartLog\",\"status\":\"SERVING\"}\n"
    );
    let unknown = cli(&server, &["health", "--service", "nosuch.Service"], b"");
    assert_eq!(unknown.code, 1, "{unknown:?}");
    assert!(
        unknown.stderr.starts_with("error: NOT_FOUND: "),
        "{unknown:?}"
    );
    let nowhere = cli("http://127.0.0.1:1", &["health"], b"");
    assert_eq!(nowhere.code, 1, "{nowhere:?}");
}
