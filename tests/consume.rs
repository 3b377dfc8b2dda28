//! Consume: one bidirectional stream per member for records, credit and
//! commits, against the real broker.
//!
//! The hazard it removes: members that `Subscribe` and send unary `Commit`s
//! on the same gRPC channel stop for good once their unread records fill
//! the channel's HTTP/2 connection window (the Commit answers can then not
//! be sent, so the members never read on). Through `Consume` partlog sends
//! records only within credit and answers commits on the same stream, so
//! the same workload on one channel with tonic's defaults completes.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use common::{
    create_stream, fail_if_any_ended, peak_growth_mib, publish_ok, record, record_bytes,
    unique_stream, Member, Partlog, Regrant, EVENT_TIMEOUT,
};
use partlog::proto::consume_response::Event;
use partlog::proto::part_log_client::PartLogClient;
use partlog::proto::{
    AssignmentState, ConsumeOpen, ConsumeRequest, GetOffsetsRequest, PublishRecord,
};
use partlog::routing::partition_for_key;
use tonic::transport::Channel;
use tonic::Code;

/// A key of each partition, by partlog's routing.
fn partition_keys(partitions: u32) -> Vec<String> {
    (0..partitions)
        .map(|p| {
            (0..)
                .map(|i| format!("key-{i}"))
                .find(|k| partition_for_key(k, partitions) == p)
                .unwrap()
        })
        .collect()
}

/// `n` records for each of `partitions` partitions (keys chosen by
/// partlog's routing), published in order.
async fn publish_per_partition(
    client: &mut PartLogClient<Channel>,
    stream: &str,
    partitions: u32,
    n: usize,
) {
    let keys = partition_keys(partitions);
    for round in 0..n / 100 {
        let records: Vec<PublishRecord> = keys
            .iter()
            .flat_map(|k| (0..100).map(move |i| record(k, format!("{round}-{i}"))))
            .collect();
        publish_ok(client, stream, records).await;
    }
}

