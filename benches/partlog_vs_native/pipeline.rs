//! Pipelines: one member of a consumer group on an input stream turns each
//! input record into one output (same key and value) on an output stream
//! and commits a batch's last input offset once the batch is stored, as
//! `partlog mirror` does — partlog `Consume` + `PublishStream` (with or
//! without a `source`), and a native single active consumer + named
//! producers + `store_offset` — behind one trait, and one driver ([`run`])
//! that batches, publishes and commits the same for all.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use futures::{FutureExt, StreamExt};
use partlog::proto::{PublishRecord, Source};
use partlog::routing::partition_for_key;

use crate::bench::{Bench, Variant};
use crate::group::{ConsumeMember, GroupImpl, GroupMember, NativeMember, Taken};
use crate::publish::{key_property, Confirmed, NamedProducer, PartlogStream, Target};
use crate::records::{Dataset, Record};
use crate::report::Side;
use crate::setup::Result;
use crate::tally::STALL;

/// Most records per published batch (as `partlog mirror`). Below that, a
/// partition's records go out as soon as it has no batch in flight, and
/// gather while one is: batches grow with the load, without a timer.
pub const BATCH: usize = 500;

/// Records a partlog pipeline holds, received and not yet stored (as
/// `partlog mirror`).
const CREDIT: u32 = 5_000;

/// An input record.
pub struct Input {
    partition: u32,
    offset: u64,
    key: String,
    value: Bytes,
}

/// One side's pipeline: its input member and its output publisher.
pub trait Pipeline: Send {
    /// The next input record; `None` when the input's subscription ended.
    fn next(&mut self) -> BoxFuture<'_, Result<Option<Input>>>;

    /// Publishes the outputs of inputs of one partition, in order.
    fn publish(&mut self, partition: u32, inputs: Vec<Input>) -> BoxFuture<'_, Result<Confirmed>>;

    /// After a batch was stored: commits its last input offset and, where
    /// the input takes credit, grants its `records` again.
    fn commit(&mut self, partition: u32, last: u64, records: u32) -> BoxFuture<'_, Result<()>>;

    /// Waits until every commit made is done.
    fn flush(&mut self) -> BoxFuture<'_, Result<()>>;

    fn close(self: Box<Self>) -> BoxFuture<'static, ()>;
}

/// The pipelines compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PipelineImpl {
    /// `Consume` and a `PublishStream` call whose batches name their
    /// `source`: outputs stored exactly once, whoever sends them again.
    PartlogSource,
    /// The same without `source`: plain publishing.
    PartlogNoSource,
    /// The group's native single active consumer and one named producer
    /// per output partition, publishing ids from the input offsets;
    /// `store_offset` once a batch is confirmed.
    Native,
}

impl Variant for PipelineImpl {
    fn side(self) -> Side {
        match self {
            PipelineImpl::PartlogSource | PipelineImpl::PartlogNoSource => Side::Partlog,
            PipelineImpl::Native => Side::Native,
        }
    }

    fn id(self) -> &'static str {
        match self {
            PipelineImpl::PartlogSource => "partlog-source",
            PipelineImpl::PartlogNoSource => "partlog-no-source",
            PipelineImpl::Native => "native-named-producers",
        }
    }
}

