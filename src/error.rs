//! The one error type of partlog.
//!
//! Every failure is a [`Reason`] — a stable name a program can branch on —
//! with a message a human can act on and, for a malformed request, the
//! field at fault. Each reason belongs to exactly one [`Kind`]; the gRPC
//! layer maps each kind to one status code and puts the reason, the field
//! and a retry delay into the status's `google.rpc` details
//! (`server::convert::status`), so the core never names a transport.

use std::fmt;
use std::time::Duration;

/// What went wrong, by the kind of remedy it calls for (a gRPC code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The request itself is malformed; retrying it unchanged cannot succeed.
    InvalidArgument,
    /// A named stream, partition or group does not exist.
    NotFound,
    /// The thing to create exists already.
    AlreadyExists,
    /// The request is valid but the system is not in a state to serve it.
    FailedPrecondition,
    /// The request exceeds a configured limit.
    ResourceExhausted,
    /// The broker cannot be reached or refused for a transient reason; retry.
    Unavailable,
    /// Stored records cannot be read (a corrupt chunk, a batch that does not
    /// decompress); retrying reads the same bytes again.
    DataLoss,
    /// A bug or an unexpected broker answer.
    Internal,
    /// The call carries no credentials partlog accepts.
    Unauthenticated,
    /// The caller's principal lacks a permission the call needs.
    PermissionDenied,
    /// The call names a method partlog does not serve.
    Unimplemented,
}

