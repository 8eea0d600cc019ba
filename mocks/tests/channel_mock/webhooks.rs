//! Webhooks of wink and elk: the contract's body, token and HMAC signature, retries, duplicates.

use std::collections::BTreeSet;
use std::time::Duration;

use clm_contracts::ChannelId;
use clm_contracts::channels::{elk, wink};
use clm_mocks::{ChannelMockConfig, ResponsesConfig};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

use crate::harness::{Hook, Receiver, WAIT, request, send, start_with};

pub const SECRET: &str = "hmac-secret";
pub const TOKEN: &str = "ingest-token";

fn responses(channel: ChannelId, receiver: &Receiver) -> ResponsesConfig {
    ResponsesConfig {
        webhook_url: Some(receiver.url(channel)),
        token: Some(TOKEN.into()),
        hmac_secret: Some(SECRET.into()),
        delay_ms: 5,
        ..ResponsesConfig::typical(channel)
    }
}

/// Checks `X-CLM-Signature: sha256=<hex>` against the raw body, and the token header.
pub fn assert_authenticated(hook: &Hook) {
    assert_eq!(hook.headers["x-clm-token"], TOKEN);
    assert_eq!(hook.headers["authorization"], format!("Bearer {TOKEN}"));
    assert_eq!(hook.headers["content-type"], "application/json");
    let signature = hook.headers["x-clm-signature"].to_str().unwrap();
    let hex_signature = signature
        .strip_prefix("sha256=")
        .unwrap_or_else(|| panic!("no sha256= prefix: {signature}"));
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(&hook.body);
    mac.verify_slice(&hex::decode(hex_signature).unwrap())
        .expect("the signature matches the body");
}

#[tokio::test]
async fn wink_webhooks_are_signed_and_follow_the_typical_life() {
    let receiver = Receiver::start().await;
    let config = ChannelMockConfig {
        responses: responses(ChannelId::Wink, &receiver),
        ..ChannelMockConfig::default()
    };
    let mock = start_with(ChannelId::Wink, config).await;
    let id = Uuid::new_v4();
    let answer: wink::SendResponse = send(&mock, &request(ChannelId::Wink, id))
        .await
        .json()
        .await
        .unwrap();
    assert!(mock.wait_for_responses(3, WAIT).await);
    let hooks = receiver.wait_for(3).await;
    let mut kinds = Vec::new();
    let mut event_ids = BTreeSet::new();
    for hook in &hooks {
        assert_authenticated(hook);
        let webhook: wink::Webhook = serde_json::from_slice(&hook.body).expect("strict Webhook");
        assert_eq!(webhook.message_id, id);
        assert_eq!(webhook.wink_id.as_deref(), Some(answer.wink_id.as_str()));
        kinds.push(webhook.kind);
        event_ids.insert(webhook.event_id);
    }
    assert_eq!(
        kinds,
        [
            wink::WebhookKind::Delivered,
            wink::WebhookKind::Shown,
            wink::WebhookKind::Clicked
        ],
        "in order"
    );
    assert_eq!(event_ids.len(), 3, "a fresh event_id per event");
    let stats = mock.stats();
    assert_eq!((stats.responses_sent, stats.responses_failed), (3, 0));

    // A repeated send gets no second set of responses.
    send(&mock, &request(ChannelId::Wink, id)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.all().len(), 3);
}

#[tokio::test]
async fn elk_webhooks_carry_the_first_surface() {
    let receiver = Receiver::start().await;
    let config = ChannelMockConfig {
        responses: responses(ChannelId::Elk, &receiver),
        ..ChannelMockConfig::default()
    };
    let mock = start_with(ChannelId::Elk, config).await;
    let id = Uuid::new_v4();
    let answer: elk::SendResponse = send(&mock, &request(ChannelId::Elk, id))
        .await
        .json()
        .await
        .unwrap();
    let hooks = receiver.wait_for(3).await;
    let last: elk::Webhook = serde_json::from_slice(&hooks[2].body).unwrap();
    assert_eq!(last.kind, elk::WebhookKind::OfferAccepted);
    assert_eq!(last.surface, Some(elk::Surface::Mobile));
    assert_eq!(last.elk_id, Some(answer.elk_id));
    assert_eq!(hooks[0].json()["kind"], "delivered");
    assert_authenticated(&hooks[1]);
}

