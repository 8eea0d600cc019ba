//! The store: the source of truth for communications, attempts, responses and the outbox.
//!
//! Two backends, a closed set, so an enum: SQLite (the embedded default) and PostgreSQL. Both run
//! the same statements, written once in [`sql`] and instantiated per backend by a macro; where the
//! dialects differ (row locking, casts) the macro takes the difference as a parameter.
//!
//! Every write that changes a communication's state writes its event to the outbox in the same
//! transaction, so nothing is announced that was not stored and nothing stored goes unannounced.
//! Hot-path writes are batched: one transaction per batch of inserts, claims or outcomes.

mod sql;

pub use sql::normalize_address;

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use clm_contracts::api::CommunicationView;
use clm_contracts::{ChannelId, Classification, Communication, Event, ResponseKind, Status};
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};
use uuid::Uuid;

/// Store failures. Connection-level ones are worth retrying after a short pause.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("corrupt row {id}: {message}")]
    Corrupt { id: String, message: String },
    #[error("store url: {0}")]
    Url(String),
}

impl StoreError {
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Db(e) => {
                matches!(
                    e,
                    sqlx::Error::Io(_)
                        | sqlx::Error::PoolTimedOut
                        | sqlx::Error::PoolClosed
                        | sqlx::Error::Protocol(_)
                        | sqlx::Error::WorkerCrashed
                ) || e.as_database_error().is_some_and(|d| {
                    // PostgreSQL SQLSTATE classes (Appendix A): 08 connection exception,
                    // 40 transaction rollback (serialization, deadlock), 53 insufficient
                    // resources, 57 operator intervention (admin shutdown, starting up).
                    let pg = d
                        .code()
                        .is_some_and(|c| ["08", "40", "53", "57"].iter().any(|p| c.starts_with(p)));
                    // SQLite: SQLITE_BUSY / SQLITE_LOCKED.
                    pg || d.message().contains("locked") || d.message().contains("busy")
                })
            }
            _ => false,
        }
    }
}

