//! Routing leases: the write side of the fence between a stream's epochs.
//!
//! An instance routes a stream's records over a partition count it read
//! from the broker (the stream's [`Routing`] state, or the partition list
//! of a stream that never grew) for at most [`RoutingLease::USABLE`] of the
//! lease `L` after it *asked*, then asks again before it routes more. A
//! resize stores the fenced state, reads it back, and waits `L` and a
//! quarter more before it appends the epoch markers ([`super::resize`]):
//! by then every instance's lease that predates the fence has run out —
//! with a quarter of `L` left over for records routed under it to reach
//! the broker — and every later answer said "fenced". An instance that
//! finds its stream fenced waits for the new count (up to the request
//! timeout, then UNAVAILABLE with a retry delay).
//!
//! Leases are renewed in the background once half of `L` passed, so a
//! stream published to steadily never waits for the broker.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::broker::{Broker, Routing, SuperStream};
use crate::error::{Error, Reason, Result};
use crate::sync::lock;

/// How often a fenced stream's state is read again.
const FENCE_POLL: Duration = Duration::from_millis(50);

/// The routing leases of every stream this instance publishes to.
pub struct RoutingLeases {
    broker: Arc<Broker>,
    lease: Duration,
    by_stream: Mutex<HashMap<String, Arc<StreamLease>>>,
}

/// One stream's lease; its renewal is one at a time.
#[derive(Default)]
struct StreamLease {
    held: Mutex<Option<RoutingLease>>,
    renewing: Arc<tokio::sync::Mutex<()>>,
}

/// What the broker answered, and when it was asked.
#[derive(Clone)]
struct RoutingLease {
    stream: Arc<SuperStream>,
    /// Partitions to route over; `None` while fenced.
    count: Option<u32>,
    asked: Instant,
}

impl RoutingLease {
    /// Routing goes on for three quarters of the lease after asking; the
    /// last quarter is for records routed to reach the broker.
    const USABLE: (u32, u32) = (3, 4);

    fn usable_until(&self, lease: Duration) -> Instant {
        self.asked + lease * Self::USABLE.0 / Self::USABLE.1
    }
}

/// The stream as it is routed now.
pub struct Route {
    pub stream: Arc<SuperStream>,
    /// The partitions records are routed over: the first `count` of
    /// `stream`'s.
    pub count: u32,
    /// Records routed so must be handed to their producers before this.
    pub usable_until: Instant,
}

impl Route {
    /// UNAVAILABLE once the lease the records were routed under ran out
    /// (their producer took that long to open): a resize may have fenced
    /// the count since; retrying routes them again.
    pub fn check(&self) -> Result<()> {
        if Instant::now() < self.usable_until {
            return Ok(());
        }
        Err(Error::new(
            Reason::RoutingLeaseLapsed,
            format!(
                "the routing lease of stream {:?} ran out before the records reached their \
                 partition's producer (the broker was slow to open it); retry",
                self.stream.name
            ),
        ))
    }
}

impl RoutingLeases {
    pub fn new(broker: Arc<Broker>, lease: Duration) -> RoutingLeases {
        RoutingLeases {
            broker,
            lease,
            by_stream: Mutex::new(HashMap::new()),
        }
    }

    /// The lease every instance holds (`broker.routing_lease_ms`).
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// How to route `name`'s records now: under a lease renewed when it
    /// ran out, waiting while the stream is fenced.
    pub async fn route(&self, name: &str) -> Result<Route> {
        let entry = self.entry(name);
        let deadline = self.broker.connector().deadline();
        loop {
            let held = lock(&entry.held).clone();
            let now = Instant::now();
            if let Some(lease) = held.filter(|l| now < l.usable_until(self.lease)) {
                if now >= lease.asked + self.lease / 2 {
                    self.renew_in_background(name, &entry);
                }
                if let Some(count) = lease.count {
                    return Ok(Route {
                        usable_until: lease.usable_until(self.lease),
                        stream: lease.stream,
                        count,
                    });
                }
                if now >= deadline {
                    return Err(Error::new(
                        Reason::StreamResizing,
                        format!(
                            "stream {name:?} is being resized and routes no records until its \
                             new partitions are in use; retry"
                        ),
                    )
                    .retry_after(self.lease));
                }
                // Fenced: ask again soon, not when the lease runs out, so
                // that records go on as soon as the resize routes over the
                // new count.
                tokio::time::sleep(FENCE_POLL).await;
            }
            self.renew(name, &entry, now).await?;
        }
    }

    /// Forgets `name`'s lease: the next record asks the broker.
    pub fn forget(&self, name: &str) {
        lock(&self.by_stream).remove(name);
    }

    fn entry(&self, name: &str) -> Arc<StreamLease> {
        lock(&self.by_stream)
            .entry(name.to_owned())
            .or_default()
            .clone()
    }

    /// Asks the broker unless another call did since `since`.
    async fn renew(&self, name: &str, entry: &StreamLease, since: Instant) -> Result<()> {
        let _renewing = entry.renewing.lock().await;
        let fresh = lock(&entry.held).as_ref().is_some_and(|l| l.asked > since);
        if fresh {
            return Ok(());
        }
        let lease = self.ask(name).await?;
        *lock(&entry.held) = Some(lease);
        Ok(())
    }

    fn renew_in_background(&self, name: &str, entry: &Arc<StreamLease>) {
        let Ok(renewing) = entry.renewing.clone().try_lock_owned() else {
            return;
        };
        let entry = entry.clone();
        let broker = self.broker.clone();
        let name = name.to_owned();
        tokio::spawn(async move {
            // A failure leaves the lease to run out; the next record that
            // needs it asks again and answers the error.
            if let Ok(lease) = ask(&broker, &name).await {
                *lock(&entry.held) = Some(lease);
            }
            drop(renewing);
        });
    }

    async fn ask(&self, name: &str) -> Result<RoutingLease> {
        ask(&self.broker, name).await
    }
}

/// The stream's partition list, then its routing state: a list read before
/// a resize stored the state it grows from holds no new partition.
async fn ask(broker: &Broker, name: &str) -> Result<RoutingLease> {
    let asked = Instant::now();
    let stream = broker.super_stream_now(name).await?;
    let listed = stream.partition_count();
    let count = match broker.routing(&stream).await? {
        None => Some(listed),
        // A list read before the growth's partitions were bound: ask again.
        Some(Routing::Over(count)) => (count <= listed).then_some(count),
        Some(Routing::Fenced { .. }) => None,
    };
    Ok(RoutingLease {
        stream,
        count,
        asked,
    })
}
