//! A CreateStream whose partitions cannot start is undone: partlog deletes
//! what the broker created and answers FAILED_PRECONDITION, never a code
//! that invites retrying a permanent failure.
//!
//! The broker is made unable to start partitions by taking write access to
//! its stream data directory away for the duration of one call, which needs
//! the local broker of `scripts/rabbitmq.sh` (and root, as the script does).
//! It is a test binary of its own so that no other test creates streams
//! meanwhile.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;

use common::{unique_stream, Partlog};
use partlog::proto::{CreateStreamRequest, DescribeStreamRequest};
use tonic::Code;

/// The local broker's stream data directory.
fn stream_dir() -> PathBuf {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/rabbitmq.sh");
    let out = Command::new(script)
        .arg("stream-dir")
        .output()
        .expect("run the broker script");
    assert!(
        out.status.success(),
        "scripts/rabbitmq.sh stream-dir failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    assert!(
        dir.is_dir(),
        "{} is not a directory: this test needs the broker of scripts/rabbitmq.sh",
        dir.display()
    );
    dir
}

/// Restores the directory's mode when dropped, also if the test panics.
struct ReadOnly {
    dir: PathBuf,
    mode: u32,
}

impl ReadOnly {
    fn set(dir: PathBuf) -> ReadOnly {
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).unwrap();
        ReadOnly { dir, mode }
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        let _ = std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(self.mode));
    }
}

#[tokio::test]
async fn a_stream_whose_partitions_cannot_start_is_deleted_again() {
    // The create waits for its partitions up to the request timeout.
    let server = Partlog::start_with(&[("PARTLOG_BROKER_REQUEST_TIMEOUT_MS", "3000")]).await;
    let mut client = server.client().await;
    let stream = unique_stream("cannot-start");

    let read_only = ReadOnly::set(stream_dir());
    let created = client
        .create_stream(CreateStreamRequest {
            stream: stream.clone(),
            partitions: 2,
            ..Default::default()
        })
        .await;
    drop(read_only);

    let err = created.expect_err("partitions that cannot start");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("deleted it again"),
        "{}",
        err.message()
    );
    let described = client
        .describe_stream(DescribeStreamRequest {
            stream: stream.clone(),
        })
        .await
        .expect_err("nothing left");
    assert_eq!(described.code(), Code::NotFound, "{described:?}");

    // The name is free again and the broker healthy.
    common::create_stream(&mut client, &stream, 2).await;
    common::publish_ok(&mut client, &stream, vec![common::record("k", "v")]).await;
}