impl StoreError {
    /// Whether the store refused the statement because of a value in it (a NUL byte, a value
    /// too long for an index, a constraint), so that the same statement without that item would
    /// succeed. Only these make a batch worth splitting: an outage or a misconfiguration (a
    /// database gone, a wrong password) fails every item alike and must fail the whole commit,
    /// never reject the items one by one.
    pub fn is_item_specific(&self) -> bool {
        match self {
            StoreError::Db(sqlx::Error::Encode(_)) => true,
            StoreError::Db(e) => e.as_database_error().is_some_and(|d| {
                let code = d.code();
                let code = code.as_deref().unwrap_or("");
                // PostgreSQL (Appendix A): 22 data exception (e.g. 22021 a NUL in text), 23
                // integrity constraint violation, 54 program limit exceeded (index row size).
                let pg = ["22", "23", "54"].iter().any(|p| code.starts_with(p)) && code.len() == 5;
                // SQLite: primary result codes 18 TOOBIG, 19 CONSTRAINT, 20 MISMATCH, 25 RANGE
                // (extended codes carry the primary one in their low byte).
                let sqlite = code.len() < 5
                    && code
                        .parse::<u32>()
                        .is_ok_and(|c| matches!(c & 0xff, 18 | 19 | 20 | 25));
                pg || sqlite
            }),
            _ => false,
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Milliseconds since the epoch: the store's time unit.
pub fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub fn from_ms(v: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(v).single().unwrap_or_default()
}

/// A validated communication, ready to store.
#[derive(Debug, Clone)]
pub struct NewCommunication {
    pub comm: Communication,
    /// SMS parts (1 elsewhere): how many delivery reports make it `delivered`.
    pub parts: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertOutcome {
    Accepted,
    Duplicate,
}

/// A communication claimed for sending by this instance.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub comm: Communication,
    /// Attempts made before this claim.
    pub attempts: u32,
    /// This claim's token (`<instance>:<batch>`): an outcome or a release counts only while the
    /// row still carries it, so a late answer to a claim that was reaped and claimed again (even
    /// by the same instance) changes nothing but the attempt log.
    pub claim: String,
    /// When this claim's lease runs out: after it the reaper may hand the communication to
    /// another claim, so nothing may be sent on this one unless the lease is renewed first.
    pub lease_until: DateTime<Utc>,
}

/// One attempt, as written to the attempt log.
#[derive(Debug, Clone)]
pub struct AttemptRow {
    pub number: u32,
    pub started_at: DateTime<Utc>,
    pub duration_ms: u64,
    pub classification: Classification,
    pub answer: String,
    pub reason: Option<String>,
    pub external_id: Option<String>,
}

/// The outcome of handling one claimed communication.
#[derive(Debug, Clone)]
pub struct Finish {
    pub id: Uuid,
    /// The claim this outcome belongs to ([`Claimed::claim`]).
    pub claim: String,
    pub campaign_id: String,
    pub channel: ChannelId,
    /// The attempt made, if one was (none for expired / cancelled before sending).
    pub attempt: Option<AttemptRow>,
    pub status: Status,
    pub reason: Option<String>,
    pub external_id: Option<String>,
    /// For `retry_wait` and `scheduled`: when it is due again.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Attempts made in total after this one.
    pub attempts: u32,
}

/// How an incoming response names its communication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Correlation {
    /// Our communication id (echoed by the channel).
    Id(Uuid),
    /// The channel's own message id, from the send answer.
    External(String),
}

/// A response received from a channel, before correlation.
#[derive(Debug, Clone)]
pub struct IncomingResponse {
    pub channel: ChannelId,
    pub correlation: Correlation,
    pub kind: ResponseKind,
    pub occurred_at: Option<DateTime<Utc>>,
    pub detail: Option<String>,
    /// Identifies this report among all reports of the communication: the same key twice is one
    /// response (a redelivered webhook).
    pub dedupe_key: String,
    /// The report speaks for the whole message (JSON gateways); otherwise it is one part's
    /// report and `delivered` waits for every part.
    pub whole_message: bool,
}

/// Longest channel message id, and longest report identity, a response may carry.
pub const MAX_REFERENCE_LEN: usize = 512;
/// Longest response detail kept; longer ones are cut (a detail is informative, not a key).
pub const MAX_DETAIL_LEN: usize = 2048;

impl IncomingResponse {
    /// A channel's parsed report, as the store takes it.
    pub fn from_report(channel: ChannelId, report: clm_connectors::Report) -> IncomingResponse {
        use clm_connectors::outcome::ReportRef;
        IncomingResponse {
            channel,
            correlation: match report.reference {
                ReportRef::Ours(id) => Correlation::Id(id),
                ReportRef::External(x) => Correlation::External(x),
            },
            kind: report.kind,
            occurred_at: report.occurred_at,
            detail: report.detail,
            dedupe_key: report.dedupe_key,
            whole_message: report.whole_message,
        }
    }

    /// What the store cannot hold, named by field, so the channel gets a 400 (or the SOAP caller
    /// a fault) for this one response and every other response still goes in. A detail is cut
    /// to [`MAX_DETAIL_LEN`]; keys are never cut (two reports would become one).
    pub fn check(&mut self) -> Result<(), clm_contracts::ValidationError> {
        use clm_contracts::communication::storable;
        if let Correlation::External(x) = &self.correlation {
            storable("message id", x, MAX_REFERENCE_LEN)?;
        }
        storable("report id", &self.dedupe_key, MAX_REFERENCE_LEN)?;
        if let Some(d) = &self.detail {
            storable("detail", d, usize::MAX)?;
            if d.len() > MAX_DETAIL_LEN {
                self.detail =
                    Some(clm_contracts::communication::sanitize(d, MAX_DETAIL_LEN).into_owned());
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseOutcome {
    Recorded,
    Duplicate,
    /// No communication matches the correlation.
    NotFound,
}

/// A communication left `unknown`, for the reconciler.
#[derive(Debug, Clone)]
pub struct UnknownRow {
    pub id: Uuid,
    pub campaign_id: String,
    pub attempts: u32,
    pub updated_at: DateTime<Utc>,
}

/// Outbox entry, in commit order.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub seq: i64,
    pub routing_key: String,
    pub payload: String,
}

/// The right to publish the outbox. On PostgreSQL a session advisory lock held on a dedicated
/// connection: one publisher among all instances, taken over when its session ends. On SQLite,
/// one process owns the file anyway.
pub enum OutboxLeader {
    Sole,
    /// Detached from the pool: dropping it closes the session, which releases the lock (a
    /// pooled connection would go back to the pool still holding it).
    Postgres(sqlx::PgConnection),
}

/// Advisory lock key of the outbox publisher ("clm-outbox").
const OUTBOX_LOCK_KEY: i64 = 0x636c_6d2d_6f75_7462;

impl OutboxLeader {
    /// Whether the lock's session is still alive (and so the lock still ours).
    pub async fn still_held(&mut self) -> bool {
        match self {
            OutboxLeader::Sole => true,
            OutboxLeader::Postgres(conn) => sqlx::query("SELECT 1").execute(conn).await.is_ok(),
        }
    }
}

/// What `Store::search` looks for: every filter given must match; newest first.
#[derive(Debug, Clone, Default)]
pub struct SearchQuery {
    pub campaign_id: Option<String>,
    pub customer_id: Option<String>,
    /// Typed in full; matched exactly after normalising (trim, lower case) through its key.
    pub recipient: Option<String>,
    pub channel: Option<ChannelId>,
    pub status: Option<Status>,
    /// Received at or after.
    pub from: Option<DateTime<Utc>>,
    /// Received before.
    pub to: Option<DateTime<Utc>>,
    /// Keyset: only rows before this `(received_at, id)` in the order.
    pub before: Option<(DateTime<Utc>, Uuid)>,
    pub limit: u32,
}

/// A communication as a search lists it.
#[derive(Debug, Clone)]
pub struct SearchRow {
    pub id: Uuid,
    pub channel: ChannelId,
    pub campaign_id: String,
    pub customer_id: String,
    /// In clear: whoever shows it masks it.
    pub recipient: String,
    pub status: Status,
    pub reason: Option<String>,
    pub attempts: u32,
    pub parts: u32,
    pub received_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Waiting and in-flight counts per channel.
#[derive(Debug, Clone, Copy, Default)]
pub struct ChannelDepth {
    pub pending: u64,
    pub sending: u64,
}

/// The store backends.
#[derive(Clone)]
pub enum Store {
    /// One writer connection (SQLite serialises writers anyway; a pool of writers would only
    /// spin on the lock) and a small pool of readers, over a WAL database.
    Sqlite {
        write: SqlitePool,
        read: SqlitePool,
    },
    Postgres(PgPool),
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.backend())
    }
}

/// Calls the same method on whichever backend module this store is.
macro_rules! dispatch {
    ($self:ident, $f:ident ( $($arg:expr),* )) => {
        match $self {
            Store::Sqlite { write, read } => sql::sqlite::$f(write, read, $($arg),*).await,
            Store::Postgres(pool) => sql::postgres::$f(pool, pool, $($arg),*).await,
        }
    };
}

impl Store {
    /// Opens (creating if needed) and migrates the store at `url`.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Store> {
        if let Some(rest) = url.strip_prefix("sqlite:") {
            let path = rest.trim_start_matches("//");
            if path.is_empty() {
                return Err(StoreError::Url("sqlite: needs a file path".into()));
            }
            if path != ":memory:"
                && let Some(parent) = std::path::Path::new(path).parent()
                && !parent.as_os_str().is_empty()
            {
                std::fs::create_dir_all(parent).map_err(|e| {
                    StoreError::Url(format!("cannot create {}: {e}", parent.display()))
                })?;
            }
            // WAL with synchronous=NORMAL: a commit survives the hub being killed; only an OS
            // crash or power loss can lose the last commits (FULL would cost an fsync per commit).
            let opts = SqliteConnectOptions::from_str(&format!("sqlite://{path}"))?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10))
                .pragma("temp_store", "memory");
            // Page cache: 16 MiB for the writer, which touches the hot pages; 2 MiB per reader.
            // Memory stays flat however many communications wait: they wait on disk.
            let write = SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .connect_with(opts.clone().pragma("cache_size", "-16000"))
                .await?;
            sqlx::migrate!("migrations/sqlite").run(&write).await?;
            let read = SqlitePoolOptions::new()
                .max_connections(4)
                .connect_with(opts.read_only(true).pragma("cache_size", "-2000"))
                .await?;
            Ok(Store::Sqlite { write, read })
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = PgPoolOptions::new()
                .max_connections(max_connections.max(2))
                .acquire_timeout(Duration::from_secs(10))
                .connect(url)
                .await?;
            sqlx::migrate!("migrations/postgres").run(&pool).await?;
            Ok(Store::Postgres(pool))
        } else {
            Err(StoreError::Url(
                "must start with sqlite: or postgres://".into(),
            ))
        }
    }

    pub fn backend(&self) -> &'static str {
        match self {
            Store::Sqlite { .. } => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }

    pub async fn close(&self) {
        match self {
            Store::Sqlite { write, read } => {
                read.close().await;
                write.close().await;
            }
            Store::Postgres(pool) => pool.close().await,
        }
    }

    /// Takes the outbox publishing lock if no other instance holds it.
    pub async fn try_outbox_leadership(&self) -> Result<Option<OutboxLeader>> {
        match self {
            Store::Sqlite { .. } => Ok(Some(OutboxLeader::Sole)),
            Store::Postgres(pool) => {
                let mut conn = pool.acquire().await?;
                let (got,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock($1)")
                    .bind(OUTBOX_LOCK_KEY)
                    .fetch_one(&mut *conn)
                    .await?;
                Ok(got.then(|| OutboxLeader::Postgres(conn.detach())))
            }
        }
    }

    /// A cheap round trip, for `/readyz`.
    pub async fn ping(&self) -> Result<()> {
        dispatch!(self, ping())
    }

    /// Stores new communications, idempotently by id; one transaction for the whole batch.
    /// Accepted ones get their first status event in the outbox.
    pub async fn insert_batch(
        &self,
        items: &[NewCommunication],
        now: DateTime<Utc>,
    ) -> Result<Vec<InsertOutcome>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        dispatch!(self, insert_batch(items, now))
    }

    /// Records an invalid submission (with its id, when it had a readable one).
    pub async fn record_rejection(
        &self,
        item_id: Option<&str>,
        reason: &str,
        payload: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        dispatch!(self, record_rejection(item_id, reason, payload, now))
    }

    /// Claims up to `limit` due communications of `channel` for this instance until `lease`
    /// from now. Two instances never get the same communication while its lease runs
    /// (PostgreSQL: `FOR UPDATE SKIP LOCKED`; SQLite: one writer).
    pub async fn claim_due(
        &self,
        channel: ChannelId,
        instance: &str,
        limit: u32,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<Vec<Claimed>> {
        dispatch!(self, claim_due(channel, instance, limit, lease, now))
    }

    /// Extends the lease of every communication still held by `claim` to `until`; returns
    /// those (the others were finished, given back, or reaped: no longer this claim's).
    pub async fn renew_claim(
        &self,
        claim: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<std::collections::HashSet<Uuid>> {
        dispatch!(self, renew_claim(claim, until, now))
    }

    /// Writes outcomes, attempts and their events in one transaction. Returns the ids whose
    /// claim was still ours (an outcome for a claim taken over by another instance changes
    /// nothing but the attempt log).
    pub async fn finish_batch(&self, items: &[Finish], now: DateTime<Utc>) -> Result<Vec<Uuid>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        dispatch!(self, finish_batch(items, false, now))
    }

    /// Settles communications still `unknown` (a later reconciliation): like
    /// [`Store::finish_batch`], but for `unknown` rows instead of claims; the rest are left alone.
    pub async fn settle_unknown(&self, items: &[Finish], now: DateTime<Utc>) -> Result<Vec<Uuid>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        dispatch!(self, finish_batch(items, true, now))
    }

    /// Communications of `channel` that have been `unknown` since before `before`, oldest
    /// first, after the keyset position `after` (`updated_at`, id) when given: a caller walks
    /// through all of them page by page instead of asking about the oldest page for ever.
    pub async fn unknown_before(
        &self,
        channel: ChannelId,
        before: DateTime<Utc>,
        after: Option<(DateTime<Utc>, Uuid)>,
        limit: u32,
    ) -> Result<Vec<UnknownRow>> {
        dispatch!(self, unknown_before(channel, before, after, limit))
    }

    /// Gives claimed, unsent communications back, due at `due` (window closed, channel
    /// throttled or shutting down). No attempt is recorded.
    pub async fn release(
        &self,
        items: &[(Claimed, String)],
        due: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        dispatch!(self, release(items, due, now))
    }

    /// Claims whose lease ran out (their instance died) go back to `retry_wait`, due now.
    pub async fn reap_expired_claims(&self, now: DateTime<Utc>) -> Result<u64> {
        dispatch!(self, reap_expired_claims(now))
    }

    /// Correlates, deduplicates and records responses, advancing statuses; one transaction.
    pub async fn record_responses(
        &self,
        items: &[IncomingResponse],
        now: DateTime<Utc>,
    ) -> Result<Vec<ResponseOutcome>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        dispatch!(self, record_responses(items, now))
    }

