//! Idempotent publishing with producer ids and sequences, and pipelined
//! PublishStream, against the real broker.

mod common;

use std::collections::{BTreeMap, HashMap};

use common::{create_stream, read_all, unique_stream, Partlog};
use partlog::proto::part_log_client::PartLogClient;
use partlog::proto::{PublishRecord, PublishRequest, PublishResult, PublishStreamRequest, Record};
use tonic::transport::Channel;

/// Records with sequences `range`, keyed over 10 keys, valued by sequence.
fn sequenced(range: std::ops::RangeInclusive<u64>) -> Vec<PublishRecord> {
    range
        .map(|seq| PublishRecord {
            key: format!("key-{}", seq % 10),
            value: seq.to_string().into_bytes().into(),
            sequence: seq,
            ..Default::default()
        })
        .collect()
}

async fn publish(
    client: &mut PartLogClient<Channel>,
    stream: &str,
    producer: &str,
    records: Vec<PublishRecord>,
) -> Result<Vec<PublishResult>, tonic::Status> {
    client
        .publish(PublishRequest {
            stream: stream.into(),
            records,
            producer_id: producer.into(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().results)
}

/// Every record of every partition, each partition's in offset order.
async fn stored(client: &mut PartLogClient<Channel>, stream: &str, partitions: u32) -> Vec<Record> {
    let mut records = Vec::new();
    for partition in 0..partitions {
        records.extend(read_all(client, stream, partition).await);
    }
    records
}

/// The sequence a [`sequenced`] record holds in its value.
fn sequence_of(record: &Record) -> u64 {
    String::from_utf8(record.value.to_vec())
        .unwrap()
        .parse()
        .unwrap()
}

/// How many times each sequence is stored.
async fn stored_sequences(
    client: &mut PartLogClient<Channel>,
    stream: &str,
    partitions: u32,
) -> HashMap<u64, usize> {
    let mut seen = HashMap::new();
    for r in stored(client, stream, partitions).await {
        *seen.entry(sequence_of(&r)).or_default() += 1;
    }
    seen
}

/// Every sequence stored exactly once and, per key, in sequence order.
async fn assert_exactly_once(
    client: &mut PartLogClient<Channel>,
    stream: &str,
    partitions: u32,
    expected: std::ops::RangeInclusive<u64>,
) {
    let mut seen: HashMap<u64, usize> = HashMap::new();
    let mut per_key: HashMap<String, Vec<u64>> = HashMap::new();
    for r in stored(client, stream, partitions).await {
        let seq = sequence_of(&r);
        *seen.entry(seq).or_default() += 1;
        per_key.entry(r.key).or_default().push(seq);
    }
    let duplicated: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        duplicated.is_empty(),
        "stored more than once: {duplicated:?}"
    );
    let missing: Vec<u64> = expected.clone().filter(|s| !seen.contains_key(s)).collect();
    assert!(missing.is_empty(), "lost: {missing:?}");
    assert_eq!(seen.len() as u64, expected.end() - expected.start() + 1);
    for (key, seqs) in per_key {
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "order of {key}: {seqs:?}"
        );
    }
}

#[tokio::test]
async fn retried_sequences_are_stored_once_and_reported_as_duplicates() {
    let server = Partlog::start().await;
    let mut client = server.client().await;
    let stream = unique_stream("idem");
    create_stream(&mut client, &stream, 3).await;

    let first = publish(&mut client, &stream, "orders-writer", sequenced(1..=50))
        .await
        .unwrap();
    assert!(first.iter().all(|r| r.error.is_none() && !r.duplicate));
    assert_eq!(
        first.iter().map(|r| r.sequence).collect::<Vec<_>>(),
        (1..=50).collect::<Vec<_>>()
    );

    let again = publish(&mut client, &stream, "orders-writer", sequenced(1..=50))
        .await
        .unwrap();
    assert!(
        again.iter().all(|r| r.error.is_none() && r.duplicate),
        "a full retry is all duplicates"
    );

    let overlap = publish(&mut client, &stream, "orders-writer", sequenced(41..=60))
        .await
        .unwrap();
    for r in &overlap {
        assert!(r.error.is_none());
        assert_eq!(r.duplicate, r.sequence <= 50, "sequence {}", r.sequence);
    }

    // Another producer id has sequences of its own (and values of its
    // own, so that each record stored can be told apart).
    let audit = |range| {
        let mut records = sequenced(range);
        for r in &mut records {
            r.value = format!("audit-{}", r.sequence).into_bytes().into();
        }
        records
    };
    let other = publish(&mut client, &stream, "audit-writer", audit(1..=5))
        .await
        .unwrap();
    assert!(other.iter().all(|r| !r.duplicate));

    // A retry through another partlog instance is recognised too: the
    // broker keeps the producer's last sequence per partition.
    let second = Partlog::start().await;
    let mut elsewhere = second.client().await;
    let retried = publish(&mut elsewhere, &stream, "orders-writer", sequenced(55..=70))
        .await
        .unwrap();
    for r in &retried {
        assert_eq!(r.duplicate, r.sequence <= 60, "sequence {}", r.sequence);
    }

    // Each record once: 1..=70 from orders-writer, 1..=5 from
    // audit-writer. (Counted per record, so that a loss and a duplicate
    // cannot make up the right total.)
    let mut counts: HashMap<String, usize> = HashMap::new();
    for r in stored(&mut client, &stream, 3).await {
        *counts
            .entry(String::from_utf8(r.value.to_vec()).unwrap())
            .or_default() += 1;
    }
    let expected: HashMap<String, usize> = (1..=70)
        .map(|s| s.to_string())
        .chain((1..=5).map(|s| format!("audit-{s}")))
        .map(|value| (value, 1))
        .collect();
    let wrong: BTreeMap<&String, (usize, usize)> = expected
        .keys()
        .chain(counts.keys())
        .map(|value| {
            let count = |m: &HashMap<String, usize>| m.get(value).copied().unwrap_or(0);
            (value, (count(&counts), count(&expected)))
        })
        .filter(|(_, (stored, expected))| stored != expected)
        .collect();
    assert!(wrong.is_empty(), "value: (stored, expected): {wrong:?}");
}

