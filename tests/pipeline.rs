//! Exactly-once pipelines against the real broker: members of a consumer
//! group read stream A in `Consume` calls, turn each input into one or two
//! outputs and publish them to stream B tagged with their `source`, which
//! commits the input offset once the outputs are stored. Members (their
//! calls dropped mid-batch) and whole partlog instances (SIGKILL) are
//! killed at random points over several rounds, once right as a partition
//! moves to a member that just joined; at the end B holds each output
//! exactly once, every key's outputs in input order.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use common::{create_stream, publish_ok, read_all, record, unique_stream, Partlog};
use partlog::proto::consume_response::Event;
use partlog::proto::part_log_client::PartLogClient;
use partlog::proto::{
    self, AssignmentState, ConsumeOpen, ConsumeRequest, GetOffsetsRequest, PublishRecord,
    PublishRequest,
};
use rand::Rng;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic::Code;

const INPUTS: u64 = 3000;
const GROUP: &str = "pipeline";
/// Inputs a member holds at most before it publishes their outputs.
const CREDIT: u32 = 200;

/// The transformation: input `n` gives `n:0`, and `n:1` too when `n` is a
/// multiple of 3 — the same outputs whoever runs it, and when.
fn outputs_of(input: &proto::Record) -> Vec<(u32, PublishRecord)> {
    let n: u64 = std::str::from_utf8(&input.value).unwrap().parse().unwrap();
    let count = if n % 3 == 0 { 2 } else { 1 };
    (0..count)
        .map(|index| {
            let output = PublishRecord {
                key: input.key.clone(),
                value: format!("{n}:{index}").into_bytes().into(),
                source_offset: input.offset,
                output_index: index,
                ..Default::default()
            };
            (index, output)
        })
        .collect()
}

/// One pipeline member until its call or a publish fails (or the test
/// aborts it): inputs it holds are published per partition, each batch
/// committing its last input, and the credit they took is given back once
/// the batch is answered.
async fn member(mut client: PartLogClient<Channel>, input: String, output: String) {
    let (requests, outgoing) = tokio::sync::mpsc::channel(16);
    let open = ConsumeRequest {
        open: Some(ConsumeOpen {
            stream: input.clone(),
            group: GROUP.into(),
            ..Default::default()
        }),
        credit_records: CREDIT,
        ..Default::default()
    };
    requests.send(open).await.unwrap();
    let Ok(answer) = client
        .consume(tokio_stream::wrappers::ReceiverStream::new(outgoing))
        .await
    else {
        return;
    };
    let mut events = answer.into_inner();
    let mut held: BTreeMap<u32, Vec<proto::Record>> = BTreeMap::new();
    loop {
        let next = tokio::time::timeout(Duration::from_millis(50), events.message()).await;
        let pending: usize = held.values().map(Vec::len).sum();
        let quiet = next.is_err();
        match next {
            Ok(Ok(Some(message))) => match message.event {
                Some(Event::Record(r)) => held.entry(r.partition).or_default().push(r),
                Some(Event::Assignment(a)) if a.state() == AssignmentState::Inactive => {
                    // Another member takes the partition over from the
                    // group's committed offset.
                    held.remove(&a.partition);
                }
                _ => {}
            },
            Ok(_) => return,
            Err(_) if pending == 0 => continue,
            Err(_) => {}
        }
        let pending: usize = held.values().map(Vec::len).sum();
        if pending < CREDIT as usize / 2 && !quiet {
            continue;
        }
        for (partition, inputs) in std::mem::take(&mut held) {
            let Some(last) = inputs.last().map(|r| r.offset) else {
                continue;
            };
            let records = inputs.iter().flat_map(outputs_of).map(|(_, r)| r).collect();
            let request = PublishRequest {
                stream: output.clone(),
                records,
                source: Some(proto::Source {
                    group: GROUP.into(),
                    stream: input.clone(),
                    partition,
                    commit_offset: Some(last),
                }),
                ..Default::default()
            };
            let Ok(answer) = client.publish(request).await else {
                return;
            };
            let answer = answer.into_inner();
            if answer.results.iter().any(|r| r.error.is_some()) {
                return;
            }
            // Not committed (the broker went away meanwhile): the next
            // holder of the partition publishes the batch again.
            if answer.commit.is_none_or(|c| c.error.is_some()) {
                return;
            }
            let credit = ConsumeRequest {
                credit_records: inputs.len() as u32,
                ..Default::default()
            };
            if requests.send(credit).await.is_err() {
                return;
            }
        }
    }
}

