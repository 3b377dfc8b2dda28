//! Connecting to partlog, and what a subcommand's failure prints.

use std::io::ErrorKind;
use std::process::ExitCode;
use std::time::Duration;

use tonic::codegen::http::Uri;
use tonic::codegen::InterceptedService;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::Status;

use super::Common;
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

pub use crate::proto::code_name;

/// A client of partlog whose calls carry the bearer token, if any.
pub type Client = PartLogClient<InterceptedService<Channel, BearerToken>>;

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub struct BearerToken(Option<MetadataValue<Ascii>>);

impl Interceptor for BearerToken {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

impl BearerToken {
    /// From `--token`, else `--token-file`; none without either.
    fn from_args(common: &Common) -> Result<BearerToken> {
        let token = match (&common.token, &common.token_file) {
            (Some(token), _) => token.expose().to_owned(),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    Failure::Usage(format!("cannot read --token-file {}: {e}", path.display()))
                })?;
                // Written with `echo`: the newline is no part of the token.
                text.lines().next().unwrap_or("").to_owned()
            }
            (None, None) => return Ok(BearerToken(None)),
        };
        if token.trim().is_empty() {
            return Err(Failure::Usage("the bearer token is empty".into()));
        }
        let mut value = MetadataValue::try_from(format!("Bearer {}", token.trim()))
            .map_err(|_| Failure::Usage("the bearer token must be printable ASCII".into()))?;
        // Keeps it out of Debug output.
        value.set_sensitive(true);
        Ok(BearerToken(Some(value)))
    }
}

/// Opens a connection of its own to partlog's `PartLog` service (see
/// [`channel`]).
pub async fn connect(common: &Common) -> Result<Client> {
    let (channel, token) = channel(common).await?;
    Ok(PartLogClient::with_interceptor(channel, token)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
}

/// Opens a connection of its own to partlog: TLS for an https:// server
/// (verified with --ca, else the system's CAs; --cert/--key for mutual TLS),
/// and the bearer token to send on every call.
pub async fn channel(common: &Common) -> Result<(Channel, BearerToken)> {
    let server = &common.server;
    let token = BearerToken::from_args(common)?;
    let mut endpoint = Endpoint::from(server.clone())
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true);
    if server.scheme_str() == Some("https") {
        endpoint = endpoint.tls_config(tls_config(common)?).map_err(|e| {
            Failure::Usage(format!(
                "TLS set-up for {}: {}",
                server_name(server),
                error_chain(&e)
            ))
        })?;
    } else if common.ca.is_some() || common.cert.is_some() {
        return Err(Failure::Usage(format!(
            "--ca, --cert and --key are for TLS: use --server https://{}",
            server_name(server)
        )));
    } else if token.0.is_some() && !is_loopback(server) {
        eprintln!(
            "warning: the bearer token goes to {} in plain text (http://); anyone on the way \
             can read it. Use --server https://...",
            server_name(server)
        );
    }
    let channel = endpoint.connect().await.map_err(|e| {
        Failure::Call(Status::unavailable(format!(
            "cannot connect to partlog at {}: {}",
            server_name(server),
            error_chain(&e)
        )))
    })?;
    Ok((channel, token))
}

fn tls_config(common: &Common) -> Result<ClientTlsConfig> {
    let read = |flag: &str, path: &std::path::Path| {
        std::fs::read(path)
            .map_err(|e| Failure::Usage(format!("cannot read {flag} {}: {e}", path.display())))
    };
    let mut tls = ClientTlsConfig::new();
    tls = match &common.ca {
        Some(ca) => tls.ca_certificate(Certificate::from_pem(read("--ca", ca)?)),
        None => tls.with_native_roots(),
    };
    if let (Some(cert), Some(key)) = (&common.cert, &common.key) {
        tls = tls.identity(Identity::from_pem(
            read("--cert", cert)?,
            read("--key", key)?,
        ));
    }
    Ok(tls)
}

/// Whether `server` is this machine (localhost or a loopback address).
fn is_loopback(server: &Uri) -> bool {
    let host = server.host().unwrap_or("").trim_matches(['[', ']']);
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
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
