//! The one error type of partlog's core.
//!
//! Every failure the core reports is one of these kinds with a message a
//! human can act on. The gRPC layer maps each kind to exactly one status code
//! (`server::convert::code`), so the core never names a transport.

use std::fmt;

/// What went wrong, by the kind of remedy it calls for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The request itself is malformed; retrying it unchanged cannot succeed.
    InvalidArgument(String),
    /// A named stream, partition or group does not exist.
    NotFound(String),
    /// The thing to create exists already.
    AlreadyExists(String),
    /// The request is valid but the system is not in a state to serve it.
    FailedPrecondition(String),
    /// The request exceeds a configured limit.
    ResourceExhausted(String),
    /// The broker cannot be reached or refused for a transient reason; retry.
    Unavailable(String),
    /// Stored records cannot be read (a corrupt chunk, a batch that does not
    /// decompress); retrying reads the same bytes again.
    DataLoss(String),
    /// A bug or an unexpected broker answer.
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn message(&self) -> &str {
        match self {
            Error::InvalidArgument(m)
            | Error::NotFound(m)
            | Error::AlreadyExists(m)
            | Error::FailedPrecondition(m)
            | Error::ResourceExhausted(m)
            | Error::Unavailable(m)
            | Error::DataLoss(m)
            | Error::Internal(m) => m,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for Error {}
