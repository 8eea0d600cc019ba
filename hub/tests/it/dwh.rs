//! The EISSD DWH poller against a real PostgreSQL table (the Greenplum stand-in): rows inserted in
//! batches while hubs run are recorded exactly once, across a restart and with two instances.

use std::time::Duration;

use clm_contracts::ChannelId;
use clm_contracts::channels::eissd;
use clm_mocks::{ChannelMock, ChannelMockConfig, ResponsesConfig};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::harness::{TestHub, pg_database, start_hub};

fn redis_url() -> String {
    std::env::var("CLM_TEST_REDIS_URL").unwrap_or_else(|_| {
        panic!(
            "CLM_TEST_REDIS_URL is not set: run the suite with scripts/test.sh, which starts Redis"
        )
    })
}

struct Setup {
    store_url: String,
    dwh_url: String,
    dwh: PgPool,
    mock: ChannelMock,
    /// Redis key prefix shared by this test's hubs (coordination on Redis when set).
    redis_prefix: Option<String>,
    /// `settle_ms`, `lookback_ms`, `rescan_ms` of the poller.
    timing: (u64, u64, u64),
}

impl Setup {
    async fn new(shared_coordination: bool, timing: (u64, u64, u64)) -> Setup {
        let store_url = pg_database().await;
        let dwh_url = pg_database().await;
        let dwh = PgPool::connect(&dwh_url).await.unwrap();
        sqlx::raw_sql(eissd::DDL).execute(&dwh).await.unwrap();
        // The mock takes the offers and answers nothing: the test writes the rows itself.
        let mock = ChannelMock::start(
            ChannelId::Eissd,
            ([127, 0, 0, 1], 0).into(),
            ChannelMockConfig {
                responses: ResponsesConfig::default(),
                ..ChannelMockConfig::default()
            },
        )
        .await
        .unwrap();
        Setup {
            store_url,
            dwh_url,
            dwh,
            mock,
            redis_prefix: shared_coordination
                .then(|| format!("clm-t-{}:", Uuid::new_v4().simple())),
            timing,
        }
    }

    async fn hub(&self) -> TestHub {
        let dir = tempfile::tempdir().unwrap();
        let coordination = match &self.redis_prefix {
            Some(p) => format!(
                "[coordination]\nurl = \"{}\"\nkey_prefix = \"{p}\"\n",
                redis_url()
            ),
            None => String::new(),
        };
        let file = dir.path().join("hub.toml");
        std::fs::write(
            &file,
            format!(
                r#"
sandbox = false
data_dir = "{data}"
[server]
listen = "127.0.0.1:0"
[store]
url = "{store}"
[dispatcher]
poll_ms = 20
{coordination}
[channels.sms]
enabled = false
[channels.eissd]
enabled = true
[channels.eissd.endpoint]
url = "{mock}"
[channels.eissd.responses]
source = "{dwh}"
poll_ms = 50
batch = 7
settle_ms = {settle}
lookback_ms = {lookback}
rescan_ms = {rescan}
"#,
                data = dir.path().join("data").display(),
                store = self.store_url,
                mock = self.mock.base_url(),
                dwh = self.dwh_url,
                settle = self.timing.0,
                lookback = self.timing.1,
                rescan = self.timing.2,
            ),
        )
        .unwrap();
        let config = clm_hub::Config::load(Some(&file), Vec::new()).unwrap();
        start_hub(config, dir).await
    }

    /// Inserts one row per communication, `kind` for all, as EISSD would.
    async fn insert_rows(&self, ids: &[String], kind: &str) -> Vec<String> {
        let mut response_ids = Vec::new();
        let mut tx = self.dwh.begin().await.unwrap();
        for id in ids {
            let rid = format!("r-{}", Uuid::new_v4().simple());
            sqlx::query(
                "INSERT INTO eissd_responses (response_id, message_id, eissd_id, kind) \
                 VALUES ($1, $2::uuid, $3, $4)",
            )
            .bind(&rid)
            .bind(id)
            .bind(format!("E-{id}"))
            .bind(kind)
            .execute(&mut *tx)
            .await
            .unwrap();
            response_ids.push(rid);
        }
        tx.commit().await.unwrap();
        response_ids
    }

