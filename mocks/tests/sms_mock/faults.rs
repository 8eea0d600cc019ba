//! Fault injection: scripts, throttling, error rates, latency, held requests, rate limits.

use std::time::{Duration, Instant};

use clm_contracts::sms::wire::JsonError;
use clm_mocks::{Faults, Throttle};

use crate::harness::{client, json_body, kannel_get, start};

#[tokio::test]
async fn scripted_503_then_success() {
    let sms = start().await;
    sms.set_faults(Faults {
        script: vec![503, 503, 202],
        ..Faults::default()
    });
    let send = [("to", "7916"), ("text", "x")];
    let first = kannel_get(&sms, &send).await;
    assert_eq!(first.status(), 503);
    assert_eq!(first.text().await.unwrap(), "Sending failed.");
    assert_eq!(kannel_get(&sms, &send).await.status(), 503);
    assert_eq!(kannel_get(&sms, &send).await.status(), 202);
    assert_eq!(
        kannel_get(&sms, &send).await.status(),
        202,
        "script is used up"
    );
    assert_eq!(sms.stats().by_status.get(&503), Some(&2));
}

#[tokio::test]
async fn throttle_gives_429_with_retry_after_in_both_dialects() {
    let sms = start().await;
    sms.set_faults(Faults {
        throttle: Some(Throttle {
            retry_after_secs: 7,
        }),
        ..Faults::default()
    });
    let kannel = kannel_get(&sms, &[("to", "7916"), ("text", "x")]).await;
    assert_eq!(kannel.status(), 429);
    assert_eq!(kannel.headers()["retry-after"], "7");

    let json = client()
        .post(sms.json_url())
        .json(&json_body("c", "x", None))
        .send()
        .await
        .unwrap();
    assert_eq!(json.status(), 429);
    assert_eq!(json.headers()["retry-after"], "7");
    let _: JsonError = json.json().await.unwrap();
}

#[tokio::test]
async fn error_rate_one_gives_error_status() {
    let sms = start().await;
    sms.set_faults(Faults {
        error_rate: 1.0,
        error_status: 500,
        ..Faults::default()
    });
    for _ in 0..5 {
        assert_eq!(
            kannel_get(&sms, &[("to", "7916"), ("text", "x")])
                .await
                .status(),
            500
        );
    }
    let json = client()
        .post(sms.json_url())
        .json(&json_body("c", "x", None))
        .send()
        .await
        .unwrap();
    assert_eq!(json.status(), 500);
    let stats = sms.stats();
    assert_eq!((stats.total, stats.accepted), (6, 0));
}

#[tokio::test]
async fn latency_is_added_before_answering() {
    let sms = start().await;
    sms.set_faults(Faults {
        latency_ms: 150,
        ..Faults::default()
    });
    let started = Instant::now();
    assert_eq!(
        kannel_get(&sms, &[("to", "7916"), ("text", "x")])
            .await
            .status(),
        202
    );
    assert!(
        started.elapsed() >= Duration::from_millis(140),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn timeout_rate_one_makes_the_client_time_out() {
    let sms = start().await;
    sms.set_faults(Faults {
        timeout_rate: 1.0,
        ..Faults::default()
    });
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let error = impatient
        .get(sms.kannel_url())
        .query(&[("to", "7916"), ("text", "x")])
        .send()
        .await
        .unwrap_err();
    assert!(error.is_timeout(), "{error}");
    assert_eq!(
        sms.received()[0].status,
        0,
        "held requests are recorded unanswered"
    );
    assert_eq!(sms.accepted_count(), 0);
    sms.shutdown().await;
}

#[tokio::test]
async fn max_rate_answers_429_beyond_the_rate() {
    let sms = start().await;
    sms.set_faults(Faults {
        max_rate: Some(1.0),
        ..Faults::default()
    });
    let http = client();
    let mut statuses = Vec::new();
    for _ in 0..10 {
        let response = http
            .get(sms.kannel_url())
            .query(&[("to", "7916"), ("text", "x")])
            .send()
            .await
            .unwrap();
        if response.status() == 429 {
            assert_eq!(response.headers()["retry-after"], "1");
        }
        statuses.push(response.status());
    }
    // 1/s with a burst of 1: the first fits, the rest of a sub-second burst does not.
    assert_eq!(statuses[0], 202, "{statuses:?}");
    let throttled = statuses.iter().filter(|s| **s == 429).count();
    assert!(throttled >= 8, "{statuses:?}");
}