/// Members of the pipeline, per partlog instance.
struct Members(Vec<(usize, JoinHandle<()>)>);

impl Members {
    async fn add(&mut self, instances: &[Partlog], at: usize, input: &str, output: &str) {
        let client = instances[at].client().await;
        let task = tokio::spawn(member(client, input.to_owned(), output.to_owned()));
        self.0.push((at, task));
    }

    /// Drops a member's call (and whatever it had not published).
    fn kill_one(&mut self, rng: &mut impl Rng) {
        if !self.0.is_empty() {
            let (_, task) = self.0.remove(rng.random_range(0..self.0.len()));
            task.abort();
        }
    }

    fn kill_all(&mut self) {
        for (_, task) in self.0.drain(..) {
            task.abort();
        }
    }

    /// The members of instance `at` are gone with it.
    fn forget(&mut self, at: usize) {
        self.0.retain(|(instance, task)| {
            if *instance == at {
                task.abort();
            }
            *instance != at
        });
    }
}

/// Lag of the group on every partition of `input`, or `None` when not yet
/// known (a partition never committed).
async fn lag(client: &mut PartLogClient<Channel>, input: &str) -> Option<u64> {
    let request = GetOffsetsRequest {
        stream: input.into(),
        group: GROUP.into(),
    };
    let rows = client
        .get_offsets(request)
        .await
        .ok()?
        .into_inner()
        .partitions;
    rows.iter()
        .map(|row| row.committed.map(|_| row.lag))
        .sum::<Option<u64>>()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_are_stored_once_whatever_is_killed() {
    let seed: u64 = rand::random();
    println!("seed {seed}");
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed);
    let mut instances = vec![Partlog::start().await, Partlog::start().await];
    let mut client = instances[0].client().await;
    let input = unique_stream("pipeline-in");
    let output = unique_stream("pipeline-out");
    create_stream(&mut client, &input, 3).await;
    create_stream(&mut client, &output, 4).await;
    for batch in 0..INPUTS / 100 {
        let records: Vec<_> = (batch * 100..(batch + 1) * 100)
            .map(|n| record(&format!("key-{}", n % 17), n.to_string()))
            .collect();
        publish_ok(&mut client, &input, records).await;
    }

    let mut members = Members(Vec::new());
    for round in 0..6 {
        for at in [0, 1, 0, 1] {
            members.add(&instances, at, &input, &output).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(200..1200))).await;
        match round % 3 {
            0 => {
                // SIGKILL an instance and start another in its place.
                let at = rng.random_range(0..instances.len());
                instances[at].kill();
                members.forget(at);
                instances[at] = Partlog::start().await;
            }
            1 => members.kill_one(&mut rng),
            _ => {
                // A member joins, partitions move to it, and the instance
                // of the members they move from dies while they move.
                members.add(&instances, 1, &input, &output).await;
                tokio::time::sleep(Duration::from_millis(rng.random_range(0..100))).await;
                instances[0].kill();
                members.forget(0);
                instances[0] = Partlog::start().await;
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..800))).await;
        members.kill_all();
        println!("round {round} done");
    }

    // Members that are left alone finish the work.
    for at in [0, 1] {
        members.add(&instances, at, &input, &output).await;
    }
    let mut client = instances[0].client().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while lag(&mut client, &input).await != Some(0) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the pipeline did not finish: lag {:?}\n{}",
            lag(&mut client, &input).await,
            instances[0].log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    members.kill_all();

    let mut stored: HashMap<String, u32> = HashMap::new();
    for partition in 0..4 {
        let mut last_of_key: HashMap<String, (u64, u32)> = HashMap::new();
        for r in read_all(&mut client, &output, partition).await {
            let value = String::from_utf8(r.value.to_vec()).unwrap();
            let (n, index) = value.split_once(':').unwrap();
            let position = (n.parse::<u64>().unwrap(), index.parse::<u32>().unwrap());
            if let Some(before) = last_of_key.insert(r.key.clone(), position) {
                assert!(
                    before < position,
                    "key {}: output {position:?} after {before:?} in partition {partition}",
                    r.key
                );
            }
            *stored.entry(value).or_default() += 1;
        }
    }
    let twice: Vec<_> = stored.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "stored more than once: {twice:?}");
    let expected: Vec<String> = (0..INPUTS)
        .flat_map(|n| {
            let count = if n % 3 == 0 { 2 } else { 1 };
            (0..count).map(move |index| format!("{n}:{index}"))
        })
        .collect();
    let missing: Vec<_> = expected
        .iter()
        .filter(|v| !stored.contains_key(*v))
        .collect();
    assert!(missing.is_empty(), "never stored: {missing:?}");
    assert_eq!(stored.len(), expected.len(), "nothing but the outputs");
}