/// The duplicate flag stays exact while a producer id moves back and forth
/// between two instances: each instance's producer stays open in between,
/// so the one written through last must not rely on what it learned when
/// it opened.
#[tokio::test]
async fn the_duplicate_flag_is_exact_when_retries_alternate_between_instances() {
    let (a, b) = (Partlog::start().await, Partlog::start().await);
    let (mut a, mut b) = (a.client().await, b.client().await);
    let stream = unique_stream("idem-alt");
    create_stream(&mut a, &stream, 3).await;
    let producer = "alternating-writer";
    let flags = |results: Vec<PublishResult>| -> Vec<bool> {
        results
            .iter()
            .map(|r| {
                assert!(r.error.is_none(), "{:?}", r.error);
                r.duplicate
            })
            .collect()
    };
    // (instance, sequences, duplicate expected)
    let steps: [(&str, std::ops::RangeInclusive<u64>, bool); 6] = [
        ("a", 1..=500, false),
        ("b", 1..=500, true),
        ("b", 501..=600, false),
        ("a", 501..=600, true),
        ("a", 601..=700, false),
        ("b", 601..=700, true),
    ];
    for (instance, range, duplicate) in steps {
        let client = if instance == "a" { &mut a } else { &mut b };
        let results = publish(client, &stream, producer, sequenced(range.clone()))
            .await
            .unwrap();
        let flags = flags(results);
        let wrong = flags.iter().filter(|d| **d != duplicate).count();
        assert_eq!(
            wrong,
            0,
            "{instance} {range:?}: {wrong} of {} records had duplicate != {duplicate}",
            flags.len()
        );
    }
    assert_exactly_once(&mut a, &stream, 3, 1..=700).await;
}

