//! The run's context and its methodology: warm-up, rounds in which
//! partlog and native variants alternate, resource metering around each
//! measurement, raw samples into the report.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use rabbitmq_stream_client::Environment;
use serde_json::{Map, Value};

use crate::options::Options;
use crate::procfs::{self, CpuSnapshot, Sampler};
use crate::report::{Report, Resources, Sample, Side, Unit};
use crate::setup::{Broker, Partlog, Result, StreamSettings, Streams};
use crate::stats::Percentiles;

pub struct Bench {
    pub options: Options,
    pub broker: Broker,
    pub partlog: Partlog,
    pub environment: Environment,
    pub streams: Streams,
    pub sampler: Sampler,
    ticks_per_sec: f64,
    pub report: Mutex<Report>,
}

/// A set-up compared in a section (a publishing path, a consumer, ...).
pub trait Variant: Copy {
    fn side(self) -> Side;
    /// Stable name in the JSON.
    fn id(self) -> &'static str;
}

/// Which call of a measurement this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Round {
    /// Unmeasured, with the warm-up record count.
    Warmup,
    /// Measured round, from 0.
    Measured(usize),
}

/// What a measurement gives before it becomes a sample.
pub struct Measured {
    /// What `records` counts, when not records: the scale line counts
    /// activations.
    pub unit: Unit,
    pub records: u64,
    pub elapsed: Duration,
    pub latency: Option<Percentiles>,
    pub service_latency: Option<Percentiles>,
    pub resources: Resources,
    pub extra: Map<String, Value>,
}

/// CPU time and peaks from [`Bench::meter`] to [`Meter::finish`].
pub struct Meter<'a> {
    bench: &'a Bench,
    start: CpuSnapshot,
}

impl Meter<'_> {
    pub async fn finish(self) -> Resources {
        let end = self.bench.cpu();
        let seconds = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / self.bench.ticks_per_sec),
            _ => None,
        };
        // Unmeasured when the broker was restarted in between.
        let broker = match (self.start.broker, end.broker) {
            (Some((a, start)), Some((b, end))) if a == b => (Some(start), Some(end)),
            _ => (None, None),
        };
        Resources {
            partlog_cpu_s: seconds(self.start.partlog, end.partlog),
            broker_cpu_s: seconds(broker.0, broker.1),
            client_cpu_s: seconds(self.start.client, end.client).unwrap_or(0.0),
            machine_cpu_s: seconds(self.start.machine, end.machine),
            peaks: self.bench.sampler.take().await,
        }
    }
}

impl Bench {
    pub fn new(
        options: Options,
        broker: Broker,
        partlog: Partlog,
        environment: Environment,
        streams: Streams,
    ) -> Bench {
        let sampler = Sampler::start(partlog.pid, vec![broker.port]);
        Bench {
            options,
            broker,
            partlog,
            environment,
            streams,
            sampler,
            ticks_per_sec: procfs::clock_ticks(),
            report: Mutex::default(),
        }
    }

    fn cpu(&self) -> CpuSnapshot {
        CpuSnapshot {
            partlog: self.partlog.pid.and_then(procfs::cpu_ticks),
            broker: self
                .broker
                .pid()
                .and_then(|pid| Some((pid, procfs::cpu_ticks(pid)?))),
            client: procfs::cpu_ticks(std::process::id()),
            machine: procfs::machine_busy_ticks(),
        }
    }

