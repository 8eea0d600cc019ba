//! The EISSD response poller: reads the DWH table `eissd_responses` incrementally and records each
//! row as a response of its communication.
//!
//! # How it stays exactly-once
//! - Rows are read in `(created_at, response_id)` order from a cursor, a page of `batch` rows at a
//!   time, and recorded through the store like every other response: the store correlates on
//!   `message_id` and deduplicates on `response_id`, so a row read twice is recorded once.
//! - The persisted watermark (`source_watermarks`, in the hub's own store) only moves past rows
//!   older than `settle_ms` by the source's clock. A row whose writer committed late (its
//!   `created_at` is the writer's transaction time, not the commit time) is therefore still ahead
//!   of the watermark when it becomes visible, and is read on a later poll instead of being
//!   skipped. Rows younger than the settle time are read again on every poll until they age out;
//!   the poller remembers which of them it recorded, so only a restart sends them to the store's
//!   deduplication again.
//! - One poller runs among all instances ([`crate::coordination::run_singleton`], on Redis when
//!   coordination is shared). Should two overlap for a moment (a lease lost mid-poll), the store's
//!   deduplication still records each row once.
//!
//! - Every `rescan_ms` the poller reads the `lookback_ms` behind the watermark again. A row that
//!   became visible later than `settle_ms` after its `created_at` (a long-running load, a writer
//!   whose clock lags) is recorded then, counted in `clm_dwh_late_rows_total` and logged: late, not
//!   lost. A steady count there means `settle_ms` is too short for this DWH.
//!
//! Rows that are not usable (an unknown `kind`, a `message_id` that is not a UUID) and rows for
//! communications this hub does not know are counted and skipped; they never stop the poller.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use clm_contracts::ChannelId;
use clm_contracts::channels::eissd::{self, ResponseRow, RowKind};
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{PgPool, SqlitePool};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::DwhConfig;
use crate::state::Shared;
use crate::store::{Correlation, IncomingResponse, ResponseOutcome};

/// The watermark's name in `source_watermarks`.
pub const WATERMARK: &str = "eissd.dwh";
/// The singleton job's name (Redis lock `lock:<name>`).
pub const JOB: &str = "eissd-dwh-poller";

/// What the poller counts (`clm_dwh_*` in `/metrics`).
#[derive(Debug, Default)]
pub struct Counters {
    pub polls: AtomicU64,
    pub recorded: AtomicU64,
    pub duplicate: AtomicU64,
    pub unknown: AtomicU64,
    pub malformed: AtomicU64,
    pub errors: AtomicU64,
    /// Rows found by the rescan behind the watermark: they became visible after `settle_ms`.
    pub late: AtomicU64,
    /// How far behind now the persisted watermark is.
    pub lag_ms: AtomicU64,
}

/// Position of a row in the table's order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor {
    pub created_at: DateTime<Utc>,
    pub response_id: String,
}

impl Cursor {
    /// Before every row (a DWH has nothing older than 1970, and every database can bind it).
    pub fn start() -> Cursor {
        Cursor {
            created_at: DateTime::<Utc>::UNIX_EPOCH,
            response_id: String::new(),
        }
    }

    fn of(row: &ResponseRow) -> Cursor {
        Cursor {
            created_at: row.created_at,
            response_id: row.response_id.clone(),
        }
    }

    /// How the cursor is kept in `source_watermarks.position`: RFC 3339 with microseconds.
    fn position(&self) -> String {
        self.created_at
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    }

    fn parse(position: &str, row_key: &str) -> Option<Cursor> {
        Some(Cursor {
            created_at: DateTime::parse_from_rfc3339(position)
                .ok()?
                .with_timezone(&Utc),
            response_id: row_key.to_owned(),
        })
    }
}

/// A row as read, before it is checked against the contract.
#[derive(Debug, sqlx::FromRow)]
struct RawRow {
    response_id: String,
    message_id: String,
    eissd_id: Option<String>,
    kind: String,
    created_at: DateTime<Utc>,
}

/// What a fetch returns: usable rows, and the cursor of every row read (usable or not).
struct Page {
    rows: Vec<Result<ResponseRow, (Cursor, String)>>,
}

