//! Confirm bookkeeping of a publisher: which batch each publishing id
//! belongs to, and each batch's outcome once the broker answered for all of
//! its records.
//!
//! A producer registers a batch, then each record it sends under its
//! publishing id ([`Confirms::expect`]) or settles it at once (a duplicate
//! not sent). The connection's handler resolves ids as confirms and
//! publish errors arrive, in any order; a failed connection fails every
//! batch still open.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::oneshot;

use super::protocol::wire::{CODE_ACCESS_REFUSED, CODE_STREAM_DOES_NOT_EXIST};
use crate::error::{Error, Reason, Result};
use crate::sync::lock;

/// What happened to a record the broker answered for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    Written,
    /// Its sequence was stored before; this copy was not written.
    Duplicate,
}

/// The outcome of each record of one batch, in batch order.
pub type BatchOutcome = Vec<Result<Stored>>;

/// Batches awaiting the broker's answers.
#[derive(Default)]
pub struct Confirms {
    state: Mutex<ConfirmState>,
    idle: tokio::sync::Notify,
    /// Notified when no record sent awaits its answer.
    answered: tokio::sync::Notify,
}

#[derive(Default)]
struct ConfirmState {
    batches: HashMap<u64, Pending>,
    /// Batch and position of each publishing id awaiting its confirm.
    owner: HashMap<u64, (u64, usize)>,
    /// While a named producer's question for its stored sequence is
    /// unanswered: the answers that came meanwhile, settled once it is.
    deferred: Option<Vec<(u64, Result<Stored>)>>,
    /// A named producer's stored sequence as last learnt: the broker
    /// dropped every record at or below it that it was sent, and confirmed
    /// it as it confirms a stored one.
    floor: Option<u64>,
}

struct Pending {
    outcome: Vec<Option<Result<Stored>>>,
    remaining: usize,
    done: oneshot::Sender<BatchOutcome>,
}

impl Confirms {
    pub fn register(&self, batch: u64, count: usize, done: oneshot::Sender<BatchOutcome>) {
        let mut state = lock(&self.state);
        state.batches.insert(
            batch,
            Pending {
                outcome: vec![None; count],
                remaining: count,
                done,
            },
        );
    }

    /// A record of `batch` was sent as publishing id `id`.
    pub fn expect(&self, id: u64, batch: u64, index: usize) {
        let mut state = lock(&self.state);
        state.owner.insert(id, (batch, index));
    }

    pub fn resolve(&self, id: u64, result: Result<Stored>) {
        let mut state = lock(&self.state);
        if let Some(deferred) = state.deferred.as_mut() {
            deferred.push((id, result));
            return;
        }
        let result = match result {
            Ok(_) if state.floor.is_some_and(|floor| id <= floor) => Ok(Stored::Duplicate),
            other => other,
        };
        let owner = state.owner.remove(&id);
        let all_answered = state.owner.is_empty();
        drop(state);
        if all_answered {
            self.answered.notify_waiters();
        }
        // Unknown ids were failed already, e.g. after a metadata update.
        if let Some((batch, index)) = owner {
            self.settle(batch, index, result);
        }
    }

    /// A named producer asked the broker for its stored sequence: answers
    /// wait until [`Confirms::end_check`] says what it was.
    pub fn start_check(&self) {
        lock(&self.state).deferred.get_or_insert_with(Vec::new);
    }

    /// The broker had stored up to `stored` under the producer's name when
    /// it took the question, before the records sent since: those at or
    /// below it were dropped as duplicates, whenever their answer comes.
    pub fn end_check(&self, stored: u64) {
        let deferred = {
            let mut state = lock(&self.state);
            state.floor = state.floor.max(Some(stored));
            state.deferred.take().unwrap_or_default()
        };
        for (id, result) in deferred {
            self.resolve(id, result);
        }
    }

    /// Records the outcome of one record and completes its batch when it
    /// was the last one outstanding.
    pub fn settle(&self, batch: u64, index: usize, result: Result<Stored>) {
        let mut state = lock(&self.state);
        let Some(pending) = state.batches.get_mut(&batch) else {
            return;
        };
        if let Some(slot @ None) = pending.outcome.get_mut(index) {
            *slot = Some(result);
            pending.remaining = pending.remaining.saturating_sub(1);
        }
        if pending.remaining == 0 {
            if let Some(pending) = state.batches.remove(&batch) {
                let unsettled = || {
                    Err(Error::new(
                        Reason::Internal,
                        "a record's outcome went missing",
                    ))
                };
                let outcomes = pending.outcome.into_iter();
                let _ = pending
                    .done
                    .send(outcomes.map(|r| r.unwrap_or_else(unsettled)).collect());
            }
        }
        if state.batches.is_empty() {
            self.idle.notify_waiters();
        }
    }

    pub fn fail_all(&self, error: &Error) {
        let mut state = lock(&self.state);
        state.owner.clear();
        state.deferred = None;
        for (_, pending) in state.batches.drain() {
            let outcome = pending
                .outcome
                .into_iter()
                .map(|r| r.unwrap_or_else(|| Err(error.clone())))
                .collect();
            let _ = pending.done.send(outcome);
        }
        self.idle.notify_waiters();
        self.answered.notify_waiters();
    }

    /// No batch awaits the broker's answers.
    pub fn is_idle(&self) -> bool {
        lock(&self.state).batches.is_empty()
    }

    /// Resolves once the broker answered every record sent so far (a named
    /// producer's question for its stored sequence must be answered first:
    /// answers wait for it).
    pub async fn wait_answered(&self) {
        loop {
            let notified = self.answered.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if lock(&self.state).owner.is_empty() {
                return;
            }
            notified.await;
        }
    }

