//! Committed offsets of consumer groups, durable in an embedded sled store.
//!
//! One [`OffsetStore`] per process, opened at start-up from
//! `offsets.data_dir` and shared by every RPC. sled locks its directory, so
//! two partlog processes cannot share one store; each instance has its own
//! and the broker's offset tracking (mirrored by the caller) carries commits
//! between instances.
//!
//! Key layout of the `committed` tree, chosen so that one prefix scan
//! answers both "all partitions of a group" and "all groups of a stream":
//!
//! ```text
//! key   = utf8(stream) 0x00 utf8(group) 0x00 partition (u32, big endian)
//! value = offset of the last processed record (u64, big endian)
//! ```
//!
//! Stream and group names never contain NUL (validation rejects control
//! characters), so the separators are unambiguous. The value `u64::MAX`
//! marks a reset to the start of the partition, which the broker's offset
//! store cannot express (its offsets name the last processed record).

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{Error, Reason, Result};

const COMMITTED_TREE: &str = "committed";
const RESET_TO_START: u64 = u64::MAX;

/// A group's position in one partition as this store knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Local {
    /// Offset of the last processed record.
    Committed(u64),
    /// Reset to read from the partition's start; nothing committed since.
    ResetToStart,
}

impl Local {
    fn decode(bytes: &[u8]) -> Local {
        match decode_offset(bytes) {
            RESET_TO_START => Local::ResetToStart,
            offset => Local::Committed(offset),
        }
    }

    pub fn committed(self) -> Option<u64> {
        match self {
            Local::Committed(offset) => Some(offset),
            Local::ResetToStart => None,
        }
    }
}

pub struct OffsetStore {
    db: sled::Db,
    committed: sled::Tree,
}

/// What a commit did to one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    pub partition: u32,
    /// The committed offset after the call.
    pub offset: u64,
    /// The requested offset was below the committed one and was ignored.
    pub ignored_lower: bool,
}

/// Why the store cannot be opened; start-up stops with this message.
#[derive(Debug, thiserror::Error)]
#[error("offset store at {path}: {reason}")]
pub struct OpenError {
    path: String,
    reason: String,
}

impl OffsetStore {
    pub fn open(dir: &Path) -> std::result::Result<OffsetStore, OpenError> {
        let fail = |reason: String| OpenError {
            path: dir.display().to_string(),
            reason,
        };
        std::fs::create_dir_all(dir)
            .map_err(|e| fail(format!("cannot create the directory: {e}")))?;
        let db = sled::open(dir).map_err(|e| {
            fail(match e {
                sled::Error::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock => {
                    "the directory is locked by another process; is another partlog using the \
                     same offsets.data_dir?"
                        .to_string()
                }
                sled::Error::Io(io) if io.to_string().contains("lock") => format!(
                    "the directory is locked by another process ({io}); is another partlog \
                     using the same offsets.data_dir?"
                ),
                sled::Error::Corruption { .. } => format!(
                    "the store is corrupt ({e}); restore it from a backup or move it away to \
                     start from the offsets mirrored on the broker"
                ),
                other => other.to_string(),
            })
        })?;
        let committed = db
            .open_tree(COMMITTED_TREE)
            .map_err(|e| fail(format!("cannot open the committed tree: {e}")))?;
        Ok(OffsetStore { db, committed })
    }

    /// The group's position in one partition.
    pub fn get(&self, stream: &str, group: &str, partition: u32) -> Result<Option<Local>> {
        Ok(self
            .committed
            .get(key(stream, group, partition))
            .map_err(storage)?
            .map(|v| Local::decode(&v)))
    }

    /// Groups with a committed offset on `stream`, sorted.
    pub fn groups(&self, stream: &str) -> Result<Vec<String>> {
        let mut prefix = stream.as_bytes().to_vec();
        prefix.push(0);
        let mut groups = Vec::new();
        for entry in self.committed.scan_prefix(&prefix) {
            let (k, _) = entry.map_err(storage)?;
            let rest = &k[prefix.len()..];
            let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
            let group = String::from_utf8_lossy(&rest[..end]).into_owned();
            if groups.last() != Some(&group) {
                groups.push(group);
            }
        }
        Ok(groups)
    }