impl RawRow {
    fn check(self) -> Result<ResponseRow, (Cursor, String)> {
        let cursor = Cursor {
            created_at: self.created_at,
            response_id: self.response_id.clone(),
        };
        let message_id = uuid::Uuid::from_str(self.message_id.trim())
            .map_err(|_| (cursor.clone(), "message_id is not a UUID".to_owned()))?;
        let kind: RowKind = serde_json::from_value(serde_json::Value::String(self.kind.clone()))
            .map_err(|_| (cursor.clone(), format!("unknown kind `{}`", self.kind)))?;
        Ok(ResponseRow {
            response_id: self.response_id,
            message_id,
            eissd_id: self.eissd_id.filter(|s| !s.is_empty()),
            kind,
            created_at: self.created_at,
        })
    }
}

/// The table's database: Greenplum / PostgreSQL, or the embedded default's SQLite file.
#[derive(Clone)]
pub enum Source {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

impl Source {
    /// Connects lazily: an unreachable DWH at start-up is retried by the poller, not fatal.
    pub fn open(url: &str) -> anyhow::Result<Source> {
        if let Some(rest) = url.strip_prefix("sqlite:") {
            let path = rest.trim_start_matches("//");
            if let Some(parent) = std::path::Path::new(path).parent()
                && !parent.as_os_str().is_empty()
            {
                std::fs::create_dir_all(parent)?;
            }
            // The mock (or whoever writes) may create the file after us: create it, and the
            // table, so the first polls find an empty table rather than an error.
            let opts = SqliteConnectOptions::from_str(&format!("sqlite://{path}"))?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .busy_timeout(Duration::from_secs(5));
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .connect_lazy_with(opts);
            Ok(Source::Sqlite(pool))
        } else {
            let pool = PgPoolOptions::new()
                .max_connections(2)
                .acquire_timeout(Duration::from_secs(10))
                .connect_lazy(url)?;
            Ok(Source::Postgres(pool))
        }
    }

    /// Creates the SQLite table when missing (the embedded default); PostgreSQL tables belong to
    /// the DWH and are never created by the hub.
    async fn prepare(&self) -> Result<(), sqlx::Error> {
        if let Source::Sqlite(pool) = self {
            sqlx::raw_sql(eissd::DDL_SQLITE).execute(pool).await?;
        }
        Ok(())
    }

    /// The source's clock: what `created_at` is compared with.
    async fn now(&self) -> Result<DateTime<Utc>, sqlx::Error> {
        match self {
            Source::Postgres(pool) => {
                let (now,): (DateTime<Utc>,) =
                    sqlx::query_as("SELECT now()").fetch_one(pool).await?;
                Ok(now)
            }
            Source::Sqlite(pool) => {
                let (now,): (String,) =
                    sqlx::query_as("SELECT strftime('%Y-%m-%dT%H:%M:%fZ', 'now')")
                        .fetch_one(pool)
                        .await?;
                parse_sqlite_time(&now)
                    .ok_or_else(|| sqlx::Error::Protocol(format!("bad SQLite time {now}")))
            }
        }
    }

    /// Up to `limit` rows after `after`, in order.
    async fn fetch(&self, after: &Cursor, limit: u32) -> Result<Page, sqlx::Error> {
        let raw: Vec<RawRow> = match self {
            Source::Postgres(pool) => sqlx::query_as(
                "SELECT response_id, message_id::text AS message_id, eissd_id, kind, created_at \
                     FROM eissd_responses \
                     WHERE (created_at, response_id) > ($1, $2) \
                     ORDER BY created_at, response_id LIMIT $3",
            )
            .bind(after.created_at)
            .bind(&after.response_id)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?,
            Source::Sqlite(pool) => {
                let rows: Vec<(String, String, Option<String>, String, String)> = sqlx::query_as(
                    "SELECT response_id, message_id, eissd_id, kind, created_at \
                     FROM eissd_responses \
                     WHERE created_at > ?1 OR (created_at = ?1 AND response_id > ?2) \
                     ORDER BY created_at, response_id LIMIT ?3",
                )
                .bind(sqlite_time(after.created_at))
                .bind(&after.response_id)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?;
                let mut out = Vec::with_capacity(rows.len());
                for (response_id, message_id, eissd_id, kind, created_at) in rows {
                    let created_at = parse_sqlite_time(&created_at).ok_or_else(|| {
                        sqlx::Error::Protocol(format!(
                            "eissd_responses.created_at of {response_id} is not in the format {}",
                            eissd::SQLITE_TIME_FORMAT
                        ))
                    })?;
                    out.push(RawRow {
                        response_id,
                        message_id,
                        eissd_id,
                        kind,
                        created_at,
                    });
                }
                out
            }
        };
        Ok(Page {
            rows: raw.into_iter().map(RawRow::check).collect(),
        })
    }

