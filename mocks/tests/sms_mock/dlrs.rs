//! Automatic delivery reports, Kannel (per part, `%` escapes) and JSON (per message).

use std::time::Duration;

use clm_contracts::sms::wire::JsonSendResponse;
use clm_mocks::{DlrConfig, DlrMethod};

use crate::harness::{Receiver, client, json_body, kannel_get, start, wait_until};

#[tokio::test]
async fn kannel_dlrs_arrive_one_per_part_with_substituted_escapes() {
    let sms = start().await;
    let receiver = Receiver::start().await;
    let dlr_url = format!(
        "{}?id=comm-7&type=%d&answer=%A&smsc_id=%F&ts=%T&to=%p",
        receiver.url()
    );
    let text = "b".repeat(200); // GSM 7-bit: 2 parts of 153
    let response = kannel_get(
        &sms,
        &[
            ("to", "+79161234567"),
            ("text", &text),
            ("dlr-mask", "31"),
            ("dlr-url", &dlr_url),
        ],
    )
    .await;
    assert_eq!(response.status(), 202);
    let reports = receiver.wait_for(2).await;
    assert_eq!(reports.len(), 2);

    let mut smsc_ids = Vec::new();
    for report in &reports {
        assert_eq!(report.method, "GET");
        assert_eq!(report.param("id").as_deref(), Some("comm-7"));
        assert_eq!(report.param("type").as_deref(), Some("1"));
        assert_eq!(report.param("to").as_deref(), Some("+79161234567"));
        let answer = report.param("answer").unwrap();
        assert!(answer.contains("stat:DELIVRD err:000"), "{answer}");
        let smsc_id = report.param("smsc_id").unwrap();
        assert!(answer.starts_with(&format!("id:{smsc_id} ")), "{answer}");
        assert!(report.param("ts").unwrap().parse::<i64>().is_ok());
        smsc_ids.push(smsc_id);
    }
    assert_ne!(smsc_ids[0], smsc_ids[1], "each part has its own SMSC id");
    let got = &sms.received()[0];
    assert_eq!(got.parts, 2);
    assert!(smsc_ids.contains(got.message_id.as_ref().unwrap()));
    assert!(wait_until(|| sms.stats().dlr_sent == 2).await);
}

#[tokio::test]
async fn kannel_dlr_post_sends_the_query_as_a_form_body() {
    let sms = start().await;
    sms.set_dlr(DlrConfig {
        method: DlrMethod::Post,
        ..DlrConfig::default()
    });
    let receiver = Receiver::start().await;
    let dlr_url = format!("{}?id=comm-8&type=%d", receiver.url());
    kannel_get(
        &sms,
        &[("to", "7916"), ("text", "x"), ("dlr-url", &dlr_url)],
    )
    .await;
    let reports = receiver.wait_for(1).await;
    assert_eq!(reports[0].method, "POST");
    assert_eq!(reports[0].query, "");
    assert_eq!(reports[0].body, "id=comm-8&type=1");
}

#[tokio::test]
async fn json_dlr_is_posted_with_client_ref() {
    let sms = start().await;
    let receiver = Receiver::start().await;
    let response = client()
        .post(sms.json_url())
        .json(&json_body(
            "comm-9",
            &"ж".repeat(100),
            Some(&receiver.url()),
        ))
        .send()
        .await
        .unwrap();
    let answer: JsonSendResponse = response.json().await.unwrap();
    assert_eq!(answer.parts, 2);
    let reports = receiver.wait_for(1).await;
    let dlr: serde_json::Value = serde_json::from_str(&reports[0].body).unwrap();
    assert_eq!(reports[0].method, "POST");
    assert_eq!(dlr["status"], "delivered");
    assert_eq!(dlr["client_ref"], "comm-9");
    assert_eq!(dlr["message_id"], answer.message_id.as_str());
    assert!(dlr["done_at"].is_string());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(receiver.reports().len(), 1, "one report per message");
}

#[tokio::test]
async fn undelivered_share_one_gives_type_2_and_undelivered() {
    let sms = start().await;
    sms.set_dlr(DlrConfig {
        delivered_share: 0.0,
        undelivered_share: 1.0,
        ..DlrConfig::default()
    });
    let receiver = Receiver::start().await;
    let dlr_url = format!("{}?id=k&type=%d&answer=%A", receiver.url());
    kannel_get(
        &sms,
        &[("to", "7916"), ("text", "x"), ("dlr-url", &dlr_url)],
    )
    .await;
    client()
        .post(sms.json_url())
        .json(&json_body("j", "x", Some(&receiver.url())))
        .send()
        .await
        .unwrap();
    let reports = receiver.wait_for(2).await;
    let kannel = reports.iter().find(|r| r.method == "GET").unwrap();
    assert_eq!(kannel.param("type").as_deref(), Some("2"));
    assert!(
        kannel
            .param("answer")
            .unwrap()
            .contains("stat:UNDELIV err:001")
    );
    let json = reports.iter().find(|r| r.method == "POST").unwrap();
    let dlr: serde_json::Value = serde_json::from_str(&json.body).unwrap();
    assert_eq!(
        (dlr["status"].as_str(), dlr["client_ref"].as_str()),
        (Some("undelivered"), Some("j"))
    );
}

#[tokio::test]
async fn refused_dlrs_are_counted_as_failed() {
    let sms = start().await;
    let receiver = Receiver::start().await;
    let dlr_url = format!("{}/refuse?id=r", receiver.url());
    kannel_get(
        &sms,
        &[("to", "7916"), ("text", "x"), ("dlr-url", &dlr_url)],
    )
    .await;
    assert!(wait_until(|| sms.stats().dlr_failed == 1).await);
    assert_eq!(sms.stats().dlr_sent, 0);
}

/// A receiver that is down when the report is due (a hub restarting) gets it once it is back:
/// reports are retried for `retry_for_ms`, as Kannel does with `http-request-retry`.
#[tokio::test]
async fn a_report_is_retried_until_the_receiver_is_back() {
    let sms = start().await;
    // Bound but not listening: the port refuses connections and stays ours until it listens.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = socket.local_addr().unwrap().port();
    let dlr_url = format!("http://127.0.0.1:{port}/ingest/sms?id=comm-10&type=%d");
    let response = kannel_get(
        &sms,
        &[("to", "+79161234567"), ("text", "x"), ("dlr-url", &dlr_url)],
    )
    .await;
    assert_eq!(response.status(), 202);
    // Down for two seconds: every attempt meanwhile is refused.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sms.stats().dlr_sent, 0);
    let got = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counter = std::sync::Arc::clone(&got);
    let app = axum::Router::new().route(
        "/ingest/sms",
        axum::routing::get(move || {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { "ok" }
        }),
    );
    let listener = socket.listen(64).unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    assert!(
        wait_until(|| sms.stats().dlr_sent == 1).await,
        "{:?}",
        sms.stats()
    );
    assert_eq!(
        got.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "delivered once"
    );
}
