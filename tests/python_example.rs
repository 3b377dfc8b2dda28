//! examples/python/ against a real partlog: the proto stays usable from
//! stubs that grpcio-tools generates.
//!
//! The example runs in a virtualenv under the target directory, made with
//! `python3 -m venv` and filled by pip from `examples/python/requirements.txt`
//! once per content of that file (later runs reuse it). Without python3,
//! venv, pip or PyPI the test fails, saying which step failed.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{unique_stream, Partlog};

fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/python")
}

/// FNV-1a: a hash that stays the same across Rust versions, for the
/// virtualenv's directory name.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Runs a setup step and fails the test with its output if it fails.
fn setup_step(what: &str, command: &mut Command) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {command:?}: {e} (is python3 installed?)"));
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The virtualenv for the current requirements, made if missing.
fn virtualenv() -> PathBuf {
    let requirements = example_dir().join("requirements.txt");
    let pinned = std::fs::read(&requirements).expect("read examples/python/requirements.txt");
    let name = format!("python-example-venv-{:016x}", fnv1a(&pinned));
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    if venv.join("ready").exists() {
        return venv;
    }
    // Built aside and renamed into place, so that a run that dies half way
    // or a concurrent run never leaves a half-filled virtualenv behind.
    let building = venv.with_extension(format!("building-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&building);
    setup_step(
        "python3 -m venv",
        Command::new("python3").args(["-m", "venv"]).arg(&building),
    );
    setup_step(
        "pip install -r examples/python/requirements.txt",
        Command::new(building.join("bin/python"))
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .arg("-r")
            .arg(&requirements),
    );
    std::fs::write(building.join("ready"), b"").expect("mark the virtualenv ready");
    if std::fs::rename(&building, &venv).is_err() {
        // Another run finished first; use its virtualenv.
        let _ = std::fs::remove_dir_all(&building);
        assert!(venv.join("ready").exists(), "no virtualenv at {venv:?}");
    }
    venv
}

#[tokio::test]
async fn the_python_example_runs_against_partlog() {
    let venv = virtualenv();
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
