//! Argument values: clap value parsers, each with a message that says what
//! is expected, so that clap reports bad values as usage errors (exit 2).

use std::time::Duration;

use chrono::DateTime;
use tonic::codegen::http::Uri;

use crate::proto::start_position::{Committed, First, Last, Next, Position as Start};
use crate::proto::StartPosition;

/// Where a subscription starts, or where a reset moves a group.
#[derive(Debug, Clone, PartialEq)]
pub enum Position {
    Committed,
    First,
    Last,
    Next,
    Offset(u64),
    Time(prost_types::Timestamp),
}

impl Position {
    pub fn to_proto(&self) -> StartPosition {
        let position = match self {
            Position::Committed => Start::Committed(Committed {}),
            Position::First => Start::First(First {}),
            Position::Last => Start::Last(Last {}),
            Position::Next => Start::Next(Next {}),
            Position::Offset(offset) => Start::Offset(*offset),
            Position::Time(timestamp) => Start::Timestamp(*timestamp),
        };
        StartPosition {
            position: Some(position),
        }
    }
}

/// `--from`: first, last, next, committed, offset:N or time:RFC3339.
pub fn position(text: &str) -> Result<Position, String> {
    match text {
        "first" => Ok(Position::First),
        "last" => Ok(Position::Last),
        "next" => Ok(Position::Next),
        "committed" => Ok(Position::Committed),
        _ => {
            if let Some(offset) = text.strip_prefix("offset:") {
                offset
                    .parse()
                    .map(Position::Offset)
                    .map_err(|_| format!("{offset:?} is not an offset (a whole number >= 0)"))
            } else if let Some(time) = text.strip_prefix("time:") {
                timestamp(time).map(Position::Time)
            } else {
                Err(
                    "expected first, last, next, committed, offset:N or time:RFC3339 \
                     (e.g. time:2026-11-28T10:00:00Z)"
                        .into(),
                )
            }
        }
    }
}

/// `reset --to`: a position a group can be moved to.
pub fn reset_target(text: &str) -> Result<Position, String> {
    match position(text)? {
        Position::Committed | Position::Next => {
            Err("expected first, last, offset:N or time:RFC3339".into())
        }
        to => Ok(to),
    }
}

/// An RFC 3339 time with any UTC offset, e.g. `2026-11-28T10:00:00Z`.
pub fn timestamp(text: &str) -> Result<prost_types::Timestamp, String> {
    let time = DateTime::parse_from_rfc3339(text)
        .map_err(|e| format!("{text:?} is not an RFC 3339 time like 2026-11-28T10:00:00Z ({e})"))?;
    Ok(prost_types::Timestamp {
        seconds: time.timestamp(),
        nanos: time.timestamp_subsec_nanos() as i32,
    })
}

/// `PARTITION=OFFSET`.
pub fn partition_offset(text: &str) -> Result<(u32, u64), String> {
    let expected = || format!("{text:?} is not PARTITION=OFFSET (e.g. 0=41)");
    let (partition, offset) = text.split_once('=').ok_or_else(expected)?;
    Ok((
        partition.trim().parse().map_err(|_| expected())?,
        offset.trim().parse().map_err(|_| expected())?,
    ))
}

/// A duration such as `1d`, `12h`, `90min` or `1h 30m`, in whole seconds.
pub fn duration(text: &str) -> Result<prost_types::Duration, String> {
    let parsed: Duration = humantime::parse_duration(text)
        .map_err(|e| format!("{text:?} is not a duration like 1d, 12h or 90min ({e})"))?;
    let seconds = i64::try_from(parsed.as_secs()).map_err(|_| format!("{text:?} is too long"))?;
    Ok(prost_types::Duration {
        seconds,
        nanos: parsed.subsec_nanos() as i32,
    })
}