async fn lag(client: &mut PartLogClient<Channel>, stream: &str, group: &str) -> Vec<u64> {
    client
        .get_offsets(GetOffsetsRequest {
            group: group.into(),
            stream: stream.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .partitions
        .iter()
        .map(|p| p.lag)
        .collect()
}

/// Commits in flight at most before a member stops asking for records.
const OPEN_COMMITS: usize = 32;

/// A member's loop: reads, commits every 100 records of a partition, and
/// grants the records read back ([`Regrant`]) — but not while 32 commits
/// are unanswered (it waits for them before reading on). Returns when
/// `stop` is notified. Commits of a partition the broker took away
/// meanwhile may be refused (FAILED_PRECONDITION); the next owner
/// commits it.
async fn member_loop(mut member: Member, stop: std::sync::Arc<tokio::sync::Notify>) {
    let mut since: HashMap<u32, u64> = HashMap::new();
    let mut open_commits = 0usize;
    let mut regrant = Regrant::default();
    loop {
        let event = tokio::select! {
            event = member.next() => event,
            () = regrant.due(), if open_commits < OPEN_COMMITS => {
                regrant.grant(&mut member).await;
                continue;
            }
            () = stop.notified() => return,
        };
        match event {
            Event::Record(r) => {
                let n = since.entry(r.partition).or_default();
                *n += 1;
                if *n == 100 {
                    *n = 0;
                    member
                        .commit(BTreeMap::from([(r.partition, r.offset)]))
                        .await;
                    open_commits += 1;
                }
                regrant.consumed();
            }
            Event::Commit(ack) => {
                if let Some(error) = &ack.error {
                    assert_eq!(error.code, Code::FailedPrecondition as i32, "{ack:?}");
                    assert_eq!(error.reason, "PARTITION_NOT_HELD", "{ack:?}");
                }
                open_commits -= 1;
            }
            Event::Assignment(a) if a.state() == AssignmentState::Active => {
                since.insert(a.partition, 0);
            }
            Event::Assignment(_) => {}
            Event::Skipped(s) => panic!("skipped without a filter: {s:?}"),
            Event::EpochMarker(m) => panic!("the stream never grew: {m:?}"),
        }
    }
}

/// Three members of one group on ONE channel with tonic's default
/// windows, committing every 100 records of a partition and waiting for
/// the answers before reading on: the group consumes everything and its
/// lag ends at 0. (Through Subscribe + unary Commit on one channel this
/// workload stalls for good; see the module docs.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_on_one_channel_consumes_everything_with_commits() {
    let server = Partlog::start().await;
    let mut client = server.client().await;
    let stream = unique_stream("consume-group");
    let partitions = 6;
    create_stream(&mut client, &stream, partitions).await;
    publish_per_partition(&mut client, &stream, partitions, 5000).await;

    let channel = Channel::from_shared(server.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let stop = std::sync::Arc::new(tokio::sync::Notify::new());
    let mut members = Vec::new();
    for _ in 0..3 {
        let mut one_channel = PartLogClient::new(channel.clone());
        let member = Member::open(&mut one_channel, &stream, "billing", 500).await;
        members.push(tokio::spawn(member_loop(member, stop.clone())));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    loop {
        // A member that got a record beyond its credit fails at once.
        fail_if_any_ended(&mut members).await;
        let lags = lag(&mut client, &stream, "billing").await;
        if lags.iter().all(|l| *l == 0) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the group stopped with lag {lags:?}\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    stop.notify_waiters();
    for member in members {
        member.await.expect("member");
    }
}

/// A client that grants one record at a time gets exactly one record per
/// grant.
#[tokio::test]
async fn one_record_of_credit_brings_one_record() {
    let server = Partlog::start().await;
    let mut client = server.client().await;
    let stream = unique_stream("consume-pace");
    create_stream(&mut client, &stream, 1).await;
    publish_ok(
        &mut client,
        &stream,
        (0..10).map(|i| record("k", format!("{i}"))).collect(),
    )
    .await;
    let mut member = Member::open(&mut client, &stream, "pace", 1).await;
    let Event::Assignment(active) = member.next().await else {
        panic!("ACTIVE first");
    };
    assert_eq!(active.state(), AssignmentState::Active);
    for i in 0..10 {
        let Event::Record(r) = member.next().await else {
            panic!("a record");
        };
        assert_eq!(r.offset, i);
        assert!(
            member
                .next_within(Duration::from_millis(300))
                .await
                .is_none(),
            "more than one record for one credit"
        );
        member.credit(1).await;
    }
}

/// Byte credit end to end: partlog sends records while the call's byte
/// credit is positive; the record that takes it below zero still comes and
/// leaves it at zero, so each grant brings exactly the records it covers
/// plus at most one. (Every record is 1000 bytes of key and value.)
#[tokio::test]
async fn byte_credit_brings_the_records_it_covers() {
    let server = Partlog::start().await;
    let mut client = server.client().await;
    let stream = unique_stream("consume-bytes");
    create_stream(&mut client, &stream, 1).await;
    let value = |i: usize| format!("{i:0>999}");
    publish_ok(
        &mut client,
        &stream,
        (0..20).map(|i| record("k", value(i))).collect(),
    )
    .await;
    // Records are no limit here: 1000 of them.
    let first = ConsumeRequest {
        open: Some(ConsumeOpen {
            stream: stream.clone(),
            group: "bytes".into(),
            ..Default::default()
        }),
        credit_records: 1000,
        credit_bytes: 4500,
        ..Default::default()
    };
    let mut member = Member::open_with(&mut client, first).await;
    let mut next_offset = 0;
    // (bytes granted, records that brings): the first request's 4500 cover
    // four records and let a fifth take the credit below zero; that counts
    // as zero, so 1 byte brings one more; 2000 bytes are used up exactly by
    // two; 2001 by two and one byte, which brings a third.
    for (i, (grant, brings)) in [(4500, 5), (1, 1), (2000, 2), (2001, 3)]
        .into_iter()
        .enumerate()
    {
        if i > 0 {
            member.credit_bytes(grant).await;
        }
        let mut got = 0;
        while got < brings {
            match member.next().await {
                Event::Record(r) => {
                    assert_eq!(r.offset, next_offset);
                    assert_eq!(record_bytes(&r), 1000, "{r:?}");
                    next_offset += 1;
                    got += 1;
                }
                Event::Assignment(a) => assert_eq!(a.state(), AssignmentState::Active),
                Event::Commit(ack) => panic!("no commit sent: {ack:?}"),
                Event::Skipped(s) => panic!("skipped without a filter: {s:?}"),
                Event::EpochMarker(m) => panic!("the stream never grew: {m:?}"),
            }
        }
        // And no more: partlog keeps the next record until the next grant.
        if let Some(more) = member.next_within(Duration::from_secs(1)).await {
            let more = match more {
                Event::Record(r) => format!("record {}@{}", r.partition, r.offset),
                other => format!("{other:?}"),
            };
            panic!("{grant} bytes brought more than {brings} records: {more}");
        }
    }
}

/// Commits are answered in the order they came; those partlog cannot
/// take are answered with the reason, and nothing else changes.
#[tokio::test]
async fn commits_are_answered_in_order_with_their_errors() {
    let server = Partlog::start().await;
    let mut client = server.client().await;
    let stream = unique_stream("consume-acks");
    create_stream(&mut client, &stream, 2).await;
    publish_per_partition(&mut client, &stream, 2, 100).await;
    let mut member = Member::open(&mut client, &stream, "acks", 1000).await;
    let mut held = 0;
    let mut records = 0;
    while held < 2 || records < 200 {
        match member.next().await {
            Event::Assignment(_) => held += 1,
            Event::Record(_) => records += 1,
            Event::Commit(ack) => panic!("no commit yet: {ack:?}"),
            Event::Skipped(s) => panic!("skipped without a filter: {s:?}"),
            Event::EpochMarker(m) => panic!("the stream never grew: {m:?}"),
        }
    }
    member.commit(BTreeMap::from([(0, 9), (1, 19)])).await;
    member.commit(BTreeMap::from([(0, 5)])).await;
    member.commit(BTreeMap::from([(1, 99), (0, 1000)])).await;
    member.commit(BTreeMap::from([(7, 1)])).await;
    let mut acks = Vec::new();
    while acks.len() < 6 {
        let Event::Commit(ack) = member.next().await else {
            panic!("only answers now");
        };
        acks.push(ack);
    }
    // (partition, offset, committed, ignored_lower, error code)
    type Summary = (u32, u64, Option<u64>, bool, Option<i32>);
    let summary: Vec<Summary> = acks
        .iter()
        .map(|a| {
            let code = a.error.as_ref().map(|e| e.code);
            (a.partition, a.offset, a.committed, a.ignored_lower, code)
        })
        .collect();
    // Commits taken together are written together: 19 may be answered as
    // committed up to 99 already (never lower than asked, never ignored).
    assert!(
        matches!(summary[1], (1, 19, Some(19 | 99), false, None)),
        "{summary:?}"
    );
    assert_eq!(
        [&summary[..1], &summary[2..]].concat(),
        vec![
            (0, 9, Some(9), false, None),
            (0, 5, Some(9), true, None),
            (0, 1000, None, false, Some(Code::InvalidArgument as i32)),
            (1, 99, Some(99), false, None),
            (7, 1, None, false, Some(Code::InvalidArgument as i32)),
        ]
    );
    let rows = client
        .get_offsets(GetOffsetsRequest {
            group: "acks".into(),
            stream: stream.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .partitions;
    assert_eq!(rows[0].committed, Some(9));
    assert_eq!(rows[1].committed, Some(99));

    // Without a group there is nothing to commit to.
    let mut alone = Member::open(&mut client, &stream, "", 10).await;
    alone.commit(BTreeMap::from([(0, 1)])).await;
    loop {
        if let Event::Commit(ack) = alone.next().await {
            let error = ack.error.expect("refused");
            assert_eq!(error.code, Code::InvalidArgument as i32);
            assert!(error.message.contains("group"), "{}", error.message);
            break;
        }
    }
}

/// First requests that cannot open a call end it with INVALID_ARGUMENT.
#[tokio::test]
async fn a_call_opens_once_with_credit() {
    let server = Partlog::start().await;
    let mut client = server.client().await;
    let stream = unique_stream("consume-open");
    create_stream(&mut client, &stream, 1).await;
    let open = || ConsumeOpen {
        stream: stream.clone(),
        ..Default::default()
    };
    let cases = [
        (
            "no open",
            vec![ConsumeRequest {
                credit_records: 5,
                ..Default::default()
            }],
        ),
        (
            "no credit",
            vec![ConsumeRequest {
                open: Some(open()),
                credit_bytes: 100,
                ..Default::default()
            }],
        ),
        (
            "open twice",
            vec![
                ConsumeRequest {
                    open: Some(open()),
                    credit_records: 5,
                    ..Default::default()
                },
                ConsumeRequest {
                    open: Some(open()),
                    ..Default::default()
                },
            ],
        ),
    ];
    for (name, requests) in cases {
        let outcome = async {
            let mut responses = client
                .consume(tokio_stream::iter(requests))
                .await?
                .into_inner();
            while responses.message().await?.is_some() {}
            Ok::<_, tonic::Status>(())
        };
        let err = tokio::time::timeout(EVENT_TIMEOUT, outcome)
            .await
            .expect("answered")
            .expect_err(name);
        assert_eq!(err.code(), Code::InvalidArgument, "{name}: {err:?}");
    }
}

/// A member that records every event and commits every 10 records of a
/// partition without waiting for the answers, granting the records read
/// back ([`Regrant`]); stops when `stop` is notified.
async fn committing_member(
    mut member: Member,
    stop: std::sync::Arc<tokio::sync::Notify>,
    seen: std::sync::Arc<std::sync::Mutex<Vec<Event>>>,
) {
    let mut since: HashMap<u32, u64> = HashMap::new();
    let mut regrant = Regrant::default();
    loop {
        let event = tokio::select! {
            event = member.next() => event,
            () = regrant.due() => {
                regrant.grant(&mut member).await;
                continue;
            }
            () = stop.notified() => return,
        };
        if let Event::Record(r) = &event {
            let n = since.entry(r.partition).or_default();
            *n += 1;
            if *n == 10 {
                *n = 0;
                member
                    .commit(BTreeMap::from([(r.partition, r.offset)]))
                    .await;
            }
            regrant.consumed();
        }
        seen.lock().unwrap().push(event);
    }
}

/// Partitions move from a member on one instance to a member on another
/// while the first has commits in flight: every commit the first member
/// was answered for is where the second starts (nothing committed is read
/// again), its commits after losing a partition are refused, and the
/// second member's commits are what the group ends with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handoff_with_commits_in_flight_keeps_every_answered_commit() {
    let (one, two) = (Partlog::start().await, Partlog::start().await);
    let mut client = one.client().await;
    let stream = unique_stream("consume-handoff");
    let partitions = 4;
    create_stream(&mut client, &stream, partitions).await;
    publish_per_partition(&mut client, &stream, partitions, 3000).await;

    let stop = std::sync::Arc::new(tokio::sync::Notify::new());
    type Seen = std::sync::Arc<std::sync::Mutex<Vec<Event>>>;
    let (seen_a, seen_b): (Seen, Seen) = Default::default();
    let a = Member::open(&mut client, &stream, "handoff", 200).await;
    let mut members = vec![tokio::spawn(committing_member(
        a,
        stop.clone(),
        seen_a.clone(),
    ))];
    // B joins once A is well into every partition.
    let records = |seen: &std::sync::Mutex<Vec<Event>>| {
        seen.lock()
            .unwrap()
            .iter()
            .filter(|e| matches!(e, Event::Record(_)))
            .count()
    };
    while records(&seen_a) < 4000 {
        // A member that got a record beyond its credit fails at once.
        fail_if_any_ended(&mut members).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let b = Member::open(&mut two.client().await, &stream, "handoff", 200).await;
    members.push(tokio::spawn(committing_member(
        b,
        stop.clone(),
        seen_b.clone(),
    )));

    // Until every record was read by someone and B holds some partitions.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let held_by_b = |seen: &std::sync::Mutex<Vec<Event>>| {
        seen.lock()
            .unwrap()
            .iter()
            .filter(|e| matches!(e, Event::Assignment(a) if a.state() == AssignmentState::Active))
            .count()
    };
    while records(&seen_a) + records(&seen_b) < 12_000 || held_by_b(&seen_b) == 0 {
        // A member that got a record beyond its credit fails at once.
        fail_if_any_ended(&mut members).await;
        assert!(
            tokio::time::Instant::now() < deadline,
            "stuck: A read {}, B read {} and holds {}",
            records(&seen_a),
            records(&seen_b),
            held_by_b(&seen_b)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.notify_waiters();
    for member in members {
        member.await.unwrap();
    }

    let seen_a = seen_a.lock().unwrap().clone();
    let seen_b = seen_b.lock().unwrap().clone();
    // A: per partition, the highest commit it was answered for while it held
    // the partition; no record and no successful commit after INACTIVE.
    let mut answered: HashMap<u32, u64> = HashMap::new();
    let mut lost: Vec<u32> = Vec::new();
    for event in &seen_a {
        match event {
            Event::Record(r) => {
                assert!(!lost.contains(&r.partition), "A read {r:?} after INACTIVE")
            }
            Event::Commit(ack) => match (&ack.error, ack.committed) {
                (None, Some(committed)) => {
                    assert!(
                        !lost.contains(&ack.partition),
                        "A committed after INACTIVE: {ack:?}"
                    );
                    let best = answered.entry(ack.partition).or_default();
                    *best = (*best).max(committed);
                }
                (Some(error), _) => {
                    assert_eq!(error.code, Code::FailedPrecondition as i32, "{ack:?}");
                    assert!(lost.contains(&ack.partition), "refused while held: {ack:?}");
                }
                (None, None) => panic!("an answer without an offset: {ack:?}"),
            },
            Event::Assignment(a) if a.state() == AssignmentState::Inactive => {
                lost.push(a.partition)
            }
            Event::Assignment(_) => {}
            Event::Skipped(s) => panic!("skipped without a filter: {s:?}"),
            Event::EpochMarker(m) => panic!("the stream never grew: {m:?}"),
        }
    }
    assert!(!lost.is_empty(), "B took no partition from A");
    // B starts each partition it took right after A's last answered commit.
    for event in &seen_b {
        if let Event::Assignment(a) = event {
            if a.state() == AssignmentState::Active && lost.contains(&a.partition) {
                let expected = answered.get(&a.partition).map(|c| c + 1);
                assert_eq!(
                    a.next_offset,
                    expected,
                    "partition {}: B starts at {:?}, A's last answered commit was {:?}",
                    a.partition,
                    a.next_offset,
                    answered.get(&a.partition)
                );
            }
        }
    }
}

/// A client that stops granting credit costs partlog its credit plus a
/// couple of chunks per partition, not the partitions' backlog.
#[tokio::test]
async fn a_client_without_credit_does_not_make_partlog_buffer() {
    let server = Partlog::start().await;
    let mut client = server.client().await;
    let stream = unique_stream("consume-stall");
    create_stream(&mut client, &stream, 2).await;
    let value = vec![7u8; 256 * 1024];
    let publish_200_mib = async |client: &mut PartLogClient<Channel>| {
        for _ in 0..20 {
            let records = (0..40)
                .map(|i| record(&format!("k{i}"), value.clone()))
                .collect();
            publish_ok(client, &stream, records).await;
        }
    };
    // The write path's own buffers first, so that they do not count.
    publish_200_mib(&mut client).await;
    // Without a group it starts at NEXT: only what comes next is its to read.
    let mut member = Member::open(&mut client, &stream, "", 5).await;
    let Event::Assignment(_) = member.next().await else {
        panic!("ACTIVE first")
    };
    let grown_mib = peak_growth_mib(&server, publish_200_mib(&mut client)).await;
    println!("partlog grew by {grown_mib} MiB while a member without credit had 200 MiB to read");
    // Two chunks of about 4 MiB per partition, plus the credit: ~17 MiB.
    assert!(
        grown_mib < 40,
        "partlog grew by {grown_mib} MiB while a member without credit had 200 MiB to read"
    );
    // It gets exactly its 5 records (after its assignments), then more
    // once it grants more.
    let mut records = 0;
    while records < 5 {
        if let Event::Record(_) = member.next().await {
            records += 1;
        }
    }
    assert!(member
        .next_within(Duration::from_millis(300))
        .await
        .is_none());
    member.credit(795).await;
    while records < 800 {
        if let Event::Record(_) = member.next().await {
            records += 1;
        }
    }
}

/// A kill -9 of the instance a member consumes through, while it reads
/// and commits: the member that takes over starts every partition right
/// after a commit the first one sent — never before one it was answered
/// for (nothing acknowledged is read again), never after the last it
/// sent (nothing uncommitted is skipped) — and reads on from there without
/// a gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_under_load_keeps_every_answered_commit() {
    let mut one = Partlog::start().await;
    let two = Partlog::start().await;
    let mut client = two.client().await;
    let stream = unique_stream("consume-kill");
    let partitions = 4u32;
    create_stream(&mut client, &stream, partitions).await;
    publish_per_partition(&mut client, &stream, partitions, 3000).await;

    // A commits every 10 records of a partition without waiting for the
    // answers, so commits are in flight when its instance dies.
    let mut a = Member::open(&mut one.client().await, &stream, "kill", 200).await;
    let (mut sent, mut answered) = (HashMap::<u32, u64>::new(), HashMap::<u32, u64>::new());
    let mut since: HashMap<u32, u64> = HashMap::new();
    let mut read = 0;
    let mut regrant = Regrant::default();
    while read < 4000 {
        let event = tokio::select! {
            event = a.next() => event,
            () = regrant.due() => {
                regrant.grant(&mut a).await;
                continue;
            }
        };
        match event {
            Event::Record(r) => {
                read += 1;
                let n = since.entry(r.partition).or_default();
                *n += 1;
                if *n == 10 {
                    *n = 0;
                    a.commit(BTreeMap::from([(r.partition, r.offset)])).await;
                    sent.insert(r.partition, r.offset);
                }
                regrant.consumed();
            }
            Event::Commit(ack) => {
                assert!(ack.error.is_none(), "{ack:?}");
                let best = answered.entry(ack.partition).or_default();
                *best = (*best).max(ack.committed.expect("an answered commit's offset"));
            }
            Event::Assignment(_) => {}
            Event::Skipped(s) => panic!("skipped without a filter: {s:?}"),
            Event::EpochMarker(m) => panic!("the stream never grew: {m:?}"),
        }
    }
    one.kill();
    assert!(!answered.is_empty(), "A was answered for no commit");

    let mut b = Member::open(&mut client, &stream, "kill", 20_000).await;
    let mut next: HashMap<u32, u64> = HashMap::new();
    let mut remaining: u64 = 0;
    while next.len() < partitions as usize || remaining > 0 {
        match b.next().await {
            Event::Assignment(assignment) if assignment.state() == AssignmentState::Active => {
                let p = assignment.partition;
                let start = assignment.next_offset.unwrap_or(0);
                let floor = answered.get(&p).map_or(0, |c| c + 1);
                let ceiling = sent.get(&p).map_or(0, |c| c + 1);
                assert!(
                    (floor..=ceiling).contains(&start),
                    "partition {p}: B starts at {start}, A was answered up to {:?} and sent up \
                     to {:?}",
                    answered.get(&p),
                    sent.get(&p)
                );
                assert!(
                    next.insert(p, start).is_none(),
                    "partition {p} activated twice"
                );
                remaining += 3000 - start;
            }
            Event::Record(r) => {
                let expected = next
                    .get_mut(&r.partition)
                    .expect("a record of a held partition");
                assert_eq!(
                    r.offset, *expected,
                    "partition {}: a gap or a repeat",
                    r.partition
                );
                *expected += 1;
                remaining -= 1;
            }
            event => panic!("unexpected {event:?}"),
        }
    }
}

/// Issue 16: a member whose credit is used up (its partition tasks wait for
/// room to hand on their next chunk) still steps down when the broker asks:
/// a member that joins gets its share at once, not when the first grants
/// credit again.
#[tokio::test]
async fn a_step_down_is_handled_whatever_the_members_credit() {
    let (one, two) = (Partlog::start().await, Partlog::start().await);
    let mut client = one.client().await;
    let stream = unique_stream("consume-stepdown");
    create_stream(&mut client, &stream, 2).await;
    // Many chunks per partition: each publish is a chunk of its own.
    publish_per_partition(&mut client, &stream, 2, 1000).await;

    let mut a = Member::open(&mut client, &stream, "stepdown", 1).await;
    let mut held = 0;
    let mut records = 0;
    while held < 2 || records < 1 {
        match a.next().await {
            Event::Assignment(_) => held += 1,
            Event::Record(_) => records += 1,
            Event::Commit(ack) => panic!("no commit sent: {ack:?}"),
            Event::Skipped(s) => panic!("skipped without a filter: {s:?}"),
            Event::EpochMarker(m) => panic!("the stream never grew: {m:?}"),
        }
    }
    // A grants nothing more. B joins and is given a partition.
    let mut b = Member::open(&mut two.client().await, &stream, "stepdown", 100).await;
    let given = loop {
        match b.next_within(Duration::from_secs(8)).await {
            Some(Event::Assignment(a)) if a.state() == AssignmentState::Active => break a,
            Some(_) => {}
            None => panic!("B was given no partition while A's credit is used up"),
        }
    };
    // A was told before B got it, and B starts at the beginning: nothing
    // was committed.
    let stepped_down = loop {
        match a.next().await {
            Event::Assignment(a) if a.state() == AssignmentState::Inactive => break a,
            _ => {}
        }
    };
    assert_eq!(stepped_down.partition, given.partition);
    assert_eq!(given.next_offset, None);
    let first = loop {
        if let Event::Record(record) = b.next().await {
            break record;
        }
    };
    assert_eq!(
        (first.partition, first.offset),
        (given.partition, 0),
        "B reads the partition from its start"
    );
}

/// Issue 16: a member whose transport is full cannot take its INACTIVE; the
/// broker moves the partition after the request timeout anyway. A commit
/// the member sent is then either done before the partition moved (and
/// the next member starts after it) or refused — never answered OK while
/// the next member reads the committed records again.
#[tokio::test]
async fn a_commit_after_the_partition_may_have_moved_is_refused() {
    let quick = [("PARTLOG_BROKER_REQUEST_TIMEOUT_MS", "2000")];
    let (one, two) = (
        Partlog::start_with(&quick).await,
        Partlog::start_with(&quick).await,
    );
    let mut client = one.client().await;
    let stream = unique_stream("consume-moved");
    create_stream(&mut client, &stream, 2).await;
    // ~10 MB per partition: more than the client's HTTP/2 windows.
    let keys = partition_keys(2);
    for _ in 0..15 {
        let records = keys
            .iter()
            .flat_map(|k| (0..10).map(move |_| record(k, vec![7u8; 64 * 1024])))
            .collect();
        publish_ok(&mut client, &stream, records).await;
    }

    // A takes both partitions and reads partition 1 up to offset 4.
    let mut a = Member::open(&mut client, &stream, "moved", 100_000).await;
    loop {
        if let Event::Record(r) = a.next().await {
            if (r.partition, r.offset) == (1, 4) {
                break;
            }
        }
    }
    // A stops reading until its transport is full, then commits 1@4.
    tokio::time::sleep(Duration::from_secs(2)).await;
    a.commit(BTreeMap::from([(1, 4)])).await;

    // B joins; the broker gives it partition 1 once A's step-down timed out.
    let mut b = Member::open(&mut two.client().await, &stream, "moved", 100).await;
    let given = loop {
        match b.next().await {
            Event::Assignment(x) if x.state() == AssignmentState::Active => break x,
            _ => {}
        }
    };
    assert_eq!(given.partition, 1);

    // A reads on and finds its commit's answer.
    let ack = loop {
        if let Event::Commit(ack) = a.next().await {
            break ack;
        }
    };
    match (&ack.error, ack.committed) {
        (None, Some(committed)) => assert!(
            given.next_offset > Some(committed),
            "A's commit of {committed} was answered OK, and B starts at {:?}",
            given.next_offset
        ),
        (Some(error), _) => assert_eq!(error.code, Code::FailedPrecondition as i32, "{ack:?}"),
        (None, None) => panic!("an answer without an offset: {ack:?}"),
    }
}
