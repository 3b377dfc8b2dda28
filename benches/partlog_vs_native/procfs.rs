//! Process resources from /proc: CPU time, resident memory, and a process's
//! established TCP connections to the broker.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Clock ticks per second of /proc/<pid>/stat times.
pub fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// User + system CPU ticks of a process so far; `None` once it is gone.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields after it are
    // counted from the closing parenthesis: utime and stime are 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Busy CPU ticks of the whole machine so far (all cores, everything but
/// idle and I/O wait), from /proc/stat.
pub fn machine_busy_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let total: u64 = fields.iter().take(8).sum();
    Some(total - fields.get(3)? - fields.get(4)?)
}

/// A `/proc/<pid>/status` field in KiB (VmRSS, VmHWM).
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Socket inodes of a process's open file descriptors.
fn socket_inodes(pid: u32) -> HashSet<u64> {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return HashSet::new();
    };
    entries
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            target
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

/// TCP sockets of the network namespace `pid` lives in: (state, local
/// port, remote port, inode), IPv4 and IPv6.
fn tcp_sockets(pid: u32) -> Vec<(u8, u16, u16, u64)> {
    let mut sockets = Vec::new();
    for table in ["tcp", "tcp6"] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let port = |address: &str| {
                address
                    .rsplit_once(':')
                    .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
            };
            let (Some(local), Some(remote), Some(state), Some(inode)) = (
                fields.get(1).and_then(|a| port(a)),
                fields.get(2).and_then(|a| port(a)),
                fields.get(3).and_then(|s| u8::from_str_radix(s, 16).ok()),
                fields.get(9).and_then(|i| i.parse().ok()),
            ) else {
                continue;
            };
            sockets.push((state, local, remote, inode));
        }
    }
    sockets
}

const TCP_ESTABLISHED: u8 = 0x01;
const TCP_LISTEN: u8 = 0x0A;

/// Established TCP connections to any of `ports` (the broker's stream
/// ports) of each of `pids`, which share this process's network namespace.
/// Reading the kernel's TCP table walks its whole hash table, tens of
/// milliseconds of CPU on a machine with much memory, so callers sample it
/// sparingly and for all processes at once.
pub fn connections_to(pids: &[u32], ports: &[u16]) -> Vec<usize> {
    let established: Vec<u64> = tcp_sockets(std::process::id())
        .into_iter()
        .filter(|(state, _, remote, _)| *state == TCP_ESTABLISHED && ports.contains(remote))
        .map(|(_, _, _, inode)| inode)
        .collect();
    pids.iter()
        .map(|pid| {
            let inodes = socket_inodes(*pid);
            established.iter().filter(|i| inodes.contains(i)).count()
        })
        .collect()
}

/// The process listening on a local TCP port (the broker's beam.smp), found
/// through the listening socket's inode.
pub fn listener_pid(port: u16) -> Option<u32> {
    let me = std::process::id();
    let inode = tcp_sockets(me)
        .into_iter()
        .find(|(state, local, _, _)| *state == TCP_LISTEN && *local == port)?
        .3;
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| socket_inodes(*pid).contains(&inode))
}

/// CPU ticks of the processes a measurement watches; the broker's with its
/// pid, as a restarted broker is another process.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuSnapshot {
    pub partlog: Option<u64>,
    pub broker: Option<(u32, u64)>,
    pub client: Option<u64>,
    pub machine: Option<u64>,
}

/// Peaks seen by a [`Sampler`] since its last reset.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Peaks {
    pub partlog_rss_kib: Option<u64>,
    pub partlog_broker_connections: Option<usize>,
    pub client_broker_connections: usize,
}

/// Polls partlog's resident memory (often) and the broker connections of
/// partlog and of this process, the native clients (rarely, see
/// [`connections_to`]) in the background, keeping the peaks since the last
/// [`Sampler::take`].
pub struct Sampler {
    state: Arc<SamplerState>,
    task: tokio::task::JoinHandle<()>,
    /// Samples asked for by measurements, not yet awaited.
    pending: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

struct SamplerState {
    partlog_pid: Option<u32>,
    ports: Mutex<Vec<u16>>,
    peaks: Mutex<Peaks>,
}

impl SamplerState {
    fn sample_memory(&self) {
        let rss = self.partlog_pid.and_then(|pid| status_kib(pid, "VmRSS"));
        let mut p = self.peaks.lock().unwrap();
        p.partlog_rss_kib = p.partlog_rss_kib.max(rss);
    }

    fn sample_connections(&self) {
        let ports = self.ports.lock().unwrap().clone();
        let me = std::process::id();
        let pids: Vec<u32> = std::iter::once(me).chain(self.partlog_pid).collect();
        let counts = connections_to(&pids, &ports);
        let mut p = self.peaks.lock().unwrap();
        p.client_broker_connections = p.client_broker_connections.max(counts[0]);
        if self.partlog_pid.is_some() {
            p.partlog_broker_connections = p.partlog_broker_connections.max(Some(counts[1]));
        }
    }
}

const MEMORY_EVERY: Duration = Duration::from_millis(100);
const CONNECTIONS_EVERY: u32 = 10;

impl Sampler {
    pub fn start(partlog_pid: Option<u32>, broker_ports: Vec<u16>) -> Sampler {
        let state = Arc::new(SamplerState {
            partlog_pid,
            ports: Mutex::new(broker_ports),
            peaks: Mutex::new(Peaks::default()),
        });
        let task = tokio::spawn({
            let state = state.clone();
            async move {
                let mut tick = tokio::time::interval(MEMORY_EVERY);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                for n in 0u32.. {
                    tick.tick().await;
                    state.sample_memory();
                    if n % CONNECTIONS_EVERY == 0 {
                        let state = state.clone();
                        let _ =
                            tokio::task::spawn_blocking(move || state.sample_connections()).await;
                    }
                }
            }
        });
        Sampler {
            state,
            task,
            pending: Mutex::default(),
        }
    }

    /// Adds broker stream ports learned later (other cluster nodes).
    pub fn watch_ports(&self, more: &[u16]) {
        let mut ports = self.state.ports.lock().unwrap();
        for p in more {
            if !ports.contains(p) {
                ports.push(*p);
            }
        }
    }

    /// Counts connections now, off the async threads and without waiting:
    /// measurements call it when everything they opened is open. The next
    /// [`Sampler::take`] includes it.
    pub fn sample_connections(&self) {
        let state = self.state.clone();
        let sample = tokio::task::spawn_blocking(move || state.sample_connections());
        self.pending.lock().unwrap().push(sample);
    }

    /// The peaks since the previous call (with the samples asked for and
    /// samples taken now), and a fresh start.
    pub async fn take(&self) -> Peaks {
        let pending = std::mem::take(&mut *self.pending.lock().unwrap());
        for sample in pending {
            let _ = sample.await;
        }
        let state = self.state.clone();
        let _ = tokio::task::spawn_blocking(move || {
            state.sample_memory();
            state.sample_connections();
        })
        .await;
        std::mem::take(&mut *self.state.peaks.lock().unwrap())
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}