impl PipelineImpl {
    pub fn label(self) -> &'static str {
        match self {
            PipelineImpl::PartlogSource => "partlog, source",
            PipelineImpl::PartlogNoSource => "partlog, no source",
            PipelineImpl::Native => "native",
        }
    }

    /// The group implementation that holds the committed offsets.
    pub fn group(self) -> GroupImpl {
        match self {
            PipelineImpl::PartlogSource | PipelineImpl::PartlogNoSource => {
                GroupImpl::PartlogConsume
            }
            PipelineImpl::Native => GroupImpl::NativeSingleActive,
        }
    }

    /// A new member of `group` on `input`, publishing `dataset`'s records
    /// to `output` (the input's partition count).
    pub async fn open(
        self,
        bench: &Bench,
        dataset: &Dataset,
        input: &str,
        output: &str,
        group: &str,
    ) -> Result<Box<dyn Pipeline>> {
        Ok(match self {
            PipelineImpl::PartlogSource | PipelineImpl::PartlogNoSource => {
                Box::new(PartlogPipeline {
                    member: ConsumeMember::join(bench, input, group, CREDIT).await?,
                    output: PartlogStream::open(bench.partlog.client().await?, output).await?,
                    source: (self == PipelineImpl::PartlogSource)
                        .then(|| (group.to_owned(), input.to_owned())),
                })
            }
            PipelineImpl::Native => {
                let target = Target {
                    partlog: &bench.partlog,
                    environment: &bench.environment,
                    stream: output,
                    partitions: dataset.partitions,
                    batch: BATCH,
                    value_size: dataset.value_size,
                };
                // Each opens a connection of its own: all at once.
                let producers = (0..dataset.partitions).map(|p| {
                    let name = format!("{group}-{p}");
                    let target = &target;
                    async move { NamedProducer::open(target, p, &name).await }
                });
                let producers = futures::future::try_join_all(producers).await?;
                Box::new(NativePipeline {
                    member: NativeMember::join(bench, input, group).await?,
                    producers,
                })
            }
        })
    }
}

/// Runs `pipeline` until it took `records` input records, had every batch
/// stored and every commit done; returns the batches published. Each input
/// partition's records are batched as [`BATCH`] says.
pub async fn run(mut pipeline: Box<dyn Pipeline>, records: u64) -> Result<u64> {
    enum Step {
        Input(Result<Option<Input>>),
        Stored(Result<(u32, u64, u32)>),
    }
    let mut held: BTreeMap<u32, Vec<Input>> = BTreeMap::new();
    // Batches in flight, and how many of them each partition has.
    let mut in_flight: FuturesOrdered<Stored> = FuturesOrdered::new();
    let mut busy: HashMap<u32, usize> = HashMap::new();
    let (mut received, mut batches) = (0u64, 0u64);
    while received < records || !in_flight.is_empty() {
        let step = tokio::time::timeout(STALL, async {
            tokio::select! {
                Some(stored) = in_flight.next() => Step::Stored(stored),
                input = pipeline.next() => Step::Input(input),
            }
        })
        .await
        .map_err(|_| {
            format!(
                "the pipeline stalled for {STALL:?}: {received} of {records} records received, {} batches unanswered",
                in_flight.len()
            )
        })?;
        let ready: Vec<u32> = match step {
            Step::Stored(stored) => {
                let (partition, last, count) = stored?;
                pipeline.commit(partition, last, count).await?;
                batches += 1;
                if let Some(n) = busy.get_mut(&partition) {
                    *n -= 1;
                }
                vec![partition]
            }
            Step::Input(input) => {
                // Every input that came with this one, a full batch at once.
                let mut next = Some(input?.ok_or("the input's subscription ended")?);
                while let Some(input) = next {
                    received += 1;
                    let partition = input.partition;
                    let batch = held.entry(partition).or_default();
                    batch.push(input);
                    if batch.len() >= BATCH {
                        let batch = std::mem::take(batch);
                        in_flight.push_back(publish(&mut *pipeline, partition, batch).await?);
                        *busy.entry(partition).or_default() += 1;
                    }
                    next = pipeline.next().now_or_never().transpose()?.flatten();
                }
                held.keys().copied().collect()
            }
        };
        for partition in ready {
            if busy.get(&partition).copied().unwrap_or(0) > 0 {
                continue;
            }
            if let Some(batch) = held.remove(&partition).filter(|b| !b.is_empty()) {
                in_flight.push_back(publish(&mut *pipeline, partition, batch).await?);
                *busy.entry(partition).or_default() += 1;
            }
        }
    }
    pipeline.flush().await?;
    pipeline.close().await;
    Ok(batches)
}

/// A batch in flight: resolves with its partition, last input offset and
/// records once stored.
type Stored = BoxFuture<'static, Result<(u32, u64, u32)>>;

/// Publishes a batch.
async fn publish(pipeline: &mut dyn Pipeline, partition: u32, batch: Vec<Input>) -> Result<Stored> {
    let (count, last) = (batch.len() as u64, batch[batch.len() - 1].offset);
    let confirmed = pipeline.publish(partition, batch).await?;
    Ok(async move {
        match confirmed.await? {
            stored if stored == count => Ok((partition, last, count as u32)),
            stored => Err(format!("{stored} of {count} outputs stored").into()),
        }
    }
    .boxed())
}

