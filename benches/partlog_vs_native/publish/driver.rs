//! Pushing batches through publishing paths, closed loop or at a fixed
//! rate, timing every batch from submission (or due time) to confirm.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use super::PublishPath;
use crate::records::{stamp, Dataset, Record, PRIME_FIRST};
use crate::setup::Result;
use crate::stats::Latencies;

/// Longest wait for a batch's confirmation before the run fails.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(60);

/// How batches are fed to the paths.
#[derive(Debug, Clone, Copy)]
pub enum Pace {
    /// As fast as confirms allow, each path keeping this many batches in
    /// flight.
    ClosedLoop { in_flight: usize },
    /// Batch k is due at start + k × batch / rate whatever came back;
    /// latency counts from when a batch was due, so a stalled path cannot
    /// hide the delay it causes (no coordinated omission).
    Rate { records_per_sec: f64 },
}

/// What pushing a workload through a set of paths gave.
pub struct Outcome {
    pub records: u64,
    /// From the first submission to the last confirm.
    pub elapsed: Duration,
    /// Per record: from when its batch was due (closed loop: submitted)
    /// until the whole batch was confirmed, as a client waiting for its
    /// batch sees it.
    pub latency: Latencies,
    /// Per record: from actual submission until confirmed.
    pub service: Latencies,
}

/// Pushes `batches` through `paths` (batch k on path k mod n) and waits for
/// every confirm. The paths come back for the next workload or closing.
pub async fn drive(
    paths: Vec<Box<dyn PublishPath>>,
    pace: Pace,
    batches: Vec<Vec<Record>>,
) -> Result<(Vec<Box<dyn PublishPath>>, Outcome)> {
    let n = paths.len();
    // Each batch with the number of records before it: when it is due.
    let mut shares: Vec<Vec<(u64, Vec<Record>)>> = (0..n).map(|_| Vec::new()).collect();
    let mut before = 0;
    for (k, batch) in batches.into_iter().enumerate() {
        let records = batch.len() as u64;
        shares[k % n].push((before, batch));
        before += records;
    }
    let start = Instant::now();
    let tasks: Vec<_> = paths
        .into_iter()
        .zip(shares)
        .map(|(path, share)| tokio::spawn(drive_path(path, pace, share, start)))
        .collect();
    let mut paths = Vec::new();
    let mut outcome = Outcome {
        records: 0,
        elapsed: Duration::ZERO,
        latency: Latencies::default(),
        service: Latencies::default(),
    };
    let mut failure = None;
    for task in tasks {
        match task.await? {
            Ok((path, share)) => {
                paths.push(path);
                outcome.records += share.records;
                outcome.elapsed = outcome.elapsed.max(share.last_confirm - start);
                outcome.latency.add(&share.latency);
                outcome.service.add(&share.service);
            }
            Err(e) => failure = failure.or(Some(e)),
        }
    }
    match failure {
        Some(e) => {
            close(paths).await;
            Err(e)
        }
        None => Ok((paths, outcome)),
    }
}

struct PathOutcome {
    records: u64,
    last_confirm: Instant,
    latency: Latencies,
    service: Latencies,
}

async fn drive_path(
    mut path: Box<dyn PublishPath>,
    pace: Pace,
    share: Vec<(u64, Vec<Record>)>,
    start: Instant,
) -> Result<(Box<dyn PublishPath>, PathOutcome)> {
    let mut outcome = PathOutcome {
        records: 0,
        last_confirm: start,
        latency: Latencies::default(),
        service: Latencies::default(),
    };
    let mut in_flight = VecDeque::new();
    for (records_before, mut batch) in share {
        let due = match pace {
            Pace::ClosedLoop { in_flight: most } => {
                while in_flight.len() >= most {
                    settle(in_flight.pop_front(), &mut outcome).await?;
                }
                None
            }
            Pace::Rate { records_per_sec } => {
                let due = start + Duration::from_secs_f64(records_before as f64 / records_per_sec);
                tokio::time::sleep_until(due).await;
                Some(due)
            }
        };
        stamp(&mut batch);
        let records = batch.len() as u64;
        let submitted = Instant::now();
        // A path whose connection died may never take the batch.
        let confirmed = tokio::time::timeout(CONFIRM_TIMEOUT, path.submit(batch))
            .await
            .map_err(|_| format!("a batch was not taken within {CONFIRM_TIMEOUT:?}"))??;
        let counted_from = due.unwrap_or(submitted);
        // A task of its own, so the confirm is timed when it arrives, not
        // when this loop next looks.
        in_flight.push_back(tokio::spawn(async move {
            let result = tokio::time::timeout(CONFIRM_TIMEOUT, confirmed).await;
            let done = Instant::now();
            let result = match result {
                Ok(Ok(confirmed)) if confirmed == records => Ok(records),
                Ok(Ok(confirmed)) => Err(format!("{confirmed} of {records} confirmed").into()),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(format!("no confirm within {CONFIRM_TIMEOUT:?}").into()),
            };
            (result, done, done - counted_from, done - submitted)
        }));
    }
    while !in_flight.is_empty() {
        settle(in_flight.pop_front(), &mut outcome).await?;
    }
    Ok((path, outcome))
}

type InFlight = tokio::task::JoinHandle<(Result<u64>, Instant, Duration, Duration)>;

async fn settle(batch: Option<InFlight>, outcome: &mut PathOutcome) -> Result<()> {
    let Some(batch) = batch else { return Ok(()) };
    let (result, done, latency, service) = batch.await?;
    let records = result?;
    outcome.records += records;
    outcome.last_confirm = outcome.last_confirm.max(done);
    outcome.latency.record(latency, records);
    outcome.service.record(service, records);
    Ok(())
}

/// Closes every path, all at once (a native super stream producer closes
/// its producers one after the other).
pub async fn close(paths: Vec<Box<dyn PublishPath>>) {
    futures::future::join_all(paths.into_iter().map(|path| path.close())).await;
}

/// Sends one batch of `batch` records through each path before timing
/// starts, from sequence [`PRIME_FIRST`]: opens connections and producers,
/// also those partlog and the super stream producer create on first use.
/// Returns the paths and the records sent.
pub async fn prime(
    paths: Vec<Box<dyn PublishPath>>,
    in_flight: usize,
    dataset: &Dataset,
    batch: usize,
) -> Result<(Vec<Box<dyn PublishPath>>, u64)> {
    let records = (paths.len() * batch) as u64;
    let batches = dataset.batches(PRIME_FIRST, records, batch);
    let (paths, _) = drive(paths, Pace::ClosedLoop { in_flight }, batches).await?;
    Ok((paths, records))
}
