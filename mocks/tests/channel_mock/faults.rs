//! Faults, the same as the SMS mock's: answered before auth and the body, with the contract's
//! `ErrorBody` and `Retry-After`; held requests are never answered.

use std::time::Duration;

use clm_contracts::ChannelId;
use clm_mocks::{ChannelMockConfig, ExpectedAuth, Faults, Throttle};
use uuid::Uuid;

use crate::harness::{client, error_body, request, send, start, start_with};

#[tokio::test]
async fn scripted_503_429_and_hold_then_success() {
    // Faults stand for the infrastructure: they answer before credentials are looked at.
    let config = ChannelMockConfig {
        auth: Some(ExpectedAuth::Bearer("t".into())),
        faults: Faults {
            script: vec![503, 429, 0, 500],
            ..Faults::default()
        },
        ..ChannelMockConfig::default()
    };
    let mock = start_with(ChannelId::Wink, config).await;
    let id = Uuid::new_v4();
    let body = request(ChannelId::Wink, id);
    let post = || {
        client()
            .post(mock.send_url())
            .bearer_auth("t")
            .timeout(Duration::from_millis(500))
            .json(&body)
            .send()
    };

    let unavailable = send(&mock, &body).await;
    assert_eq!(unavailable.status(), 503);
    assert_eq!(unavailable.headers()["retry-after"], "1");
    assert_eq!(error_body(unavailable).await.error, "unavailable");

    let throttled = post().await.unwrap();
    assert_eq!(throttled.status(), 429);
    assert_eq!(throttled.headers()["retry-after"], "1");
    assert_eq!(error_body(throttled).await.error, "rate_limited");

    let held = post().await.unwrap_err();
    assert!(held.is_timeout(), "{held}");

    let failed = post().await.unwrap();
    assert_eq!(failed.status(), 500);
    assert!(failed.headers().get("retry-after").is_none());
    assert_eq!(error_body(failed).await.error, "internal_server_error");

    assert_eq!(post().await.unwrap().status(), 200, "the script is used up");
    assert!(mock.faults().script.is_empty());

    let stats = mock.stats();
    assert_eq!(
        (
            stats.requests,
            stats.errors,
            stats.throttled,
            stats.held,
            stats.accepted
        ),
        (5, 2, 1, 1, 1)
    );
    assert_eq!(stats.by_status.get(&0), Some(&1));
    let held = mock.received().into_iter().find(|r| r.status == 0).unwrap();
    assert_eq!(held.message_id, Some(id));
    mock.shutdown().await;
}

#[tokio::test]
async fn throttle_and_error_rate() {
    let mock = start(ChannelId::Elk).await;
    let body = request(ChannelId::Elk, Uuid::new_v4());
    mock.set_faults(Faults {
        throttle: Some(Throttle {
            retry_after_secs: 7,
        }),
        ..Faults::default()
    });
    let throttled = send(&mock, &body).await;
    assert_eq!(throttled.status(), 429);
    assert_eq!(throttled.headers()["retry-after"], "7");
    assert_eq!(error_body(throttled).await.error, "rate_limited");

    mock.set_faults(Faults {
        error_rate: 1.0,
        error_status: 502,
        ..Faults::default()
    });
    let failed = send(&mock, &body).await;
    assert_eq!(failed.status(), 502);
    assert_eq!(error_body(failed).await.error, "bad_gateway");

    mock.set_faults(Faults::default());
    assert_eq!(send(&mock, &body).await.status(), 200);
    assert_eq!(mock.accepted_count(), 1);
}

#[tokio::test]
async fn held_requests_are_released_at_shutdown() {
    let mock = start(ChannelId::Eissd).await;
    mock.set_faults(Faults {
        timeout_rate: 1.0,
        ..Faults::default()
    });
    let url = mock.send_url();
    let body = request(ChannelId::Eissd, Uuid::new_v4());
    let pending = tokio::spawn(async move { client().post(url).json(&body).send().await });
    assert!(
        crate::harness::wait_until(|| mock.stats().held == 1).await,
        "the request is held"
    );
    assert!(!pending.is_finished());
    mock.shutdown().await;
    // Answered 503 or the connection closed: either way the client is not left waiting.
    let result = tokio::time::timeout(Duration::from_secs(10), pending)
        .await
        .expect("released");
    if let Ok(response) = result.unwrap() {
        assert_eq!(response.status(), 503);
    }
}
