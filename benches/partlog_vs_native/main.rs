//! `make bench`: partlog against RabbitMQ's native stream client
//! (rabbitmq-stream-client) doing the same work, in one run, on fresh super
//! streams of the same shape, on the same broker. Every line reports
//! partlog's value, the native value and their ratio (medians over rounds
//! that alternate the two); the JSON report holds every round's raw
//! numbers, the parameters and the machine.
//!
//! Layout: `setup` (broker, partlog process, streams), `procfs` (CPU, memory
//! and connections of processes), `records` (the data both sides publish),
//! `publish` (publishing paths and their driver), `consume` (consuming
//! paths), `group` (consumer group members), `pipeline` (consume →
//! publish → commit), `tally` (checking what was consumed), `bench`
//! (rounds, warm-up, metering), `lines/` (what each line
//! measures and compares), `stats` and `report` (medians, table, JSON).

mod bench;
mod consume;
mod group;
mod lines;
mod options;
mod pipeline;
mod procfs;
mod publish;
mod records;
mod report;
mod setup;
mod stats;
mod tally;

use std::process::ExitCode;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use serde_json::json;

use bench::Bench;
use options::Options;
use setup::{Broker, Partlog, Result, Streams};

fn main() -> ExitCode {
    let options = Options::parse();
    if !options.bench {
        // `cargo test --all-targets` builds and runs benches without
        // `--bench`; the benchmark takes minutes, so it only runs from
        // `cargo bench` (make bench).
        println!("partlog_vs_native: run it with `make bench` (cargo bench)");
        return ExitCode::SUCCESS;
    }
    if let Err(e) = options.check() {
        eprintln!("partlog_vs_native: {e}");
        return ExitCode::from(2);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match runtime.block_on(run(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("partlog_vs_native failed: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(options: Options) -> Result<()> {
    let started = Instant::now();
    let started_at = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let broker = Broker::connect(options.broker.as_deref()).await?;
    let partlog = match &options.partlog {
        Some(url) => {
            let metrics = options.partlog_metrics.clone();
            Partlog::existing(url, options.partlog_pid, metrics).await?
        }
        None => Partlog::start(&broker, options.routing_lease_ms).await?,
    };
    let environment = broker.environment().await?;
    let streams = Streams::new(partlog.client().await?);
    let bench = Bench::new(options, broker, partlog, environment, streams);
    println!(
        "partlog {} (pid {}), RabbitMQ {} at {}:{} (pid {}), {} cores",
        bench.partlog.url,
        bench
            .partlog
            .pid
            .map_or("unknown".into(), |p| p.to_string()),
        bench.broker.version,
        bench.broker.host,
        bench.broker.port,
        bench
            .broker
            .pid()
            .map_or("unknown".into(), |p| p.to_string()),
        cores(),
    );

    let outcome = tokio::select! {
        outcome = lines::run_all(&bench) => outcome,
        () = interrupted() => Err("interrupted".into()),
    };
    let left_over = bench.streams.delete_left_over().await;
    if !left_over.is_empty() {
        bench
            .streams
            .incidents
            .lock()
            .unwrap()
            .push(format!("streams that could not be deleted: {left_over:?}"));
    }
    let partlog_hwm = bench
        .partlog
        .pid
        .and_then(|pid| procfs::status_kib(pid, "VmHWM"));
    let warnings = bench.partlog.warnings();

    let mut report = bench.report.lock().unwrap();
    lines::summary_notes(&bench, &mut report, partlog_hwm);
    report
        .notes
        .extend(bench.streams.incidents.lock().unwrap().iter().cloned());
    if let Err(e) = &outcome {
        report.notes.push(format!("the run stopped early: {e}"));
    }
    let table = report.table();
    let resources = report.resources_table();
    println!("\n{table}\n{resources}");
    for note in &report.notes {
        println!("- {note}");
    }
    if !warnings.is_empty() {
        println!(
            "partlog logged {} warnings or errors; the first ones:",
            warnings.len()
        );
        for w in warnings.iter().take(10) {
            println!("  {w}");
        }
    }

    let header = json!({
        "started_at": report::utc(started_at),
        "duration_s": started.elapsed().as_secs_f64(),
        "parameters": bench.options,
        "machine": {
            "cores": cores(),
            "kernel": uname_r(),
            "rabbitmq_version": bench.broker.version,
        },
        "broker": {
            "address": format!("{}:{}", bench.broker.host, bench.broker.port),
            "pid_known": bench.broker.pid().is_some(),
        },
        "partlog": {
            "url": bench.partlog.url,
            "started_by_bench": bench.options.partlog.is_none(),
            "pid_known": bench.partlog.pid.is_some(),
            "peak_rss_kib": partlog_hwm,
            "warnings": warnings.len(),
            "first_warnings": warnings.iter().take(20).collect::<Vec<_>>(),
        },
        "table": table,
        "resources_table": resources,
    });
    let path = bench.options.json_out.clone().unwrap_or_else(|| {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("bench/results")
            .join(format!("{}.json", report::utc(started_at).replace(':', "")))
    });
    report::write_json(&path, &report.json(header))?;
    println!(
        "JSON: {} ({:.0} s in all)",
        path.display(),
        started.elapsed().as_secs_f64()
    );
    if let Some(log) = bench.partlog.keep_log(&path.with_extension("partlog.log")) {
        println!("partlog's log: {}", log.display());
    }
    outcome
}

/// SIGINT or SIGTERM: the run stops, reports what it measured, deletes its
/// streams and stops partlog.
async fn interrupted() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        },
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(0, |n| n.get())
}

fn uname_r() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}
