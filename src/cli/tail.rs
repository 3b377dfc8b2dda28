//! `partlog tail`: Subscribe, printing records and assignment events, and
//! with `--commit` committing what was printed.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use futures::StreamExt;
use serde::Serialize;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tonic::Status;

use super::client::{self, Failure, Result};
use super::output::{Printer, RecordRow};
use super::parse::Position;
use super::{Common, TailArgs};
use crate::proto::{self, subscribe_response::Event, AssignmentState};

/// An assignment event as `--json` prints it.
#[derive(Serialize)]
struct AssignmentLine {
    partition: u32,
    assignment: &'static str,
    next_offset: Option<u64>,
}

fn assignment_line(assignment: &proto::Assignment) -> AssignmentLine {
    let state = match AssignmentState::try_from(assignment.state) {
        Ok(AssignmentState::Active) => "ACTIVE",
        Ok(AssignmentState::Inactive) => "INACTIVE",
        Ok(AssignmentState::Reattached) => "REATTACHED",
        _ => "UNSPECIFIED",
    };
    AssignmentLine {
        partition: assignment.partition,
        assignment: state,
        next_offset: assignment.next_offset,
    }
}

pub async fn run(args: TailArgs, common: &Common) -> Result<()> {
    if args.from == Some(Position::Committed) && args.group.is_none() {
        return Err(Failure::Usage(
            "--from committed needs --group: only a group has committed offsets".into(),
        ));
    }
    let mut client = client::connect(common).await?;
    let mut committer = match (&args.group, args.commit) {
        (Some(group), true) => {
            // Its own connection: a unary Commit behind a busy Subscribe on
            // one HTTP/2 connection can wait for ever on flow control.
            let commits = client::connect(common).await?;
            Some(Committer::start(commits, &args.stream, group))
        }
        _ => None,
    };
    let subscribed = client
        .subscribe(proto::SubscribeRequest {
            stream: args.stream.clone(),
            group: args.group.clone().unwrap_or_default(),
            partitions: args.partitions.clone(),
            start: args.from.as_ref().map(Position::to_proto),
            window: args.window.unwrap_or(0),
            filters: args.filtering.filters.clone(),
            include_unfiltered: args.filtering.include_unfiltered,
        })
        .await;
    let mut events = match subscribed {
        Ok(events) => events.into_inner(),
        Err(status) => {
            if let Some(committer) = committer {
                committer.finish().await?;
            }
            return Err(status.into());
        }
    };
    let mut printer = Printer::new(common.json);
    let max = args.max.unwrap_or(u64::MAX);
    let mut printed = 0;
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    let tailed: Result<()> = async {
        while printed < max {
            let event = tokio::select! {
                event = events.next() => event,
                _ = &mut interrupted => return Ok(()),
                failure = Committer::failure(committer.as_mut()) => return Err(failure),
            };
            let event = match event {
                Some(event) => event?,
                None => return Err(Failure::Other("partlog ended the subscription".into())),
            };
            match event.event {
                Some(Event::Record(record)) => {
                    let (partition, offset) = (record.partition, record.offset);
                    printer.row(&RecordRow::new(record, args.values.values))?;
                    printed += 1;
                    if let Some(committer) = &committer {
                        committer.processed(partition, offset);
                    }
                }
                Some(Event::Skipped(skipped)) => {
                    // What the filter passed is processed too.
                    if let (Some(committer), Some(last)) =
                        (&committer, skipped.next_offset.checked_sub(1))
                    {
                        committer.processed(skipped.partition, last);
                    }
                }
                Some(Event::EpochMarker(marker)) => printer.epoch_marker(&marker)?,
                Some(Event::Assignment(assignment)) => {
                    let line = assignment_line(&assignment);
                    let state = match line.next_offset {
                        Some(next) => format!("{}, next offset {next}", line.assignment),
                        None => line.assignment.to_owned(),
                    };
                    printer.note::<RecordRow, _>(&[line.partition.to_string(), state], &line)?;
                }
                None => {}
            }
        }
        Ok(())
    }
    .await;
    // Leave the group before the last commit: another member can take over.
    drop(events);
    let committed = match committer {
        Some(committer) => committer.finish().await,
        None => Ok(()),
    };
    tailed.and(committed)
}

/// Commits printed offsets in the background: at most one Commit in
/// flight, and the offsets printed meanwhile go together in the next one,
/// so a fast tail costs few commits and never waits for one.
struct Committer {
    shared: Arc<Shared>,
    /// Ends only when a commit failed, or after [`Committer::finish`].
    task: Option<JoinHandle<Result<(), Status>>>,
}

#[derive(Default)]
struct Shared {
    /// Offsets printed since the last commit began, per partition.
    pending: Mutex<BTreeMap<u32, u64>>,
    wake: Notify,
    closing: AtomicBool,
}

impl Committer {
    fn start(mut client: client::Client, stream: &str, group: &str) -> Committer {
        let shared = Arc::new(Shared::default());
        let (stream, group) = (stream.to_owned(), group.to_owned());
        let task = tokio::spawn({
            let shared = shared.clone();
            async move {
                loop {
                    let offsets: HashMap<u32, u64> = std::mem::take(
                        &mut *shared
                            .pending
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner),
                    )
                    .into_iter()
                    .collect();
                    if !offsets.is_empty() {
                        let request = proto::CommitRequest {
                            group: group.clone(),
                            stream: stream.clone(),
                            offsets,
                        };
                        client.commit(request).await.map_err(|s| {
                            Status::new(s.code(), format!("commit failed: {}", s.message()))
                        })?;
                    } else if shared.closing.load(Ordering::SeqCst) {
                        return Ok(());
                    } else {
                        // A permit stored by an earlier notify_one wakes at once.
                        shared.wake.notified().await;
                    }
                }
            }
        });
        Committer {
            shared,
            task: Some(task),
        }
    }

    /// The record at `offset` of `partition` was printed.
    fn processed(&self, partition: u32, offset: u64) {
        self.shared
            .pending
            .lock()
            .expect("not poisoned")
            .insert(partition, offset);
        self.shared.wake.notify_one();
    }

    /// Resolves when a commit failed; never without a committer.
    async fn failure(committer: Option<&mut Committer>) -> Failure {
        let Some(committer) = committer else {
            return std::future::pending().await;
        };
        let Some(task) = committer.task.as_mut() else {
            return std::future::pending().await;
        };
        let ended = task.await;
        committer.task = None;
        match ended {
            Ok(Err(status)) => Failure::Call(status),
            Ok(Ok(())) => Failure::Other("the committer stopped".into()),
            Err(e) => Failure::Other(format!("the committer failed: {e}")),
        }
    }

    /// Commits what is still pending and stops.
    async fn finish(mut self) -> Result<()> {
        self.shared.closing.store(true, Ordering::SeqCst);
        self.shared.wake.notify_one();
        match self.task.take() {
            Some(task) => match task.await {
                Ok(result) => result.map_err(Failure::Call),
                Err(e) => Err(Failure::Other(format!("the committer failed: {e}"))),
            },
            // Its failure was reported already.
            None => Ok(()),
        }
    }
}
