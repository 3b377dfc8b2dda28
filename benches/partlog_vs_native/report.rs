//! Raw samples of every round, the comparison lines computed from them
//! (medians over rounds, ratio partlog/native), the printed table and the
//! JSON document.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::procfs::Peaks;
use crate::stats::{median, Percentile, Percentiles};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Partlog,
    Native,
}

/// CPU seconds spent during one measurement and the peaks seen.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Resources {
    /// The partlog server process; `None` when its pid is unknown.
    pub partlog_cpu_s: Option<f64>,
    /// The broker process; `None` when it does not run on this machine.
    pub broker_cpu_s: Option<f64>,
    /// This process: the load generator and, on the native side, the
    /// native client library.
    pub client_cpu_s: f64,
    /// The whole machine, all cores: what is not partlog's, the broker's
    /// or this process's is the rest of the machine — other processes
    /// (another build, say) and interrupt handling (loopback TCP).
    pub machine_cpu_s: Option<f64>,
    #[serde(flatten)]
    pub peaks: Peaks,
}

impl Resources {
    /// CPU seconds of the rest of the machine: other processes and
    /// interrupt handling.
    pub fn other_cpu_s(&self) -> Option<f64> {
        let machine = self.machine_cpu_s?;
        let ours = self.partlog_cpu_s.unwrap_or(0.0) + self.broker_cpu_s? + self.client_cpu_s;
        Some((machine - ours).max(0.0))
    }
}

/// What a sample's count counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    Records,
    /// Partitions that became active (the scale line).
    Activations,
}

/// One measurement of one variant in one round.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub section: String,
    pub variant: String,
    pub side: Side,
    pub round: usize,
    pub unit: Unit,
    pub records: u64,
    pub seconds: f64,
    pub records_per_sec: f64,
    pub latency: Option<Percentiles>,
    /// Publish at a fixed rate: latency from actual submission instead of
    /// from when the batch was due.
    pub service_latency: Option<Percentiles>,
    pub resources: Resources,
    pub extra: Map<String, Value>,
}

/// What a line compares.
#[derive(Debug, Clone, Copy)]
pub enum Metric {
    Throughput,
    Latency(Percentile),
    /// Broker CPU seconds per million records.
    BrokerCpu,
    /// CPU seconds per million records outside the broker: partlog and its
    /// gRPC client, or the native client.
    OutsideBrokerCpu,
    /// Broker connections: partlog's, or the native clients'.
    Connections,
    /// Seconds the measurement took (e.g. until every partition was active).
    Seconds,
    /// Megabytes (10^6) of chunks the broker sent partlog's readers
    /// (`broker_mb` of the sample).
    BrokerMegabytes,
    /// Seconds the sample's `extra` names (e.g. a resize's publish outage).
    ExtraSeconds(&'static str),
}

impl Metric {
    fn value(self, sample: &Sample) -> Option<f64> {
        let per_million = |cpu: f64| cpu / sample.records as f64 * 1e6;
        let r = &sample.resources;
        match self {
            Metric::Throughput => Some(sample.records_per_sec),
            Metric::Latency(p) => sample.latency.as_ref().map(|l| p.of(l)),
            Metric::BrokerCpu => r.broker_cpu_s.map(per_million),
            Metric::OutsideBrokerCpu => match sample.side {
                Side::Partlog => r.partlog_cpu_s.map(|p| per_million(p + r.client_cpu_s)),
                Side::Native => Some(per_million(r.client_cpu_s)),
            },
            Metric::Connections => match sample.side {
                Side::Partlog => r.peaks.partlog_broker_connections.map(|c| c as f64),
                Side::Native => Some(r.peaks.client_broker_connections as f64),
            },
            Metric::Seconds => Some(sample.seconds),
            Metric::BrokerMegabytes => sample.extra.get("broker_mb")?.as_f64(),
            Metric::ExtraSeconds(key) => sample.extra.get(key)?.as_f64(),
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Metric::Throughput => "rec/s",
            Metric::Latency(_) => "ms",
            Metric::BrokerCpu | Metric::OutsideBrokerCpu => "CPU-s/M rec",
            Metric::Connections => "connections",
            Metric::Seconds | Metric::ExtraSeconds(_) => "s",
            Metric::BrokerMegabytes => "MB",
        }
    }

