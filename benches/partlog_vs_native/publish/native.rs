//! The native client's producers as publishing paths.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use futures::FutureExt;
use partlog::record::KEY_PROPERTY;
use partlog::routing::partition_for_key;
use rabbitmq_stream_client::error::ProducerPublishError;
use rabbitmq_stream_client::types::{
    HashRoutingMurmurStrategy, Message, RoutingStrategy, SimpleValue, SuperStreamProducer,
};
use rabbitmq_stream_client::{ConfirmationStatus, NoDedup, Producer};
use tokio::sync::oneshot;

use super::{Confirmed, PublishPath, Target};
use crate::records::Record;
use crate::setup::{partition_stream, Result};

/// `clients` super stream producers, each its own connections.
pub async fn super_stream_paths(
    target: &Target<'_>,
    clients: usize,
) -> Result<Vec<Box<dyn PublishPath>>> {
    let mut paths: Vec<Box<dyn PublishPath>> = Vec::new();
    for _ in 0..clients {
        let producer = target
            .environment
            .super_stream_producer(RoutingStrategy::HashRoutingStrategy(
                HashRoutingMurmurStrategy {
                    routing_extractor: &key_property,
                },
            ))
            .client_provided_name("partlog-bench")
            .build(target.stream)
            .await?;
        paths.push(Box::new(NativeSuperStream { producer }));
    }
    Ok(paths)
}

/// One producer per partition, shared by `clients` paths.
pub async fn per_partition_paths(
    target: &Target<'_>,
    clients: usize,
) -> Result<Vec<Box<dyn PublishPath>>> {
    let mut producers = Vec::new();
    for p in 0..target.partitions {
        producers.push(
            target
                .environment
                .producer()
                .batch_size(native_frame_records(target.batch, target.value_size))
                .client_provided_name("partlog-bench")
                .build(&partition_stream(target.stream, p))
                .await?,
        );
    }
    let producers = Arc::new(producers);
    let mut paths: Vec<Box<dyn PublishPath>> = Vec::new();
    for _ in 0..clients {
        paths.push(Box::new(NativePerPartition {
            producers: producers.clone(),
        }));
    }
    Ok(paths)
}

/// The native client sends each producer's queued messages as one frame of
/// up to `batch_size` messages, and it negotiates frames of at most 1 MiB
/// (0.11 has no setting for it), so a producer's batch is capped to fit.
fn native_frame_records(batch: usize, value_size: usize) -> usize {
    /// Key, AMQP sections and publishing id per message, generously.
    const OVERHEAD: usize = 128;
    const FRAME: usize = 1024 * 1024 - 4096;
    batch.min(FRAME / (value_size + OVERHEAD)).max(1)
}

/// The routing key of a native message: partlog's key property.
fn key_property(message: &Message) -> String {
    match message
        .application_properties()
        .and_then(|p| p.get(KEY_PROPERTY))
    {
        Some(SimpleValue::String(key)) => key.clone(),
        _ => String::new(),
    }
}

/// A record as a native application builds it: what partlog stores.
pub fn native_message(record: Record) -> Message {
    Message::builder()
        .body(record.value)
        .application_properties()
        .insert(KEY_PROPERTY, record.key)
        .message_builder()
        .build()
}

/// Counts one batch's native confirms and settles when the last arrives.
struct BatchConfirm {
    records: u64,
    remaining: AtomicU64,
    refused: AtomicU64,
    settle: Mutex<Option<oneshot::Sender<Result<u64>>>>,
}

impl BatchConfirm {
    fn new(records: usize) -> (Arc<BatchConfirm>, Confirmed) {
        let (settle, settled) = oneshot::channel();
        let confirm = Arc::new(BatchConfirm {
            records: records as u64,
            remaining: AtomicU64::new(records as u64),
            refused: AtomicU64::new(0),
            settle: Mutex::new(Some(settle)),
        });
        let settled = settled
            .map(|r| r.unwrap_or_else(|_| Err("native confirm lost".into())))
            .boxed();
        (confirm, settled)
    }

    fn confirm(&self, status: std::result::Result<ConfirmationStatus, ProducerPublishError>) {
        if !matches!(&status, Ok(s) if s.confirmed()) {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            let refused = self.refused.load(Ordering::Relaxed);
            let result = if refused == 0 {
                Ok(self.records)
            } else {
                Err(format!("the broker refused {refused} of {} records", self.records).into())
            };
            if let Some(settle) = self.settle.lock().unwrap().take() {
                let _ = settle.send(result);
            }
        }
    }

    /// The confirmation callback the native producers take.
    fn callback(
        self: &Arc<Self>,
    ) -> impl Fn(
        std::result::Result<ConfirmationStatus, ProducerPublishError>,
    ) -> futures::future::Ready<()>
           + Clone
           + Send
           + Sync
           + 'static {
        let confirm = self.clone();
        move |status| {
            confirm.confirm(status);
            futures::future::ready(())
        }
    }
}

struct NativeSuperStream {
    producer: SuperStreamProducer<NoDedup>,
}

impl PublishPath for NativeSuperStream {
    fn submit(&mut self, batch: Vec<Record>) -> BoxFuture<'_, Result<Confirmed>> {
        async move {
            let (confirm, confirmed) = BatchConfirm::new(batch.len());
            for record in batch {
                self.producer
                    .send(native_message(record), confirm.callback())
                    .await
                    .map_err(|e| format!("native super stream send: {e:?}"))?;
            }
            Ok(confirmed)
        }
        .boxed()
    }

    fn close(self: Box<Self>) -> BoxFuture<'static, ()> {
        async move {
            let _ = self.producer.close().await;
        }
        .boxed()
    }
}

struct NativePerPartition {
    producers: Arc<Vec<Producer<NoDedup>>>,
}

impl PublishPath for NativePerPartition {
    fn submit(&mut self, batch: Vec<Record>) -> BoxFuture<'_, Result<Confirmed>> {
        async move {
            let (confirm, confirmed) = BatchConfirm::new(batch.len());
            let partitions = self.producers.len() as u32;
            let mut routed: Vec<Vec<Message>> = vec![Vec::new(); partitions as usize];
            for record in batch {
                let partition = partition_for_key(&record.key, partitions);
                routed[partition as usize].push(native_message(record));
            }
            for (producer, messages) in self.producers.iter().zip(routed) {
                if !messages.is_empty() {
                    producer
                        .batch_send(messages, confirm.callback())
                        .await
                        .map_err(|e| format!("native batch send: {e:?}"))?;
                }
            }
            Ok(confirmed)
        }
        .boxed()
    }

    fn close(self: Box<Self>) -> BoxFuture<'static, ()> {
        async move {
            // The last path to close closes the shared producers.
            if let Ok(producers) = Arc::try_unwrap(self.producers) {
                for producer in producers {
                    let _ = producer.close().await;
                }
            }
        }
        .boxed()
    }
}
