//! EISSD responses as rows of the contract's table in a SQLite DWH file.

use std::str::FromStr;

use chrono::{NaiveDateTime, Utc};
use clm_contracts::ChannelId;
use clm_contracts::channels::eissd;
use clm_mocks::{ChannelMockConfig, ResponsesConfig};
use sqlx::Row;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};
use uuid::Uuid;

use crate::harness::{WAIT, client, request, send, start_with};

struct DwhRow {
    response_id: String,
    message_id: String,
    eissd_id: Option<String>,
    kind: String,
    created_at: String,
}

async fn dwh_rows(url: &str) -> Vec<DwhRow> {
    let pool = SqlitePool::connect_with(SqliteConnectOptions::from_str(url).unwrap())
        .await
        .unwrap();
    let rows = sqlx::query(
        "SELECT response_id, message_id, eissd_id, kind, created_at FROM eissd_responses \
         ORDER BY created_at, response_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap()
    .into_iter()
    .map(|row| DwhRow {
        response_id: row.get("response_id"),
        message_id: row.get("message_id"),
        eissd_id: row.get("eissd_id"),
        kind: row.get("kind"),
        created_at: row.get("created_at"),
    })
    .collect();
    pool.close().await;
    rows
}

fn config(url: &str, kinds: &[&str]) -> ChannelMockConfig {
    ChannelMockConfig {
        dwh_url: Some(url.to_owned()),
        responses: ResponsesConfig {
            kinds: kinds.iter().map(|k| (*k).to_owned()).collect(),
            delay_ms: 5,
            ..ResponsesConfig::default()
        },
        ..ChannelMockConfig::default()
    }
}

#[tokio::test]
async fn rows_land_in_the_sqlite_dwh_with_the_contract_columns() {
    let dir = tempfile::tempdir().unwrap();
    // A directory that does not exist yet: the mock creates it, as for ./data/eissd-dwh.db.
    let url = format!("sqlite://{}", dir.path().join("dwh/eissd.db").display());
    let mock = start_with(ChannelId::Eissd, config(&url, &["interested", "accepted"])).await;
    let id = Uuid::new_v4();
    let before = Utc::now();
    let answer: eissd::SendResponse = send(&mock, &request(ChannelId::Eissd, id))
        .await
        .json()
        .await
        .unwrap();
    assert!(mock.wait_for_responses(2, WAIT).await);
    let after = Utc::now();

    let rows = dwh_rows(&url).await;
    assert_eq!(rows.len(), 2);
    assert_eq!(
        rows.iter().map(|r| r.kind.as_str()).collect::<Vec<_>>(),
        ["interested", "accepted"]
    );
    for row in &rows {
        assert!(row.response_id.starts_with("r-"), "{}", row.response_id);
        assert_eq!(row.message_id, id.to_string());
        assert_eq!(row.eissd_id.as_deref(), Some(answer.eissd_id.as_str()));
        // 2025-06-01T10:00:00.123Z: fixed width, so text order is time order.
        assert_eq!(row.created_at.len(), 24, "{}", row.created_at);
        let at = NaiveDateTime::parse_from_str(&row.created_at, eissd::SQLITE_TIME_FORMAT)
            .unwrap_or_else(|e| panic!("{}: {e}", row.created_at))
            .and_utc();
        let slack = chrono::Duration::milliseconds(1);
        assert!(at >= before - slack && at <= after + slack, "{at}");
    }
    assert_ne!(rows[0].response_id, rows[1].response_id);
    let stats = mock.stats();
    assert_eq!((stats.responses_sent, stats.responses_failed), (2, 0));
    mock.shutdown().await;

    // WAL, so the hub can read while the mock writes.
    let pool = SqlitePool::connect(&url).await.unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    pool.close().await;

    // Started again on the same file: the table is there already, rows are added.
    let mock = start_with(ChannelId::Eissd, config(&url, &["declined"])).await;
    send(&mock, &request(ChannelId::Eissd, Uuid::new_v4())).await;
    assert!(mock.wait_for_responses(1, WAIT).await);
    mock.shutdown().await;
    assert_eq!(dwh_rows(&url).await.len(), 3);
}

#[tokio::test]
async fn respond_writes_one_row_now() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("eissd.db").display());
    let mock = start_with(ChannelId::Eissd, config(&url, &[])).await;
    let id = Uuid::new_v4();
    let answer: eissd::SendResponse = send(&mock, &request(ChannelId::Eissd, id))
        .await
        .json()
        .await
        .unwrap();
    let response = client()
        .post(format!("{}/respond", mock.control_url()))
        .json(&serde_json::json!({"message_id": id, "kind": "opted_out"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let body: serde_json::Value = response.json().await.unwrap();
    let response_id = body["id"].as_str().unwrap().to_owned();
    assert!(mock.wait_for_responses(1, WAIT).await);
    let rows = dwh_rows(&url).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].response_id, response_id);
    assert_eq!(rows[0].kind, "opted_out");
    assert_eq!(rows[0].eissd_id.as_deref(), Some(answer.eissd_id.as_str()));

    let bad = client()
        .post(format!("{}/respond", mock.control_url()))
        .json(&serde_json::json!({"message_id": id, "kind": "clicked"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let error: serde_json::Value = bad.json().await.unwrap();
    assert!(error["message"].as_str().unwrap().contains("clicked"));
}

#[tokio::test]
async fn without_a_dwh_rows_count_as_failed() {
    let config = ChannelMockConfig {
        responses: ResponsesConfig::typical(ChannelId::Eissd),
        ..ChannelMockConfig::default()
    };
    let mock = start_with(ChannelId::Eissd, config).await;
    assert_eq!(
        send(&mock, &request(ChannelId::Eissd, Uuid::new_v4()))
            .await
            .status(),
        200
    );
    assert!(crate::harness::wait_until(|| mock.stats().responses_failed == 1).await);
    assert_eq!(mock.stats().responses_sent, 0);
    assert!(mock.respond(Uuid::new_v4(), "interested").is_err());
}

#[tokio::test]
async fn a_bad_dwh_url_fails_the_start() {
    for url in ["mysql://dwh/db", "sqlite:///proc/no/such/dir/x.db"] {
        let config = ChannelMockConfig {
            dwh_url: Some(url.into()),
            ..ChannelMockConfig::default()
        };
        let started =
            clm_mocks::ChannelMock::start(ChannelId::Eissd, "127.0.0.1:0".parse().unwrap(), config)
                .await;
        assert!(started.is_err(), "{url}");
    }
}