    fn higher_is_better(self) -> bool {
        matches!(self, Metric::Throughput)
    }
}

/// The `native_variant` of a line against a goal ([`Report::against_goal`]).
pub const GOAL: &str = "goal";

/// One row of the table: a metric of a partlog variant against a native
/// variant (or a goal), medians over rounds.
#[derive(Debug, Clone, Serialize)]
pub struct Line {
    pub section: String,
    pub title: String,
    pub partlog_variant: String,
    pub native_variant: String,
    pub unit: &'static str,
    pub better: &'static str,
    pub partlog: Option<f64>,
    pub native: Option<f64>,
    /// partlog / native.
    pub ratio: Option<f64>,
}

impl Line {
    /// The line of `metric`'s medians, partlog's against the native
    /// variant's (or the goal).
    fn new(
        section: &str,
        title: impl Into<String>,
        (partlog_variant, partlog): (&str, Option<f64>),
        (native_variant, native): (&str, Option<f64>),
        metric: Metric,
    ) -> Line {
        let ratio = match (partlog, native) {
            (Some(p), Some(n)) if n > 0.0 => Some(p / n),
            _ => None,
        };
        Line {
            section: section.to_owned(),
            title: title.into(),
            partlog_variant: partlog_variant.to_owned(),
            native_variant: native_variant.to_owned(),
            unit: metric.unit(),
            better: if metric.higher_is_better() {
                "higher"
            } else {
                "lower"
            },
            partlog,
            native,
            ratio,
        }
    }
}

#[derive(Default)]
pub struct Report {
    pub samples: Vec<Sample>,
    pub lines: Vec<Line>,
    pub notes: Vec<String>,
}

impl Report {
    /// The median of `metric` over the rounds of `variant` in `section`.
    pub fn median(&self, section: &str, variant: &str, metric: Metric) -> Option<f64> {
        let values: Vec<f64> = self
            .samples
            .iter()
            .filter(|s| s.section == section && s.variant == variant)
            .filter_map(|s| metric.value(s))
            .collect();
        median(&values)
    }

    /// Adds a line comparing two variants of a section.
    pub fn compare(
        &mut self,
        section: &str,
        title: impl Into<String>,
        partlog_variant: &str,
        native_variant: &str,
        metric: Metric,
    ) {
        let partlog = self.median(section, partlog_variant, metric);
        let native = self.median(section, native_variant, metric);
        let line = Line::new(
            section,
            title,
            (partlog_variant, partlog),
            (native_variant, native),
            metric,
        );
        self.lines.push(line);
    }

    /// Adds a line of a partlog variant that no native client can match
    /// (e.g. growing a stream), against `goal` when there is one: the
    /// native column holds the goal and the ratio is partlog / goal.
    pub fn against_goal(
        &mut self,
        section: &str,
        title: impl Into<String>,
        partlog_variant: &str,
        metric: Metric,
        goal: Option<f64>,
    ) {
        let partlog = self.median(section, partlog_variant, metric);
        let line = Line::new(
            section,
            title,
            (partlog_variant, partlog),
            (GOAL, goal),
            metric,
        );
        self.lines.push(line);
    }

    /// The human table: lines grouped by section.
    pub fn table(&self) -> String {
        let rows: Vec<[String; 5]> = self
            .lines
            .iter()
            .map(|l| {
                [
                    format!("  {}", l.title),
                    format_value(l.partlog, l.unit),
                    match (l.native_variant.as_str(), l.native) {
                        (GOAL, Some(_)) => format!("{} (goal)", format_value(l.native, l.unit)),
                        _ => format_value(l.native, l.unit),
                    },
                    l.ratio.map_or("—".into(), |r| format!("{r:.2}")),
                    l.better.to_owned(),
                ]
            })
            .collect();
        let header = [
            "line".to_owned(),
            "partlog".to_owned(),
            "native".to_owned(),
            "partlog/native".to_owned(),
            "better".to_owned(),
        ];
        let mut widths = [0; 5];
        for row in rows.iter().chain(std::iter::once(&header)) {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let render = |row: &[String; 5]| {
            let mut out = String::new();
            for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
                let pad = w - cell.chars().count();
                if i == 0 {
                    out.push_str(cell);
                    out.push_str(&" ".repeat(pad));
                } else {
                    out.push_str("  ");
                    out.push_str(&" ".repeat(pad));
                    out.push_str(cell);
                }
            }
            out.trim_end().to_owned()
        };
        let mut text = render(&header);
        text.push('\n');
        let mut section = None;
        for (line, row) in self.lines.iter().zip(&rows) {
            if section != Some(&line.section) {
                section = Some(&line.section);
                let _ = writeln!(text, "{}", line.section);
            }
            let _ = writeln!(text, "{}", render(row));
        }
        text
    }