/// A byte size: a whole number with an optional unit, decimal (kB, MB, GB,
/// TB) or binary (KiB, MiB, GiB, TiB); `B` or no unit means bytes.
pub fn size(text: &str) -> Result<u64, String> {
    let expected = || format!("{text:?} is not a size like 500MB, 10GiB or 1048576");
    let digits = text.trim().find(|c: char| !c.is_ascii_digit());
    let (number, unit) = text.trim().split_at(digits.unwrap_or(text.trim().len()));
    let number: u64 = number.parse().map_err(|_| expected())?;
    let multiplier: u64 = match unit.trim() {
        "" | "B" => 1,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        _ => return Err(expected()),
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// The server address: `http://host:port`, or `host:port` for short.
pub fn server(text: &str) -> Result<Uri, String> {
    let with_scheme = if text.contains("://") {
        text.to_owned()
    } else {
        format!("http://{text}")
    };
    let uri: Uri = with_scheme.parse().map_err(|e| {
        format!("{text:?} is not a server address like http://127.0.0.1:50051 ({e})")
    })?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(other) => {
            return Err(format!(
                "{other}:// is not supported; use http://HOST:PORT, or https://HOST:PORT for \
                 a partlog with TLS"
            ))
        }
        None => return Err(format!("{text:?} names no scheme")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("{text:?} names no host"));
    }
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions() {
        assert_eq!(position("first"), Ok(Position::First));
        assert_eq!(position("last"), Ok(Position::Last));
        assert_eq!(position("next"), Ok(Position::Next));
        assert_eq!(position("committed"), Ok(Position::Committed));
        assert_eq!(position("offset:42"), Ok(Position::Offset(42)));
        assert_eq!(
            position("time:2026-11-28T10:00:00.250+01:00"),
            Ok(Position::Time(prost_types::Timestamp {
                seconds: 1_795_856_400,
                nanos: 250_000_000
            }))
        );
        for bad in [
            "",
            "offset:",
            "offset:-1",
            "offset:x",
            "time:yesterday",
            "begin",
            "First",
        ] {
            assert!(position(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn reset_targets_exclude_subscription_only_positions() {
        assert_eq!(reset_target("offset:7"), Ok(Position::Offset(7)));
        assert!(reset_target("committed").is_err());
        assert!(reset_target("next").is_err());
    }

    #[test]
    fn positions_become_start_positions() {
        assert_eq!(
            Position::Offset(3).to_proto().position,
            Some(Start::Offset(3))
        );
        assert_eq!(
            Position::Committed.to_proto().position,
            Some(Start::Committed(Committed {}))
        );
    }

    #[test]
    fn partition_offsets() {
        assert_eq!(partition_offset("0=41"), Ok((0, 41)));
        assert_eq!(partition_offset("12 = 7"), Ok((12, 7)));
        for bad in ["0", "=1", "0=", "a=1", "0=-1", "0:1"] {
            assert!(partition_offset(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(duration("1d").unwrap().seconds, 86_400);
        assert_eq!(duration("1h 30m").unwrap().seconds, 5_400);
        assert_eq!(duration("90s").unwrap().seconds, 90);
        assert!(duration("1 fortnight").is_err());
        assert!(duration("").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(size("1048576"), Ok(1_048_576));
        assert_eq!(size("10B"), Ok(10));
        assert_eq!(size("500MB"), Ok(500_000_000));
        assert_eq!(size("2GiB"), Ok(2 << 30));
        assert_eq!(size("1kB"), Ok(1_000));
        for bad in ["", "MB", "1.5GB", "10 parsecs", "-1", "99999999999TB"] {
            assert!(size(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn servers() {
        assert_eq!(
            server("127.0.0.1:50051").unwrap().to_string(),
            "http://127.0.0.1:50051/"
        );
        assert!(server("http://partlog.internal:50051").is_ok());
        assert!(server("https://partlog:50051").is_ok());
        assert!(server("grpc://partlog:50051").is_err());
        assert!(server("http://").is_err());
        assert!(server("not a url").is_err());
    }
}
