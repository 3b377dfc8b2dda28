//! The audit log: one line per administrative or data-changing call —
//! CreateStream, DeleteStream, ResizeStream, Commit, ResetOffsets, whatever their
//! outcome — and per security event: a call refused (UNAUTHENTICATED,
//! PERMISSION_DENIED), an open call revoked, a reload of the principals
//! file or the certificates. Each line names the action, the principal
//! (`-` without authentication or before it), the peer, the resource and
//! the outcome, on a target of its own, `partlog::audit`, so that operators
//! can route it (`PARTLOG_LOG=warn,partlog::audit=info` keeps only it; a
//! JSON collector filters on `"target":"partlog::audit"`). Publishing is
//! not audited per call: the metrics count it.

use std::net::SocketAddr;

use tonic::Status;

use crate::proto::code_name;

/// One audited event.
pub struct Entry<'a> {
    /// What happened: the RPC's name, or the security event.
    pub action: &'a str,
    pub principal: Option<&'a str>,
    pub peer: Option<SocketAddr>,
    /// What it concerns: `stream "orders"`, `group "billing" of stream
    /// "orders"`, a file.
    pub resource: &'a str,
    /// `OK`, or the status code's name and its message.
    pub outcome: Result<(), &'a Status>,
}

/// Writes `entry` to the audit log.
pub fn record(entry: Entry<'_>) {
    let principal = entry.principal.unwrap_or("-");
    let peer = entry
        .peer
        .map_or_else(|| "-".to_owned(), |peer| peer.to_string());
    match entry.outcome {
        Ok(()) => tracing::info!(
            target: "partlog::audit",
            action = entry.action,
            principal,
            peer,
            resource = entry.resource,
            outcome = "OK",
            "audit"
        ),
        Err(status) => tracing::info!(
            target: "partlog::audit",
            action = entry.action,
            principal,
            peer,
            resource = entry.resource,
            outcome = code_name(status.code()),
            reason = status.message(),
            "audit"
        ),
    }
}