    /// Cancels a campaign: remembers it and moves its pending communications to `cancelled`.
    pub async fn cancel_campaign(&self, campaign_id: &str, now: DateTime<Utc>) -> Result<u64> {
        dispatch!(self, cancel_campaign(campaign_id, now))
    }

    /// Adds an address to the suppression list (lower-cased; the first reason stays).
    pub async fn suppress(
        &self,
        address: &str,
        reason: &str,
        communication: Option<Uuid>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        dispatch!(self, suppress(address, reason, communication, now))
    }

    /// Which of `addresses` (compared lower-cased) are suppressed; returned lower-cased.
    pub async fn suppressed_among(
        &self,
        addresses: &[String],
    ) -> Result<std::collections::HashSet<String>> {
        if addresses.is_empty() {
            return Ok(Default::default());
        }
        dispatch!(self, suppressed_among(addresses))
    }

    /// Communications matching `q`, newest first (`received_at`, then id), at most `q.limit`.
    pub async fn search(&self, q: &SearchQuery) -> Result<Vec<SearchRow>> {
        dispatch!(self, search(q))
    }

    /// The plan the database makes for `search(q)` (tests check it uses an index; operators may
    /// look too).
    pub async fn explain_search(&self, q: &SearchQuery) -> Result<String> {
        dispatch!(self, explain_search(q))
    }

