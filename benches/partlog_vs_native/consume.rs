//! Consuming every partition of a super stream: partlog `Subscribe` (no
//! group), a partlog `Read` loop, native consumers — each feeding a
//! [`Tally`] until it has its share of the records.

use std::sync::Arc;

use futures::StreamExt;
use partlog::proto::start_position::{First, Next, Position};
use partlog::proto::subscribe_response::Event;
use partlog::proto::{AssignmentState, ReadRequest, StartPosition, SubscribeRequest};
use rabbitmq_stream_client::types::OffsetSpecification;
use tokio::task::JoinHandle;

use crate::bench::{Bench, Variant};
use crate::report::Side;
use crate::setup::{partition_stream, Result};
use crate::tally::Tally;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumeVariant {
    /// One `Subscribe` call for all partitions, no group.
    PartlogSubscribe,
    /// `Read` of up to `READ_RECORDS` per call, a loop per partition, the
    /// partitions in parallel, each on its own channel.
    PartlogRead,
    /// One native consumer per partition stream: the library's consumer
    /// at its best (a super stream consumer funnels the same consumers into
    /// one channel).
    NativeConsumer,
}

impl Variant for ConsumeVariant {
    fn side(self) -> Side {
        match self {
            ConsumeVariant::PartlogSubscribe | ConsumeVariant::PartlogRead => Side::Partlog,
            ConsumeVariant::NativeConsumer => Side::Native,
        }
    }

    fn id(self) -> &'static str {
        match self {
            ConsumeVariant::PartlogSubscribe => "partlog-subscribe",
            ConsumeVariant::PartlogRead => "partlog-read-loop",
            ConsumeVariant::NativeConsumer => "native-consumer-per-partition",
        }
    }
}

impl ConsumeVariant {
    pub fn label(self) -> &'static str {
        match self {
            ConsumeVariant::PartlogSubscribe => "Subscribe",
            ConsumeVariant::PartlogRead => "Read loop",
            ConsumeVariant::NativeConsumer => "native Consumer per partition",
        }
    }
}

/// Where consumers start in every partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum From {
    First,
    /// Only records published after the consumer attached.
    Next,
}

/// Records per `Read` call.
const READ_RECORDS: u32 = 10_000;

/// Consumers reading from the first record until each has its share.
pub struct Consumers {
    tasks: Vec<JoinHandle<Result<()>>>,
}

impl Consumers {
    /// Starts `variant` on every partition of `stream` and returns once its
    /// subscriptions are attached; each consumer stops after
    /// `expected[partition]` records of its partitions.
    pub async fn start(
        bench: &Bench,
        variant: ConsumeVariant,
        stream: &str,
        from: From,
        expected: Vec<u64>,
        tally: Arc<Tally>,
    ) -> Result<Consumers> {
        let tasks = match variant {
            ConsumeVariant::PartlogSubscribe => {
                vec![subscribe(bench, stream, from, expected.iter().sum(), tally).await?]
            }
            ConsumeVariant::PartlogRead => {
                if from != From::First {
                    return Err("a Read loop reads from the first record".into());
                }
                let mut tasks = Vec::new();
                for (partition, &count) in (0..).zip(&expected) {
                    tasks.push(read_loop(bench, stream, partition, count, tally.clone()).await?);
                }
                tasks
            }
            ConsumeVariant::NativeConsumer => {
                let mut tasks = Vec::new();
                for (partition, &count) in (0..).zip(&expected) {
                    let consumer = native(bench, stream, partition, from, count, tally.clone());
                    tasks.push(consumer.await?);
                }
                tasks
            }
        };
        Ok(Consumers { tasks })
    }

    /// Waits until every consumer has its share, or fails when one fails
    /// or all stall.
    pub async fn finish(self, tally: &Tally) -> Result<()> {
        let aborts: Vec<_> = self.tasks.iter().map(|t| t.abort_handle()).collect();
        let all = futures::future::try_join_all(
            self.tasks
                .into_iter()
                .map(|t| async move { t.await.map_err(|e| -> crate::setup::Error { e.into() })? }),
        );
        let result = tokio::select! {
            done = all => done.map(|_| ()),
            // Ends early only when the consumers stall.
            stalled = stalled(tally) => stalled,
        };
        for abort in aborts {
            abort.abort();
        }
        result
    }
}

