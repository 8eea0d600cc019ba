//! The control API under `/control/email/`: received, stats, faults, feedback (secrets shown as
//! `***`, and kept by a `PUT` of `***`), reset; served on its own listener or merged into
//! another server.

use clm_mocks::{EmailFeedback, SmtpMock, SmtpMockConfig};
use serde_json::{Value, json};

use crate::feedback::{SECRET, assert_signed};
use crate::harness::{Client, Receiver, WAIT, http, message, start, start_with};

#[tokio::test]
async fn received_stats_faults_and_reset_over_http() {
    let mock = start().await;
    let base = mock.control_url();
    assert!(base.ends_with("/control/email"), "{base}");
    let http = http();

    let mut client = Client::connect_ehlo(&mock).await;
    client
        .transaction(
            "a@clm.example",
            &["b@example.com"],
            &message("<c-1@clm.example>", "hi"),
        )
        .await;

    let received: Value = http
        .get(format!("{base}/received"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(received.as_array().unwrap().len(), 1);
    let mail = &received[0];
    assert_eq!(mail["envelope_from"], "a@clm.example");
    assert_eq!(mail["recipients"], json!(["b@example.com"]));
    assert_eq!(mail["message_id"], "<c-1@clm.example>");
    assert_eq!(mail["subject"], "hi");
    assert_eq!(mail["answered"], true);
    assert_eq!(mail["raw"], message("<c-1@clm.example>", "hi"));
    let limited: Value = http
        .get(format!("{base}/received?limit=0"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(limited, json!([]));

    let stats: Value = http
        .get(format!("{base}/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["messages_accepted"], 1);
    assert_eq!(stats["connections"], 1);

    let put = http
        .put(format!("{base}/faults"))
        .body(
            r#"{"rcpt": {"reply": {"code": 450, "enhanced": "4.7.1", "text": "later"}},
                  "script": [{}, {"end_of_data": "hang"}],
                  "per_recipient": {"Gone@Example.com": "disconnect"}}"#,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    let faults: Value = http
        .get(format!("{base}/faults"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(faults["rcpt"]["reply"]["code"], 450);
    assert_eq!(faults["script"].as_array().unwrap().len(), 2);
    assert_eq!(faults["per_recipient"]["gone@example.com"], "disconnect");
    assert_eq!(faults["greylist_first"], false);
    client.expect("MAIL FROM:<a@clm.example>", 250).await;
    client.expect("RCPT TO:<b@example.com>", 450).await;
    client.expect("RSET", 250).await;

    for bad in [
        r#"{"rcpt": {"reply": {"code": 250, "text": "ok"}}}"#,
        r#"{"data": {"reply": {"code": 550, "enhanced": "4.1.1", "text": "x"}}}"#,
        r#"{"end_of_data": "explode"}"#,
        "not json",
    ] {
        let answer = http
            .put(format!("{base}/faults"))
            .body(bad)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 400, "{bad}");
        let body: Value = answer.json().await.unwrap();
        assert_eq!(body["error"], "invalid_request");
    }

    let reset = http.post(format!("{base}/reset")).send().await.unwrap();
    assert_eq!(reset.status(), 204);
    assert!(mock.received().is_empty());
    assert_eq!(mock.stats(), Default::default());
    assert_eq!(mock.faults(), Default::default());
    client.expect("MAIL FROM:<a@clm.example>", 250).await;
    client.expect("RCPT TO:<b@example.com>", 250).await;
}

#[tokio::test]
async fn feedback_secrets_never_leave_and_a_put_of_stars_keeps_them() {
    let receiver = Receiver::start().await;
    let config = SmtpMockConfig {
        feedback: EmailFeedback {
            url: Some(receiver.url()),
            hmac_secret: Some(SECRET.into()),
            basic: Some(("hub-user".into(), "hub-pa55".into())),
            delay_ms: 5,
            ..EmailFeedback::typical()
        },
        ..SmtpMockConfig::default()
    };
    let debug = format!("{config:?}");
    assert!(
        !debug.contains(SECRET) && !debug.contains("hub-pa55"),
        "{debug}"
    );
    let mock = start_with(config).await;
    let base = mock.control_url();
    let http = http();

    let shown: Value = http
        .get(format!("{base}/feedback"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(shown["hmac_secret"], "***");
    assert_eq!(shown["basic"], json!(["hub-user", "***"]));
    assert_eq!(shown["events"], json!(["delivered", "opened", "clicked"]));
    assert!(!shown.to_string().contains(SECRET));

    // What GET returned, edited and put back: the secrets stay.
    let mut edited = shown.clone();
    edited["events"] = json!(["delivered"]);
    let answer: Value = http
        .put(format!("{base}/feedback"))
        .json(&edited)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["hmac_secret"], "***");
    assert_eq!(answer["events"], json!(["delivered"]));
    let kept = mock.feedback();
    assert_eq!(kept.hmac_secret.as_deref(), Some(SECRET));
    assert_eq!(kept.basic, Some(("hub-user".into(), "hub-pa55".into())));

    let mut client = Client::connect_ehlo(&mock).await;
    client
        .transaction(
            "a@clm.example",
            &["b@example.com"],
            &message("<f-1@clm.example>", "x"),
        )
        .await;
    let hooks = receiver.wait_for(1).await;
    assert_signed(&hooks[0], SECRET);
    assert!(mock.wait_for_feedback(1, WAIT).await);

    let bad = http
        .put(format!("{base}/feedback"))
        .body(r#"{"events": ["exploded"]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    // An omitted secret means none.
    let answer: Value = http
        .put(format!("{base}/feedback"))
        .body(r#"{"events": []}"#)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["hmac_secret"], Value::Null);
    assert_eq!(mock.feedback().hmac_secret, None);

    let stats: Value = http
        .get(format!("{base}/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["feedback_sent"], 1);
}

#[tokio::test]
async fn the_control_router_merges_into_another_server() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_addr = listener.local_addr().unwrap();
    let mock = SmtpMock::start_detached(
        "127.0.0.1:0".parse().unwrap(),
        http_addr,
        SmtpMockConfig::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        mock.control_url(),
        format!("http://{http_addr}/control/email")
    );
    assert_ne!(mock.port(), http_addr.port());
    let app = axum::Router::new().merge(mock.control_router());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let mut client = Client::connect_ehlo(&mock).await;
    client
        .transaction(
            "a@clm.example",
            &["b@example.com"],
            &message("<d-1@clm.example>", "x"),
        )
        .await;
    let received: Value = http()
        .get(format!("{}/received", mock.control_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(received[0]["message_id"], "<d-1@clm.example>");
    mock.shutdown().await;
}
