//! Connecting to partlog, and what a subcommand's failure prints.

use std::io::ErrorKind;
use std::process::ExitCode;
use std::time::Duration;

use tonic::codegen::http::Uri;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::proto::part_log_client::PartLogClient;

/// Largest response the client accepts: a Read answers up to the server's
/// `limits.max_read_bytes` of keys, values and headers plus framing.
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a subcommand failed; decides the message and the exit code.
#[derive(Debug)]
pub enum Failure {
    /// Bad arguments or input (exit 2).
    Usage(String),
    /// A call failed (exit 1); prints the status code's name and message.
    Call(Status),
    /// Anything else that failed after the arguments were accepted (exit 1).
    Other(String),
    /// The reader of standard output went away (`partlog tail | head`):
    /// the command just stops (exit 0).
    OutputClosed,
}

impl From<Status> for Failure {
    fn from(status: Status) -> Self {
        Failure::Call(status)
    }
}

impl From<std::io::Error> for Failure {
    /// Only output is written through `?` on I/O errors.
    fn from(error: std::io::Error) -> Self {
        if error.kind() == ErrorKind::BrokenPipe {
            Failure::OutputClosed
        } else {
            Failure::Other(format!("cannot write the output: {error}"))
        }
    }
}

/// A result whose failure is printed by [`report`].
pub type Result<T, E = Failure> = std::result::Result<T, E>;

/// Prints `error: ...` on standard error and gives the exit code.
pub fn report(failure: Failure) -> ExitCode {
    match failure {
        Failure::Usage(message) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
        Failure::Call(status) => {
            eprintln!("error: {}", describe_status(&status));
            ExitCode::from(1)
        }
        Failure::OutputClosed => ExitCode::SUCCESS,
        Failure::Other(message) => {
            eprintln!("error: {message}");
            ExitCode::from(1)
        }
    }
}

/// `CODE: message`, e.g. `NOT_FOUND: stream "orders" does not exist`.
pub fn describe_status(status: &Status) -> String {
    format!("{}: {}", code_name(status.code()), status.message())
}

/// The canonical name of a gRPC status code, as in google.rpc.Code.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Opens a connection of its own to partlog.
pub async fn connect(server: &Uri) -> Result<PartLogClient<Channel>> {
    let channel = Endpoint::from(server.clone())
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| {
            Failure::Call(Status::unavailable(format!(
                "cannot connect to partlog at {}: {}",
                server_name(server),
                error_chain(&e)
            )))
        })?;
    Ok(PartLogClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
}

/// `host:port` of the server, never any user information in the URL.
fn server_name(server: &Uri) -> String {
    let host = server.host().unwrap_or("?");
    match server.port_u16() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    }
}

/// An error and its causes, `outer: inner: innermost` (a cause already
/// quoted by the message before it is left out).
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![error.to_string()];
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = cause.source();
    }
    parts.join(": ")
}