/// Declares [`Reason`]: each variant with its kind, the name clients see
/// (`ErrorInfo.reason`) and, for transient kinds, how long to wait before a
/// retry (`RetryInfo.retry_delay`) unless the error says otherwise.
macro_rules! reasons {
    ($($(#[doc = $doc:literal])* $variant:ident = $name:literal, $kind:ident, $retry_ms:expr;)*) => {
        /// Why a call failed: stable names, listed in the README; clients
        /// branch on them, so they are never renamed or reused.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Reason {
            $($(#[doc = $doc])* $variant,)*
        }

        impl Reason {
            /// Every reason, in declaration order.
            pub const ALL: &'static [Reason] = &[$(Reason::$variant,)*];

            /// The name clients see, e.g. `STREAM_NOT_FOUND`.
            pub fn name(self) -> &'static str {
                match self {
                    $(Reason::$variant => $name,)*
                }
            }

            pub fn kind(self) -> Kind {
                match self {
                    $(Reason::$variant => Kind::$kind,)*
                }
            }

            /// The wait before a retry when the error does not set one;
            /// `None` for kinds that a retry does not cure.
            pub fn retry_delay(self) -> Option<Duration> {
                match self {
                    $(Reason::$variant => $retry_ms.map(Duration::from_millis),)*
                }
            }
        }
    };
}

const NO_RETRY: Option<u64> = None;

reasons! {
    // INVALID_ARGUMENT: the request must change.
    /// The message is not valid protobuf (e.g. a string with invalid UTF-8).
    MalformedRequest = "MALFORMED_REQUEST", InvalidArgument, NO_RETRY;
    /// A field that must be set is empty.
    FieldRequired = "FIELD_REQUIRED", InvalidArgument, NO_RETRY;
    /// A stream name, group or producer id is longer than allowed.
    NameTooLong = "NAME_TOO_LONG", InvalidArgument, NO_RETRY;
    /// A name holds a character partlog refuses (a control character, a
    /// leading character the broker refuses).
    NameInvalid = "NAME_INVALID", InvalidArgument, NO_RETRY;
    /// A name or header starts with a prefix partlog keeps for itself.
    NameReserved = "NAME_RESERVED", InvalidArgument, NO_RETRY;
    /// A partition number the stream does not have.
    PartitionOutOfRange = "PARTITION_OUT_OF_RANGE", InvalidArgument, NO_RETRY;
    /// The same partition named twice in one request.
    PartitionRepeated = "PARTITION_REPEATED", InvalidArgument, NO_RETRY;
    /// A number outside the range partlog allows (partitions, page size,
    /// retention, max_wait, a setting).
    ValueOutOfRange = "VALUE_OUT_OF_RANGE", InvalidArgument, NO_RETRY;
    /// A record's value is larger than `limits.max_value_bytes`.
    ValueTooLarge = "VALUE_TOO_LARGE", InvalidArgument, NO_RETRY;
    /// A record's key and headers are larger than allowed.
    KeyTooLarge = "KEY_TOO_LARGE", InvalidArgument, NO_RETRY;
    /// A header without a name, or with one reserved for the record's form.
    HeaderInvalid = "HEADER_INVALID", InvalidArgument, NO_RETRY;
    /// A filter value that is empty or too long, too many of them, or
    /// include_unfiltered without any.
    FilterInvalid = "FILTER_INVALID", InvalidArgument, NO_RETRY;
    /// Record numbering that does not hold: a sequence missing or not
    /// increasing, a source position out of order.
    SequenceInvalid = "SEQUENCE_INVALID", InvalidArgument, NO_RETRY;
    /// The call needs a consumer group and names none.
    GroupRequired = "GROUP_REQUIRED", InvalidArgument, NO_RETRY;
    /// A start position or reset target that names no position, or a
    /// timestamp out of range.
    PositionInvalid = "POSITION_INVALID", InvalidArgument, NO_RETRY;
    /// An offset past the partition's last record.
    OffsetPastTail = "OFFSET_PAST_TAIL", InvalidArgument, NO_RETRY;
    /// A page token that no ListStreams answer gave.
    PageTokenInvalid = "PAGE_TOKEN_INVALID", InvalidArgument, NO_RETRY;
    /// The requests of a streaming call in an order the call does not take
    /// (a Consume call opens once, in its first request, which grants credit).
    RequestOutOfOrder = "REQUEST_OUT_OF_ORDER", InvalidArgument, NO_RETRY;
    /// A ResizeStream to no more partitions than the stream has (streams
    /// only grow).
    ResizeNotGrowing = "RESIZE_NOT_GROWING", InvalidArgument, NO_RETRY;

    // NOT_FOUND
    /// The stream does not exist.
    StreamNotFound = "STREAM_NOT_FOUND", NotFound, NO_RETRY;
    /// A partition's stream on the broker is gone (its stream was deleted).
    PartitionNotFound = "PARTITION_NOT_FOUND", NotFound, NO_RETRY;

    // ALREADY_EXISTS
    /// A stream (or a stream named like one of its partitions) exists.
    StreamAlreadyExists = "STREAM_ALREADY_EXISTS", AlreadyExists, NO_RETRY;

    // FAILED_PRECONDITION: the request is fine, the state is not.
    /// The partition is not assigned to this group member (any more).
    PartitionNotHeld = "PARTITION_NOT_HELD", FailedPrecondition, NO_RETRY;
    /// The partition holds no records yet.
    PartitionEmpty = "PARTITION_EMPTY", FailedPrecondition, NO_RETRY;
    /// A source commit did not happen because a record of its batch (or an
    /// earlier batch) was not stored.
    SourceNotCommitted = "SOURCE_NOT_COMMITTED", FailedPrecondition, NO_RETRY;
    /// The broker refuses partlog's user (credentials, virtual host, or a
    /// permission the operation needs).
    BrokerAccessRefused = "BROKER_ACCESS_REFUSED", FailedPrecondition, NO_RETRY;
    /// The broker created a stream but could not start its partitions (its
    /// log says why, e.g. a file system that refused the data directories).
    StreamNotStarted = "STREAM_NOT_STARTED", FailedPrecondition, NO_RETRY;
    /// partlog's configuration does not fit the broker (TLS, frame size,
    /// management API).
    ConfigurationInvalid = "CONFIGURATION_INVALID", FailedPrecondition, NO_RETRY;
    /// A resize of the stream to another partition count has not finished
    /// (repeat that one to finish it).
    ResizeInProgress = "RESIZE_IN_PROGRESS", FailedPrecondition, NO_RETRY;

    // RESOURCE_EXHAUSTED: a configured limit.
    /// A Publish over limits.max_batch_records or limits.max_batch_bytes;
    /// split it and retry at once.
    BatchTooLarge = "BATCH_TOO_LARGE", ResourceExhausted, Some(0);
    /// The principal's call or byte rate (auth.calls_per_second,
    /// auth.publish_bytes_per_second) is spent; RetryInfo says for how long.
    RateLimited = "RATE_LIMITED", ResourceExhausted, Some(1_000);

    // UNAVAILABLE: retry, after RetryInfo's delay.
    /// The broker (or a node of it) cannot be reached or stopped answering.
    BrokerUnavailable = "BROKER_UNAVAILABLE", Unavailable, Some(1_000);
    /// The broker is busy and refuses for now (e.g. publishers while a
    /// partition's leader is elected).
    BrokerBusy = "BROKER_BUSY", Unavailable, Some(500);
    /// The partition's leader changed (or its stream was deleted) under
    /// the call.
    PartitionMoved = "PARTITION_MOVED", Unavailable, Some(500);
    /// The connection broke after records were sent: they may or may not be
    /// stored. Retry with the same producer_id and sequences to store them
    /// once.
    PublishOutcomeUnknown = "PUBLISH_OUTCOME_UNKNOWN", Unavailable, Some(1_000);
    /// partlog is shutting down; retry against another instance.
    ShuttingDown = "SHUTTING_DOWN", Unavailable, Some(1_000);
    /// The broker's management HTTP API does not answer (ListStreams).
    ManagementApiUnavailable = "MANAGEMENT_API_UNAVAILABLE", Unavailable, Some(1_000);
    /// The client's own request stream failed mid-call.
    RequestStreamFailed = "REQUEST_STREAM_FAILED", Unavailable, Some(0);
    /// The stream is being resized and routes no records until its new
    /// partitions are in use (about two routing leases).
    StreamResizing = "STREAM_RESIZING", Unavailable, Some(500);
    /// Records were routed under a routing lease that ran out before they
    /// reached their partition's producer (a slow broker); nothing was
    /// written: retry at once.
    RoutingLeaseLapsed = "ROUTING_LEASE_LAPSED", Unavailable, Some(0);

    // DATA_LOSS
    /// Records the broker delivered cannot be read: a chunk that fails its
    /// checksum or does not parse, a batch that does not decompress.
    RecordsUnreadable = "RECORDS_UNREADABLE", DataLoss, NO_RETRY;

    // INTERNAL
    /// The broker answered what the stream protocol does not allow.
    BrokerProtocolError = "BROKER_PROTOCOL_ERROR", Internal, NO_RETRY;
    /// The local offset store (sled) failed.
    OffsetStoreFailed = "OFFSET_STORE_FAILED", Internal, NO_RETRY;
    /// A bug in partlog.
    Internal = "INTERNAL", Internal, NO_RETRY;

    // UNAUTHENTICATED
    /// No bearer token and no client certificate that names a principal.
    CredentialsMissing = "CREDENTIALS_MISSING", Unauthenticated, NO_RETRY;
    /// A bearer token or client certificate no principal has.
    CredentialsInvalid = "CREDENTIALS_INVALID", Unauthenticated, NO_RETRY;
    /// The credential's principal expired (not_after passed) or was removed
    /// from the principals file.
    CredentialsRevoked = "CREDENTIALS_REVOKED", Unauthenticated, NO_RETRY;

    // PERMISSION_DENIED
    /// The principal lacks a permission on the stream or group.
    PermissionDenied = "PERMISSION_DENIED", PermissionDenied, NO_RETRY;

    // UNIMPLEMENTED
    /// The call names a service or method partlog does not serve (an older
    /// partlog than the client's stubs, or a wrong path).
    MethodUnknown = "METHOD_UNKNOWN", Unimplemented, NO_RETRY;
}

/// A failure: its reason, a message a human can act on, and what a client
/// needs to act on it without parsing the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    reason: Reason,
    message: String,
    /// The request field at fault (`records[3].value`), for INVALID_ARGUMENT.
    field: Option<String>,
    /// Overrides the reason's retry delay (a rate limit knows its wait).
    retry_delay: Option<Duration>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(reason: Reason, message: impl Into<String>) -> Error {
        Error {
            reason,
            message: message.into(),
            field: None,
            retry_delay: None,
        }
    }

    /// A request whose `field` is at fault.
    pub fn field(reason: Reason, field: impl Into<String>, message: impl Into<String>) -> Error {
        Error::new(reason, message).at(field)
    }

    /// Names the request field at fault (replacing one named before: the
    /// caller knows the path better, e.g. `source.stream` for `stream`).
    pub fn at(mut self, field: impl Into<String>) -> Error {
        self.field = Some(field.into());
        self
    }

    /// Retry after `delay` rather than the reason's usual delay.
    pub fn retry_after(mut self, delay: Duration) -> Error {
        self.retry_delay = Some(delay);
        self
    }

    /// The same failure told with another message.
    pub fn with_message(mut self, message: impl Into<String>) -> Error {
        self.message = message.into();
        self
    }

    pub fn reason(&self) -> Reason {
        self.reason
    }

    pub fn kind(&self) -> Kind {
        self.reason.kind()
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn field_path(&self) -> Option<&str> {
        self.field.as_deref()
    }

    /// How long to wait before retrying; `None` when waiting does not help.
    pub fn retry_delay(&self) -> Option<Duration> {
        self.retry_delay.or(self.reason.retry_delay())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_names_are_unique_screaming_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for reason in Reason::ALL {
            let name = reason.name();
            assert!(seen.insert(name), "{name} twice");
            assert!(
                name.chars().all(|c| c.is_ascii_uppercase() || c == '_'),
                "{name}"
            );
        }
    }

    /// The README's table of reasons is the list clients code against: it
    /// names every reason, with its code, and no other.
    #[test]
    fn the_readme_lists_every_reason_with_its_code() {
        let readme = include_str!("../README.md");
        let listed: Vec<(&str, &str)> = readme
            .lines()
            .filter_map(|line| line.strip_prefix("| `"))
            .filter_map(|row| {
                let (name, rest) = row.split_once("` | ")?;
                let code = rest.split(" | ").next()?;
                name.chars()
                    .all(|c| c.is_ascii_uppercase() || c == '_')
                    .then_some((name, code))
            })
            .filter(|(_, code)| code.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
            .collect();
        let expected: Vec<(&str, String)> = Reason::ALL
            .iter()
            .map(|r| (r.name(), format!("{:?}", r.kind())))
            .collect();
        let listed_names: Vec<&str> = listed.iter().map(|(name, _)| *name).collect();
        let expected_names: Vec<&str> = expected.iter().map(|(name, _)| *name).collect();
        assert_eq!(listed_names, expected_names, "README reasons table");
        for ((name, code), (_, kind)) in listed.iter().zip(&expected) {
            let words = code.split('_').map(|w| {
                let mut w = w.to_ascii_lowercase();
                w[..1].make_ascii_uppercase();
                w
            });
            assert_eq!(&words.collect::<String>(), kind, "{name}");
        }
    }

    #[test]
    fn transient_kinds_and_only_they_carry_a_retry_delay() {
        for reason in Reason::ALL {
            let transient = matches!(reason.kind(), Kind::Unavailable | Kind::ResourceExhausted);
            assert_eq!(reason.retry_delay().is_some(), transient, "{reason:?}");
        }
    }

    #[test]
    fn an_error_names_its_field_and_may_override_the_retry_delay() {
        let e = Error::field(Reason::ValueTooLarge, "records[2].value", "too big");
        assert_eq!(e.kind(), Kind::InvalidArgument);
        assert_eq!(e.field_path(), Some("records[2].value"));
        assert_eq!(e.retry_delay(), None);
        let e =
            Error::new(Reason::RateLimited, "slow down").retry_after(Duration::from_millis(250));
        assert_eq!(e.retry_delay(), Some(Duration::from_millis(250)));
        assert_eq!(
            Error::new(Reason::BrokerUnavailable, "x").retry_delay(),
            Some(Duration::from_secs(1))
        );
    }
}
