//! Generative checks of the decoders that read broker bytes.
//!
//! Each decoder is tested with valid inputs built from a model (which it
//! must read back as the model says), and with those inputs truncated,
//! extended, bit-flipped and with a length-sized field overwritten (which
//! it must refuse with an error, or read as something, but never panic on).
//! The tests sit beside their decoders and call [`check`].
//!
//! `make test` runs a short pass; `make fuzz` sets `PARTLOG_FUZZ_SECONDS`
//! and each check then runs fresh random cases until that time is up.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

/// Cases per round: a round is all `make test` runs.
const CASES: u32 = 256;

/// Runs `test` on values of `strategy`: one round of [`CASES`], or rounds
/// until `PARTLOG_FUZZ_SECONDS` passed. A failure panics with the smallest
/// failing value proptest found.
pub fn check<S: Strategy>(strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>) {
    let seconds = std::env::var("PARTLOG_FUZZ_SECONDS").ok().map(|s| {
        s.parse()
            .expect("PARTLOG_FUZZ_SECONDS is a number of seconds")
    });
    let until = seconds.map(|s| Instant::now() + Duration::from_secs(s));
    loop {
        let config = Config {
            cases: CASES,
            failure_persistence: None,
            ..Config::default()
        };
        if let Err(failure) = TestRunner::new(config).run(&strategy, &test) {
            panic!("{failure}");
        }
        if until.is_none_or(|until| Instant::now() >= until) {
            return;
        }
    }
}

/// One way to damage bytes.
#[derive(Debug, Clone)]
pub enum Damage {
    /// Cut after this many bytes (modulo the length).
    Truncate(usize),
    /// Append these bytes.
    Extend(Vec<u8>),
    /// Flip these bits (byte index and bit, modulo the length).
    Flip(Vec<(usize, u8)>),
    /// Overwrite 4 bytes at this position with a value a length field
    /// could hold: 0, small, huge, negative as i32.
    Overwrite(usize, u32),
}

impl Damage {
    pub fn apply(&self, bytes: &[u8]) -> Vec<u8> {
        let mut out = bytes.to_vec();
        match self {
            Damage::Truncate(at) => out.truncate(at % (bytes.len() + 1)),
            Damage::Extend(more) => out.extend_from_slice(more),
            Damage::Flip(bits) if !out.is_empty() => {
                let len = out.len();
                for (at, bit) in bits {
                    out[at % len] ^= 1 << (bit % 8);
                }
            }
            Damage::Flip(_) => {}
            Damage::Overwrite(at, value) if out.len() >= 4 => {
                let at = at % (out.len() - 3);
                out[at..at + 4].copy_from_slice(&value.to_be_bytes());
            }
            Damage::Overwrite(..) => {}
        }
        out
    }
}

/// Damage of every kind.
pub fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        any::<usize>().prop_map(Damage::Truncate),
        prop::collection::vec(any::<u8>(), 1..64).prop_map(Damage::Extend),
        prop::collection::vec((any::<usize>(), any::<u8>()), 1..8).prop_map(Damage::Flip),
        (
            any::<usize>(),
            prop_oneof![
                Just(0u32),
                0u32..16,
                Just(u32::MAX),
                Just(0x8000_0000),
                any::<u32>()
            ]
        )
            .prop_map(|(at, value)| Damage::Overwrite(at, value)),
    ]
}

/// Valid bytes from `valid`, damaged `1..=3` times.
pub fn damaged(valid: impl Strategy<Value = Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    (valid, prop::collection::vec(damage(), 1..=3)).prop_map(|(bytes, damages)| {
        damages
            .iter()
            .fold(bytes, |bytes, damage| damage.apply(&bytes))
    })
}
