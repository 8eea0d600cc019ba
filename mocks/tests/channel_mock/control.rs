//! The control API under `/control/<channel>/`.

use clm_contracts::ChannelId;
use clm_contracts::channels::wink;
use clm_mocks::{ChannelMockConfig, ChannelStats, Faults, ReceivedRequest, ResponsesConfig};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::harness::{Receiver, WAIT, client, request, send, start, start_with};

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
    assert_eq!(now, mock.responses());
    assert_eq!(now.token.as_deref(), Some("t"));
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
