//! The log: tracing events on standard error, as text or JSON lines.
//!
//! `partlog serve` writes what `log.format` says; the client subcommands
//! always write text (their output is for a person or a script, and their
//! log is only the client library's rare warning). `PARTLOG_LOG` filters
//! both. Every line logged inside a call carries the call's span (`rpc`:
//! method, peer, stream, group; see `server::observe`): text lines as a
//! prefix, JSON lines in their `spans` list.
//!
//! What never reaches a line: passwords (the configuration's `Secret`
//! shows no value), tokens (the authentication layer never logs one), and
//! request metadata.

use std::fmt;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// The filter without `PARTLOG_LOG`: info, with the broker adapter's
/// directives for its client library.
fn filter() -> EnvFilter {
    EnvFilter::try_from_env("PARTLOG_LOG")
        .unwrap_or_else(|_| format!("info,{}", crate::broker::LIBRARY_LOG_DIRECTIVES).into())
}

/// Installs the log of `partlog serve`.
pub fn init(format: LogFormat) {
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter());
    match format {
        LogFormat::Text => builder.with_ansi(colour()).init(),
        // One object per line: the event's fields at the top level, the
        // spans it happened in (outermost first) as `spans`.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(true)
            .init(),
    }
}

/// Installs the log of the client subcommands: always text.
pub fn init_client() {
    init(LogFormat::Text);
}

/// Colour only for a person at a terminal, and not when `NO_COLOR` asks
/// for none (<https://no-color.org>): log files and collectors get plain text.
fn colour() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// An error with its causes, `error: cause: cause`, for log lines and
/// fatal messages: many errors (tonic's transport error, I/O errors in a
/// connection error) say little without their source. A cause whose text
/// the error's own message already includes is not repeated.
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut said = self.0.to_string();
        f.write_str(&said)?;
        let mut cause = self.0.source();
        while let Some(error) = cause {
            let text = error.to_string();
            if !said.contains(&text) {
                write!(f, ": {text}")?;
                said = text;
            }
            cause = error.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{what}")]
    struct Layer {
        what: &'static str,
        #[source]
        source: Option<Box<Layer>>,
    }

    fn layer(what: &'static str, source: Option<Layer>) -> Layer {
        Layer {
            what,
            source: source.map(Box::new),
        }
    }

    #[test]
    fn causes_follow_the_error_once() {
        let inner = layer("connection refused", None);
        let middle = layer("transport error", Some(inner));
        let outer = layer("gRPC server failed: transport error", Some(middle));
        assert_eq!(
            ErrorChain(&outer).to_string(),
            "gRPC server failed: transport error: connection refused"
        );
        let alone = layer("just this", None);
        assert_eq!(ErrorChain(&alone).to_string(), "just this");
    }
}