    /// The channel and recipient of a communication.
    pub async fn recipient_of(&self, id: Uuid) -> Result<Option<(ChannelId, String)>> {
        dispatch!(self, recipient_of(id))
    }

    /// Where the incremental poller of `source` stands: `(position, row_key)` of the last row
    /// at or before which everything was recorded.
    pub async fn watermark(&self, source: &str) -> Result<Option<(String, String)>> {
        dispatch!(self, watermark(source))
    }

    /// Moves the watermark of `source`.
    pub async fn set_watermark(
        &self,
        source: &str,
        position: &str,
        row_key: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        dispatch!(self, set_watermark(source, position, row_key, now))
    }

    /// Pending communications whose `expires_at` has passed become `expired` (up to a few
    /// thousand a call), whether or not their channel is claiming: a paused channel's expired
    /// communications do not wait for the resume to be seen as expired.
    pub async fn expire_pending(&self, now: DateTime<Utc>) -> Result<u64> {
        dispatch!(self, expire_pending(now))
    }

    /// Campaigns cancelled at or after `since`.
    pub async fn cancelled_since(&self, since: DateTime<Utc>) -> Result<Vec<String>> {
        dispatch!(self, cancelled_since(since))
    }

    pub async fn cancelled_campaigns(&self) -> Result<Vec<String>> {
        dispatch!(self, cancelled_campaigns())
    }

