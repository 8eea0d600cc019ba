//! The control API, duplicate detection, and counting under concurrent load.

use std::time::Duration;

use clm_mocks::{Faults, SmsStats};
use serde_json::json;

use crate::harness::{Receiver, client, json_body, kannel_get, start, wait_until};

#[tokio::test]
async fn control_api_changes_faults_and_reports_stats() {
    let sms = start().await;
    let control = sms.control_url();
    let http = client();
    let put = http
        .put(format!("{control}/faults"))
        .body(r#"{"error_rate": 1.0, "error_status": 502}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    assert_eq!(sms.faults().error_status, 502);
    assert_eq!(
        kannel_get(&sms, &[("to", "7916"), ("text", "x")])
            .await
            .status(),
        502
    );

    let bad = http
        .put(format!("{control}/faults"))
        .body(r#"{"error_rate": 2}"#)
        .send();
    assert_eq!(bad.await.unwrap().status(), 400);

    let reset = http.post(format!("{control}/reset")).send().await.unwrap();
    assert_eq!(reset.status(), 204);
    assert_eq!(
        kannel_get(&sms, &[("to", "7916"), ("text", "x")])
            .await
            .status(),
        202
    );

    let stats: SmsStats = http
        .get(format!("{control}/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!((stats.total, stats.accepted), (1, 1));
    assert_eq!(stats.by_status.get(&202), Some(&1));

    let received: serde_json::Value = http
        .get(format!("{control}/received?limit=5"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(received.as_array().map(Vec::len), Some(1));
    assert_eq!(received[0]["status"], 202);

    let dlr = http
        .put(format!("{control}/dlr"))
        .json(&json!({"enabled": false}))
        .send();
    assert_eq!(dlr.await.unwrap().status(), 200);
}

#[tokio::test]
async fn duplicates_are_counted_per_client_ref() {
    let sms = start().await;
    sms.set_faults(Faults {
        script: vec![503],
        ..Faults::default()
    });
    for client_ref in ["a", "a", "b", "a", "c", "c"] {
        client()
            .post(sms.json_url())
            .json(&json_body(client_ref, "x", None))
            .send()
            .await
            .unwrap();
    }
    // The first "a" got 503, so "a" was accepted twice and "c" twice.
    assert_eq!(sms.duplicates(), 2);
    assert_eq!(sms.accepted_ref_count("a"), 2);
    assert_eq!(sms.accepted_ref_count("b"), 1);
    assert_eq!(sms.stats().duplicates, 2);
    assert!(sms.wait_for_accepted(5, Duration::from_millis(100)).await);
    assert!(!sms.wait_for_accepted(6, Duration::from_millis(50)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sends_are_all_counted_and_reported() {
    let sms = start().await;
    let receiver = Receiver::start().await;
    let http = client();
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..16 {
        let (http, kannel, json, dlr_base) = (
            http.clone(),
            sms.kannel_url(),
            sms.json_url(),
            receiver.url(),
        );
        tasks.spawn(async move {
            for i in 0..50 {
                let status = if (worker + i) % 2 == 0 {
                    let dlr_url = format!("{dlr_base}?id={worker}-{i}&type=%d");
                    let params = [("to", "7916"), ("text", "x"), ("dlr-url", dlr_url.as_str())];
                    http.get(&kannel)
                        .query(&params)
                        .send()
                        .await
                        .unwrap()
                        .status()
                } else {
                    let body = json_body(&format!("{worker}-{i}"), "x", None);
                    http.post(&json).json(&body).send().await.unwrap().status()
                };
                assert!(status.is_success(), "{status}");
            }
        });
    }
    while let Some(result) = tasks.join_next().await {
        result.unwrap();
    }
    let stats = sms.stats();
    assert_eq!(
        (stats.total, stats.accepted, stats.duplicates),
        (800, 800, 0)
    );
    assert_eq!(sms.received().len(), 800);
    receiver.wait_for(400).await;
    assert!(wait_until(|| sms.stats().dlr_sent == 400).await);
}