    /// Resolves once no batch awaits the broker's answers.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_idle() {
                return;
            }
            notified.await;
        }
    }
}

/// A record the broker refused to store, by the publish error's code.
pub fn publish_error(code: u16) -> Error {
    match code {
        CODE_STREAM_DOES_NOT_EXIST => Error::new(
            Reason::PartitionNotFound,
            "the partition stream no longer exists",
        ),
        CODE_ACCESS_REFUSED => Error::new(
            Reason::BrokerAccessRefused,
            "the broker refused publishing to the partition",
        ),
        code => Error::new(
            Reason::BrokerUnavailable,
            format!("the broker did not store the record (response code {code:#04x})"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Kind;

    fn unavailable() -> Error {
        Error::new(Reason::BrokerUnavailable, "gone")
    }

    #[tokio::test]
    async fn a_batch_completes_when_its_last_record_is_answered_in_any_order() {
        let confirms = Confirms::default();
        let (done, outcome) = oneshot::channel();
        confirms.register(0, 3, done);
        confirms.expect(10, 0, 0);
        confirms.settle(0, 1, Ok(Stored::Duplicate));
        confirms.expect(11, 0, 2);
        assert!(!confirms.is_idle());
        confirms.resolve(11, Err(publish_error(CODE_STREAM_DOES_NOT_EXIST)));
        confirms.resolve(10, Ok(Stored::Written));
        let outcome = outcome.await.unwrap();
        assert_eq!(outcome[0], Ok(Stored::Written));
        assert_eq!(outcome[1], Ok(Stored::Duplicate));
        assert!(matches!(outcome[2], Err(ref e) if e.kind() == Kind::NotFound));
        assert!(confirms.is_idle());
        confirms.wait_idle().await;
    }

    #[tokio::test]
    async fn unknown_and_repeated_ids_change_nothing() {
        let confirms = Confirms::default();
        let (done, mut outcome) = oneshot::channel();
        confirms.register(0, 1, done);
        confirms.expect(5, 0, 0);
        confirms.resolve(99, Ok(Stored::Written));
        assert!(outcome.try_recv().is_err(), "still open");
        confirms.resolve(5, Ok(Stored::Written));
        confirms.resolve(5, Err(unavailable()));
        assert_eq!(outcome.await.unwrap(), vec![Ok(Stored::Written)]);
    }

    #[tokio::test]
    async fn failing_all_keeps_what_was_answered_and_fails_the_rest() {
        let confirms = Confirms::default();
        let (first, first_outcome) = oneshot::channel();
        let (second, second_outcome) = oneshot::channel();
        confirms.register(0, 2, first);
        confirms.register(1, 1, second);
        confirms.expect(1, 0, 0);
        confirms.expect(2, 0, 1);
        confirms.expect(3, 1, 0);
        confirms.resolve(1, Ok(Stored::Written));
        confirms.fail_all(&unavailable());
        assert_eq!(
            first_outcome.await.unwrap(),
            vec![Ok(Stored::Written), Err(unavailable())]
        );
        assert_eq!(second_outcome.await.unwrap(), vec![Err(unavailable())]);
        assert!(confirms.is_idle());
        // A confirm arriving late finds nothing to settle.
        confirms.resolve(2, Ok(Stored::Written));
    }

    #[tokio::test]
    async fn answers_wait_for_the_stored_sequence_and_none_above_it_is_a_duplicate() {
        let confirms = Confirms::default();
        confirms.start_check();
        let (done, outcome) = oneshot::channel();
        confirms.register(0, 3, done);
        for (index, id) in [5, 6, 7].into_iter().enumerate() {
            confirms.expect(id, 0, index);
        }
        // Confirms that come before the answer wait for it.
        confirms.resolve(5, Ok(Stored::Written));
        confirms.resolve(7, Ok(Stored::Written));
        let mut outcome = outcome;
        assert!(outcome.try_recv().is_err());
        // The broker had 6 stored: 5 and 6 were dropped, 7 stored, also
        // when 6's confirm comes after the answer.
        confirms.end_check(6);
        confirms.resolve(6, Ok(Stored::Written));
        assert_eq!(
            outcome.await.unwrap(),
            vec![
                Ok(Stored::Duplicate),
                Ok(Stored::Duplicate),
                Ok(Stored::Written)
            ]
        );
        assert!(confirms.is_idle());
    }

    #[tokio::test]
    async fn a_failure_while_asking_fails_what_waited_for_the_answer() {
        let confirms = Confirms::default();
        confirms.start_check();
        let (done, outcome) = oneshot::channel();
        confirms.register(0, 1, done);
        confirms.expect(1, 0, 0);
        confirms.resolve(1, Ok(Stored::Written));
        confirms.fail_all(&unavailable());
        assert!(matches!(
            outcome.await.unwrap()[..],
            [Err(ref e)] if e.kind() == Kind::Unavailable
        ));
        // A producer that never asked numbers from 0: nothing is a duplicate.
        let (done, outcome) = oneshot::channel();
        confirms.register(1, 1, done);
        confirms.expect(0, 1, 0);
        confirms.resolve(0, Ok(Stored::Written));
        assert_eq!(outcome.await.unwrap(), vec![Ok(Stored::Written)]);
    }

    #[test]
    fn publish_errors_map_to_what_the_client_can_do() {
        let reason = |code| publish_error(code).reason();
        assert_eq!(
            reason(CODE_STREAM_DOES_NOT_EXIST),
            Reason::PartitionNotFound
        );
        assert_eq!(reason(CODE_ACCESS_REFUSED), Reason::BrokerAccessRefused);
        assert_eq!(reason(0x0f), Reason::BrokerUnavailable);
    }
}
