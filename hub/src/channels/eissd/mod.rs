//! EISSD (`eissd`): its settings ([`config`]), where its responses are read from, and its
//! plug-in: the DWH poller ([`dwh`], a singleton job) and its metrics. It sends through the HTTP
//! JSON connector ([`super::json_http::connector`]) and has no ingest route.

pub mod config;
pub mod dwh;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use clm_contracts::ChannelId;
use futures_util::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use super::{Build, Built, Family, Job, Mocks, Plugin};
use crate::config::Config;
use crate::metrics::{counter, gauge};
use crate::state::Shared;

/// The EISSD family.
pub static FAMILY: Family = Family::new("eissd", &[ChannelId::Eissd], start_mocks, build);

fn start_mocks<'a>(m: &'a mut Mocks<'_>) -> BoxFuture<'a, anyhow::Result<()>> {
    Box::pin(async move {
        let (config, public_url, sandbox) = m.parts();
        super::json_http::start_mock(config, public_url, ChannelId::Eissd, sandbox).await
    })
}

fn build(b: &Build<'_>) -> anyhow::Result<Built> {
    let enabled = b.config.channel(ChannelId::Eissd).is_enabled();
    let mut connectors = Vec::new();
    let mut source = None;
    if enabled {
        let mock = b.sandbox.and_then(|s| s.mock(ChannelId::Eissd));
        connectors.push((
            ChannelId::Eissd,
            super::json_http::connector(b.config, ChannelId::Eissd, mock)?,
        ));
        // Opened (lazily: an unreachable DWH is retried by the poller) before any task
        // starts, so a bad source fails start-up with nothing left running.
        if let Some(url) = source_url(b.config) {
            source = Some(dwh::Source::open(&url).with_context(|| {
                format!(
                    "channels.eissd.responses.source: cannot use {}",
                    crate::app::redact_url(&url)
                )
            })?);
        }
    }
    Ok(Built {
        plugin: Arc::new(EissdPlugin {
            enabled,
            source: Mutex::new(source),
            counters: Arc::default(),
        }),
        connectors,
    })
}

/// The EISSD hooks: the DWH poller and its counters.
pub struct EissdPlugin {
    enabled: bool,
    /// Taken by the poller when it starts.
    source: Mutex<Option<dwh::Source>>,
    counters: Arc<dwh::Counters>,
}

impl Plugin for EissdPlugin {
    fn jobs(self: Arc<Self>, shared: &Arc<Shared>, shutdown: &CancellationToken) -> Vec<Job> {
        let Some(source) = self.source.lock().expect("source lock").take() else {
            return Vec::new();
        };
        let cfg = shared
            .config
            .channels
            .eissd
            .responses
            .clone()
            .unwrap_or_default();
        vec![Job {
            name: dwh::JOB.to_owned(),
            task: tokio::spawn(dwh::run(
                Arc::clone(shared),
                source,
                cfg,
                Arc::clone(&self.counters),
                shutdown.clone(),
            )),
        }]
    }

    fn metrics(&self, _shared: &Shared, out: &mut String) {
        if !self.enabled {
            return;
        }
        let m = &self.counters;
        let g = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        counter(
            out,
            "clm_dwh_rows_total",
            "EISSD response rows read from the DWH table, by outcome.",
            &[
                ("{outcome=\"recorded\"}", g(&m.recorded)),
                ("{outcome=\"duplicate\"}", g(&m.duplicate)),
                ("{outcome=\"unknown_communication\"}", g(&m.unknown)),
                ("{outcome=\"malformed\"}", g(&m.malformed)),
            ],
        );
        for (name, help, value) in [
            (
                "clm_dwh_polls_total",
                "Polls of the EISSD DWH table.",
                &m.polls,
            ),
            (
                "clm_dwh_late_rows_total",
                "EISSD rows found behind the watermark by the rescan (visible later than settle_ms).",
                &m.late,
            ),
            (
                "clm_dwh_errors_total",
                "Failed polls of the EISSD DWH table (source or store unavailable).",
                &m.errors,
            ),
        ] {
            counter(out, name, help, &[("", g(value))]);
        }
        gauge(
            out,
            "clm_dwh_watermark_lag_ms",
            "How far the EISSD poller's persisted watermark is behind now.",
            g(&m.lag_ms),
        );
    }
}

/// The DWH table the bundled mock of `id` writes its responses to (EISSD in sandbox mode).
pub(crate) fn sandbox_source(config: &Config, id: ChannelId) -> Option<String> {
    (id == ChannelId::Eissd)
        .then(|| source_url(config))
        .flatten()
}

/// Where EISSD's responses are read from: the configured source, or in sandbox mode the SQLite
/// file the bundled EISSD mock writes.
pub fn source_url(config: &Config) -> Option<String> {
    if config.sandbox {
        return Some(format!(
            "sqlite://{}",
            config.data_dir.join("eissd-dwh.db").display()
        ));
    }
    config
        .channels
        .eissd
        .responses
        .as_ref()
        .and_then(|r| r.source.clone())
}
