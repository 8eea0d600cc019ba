//! Wink, ELK and EISSD end to end on the embedded default: the hub in-process with its bundled
//! mocks (sandbox), SQLite store, the EISSD DWH as the mock's SQLite file.

use std::time::Duration;

use clm_contracts::ChannelId;
use clm_mocks::{ChannelMock, Faults};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use uuid::Uuid;

use crate::harness::{TestHub, sandbox_config, start_hub};

const CHANNELS: [ChannelId; 3] = [ChannelId::Wink, ChannelId::Elk, ChannelId::Eissd];

/// The embedded default (no file), on port 0 in a temp dir, with fast retries; `tweak` may change
/// the config before it is validated.
async fn sandbox_hub(tweak: impl FnOnce(&mut clm_hub::Config)) -> TestHub {
    let dir = tempfile::tempdir().unwrap();
    let mut config = sandbox_config(dir.path());
    for id in CHANNELS {
        let ch = config.channels.get_mut(id);
        assert!(ch.is_enabled(), "{id} is on in the embedded default");
        let p = ch.policy_mut();
        p.timeout_ms = 2_000;
        p.backoff_initial_ms = 50;
        p.backoff_max_ms = 200;
    }
    let eissd = &mut config.channels.eissd;
    if let Some(r) = eissd.responses.as_mut() {
        r.poll_ms = 50;
    } else {
        eissd.responses = Some(clm_hub::config::DwhConfig {
            poll_ms: 50,
            settle_ms: 500,
            ..Default::default()
        });
    }
    tweak(&mut config);
    config.validate().unwrap();
    start_hub(config, dir).await
}

fn mock(hub: &TestHub, id: ChannelId) -> &ChannelMock {
    hub.hub
        .sandbox
        .as_ref()
        .and_then(|s| s.mock(id))
        .unwrap_or_else(|| panic!("the sandbox runs a {id} mock"))
}

/// A valid communication for `channel`.
pub(crate) fn comm(channel: ChannelId, campaign: &str) -> Value {
    let id = Uuid::new_v4().to_string();
    match channel {
        ChannelId::Wink => json!({
            "id": id, "campaign_id": campaign, "customer_id": "cust-1", "channel": "wink",
            "recipient": "wink-acc-1",
            "content": {"subject": "Новый сезон", "text": "Смотрите сегодня",
                        "params": {"deep_link": "wink://series/42"}},
        }),
        ChannelId::Elk => json!({
            "id": id, "campaign_id": campaign, "customer_id": "cust-1", "channel": "elk",
            "recipient": "lk-acc-1",
            "content": {"subject": "Ваше предложение", "text": "Скидка 20 %", "offer_code": "OFF-20"},
            "attributes": {"surfaces": "mobile"},
        }),
        ChannelId::Eissd => json!({
            "id": id, "campaign_id": campaign, "customer_id": "cust-1", "channel": "eissd",
            "recipient": "cust-1",
            "content": {"offer_code": "FIBER-500"},
        }),
        other => panic!("no HTTP JSON channel {other}"),
    }
}

fn id_of(v: &Value) -> String {
    v["id"].as_str().unwrap().to_owned()
}

