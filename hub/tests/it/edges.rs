//! The hub's promises at the edges (issue 10): poison input is refused alone with its field
//! named and harms nobody else's, on both stores and over HTTP and AMQP; a slow channel never
//! sends a communication twice; a report that arrives during the attempt is applied when it ends;
//! outcome batches are never dropped whole, and never deadlock with reports.

use std::time::Duration;

use clm_contracts::{ChannelId, Classification, ResponseKind, Status};
use clm_hub::store::{AttemptRow, Correlation, Finish, IncomingResponse, Store};
use clm_mocks::SmsMock;
use lapin::types::FieldTable;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::amqp::{amqp_hub, broker, next_reject, rejects};
use crate::harness::*;

fn id_of(v: &Value) -> String {
    v["id"].as_str().unwrap().to_owned()
}

/// One poisoned post among eight concurrent ones: the poisoned item is refused with its field
/// named, every other item of every post is accepted and sent.
async fn poison_does_not_spread(pg: bool) {
    let mock = SmsMock::start(([127, 0, 0, 1], 0).into()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pg_url = if pg { Some(pg_database().await) } else { None };
    let config = config_for(&mock, "kannel", dir.path(), |c| {
        c.store.url = pg_url;
    });
    let hub = std::sync::Arc::new(start_hub(config, dir).await);
    let campaign = format!("poison-{}", Uuid::new_v4().simple());
    let mut posts = Vec::new();
    for k in 0..8 {
        let hub = std::sync::Arc::clone(&hub);
        let campaign = campaign.clone();
        posts.push(tokio::spawn(async move {
            let mut items: Vec<Value> = (0..25).map(|_| sms_json(&campaign, "Привет")).collect();
            if k == 3 {
                items[7]["campaign_id"] = json!("cmp\u{0}x");
                items[11]["content"]["text"] = json!("При\u{0}вет");
                items[13]["attributes"] = json!({"category": "mark\u{0}eting"});
            }
            let (status, body) = hub.submit(&json!({ "communications": items })).await;
            (k, items, status, body)
        }));
    }
    let mut accepted = Vec::new();
    for p in posts {
        let (k, items, status, body) = p.await.unwrap();
        assert_eq!(status, 202, "post {k}: {body}");
        for (i, (item, r)) in items
            .iter()
            .zip(body["results"].as_array().unwrap())
            .enumerate()
        {
            let poisoned = k == 3 && [7, 11, 13].contains(&i);
            if poisoned {
                assert_eq!(r["outcome"], "rejected", "{r}");
                let field = match i {
                    7 => "campaign_id",
                    11 => "content.text",
                    _ => "attributes",
                };
                let error = r["error"].as_str().unwrap();
                assert!(error.starts_with(field), "{error}");
                assert!(error.contains("U+0000"), "{error}");
            } else {
                assert_eq!(r["outcome"], "accepted", "post {k} item {i}: {r}");
                accepted.push(id_of(item));
            }
        }
    }
    assert_eq!(accepted.len(), 8 * 25 - 3);
    hub.wait_for(&accepted, &["delivered"], Duration::from_secs(30))
        .await;
    match std::sync::Arc::try_unwrap(hub) {
        Ok(hub) => {
            hub.stop().await;
        }
        Err(_) => panic!("hub still shared"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_is_refused_alone_and_concurrent_posts_commit_on_sqlite() {
    poison_does_not_spread(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_is_refused_alone_and_concurrent_posts_commit_on_postgres() {
    poison_does_not_spread(true).await;
}

#[tokio::test]
async fn a_lone_surrogate_is_refused_with_a_clear_error() {
    let mock = SmsMock::start(([127, 0, 0, 1], 0).into()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let hub = start_hub(config_for(&mock, "kannel", dir.path(), |_| {}), dir).await;
    for lone in ["\\ud800 hi", "\\udc00", "x\\ud83d"] {
        let id = Uuid::new_v4();
        let body = format!(
            r#"{{"id":"{id}","campaign_id":"c","customer_id":"c","channel":"sms","recipient":"+79001234567","content":{{"text":"{lone}"}}}}"#
        );
        let r = hub
            .client
            .post(hub.url("/v1/communications"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{lone}");
        let v: Value = r.json().await.unwrap();
        let error = v["error"].as_str().unwrap();
        assert!(
            error.contains("surrogate") || error.contains("hex escape"),
            "{v}"
        );
        assert!(error.contains("column"), "{v}");
        let stored = hub
            .client
            .get(hub.url(&format!("/v1/communications/{id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(stored.status(), 404, "nothing stored for {lone}");
    }
    hub.stop().await;
}

/// Over AMQP, one poisoned message ahead of a hundred valid ones: it goes to the reject exchange
/// with its field named, the hundred are stored, acked and sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poisoned_amqp_message_is_rejected_and_the_rest_are_sent() {
    let vhost = amqp_vhost();
    let mock = SmsMock::start(([127, 0, 0, 1], 0).into()).await.unwrap();
    let (_conn, ch) = broker(&vhost).await;
    let mut rejected = rejects(&ch).await;
    let campaign = format!("amqp-poison-{}", Uuid::new_v4().simple());
    let mut poisoned = sms_json(&campaign, "x");
    poisoned["customer_id"] = json!("cust\u{0}1");
    let mut surrogate = serde_json::to_vec(&sms_json(&campaign, "PLACEHOLDER")).unwrap();
    let at = surrogate
        .windows(11)
        .position(|w| w == b"PLACEHOLDER")
        .unwrap();
    surrogate.splice(at..at + 11, b"\\udc00".iter().copied());
    let valid: Vec<Value> = (0..100).map(|_| sms_json(&campaign, "Привет")).collect();
    let mut bodies = vec![
        ("sms".to_owned(), serde_json::to_vec(&poisoned).unwrap()),
        ("sms".to_owned(), surrogate),
    ];
    bodies.extend(
        valid
            .iter()
            .map(|v| ("sms".to_owned(), serde_json::to_vec(v).unwrap())),
    );
    // Published before the hub consumes, so the poison shares the first batch with the rest.
    publish_raw(&ch, &bodies).await;
    let hub = amqp_hub(&mock, &vhost).await;
    let ids: Vec<String> = valid.iter().map(id_of).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let rows = hub
            .hub
            .shared
            .store
            .count_by_status(Some(&campaign))
            .await
            .unwrap();
        if rows.iter().map(|(_, n)| n).sum::<u64>() >= 100 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not stored: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    hub.wait_for(&ids, &["delivered"], Duration::from_secs(20))
        .await;
    let mut reasons = Vec::new();
    for _ in 0..2 {
        let (reason, _) = next_reject(&mut rejected).await;
        reasons.push(reason);
    }
    reasons.sort();
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("customer_id") && r.contains("U+0000")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("surrogate")),
        "{reasons:?}"
    );
    let rows = hub
        .hub
        .shared
        .store
        .count_by_status(Some(&campaign))
        .await
        .unwrap();
    assert_eq!(rows.iter().map(|(_, n)| n).sum::<u64>(), 100, "{rows:?}");
    hub.stop().await;
}

/// Webhooks and delivery reports with U+0000 in a field: 400 naming it, nothing stored, and a
/// valid report right after is recorded.
#[tokio::test]
async fn a_nul_in_a_delivery_report_is_refused_with_its_field() {
    let mock = SmsMock::start(([127, 0, 0, 1], 0).into()).await.unwrap();
    mock.set_dlr(clm_mocks::DlrConfig {
        enabled: false,
        ..Default::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let pg = pg_database().await;
    let hub = start_hub(
        config_for(&mock, "kannel", dir.path(), |c| c.store.url = Some(pg)),
        dir,
    )
    .await;
    let comm = sms_json("dlr-nul", "hi");
    let id = id_of(&comm);
    assert_eq!(hub.submit(&comm).await.0, 202);
    hub.wait_for(
        std::slice::from_ref(&id),
        &["sent"],
        Duration::from_secs(10),
    )
    .await;
    for (query, field) in [
        (format!("id={id}&type=1&smsc_id=ab%00cd"), "smsc_id"),
        (format!("id={id}&type=1&answer=id%3A1%00"), "answer"),
    ] {
        let r = hub
            .client
            .get(hub.url(&format!("/ingest/sms?{query}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{query}");
        let v: Value = r.json().await.unwrap();
        assert!(v["error"].as_str().unwrap().starts_with(field), "{v}");
    }
    assert_eq!(hub.status(&id).await, "sent");
    let r = hub
        .client
        .get(hub.url(&format!("/ingest/sms?id={id}&type=1")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(hub.status(&id).await, "delivered");
    hub.stop().await;
}

/// Issue 10, failure 4: `lease_secs = 10`, SMS at one per 20 s: the second SMS waits for its
/// rate slot longer than a lease. It is sent once, on time, with one attempt; before, its claim
/// was reaped while it waited, and it was sent once on the old claim and again on the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_that_waits_longer_than_its_lease_is_sent_once() {
    let mock = SmsMock::start(([127, 0, 0, 1], 0).into()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = config_for(&mock, "kannel", dir.path(), |c| {
        c.dispatcher.lease_secs = 10;
        let p = &mut c.channels.sms.policy;
        p.rate = 0.05;
        p.burst = 1;
        p.timeout_ms = 1000;
    });
    let hub = start_hub(config, dir).await;
    let items: Vec<Value> = (0..2).map(|_| sms_json("slow", "hi")).collect();
    let ids: Vec<String> = items.iter().map(id_of).collect();
    assert_eq!(hub.submit(&json!({ "communications": items })).await.0, 202);
    // The second slot opens 20 s after the first; the old code sent the reaped copy again at
    // 40 s and only then reached `delivered`.
    hub.wait_for(&ids, &["delivered"], Duration::from_secs(32))
        .await;
    for id in &ids {
        assert_eq!(mock.accepted_ref_count(id), 1, "{id} sent once");
        let v = hub.view(id).await;
        assert_eq!(v["attempts"].as_array().unwrap().len(), 1, "{v:#}");
    }
    assert_eq!(mock.accepted_count(), 2);
    hub.stop().await;
}

/// Issue 10, failure 5: the channel holds the request past the attempt's timeout, and the
/// delivery report comes in while the attempt is still out. The communication ends `delivered`
/// (it used to stay `unknown`, with the report recorded beside it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_that_arrives_during_the_attempt_is_applied_when_it_ends() {
    for pg in [false, true] {
        let mock = SmsMock::start(([127, 0, 0, 1], 0).into()).await.unwrap();
        mock.set_faults(clm_mocks::Faults {
            script: vec![0],
            ..Default::default()
        });
        let dir = tempfile::tempdir().unwrap();
        let pg_url = if pg { Some(pg_database().await) } else { None };
        let config = config_for(&mock, "kannel", dir.path(), |c| {
            c.store.url = pg_url;
            c.channels.sms.policy.timeout_ms = 2000;
        });
        let hub = start_hub(config, dir).await;
        let comm = sms_json("during", "hi");
        let id = id_of(&comm);
        assert_eq!(hub.submit(&comm).await.0, 202);
        hub.wait_for(
            std::slice::from_ref(&id),
            &["sending"],
            Duration::from_secs(5),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let r = hub
            .client
            .get(hub.url(&format!("/ingest/sms?id={id}&type=1")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        hub.wait_for(
            std::slice::from_ref(&id),
            &["delivered"],
            Duration::from_secs(10),
        )
        .await;
        let v = hub.view(&id).await;
        assert_eq!(v["attempts"][0]["classification"], "unknown", "{v:#}");
        hub.stop().await;
    }
}

fn finish_for(c: &clm_hub::store::Claimed, answer: &str) -> Finish {
    Finish {
        id: c.comm.id,
        claim: c.claim.clone(),
        campaign_id: c.comm.campaign_id.clone(),
        channel: c.comm.channel,
        attempt: Some(AttemptRow {
            number: 1,
            started_at: chrono::Utc::now(),
            duration_ms: 3,
            classification: Classification::Sent,
            answer: answer.to_owned(),
            reason: None,
            external_id: None,
        }),
        status: Status::Sent,
        reason: None,
        external_id: None,
        next_attempt_at: None,
        attempts: 1,
    }
}

async fn insert_sms(store: &Store, campaign: &str, n: usize) -> Vec<Uuid> {
    let items: Vec<clm_hub::store::NewCommunication> = (0..n)
        .map(|_| clm_hub::store::NewCommunication {
            comm: serde_json::from_value(sms_json(campaign, "hi")).unwrap(),
            parts: 1,
        })
        .collect();
    store
        .insert_batch(&items, chrono::Utc::now())
        .await
        .unwrap();
    items.iter().map(|n| n.comm.id).collect()
}

/// One outcome the store cannot hold (U+0000 in the channel's answer, which the dispatcher
/// normally cleans) among a thousand: the other 999 are written, and it is written without the
/// answer. Its claim is not left to be reaped and sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_outcome_does_not_drop_its_batch() {
    let store = pg_store().await;
    insert_sms(&store, "finish-poison", 1000).await;
    let claimed = store
        .claim_due(
            ChannelId::Sms,
            "t",
            1000,
            Duration::from_secs(300),
            chrono::Utc::now(),
        )
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1000);
    let stop = tokio_util::sync::CancellationToken::new();
    let (finisher, task) = clm_hub::dispatcher::Finisher::start(store.clone(), stop.clone(), || {});
    for (i, c) in claimed.iter().enumerate() {
        let answer = if i == 500 { "202 ok\u{0}" } else { "202 ok" };
        finisher.submit(finish_for(c, answer)).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let rows = store.count_by_status(Some("finish-poison")).await.unwrap();
        if rows == [(Status::Sent, 1000)] {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{rows:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let v = store.view(claimed[500].comm.id).await.unwrap().unwrap();
    assert_eq!(v.attempts.len(), 1);
    assert_eq!(v.attempts[0].answer, "");
    stop.cancel();
    task.await.unwrap();
}

/// Outcomes written in one order while delivery reports for the same communications are
/// recorded in another, in many concurrent transactions: on PostgreSQL neither may fail with
/// `deadlock detected` (a failed outcome batch is retried, but meanwhile its claims age).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outcomes_and_reports_on_the_same_rows_never_deadlock() {
    let store = pg_store().await;
    for round in 0..5 {
        let campaign = format!("deadlock-{round}");
        insert_sms(&store, &campaign, 400).await;
        let claimed = store
            .claim_due(
                ChannelId::Sms,
                "t",
                400,
                Duration::from_secs(300),
                chrono::Utc::now(),
            )
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for k in 0..4_usize {
            let store = store.clone();
            // Four writers, each over every row, in four different orders.
            let mut finishes: Vec<Finish> = claimed.iter().map(|c| finish_for(c, "ok")).collect();
            let mut reports: Vec<IncomingResponse> = claimed
                .iter()
                .map(|c| IncomingResponse {
                    channel: ChannelId::Sms,
                    correlation: Correlation::Id(c.comm.id),
                    kind: ResponseKind::Buffered,
                    occurred_at: None,
                    detail: None,
                    dedupe_key: format!("buffered:{k}"),
                    whole_message: true,
                })
                .collect();
            match k {
                0 => finishes.reverse(),
                1 => reports.reverse(),
                2 => finishes.rotate_left(137),
                _ => reports.rotate_left(211),
            }
            tasks.push(tokio::spawn(async move {
                let now = chrono::Utc::now();
                if k % 2 == 0 {
                    store.finish_batch(&finishes, now).await.map(|_| ())
                } else {
                    store.record_responses(&reports, now).await.map(|_| ())
                }
            }));
        }
        for t in tasks {
            if let Err(e) = t.await.unwrap() {
                panic!("round {round}: {e}");
            }
        }
    }
}

/// A message the broker has delivered nearly `x-delivery-limit` times without it being stored is
/// dead-lettered to the reject exchange with that reason instead of being dropped by the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_redelivered_too_often_is_dead_lettered_with_its_reason() {
    let vhost = amqp_vhost();
    let mock = SmsMock::start(([127, 0, 0, 1], 0).into()).await.unwrap();
    let (_conn, ch) = broker(&vhost).await;
    let mut rejected = rejects(&ch).await;
    let hub = amqp_hub(&mock, &vhost).await;
    let worn = sms_json("worn", "x");
    let fresh = sms_json("worn", "y");
    let mut headers = FieldTable::default();
    headers.insert(
        "x-delivery-count".into(),
        lapin::types::AMQPValue::LongLongInt(19),
    );
    for (body, props) in [
        (
            &worn,
            lapin::BasicProperties::default().with_headers(headers),
        ),
        (&fresh, lapin::BasicProperties::default()),
    ] {
        ch.basic_publish(
            clm_hub::amqp::COMMUNICATIONS_EXCHANGE.into(),
            "sms".into(),
            lapin::options::BasicPublishOptions::default(),
            &serde_json::to_vec(body).unwrap(),
            props.with_content_type("application/json".into()),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    let (reason, _) = next_reject(&mut rejected).await;
    assert!(reason.contains("delivered 19 times"), "{reason}");
    hub.wait_for(&[id_of(&fresh)], &["delivered"], Duration::from_secs(10))
        .await;
    hub.stop().await;
}

/// A paused channel claims nothing, yet its communications whose validity ran out become
/// `expired` (they used to stay `received` until the resume).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_channel_still_expires_what_ran_out() {
    let mock = SmsMock::start(([127, 0, 0, 1], 0).into()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = config_for(&mock, "kannel", dir.path(), |c| {
        c.dispatcher.lease_secs = 10
    });
    let hub = start_hub(config, dir).await;
    let r = hub
        .client
        .post(hub.url("/v1/channels/sms/pause"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let mut comm = sms_json("paused-expiry", "hi");
    comm["expires_at"] = json!((chrono::Utc::now() + chrono::Duration::seconds(1)).to_rfc3339());
    let id = id_of(&comm);
    assert_eq!(hub.submit(&comm).await.0, 202);
    hub.wait_for(
        std::slice::from_ref(&id),
        &["expired"],
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(mock.accepted_count(), 0);
    hub.stop().await;
}

/// The reconciler pages through every `unknown` communication (keyset on `updated_at`, id)
/// instead of asking about the same oldest page for ever when the channel never knows them.
#[tokio::test]
async fn unknowns_are_paged_through_not_asked_about_from_the_oldest_again() {
    for store in [sqlite_store().await.0, pg_store().await] {
        insert_sms(&store, "unknown-pages", 25).await;
        let claimed = store
            .claim_due(
                ChannelId::Sms,
                "t",
                25,
                Duration::from_secs(300),
                chrono::Utc::now(),
            )
            .await
            .unwrap();
        let finishes: Vec<Finish> = claimed
            .iter()
            .map(|c| Finish {
                status: Status::Unknown,
                ..finish_for(c, "timeout")
            })
            .collect();
        store
            .finish_batch(&finishes, chrono::Utc::now())
            .await
            .unwrap();
        let later = chrono::Utc::now() + chrono::Duration::seconds(1);
        let mut seen = Vec::new();
        let mut after = None;
        let mut pages = Vec::new();
        loop {
            let page = store
                .unknown_before(ChannelId::Sms, later, after, 10)
                .await
                .unwrap();
            pages.push(page.len());
            seen.extend(page.iter().map(|u| u.id));
            if page.len() < 10 {
                break;
            }
            after = page.last().map(|u| (u.updated_at, u.id));
        }
        assert_eq!(pages, [10, 10, 5]);
        let mut all: Vec<Uuid> = claimed.iter().map(|c| c.comm.id).collect();
        all.sort();
        seen.sort();
        assert_eq!(seen, all, "every unknown once");
    }
}

/// A connector that panics on every send.
struct Panics;

#[async_trait::async_trait]
impl clm_connectors::Connector for Panics {
    fn channel(&self) -> ChannelId {
        ChannelId::Sms
    }

    async fn send(&self, _comm: &clm_contracts::Communication) -> clm_connectors::Outcome {
        panic!("a bug in a connector");
    }
}

/// A send that panics ends `unknown` (whether it went out is not known: never resent blindly),
/// counts as a breaker failure, and leaves no probe stuck: before, its claim waited for the
/// reaper and a half-open breaker stayed probing for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_send_ends_unknown_and_frees_the_breaker() {
    use std::sync::Arc;
    let mock = SmsMock::start(([127, 0, 0, 1], 0).into()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = config_for(&mock, "kannel", dir.path(), |c| {
        let p = &mut c.channels.sms.policy;
        p.breaker.failure_threshold = 1;
        p.breaker.open_ms = 200;
    });
    let (store, _db) = sqlite_store().await;
    let policy = config.channels.sms.policy.clone();
    let coord = clm_hub::coordination::Coordination::Local;
    let limiter = clm_hub::coordination::SharedLimiter::new(
        &coord,
        ChannelId::Sms,
        policy.rate,
        policy.burst,
        1.0,
    );
    let channel = Arc::new(clm_hub::dispatcher::Channel::new(
        ChannelId::Sms,
        policy,
        Arc::new(Panics),
        limiter,
    ));
    let stop = tokio_util::sync::CancellationToken::new();
    let (finisher, finisher_task) =
        clm_hub::dispatcher::Finisher::start(store.clone(), stop.clone(), || {});
    let shared = Arc::new(clm_hub::state::Shared::new(
        config,
        store.clone(),
        "t".into(),
        [(ChannelId::Sms, Arc::clone(&channel))]
            .into_iter()
            .collect(),
        finisher,
        clm_hub::events::EventBus::default(),
        Arc::new(tokio::sync::Notify::new()),
        "http://127.0.0.1:9".into(),
        coord,
        Vec::new(),
    ));
    let ids = insert_sms(&store, "panics", 3).await;
    let dispatcher = tokio::spawn(clm_hub::dispatcher::run_channel(
        Arc::clone(&shared),
        Arc::clone(&channel),
        stop.clone(),
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let rows = store.count_by_status(Some("panics")).await.unwrap();
        if rows == [(Status::Unknown, 3)] {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{rows:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for id in ids {
        let v = store.view(id).await.unwrap().unwrap();
        assert_eq!(v.attempts.len(), 1, "{v:?}");
        assert_eq!(v.attempts[0].classification, Classification::Unknown);
    }
    // Three panics with a threshold of one: opened, probed (panicked: reopened), probed again.
    // Whatever the last was, no probe is left out once the open time is over.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!channel.breaker.probing(), "a probe stuck half-open");
    assert_eq!(
        channel.in_flight.load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    stop.cancel();
    dispatcher.await.unwrap();
    finisher_task.await.unwrap();
}

/// Shutdown while sends are still out: the reports their answers bring are still taken (the
/// listener stays up until the in-flight sends have ended and their outcomes are written), so
/// they end `delivered`, not `sent` with their reports refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_for_sends_in_flight_at_shutdown_are_still_taken() {
    let mock = SmsMock::start(([127, 0, 0, 1], 0).into()).await.unwrap();
    mock.set_faults(clm_mocks::Faults {
        latency_ms: 1_000,
        ..Default::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let hub = start_hub(config_for(&mock, "kannel", dir.path(), |_| {}), dir).await;
    let items: Vec<Value> = (0..20).map(|_| sms_json("shutdown-dlr", "hi")).collect();
    let ids: Vec<String> = items.iter().map(id_of).collect();
    assert_eq!(hub.submit(&json!({ "communications": items })).await.0, 202);
    hub.wait_for(&ids, &["sending"], Duration::from_secs(5))
        .await;
    let _dir = hub.stop().await;
    let store = Store::connect(&format!("sqlite://{}", data.join("hub.db").display()), 1)
        .await
        .unwrap();
    let rows = store.count_by_status(Some("shutdown-dlr")).await.unwrap();
    assert_eq!(rows, [(Status::Delivered, 20)], "{:?}", mock.stats());
}

/// Issue 10, failure 7: callers never see the database's own error text, only a generic message
/// with an error id (the details go to the log); `/readyz` likewise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_errors_reach_callers_as_a_generic_message_with_an_error_id() {
    use sqlx::Connection;
    let mock = SmsMock::start(([127, 0, 0, 1], 0).into()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pg = pg_database().await;
    let name = pg.rsplit_once('/').unwrap().1.to_owned();
    let hub = start_hub(
        config_for(&mock, "kannel", dir.path(), |c| {
            c.store.url = Some(pg.clone())
        }),
        dir,
    )
    .await;
    // The database vanishes under the hub.
    let mut admin = sqlx::PgConnection::connect(&pg_url()).await.unwrap();
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .unwrap();
    let (status, body) = hub.submit(&sms_json("gone", "hi")).await;
    assert_eq!(status, 503, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("error id E-"), "{error}");
    for leak in ["database", name.as_str(), "does not exist", "terminat"] {
        assert!(!error.contains(leak), "{error}");
    }
    let r = hub.client.get(hub.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let v: Value = r.json().await.unwrap();
    let store = v["store"].as_str().unwrap();
    assert!(store.starts_with("unavailable (error id E-"), "{v}");
    assert!(!v.to_string().contains(&name), "{v}");
    hub.stop().await;
}