    /// Resources per section and variant, medians over rounds (peaks: the
    /// highest): CPU seconds per million records of partlog, the broker,
    /// this process (load generator and native client) and the rest of the
    /// machine; partlog's peak RSS; broker connections of partlog and of
    /// this process.
    pub fn resources_table(&self) -> String {
        let mut rows: Vec<[String; 8]> = vec![[
            "section / variant".into(),
            "rec/s".into(),
            "partlog".into(),
            "broker".into(),
            "bench".into(),
            "rest".into(),
            "partlog RSS".into(),
            "connections".into(),
        ]];
        let mut seen: Vec<(&str, &str)> = Vec::new();
        for sample in &self.samples {
            let key = (sample.section.as_str(), sample.variant.as_str());
            if seen.contains(&key) {
                continue;
            }
            seen.push(key);
            let rounds: Vec<&Sample> = self
                .samples
                .iter()
                .filter(|s| (s.section.as_str(), s.variant.as_str()) == key)
                .collect();
            let of_records: Vec<&&Sample> =
                rounds.iter().filter(|s| s.unit == Unit::Records).collect();
            let per_million = |cpu: &dyn Fn(&Sample) -> Option<f64>| {
                let values: Vec<f64> = of_records
                    .iter()
                    .filter_map(|s| Some(cpu(s)? / s.records as f64 * 1e6))
                    .collect();
                median(&values).map_or("—".into(), significant)
            };
            let rate: Vec<f64> = of_records.iter().map(|s| s.records_per_sec).collect();
            let rss = rounds
                .iter()
                .filter_map(|s| s.resources.peaks.partlog_rss_kib)
                .max();
            let partlog_connections = rounds
                .iter()
                .filter_map(|s| s.resources.peaks.partlog_broker_connections)
                .max();
            let client_connections = rounds
                .iter()
                .map(|s| s.resources.peaks.client_broker_connections)
                .max()
                .unwrap_or(0);
            if seen.iter().filter(|(section, _)| *section == key.0).count() == 1 {
                rows.push([
                    key.0.to_owned(),
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                ]);
            }
            rows.push([
                format!("  {}", key.1),
                median(&rate).map_or("—".into(), |r| thousands(r.round() as u64)),
                per_million(&|s| s.resources.partlog_cpu_s),
                per_million(&|s| s.resources.broker_cpu_s),
                per_million(&|s| Some(s.resources.client_cpu_s)),
                per_million(&|s| s.resources.other_cpu_s()),
                rss.map_or("—".into(), |kib| format!("{:.0} MB", kib as f64 / 1024.0)),
                format!(
                    "{} / {client_connections}",
                    partlog_connections.map_or("—".into(), |c| c.to_string())
                ),
            ]);
        }
        let mut widths = [0; 8];
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut text = String::from(
            "CPU seconds per million records (medians): partlog, broker, bench (load generator \
             and native client), rest of the machine; partlog's peak RSS; broker connections of \
             partlog / of the bench\n",
        );
        for row in &rows {
            if row[1].is_empty() {
                let _ = writeln!(text, "{}", row[0]);
                continue;
            }
            let mut line = String::new();
            for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
                let pad = " ".repeat(w - cell.chars().count());
                if i == 0 {
                    line += &format!("{cell}{pad}");
                } else {
                    line += &format!("  {pad}{cell}");
                }
            }
            let _ = writeln!(text, "{}", line.trim_end());
        }
        text
    }

    pub fn json(&self, header: Value) -> Value {
        let mut document = header;
        document["lines"] = json!(self.lines);
        document["samples"] = json!(self.samples);
        document["notes"] = json!(self.notes);
        document
    }
}

fn format_value(value: Option<f64>, unit: &str) -> String {
    let Some(v) = value else {
        return "—".into();
    };
    match unit {
        "rec/s" => format!("{} {unit}", thousands(v.round() as u64)),
        "connections" => format!("{v:.0}"),
        "ms" | "s" | "CPU-s/M rec" => format!("{} {unit}", significant(v)),
        _ => format!("{v} {unit}"),
    }
}

/// Three significant digits, no exponent.
fn significant(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else if v >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

/// `YYYY-MM-DDTHH:MM:SSZ` of a Unix time.
pub fn utc(seconds: u64) -> String {
    let days = (seconds / 86_400) as i64;
    let rem = seconds % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

pub fn write_json(path: &Path, document: &Value) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut text = serde_json::to_string_pretty(document).map_err(std::io::Error::other)?;
    text.push('\n');
    std::fs::write(path, text)
}
