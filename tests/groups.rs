//! Subscribe, consumer groups (single active consumer across partlog
//! processes), Commit, GetOffsets, ListGroups and ResetOffsets against the
//! real broker.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use common::{
    create_stream, native_environment, peak_growth_mib, publish_ok, record, unique_stream, Partlog,
};
use futures::StreamExt;
use partlog::proto::part_log_client::PartLogClient;
use partlog::proto::start_position::{self, Position};
use partlog::proto::subscribe_response::Event;
use partlog::proto::{
    AssignmentState, CommitRequest, DescribeGroupRequest, GetOffsetsRequest, GroupMember,
    ListGroupsRequest, OffsetSource, PartitionMembers, PartitionOffsets, PublishRecord, Record,
    ResetOffsetsRequest, StartPosition, SubscribeRequest, SubscribeResponse,
};
use rabbitmq_stream_client::types::OffsetSpecification;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic::Streaming;

/// Generous bound for events that must come; a test fails, never hangs.
const EVENT_TIMEOUT: Duration = Duration::from_secs(30);

fn position(p: Position) -> Option<StartPosition> {
    Some(StartPosition { position: Some(p) })
}

async fn subscribe(
    client: &mut PartLogClient<Channel>,
    stream: &str,
    group: &str,
    start: Option<StartPosition>,
    window: u32,
) -> Streaming<SubscribeResponse> {
    client
        .subscribe(SubscribeRequest {
            stream: stream.into(),
            group: group.into(),
            partitions: vec![],
            start,
            window,
            ..Default::default()
        })
        .await
        .expect("subscribe")
        .into_inner()
}

async fn next_event(events: &mut Streaming<SubscribeResponse>) -> Event {
    tokio::time::timeout(EVENT_TIMEOUT, events.message())
        .await
        .expect("an event within the timeout")
        .expect("stream healthy")
        .expect("stream open")
        .event
        .expect("event set")
}

/// The next `n` records, skipping assignment events.
async fn next_records(events: &mut Streaming<SubscribeResponse>, n: usize) -> Vec<Record> {
    let mut records = Vec::new();
    while records.len() < n {
        if let Event::Record(r) = next_event(events).await {
            records.push(r);
        }
    }
    records
}

fn values(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .map(|r| String::from_utf8(r.value.to_vec()).unwrap())
        .collect()
}

#[tokio::test]
async fn every_start_position_without_a_group() {
    let server = Partlog::start().await;
    let mut client = server.client().await;
    let stream = unique_stream("starts");
    create_stream(&mut client, &stream, 1).await;
    let batch = |prefix: &str| -> Vec<PublishRecord> {
        (0..10)
            .map(|i| record("k", format!("{prefix}{i}")))
            .collect()
    };
    publish_ok(&mut client, &stream, batch("a")).await;
    // Chunk timestamps have millisecond resolution; leave a clear gap.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let between = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    publish_ok(&mut client, &stream, batch("b")).await;

    let mut first = subscribe(
        &mut client,
        &stream,
        "",
        position(Position::First(start_position::First {})),
        0,
    )
    .await;
    let Event::Assignment(assigned) = next_event(&mut first).await else {
        panic!("an assignment comes first");
    };
    assert_eq!(assigned.state(), AssignmentState::Active);
    let records = next_records(&mut first, 20).await;
    assert_eq!(values(&records)[0], "a0");
    assert_eq!(values(&records)[19], "b9");
    assert!(records
        .iter()
        .enumerate()
        .all(|(i, r)| r.offset == i as u64));

    let mut at_offset =
        subscribe(&mut client, &stream, "", position(Position::Offset(15)), 0).await;
    assert_eq!(
        values(&next_records(&mut at_offset, 5).await),
        ["b5", "b6", "b7", "b8", "b9"]
    );

    let timestamp = prost_types::Timestamp {
        seconds: between.as_secs() as i64,
        nanos: between.subsec_nanos() as i32,
    };
    let mut by_time = subscribe(
        &mut client,
        &stream,
        "",
        position(Position::Timestamp(timestamp)),
        0,
    )
    .await;
    assert_eq!(values(&next_records(&mut by_time, 1).await), ["b0"]);

    // LAST starts at the last chunk: the second batch, written as one.
    let mut last = subscribe(
        &mut client,
        &stream,
        "",
        position(Position::Last(start_position::Last {})),
        0,
    )
    .await;
    let last_records = next_records(&mut last, 1).await;
    assert!(last_records[0].offset >= 10, "{:?}", last_records[0]);

    let mut next = subscribe(&mut client, &stream, "", None, 0).await;
    let Event::Assignment(_) = next_event(&mut next).await else {
        panic!("an assignment comes first");
    };
    publish_ok(&mut client, &stream, batch("c")).await;
    // NEXT sees only what came after it attached.
    assert_eq!(values(&next_records(&mut next, 1).await), ["c0"]);
    let rest = next_records(&mut last, 19 - last_records[0].offset as usize + 10).await;
    assert_eq!(rest.last().map(|r| r.offset), Some(29));
}