    /// Starts metering the measured part of a measurement.
    pub async fn meter(&self) -> Meter<'_> {
        self.sampler.take().await;
        Meter {
            bench: self,
            start: self.cpu(),
        }
    }

    /// Runs a measurement; when it fails — the shared broker may have been
    /// restarted under the run — runs it once more when broker and partlog
    /// serve again, and says so in the report.
    async fn measure_retrying<F, Fut>(&self, what: &str, mut measure: F) -> Result<Measured>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Measured>>,
    {
        match measure().await {
            Ok(measured) => Ok(measured),
            Err(first) => {
                let incident = format!("{what} failed and was measured again: {first}");
                println!("  {incident}");
                self.streams.incidents.lock().unwrap().push(incident);
                self.wait_until_serving().await;
                measure()
                    .await
                    .map_err(|e| format!("{what}: {e} (and before: {first})").into())
            }
        }
    }

    /// Waits (up to two minutes) until the broker takes connections and
    /// partlog reports SERVING again.
    pub async fn wait_until_serving(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        while tokio::time::Instant::now() < deadline {
            let broker_up = match self.broker.admin_client().await {
                Ok(client) => {
                    let _ = client.close().await;
                    true
                }
                Err(_) => false,
            };
            let serving = self.partlog.health().await
                == Some(tonic_health::pb::health_check_response::ServingStatus::Serving);
            if broker_up && serving {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Creates a fresh super stream and watches its nodes' ports for
    /// connection counts.
    pub async fn fresh_stream(&self, what: &str, partitions: u32) -> Result<String> {
        self.fresh_stream_with(what, partitions, StreamSettings::default())
            .await
    }

    /// As [`Bench::fresh_stream`], with `settings`.
    pub async fn fresh_stream_with(
        &self,
        what: &str,
        partitions: u32,
        settings: StreamSettings,
    ) -> Result<String> {
        let (name, ports) = self.streams.create(what, partitions, settings).await?;
        self.sampler.watch_ports(&ports);
        Ok(name)
    }

    /// Runs `measure` for every variant once unmeasured (warm-up, when
    /// `warm_up`), then `rounds` times. Within a round the variants run in the given order,
    /// which alternates partlog and native; every other round runs them in
    /// reverse (ABBA), so that neither side always follows the other (page
    /// cache, broker segment files, a neighbour's build starting). Every
    /// sample goes into the report as it is taken.
    pub async fn rounds<V, F, Fut>(
        &self,
        section: &str,
        variants: &[V],
        rounds: usize,
        warm_up: bool,
        mut measure: F,
    ) -> Result<()>
    where
        V: Variant,
        F: FnMut(V, Round) -> Fut,
        Fut: Future<Output = Result<Measured>>,
    {
        println!("{section}");
        for &variant in variants.iter().filter(|_| warm_up) {
            let what = format!("{section}: warm-up of {}", variant.id());
            self.measure_retrying(&what, || measure(variant, Round::Warmup))
                .await?;
        }
        for round in 0..rounds {
            let mut order = variants.to_vec();
            if round % 2 == 1 {
                order.reverse();
            }
            for variant in order {
                let what = format!("{section}: {} round {}", variant.id(), round + 1);
                let measured = self
                    .measure_retrying(&what, || measure(variant, Round::Measured(round)))
                    .await?;
                let sample = Sample {
                    section: section.to_owned(),
                    variant: variant.id().to_owned(),
                    side: variant.side(),
                    round,
                    unit: measured.unit,
                    records: measured.records,
                    seconds: measured.elapsed.as_secs_f64(),
                    records_per_sec: measured.records as f64 / measured.elapsed.as_secs_f64(),
                    latency: measured.latency,
                    service_latency: measured.service_latency,
                    resources: measured.resources,
                    extra: measured.extra,
                };
                println!("  {}", progress(&sample));
                self.report.lock().unwrap().samples.push(sample);
            }
        }
        Ok(())
    }
}

/// One line per sample while the run goes on.
fn progress(sample: &Sample) -> String {
    let mut line = format!(
        "round {} {:<30} {:>8} in {:>7.3} s = {:>8.0}/s",
        sample.round + 1,
        sample.variant,
        sample.records,
        sample.seconds,
        sample.records_per_sec
    );
    if let Some(l) = &sample.latency {
        line += &format!(
            ", p50 {:.2} p99 {:.2} p99.9 {:.2} ms",
            l.p50_ms, l.p99_ms, l.p999_ms
        );
    }
    for (name, value) in &sample.extra {
        line += &format!(", {name} {value}");
    }
    let r = &sample.resources;
    let cpu =
        |label: &str, s: Option<f64>| s.map(|s| format!(", {label} {s:.2}")).unwrap_or_default();
    line += &cpu("CPU-s partlog", r.partlog_cpu_s);
    line += &cpu("broker", r.broker_cpu_s);
    line += &cpu("bench", Some(r.client_cpu_s));
    line += &cpu("rest of the machine", r.other_cpu_s());
    line
}