    /// Every (stream, group) with offsets in the store, sorted: one seek
    /// per pair, however many partitions each has.
    pub fn stream_groups(&self) -> Result<Vec<(String, String)>> {
        let mut pairs = Vec::new();
        let mut from = Vec::new();
        while let Some(entry) = self.committed.range(from.as_slice()..).next() {
            let (key, _) = entry.map_err(storage)?;
            let mut names = key.splitn(3, |b| *b == 0);
            let (Some(stream), Some(group), Some(_partition)) =
                (names.next(), names.next(), names.next())
            else {
                // Not a key of this layout: step over it.
                from = [key.as_ref(), &[0]].concat();
                continue;
            };
            let (stream, group) = (
                String::from_utf8_lossy(stream).into_owned(),
                String::from_utf8_lossy(group).into_owned(),
            );
            // The first key after every partition of the pair: its prefix
            // ends in the 0x00 separator, which no name contains.
            from = group_prefix(&stream, &group);
            *from.last_mut().expect("a prefix ends in a separator") = 1;
            pairs.push((stream, group));
        }
        Ok(pairs)
    }

    /// Moves a partition's offset forward to `requested` (never back) and
    /// returns the offset committed before (if any) and now. Durable only
    /// after [`flush`]: a caller advances many and flushes once.
    ///
    /// [`flush`]: OffsetStore::flush
    pub fn advance(
        &self,
        stream: &str,
        group: &str,
        partition: u32,
        requested: u64,
    ) -> Result<(Option<u64>, u64)> {
        let previous = self
            .committed
            .fetch_and_update(key(stream, group, partition), |old| {
                let current = old.and_then(|v| Local::decode(v).committed());
                let next = current.map_or(requested, |c| c.max(requested));
                Some(next.to_be_bytes().to_vec())
            })
            .map_err(storage)?
            .and_then(|v| Local::decode(&v).committed());
        Ok((previous, previous.map_or(requested, |p| p.max(requested))))
    }

    /// Sets positions unconditionally (the admin reset), durably: an offset
    /// as the last processed record, `None` as "from the partition's start".
    pub async fn reset(
        &self,
        stream: &str,
        group: &str,
        positions: &BTreeMap<u32, Option<u64>>,
    ) -> Result<()> {
        for (&partition, &position) in positions {
            let value = position.unwrap_or(RESET_TO_START);
            self.committed
                .insert(key(stream, group, partition), &value.to_be_bytes())
                .map_err(storage)?;
        }
        self.flush().await
    }

    /// Writes everything to disk (fsync). sled's blocking flush runs on
    /// the blocking pool: sled 0.34's `flush_async` deadlocks when called
    /// concurrently (sled issue #1308), which stalled commits in the soak.
    pub async fn flush(&self) -> Result<()> {
        let db = self.db.clone();
        let started = std::time::Instant::now();
        tokio::task::spawn_blocking(move || db.flush())
            .await
            .map_err(|e| {
                Error::new(
                    Reason::OffsetStoreFailed,
                    format!("offset store flush task failed: {e}"),
                )
            })?
            .map_err(storage)?;
        crate::telemetry::offset_store_flushed(started);
        Ok(())
    }
}

fn group_prefix(stream: &str, group: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(stream.len() + group.len() + 6);
    k.extend_from_slice(stream.as_bytes());
    k.push(0);
    k.extend_from_slice(group.as_bytes());
    k.push(0);
    k
}

fn key(stream: &str, group: &str, partition: u32) -> Vec<u8> {
    let mut k = group_prefix(stream, group);
    k.extend_from_slice(&partition.to_be_bytes());
    k
}

fn decode_offset(bytes: &[u8]) -> u64 {
    bytes.try_into().map(u64::from_be_bytes).unwrap_or_default()
}