#[tokio::test]
async fn a_503_from_the_receiver_is_retried_and_a_400_is_not() {
    let receiver = Receiver::start().await;
    receiver.script(&[503, 503]);
    let config = ChannelMockConfig {
        responses: ResponsesConfig {
            kinds: vec!["delivered".into()],
            ..responses(ChannelId::Wink, &receiver)
        },
        ..ChannelMockConfig::default()
    };
    let mock = start_with(ChannelId::Wink, config).await;
    send(&mock, &request(ChannelId::Wink, Uuid::new_v4())).await;
    let taken = receiver.wait_for(1).await;
    let all = receiver.all();
    assert_eq!(
        all.iter().map(|h| h.answered).collect::<Vec<_>>(),
        [503, 503, 200]
    );
    assert!(
        all.iter().all(|h| h.body == taken[0].body),
        "the same event each time"
    );
    assert!(mock.wait_for_responses(1, WAIT).await);
    assert_eq!(mock.stats().responses_failed, 0);

    receiver.script(&[400]);
    send(&mock, &request(ChannelId::Wink, Uuid::new_v4())).await;
    assert!(crate::harness::wait_until(|| mock.stats().responses_failed == 1).await);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(receiver.all().len(), 4, "no retry after a 400");
    assert_eq!(mock.stats().responses_sent, 1);
}

#[tokio::test]
async fn duplicate_rate_one_sends_every_webhook_twice_with_the_same_event_id() {
    let receiver = Receiver::start().await;
    let config = ChannelMockConfig {
        responses: ResponsesConfig {
            duplicate_rate: 1.0,
            ..responses(ChannelId::Wink, &receiver)
        },
        ..ChannelMockConfig::default()
    };
    let mock = start_with(ChannelId::Wink, config).await;
    send(&mock, &request(ChannelId::Wink, Uuid::new_v4())).await;
    let hooks = receiver.wait_for(6).await;
    assert!(mock.wait_for_responses(6, WAIT).await);
    let event_ids: Vec<String> = hooks
        .iter()
        .map(|h| h.json()["event_id"].as_str().unwrap().to_owned())
        .collect();
    for pair in event_ids.chunks(2) {
        assert_eq!(pair[0], pair[1], "{event_ids:?}");
    }
    assert_eq!(event_ids.iter().collect::<BTreeSet<_>>().len(), 3);
    assert_eq!(mock.stats().responses_duplicated, 3);
}

#[tokio::test]
async fn without_a_webhook_url_responses_count_as_failed() {
    let config = ChannelMockConfig {
        responses: ResponsesConfig {
            delay_ms: 0,
            ..ResponsesConfig::typical(ChannelId::Elk)
        },
        ..ChannelMockConfig::default()
    };
    let mock = start_with(ChannelId::Elk, config).await;
    assert_eq!(
        send(&mock, &request(ChannelId::Elk, Uuid::new_v4()))
            .await
            .status(),
        200
    );
    assert!(crate::harness::wait_until(|| mock.stats().responses_failed == 3).await);
}

#[tokio::test]
async fn an_unreachable_receiver_is_retried_then_given_up() {
    // A port nobody listens on: bound, then released.
    let addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let config = ChannelMockConfig {
        responses: ResponsesConfig {
            kinds: vec!["delivered".into()],
            delay_ms: 0,
            webhook_url: Some(format!("http://{addr}/ingest/wink")),
            ..ResponsesConfig::default()
        },
        ..ChannelMockConfig::default()
    };
    let mock = start_with(ChannelId::Wink, config).await;
    send(&mock, &request(ChannelId::Wink, Uuid::new_v4())).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(mock.stats().responses_failed, 0, "still retrying");
    assert!(crate::harness::wait_until(|| mock.stats().responses_failed == 1).await);
}