    /// How many responses the hub recorded for these rows, and whether any is recorded twice.
    async fn recorded(&self) -> (i64, i64) {
        let store = PgPool::connect(&self.store_url).await.unwrap();
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM responses WHERE channel = 'eissd'")
            .fetch_one(&store)
            .await
            .unwrap();
        let (twice,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM (SELECT dedupe_key FROM responses WHERE channel = 'eissd' \
             GROUP BY dedupe_key HAVING COUNT(*) > 1) d",
        )
        .fetch_one(&store)
        .await
        .unwrap();
        store.close().await;
        (n, twice)
    }

    async fn wait_recorded(&self, n: i64, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let (got, twice) = self.recorded().await;
            assert_eq!(twice, 0, "a row was recorded twice");
            assert!(got <= n, "{got} recorded, only {n} rows exist");
            if got == n {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{got} of {n} rows recorded within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn offer() -> Value {
    json!({
        "id": Uuid::new_v4().to_string(), "campaign_id": "dwh", "customer_id": "cust-7",
        "channel": "eissd", "recipient": "cust-7", "content": {"offer_code": "TV-PLUS"},
    })
}

/// Submits `n` offers and waits until EISSD took them all.
async fn sent_offers(hub: &TestHub, n: usize) -> Vec<String> {
    let items: Vec<Value> = (0..n).map(|_| offer()).collect();
    let ids: Vec<String> = items
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect();
    let (code, _) = hub.submit(&json!({ "communications": items })).await;
    assert_eq!(code, 202);
    hub.wait_for(&ids, &["sent"], Duration::from_secs(20)).await;
    ids
}

async fn metric(hub: &TestHub, line_prefix: &str) -> u64 {
    let text = hub.metrics_text().await;
    text.lines()
        .find_map(|l| l.strip_prefix(line_prefix))
        .map_or(0, |v| v.trim().parse().unwrap())
}

const RECORDED: &str = "clm_dwh_rows_total{outcome=\"recorded\"}";
const POLLS: &str = "clm_dwh_polls_total";
const DUPLICATE: &str = "clm_dwh_rows_total{outcome=\"duplicate\"}";
const LATE: &str = "clm_dwh_late_rows_total";
/// Settle generously (a loaded machine may take seconds between a writer's start and commit);
/// no rescan.
const SETTLED: (u64, u64, u64) = (15_000, 0, 0);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_written_in_batches_are_recorded_once_also_across_a_restart() {
    let setup = Setup::new(false, SETTLED).await;
    let hub = setup.hub().await;
    let ids = sent_offers(&hub, 20).await;

    // Three batches while the hub runs (20 rows each; pages of 7).
    let mut total = 0;
    for kind in ["interested", "accepted"] {
        setup.insert_rows(&ids, kind).await;
        total += ids.len() as i64;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    // A writer whose transaction started before the next batch but commits after the poller
    // has read past it: its row's created_at (the transaction's start) lies behind rows already
    // read, and must still be recorded.
    let mut late = setup.dwh.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO eissd_responses (response_id, message_id, kind) \
         VALUES ($1, $2::uuid, 'opted_out')",
    )
    .bind(format!("r-late-{}", Uuid::new_v4().simple()))
    .bind(&ids[1])
    .execute(&mut *late)
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    setup.insert_rows(&ids, "declined").await;
    total += ids.len() as i64;
    setup.wait_recorded(total, Duration::from_secs(20)).await;
    late.commit().await.unwrap();
    total += 1;
    setup.wait_recorded(total, Duration::from_secs(10)).await;
    assert_eq!(metric(&hub, RECORDED).await, total as u64);
    // Re-reading its unsettled rows, a running poller knows what it recorded already.
    assert_eq!(metric(&hub, DUPLICATE).await, 0);
    let view = hub.view(&ids[0]).await;
    let mut kinds: Vec<&str> = view["responses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    kinds.sort_unstable();
    assert_eq!(kinds, ["interested", "offer_accepted", "offer_declined"]);

    // Stopped; rows keep arriving; a new hub on the same store picks up where the first left.
    hub.stop().await;
    setup.insert_rows(&ids[..10], "interested").await;
    total += 10;
    // Garbage in the table is skipped, not fatal.
    sqlx::query(
        "INSERT INTO eissd_responses (response_id, message_id, kind) VALUES ($1, $2::uuid, 'accepted')",
    )
    .bind(format!("r-stray-{}", Uuid::new_v4().simple()))
    .bind(Uuid::new_v4().to_string())
    .execute(&setup.dwh)
    .await
    .unwrap();
    let hub = setup.hub().await;
    setup.wait_recorded(total, Duration::from_secs(20)).await;
    // The new poller read the unsettled rows again and the store recognised them.
    assert!(metric(&hub, DUPLICATE).await > 0);
    setup.insert_rows(&ids[10..], "accepted").await;
    total += 10;
    setup.wait_recorded(total, Duration::from_secs(20)).await;
    // Given time to re-read its unsettled rows, it still records nothing twice.
    tokio::time::sleep(Duration::from_millis(800)).await;
    setup.wait_recorded(total, Duration::from_secs(1)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while metric(
        &hub,
        "clm_dwh_rows_total{outcome=\"unknown_communication\"}",
    )
    .await
        != 1
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stray row is counted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_poll_as_one_and_hand_over_when_one_stops() {
    let setup = Setup::new(true, SETTLED).await;
    let a = setup.hub().await;
    let b = setup.hub().await;
    let ids = sent_offers(&a, 14).await;
    let mut total = 0;
    for kind in ["interested", "accepted"] {
        setup.insert_rows(&ids, kind).await;
        total += ids.len() as i64;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    setup.wait_recorded(total, Duration::from_secs(20)).await;
    let (ra, rb) = (metric(&a, RECORDED).await, metric(&b, RECORDED).await);
    assert_eq!(ra + rb, total as u64, "each row recorded once across both");
    let (pa, pb) = (metric(&a, POLLS).await, metric(&b, POLLS).await);
    assert!(
        (pa == 0) != (pb == 0),
        "exactly one instance polls: {pa} and {pb} polls"
    );
    // The poller stops; the other instance takes over.
    let (poller, other) = if pa > 0 { (a, b) } else { (b, a) };
    poller.stop().await;
    setup.insert_rows(&ids, "declined").await;
    total += ids.len() as i64;
    setup.wait_recorded(total, Duration::from_secs(30)).await;
    assert!(metric(&other, POLLS).await > 0);
    other.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_visible_only_after_the_watermark_passed_it_is_found_by_the_rescan() {
    // Settle quickly, rescan every 300 ms over the last minute.
    let setup = Setup::new(false, (200, 60_000, 300)).await;
    let hub = setup.hub().await;
    let ids = sent_offers(&hub, 3).await;
    // A writer that holds its transaction open far longer than settle_ms.
    let mut slow = setup.dwh.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO eissd_responses (response_id, message_id, kind) VALUES ($1, $2::uuid, 'accepted')",
    )
    .bind(format!("r-slow-{}", Uuid::new_v4().simple()))
    .bind(&ids[0])
    .execute(&mut *slow)
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    setup.insert_rows(&ids, "interested").await;
    setup.wait_recorded(3, Duration::from_secs(20)).await;
    // Wait until the watermark has certainly passed the slow row's created_at.
    let store = PgPool::connect(&setup.store_url).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let moved: Option<(String,)> =
            sqlx::query_as("SELECT position FROM source_watermarks WHERE source = 'eissd.dwh'")
                .fetch_optional(&store)
                .await
                .unwrap();
        let (rows,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM eissd_responses WHERE created_at <= $1::timestamptz",
        )
        .bind(moved.map_or_else(|| "1970-01-01T00:00:00Z".to_owned(), |m| m.0))
        .fetch_one(&setup.dwh)
        .await
        .unwrap();
        if rows == 3 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the watermark never passed the rows"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    store.close().await;
    slow.commit().await.unwrap();
    setup.wait_recorded(4, Duration::from_secs(20)).await;
    assert_eq!(metric(&hub, LATE).await, 1);
    assert_eq!(metric(&hub, RECORDED).await, 4);
    hub.stop().await;
}