fn storage(e: sled::Error) -> Error {
    Error::new(
        Reason::OffsetStoreFailed,
        format!("offset store failure: {e}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offsets(pairs: &[(u32, u64)]) -> BTreeMap<u32, u64> {
        pairs.iter().copied().collect()
    }

    /// Advances every partition of `offsets`, then flushes, as the
    /// committer does.
    async fn commit(
        store: &OffsetStore,
        stream: &str,
        group: &str,
        offsets: &BTreeMap<u32, u64>,
    ) -> Vec<Committed> {
        let results = offsets
            .iter()
            .map(|(&partition, &requested)| {
                let (_, offset) = store.advance(stream, group, partition, requested).unwrap();
                Committed {
                    partition,
                    offset,
                    ignored_lower: requested < offset,
                }
            })
            .collect();
        store.flush().await.unwrap();
        results
    }

    /// The group's positions in partitions 0..8.
    fn group(store: &OffsetStore, stream: &str, group: &str) -> BTreeMap<u32, Local> {
        (0..8)
            .filter_map(|p| Some((p, store.get(stream, group, p).unwrap()?)))
            .collect()
    }

    #[tokio::test]
    async fn every_stream_and_group_is_listed_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = OffsetStore::open(dir.path()).unwrap();
        commit(&store, "s", "g", &offsets(&[(0, 1), (1, 2), (300, 3)])).await;
        commit(&store, "s", "g2", &offsets(&[(0, 1)])).await;
        commit(&store, "s", "h", &offsets(&[(5, 1)])).await;
        commit(&store, "t", "g", &offsets(&[(0, 1)])).await;
        let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(s, g)| (s.to_string(), g.to_string()))
                .collect()
        };
        assert_eq!(
            store.stream_groups().unwrap(),
            pairs(&[("s", "g"), ("s", "g2"), ("s", "h"), ("t", "g")])
        );
    }

    #[tokio::test]
    async fn commits_are_monotonic_and_durable() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = OffsetStore::open(dir.path()).unwrap();
            let first = commit(&store, "s", "g", &offsets(&[(0, 10), (2, 5)])).await;
            assert!(first.iter().all(|c| !c.ignored_lower));
            let second = commit(&store, "s", "g", &offsets(&[(0, 7), (2, 9)])).await;
            assert_eq!(
                second,
                vec![
                    Committed {
                        partition: 0,
                        offset: 10,
                        ignored_lower: true
                    },
                    Committed {
                        partition: 2,
                        offset: 9,
                        ignored_lower: false
                    },
                ]
            );
        }
        let reopened = OffsetStore::open(dir.path()).unwrap();
        assert_eq!(
            group(&reopened, "s", "g"),
            BTreeMap::from([(0, Local::Committed(10)), (2, Local::Committed(9))])
        );
        assert_eq!(
            reopened.get("s", "g", 2).unwrap(),
            Some(Local::Committed(9))
        );
        assert_eq!(reopened.get("s", "g", 1).unwrap(), None);
    }

    #[tokio::test]
    async fn reset_moves_backwards_and_to_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let store = OffsetStore::open(dir.path()).unwrap();
        commit(&store, "s", "g", &offsets(&[(0, 10), (1, 10)])).await;
        store
            .reset("s", "g", &BTreeMap::from([(0, Some(3)), (1, None)]))
            .await
            .unwrap();
        assert_eq!(store.get("s", "g", 0).unwrap(), Some(Local::Committed(3)));
        assert_eq!(store.get("s", "g", 1).unwrap(), Some(Local::ResetToStart));
        // A commit after a reset to the start is taken as is.
        let after = commit(&store, "s", "g", &offsets(&[(1, 2)])).await;
        assert_eq!(
            after[0],
            Committed {
                partition: 1,
                offset: 2,
                ignored_lower: false
            }
        );
        assert_eq!(store.get("s", "g", 1).unwrap(), Some(Local::Committed(2)));
    }

    #[tokio::test]
    async fn groups_and_streams_do_not_mix() {
        let dir = tempfile::tempdir().unwrap();
        let store = OffsetStore::open(dir.path()).unwrap();
        commit(&store, "s", "a", &offsets(&[(0, 1), (1, 1)])).await;
        commit(&store, "s", "b", &offsets(&[(0, 2)])).await;
        commit(&store, "s-1", "a", &offsets(&[(0, 3)])).await;
        commit(&store, "s", "a-b", &offsets(&[(0, 4)])).await;
        assert_eq!(store.groups("s").unwrap(), vec!["a", "a-b", "b"]);
        assert_eq!(store.groups("s-1").unwrap(), vec!["a"]);
        assert_eq!(group(&store, "s", "a").len(), 2);
        assert_eq!(
            group(&store, "s", "a-b"),
            BTreeMap::from([(0, Local::Committed(4))])
        );
    }

    #[test]
    fn an_unusable_directory_fails_with_its_path() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let err = OffsetStore::open(&file.path().join("sub"))
            .err()
            .expect("not a directory");
        assert!(
            err.to_string().contains(&file.path().display().to_string()),
            "{err}"
        );
    }
}
