//! partlog's one locking convention.
//!
//! - `std::sync::Mutex` for state touched in short critical sections that
//!   never wait: maps, counters, flags. Taken with [`lock`].
//! - `tokio::sync::Mutex` only where a critical section must wait for the
//!   broker (e.g. opening a connection exactly once); each such use says so.
//!
//! Poisoning is ignored: every critical section behind these locks is a
//! single update of plain data that a panic elsewhere cannot leave half
//! done, and refusing every later call because of one panic would turn a
//! bug into an outage.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex`, recovering it if a holder panicked.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
