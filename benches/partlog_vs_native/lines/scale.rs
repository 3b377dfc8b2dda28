//! Connection scale: one subscriber per group on every partition of a
//! many-partition stream; the time until the broker made every partition
//! active for every group, and the broker connections that took — partlog's
//! against the native consumers'.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Map};
use tokio::sync::{watch, Notify};

use super::{prefill, with_fresh_stream};
use crate::bench::{Bench, Measured, Round, Variant};
use crate::group::{GroupImpl, GroupMember, MemberEvent};
use crate::options::Scale;
use crate::records::Dataset;
use crate::report::{Metric, Unit};
use crate::setup::Result;

use GroupImpl::{NativeSingleActive, PartlogConsume};

const VARIANTS: [GroupImpl; 2] = [PartlogConsume, NativeSingleActive];

/// The shape of the unmeasured warm-up.
const WARMUP: Scale = Scale {
    partitions: 8,
    groups: 1,
};

/// Longest wait for every partition to become active.
const ACTIVATION_TIMEOUT: Duration = Duration::from_secs(300);

pub async fn connections(bench: &Bench) -> Result<()> {
    let o = &bench.options;
    let section = format!(
        "connection scale: {} partitions × {} groups, one subscriber per group on all partitions",
        o.scale.partitions, o.scale.groups
    );
    bench
        .rounds(&section, &VARIANTS, o.rounds, true, |variant, round| {
            let scale = match round {
                Round::Warmup => WARMUP,
                Round::Measured(_) => o.scale,
            };
            scale_once(bench, variant, scale)
        })
        .await?;
    let mut report = bench.report.lock().unwrap();
    let (partlog, native) = (PartlogConsume, NativeSingleActive);
    report.compare(
        &section,
        format!(
            "until all ACTIVE, {} vs {}",
            partlog.label(),
            native.label()
        ),
        partlog.id(),
        native.id(),
        Metric::Seconds,
    );
    report.compare(
        &section,
        format!(
            "broker connections of partlog / of the native client, {} vs {}",
            partlog.label(),
            native.label()
        ),
        partlog.id(),
        native.id(),
        Metric::Connections,
    );
    Ok(())
}

/// Activations seen, per (group, partition).
struct Activations {
    active: Mutex<HashSet<(u32, u32)>>,
    wanted: usize,
    all: Notify,
}

async fn scale_once(bench: &Bench, implementation: GroupImpl, scale: Scale) -> Result<Measured> {
    let dataset = Dataset::new(
        bench.options.keys,
        bench.options.base_value_size(),
        scale.partitions,
    );
    with_fresh_stream(bench, "scale", scale.partitions, |stream| async move {
        prefill(bench, &dataset, &stream, bench.options.scale_records).await?;
        let activations = Arc::new(Activations {
            active: Mutex::default(),
            wanted: (scale.partitions * scale.groups) as usize,
            all: Notify::new(),
        });
        let all_active = activations.all.notified();
        let meter = bench.meter().await;
        let started = tokio::time::Instant::now();
        let joins = (0..scale.groups).map(|g| {
            let group = format!("{stream}-g{g}");
            let stream = stream.clone();
            async move { implementation.join(bench, &stream, &group).await }
        });
        let members = futures::future::try_join_all(joins).await?;
        let (stop, stopped) = watch::channel(false);
        let watchers: Vec<_> = (0..scale.groups)
            .zip(members)
            .map(|(g, member)| {
                tokio::spawn(watch_member(
                    g,
                    member,
                    activations.clone(),
                    stopped.clone(),
                ))
            })
            .collect();
        let activated = tokio::time::timeout(ACTIVATION_TIMEOUT, all_active).await;
        let elapsed = started.elapsed();
        let resources = meter.finish().await;
        let _ = stop.send(true);
        for watcher in watchers {
            watcher.await?.close().await;
        }
        let seen = activations.active.lock().unwrap().len();
        if activated.is_err() {
            return Err(format!(
                "{seen} of {} partitions active after {ACTIVATION_TIMEOUT:?}",
                activations.wanted
            )
            .into());
        }
        let mut extra = Map::new();
        extra.insert("activations".into(), json!(activations.wanted));
        Ok(Measured {
            unit: Unit::Activations,
            records: activations.wanted as u64,
            elapsed,
            latency: None,
            service_latency: None,
            resources,
            extra,
        })
    })
    .await
}

/// Notes the member's activations (draining its records) until stopped or
/// its subscription ends; gives the member back for closing.
async fn watch_member(
    group: u32,
    mut member: Box<dyn GroupMember>,
    activations: Arc<Activations>,
    mut stopped: watch::Receiver<bool>,
) -> Box<dyn GroupMember> {
    loop {
        let event = tokio::select! {
            biased;
            _ = stopped.changed() => return member,
            event = member.next() => event,
        };
        match event {
            Ok(Some(MemberEvent::Active(partition))) => {
                let mut active = activations.active.lock().unwrap();
                active.insert((group, partition));
                if active.len() == activations.wanted {
                    activations.all.notify_waiters();
                }
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return member,
        }
    }
}
