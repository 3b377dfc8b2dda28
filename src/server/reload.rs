//! Re-reading security files while partlog runs: TLS certificates and the
//! principals file, on SIGHUP and when one of their files changes (looked
//! at every [`POLL_INTERVAL`]: certificate managers replace files without
//! signalling anyone). A file that does not load leaves the previous
//! version in use and is reported in the log.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::signal::unix::{signal, SignalKind};

use super::audit;
use tokio::task::JoinHandle;

/// How often the files' modification times are compared.
pub const POLL_INTERVAL: Duration = Duration::from_secs(5);

/// Something loaded from files that can be loaded again.
pub trait Reload: Send + Sync {
    /// What it is, for the log: "server TLS certificates".
    fn what(&self) -> &'static str;
    fn files(&self) -> Vec<PathBuf>;
    /// Loads the files again; on an error the previous version stays.
    fn reload(&self) -> Result<(), String>;
}

/// What a file looked like: modification time and size (`None`: missing).
type Stamp = Option<(SystemTime, u64)>;

fn stamps(files: &[PathBuf]) -> Vec<Stamp> {
    files
        .iter()
        .map(|f| {
            let meta = std::fs::metadata(f).ok()?;
            Some((meta.modified().ok()?, meta.len()))
        })
        .collect()
}

/// Watches `items` until aborted; `None` when there is nothing to watch
/// (then SIGHUP keeps its default meaning). Must run inside the runtime.
pub fn spawn(items: Vec<Arc<dyn Reload>>) -> Option<JoinHandle<()>> {
    if items.is_empty() {
        return None;
    }
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(hangup) => Some(hangup),
        Err(e) => {
            tracing::warn!("cannot watch SIGHUP ({e}); security files reload when they change");
            None
        }
    };
    Some(tokio::spawn(async move {
        let mut seen: Vec<Vec<Stamp>> = items.iter().map(|i| stamps(&i.files())).collect();
        let mut tick = tokio::time::interval(POLL_INTERVAL);
        tick.tick().await;
        loop {
            let signalled = tokio::select! {
                _ = tick.tick() => false,
                Some(()) = async { hangup.as_mut()?.recv().await } => true,
            };
            for (item, seen) in items.iter().zip(seen.iter_mut()) {
                let now = stamps(&item.files());
                if !signalled && now == *seen {
                    continue;
                }
                *seen = now;
                let files = item.files();
                let files: Vec<_> = files.iter().map(|f| f.display().to_string()).collect();
                let resource = files.join(", ");
                match item.reload() {
                    Ok(()) => {
                        tracing::info!(files = ?files, "reloaded the {}", item.what());
                        audit::record(audit::Entry {
                            action: "reload",
                            principal: None,
                            peer: None,
                            resource: &resource,
                            outcome: Ok(()),
                        });
                    }
                    Err(why) => {
                        tracing::warn!(
                            "cannot reload the {}, keeping the previous ones: {why}",
                            item.what()
                        );
                        audit::record(audit::Entry {
                            action: "reload",
                            principal: None,
                            peer: None,
                            resource: &resource,
                            outcome: Err(&tonic::Status::failed_precondition(why)),
                        });
                    }
                }
            }
        }
    }))
}