struct PartlogPipeline {
    member: ConsumeMember,
    output: PartlogStream,
    /// The group and input stream every batch names as its source; `None`:
    /// no source.
    source: Option<(String, String)>,
}

impl Pipeline for PartlogPipeline {
    fn next(&mut self) -> BoxFuture<'_, Result<Option<Input>>> {
        async move {
            loop {
                match self.member.next_message().await? {
                    Taken::Record(r) => {
                        return Ok(Some(Input {
                            partition: r.partition,
                            offset: r.offset,
                            key: r.key,
                            value: r.value,
                        }))
                    }
                    Taken::End => return Ok(None),
                    Taken::Event(_) | Taken::Nothing => {}
                }
            }
        }
        .boxed()
    }

    fn publish(&mut self, partition: u32, inputs: Vec<Input>) -> BoxFuture<'_, Result<Confirmed>> {
        let with_source = self.source.is_some();
        let records = inputs
            .into_iter()
            .map(|input| PublishRecord {
                key: input.key,
                value: input.value,
                source_offset: if with_source { input.offset } else { 0 },
                ..Default::default()
            })
            .collect();
        let source = self.source.as_ref().map(|(group, stream)| Source {
            group: group.clone(),
            stream: stream.clone(),
            partition,
            commit_offset: None,
        });
        futures::future::ready(self.output.send(records, source)).boxed()
    }

    fn commit(&mut self, partition: u32, last: u64, records: u32) -> BoxFuture<'_, Result<()>> {
        let commits = HashMap::from([(partition, last)]);
        futures::future::ready(self.member.commit_with_credit(commits, records)).boxed()
    }

    fn flush(&mut self) -> BoxFuture<'_, Result<()>> {
        self.member.flush()
    }

    fn close(self: Box<Self>) -> BoxFuture<'static, ()> {
        // Dropping the member ends the Consume call.
        crate::publish::PublishPath::close(Box::new(self.output))
    }
}

/// The input was routed by key with the partition count the output has,
/// and keys are kept: an input partition's outputs all go to the output
/// partition of the same index, whose producer is named after it and takes
/// its input offsets + 1 as publishing ids, increasing.
struct NativePipeline {
    member: NativeMember,
    producers: Vec<NamedProducer>,
}

impl Pipeline for NativePipeline {
    fn next(&mut self) -> BoxFuture<'_, Result<Option<Input>>> {
        async move {
            let Some((partition, delivery)) = self.member.delivery().await? else {
                return Ok(None);
            };
            let message = delivery.message();
            Ok(Some(Input {
                partition,
                offset: delivery.offset(),
                key: key_property(message),
                value: Bytes::copy_from_slice(message.data().unwrap_or_default()),
            }))
        }
        .boxed()
    }

    fn publish(&mut self, partition: u32, inputs: Vec<Input>) -> BoxFuture<'_, Result<Confirmed>> {
        async move {
            let partitions = self.producers.len() as u32;
            let mut outputs = Vec::with_capacity(inputs.len());
            for input in inputs {
                let routed = partition_for_key(&input.key, partitions);
                if routed != partition {
                    return Err(format!(
                        "key {:?} of input partition {partition} routes to output partition {routed}",
                        input.key
                    )
                    .into());
                }
                let record = Record {
                    key: input.key,
                    value: input.value.into(),
                };
                outputs.push((input.offset + 1, record));
            }
            self.producers[partition as usize].send(outputs).await
        }
        .boxed()
    }

    fn commit(&mut self, partition: u32, last: u64, _records: u32) -> BoxFuture<'_, Result<()>> {
        self.member.commit(HashMap::from([(partition, last)]))
    }

    fn flush(&mut self) -> BoxFuture<'_, Result<()>> {
        self.member.flush()
    }

    fn close(self: Box<Self>) -> BoxFuture<'static, ()> {
        async move {
            Box::new(self.member).close().await;
            for producer in self.producers {
                producer.close().await;
            }
        }
        .boxed()
    }
}