/// What a source refuses, before anything is written.
#[tokio::test]
async fn a_source_is_checked_field_by_field() {
    let server = Partlog::start().await;
    let mut client = server.client().await;
    let input = unique_stream("source-in");
    let output = unique_stream("source-out");
    create_stream(&mut client, &input, 2).await;
    create_stream(&mut client, &output, 2).await;
    let source = |partition, commit_offset| proto::Source {
        group: GROUP.into(),
        stream: input.clone(),
        partition,
        commit_offset,
    };
    let output_record = |offset, index| PublishRecord {
        key: "k".into(),
        value: b"v".to_vec().into(),
        source_offset: offset,
        output_index: index,
        ..Default::default()
    };
    let publish = |source: Option<proto::Source>, records: Vec<PublishRecord>, producer: &str| {
        let mut client = client.clone();
        let request = PublishRequest {
            stream: output.clone(),
            records,
            producer_id: producer.into(),
            source,
        };
        async move { client.publish(request).await }
    };
    let refused = |answer: Result<_, tonic::Status>| answer.expect_err("refused");

    let status = refused(publish(Some(source(0, None)), vec![output_record(1, 0)], "p").await);
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("source and producer_id"),
        "{status:?}"
    );
    let status = refused(publish(None, vec![output_record(1, 0)], "").await);
    assert!(
        status
            .message()
            .starts_with("records[0] has a source_offset"),
        "{status:?}"
    );
    let records = vec![output_record(5, 1), output_record(5, 0)];
    let status = refused(publish(Some(source(0, None)), records, "").await);
    assert!(status.message().contains("strictly increase"), "{status:?}");
    let status = refused(publish(Some(source(0, None)), vec![output_record(1 << 48, 0)], "").await);
    assert!(
        status.message().starts_with("records[0].source_offset"),
        "{status:?}"
    );
    let status = refused(publish(Some(source(0, None)), vec![output_record(1, 70_000)], "").await);
    assert!(
        status.message().starts_with("records[0].output_index"),
        "{status:?}"
    );
    // A commit needs the input partition on this partlog.
    let status = refused(publish(Some(source(2, Some(0))), vec![output_record(0, 0)], "").await);
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let missing = proto::Source {
        stream: "no-such-stream".into(),
        ..source(0, Some(0))
    };
    let status = refused(publish(Some(missing), vec![output_record(0, 0)], "").await);
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    let status = refused(publish(None, vec![record("k", "v")], "source:mine").await);
    assert!(status.message().contains("source:"), "{status:?}");

    // Accepted, and the second copy is a duplicate; a commit past the
    // input's last record is refused in the answer, after the outputs.
    let first = publish(Some(source(1, None)), vec![output_record(3, 0)], "").await;
    let first = first.unwrap().into_inner();
    assert!(
        !first.results[0].duplicate && first.commit.is_none(),
        "{first:?}"
    );
    let again = publish(Some(source(1, Some(3))), vec![output_record(3, 0)], "").await;
    let again = again.unwrap().into_inner();
    assert!(again.results[0].duplicate, "{again:?}");
    let commit = again.commit.expect("a commit answer");
    assert_eq!(commit.committed, None);
    assert_eq!(
        commit.error.map(|e| e.code),
        Some(Code::FailedPrecondition as i32),
        "partition 1 of the input holds no records yet"
    );
}
