//! Several hub instances on one PostgreSQL, one RabbitMQ and one Redis.

use std::time::Duration;

use clm_contracts::{ChannelId, Status};
use clm_mocks::{DlrConfig, SmsMock};
use serde_json::Value;

use crate::harness::*;

fn redis_url() -> String {
    std::env::var("CLM_TEST_REDIS_URL").unwrap_or_else(|_| {
        panic!(
            "CLM_TEST_REDIS_URL is not set: run the suite with scripts/test.sh, which starts Redis"
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_share_the_work_and_one_redis_rate_limit() {
    let mock = SmsMock::start(([127, 0, 0, 1], 0).into()).await.unwrap();
    mock.set_dlr(DlrConfig {
        enabled: false,
        ..DlrConfig::default()
    });
    let (pg, amqp) = (pg_database().await, amqp_vhost());
    let prefix = format!("clm-test-{}:", uuid::Uuid::new_v4().simple());
    let rate = 200.0;
    let mut hubs = Vec::new();
    for _ in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let config = config_for(&mock, "kannel", dir.path(), |c| {
            c.store.url = Some(pg.clone());
            c.queue.url = amqp.clone();
            c.coordination.url = redis_url();
            c.coordination.key_prefix = prefix.clone();
            let p = &mut c.channels.sms.policy;
            p.rate = rate;
            p.burst = 5;
        });
        hubs.push(start_hub(config, dir).await);
    }
    let n = 3000_u64;
    let items: Vec<Value> = (0..n)
        .map(|i| sms_json("three", &format!("m{i}")))
        .collect();
    publish_communications(&amqp, &items).await;

    // Measure over 10 s once sending is under way.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while mock.accepted_count() < 100 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "sending never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let start = mock.accepted_count();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let measured = (mock.accepted_count() - start) as f64 / 10.0;
    assert!(
        (measured - rate).abs() / rate <= 0.05,
        "three instances sent {measured:.1}/s for a shared limit of {rate}/s"
    );
    // Every instance took part, none sent a communication another one sent.
    for h in &hubs {
        let sent = h.hub.shared.channels[&ChannelId::Sms].counters.view().sent;
        assert!(sent > 0, "an instance sent nothing");
    }
    for h in hubs {
        h.stop().await;
    }
    assert_eq!(mock.duplicates(), 0, "no communication was sent twice");
    let store = clm_hub::store::Store::connect(&pg, 2).await.unwrap();
    let rows = store.count_by_status(Some("three")).await.unwrap();
    let total: u64 = rows.iter().map(|(_, c)| c).sum();
    assert_eq!(
        total, n,
        "every published communication was stored once: {rows:?}"
    );
    let sent = rows
        .iter()
        .find(|(s, _)| *s == Status::Sent)
        .map_or(0, |(_, c)| *c);
    assert_eq!(sent, mock.accepted_count(), "{rows:?}");
    assert_eq!(
        rows.iter().find(|(s, _)| *s == Status::Sending),
        None,
        "{rows:?}"
    );
}
