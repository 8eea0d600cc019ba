//! The control API under `/control/<channel>/`.

use clm_contracts::ChannelId;
use clm_contracts::channels::wink;
use clm_mocks::{ChannelMockConfig, ChannelStats, Faults, ReceivedRequest, ResponsesConfig};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::harness::{Receiver, WAIT, client, request, send, start, start_with};
use crate::webhooks::{SECRET, TOKEN, assert_authenticated};

#[tokio::test]
async fn received_stats_faults_and_reset() {
    let mock = start(ChannelId::Wink).await;
    let control = mock.control_url();
    for _ in 0..3 {
        send(&mock, &request(ChannelId::Wink, Uuid::new_v4())).await;
    }
    let last: Vec<ReceivedRequest> = client()
        .get(format!("{control}/received?limit=2"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(last.len(), 2);
    assert_eq!(last, mock.received()[1..]);
    let stats: ChannelStats = client()
        .get(format!("{control}/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!((stats.requests, stats.accepted), (3, 3));

    let put = client()
        .put(format!("{control}/faults"))
        .body(r#"{"script": [503]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    assert_eq!(mock.faults().script, [503]);
    let bad = client()
        .put(format!("{control}/faults"))
        .body(r#"{"error_rate": 2}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let error: Value = bad.json().await.unwrap();
    assert!(error["message"].as_str().unwrap().contains("error_rate"));
    let faults: Faults = client()
        .get(format!("{control}/faults"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(faults.script, [503]);

    let reset = client()
        .post(format!("{control}/reset"))
        .send()
        .await
        .unwrap();
    assert_eq!(reset.status(), 204);
    assert_eq!(mock.stats(), ChannelStats::default());
    assert!(mock.received().is_empty());
    assert!(mock.faults().script.is_empty());
}

#[tokio::test]
async fn responses_are_set_over_control_and_respond_sends_one_now() {
    let receiver = Receiver::start().await;
    let mock = start_with(ChannelId::Wink, ChannelMockConfig::default()).await;
    let control = mock.control_url();

    let bad = client()
        .put(format!("{control}/responses"))
        .json(&json!({"kinds": ["delivered", "read"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400, "read is an elk kind");
    assert!(mock.responses().kinds.is_empty());

    // Without a destination, respond cannot do anything.
    let id = Uuid::new_v4();
    let nowhere = client()
        .post(format!("{control}/respond"))
        .json(&json!({"message_id": id, "kind": "clicked"}))
        .send()
        .await
        .unwrap();
    assert_eq!(nowhere.status(), 409);

    let put = client()
        .put(format!("{control}/responses"))
        .json(&json!({"webhook_url": receiver.url(ChannelId::Wink), "token": "t"}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    let now: ResponsesConfig = client()
        .get(format!("{control}/responses"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(now, mock.responses().redacted());
    assert_eq!(
        now.token.as_deref(),
        Some("***"),
        "the token is not handed out"
    );
    assert_eq!(mock.responses().token.as_deref(), Some("t"));
    assert!(now.kinds.is_empty(), "no automatic responses");

    let answer: wink::SendResponse = send(&mock, &request(ChannelId::Wink, id))
        .await
        .json()
        .await
        .unwrap();
    let respond = client()
        .post(format!("{control}/respond"))
        .json(&json!({"message_id": id, "kind": "clicked"}))
        .send()
        .await
        .unwrap();
    assert_eq!(respond.status(), 202);
    let event_id = respond.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let hooks = receiver.wait_for(1).await;
    let webhook: wink::Webhook = serde_json::from_slice(&hooks[0].body).unwrap();
    assert_eq!(webhook.event_id, event_id);
    assert_eq!(webhook.kind, wink::WebhookKind::Clicked);
    assert_eq!(webhook.wink_id, Some(answer.wink_id));
    assert_eq!(hooks[0].headers["x-clm-token"], "t");
    assert!(mock.wait_for_responses(1, WAIT).await);

    for body in [
        json!({"message_id": id, "kind": "read"}),
        json!({"message_id": "nope", "kind": "clicked"}),
    ] {
        let bad = client()
            .post(format!("{control}/respond"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(bad.status(), 400, "{body}");
        let error: Value = bad.json().await.unwrap();
        assert_eq!(error["error"], "invalid_request");
    }
}

/// `GET responses` of `mock`: the raw body, and parsed.
async fn get_responses(control: &str) -> (String, ResponsesConfig) {
    let response = client()
        .get(format!("{control}/responses"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let parsed = serde_json::from_str(&text).unwrap();
    (text, parsed)
}

async fn put_responses(control: &str, body: &Value) -> (String, ResponsesConfig) {
    let response = client()
        .put(format!("{control}/responses"))
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{body}");
    let text = response.text().await.unwrap();
    let parsed = serde_json::from_str(&text).unwrap();
    (text, parsed)
}

#[tokio::test]
async fn control_never_hands_out_secrets_and_a_put_of_stars_keeps_them() {
    let receiver = Receiver::start().await;
    let mock = start_with(ChannelId::Wink, ChannelMockConfig::default()).await;
    let control = mock.control_url();

    // Unset secrets are null.
    let (_, unset) = get_responses(&control).await;
    assert_eq!((unset.token, unset.hmac_secret), (None, None));

    // Set over control: the answer to the PUT and every GET show "***".
    let (put_text, put) = put_responses(
        &control,
        &json!({
            "webhook_url": receiver.url(ChannelId::Wink),
            "token": TOKEN,
            "hmac_secret": SECRET,
            "delay_ms": 5,
        }),
    )
    .await;
    let (get_text, got) = get_responses(&control).await;
    for text in [&put_text, &get_text] {
        assert!(!text.contains(TOKEN) && !text.contains(SECRET), "{text}");
    }
    for shown in [&put, &got] {
        assert_eq!(shown.token.as_deref(), Some("***"));
        assert_eq!(shown.hmac_secret.as_deref(), Some("***"));
    }
    assert_eq!(mock.responses().token.as_deref(), Some(TOKEN));
    assert_eq!(mock.responses().hmac_secret.as_deref(), Some(SECRET));

    // GET, edit, PUT: the "***" keep the secrets, the edit applies.
    let mut edited: Value = serde_json::from_str(&get_text).unwrap();
    edited["kinds"] = json!(["delivered", "clicked"]);
    let (put_text, put) = put_responses(&control, &edited).await;
    assert!(!put_text.contains(TOKEN) && !put_text.contains(SECRET));
    assert_eq!(put.kinds, ["delivered", "clicked"]);
    let now = mock.responses();
    assert_eq!(now.kinds, ["delivered", "clicked"]);
    assert_eq!(now.token.as_deref(), Some(TOKEN));
    assert_eq!(now.hmac_secret.as_deref(), Some(SECRET));
    assert_eq!(now.webhook_url, Some(receiver.url(ChannelId::Wink)));

    // The webhooks still carry the real token and a signature made with the real secret.
    send(&mock, &request(ChannelId::Wink, Uuid::new_v4())).await;
    let hooks = receiver.wait_for(2).await;
    for hook in &hooks {
        assert_authenticated(hook);
    }

    // Omitted means none, as before.
    let (_, cleared) = put_responses(
        &control,
        &json!({"webhook_url": receiver.url(ChannelId::Wink)}),
    )
    .await;
    assert_eq!((cleared.token, cleared.hmac_secret), (None, None));
    assert_eq!(mock.responses().token, None);
    assert_eq!(mock.responses().hmac_secret, None);

    // "***" with no secret in force keeps none; a new value replaces it.
    let (_, still_none) = put_responses(&control, &json!({"token": "***"})).await;
    assert_eq!(still_none.token, None);
    assert_eq!(mock.responses().token, None);
    put_responses(&control, &json!({"token": "new", "hmac_secret": "***"})).await;
    assert_eq!(mock.responses().token.as_deref(), Some("new"));
    assert_eq!(mock.responses().hmac_secret, None);
}

#[test]
fn debug_of_the_settings_hides_every_secret() {
    use clm_mocks::ExpectedAuth;
    let config = ChannelMockConfig {
        auth: Some(ExpectedAuth::Basic {
            username: "user".into(),
            password: "auth-password".into(),
        }),
        responses: ResponsesConfig {
            webhook_url: Some("http://hook:webhook-password@hub/ingest/wink".into()),
            token: Some(TOKEN.into()),
            hmac_secret: Some(SECRET.into()),
            ..ResponsesConfig::typical(ChannelId::Eissd)
        },
        dwh_url: Some("postgres://clm:dwh-password@postgres:5432/clm".into()),
        ..ChannelMockConfig::default()
    };
    let debug = format!("{config:?} {:#?}", config.responses);
    for secret in [
        "auth-password",
        "webhook-password",
        TOKEN,
        SECRET,
        "dwh-password",
    ] {
        assert!(!debug.contains(secret), "{secret} in {debug}");
    }
    assert!(
        debug.contains("postgres://clm:***@postgres:5432/clm"),
        "{debug}"
    );
    assert!(debug.contains("token: Some(***)"), "{debug}");
    assert!(debug.contains("interested"), "the rest is shown: {debug}");
}

#[tokio::test]
async fn routers_of_several_mocks_merge_on_one_server() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sms = clm_mocks::SmsMock::detached(addr, clm_mocks::SmsMockConfig::default()).unwrap();
    let mut app = sms.router();
    let mut mocks = Vec::new();
    for channel in [ChannelId::Wink, ChannelId::Elk, ChannelId::Eissd] {
        let mock = clm_mocks::ChannelMock::detached(channel, addr, ChannelMockConfig::default())
            .await
            .unwrap();
        app = app.merge(mock.router());
        mocks.push(mock);
    }
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    for mock in &mocks {
        assert_eq!(mock.addr(), addr);
        let response = send(mock, &request(mock.channel(), Uuid::new_v4())).await;
        assert_eq!(response.status(), 200, "{}", mock.channel());
        assert_eq!(mock.accepted_count(), 1);
        let stats = client()
            .get(format!("{}/stats", mock.control_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(stats.status(), 200);
    }
    let sms_stats = client()
        .get(format!("{}/stats", sms.control_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(sms_stats.status(), 200);
    assert!(sms.control_url().contains(&addr.to_string()));
}
