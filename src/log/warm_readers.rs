//! Readers kept between `Read` calls.
//!
//! A client that reads a partition in a loop asks each time for the offset
//! the previous `Read` answered as `next_offset`. Without help every call
//! would cost the broker two subscriptions (one at `Last` to learn where
//! the records end, one at the offset). Instead the reader of a call is
//! parked here under (partition stream, next offset) with what it knows
//! ([`Cursor`]), and the call that asks for that offset goes on with it: a
//! read loop costs the broker what one subscribed consumer costs. A call
//! that reaches the end of what a kept reader knows asks the broker
//! whether anything was stored since, before it stops there: a record
//! confirmed before the call is in its answer.
//!
//! Bounded: at most [`MAX_PARKED`] readers (the longest parked is closed
//! first), each closed once parked for [`IDLE`]. A parked reader holds at
//! most one chunk: the one its last call stopped in, or the next one the
//! broker sent while it waited.
//!
//! Lifetime: one per log; [`WarmReaders::close`] closes every parked reader
//! at shutdown, and its sweeper task ends with the log.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::time::Instant;

use crate::broker::{Chunk, ChunkReader};
use crate::sync::lock;

/// Most readers parked at once.
pub const MAX_PARKED: usize = 64;
/// How long a reader stays parked unused.
pub const IDLE: Duration = Duration::from_secs(30);

/// A reader positioned in a partition, and what it knows of it.
pub struct Cursor {
    pub reader: ChunkReader,
    /// A chunk delivered and not read to its end.
    pub held: Option<Chunk>,
    /// The last offset known to hold a record; `None` when the partition
    /// held none.
    pub tail: Option<u64>,
    /// The first offset of the newest chunk the reader received.
    pub newest_chunk: Option<u64>,
    /// `tail` was learnt during this call; a kept reader's may be old.
    pub tail_is_current: bool,
}

impl Cursor {
    /// Takes a chunk the reader received into what it knows.
    pub fn saw(&mut self, chunk: &Chunk) {
        self.tail = self.tail.max(Some(chunk.last_offset()));
        self.newest_chunk = self.newest_chunk.max(Some(chunk.first_offset));
    }
}

/// The parked readers; see the module docs.
pub struct WarmReaders {
    parked: Arc<Mutex<Parked>>,
}

#[derive(Default)]
struct Parked {
    /// (partition stream, next offset) → the reader and when it was parked.
    by_position: HashMap<(String, u64), (Cursor, Instant)>,
    closed: bool,
}

impl Parked {
    /// Closes the readers parked for `IDLE` or longer.
    fn sweep(&mut self, now: Instant) {
        let idle: Vec<_> = self
            .by_position
            .iter()
            .filter(|(_, (_, since))| now.saturating_duration_since(*since) >= IDLE)
            .map(|(position, _)| position.clone())
            .collect();
        for position in idle {
            if let Some((cursor, _)) = self.by_position.remove(&position) {
                cursor.reader.close();
            }
        }
    }
}

impl WarmReaders {
    /// Starts the sweeper that closes idle readers (within a tokio
    /// runtime); it ends when the readers are dropped.
    pub fn new() -> WarmReaders {
        let parked = Arc::new(Mutex::new(Parked::default()));
        tokio::spawn(sweep(Arc::downgrade(&parked)));
        WarmReaders { parked }
    }

    /// The reader parked at `offset` of partition stream `stream`, if any
    /// is and its connection still works.
    pub fn take(&self, stream: &str, offset: u64) -> Option<Cursor> {
        let (cursor, _) = lock(&self.parked)
            .by_position
            .remove(&(stream.to_owned(), offset))?;
        if cursor.reader.is_closed() {
            cursor.reader.close();
            return None;
        }
        Some(cursor)
    }

    /// Parks `cursor`, whose next record is at `next` of `stream`.
    pub fn park(&self, stream: &str, next: u64, cursor: Cursor) {
        let mut parked = lock(&self.parked);
        if parked.closed {
            drop(parked);
            cursor.reader.close();
            return;
        }
        let now = Instant::now();
        if parked.by_position.len() >= MAX_PARKED {
            parked.sweep(now);
        }
        if parked.by_position.len() >= MAX_PARKED {
            let oldest = parked
                .by_position
                .iter()
                .min_by_key(|(_, (_, since))| *since)
                .map(|(position, _)| position.clone());
            if let Some((cursor, _)) = oldest.and_then(|p| parked.by_position.remove(&p)) {
                cursor.reader.close();
            }
        }
        let replaced = parked
            .by_position
            .insert((stream.to_owned(), next), (cursor, now));
        drop(parked);
        if let Some((cursor, _)) = replaced {
            cursor.reader.close();
        }
    }

    /// Closes every parked reader; none is parked after.
    pub fn close(&self) {
        let mut parked = lock(&self.parked);
        parked.closed = true;
        for (_, (cursor, _)) in parked.by_position.drain() {
            cursor.reader.close();
        }
    }
}

/// Closes idle readers every quarter of [`IDLE`], until the readers are
/// gone.
async fn sweep(parked: Weak<Mutex<Parked>>) {
    loop {
        tokio::time::sleep(IDLE / 4).await;
        let Some(parked) = parked.upgrade() else {
            return;
        };
        lock(&parked).sweep(Instant::now());
    }
}