/// Waits until the communication has at least `n` responses; returns its view.
async fn wait_responses(hub: &TestHub, id: &str, n: usize, timeout: Duration) -> Value {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let v = hub.view(id).await;
        if v["responses"].as_array().map_or(0, Vec::len) >= n {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            // What the mock sent and what the hub's ingest and poller saw, to tell which side lost it.
            let channel: ChannelId = v["channel"].as_str().unwrap().parse().unwrap();
            let stats = mock(hub, channel).stats();
            let metrics = hub.metrics_text().await;
            let seen: Vec<&str> = metrics
                .lines()
                .filter(|l| l.starts_with("clm_ingest") || l.starts_with("clm_dwh"))
                .collect();
            panic!(
                "{n} responses not recorded within {timeout:?}: {v:#}\nmock: {stats:?}\nhub: {seen:#?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn events(hub: &TestHub) -> Vec<Value> {
    let v: Value = hub
        .client
        .get(hub.url("/v1/events?limit=10000"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["events"].as_array().unwrap().clone()
}

fn kinds(view: &Value) -> Vec<String> {
    let mut k: Vec<String> = view["responses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap().to_owned())
        .collect();
    k.sort();
    k
}

/// Sent through the bundled mock, then every automatic response recorded once and published.
async fn sent_then_responses(channel: ChannelId, expected: &[&str], status: &str) {
    let hub = sandbox_hub(|_| {}).await;
    let item = comm(channel, "resp");
    let id = id_of(&item);
    let (code, _) = hub.submit(&item).await;
    assert_eq!(code, 202);
    hub.wait_for(
        std::slice::from_ref(&id),
        &["sent", "delivered"],
        Duration::from_secs(10),
    )
    .await;
    let view = wait_responses(&hub, &id, expected.len(), Duration::from_secs(15)).await;
    let mut want: Vec<String> = expected.iter().map(|s| (*s).to_owned()).collect();
    want.sort();
    assert_eq!(kinds(&view), want, "{view:#}");
    hub.wait_for(std::slice::from_ref(&id), &[status], Duration::from_secs(5))
        .await;
    let m = mock(&hub, channel);
    assert_eq!(m.accepted_ref_count(id.parse().unwrap()), 1);
    let attempt = &hub.view(&id).await["attempts"][0];
    assert_eq!(attempt["classification"], "sent");
    assert!(
        attempt["external_id"]
            .as_str()
            .is_some_and(|x| !x.is_empty()),
        "{attempt}"
    );
    // Every response went out as an event.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let published = events(&hub)
            .await
            .iter()
            .filter(|e| {
                e["routing_key"]
                    .as_str()
                    .is_some_and(|k| k.starts_with(&format!("response.{channel}.")))
            })
            .count();
        if published == expected.len() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{published} response events"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wink_is_sent_and_its_webhooks_recorded() {
    sent_then_responses(
        ChannelId::Wink,
        &["delivered", "shown", "clicked"],
        "delivered",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elk_is_sent_and_its_webhooks_recorded() {
    sent_then_responses(
        ChannelId::Elk,
        &["delivered", "read", "offer_accepted"],
        "delivered",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eissd_is_sent_and_its_dwh_rows_recorded() {
    // EISSD's rows speak about the offer, not about delivery: the status stays `sent`.
    sent_then_responses(ChannelId::Eissd, &["interested"], "sent").await;
}

/// Submits one communication and waits until it reaches `status`; returns its id and view.
async fn submit_until(
    hub: &TestHub,
    channel: ChannelId,
    campaign: &str,
    status: &str,
) -> (String, Value) {
    let item = comm(channel, campaign);
    let id = id_of(&item);
    hub.submit(&item).await;
    hub.wait_for(
        std::slice::from_ref(&id),
        &[status],
        Duration::from_secs(10),
    )
    .await;
    let view = hub.view(&id).await;
    (id, view)
}

/// The classification of every answer, per channel: 503 and 500 retried, 429 retried after
/// Retry-After, 400 failed without retry, no answer within the timeout `unknown` and not resent.
async fn classification(channel: ChannelId) {
    let hub = sandbox_hub(|c| {
        // Long enough that a loaded machine's slow answer is not taken for silence.
        c.channels.get_mut(channel).policy_mut().timeout_ms = 2_000;
    })
    .await;
    let m = mock(&hub, channel);
    m.set_responses(clm_mocks::ResponsesConfig::default());

    // 503 then 500, then accepted: sent on the third attempt.
    m.set_faults(Faults {
        script: vec![503, 500],
        ..Faults::default()
    });
    let (_, v) = submit_until(&hub, channel, "retry", "sent").await;
    let classes: Vec<&str> = v["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["classification"].as_str().unwrap())
        .collect();
    assert_eq!(classes, ["retry", "retry", "sent"], "{v:#}");
    assert!(
        v["attempts"][0]["answer"]
            .as_str()
            .unwrap()
            .starts_with("503"),
        "{v:#}"
    );

    // 429 with Retry-After: 1: retried, not before a second has passed.
    m.set_faults(Faults {
        script: vec![429],
        ..Faults::default()
    });
    let (_, v) = submit_until(&hub, channel, "throttle", "sent").await;
    let a = v["attempts"].as_array().unwrap();
    assert_eq!(a.len(), 2, "{v:#}");
    assert_eq!(a[0]["classification"], "retry");
    let t0: chrono::DateTime<chrono::Utc> = a[0]["started_at"].as_str().unwrap().parse().unwrap();
    let t1: chrono::DateTime<chrono::Utc> = a[1]["started_at"].as_str().unwrap().parse().unwrap();
    assert!(
        (t1 - t0).num_milliseconds() >= 900,
        "Retry-After honoured: {v:#}"
    );

    // 400: failed at once, one attempt.
    m.set_faults(Faults {
        script: vec![400],
        ..Faults::default()
    });
    let (_, v) = submit_until(&hub, channel, "refused", "failed").await;
    assert_eq!(v["attempts"].as_array().unwrap().len(), 1, "{v:#}");
    assert_eq!(v["attempts"][0]["classification"], "fail");

    // No answer: unknown after the attempt timeout, and never resent.
    m.set_faults(Faults {
        script: vec![0],
        ..Faults::default()
    });
    let before = m.stats().requests;
    let (id, _) = submit_until(&hub, channel, "silent", "unknown").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(m.stats().requests, before + 1, "not resent");
    assert_eq!(
        hub.view(&id).await["attempts"][0]["classification"],
        "unknown"
    );
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wink_answers_are_classified() {
    classification(ChannelId::Wink).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elk_answers_are_classified() {
    classification(ChannelId::Elk).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eissd_answers_are_classified() {
    classification(ChannelId::Eissd).await;
}

fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A kind both Wink and ELK send.
const DELIVERED: &str = "delivered";

fn webhook(channel: ChannelId, message_id: &str, event_id: &str, kind: &str) -> Value {
    let mut w = json!({
        "event_id": event_id,
        "message_id": message_id,
        "kind": kind,
        "occurred_at": "2026-01-01T10:00:00Z",
    });
    if channel == ChannelId::Elk {
        w["surface"] = "web".into();
    }
    w
}

async fn post(hub: &TestHub, path: &str, body: &[u8], signature: Option<&str>) -> (u16, Value) {
    let mut r = hub
        .client
        .post(hub.url(path))
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(s) = signature {
        r = r.header("x-clm-signature", s);
    }
    let r = r.send().await.unwrap();
    let code = r.status().as_u16();
    (code, r.json().await.unwrap_or(Value::Null))
}

/// Webhooks signed with HMAC: the mock's signed ones are recorded; unsigned, wrongly signed,
/// malformed and unknown ones get clear 4xx answers and are counted; a repeat is recorded once.
async fn webhooks_are_checked(channel: ChannelId) {
    let secret = "hook-secret-5f2a";
    let hub = sandbox_hub(|c| {
        c.channels
            .get_mut(channel)
            .ingest_mut()
            .expect("a webhook channel")
            .hmac_secret = Some(secret.into());
    })
    .await;
    let path = format!("/ingest/{channel}");
    // The mock signs with the same secret: its automatic webhooks are accepted.
    let item = comm(channel, "signed");
    let id = id_of(&item);
    hub.submit(&item).await;
    wait_responses(&hub, &id, 3, Duration::from_secs(15)).await;

    let body = serde_json::to_vec(&webhook(channel, &id, "ev-manual-1", DELIVERED)).unwrap();
    let (code, v) = post(&hub, &path, &body, None).await;
    assert_eq!(code, 401, "unsigned: {v}");
    let (code, v) = post(&hub, &path, &body, Some(&sign("not-the-secret", &body))).await;
    assert_eq!(code, 401, "wrongly signed: {v}");
    let mut tampered = body.clone();
    tampered.extend_from_slice(b" ");
    let (code, _) = post(&hub, &path, &tampered, Some(&sign(secret, &body))).await;
    assert_eq!(code, 401, "body changed after signing");

    let good = sign(secret, &body);
    let (code, v) = post(&hub, &path, &body, Some(&good)).await;
    assert_eq!(
        (code, v["outcome"].as_str()),
        (200, Some("recorded")),
        "{v}"
    );
    let (code, v) = post(&hub, &path, &body, Some(&good)).await;
    assert_eq!(
        (code, v["outcome"].as_str()),
        (200, Some("duplicate")),
        "{v}"
    );
    assert_eq!(
        hub.view(&id).await["responses"].as_array().unwrap().len(),
        4
    );

    // Issue 10: U+0000 (or a lone surrogate) in a field is refused with the field named, and
    // nothing is recorded; the same webhook without it goes in.
    let mut poisoned = webhook(channel, &id, "ev-\u{0}-nul", DELIVERED);
    let body = serde_json::to_vec(&poisoned).unwrap();
    let (code, v) = post(&hub, &path, &body, Some(&sign(secret, &body))).await;
    assert_eq!(code, 400, "{v}");
    assert!(v["error"].as_str().unwrap().starts_with("event_id"), "{v}");
    let surrogate = String::from_utf8(body.clone())
        .unwrap()
        .replace("\\u0000", "\\ud800");
    assert_ne!(
        surrogate.as_bytes(),
        body.as_slice(),
        "the NUL is escaped in the JSON"
    );
    let (code, v) = post(
        &hub,
        &path,
        surrogate.as_bytes(),
        Some(&sign(secret, surrogate.as_bytes())),
    )
    .await;
    assert_eq!(code, 400, "{v}");
    poisoned["event_id"] = "ev-clean".into();
    let body = serde_json::to_vec(&poisoned).unwrap();
    let (code, v) = post(&hub, &path, &body, Some(&sign(secret, &body))).await;
    assert_eq!(
        (code, v["outcome"].as_str()),
        (200, Some("recorded")),
        "{v}"
    );
    assert_eq!(
        hub.view(&id).await["responses"].as_array().unwrap().len(),
        5
    );

    // Malformed: not JSON, a misspelt field, an unknown kind, empty.
    for (bad, what) in [
        (b"{not json".to_vec(), "not JSON"),
        (
            serde_json::to_vec(&{
                let mut w = webhook(channel, &id, "ev-2", DELIVERED);
                w["kindd"] = DELIVERED.into();
                w
            })
            .unwrap(),
            "kindd",
        ),
        (
            serde_json::to_vec(&webhook(channel, &id, "ev-3", "exploded")).unwrap(),
            "exploded",
        ),
        (Vec::new(), "empty"),
    ] {
        let (code, v) = post(&hub, &path, &bad, Some(&sign(secret, &bad))).await;
        assert_eq!(code, 400, "{what}: {v}");
        assert!(
            v["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{what}: {v}"
        );
    }
    // Unknown communication.
    let stray = serde_json::to_vec(&webhook(
        channel,
        &Uuid::new_v4().to_string(),
        "ev-4",
        DELIVERED,
    ))
    .unwrap();
    let (code, v) = post(&hub, &path, &stray, Some(&sign(secret, &stray))).await;
    assert_eq!(code, 404, "{v}");

    let metrics = hub.metrics_text().await;
    for line in [
        "clm_ingest_total{outcome=\"unauthorized\"} 3",
        // The four malformed above, and the NUL and the lone surrogate.
        "clm_ingest_total{outcome=\"malformed\"} 6",
        "clm_ingest_total{outcome=\"unknown_communication\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
    assert_eq!(
        hub.view(&id).await["responses"].as_array().unwrap().len(),
        5
    );
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wink_webhooks_are_authenticated_validated_and_deduplicated() {
    webhooks_are_checked(ChannelId::Wink).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elk_webhooks_are_authenticated_validated_and_deduplicated() {
    webhooks_are_checked(ChannelId::Elk).await;
}

#[tokio::test]
async fn a_token_protects_webhooks_too() {
    let hub = sandbox_hub(|c| {
        c.channels.wink.ingest.token = Some("tok-91".into());
    })
    .await;
    let item = comm(ChannelId::Wink, "token");
    let id = id_of(&item);
    hub.submit(&item).await;
    // The mock sends the token: its webhooks are recorded.
    wait_responses(&hub, &id, 3, Duration::from_secs(15)).await;
    let body = serde_json::to_vec(&webhook(ChannelId::Wink, &id, "ev-t", "dismissed")).unwrap();
    let r = hub
        .client
        .post(hub.url("/ingest/wink"))
        .header("x-clm-token", "wrong")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = hub
        .client
        .post(hub.url("/ingest/wink"))
        .header("x-clm-token", "tok-91")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    hub.stop().await;
}

#[tokio::test]
async fn communications_missing_what_their_channel_needs_are_rejected_at_intake() {
    let hub = sandbox_hub(|_| {}).await;
    let mut w = comm(ChannelId::Wink, "bad");
    w["content"].as_object_mut().unwrap().remove("subject");
    let (code, v) = hub.submit(&w).await;
    assert_eq!(
        (code, &v["results"][0]["outcome"]),
        (202, &json!("rejected")),
        "{v}"
    );
    assert!(
        v["results"][0]["error"]
            .as_str()
            .unwrap()
            .contains("content.subject"),
        "{v}"
    );
    let mut e = comm(ChannelId::Eissd, "bad");
    e["content"] = json!({"text": "no offer"});
    let (code, v) = hub.submit(&e).await;
    assert_eq!(
        (code, &v["results"][0]["outcome"]),
        (202, &json!("rejected")),
        "{v}"
    );
    assert!(
        v["results"][0]["error"]
            .as_str()
            .unwrap()
            .contains("content.offer_code"),
        "{v}"
    );
    hub.stop().await;
}
