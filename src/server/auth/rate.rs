//! Per-principal rates (`auth.calls_per_second`,
//! `auth.publish_bytes_per_second`): a token bucket per principal and rate,
//! holding one second's worth. A call that finds its bucket empty is
//! refused with RESOURCE_EXHAUSTED and a RetryInfo saying when the bucket
//! will have room; a publish may take the byte bucket below zero (a batch
//! larger than a second's worth still goes through once it has room), and
//! the next waits until the debt is paid.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tonic::Status;

use crate::config::AuthConfig;
use crate::error::{Error, Reason};
use crate::server::convert::status;
use crate::sync::lock;

/// The rates of every principal; one per server.
#[derive(Debug)]
pub struct Rates {
    calls: Option<f64>,
    bytes: Option<f64>,
    buckets: Mutex<HashMap<String, Buckets>>,
}

#[derive(Debug)]
struct Buckets {
    calls: Bucket,
    bytes: Bucket,
}

/// Tokens and when they were counted; refills at its rate up to one
/// second's worth.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(rate: f64, now: Instant) -> Bucket {
        Bucket {
            tokens: rate,
            at: now,
        }
    }

    /// Takes `amount` when the bucket has room (more than nothing), or says
    /// how long until it has.
    fn take(&mut self, rate: f64, amount: f64, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(rate);
        self.at = now;
        if self.tokens <= 0.0 || (amount <= rate && self.tokens < amount) {
            let missing = if amount <= rate {
                amount - self.tokens
            } else {
                f64::EPSILON - self.tokens
            };
            return Err(Duration::from_secs_f64((missing / rate).max(0.001)));
        }
        self.tokens -= amount;
        Ok(())
    }
}

impl Rates {
    pub fn new(config: &AuthConfig) -> Rates {
        let rate = |per_second: u64| (per_second > 0).then_some(per_second as f64);
        Rates {
            calls: rate(config.calls_per_second),
            bytes: rate(config.publish_bytes_per_second),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `principal` may make another call now.
    pub fn call(&self, principal: &str) -> Result<(), Status> {
        let Some(rate) = self.calls else {
            return Ok(());
        };
        self.take(principal, |b| &mut b.calls, rate, 1.0)
            .map_err(|wait| {
                exhausted(
                    format!(
                        "principal {principal:?} exceeds auth.calls_per_second ({rate}); retry in \
                         {wait:?}"
                    ),
                    wait,
                )
            })
    }

    /// Whether `principal` may publish `bytes` (keys, values and headers)
    /// now.
    pub fn publish(&self, principal: &str, bytes: u64) -> Result<(), Status> {
        let Some(rate) = self.bytes else {
            return Ok(());
        };
        self.take(principal, |b| &mut b.bytes, rate, bytes as f64)
            .map_err(|wait| {
                exhausted(
                    format!(
                        "principal {principal:?} exceeds auth.publish_bytes_per_second ({rate}); \
                         retry in {wait:?}"
                    ),
                    wait,
                )
            })
    }

    fn take(
        &self,
        principal: &str,
        bucket: impl Fn(&mut Buckets) -> &mut Bucket,
        rate: f64,
        amount: f64,
    ) -> Result<(), Duration> {
        let now = Instant::now();
        let mut buckets = lock(&self.buckets);
        let buckets = buckets
            .entry(principal.to_owned())
            .or_insert_with(|| Buckets {
                calls: Bucket::full(self.calls.unwrap_or_default(), now),
                bytes: Bucket::full(self.bytes.unwrap_or_default(), now),
            });
        bucket(buckets).take(rate, amount, now)
    }
}

/// RESOURCE_EXHAUSTED with a RetryInfo of `wait`.
fn exhausted(message: String, wait: Duration) -> Status {
    status(Error::new(Reason::RateLimited, message).retry_after(wait))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;
    use tonic_types::StatusExt;

    #[test]
    fn a_bucket_holds_a_second_and_says_when_it_has_room() {
        let start = Instant::now();
        let mut bucket = Bucket::full(2.0, start);
        assert!(bucket.take(2.0, 1.0, start).is_ok());
        assert!(bucket.take(2.0, 1.0, start).is_ok());
        let wait = bucket.take(2.0, 1.0, start).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        assert!(bucket.take(2.0, 1.0, start + wait).is_ok());
        // Never more than a second's worth, however long it rested.
        let later = start + Duration::from_secs(60);
        assert!(bucket.take(2.0, 2.0, later).is_ok());
        assert!(bucket.take(2.0, 1.0, later).is_err());
    }

    #[test]
    fn a_publish_larger_than_a_seconds_worth_goes_once_and_the_next_waits() {
        let start = Instant::now();
        let mut bytes = Bucket::full(1000.0, start);
        assert!(bytes.take(1000.0, 5000.0, start).is_ok(), "room: it goes");
        let wait = bytes.take(1000.0, 10.0, start).unwrap_err();
        assert!(wait >= Duration::from_secs(4), "{wait:?}");
    }

    #[test]
    fn principals_have_buckets_of_their_own_and_refusals_say_when() {
        let config = AuthConfig {
            calls_per_second: 1,
            ..AuthConfig::default()
        };
        let rates = Rates::new(&config);
        assert!(rates.call("alice").is_ok());
        assert!(rates.call("bob").is_ok());
        let status = rates.call("alice").unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted);
        let retry = status.get_details_retry_info().unwrap();
        assert!(retry.retry_delay.unwrap() <= Duration::from_secs(1));
        assert!(rates.publish("alice", 1 << 30).is_ok(), "no byte rate set");
    }
}
