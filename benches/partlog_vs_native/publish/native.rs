//! The native client's producers as publishing paths.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use partlog::record::KEY_PROPERTY;
use partlog::routing::partition_for_key;
use rabbitmq_stream_client::error::ProducerPublishError;
use rabbitmq_stream_client::types::{
    HashRoutingMurmurStrategy, Message, RoutingStrategy, SimpleValue, SuperStreamProducer,
};
use rabbitmq_stream_client::{ConfirmationStatus, Dedup, NoDedup, Producer};
use tokio::sync::oneshot;

use super::{Confirmed, PublishPath, Target};
use crate::records::Record;
use crate::setup::{partition_stream, Result};

/// Holds a native producer so that it is never dropped on a runtime worker:
/// 0.11's producers close themselves in `Drop` by blocking on a future that
/// needs the runtime's workers, which hangs the worker (and, with two
/// workers, the run) when the producer was not closed before — after a
/// failed measurement, say. Dropped, it goes to a blocking thread instead.
struct Aside<T: Send + 'static>(Option<T>);

/// Longest wait for a producer to close; a close that hangs (the broker
/// went away) keeps its own task.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

impl<T: Send + 'static> Aside<T> {
    fn new(value: T) -> Aside<T> {
        Aside(Some(value))
    }

    fn get(&self) -> &T {
        self.0.as_ref().expect("present until closed or dropped")
    }

    fn get_mut(&mut self) -> &mut T {
        self.0.as_mut().expect("present until closed or dropped")
    }

    /// Closes the value with `close` on a task of its own.
    async fn close<Fut>(mut self, close: impl FnOnce(T) -> Fut + Send + 'static)
    where
        Fut: Future + Send + 'static,
    {
        let value = self.0.take().expect("present until closed or dropped");
        let task = tokio::spawn(async move {
            close(value).await;
        });
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, task).await;
    }
}

impl<T: Send + 'static> Drop for Aside<T> {
    fn drop(&mut self) {
        if let Some(value) = self.0.take() {
            tokio::task::spawn_blocking(move || drop(value));
        }
    }
}

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
        paths.push(Box::new(NativeSuperStream {
            producer: Aside::new(producer),
        }));
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
        let producer = target
            .environment
            .producer()
            .batch_size(native_frame_records(target.batch, target.value_size))
            .client_provided_name("partlog-bench")
            .build(&partition_stream(target.stream, p))
            .await?;
        producers.push(Aside::new(producer));
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
pub fn key_property(message: &Message) -> String {
    match message
        .application_properties()
        .and_then(|p| p.get(KEY_PROPERTY))
    {
        Some(SimpleValue::String(key)) => key.clone(),
        _ => String::new(),
    }
}

/// A record as a native application builds it: what partlog stores; a
/// named producer's messages carry their publishing id.
fn native_message(record: Record, publishing_id: Option<u64>) -> Message {
    let mut builder = Message::builder();
    if let Some(id) = publishing_id {
        builder = builder.publishing_id(id);
    }
    builder
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
    producer: Aside<SuperStreamProducer<NoDedup>>,
}

impl PublishPath for NativeSuperStream {
    fn submit(&mut self, batch: Vec<Record>) -> BoxFuture<'_, Result<Confirmed>> {
        async move {
            let (confirm, confirmed) = BatchConfirm::new(batch.len());
            for record in batch {
                self.producer
                    .get_mut()
                    .send(native_message(record, None), confirm.callback())
                    .await
                    .map_err(|e| format!("native super stream send: {e:?}"))?;
            }
            Ok(confirmed)
        }
        .boxed()
    }

    fn close(self: Box<Self>) -> BoxFuture<'static, ()> {
        async move {
            self.producer
                .close(|producer| async move {
                    let _ = producer.close().await;
                })
                .await;
        }
        .boxed()
    }
}

struct NativePerPartition {
    producers: Arc<Vec<Aside<Producer<NoDedup>>>>,
}

impl PublishPath for NativePerPartition {
    fn submit(&mut self, batch: Vec<Record>) -> BoxFuture<'_, Result<Confirmed>> {
        async move {
            let (confirm, confirmed) = BatchConfirm::new(batch.len());
            let partitions = self.producers.len() as u32;
            let mut routed: Vec<Vec<Message>> = vec![Vec::new(); partitions as usize];
            for record in batch {
                let partition = partition_for_key(&record.key, partitions);
                routed[partition as usize].push(native_message(record, None));
            }
            for (producer, messages) in self.producers.iter().zip(routed) {
                if !messages.is_empty() {
                    producer
                        .get()
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
                    close_producer(producer).await;
                }
            }
        }
        .boxed()
    }
}

async fn close_producer<T: Send + Sync + 'static>(producer: Aside<Producer<T>>) {
    producer
        .close(|producer| async move {
            let _ = producer.close().await;
        })
        .await;
}

/// A named producer on one partition stream: the broker stores a message
/// only when its publishing id is above the last one stored under the
/// name (deduplication).
pub struct NamedProducer(Aside<Producer<Dedup>>);

impl NamedProducer {
    pub async fn open(target: &Target<'_>, partition: u32, name: &str) -> Result<NamedProducer> {
        let producer = target
            .environment
            .producer()
            .name(name)
            .batch_size(native_frame_records(target.batch, target.value_size))
            .client_provided_name("partlog-bench")
            .build(&partition_stream(target.stream, partition))
            .await?;
        Ok(NamedProducer(Aside::new(producer)))
    }

    /// Sends records with their publishing ids.
    pub async fn send(&mut self, records: Vec<(u64, Record)>) -> Result<Confirmed> {
        let (confirm, confirmed) = BatchConfirm::new(records.len());
        let messages = records
            .into_iter()
            .map(|(id, record)| native_message(record, Some(id)))
            .collect();
        self.0
            .get_mut()
            .batch_send(messages, confirm.callback())
            .await
            .map_err(|e| format!("native named batch send: {e:?}"))?;
        Ok(confirmed)
    }

    pub async fn close(self) {
        close_producer(self.0).await;
    }
}