/// Fails when the tally stalls; never returns once it completes.
async fn stalled(tally: &Tally) -> Result<()> {
    tally.complete().await?;
    std::future::pending().await
}

async fn subscribe(
    bench: &Bench,
    stream: &str,
    from: From,
    expected: u64,
    tally: Arc<Tally>,
) -> Result<JoinHandle<Result<()>>> {
    let partitions = tally.partitions();
    let position = match from {
        From::First => Position::First(First {}),
        From::Next => Position::Next(Next {}),
    };
    let mut events = bench
        .partlog
        .client()
        .await?
        .subscribe(SubscribeRequest {
            stream: stream.to_owned(),
            start: Some(StartPosition {
                position: Some(position),
            }),
            ..Default::default()
        })
        .await?
        .into_inner();
    // Attached once every partition reported ACTIVE; records may come
    // before the last ACTIVE event.
    let mut active = 0;
    let mut received = 0u64;
    while active < partitions {
        match events.message().await?.and_then(|m| m.event) {
            Some(Event::Assignment(a)) if a.state() == AssignmentState::Active => active += 1,
            Some(Event::Record(r)) => {
                tally.record(r.partition, r.offset, &r.value);
                received += 1;
            }
            Some(_) => {}
            None => return Err("Subscribe ended before every partition was active".into()),
        }
    }
    Ok(tokio::spawn(async move {
        while received < expected {
            match events.message().await?.and_then(|m| m.event) {
                Some(Event::Record(r)) => {
                    tally.record(r.partition, r.offset, &r.value);
                    received += 1;
                }
                Some(Event::Assignment(_) | Event::Skipped(_) | Event::EpochMarker(_)) => {}
                None => return Err("Subscribe ended".into()),
            }
        }
        Ok(())
    }))
}

async fn read_loop(
    bench: &Bench,
    stream: &str,
    partition: u32,
    expected: u64,
    tally: Arc<Tally>,
) -> Result<JoinHandle<Result<()>>> {
    let mut client = bench.partlog.client().await?;
    let stream = stream.to_owned();
    Ok(tokio::spawn(async move {
        let (mut offset, mut received) = (0, 0u64);
        while received < expected {
            let answer = client
                .read(ReadRequest {
                    stream: stream.clone(),
                    partition,
                    offset,
                    max_records: READ_RECORDS,
                    filters: Vec::new(),
                    include_unfiltered: false,
                    // Records still on their way are waited for, not polled.
                    max_wait: Some(prost_types::Duration {
                        seconds: 1,
                        nanos: 0,
                    }),
                    max_bytes: 0,
                })
                .await?
                .into_inner();
            for r in &answer.records {
                tally.record(r.partition, r.offset, &r.value);
            }
            received += answer.records.len() as u64;
            offset = answer.next_offset;
        }
        Ok(())
    }))
}

async fn native(
    bench: &Bench,
    stream: &str,
    partition: u32,
    from: From,
    expected: u64,
    tally: Arc<Tally>,
) -> Result<JoinHandle<Result<()>>> {
    let offset = match from {
        From::First => OffsetSpecification::First,
        From::Next => OffsetSpecification::Next,
    };
    let mut consumer = bench
        .environment
        .consumer()
        .offset(offset)
        .client_provided_name("partlog-bench")
        .build(&partition_stream(stream, partition))
        .await?;
    Ok(tokio::spawn(async move {
        let mut received = 0u64;
        while received < expected {
            let Some(delivery) = consumer.next().await else {
                return Err("native consumer ended".into());
            };
            let delivery = delivery?;
            let value = delivery.message().data().unwrap_or_default();
            tally.record(partition, delivery.offset(), value);
            received += 1;
        }
        let _ = consumer.handle().close().await;
        Ok(())
    }))
}
