//! Counters of the hub as a whole, and the Prometheus text exposition of everything
//! (`GET /metrics`, text format 0.0.4). No personal data: only channel ids and counts.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clm_contracts::ChannelId;
use tokio::time::Instant;

use crate::state::Shared;
use crate::store::{ChannelDepth, Store};

#[derive(Debug, Default)]
pub struct Metrics {
    pub intake_accepted: AtomicU64,
    pub intake_duplicate: AtomicU64,
    pub intake_rejected: AtomicU64,
    pub ingest_recorded: AtomicU64,
    pub ingest_duplicate: AtomicU64,
    pub ingest_unknown: AtomicU64,
    pub ingest_malformed: AtomicU64,
    pub ingest_unauthorized: AtomicU64,
    pub events_published: Arc<AtomicU64>,
}

/// The queue depth per channel, as the store counted it last.
pub type Depths = Arc<Vec<(ChannelId, ChannelDepth)>>;

/// How old a depth count may be before a reader asks the store again. The count
/// (`Store::depth_by_channel`) scans every waiting row; scraping `/metrics` or `GET /v1/channels`
/// must not cost that per request.
pub const DEPTH_MAX_AGE: Duration = Duration::from_secs(5);

/// The last depth count, shared by `/metrics` and `GET /v1/channels`: at most one count every
/// [`DEPTH_MAX_AGE`], one at a time. Readers arriving while a count runs get the previous one
/// (or, before the first, wait for it).
#[derive(Default)]
pub struct DepthCache {
    last: Mutex<Option<(Instant, Depths)>>,
    /// Held while counting.
    counting: tokio::sync::Mutex<()>,
    /// Counts run (`clm_depth_refreshes_total`).
    refreshes: AtomicU64,
}

impl DepthCache {
    /// The depth per channel, at most [`DEPTH_MAX_AGE`] old (older only while the store does not
    /// answer and a previous count exists).
    pub async fn get(&self, store: &Store) -> crate::store::Result<Depths> {
        if let Some(d) = self.fresh() {
            return Ok(d);
        }
        let _counting = match self.counting.try_lock() {
            Ok(guard) => guard,
            Err(_) => {
                // Another reader is counting: what there is will do.
                if let Some((_, d)) = self.last.lock().expect("depth lock").as_ref() {
                    return Ok(Arc::clone(d));
                }
                self.counting.lock().await
            }
        };
        // It may have been counted while this reader waited.
        if let Some(d) = self.fresh() {
            return Ok(d);
        }
        self.refreshes.fetch_add(1, Ordering::Relaxed);
        let depths: Depths = Arc::new(store.depth_by_channel().await?);
        *self.last.lock().expect("depth lock") = Some((Instant::now(), Arc::clone(&depths)));
        Ok(depths)
    }

    fn fresh(&self) -> Option<Depths> {
        match self.last.lock().expect("depth lock").as_ref() {
            Some((at, d)) if at.elapsed() < DEPTH_MAX_AGE => Some(Arc::clone(d)),
            _ => None,
        }
    }

    /// Counts run so far.
    pub fn refreshes(&self) -> u64 {
        self.refreshes.load(Ordering::Relaxed)
    }
}

/// A counter's HELP, TYPE and one line per `(labels, value)` (labels as `{k="v"}`, or empty).
pub fn counter<L: AsRef<str>>(out: &mut String, name: &str, help: &str, rows: &[(L, u64)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    for (labels, v) in rows {
        let _ = writeln!(out, "{name}{} {v}", labels.as_ref());
    }
}

/// A gauge without labels.
pub fn gauge(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
    );
}

