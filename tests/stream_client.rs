//! The patched stream client library (`patches/rabbitmq-stream-client`)
//! against the broker: a closed connection's client is freed.
//!
//! The library makes a client the handler of its own dispatcher, which the
//! client holds: the cycle kept every connection ever opened alive after
//! it closed, with its buffers (a publishing connection's grows to the
//! largest batch it encoded) and tasks. partlog opens connections as
//! producers come and go and as it reconnects, so its memory grew with
//! every stream published to and deleted (about 0.9 MB per 12-partition
//! stream in `make bench`'s publish runs).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{broker_host, broker_port};
use rabbitmq_stream_client::types::MessageResult;
use rabbitmq_stream_client::{Client, ClientOptions};

#[tokio::test]
async fn a_closed_connection_lets_go_of_its_handler() {
    let options = ClientOptions::builder()
        .host(&broker_host())
        .port(broker_port())
        .build();
    let client = Client::connect(options)
        .await
        .expect("connect to the broker");
    // The handler owns a clone of `held`: while anything keeps the
    // connection's state, the count stays above one.
    let held = Arc::new(());
    let owned = held.clone();
    client
        .set_handler(move |_: MessageResult| {
            let _owned = &owned;
            async { Ok(()) }
        })
        .await;
    assert_eq!(Arc::strong_count(&held), 2);

    client.close().await.expect("close");
    drop(client);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while Arc::strong_count(&held) > 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the closed connection's client is still alive"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