    pub async fn set_paused(
        &self,
        channel: ChannelId,
        paused: bool,
        now: DateTime<Utc>,
    ) -> Result<()> {
        dispatch!(self, set_paused(channel, paused, now))
    }

    pub async fn paused_channels(&self) -> Result<Vec<ChannelId>> {
        dispatch!(self, paused_channels())
    }

    /// Status, attempts and responses of one communication; a rejected submission is shown as
    /// `rejected` with its reason.
    pub async fn view(&self, id: Uuid) -> Result<Option<CommunicationView>> {
        dispatch!(self, view(id))
    }

    pub async fn depth_by_channel(&self) -> Result<Vec<(ChannelId, ChannelDepth)>> {
        dispatch!(self, depth_by_channel())
    }

    /// The oldest unpublished events, in commit order.
    pub async fn outbox_fetch(&self, limit: u32) -> Result<Vec<OutboxRow>> {
        dispatch!(self, outbox_fetch(limit))
    }

    /// Removes published events.
    pub async fn outbox_delete(&self, seqs: &[i64]) -> Result<()> {
        if seqs.is_empty() {
            return Ok(());
        }
        dispatch!(self, outbox_delete(seqs))
    }

    /// Communications by status, for one campaign (tests and operators).
    pub async fn count_by_status(&self, campaign_id: Option<&str>) -> Result<Vec<(Status, u64)>> {
        dispatch!(self, count_by_status(campaign_id))
    }
}

/// Serialises an event for the outbox.
pub(crate) fn event_row(event: &Event) -> (String, String) {
    (
        event.routing_key(),
        serde_json::to_string(event).expect("events serialize"),
    )
}

pub(crate) fn parse_channel(id: &str, v: &str) -> Result<ChannelId> {
    v.parse().map_err(|_| StoreError::Corrupt {
        id: id.to_owned(),
        message: format!("channel {v:?}"),
    })
}

pub(crate) fn parse_status(id: &str, v: &str) -> Result<Status> {
    v.parse().map_err(|_| StoreError::Corrupt {
        id: id.to_owned(),
        message: format!("status {v:?}"),
    })
}
