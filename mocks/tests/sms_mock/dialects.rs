//! Both dialects answering and recording what they got.

use clm_contracts::sms::Coding;
use clm_contracts::sms::wire::kannel::ACCEPTED;
use clm_contracts::sms::wire::{JsonError, JsonSendResponse};
use clm_mocks::Dialect;

use crate::harness::{client, json_body, kannel_get, start, ucs2_query};

#[tokio::test]
async fn kannel_accepts_and_records_cyrillic_ucs2() {
    let sms = start().await;
    let url = format!(
        "{}?from=Shop&to=%2B79161234567&coding=2&charset=UTF-16BE&text={}",
        sms.kannel_url(),
        ucs2_query("Привет, мир")
    );
    let response = client().get(url).send().await.unwrap();
    assert_eq!(response.status(), 202);
    assert_eq!(response.text().await.unwrap(), ACCEPTED);

    let got = sms.received();
    assert_eq!(got.len(), 1);
    let sms_got = &got[0];
    assert_eq!(sms_got.text, "Привет, мир");
    assert_eq!(sms_got.to, "+79161234567");
    assert_eq!(sms_got.from, "Shop");
    assert_eq!((sms_got.coding, sms_got.parts), (Coding::Ucs2, 1));
    assert_eq!((sms_got.dialect, sms_got.status), (Dialect::Kannel, 202));
    assert!(sms_got.message_id.is_some());
}

#[tokio::test]
async fn kannel_ucs2_without_charset_defaults_to_utf16be() {
    let sms = start().await;
    let url = format!(
        "{}?to=79161234567&coding=2&text={}",
        sms.kannel_url(),
        ucs2_query(&"ж".repeat(71))
    );
    assert_eq!(client().get(url).send().await.unwrap().status(), 202);
    let got = &sms.received()[0];
    assert_eq!(got.text, "ж".repeat(71));
    assert_eq!(got.parts, 2, "UCS-2 takes 67 characters per part");
}

#[tokio::test]
async fn kannel_accepts_gsm_text_in_utf8_with_validity_and_ref() {
    let sms = start().await;
    let text = "Your bonus: 100 € {ok}";
    let response = kannel_get(
        &sms,
        &[
            ("to", "79161234567"),
            ("text", text),
            ("coding", "0"),
            ("charset", "UTF-8"),
            ("validity", "90"),
            ("dlr-url", "http://127.0.0.1:1/dlr?id=comm-1&type=%d"),
        ],
    )
    .await;
    assert_eq!(response.status(), 202);
    let got = &sms.received()[0];
    assert_eq!(got.text, text);
    assert_eq!((got.coding, got.parts), (Coding::Gsm7, 1));
    assert_eq!(got.validity_minutes, Some(90));
    assert_eq!(got.client_ref.as_deref(), Some("comm-1"));
}

#[tokio::test]
async fn kannel_post_with_form_body_is_accepted() {
    let sms = start().await;
    let response = client()
        .post(sms.kannel_url())
        .form(&[("to", "79161234567"), ("text", "hello")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    assert_eq!(sms.received()[0].text, "hello");
}

#[tokio::test]
async fn kannel_rejects_bad_credentials_with_403() {
    let sms = start().await.with_credentials("hub", "secret");
    let wrong = [
        ("username", "hub"),
        ("password", "guess"),
        ("to", "7916"),
        ("text", "x"),
    ];
    let response = kannel_get(&sms, &wrong).await;
    assert_eq!(response.status(), 403);
    assert_eq!(
        response.text().await.unwrap(),
        "Authorization failed for sendsms"
    );

    let right = [
        ("username", "hub"),
        ("password", "secret"),
        ("to", "7916"),
        ("text", "x"),
    ];
    assert_eq!(kannel_get(&sms, &right).await.status(), 202);
    assert_eq!(sms.stats().by_status.get(&403), Some(&1));
    assert_eq!(sms.accepted_count(), 1);
}

#[tokio::test]
async fn kannel_rejects_missing_receiver_and_text_with_400() {
    let sms = start().await;
    let response = kannel_get(&sms, &[("text", "x")]).await;
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.text().await.unwrap(),
        "Missing receiver number, rejected"
    );
    assert_eq!(kannel_get(&sms, &[("to", "7916")]).await.status(), 400);
    assert_eq!(sms.stats().by_status.get(&400), Some(&2));
    assert_eq!(sms.accepted_count(), 0);
}

#[tokio::test]
async fn json_dialect_accepts_and_returns_parts() {
    let sms = start().await;
    let response = client()
        .post(sms.json_url())
        .json(&json_body("comm-1", &"a".repeat(307), None))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: JsonSendResponse = response.json().await.unwrap();
    assert_eq!(answer.parts, 3);
    let got = &sms.received()[0];
    assert_eq!(got.message_id.as_deref(), Some(answer.message_id.as_str()));
    assert_eq!((got.dialect, got.coding), (Dialect::Json, Coding::Gsm7));
    assert_eq!(got.client_ref.as_deref(), Some("comm-1"));
}

#[tokio::test]
async fn json_dialect_answers_invalid_json_with_400() {
    let sms = start().await;
    let response = client()
        .post(sms.json_url())
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let error: JsonError = response.json().await.unwrap();
    assert!(error.error.contains("invalid JSON"), "{}", error.error);
    assert_eq!(sms.received()[0].status, 400);
}