#[tokio::test]
async fn kill_9_during_publishing_then_retry_stores_each_sequence_once() {
    let mut server = Partlog::start().await;
    let mut client = server.client().await;
    let stream = unique_stream("crash");
    create_stream(&mut client, &stream, 3).await;

    const BATCH: u64 = 100;
    // Batches answered before the crash, and batches pipelined when it
    // comes (enough that partlog cannot answer them all before it dies).
    const ANSWERED: u64 = 5;
    const PIPELINED: u64 = 200;
    let batch = |b: u64| sequenced(b * BATCH + 1..=(b + 1) * BATCH);
    for b in 0..ANSWERED {
        let results = publish(&mut client, &stream, "crashy", batch(b))
            .await
            .unwrap();
        assert!(results.iter().all(|r| r.error.is_none() && !r.duplicate));
    }
    // Batches pipelined on one PublishStream (one writer per producer id),
    // all sent before the first answer; partlog dies as soon as that
    // answer arrives, while it writes the others: their fate is unknown to
    // the client, which retries them.
    let (requests, outgoing) = tokio::sync::mpsc::channel(PIPELINED as usize);
    for b in ANSWERED..ANSWERED + PIPELINED {
        let request = PublishStreamRequest {
            stream: stream.clone(),
            records: batch(b),
            producer_id: "crashy".into(),
            ..Default::default()
        };
        requests.send(request).await.unwrap();
    }
    let mut answers = client
        .publish_stream(tokio_stream::wrappers::ReceiverStream::new(outgoing))
        .await
        .expect("publish stream")
        .into_inner();
    let first = answers.message().await.expect("an answer").expect("open");
    server.kill();
    // Answers already on their way count as answered.
    let mut pipelined_answers = vec![first];
    while let Ok(Some(answer)) = answers.message().await {
        pipelined_answers.push(answer);
    }
    drop(requests);
    let answered = ANSWERED + pipelined_answers.len() as u64;
    assert!(
        answered < ANSWERED + PIPELINED,
        "all {PIPELINED} pipelined batches were answered before partlog died: no write was cut \
         short"
    );
    for answer in &pipelined_answers {
        assert!(answer
            .results
            .iter()
            .all(|r| r.error.is_none() && !r.duplicate));
    }

    let server = Partlog::start().await;
    let mut client = server.client().await;
    // What partlog stored before it died: every answered batch, of the
    // others a part or nothing, nothing twice.
    let before = stored_sequences(&mut client, &stream, 3).await;
    let missing: Vec<u64> = (1..=answered * BATCH)
        .filter(|s| !before.contains_key(s))
        .collect();
    assert!(missing.is_empty(), "answered and lost: {missing:?}");
    assert!(before.values().all(|n| *n == 1), "stored twice");
    println!(
        "partlog died with {answered} of {} batches answered and {} records of the others stored",
        ANSWERED + PIPELINED,
        before.len() as u64 - answered * BATCH
    );

    // The client retries from the last answered batch (as one whose answer
    // was lost would) and goes on with new batches: a retried record is a
    // duplicate exactly when it had been stored.
    let end = ANSWERED + PIPELINED + 2;
    for b in answered - 1..end {
        let results = publish(&mut client, &stream, "crashy", batch(b))
            .await
            .unwrap();
        for r in &results {
            assert!(r.error.is_none(), "{r:?}");
            let was_stored = before.contains_key(&r.sequence);
            assert_eq!(r.duplicate, was_stored, "sequence {}", r.sequence);
        }
    }
    assert_exactly_once(&mut client, &stream, 3, 1..=end * BATCH).await;
}

#[tokio::test]
async fn publish_stream_pipelines_batches_and_answers_in_order() {
    let server = Partlog::start().await;
    let mut client = server.client().await;
    let stream = unique_stream("pipelined");
    create_stream(&mut client, &stream, 3).await;

    let batches: Vec<PublishStreamRequest> = (0..40u64)
        .map(|b| PublishStreamRequest {
            stream: stream.clone(),
            records: sequenced(b * 25 + 1..=(b + 1) * 25),
            producer_id: "pipe".into(),
            ..Default::default()
        })
        .collect();
    // The second half repeats the first: all duplicates.
    let repeated: Vec<PublishStreamRequest> = batches[..20].to_vec();
    let all: Vec<PublishStreamRequest> = batches.into_iter().chain(repeated).collect();
    let mut answers = client
        .publish_stream(tokio_stream::iter(all))
        .await
        .expect("publish stream")
        .into_inner();
    let mut n = 0u64;
    while let Some(answer) = answers.message().await.expect("answer") {
        let sequences: Vec<u64> = answer.results.iter().map(|r| r.sequence).collect();
        let b = n % 40;
        assert_eq!(
            sequences,
            (b * 25 + 1..=(b + 1) * 25).collect::<Vec<_>>(),
            "answer {n} in order"
        );
        assert!(answer
            .results
            .iter()
            .all(|r| r.error.is_none() && r.duplicate == (n >= 40)));
        n += 1;
    }
    assert_eq!(n, 60);
    assert_exactly_once(&mut client, &stream, 3, 1..=1000).await;
}

#[tokio::test]
async fn publish_stream_ends_with_the_status_of_a_bad_batch() {
    let server = Partlog::start().await;
    let mut client = server.client().await;
    let stream = unique_stream("pipebad");
    create_stream(&mut client, &stream, 1).await;
    let good = PublishStreamRequest {
        stream: stream.clone(),
        records: sequenced(1..=3),
        producer_id: "p".into(),
        ..Default::default()
    };
    let bad = PublishStreamRequest {
        stream: stream.clone(),
        records: sequenced(4..=5).into_iter().rev().collect(),
        producer_id: "p".into(),
        ..Default::default()
    };
    let mut answers = client
        .publish_stream(tokio_stream::iter(vec![good, bad]))
        .await
        .unwrap()
        .into_inner();
    assert!(answers.message().await.unwrap().is_some());
    let err = answers
        .message()
        .await
        .expect_err("the bad batch fails the call");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
}
