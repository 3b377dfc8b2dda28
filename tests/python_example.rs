//! examples/python/ against a real partlog: the proto stays usable from
//! stubs that grpcio-tools generates.
//!
//! The example runs in a virtualenv filled from
//! `examples/python/requirements.txt` ([`common::python`]).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{python, unique_stream, Partlog};

fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/python")
}

#[tokio::test]
async fn the_python_example_runs_against_partlog() {
    let venv = python::virtualenv(&example_dir().join("requirements.txt"));
    let partlog = Partlog::start().await;
    let stream = unique_stream("python-example");

    let output = Command::new(venv.join("bin/python"))
        .arg(example_dir().join("partlog_example.py"))
        .args(["--server", &partlog.addr, "--stream", &stream])
        .output()
        .expect("run the Python example");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the Python example failed ({}):\n{stdout}{}\npartlog's log:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr),
        partlog.log()
    );
    let lines: Vec<&str> = stdout.lines().collect();

    // Events come partition by partition in offset order; partitions
    // interleave as they come, so they are compared in a fixed order.
    let (mut events, steps): (Vec<&str>, Vec<&str>) = lines
        .iter()
        .partition(|l| l.starts_with("assignment:") || l.starts_with("record:"));
    let partition_2: Vec<&str> = events
        .iter()
        .copied()
        .filter(|l| l.starts_with("record: partition 2 "))
        .collect();
    assert_eq!(
        partition_2,
        [
            r#"record: partition 2 offset 0 key customer-1001 value {"total": 12}"#,
            r#"record: partition 2 offset 1 key customer-1001 value {"total": 5}"#,
        ]
    );
    events.sort_unstable();
    assert_eq!(
        events,
        [
            "assignment: partition 0 ASSIGNMENT_STATE_ACTIVE",
            "assignment: partition 1 ASSIGNMENT_STATE_ACTIVE",
            "assignment: partition 2 ASSIGNMENT_STATE_ACTIVE",
            r#"record: partition 0 offset 0 key customer-1002 value {"total": 7}"#,
            r#"record: partition 1 offset 0 key customer-1003 value {"total": 30}"#,
            r#"record: partition 2 offset 0 key customer-1001 value {"total": 12}"#,
            r#"record: partition 2 offset 1 key customer-1001 value {"total": 5}"#,
        ]
    );
    let expected_steps = [
        format!("created {stream} with 3 partitions"),
        "published customer-1001 to partition 2".into(),
        "published customer-1002 to partition 0".into(),
        "published customer-1003 to partition 1".into(),
        "published customer-1001 to partition 2".into(),
        "committed: partition 0 offset 0".into(),
        "committed: partition 1 offset 0".into(),
        "committed: partition 2 offset 1".into(),
        "offsets: partition 0 committed 0 tail 0 lag 0".into(),
        "offsets: partition 1 committed 0 tail 0 lag 0".into(),
        "offsets: partition 2 committed 1 tail 1 lag 0".into(),
        format!("deleted {stream}"),
        format!("describe {stream}: NOT_FOUND (STREAM_NOT_FOUND)"),
    ];
    assert_eq!(steps, expected_steps, "the example printed:\n{stdout}");

    // partlog agrees: the stream the example deleted is gone.
    let mut client = partlog.client().await;
    let described = client
        .describe_stream(partlog::proto::DescribeStreamRequest {
            stream: stream.clone(),
        })
        .await;
    assert_eq!(
        described.map(|_| ()).unwrap_err().code(),
        tonic::Code::NotFound,
        "{stream} still exists after the example deleted it"
    );
}