/// One group member: consumes its subscription, checks per-partition order
/// and commits every record through its own partlog instance.
struct Member {
    state: Arc<Mutex<MemberState>>,
    task: JoinHandle<()>,
}

#[derive(Default, Debug)]
struct MemberState {
    active: BTreeSet<u32>,
    /// next_offset of the latest activation per partition.
    activated_at: BTreeMap<u32, Option<u64>>,
    /// (partition, offset) of every record, in arrival order.
    received: Vec<(u32, u64)>,
    committed: BTreeMap<u32, u64>,
}

impl Member {
    async fn join(server: &Partlog, stream: &str, group: &str) -> Member {
        let mut client = server.client().await;
        let mut events = subscribe(&mut client, stream, group, None, 100).await;
        let state = Arc::new(Mutex::new(MemberState::default()));
        let (stream, group, shared) = (stream.to_owned(), group.to_owned(), state.clone());
        let task = tokio::spawn(async move {
            while let Ok(Some(message)) = events.message().await {
                match message.event.expect("event set") {
                    Event::Assignment(a) => {
                        let mut s = shared.lock().unwrap();
                        if a.state() == AssignmentState::Active {
                            s.active.insert(a.partition);
                            s.activated_at.insert(a.partition, a.next_offset);
                        } else {
                            s.active.remove(&a.partition);
                        }
                    }
                    Event::Record(r) => {
                        {
                            let mut s = shared.lock().unwrap();
                            assert!(
                                s.active.contains(&r.partition),
                                "record of an inactive partition"
                            );
                            s.received.push((r.partition, r.offset));
                        }
                        let committed = client
                            .commit(CommitRequest {
                                group: group.clone(),
                                stream: stream.clone(),
                                offsets: HashMap::from([(r.partition, r.offset)]),
                            })
                            .await;
                        // The instance may just have been killed.
                        if committed.is_err() {
                            return;
                        }
                        shared
                            .lock()
                            .unwrap()
                            .committed
                            .insert(r.partition, r.offset);
                    }
                    Event::Skipped(s) => panic!("skipped without a filter: {s:?}"),
                    Event::EpochMarker(m) => panic!("the stream never grew: {m:?}"),
                }
            }
        });
        Member { state, task }
    }

    fn active(&self) -> BTreeSet<u32> {
        self.state.lock().unwrap().active.clone()
    }

    fn received(&self) -> Vec<(u32, u64)> {
        self.state.lock().unwrap().received.clone()
    }
}