pub fn render(shared: &Shared, depth: &[(ChannelId, ChannelDepth)]) -> String {
    let m = &shared.metrics;
    let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let mut s = String::with_capacity(4096);
    counter(
        &mut s,
        "clm_intake_total",
        "Submitted communications by outcome.",
        &[
            ("{outcome=\"accepted\"}", g(&m.intake_accepted)),
            ("{outcome=\"duplicate\"}", g(&m.intake_duplicate)),
            ("{outcome=\"rejected\"}", g(&m.intake_rejected)),
        ],
    );
    counter(
        &mut s,
        "clm_ingest_total",
        "Channel responses received, by outcome.",
        &[
            ("{outcome=\"recorded\"}", g(&m.ingest_recorded)),
            ("{outcome=\"duplicate\"}", g(&m.ingest_duplicate)),
            ("{outcome=\"unknown_communication\"}", g(&m.ingest_unknown)),
            ("{outcome=\"malformed\"}", g(&m.ingest_malformed)),
            ("{outcome=\"unauthorized\"}", g(&m.ingest_unauthorized)),
        ],
    );
    for plugin in &shared.plugins {
        plugin.metrics(shared, &mut s);
    }
    counter(
        &mut s,
        "clm_events_published_total",
        "Events handed on from the outbox.",
        &[("", g(&m.events_published))],
    );
    let mut outcomes = Vec::new();
    let mut attempts = Vec::new();
    let mut attempt_ms = Vec::new();
    let mut throttled = Vec::new();
    let mut opened = Vec::new();
    for (id, ch) in &shared.channels {
        let c = &ch.counters;
        for (k, a) in [
            ("sent", &c.sent),
            ("retried", &c.retried),
            ("failed", &c.failed),
            ("unknown", &c.unknown),
            ("expired", &c.expired),
            ("cancelled", &c.cancelled),
            ("reconciled", &c.reconciled),
        ] {
            outcomes.push((format!("{{channel=\"{id}\",outcome=\"{k}\"}}"), g(a)));
        }
        attempts.push((format!("{{channel=\"{id}\"}}"), g(&c.attempts)));
        attempt_ms.push((format!("{{channel=\"{id}\"}}"), g(&c.attempt_ms_sum)));
        throttled.push((format!("{{channel=\"{id}\"}}"), g(&c.throttled)));
        opened.push((format!("{{channel=\"{id}\"}}"), g(&c.breaker_opened)));
    }
    counter(
        &mut s,
        "clm_dispatch_outcomes_total",
        "Handled communications by outcome.",
        &outcomes,
    );
    counter(&mut s, "clm_attempts_total", "Attempts made.", &attempts);
    counter(
        &mut s,
        "clm_attempt_duration_ms_total",
        "Sum of attempt durations in milliseconds.",
        &attempt_ms,
    );
    counter(
        &mut s,
        "clm_throttled_total",
        "Throttling answers (429) received.",
        &throttled,
    );
    counter(
        &mut s,
        "clm_breaker_opened_total",
        "Times the circuit breaker opened.",
        &opened,
    );

    let _ = writeln!(
        s,
        "# HELP clm_in_flight Attempts in flight.\n# TYPE clm_in_flight gauge"
    );
    for (id, ch) in &shared.channels {
        let _ = writeln!(s, "clm_in_flight{{channel=\"{id}\"}} {}", g(&ch.in_flight));
    }
    let _ = writeln!(
        s,
        "# HELP clm_channel_paused 1 when the channel is paused.\n# TYPE clm_channel_paused gauge"
    );
    for (id, ch) in &shared.channels {
        let _ = writeln!(
            s,
            "clm_channel_paused{{channel=\"{id}\"}} {}",
            u8::from(ch.is_paused())
        );
    }
    let _ = writeln!(
        s,
        "# HELP clm_rate_limit_degraded 1 while the shared (Redis) rate limit is unreachable and the local share applies.\n# TYPE clm_rate_limit_degraded gauge"
    );
    for (id, ch) in &shared.channels {
        let _ = writeln!(
            s,
            "clm_rate_limit_degraded{{channel=\"{id}\"}} {}",
            u8::from(ch.limiter.degraded())
        );
    }
    let _ = writeln!(
        s,
        "# HELP clm_rate_limit_round_trips_total Round trips to the shared rate limit.\n# TYPE clm_rate_limit_round_trips_total counter"
    );
    for (id, ch) in &shared.channels {
        let _ = writeln!(
            s,
            "clm_rate_limit_round_trips_total{{channel=\"{id}\"}} {}",
            ch.limiter.round_trips()
        );
    }
    let _ = writeln!(
        s,
        "# HELP clm_queue_depth Communications waiting in the store (counted at most every {} s: up to that much behind).\n# TYPE clm_queue_depth gauge",
        DEPTH_MAX_AGE.as_secs()
    );
    for (id, d) in depth {
        let _ = writeln!(s, "clm_queue_depth{{channel=\"{id}\"}} {}", d.pending);
    }
    let _ = writeln!(
        s,
        "# HELP clm_depth_refreshes_total Times the queue depth was counted in the store.\n# TYPE clm_depth_refreshes_total counter\nclm_depth_refreshes_total {}",
        shared.depth.refreshes()
    );
    s
}
