//! The whole hub in-process (SQLite, in-process queue) against the SMS mock.

use std::time::Duration;

use chrono::Utc;
use clm_contracts::Status;
use clm_mocks::{DlrConfig, Faults, SmsMock, Throttle};
use serde_json::{Value, json};

use crate::harness::*;

async fn mock() -> SmsMock {
    SmsMock::start(([127, 0, 0, 1], 0).into()).await.unwrap()
}

async fn hub_with(
    mock: &SmsMock,
    dialect: &str,
    tweak: impl FnOnce(&mut clm_hub::Config),
) -> TestHub {
    let dir = tempfile::tempdir().unwrap();
    let config = config_for(mock, dialect, dir.path(), tweak);
    start_hub(config, dir).await
}

fn ids_of(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn count(hub: &TestHub, campaign: &str, status: Status) -> u64 {
    let rows = hub
        .hub
        .shared
        .store
        .count_by_status(Some(campaign))
        .await
        .unwrap();
    rows.into_iter()
        .find(|(s, _)| *s == status)
        .map_or(0, |(_, n)| n)
}

async fn wait_count(hub: &TestHub, campaign: &str, status: Status, n: u64, timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let got = count(hub, campaign, status).await;
        if got == n {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            let all = hub
                .hub
                .shared
                .store
                .count_by_status(Some(campaign))
                .await
                .unwrap();
            panic!("expected {n} {status} in {campaign}, have {all:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_1000_sms_reaches_delivered_through_mock_dlrs() {
    let mock = mock().await;
    let hub = hub_with(&mock, "kannel", |_| {}).await;
    let items: Vec<Value> = (0..1000)
        .map(|i| sms_json("bulk", &format!("Offer {i}")))
        .collect();
    let (status, body) = hub.submit(&json!({ "communications": items })).await;
    assert_eq!(status, 202);
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 1000);
    assert!(results.iter().all(|r| r["outcome"] == "accepted"), "{body}");
    wait_count(
        &hub,
        "bulk",
        Status::Delivered,
        1000,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(mock.accepted_count(), 1000);
    assert_eq!(mock.duplicates(), 0, "nothing is sent twice");
    // Every communication got its status events, in the in-process queue too.
    let events = hub
        .client
        .get(hub.url("/v1/events?limit=10000"))
        .send()
        .await
        .unwrap();
    let events: Value = events.json().await.unwrap();
    let delivered = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["routing_key"] == "status.sms.delivered")
        .count();
    assert_eq!(delivered, 1000);
    hub.stop().await;
}

#[tokio::test]
async fn an_invalid_item_is_rejected_with_its_reason_while_the_rest_are_accepted() {
    let mock = mock().await;
    let hub = hub_with(&mock, "kannel", |_| {}).await;
    let good = sms_json("mixed", "Hello");
    let mut no_recipient = sms_json("mixed", "Hello");
    no_recipient.as_object_mut().unwrap().remove("recipient");
    let mut bad_channel = sms_json("mixed", "Hello");
    bad_channel["channel"] = json!("fax");
    let mut bad_msisdn = sms_json("mixed", "Hello");
    bad_msisdn["recipient"] = json!("not-a-number");
    let not_enabled = json!({"id": uuid::Uuid::new_v4().to_string(), "campaign_id": "mixed",
        "customer_id": "c", "channel": "wink", "recipient": "acc-1",
        "content": {"subject": "s", "text": "x"}});
    let (status, body) = hub
        .submit(
            &json!({"communications": [good, no_recipient, bad_channel, bad_msisdn, not_enabled]}),
        )
        .await;
    assert_eq!(status, 202);
    let r = body["results"].as_array().unwrap();
    assert_eq!(r[0]["outcome"], "accepted");
    for (i, needle) in [
        (1, "recipient"),
        (2, "fax"),
        (3, "MSISDN"),
        (4, "not enabled"),
    ] {
        assert_eq!(r[i]["outcome"], "rejected", "{body}");
        let err = r[i]["error"].as_str().unwrap();
        assert!(err.contains(needle), "item {i}: {err}");
    }
    // A rejected item with a readable id is visible as `rejected`.
    let view = hub.view(r[3]["id"].as_str().unwrap()).await;
    assert_eq!(view["status"], "rejected");
    assert!(view["reason"].as_str().unwrap().contains("MSISDN"));
    hub.wait_for(
        &[good["id"].as_str().unwrap().to_owned()],
        &["delivered"],
        Duration::from_secs(10),
    )
    .await;
    hub.stop().await;
}

#[tokio::test]
async fn a_body_that_is_not_json_gets_400_and_too_many_items_413() {
    let mock = mock().await;
    let hub = hub_with(&mock, "kannel", |_| {}).await;
    let r = hub
        .client
        .post(hub.url("/v1/communications"))
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("not JSON"));
    let items: Vec<Value> = (0..1001).map(|_| sms_json("big", "x")).collect();
    let (status, body) = hub.submit(&json!({"communications": items})).await;
    assert_eq!(status, 413, "{body}");
    let (status, _) = hub.submit(&json!([1, 2])).await;
    assert_eq!(status, 400);
    let r = hub
        .client
        .get(hub.url("/v1/communications/not-a-uuid"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = hub
        .client
        .get(hub.url(&format!("/v1/communications/{}", uuid::Uuid::new_v4())))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    hub.stop().await;
}

#[tokio::test]
async fn a_duplicate_id_is_answered_duplicate_and_sent_once() {
    let mock = mock().await;
    let hub = hub_with(&mock, "kannel", |_| {}).await;
    let item = sms_json("dup", "Once only");
    let id = item["id"].as_str().unwrap().to_owned();
    let (_, first) = hub.submit(&item).await;
    assert_eq!(first["results"][0]["outcome"], "accepted");
    let (_, second) = hub
        .submit(&json!({"communications": [item.clone(), item]}))
        .await;
    assert_eq!(second["results"][0]["outcome"], "duplicate");
    assert_eq!(second["results"][1]["outcome"], "duplicate");
    hub.wait_for(
        std::slice::from_ref(&id),
        &["delivered"],
        Duration::from_secs(10),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(mock.accepted_ref_count(&id), 1);
    assert_eq!(mock.stats().total, 1);
    hub.stop().await;
}

#[tokio::test]
async fn retries_on_503_then_sends() {
    let mock = mock().await;
    mock.set_faults(Faults {
        script: vec![503],
        ..Faults::default()
    });
    let hub = hub_with(&mock, "kannel", |_| {}).await;
    let item = sms_json("retry", "Second time lucky");
    let id = item["id"].as_str().unwrap().to_owned();
    hub.submit(&item).await;
    hub.wait_for(
        std::slice::from_ref(&id),
        &["delivered"],
        Duration::from_secs(10),
    )
    .await;
    let view = hub.view(&id).await;
    let attempts = view["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{view:#}");
    assert_eq!(attempts[0]["classification"], "retry");
    assert!(attempts[0]["answer"].as_str().unwrap().starts_with("503"));
    assert_eq!(attempts[1]["classification"], "sent");
    assert_eq!(mock.accepted_ref_count(&id), 1);
    hub.stop().await;
}

#[tokio::test]
async fn a_400_fails_without_retry() {
    let mock = mock().await;
    mock.set_faults(Faults {
        script: vec![400],
        ..Faults::default()
    });
    let hub = hub_with(&mock, "kannel", |_| {}).await;
    let item = sms_json("fail", "Refused");
    let id = item["id"].as_str().unwrap().to_owned();
    hub.submit(&item).await;
    hub.wait_for(
        std::slice::from_ref(&id),
        &["failed"],
        Duration::from_secs(10),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let view = hub.view(&id).await;
    assert_eq!(view["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(view["attempts"][0]["classification"], "fail");
    assert_eq!(mock.stats().total, 1);
    hub.stop().await;
}

#[tokio::test]
async fn a_429_with_retry_after_defers_the_whole_channel() {
    let mock = mock().await;
    mock.set_faults(Faults {
        throttle: Some(Throttle {
            retry_after_secs: 2,
        }),
        ..Faults::default()
    });
    let hub = hub_with(&mock, "kannel", |_| {}).await;
    let first = sms_json("throttle", "A");
    let first_id = first["id"].as_str().unwrap().to_owned();
    hub.submit(&first).await;
    assert!(
        tokio::time::timeout(Duration::from_secs(5), async {
            while mock.stats().by_status.get(&429).copied().unwrap_or(0) == 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .is_ok(),
        "the mock never answered 429"
    );
    let throttled_at = Utc::now();
    // The gateway is fine again, but the hub must hold the whole channel until Retry-After.
    mock.set_faults(Faults::default());
    let second = sms_json("throttle", "B");
    let second_id = second["id"].as_str().unwrap().to_owned();
    hub.submit(&second).await;
    hub.wait_for(
        &[first_id.clone(), second_id.clone()],
        &["delivered"],
        Duration::from_secs(15),
    )
    .await;
    let accepted: Vec<_> = mock
        .received()
        .into_iter()
        .filter(|r| r.status == 202)
        .collect();
    assert_eq!(accepted.len(), 2);
    for r in &accepted {
        let waited = (r.at - throttled_at).num_milliseconds();
        assert!(
            waited >= 1800,
            "sent {waited} ms after the 429 with Retry-After: 2"
        );
    }
    let view = hub.view(&first_id).await;
    assert!(
        view["attempts"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("429")
    );
    let second_view = hub.view(&second_id).await;
    assert_eq!(
        second_view["attempts"].as_array().unwrap().len(),
        1,
        "B was held, not refused"
    );
    hub.stop().await;
}

#[tokio::test]
async fn an_expired_communication_is_never_sent() {
    let mock = mock().await;
    let hub = hub_with(&mock, "kannel", |_| {}).await;
    let mut past = sms_json("expiry", "Too late");
    past["expires_at"] = json!((Utc::now() - chrono::Duration::seconds(1)).to_rfc3339());
    // Expires while the channel is paused.
    hub.client
        .post(hub.url("/v1/channels/sms/pause"))
        .send()
        .await
        .unwrap();
    let mut soon = sms_json("expiry", "Almost");
    soon["expires_at"] = json!((Utc::now() + chrono::Duration::milliseconds(500)).to_rfc3339());
    let ids = vec![
        past["id"].as_str().unwrap().to_owned(),
        soon["id"].as_str().unwrap().to_owned(),
    ];
    hub.submit(&json!({"communications": [past, soon]})).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    hub.client
        .post(hub.url("/v1/channels/sms/resume"))
        .send()
        .await
        .unwrap();
    hub.wait_for(&ids, &["expired"], Duration::from_secs(10))
        .await;
    assert_eq!(mock.stats().total, 0);
    hub.stop().await;
}

#[tokio::test]
async fn a_cancelled_campaign_sends_nothing_more() {
    let mock = mock().await;
    let hub = hub_with(&mock, "kannel", |_| {}).await;
    hub.client
        .post(hub.url("/v1/channels/sms/pause"))
        .send()
        .await
        .unwrap();
    let doomed: Vec<Value> = (0..20).map(|_| sms_json("doomed", "Never")).collect();
    let other = sms_json("other", "Still goes");
    let mut all = doomed.clone();
    all.push(other.clone());
    hub.submit(&json!({"communications": all})).await;
    let r = hub
        .client
        .post(hub.url("/v1/campaigns/doomed/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["cancelled"], 20);
    // New submissions for a cancelled campaign are refused.
    let (_, late) = hub.submit(&sms_json("doomed", "Late")).await;
    assert_eq!(late["results"][0]["outcome"], "rejected");
    hub.client
        .post(hub.url("/v1/channels/sms/resume"))
        .send()
        .await
        .unwrap();
    hub.wait_for(
        &[other["id"].as_str().unwrap().to_owned()],
        &["delivered"],
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(count(&hub, "doomed", Status::Cancelled).await, 20);
    let doomed_ids = ids_of(&doomed);
    for r in mock.received() {
        assert!(
            !doomed_ids.contains(r.client_ref.as_ref().unwrap()),
            "a cancelled communication was sent"
        );
    }
    assert_eq!(mock.stats().total, 1);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configured_rate_is_held_at_the_mock() {
    let mock = mock().await;
    mock.set_dlr(DlrConfig {
        enabled: false,
        ..DlrConfig::default()
    });
    let rate = 50.0;
    let hub = hub_with(&mock, "kannel", |c| {
        let p = &mut c.channels.sms.policy;
        p.rate = rate;
        p.burst = 1;
    })
    .await;
    let n = 250;
    let items: Vec<Value> = (0..n).map(|i| sms_json("rate", &format!("m{i}"))).collect();
    hub.submit(&json!({"communications": items})).await;
    assert!(mock.wait_for_accepted(n, Duration::from_secs(30)).await);
    let mut times: Vec<_> = mock.received().into_iter().map(|r| r.at).collect();
    times.sort();
    let span = (times[times.len() - 1] - times[0])
        .num_microseconds()
        .unwrap() as f64
        / 1e6;
    let measured = (times.len() - 1) as f64 / span;
    assert!(span >= 4.0, "measured over {span:.2} s");
    assert!(
        (measured - rate).abs() / rate <= 0.05,
        "measured {measured:.2}/s for a limit of {rate}/s"
    );
    hub.stop().await;
}

#[tokio::test]
async fn cyrillic_reaches_the_kannel_mock_correctly_encoded() {
    let mock = mock().await;
    let hub = hub_with(&mock, "kannel", |_| {}).await;
    let text = "Привет! Скидка 20% на тариф «Игровой» до 31.12";
    let item = sms_json("cyr", text);
    let id = item["id"].as_str().unwrap().to_owned();
    hub.submit(&item).await;
    hub.wait_for(
        std::slice::from_ref(&id),
        &["delivered"],
        Duration::from_secs(10),
    )
    .await;
    let got = mock.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].text, text);
    assert_eq!(got[0].coding, clm_contracts::sms::Coding::Ucs2);
    assert_eq!(got[0].from, "RTK");
    hub.stop().await;
}

#[tokio::test]
async fn a_two_part_sms_is_delivered_when_both_parts_are() {
    let mock = mock().await;
    let hub = hub_with(&mock, "kannel", |_| {}).await;
    let item = sms_json("parts", &"Ж".repeat(100)); // UCS-2: 100 > 70, so 2 parts
    let id = item["id"].as_str().unwrap().to_owned();
    hub.submit(&item).await;
    hub.wait_for(
        std::slice::from_ref(&id),
        &["delivered"],
        Duration::from_secs(10),
    )
    .await;
    let view = hub.view(&id).await;
    assert_eq!(view["responses"].as_array().unwrap().len(), 2, "{view:#}");
    hub.stop().await;
}

#[tokio::test]
async fn the_json_dialect_sends_and_correlates_its_reports() {
    let mock = mock().await;
    let hub = hub_with(&mock, "json", |_| {}).await;
    let item = sms_json("json", "Hello JSON");
    let id = item["id"].as_str().unwrap().to_owned();
    hub.submit(&item).await;
    hub.wait_for(
        std::slice::from_ref(&id),
        &["delivered"],
        Duration::from_secs(10),
    )
    .await;
    let view = hub.view(&id).await;
    assert!(
        view["external_id"].as_str().is_some_and(|s| !s.is_empty()),
        "{view:#}"
    );
    assert_eq!(mock.received()[0].client_ref.as_deref(), Some(id.as_str()));
    hub.stop().await;
}

#[tokio::test]
async fn undelivered_reports_fail_the_communication() {
    let mock = mock().await;
    mock.set_dlr(DlrConfig {
        delivered_share: 0.0,
        undelivered_share: 1.0,
        ..DlrConfig::default()
    });
    let hub = hub_with(&mock, "kannel", |_| {}).await;
    let item = sms_json("undeliv", "Nobody home");
    let id = item["id"].as_str().unwrap().to_owned();
    hub.submit(&item).await;
    hub.wait_for(
        std::slice::from_ref(&id),
        &["failed"],
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(hub.view(&id).await["responses"][0]["kind"], "undelivered");
    hub.stop().await;
}

#[tokio::test]
async fn a_timeout_after_sending_is_unknown_and_not_resent() {
    let mock = mock().await;
    mock.set_faults(Faults {
        timeout_rate: 1.0,
        ..Faults::default()
    });
    let hub = hub_with(&mock, "kannel", |c| {
        c.channels.sms.policy.timeout_ms = 300;
    })
    .await;
    let item = sms_json("timeout", "Lost in the post");
    let id = item["id"].as_str().unwrap().to_owned();
    hub.submit(&item).await;
    hub.wait_for(
        std::slice::from_ref(&id),
        &["unknown"],
        Duration::from_secs(10),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(mock.stats().total, 1);
    assert_eq!(
        hub.view(&id).await["attempts"][0]["classification"],
        "unknown"
    );
    hub.stop().await;
}

#[tokio::test]
async fn not_before_defers_sending() {
    let mock = mock().await;
    let hub = hub_with(&mock, "kannel", |_| {}).await;
    let mut item = sms_json("later", "Tomorrow's news");
    let at = Utc::now() + chrono::Duration::milliseconds(1500);
    item["not_before"] = json!(at.to_rfc3339());
    let id = item["id"].as_str().unwrap().to_owned();
    hub.submit(&item).await;
    assert_eq!(hub.status(&id).await, "scheduled");
    hub.wait_for(
        std::slice::from_ref(&id),
        &["delivered"],
        Duration::from_secs(10),
    )
    .await;
    assert!(mock.received()[0].at >= at);
    hub.stop().await;
}

#[tokio::test]
async fn the_api_and_ingest_demand_tokens_when_configured() {
    let mock = mock().await;
    let hub = hub_with(&mock, "kannel", |c| {
        c.server.api_token = Some("api-secret".into());
        c.channels.sms.ingest.token = Some("dlr-secret".into());
    })
    .await;
    let item = sms_json("auth", "Hi");
    let id = item["id"].as_str().unwrap().to_owned();
    let r = hub
        .client
        .post(hub.url("/v1/communications"))
        .json(&item)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = hub
        .client
        .post(hub.url("/v1/communications"))
        .bearer_auth("api-secret")
        .json(&item)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    // The connector puts the ingest token into Kannel's dlr-url, so reports get through.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let v: Value = hub
            .client
            .get(hub.url(&format!("/v1/communications/{id}")))
            .bearer_auth("api-secret")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v["status"] == "delivered" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not delivered: {v:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Without the token, a report is refused.
    let r = hub
        .client
        .get(hub.url(&format!("/ingest/sms?id={id}&type=1")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Malformed and unknown reports get clear 4xx answers.
    let r = hub
        .client
        .get(hub.url("/ingest/sms?token=dlr-secret&id=nope&type=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = hub
        .client
        .get(hub.url(&format!(
            "/ingest/sms?token=dlr-secret&id={}&type=1",
            uuid::Uuid::new_v4()
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    hub.stop().await;
}

#[tokio::test]
async fn a_repeated_report_is_recorded_once() {
    let mock = mock().await;
    mock.set_dlr(DlrConfig {
        enabled: false,
        ..DlrConfig::default()
    });
    let hub = hub_with(&mock, "kannel", |_| {}).await;
    let item = sms_json("dlrdup", "Hi");
    let id = item["id"].as_str().unwrap().to_owned();
    hub.submit(&item).await;
    hub.wait_for(
        std::slice::from_ref(&id),
        &["sent"],
        Duration::from_secs(10),
    )
    .await;
    let url = hub.url(&format!(
        "/ingest/sms?id={id}&type=1&smsc_id=abc&ts=1700000000"
    ));
    let first: Value = hub
        .client
        .get(&url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(first["outcome"], "recorded");
    let again: Value = hub
        .client
        .post(&url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again["outcome"], "duplicate");
    let view = hub.view(&id).await;
    assert_eq!(view["status"], "delivered");
    assert_eq!(view["responses"].as_array().unwrap().len(), 1);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_in_flight_sends_and_strands_nothing() {
    let mock = mock().await;
    mock.set_faults(Faults {
        latency_ms: 400,
        ..Faults::default()
    });
    mock.set_dlr(DlrConfig {
        enabled: false,
        ..DlrConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let config = config_for(&mock, "kannel", dir.path(), |c| {
        let p = &mut c.channels.sms.policy;
        p.concurrency = 8;
        p.rate = 200.0;
    });
    let store_url = config.store_url();
    let hub = start_hub(config, dir).await;
    let items: Vec<Value> = (0..100)
        .map(|i| sms_json("drain", &format!("m{i}")))
        .collect();
    hub.submit(&json!({"communications": items})).await;
    let sms = hub.hub.shared.channels[&clm_contracts::ChannelId::Sms].clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while sms.in_flight.load(std::sync::atomic::Ordering::Relaxed) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no send went in flight"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let keep = hub.stop().await;
    let sent_at_mock = mock.accepted_count();
    // Reopen the store: nothing is left claimed, everything sent is recorded as sent.
    let store = clm_hub::store::Store::connect(&store_url, 2).await.unwrap();
    let rows = store.count_by_status(Some("drain")).await.unwrap();
    let get = |s: Status| rows.iter().find(|(x, _)| *x == s).map_or(0, |(_, n)| *n);
    assert_eq!(get(Status::Sending), 0, "{rows:?}");
    assert_eq!(get(Status::Sent), sent_at_mock, "{rows:?}");
    assert_eq!(
        get(Status::Sent) + get(Status::Scheduled) + get(Status::Received),
        100,
        "{rows:?}"
    );
    drop(keep);
}

#[tokio::test]
async fn metrics_and_channels_report_the_channel() {
    let mock = mock().await;
    let hub = hub_with(&mock, "kannel", |_| {}).await;
    let item = sms_json("obs", "Hi");
    let id = item["id"].as_str().unwrap().to_owned();
    hub.submit(&item).await;
    hub.wait_for(
        std::slice::from_ref(&id),
        &["delivered"],
        Duration::from_secs(10),
    )
    .await;
    let text = hub.metrics_text().await;
    assert!(
        text.contains("clm_dispatch_outcomes_total{channel=\"sms\",outcome=\"sent\"} 1"),
        "{text}"
    );
    assert!(text.contains("clm_intake_total{outcome=\"accepted\"} 1"));
    assert!(!text.contains("+7900"), "no recipients in metrics");
    let ch: Value = hub
        .client
        .get(hub.url("/v1/channels"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sms = ch["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "sms")
        .unwrap()
        .clone();
    assert_eq!(sms["state"], "running");
    assert_eq!(sms["counters"]["sent"], 1);
    assert_eq!(sms["breaker"], "closed");
    let r = hub.client.get(hub.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    hub.stop().await;
}

#[tokio::test]
async fn outside_the_send_window_a_communication_waits_for_the_opening() {
    let mock = mock().await;
    // A one-minute window that is not now, in the recipient's zone.
    let now = Utc::now().with_timezone(&chrono_tz::Asia::Vladivostok);
    let start = (now + chrono::Duration::hours(2))
        .format("%H:%M")
        .to_string();
    let end = (now + chrono::Duration::hours(2) + chrono::Duration::minutes(1))
        .format("%H:%M")
        .to_string();
    let hub = hub_with(&mock, "kannel", |c| {
        c.channels.sms.policy.window = Some(clm_hub::config::WindowConfig {
            start,
            end,
            timezone: "Europe/Moscow".into(),
        });
    })
    .await;
    let mut item = sms_json("quiet", "Not at night");
    item["timezone"] = json!("Asia/Vladivostok");
    let id = item["id"].as_str().unwrap().to_owned();
    hub.submit(&item).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let view = loop {
        let v = hub.view(&id).await;
        if v["reason"] == "outside the send window" {
            break v;
        }
        assert!(tokio::time::Instant::now() < deadline, "{v:#}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(view["status"], "scheduled");
    let next: chrono::DateTime<Utc> = view["next_attempt_at"].as_str().unwrap().parse().unwrap();
    let wait = next - Utc::now();
    assert!(
        wait > chrono::Duration::minutes(110) && wait < chrono::Duration::minutes(121),
        "{wait}"
    );
    assert_eq!(mock.stats().total, 0);
    hub.stop().await;
}

#[tokio::test]
async fn the_embedded_default_sends_through_its_bundled_mock() {
    let dir = tempfile::tempdir().unwrap();
    let config = crate::harness::sandbox_config(dir.path());
    let hub = start_hub(config, dir).await;
    let item = sms_json("sandbox", "Привет из песочницы");
    let id = item["id"].as_str().unwrap().to_owned();
    hub.submit(&item).await;
    hub.wait_for(
        std::slice::from_ref(&id),
        &["delivered"],
        Duration::from_secs(10),
    )
    .await;
    let sandbox = hub
        .hub
        .sandbox
        .as_ref()
        .expect("sandbox mocks run in-process");
    assert_eq!(
        sandbox.sms.as_ref().unwrap().received()[0].text,
        "Привет из песочницы"
    );
    hub.stop().await;
}

#[tokio::test]
async fn kannel_reports_posted_as_forms_are_taken_with_their_token() {
    let mock = mock().await;
    mock.set_dlr(DlrConfig {
        method: clm_mocks::DlrMethod::Post,
        ..DlrConfig::default()
    });
    let hub = hub_with(&mock, "kannel", |c| {
        c.channels.sms.ingest.token = Some("form-secret".into());
    })
    .await;
    let item = sms_json("form", "Posted report");
    let id = item["id"].as_str().unwrap().to_owned();
    hub.submit(&item).await;
    hub.wait_for(
        std::slice::from_ref(&id),
        &["delivered"],
        Duration::from_secs(10),
    )
    .await;
    hub.stop().await;
}