/// Waits until `done` holds, checking every 100 ms.
/// DescribeGroup's answer once `done` holds for it. The management API
/// serves the broker's statistics, which lag the subscriptions by up to
/// their interval (5 s by default).
async fn describe_group_until(
    client: &mut PartLogClient<Channel>,
    stream: &str,
    group: &str,
    done: impl Fn(&[PartitionMembers]) -> bool,
) -> Vec<PartitionMembers> {
    let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
    loop {
        let rows = client
            .describe_group(DescribeGroupRequest {
                stream: stream.into(),
                group: group.into(),
            })
            .await
            .expect("DescribeGroup")
            .into_inner()
            .partitions;
        if done(&rows) {
            return rows;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "DescribeGroup of {group:?} still answers {rows:#?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn offsets(
    client: &mut PartLogClient<Channel>,
    stream: &str,
    group: &str,
) -> Vec<PartitionOffsets> {
    client
        .get_offsets(GetOffsetsRequest {
            group: group.into(),
            stream: stream.into(),
        })
        .await
        .expect("get offsets")
        .into_inner()
        .partitions
}

fn keyed_batch(tag: &str, n: usize) -> Vec<PublishRecord> {
    (0..n)
        .map(|i| record(&format!("key-{}", i % 12), format!("{tag}-{i}")))
        .collect()
}

/// The member received exactly the partition's records after `committed`:
/// no gap, no repeat. Offsets are compared with what the partition holds,
/// since the broker's offset tracking takes offsets between records.
async fn assert_resumed_exactly(
    client: &mut PartLogClient<Channel>,
    stream: &str,
    received: &[(u32, u64)],
    partition: u32,
    committed: u64,
) {
    let expected: Vec<u64> = common::read_all(client, stream, partition)
        .await
        .iter()
        .map(|r| r.offset)
        .filter(|o| *o > committed)
        .collect();
    let got: Vec<u64> = received
        .iter()
        .filter(|(p, o)| *p == partition && *o > committed)
        .map(|(_, o)| *o)
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(
        got, expected,
        "partition {partition} after offset {committed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_members_share_partitions_across_processes_and_fail_over() {
    let mut a = Partlog::start().await;
    let b = Partlog::start().await;
    let stream = unique_stream("sac");
    let group = "billing";
    let mut admin = b.client().await;
    create_stream(&mut admin, &stream, 3).await;
    publish_ok(&mut admin, &stream, keyed_batch("one", 60)).await;

    let first = Member::join(&a, &stream, group).await;
    eventually("the only member to own every partition", || {
        first.active().len() == 3
    })
    .await;
    let second = Member::join(&b, &stream, group).await;
    eventually("the partitions to be split between the members", || {
        let (x, y) = (first.active(), second.active());
        !x.is_empty() && !y.is_empty() && x.is_disjoint(&y) && x.len() + y.len() == 3
    })
    .await;
    // Either instance describes both members: per partition one
    // subscription of each instance, the holder's active (once the broker's
    // statistics, which the management API serves, caught up).
    let holder = |p: u32| if first.active().contains(&p) { &a } else { &b };
    let named =
        |m: &GroupMember, server: &Partlog| m.member.starts_with(&format!("{}#", server.addr));
    let rows = describe_group_until(&mut admin, &stream, group, |rows| {
        rows.iter().all(|row| {
            row.members.len() == 2
                && row.members[0].active
                && !row.members[1].active
                && named(&row.members[0], holder(row.partition))
                && row.members.iter().all(|m| m.connection.contains(':'))
        })
    })
    .await;
    for row in rows {
        assert_eq!(
            row.members.iter().filter(|m| named(m, &a)).count(),
            1,
            "{row:?}"
        );
        assert_eq!(
            row.members.iter().filter(|m| named(m, &b)).count(),
            1,
            "{row:?}"
        );
    }

    publish_ok(&mut admin, &stream, keyed_batch("two", 60)).await;
    let tails: Vec<u64> = offsets(&mut admin, &stream, group)
        .await
        .iter()
        .map(|p| p.tail.expect("non-empty partition"))
        .collect();
    eventually("every record to be processed and committed", || {
        let (x, y) = (first.state.lock().unwrap(), second.state.lock().unwrap());
        (0..3u32).all(|p| {
            let committed = x.committed.get(&p).max(y.committed.get(&p));
            committed == Some(&tails[p as usize])
        })
    })
    .await;
    // The broker holds what `a` committed, as `b` sees it.
    for row in offsets(&mut admin, &stream, group).await {
        assert_eq!(row.committed, Some(tails[row.partition as usize]));
        assert_eq!(row.lag, 0);
    }

    let moved = first.active();
    a.kill();
    eventually("the survivor to own every partition", || {
        second.active().len() == 3
    })
    .await;
    {
        let s = second.state.lock().unwrap();
        for p in &moved {
            assert_eq!(
                s.activated_at[p],
                Some(tails[*p as usize] + 1),
                "partition {p} resumes at committed + 1"
            );
        }
    }
    publish_ok(&mut admin, &stream, keyed_batch("three", 60)).await;
    let new_tails: Vec<u64> = offsets(&mut admin, &stream, group)
        .await
        .iter()
        .map(|p| p.tail.unwrap())
        .collect();
    eventually("the survivor to read the new records", || {
        let s = second.state.lock().unwrap();
        (0..3u32).all(|p| s.committed.get(&p) == Some(&new_tails[p as usize]))
    })
    .await;
    let received = second.received();
    for p in &moved {
        // No gap and no redelivery of committed records after failover.
        assert_resumed_exactly(&mut admin, &stream, &received, *p, tails[*p as usize]).await;
    }
    second.task.abort();
    first.task.abort();
}

#[tokio::test]
async fn a_leaving_member_hands_its_partitions_over() {
    let server = Partlog::start().await;
    let stream = unique_stream("leave");
    let mut admin = server.client().await;
    create_stream(&mut admin, &stream, 3).await;
    let first = Member::join(&server, &stream, "g").await;
    eventually("the first member to own every partition", || {
        first.active().len() == 3
    })
    .await;
    let second = Member::join(&server, &stream, "g").await;
    eventually("a split", || {
        !second.active().is_empty() && first.active().len() < 3
    })
    .await;
    first.task.abort(); // Drops the subscription: the client went away.
    eventually("the second member to own every partition", || {
        second.active().len() == 3
    })
    .await;
    second.task.abort();
}

/// A native super stream consumer with single active consumer and the
/// group's name is a member like any other: the broker hands it a partition
/// partlog's member gives up, and hands it back when the native one leaves.
#[tokio::test]
async fn a_native_consumer_is_a_member_of_the_group() {
    let server = Partlog::start().await;
    let stream = unique_stream("mixed");
    let mut client = server.client().await;
    create_stream(&mut client, &stream, 3).await;
    let member = Member::join(&server, &stream, "mixed").await;
    eventually("the partlog member to own every partition", || {
        member.active().len() == 3
    })
    .await;

    let environment = native_environment().await;
    let mut native = environment
        .super_stream_consumer()
        .name("mixed")
        .enable_single_active_consumer(true)
        .offset(OffsetSpecification::First)
        .consumer_update(|_, _| async { OffsetSpecification::First })
        .build(&stream)
        .await
        .expect("native super stream consumer");
    let native_handle = native.handle();
    let native_streams = Arc::new(Mutex::new(BTreeSet::new()));
    let native_task = {
        let native_streams = native_streams.clone();
        tokio::spawn(async move {
            while let Some(Ok(delivery)) = native.next().await {
                native_streams
                    .lock()
                    .unwrap()
                    .insert(delivery.stream().clone());
            }
        })
    };
    eventually("the native member to take one partition", || {
        member.active().len() == 2
    })
    .await;
    let given_up = (0..3u32).find(|p| !member.active().contains(p)).unwrap();
    // DescribeGroup shows the native member, with no partlog name, active
    // on the partition it took.
    describe_group_until(&mut client, &stream, "mixed", |rows| {
        rows.iter().all(|row| {
            let natives: Vec<_> = row.members.iter().filter(|m| m.member.is_empty()).collect();
            row.members.len() == 2
                && natives.len() == 1
                && natives[0].active == (row.partition == given_up)
        })
    })
    .await;

    // Records of every partition: the given-up one goes to the native
    // member only (Member asserts it gets no record of an inactive one).
    publish_ok(&mut client, &stream, keyed_batch("mixed", 60)).await;
    eventually("the native member to read its partition", || {
        !native_streams.lock().unwrap().is_empty()
    })
    .await;
    eventually("the partlog member to read its partitions", || {
        member
            .received()
            .iter()
            .map(|(p, _)| *p)
            .collect::<BTreeSet<_>>()
            .len()
            == 2
    })
    .await;
    assert_eq!(
        *native_streams.lock().unwrap(),
        BTreeSet::from([format!("{stream}-{given_up}")])
    );
    assert!(member.received().iter().all(|(p, _)| *p != given_up));

    native_handle
        .close()
        .await
        .expect("close the native consumer");
    native_task.abort();
    eventually("the partlog member to own every partition again", || {
        member.active().len() == 3
    })
    .await;
    eventually(
        "the partlog member to read the handed-back partition",
        || member.received().iter().any(|(p, _)| *p == given_up),
    )
    .await;
    member.task.abort();
}

#[tokio::test]
async fn a_group_subscriber_sees_offset_and_key_order() {
    let server = Partlog::start().await;
    let stream = unique_stream("order");
    let mut admin = server.client().await;
    create_stream(&mut admin, &stream, 3).await;
    let mut consumer = server.client().await;
    let mut events = subscribe(&mut consumer, &stream, "ordered", None, 50).await;
    let mut publishers = Vec::new();
    for p in 0..3 {
        let mut client = server.client().await;
        let stream = stream.clone();
        publishers.push(tokio::spawn(async move {
            for batch in 0..8 {
                let records = (0..30)
                    .map(|i| record(&format!("p{p}-key-{}", i % 7), format!("{batch:02}-{i:02}")))
                    .collect();
                publish_ok(&mut client, &stream, records).await;
            }
        }));
    }
    for publisher in publishers {
        publisher.await.unwrap();
    }
    let records = next_records(&mut events, 3 * 8 * 30).await;
    let mut last_offset: HashMap<u32, u64> = HashMap::new();
    let mut per_key: HashMap<String, Vec<String>> = HashMap::new();
    for r in records {
        if let Some(previous) = last_offset.insert(r.partition, r.offset) {
            assert!(
                r.offset > previous,
                "partition {} out of order",
                r.partition
            );
        }
        per_key
            .entry(r.key.clone())
            .or_default()
            .push(String::from_utf8(r.value.to_vec()).unwrap());
    }
    for (key, values) in per_key {
        let mut sorted = values.clone();
        sorted.sort();
        assert_eq!(values, sorted, "publish order of {key}");
    }
}

#[tokio::test]
async fn commits_lag_restart_and_a_second_instance() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("offsets");
    let data_dir = data_dir.to_str().unwrap();
    let mut a = Partlog::start_with(&[("PARTLOG_OFFSETS_DATA_DIR", data_dir)]).await;
    let mut client = a.client().await;
    let stream = unique_stream("lag");
    create_stream(&mut client, &stream, 3).await;
    let partitions = publish_ok(&mut client, &stream, keyed_batch("r", 90)).await;
    let mut counts = [0u64; 3];
    for p in partitions {
        counts[p as usize] += 1;
    }

    let before = offsets(&mut client, &stream, "reports").await;
    assert_eq!(before.len(), 3);
    for row in &before {
        let n = counts[row.partition as usize];
        assert_eq!(row.committed, None);
        assert_eq!((row.first, row.tail), (Some(0), Some(n - 1)));
        assert_eq!(row.lag, n, "nothing committed: every record is lag");
    }

    // Commit M records of each partition: the 5th record (offset 4).
    let commit = |offsets: HashMap<u32, u64>| CommitRequest {
        group: "reports".into(),
        stream: stream.clone(),
        offsets,
    };
    let results = client
        .commit(commit(HashMap::from([(0, 4), (1, 4), (2, 4)])))
        .await
        .unwrap()
        .into_inner()
        .results;
    assert!(results
        .iter()
        .all(|r| r.committed == Some(4) && !r.ignored_lower));
    let lower = client
        .commit(commit(HashMap::from([(1, 2)])))
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(
        (lower[0].committed, lower[0].ignored_lower),
        (Some(4), true)
    );
    // An offset past the last record names nothing processed.
    let past = client
        .commit(commit(HashMap::from([(0, counts[0])])))
        .await
        .expect_err("commit past the last record");
    assert_eq!(past.code(), tonic::Code::InvalidArgument, "{past:?}");

    for row in offsets(&mut client, &stream, "reports").await {
        let n = counts[row.partition as usize];
        assert_eq!(row.committed, Some(4));
        assert_eq!(row.committed_source(), OffsetSource::Local);
        assert_eq!(row.lag, n - 1 - 4, "lag = tail - committed");
    }
    let groups = client
        .list_groups(ListGroupsRequest {
            stream: stream.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .groups;
    assert_eq!(groups, ["reports"]);

    // Offsets survive a restart of the same instance...
    assert!(a.terminate().success());
    let a = Partlog::start_with(&[("PARTLOG_OFFSETS_DATA_DIR", data_dir)]).await;
    let mut client = a.client().await;
    for row in offsets(&mut client, &stream, "reports").await {
        assert_eq!(
            (row.committed, row.committed_source()),
            (Some(4), OffsetSource::Local)
        );
    }
    // ...and reach another instance through the broker.
    let b = Partlog::start().await;
    let mut other = b.client().await;
    for row in offsets(&mut other, &stream, "reports").await {
        assert_eq!(
            (row.committed, row.committed_source()),
            (Some(4), OffsetSource::Broker)
        );
    }
    // A subscriber on the other instance resumes at committed + 1.
    let mut events = subscribe(&mut other, &stream, "reports", None, 10).await;
    let mut starts = BTreeMap::new();
    while starts.len() < 3 {
        if let Event::Assignment(a) = next_event(&mut events).await {
            starts.insert(a.partition, a.next_offset);
        }
    }
    assert!(starts.values().all(|s| *s == Some(5)), "{starts:?}");
    let first = next_records(&mut events, 1).await;
    assert_eq!(first[0].offset, 5);
}

#[tokio::test]
async fn reset_moves_a_group_back_and_forth() {
    let server = Partlog::start().await;
    let mut client = server.client().await;
    let stream = unique_stream("reset");
    create_stream(&mut client, &stream, 1).await;
    publish_ok(
        &mut client,
        &stream,
        (0..10).map(|i| record("k", format!("{i}"))).collect(),
    )
    .await;
    client
        .commit(CommitRequest {
            group: "g".into(),
            stream: stream.clone(),
            offsets: HashMap::from([(0, 8)]),
        })
        .await
        .unwrap();
    let reset = |to: Position| ResetOffsetsRequest {
        group: "g".into(),
        stream: stream.clone(),
        partitions: vec![],
        to: position(to),
    };
    let back = client
        .reset_offsets(reset(Position::Offset(3)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(back.results[0].committed, Some(2), "next read is offset 3");
    assert_eq!(
        offsets(&mut client, &stream, "g").await[0].committed,
        Some(2)
    );

    let end = client
        .reset_offsets(reset(Position::Last(start_position::Last {})))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(end.results[0].committed, Some(9));
    assert_eq!(offsets(&mut client, &stream, "g").await[0].lag, 0);

    let start = client
        .reset_offsets(reset(Position::First(start_position::First {})))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(start.results[0].committed, None, "nothing processed");
    let row = &offsets(&mut client, &stream, "g").await[0];
    assert_eq!((row.committed, row.lag), (None, 10));
    let mut events = subscribe(&mut client, &stream, "g", None, 10).await;
    assert_eq!(next_records(&mut events, 1).await[0].offset, 0);
}

/// Members joining at the same moment make the broker activate and step
/// down consumers in quick succession; each member's view must follow the
/// broker's order (the client library once handed a connection's frames
/// to its handler on a task each, so "inactive" could overtake the "active"
/// before it and two members believed they held the partition).
#[tokio::test]
async fn members_joining_together_agree_with_the_broker() {
    let (one, two) = (Partlog::start().await, Partlog::start().await);
    let mut client = one.client().await;
    let stream = unique_stream("join");
    create_stream(&mut client, &stream, 8).await;
    for round in 0..5 {
        let group = format!("join-{round}");
        let (mut ca, mut cb, mut cc) = (client.clone(), two.client().await, client.clone());
        let (a, b, c) = tokio::join!(
            common::MemberEvents::join(&mut ca, "a", &stream, &group),
            common::MemberEvents::join(&mut cb, "b", &stream, &group),
            common::MemberEvents::join(&mut cc, "c", &stream, &group),
        );
        let logs = || format!("round {round}\none:\n{}\ntwo:\n{}", one.log(), two.log());
        common::assert_one_holder_each(&[&a, &b, &c], 8, Duration::from_secs(20), logs).await;
    }
}

/// ResetOffsets follows Commit's rule: no position past the next record to
/// be written, which would make the group skip records not yet written.
#[tokio::test]
async fn a_reset_past_the_tail_is_refused_like_a_commit() {
    let server = Partlog::start().await;
    let mut client = server.client().await;
    let stream = unique_stream("reset-tail");
    create_stream(&mut client, &stream, 2).await;
    // Partition 0 gets records 0..=9 (key "a" routes to partition 0 of 2,
    // see tests/data/routing-vectors.tsv); partition 1 stays empty.
    let partition_0_key = "a";
    publish_ok(
        &mut client,
        &stream,
        (0..10)
            .map(|i| record(partition_0_key, format!("{i}")))
            .collect(),
    )
    .await;
    let reset = |partition: u32, offset: u64| ResetOffsetsRequest {
        group: "g".into(),
        stream: stream.clone(),
        partitions: vec![partition],
        to: position(Position::Offset(offset)),
    };
    client.reset_offsets(reset(0, 4)).await.unwrap();

    // Commit's codes are its own (see the proto): INVALID_ARGUMENT past
    // the last record, FAILED_PRECONDITION while the partition holds none.
    use tonic::Code::{FailedPrecondition, InvalidArgument};
    for (partition, offset, names, commit_code) in [
        (0, 11, "offset 9", InvalidArgument),
        (0, 1_000_000_000_000, "offset 9", InvalidArgument),
        (1, 5, "holds no records", FailedPrecondition),
    ] {
        let err = client
            .reset_offsets(reset(partition, offset))
            .await
            .expect_err("a reset past the tail");
        assert_eq!(err.code(), InvalidArgument, "{err:?}");
        assert!(err.message().contains(names), "{}", err.message());
        // Commit refuses the same offset.
        let commit = client
            .commit(CommitRequest {
                group: "g".into(),
                stream: stream.clone(),
                offsets: HashMap::from([(partition, offset)]),
            })
            .await
            .expect_err("a commit past the tail");
        assert_eq!(commit.code(), commit_code, "{commit:?}");
        assert!(commit.message().contains(names), "{}", commit.message());
    }
    // Nothing changed: still reset to 4, i.e. 3 processed.
    let rows = offsets(&mut client, &stream, "g").await;
    assert_eq!(rows[0].committed, Some(3));
    assert_eq!(rows[1].committed, None);

    // Right after the last record (where the next one will be) and 0 on an
    // empty partition are fine.
    let end = client
        .reset_offsets(reset(0, 10))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(end.results[0].committed, Some(9));
    let empty = client
        .reset_offsets(reset(1, 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(empty.results[0].committed, None);
    // And a record published afterwards reaches the group.
    publish_ok(&mut client, &stream, vec![record(partition_0_key, "10")]).await;
    let mut events = subscribe(&mut client, &stream, "g", None, 10).await;
    let next = next_records(&mut events, 1).await;
    assert_eq!(String::from_utf8_lossy(&next[0].value), "10");
}

#[tokio::test]
async fn a_stalled_subscriber_does_not_make_partlog_buffer() {
    let server = Partlog::start().await;
    let mut client = server.client().await;
    let stream = unique_stream("stalled");
    create_stream(&mut client, &stream, 2).await;
    // A subscriber with a window of 10 that reads nothing.
    let mut stalled = server.client().await;
    let mut events = subscribe(&mut stalled, &stream, "slow", None, 10).await;

    // 200 MiB through partlog while the subscriber does not read.
    let value = vec![7u8; 256 * 1024];
    let publish_200_mib = async {
        for _ in 0..20 {
            let records = (0..40)
                .map(|i| record(&format!("k{i}"), value.clone()))
                .collect();
            publish_ok(&mut client, &stream, records).await;
        }
    };
    let grown_mib = peak_growth_mib(&server, publish_200_mib).await;
    println!("partlog grew by {grown_mib} MiB while a stalled subscriber had 200 MiB to read");
    assert!(
        grown_mib < 100,
        "partlog grew by {grown_mib} MiB while a stalled subscriber had 200 MiB to read"
    );

    // The subscriber then gets every record, in order per partition.
    let records = next_records(&mut events, 800).await;
    let mut last: HashMap<u32, u64> = HashMap::new();
    for r in &records {
        if let Some(previous) = last.insert(r.partition, r.offset) {
            assert_eq!(r.offset, previous + 1);
        }
    }
}
