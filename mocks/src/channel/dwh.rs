//! The EISSD DWH the eissd mock writes its responses to: the contract's table `eissd_responses`
//! in SQLite (`eissd::DDL_SQLITE`, the embedded default, which the hub reads from the same file)
//! or PostgreSQL / Greenplum (`eissd::DDL`). Runtime queries with binds, no macros.

use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::Utc;
use clm_contracts::channels::eissd;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use tokio::sync::OnceCell;
use uuid::Uuid;

/// How long a SQLite writer waits for the hub's reader (and vice versa) before `SQLITE_BUSY`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long opening a PostgreSQL DWH may take at start before the mock goes on without it (the
/// table is then created with the first row).
const PG_START_TIMEOUT: Duration = Duration::from_secs(5);

/// One row to write; `created_at` is set on insert.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub(crate) response_id: String,
    pub(crate) message_id: Uuid,
    pub(crate) eissd_id: Option<String>,
    /// The contract's spelling (`interested`, …).
    pub(crate) kind: &'static str,
}

pub(crate) struct Dwh {
    pool: Pool,
    /// Set once the table is known to exist.
    ready: OnceCell<()>,
}

enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl Dwh {
    /// `sqlite://PATH` (the file, its directory and the table are created now; an error if that
    /// fails) or `postgres://…` (connected lazily; the table is created now if the database
    /// answers, otherwise with the first row).
    pub(crate) async fn open(url: &str) -> anyhow::Result<Dwh> {
        if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)
                .with_context(|| format!("eissd DWH: bad SQLite URL {url}"))?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(BUSY_TIMEOUT);
            if let Some(dir) = options.get_filename().parent()
                && !dir.as_os_str().is_empty()
            {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("eissd DWH: creating {}", dir.display()))?;
            }
            let pool = SqlitePoolOptions::new()
                .max_connections(2)
                .connect_with(options)
                .await
                .with_context(|| format!("eissd DWH: opening {url}"))?;
            let dwh = Dwh {
                pool: Pool::Sqlite(pool),
                ready: OnceCell::new(),
            };
            dwh.ensure_table()
                .await
                .with_context(|| format!("eissd DWH: creating the table in {url}"))?;
            Ok(dwh)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = PgPoolOptions::new()
                .max_connections(4)
                .acquire_timeout(Duration::from_secs(5))
                .connect_lazy(url)
                .context("eissd DWH: bad PostgreSQL URL")?;
            let dwh = Dwh {
                pool: Pool::Postgres(pool),
                ready: OnceCell::new(),
            };
            match tokio::time::timeout(PG_START_TIMEOUT, dwh.ensure_table()).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    tracing::warn!(%error, "eissd DWH not ready yet; the table is created with the first row");
                }
                Err(_) => {
                    tracing::warn!(
                        "eissd DWH not answering yet; the table is created with the first row"
                    );
                }
            }
            Ok(dwh)
        } else {
            bail!("eissd DWH: expected sqlite://PATH or postgres://…, got {url}")
        }
    }

    /// Creates the table from the contract's DDL when it is missing.
    async fn ensure_table(&self) -> Result<(), sqlx::Error> {
        self.ready
            .get_or_try_init(|| async {
                match &self.pool {
                    Pool::Sqlite(pool) => {
                        sqlx::raw_sql(eissd::DDL_SQLITE).execute(pool).await?;
                    }
                    Pool::Postgres(pool) => {
                        if !pg_table_exists(pool).await? {
                            // Two mocks may race to create it; the loser finds it there.
                            if let Err(error) = sqlx::raw_sql(eissd::DDL).execute(pool).await
                                && !pg_table_exists(pool).await?
                            {
                                return Err(error);
                            }
                        }
                    }
                }
                Ok(())
            })
            .await
            .map(|_| ())
    }

    /// Inserts `row` with `created_at` now (SQLite: [`eissd::SQLITE_TIME_FORMAT`]; PostgreSQL:
    /// the column's default `now()`).
    pub(crate) async fn insert(&self, row: &Row) -> Result<(), sqlx::Error> {
        self.ensure_table().await?;
        match &self.pool {
            Pool::Sqlite(pool) => {
                let created_at = Utc::now().format(eissd::SQLITE_TIME_FORMAT).to_string();
                sqlx::query(
                    "INSERT INTO eissd_responses (response_id, message_id, eissd_id, kind, created_at) \
                     VALUES (?, ?, ?, ?, ?)",
                )
                .bind(&row.response_id)
                .bind(row.message_id.to_string())
                .bind(row.eissd_id.as_deref())
                .bind(row.kind)
                .bind(created_at)
                .execute(pool)
                .await?;
            }
            Pool::Postgres(pool) => {
                sqlx::query(
                    "INSERT INTO eissd_responses (response_id, message_id, eissd_id, kind) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(&row.response_id)
                .bind(row.message_id)
                .bind(row.eissd_id.as_deref())
                .bind(row.kind)
                .execute(pool)
                .await?;
            }
        }
        Ok(())
    }

    pub(crate) async fn close(&self) {
        match &self.pool {
            Pool::Sqlite(pool) => pool.close().await,
            Pool::Postgres(pool) => pool.close().await,
        }
    }
}

async fn pg_table_exists(pool: &PgPool) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT to_regclass($1::text) IS NOT NULL")
        .bind(eissd::TABLE)
        .fetch_one(pool)
        .await
}