    pub async fn close(&self) {
        match self {
            Source::Postgres(p) => p.close().await,
            Source::Sqlite(p) => p.close().await,
        }
    }
}

fn sqlite_time(t: DateTime<Utc>) -> String {
    t.format(eissd::SQLITE_TIME_FORMAT).to_string()
}

fn parse_sqlite_time(s: &str) -> Option<DateTime<Utc>> {
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.fZ")
        .ok()
        .map(|n| n.and_utc())
}

/// The poller of one hub; [`run`] keeps it going on whichever instance holds the singleton lock.
pub struct Poller {
    shared: Arc<Shared>,
    counters: Arc<Counters>,
    source: Source,
    config: DwhConfig,
    /// Rows recorded that are still ahead of the persisted watermark (younger than the settle
    /// time), so re-reading them costs no store round trip.
    recent: HashMap<String, DateTime<Utc>>,
    /// When the lookback window was last read again.
    last_rescan: Option<std::time::Instant>,
}

/// Runs the poller until `shutdown`, as a singleton among the instances.
pub async fn run(
    shared: Arc<Shared>,
    source: Source,
    config: DwhConfig,
    counters: Arc<Counters>,
    shutdown: CancellationToken,
) {
    let coord = shared.coord.clone();
    let ttl = Duration::from_secs(15);
    run_singleton_poller(shared, source, config, counters, &coord, ttl, shutdown).await;
}

async fn run_singleton_poller(
    shared: Arc<Shared>,
    source: Source,
    config: DwhConfig,
    counters: Arc<Counters>,
    coord: &crate::coordination::Coordination,
    ttl: Duration,
    shutdown: CancellationToken,
) {
    let poller = Arc::new(tokio::sync::Mutex::new(Poller {
        shared,
        counters,
        source: source.clone(),
        config,
        recent: HashMap::new(),
        last_rescan: None,
    }));
    crate::coordination::run_singleton(coord, JOB, ttl, shutdown, |job| {
        let poller = Arc::clone(&poller);
        async move {
            let mut p = poller.lock().await;
            // A new term: what another instance did meanwhile is in the store, not in memory.
            p.recent.clear();
            info!(job = JOB, "polling the EISSD response table");
            p.poll_until(job).await;
        }
    })
    .await;
    source.close().await;
}

impl Poller {
    async fn poll_until(&mut self, stop: CancellationToken) {
        let idle = Duration::from_millis(self.config.poll_ms);
        let mut failures = 0_u32;
        let mut prepared = false;
        while !stop.is_cancelled() {
            if !prepared {
                match self.source.prepare().await {
                    Ok(()) => prepared = true,
                    Err(e) => {
                        warn!(error = %e, "EISSD response table not ready");
                    }
                }
            }
            let wait = match self.poll_once(&stop).await {
                Ok(full) => {
                    if failures > 0 {
                        info!("EISSD response polling recovered");
                    }
                    failures = 0;
                    // A full page means more is waiting: go on at once.
                    if full { Duration::ZERO } else { idle }
                }
                Err(e) => {
                    failures += 1;
                    self.counters.errors.fetch_add(1, Ordering::Relaxed);
                    if failures == 1 || failures.is_power_of_two() {
                        warn!(error = %e, failures, "EISSD response polling failed; retrying");
                    }
                    idle.max(Duration::from_millis(250)) * failures.min(10)
                }
            };
            if !wait.is_zero() {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }

    /// One poll: a rescan of the lookback window when it is due, then pages from the watermark
    /// until a short page, the watermark saved after every page. Returns whether the last page
    /// was full (stopped early by `stop`).
    pub async fn poll_once(&mut self, stop: &CancellationToken) -> anyhow::Result<bool> {
        let store = self.shared.store.clone();
        self.counters.polls.fetch_add(1, Ordering::Relaxed);
        let mut watermark = match store.watermark(WATERMARK).await? {
            Some((pos, key)) => Cursor::parse(&pos, &key).ok_or_else(|| {
                anyhow::anyhow!("source_watermarks.{WATERMARK} is unreadable: {pos}")
            })?,
            None => Cursor::start(),
        };
        if self.rescan_due() {
            self.rescan(&watermark, stop).await?;
        }
        // Rows at or before this instant are final: their writers have committed.
        let settled = self.source.now().await? - millis(self.config.settle_ms);
        let mut cursor = watermark.clone();
        let mut unknown = Unknown::default();
        let full = loop {
            let page = self.source.fetch(&cursor, self.config.batch).await?;
            let full = page.rows.len() == self.config.batch as usize;
            let mut to_record = Vec::new();
            let mut order = Vec::new();
            for row in page.rows {
                match row {
                    Ok(r) => {
                        order.push(Cursor::of(&r));
                        if !self.recent.contains_key(&r.response_id) {
                            to_record.push(r);
                        }
                    }
                    Err((c, why)) => {
                        // Counted once: while it is ahead of the watermark for the first time.
                        if !self.recent.contains_key(&c.response_id) {
                            self.counters.malformed.fetch_add(1, Ordering::Relaxed);
                            warn!(response_id = %c.response_id, reason = %why, "EISSD response row skipped");
                            self.recent.insert(c.response_id.clone(), c.created_at);
                        }
                        order.push(c);
                    }
                }
            }
            if let Some(last) = order.last() {
                cursor = last.clone();
            }
            if !to_record.is_empty() {
                self.record(&to_record, Pass::Live, &mut unknown).await?;
            }
            // The watermark moves over every settled row of this page, in order, and is saved
            // now: a failure on a later page costs no more than that page.
            let before = watermark.clone();
            for c in order {
                if c.created_at <= settled {
                    watermark = c;
                }
            }
            if watermark != before {
                store
                    .set_watermark(
                        WATERMARK,
                        &watermark.position(),
                        &watermark.response_id,
                        Utc::now(),
                    )
                    .await?;
            }
            if !full || stop.is_cancelled() {
                break full;
            }
        };
        unknown.report();
        // What the watermark now covers need not be remembered.
        self.recent.retain(|_, at| *at > watermark.created_at);
        self.counters.lag_ms.store(
            u64::try_from((Utc::now() - watermark.created_at).num_milliseconds()).unwrap_or(0),
            Ordering::Relaxed,
        );
        Ok(full)
    }

    fn rescan_due(&self) -> bool {
        self.config.rescan_ms > 0
            && self.config.lookback_ms > 0
            && self
                .last_rescan
                .is_none_or(|t| t.elapsed() >= Duration::from_millis(self.config.rescan_ms))
    }

    /// Reads the `lookback_ms` before the watermark again: rows that became visible after the
    /// watermark passed them (a writer's transaction open longer than `settle_ms`, a writer
    /// whose clock lags the DWH's) are recorded now and counted as late, instead of lost.
    async fn rescan(&mut self, watermark: &Cursor, stop: &CancellationToken) -> anyhow::Result<()> {
        self.last_rescan = Some(std::time::Instant::now());
        if *watermark == Cursor::start() {
            return Ok(());
        }
        let mut cursor = Cursor {
            created_at: watermark.created_at - millis(self.config.lookback_ms),
            response_id: String::new(),
        };
        let mut unknown = Unknown::default();
        loop {
            let page = self.source.fetch(&cursor, self.config.batch).await?;
            let full = page.rows.len() == self.config.batch as usize;
            let mut behind = Vec::new();
            let mut past = false;
            for row in page.rows {
                let c = match &row {
                    Ok(r) => Cursor::of(r),
                    Err((c, _)) => c.clone(),
                };
                // Rows after the watermark are the live pass's.
                if c.created_at > watermark.created_at {
                    past = true;
                    break;
                }
                cursor = c;
                if let Ok(r) = row
                    && !self.recent.contains_key(&r.response_id)
                {
                    behind.push(r);
                }
            }
            if !behind.is_empty() {
                self.record(&behind, Pass::Rescan, &mut unknown).await?;
            }
            if past || !full || stop.is_cancelled() {
                break;
            }
        }
        Ok(())
    }

    async fn record(
        &mut self,
        rows: &[ResponseRow],
        pass: Pass,
        unknown: &mut Unknown,
    ) -> anyhow::Result<()> {
        let items: Vec<IncomingResponse> = rows
            .iter()
            .map(|r| {
                let report = clm_connectors::json_http::row_report(r);
                IncomingResponse {
                    channel: ChannelId::Eissd,
                    correlation: Correlation::Id(r.message_id),
                    kind: report.kind,
                    occurred_at: report.occurred_at,
                    // A row cannot be refused back to the DWH: what the store cannot hold
                    // (U+0000) is replaced, and an overlong detail cut.
                    detail: report.detail.map(|d| {
                        clm_contracts::communication::sanitize(&d, crate::store::MAX_DETAIL_LEN)
                            .into_owned()
                    }),
                    dedupe_key: report.dedupe_key,
                    whole_message: true,
                }
            })
            .collect();
        let outcomes = self
            .shared
            .store
            .record_responses(&items, Utc::now())
            .await?;
        let m = &*self.counters;
        let mut recorded = 0_u64;
        for (row, outcome) in rows.iter().zip(outcomes) {
            match (outcome, pass) {
                (ResponseOutcome::Recorded, Pass::Live) => {
                    recorded += 1;
                    m.recorded.fetch_add(1, Ordering::Relaxed);
                }
                (ResponseOutcome::Recorded, Pass::Rescan) => {
                    recorded += 1;
                    m.recorded.fetch_add(1, Ordering::Relaxed);
                    m.late.fetch_add(1, Ordering::Relaxed);
                    warn!(response_id = %row.response_id, created_at = %row.created_at,
                        "EISSD response row became visible after the watermark passed it (raise settle_ms?); recorded late");
                }
                (ResponseOutcome::Duplicate, Pass::Live) => {
                    m.duplicate.fetch_add(1, Ordering::Relaxed);
                }
                // A rescan reads what was recorded already: that is its point, not news.
                (ResponseOutcome::Duplicate, Pass::Rescan) => {}
                (ResponseOutcome::NotFound, Pass::Live) => {
                    m.unknown.fetch_add(1, Ordering::Relaxed);
                    unknown.note(&row.response_id);
                }
                (ResponseOutcome::NotFound, Pass::Rescan) => {}
            }
            if pass == Pass::Live {
                self.recent.insert(row.response_id.clone(), row.created_at);
            }
        }
        if recorded > 0 {
            if let Some(ch) = self.shared.channels.get(&ChannelId::Eissd) {
                ch.counters.responses.fetch_add(recorded, Ordering::Relaxed);
            }
            self.shared.outbox_wake.notify_one();
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// Ahead of the watermark.
    Live,
    /// The lookback window behind it.
    Rescan,
}

/// Rows for communications this hub does not know, reported once per poll rather than per row.
#[derive(Default)]
struct Unknown {
    count: u64,
    first: Option<String>,
}

impl Unknown {
    fn note(&mut self, response_id: &str) {
        self.count += 1;
        self.first.get_or_insert_with(|| response_id.to_owned());
    }

    fn report(self) {
        if let Some(first) = self.first {
            warn!(count = self.count, first_response_id = %first,
                "EISSD response rows for communications this hub does not know; skipped");
        }
    }
}

fn millis(ms: u64) -> chrono::Duration {
    chrono::Duration::milliseconds(i64::try_from(ms).unwrap_or(i64::MAX / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_order_by_time_then_id_and_survive_the_store() {
        let t = DateTime::parse_from_rfc3339("2025-06-01T10:00:00.123456Z")
            .unwrap()
            .with_timezone(&Utc);
        let a = Cursor {
            created_at: t,
            response_id: "a".into(),
        };
        let b = Cursor {
            created_at: t,
            response_id: "b".into(),
        };
        assert!(a < b && Cursor::start() < a);
        assert_eq!(Cursor::parse(&a.position(), "a"), Some(a));
        assert_eq!(
            Cursor::parse(&Cursor::start().position(), ""),
            Some(Cursor::start())
        );
    }

    #[test]
    fn sqlite_times_sort_as_text_and_parse_back() {
        let t = DateTime::parse_from_rfc3339("2025-06-01T10:00:00.5Z")
            .unwrap()
            .with_timezone(&Utc);
        let s = sqlite_time(t);
        assert_eq!(s, "2025-06-01T10:00:00.500Z");
        assert_eq!(parse_sqlite_time(&s), Some(t));
        // SQLite's own strftime('%f') gives the same shape.
        assert_eq!(
            parse_sqlite_time("2025-06-01T10:00:00.500Z"),
            parse_sqlite_time(&s)
        );
        assert!(sqlite_time(Cursor::start().created_at) < s);
    }

    #[test]
    fn unusable_rows_say_why() {
        let raw = RawRow {
            response_id: "r1".into(),
            message_id: "nope".into(),
            eissd_id: None,
            kind: "accepted".into(),
            created_at: Utc::now(),
        };
        assert!(raw.check().unwrap_err().1.contains("message_id"));
        let raw = RawRow {
            response_id: "r1".into(),
            message_id: uuid::Uuid::new_v4().to_string(),
            eissd_id: Some(String::new()),
            kind: "maybe".into(),
            created_at: Utc::now(),
        };
        assert!(raw.check().unwrap_err().1.contains("maybe"));
    }
}
